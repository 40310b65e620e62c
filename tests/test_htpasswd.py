# -*- test-case-name: tests.test_htpasswd -*-
"""
Tests for L{connectproxy._htpasswd}: the htpasswd checker (driven
synchronously, with a L{Clock} and an in-line thread runner), files that
cannot be read, and the C{--auth htpasswd:PATH} checker plugin.
"""

from __future__ import annotations

import base64
import hashlib
import os
import pwd
import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from hypothesis import settings
from passlib.hash import (  # type: ignore[import-untyped]
    apr_md5_crypt,
    sha256_crypt,
    sha512_crypt,
)
from twisted.cred import strcred
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent, formatEvent
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from connectproxy import _htpasswd, _htpasswdhashes
from connectproxy._htpasswd import HtpasswdChecker
from twisted.plugins.connectproxy_htpasswd import connectproxyHtpasswd

REPO_ROOT = Path(__file__).resolve().parent.parent
_PROPERTY = settings(max_examples=300, deadline=None)


# Hash makers: password text in, htpasswd hash field out.


def bcryptHash(password: str, prefix: str = "$2b$") -> str:
    hashed = bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(4)).decode()
    return prefix + hashed[len("$2b$") :]


def sha1Hash(password: str) -> str:
    digest = hashlib.sha1(password.encode("utf-8")).digest()
    return "{SHA}" + base64.b64encode(digest).decode("ascii")


HASHERS: dict[str, Callable[[str], str]] = {
    "bcrypt-2b": bcryptHash,
    "bcrypt-2y": lambda password: bcryptHash(password, "$2y$"),
    "bcrypt-2a": lambda password: bcryptHash(password, "$2a$"),
    "apr1": apr_md5_crypt.hash,
    "sha256-crypt": sha256_crypt.using(rounds=1000).hash,
    "sha512-crypt": sha512_crypt.using(rounds=1000).hash,
    "sha1": sha1Hash,
}


class InlineRunner:
    """
    Runs verifications at once in the calling thread, and counts them.
    """

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, verification: Callable[[], bool]) -> Deferred[bool]:
        self.calls += 1
        return succeed(verification())


class Setup:
    """
    A checker on a file in a temporary directory, with its clock and runner.
    """

    def __init__(self, directory: Path, text: str, **kwargs: Any) -> None:
        self.path = directory / "htpasswd"
        self.path.write_text(text, encoding="utf-8")
        self.clock = Clock()
        self.clock.advance(1000)
        self.runner = InlineRunner()
        self.checker = HtpasswdChecker(
            str(self.path), clock=self.clock, runInThread=self.runner, **kwargs
        )

    def check(self, user: str, password: str) -> bytes | None:
        """
        @return: The avatar ID, or C{None} for an L{UnauthorizedLogin}.
        """
        credentials = UsernamePassword(user.encode("utf-8"), password.encode("utf-8"))
        result: bytes | None = resultOf(self.checker.requestAvatarId(credentials))
        return result

    def rewrite(self, text: str) -> None:
        """
        Replace the file's content and move its mtime forward by a second.
        """
        before = self.path.stat().st_mtime_ns
        self.path.write_text(text, encoding="utf-8")
        os.utime(self.path, ns=(before + 10**9, before + 10**9))


def resultOf(d: Deferred[Any]) -> Any:
    """
    The result of a Deferred that has already fired: C{None} for an
    L{UnauthorizedLogin}; any other failure is raised.
    """
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    result = results[0]
    if isinstance(result, Failure):
        result.trap(UnauthorizedLogin)
        return None
    return result


def eventsNamed(events: list[LogEvent], name: str) -> list[LogEvent]:
    return [event for event in events if event.get("event") == name]


# HtpasswdChecker: formats


@pytest.mark.parametrize("scheme", sorted(HASHERS))
def test_eachFormatMatchesItsPassword(tmp_path: Path, scheme: str) -> None:
    """
    Every supported hash format accepts its password, in a worker call.
    """
    setup = Setup(tmp_path, f"alice:{HASHERS[scheme]('s3cret')}\n")
    assert setup.check("alice", "s3cret") == b"alice"
    assert setup.runner.calls == 1


@pytest.mark.parametrize("scheme", sorted(HASHERS))
def test_eachFormatRefusesWrongPassword(tmp_path: Path, scheme: str) -> None:
    """
    Every supported hash format refuses a wrong password.
    """
    setup = Setup(tmp_path, f"alice:{HASHERS[scheme]('s3cret')}\n")
    assert setup.check("alice", "s3cret!") is None
    assert setup.check("alice", "") is None


def test_unknownUserCostsAVerification(tmp_path: Path) -> None:
    """
    An unknown user fails after a verification against a real hash, like a
    wrong password.
    """
    setup = Setup(tmp_path, f"alice:{bcryptHash('s3cret')}\n")
    assert setup.check("bob", "s3cret") is None
    assert setup.runner.calls == 1


def test_dummyIsTheMostExpensiveHash(tmp_path: Path) -> None:
    """
    Unknown users are verified against the most expensive hash in the file.
    """
    setup = Setup(
        tmp_path,
        f"a:{sha1Hash('x')}\nb:{apr_md5_crypt.hash('x')}\nc:{bcryptHash('x')}\n",
    )
    assert setup.checker._dummy is not None
    assert setup.checker._dummy.scheme == "bcrypt"


def test_nobodyCanLogInWithoutUsableEntries(tmp_path: Path) -> None:
    """
    With no usable entry at all, every check fails without a verification.
    """
    setup = Setup(tmp_path, "alice:plain\n")
    assert setup.check("alice", "plain") is None
    assert setup.check("bob", "plain") is None
    assert setup.runner.calls == 0


def test_plaintextRefusedByDefault(tmp_path: Path, logEvents: list[LogEvent]) -> None:
    """
    A plaintext entry never matches unless allowed, and a warning names the
    user but not the password.
    """
    setup = Setup(tmp_path, f"alice:plain-pw\nbob:{bcryptHash('x')}\n")
    assert setup.check("alice", "plain-pw") is None
    [warning] = eventsNamed(logEvents, "auth_entry_unusable")
    message = formatEvent(warning)
    assert "alice" in message and "plaintext" in message
    assert "plain-pw" not in message


def test_plaintextAllowed(tmp_path: Path) -> None:
    """
    With C{allowPlaintext}, a plaintext entry matches its password only.
    """
    setup = Setup(tmp_path, "alice:plain-pw\n", allowPlaintext=True)
    assert setup.check("alice", "plain-pw") == b"alice"
    assert setup.check("alice", "plain-pX") is None


def test_plaintextAllowedAfterReload(tmp_path: Path) -> None:
    """
    Setting C{allowPlaintext} and reloading makes plaintext entries usable.
    """
    setup = Setup(tmp_path, "alice:plain-pw\n")
    setup.checker.allowPlaintext = True
    assert setup.checker.reload() is True
    assert setup.check("alice", "plain-pw") == b"alice"


@pytest.mark.parametrize(
    "stored",
    [
        "abJnggxhB/yWI",  # DES crypt (htpasswd -d)
        "$1$saltsalt$abcdefghijklmnopqrstuv",  # glibc MD5 crypt
        "{SSHA}abcdefgh",
        "$2y$05$short",
        "$apr1$salt$tooshort",
        "$5$rounds=1000$salt$bad",
        "{SHA}notbase64",
        "",
    ],
)
def test_unsupportedEntriesNeverMatch(
    tmp_path: Path, logEvents: list[LogEvent], stored: str
) -> None:
    """
    Unsupported and malformed hashes never match, not even as plaintext, and
    a warning names the user but never the hash.
    """
    setup = Setup(
        tmp_path, f"alice:{stored}\nbob:{bcryptHash('x')}\n", allowPlaintext=True
    )
    assert setup.check("alice", stored) is None
    [warning] = eventsNamed(logEvents, "auth_entry_unusable")
    message = formatEvent(warning)
    assert "alice" in message
    assert not stored or stored not in message


def test_sha1WarnsOncePerLoad(tmp_path: Path, logEvents: list[LogEvent]) -> None:
    """
    Weak C{{SHA}} hashes are accepted, with one warning per file load.
    """
    setup = Setup(tmp_path, f"alice:{sha1Hash('a')}\nbob:{sha1Hash('b')}\n")
    assert setup.check("bob", "b") == b"bob"
    [warning] = eventsNamed(logEvents, "auth_weak_hashes")
    assert warning["count"] == 2
    assert "{SHA}" in formatEvent(warning)
    setup.checker.reload()
    assert len(eventsNamed(logEvents, "auth_weak_hashes")) == 2


def test_bcryptLongPasswordChecksFirst72Bytes(tmp_path: Path) -> None:
    """
    A bcrypt entry for a password over 72 bytes (Apache's C{htpasswd -B}
    hashes its first 72 bytes, the only ones bcrypt uses) accepts the whole
    password the user set, as Apache does, and refuses one that differs
    within the first 72 bytes.
    """
    password = b"p" * 40 + b"q" * 40
    stored = bcrypt.hashpw(password[:72], bcrypt.gensalt(4)).decode("ascii")
    setup = Setup(tmp_path, f"alice:{stored}\n", cacheTTL=0)
    assert setup.check("alice", password.decode()) == b"alice"
    assert setup.check("alice", password[:72].decode()) == b"alice"
    assert setup.check("alice", "p" * 39 + "x" + "q" * 40) is None
    assert setup.check("alice", password[:71].decode()) is None
    assert setup.runner.calls == 4


def test_bcryptLongPasswordNeverRaises() -> None:
    """
    bcrypt itself refuses passwords over 72 bytes (version 5 raises): the
    verifier never hands it one.
    """
    stored = bcrypt.hashpw(b"x" * 72, bcrypt.gensalt(4)).decode("ascii")
    assert _htpasswdhashes.HtpasswdEntry("bcrypt", stored).verify(b"x" * 4096) is True
    assert _htpasswdhashes.HtpasswdEntry("bcrypt", stored).verify(b"y" * 4096) is False


def test_passwordWithColons(tmp_path: Path) -> None:
    """
    Passwords may contain colons: only the first colon of a line separates.
    """
    setup = Setup(tmp_path, f"alice:{bcryptHash('a:b:c')}\n", allowPlaintext=True)
    assert setup.check("alice", "a:b:c") == b"alice"
    setup.rewrite("carol:x:y\n")
    assert setup.checker.reload()
    assert setup.check("carol", "x:y") == b"carol"


def test_utf8UserName(tmp_path: Path) -> None:
    """
    User names are UTF-8, and the avatar ID is the UTF-8 user name.
    """
    setup = Setup(tmp_path, f"jürgen:{apr_md5_crypt.hash('pässwort')}\n")
    assert setup.check("jürgen", "pässwort") == "jürgen".encode()
    assert setup.check("jurgen", "pässwort") is None


def test_commentsAndBlankLines(tmp_path: Path, logEvents: list[LogEvent]) -> None:
    """
    Blank lines, comments and CRLF line ends are fine, without warnings.
    """
    text = f"# users\r\n\r\n   \n  # alice:x\nalice:{sha1Hash('pw')}\r\n"
    setup = Setup(tmp_path, text)
    assert setup.check("alice", "pw") == b"alice"
    assert list(setup.checker._entries) == [b"alice"]
    assert eventsNamed(logEvents, "auth_line_skipped") == []


def test_malformedLinesSkipped(tmp_path: Path, logEvents: list[LogEvent]) -> None:
    """
    Lines without a user and a colon, with bad UTF-8 or a duplicate user are
    skipped with a warning naming the line, and the rest still loads.
    """
    good = apr_md5_crypt.hash("pw")
    setup = Setup(tmp_path, "")
    setup.path.write_bytes(
        b"nocolon\n:nouser\n\xff\xfe:x\nal\x01ice:x\n"
        + f"alice:{good}\nalice:{sha1Hash('other')}\n".encode()
    )
    setup.checker.reload()
    skipped = eventsNamed(logEvents, "auth_line_skipped")
    assert [event["lineNumber"] for event in skipped] == [1, 2, 3, 4, 6]
    assert setup.check("alice", "pw") == b"alice"
    assert setup.check("alice", "other") is None


def test_missingFileIsValueError(tmp_path: Path) -> None:
    """
    A file that cannot be read is a L{ValueError} naming it, at construction.
    """
    path = str(tmp_path / "nope")
    with pytest.raises(ValueError, match="nope"):
        HtpasswdChecker(path)


def test_passlibRefusalIsAFailure(tmp_path: Path) -> None:
    """
    A password that passlib refuses to hash (over 4096 bytes) fails the login.
    """
    setup = Setup(tmp_path, f"alice:{apr_md5_crypt.hash('pw')}\n")
    assert setup.check("alice", "p" * 5000) is None


def test_bcryptRefusalIsAFailure() -> None:
    """
    A bcrypt hash that bcrypt itself refuses fails the check without an error.
    """
    assert (
        _htpasswdhashes.HtpasswdEntry("bcrypt", "$2y$05$not-a-hash").verify(b"pw")
        is False
    )


def test_nulInUserNameFails(tmp_path: Path) -> None:
    """
    A user name with a NUL byte fails without a verification.
    """
    setup = Setup(tmp_path, f"alice:{sha1Hash('pw')}\n")
    assert setup.check("alice\0", "pw") is None
    assert setup.runner.calls == 0


def test_textCredentials(tmp_path: Path) -> None:
    """
    Credentials that carry text instead of bytes are encoded as UTF-8.
    """

    @implementer(IUsernamePassword)
    class TextCredentials:
        username = "jürgen"
        password = "pw"

        def checkPassword(self, password: object) -> bool:
            raise NotImplementedError()

    setup = Setup(tmp_path, f"jürgen:{sha1Hash('pw')}\n")
    d = setup.checker.requestAvatarId(TextCredentials())
    assert resultOf(d) == "jürgen".encode()


def test_unexpectedErrorIsUnauthorized(
    tmp_path: Path, logEvents: list[LogEvent]
) -> None:
    """
    An unexpected error in the verification is logged and fails the login.
    """

    def broken(verification: Callable[[], bool]) -> Deferred[bool]:
        return fail(RuntimeError("boom"))

    path = tmp_path / "htpasswd"
    path.write_text(f"alice:{sha1Hash('pw')}\n")
    checker = HtpasswdChecker(str(path), clock=Clock(), runInThread=broken)
    d = checker.requestAvatarId(UsernamePassword(b"alice", b"pw"))
    assert resultOf(d) is None
    [error] = eventsNamed(logEvents, "auth_verify_error")
    assert error["log_failure"].check(RuntimeError)


# Files that cannot be read


def test_unreadableFilePermission(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A permission error names the user the process runs as and what to
    change.
    """
    monkeypatch.setattr(_htpasswd, "_serviceUser", lambda: "nobody")
    error = PermissionError(13, "Permission denied", "/etc/x")
    assert _htpasswd.unreadableFile(error) == (
        "permission denied for user nobody; make it readable by the service "
        "user or use systemd LoadCredential="
    )


def test_unreadableFileOther() -> None:
    """
    Other errors are described by their error string.
    """
    error = FileNotFoundError(2, "No such file or directory", "/etc/x")
    assert _htpasswd.unreadableFile(error) == "no such file or directory"


def test_serviceUser(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    The service user is named, or given by number when it has no name.
    """
    assert _htpasswd._serviceUser() == pwd.getpwuid(os.geteuid()).pw_name
    monkeypatch.setattr(os, "geteuid", lambda: 2**31 - 7)
    assert _htpasswd._serviceUser() == f"uid {2**31 - 7}"


def denyReading(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Make every file read by the checker fail with a permission error, as
    the user C{nobody}.
    """

    def readFile(path: str) -> tuple[tuple[int, int, int], bytes]:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(_htpasswd, "_readFile", readFile)
    monkeypatch.setattr(_htpasswd, "_serviceUser", lambda: "nobody")


def test_unreadableAtStart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A password file that cannot be read at start is a L{ValueError} that
    names the file, the user and what to change.
    """
    path = tmp_path / "htpasswd"
    path.write_text("")
    denyReading(monkeypatch)
    with pytest.raises(ValueError) as info:
        HtpasswdChecker(str(path))
    assert str(info.value) == (
        f"cannot read htpasswd file {path}: permission denied for user nobody; "
        "make it readable by the service user or use systemd LoadCredential="
    )


def test_unreadableOnChange(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logEvents: list[LogEvent]
) -> None:
    """
    A changed password file that the service user cannot read (privileges
    were dropped after start) is logged once, naming the file and the user,
    and the users loaded before still log in.
    """
    setup = Setup(tmp_path, f"alice:{sha1Hash('pw')}\n")
    denyReading(monkeypatch)
    setup.rewrite(f"alice:{sha1Hash('new')}\n")
    setup.clock.advance(1)
    assert setup.check("alice", "pw") == b"alice"
    setup.clock.advance(1)
    assert setup.check("alice", "pw") == b"alice"
    [error] = eventsNamed(logEvents, "auth_file_error")
    assert formatEvent(error) == (
        f"cannot read htpasswd file {setup.path}, keeping the 1 users loaded "
        "before: permission denied for user nobody; make it readable by the "
        "service user or use systemd LoadCredential="
    )


# HtpasswdChecker: reloading


def test_reloadWhenFileChanges(tmp_path: Path) -> None:
    """
    A changed file is reloaded on the first check a second or more after the
    last look at it, not before.
    """
    setup = Setup(tmp_path, f"alice:{sha1Hash('old')}\n")
    assert setup.check("alice", "old") == b"alice"
    setup.rewrite(f"alice:{sha1Hash('new')}\n")
    setup.clock.advance(0.5)
    assert setup.check("alice", "old") == b"alice"
    setup.clock.advance(0.5)
    assert setup.check("alice", "new") == b"alice"
    assert setup.check("alice", "old") is None


def test_reloadOnSameSizeRewrite(tmp_path: Path) -> None:
    """
    A rewrite that only changes the modification time is noticed too.
    """
    setup = Setup(tmp_path, f"alice:{sha1Hash('aaa')}\n")
    setup.rewrite(f"alice:{sha1Hash('bbb')}\n")
    setup.clock.advance(1)
    assert setup.check("alice", "bbb") == b"alice"


def test_reloadFailureKeepsEntries(tmp_path: Path, logEvents: list[LogEvent]) -> None:
    """
    When the file goes away, the users loaded before still log in, and the
    error is logged once.
    """
    setup = Setup(tmp_path, f"alice:{sha1Hash('pw')}\n")
    setup.path.unlink()
    assert setup.checker.reload() is False
    assert len(eventsNamed(logEvents, "auth_file_error")) == 1
    setup.clock.advance(1)
    assert setup.check("alice", "pw") == b"alice"
    setup.clock.advance(1)
    assert setup.check("alice", "pw") == b"alice"
    [_, second] = eventsNamed(logEvents, "auth_file_error")
    assert "keeping the 1 users" in formatEvent(second)
    setup.path.write_text(f"bob:{sha1Hash('pw')}\n")
    setup.clock.advance(1)
    assert setup.check("bob", "pw") == b"bob"
    assert setup.check("alice", "pw") is None


def test_reloadReturnsTrue(tmp_path: Path, logEvents: list[LogEvent]) -> None:
    """
    A successful reload returns C{True} and logs how many users it loaded.
    """
    setup = Setup(tmp_path, f"alice:{sha1Hash('pw')}\nbob:{sha1Hash('pw')}\n")
    assert setup.checker.reload() is True
    loaded = eventsNamed(logEvents, "auth_file_loaded")
    assert [event["count"] for event in loaded] == [2, 2]


# HtpasswdChecker: the success cache


def test_cacheHitAvoidsThePool(tmp_path: Path) -> None:
    """
    A second check with the same right password is answered from the cache.
    """
    setup = Setup(tmp_path, f"alice:{bcryptHash('pw')}\n")
    assert setup.check("alice", "pw") == b"alice"
    assert setup.check("alice", "pw") == b"alice"
    assert setup.runner.calls == 1


def test_failuresAreNotCached(tmp_path: Path) -> None:
    """
    Failed checks are verified every time, and a cached success does not
    help another password.
    """
    setup = Setup(tmp_path, f"alice:{bcryptHash('pw')}\n")
    assert setup.check("alice", "pw") == b"alice"
    assert setup.check("alice", "px") is None
    assert setup.check("alice", "px") is None
    assert setup.runner.calls == 3


def test_cacheExpires(tmp_path: Path) -> None:
    """
    A cached success is forgotten after C{cacheTTL} seconds.
    """
    setup = Setup(tmp_path, f"alice:{bcryptHash('pw')}\n", cacheTTL=5)
    setup.check("alice", "pw")
    setup.clock.advance(4.9)
    setup.check("alice", "pw")
    assert setup.runner.calls == 1
    setup.clock.advance(0.1)
    assert setup.check("alice", "pw") == b"alice"
    assert setup.runner.calls == 2


def test_cacheDisabled(tmp_path: Path) -> None:
    """
    With C{cacheTTL=0} every check is verified.
    """
    setup = Setup(tmp_path, f"alice:{bcryptHash('pw')}\n", cacheTTL=0)
    setup.check("alice", "pw")
    setup.check("alice", "pw")
    assert setup.runner.calls == 2
    assert setup.checker._cache == {}


def test_cacheKeysAreKeyedHashes(tmp_path: Path) -> None:
    """
    The cache holds keyed SHA-256 digests, never the user or the password.
    """
    password = "correct horse battery"
    setup = Setup(tmp_path, f"alice:{bcryptHash(password)}\n")
    setup.check("alice", password)
    [key] = setup.checker._cache
    assert len(key) == 32
    assert password.encode() not in key and b"alice" not in key
    assert key != hashlib.sha256(b"alice\0" + password.encode()).digest()
    (tmp_path / "other").mkdir()
    other = Setup(tmp_path / "other", f"alice:{bcryptHash(password)}\n")
    other.check("alice", password)
    assert list(other.checker._cache) != [key]


def test_cacheClearedOnReload(tmp_path: Path) -> None:
    """
    A reload forgets every cached success.
    """
    setup = Setup(tmp_path, f"alice:{bcryptHash('pw')}\n")
    setup.check("alice", "pw")
    setup.checker.reload()
    assert setup.checker._cache == {}
    setup.check("alice", "pw")
    assert setup.runner.calls == 2


def test_cacheBounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    The cache drops expired successes first, then the oldest, when full.
    """
    monkeypatch.setattr(_htpasswd, "_CACHE_LIMIT", 3)
    users = [f"u{n}" for n in range(6)]
    text = "".join(f"{user}:{sha1Hash('pw')}\n" for user in users)
    setup = Setup(tmp_path, text, cacheTTL=10)
    setup.check("u0", "pw")
    setup.clock.advance(10)
    for user in users[1:]:
        setup.check(user, "pw")
        assert len(setup.checker._cache) <= 3
    calls = setup.runner.calls
    setup.check("u5", "pw")
    setup.check("u2", "pw")
    assert setup.runner.calls == calls + 1


def test_successDuringReloadNotCached(tmp_path: Path) -> None:
    """
    A success verified against entries that were reloaded meanwhile is
    still a success but is not cached.
    """
    pending: list[Deferred[bool]] = []

    def later(verification: Callable[[], bool]) -> Deferred[bool]:
        pending.append(Deferred())
        return pending[-1]

    path = tmp_path / "htpasswd"
    path.write_text(f"alice:{sha1Hash('pw')}\n")
    checker = HtpasswdChecker(str(path), clock=Clock(), runInThread=later)
    d = checker.requestAvatarId(UsernamePassword(b"alice", b"pw"))
    checker.reload()
    pending[0].callback(True)
    assert resultOf(d) == b"alice"
    assert checker._cache == {}


# HtpasswdChecker: the thread pool


@implementer(IReactorFromThreads)
class QueueReactor:
    """
    Collects C{callFromThread} calls for the test thread to run.
    """

    def __init__(self) -> None:
        self.calls: queue.Queue[Callable[[], object]] = queue.Queue()

    def callFromThread(
        self, callable: Callable[..., Any], *args: object, **kwargs: object
    ) -> None:
        self.calls.put(partial(callable, *args, **kwargs))

    def runOne(self) -> None:
        self.calls.get(timeout=10)()


def test_verificationRunsInThePool(tmp_path: Path) -> None:
    """
    Without an injected runner, verification runs in a worker thread of the
    checker's own pool, which is started on demand and stopped by C{stop}.
    """
    path = tmp_path / "htpasswd"
    path.write_text(f"alice:{bcryptHash('pw')}\n")
    checker = HtpasswdChecker(str(path), clock=Clock(), maxThreads=1)
    reactor = QueueReactor()
    checker.bind(reactor)
    assert checker._pool is None
    threads: list[int] = []
    original = _htpasswdhashes.VERIFIERS["bcrypt"]

    def spy(stored: str, password: bytes) -> bool:
        threads.append(threading.get_ident())
        return original(stored, password)

    _htpasswdhashes.VERIFIERS["bcrypt"] = spy
    try:
        right = checker.requestAvatarId(UsernamePassword(b"alice", b"pw"))
        reactor.runOne()
        wrong = checker.requestAvatarId(UsernamePassword(b"alice", b"px"))
        reactor.runOne()
    finally:
        _htpasswdhashes.VERIFIERS["bcrypt"] = original
        checker.stop()
    assert resultOf(right) == b"alice"
    assert resultOf(wrong) is None
    assert len(threads) == 2 and threading.get_ident() not in threads
    assert checker._pool is None


def test_noThreadsAfterStop(tmp_path: Path, logEvents: list[LogEvent]) -> None:
    """
    After C{stop}, checks fail without starting a thread pool, quietly.
    """
    path = tmp_path / "htpasswd"
    path.write_text(f"alice:{sha1Hash('pw')}\n")
    checker = HtpasswdChecker(str(path), clock=Clock())
    checker.bind(QueueReactor())
    checker.stop()
    d = checker.requestAvatarId(UsernamePassword(b"alice", b"pw"))
    assert resultOf(d) is None
    assert checker._pool is None
    assert eventsNamed(logEvents, "auth_verify_error") == []
    checker.stop()


@implementer(IReactorFromThreads)
class ThreadingMemoryReactor(MemoryReactorClock):
    """
    A L{MemoryReactorClock} that runs C{callFromThread} calls at once.
    """

    def callFromThread(
        self, callable: Callable[..., Any], *args: object, **kwargs: object
    ) -> None:
        callable(*args, **kwargs)


def test_boundReactorIsTheDefaultClock(tmp_path: Path) -> None:
    """
    Without a C{clock}, the cache and the change checks use the bound reactor.
    """
    path = tmp_path / "htpasswd"
    path.write_text(f"alice:{sha1Hash('pw')}\n")
    runner = InlineRunner()
    checker = HtpasswdChecker(str(path), cacheTTL=5, runInThread=runner)
    reactor = ThreadingMemoryReactor()
    checker.bind(reactor)
    checker.requestAvatarId(UsernamePassword(b"alice", b"pw"))
    assert list(checker._cache.values()) == [5]
    reactor.advance(5)
    checker.requestAvatarId(UsernamePassword(b"alice", b"pw"))
    assert runner.calls == 2


# The checker factory and the plugin


def test_checkerProvidesInterface(tmp_path: Path) -> None:
    """
    L{HtpasswdChecker} provides L{ICredentialsChecker}.
    """
    setup = Setup(tmp_path, "")
    assert verifyObject(ICredentialsChecker, setup.checker)


def test_factoryProvidesInterfaces() -> None:
    """
    The checker factory provides L{strcred.ICheckerFactory} and L{IPlugin},
    and its help names the plaintext option.
    """
    assert verifyObject(strcred.ICheckerFactory, connectproxyHtpasswd)
    assert verifyObject(IPlugin, connectproxyHtpasswd)
    assert "--auth-allow-plaintext" in connectproxyHtpasswd.authHelp


def test_makeChecker(tmp_path: Path) -> None:
    """
    C{strcred.makeChecker("htpasswd:PATH")} finds the plugin and loads PATH.
    """
    path = tmp_path / "htpasswd"
    path.write_text(f"alice:{sha1Hash('pw')}\n")
    checker = strcred.makeChecker(f"htpasswd:{path}")
    assert isinstance(checker, HtpasswdChecker)
    assert checker.path == str(path)
    assert checker.allowPlaintext is False


@pytest.mark.parametrize("argument", ["", "   "])
def test_factoryNeedsAPath(argument: str) -> None:
    """
    An empty argument string is a L{ValueError}.
    """
    with pytest.raises(ValueError, match="htpasswd:PATH"):
        connectproxyHtpasswd.generateChecker(argument)


def test_pluginImportIsLight() -> None:
    """
    Importing the plugin module imports neither the reactor, OpenSSL,
    bcrypt, passlib nor the checker itself.
    """
    heavy = ["twisted.internet.reactor", "OpenSSL", "bcrypt", "passlib"]
    heavy += ["connectproxy._auth", "connectproxy._htpasswd"]
    script = (
        "import sys\n"
        "import twisted.plugins.connectproxy_htpasswd\n"
        f"print([name for name in {heavy!r} if name in sys.modules])\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert output.strip() == "[]"
