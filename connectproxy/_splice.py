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

  - L{SpliceRelay.start} stops both transports reading and takes each
    socket over once its transport has written what it holds: at once when
    it holds nothing (the C{200} usually went out as it was written), else
    it registers as the transport's pull producer and asks it to look at
    its buffer, and the transport asks for more data once the buffer is
    empty.
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

Pipes come from a L{PipePool <connectproxy._pipes.PipePool>}: a direction
holds one only while bytes wait in it for a slow reader, so an idle tunnel
holds no pipe, only its two sockets.  Each socket is held by a L{_Side
<connectproxy._spliceside._Side>}, which does the per-chunk work.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from twisted.internet import tcp
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from ._pipes import PIPES, PipePool
from ._relay import TunnelStats, _Relay, _RelayEnd
from ._resets import ResetWhenFlushed
from ._spliceside import LOST, OWNED, RETURNED, WAITING, _Side, adoptReading

if TYPE_CHECKING:
    from ._settings import ProxySettings
    from ._tunnel import TunnelTransport

__all__ = ["SpliceRelay", "spliceRelay"]


class SpliceRelay:
    """
    A relay between two plain TCP connections with C{splice(2)}: see the
    module.  Its sides report to it through its C{side*} methods.

    @ivar stats: The tunnel's counters and times.
    @ivar client: The client's side.
    @ivar upstream: The upstream's side.
    """

    __slots__ = (
        "_clock",
        "_closing",
        "_finReason",
        "_onClosed",
        "_resets",
        "client",
        "stats",
        "upstream",
    )

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
        self.stats = TunnelStats(upstream.getPeer(), clock.seconds(), relay="splice")
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
        if clientFinished:
            self.sideFinished(self.client)
        elif not earlyData and adoptReading((self.client, self.upstream)):
            # Both sockets are the relay's, both read: nothing else to do.
            return
        owned = [side for side in (self.client, self.upstream) if side.takeOver()]
        for side in owned:
            self.sideOwned(side)

    # What the sides report (called by them only).

    def sideOwned(self, side: _Side) -> None:
        """
        The relay owns C{side}'s socket now.
        """
        if side.owes:
            side.startWriting()
        else:
            self.sideDrained(side)

    def sideDrained(self, side: _Side) -> None:
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
            side.state is OWNED
            and dst.state is OWNED
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

    def sideFinished(self, side: _Side) -> None:
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
        if receiver.state is OWNED and not receiver.owes:
            self._shutdown(receiver)

    def sideBroken(self, side: _Side, reason: Failure) -> None:
        """
        C{side}'s socket failed (or the reactor dropped it): end its
        transport now, with C{reason}, as Twisted does.
        """
        side.stopReading()
        side.stopWriting()
        side.release()
        side.transport.connectionLost(reason)

    def sideLost(self, side: _Side, reason: Failure) -> None:
        """
        C{side}'s connection is gone: a clean close closes the other side
        gracefully, anything else (a reset, an abort) resets it.
        """
        # The transport unregistered the descriptor before closing it.
        side.reading = side.writing = False
        side.state = LOST
        side.release()
        if reason.check(ConnectionDone):
            self.close(self._finReason or f"{side.name} closed")
        else:
            self.reset(f"{side.name} connection lost: {reason.getErrorMessage()}")
        if self.client.state is LOST and self.upstream.state is LOST:
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
            if side.state is LOST:
                continue
            side.stopReading()
            side.stopWriting()
            side.release()
            transport = side.transport
            if side.state is WAITING and transport.producer is side:
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
        if state is LOST:
            return
        if state is RETURNED:
            if kind == "reset" and side.finish != "reset":
                side.finish = "reset"
                self.resetWhenFlushed(side)
            return
        if side.finish != "reset":
            side.finish = kind
        side.stopReading()
        if state is OWNED and not side.owes:
            side.handBack()
        # Otherwise when it is owned (a waiting side), or when it has
        # written what it is owed (it is writing).

    def resetWhenFlushed(self, side: _Side) -> None:
        """
        Pass a reset on to C{side}, whose transport has the socket back:
        once the peer has acknowledged every byte (at once, if the relay
        already shut the socket's write side), then C{SO_LINGER} 0.
        """
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

    @param client: The client's side (the relay pauses its transport
        when it takes the socket over).
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
