# -*- test-case-name: tests.test_tunnel -*-
"""
Tests for L{connectproxy._tunnel.TransportRelay}: flow-control wiring,
half-close, resets, closing in two stages and the deadlines (kept by a
sweeper, as the factory keeps them), on fake transports and a fake clock.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import pytest
from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IPullProducer, IPushProducer
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from connectproxy import ProxySettings, _resets
from connectproxy._deadlines import DeadlineSweeper
from connectproxy._relay import TunnelStats, _Relay
from connectproxy._tunnel import (
    ReadingOf,
    _UpstreamProtocol,
    canHalfClose,
    transportRelay,
)
from connectproxy.testing import HalfCloseableStringTransport


class Tunnel:
    """
    A relay between two fake transports, its deadlines kept by a sweeper of
    its own (as the factory's keeps them), and what it reported.
    """

    def __init__(
        self,
        halfClose: bool = True,
        idle: float = 60.0,
        halfCloseTimeout: float | None = None,
        client: HalfCloseableStringTransport | None = None,
    ) -> None:
        self.clock = MemoryReactorClock()
        peer = IPv4Address("TCP", "192.0.2.7", 443)
        self.client = HalfCloseableStringTransport() if client is None else client
        self.upstream = HalfCloseableStringTransport(peerAddress=peer)
        self.closed: list[_Relay] = []
        self.deadlines = DeadlineSweeper(self.clock)
        self.settings = ProxySettings(
            idleTimeout=idle,
            halfCloseTimeout=idle if halfCloseTimeout is None else halfCloseTimeout,
            abortTimeout=15.0,
        )
        # Each side's protocol, which the relay takes over.
        self.clientEnd = _UpstreamProtocol()
        self.clientEnd.makeConnection(self.client)
        self.upstreamEnd = _UpstreamProtocol()
        self.upstreamEnd.makeConnection(self.upstream)
        self.tunnel = transportRelay(
            self.clientEnd, self.upstreamEnd, self.clock, self.settings, self._closed
        )
        self.tunnel.halfClose = lambda transport: halfClose
        self.client.pauseProducing()

    def _closed(self, relay: _Relay) -> None:
        self.deadlines.forget(relay)
        self.closed.append(relay)

    def start(self, early: bytes = b"", clientFinished: bool = False) -> Tunnel:
        self.deadlines.watch(self.tunnel, self.settings)
        self.tunnel.start(early, clientFinished)
        return self

    @property
    def stats(self) -> TunnelStats:
        return self.tunnel.stats

    def transport(self, side: str) -> HalfCloseableStringTransport:
        return self.client if side == "client" else self.upstream

    def end(self, side: str) -> _UpstreamProtocol:
        return self.clientEnd if side == "client" else self.upstreamEnd

    def lose(self, side: str, reason: Exception) -> None:
        """
        Tell the tunnel that one side's connection is gone, as that side's
        transport tells its protocol.
        """
        self.end(side).connectionLost(Failure(reason))


def other(side: str) -> str:
    return "upstream" if side == "client" else "client"


def relay(t: Tunnel, side: str, data: bytes) -> None:
    """
    Deliver bytes as if C{side} had sent them, as its transport does.
    """
    t.end(side).dataReceived(data)


@pytest.mark.parametrize("side", ["client", "upstream"])
def test_receiversInstalled(side: str) -> None:
    """
    The relay takes each side's protocol over: its receiver replaces the
    protocol's C{dataReceived} (no call in between per chunk), and the
    side's FIN and loss reach it.
    """
    t = Tunnel().start()
    end = t.end(side)
    receiver = t.tunnel.clientData if side == "client" else t.tunnel.upstreamData
    assert end.dataReceived == receiver
    relay(t, side, b"chunk")
    assert t.transport(other(side)).value() == b"chunk"
    end.readConnectionLost()
    assert t.transport(other(side)).writeClosed
    t.lose(side, ConnectionDone())
    assert t.transport(other(side)).disconnecting


def test_upstreamProtocolBeforeRelay() -> None:
    """
    Before a relay takes the upstream protocol over, its FIN and loss are
    ignored, and data (which cannot come: the relay exists as soon as the
    connector reports the connection) is a bug.
    """
    end = _UpstreamProtocol()
    end.makeConnection(HalfCloseableStringTransport())
    end.readConnectionLost()
    end.writeConnectionLost()
    end.connectionLost(Failure(ConnectionDone()))
    with pytest.raises(AssertionError):
        end.dataReceived(b"early")


def test_startWiresProducers() -> None:
    """
    Starting registers each transport as the other's streaming producer
    (through a L{ReadingOf}) and resumes the client.
    """
    t = Tunnel().start()
    assert isinstance(t.client.producer, ReadingOf)
    assert t.client.producer.transport is t.upstream
    assert t.client.streaming is True
    assert isinstance(t.upstream.producer, ReadingOf)
    assert t.upstream.producer.transport is t.client
    assert t.upstream.streaming is True
    assert t.client.producerState == "producing"
    assert t.stats.upstreamAddress == IPv4Address("TCP", "192.0.2.7", 443)


def test_readingOf() -> None:
    """
    The producer registered for the other transport pauses and resumes
    reading from it, and does nothing when stopped: a transport that is
    lost stops its producer, and that must not close the survivor before
    the relay decides how (a reset, say).
    """
    transport = HalfCloseableStringTransport()
    producer = ReadingOf(transport)
    assert verifyObject(IPushProducer, producer)
    producer.pauseProducing()
    assert transport.producerState == "paused"
    producer.resumeProducing()
    assert transport.producerState == "producing"
    producer.stopProducing()
    assert transport.producerState == "producing"
    assert not transport.disconnecting


def test_earlyDataFirst() -> None:
    """
    Early data is written upstream before anything else, and counted.
    """
    t = Tunnel().start(b"early")
    t.tunnel.clientData(b"-late")
    assert t.upstream.value() == b"early-late"
    assert t.stats.bytesUp == 10


def test_relayCounts() -> None:
    """
    Bytes are relayed unchanged and counted in each direction.
    """
    t = Tunnel().start()
    for _ in range(3):
        t.tunnel.clientData(b"abc")
        t.tunnel.upstreamData(b"12345")
    assert t.upstream.value() == b"abc" * 3
    assert t.client.value() == b"12345" * 3
    assert (t.stats.bytesUp, t.stats.bytesDown) == (9, 15)


def test_statsRecord() -> None:
    """
    The tunnel's counters and times live in one L{TunnelStats} record: when
    it started, the bytes each way, the upstream address, and once both
    sides are gone the reason and the time.
    """
    t = Tunnel()
    t.clock.advance(3)
    t.start(b"early")
    t.tunnel.upstreamData(b"12345")
    stats = t.tunnel.stats
    assert stats == TunnelStats(
        upstreamAddress=IPv4Address("TCP", "192.0.2.7", 443),
        openedAt=3.0,
        bytesUp=5,
        bytesDown=5,
    )
    t.clock.advance(2)
    t.lose("upstream", ConnectionDone())
    t.lose("client", ConnectionDone())
    assert (stats.closeReason, stats.closedAt) == ("upstream closed", 5.0)


def test_clientFinPassedOn() -> None:
    """
    A FIN from the client becomes a FIN upstream while the other direction
    keeps flowing; the client no longer produces for the upstream.
    """
    t = Tunnel().start()
    t.tunnel.clientReadClosed()
    assert t.upstream.writeClosed
    assert t.upstream.producer is None
    assert not t.client.disconnecting
    assert not t.upstream.disconnecting
    t.tunnel.upstreamData(b"still flowing")
    assert t.client.value() == b"still flowing"


def test_bothFinsClose() -> None:
    """
    Once both sides have sent their FIN the tunnel closes both connections.
    """
    t = Tunnel().start()
    t.tunnel.clientReadClosed()
    t.tunnel.upstreamReadClosed()
    assert t.client.writeClosed is False  # nothing left to half-close
    assert t.client.disconnecting and t.upstream.disconnecting
    assert t.client.producer is None and t.upstream.producer is None
    assert t.stats.closeReason == "client closed"


def test_upstreamFinPassedOn() -> None:
    """
    A FIN from the upstream becomes a FIN to the client.
    """
    t = Tunnel().start()
    t.tunnel.upstreamReadClosed()
    assert t.client.writeClosed
    assert t.client.producer is None
    t.tunnel.clientData(b"reply")
    assert t.upstream.value() == b"reply"
    t.tunnel.upstreamReadClosed()  # repeated: ignored
    t.tunnel.clientReadClosed()
    t.tunnel.clientReadClosed()
    assert t.client.disconnecting and t.upstream.disconnecting
    assert t.stats.closeReason == "upstream closed"


def test_finFallsBackToClose() -> None:
    """
    Where the other side cannot half-close, a FIN closes the whole tunnel
    after flushing (a graceful close).
    """
    t = Tunnel(halfClose=False).start()
    t.tunnel.upstreamData(b"pending")
    t.tunnel.clientReadClosed()
    assert not t.upstream.writeClosed
    assert t.upstream.disconnecting and t.client.disconnecting
    assert t.client.producer is None and t.upstream.producer is None
    assert t.client.value() == b"pending"


@pytest.mark.parametrize("side", ["client", "upstream"])
def test_cleanCloseClosesOther(side: str) -> None:
    """
    When one side closes cleanly the survivor is unregistered and closed
    gracefully (a FIN, never a reset), and the tunnel reports once both are
    gone.
    """
    t = Tunnel().start()
    survivor = t.transport(other(side))
    t.lose(side, ConnectionDone())
    assert survivor.producer is None
    assert survivor.disconnecting
    assert not survivor.aborted
    assert t.closed == []
    t.lose(other(side), ConnectionDone())
    assert t.closed == [t.tunnel]
    assert t.stats.closeReason == f"{side} closed"
    assert t.clock.getDelayedCalls() == []


def test_abortAfterGrace() -> None:
    """
    A survivor that does not go away after a graceful close is aborted after
    the abort timeout.
    """
    t = Tunnel().start()
    t.tunnel.clientConnectionLost(Failure(ConnectionDone()))
    assert t.upstream.disconnecting
    t.clock.advance(14.9)
    assert not t.upstream.aborted
    t.clock.advance(0.1)
    assert t.upstream.aborted
    assert not t.client.aborted


def test_idleTimeout() -> None:
    """
    A tunnel with no traffic is closed after the idle timeout, with that
    reason, then aborted if the close hangs.
    """
    t = Tunnel(idle=60).start()
    t.clock.advance(59)
    assert not t.client.disconnecting
    t.clock.advance(1)
    assert t.client.disconnecting and t.upstream.disconnecting
    assert t.stats.closeReason == "idle timeout"
    t.clock.advance(15)
    assert t.client.aborted and t.upstream.aborted


@pytest.mark.parametrize("direction", ["up", "down"])
def test_trafficDefersIdleTimeout(direction: str) -> None:
    """
    Traffic in either direction pushes the idle deadline back; the tunnel
    closes at most an eighth of the timeout late.
    """
    t = Tunnel(idle=80).start()
    t.clock.advance(50)
    if direction == "up":
        t.tunnel.clientData(b"x")
    else:
        t.tunnel.upstreamData(b"x")
    t.clock.pump([1] * 40)  # 90 s since start, 40 since traffic
    assert not t.client.disconnecting
    t.clock.pump([1] * 60)  # 100 s since traffic
    assert t.client.disconnecting
    assert t.stats.closeReason == "idle timeout"


def test_closeIdempotent() -> None:
    """
    Closing twice keeps the first reason and the first close time: the
    abort deadline counts from the first close.
    """
    t = Tunnel().start()
    t.tunnel.close("first")
    t.clock.advance(5)
    t.tunnel.close("second")
    assert t.stats.closeReason == "first"
    assert t.stats.closingAt == 0
    t.clock.advance(9.9)
    assert not t.client.aborted
    t.clock.advance(0.1)
    assert t.client.aborted and t.upstream.aborted


def test_canHalfCloseOnlyPlainTCP() -> None:
    """
    Only a plain TCP connection counts as half-closeable; TLS (which claims
    the TCP interface) and test transports do not.
    """
    a, b = socket.socketpair()
    try:
        connection = tcp.Connection(a, None)  # type: ignore[arg-type]
        assert canHalfClose(connection)
    finally:
        a.close()
        b.close()
    assert not canHalfClose(StringTransport())
    tls = TLSMemoryBIOProtocol.__new__(TLSMemoryBIOProtocol)
    assert not canHalfClose(tls)


class EagerTransport(HalfCloseableStringTransport):
    """
    A transport that, like Twisted's own, asks a pull producer for data as
    soon as it is registered.
    """

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        super().registerProducer(producer, streaming)
        if not streaming:
            producer.resumeProducing()


def flushed(transport: HalfCloseableStringTransport) -> None:
    """
    Tell the transport's pull producer that the write buffer is empty, as
    a transport does.
    """
    assert transport.producer is not None and transport.streaming is False
    transport.producer.resumeProducing()


@pytest.mark.parametrize("side", ["client", "upstream"])
def test_resetPassedOnAfterFlush(side: str) -> None:
    """
    A side lost with an error (a reset) resets the other side, but only
    after what was relayed to it has been flushed: the survivor stops
    reading and closes, and is aborted when its buffer is empty instead of
    sending a FIN.
    """
    t = Tunnel().start()
    survivor = t.transport(other(side))
    relay(t, side, b"relayed before the reset")
    t.lose(side, ConnectionLost("Connection reset by peer"))
    assert survivor.disconnecting
    assert not survivor.aborted
    assert verifyObject(IPullProducer, survivor.producer)
    flushed(survivor)
    assert survivor.aborted
    assert survivor.value() == b"relayed before the reset"
    assert t.closed == []
    t.lose(other(side), ConnectionAborted())
    assert t.closed == [t.tunnel]
    assert t.stats.closeReason is not None
    assert t.stats.closeReason.startswith(f"{side} connection lost: ")
    assert t.stats.closeReason.endswith("Connection reset by peer.")
    assert t.clock.getDelayedCalls() == []


def test_resetIgnoresRegistrationRequest() -> None:
    """
    The request for data a transport makes when the producer is registered
    says nothing about its buffer: only a later one leads to the abort.
    """
    t = Tunnel(client=EagerTransport()).start()
    t.tunnel.upstreamData(b"pending")
    t.lose("upstream", ConnectionLost())
    assert not t.client.aborted
    flushed(t.client)
    assert t.client.aborted


def test_resetWaitsForPeerAcknowledgement(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Once the write buffer is empty the reset also waits until the peer has
    acknowledged every byte the kernel still holds (a reset would discard
    them), checking again every few milliseconds.
    """
    unsent = [70000, 12, 0]
    monkeypatch.setattr(_resets, "_unsentBytes", lambda transport: unsent.pop(0))
    t = Tunnel().start()
    t.lose("upstream", ConnectionLost())
    flushed(t.client)
    assert not t.client.aborted
    flushed(t.client)  # a second request while waiting changes nothing
    t.clock.advance(_resets._SENT_POLL)
    assert not t.client.aborted
    t.clock.advance(_resets._SENT_POLL)
    assert t.client.aborted
    assert unsent == []


def test_resetBoundedByAbortTimeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A peer that never takes the bytes cannot hold the connection: the abort
    timeout aborts it, and no timer is left once both sides are gone.
    """
    monkeypatch.setattr(_resets, "_unsentBytes", lambda transport: 1)
    t = Tunnel().start()
    t.lose("client", ConnectionLost())
    flushed(t.upstream)
    t.clock.advance(14.9)
    assert not t.upstream.aborted
    t.clock.advance(0.1)
    assert t.upstream.aborted
    t.lose("upstream", ConnectionAborted())
    assert t.closed == [t.tunnel]
    assert t.clock.getDelayedCalls() == []


def test_resetElsewhereAbortsAtOnce() -> None:
    """
    Where the survivor is not plain TCP (TLS, wrappers) there is no way to
    flush without a clean close: it is aborted at once.
    """
    t = Tunnel(halfClose=False).start()
    t.lose("upstream", ConnectionLost())
    assert t.client.aborted
    assert t.client.producer is None


def test_resetAfterFinPassedOn() -> None:
    """
    A reset after a FIN was passed on still resets the other side, and the
    reset, not the FIN, is the close reason.
    """
    t = Tunnel().start()
    t.tunnel.clientReadClosed()
    assert t.upstream.writeClosed
    t.lose("client", ConnectionLost("Connection reset by peer"))
    flushed(t.upstream)
    assert t.upstream.aborted
    assert t.stats.closeReason is not None
    assert t.stats.closeReason.startswith("client connection lost: ")


def test_resetWhileClosing() -> None:
    """
    A reset while the tunnel is already closing gracefully turns the
    survivor's close into a reset, once it is flushed.
    """
    t = Tunnel().start()
    t.tunnel.close("idle timeout")
    t.lose("upstream", ConnectionLost())
    assert not t.client.aborted
    flushed(t.client)
    assert t.client.aborted
    assert t.stats.closeReason == "idle timeout"


def test_resetArmedOnRealSocket() -> None:
    """
    On a real TCP socket the reset is armed before the close: C{SO_LINGER}
    is 0, so even a close Twisted considers orderly sends a reset.  Only
    transports with a socket are asked for their unacknowledged bytes.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        connection = tcp.Connection(sock, None)  # type: ignore[arg-type]
        _resets._resetOnClose(connection)
        onoff, linger = struct.unpack(
            "ii", sock.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8)
        )
        assert (onoff, linger) == (1, 0)
        assert _resets._unsentBytes(connection) == 0
    # Once the socket is closed there is nothing to ask or arm.
    assert _resets._unsentBytes(connection) == 0
    _resets._resetOnClose(connection)
    assert _resets._unsentBytes(StringTransport()) == 0
    _resets._resetOnClose(StringTransport())


@pytest.mark.parametrize("halfClose", [True, False])
def test_startWithClientFinished(halfClose: bool) -> None:
    """
    A client that half-closed before the tunnel existed: its early data is
    written upstream, then its FIN is passed on (or, where the upstream
    cannot half-close, the tunnel closes after flushing).  The client is
    not resumed, and the upstream's reply still reaches it.
    """
    t = Tunnel(halfClose=halfClose).start(b"request-body", clientFinished=True)
    assert t.upstream.value() == b"request-body"
    assert t.upstream.producer is None
    assert t.client.producerState == "paused"
    if halfClose:
        assert t.upstream.writeClosed
        assert not t.upstream.disconnecting
        t.tunnel.upstreamData(b"reply")
        assert t.client.value() == b"reply"
        t.tunnel.upstreamReadClosed()
    assert t.upstream.disconnecting and t.client.disconnecting
    assert t.stats.closeReason == "client closed"


def test_halfCloseTimeout() -> None:
    """
    Once one direction has finished, the tunnel is closed after the
    (shorter) half-close timeout without traffic, counted from the FIN, with
    its own reason; then aborted if the close hangs.
    """
    t = Tunnel(idle=600, halfCloseTimeout=60).start()
    t.clock.advance(100)
    t.tunnel.upstreamReadClosed()
    assert t.stats.halfClosedAt == 100
    assert len(t.clock.getDelayedCalls()) == 1  # the sweeper's, as before
    t.clock.pump([1] * 59)
    assert not t.client.disconnecting
    t.clock.pump([1] * 8)  # 60 s, and at most an eighth later
    assert t.client.disconnecting and t.upstream.disconnecting
    assert t.stats.closeReason == "half-close timeout"
    t.clock.advance(15)
    assert t.client.aborted and t.upstream.aborted


def test_halfCloseTimeoutDeferredByTraffic() -> None:
    """
    Traffic in the direction still open pushes the half-close deadline
    back, as it does the idle deadline.
    """
    t = Tunnel(idle=600, halfCloseTimeout=60).start()
    t.tunnel.clientReadClosed()
    for _ in range(10):
        t.clock.pump([1] * 50)
        t.tunnel.upstreamData(b"still answering")
    assert not t.client.disconnecting
    t.clock.pump([1] * 68)
    assert t.client.disconnecting
    assert t.stats.closeReason == "half-close timeout"


def test_idleTimeoutShorterThanHalfClose() -> None:
    """
    The shorter deadline applies: with an idle timeout below the half-close
    timeout, a half-closed tunnel closes at the idle timeout.
    """
    t = Tunnel(idle=30, halfCloseTimeout=60).start()
    t.tunnel.clientReadClosed()
    t.clock.pump([1] * 34)
    assert t.client.disconnecting
    assert t.stats.closeReason == "idle timeout"


def test_noHalfCloseTimeoutWithoutFin() -> None:
    """
    A tunnel open both ways is held to the idle timeout only.
    """
    t = Tunnel(idle=600, halfCloseTimeout=60).start()
    t.clock.pump([10] * 59)
    assert not t.client.disconnecting
    t.clock.pump([10] * 8)
    assert t.stats.closeReason == "idle timeout"


def test_finAfterCloseIgnored() -> None:
    """
    A FIN that arrives once the tunnel is closing is not passed on and arms
    no deadline.
    """
    t = Tunnel(idle=600, halfCloseTimeout=60).start()
    t.tunnel.close("idle timeout")
    t.tunnel.clientReadClosed()
    assert not t.upstream.writeClosed
    assert t.stats.halfClosedAt is None
    assert len(t.clock.getDelayedCalls()) == 1  # the sweeper's


def test_proxyTunnelDeprecated() -> None:
    """
    C{connectproxy.ProxyTunnel} still works as it did, deadlines included
    (it keeps them with a sweeper of its own), and says it is deprecated.
    """
    import connectproxy

    with pytest.warns(DeprecationWarning, match=r"ProxyTunnel was deprecated in"):
        proxyTunnel = connectproxy.ProxyTunnel
    clock = MemoryReactorClock()
    client = HalfCloseableStringTransport()
    upstream = HalfCloseableStringTransport(
        peerAddress=IPv4Address("TCP", "192.0.2.7", 443)
    )
    closed: list[object] = []
    tunnel = proxyTunnel(
        client, upstream, clock, 60.0, 15.0, closed.append, halfCloseTimeout=None
    )
    client.pauseProducing()
    tunnel.start(b"early")
    tunnel.upstreamData(b"12345")
    assert (upstream.value(), client.value()) == (b"early", b"12345")
    clock.pump([1] * 59)
    assert not client.disconnecting
    clock.pump([1] * 8)
    assert client.disconnecting and upstream.disconnecting
    clock.pump([1] * 16)
    assert client.aborted and upstream.aborted
    tunnel.clientConnectionLost(Failure(ConnectionAborted()))
    tunnel.upstreamConnectionLost(Failure(ConnectionAborted()))
    assert closed == [tunnel]
    assert clock.getDelayedCalls() == []
    with pytest.warns(DeprecationWarning, match=r"please use stats\.closeReason"):
        assert tunnel.closeReason == "idle timeout"


def test_statsAttributesDeprecated() -> None:
    """
    The counters and times that were attributes of a tunnel (and so of
    C{ConnectProxyProtocol.tunnel}) still read the stats record, with a
    deprecation warning.
    """
    t = Tunnel().start(b"early")
    t.tunnel.upstreamData(b"12345")
    names = [
        "bytesUp",
        "bytesDown",
        "closeReason",
        "openedAt",
        "closedAt",
        "upstreamAddress",
    ]
    for name in names:
        with pytest.warns(DeprecationWarning, match=rf"please use stats\.{name} "):
            assert getattr(t.tunnel, name) == getattr(t.stats, name)
