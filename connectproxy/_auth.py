# -*- test-case-name: tests.test_auth -*-
"""
Proxy authentication: parsing C{Proxy-Authorization: Basic} credentials,
checking them against an Apache htpasswd file without blocking the reactor,
and slowing down clients that keep guessing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import threading
import unicodedata
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, TypeVar

import bcrypt
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from ._errors import CheckerBusy, InvalidCredentials

__all__ = [
    "CheckerBusy",
    "FailureLimiter",
    "HtpasswdChecker",
    "InvalidCredentials",
    "parseBasicCredentials",
]

_V = TypeVar("_V")

Verification = Callable[[], bool]
"""
A password verification, ready to run in a thread: C{True} for a match.
"""

ThreadRunner = Callable[[Verification], "Deferred[bool]"]
"""
Runs a L{Verification} away from the reactor thread and fires with its result.
"""


def parseBasicCredentials(value: str) -> tuple[str, str]:
    """
    Parse the value of a C{Proxy-Authorization} header as Basic credentials
    (RFC 7617): the scheme C{Basic} in any case, one or more spaces, then
    canonical padded base64 of C{user-id:password} in UTF-8.

    @param value: The field value, decoded as ISO-8859-1.
    @return: The user-id and the password (which may contain colons).
    @raise InvalidCredentials: For anything else.
    """
    scheme, _, rest = value.strip(" \t").partition(" ")
    if not (scheme.isascii() and scheme.lower() == "basic"):
        raise InvalidCredentials("not Basic credentials")
    token = rest.lstrip(" ")
    if not token:
        raise InvalidCredentials("no credentials after Basic")
    try:
        decoded = base64.b64decode(token.encode("ascii"), validate=True)
    except ValueError:  # binascii.Error and UnicodeEncodeError are ValueErrors
        raise InvalidCredentials("credentials are not base64") from None
    if base64.b64encode(decoded) != token.encode("ascii"):
        raise InvalidCredentials("credentials are not canonical base64")
    userBytes, colon, passwordBytes = decoded.partition(b":")
    if not colon:
        raise InvalidCredentials("no colon in the credentials")
    try:
        user = userBytes.decode("utf-8")
        password = passwordBytes.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidCredentials("credentials are not UTF-8") from None
    if not user:
        raise InvalidCredentials("empty user-id")
    if _hasControl(user):
        raise InvalidCredentials("control character in the user-id")
    return user, password


def _hasControl(text: str) -> bool:
    """
    @return: Whether C{text} contains a C0 or C1 control character or DEL.
    """
    return any(unicodedata.category(c) == "Cc" for c in text)


def _checkBcrypt(stored: str, password: bytes) -> bool:
    # bcrypt only uses 72 bytes: bcrypt 5 raises ValueError for longer
    # passwords, older versions truncate them. Refuse them with any version.
    if len(password) > 72:
        return False
    try:
        return bcrypt.checkpw(password, stored.encode("ascii"))
    except ValueError:
        return False


def _passlibHandler(name: str) -> Any:
    from passlib import hash as passlibHash  # type: ignore[import-untyped]

    return getattr(passlibHash, name)


def _checkPasslib(name: str, stored: str, password: bytes) -> bool:
    try:
        return bool(_passlibHandler(name).verify(password, stored))
    except (ValueError, TypeError):
        return False


def _checkSha1(stored: str, password: bytes) -> bool:
    digest = base64.b64encode(hashlib.sha1(password).digest())
    return hmac.compare_digest(digest, stored[len("{SHA}") :].encode("utf-8"))


def _checkPlaintext(stored: str, password: bytes) -> bool:
    return hmac.compare_digest(password, stored.encode("utf-8"))


_VERIFIERS: Final[dict[str, Callable[[str, bytes], bool]]] = {
    # Ordered from the most to the least expensive: see _pickDummy.
    "bcrypt": _checkBcrypt,
    "sha512-crypt": partial(_checkPasslib, "sha512_crypt"),
    "sha256-crypt": partial(_checkPasslib, "sha256_crypt"),
    "apr1": partial(_checkPasslib, "apr_md5_crypt"),
    "sha1": _checkSha1,
    "plaintext": _checkPlaintext,
}
_PREFIXES: Final = (
    ("$2y$", "bcrypt"),
    ("$2a$", "bcrypt"),
    ("$2b$", "bcrypt"),
    ("$6$", "sha512-crypt"),
    ("$5$", "sha256-crypt"),
    ("$apr1$", "apr1"),
    ("{SHA}", "sha1"),
)
_PASSLIB_NAMES: Final = {
    "sha512-crypt": "sha512_crypt",
    "sha256-crypt": "sha256_crypt",
    "apr1": "apr_md5_crypt",
}
_BCRYPT_HASH: Final = re.compile(r"\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}")
_SHA1_HASH: Final = re.compile(r"\{SHA\}[A-Za-z0-9+/]{27}=")
_OTHER_HASH: Final = re.compile(r"\$|\{[A-Za-z0-9-]+\}|[./A-Za-z0-9]{13}\Z")


@dataclass(frozen=True, slots=True)
class _Entry:
    """
    One user's line of an htpasswd file.

    @ivar scheme: A key of L{_VERIFIERS}, or C{None} if it never matches.
    @ivar stored: The stored hash (or plaintext password).
    """

    scheme: str | None
    stored: str

    def verify(self, password: bytes) -> bool:
        """
        @return: Whether C{password} matches; always C{False} without a scheme.
        """
        verifier = _VERIFIERS.get(self.scheme or "")
        return verifier is not None and verifier(self.stored, password)


def _classify(stored: str, allowPlaintext: bool) -> tuple[str | None, str]:
    """
    Find how to verify an htpasswd hash field.

    @return: The scheme (C{None} if the entry must never match) and, if it
        must not, why.
    """
    scheme = next(
        (name for prefix, name in _PREFIXES if stored.startswith(prefix)), None
    )
    if scheme is None:
        if not stored:
            return None, "empty password field"
        if _OTHER_HASH.match(stored):
            return None, "unsupported hash format (re-create it with htpasswd -B)"
        if not allowPlaintext:
            return None, "plaintext password refused (see --auth-allow-plaintext)"
        return "plaintext", ""
    if scheme == "bcrypt":
        wellFormed = _BCRYPT_HASH.fullmatch(stored) is not None
    elif scheme == "sha1":
        wellFormed = _SHA1_HASH.fullmatch(stored) is not None
    else:
        try:
            _passlibHandler(_PASSLIB_NAMES[scheme]).from_string(stored)
            wellFormed = True
        except (ValueError, TypeError):
            wellFormed = False
    return (scheme, "") if wellFormed else (None, f"malformed {scheme} hash")


def _fileSignature(status: os.stat_result) -> tuple[int, int, int]:
    return (status.st_ino, status.st_size, status.st_mtime_ns)


_CACHE_LIMIT: Final = 10_000
_STAT_INTERVAL: Final = 1.0


@implementer(ICredentialsChecker)
class HtpasswdChecker:
    """
    Check L{IUsernamePassword} credentials against an Apache htpasswd file.

    bcrypt (C{$2y$}, C{$2a$}, C{$2b$}), Apache MD5 (C{$apr1$}), SHA-crypt
    (C{$5$}, C{$6$}) and unsalted SHA-1 (C{{SHA}}) entries are verified in a
    small thread pool of its own; plaintext entries only when
    C{allowPlaintext} is set. Other entries never match. Successes are
    cached briefly under a keyed hash, and the file is reloaded when it
    changes.

    Call L{bind} with the reactor before use and L{stop} at shutdown.

    @ivar path: The htpasswd file.
    @ivar allowPlaintext: Whether plaintext entries may match; set it, then
        call L{reload}, to change it.
    @ivar cacheTTL: Seconds a success is remembered (0 disables the cache).
    """

    credentialInterfaces = (IUsernamePassword,)
    _log = Logger()

    def __init__(
        self,
        path: str,
        allowPlaintext: bool = False,
        cacheTTL: float = 30.0,
        maxThreads: int = 2,
        clock: IReactorTime | None = None,
        *,
        runInThread: ThreadRunner | None = None,
        maxQueued: int = 256,
    ) -> None:
        """
        Load the file.

        @param maxThreads: The most verifications that run at once.
        @param maxQueued: The most verifications waiting or running; beyond
            that a check fails at once (a flood of logins from many
            addresses cannot queue unbounded work).
        @param clock: The time source of the cache and of the change checks;
            the bound reactor when C{None}.
        @param runInThread: Replaces the thread pool (for tests).
        @raise ValueError: If the file cannot be read.
        """
        self.path = path
        self.allowPlaintext = allowPlaintext
        self.cacheTTL = cacheTTL
        self._maxThreads = maxThreads
        self._clock = clock
        self._runInThread = self._runInPool if runInThread is None else runInThread
        self._maxQueued = maxQueued
        self._queued = 0
        self._queueLock = threading.Lock()
        self._reactor: IReactorFromThreads | None = None
        self._pool: ThreadPool | None = None
        self._stopped = False
        self._secret = os.urandom(32)
        self._cache: dict[bytes, float] = {}
        self._entries: dict[bytes, _Entry] = {}
        self._dummy: _Entry | None = None
        self._generation = 0
        self._signature: tuple[int, int, int] | None = None
        self._lastStat: float | None = None
        try:
            self._load()
        except OSError as e:
            raise ValueError(f"cannot read htpasswd file {path!r}: {e.strerror}") from e

    def bind(self, reactor: IReactorFromThreads) -> None:
        """
        Use C{reactor} to deliver results from the thread pool (and, without
        a C{clock}, as the clock).
        """
        self._reactor = reactor

    def stop(self) -> None:
        """
        Stop the thread pool: verifications still queued are skipped (they
        fail), and only those already running are waited for.  Later
        checks fail rather than start threads that would keep the process
        alive.
        """
        self._stopped = True
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()

    def reload(self) -> bool:
        """
        Read the file again; if that fails, log why and keep the users
        loaded before.

        @return: Whether the file was read.
        """
        try:
            self._load()
        except OSError as e:
            self._log.error(
                "htpasswd file {path} could not be read ({error}): "
                "keeping the {count} users loaded before",
                path=self.path,
                error=e.strerror,
                count=len(self._entries),
                event="auth_file_error",
            )
            return False
        return True

    # The interface says Deferred[bytes | tuple[()]] (the tuple is ANONYMOUS);
    # Deferred is invariant, and this one always fires with bytes.
    def requestAvatarId(  # type: ignore[override]
        self, credentials: IUsernamePassword
    ) -> Deferred[bytes]:
        """
        Check a user name and password.

        @return: A L{Deferred} that fires with the UTF-8 user name, or fails
            with L{UnauthorizedLogin}.
        """
        self._maybeReload()
        user, password = _asBytes(credentials.username), _asBytes(credentials.password)
        if b"\0" in user:
            return fail(UnauthorizedLogin())
        key = hmac.new(self._secret, user + b"\0" + password, hashlib.sha256).digest()
        if self._isCached(key):
            return succeed(user)
        entry = self._entries.get(user)
        target = entry if entry is not None and entry.scheme else self._dummy
        if target is None:
            return fail(UnauthorizedLogin())
        generation = self._generation

        def checked(matched: bool) -> bytes:
            if not matched or target is not entry:
                raise UnauthorizedLogin()
            if generation == self._generation:
                self._remember(key)
            return user

        if self._queued >= self._maxQueued:
            self._log.warn(
                "{count} password checks already queued: refusing more",
                count=self._queued,
                event="auth_overloaded",
            )
            return fail(CheckerBusy())
        with self._queueLock:
            self._queued += 1
        d = self._runInThread(partial(self._verifyQueued, target, password))
        return d.addErrback(self._verificationFailed).addCallback(checked)

    def _verifyQueued(self, entry: _Entry, password: bytes) -> bool:
        """
        Run one verification (in a pool thread) and free its place in the
        queue when it really ends, even if whoever asked has given up: a
        client that leaves must not free room for more work than runs.
        After L{stop}, queued work is skipped.
        """
        try:
            return not self._stopped and entry.verify(password)
        finally:
            with self._queueLock:
                self._queued -= 1

    def _verificationFailed(self, reason: Failure) -> Failure:
        if reason.check(UnauthorizedLogin, CancelledError):
            # A cancelled check (the client left) is not a failed login.
            return reason
        self._log.failure(
            "password verification failed unexpectedly",
            reason,
            LogLevel.error,
            event="auth_verify_error",
        )
        return Failure(UnauthorizedLogin())

    def _now(self) -> float:
        clock = self._clock
        if clock is None:
            clock = IReactorTime(self._threadReactor())
        return clock.seconds()

    def _threadReactor(self) -> IReactorFromThreads:
        if self._reactor is None:
            from twisted.internet import reactor as globalReactor

            return IReactorFromThreads(globalReactor)
        return self._reactor

    def _runInPool(self, verification: Verification) -> Deferred[bool]:
        if self._stopped:
            return fail(UnauthorizedLogin())
        if self._pool is None:
            self._pool = ThreadPool(0, self._maxThreads, "connectproxy-htpasswd")
            self._pool.start()
        return deferToThreadPool(self._threadReactor(), self._pool, verification)

    def _isCached(self, key: bytes) -> bool:
        expiry = self._cache.get(key)
        if expiry is None:
            return False
        if expiry > self._now():
            return True
        del self._cache[key]
        return False

    def _remember(self, key: bytes) -> None:
        if self.cacheTTL <= 0:
            return
        now = self._now()
        self._cache.pop(key, None)
        # Constant TTL: insertion order is expiry order, so the oldest is first.
        _makeRoom(self._cache, lambda expiry: expiry <= now, _CACHE_LIMIT)
        self._cache[key] = now + self.cacheTTL

    def _maybeReload(self) -> None:
        now = self._now()
        if self._lastStat is not None and 0 <= now - self._lastStat < _STAT_INTERVAL:
            return
        self._lastStat = now
        try:
            signature: tuple[int, int, int] | None = _fileSignature(os.stat(self.path))
        except OSError:
            signature = None
        if signature != self._signature:
            self._signature = signature
            self.reload()

    def _load(self) -> None:
        with open(self.path, "rb") as f:
            signature = _fileSignature(os.fstat(f.fileno()))
            data = f.read()
        entries = self._parse(data)
        usable = [e for e in entries.values() if e.scheme is not None]
        ranks = list(_VERIFIERS)
        self._entries = entries
        self._dummy = min(
            usable, key=lambda e: ranks.index(e.scheme or ""), default=None
        )
        self._signature = signature
        self._cache.clear()
        self._generation += 1
        self._log.info(
            "htpasswd file {path} loaded: {count} users",
            path=self.path,
            count=len(entries),
            event="auth_file_loaded",
        )

    def _parse(self, data: bytes) -> dict[bytes, _Entry]:
        entries: dict[bytes, _Entry] = {}
        weak: list[str] = []
        for number, rawLine in enumerate(data.split(b"\n"), 1):
            line = rawLine.rstrip(b"\r")
            if not line.strip() or line.lstrip().startswith(b"#"):
                continue
            try:
                user, colon, stored = line.decode("utf-8").partition(":")
            except UnicodeDecodeError:
                self._skipped(number, "not UTF-8")
                continue
            if not colon or not user or _hasControl(user):
                self._skipped(number, "not user:hash")
                continue
            key = user.encode("utf-8")
            if key in entries:
                self._skipped(number, "duplicate user (the first line wins)")
                continue
            scheme, problem = _classify(stored, self.allowPlaintext)
            if problem:
                self._log.warn(
                    "htpasswd file {path}: user {user} can never log in: {reason}",
                    path=self.path,
                    user=user,
                    reason=problem,
                    event="auth_entry_unusable",
                )
            elif scheme == "sha1":
                weak.append(user)
            entries[key] = _Entry(scheme, stored)
        if weak:
            self._log.warn(
                "htpasswd file {path}: {count} users have weak unsalted {{SHA}} "
                "hashes ({users}); re-create them with htpasswd -B",
                path=self.path,
                count=len(weak),
                users=", ".join(weak[:10]) + (", ..." if len(weak) > 10 else ""),
                event="auth_weak_hashes",
            )
        return entries

    def _skipped(self, lineNumber: int, reason: str) -> None:
        self._log.warn(
            "htpasswd file {path}: line {lineNumber} skipped: {reason}",
            path=self.path,
            lineNumber=lineNumber,
            reason=reason,
            event="auth_line_skipped",
        )


def _asBytes(value: bytes | str) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def _makeRoom(table: dict[Any, _V], expired: Callable[[_V], bool], limit: int) -> None:
    """
    Drop the oldest items of C{table} while they are expired or there is no
    room for one more.
    """
    while table:
        oldest = next(iter(table))
        if len(table) < limit and not expired(table[oldest]):
            return
        del table[oldest]


class FailureLimiter:
    """
    Block a client (any string key, usually its address) for C{blockFor}
    seconds after C{maxFailures} failed logins within C{window} seconds.

    At most C{maxKeys} counting and C{maxKeys} blocked keys are remembered;
    the oldest go first.
    """

    def __init__(
        self,
        clock: IReactorTime,
        maxFailures: int = 10,
        window: float = 60.0,
        blockFor: float = 60.0,
        maxKeys: int = 100_000,
    ) -> None:
        """
        @param maxFailures: 0 disables the limiter.
        """
        self._clock = clock
        self.maxFailures = maxFailures
        self.window = window
        self.blockFor = blockFor
        self.maxKeys = maxKeys
        # Both ordered by last change, which is also expiry order.
        self._failures: dict[str, deque[float]] = {}
        self._blockedUntil: dict[str, float] = {}
        # Checks under way per key: they count towards the limit, so that
        # guesses sent in parallel cannot outrun it.
        self._pending: dict[str, int] = {}

    def blockedFor(self, key: str) -> float | None:
        """
        @return: The seconds until C{key} is unblocked, or C{None} if it is
            not blocked.
        """
        remaining = self._blockRemaining(key)
        if remaining is not None:
            return remaining
        pending = self._pending.get(key, 0)
        if pending and pending + self._recentFailures(key) >= self.maxFailures > 0:
            # As many checks under way as failures still allowed: wait for
            # their outcome.
            return 1.0
        return None

    def _blockRemaining(self, key: str) -> float | None:
        until = self._blockedUntil.get(key)
        if until is None:
            return None
        remaining = until - self._clock.seconds()
        if remaining > 0:
            return remaining
        del self._blockedUntil[key]
        return None

    def _recentFailures(self, key: str) -> int:
        failures = self._failures.get(key)
        if failures is None:
            return 0
        horizon = self._clock.seconds() - self.window
        return sum(1 for when in failures if when > horizon)

    def attemptStarted(self, key: str) -> None:
        """
        A check for C{key} is under way; call L{attemptEnded} when it ends,
        however it ends.
        """
        self._pending[key] = self._pending.get(key, 0) + 1

    def attemptEnded(self, key: str) -> None:
        """
        A check started with L{attemptStarted} ended.
        """
        count = self._pending.get(key, 0) - 1
        if count > 0:
            self._pending[key] = count
        else:
            self._pending.pop(key, None)

    def recordFailure(self, key: str) -> None:
        """
        Count a failed login of C{key}, and block it if that was one too many.
        """
        if self.maxFailures <= 0 or self._blockRemaining(key) is not None:
            return
        now = self._clock.seconds()
        failures = self._failures.pop(key, None)
        if failures is None:
            horizon = now - self.window
            _makeRoom(self._failures, lambda times: times[-1] <= horizon, self.maxKeys)
            failures = deque(maxlen=self.maxFailures)
        failures.append(now)
        while failures[0] <= now - self.window:
            failures.popleft()
        if len(failures) < self.maxFailures:
            self._failures[key] = failures
            return
        _makeRoom(self._blockedUntil, lambda until: until <= now, self.maxKeys)
        self._blockedUntil[key] = now + self.blockFor
