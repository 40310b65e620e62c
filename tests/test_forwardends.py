# -*- test-case-name: tests.test_forwardends -*-
"""
How a forwarded request ends when its client leaves, or the proxy closes
its connection, at every point of its exchange: each admitted request is
reported exactly once (forwarded, or refused as abandoned), and nothing the
handler opened is left behind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from connectproxy._observer import ForwardedRequest, RefusedRequest
from connectproxy.testing import FakeClient, ProxyHarness
from tests._forwarding import Origin, connectOrigin, forwardingHarness, get

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Scene:
    """
    A forwarded request stopped at one point of its exchange.

    @ivar harness: The proxy.
    @ivar client: The client whose request it is.
    @ivar origins: The upstream connections the request is on, still open.
    @ivar before: How many requests were reported before this one.
    @ivar status: The status its report should have (0 before the
        response head reached the client).
    """

    harness: ProxyHarness
    client: FakeClient
    origins: list[Origin] = field(default_factory=list)
    before: int = 0
    status: int = 0

    def reports(self) -> list[ForwardedRequest | RefusedRequest]:
        """
        Every report of a request after those made before the scene.
        """
        found = [
            record
            for name, record in self.harness.observer.events
            if name in ("requestForwarded", "requestRefused")
        ]
        return found[self.before :]  # type: ignore[return-value]


def connectPending() -> Scene:
    """
    The first connect to the origin is in flight.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    return Scene(harness, client)


def retryConnectPending() -> Scene:
    """
    The request went on a pooled connection that died before answering,
    and the retry's connect is in flight.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    pooled = connectOrigin(harness)
    pooled.send(OK)
    client.send(get("http://example.com/retry"))
    pooled.lose()
    assert len(harness.connector.attempts) == 2
    return Scene(harness, client, before=1)


def waitingForHead() -> Scene:
    """
    The request was sent; no byte of the response came.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    return Scene(harness, client, [connectOrigin(harness)])


def pooledWaitingForHead() -> Scene:
    """
    The request was sent on a pooled connection; no byte of the response
    came.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    pooled = connectOrigin(harness)
    pooled.send(OK)
    client.send(get("http://example.com/again"))
    return Scene(harness, client, [pooled], before=1)


def midResponseBody() -> Scene:
    """
    The response head and part of its body reached the client.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    origin = connectOrigin(harness)
    origin.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    return Scene(harness, client, [origin], status=200)


def midRequestBody() -> Scene:
    """
    Part of the request body went upstream.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get("http://example.com/", "Content-Length: 10", method="POST"))
    origin = connectOrigin(harness)
    client.send(b"abc")
    return Scene(harness, client, [origin])


SCENES: list[Callable[[], Scene]] = [
    connectPending,
    retryConnectPending,
    waitingForHead,
    pooledWaitingForHead,
    midResponseBody,
    midRequestBody,
]


@pytest.mark.parametrize("makeScene", SCENES, ids=lambda f: f.__name__)
def test_clientLeavesReportedOnce(makeScene: Callable[[], Scene]) -> None:
    """
    A client that leaves at any point of a forwarded request's exchange
    gets its request reported once, as abandoned; the connect in flight is
    cancelled, or the upstream connection aborted.
    """
    scene = makeScene()
    harness = scene.harness
    scene.client.lose()
    [report] = scene.reports()
    assert report.outcome == "abandoned"
    assert report.status == scene.status
    assert report.reason.startswith("the client went away")
    for origin in scene.origins:
        assert origin.transport.aborted
        origin.lose()
    pending = [a for a in harness.connector.attempts if a.transport is None]
    assert all(a.cancelled for a in pending)
    assert len(scene.reports()) == 1
    assert len(harness.observer.connectionsClosed) == 1


@pytest.mark.parametrize("makeScene", SCENES, ids=lambda f: f.__name__)
def test_closedByProxyReportedOnce(makeScene: Callable[[], Scene]) -> None:
    """
    The proxy closing every connection (a shutdown) at any point of a
    forwarded request's exchange reports it once too, and cancels the
    connect in flight.
    """
    scene = makeScene()
    harness = scene.harness
    harness.factory.closeAll("shutdown")
    assert len(scene.reports()) == 1
    pending = [a for a in harness.connector.attempts if a.transport is None]
    assert all(a.cancelled for a in pending)
    scene.client.lose()
    for origin in scene.origins:
        origin.lose()
    assert len(scene.reports()) == 1
    assert len(harness.observer.connectionsClosed) == 1


# The connection's end waits for the upstream connections its requests
# closed.

CLOSE = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"


def watchIdle(harness: ProxyHarness) -> list[object]:
    """
    Drain the proxy and watch C{whenIdle}.

    @return: A list that gets C{None} when it fires.
    """
    harness.factory.drain()
    fired: list[object] = []
    harness.factory.whenIdle().addCallback(fired.append)
    return fired


def test_closedUpstreamHoldsConnectionEnd() -> None:
    """
    An upstream connection closed after its exchange (the origin said
    C{Connection: close}) keeps the client connection's end from being
    reported, and a drain waiting, until it is gone.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    origin = connectOrigin(harness)
    origin.send(CLOSE)
    assert origin.transport.disconnecting and not origin.transport.aborted
    idle = watchIdle(harness)
    client.lose()
    assert (idle, harness.observer.connectionsClosed) == ([], [])
    origin.lose()
    assert idle == [None]
    assert len(harness.observer.connectionsClosed) == 1


def test_closedUpstreamOfEarlierRequestHoldsConnectionEnd() -> None:
    """
    An upstream connection closed after the first request of a kept-alive
    client connection holds the connection's end too, though a later
    request on it ended cleanly.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    first = connectOrigin(harness)
    first.send(CLOSE)
    assert first.transport.disconnecting
    client.send(get("http://other.example/"))
    second = connectOrigin(harness)
    second.send(OK)
    idle = watchIdle(harness)
    client.lose()
    assert (idle, harness.observer.connectionsClosed) == ([], [])
    first.lose()
    assert idle == [None]
    assert len(harness.observer.connectionsClosed) == 1


def test_retriedUpstreamHoldsConnectionEnd() -> None:
    """
    The pooled connection a retry gave up (the origin sent its FIN before
    answering; the proxy aborts it) holds the connection's end until it is
    gone.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    pooled = connectOrigin(harness)
    pooled.send(OK)
    client.send(get("http://example.com/retry"))
    pooled.finish()
    assert pooled.transport.aborted
    fresh = connectOrigin(harness)
    fresh.send(OK)
    idle = watchIdle(harness)
    client.lose()
    assert (idle, harness.observer.connectionsClosed) == ([], [])
    pooled.lose()
    assert idle == [None]
    assert len(harness.observer.connectionsClosed) == 1


def test_closedUpstreamAbortedAfterAbortTimeout() -> None:
    """
    An upstream connection closed after its exchange that does not go
    within the abort timeout is aborted (two-stage close): the connection's
    end is never held for long.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    origin = connectOrigin(harness)
    origin.send(CLOSE)
    harness.clock.advance(harness.factory.settings.abortTimeout - 0.5)
    assert not origin.transport.aborted
    harness.clock.advance(1)
    assert origin.transport.aborted
    origin.lose()
    client.lose()
    assert len(harness.observer.connectionsClosed) == 1
    assert not harness.clock.getDelayedCalls()
