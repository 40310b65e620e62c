# -*- test-case-name: tests.test_front,tests.test_forward,tests.test_auth_proxy -*-
"""
The next request on the same client connection (L{_FrontRequests}, a part
of L{ConnectProxyProtocol <connectproxy._front.ConnectProxyProtocol>}):
after a 407 (the 407 loop, up to L{MAX_CHALLENGES} times), and after a
forwarded request's exchange (the forwarding handler's keep-alive hooks:
C{forward}, C{requestDone}, C{finish}, C{report}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ._errors import Refused
from ._frontends import _FrontEnd
from ._handler import Phase
from ._observer import ForwardedRequest
from ._responses import errorResponse

if TYPE_CHECKING:
    from ._head import EarlyData

__all__ = ["MAX_CHALLENGES", "_FrontRequests"]

#: How many 407 challenges one connection gets before it is closed.
MAX_CHALLENGES = 16


class _FrontRequests(_FrontEnd):
    """
    The front of a client connection between two requests: answer a 407
    and read the next head, or let a forwarding handler read the client and
    take the connection back for the next request.  A part of
    L{ConnectProxyProtocol <connectproxy._front.ConnectProxyProtocol>},
    which holds the state declared here.
    """

    _early: EarlyData
    _challenges: int
    _receive: Callable[[bytes], None]
    _forwardReadClosed: Callable[[], None] | None

    if TYPE_CHECKING:

        def _headReceived(self, data: bytes) -> None: ...

    def challenge(self, refused: Refused) -> None:
        """
        Answer with an error (a 407) and read the next request on the same
        connection, up to L{MAX_CHALLENGES} times.
        """
        self._challenges += 1
        if self._challenges > MAX_CHALLENGES or (
            self._clientFinished and not self._early
        ):
            # A client that has finished sending cannot retry.
            self.refuse(
                refused.status, refused.reason, refused.headers, refused.outcome
            )
            return
        self._cancelTimer()
        self._transport.write(
            errorResponse(
                refused.status, refused.reason, close=False, headers=refused.headers
            )
        )
        self._report(refused.status, refused.reason, refused.outcome)
        self.request = None
        self._enter(Phase.HEAD)
        self._head.next()
        self._early.resume()
        if self._early:
            self._headReceived(self._early.take())

    # The forwarding handler's (L{_Front <connectproxy._handler._Front>}).

    def forward(
        self,
        dataReceived: Callable[[bytes], None],
        readConnectionLost: Callable[[], None],
    ) -> tuple[bytes, bool]:
        """
        Let a forwarding handler read the client (L{Phase.FORWARDING}): stop
        the deadline, and pass it the client's bytes and FIN from now on.

        @return: The early data, and whether the client sent its FIN.
        """
        self._cancelTimer()
        self._enter(Phase.FORWARDING)
        self._receive = dataReceived
        self._forwardReadClosed = readConnectionLost
        self._early.resume()
        return self._early.take(), self._clientFinished

    def requestDone(self, leftover: bytes) -> None:
        """
        The forwarded request's exchange is over and the connection stays:
        read the next head (the client may send CONNECT too), starting with
        what it pipelined.  A connection whose client has finished sending
        and pipelined nothing is closed; while the proxy drains, so is
        every connection.
        """
        self._forwardReadClosed = None
        self._answered = True
        if self.factory.draining or (self._clientFinished and not leftover):
            self.finish()
            return
        self._finishing = [h for h in self._finishing if not h.done]
        handler = self._handler
        if handler is not None and not handler.done:
            self._finishing.append(handler)
        self._admission = None
        self.request = None
        self.user = None
        self._requestLine = None
        # A request went through: the 407s before it do not count against
        # the next one.
        self._challenges = 0
        self._enter(Phase.HEAD)
        self._head.next()
        if leftover:
            self._headReceived(leftover)

    def finish(self) -> None:
        """
        Close the connection gracefully, its exchange over.
        """
        self._forwardReadClosed = None
        if self.phase not in (Phase.CLOSING, Phase.CLOSED):
            self._refuser.close()

    def report(self, record: object) -> None:
        """
        Tell the observers of a forwarded request.
        """
        assert isinstance(record, ForwardedRequest)
        self.factory.requestForwarded(record)
