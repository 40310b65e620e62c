# -*- test-case-name: tests.test_front -*-
"""
The method seam: what the front of a client connection
(L{ConnectProxyProtocol <connectproxy._front.ConnectProxyProtocol>}) and
the handler of each request method it serves need of each other, so that
another method's handler (plain absolute-form forwarding) can sit beside
CONNECT's (L{ConnectHandler <connectproxy._connect.ConnectHandler>}).

  - L{Phase}: where a client connection is; the front reads the client
    the way its phase says.
  - L{_Front}: what a handler may use of the front of its connection.
  - L{_Admitted}: what a handler may use of its request's admission (the
    per-request facts: the head, its times, the deadline).
  - L{_Handler}: what the front needs of the handler of one admitted
    request.
  - L{_HandlerFactory}: makes a handler for one request; the front keeps
    one per method it serves, and L{dispatch} chooses among them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from enum import Enum
from typing import TYPE_CHECKING, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from ._connector import UpstreamRequest
from ._errors import BadRequest, Refused
from ._messages import requestFraming
from ._observer import Outcome
from ._parser import RequestHead
from ._relay import _Relay, _RelayEnd
from ._settings import ProxySettings
from ._target import Target

if TYPE_CHECKING:
    from ._factory import ConnectProxyFactory

__all__ = [
    "Phase",
    "_Admitted",
    "_Front",
    "_Handler",
    "_HandlerFactory",
    "dispatch",
]


class Phase(Enum):
    """
    Where a client connection is.  Each phase reads the client its own way.
    """

    #: Connected, nothing received yet: the client's address is checked at
    #: its first bytes (behind a PROXY-protocol wrapper only then is it
    #: known).
    NEW = "new"
    #: Reading a request head, under the request deadline.
    HEAD = "head"
    #: The head is complete and the access checks run, under the connect
    #: deadline; what the client sends is kept as early data.
    ADMITTING = "admitting"
    #: Admitted: the method's handler connects upstream, under the same
    #: deadline; what the client sends is still kept.
    CONNECTING = "connecting"
    #: A forwarded request's exchange: its handler gets the client's bytes
    #: (the request's body, then what the client pipelined after it) until
    #: the response is complete.
    FORWARDING = "forwarding"
    #: Handed over to a relay, whose receivers get the client's bytes.
    RELAYING = "relaying"
    #: Answered with an error: lingering, what the client sends is thrown
    #: away.
    REFUSING = "refusing"
    #: Closing: what the client sends is ignored until the connection goes.
    CLOSING = "closing"
    #: The client's connection is gone.
    CLOSED = "closed"


class _Front(_RelayEnd, Protocol):
    """
    What the handler of a request may use of the front of its connection.
    The front is also the client's end of a relay (L{_RelayEnd}).
    """

    @property
    def factory(self) -> ConnectProxyFactory:
        """
        The factory: the connector, the relay factory, the deadlines and
        the observers.
        """

    @property
    def settings(self) -> ProxySettings:
        """
        The settings in force for this connection.
        """

    @property
    def clock(self) -> IReactorTime:
        """
        Where every time and timer comes from.
        """

    @property
    def phase(self) -> Phase:
        """
        Where the connection is: the handler's work counts only while it is
        L{Phase.CONNECTING}.
        """

    @property
    def client(self) -> str:
        """
        The client's address, formatted for logs and records.
        """

    def refuse(
        self,
        status: int,
        reason: str,
        headers: Iterable[tuple[str, str]] = (),
        outcome: str = "",
    ) -> None:
        """
        Answer with an error, report it and close the connection.
        """

    def requestFailed(self, failure: Failure) -> None:
        """
        Handling the request failed unexpectedly: log it, answer 500 unless
        the connection was handed over (then abort it).
        """

    def handOver(self, response: bytes) -> tuple[bytes, bool]:
        """
        End the front's part: write C{response} and stop the deadline.  The
        client is not paused: the caller hands it to a relay in the same
        call.

        @return: The early data (what the client sent after its head), and
            whether the client has sent its FIN.
        """

    def exchangeEnded(self) -> None:
        """
        What the handler handed the connection to is over (both sides of a
        tunnel are gone), or an upstream connection it closed is gone: the
        connection's end may be reported now, once every handler of the
        connection is L{done <_Handler.done>}.
        """

    def forward(
        self,
        dataReceived: Callable[[bytes], None],
        readConnectionLost: Callable[[], None],
    ) -> tuple[bytes, bool]:
        """
        Let the handler read the client from now on (L{Phase.FORWARDING}):
        stop the deadline, and give it the client's bytes and its FIN.

        @return: The early data (what the client sent after its head), and
            whether the client has sent its FIN.
        """

    def requestDone(self, leftover: bytes) -> None:
        """
        The forwarded request's exchange is over and the connection may
        carry another request: read the next head, starting with
        C{leftover} (what the client pipelined), under the request deadline.
        """

    def finish(self) -> None:
        """
        The forwarded request's exchange is over and the connection carries
        no more: close it gracefully (aborted after the abort timeout).
        """

    def report(self, record: object) -> None:
        """
        Report a forwarded request to the observers (a
        L{ForwardedRequest <connectproxy._observer.ForwardedRequest>}).
        """


class _Admitted(Protocol):
    """
    What a handler may use of the admission of its request.
    """

    @property
    def headAt(self) -> float:
        """
        When the request head was complete.
        """

    @property
    def admittedAt(self) -> float:
        """
        When the request was admitted.
        """

    @property
    def timedOut(self) -> bool:
        """
        Whether the connect deadline (over admission and connect together)
        passed: the handler's work was cancelled because of it.
        """


class _Handler(Protocol):
    """
    The handler of one admitted request, made by the L{_HandlerFactory} of
    its method.

    @ivar abandoned: What the client leaving while the handler works (in
        L{Phase.CONNECTING}) is reported as.
    @ivar tunnel: The relay the handler handed the connection to, once it
        did; C{None} before or if it never does.
    """

    abandoned: str
    tunnel: _Relay | None

    def start(self, target: UpstreamRequest) -> None:
        """
        Begin with the admitted request: the front is in
        L{Phase.CONNECTING}.

        @param target: What to connect to, for whom: the normalised target,
            the user, the client and the request head.
        """

    def cancel(self) -> None:
        """
        Stop what is in flight: the deadline passed, the client left, or
        the proxy closes the connection.  The front's phase says which.
        """

    def close(self, reason: str) -> None:
        """
        Close what the connection was handed to (gracefully).

        @param reason: The close reason, for the observers.
        """

    @property
    def done(self) -> bool:
        """
        Whether nothing the handler made is left (a tunnel's both sides are
        gone, or there never was one; no upstream connection it uses or
        closed is still open).  The connection's end (its
        L{ConnectionRecord <connectproxy._observer.ConnectionRecord>}, and
        the factory's C{whenIdle}) waits for it, for the handlers of
        earlier requests on a kept-alive connection too.
        """


#: Makes the handler of one admitted request, given the front of its
#: connection and the request's admission.
_HandlerFactory = Callable[[_Front, _Admitted], _Handler]


def dispatch(
    request: RequestHead, handlers: Mapping[str, _HandlerFactory]
) -> tuple[RequestHead, _HandlerFactory]:
    """
    Choose the handler of a request head's method.  A method other than
    CONNECT names its destination in the absolute form (RFC 9112 section
    3.2.2), parsed here.

    @param request: The request head.
    @param handlers: The handler of each method served.
    @return: The request head, with its destination, and its handler.
    @raise Refused: 405 with the methods served in C{Allow} (RFC 9110
        section 15.5.6) when no handler serves the method; 400 when its
        target is not an absolute C{http} URI, or its body's framing could
        smuggle a request (L{requestFraming
        <connectproxy._messages.requestFraming>}).
    """
    handler = handlers.get(request.method)
    if handler is None:
        allow = ", ".join(sorted(handlers))
        reason = (
            "this proxy only tunnels with CONNECT"
            if list(handlers) == ["CONNECT"]
            else f"this proxy does not serve {request.method}"
        )
        raise Refused(405, reason, [("Allow", allow)])
    if request.destination is None:
        try:
            destination = Target.fromAbsoluteForm(request.target)
            requestFraming(request)
        except BadRequest as e:
            raise Refused(e.status, e.reason, outcome=Outcome.BAD_REQUEST) from None
        request = replace(request, destination=destination)
    return request, handler
