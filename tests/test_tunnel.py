# -*- test-case-name: tests.test_tunnel -*-
"""
Tests for L{connectproxy._tunnel.ProxyTunnel}: flow-control wiring,
half-close, closing in two stages and the idle deadline, on fake transports
and a fake clock.
"""

from __future__ import annotations

import socket

import pytest
from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure

from connectproxy._tunnel import ProxyTunnel, canHalfClose
from connectproxy.testing import HalfCloseableStringTransport


class Tunnel:
    """
    A tunnel between two fake transports, and what it reported.
    """

    def __init__(self, halfClose: bool = True, idle: float = 60.0) -> None:
        self.clock = MemoryReactorClock()
        peer = IPv4Address("TCP", "192.0.2.7", 443)
        self.client = HalfCloseableStringTransport()
        self.upstream = HalfCloseableStringTransport(peerAddress=peer)
        self.closed: list[ProxyTunnel] = []
        self.tunnel = ProxyTunnel(
            self.client,
            self.upstream,
            self.clock,
            idleTimeout=idle,
            abortTimeout=15.0,
            onClosed=self.closed.append,
        )
        self.tunnel.halfClose = lambda transport: halfClose
        self.client.pauseProducing()

    def start(self, early: bytes = b"") -> Tunnel:
        self.tunnel.start(early)
        return self


def test_startWiresProducers() -> None:
    """
    Starting registers each transport as the other's streaming producer and
    resumes the client.
    """
    t = Tunnel().start()
    assert t.client.producer is t.upstream
    assert t.client.streaming is True
    assert t.upstream.producer is t.client
    assert t.upstream.streaming is True
    assert t.client.producerState == "producing"
    assert t.tunnel.upstreamAddress == IPv4Address("TCP", "192.0.2.7", 443)


def test_earlyDataFirst() -> None:
    """
    Early data is written upstream before anything else, and counted.
    """
    t = Tunnel().start(b"early")
    t.tunnel.clientData(b"-late")
    assert t.upstream.value() == b"early-late"
    assert t.tunnel.bytesUp == 10


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
    assert (t.tunnel.bytesUp, t.tunnel.bytesDown) == (9, 15)


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
    assert t.tunnel.closeReason == "client closed"


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
    assert t.tunnel.closeReason == "upstream closed"


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


def test_lostSideClosesOther() -> None:
    """
    When one side is lost the survivor is unregistered and closed, and the
    tunnel reports once both are gone.
    """
    t = Tunnel().start()
    t.tunnel.upstreamConnectionLost(Failure(ConnectionLost("reset")))
    assert t.client.producer is None
    assert t.client.disconnecting
    assert t.closed == []
    t.tunnel.clientConnectionLost(Failure(ConnectionDone()))
    assert t.closed == [t.tunnel]
    assert t.tunnel.closeReason is not None
    assert t.tunnel.closeReason.startswith("upstream connection lost")
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
    assert t.tunnel.closeReason == "idle timeout"
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
    assert t.tunnel.closeReason == "idle timeout"


def test_closeIdempotent() -> None:
    """
    Closing twice keeps the first reason and arms one abort timer.
    """
    t = Tunnel().start()
    t.tunnel.close("first")
    t.tunnel.close("second")
    assert t.tunnel.closeReason == "first"
    assert len(t.clock.getDelayedCalls()) == 1


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
