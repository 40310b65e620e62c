# -*- test-case-name: tests.test_authentication -*-
"""
Protocol tests of C{Proxy-Authorization: Basic} through the proxy (the
authentication step of L{connectproxy._admission}): the 407 challenge and
the retries a client makes on the same connection, malformed credentials,
failed logins blocked, and checkers that break, hang or are abandoned.

Everything runs on a L{MemoryReactorClock} with fake transports, a fake
upstream connector and synchronous (or hand-fired) credential checkers.
"""

from __future__ import annotations

import base64
import gc
import hashlib
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.address import IPv6Address
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent

from connectproxy import (
    ProxySettings,
)
from connectproxy._htpasswd import HtpasswdChecker
from connectproxy.testing import (
    connectHead,
)
from tests._helpers import (
    ESTABLISHED,
    GOOD,
    CountingChecker,
    PendingChecker,
    RaisingChecker,
    authHarness,
    basic,
    failuresLogged,
    makeHarness,
)

# Authentication: the challenge and retries on the same connection.


def test_missingCredentialsChallenged() -> None:
    """
    A request without credentials gets a 407 with a Basic challenge, keeps
    its connection open, and never reaches the checker.
    """
    harness, checker = authHarness(realm="Corp proxy")
    client = harness.connectClient()
    client.send(connectHead())
    response = client.response()
    assert response.status == 407
    assert response.header("Proxy-Authenticate") == (
        'Basic realm="Corp proxy", charset="UTF-8"'
    )
    assert response.header("Connection") is None
    assert response.body == b"407 Proxy Authentication Required: " + (
        b"proxy authentication required\n"
    )
    assert not client.transport.disconnecting
    assert checker.asked == []
    assert harness.connector.attempts == []
    [refused] = harness.observer.refused
    assert (refused.status, refused.user) == (407, None)


def test_realmQuoted() -> None:
    """
    Quotes and backslashes in the realm are escaped in the challenge.
    """
    harness, _ = authHarness(realm='say "hi" \\ bye')
    client = harness.connectClient()
    client.send(connectHead())
    assert client.response().header("Proxy-Authenticate") == (
        'Basic realm="say \\"hi\\" \\\\ bye", charset="UTF-8"'
    )


def test_retryOnSameConnection() -> None:
    """
    After a 407 the client retries on the same connection with credentials
    and gets its tunnel; the tunnel record names the user.
    """
    harness, checker = authHarness()
    client = harness.connectClient()
    client.send(connectHead())
    client.send(connectHead("example.com:443", basic(GOOD)))
    assert checker.asked == [b"alice"]
    attempt = harness.connector.attempts[0]
    upstream = attempt.succeed()
    first, second = client.responses()
    assert (first.status, second.status) == (407, 200)
    assert client.transport.value().endswith(ESTABLISHED)
    client.send(b"ping")
    assert upstream.value() == b"ping"
    [opened] = harness.observer.opened
    assert opened.user == "alice"
    assert client.protocol.user == "alice"
    attempt.loseUpstream()
    client.lose()
    [closed] = harness.observer.closed
    assert closed.user == "alice"


@pytest.mark.parametrize(
    "credentials, asked",
    [(b"alice:hunter2", b"alice"), (b"mallory:secret", b"mallory")],
    ids=["wrong password", "unknown user"],
)
def test_wrongCredentialsChallenged(
    credentials: bytes, asked: bytes, logEvents: list[LogEvent]
) -> None:
    """
    A wrong password or an unknown user gets a 407 that keeps the
    connection open; the refusal record has no user, the log names the
    attempted one and never the password.
    """
    harness, checker = authHarness()
    client = harness.connectClient()
    client.send(connectHead("example.com:443", basic(credentials)))
    response = client.response()
    assert response.status == 407
    assert response.header("Proxy-Authenticate") is not None
    assert response.header("Connection") is None
    assert not client.transport.disconnecting
    assert checker.asked == [asked]
    [refused] = harness.observer.refused
    assert refused.user is None
    [failure] = [e for e in logEvents if e.get("event") == "auth_failed"]
    assert failure["user"] == asked.decode()
    assert failure["client"] == "127.0.0.1"
    password = credentials.split(b":")[1].decode()
    assert not any(password in repr(event) for event in logEvents)


@pytest.mark.parametrize(
    "field",
    [
        "Proxy-Authorization: Basic !!!!",
        "Proxy-Authorization: Basic YWxpY2U6c2VjcmV0eA",  # missing padding
        "Proxy-Authorization: Basic YWxpY2U6c2VjcmV0PQ",
        basic(b"alice"),
        basic(b":secret"),
        basic(b"\xff\xfe:secret"),
        basic(b"al\x01ice:secret"),
        "Proxy-Authorization: Bearer x",
        "Proxy-Authorization: Basic",
        "Proxy-Authorization: Basic ",
        "Proxy-Authorization: ",
        "Proxy-Authorization: Basic \xe9\xe9\xe9\xe9",
        "Proxy-Authorization: Digest username=alice",
    ],
)
def test_malformedCredentialsChallenged(field: str, logEvents: list[LogEvent]) -> None:
    """
    Malformed credentials of every kind get a keep-alive 407, never reach
    the checker, and never crash.
    """
    harness, checker = authHarness()
    client = harness.connectClient()
    client.send(connectHead("example.com:443", field))
    response = client.response()
    assert response.status == 407
    assert response.header("Proxy-Authenticate") is not None
    assert not client.transport.disconnecting
    assert checker.asked == []
    assert failuresLogged(logEvents) == []


@pytest.mark.parametrize("scheme", ["Basic", "basic", "BASIC", "bAsIc"])
def test_schemeCaseInsensitive(scheme: str) -> None:
    """
    The C{Basic} scheme name is matched in any case.
    """
    harness, checker = authHarness()
    client = harness.connectClient()
    client.send(connectHead("example.com:443", basic(GOOD, scheme)))
    assert checker.asked == [b"alice"]
    assert len(harness.connector.attempts) == 1
    assert client.transport.value() == b""


def test_passwordWithColons() -> None:
    """
    Only the first colon separates the user name; the password may contain
    more.
    """
    checker = CountingChecker({b"bob": b"a:b::c"})
    harness = makeHarness(checker=checker)
    client = harness.connectClient()
    client.send(connectHead("example.com:443", basic(b"bob:a:b::c")))
    assert checker.asked == [b"bob"]
    harness.connector.attempts[0].succeed()
    assert client.protocol.user == "bob"


def test_utf8UserName() -> None:
    """
    User names and passwords are UTF-8; the user name reaches the checker
    as UTF-8 bytes and the records as text.
    """
    harness, checker = authHarness()
    client = harness.connectClient()
    client.send(connectHead("example.com:443", basic("zoë:pässword".encode())))
    assert checker.asked == ["zoë".encode()]
    harness.connector.attempts[0].succeed()
    [opened] = harness.observer.opened
    assert opened.user == "zoë"


@pytest.mark.parametrize(
    "version, fields",
    [
        ("1.0", ()),
        ("1.1", ("Connection: close",)),
        ("1.1", ("Proxy-Connection: Close",)),
        ("1.1", ("Connection: keep-alive, close",)),
        ("1.0", ("Proxy-Connection: keep-alive", "Connection: close")),
    ],
)
def test_challengeClosesWithoutKeepAlive(version: str, fields: tuple[str, ...]) -> None:
    """
    A client that did not ask to keep its connection gets the 407 with its
    challenge and C{Connection: close}, and is closed.
    """
    harness, _ = authHarness()
    client = harness.connectClient()
    client.send(connectHead("example.com:443", *fields, version=version))
    response = client.response()
    assert response.status == 407
    assert response.header("Proxy-Authenticate") is not None
    assert response.header("Connection") == "close"
    assert client.transport.disconnecting
    client.send(connectHead("example.com:443", basic(GOOD)))
    assert harness.connector.attempts == []


@pytest.mark.parametrize(
    "field", ["Connection: keep-alive", "Proxy-Connection: Keep-Alive"]
)
def test_challengeKeepsHTTP10KeepAlive(field: str) -> None:
    """
    An HTTP/1.0 client that asked for keep-alive keeps its connection after
    a 407 and may retry on it.
    """
    harness, _ = authHarness()
    client = harness.connectClient()
    client.send(connectHead("example.com:443", field, version="1.0"))
    assert client.response().header("Connection") is None
    assert not client.transport.disconnecting
    client.send(connectHead("example.com:443", basic(GOOD), version="1.0"))
    assert len(harness.connector.attempts) == 1


@pytest.mark.parametrize("split", [False, True])
def test_pipelinedRetryAfterChallenge(split: bool) -> None:
    """
    A retry sent along with the challenged head is parsed as the next
    request, and the bytes after it reach the upstream, whether everything
    arrives in one chunk or a byte at a time.
    """
    harness, checker = authHarness()
    client = harness.connectClient()
    data = connectHead() + connectHead("example.com:443", basic(GOOD)) + b"\x16hi"
    if split:
        for i in range(len(data)):
            client.send(data[i : i + 1])
    else:
        client.send(data)
    assert checker.asked == [b"alice"]
    upstream = harness.connector.attempts[0].succeed()
    assert [r.status for r in client.responses()] == [407, 200]
    assert upstream.value() == b"\x16hi"


def test_pipelinedGarbageAfterChallenge() -> None:
    """
    Bytes after a challenged head that are not a request get the error the
    parser gives them.
    """
    harness, _ = authHarness()
    client = harness.connectClient()
    client.send(connectHead() + b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert [r.status for r in client.responses()] == [407, 400]
    assert client.transport.disconnecting


def test_manyPipelinedChallenges(
    logEvents: list[LogEvent], monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    Many credential-less requests pipelined in one read (23 kB) are each
    answered, or the connection is closed, without an error.
    """
    # What the bug leaves behind (Deferreds failed with RecursionError) is
    # collected here, so that it cannot break whichever test runs next.
    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    harness, _ = authHarness()
    client = harness.connectClient()
    try:
        client.send(connectHead() * 400)
        harness.clock.advance(60)
        answered = len(client.responses())
        closed = client.transport.disconnecting
    finally:
        del harness, client
        gc.collect()
    assert failuresLogged(logEvents) == []
    assert unraisable == []
    assert answered == 400 or closed


def test_challengeRearmsRequestTimeout() -> None:
    """
    After a 407 the client has the request timeout to send its retry.
    """
    harness, _ = authHarness(settings=ProxySettings(requestTimeout=5))
    client = harness.connectClient()
    client.send(connectHead())
    harness.clock.advance(4.9)
    assert not client.transport.disconnecting
    harness.clock.advance(0.1)
    assert [r.status for r in client.responses()] == [407, 408]
    assert client.transport.disconnecting


def test_challengeResumesPausedClient() -> None:
    """
    A client paused for sending too much while its credentials were checked
    is resumed by the 407, and what it sent is parsed as its retry.
    """
    checker = PendingChecker()
    settings = ProxySettings(maxRequestLine=100, maxHeadSize=200)
    harness = makeHarness(checker=checker, settings=settings)
    client = harness.connectClient()
    client.send(connectHead("example.com:443", basic(b"alice:wrong")))
    client.send(connectHead("example.com:443", basic(GOOD)))
    client.send(b"x" * 150)
    assert client.transport.producerState == "paused"
    checker.pending[0].errback(UnauthorizedLogin())
    assert client.transport.producerState == "producing"
    checker.pending[1].callback(b"alice")
    upstream = harness.connector.attempts[0].succeed()
    assert [r.status for r in client.responses()] == [407, 200]
    assert upstream.value() == b"x" * 150


# Authentication: the failed-login limiter and broken checkers.


def test_repeatedFailuresBlocked() -> None:
    """
    After C{maxFailures} failed logins from one address its next request
    gets 429 with C{Retry-After} and C{Connection: close}, without asking
    the checker, on this connection and on new ones.
    """
    harness, checker = authHarness(maxFailures=3, blockFor=60)
    client = harness.connectClient()
    for _ in range(3):
        client.send(connectHead("example.com:443", basic(b"alice:wrong")))
    client.send(connectHead("example.com:443", basic(GOOD)))
    assert [r.status for r in client.responses()] == [407, 407, 407, 429]
    blocked = client.responses()[-1]
    assert blocked.header("Retry-After") == "60"
    assert blocked.header("Connection") == "close"
    assert blocked.header("Proxy-Authenticate") is None
    assert client.transport.disconnecting
    assert len(checker.asked) == 3
    again = harness.connectClient()
    again.send(connectHead("example.com:443", basic(GOOD)))
    assert again.response().status == 429
    assert len(checker.asked) == 3
    assert harness.connector.attempts == []
    assert harness.observer.refused[-1].status == 429


def test_blockIsPerAddress() -> None:
    """
    A blocked address does not block the others.
    """
    harness, _ = authHarness(maxFailures=1)
    client = harness.connectClient()
    client.send(connectHead("example.com:443", basic(b"alice:wrong")))
    other = harness.connectClient(IPv6Address("TCP", "::1", 5000))
    other.send(connectHead("example.com:443", basic(GOOD)))
    assert len(harness.connector.attempts) == 1


def test_blockExpires() -> None:
    """
    C{Retry-After} counts down, and after C{blockFor} seconds the address
    may log in again.
    """
    harness, checker = authHarness(maxFailures=2, blockFor=60)
    client = harness.connectClient()
    client.send(connectHead("example.com:443", basic(b"alice:wrong")) * 2)
    harness.clock.advance(30.5)
    client = harness.connectClient()
    client.send(connectHead("example.com:443", basic(GOOD)))
    assert client.response().header("Retry-After") == "30"
    harness.clock.advance(29.4)
    client = harness.connectClient()
    client.send(connectHead("example.com:443", basic(GOOD)))
    assert client.response().header("Retry-After") == "1"
    harness.clock.advance(0.1)
    client = harness.connectClient()
    client.send(connectHead("example.com:443", basic(GOOD)))
    assert checker.asked[-1] == b"alice"
    assert len(harness.connector.attempts) == 1


def test_successKeepsFailures() -> None:
    """
    A successful login does not forget the address's earlier failures: one
    valid password must not make guessing other passwords free.
    """
    harness, _ = authHarness(maxFailures=3)
    client = harness.connectClient()
    client.send(connectHead("example.com:443", basic(b"alice:wrong")) * 2)
    client.send(connectHead("example.com:443", basic(GOOD)))
    assert len(harness.connector.attempts) == 1
    client = harness.connectClient()
    client.send(connectHead("example.com:443", basic(b"alice:wrong")))
    client.send(connectHead("example.com:443", basic(GOOD)))
    assert [r.status for r in client.responses()] == [407, 429]
    assert len(harness.connector.attempts) == 1


def test_malformedCredentialsCount() -> None:
    """
    Malformed credentials count as failed logins; missing ones do not.
    """
    harness, _ = authHarness(maxFailures=2)
    client = harness.connectClient()
    client.send(connectHead() * 5)
    assert [r.status for r in client.responses()] == [407] * 5
    client.send(connectHead("example.com:443", "Proxy-Authorization: Basic !") * 3)
    assert [r.status for r in client.responses()][5:] == [407, 407, 429]


def test_checkerErrorIs500(logEvents: list[LogEvent]) -> None:
    """
    A checker that fails with something other than a login failure gives a
    logged 500 and a closed connection, not a 407.
    """
    harness = makeHarness(checker=RaisingChecker())
    client = harness.connectClient()
    client.send(connectHead("example.com:443", basic(GOOD)))
    response = client.response()
    assert response.status == 500
    assert response.header("Proxy-Authenticate") is None
    assert client.transport.disconnecting
    [failure] = failuresLogged(logEvents)
    assert failure["log_failure"].check(RuntimeError)


def test_pendingLoginTimesOut() -> None:
    """
    A checker that does not answer within the connect deadline is cancelled
    and the client gets 503.
    """
    checker = PendingChecker()
    harness = makeHarness(checker=checker, settings=ProxySettings(connectTimeout=4))
    client = harness.connectClient()
    client.send(connectHead("example.com:443", basic(GOOD)))
    harness.clock.advance(3.9)
    assert client.transport.value() == b""
    harness.clock.advance(0.1)
    assert checker.cancelled == 1
    assert client.response().status == 503
    assert client.transport.disconnecting
    assert harness.connector.attempts == []


def test_checkerCancelledErrorAnswered() -> None:
    """
    A checker that fails with L{CancelledError} of its own accord (its
    backend call was cancelled) still gets the client an answer and a close.
    """
    checker = PendingChecker()
    harness = makeHarness(checker=checker)
    client = harness.connectClient()
    client.send(connectHead("example.com:443", basic(GOOD)))
    checker.pending[0].errback(CancelledError())
    harness.clock.advance(100)
    assert client.transport.disconnecting
    assert len(client.responses()) == 1


@pytest.fixture
def htpasswd(tmp_path: Path) -> str:
    """
    An htpasswd file with the user C{alice}, password C{secret}.
    """
    digest = base64.b64encode(hashlib.sha1(b"secret").digest()).decode()
    path = tmp_path / "htpasswd"
    path.write_text(f"alice:{{SHA}}{digest}\n")
    return str(path)


def test_htpasswdCheckerThroughProxy(htpasswd: str) -> None:
    """
    The built-in htpasswd checker (verifying at once instead of in a thread)
    admits the right password and challenges a wrong one.
    """

    def runInThread(verification: Callable[[], bool]) -> Deferred[bool]:
        return succeed(verification())

    clock = MemoryReactorClock()
    checker = HtpasswdChecker(htpasswd, clock=clock, runInThread=runInThread)
    harness = makeHarness(checker=checker)
    client = harness.connectClient()
    client.send(connectHead("example.com:443", basic(b"alice:wrong")))
    client.send(connectHead("example.com:443", basic(GOOD)))
    harness.connector.attempts[0].succeed()
    assert [r.status for r in client.responses()] == [407, 200]
    assert harness.observer.opened[0].user == "alice"


@pytest.mark.parametrize("how", ["client left", "deadline"])
def test_abandonedLoginNotAFailure(
    how: str, htpasswd: str, logEvents: list[LogEvent]
) -> None:
    """
    A password check abandoned by the proxy (client gone, deadline) is not a
    failed login: the same client then logs in with the right password.
    """
    verifications: list[Deferred[bool]] = []

    def runInThread(verification: Callable[[], bool]) -> Deferred[bool]:
        verifications.append(Deferred())
        return verifications[-1]

    clock = MemoryReactorClock()
    checker = HtpasswdChecker(htpasswd, clock=clock, runInThread=runInThread)
    harness = makeHarness(checker=checker, maxFailures=1)
    client = harness.connectClient()
    client.send(connectHead("example.com:443", basic(GOOD)))
    if how == "deadline":
        harness.clock.advance(10)
    else:
        client.lose(ConnectionLost())
    client = harness.connectClient()
    client.send(connectHead("example.com:443", basic(GOOD)))
    assert client.transport.value() == b""
    # The abandoned check still holds its thread until it really ends.
    verifications[0].callback(True)
    verifications[-1].callback(True)
    assert len(verifications) == 2
    assert len(harness.connector.attempts) == 1
    events = [e.get("event") for e in logEvents]
    assert "auth_failed" not in events
    assert "auth_verify_error" not in events


def test_clientLeavesDuringLogin() -> None:
    """
    A client that leaves while its credentials are checked cancels the
    check; nothing is written or left scheduled, and the request is
    reported as abandoned.
    """
    checker = PendingChecker()
    harness = makeHarness(checker=checker)
    client = harness.connectClient()
    client.send(connectHead("example.com:443", basic(GOOD)))
    client.lose(ConnectionLost())
    assert checker.cancelled == 1
    assert client.transport.value() == b""
    [refused] = harness.observer.refused
    assert (refused.status, refused.outcome) == (0, "abandoned")
    assert refused.reason == "the client went away while its access was checked"
    assert harness.clock.getDelayedCalls() == []
