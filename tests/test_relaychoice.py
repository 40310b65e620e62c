# -*- test-case-name: tests.test_relaychoice -*-
"""
Tests for L{connectproxy._relaychoice}: which relay a tunnel gets
(C{--relay}), on transports built on unconnected sockets and a memory
reactor (no I/O).  What the splice relay does is tested on real loopback
sockets in C{tests/integration/test_relays.py}: it cannot run on
C{StringTransport}, which has no socket to splice.
"""

from __future__ import annotations

import socket
import types
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet import tcp
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.tls import TLSMemoryBIOProtocol

from connectproxy import ConnectProxyFactory, ProxySettings
from connectproxy._pipes import PipePool
from connectproxy._relaychoice import (
    RelayChoice,
    spliceable,
    spliceAvailable,
    spliceUnavailableReason,
)
from connectproxy._splice import SpliceRelay
from connectproxy._tunnel import TransportRelay, _UpstreamProtocol
from connectproxy.testing import ProxyHarness, connectHead


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    """
    Sockets a test makes, closed when it ends.
    """
    made: list[socket.socket] = []
    yield made
    for sock in made:
        sock.close()


def tcpServer(
    sockets: list[socket.socket],
    family: socket.AddressFamily = socket.AF_INET,
    reactor: Any = None,
) -> tcp.Server:
    """
    A plain TCP server transport, as a listener makes one, on a socket that
    is never connected (nothing is read or written).
    """
    sock = socket.socket(family, socket.SOCK_STREAM)
    sockets.append(sock)
    reactor = MemoryReactorClock() if reactor is None else reactor
    return tcp.Server(
        sock,
        _UpstreamProtocol(),
        ("127.0.0.1", 4),
        None,  # type: ignore[arg-type]
        1,
        reactor,
    )


def end(transport: Any) -> _UpstreamProtocol:
    """
    A side of a tunnel: a protocol connected to C{transport}.
    """
    protocol = _UpstreamProtocol()
    protocol.makeConnection(transport)
    return protocol


def test_plainTCPSpliceable(sockets: list[socket.socket]) -> None:
    """
    A connected plain TCP transport, over IPv4 or IPv6, is spliceable.
    """
    assert spliceable(tcpServer(sockets))
    assert spliceable(tcpServer(sockets, socket.AF_INET6))


def test_othersNotSpliceable(sockets: list[socket.socket]) -> None:
    """
    TLS (a wrapping protocol, or TLS started on the connection), test
    transports, UNIX sockets, a transport that is closing or has a producer,
    and one whose reactor does not register descriptors are not
    spliceable.
    """
    assert not spliceable(StringTransport())
    assert not spliceable(TLSMemoryBIOProtocol.__new__(TLSMemoryBIOProtocol))
    assert not spliceable(tcpServer(sockets, socket.AF_UNIX))
    started = tcpServer(sockets)
    started.TLS = True
    assert not spliceable(started)
    closing = tcpServer(sockets)
    closing.loseConnection()
    assert not spliceable(closing)
    producing = tcpServer(sockets)
    producing.registerProducer(StringTransport(), True)
    assert not spliceable(producing)
    gone = tcpServer(sockets)
    gone.connected = 0
    assert not spliceable(gone)
    clockOnly = tcpServer(sockets)
    clockOnly.reactor = types.SimpleNamespace()  # type: ignore[assignment]
    assert not spliceable(clockOnly)


def test_unavailableReason() -> None:
    """
    Splicing needs Linux and a Python with C{os.splice} and C{os.pipe2}; the
    reason names what is missing.
    """
    assert (
        spliceUnavailableReason("linux", types.SimpleNamespace(splice=None, pipe2=None))
        is None
    )
    assert spliceUnavailableReason("darwin") == (
        "splice(2) is Linux only (this is darwin)"
    )
    assert spliceUnavailableReason("linux", types.SimpleNamespace()) == (
        "this Python has no os.splice (Python 3.10 or later on Linux)"
    )
    assert spliceAvailable() is (spliceUnavailableReason() is None)


def choose(
    sockets: list[socket.socket],
    relay: str,
    client: Any = None,
    upstream: Any = None,
    available: bool = True,
) -> Any:
    """
    Build the relay a L{RelayChoice} picks for a tunnel between C{client}
    and C{upstream} (plain TCP transports by default) under C{--relay
    relay}.
    """
    choice = RelayChoice(PipePool(), available=available)
    client = tcpServer(sockets) if client is None else client
    upstream = tcpServer(sockets) if upstream is None else upstream
    settings = ProxySettings(relay=relay)
    return choice(end(client), end(upstream), MemoryReactorClock(), settings, print)


@pytest.mark.parametrize("mode", ["auto", "splice"])
def test_spliceWhereItApplies(sockets: list[socket.socket], mode: str) -> None:
    """
    Under C{auto} and C{splice}, two plain TCP sides get the splice relay,
    which the access log calls C{splice}.
    """
    relay = choose(sockets, mode)
    assert isinstance(relay, SpliceRelay)
    assert relay.stats.relay == "splice"


@pytest.mark.parametrize("mode", ["auto", "splice"])
@pytest.mark.parametrize("side", ["client", "upstream"])
def test_transportElsewhere(sockets: list[socket.socket], mode: str, side: str) -> None:
    """
    A tunnel with one side that is not plain TCP (TLS, here) gets the
    transport relay, whatever the mode.
    """
    tls = TLSMemoryBIOProtocol.__new__(TLSMemoryBIOProtocol)
    tls.getPeer = tcpServer(sockets).getPeer  # type: ignore[method-assign]
    relay = (
        choose(sockets, mode, client=tls)
        if side == "client"
        else choose(sockets, mode, upstream=tls)
    )
    assert isinstance(relay, TransportRelay)
    assert relay.stats.relay == "transport"


def test_transportMode(sockets: list[socket.socket]) -> None:
    """
    C{--relay transport} never splices.
    """
    assert isinstance(choose(sockets, "transport"), TransportRelay)


def test_transportWithoutSplice(sockets: list[socket.socket]) -> None:
    """
    On a platform that cannot splice, C{auto} relays through the
    transports.
    """
    assert isinstance(choose(sockets, "auto", available=False), TransportRelay)


def test_stopClosesKeptPipes() -> None:
    """
    Stopping the choice (the factory stopped) closes the pipes kept for the
    next tunnels.
    """
    pool = PipePool()
    pool.give(pool.take() or (-1, -1))
    assert (pool.open, len(pool.free)) == (1, 1)
    RelayChoice(pool).stop()
    assert (pool.open, pool.free) == (0, [])


def test_factoryStopsChoice() -> None:
    """
    When its last listener stops, the factory stops its relay factory: the
    kept pipes are closed.
    """
    pool = PipePool()
    pool.give(pool.take() or (-1, -1))
    factory = ConnectProxyFactory(MemoryReactorClock())
    factory.relayFactory = RelayChoice(pool)
    factory.doStart()
    factory.doStop()
    assert pool.open == 0


def test_factoryFollowsSettings() -> None:
    """
    The proxy's factory chooses with a L{RelayChoice}; a tunnel over test
    transports gets the transport relay, and its record says so.
    """
    harness = ProxyHarness()
    assert isinstance(harness.factory.relayFactory, RelayChoice)
    client = harness.connectClient()
    client.send(connectHead())
    harness.connector.attempts[0].succeed()
    assert isinstance(client.protocol.tunnel, TransportRelay)
    [opened] = harness.observer.opened
    assert opened.relay == "transport"
