# -*- test-case-name: tests.integration.test_relays -*-
"""
L{_Side}: one side of a L{SpliceRelay <connectproxy._splice.SpliceRelay>},
the relay's hold on one socket: first the pull producer that waits until
the socket's transport has written what it holds, then the reactor's
reader and writer of the socket (the per-chunk path: C{splice} in, C{splice}
out), and what the side's protocol hands over (its receivers).
"""

from __future__ import annotations

import errno
import os
import socket
from typing import TYPE_CHECKING, Any

from twisted.internet import tcp
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IPullProducer,
    IReadDescriptor,
    IWriteDescriptor,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from ._pipes import Pipe, PipePool
from ._writethrough import loseConnectionNow

if TYPE_CHECKING:
    from ._splice import SpliceRelay

__all__ = ["LOST", "OWNED", "RETURNED", "WAITING", "adoptReading"]

#: The most bytes one C{splice} call is asked to move: more than a pipe
#: holds, so each call moves what the socket has, up to the pipe's size.
_CHUNK = 1 << 22

#: The flags of every C{splice} call: never block on the pipe.
_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)

# The states of a side.
WAITING = "waiting"  # its transport still writes what it holds
OWNED = "owned"  # the relay reads and writes its socket
RETURNED = "returned"  # handed back to its transport, closing
LOST = "lost"  # its connection is gone


def _holdsNothing(transport: tcp.Connection) -> bool:
    """
    Whether C{transport} has nothing waiting to be written, as far as can
    be told: Twisted's TCP transports keep it in C{dataBuffer} and
    C{_tempDataLen}; another version's are waited for.
    """
    return (
        getattr(transport, "dataBuffer", None) == b""
        and getattr(transport, "_tempDataLen", None) == 0
    )


def _epollTables(reactor: Any) -> tuple[dict[int, Any], Any, Any] | None:
    """
    Twisted's epoll reactor's tables of registered descriptors (by number:
    the selectable; the numbers watched for reading; those watched for
    writing), or C{None} for another reactor or Twisted version.
    """
    tables = (
        getattr(reactor, "_selectables", None),
        getattr(reactor, "_reads", None),
        getattr(reactor, "_writes", None),
    )
    selectables, reads, writes = tables
    if (
        type(reactor).__name__ != "EPollReactor"
        or not isinstance(selectables, dict)
        or not isinstance(reads, set | dict)
        or not isinstance(writes, set | dict)
    ):
        return None
    return tables  # type: ignore[return-value]


def adoptReading(sides: tuple[_Side, ...]) -> bool:
    """
    Take over the sockets of C{sides} at once and have them read, without
    asking the kernel for anything: when every side's transport holds
    nothing and is watched for reading only (the usual case: the C{200} and
    the client's bytes went out when they were written), the epoll
    reactor's registration of each socket is pointed at its side, which
    saves the four C{epoll_ctl} calls of unwatching the transports and
    watching the sides.

    @param sides: Sides still waiting for their transports.
    @return: Whether they were taken over (each reading, L{OWNED}); when
        C{False}, nothing was changed.
    """
    tables = _epollTables(sides[0].reactor)
    if tables is None:
        return False
    selectables, reads, writes = tables
    for side in sides:
        fd = side.fd
        transport = side.transport
        if (
            side.state is not WAITING
            or not _holdsNothing(transport)
            or transport.producer is not None
            or selectables.get(fd) is not transport
            or fd not in reads
            or fd in writes
        ):
            return False
    for side in sides:
        selectables[side.fd] = side
        side.reading = True
        side.state = OWNED
    return True


def _lostWith(error: OSError) -> Failure:
    """
    What a transport's protocol is told when its socket failed.
    """
    code = error.errno or errno.EIO
    return Failure(ConnectionLost(os.strerror(code)))


@implementer(IReadDescriptor, IWriteDescriptor, IPullProducer)
class _Side:
    """
    One side of a splice relay: its transport, and once the relay owns the
    socket, the reactor's reader and writer of it.  It reads its socket
    into a pipe and writes into it what the other side read.

    @ivar name: C{"client"} or C{"upstream"}.
    @ivar state: Who has the socket: C{WAITING}, C{OWNED}, C{RETURNED},
        C{LOST}.
    @ivar pending: Bytes owed to this side that are written before the
        pipe: the early data, and bytes the protocols handed over.
    @ivar pipe: The pipe holding bytes owed to this side, or C{None}.
    @ivar queued: How many bytes L{pipe} holds.
    @ivar eof: Whether this side sent its FIN.
    @ivar fin: Whether a FIN is to be passed to this side once it is owed
        nothing; L{shut} once it was.
    @ivar finish: C{"close"} or C{"reset"} once this side is to be closed
        (when it is owed nothing), else C{None}.
    """

    __slots__ = (
        "_registering",
        "eof",
        "fd",
        "fin",
        "finish",
        "name",
        "peer",
        "pending",
        "pipe",
        "pool",
        "queued",
        "reactor",
        "reading",
        "relay",
        "shut",
        "sock",
        "state",
        "stats",
        "transport",
        "up",
        "writing",
    )

    def __init__(
        self, relay: SpliceRelay, name: str, transport: tcp.Connection, pool: PipePool
    ) -> None:
        self.relay = relay
        self.name = name
        self.up = name == "client"
        self.transport = transport
        self.reactor: Any = transport.reactor
        self.sock: socket.socket = transport.getHandle()
        self.fd = self.sock.fileno()
        self.pool = pool
        self.stats = relay.stats
        self.peer: _Side = self
        self.state = WAITING
        self.pending = b""
        self.pipe: Pipe | None = None
        self.queued = 0
        self.eof = False
        self.fin = False
        self.shut = False
        self.finish: str | None = None
        self.reading = False
        self.writing = False
        self._registering = False

    # The reactor's descriptor (IReadDescriptor, IWriteDescriptor).

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "SpliceRelay"

    def doRead(self) -> None:
        """
        Splice what the socket has into a pipe and on into the other
        socket; keep in the pipe what that socket cannot take now, and stop
        reading until it took it.
        """
        if not self.reading:
            # An event of the reactor's last poll that came after the relay
            # stopped reading (while handling another descriptor's): the
            # other side may be gone, and its descriptor reused.
            return
        dst = self.peer
        pool = self.pool
        pipe = pool.free.pop() if pool.free else pool.take()
        if pipe is None:
            self._copy(dst)
            return
        try:
            n = os.splice(self.fd, pipe[1], _CHUNK, None, None, _FLAGS)
        except BlockingIOError:
            pool.give(pipe)
            return
        except OSError as e:
            # Nothing moved: the pipe is still empty.
            pool.give(pipe)
            self.relay.sideBroken(self, _lostWith(e))
            return
        if not n:
            pool.give(pipe)
            self.relay.sideFinished(self)
            return
        if self.up:
            self.stats.bytesUp += n
        else:
            self.stats.bytesDown += n
        try:
            m = os.splice(pipe[0], dst.fd, n, None, None, _FLAGS)
        except BlockingIOError:
            m = 0
        except OSError as e:
            pool.discard(pipe)
            self.relay.sideBroken(dst, _lostWith(e))
            return
        if m == n:
            pool.give(pipe)
            return
        dst.pipe = pipe
        dst.queued = n - m
        self.stopReading()
        dst.startWriting()

    def _copy(self, dst: _Side) -> None:
        """
        Without a pipe, read a chunk into memory and write it as pending
        bytes.
        """
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as e:
            self.relay.sideBroken(self, _lostWith(e))
            return
        if not data:
            self.relay.sideFinished(self)
            return
        if self.up:
            self.stats.bytesUp += len(data)
        else:
            self.stats.bytesDown += len(data)
        dst.pending = data
        self.stopReading()
        dst.startWriting()

    def doWrite(self) -> None:
        """
        Write what this side is owed: the pending bytes, then the pipe.
        Once it is owed nothing, let the relay go on (a FIN, a close, the
        other side read again).
        """
        if not self.writing:
            # As in doRead: the relay stopped writing since the last poll.
            return
        if self.pending:
            try:
                sent = self.sock.send(self.pending)
            except BlockingIOError:
                return
            except OSError as e:
                self.relay.sideBroken(self, _lostWith(e))
                return
            self.pending = self.pending[sent:]
            if self.pending:
                return
        pipe = self.pipe
        if pipe is not None:
            try:
                m = os.splice(pipe[0], self.fd, self.queued, None, None, _FLAGS)
            except BlockingIOError:
                return
            except OSError as e:
                self.relay.sideBroken(self, _lostWith(e))
                return
            self.queued -= m
            if self.queued:
                return
            self.pipe = None
            self.pool.give(pipe)
        self.stopWriting()
        self.relay.sideDrained(self)

    def connectionLost(self, reason: Failure) -> None:
        """
        The reactor dropped the descriptor: an error it saw (or an
        exception here), or the reactor is stopping.
        """
        self.reading = self.writing = False
        if self.state is OWNED:
            self.relay.sideBroken(self, reason)

    def startReading(self) -> None:
        if not self.reading:
            self.reading = True
            self.reactor.addReader(self)

    def stopReading(self) -> None:
        if self.reading:
            self.reading = False
            self.reactor.removeReader(self)

    def startWriting(self) -> None:
        if not self.writing:
            self.writing = True
            self.reactor.addWriter(self)

    def stopWriting(self) -> None:
        if self.writing:
            self.writing = False
            self.reactor.removeWriter(self)

    @property
    def owes(self) -> bool:
        """
        Whether bytes are waiting to be written to this side.
        """
        return bool(self.pending) or self.queued > 0

    def release(self) -> None:
        """
        Drop what this side was owed: it cannot be delivered any more.
        """
        self.pending = b""
        self.queued = 0
        if self.pipe is not None:
            pipe, self.pipe = self.pipe, None
            self.pool.discard(pipe)

    # Taking the socket over from the transport (IPullProducer).

    def takeOver(self) -> bool:
        """
        Stop the transport reading, and take the socket over once the
        transport has written what it holds: at once when it holds nothing
        (the usual case: the C{200} went out when it was written), else as
        its pull producer, which it asks for data once its buffer is empty
        (L{resumeProducing}).

        @return: Whether the relay owns the socket now.
        """
        transport = self.transport
        transport.pauseProducing()
        if _holdsNothing(transport):
            transport.stopWriting()
            self.state = OWNED
            return True
        self._registering = True
        try:
            transport.registerProducer(self, False)
        finally:
            self._registering = False
        # Look at the buffer on the next turn even when it is empty.
        transport.startWriting()
        return False

    def resumeProducing(self) -> None:
        if self._registering or self.state is not WAITING:
            return
        transport = self.transport
        transport.unregisterProducer()
        transport.stopReading()
        transport.stopWriting()
        self.state = OWNED
        self.relay.sideOwned(self)

    def stopProducing(self) -> None:
        # The transport is gone: its protocol tells the relay.
        pass

    def handBack(self) -> None:
        """
        Give the socket back to the transport to close it: gracefully, or
        with a reset once the peer has everything.
        """
        self.stopReading()
        self.stopWriting()
        self.state = RETURNED
        if self.finish == "reset":
            self.relay.resetWhenFlushed(self)
        elif self.shut:
            # The transport does not know its write side is shut: it would
            # try to write.  This is what its loseConnection does after its
            # own half-close.
            self.transport.connectionLost(Failure(ConnectionDone()))
        else:
            # Nothing waits in the transport (the relay took the socket over
            # once it was empty): closed in this call.
            loseConnectionNow(self.transport)

    # What the protocol hands over (its receivers).

    def received(self, data: bytes) -> None:
        """
        Bytes from this side that came through its transport (before the
        relay owns the socket): owed to the other side.
        """
        if self.up:
            self.stats.bytesUp += len(data)
        else:
            self.stats.bytesDown += len(data)
        dst = self.peer
        if dst.state is LOST or dst.state is RETURNED:
            return
        dst.pending += data
        # Nothing more is read from here until the other side has it.
        self.stopReading()
        if dst.state is OWNED:
            dst.startWriting()

    def readClosed(self) -> None:
        """
        This side's FIN came through its transport.
        """
        self.relay.sideFinished(self)

    def lost(self, reason: Failure) -> None:
        """
        This side's connection is gone (its transport told its protocol).
        """
        self.relay.sideLost(self, reason)
