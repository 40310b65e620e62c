# -*- test-case-name: tests.test_tunnel -*-
"""
L{TransportRelay}: relay bytes between a client and its upstream once the
CONNECT has succeeded, through the transports; and L{_UpstreamProtocol}, the
upstream half that a connector connects.

Flow control is the transports' own: each transport is registered (through
a L{ReadingOf}) as the other's streaming producer, so when one side's write
buffer fills, reading from the other side stops until it drains.  The relay
itself never buffers.  A chunk for a plain TCP connection with nothing
waiting to be sent goes to its socket at once (L{writerFor
<connectproxy._writethrough.writerFor>}), not one reactor iteration later.

Half-close is passed on only where the receiving transport really is a plain
TCP connection; anywhere else (TLS, wrappers) the relay closes fully after
flushing.  A side lost with an error (a reset) is passed on as an abort, so
the other peer sees a reset rather than a clean end of input: on plain TCP
only after everything already relayed has reached that peer.

The relay keeps no deadline: the idle and half-close deadlines and the
second stage of a close (abort after a graceful close took too long) are
kept for every tunnel by one L{DeadlineSweeper
<connectproxy._deadlines.DeadlineSweeper>}, which reads the relay's
L{TunnelStats}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

from twisted.internet import protocol, tcp
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IProducer,
    IPushProducer,
    IReactorTime,
)
from twisted.python.deprecate import deprecatedProperty
from twisted.python.failure import Failure
from zope.interface import implementer

from ._deprecation import DEPRECATED_IN
from ._relay import TunnelStats, _Relay, _RelayEnd
from ._resets import ResetWhenFlushed
from ._writethrough import loseConnectionNow, loseWriteConnectionNow, writerFor

if TYPE_CHECKING:
    from ._settings import ProxySettings

__all__ = [
    "ReadingOf",
    "TransportRelay",
    "TunnelTransport",
    "canHalfClose",
    "transportRelay",
]


class TunnelTransport(Protocol):
    """
    What the tunnel needs of each transport: a TCP-like transport that is
    both a consumer and a streaming producer.  C{loseWriteConnection} is
    called only when L{canHalfClose} says it is real.
    """

    def write(self, data: bytes) -> None: ...
    def loseConnection(self) -> None: ...
    def abortConnection(self) -> None: ...
    def getPeer(self) -> IAddress: ...
    def registerProducer(self, producer: IProducer, streaming: bool) -> None: ...
    def unregisterProducer(self) -> None: ...
    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...


def canHalfClose(transport: Any) -> bool:
    """
    Whether C{transport.loseWriteConnection} really sends a FIN while the
    connection stays readable.

    Only a plain TCP connection does: TLS and protocol wrappers either lack
    half-close or (TLS) pass it to the socket underneath without a
    close_notify, so interface checks are not proof.
    """
    return isinstance(transport, tcp.Connection)


@implementer(IPushProducer)
class ReadingOf:
    """
    The streaming producer a relay registers with one transport for the
    other: it pauses and resumes reading from C{transport} as the consumer's
    buffer fills and drains, and ignores C{stopProducing}.

    A transport that is lost stops its producer.  Were the producer the
    other transport itself, that would close it gracefully (at once, when
    its write side is already shut) before the relay hears of the loss, and
    a reset could no longer be passed on: the relay closes the survivor
    itself.

    @ivar transport: The transport read from.
    """

    __slots__ = ("transport",)

    def __init__(self, transport: TunnelTransport) -> None:
        self.transport = transport

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass


def _statsAlias(name: str, doc: str) -> Any:
    """
    A deprecated attribute of a relay that reads its L{TunnelStats}: a
    tunnel's counters and times used to be attributes of the tunnel.
    """

    def get(self: TransportRelay) -> object:
        return getattr(self.stats, name)

    get.__name__ = name
    get.__qualname__ = f"TransportRelay.{name}"
    get.__doc__ = doc
    return deprecatedProperty(DEPRECATED_IN, f"stats.{name}")(get)


class TransportRelay:
    """
    A relay between two connected transports, through Twisted's own reads
    and writes.

    Its receivers, L{clientData}, L{clientReadClosed} and
    L{clientConnectionLost} and their C{upstream*} counterparts, are
    installed on each side's protocol by L{transportRelay}, so they are
    called straight from the transports.  The relay keeps no deadline: it
    notes in L{stats} when one direction finished and when it began to
    close, and a L{DeadlineSweeper <connectproxy._deadlines.DeadlineSweeper>}
    decides when to L{close} or L{abort} it.

    @ivar stats: The tunnel's counters and times.
    """

    halfClose: Callable[[Any], bool] = staticmethod(canHalfClose)

    # The tunnel's counters and times were its own attributes (and
    # ConnectProxyProtocol.tunnel exposes the relay): they read the stats
    # record now, with a deprecation warning.
    bytesUp = _statsAlias("bytesUp", "Bytes relayed from the client upstream.")
    bytesDown = _statsAlias("bytesDown", "Bytes relayed from the upstream.")
    closeReason = _statsAlias("closeReason", "What ended the tunnel, or C{None}.")
    openedAt = _statsAlias("openedAt", "When the relay started.")
    closedAt = _statsAlias("closedAt", "When both sides were gone, or C{None}.")
    upstreamAddress = _statsAlias("upstreamAddress", "The upstream's address.")

    def __init__(
        self,
        client: TunnelTransport,
        upstream: TunnelTransport,
        clock: IReactorTime,
        onClosed: Callable[[Any], object],
    ) -> None:
        """
        @param client: The client's transport, paused.
        @param upstream: The upstream's transport, connected.
        @param clock: Where the relay's times and its reset polling come
            from.
        @param onClosed: Called once, with the relay, when both sides are
            gone.
        """
        self._client = client
        self._upstream = upstream
        self._clock = clock
        self._onClosed = onClosed
        # The per-chunk writers: straight to the socket where that is safe.
        self._writeUp = writerFor(upstream)
        self._writeDown = writerFor(client)
        self.stats = TunnelStats(upstream.getPeer(), clock.seconds())
        self._closing = False
        # The reason of the first FIN: what ended the tunnel if the FINs do.
        self._finReason: str | None = None
        self._clientEOF = False
        self._upstreamEOF = False
        self._clientLost = False
        self._upstreamLost = False
        # Whether each transport has the other registered as its producer.
        self._clientHasProducer = False
        self._upstreamHasProducer = False
        self._resets: list[tuple[TunnelTransport, ResetWhenFlushed | None]] = []

    def start(self, earlyData: bytes = b"", clientFinished: bool = False) -> None:
        """
        Begin relaying: write the client's early data upstream first, wire
        the producers, and resume reading from the client.

        @param earlyData: Bytes the client sent after its request head.
        @param clientFinished: Whether the client already half-closed (sent
            its FIN) before the tunnel existed: the FIN is passed on after
            the early data, just as L{clientReadClosed} would.
        """
        self.stats.openedAt = self._clock.seconds()
        if earlyData:
            self.stats.bytesUp += len(earlyData)
            self._upstream.write(earlyData)
        self._client.registerProducer(ReadingOf(self._upstream), True)
        self._clientHasProducer = True
        if clientFinished:
            # The client produces nothing more: it is neither registered
            # nor resumed (resuming a finished TCP reader reports its end
            # of input again).
            self.clientReadClosed()
            return
        self._upstream.registerProducer(ReadingOf(self._client), True)
        self._upstreamHasProducer = True
        self._client.resumeProducing()

    # The relay path: as little as possible per chunk.

    def clientData(self, data: bytes) -> None:
        """
        Relay bytes from the client to the upstream.
        """
        self.stats.bytesUp += len(data)
        self._writeUp(data)

    def upstreamData(self, data: bytes) -> None:
        """
        Relay bytes from the upstream to the client.
        """
        self.stats.bytesDown += len(data)
        self._writeDown(data)

    # Half-close.

    def clientReadClosed(self) -> None:
        """
        The client sent a FIN: pass it on, or close if it cannot be.
        """
        if self._clientEOF:
            return
        self._clientEOF = True
        if self._upstreamHasProducer:
            # The client produces nothing more.
            self._upstreamHasProducer = False
            self._upstream.unregisterProducer()
        self._passEOF("client closed", self._upstream, self._upstreamEOF)

    def upstreamReadClosed(self) -> None:
        """
        The upstream sent a FIN: pass it on, or close if it cannot be.
        """
        if self._upstreamEOF:
            return
        self._upstreamEOF = True
        if self._clientHasProducer:
            self._clientHasProducer = False
            self._client.unregisterProducer()
        self._passEOF("upstream closed", self._client, self._clientEOF)

    def _passEOF(
        self, reason: str, receiver: TunnelTransport, receiverDone: bool
    ) -> None:
        """
        Send a FIN to C{receiver} when it can take one and still has a
        direction open; otherwise close the whole tunnel.
        """
        if self._finReason is None:
            self._finReason = reason
        if self._closing:
            return
        if receiverDone or not self.halfClose(receiver):
            self.close(self._finReason)
            return
        loseWriteConnectionNow(receiver)
        # From now on the (shorter) half-close deadline applies, counted from
        # this FIN.  (A second FIN always closes the tunnel above.)
        self.stats.halfClosedAt = self._clock.seconds()

    # Closing.

    def clientConnectionLost(self, reason: Failure) -> None:
        """
        The client's connection is gone.
        """
        self._clientLost = True
        self._clientHasProducer = False
        self._lost("client", reason)

    def upstreamConnectionLost(self, reason: Failure) -> None:
        """
        The upstream's connection is gone.
        """
        self._upstreamLost = True
        self._upstreamHasProducer = False
        self._lost("upstream", reason)

    def _lost(self, side: str, reason: Failure) -> None:
        """
        One side is gone: a clean close closes the other side gracefully,
        anything else (a reset, an abort) resets it.
        """
        if reason.check(ConnectionDone):
            self.close(self._finReason or f"{side} closed")
        else:
            self.reset(f"{side} connection lost: {reason.getErrorMessage()}")
        if self._clientLost and self._upstreamLost:
            self._finished()

    def close(self, reason: str) -> None:
        """
        Close both sides gracefully (pending writes are flushed): the first
        stage of a close.  L{abort} is the second.

        @param reason: Recorded as the close reason unless one is already
            set.
        """
        self._beginClosing(reason)
        # Closed in this call when nothing waits to be written (plain TCP):
        # the lost side's report may come back here before it returns.
        if not self._clientLost:
            loseConnectionNow(self._client)
        if not self._upstreamLost:
            loseConnectionNow(self._upstream)

    def reset(self, reason: str) -> None:
        """
        Abort both sides so that each peer sees a reset, not a clean end of
        input.  On plain TCP what was already written is delivered first:
        the connection stops reading, flushes its buffer, waits until the
        peer has acknowledged every byte and then closes with a reset
        (C{SO_LINGER} 0).  Any other transport is aborted at once, dropping
        what it had not sent.  Like a graceful close, the wait ends with
        L{abort}.

        @param reason: Recorded as the close reason unless one is already
            set.
        """
        self._beginClosing(reason)
        for transport in (self._client, self._upstream):
            lost = self._clientLost if transport is self._client else self._upstreamLost
            if lost or any(t is transport for t, _ in self._resets):
                continue
            if self.halfClose(transport):
                resetter = ResetWhenFlushed(transport, self._clock)
                self._resets.append((transport, resetter))
                resetter.start()
            else:
                self._resets.append((transport, None))
                transport.abortConnection()

    def abort(self) -> None:
        """
        Abort what is still open, at once: a close (or the flush before a
        reset) took too long.
        """
        if not self._clientLost:
            self._client.abortConnection()
        if not self._upstreamLost:
            self._upstream.abortConnection()

    def _beginClosing(self, reason: str) -> None:
        """
        Note the reason and the time, and unregister the producers (before
        any close: a TLS transport does not finish closing while it has
        one).
        """
        stats = self.stats
        if stats.closeReason is None:
            stats.closeReason = reason
        if stats.closingAt is None:
            stats.closingAt = self._clock.seconds()
        self._closing = True
        if self._clientHasProducer:
            self._clientHasProducer = False
            self._client.unregisterProducer()
        if self._upstreamHasProducer:
            self._upstreamHasProducer = False
            self._upstream.unregisterProducer()

    def _finished(self) -> None:
        if self.stats.closedAt is not None:
            return
        self.stats.closedAt = self._clock.seconds()
        for _, resetter in self._resets:
            if resetter is not None:
                resetter.stopProducing()
        self._onClosed(self)


def transportRelay(
    client: _RelayEnd,
    upstream: _RelayEnd,
    clock: IReactorTime,
    settings: ProxySettings,
    onClosed: Callable[[_Relay], object],
) -> TransportRelay:
    """
    Build a L{TransportRelay} for one tunnel and install its receivers on
    both ends: a L{_RelayFactory} for any pair of transports (plain TCP,
    TLS, PROXY-protocol wrappers, UNIX sockets).

    @param client: The client's side (paused only by an early-data
        overflow; L{TransportRelay.start} resumes it).
    @param upstream: The upstream's side, connected.
    @param clock: Where the relay's times come from.
    @param settings: Unused: the transport relay has no tunables (its
        deadlines are kept by the sweeper).
    @param onClosed: Called once, with the relay, when both sides are gone.
    @return: The relay, not started.
    """
    relay = TransportRelay(
        cast(TunnelTransport, client.transport),
        cast(TunnelTransport, upstream.transport),
        clock,
        onClosed,
    )
    client.installReceivers(
        relay.clientData, relay.clientReadClosed, relay.clientConnectionLost
    )
    upstream.installReceivers(
        relay.upstreamData, relay.upstreamReadClosed, relay.upstreamConnectionLost
    )
    return relay


@implementer(IHalfCloseableProtocol)
class _UpstreamProtocol(protocol.Protocol):
    """
    The upstream half of a tunnel: the protocol a connector connects, which
    a relay takes over (L{installReceivers}) as soon as the connector
    reports the connection.

    Until then nothing can arrive, and a loss is the business of whoever
    asked for the connection.
    """

    _readClosed: Callable[[], None] | None = None
    _lost: Callable[[Failure], None] | None = None

    def installReceivers(
        self,
        dataReceived: Callable[[bytes], None],
        readConnectionLost: Callable[[], None],
        connectionLost: Callable[[Failure], None],
    ) -> None:
        """
        Hand the upstream's bytes, FIN and loss to a relay.  The data
        receiver replaces C{dataReceived} itself: a chunk from the upstream
        reaches the relay with no call in between.
        """
        self.dataReceived = dataReceived  # type: ignore[method-assign,assignment]
        self._readClosed = readConnectionLost
        self._lost = connectionLost

    def dataReceived(self, data: bytes) -> None:
        raise AssertionError("upstream data before the relay exists")

    def readConnectionLost(self) -> None:
        if self._readClosed is not None:
            self._readClosed()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self._lost is not None:
            self._lost(reason)
