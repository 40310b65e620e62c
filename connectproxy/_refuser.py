# -*- test-case-name: tests.test_refuser -*-
"""
How client connections are refused: L{Refuser} answers one with an error
and closes it, for the front of every connection and for
L{RefusalProtocol}, the protocol of a connection refused before it is
served (over a connection limit, or from a source a listener refuses);
L{ShedProtocol} drops one far over the limit without a word.

Closing is two-staged, as every close in the proxy: C{loseConnection()},
then C{abortConnection()} if the close takes longer than the abort timeout.
On plain TCP an error response lingers first: the proxy sends a FIN after
the response and reads (and throws away) what the client still sends for a
short while, so that the kernel does not answer those bytes with a reset
that could destroy the response before the client reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, cast

from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IReactorTime,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from ._address import clientAddresses, formatAddress
from ._observer import ConnectionRecord, Outcome, RefusedRequest
from ._responses import errorResponse
from ._tunnel import TunnelTransport, canHalfClose

if TYPE_CHECKING:
    from ._factory import ConnectProxyFactory

__all__ = [
    "LINGER_BYTES",
    "LINGER_SECONDS",
    "RefusalProtocol",
    "Refuser",
    "ShedProtocol",
]

#: After an error response on plain TCP, how long (at most) and how many
#: bytes the proxy keeps reading and discarding before it closes.
LINGER_SECONDS = 2.0
LINGER_BYTES = 256 * 1024


class Refuser:
    """
    Answers one client connection with an error response and closes it.

    It writes, half-closes and closes its transport and keeps its own
    timers (the linger and the abort), but reports nothing: what was refused
    is its owner's to tell.

    @ivar refused: Whether L{refuse} was called.
    @ivar closing: Whether L{close} was called (directly, or when a linger
        ended).
    """

    refused = False
    closing = False

    def __init__(
        self,
        transport: TunnelTransport,
        clock: IReactorTime,
        abortTimeout: float,
        onClose: Callable[[], object] = lambda: None,
    ) -> None:
        """
        @param transport: The client's transport, connected.
        @param clock: Where the linger and abort timers come from.
        @param abortTimeout: Seconds a graceful close may take before the
            connection is aborted; a linger is no longer than this either.
        @param onClose: Called when the graceful close begins (so that the
            owner stops passing on what the client sends).
        """
        self._transport = transport
        self._clock = clock
        self._abortTimeout = abortTimeout
        self._onClose = onClose
        self._timer: IDelayedCall | None = None
        self._discarded = 0

    def refuse(
        self,
        status: int,
        reason: str,
        headers: Iterable[tuple[str, str]] = (),
        clientFinished: bool = False,
    ) -> None:
        """
        Write an error response with C{Connection: close}, then close: on
        plain TCP after a linger, unless the client has finished sending
        (its FIN came), elsewhere at once.

        @param status: The response's status.
        @param reason: The short reason, the response's body.
        @param headers: More header fields for the response.
        @param clientFinished: Whether the client has sent its FIN.
        """
        self.refused = True
        self._transport.write(errorResponse(status, reason, headers=headers))
        if canHalfClose(self._transport) and not clientFinished:
            self._transport.loseWriteConnection()  # type: ignore[attr-defined]
            self._timer = self._clock.callLater(
                min(LINGER_SECONDS, self._abortTimeout), self.close
            )
        else:
            self.close()

    def discard(self, data: bytes) -> None:
        """
        Throw away what a refused client still sends, up to L{LINGER_BYTES};
        close once it has sent more.
        """
        if self.closing:
            return
        self._discarded += len(data)
        if self._discarded > LINGER_BYTES:
            self.close()

    def close(self) -> None:
        """
        Close the connection gracefully (ending a linger), and abort it if
        that takes longer than the abort timeout.  Closing again does
        nothing.
        """
        if self.closing:
            return
        self.closing = True
        self._cancelTimer()
        self._onClose()
        self._transport.loseConnection()
        self._timer = self._clock.callLater(
            self._abortTimeout, self._transport.abortConnection
        )

    def stop(self) -> None:
        """
        The connection is gone: cancel the linger or abort timer.
        """
        self._cancelTimer()

    def _cancelTimer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None


class ShedProtocol(Protocol):
    """
    Drops a connection at once (far over the connection limit), with no
    response and no timer; the observers hear of it as a connection with a
    C{shed} refusal.
    """

    def __init__(
        self, factory: ConnectProxyFactory, addr: IAddress | None, reason: str
    ) -> None:
        self._factory = factory
        self._record = ConnectionRecord(formatAddress(addr))
        self._reason = reason
        self._openedAt = 0.0

    def connectionMade(self) -> None:
        factory = self._factory
        self._openedAt = factory.reactor.seconds()
        factory.connectionStarted(self._record)
        factory.requestRefused(
            RefusedRequest(
                self._record.client, "", "", 0, self._reason, outcome=Outcome.SHED
            )
        )
        cast(TunnelTransport, self.transport).abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        duration = self._factory.reactor.seconds() - self._openedAt
        self._factory.connectionEnded(ConnectionRecord(self._record.client, duration))


@implementer(IHalfCloseableProtocol)
class RefusalProtocol(Protocol):
    """
    Answers an error at once to a connection that is not served (a 503 over
    a limit, a 403 from a source a listener refuses), and closes it the way
    every refusal is closed (a L{Refuser}: lingering on plain TCP, so that
    the client reads the response rather than a reset); what the client
    sends is neither parsed nor answered.  It is not counted among the
    factory's connections, but among those it is refusing; the observers
    hear of it as a connection with one refused request.

    @ivar balancerAddress: The load balancer's address when the PROXY
        protocol reader asked for it for a client its header named, else
        C{None}.
    """

    balancerAddress: IAddress | None = None

    def __init__(
        self,
        factory: ConnectProxyFactory,
        addr: IAddress | None,
        status: int,
        reason: str,
    ) -> None:
        self._factory = factory
        self._addr = addr
        self._status = status
        self._reason = reason
        self._client = ""
        self._openedAt = 0.0

    def connectionMade(self) -> None:
        factory = self._factory
        transport = cast(TunnelTransport, self.transport)
        client, _ = clientAddresses(transport, self._addr, self.balancerAddress)
        self._client = formatAddress(client)
        self._openedAt = factory.reactor.seconds()
        factory.connectionStarted(ConnectionRecord(self._client))
        factory.refusing += 1
        self._refuser = Refuser(
            transport, factory.reactor, factory.settings.abortTimeout
        )
        self._refuser.refuse(self._status, self._reason)
        factory.requestRefused(
            RefusedRequest(self._client, "", "", self._status, self._reason)
        )

    def dataReceived(self, data: bytes) -> None:
        self._refuser.discard(data)

    def readConnectionLost(self) -> None:
        """
        The client's FIN ends the linger.
        """
        self._refuser.close()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        factory = self._factory
        self._refuser.stop()
        factory.refusing -= 1
        duration = factory.reactor.seconds() - self._openedAt
        factory.connectionEnded(ConnectionRecord(self._client, duration))
