# -*- test-case-name: tests.test_auth_proxy -*-
"""
Protocol tests of authentication through the whole proxy (a
L{ProxyHarness} on a L{MemoryReactorClock}): failed logins counted per
client address and user name, password spraying, the checkers C{--auth}
offers, duplicated C{Proxy-Authorization} fields, the password checks
queue shared between clients, and password files that cannot be read
again after privileges were dropped.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent, LogLevel, formatEvent
from twisted.python import usage
from zope.interface import implementer

from connectproxy import _htpasswd
from connectproxy._admission import Gatekeeper, userPortal
from connectproxy._htpasswd import HtpasswdChecker
from connectproxy._limiter import FailureLimiter
from connectproxy._rules import AccessRules
from connectproxy._settings import ProxySettings
from connectproxy.tap import Options, buildConfig, makeService
from connectproxy.testing import FakeClient, ProxyHarness, connectHead
from tests._helpers import basic, currentChecker, listenerFactory, logsIn, reloaderOf
from tests.test_htpasswd import sha1Hash
from tests.test_verifyqueue import LaterRunner

USERS = "memory:alice:secret:bob:hunter2"
TARGET = "example.com:443"
SECOND = IPv4Address("TCP", "127.0.0.2", 50000)


def optionsHarness(*argv: str, settings: ProxySettings | None = None) -> ProxyHarness:
    """
    A harness whose access checks come from these command-line options,
    with checkers that verify at once instead of in threads.
    """
    options = Options()
    options.parseOptions(list(argv))
    harness = ProxyHarness(settings)
    harness.factory.gatekeeper = buildConfig(options, harness.clock).gatekeeper
    for checker in options.checkers():
        if isinstance(checker, HtpasswdChecker):
            checker._runInThread = lambda verification: succeed(verification())
            checker._clock = harness.clock
    return harness


def login(harness: ProxyHarness, credentials: bytes, peer: Any = None) -> FakeClient:
    """
    Send one CONNECT with these Basic credentials on a new connection.
    """
    client = harness.connectClient(peer)
    client.send(connectHead(TARGET, basic(credentials)))
    return client


def named(events: list[LogEvent], name: str) -> list[LogEvent]:
    return [event for event in events if event.get("event") == name]


# Failed logins: per address and user name, and spraying (issue 6.2).


def test_failuresOfOneUserDoNotLockOutOthers(logEvents: list[LogEvent]) -> None:
    """
    Ten wrong passwords for one user name from 127.0.0.1, then another
    user's right password from 127.0.0.1: that user gets a tunnel (users
    behind one NAT share an address); the first user name is refused from
    there with 429, even with its right password.
    """
    harness = optionsHarness("--auth", USERS)
    client = harness.connectClient()
    client.send(connectHead(TARGET, basic(b"alice:wrong")) * 10)
    assert [r.status for r in client.responses()] == [407] * 10
    bob = login(harness, b"bob:hunter2")
    assert len(harness.connector.attempts) == 1
    harness.connector.attempts[0].succeed()
    assert bob.response().status == 200
    alice = login(harness, b"alice:secret").response()
    assert alice.status == 429
    assert alice.body == (
        b"429 Too Many Requests: too many failed logins for this user; "
        b"try again later\n"
    )
    assert alice.header("Retry-After") == "60"
    assert len(harness.connector.attempts) == 1
    [blocked] = named(logEvents, "auth_blocked")
    assert (blocked["scope"], blocked["client"]) == ("user", "127.0.0.1")
    assert formatEvent(blocked) == (
        "user 'alice' refused from 127.0.0.1 for 60.0 s: 10 failed logins"
    )


def test_blockedUserStillLogsInFromElsewhere() -> None:
    """
    A user name blocked from one address still logs in from another.
    """
    harness = optionsHarness("--auth", USERS, "--auth-max-failures", "2")
    login(harness, b"alice:wrong")
    login(harness, b"alice:wrong")
    assert login(harness, b"alice:secret").response().status == 429
    login(harness, b"alice:secret", SECOND)
    assert len(harness.connector.attempts) == 1


def test_sprayingBlocksTheAddress(logEvents: list[LogEvent]) -> None:
    """
    Failed logins with C{--auth-max-failed-users} different user names from
    one address refuse the whole address with 429, even a right password of
    a user that never failed, until C{--auth-block-time} has passed; other
    addresses are not affected.
    """
    harness = optionsHarness(
        *("--auth", USERS, "--auth-max-failed-users", "3"),
        *("--auth-block-time", "30"),
    )
    for name in [b"carol", b"dave", b"erin"]:
        assert login(harness, name + b":guess").response().status == 407
    refused = harness.connectClient()
    refused.send(connectHead(TARGET))
    response = refused.response()
    assert response.status == 429
    assert response.header("Retry-After") == "30"
    assert b"different user names" in response.body
    assert login(harness, b"bob:hunter2").response().status == 429
    login(harness, b"bob:hunter2", SECOND)
    assert len(harness.connector.attempts) == 1
    [blocked] = named(logEvents, "auth_blocked")
    assert (blocked["scope"], blocked["client"]) == ("client", "127.0.0.1")
    assert formatEvent(blocked) == (
        "127.0.0.1 refused for 30.0 s: failed logins with 3 different user names"
    )
    harness.clock.advance(30)
    login(harness, b"bob:hunter2")
    assert len(harness.connector.attempts) == 2


def test_malformedCredentialsCountAsOneUser(logEvents: list[LogEvent]) -> None:
    """
    Malformed credentials are failures of a user name of their own: they
    block malformed credentials, not the users behind the address.
    """
    harness = optionsHarness("--auth", USERS, "--auth-max-failures", "2")
    client = harness.connectClient()
    client.send(connectHead(TARGET, "Proxy-Authorization: Basic !") * 3)
    assert [r.status for r in client.responses()] == [407, 407, 429]
    [blocked] = named(logEvents, "auth_blocked")
    assert (blocked["scope"], blocked["user"]) == ("user", None)
    assert formatEvent(blocked).startswith("malformed credentials refused from")
    login(harness, b"alice:secret")
    assert len(harness.connector.attempts) == 1


# Two Proxy-Authorization fields (issue 6.7).


DOUBLE_CREDENTIALS = (
    b"CONNECT example.com:443 HTTP/1.1\r\n"
    b"Host: example.com:443\r\n"
    b"Proxy-Authorization: Basic Ym9iOmh1bnRlcjI=\r\n"
    b"proxy-authorization: Basic YWxpY2U6c2VjcmV0\r\n"
    b"\r\n"
)


@pytest.mark.parametrize("auth", [True, False], ids=["auth", "no auth"])
def test_twoProxyAuthorizationFieldsAre400(auth: bool) -> None:
    """
    A request with two C{Proxy-Authorization} fields is refused with 400
    and closed, like one with two C{Host} fields, before any check.
    """
    harness = optionsHarness(*(["--auth", USERS] if auth else []))
    client = harness.connectClient()
    client.send(DOUBLE_CREDENTIALS)
    response = client.response()
    assert response.status == 400
    assert response.body == (
        b"400 Bad Request: more than one Proxy-Authorization header field\n"
    )
    assert response.header("Connection") == "close"
    assert client.transport.disconnecting
    assert harness.connector.attempts == []


# Every checker --auth offers works (issue 7).


@pytest.fixture
def checkerArgument(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """
    An C{--auth} argument, of the type the test is parametrized with, for
    the user C{alice} with the password C{s3cret:x}.
    """
    kind: str = request.param
    if kind == "memory":
        return "memory:alice:s3cret"
    path = tmp_path / "users"
    if kind == "file":
        path.write_text("alice:s3cret\n")
    else:
        path.write_text(f"alice:{sha1Hash('s3cret')}\n")
    return f"{kind}:{path}"


@pytest.mark.parametrize(
    "checkerArgument", ["memory", "file", "htpasswd"], indirect=True
)
def test_everyOfferedCheckerWorks(checkerArgument: str) -> None:
    """
    Each checker C{--help-auth} offers admits the right password and
    challenges a wrong one, through the proxy.
    """
    harness = optionsHarness("--auth", checkerArgument)
    assert login(harness, b"alice:wrong").response().status == 407
    assert login(harness, b"bob:s3cret").response().status == 407
    login(harness, b"alice:s3cret")
    harness.connector.attempts[0].succeed()
    assert len(harness.connector.attempts) == 1
    assert harness.observer.opened[0].user == "alice"


def helpAuth() -> str:
    """
    What C{--help-auth} writes.
    """
    options = Options()
    options.authOutput = io.StringIO()
    with pytest.raises(SystemExit):
        options.parseOptions(["--help-auth"])
    return options.authOutput.getvalue()


def test_helpAuthListsWorkingCheckers() -> None:
    """
    C{--help-auth} lists the checkers that work in the proxy, and not
    C{unix}.
    """
    names = [line.split()[0] for line in helpAuth().splitlines()[5:] if line.strip()]
    assert {"htpasswd", "memory", "file"} <= set(names)
    assert "unix" not in names


@pytest.mark.parametrize("option", ["--auth", "--help-auth-type"])
def test_unixCheckerRefused(option: str) -> None:
    """
    C{--auth unix} (and its help) stops the command with a message that
    says why and what to use instead.
    """
    with pytest.raises(usage.UsageError) as info:
        Options().parseOptions([option, "unix"])
    message = str(info.value)
    assert message.startswith(option)
    assert "--auth unix does not work in connectproxy: " in message
    assert "use htpasswd:FILE" in message


def test_unusableFileChecker(tmp_path: Path) -> None:
    """
    C{--auth file:PATH} with a file that cannot be read stops the command,
    naming the file, instead of failing every login.
    """
    path = tmp_path / "missing"
    with pytest.raises(usage.UsageError) as info:
        Options().parseOptions(["--auth", f"file:{path}"])
    assert str(info.value) == (
        f"--auth: cannot read password file {path}: no such file or directory"
    )


@implementer(ICredentialsChecker)
class TextChecker:
    """
    A checker that answers with the user name as text.
    """

    credentialInterfaces = (IUsernamePassword,)

    # Text is not what the interface promises, but what some checkers give.
    def requestAvatarId(  # type: ignore[override]
        self, credentials: Any
    ) -> Deferred[str]:
        return succeed(credentials.username.decode("utf-8"))


def test_anonymousAvatarIdIs500(logEvents: list[LogEvent]) -> None:
    """
    A checker that answers with something other than a user name (the
    anonymous avatar ID) gets the client a 500, logged, not a tunnel.
    """

    @implementer(ICredentialsChecker)
    class AnonymousChecker:
        credentialInterfaces = (IUsernamePassword,)

        def requestAvatarId(self, credentials: Any) -> Deferred[bytes | tuple[()]]:
            return succeed(())

    harness = ProxyHarness()
    harness.factory.gatekeeper = Gatekeeper(
        AccessRules.defaults(), portal=userPortal([AnonymousChecker()])
    )
    assert login(harness, b"alice:x").response().status == 500
    assert harness.connector.attempts == []
    [error] = named(logEvents, "admission_error")
    assert error["log_failure"].check(TypeError)


def test_textAvatarId() -> None:
    """
    A checker may answer with the user name as text.
    """
    harness = ProxyHarness()
    harness.factory.gatekeeper = Gatekeeper(
        AccessRules.defaults(), portal=userPortal([TextChecker()])
    )
    login(harness, "zoë:x".encode())
    harness.connector.attempts[0].succeed()
    assert harness.observer.opened[0].user == "zoë"


# The password checks queue, shared between clients (issue 6.1).


def queueHarness(
    tmp_path: Path, runner: Callable[[Callable[[], bool]], Deferred[bool]]
) -> ProxyHarness:
    """
    A harness with an htpasswd checker for C{alice} (password C{pw}) whose
    verifications go to C{runner}: two threads, two checks per client.
    """
    path = tmp_path / "htpasswd"
    path.write_text(f"alice:{sha1Hash('pw')}\n")
    harness = ProxyHarness()
    checker = HtpasswdChecker(
        str(path),
        clock=harness.clock,
        cacheTTL=0,
        runInThread=runner,
        maxQueuedPerClient=2,
    )
    harness.factory.gatekeeper = Gatekeeper(
        AccessRules.defaults(),
        portal=userPortal([checker]),
        limiter=FailureLimiter(harness.clock, maxFailures=3),
    )
    return harness


def test_busyClientDoesNotDelayOthers(tmp_path: Path) -> None:
    """
    A client that fills its share of the queue with slow verifications gets
    503 for more (not counted as failed logins), and another client's check
    runs at once.
    """
    runner = LaterRunner()
    harness = queueHarness(tmp_path, runner)
    busy = [login(harness, b"alice:pw") for _ in range(3)]
    assert len(runner.started) == 1
    response = busy[2].response()
    assert (response.status, response.header("Retry-After")) == (503, "1")
    assert response.body == (
        b"503 Service Unavailable: too many logins from this address are being "
        b"checked at once; send fewer at a time\n"
    )
    other = login(harness, b"alice:pw", SECOND)
    assert len(runner.started) == 2
    runner.finish(1)
    harness.connector.attempts[0].succeed()
    assert other.response().status == 200
    limiter = harness.factory.gatekeeper.limiter
    assert limiter is not None and limiter._clients == {}


@pytest.mark.parametrize("how", ["client left", "deadline"])
def test_abandonedQueuedCheckDropped(tmp_path: Path, how: str) -> None:
    """
    A queued check whose client left, or whose deadline passed, is dropped
    without running.
    """
    runner = LaterRunner()
    harness = queueHarness(tmp_path, runner)
    running = login(harness, b"alice:pw")
    harness.clock.advance(5)
    waiting = login(harness, b"alice:pw")
    assert len(runner.started) == 1
    if how == "client left":
        waiting.lose(ConnectionLost())
    else:
        harness.clock.advance(5)
        assert running.response().status == 503
        assert waiting.transport.value() == b""
        harness.clock.advance(5)
        assert waiting.response().status == 503
    runner.finish(0)
    assert len(runner.started) == 1
    if how == "client left":
        harness.connector.attempts[0].succeed()
        assert running.response().status == 200


# Password files that cannot be read again after twistd --uid (issue 7).


def denyReading(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """
    Make reading C{path} fail as it does for a user without permission, as
    the user C{nobody}.
    """
    original = _htpasswd._readFile

    def readFile(name: str) -> tuple[tuple[int, int, int], bytes]:
        if name == str(path):
            raise PermissionError(13, "Permission denied", name)
        return original(name)

    monkeypatch.setattr(_htpasswd, "_readFile", readFile)
    monkeypatch.setattr(_htpasswd, "_serviceUser", lambda: "nobody")


def test_reloadOfUnreadablePasswordFile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logEvents: list[LogEvent]
) -> None:
    """
    When SIGHUP finds the password file unreadable (privileges were dropped
    after it was first read), one line names the file, the user and what
    to change, and the proxy goes on with the old contents.
    """
    path = tmp_path / "htpasswd"
    path.write_text(f"alice:{sha1Hash('pw')}\n")
    options = Options()
    options.parseOptions(["--auth", f"htpasswd:{path}"])
    service = makeService(options, MemoryReactorClock())
    factory = listenerFactory(service)
    before = factory.gatekeeper
    denyReading(monkeypatch, path)
    del logEvents[:]
    assert reloaderOf(service).reload() is False
    errors = [e for e in logEvents if e["log_level"] >= LogLevel.warn]
    assert [e.get("event") for e in errors] == ["reload_failed"]
    assert errors[0]["error"] == (
        f"--auth: cannot read htpasswd file {path}: permission denied for user "
        "nobody; make it readable by the service user or use systemd "
        "LoadCredential="
    )
    assert factory.gatekeeper is before
    assert logsIn(currentChecker(factory), "alice", "pw")
