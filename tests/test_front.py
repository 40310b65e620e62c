# -*- test-case-name: tests.test_front -*-
"""
Tests for the front of a client connection (L{connectproxy._front}): its
explicit phases, and the dispatch of each request to the handler of its
method through the method seam (L{connectproxy._handler}), with a fake
clock, fake transports and a handler for another method written here.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from twisted.logger import LogEvent
from twisted.python.failure import Failure

from connectproxy import (
    AccessRules,
    Gatekeeper,
    PortRules,
    ProxySettings,
    RequestHead,
    TargetForm,
    UpstreamRequest,
    _refuser,
)
from connectproxy._connect import ConnectHandler
from connectproxy._front import ConnectProxyProtocol
from connectproxy._handler import Phase, _Admitted, _Front
from connectproxy._relay import _Relay
from connectproxy.testing import FakeClient, ProxyHarness
from tests._helpers import LaterPolicy, authHarness, makeHarness

CONNECT = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
GET = b"GET http://example.com/index.html?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n"


def statusOf(client: FakeClient) -> int:
    """
    The status code of the response the proxy wrote to C{client}.
    """
    return int(client.transport.value().split(b" ", 2)[1])


def phaseOf(client: FakeClient) -> Phase:
    """
    The phase of the front of C{client}'s connection.
    """
    protocol = client.protocol
    assert isinstance(protocol, ConnectProxyProtocol)
    return protocol.phase


class RecordingHandler:
    """
    A handler for a method other than CONNECT, driven by the test: it
    records what it was given and does nothing until told.
    """

    abandoned = "the client went away while the test handled it"
    tunnel: _Relay | None = None
    made: list[RecordingHandler] = []

    def __init__(self, front: _Front, admission: _Admitted) -> None:
        self.front = front
        self.admission = admission
        self.targets: list[UpstreamRequest] = []
        self.cancelled = 0
        self.closed: list[str] = []
        self.done = True
        self.made.append(self)

    def start(self, target: UpstreamRequest) -> None:
        self.targets.append(target)

    def cancel(self) -> None:
        self.cancelled += 1

    def close(self, reason: str) -> None:
        self.closed.append(reason)


@pytest.fixture
def harness() -> ProxyHarness:
    """
    A proxy with the default settings and access checks.
    """
    return ProxyHarness()


@pytest.fixture
def withGet(monkeypatch: pytest.MonkeyPatch) -> type[RecordingHandler]:
    """
    Serve GET with a L{RecordingHandler} beside CONNECT's own handler.
    """
    monkeypatch.setattr(RecordingHandler, "made", [])
    monkeypatch.setattr(
        ConnectProxyProtocol,
        "handlers",
        {"CONNECT": ConnectHandler, "GET": RecordingHandler},
    )
    return RecordingHandler


def portsHarness(*ports: str) -> ProxyHarness:
    """
    A harness whose proxy allows destination C{ports}.
    """
    rules = replace(AccessRules.defaults(), ports=PortRules.fromStrings(list(ports)))
    return ProxyHarness(gatekeeper=Gatekeeper(rules))


# Phases.


def test_tunnelPhases(harness: ProxyHarness) -> None:
    """
    A CONNECT moves the front from NEW through HEAD and CONNECTING (the
    default checks answer at once) to RELAYING, and to CLOSED when the
    client is gone.
    """
    client = harness.connectClient()
    assert phaseOf(client) is Phase.NEW
    client.send(CONNECT[:10])
    assert phaseOf(client) is Phase.HEAD
    client.send(CONNECT[10:])
    assert phaseOf(client) is Phase.CONNECTING
    attempt = harness.connector.attempts[0]
    attempt.succeed()
    assert phaseOf(client) is Phase.RELAYING
    client.lose()
    assert phaseOf(client) is Phase.CLOSED


def test_admittingPhase() -> None:
    """
    While the access checks run the front is ADMITTING and keeps what the
    client sends as early data.
    """
    policy = LaterPolicy()
    harness = makeHarness(policies=[policy])
    client = harness.connectClient()
    client.send(CONNECT + b"early")
    assert phaseOf(client) is Phase.ADMITTING
    policy.pending[0].callback(None)
    assert phaseOf(client) is Phase.CONNECTING
    harness.connector.attempts[0].succeed()
    assert harness.connector.attempts[0].transport is not None
    assert harness.connector.attempts[0].transport.value() == b"early"


def test_refusingThenClosing(
    harness: ProxyHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    An error response on plain TCP leaves the front REFUSING (lingering)
    until the linger ends, then CLOSING; elsewhere it is CLOSING at once.
    """
    monkeypatch.setattr(_refuser, "canHalfClose", lambda transport: True)
    client = harness.connectClient()
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert phaseOf(client) is Phase.REFUSING
    harness.clock.advance(_refuser.LINGER_SECONDS)
    assert phaseOf(client) is Phase.CLOSING
    monkeypatch.setattr(_refuser, "canHalfClose", lambda transport: False)
    other = harness.connectClient()
    other.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert phaseOf(other) is Phase.CLOSING


def test_challengeReadsNextHead() -> None:
    """
    After a 407 the front is reading a head again, on the same connection.
    """
    harness, _ = authHarness()
    client = harness.connectClient()
    client.send(CONNECT)
    assert statusOf(client) == 407
    assert phaseOf(client) is Phase.HEAD
    assert not client.transport.disconnecting


# Dispatch by method.


def test_noHandlerIs405BeforeTheTarget(
    harness: ProxyHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A method no handler serves gets 405 naming the methods served, whatever
    its target: the target of a method not served is not checked.
    """
    monkeypatch.setattr(ConnectProxyProtocol, "handlers", {"CONNECT": ConnectHandler})
    client = harness.connectClient()
    client.send(b"GET not-a-uri HTTP/1.1\r\nHost: a\r\n\r\n")
    assert statusOf(client) == 405
    assert b"\r\nAllow: CONNECT\r\n" in client.transport.value()
    assert harness.connector.attempts == []


@pytest.mark.usefixtures("withGet")
def test_anotherMethodsHandler() -> None:
    """
    A handler registered for another method gets its admitted requests:
    the absolute-form target parsed into the destination the access checks
    saw, the admission's times, and the front in CONNECTING; CONNECT is
    still served by its own handler.
    """
    harness = portsHarness("80", "443")
    harness.clock.advance(5)
    client = harness.connectClient()
    client.send(GET)
    [handler] = RecordingHandler.made
    [target] = handler.targets
    assert (target.host, target.port, target.user) == ("example.com", 80, None)
    request = target.request
    assert isinstance(request, RequestHead)
    assert request.destination is not None
    assert request.destination.form is TargetForm.ABSOLUTE
    assert request.destination.path == "/index.html?q=1"
    assert handler.admission.headAt == handler.admission.admittedAt == 5
    assert handler.front.phase is Phase.CONNECTING
    assert client.transport.value() == b""
    assert harness.connector.attempts == []
    connecting = harness.connectClient()
    connecting.send(CONNECT)
    assert len(harness.connector.attempts) == 1


@pytest.mark.usefixtures("withGet")
def test_anotherMethodsHandlerRefuses() -> None:
    """
    A handler answers through the front: its refusal is written, reported
    with the request's method and target, and closes the connection.
    """
    harness = portsHarness("80")
    client = harness.connectClient()
    client.send(GET)
    [handler] = RecordingHandler.made
    handler.front.refuse(502, "could not connect to the target")
    assert statusOf(client) == 502
    assert client.transport.disconnecting
    [refused] = harness.observer.refused
    assert (refused.method, refused.status) == ("GET", 502)
    # The query is left out of the record (--log-query keeps it).
    assert refused.target == "http://example.com/index.html"


@pytest.mark.usefixtures("withGet")
def test_anotherMethodsHandlerCancelled() -> None:
    """
    The connect deadline and a client that leaves cancel what the handler
    has in flight; a client that leaves is reported with the handler's own
    words.
    """
    harness = portsHarness("80")
    client = harness.connectClient()
    client.send(GET)
    [handler] = RecordingHandler.made
    harness.clock.advance(harness.factory.settings.connectTimeout)
    assert handler.cancelled == 1
    assert handler.admission.timedOut
    client.lose()
    assert handler.cancelled == 2
    [refused] = harness.observer.refused
    assert (refused.status, refused.outcome) == (0, "abandoned")
    assert refused.reason == RecordingHandler.abandoned


@pytest.mark.usefixtures("withGet")
def test_anotherMethodsHandlerFails(logEvents: list[LogEvent]) -> None:
    """
    A handler that fails unexpectedly gets the client a 500 and the failure
    logged once, with its traceback.
    """
    harness = portsHarness("80")
    client = harness.connectClient()
    client.send(GET)
    [handler] = RecordingHandler.made
    handler.front.requestFailed(Failure(RuntimeError("broken handler")))
    assert statusOf(client) == 500
    [event] = [e for e in logEvents if e.get("event") == "request_error"]
    assert "log_failure" in event


@pytest.mark.usefixtures("withGet")
@pytest.mark.parametrize(
    ("head", "status", "allow"),
    [
        (b"POST http://example.com/ HTTP/1.1\r\nHost: a\r\n\r\n", 405, True),
        (b"GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n", 400, False),
        (b"GET https://example.com/ HTTP/1.1\r\nHost: a\r\n\r\n", 400, False),
        (b"GET http://user@example.com/ HTTP/1.1\r\nHost: a\r\n\r\n", 400, False),
    ],
)
def test_dispatchRefusals(head: bytes, status: int, allow: bool) -> None:
    """
    With a handler for GET, a method no handler serves gets 405 naming
    both methods, and a GET whose target is not an absolute C{http} URI
    gets 400; neither reaches a handler.
    """
    harness = portsHarness("80")
    client = harness.connectClient()
    client.send(head)
    assert statusOf(client) == status
    value = client.transport.value()
    assert (b"\r\nAllow: CONNECT, GET\r\n" in value) is allow
    assert RecordingHandler.made == []
    [refused] = harness.observer.refused
    assert refused.outcome == "bad_request"


@pytest.mark.usefixtures("withGet")
def test_closeAllReachesHandlers() -> None:
    """
    Closing every connection answers a request whose handler is at work
    with 503 and cancels the handler; a relaying handler is asked to close.
    """
    harness = portsHarness("80")
    client = harness.connectClient()
    client.send(GET)
    [handler] = RecordingHandler.made
    harness.factory.closeAll("maintenance")
    assert statusOf(client) == 503
    assert handler.cancelled == 1
    relaying = harness.connectClient()
    relaying.send(GET)
    second = RecordingHandler.made[1]
    front = second.front
    assert isinstance(front, ConnectProxyProtocol)
    front.installReceivers(lambda data: None, lambda: None, lambda reason: None)
    harness.factory.closeAll("maintenance")
    assert second.closed == ["maintenance"]


def test_refusedWithBulkyHeadStillRead() -> None:
    """
    The bytes that came with a head are kept without pausing the client,
    however many: a request refused at once is still read through its
    linger.
    """
    harness = ProxyHarness(ProxySettings(maxHeadSize=1024))
    client = harness.connectClient()
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n" + b"x" * 4096)
    assert statusOf(client) == 400
    assert client.transport.producerState == "producing"
