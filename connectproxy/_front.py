# -*- test-case-name: tests.test_front -*-
"""
The front of a client connection: L{ConnectProxyProtocol}.  It checks the
client, reads the request head (L{HeadReader}), chooses the handler of its
method (405 when there is none), admits the request (L{Admission}; a 407
may be answered and the next head read on the same connection: the 407
loop), and hands it to the handler (L{ConnectHandler
<connectproxy._connect.ConnectHandler>} for CONNECT, L{ForwardHandler
<connectproxy._forward.ForwardHandler>} for the methods forwarded as plain
HTTP, which reads the client itself while its exchange lasts and then
hands the connection back for the next request).  Refusals go through a
L{Refuser <connectproxy._refuser.Refuser>}.  Where the connection is is
one explicit L{Phase}, and each phase reads the client its own way.

The class is assembled from parts: this module has the head, the dispatch
and the admission hand-off, the hand-over and the client's FIN and loss;
L{_FrontRequests <connectproxy._frontrequests._FrontRequests>} the next
request on the same connection (the 407 loop, and the forwarding
handler's keep-alive hooks); L{_FrontEnd <connectproxy._frontends._FrontEnd>}
refusals, reports and the end of the connection.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, cast

from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IReactorTime,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._address import clientAddresses, formatAddress
from ._admit import Admission
from ._connect import ConnectHandler
from ._connector import UpstreamRequest
from ._errors import BadRequest, Refused
from ._forward import FORWARDED_METHODS, ForwardHandler
from ._frontends import _WAITING, SHUTTING_DOWN
from ._frontrequests import MAX_CHALLENGES, _FrontRequests
from ._handler import Phase, _Handler, _HandlerFactory, dispatch
from ._head import EarlyData, HeadReader
from ._observer import ConnectionRecord, Outcome
from ._parser import RequestHead, requestLineOf
from ._refuser import Refuser
from ._responses import formatSeconds
from ._tls import handshakePending, logHandshakeFailure, logHandshakeTimeout
from ._tunnel import TunnelTransport
from ._writethrough import writerFor

if TYPE_CHECKING:
    from ._factory import ConnectProxyFactory
    from ._relay import _Relay

__all__ = [
    "MAX_CHALLENGES",
    "SHUTTING_DOWN",
    "ConnectProxyProtocol",
    "Phase",
]


def _ignore(data: bytes) -> None:
    """
    Receive bytes on a closed connection: none come.
    """


@implementer(IHalfCloseableProtocol)
class ConnectProxyProtocol(_FrontRequests, Protocol):
    """
    The front of one client connection: read the request head, admit it,
    and hand it to the handler of its method.

    Bytes from the client go to the receiver of the connection's L{phase}.
    Once handed over, a relay takes the connection over: its receivers
    (L{installReceivers}) replace C{dataReceived} itself and get the FIN
    and the loss.  A FIN once the head is complete (C{printf ... | nc -N})
    is remembered and passed on after the early data when the tunnel
    exists, as a FIN during the tunnel is.

    What handlers use of it is described by L{_Front
    <connectproxy._handler._Front>} (C{settings}, C{clock}, C{client},
    C{refuse}, C{handOver}, ...).

    @cvar handlers: The handler of each method the proxy serves; any other
        method gets 405, with these in C{Allow}.  Not yet a stable
        extension point.
    @ivar phase: Where the connection is.
    @ivar request: The parsed request, once there is one.
    @ivar user: The authenticated user name, once known.
    @ivar clientPeer: The client's address, once it has sent something.
    @ivar clientAddress: The address the factory built this protocol for
        (C{buildProtocol}'s C{addr}): the client's, which behind
        connectproxy's PROXY-protocol listener a load balancer reported.
    @ivar balancerAddress: That load balancer's address
        (L{ConnectProxyFactory.buildProxiedProtocol}), else C{None}: the
        client is then judged by the rules for clients behind a balancer.
    """

    _log = Logger()

    handlers: Mapping[str, _HandlerFactory] = {
        "CONNECT": ConnectHandler,
        **dict.fromkeys(FORWARDED_METHODS, ForwardHandler),
    }

    factory: ConnectProxyFactory
    request: RequestHead | None = None
    user: str | None = None
    clientHost = ""
    clientAddress: object = None
    balancerAddress: IAddress | None = None
    # The method and target of a request refused before it was parsed,
    # for the report.
    _requestLine: tuple[str, str] | None = None

    def __init__(self, factory: ConnectProxyFactory) -> None:
        self.factory = factory
        self.settings = factory.settings
        self.clock: IReactorTime = factory.reactor
        self.phase = Phase.NEW
        self.client = ""
        self.clientPeer: IAddress | None = None
        self._receive: Callable[[bytes], None] = self._firstReceived
        self._head = HeadReader(
            self.clock,
            self.settings,
            self._headComplete,
            self._badHead,
            self._headTimedOut,
        )
        # The request being admitted or handled.
        self._admission: Admission | None = None
        self._challenges = 0
        # Whether the client half-closed (sent its FIN) before the tunnel.
        self._clientFinished = False
        # The relay's receivers of the client's FIN and loss, once it has
        # taken the connection over; the forwarding handler's receiver of
        # the FIN while it reads the client.
        self._relayReadClosed: Callable[[], None] | None = None
        self._forwardReadClosed: Callable[[], None] | None = None
        # Whether a forwarded request was answered on this connection: an
        # idle keep-alive connection is then closed quietly at the request
        # deadline.
        self._answered = False
        self._relayLost: Callable[[Failure], None] | None = None
        # The handlers of earlier requests on this connection that still
        # close what they opened (an upstream connection not pooled): the
        # connection's end waits for them too.
        self._finishing: list[_Handler] = []
        # For the observers: when the connection was made, how many request
        # heads it sent, and whether its end was reported (nothing to
        # report until it is made).
        self._openedAt = 0.0
        self._requests = 0
        self._ended = True
        # What answers with an error and closes, made when first needed
        # (most connections are never refused).
        self._refuserMade: Refuser | None = None

    @property
    def _handler(self) -> _Handler | None:
        return None if self._admission is None else self._admission.handler

    @property
    def tunnel(self) -> _Relay | None:
        """
        The relay the connection was handed to, once it was.
        """
        return None if self._handler is None else self._handler.tunnel

    def _enter(self, phase: Phase) -> None:
        """
        Move to C{phase}, and read the client the way it does (a relay
        installs its own receivers).
        """
        self.phase = phase
        if phase is Phase.HEAD:
            self._receive = self._headReceived
        elif phase is Phase.ADMITTING or phase is Phase.CONNECTING:
            self._receive = self._early.receive
        elif phase is Phase.CLOSED:
            # Nothing can come any more.
            self._receive = _ignore
        elif phase is not Phase.RELAYING and phase is not Phase.FORWARDING:
            # Refusing or closing: thrown away (a linger's bytes counted).
            self._receive = self._refuser.discard

    def connectionMade(self) -> None:
        self._transport = cast(TunnelTransport, self.transport)
        self._early = EarlyData(self._transport, self.settings.maxHeadSize)
        self.client = formatAddress(self._addresses()[0])
        self._openedAt = self.clock.seconds()
        self._ended = False
        self.factory.connectionStarted(ConnectionRecord(self.client))
        self._head.start()

    def dataReceived(self, data: bytes) -> None:
        self._receive(data)

    def installReceivers(
        self,
        dataReceived: Callable[[bytes], None],
        readConnectionLost: Callable[[], None],
        connectionLost: Callable[[Failure], None],
    ) -> None:
        """
        Hand the client's bytes, FIN and loss to a relay from now on (the
        C{Phase.RELAYING} phase; see L{_RelayEnd.installReceivers
        <connectproxy._relay._RelayEnd.installReceivers>}).  The data
        receiver replaces C{dataReceived} itself; the FIN and the loss still
        pass through here first.
        """
        self.phase = Phase.RELAYING
        self.dataReceived = dataReceived  # type: ignore[method-assign,assignment]
        # A wrapper that took this protocol's dataReceived earlier (the
        # PROXY-protocol reader) still calls the method: it reaches the
        # relay too.
        self._receive = dataReceived
        self._relayReadClosed = readConnectionLost
        self._relayLost = connectionLost

    # The request head.

    def _firstReceived(self, data: bytes) -> None:
        """
        Check the client's address once it has sent something (behind a
        PROXY-protocol listener, only then is the real address known).
        """
        self._enter(Phase.HEAD)
        # The peer may have changed since connectionMade (Twisted's PROXY
        # protocol wrapper).
        client, balancer = self._addresses()
        self.clientPeer = client
        self.client = formatAddress(client)
        refused = self.factory.gatekeeper.checkClient(client, balancer)
        if refused is not None:
            # Not parsed, but named in the log if the request line came.
            self._requestLine = requestLineOf(data, self.settings.maxRequestLine)
            self.refuse(refused.status, refused.reason, outcome=refused.outcome)
            return
        self._headReceived(data)

    def _addresses(self) -> tuple[IAddress, IAddress | None]:
        return clientAddresses(
            self._transport, self.clientAddress, self.balancerAddress
        )

    def _headReceived(self, data: bytes) -> None:
        if self._head.feed(data) and self._clientFinished and self.phase is Phase.HEAD:
            # The client sent its FIN after a request answered with a 407,
            # and what followed that is not a whole request: none can come.
            self._refuser.close()

    def _badHead(self, error: BadRequest) -> None:
        self._requestLine = (error.method, error.target)
        self.refuse(error.status, error.reason, outcome=Outcome.BAD_REQUEST)

    def _headTimedOut(self) -> None:
        timeout = formatSeconds(self.settings.requestTimeout)
        if self.phase is Phase.NEW and handshakePending(self._transport):
            # Nothing can be sent before the handshake: no 408, and nothing
            # to flush before closing.
            self._enter(Phase.CLOSING)
            logHandshakeTimeout(self.client, timeout)
            self._transport.abortConnection()
            return
        if self._answered and not self._head.started:
            # An idle keep-alive connection: closed without a word (RFC
            # 9112 section 9.6), nothing to report.
            self._refuser.close()
            return
        self._requestLine = self._head.requestLine()
        self.refuse(
            408,
            f"timed out waiting for the request head after {timeout} "
            "(see --request-timeout)",
        )

    def _headComplete(self, request: RequestHead, leftover: bytes) -> None:
        self._requests += 1
        headAt = self.clock.seconds()
        self.request = request
        self._early.keep(leftover)
        if self.factory.draining:
            self.refuse(503, SHUTTING_DOWN)
            return
        try:
            request, handler = dispatch(request, self.handlers)
        except Refused as e:
            self.refuse(e.status, e.reason, e.headers, e.outcome)
            return
        self.request = request
        self._enter(Phase.ADMITTING)
        self._admission = Admission(self, request, headAt, handler)
        self._admission.start()

    # Admission, under the connect deadline.

    def admitted(self, target: UpstreamRequest) -> None:
        """
        The request was admitted: its handler starts now.
        """
        self.user = target.user
        self._enter(Phase.CONNECTING)

    # What handlers use (L{_Front <connectproxy._handler._Front>}).

    def handOver(self, response: bytes) -> tuple[bytes, bool]:
        """
        Write C{response} (a CONNECT's C{200}) and stop the deadline.  The
        caller starts a relay in the same call, before the reactor reads
        anything more from the client: the client is not paused (only an
        early-data overflow has paused it), since pausing and resuming
        would cost two C{epoll_ctl} calls for nothing.

        @return: The early data, and whether the client sent its FIN.
        """
        # Sent at once when nothing waits (plain TCP), not one reactor
        # iteration later: the client waits for it to start talking.
        writerFor(self._transport)(response)
        self._cancelTimer()
        return self._early.take(), self._clientFinished

    def requestFailed(self, failure: Failure) -> None:
        """
        Handling the request failed unexpectedly (a bug, here or in a
        connector): log it with its traceback, and answer 500, or abort the
        connection if it was handed over already.
        """
        self._log.failure(
            "handling the request of {client} failed",
            failure,
            event="request_error",
            client=self.client,
        )
        if self.phase is Phase.RELAYING:
            self._transport.abortConnection()
            return
        self.refuse(500, "the proxy failed handling this request")

    def exchangeEnded(self) -> None:
        """
        What the connection was handed to is over.
        """
        self._end()

    # The end.

    def readConnectionLost(self) -> None:
        """
        The client sent a FIN (plain TCP only).  In the tunnel it is passed
        on.  While the request is checked and connected it is remembered and
        passed on after the early data once the tunnel exists: the client
        may still read.  Before a complete head no request can follow, so
        the connection is closed; after an error response the FIN ends the
        linger.
        """
        if self._relayReadClosed is not None:
            self._relayReadClosed()
            return
        self._clientFinished = True
        if self._forwardReadClosed is not None:
            self._forwardReadClosed()
            return
        if self.phase in (Phase.NEW, Phase.HEAD, Phase.REFUSING):
            self._refuser.close()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        previous = self.phase
        self._enter(Phase.CLOSED)
        if previous is Phase.NEW:
            # Nothing came through: on a TLS listener the handshake may
            # have failed.
            logHandshakeFailure(self.client, reason)
        self._cancelTimer()
        if self._refuserMade is not None:
            self._refuserMade.stop()
        admission = self._admission
        if admission is not None and previous in _WAITING:
            self._abandoned(admission.abandoned)
            admission.cancel()
        elif admission is not None and previous is Phase.FORWARDING:
            # The handler sees the phase: the client is gone.
            admission.cancel()
        if self._relayLost is not None:
            self._relayLost(reason)
        self.factory.connectionClosed(self)
        self._end()

    def _cancelTimer(self) -> None:
        self._head.stop()
        if self._admission is not None:
            self._admission.stop()
