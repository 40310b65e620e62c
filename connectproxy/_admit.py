# -*- test-case-name: tests.test_front -*-
"""
L{Admission}: one request head on its way from the front of a connection
to the handler of its method, through the access checks, under the connect
deadline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._connector import UpstreamRequest
from ._errors import Refused
from ._handler import Phase, _Handler, _HandlerFactory
from ._messages import hasBody
from ._observer import Outcome
from ._parser import RequestHead, keepsAlive
from ._responses import formatSeconds

if TYPE_CHECKING:
    from ._front import ConnectProxyProtocol

__all__ = ["Admission"]


class Admission:
    """
    Admits one request head and starts the handler of its method: the
    access checks (L{Gatekeeper.admit <connectproxy.Gatekeeper.admit>}) and
    then the handler's connect run under one deadline
    (C{--connect-timeout} over both together), which this keeps.

    The front makes one per head it dispatches, in L{Phase.ADMITTING}, and
    stays in charge of the connection: this moves it to
    L{Phase.CONNECTING} when the request is admitted, and otherwise refuses
    it through the front, or asks the front to challenge it (a 407 the
    client may answer on the same connection: the 407 loop).

    @ivar request: The request head.
    @ivar headAt: When the head was complete.
    @ivar timedOut: Whether the deadline passed.
    @ivar admittedAt: When the request was admitted.
    @ivar handler: The handler, once the request was admitted.
    """

    _log = Logger()

    __slots__ = (
        "_front",
        "_makeHandler",
        "_pending",
        "_timer",
        "admittedAt",
        "handler",
        "headAt",
        "request",
        "timedOut",
    )

    def __init__(
        self,
        front: ConnectProxyProtocol,
        request: RequestHead,
        headAt: float,
        makeHandler: _HandlerFactory,
    ) -> None:
        """
        @param front: The front of the client's connection.
        @param request: The request head, with a destination.
        @param headAt: When the head was complete.
        @param makeHandler: Makes the handler of its method.
        """
        self._front = front
        self.request = request
        self.headAt = headAt
        self._makeHandler = makeHandler
        self.timedOut = False
        self.admittedAt = 0.0
        self.handler: _Handler | None = None
        # The access checks, while they run.
        self._pending: Deferred[Any] | None = None
        self._timer: IDelayedCall | None = None

    def start(self) -> None:
        """
        Start the deadline and the access checks.
        """
        front = self._front
        self._timer = front.clock.callLater(
            front.settings.connectTimeout, self._deadline
        )
        gatekeeper = front.factory.gatekeeper
        if gatekeeper.immediate:
            # No authentication and no policies: nothing to wait for, so no
            # Deferred either.
            self._admitNow()
            return
        d = gatekeeper.admit(front.clientPeer, self.request)
        self._pending = d
        d.addCallbacks(self._admitted, self._notAdmitted).addErrback(
            front.requestFailed
        )

    def _admitNow(self) -> None:
        """
        Admit or refuse the request at once, as the Deferred of
        L{Gatekeeper.admit <connectproxy.Gatekeeper.admit>} would have.
        """
        front = self._front
        try:
            try:
                target = front.factory.gatekeeper.admitNow(
                    front.clientPeer, self.request
                )
            except Exception:
                self._notAdmitted(Failure())
            else:
                self._admitted(target)
        except Exception:
            front.requestFailed(Failure())

    def stop(self) -> None:
        """
        Stop the deadline: the request was handed over, refused or
        challenged, or the client is gone.
        """
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    @property
    def abandoned(self) -> str:
        """
        What the client leaving now is reported as.
        """
        if self.handler is None:
            return "the client went away while its access was checked"
        return self.handler.abandoned

    def cancel(self) -> None:
        """
        Cancel what is in flight, the access checks or the handler's work:
        the deadline passed, the client left, or the proxy closes the
        connection (the front's phase says which).
        """
        if self._pending is not None:
            self._pending.cancel()
        elif self.handler is not None:
            self.handler.cancel()

    def _deadline(self) -> None:
        self._timer = None
        self.timedOut = True
        self.cancel()

    def _admitted(self, target: UpstreamRequest) -> None:
        self._pending = None
        front = self._front
        self.admittedAt = front.clock.seconds()
        front.admitted(target)
        self.handler = self._makeHandler(front, self)
        self.handler.start(target)

    def _notAdmitted(self, failure: Failure) -> None:
        self._pending = None
        front = self._front
        if front.phase is not Phase.ADMITTING:
            # The client left, or the proxy is closing every connection.
            return
        if self.timedOut:
            front.refuse(
                503,
                "timed out checking access after "
                f"{formatSeconds(front.settings.connectTimeout)} "
                "(see --connect-timeout)",
                outcome=Outcome.TIMEOUT,
            )
            return
        if not failure.check(Refused):
            self._log.failure("access check failed", failure, event="admission_error")
            front.refuse(500, "access check failed")
            return
        refused = failure.value
        assert isinstance(refused, Refused)
        front.user = refused.user
        if (
            refused.keepAlive
            and keepsAlive(self.request)
            and not hasBody(self.request)
            and not front.factory.draining
        ):
            # A request with a body is not read to its end: the connection
            # cannot carry the next one.
            front.challenge(refused)
        else:
            front.refuse(
                refused.status, refused.reason, refused.headers, refused.outcome
            )
