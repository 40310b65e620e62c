# -*- test-case-name: tests.test_lifecycle -*-
"""
Tests for the factory's lifecycle: the counters of open tunnels, draining,
waiting until no connection is left, and closing every connection.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.logger import LogEvent
from twisted.python.failure import Failure

from connectproxy import (
    AccessRules,
    Gatekeeper,
    ProxySettings,
    _refuser,
    userPortal,
)
from connectproxy.testing import (
    FakeClient,
    HalfCloseableStringTransport,
    ProxyHarness,
)
from tests.test_admission import (
    GOOD,
    LaterPolicy,
    PendingChecker,
    basic,
    connectHead,
    responses,
)

CONNECT = connectHead()
ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"
SHUTTING_DOWN = b"503 Service Unavailable: the proxy is shutting down\n"


def tunnel(harness: ProxyHarness) -> tuple[FakeClient, Any]:
    """
    Open a tunnel through C{harness}: the client and its connect attempt.
    """
    client = harness.connectClient()
    client.send(CONNECT)
    attempt = harness.connector.attempts[-1]
    attempt.succeed()
    assert client.transport.value() == ESTABLISHED
    return client, attempt


def fired(d: Any) -> bool:
    results: list[object] = []
    d.addBoth(results.append)
    return bool(results)


def problems(events: list[LogEvent]) -> list[str]:
    """
    The names of events that report a bug.
    """
    return [
        e["event"]
        for e in events
        if e.get("event") in ("admission_error", "connector_error", "request_error")
        or "log_failure" in e
    ]


# The counters of open tunnels.


def test_openTunnelStats() -> None:
    """
    The factory lists the live counters of every open tunnel, current as
    bytes move, until its record says it is closed.
    """
    harness = ProxyHarness()
    assert harness.factory.openTunnelStats() == []
    first, firstAttempt = tunnel(harness)
    second, _ = tunnel(harness)
    first.send(b"abc")
    firstAttempt.protocol.dataReceived(b"12345")
    stats = {s.bytesUp + s.bytesDown: s for s in harness.factory.openTunnelStats()}
    assert sorted(stats) == [0, 8]
    assert stats[8] is first.protocol.tunnel.stats
    first.lose()
    # Its client is gone, its upstream not yet: still open.
    assert len(harness.factory.openTunnelStats()) == 2
    firstAttempt.loseUpstream()
    [left] = harness.factory.openTunnelStats()
    assert left is second.protocol.tunnel.stats
    assert harness.observer.closed[0].bytesUp == 3


# Draining.


def test_drainRefusesNewHeads() -> None:
    """
    Once draining, a complete request head gets 503 and
    C{Connection: close}, whether its connection was open before or not;
    nothing is connected for it.
    """
    harness = ProxyHarness()
    before = harness.connectClient()
    assert not harness.factory.draining
    harness.factory.drain()
    assert harness.factory.draining
    after = harness.connectClient()
    for client in (before, after):
        client.send(CONNECT)
        [response] = responses(client)
        assert response.status == 503
        assert response.header("connection") == "close"
        assert client.transport.value().endswith(SHUTTING_DOWN)
    assert harness.connector.attempts == []
    assert [r.outcome for r in harness.observer.refused] == ["overloaded"] * 2


def test_drainKeepsTunnels() -> None:
    """
    Established tunnels keep relaying while the proxy drains.
    """
    harness = ProxyHarness()
    client, attempt = tunnel(harness)
    harness.factory.drain()
    client.send(b"up")
    attempt.protocol.dataReceived(b"down")
    assert attempt.transport.value() == b"up"
    assert client.transport.value() == ESTABLISHED + b"down"
    assert not client.transport.disconnecting


def test_drainLetsAdmissionInFlightFinish() -> None:
    """
    A request already being checked when draining starts goes on, and
    becomes a tunnel.
    """
    policy = LaterPolicy()
    harness = ProxyHarness(gatekeeper=Gatekeeper(AccessRules.defaults(), [policy]))
    client = harness.connectClient()
    client.send(CONNECT)
    harness.factory.drain()
    policy.pending[0].callback(None)
    harness.connector.attempts[0].succeed()
    assert client.transport.value() == ESTABLISHED


def authHarness() -> tuple[ProxyHarness, PendingChecker]:
    checker = PendingChecker()
    gatekeeper = Gatekeeper(AccessRules.defaults(), portal=userPortal([checker]))
    return ProxyHarness(gatekeeper=gatekeeper), checker


def test_drainEndsChallengeLoop() -> None:
    """
    Once draining, a 407 closes the connection instead of waiting for a
    retry on it.
    """
    checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
    harness = ProxyHarness(
        gatekeeper=Gatekeeper(AccessRules.defaults(), portal=userPortal([checker]))
    )
    client = harness.connectClient()
    client.send(CONNECT)
    [challenge] = responses(client)
    assert challenge.status == 407 and challenge.header("connection") is None
    harness.factory.drain()
    # The next head on the same connection is refused as any new one.
    client.send(CONNECT)
    assert [r.status for r in responses(client)] == [407, 503]
    assert client.transport.disconnecting or client.transport.writeClosed


def test_drainEndsChallengeInFlight() -> None:
    """
    A request being authenticated when draining starts, and answered with a
    407, gets it with C{Connection: close}.
    """
    harness, checker = authHarness()
    client = harness.connectClient()
    client.send(connectHead("example.com:443", basic(GOOD)))
    harness.factory.drain()
    checker.pending[0].errback(_unauthorized())
    [response] = responses(client)
    assert (response.status, response.header("connection")) == (407, "close")
    assert [r.outcome for r in harness.observer.refused] == ["auth_failed"]


def _unauthorized() -> BaseException:
    from twisted.cred.error import UnauthorizedLogin

    return UnauthorizedLogin()


def test_drainTwice() -> None:
    """
    Draining again changes nothing.
    """
    harness = ProxyHarness()
    harness.factory.drain()
    harness.factory.drain()
    assert harness.factory.draining


# Waiting until no connection is left.


def test_whenIdleAtOnce() -> None:
    """
    With no connection open, C{whenIdle} has fired already.
    """
    harness = ProxyHarness()
    assert fired(harness.factory.whenIdle())


def test_whenIdleWaitsForConnections() -> None:
    """
    C{whenIdle} fires when the last connection is gone, not before; every
    waiter is told.
    """
    harness = ProxyHarness()
    first = harness.connectClient()
    second = harness.connectClient()
    waiting = [harness.factory.whenIdle(), harness.factory.whenIdle()]
    first.lose()
    assert not any(fired(d) for d in waiting)
    second.lose()
    assert all(fired(d) for d in waiting)


def test_whenIdleWaitsForTunnelUpstream() -> None:
    """
    A tunnel whose client is gone but whose upstream side is still open
    keeps the proxy busy.
    """
    harness = ProxyHarness()
    client, attempt = tunnel(harness)
    d = harness.factory.whenIdle()
    client.lose()
    assert harness.factory.connections == set()
    assert not fired(d)
    attempt.loseUpstream()
    assert fired(d)


def test_whenIdleCountsRefusals() -> None:
    """
    A connection refused over a limit counts until it is gone, though it is
    not one of the factory's connections.
    """
    harness = ProxyHarness(ProxySettings(maxConnections=1))
    first = harness.connectClient()
    refused = harness.connectClient(IPv4Address("TCP", "127.0.0.1", 41000))
    first.lose()
    d = harness.factory.whenIdle()
    assert not fired(d)
    refused.lose()
    assert fired(d)


def test_whenIdleCountsShedConnections() -> None:
    """
    A shed connection counts until its transport is gone.
    """
    harness = ProxyHarness(ProxySettings(maxConnections=0))
    clients = [harness.connectClient() for _ in range(17)]
    harness.factory.settings = ProxySettings(maxConnections=1)
    peer = IPv4Address("TCP", "127.0.0.1", 50000)
    shed = harness.factory.buildProtocol(peer)
    shed.makeConnection(HalfCloseableStringTransport(peerAddress=peer))
    for client in clients:
        client.lose()
    d = harness.factory.whenIdle()
    assert not fired(d)
    shed.connectionLost(Failure(ConnectionLost()))
    assert fired(d)


def test_whenIdleCancelled() -> None:
    """
    A cancelled wait fails with the cancellation and is forgotten; the
    others still fire.
    """
    harness = ProxyHarness()
    client = harness.connectClient()
    cancelled = harness.factory.whenIdle()
    kept = harness.factory.whenIdle()
    failures: list[Failure] = []
    cancelled.addErrback(failures.append)
    cancelled.cancel()
    assert len(failures) == 1
    client.lose()
    assert fired(kept)


# Closing every connection.


def test_closeAllClosesTunnels() -> None:
    """
    C{closeAll} closes every tunnel gracefully with the reason given, which
    its record carries; a side that does not close is aborted after the
    abort timeout.
    """
    harness = ProxyHarness()
    client, attempt = tunnel(harness)
    idle = harness.factory.whenIdle()
    harness.factory.closeAll()
    assert client.transport.disconnecting
    assert attempt.transport.disconnecting
    client.lose()
    timeout = harness.factory.settings.abortTimeout
    for _ in range(9):
        harness.clock.advance(timeout / 8)
    assert attempt.transport.aborted
    attempt.loseUpstream(ConnectionLost())
    [record] = harness.observer.closed
    assert record.reason == "shutdown"
    assert fired(idle)


def test_closeAllReason() -> None:
    """
    The close reason and the 503's message can be chosen.
    """
    harness = ProxyHarness()
    client, attempt = tunnel(harness)
    waiting = harness.connectClient()
    harness.factory.closeAll("maintenance", "closed for maintenance")
    client.lose()
    attempt.loseUpstream()
    assert harness.observer.closed[0].reason == "maintenance"
    assert waiting.transport.value().endswith(
        b"503 Service Unavailable: closed for maintenance\n"
    )


def test_closeAllAnswersRequests(logEvents: list[LogEvent]) -> None:
    """
    Requests not yet tunnelled get a 503: one still sending its head, one
    being checked (its check cancelled) and one being connected (its
    attempt cancelled); no bug is logged and each is reported once.
    """
    policy = LaterPolicy()
    harness = ProxyHarness(gatekeeper=Gatekeeper(AccessRules.defaults(), [policy]))
    reading = harness.connectClient()
    reading.send(b"CONNECT exa")
    checking = harness.connectClient()
    checking.send(CONNECT)
    connecting = harness.connectClient()
    connecting.send(CONNECT)
    policy.pending[1].callback(None)
    [attempt] = harness.connector.attempts
    harness.factory.closeAll()
    for client in (reading, checking, connecting):
        [response] = responses(client)
        assert response.status == 503
        assert client.transport.value().endswith(SHUTTING_DOWN)
    assert policy.cancelled == 1
    assert attempt.cancelled
    assert [(r.status, r.outcome) for r in harness.observer.refused] == [
        (503, "overloaded")
    ] * 3
    assert problems(logEvents) == []
    for client in (reading, checking, connecting):
        client.lose()
    assert fired(harness.factory.whenIdle())
    assert harness.clock.getDelayedCalls() == []


def test_closeAllEndsLinger(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A connection lingering after its error response (on plain TCP) closes
    at once.
    """
    monkeypatch.setattr(_refuser, "canHalfClose", lambda transport: True)
    harness = ProxyHarness()
    client = harness.connectClient()
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert client.transport.writeClosed and not client.transport.disconnecting
    harness.factory.closeAll()
    assert client.transport.disconnecting
    assert len(harness.observer.refused) == 1


def test_closeAllLeavesClosingConnections() -> None:
    """
    A connection already closing is left to finish; a gone one is not
    touched.
    """
    harness = ProxyHarness()
    client = harness.connectClient()
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert client.transport.disconnecting
    calls = len(harness.clock.getDelayedCalls())
    harness.factory.closeAll()
    assert len(harness.clock.getDelayedCalls()) == calls
    client.lose(ConnectionDone())
    harness.factory.closeAll()
    assert len(harness.observer.refused) == 1
