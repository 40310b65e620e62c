# -*- test-case-name: tests.test_writethrough -*-
"""
The relay's write-through (L{connectproxy._writethrough}), on a Twisted TCP
connection over a real socket pair that a L{MemoryReactor} watches: the
chunk reaches the socket at once when nothing waits in the transport's
buffer, and goes through C{write}, in order, otherwise.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from twisted.internet import tcp
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from connectproxy._writethrough import (
    loseConnectionNow,
    loseWriteConnectionNow,
    writerFor,
)


@implementer(IHalfCloseableProtocol)
class _LossRecorder(Protocol):
    """
    Records why its connection was lost.
    """

    lost: Failure | None = None
    closing = False
    writeLost = 0

    def readConnectionLost(self) -> None:
        pass

    def writeConnectionLost(self) -> None:
        """
        Counts the half-closes Twisted reports (a protocol that supports
        half-close).
        """
        self.writeLost += 1

    def loseConnection(self) -> None:
        """
        What a TLS connection closes through.
        """
        self.closing = True

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.lost = reason


@pytest.fixture
def pair() -> Iterator[tuple[tcp.Connection, socket.socket, MemoryReactor]]:
    """
    A Twisted TCP connection on one end of a socket pair, the other end,
    and the reactor that watches the connection.
    """
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.settimeout(5)
    reactor = MemoryReactor()
    connection = tcp.Connection(ours, _LossRecorder(), reactor)
    connection.connected = True
    yield connection, theirs, reactor
    ours.close()
    theirs.close()


def _received(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data


def test_otherTransportsWrittenAsUsual() -> None:
    """
    Anything but a plain TCP connection gets its own C{write}.
    """
    transport = StringTransport()
    assert writerFor(transport) == transport.write


def test_tlsWrittenAsUsual(
    pair: tuple[tcp.Connection, socket.socket, MemoryReactor],
) -> None:
    """
    A TCP connection carrying TLS gets its own C{write}: the bytes must go
    through the TLS layer.
    """
    connection, _, _ = pair
    connection.TLS = True
    assert writerFor(connection) == connection.write


def test_emptyBufferWritesThrough(
    pair: tuple[tcp.Connection, socket.socket, MemoryReactor],
) -> None:
    """
    With nothing waiting, the chunk is on the socket when the call returns,
    and the reactor is not asked to watch for writability.
    """
    connection, theirs, reactor = pair
    write = writerFor(connection)
    write(b"hello")
    write(b" world")
    assert _received(theirs, 11) == b"hello world"
    assert reactor.getWriters() == []
    assert connection._tempDataLen == 0 and not connection.dataBuffer


def test_waitingBytesGoFirst(
    pair: tuple[tcp.Connection, socket.socket, MemoryReactor],
) -> None:
    """
    When bytes wait in the buffer, the chunk waits behind them, and both
    leave in order when the reactor finds the socket writable.
    """
    connection, theirs, reactor = pair
    connection.write(b"first ")
    write = writerFor(connection)
    write(b"second")
    assert reactor.getWriters() == [connection]
    connection.doWrite()
    assert _received(theirs, 12) == b"first second"


def test_partialSendRestBuffered(
    pair: tuple[tcp.Connection, socket.socket, MemoryReactor],
) -> None:
    """
    What the kernel does not take at once is buffered, after what it took,
    with the producer paused when the buffer fills, as C{write} does.
    """
    connection, theirs, reactor = pair
    connection.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    producer = _Producer()
    connection.registerProducer(producer, True)
    chunk = bytes(range(256)) * 4096  # 1 MiB: more than the socket takes.
    writerFor(connection)(chunk)
    assert 0 < connection._tempDataLen < len(chunk)
    assert reactor.getWriters() == [connection]
    assert producer.paused
    received = b""
    while len(received) < len(chunk):
        connection.doWrite()
        received += theirs.recv(1 << 20)
    assert received == chunk


class _Producer:
    paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        pass


@pytest.mark.parametrize("state", ["disconnecting", "_writeDisconnecting", "_aborting"])
def test_closingWrittenAsUsual(
    pair: tuple[tcp.Connection, socket.socket, MemoryReactor], state: str
) -> None:
    """
    A connection that is closing, half-closing or aborted is written to as
    usual: nothing goes to its socket directly.
    """
    connection, theirs, _ = pair
    write = writerFor(connection)
    setattr(connection, state, True)
    write(b"late")
    theirs.setblocking(False)
    with pytest.raises(BlockingIOError):
        theirs.recv(10)


def test_lostConnectionBuffered(
    pair: tuple[tcp.Connection, socket.socket, MemoryReactor],
) -> None:
    """
    When the socket fails (the peer is gone), the chunk goes to C{write},
    and the reactor finds the loss when it writes.
    """
    connection, theirs, reactor = pair
    theirs.close()
    write = writerFor(connection)
    write(b"x" * 100000)
    write(b"more")
    assert reactor.getWriters() == [connection]


def test_emptyBufferClosesAtOnce(
    pair: tuple[tcp.Connection, socket.socket, MemoryReactor],
) -> None:
    """
    With nothing waiting to be written, the connection is closed in the
    call: the protocol is told (a clean close), the peer reads the end of
    the stream, and the reactor watches nothing.
    """
    connection, theirs, reactor = pair
    protocol = connection.protocol
    assert isinstance(protocol, _LossRecorder)
    reactor.addReader(connection)
    writerFor(connection)(b"last words")
    loseConnectionNow(connection)
    assert protocol.lost is not None and protocol.lost.check(ConnectionDone)
    assert _received(theirs, 10) == b"last words"
    assert theirs.recv(10) == b""
    assert reactor.getReaders() == [] and reactor.getWriters() == []


def test_bufferedBytesSentBeforeClosing(
    pair: tuple[tcp.Connection, socket.socket, MemoryReactor],
) -> None:
    """
    With bytes waiting, the connection closes as C{loseConnection} does:
    once they are written.
    """
    connection, theirs, reactor = pair
    connection.write(b"waiting")
    loseConnectionNow(connection)
    assert connection.disconnecting
    assert isinstance(connection.protocol, _LossRecorder)
    assert connection.protocol.lost is None
    assert reactor.getWriters() == [connection]
    connection.doWrite()
    assert _received(theirs, 7) == b"waiting"


def test_producerClosesAsUsual(
    pair: tuple[tcp.Connection, socket.socket, MemoryReactor],
) -> None:
    """
    A connection with a producer is closed through C{loseConnection}, which
    waits for the producer as it always does.
    """
    connection, _, reactor = pair
    connection.registerProducer(_Producer(), True)
    loseConnectionNow(connection)
    assert connection.disconnecting
    assert reactor.getWriters() == [connection]


@pytest.mark.parametrize("state", ["disconnecting", "_aborting"])
def test_closingClosesAsUsual(
    pair: tuple[tcp.Connection, socket.socket, MemoryReactor], state: str
) -> None:
    """
    A connection already closing or aborting is left to finish as it was.
    """
    connection, _, _ = pair
    setattr(connection, state, True)
    loseConnectionNow(connection)
    assert isinstance(connection.protocol, _LossRecorder)
    assert connection.protocol.lost is None


def test_otherTransportsCloseAsUsual(
    pair: tuple[tcp.Connection, socket.socket, MemoryReactor],
) -> None:
    """
    Any other transport, and TLS over TCP, is closed with its own
    C{loseConnection}.
    """
    transport = StringTransport()
    loseConnectionNow(transport)
    assert transport.disconnecting
    connection, _, _ = pair
    connection.TLS = True
    loseConnectionNow(connection)
    assert isinstance(connection.protocol, _LossRecorder)
    assert connection.protocol.closing and connection.protocol.lost is None


def test_emptyBufferHalfClosesAtOnce(
    pair: tuple[tcp.Connection, socket.socket, MemoryReactor],
) -> None:
    """
    With nothing waiting, the FIN goes out in the call: the peer reads the
    end of the stream, the connection still reads, the protocol is told
    once, and a close that follows is at once too.
    """
    connection, theirs, reactor = pair
    protocol = connection.protocol
    assert isinstance(protocol, _LossRecorder)
    reactor.addReader(connection)
    writerFor(connection)(b"bye")
    loseWriteConnectionNow(connection)
    assert _received(theirs, 3) == b"bye"
    assert theirs.recv(10) == b""
    assert protocol.writeLost == 1
    assert reactor.getReaders() == [connection]
    assert reactor.getWriters() == []
    theirs.sendall(b"still open")
    assert connection.socket.recv(10) == b"still open"
    loseConnectionNow(connection)
    assert protocol.lost is not None and protocol.lost.check(ConnectionDone)
    assert protocol.writeLost == 1


def test_bufferedBytesSentBeforeHalfClosing(
    pair: tuple[tcp.Connection, socket.socket, MemoryReactor],
) -> None:
    """
    With bytes waiting, the half-close waits for them, as
    C{loseWriteConnection} does.
    """
    connection, theirs, reactor = pair
    connection.write(b"waiting")
    loseWriteConnectionNow(connection)
    assert connection._writeDisconnecting and not connection._writeDisconnected
    assert reactor.getWriters() == [connection]
    connection.doWrite()
    assert _received(theirs, 7) == b"waiting"
    assert theirs.recv(10) == b""


@pytest.mark.parametrize("state", ["disconnecting", "_writeDisconnecting", "_aborting"])
def test_closingHalfClosesAsUsual(
    pair: tuple[tcp.Connection, socket.socket, MemoryReactor], state: str
) -> None:
    """
    A connection closing, half-closing or aborting is left as it was: no
    second FIN, no second report.
    """
    connection, _, _ = pair
    setattr(connection, state, True)
    loseWriteConnectionNow(connection)
    assert not connection._writeDisconnected
    assert isinstance(connection.protocol, _LossRecorder)
    assert connection.protocol.writeLost == 0


def test_otherTransportsHalfCloseAsUsual() -> None:
    """
    Any other transport is half-closed with its own C{loseWriteConnection}.
    """
    closed: list[bool] = []

    class HalfCloseable(StringTransport):
        def loseWriteConnection(self) -> None:
            closed.append(True)

    loseWriteConnectionNow(HalfCloseable())
    assert closed == [True]
