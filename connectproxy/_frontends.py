# -*- test-case-name: tests.test_front,tests.test_shutdown,tests.test_observer -*-
"""
How the front of a client connection ends (L{_FrontEnd}, a part of
L{ConnectProxyProtocol <connectproxy._front.ConnectProxyProtocol>}):
refusals through a L{Refuser}, the reports of refused and abandoned
requests, the close on the factory's request (C{closeWith}, C{drainIdle}),
and the report of the connection's end once everything it opened is gone.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ._handler import Phase
from ._observer import ConnectionRecord, Outcome, RefusedRequest
from ._refuser import Refuser
from ._target import loggedTarget

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime
    from twisted.logger import Logger

    from ._admit import Admission
    from ._factory import ConnectProxyFactory
    from ._handler import _Handler
    from ._head import HeadReader
    from ._parser import RequestHead
    from ._settings import ProxySettings
    from ._tunnel import TunnelTransport

__all__ = ["SHUTTING_DOWN", "_FrontEnd"]

#: What a request gets while the proxy drains or closes every connection.
SHUTTING_DOWN = "the proxy is shutting down"

#: The phases in which a request waits for its admission or its handler.
_WAITING = (Phase.ADMITTING, Phase.CONNECTING)


class _FrontEnd:
    """
    The end of the front of a client connection: refuse, report, close.
    A part of L{ConnectProxyProtocol
    <connectproxy._front.ConnectProxyProtocol>}, which holds the state
    declared here.
    """

    _log: Logger
    factory: ConnectProxyFactory
    settings: ProxySettings
    clock: IReactorTime
    phase: Phase
    client: str
    request: RequestHead | None
    user: str | None
    _requestLine: tuple[str, str] | None
    _transport: TunnelTransport
    _head: HeadReader
    _admission: Admission | None
    _clientFinished: bool
    _answered: bool
    _finishing: list[_Handler]
    _openedAt: float
    _requests: int
    _ended: bool
    _refuserMade: Refuser | None

    if TYPE_CHECKING:

        @property
        def _handler(self) -> _Handler | None: ...

        def _enter(self, phase: Phase) -> None: ...

        def _cancelTimer(self) -> None: ...

    @property
    def _refuser(self) -> Refuser:
        """
        What refuses and closes the connection, made on first use.
        """
        refuser = self._refuserMade
        if refuser is None:
            refuser = self._refuserMade = Refuser(
                self._transport,
                self.clock,
                self.settings.abortTimeout,
                self._closeBegun,
            )
        return refuser

    def _abandoned(self, reason: str) -> None:
        self._log.info(
            "client {client} went away while connecting to {target}",
            event="connect_abandoned",
            client=self.client,
            target=self.request.authority if self.request else "",
        )
        self._report(0, reason, Outcome.ABANDONED)

    def _end(self) -> None:
        """
        Tell the observers the connection is gone once it is, and what it
        was handed to too (a tunnel ends after the client's connection, when
        the upstream's is gone as well; a forwarded request's upstream
        connection that its handler closes, when it is gone).
        """
        if self._ended or self.phase is not Phase.CLOSED:
            return
        if self._handler is not None and not self._handler.done:
            return
        if any(not handler.done for handler in self._finishing):
            return
        self._finishing = []
        self._ended = True
        self.factory.connectionEnded(
            ConnectionRecord(
                self.client, self.clock.seconds() - self._openedAt, self._requests
            )
        )

    def drainIdle(self) -> None:
        """
        The proxy drains: a kept-alive connection idle between requests
        (a request was answered, nothing of the next one came) is closed
        now, without a word (RFC 9112 section 9.6), rather than holding the
        shutdown for its grace.  Any other connection is left as it is.
        """
        if self.phase is Phase.HEAD and self._answered and not self._head.started:
            self._refuser.close()

    def closeWith(self, reason: str, message: str = SHUTTING_DOWN) -> None:
        """
        Close this connection now, whatever it is doing: a tunnel closes
        gracefully with C{reason} (aborted after the abort timeout, as every
        tunnel close), and a request not yet tunnelled (its head still being
        read, or being checked or connected) is answered with 503 and
        C{message}, its checks or connect cancelled.  A refused connection
        stops lingering; one already closing is left to close.

        @param reason: The tunnel's close reason, for the observers.
        @param message: The short reason sent with the 503.
        """
        phase = self.phase
        if phase is Phase.CLOSED or phase is Phase.CLOSING:
            return
        if phase is Phase.RELAYING or phase is Phase.FORWARDING:
            assert self._handler is not None
            self._handler.close(reason)
            return
        if phase is Phase.REFUSING:
            self._refuser.close()
            return
        self.refuse(503, message)
        if self._admission is not None and phase in _WAITING:
            self._admission.cancel()

    # Errors.

    def refuse(
        self,
        status: int,
        reason: str,
        headers: Iterable[tuple[str, str]] = (),
        outcome: str = "",
    ) -> None:
        """
        Answer with an error, report it (with C{outcome}, or the usual
        outcome of C{status}), and close the connection: on plain TCP after
        a linger (see L{Refuser}).  Once refusing or closing, do nothing.
        """
        if self.phase in (Phase.REFUSING, Phase.CLOSING, Phase.CLOSED):
            return
        self._enter(Phase.REFUSING)
        self._cancelTimer()
        self._refuser.refuse(status, reason, headers, self._clientFinished)
        self._report(status, reason, outcome)

    def _report(self, status: int, reason: str, outcome: str = "") -> None:
        request = self.request
        method, target = self._requestLine or ("", "")
        self.factory.requestRefused(
            RefusedRequest(
                client=self.client,
                method=request.method if request else method,
                target=loggedTarget(
                    request.target if request else target, self.settings.logQuery
                ),
                status=status,
                reason=reason,
                user=self.user,
                outcome=outcome,
            )
        )

    def _closeBegun(self) -> None:
        """
        The connection began to close: nothing more is read or timed.
        """
        self._cancelTimer()
        self._enter(Phase.CLOSING)
