# -*- test-case-name: tests.test_refuser -*-
"""
L{Refuser}: how a client connection is answered with an error and closed,
for the front of every connection and for a connection refused before it is
served (over a connection limit, or from a source a listener refuses).

Closing is two-staged, as every close in the proxy: C{loseConnection()},
then C{abortConnection()} if the close takes longer than the abort timeout.
On plain TCP an error response lingers first: the proxy sends a FIN after
the response and reads (and throws away) what the client still sends for a
short while, so that the kernel does not answer those bytes with a reset
that could destroy the response before the client reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ._responses import errorResponse
from ._tunnel import TunnelTransport, canHalfClose

__all__ = ["LINGER_BYTES", "LINGER_SECONDS", "Refuser"]

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
