# -*- test-case-name: tests.test_spliceadopt -*-
"""
L{connectproxy._spliceside.adoptReading}: the splice relay takes both
sockets over by pointing the epoll reactor's registrations at its sides,
when that is safe, and changes nothing otherwise.  On a real (not running)
epoll reactor, with Twisted TCP connections on socket pairs.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor

from connectproxy._pipes import PipePool
from connectproxy._spliceside import OWNED, WAITING, _Side, adoptReading

epollreactor = pytest.importorskip("twisted.internet.epollreactor")


class _Pairs:
    """
    Socket pairs whose first ends are Twisted connections on C{reactor}.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.sockets: list[socket.socket] = []

    def connection(self) -> tcp.Connection:
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        self.sockets += [ours, theirs]
        connection = tcp.Connection(ours, Protocol(), self.reactor)
        connection.connected = True
        return connection

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def epoll() -> Iterator[tuple[Any, _Pairs]]:
    reactor = epollreactor.EPollReactor()
    pairs = _Pairs(reactor)
    yield reactor, pairs
    for selectable in reactor.getReaders() + reactor.getWriters():
        reactor.removeReader(selectable)
        reactor.removeWriter(selectable)
    pairs.close()
    reactor._poller.close()


def _watched(selectables: list[Any], reactor: Any) -> set[Any]:
    """
    The selectables, without the reactor's own waker.
    """
    return set(selectables) - {getattr(reactor, "waker", None)}


def _sides(*transports: tcp.Connection) -> tuple[_Side, ...]:
    relay: Any = SimpleNamespace(stats=None)
    pool = PipePool(keep=0)
    return tuple(
        _Side(relay, name, transport, pool)
        for name, transport in zip(("client", "upstream"), transports, strict=True)
    )


def test_readingTransportsAdopted(epoll: tuple[Any, _Pairs]) -> None:
    """
    Transports that hold nothing and only read are taken over in place:
    the reactor reports the sides as its readers, and nothing as a writer.
    """
    reactor, pairs = epoll
    client, upstream = pairs.connection(), pairs.connection()
    client.startReading()
    upstream.startReading()
    sides = _sides(client, upstream)
    assert adoptReading(sides)
    assert all(side.state is OWNED and side.reading for side in sides)
    assert _watched(reactor.getReaders(), reactor) == set(sides)
    assert reactor.getWriters() == []
    for side in sides:
        side.stopReading()
    assert _watched(reactor.getReaders(), reactor) == set()


@pytest.mark.parametrize("why", ["buffered", "writing", "notReading", "producer"])
def test_otherwiseNothingChanges(epoll: tuple[Any, _Pairs], why: str) -> None:
    """
    When one transport holds bytes, waits to write, does not read or has a
    producer, neither side is adopted and the reactor is left as it was.
    """
    reactor, pairs = epoll
    client, upstream = pairs.connection(), pairs.connection()
    client.startReading()
    upstream.startReading()
    if why == "buffered":
        upstream.dataBuffer = b"waiting"
    elif why == "writing":
        upstream.startWriting()
    elif why == "notReading":
        upstream.stopReading()
    else:
        upstream.registerProducer(Protocol(), True)
    before = (set(reactor.getReaders()), set(reactor.getWriters()))
    sides = _sides(client, upstream)
    assert not adoptReading(sides)
    assert all(side.state is WAITING and not side.reading for side in sides)
    assert (set(reactor.getReaders()), set(reactor.getWriters())) == before


def test_otherReactorsNotAdopted() -> None:
    """
    Another reactor (here a memory reactor) is left to the usual take-over.
    """
    pairs = _Pairs(MemoryReactor())
    try:
        sides = _sides(pairs.connection(), pairs.connection())
        assert not adoptReading(sides)
    finally:
        pairs.close()
