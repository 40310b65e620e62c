# -*- test-case-name: tests.test_server -*-
"""
The proxy's server side: one L{ConnectProxyProtocol} per client connection,
built by a L{ConnectProxyFactory}.

The protocol reads the request head (with a deadline), answers errors, makes
the upstream connection (with one total deadline), answers C{200} and hands
the connection to a relay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import (
    ConnectError,
    ConnectingCancelledError,
    ConnectionRefusedError,
    DNSLookupError,
)
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IProtocol,
    IReactorTime,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._address import formatAddress
from ._connector import UpstreamRequest
from ._errors import (
    BadRequest,
    ForbiddenDestination,
    LookupAbandoned,
    ParentProxyError,
    Refused,
    ResolverBusy,
)
from ._eyeballs import LocalConnectError
from ._observer import (
    ConnectionRecord,
    Outcome,
    RefusedRequest,
    TunnelRecord,
)
from ._parser import ConnectRequest, ConnectRequestParser, requestLineOf
from ._relay import _Relay
from ._responses import CONNECTION_ESTABLISHED, errorResponse, formatSeconds
from ._tls import handshakePending, logHandshakeFailure, logHandshakeTimeout
from ._tunnel import TunnelTransport, _UpstreamProtocol, canHalfClose

if TYPE_CHECKING:
    from ._factory import ConnectProxyFactory

__all__ = ["ConnectProxyProtocol"]

#: After an error response on plain TCP, how long (at most) and how many
#: bytes the proxy keeps reading and discarding before it closes.
LINGER_SECONDS = 2.0
LINGER_BYTES = 256 * 1024

#: How many 407 challenges one connection gets before it is closed.
MAX_CHALLENGES = 16

#: What a request gets while the proxy drains or closes every connection.
SHUTTING_DOWN = "the proxy is shutting down"


def _connectErrorStatus(
    failure: Failure, timedOut: bool, connectTimeout: float
) -> tuple[int, str, str]:
    """
    The status, reason and outcome (C{""}: the usual one for the status)
    for a failed upstream connect.

    @param failure: Why the connector failed.
    @param timedOut: Whether the connect deadline passed (the failure is
        then the cancellation that caused).
    @param connectTimeout: The connect deadline, in seconds, for the reason.
    """
    deadline = f"after {formatSeconds(connectTimeout)} (see --connect-timeout)"
    if failure.check(ResolverBusy):
        assert isinstance(failure.value, ResolverBusy)
        return 503, failure.value.reason, ""
    if failure.check(LookupAbandoned):
        return 504, f"timed out resolving the target host {deadline}", ""
    if timedOut or failure.check(ConnectingCancelledError):
        return 504, f"timed out connecting to the target {deadline}", ""
    if failure.check(ForbiddenDestination):
        assert isinstance(failure.value, ForbiddenDestination)
        return 403, failure.value.reason, ""
    if failure.check(LocalConnectError):
        assert isinstance(failure.value, LocalConnectError)
        return failure.value.status, failure.value.reason, ""
    if failure.check(ParentProxyError):
        assert isinstance(failure.value, ParentProxyError)
        outcome = (
            Outcome.DENIED if failure.value.status == 403 else Outcome.UPSTREAM_FAILED
        )
        return failure.value.status, failure.value.reason, outcome
    if failure.check(DNSLookupError):
        return 502, "could not resolve the target host", ""
    if failure.check(ConnectionRefusedError):
        return 502, "the target refused the connection", ""
    if failure.check(ConnectError):
        return 502, "could not connect to the target", ""
    # Not a way a connect fails: a bug in the connector.
    return 502, "could not connect to the target", Outcome.ERROR


def _expectedConnectFailure(failure: Failure, timedOut: bool) -> bool:
    """
    Whether a failed upstream connect is one of the ways a connect fails
    (logged in one line), rather than a bug (logged with its traceback).
    """
    return timedOut or bool(
        failure.check(
            ConnectError,
            DNSLookupError,
            ForbiddenDestination,
            ConnectingCancelledError,
            ParentProxyError,
        )
    )


@implementer(IHalfCloseableProtocol)
class ConnectProxyProtocol(Protocol):
    """
    One client connection: read the CONNECT, connect upstream, relay.

    Incoming bytes go to C{_receive}, which is swapped as the connection
    moves through its phases: head parsing, buffering early data while
    connecting, and discarding after an error.  In the tunnel the relay
    takes the connection over: its receivers (L{installReceivers}) replace
    C{dataReceived} itself and get the FIN and the loss.

    A FIN from the client once its head is complete (C{printf ... | nc -N}
    sends the head, a body and the FIN at once) is remembered and passed on
    after the early data when the tunnel exists, exactly as a FIN during the
    tunnel is.

    @ivar request: The parsed request, once there is one.
    @ivar tunnel: The tunnel's relay, once established.
    @ivar clientAddress: The address the factory built this protocol for
        (C{buildProtocol}'s C{addr}), when known: the client's.  Behind
        connectproxy's PROXY-protocol listener it is the address the load
        balancer reported, while the transport's peer is the balancer.
    @ivar balancerAddress: The load balancer's address when the PROXY
        protocol reader built this protocol for a client its header named
        (L{ConnectProxyFactory.buildProxiedProtocol}), else C{None}.  Such a
        client is judged by the rules for clients behind a balancer
        (C{--allow-client} only), whatever address it claims, the
        balancer's own included.
    """

    _log = Logger()

    factory: ConnectProxyFactory
    request: ConnectRequest | None = None
    tunnel: _Relay | None = None
    user: str | None = None
    clientHost = ""
    clientAddress: object = None
    balancerAddress: IAddress | None = None
    # The method and target of a request refused before it was parsed,
    # for the report.
    _requestLine: tuple[str, str] | None = None

    def __init__(self, factory: ConnectProxyFactory) -> None:
        self.factory = factory
        self._settings = factory.settings
        self._clock: IReactorTime = factory.reactor
        self._parser = self._newParser()
        self._receive: Callable[[bytes], None] = self._firstReceived
        self._early = bytearray()
        self._client = ""
        self._clientPeer: IAddress | None = None
        self._timer: IDelayedCall | None = None
        self._pending: Deferred[Any] | None = None
        self._upstream: _UpstreamProtocol | None = None
        self._timedOut = False
        self._paused = False
        self._parsing = False
        self._nextHead: bytes | None = None
        self._challenges = 0
        self._discarded = 0
        self._closing = False
        self._gone = False
        # Whether the client half-closed (sent its FIN) before the tunnel.
        self._clientFinished = False
        # The relay's receivers of the client's FIN and loss, once it has
        # taken the connection over.
        self._relayReadClosed: Callable[[], None] | None = None
        self._relayLost: Callable[[Failure], None] | None = None
        # For the observers: when the connection was made, how many request
        # heads it sent, when the last one was complete, admitted and
        # connected; and whether its end was reported (nothing to report
        # until it is made).
        self._openedAt = 0.0
        self._requests = 0
        self._headAt = 0.0
        self._admittedAt = 0.0
        self._connectedAt = 0.0
        self._ended = True

    def _addresses(self) -> tuple[IAddress, IAddress | None]:
        """
        The client's address, and the load balancer's when the client came
        through one (C{None} otherwise).
        """
        peer = self._transport.getPeer()
        balancer = self.balancerAddress
        if balancer is not None:
            # Built by the PROXY-protocol reader for the client it reported.
            client = self.clientAddress
            if isinstance(client, IPv4Address | IPv6Address):
                return client, balancer
            return peer, balancer
        wrapped = _wrapperBalancer(self._transport)
        if wrapped is not None:
            # Twisted's haproxy: wrapper (in embedding code) reports the
            # client as the peer once its header named one.
            return peer, wrapped
        return peer, None

    def _newParser(self) -> ConnectRequestParser:
        settings = self._settings
        return ConnectRequestParser(
            settings.maxRequestLine, settings.maxHeadSize, settings.maxHeaderFields
        )

    def connectionMade(self) -> None:
        self._transport = cast(TunnelTransport, self.transport)
        self._client = formatAddress(self._addresses()[0])
        self._openedAt = self._clock.seconds()
        self._ended = False
        self.factory.connectionStarted(ConnectionRecord(self._client))
        self._armRequestTimer()

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
        tunnel phase).

        The data receiver replaces C{dataReceived} itself, so a chunk from
        the client reaches the relay with no call of this protocol's in
        between; the FIN and the loss still pass through here first.

        @param dataReceived: Takes each chunk from the client.
        @param readConnectionLost: Told of the client's FIN.
        @param connectionLost: Told of the loss of the client's connection,
            with its reason.
        """
        self.dataReceived = dataReceived  # type: ignore[method-assign,assignment]
        # A wrapper that took this protocol's dataReceived earlier (the
        # PROXY-protocol reader) still calls the method: it reaches the
        # relay too.
        self._receive = dataReceived
        self._relayReadClosed = readConnectionLost
        self._relayLost = connectionLost

    # Phase 1: the request head.

    def _armRequestTimer(self) -> None:
        self._timer = self._clock.callLater(
            self._settings.requestTimeout, self._requestTimedOut
        )

    def _firstReceived(self, data: bytes) -> None:
        """
        Check the client's address once it has sent something (behind a
        PROXY-protocol listener, only then is the real address known).
        """
        self._receive = self._headReceived
        # The peer may have changed since connectionMade (Twisted's PROXY
        # protocol wrapper).
        client, balancer = self._addresses()
        self._clientPeer = client
        self._client = formatAddress(client)
        refused = self.factory.gatekeeper.checkClient(client, balancer)
        if refused is not None:
            # Not parsed, but named in the log if the request line came.
            self._requestLine = requestLineOf(data, self._settings.maxRequestLine)
            self._refuse(refused.status, refused.reason, outcome=refused.outcome)
            return
        self._headReceived(data)

    def _headReceived(self, data: bytes) -> None:
        """
        Parse bytes of a request head.  A request answered at once with a
        407 (the connection stays open) hands the bytes after it back here;
        they are parsed in this loop rather than recursively, so a client
        that pipelines many requests cannot exhaust the stack.
        """
        self._nextHead = data
        if self._parsing:
            return
        self._parsing = True
        try:
            while self._nextHead is not None:
                data, self._nextHead = self._nextHead, None
                self._parseHead(data)
        finally:
            self._parsing = False
        if self._clientFinished and self._receive == self._headReceived:
            # The client sent its FIN after a request answered with a 407,
            # and what followed that is not a whole request: none can come.
            self._close()

    def _parseHead(self, data: bytes) -> None:
        try:
            result = self._parser.feed(data)
        except BadRequest as e:
            self._requestLine = (e.method, e.target)
            self._refuse(e.status, e.reason, outcome=Outcome.BAD_REQUEST)
            return
        if result is None:
            return
        request, leftover = result
        self._cancelTimer()
        self._requests += 1
        self._headAt = self._clock.seconds()
        self.request = request
        self._early += leftover
        self._receive = self._earlyReceived
        if self.factory.draining:
            self._refuse(503, SHUTTING_DOWN)
            return
        if request.method != "CONNECT":
            self._refuse(
                405, "this proxy only tunnels with CONNECT", [("Allow", "CONNECT")]
            )
            return
        self._admit(request)

    def _requestTimedOut(self) -> None:
        self._timer = None
        if self._receive == self._firstReceived and handshakePending(self._transport):
            # Nothing can be sent before the handshake: no 408, and nothing
            # to flush before closing.
            self._receive = _discard
            logHandshakeTimeout(
                self._client, formatSeconds(self._settings.requestTimeout)
            )
            self._transport.abortConnection()
            return
        self._requestLine = self._parser.requestLine()
        self._refuse(
            408,
            "timed out waiting for the request head after "
            f"{formatSeconds(self._settings.requestTimeout)} (see --request-timeout)",
        )

    # Phase 2: admission and connecting upstream, under one deadline.

    def _earlyReceived(self, data: bytes) -> None:
        """
        Keep bytes that arrive while the request is checked and connected.

        The client is still read from, so that a client that leaves is
        noticed and its connect cancelled; once it has sent more than the
        head size limit it is paused until the tunnel exists.
        """
        self._early += data
        if len(self._early) > self._settings.maxHeadSize and not self._paused:
            self._paused = True
            self._transport.pauseProducing()

    def _admit(self, request: ConnectRequest) -> None:
        self._timer = self._clock.callLater(
            self._settings.connectTimeout, self._deadline
        )
        d = self.factory.gatekeeper.admit(self._clientPeer, request)
        self._pending = d
        d.addCallbacks(self._admitted, self._notAdmitted).addErrback(
            self._requestFailed
        )

    def _admitted(self, target: UpstreamRequest) -> None:
        self._pending = None
        self._admittedAt = self._clock.seconds()
        self.user = target.user
        self._upstream = _UpstreamProtocol()
        d = maybeDeferred(
            self.factory.connector.connectUpstream, target, self._upstream
        )
        self._pending = d
        d.addCallbacks(self._upstreamConnected, self._upstreamFailed).addErrback(
            self._requestFailed
        )

    def _notAdmitted(self, failure: Failure) -> None:
        self._pending = None
        if self._gone or self._closing:
            # The client left, or the proxy is closing every connection.
            return
        if self._timedOut:
            self._refuse(
                503,
                "timed out checking access after "
                f"{formatSeconds(self._settings.connectTimeout)} "
                "(see --connect-timeout)",
                outcome=Outcome.TIMEOUT,
            )
            return
        if not failure.check(Refused):
            self._log.failure("access check failed", failure, event="admission_error")
            self._refuse(500, "access check failed")
            return
        refused = failure.value
        assert isinstance(refused, Refused)
        self.user = refused.user
        if (
            refused.keepAlive
            and _keepsAlive(self.request)
            and not self.factory.draining
        ):
            self._challenge(refused)
        else:
            self._refuse(
                refused.status, refused.reason, refused.headers, refused.outcome
            )

    def _challenge(self, refused: Refused) -> None:
        """
        Answer with an error (a 407) and read the next request on the same
        connection, up to L{MAX_CHALLENGES} times.
        """
        self._challenges += 1
        if self._challenges > MAX_CHALLENGES or (
            self._clientFinished and not self._early
        ):
            # A client that has finished sending cannot retry.
            self._refuse(
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
        self._parser = self._newParser()
        self._receive = self._headReceived
        self._armRequestTimer()
        if self._paused:
            self._paused = False
            self._transport.resumeProducing()
        if self._early:
            early = bytes(self._early)
            del self._early[:]
            self._headReceived(early)

    def _deadline(self) -> None:
        self._timer = None
        self._timedOut = True
        if self._pending is not None:
            self._pending.cancel()

    def _upstreamFailed(self, failure: Failure) -> None:
        self._pending = None
        if self._gone or self._closing:
            # The client left, or the proxy is closing every connection.
            return
        self._cancelTimer()
        status, reason, outcome = _connectErrorStatus(
            failure, self._timedOut, self._settings.connectTimeout
        )
        target = self.request.authority if self.request else ""
        if not _expectedConnectFailure(failure, self._timedOut):
            self._log.failure(
                "upstream connector failed connecting {client} to {target}",
                failure,
                event="connector_error",
                client=self._client,
                target=target,
            )
        elif status == 502 or failure.check(ParentProxyError):
            self._log.info(
                "connect to {target} failed: {error}",
                event="connect_failed",
                client=self._client,
                target=target,
                error=failure.getErrorMessage(),
            )
        self._refuse(status, reason, outcome=outcome)

    def _requestFailed(self, failure: Failure) -> None:
        """
        Handling the request failed unexpectedly (a bug, here or in a
        connector that broke its contract): log it with its traceback,
        answer 500 unless the 200 was sent already, and leave no connection
        behind.
        """
        self._pending = None
        self._log.failure(
            "handling the request of {client} failed",
            failure,
            event="request_error",
            client=self._client,
        )
        if self.tunnel is not None:
            self._transport.abortConnection()
            return
        upstream = self._upstream.transport if self._upstream is not None else None
        if upstream is not None:
            cast(TunnelTransport, upstream).abortConnection()
        self._refuse(500, "the proxy failed handling this request")

    def _upstreamConnected(self, upstream: IProtocol) -> None:
        self._pending = None
        self._connectedAt = self._clock.seconds()
        self._cancelTimer()
        assert isinstance(upstream, _UpstreamProtocol)
        request = self.request
        assert request is not None
        self._transport.write(CONNECTION_ESTABLISHED)
        early = bytes(self._early)
        del self._early[:]
        if not self._paused and not self._clientFinished:
            # The relay resumes the client once it is ready for its bytes.
            self._transport.pauseProducing()
        # The relay installs its receivers here and on the upstream
        # protocol: from now on the client's bytes go straight to it.
        tunnel = self.factory.relayFactory(
            self, upstream, self._clock, self._settings, self._tunnelClosed
        )
        self.tunnel = tunnel
        self.factory.relays.add(tunnel)
        # The factory's sweeper keeps the tunnel's deadlines, from the
        # settings in force now (a reload does not change them).
        self.factory.deadlines.watch(tunnel, self._settings)
        tunnel.start(early, self._clientFinished)
        self.factory.tunnelOpened(self._tunnelRecord(tunnel))

    # Phase 3: the tunnel.

    def readConnectionLost(self) -> None:
        """
        The client sent a FIN (plain TCP only).

        In the tunnel it is passed on.  After a complete head, while the
        request is checked and connected, it is remembered and passed on
        once the tunnel exists, after the early data: the client may still
        read (a client that closed fully is noticed when the proxy writes to
        it).  Before a complete head no request can follow, so the
        connection is closed; after an error response the FIN ends the
        linger.
        """
        if self._relayReadClosed is not None:
            self._relayReadClosed()
            return
        self._clientFinished = True
        if self._receive != self._earlyReceived and self._receive is not _discard:
            self._close()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._gone = True
        if self._receive == self._firstReceived:
            # Nothing came through: on a TLS listener the handshake may
            # have failed.
            logHandshakeFailure(self._client, reason)
        self._cancelTimer()
        if self._pending is not None:
            self._log.info(
                "client {client} went away while connecting to {target}",
                event="connect_abandoned",
                client=self._client,
                target=self.request.authority if self.request else "",
            )
            self._report(
                0,
                "the client went away while its access was checked"
                if self._upstream is None
                else "the client went away while the target was connected",
                Outcome.ABANDONED,
            )
            self._pending.cancel()
        if self._relayLost is not None:
            self._relayLost(reason)
        self.factory.connectionClosed(self)
        self._end()

    def _tunnelClosed(self, tunnel: _Relay) -> None:
        self.factory.deadlines.forget(tunnel)
        self.factory.relays.discard(tunnel)
        self.factory.tunnelClosed(self._tunnelRecord(tunnel))
        self._end()

    def _end(self) -> None:
        """
        Tell the observers the connection is gone once it is, and its
        tunnel too if it had one (that ends after the client's connection,
        when the upstream's is gone as well).
        """
        if self._ended or not self._gone:
            return
        tunnel = self.tunnel
        if tunnel is not None and tunnel.stats.closedAt is None:
            return
        self._ended = True
        self.factory.connectionEnded(
            ConnectionRecord(
                self._client, self._clock.seconds() - self._openedAt, self._requests
            )
        )

    def closeWith(self, reason: str, message: str = SHUTTING_DOWN) -> None:
        """
        Close this connection now, whatever it is doing: a tunnel closes
        gracefully with C{reason} (aborted after the abort timeout, as every
        tunnel close), and a request not yet tunnelled (its head still being
        read, or being checked or connected) is answered with 503 and
        C{message}, its checks or connect cancelled.  A refused connection
        stops lingering.

        @param reason: The tunnel's close reason, for the observers.
        @param message: The short reason sent with the 503.
        """
        if self._gone:
            return
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.close(reason)
            return
        if self._closing:
            if self._receive != _discard:
                self._close()
            return
        pending = self._pending
        self._refuse(503, message)
        if pending is not None:
            pending.cancel()

    def _tunnelRecord(self, tunnel: _Relay) -> TunnelRecord:
        request = self.request
        assert request is not None and request.host is not None
        assert request.port is not None
        stats = tunnel.stats
        end = stats.closedAt
        return TunnelRecord(
            client=self._client,
            host=request.host,
            port=request.port,
            upstream=formatAddress(stats.upstreamAddress),
            bytesUp=stats.bytesUp,
            bytesDown=stats.bytesDown,
            duration=0.0 if end is None else end - stats.openedAt,
            reason=stats.closeReason,
            user=self.user,
            target=request.target,
            admitTime=self._admittedAt - self._headAt,
            connectTime=self._connectedAt - self._admittedAt,
        )

    # Errors.

    def _refuse(
        self,
        status: int,
        reason: str,
        headers: Iterable[tuple[str, str]] = (),
        outcome: str = "",
    ) -> None:
        """
        Answer with an error, report it (with C{outcome}, or the usual
        outcome of C{status}), and close the connection.

        On plain TCP the close lingers: the response is followed by a FIN,
        and what the client still sends is read and thrown away for a short
        while, so that the kernel does not answer those bytes with a reset
        that could destroy the response before the client reads it.
        """
        if self._closing or self._gone:
            return
        self._closing = True
        self._cancelTimer()
        self._receive = self._discardReceived
        self._transport.write(errorResponse(status, reason, headers=headers))
        self._report(status, reason, outcome)
        if canHalfClose(self._transport) and not self._clientFinished:
            self._transport.loseWriteConnection()  # type: ignore[attr-defined]
            self._timer = self._clock.callLater(
                min(LINGER_SECONDS, self._settings.abortTimeout), self._close
            )
        else:
            self._close()

    def _report(self, status: int, reason: str, outcome: str = "") -> None:
        request = self.request
        method, target = self._requestLine or ("", "")
        self.factory.requestRefused(
            RefusedRequest(
                client=self._client,
                method=request.method if request else method,
                target=request.target if request else target,
                status=status,
                reason=reason,
                user=self.user,
                outcome=outcome,
            )
        )

    def _discardReceived(self, data: bytes) -> None:
        """
        Throw away what a refused client still sends, up to a limit.
        """
        self._discarded += len(data)
        if self._discarded > LINGER_BYTES:
            self._close()

    def _close(self) -> None:
        """
        Close the client connection gracefully, and abort it if that takes
        longer than the abort timeout.
        """
        self._cancelTimer()
        self._receive = _discard
        self._transport.loseConnection()
        self._timer = self._clock.callLater(
            self._settings.abortTimeout, self._transport.abortConnection
        )

    def _cancelTimer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None


def _wrapperBalancer(transport: object) -> IAddress | None:
    """
    The load balancer's address under Twisted's own PROXY-protocol wrapper
    (C{twisted.protocols.haproxy}), once the header it read named a client;
    the wrapper reports that client as its peer.  C{None} for any other
    transport.
    """
    info = getattr(transport, "_proxyInfo", None)
    if getattr(info, "source", None) is None:
        return None
    inner = getattr(transport, "transport", None)
    getPeer = getattr(inner, "getPeer", None)
    return None if getPeer is None else cast(IAddress, getPeer())


def _keepsAlive(request: ConnectRequest | None) -> bool:
    """
    Whether the client asked to keep its connection open after a response
    (RFC 9112 section 9.3): HTTP/1.1 unless it said C{close}, HTTP/1.0 only
    if it said C{keep-alive}.
    """
    if request is None:
        return False
    tokens: set[str] = set()
    for name, value in request.headers:
        if name in ("connection", "proxy-connection"):
            tokens.update(t.strip().lower() for t in value.split(","))
    if "close" in tokens:
        return False
    return request.version == (1, 1) or "keep-alive" in tokens


def _discard(data: bytes) -> None:
    """
    Ignore bytes from a client whose connection is closing.
    """
