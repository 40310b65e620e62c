# -*- test-case-name: tests.test_limits -*-
"""
Tests for the connection limits of L{connectproxy._factory.ConnectProxyFactory}:
the total and per-client limits answered with 503, shedding far over the
total limit, and the default limit derived from the descriptor limit.
"""

from __future__ import annotations

import resource

import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.protocol import Protocol
from twisted.logger import LogEvent

from connectproxy import ProxyConfig, ProxySettings
from connectproxy._front import ConnectProxyProtocol
from connectproxy._settings import defaultMaxConnections
from connectproxy.testing import (
    FakeClient,
    HalfCloseableStringTransport,
    ProxyHarness,
    connectHead,
)


def peer(host: str = "127.0.0.1", port: int = 40000) -> IPv4Address | IPv6Address:
    """
    A client address.
    """
    if ":" in host:
        return IPv6Address("TCP", host, port)
    return IPv4Address("TCP", host, port)


def accepted(client: FakeClient) -> bool:
    """
    Whether C{client} got a real proxy connection (not a limit refusal).
    """
    return type(client.protocol) is ConnectProxyProtocol


def connectMany(harness: ProxyHarness, count: int) -> list[FakeClient]:
    """
    Open C{count} client connections from distinct loopback ports.
    """
    return [harness.connectClient(peer(port=30000 + i)) for i in range(count)]


def shedEvents(events: list[LogEvent]) -> list[LogEvent]:
    """
    The C{connections_shed} events among C{events}.
    """
    return [event for event in events if event.get("event") == "connections_shed"]


def buildRaw(
    harness: ProxyHarness, address: IPv4Address | IPv6Address | None = None
) -> Protocol | None:
    """
    Ask the factory for a protocol as a listening port would and connect it;
    C{None} when the protocol dropped the connection at once (aborted it
    without writing anything).
    """
    address = address or peer(port=50000)
    protocol = harness.factory.buildProtocol(address)
    transport = HalfCloseableStringTransport(peerAddress=address)
    protocol.makeConnection(transport)
    if transport.aborted and transport.value() == b"":
        return None
    return protocol


def setLimit(harness: ProxyHarness, maxConnections: int) -> None:
    """
    Reload the proxy with a new total limit (and the same access checks).
    """
    harness.factory.reconfigure(
        ProxyConfig(
            settings=ProxySettings(maxConnections=maxConnections),
            gatekeeper=harness.factory.gatekeeper,
            connector=harness.connector,
            observers=(harness.observer,),
        )
    )


# The total limit.


def test_overTotalLimitGets503() -> None:
    """
    The connection after C{maxConnections} gets a 503 with C{Connection:
    close}, is closed and reported, and is not counted.
    """
    harness = ProxyHarness(ProxySettings(maxConnections=3))
    clients = connectMany(harness, 3)
    assert all(accepted(client) for client in clients)
    extra = harness.connectClient(peer("::1", 6000))
    assert not accepted(extra)
    value = extra.transport.value()
    assert value.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"\r\nConnection: close\r\n" in value
    assert value.endswith(
        b"the proxy has too many connections (see --max-connections)\n"
    )
    assert extra.transport.disconnecting
    assert len(harness.factory.connections) == 3
    assert extra.protocol not in harness.factory.connections
    [refused] = harness.observer.refused
    assert (refused.client, refused.status) == ("[::1]:6000", 503)
    assert refused.reason == (
        "the proxy has too many connections (see --max-connections)"
    )
    assert (refused.method, refused.target) == ("", "")


def test_limitRefusalIgnoresRequest() -> None:
    """
    A request sent to a refused connection is neither parsed nor answered.
    """
    harness = ProxyHarness(ProxySettings(maxConnections=1))
    harness.connectClient()
    extra = harness.connectClient()
    before = extra.transport.value()
    extra.send(connectHead())
    assert extra.transport.value() == before
    assert harness.connector.attempts == []


def test_closedConnectionFreesSlot() -> None:
    """
    Once a counted connection is gone, a new one is accepted again.
    """
    harness = ProxyHarness(ProxySettings(maxConnections=2))
    first, _ = connectMany(harness, 2)
    assert not accepted(harness.connectClient())
    first.lose()
    assert len(harness.factory.connections) == 1
    assert accepted(harness.connectClient())
    assert not accepted(harness.connectClient())


def test_closedRefusalFreesNothing() -> None:
    """
    A refused connection going away does not change the count.
    """
    harness = ProxyHarness(ProxySettings(maxConnections=1))
    harness.connectClient()
    harness.connectClient().lose()
    assert len(harness.factory.connections) == 1
    assert not accepted(harness.connectClient())


def test_tunnelsCountUntilClosed() -> None:
    """
    A connection holds its slot through its tunnel and frees it when the
    tunnel is over.
    """
    harness = ProxyHarness(ProxySettings(maxConnections=1))
    client = harness.connectClient()
    client.send(connectHead())
    attempt = harness.connector.attempts[0]
    attempt.succeed()
    assert not accepted(harness.connectClient())
    attempt.loseUpstream()
    client.lose()
    assert harness.factory.connections == set()
    assert accepted(harness.connectClient())


def test_reconfigureRaisesLimit() -> None:
    """
    A higher limit from C{reconfigure} applies to the next connection.
    """
    harness = ProxyHarness(ProxySettings(maxConnections=1))
    harness.connectClient()
    setLimit(harness, 2)
    assert accepted(harness.connectClient())
    assert not accepted(harness.connectClient())


# Far over the total limit: shedding.


@pytest.mark.parametrize("limit, slack", [(1, 16), (2, 16), (200, 20)])
def test_shedFarOverLimit(limit: int, slack: int) -> None:
    """
    With C{limit + max(16, limit // 10)} connections open (here after a
    reload lowered the limit) the factory builds no protocol at all; one
    fewer still gets a 503.  The observers hear of both, the shed one as a
    C{shed} refusal with no status.
    """
    harness = ProxyHarness(ProxySettings(maxConnections=0))
    connectMany(harness, limit + slack - 1)
    setLimit(harness, limit)
    refusal = buildRaw(harness)
    assert refusal is not None and type(refusal) is not ConnectProxyProtocol
    setLimit(harness, 0)
    harness.connectClient()
    setLimit(harness, limit)
    assert buildRaw(harness) is None
    assert len(harness.factory.connections) == limit + slack
    assert [(r.status, r.outcome) for r in harness.observer.refused] == [
        (503, "overloaded"),
        (0, "shed"),
    ]
    shed = harness.observer.refused[1]
    assert (shed.client, shed.method, shed.target) == ("127.0.0.1:50000", "", "")
    assert shed.reason == "the proxy has too many connections (see --max-connections)"


def shedTimers(harness: ProxyHarness) -> list[object]:
    """
    The timers of the factory's C{connections_shed} summaries.
    """
    return [
        call
        for call in harness.clock.getDelayedCalls()
        if getattr(getattr(call, "func", None), "__name__", "") == "_logShed"
    ]


def test_shedLoggedOncePerSecond(logEvents: list[LogEvent]) -> None:
    """
    The first shed connection is logged at once; those shed after it are
    counted and logged in one event a second later (at most one event a
    second while shedding goes on), never held back until the next shed;
    the observers hear of every one.
    """
    harness = ProxyHarness(ProxySettings(maxConnections=0))
    harness.clock.advance(1000)
    connectMany(harness, 20)
    setLimit(harness, 2)
    assert buildRaw(harness) is None
    [first] = shedEvents(logEvents)
    assert first["count"] == 1
    assert first["reason"] == (
        "the proxy has too many connections (see --max-connections)"
    )
    assert first["log_level"].name == "warn"
    harness.clock.advance(0.5)
    for _ in range(38):
        assert buildRaw(harness) is None
    assert len(shedEvents(logEvents)) == 1
    harness.clock.advance(0.5)
    assert [e["count"] for e in shedEvents(logEvents)] == [1, 38]
    harness.clock.advance(0.5)
    assert buildRaw(harness) is None
    harness.clock.advance(0.5)
    assert [e["count"] for e in shedEvents(logEvents)] == [1, 38, 1]
    # A quiet second ends the summaries; the next shed is logged at once.
    harness.clock.advance(1)
    assert shedTimers(harness) == []
    assert buildRaw(harness) is None
    assert [e["count"] for e in shedEvents(logEvents)] == [1, 38, 1, 1]
    harness.clock.advance(1)
    assert shedTimers(harness) == []
    assert len(shedEvents(logEvents)) == 4
    assert [r.outcome for r in harness.observer.refused] == ["shed"] * 41


def test_shedCountLoggedWhenStopping(logEvents: list[LogEvent]) -> None:
    """
    Shed connections still counted when the last listener stops are
    logged then, and no timer is left behind.
    """
    harness = ProxyHarness(ProxySettings(maxConnections=0))
    connectMany(harness, 20)
    setLimit(harness, 2)
    for _ in range(3):
        assert buildRaw(harness) is None
    harness.factory.doStart()
    harness.factory.doStop()
    assert [e["count"] for e in shedEvents(logEvents)] == [1, 2]
    assert shedTimers(harness) == []


def test_floodOfRefusalsIsShed() -> None:
    """
    When C{maxConnections + 16} connections are open, counting those still
    being refused with 503, new ones are closed at once.
    """
    harness = ProxyHarness(ProxySettings(maxConnections=2))
    clients = connectMany(harness, 2 + 16)
    assert sum(accepted(client) for client in clients) == 2
    assert not any(client.transport.aborted for client in clients)
    assert buildRaw(harness) is None


def test_shedThroughWrappingFactories() -> None:
    """
    Far over the limit, a connection through a wrapping factory (which wraps
    whatever protocol it gets, as the PROXY-protocol and TLS ones do) is
    dropped at once too, without an error.
    """
    from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory

    harness = ProxyHarness(ProxySettings(maxConnections=2))
    connectMany(harness, 2 + 16)
    protocol = HAProxyWrappingFactory(harness.factory).buildProtocol(peer(port=50001))
    transport = HalfCloseableStringTransport(peerAddress=peer(port=50001))
    protocol.makeConnection(transport)
    assert transport.aborted


# The per-client limit.


def test_perClientLimit() -> None:
    """
    A client address over C{maxConnectionsPerClient} gets 503 for its extra
    connection; other addresses are not affected.
    """
    settings = ProxySettings(maxConnections=0, maxConnectionsPerClient=2)
    harness = ProxyHarness(settings)
    assert accepted(harness.connectClient(peer("127.0.0.1", 1)))
    assert accepted(harness.connectClient(peer("127.0.0.1", 2)))
    extra = harness.connectClient(peer("127.0.0.1", 3))
    assert not accepted(extra)
    assert extra.response().status == 503
    assert extra.transport.value().endswith(
        b"this client has too many connections (see --max-connections-per-client)\n"
    )
    [refused] = harness.observer.refused
    assert refused.client == "127.0.0.1:3"
    assert accepted(harness.connectClient(peer("127.0.0.2", 1)))
    assert accepted(harness.connectClient(peer("::1", 1)))
    assert accepted(harness.connectClient(peer("::1", 2)))
    assert not accepted(harness.connectClient(peer("::1", 3)))


def test_perClientCountDrops() -> None:
    """
    A client's count drops as its connections close, down to none.
    """
    settings = ProxySettings(maxConnections=0, maxConnectionsPerClient=2)
    harness = ProxyHarness(settings)
    first = harness.connectClient(peer("127.0.0.1", 1))
    second = harness.connectClient(peer("127.0.0.1", 2))
    first.lose()
    third = harness.connectClient(peer("127.0.0.1", 3))
    assert accepted(third)
    assert not accepted(harness.connectClient(peer("127.0.0.1", 4)))
    second.lose()
    third.lose()
    assert harness.factory.connections == set()
    assert accepted(harness.connectClient(peer("127.0.0.1", 5)))
    assert accepted(harness.connectClient(peer("127.0.0.1", 6)))


def test_totalLimitCheckedFirst() -> None:
    """
    When both limits are reached, the total limit is the reason given.
    """
    settings = ProxySettings(maxConnections=1, maxConnectionsPerClient=1)
    harness = ProxyHarness(settings)
    harness.connectClient()
    extra = harness.connectClient()
    assert extra.transport.value().endswith(
        b"the proxy has too many connections (see --max-connections)\n"
    )


def test_unixClientsNotLimitedPerClient() -> None:
    """
    UNIX socket clients have no address and no per-client limit.
    """
    settings = ProxySettings(maxConnections=0, maxConnectionsPerClient=1)
    harness = ProxyHarness(settings)
    clients = [harness.connectClient(UNIXAddress(b"/run/p.sock")) for _ in range(5)]
    assert all(accepted(client) for client in clients)
    for client in clients:
        client.lose()
    assert harness.factory.connections == set()


@pytest.mark.parametrize(
    "settings",
    [
        ProxySettings(maxConnections=0),
        ProxySettings(maxConnections=0, maxConnectionsPerClient=0),
    ],
)
def test_zeroMeansNoLimit(settings: ProxySettings) -> None:
    """
    A limit of 0 means no limit.
    """
    harness = ProxyHarness(settings)
    clients = [harness.connectClient(peer(port=i + 1)) for i in range(300)]
    assert all(accepted(client) for client in clients)
    assert len(harness.factory.connections) == 300
    assert harness.observer.refused == []


# The 503 refusal's abort timer.


def test_limitRefusalAbortedIfCloseHangs() -> None:
    """
    A refused connection whose close does not finish is aborted after the
    abort timeout.
    """
    harness = ProxyHarness(ProxySettings(maxConnections=1, abortTimeout=4))
    harness.connectClient()
    extra = harness.connectClient()
    harness.clock.advance(3.9)
    assert not extra.transport.aborted
    harness.clock.advance(0.1)
    assert extra.transport.aborted


def test_limitRefusalAbortCancelledOnClose() -> None:
    """
    No abort timer is left once a refused connection is gone.
    """
    harness = ProxyHarness(ProxySettings(maxConnections=1))
    harness.connectClient()
    extra = harness.connectClient()
    assert len(harness.clock.getDelayedCalls()) == 2
    extra.lose()
    assert len(harness.clock.getDelayedCalls()) == 1
    harness.clock.advance(100)
    assert not extra.transport.aborted


def test_limitRefusalLostAfterAbort() -> None:
    """
    A refused connection lost after its abort timer fired is fine.
    """
    harness = ProxyHarness(ProxySettings(maxConnections=1))
    harness.connectClient()
    extra = harness.connectClient()
    harness.clock.advance(15)
    assert extra.transport.aborted
    extra.lose()


# The default limit.


@pytest.mark.parametrize(
    "soft, expected",
    [
        (1024, 480),
        (4096, 2016),
        (1048576, 524256),
        (100, 18),
        (95, 16),
        (64, 16),
        (0, 16),
        (resource.RLIM_INFINITY, 10000),
    ],
)
def test_defaultMaxConnections(
    monkeypatch: pytest.MonkeyPatch, soft: int, expected: int
) -> None:
    """
    The default limit leaves two descriptors per tunnel and 64 spare, at
    least 16, and 10000 when descriptors are unlimited.
    """
    asked: list[int] = []

    def getrlimit(which: int) -> tuple[int, int]:
        asked.append(which)
        return soft, resource.RLIM_INFINITY

    monkeypatch.setattr("connectproxy._settings.resource.getrlimit", getrlimit)
    assert defaultMaxConnections() == expected
    assert ProxySettings().maxConnections == expected
    assert asked == [resource.RLIMIT_NOFILE] * 2


def test_defaultMaxConnectionsUsesTheProcessLimit() -> None:
    """
    Unpatched, the default follows the process's real descriptor limit.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    expected = 10000 if soft == resource.RLIM_INFINITY else max(16, (soft - 64) // 2)
    assert defaultMaxConnections() == expected


def test_limitRefusalLingers(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    On plain TCP the 503 is followed by a FIN and a short linger, like every
    refusal, so the client reads it rather than a reset; the connection
    counts as being refused until it is gone.
    """
    from connectproxy import _refuser

    monkeypatch.setattr(_refuser, "canHalfClose", lambda transport: True)
    harness = ProxyHarness(ProxySettings(maxConnections=1))
    first = harness.connectClient()
    extra = harness.connectClient()
    assert extra.transport.value().startswith(b"HTTP/1.1 503 ")
    assert extra.transport.writeClosed
    assert not extra.transport.disconnecting
    assert harness.factory.refusing == 1
    harness.clock.advance(_refuser.LINGER_SECONDS)
    assert extra.transport.disconnecting
    extra.lose()
    first.lose()
    assert harness.factory.refusing == 0
    assert harness.clock.getDelayedCalls() == []


def test_limitRefusalEndsLingerAtClientFin(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    The client's FIN ends the linger of a limit refusal at once, as it ends
    every refusal's; what it sent before is neither parsed nor answered.
    """
    from connectproxy import _refuser

    monkeypatch.setattr(_refuser, "canHalfClose", lambda transport: True)
    harness = ProxyHarness(ProxySettings(maxConnections=1))
    harness.connectClient()
    extra = harness.connectClient()
    answered = extra.transport.value()
    extra.send(connectHead())
    assert not extra.transport.disconnecting
    extra.protocol.readConnectionLost()
    assert extra.transport.disconnecting
    assert extra.transport.value() == answered
    assert harness.connector.attempts == []
    harness.clock.advance(15)
    assert extra.transport.aborted
