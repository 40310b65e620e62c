# -*- test-case-name: tests.test_tunnel -*-
"""
L{ProxyTunnel}: relay bytes between a client and its upstream once the
CONNECT has succeeded.

Flow control is the transports' own: each transport is registered as the
other's streaming producer, so when one side's write buffer fills, reading
from the other side stops until it drains.  The tunnel itself never buffers.

Half-close is passed on only where the receiving transport really is a plain
TCP connection; anywhere else (TLS, wrappers) the tunnel closes fully after
flushing.  The idle deadline and the two-stage close (lose, then abort) use
the injected clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import tcp
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IPushProducer,
    IReactorTime,
)
from twisted.python.failure import Failure

__all__ = ["ProxyTunnel", "TunnelTransport", "canHalfClose"]


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
    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None: ...
    def unregisterProducer(self) -> None: ...
    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...


#: How many idle checks per idle period: the tunnel closes between the idle
#: timeout and 1 + 1/_IDLE_CHECKS times it after the last byte, and the
#: relay path does no timekeeping of its own.
_IDLE_CHECKS = 8


def canHalfClose(transport: Any) -> bool:
    """
    Whether C{transport.loseWriteConnection} really sends a FIN while the
    connection stays readable.

    Only a plain TCP connection does: TLS and protocol wrappers either lack
    half-close or (TLS) pass it to the socket underneath without a
    close_notify, so interface checks are not proof.
    """
    return isinstance(transport, tcp.Connection)


class ProxyTunnel:
    """
    A relay between two connected transports.

    The client side's protocol calls L{clientData}, L{clientReadClosed} and
    L{clientConnectionLost}; the upstream side's protocol calls the
    C{upstream*} counterparts.

    @ivar bytesUp: Bytes relayed from the client to the upstream, early data
        included.
    @ivar bytesDown: Bytes relayed from the upstream to the client.
    @ivar closeReason: What ended the tunnel first, or C{None} while open.
    @ivar openedAt: When L{start} ran, by the injected clock.
    @ivar closedAt: When both sides were gone, or C{None}.
    @ivar upstreamAddress: The upstream's address, as connected.
    """

    halfClose: Callable[[Any], bool] = staticmethod(canHalfClose)

    def __init__(
        self,
        client: TunnelTransport,
        upstream: TunnelTransport,
        clock: IReactorTime,
        idleTimeout: float,
        abortTimeout: float,
        onClosed: Callable[[ProxyTunnel], object],
    ) -> None:
        """
        @param client: The client's transport, paused.
        @param upstream: The upstream's transport, connected.
        @param clock: Where timers come from.
        @param idleTimeout: Seconds without traffic either way before the
            tunnel is closed.
        @param abortTimeout: Seconds a graceful close may take before the
            connections are aborted.
        @param onClosed: Called once, with the tunnel, when both sides are
            gone.
        """
        self._client = client
        self._upstream = upstream
        self.upstreamAddress = upstream.getPeer()
        self._clock = clock
        self._idleTimeout = idleTimeout
        self._abortTimeout = abortTimeout
        self._onClosed = onClosed
        self.bytesUp = 0
        self.bytesDown = 0
        self.closeReason: str | None = None
        self.openedAt = clock.seconds()
        self.closedAt: float | None = None
        self._seenBytes = 0
        self._lastActivity = self.openedAt
        self._idleCall: IDelayedCall | None = None
        self._abortCall: IDelayedCall | None = None
        self._clientEOF = False
        self._upstreamEOF = False
        self._clientLost = False
        self._upstreamLost = False
        # Whether each transport has the other registered as its producer.
        self._clientHasProducer = False
        self._upstreamHasProducer = False

    def start(self, earlyData: bytes = b"") -> None:
        """
        Begin relaying: write the client's early data upstream first, wire
        the producers, and resume reading from the client.

        @param earlyData: Bytes the client sent after its request head.
        """
        self.openedAt = self._lastActivity = self._clock.seconds()
        if earlyData:
            self.bytesUp += len(earlyData)
            self._upstream.write(earlyData)
        self._client.registerProducer(self._upstream, True)  # type: ignore[arg-type]
        self._clientHasProducer = True
        self._upstream.registerProducer(self._client, True)  # type: ignore[arg-type]
        self._upstreamHasProducer = True
        self._client.resumeProducing()
        self._scheduleIdleCheck(self._idleTimeout / _IDLE_CHECKS)

    # The relay path: as little as possible per chunk.

    def clientData(self, data: bytes) -> None:
        """
        Relay bytes from the client to the upstream.
        """
        self.bytesUp += len(data)
        self._upstream.write(data)

    def upstreamData(self, data: bytes) -> None:
        """
        Relay bytes from the upstream to the client.
        """
        self.bytesDown += len(data)
        self._client.write(data)

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
        if self.closeReason is None:
            self.closeReason = reason
        if receiverDone or not self.halfClose(receiver):
            self.close(reason)
        else:
            receiver.loseWriteConnection()  # type: ignore[attr-defined]

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
        if reason.check(ConnectionDone):
            self.close(f"{side} closed")
        else:
            self.close(f"{side} connection lost: {reason.getErrorMessage()}")
        if self._clientLost and self._upstreamLost:
            self._finished()

    def close(self, reason: str) -> None:
        """
        Close both sides gracefully (pending writes are flushed), then abort
        whatever is still open after the abort timeout.

        @param reason: Recorded as L{closeReason} unless one is already set.
        """
        if self.closeReason is None:
            self.closeReason = reason
        self._cancelIdle()
        if self._clientHasProducer:
            self._clientHasProducer = False
            self._client.unregisterProducer()
        if self._upstreamHasProducer:
            self._upstreamHasProducer = False
            self._upstream.unregisterProducer()
        if not self._clientLost:
            self._client.loseConnection()
        if not self._upstreamLost:
            self._upstream.loseConnection()
        if self._abortCall is None and not (self._clientLost and self._upstreamLost):
            self._abortCall = self._clock.callLater(self._abortTimeout, self._abort)

    def _abort(self) -> None:
        """
        The graceful close took too long: abort what is left.
        """
        self._abortCall = None
        if not self._clientLost:
            self._client.abortConnection()
        if not self._upstreamLost:
            self._upstream.abortConnection()

    def _finished(self) -> None:
        if self.closedAt is not None:
            return
        self.closedAt = self._clock.seconds()
        self._cancelIdle()
        if self._abortCall is not None:
            self._abortCall.cancel()
            self._abortCall = None
        self._onClosed(self)

    # The idle deadline.

    def _scheduleIdleCheck(self, delay: float) -> None:
        self._idleCall = self._clock.callLater(delay, self._checkIdle)

    def _checkIdle(self) -> None:
        """
        Close the tunnel if no byte moved for the idle timeout; otherwise
        check again later.
        """
        self._idleCall = None
        now = self._clock.seconds()
        total = self.bytesUp + self.bytesDown
        if total != self._seenBytes:
            self._seenBytes = total
            self._lastActivity = now
        remaining = self._lastActivity + self._idleTimeout - now
        if remaining <= 1e-9:
            self.close("idle timeout")
        else:
            self._scheduleIdleCheck(min(remaining, self._idleTimeout / _IDLE_CHECKS))

    def _cancelIdle(self) -> None:
        if self._idleCall is not None:
            self._idleCall.cancel()
            self._idleCall = None
