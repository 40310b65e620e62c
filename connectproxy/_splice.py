# -*- test-case-name: tests.integration.test_relays -*-
"""
L{SpliceRelay}: relay a tunnel between two plain TCP sockets with
C{splice(2)} (Linux), so that its bytes never enter the process: the kernel
moves them from one socket into a pipe and from the pipe into the other
socket.  It keeps the semantics of the transport relay
(L{TransportRelay <connectproxy._tunnel.TransportRelay>}): early data first,
flow control, half-close, resets passed on after what was relayed, the
byte counts, and closing in two stages under the deadlines of the
L{DeadlineSweeper <connectproxy._deadlines.DeadlineSweeper>}.

How the sockets change hands:

  - L{SpliceRelay.start} stops both transports reading and waits until
    each has written what it holds (the C{200}, on the client's side): it
    registers as each transport's pull producer and asks it to look at its
    buffer, and the transport asks for more data once the buffer is empty.
  - Then the relay owns the socket: a L{_Side} of its own is the reactor's
    reader and writer of that descriptor (the reactor takes one
    registration per descriptor, so the transport is registered for
    neither).  The relay writes the early data (and any bytes the
    protocols handed it meanwhile) with C{send}, then splices.
  - To close a side the relay hands the socket back to its transport once
    everything owed to it was written: C{loseConnection} for a graceful
    close, a L{ResetWhenFlushed <connectproxy._resets.ResetWhenFlushed>}
    to pass a reset on, C{abortConnection} for an abort.  A socket error
    ends the transport at once (C{connectionLost} with L{ConnectionLost}),
    as Twisted does.  Either way the transport closes the socket and tells
    its protocol, which tells the relay: every descriptor is closed once,
    by its owner, and the front and the observers see the end as with the
    transport relay.

Pipes come from a L{PipePool}: a direction holds one only while bytes wait
in it for a slow reader, so an idle tunnel holds no pipe, only its two
sockets.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from twisted.internet import tcp
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IPullProducer,
    IReactorTime,
    IReadDescriptor,
    IWriteDescriptor,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._relay import TunnelStats, _Relay, _RelayEnd
from ._resets import ResetWhenFlushed

if TYPE_CHECKING:
    from ._settings import ProxySettings
    from ._tunnel import TunnelTransport

__all__ = ["PIPES", "PipePool", "SpliceRelay", "spliceRelay"]

#: The most bytes one C{splice} call is asked to move: more than a pipe
#: holds, so each call moves what the socket has, up to the pipe's size.
_CHUNK = 1 << 22

#: The flags of every C{splice} call: never block on the pipe.
_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)

#: The size asked for each pipe (C{F_SETPIPE_SZ}), in bytes: how much one
#: direction may hold for a slow reader, and the most one C{splice} moves.
#: The kernel keeps its default (64 KiB) where this is refused.
PIPE_SIZE = 1 << 20

#: Empty pipes kept for the next tunnel that needs one.
_KEEP = 16

_Pipe = tuple[int, int]

# The states of a side.
_WAITING = "waiting"  # its transport still writes what it holds
_OWNED = "owned"  # the relay reads and writes its socket
_RETURNED = "returned"  # handed back to its transport, closing
_LOST = "lost"  # its connection is gone


class PipePool:
    """
    Empty pipes for splicing, shared by every splice relay of a process.

    A pipe is taken for each C{splice} out of a socket and given back as
    soon as it is empty again, which is at once unless the other socket
    cannot take everything: so pipes are held only by the directions that
    wait for a slow reader, plus those kept for the next (at most
    L{keep}).

    @ivar size: The size asked for each new pipe, in bytes; 0 for the
        kernel's default.
    @ivar keep: How many empty pipes are kept open.
    @ivar open: How many pipes are open now (in use and kept).
    """

    _log = Logger()

    def __init__(self, size: int = PIPE_SIZE, keep: int = _KEEP) -> None:
        self.size = size
        self.keep = keep
        self.open = 0
        self.free: list[_Pipe] = []
        self._failing = False

    @property
    def inUse(self) -> int:
        """
        How many pipes relays hold now.
        """
        return self.open - len(self.free)

    def take(self) -> _Pipe | None:
        """
        An empty pipe, kept or new.

        @return: Its read and write descriptors (both non-blocking), or
            C{None} when no pipe can be made (the process or the system is
            out of descriptors): one C{splice_pipe_failed} event is logged
            until a pipe can be made again.
        """
        if self.free:
            return self.free.pop()
        try:
            pipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            if not self._failing:
                self._failing = True
                self._log.warn(
                    "cannot make a pipe for splicing ({error}): tunnels copy "
                    "through the proxy until pipes can be made again",
                    event="splice_pipe_failed",
                    error=e.strerror,
                )
            return None
        self._failing = False
        self.open += 1
        if self.size:
            try:
                fcntl.fcntl(pipe[1], fcntl.F_SETPIPE_SZ, self.size)
            except OSError:
                # Over the system's limits (fs.pipe-max-size, the user's
                # pipe pages): the default size works too.
                pass
        return pipe

    def give(self, pipe: _Pipe) -> None:
        """
        Give back a pipe that is empty: it is kept, or closed when enough
        are kept.
        """
        if len(self.free) < self.keep:
            self.free.append(pipe)
        else:
            self.discard(pipe)

    def discard(self, pipe: _Pipe) -> None:
        """
        Close a pipe (one that may hold bytes nobody will read).
        """
        self.open -= 1
        os.close(pipe[0])
        os.close(pipe[1])

    def close(self) -> None:
        """
        Close the pipes kept; pipes in use are given back later as usual.
        """
        while self.free:
            self.discard(self.free.pop())


#: The pipes of this process's splice relays.
PIPES = PipePool()


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
    @ivar state: Who has the socket (see the module's C{_WAITING}, ...).
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
        self.state = _WAITING
        self.pending = b""
        self.pipe: _Pipe | None = None
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
            self.relay._broken(self, _lostWith(e))
            return
        if not n:
            pool.give(pipe)
            self.relay._eof(self)
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
            self.relay._broken(dst, _lostWith(e))
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
            self.relay._broken(self, _lostWith(e))
            return
        if not data:
            self.relay._eof(self)
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
        if self.pending:
            try:
                sent = self.sock.send(self.pending)
            except BlockingIOError:
                return
            except OSError as e:
                self.relay._broken(self, _lostWith(e))
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
                self.relay._broken(self, _lostWith(e))
                return
            self.queued -= m
            if self.queued:
                return
            self.pipe = None
            self.pool.give(pipe)
        self.stopWriting()
        self.relay._drained(self)

    def connectionLost(self, reason: Failure) -> None:
        """
        The reactor dropped the descriptor: an error it saw (or an
        exception here), or the reactor is stopping.
        """
        self.reading = self.writing = False
        self.relay._broken(self, reason)

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

    def takeOver(self) -> None:
        """
        Stop the transport reading, and wait until it wrote what it holds:
        as its pull producer, which it asks for data once its buffer is
        empty (L{resumeProducing}).
        """
        transport = self.transport
        transport.pauseProducing()
        self._registering = True
        try:
            transport.registerProducer(self, False)
        finally:
            self._registering = False
        # Look at the buffer on the next turn even when it is empty.
        transport.startWriting()

    def resumeProducing(self) -> None:
        if self._registering or self.state is not _WAITING:
            return
        transport = self.transport
        transport.unregisterProducer()
        transport.stopReading()
        transport.stopWriting()
        self.state = _OWNED
        self.relay._owned(self)

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
        self.state = _RETURNED
        if self.finish == "reset":
            self.relay._resetWhenFlushed(self)
        elif self.shut:
            # The transport does not know its write side is shut: it would
            # try to write.  This is what its loseConnection does after its
            # own half-close.
            self.transport.connectionLost(Failure(ConnectionDone()))
        else:
            self.transport.loseConnection()

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
        if dst.state is _LOST or dst.state is _RETURNED:
            return
        dst.pending += data
        if dst.state is _OWNED:
            dst.startWriting()

    def readClosed(self) -> None:
        """
        This side's FIN came through its transport.
        """
        self.relay._eof(self)

    def lost(self, reason: Failure) -> None:
        """
        This side's connection is gone (its transport told its protocol).
        """
        self.relay._lost(self, reason)


class SpliceRelay:
    """
    A relay between two plain TCP connections with C{splice(2)}: see the
    module.

    @ivar stats: The tunnel's counters and times.
    @cvar kind: The relay's name for the access log.
    """

    kind = "splice"

    def __init__(
        self,
        client: tcp.Connection,
        upstream: tcp.Connection,
        clock: IReactorTime,
        onClosed: Callable[[Any], object],
        pool: PipePool = PIPES,
    ) -> None:
        """
        @param client: The client's transport, paused.
        @param upstream: The upstream's transport, connected.
        @param clock: Where the relay's times and its reset polling come
            from.
        @param onClosed: Called once, with the relay, when both sides are
            gone.
        @param pool: Where the pipes come from.
        """
        self._clock = clock
        self._onClosed = onClosed
        self.stats = TunnelStats(upstream.getPeer(), clock.seconds())
        self.client = _Side(self, "client", client, pool)
        self.upstream = _Side(self, "upstream", upstream, pool)
        self.client.peer = self.upstream
        self.upstream.peer = self.client
        self._closing = False
        # The reason of the first FIN: what ended the tunnel if the FINs do.
        self._finReason: str | None = None
        self._resets: list[ResetWhenFlushed] = []

    def start(self, earlyData: bytes = b"", clientFinished: bool = False) -> None:
        """
        Begin relaying: the early data is written upstream first, once the
        relay owns the upstream's socket.

        @param earlyData: Bytes the client sent after its request head.
        @param clientFinished: Whether the client already sent its FIN: it
            is passed on after the early data.
        """
        self.stats.openedAt = self._clock.seconds()
        if earlyData:
            self.stats.bytesUp += len(earlyData)
            self.upstream.pending = earlyData
        self.client.takeOver()
        self.upstream.takeOver()
        if clientFinished:
            self._eof(self.client)

    # What the sides report.

    def _owned(self, side: _Side) -> None:
        """
        The relay owns C{side}'s socket now.
        """
        if side.owes:
            side.startWriting()
        else:
            self._drained(side)

    def _drained(self, side: _Side) -> None:
        """
        C{side} is owed nothing now: close it if it is to be closed, pass a
        FIN on, and read again where that waited for it.
        """
        if side.finish is not None:
            side.handBack()
            return
        if side.fin and not side.shut:
            self._shutdown(side)
        for reader in (self.client, self.upstream):
            if not reader.reading and self._canRead(reader):
                reader.startReading()

    def _canRead(self, side: _Side) -> bool:
        dst = side.peer
        return (
            side.state is _OWNED
            and dst.state is _OWNED
            and not side.eof
            and not self._closing
            and not dst.pending
            and not dst.queued
        )

    def _shutdown(self, side: _Side) -> None:
        """
        Pass a FIN on to C{side}.
        """
        side.shut = True
        try:
            side.sock.shutdown(socket.SHUT_WR)
        except OSError:
            # Gone already: reading or writing it says how.
            pass

    def _eof(self, side: _Side) -> None:
        """
        C{side} sent its FIN: pass it on once the other side has what came
        before it, or close the tunnel at the second FIN.
        """
        if side.eof:
            return
        side.eof = True
        side.stopReading()
        if self._finReason is None:
            self._finReason = f"{side.name} closed"
        if self._closing:
            return
        receiver = side.peer
        if receiver.eof:
            self.close(self._finReason)
            return
        receiver.fin = True
        # From now on the (shorter) half-close deadline applies.
        self.stats.halfClosedAt = self._clock.seconds()
        if receiver.state is _OWNED and not receiver.owes:
            self._shutdown(receiver)

    def _broken(self, side: _Side, reason: Failure) -> None:
        """
        C{side}'s socket failed (or the reactor dropped it): end its
        transport now, with C{reason}, as Twisted does.
        """
        side.stopReading()
        side.stopWriting()
        side.release()
        side.transport.connectionLost(reason)

    def _lost(self, side: _Side, reason: Failure) -> None:
        """
        C{side}'s connection is gone: a clean close closes the other side
        gracefully, anything else (a reset, an abort) resets it.
        """
        # The transport unregistered the descriptor before closing it.
        side.reading = side.writing = False
        side.state = _LOST
        side.release()
        if reason.check(ConnectionDone):
            self.close(self._finReason or f"{side.name} closed")
        else:
            self.reset(f"{side.name} connection lost: {reason.getErrorMessage()}")
        if self.client.state is _LOST and self.upstream.state is _LOST:
            self._finished()

    # Closing.

    def close(self, reason: str) -> None:
        """
        Close both sides gracefully, each once it has what was relayed to
        it: the first stage of a close.  L{abort} is the second.

        @param reason: Recorded as the close reason unless one is already
            set.
        """
        self._beginClosing(reason)
        self._finish(self.client, "close")
        self._finish(self.upstream, "close")

    def reset(self, reason: str) -> None:
        """
        Close both sides so that each peer sees a reset, not a clean end of
        input, once it has what was relayed to it and has acknowledged
        every byte (see L{ResetWhenFlushed}).  Like a graceful close, the
        wait ends with L{abort}.

        @param reason: Recorded as the close reason unless one is already
            set.
        """
        self._beginClosing(reason)
        self._finish(self.client, "reset")
        self._finish(self.upstream, "reset")

    def abort(self) -> None:
        """
        Abort what is still open, at once: a close (or the flush before a
        reset) took too long.
        """
        for side in (self.client, self.upstream):
            if side.state is _LOST:
                continue
            side.stopReading()
            side.stopWriting()
            side.release()
            transport = side.transport
            if side.state is _WAITING and transport.producer is side:
                transport.unregisterProducer()
            transport.abortConnection()

    def _beginClosing(self, reason: str) -> None:
        stats = self.stats
        if stats.closeReason is None:
            stats.closeReason = reason
        if stats.closingAt is None:
            stats.closingAt = self._clock.seconds()
        self._closing = True

    def _finish(self, side: _Side, kind: str) -> None:
        """
        Close C{side} (C{kind}: C{"close"} or C{"reset"}) once it is owed
        nothing; a reset overrides a graceful close not yet done.
        """
        state = side.state
        if state is _LOST:
            return
        if state is _RETURNED:
            if kind == "reset" and side.finish != "reset":
                side.finish = "reset"
                self._resetWhenFlushed(side)
            return
        if side.finish != "reset":
            side.finish = kind
        side.stopReading()
        if state is _OWNED and not side.owes:
            side.handBack()
        # Otherwise when it is owned (a waiting side), or when it has
        # written what it is owed (it is writing).

    def _resetWhenFlushed(self, side: _Side) -> None:
        resetter = ResetWhenFlushed(
            cast("TunnelTransport", side.transport), self._clock
        )
        self._resets.append(resetter)
        resetter.start(flushed=side.shut)

    def _finished(self) -> None:
        if self.stats.closedAt is not None:
            return
        self.stats.closedAt = self._clock.seconds()
        for resetter in self._resets:
            resetter.stopProducing()
        self._onClosed(self)


def spliceRelay(
    client: _RelayEnd,
    upstream: _RelayEnd,
    clock: IReactorTime,
    settings: ProxySettings,
    onClosed: Callable[[_Relay], object],
    pool: PipePool = PIPES,
) -> SpliceRelay:
    """
    Build a L{SpliceRelay} for one tunnel and install its receivers on both
    ends: a L{_RelayFactory <connectproxy._relay._RelayFactory>} for two
    plain TCP connections (see L{spliceable
    <connectproxy._relaychoice.spliceable>}).

    @param client: The client's side; its transport is paused.
    @param upstream: The upstream's side, connected.
    @param clock: Where the relay's times come from.
    @param settings: Unused: the deadlines are kept by the sweeper.
    @param onClosed: Called once, with the relay, when both sides are gone.
    @param pool: Where the pipes come from.
    @return: The relay, not started.
    """
    relay = SpliceRelay(
        cast(tcp.Connection, client.transport),
        cast(tcp.Connection, upstream.transport),
        clock,
        onClosed,
        pool,
    )
    for end, side in ((client, relay.client), (upstream, relay.upstream)):
        end.installReceivers(side.received, side.readClosed, side.lost)
    return relay
