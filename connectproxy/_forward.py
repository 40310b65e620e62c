# -*- test-case-name: tests.test_forward -*-
"""
Plain HTTP forwarding (RFC 9112 section 3.2.2): L{ForwardHandler} forwards
an admitted absolute-form C{http://} request to its origin and relays the
response, both bodies streamed with flow control.

The front of the connection (L{ConnectProxyProtocol
<connectproxy._front.ConnectProxyProtocol>}) has read and checked the
request head with the proxy's own strict parser, including how its body is
framed (L{requestFraming <connectproxy._messages.requestFraming>}: what a
proxy must refuse so that no request is smuggled).  The bodies are framed
by C{h11} on both legs:

  - the client's leg: an C{h11} server connection is fed a minimal head
    carrying only the framing fields checked (C{Content-Length} or
    C{Transfer-Encoding: chunked}), then the client's bytes; its C{Data}
    events go upstream, and it writes the response back, choosing the
    response's framing for the client (chunked for an HTTP/1.1 client
    when the origin's response is read until the close, so that the
    client's connection can stay open);
  - the origin's leg: an C{h11} client connection sends the rewritten
    request (L{requestHeaders <connectproxy._messages.requestHeaders>})
    and reads the response (1xx, bodiless HEAD/204/304, C{Content-Length},
    chunked, read until the close).

A malformed request body is answered 400 and the connection closed; a
malformed response 502 (or, once its head reached the client, the client's
connection aborted).  Chunk extensions and trailers are dropped: bodies are
framed again on each leg (RFC 9110 section 6.5.1 allows discarding
trailers).

When the exchange is over and both sides allow it, the client's connection
carries the next request (the front reads its head, with what the client
pipelined meanwhile).
"""

from __future__ import annotations

from typing import Any, cast

import h11
from twisted.internet.defer import Deferred, TimeoutError, maybeDeferred
from twisted.internet.interfaces import IProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._address import formatAddress
from ._connect import _connectErrorStatus, _expectedConnectFailure
from ._connector import UpstreamRequest
from ._errors import ParentProxyError
from ._exchange import (
    BadRequestBody,
    BadResponse,
    ClosedEarly,
    Exchange,
    ParentChallenge,
    clientKeepsAlive,
    latin1,
)
from ._handler import Phase, _Admitted, _Front
from ._messages import (
    Framing,
    hostField,
    localAnswer,
    maxForwards,
    requestFraming,
    requestHeaders,
    wantsUpgrade,
)
from ._observer import ForwardedRequest, Outcome
from ._parenturl import ParentProxy
from ._parser import RequestHead
from ._pool import OriginProtocol, PoolKey
from ._relay import TunnelStats, _Relay
from ._responses import formatSeconds
from ._tunnel import TunnelTransport

__all__ = ["FORWARDED_METHODS", "ForwardHandler"]

#: The idempotent methods (RFC 9110 section 9.2.2): only these are retried.
_IDEMPOTENT = frozenset(["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"])

#: The methods forwarded (RFC 9110 section 9.3, and PATCH of RFC 5789).
FORWARDED_METHODS = (
    "DELETE",
    "GET",
    "HEAD",
    "OPTIONS",
    "PATCH",
    "POST",
    "PUT",
    "TRACE",
)


class _Deadline:
    """
    What the factory's L{DeadlineSweeper
    <connectproxy._deadlines.DeadlineSweeper>} watches of one exchange:
    its byte counts, and whom to tell when it has been idle (no byte
    either way) for the idle timeout, waiting for the response head or
    during a body.
    """

    def __init__(self, handler: ForwardHandler, stats: TunnelStats) -> None:
        self._handler = handler
        self.stats = stats

    def start(self, earlyData: bytes, clientFinished: bool) -> None:
        pass

    def close(self, reason: str) -> None:
        self._handler.timedOut()

    def abort(self) -> None:
        self._handler.timedOut()


class _Closing:
    """
    The owner of an upstream connection being closed after its exchange:
    what it still says is ignored.
    """

    def upstreamData(self, data: bytes) -> None:
        pass

    def upstreamFinished(self) -> None:
        pass

    def upstreamLost(self, reason: Failure) -> None:
        pass


class ForwardHandler:
    """
    The handler of one admitted absolute-form request: connect to the
    origin (or take an idle pooled connection), forward the request through
    an L{Exchange}, relay the response, then pool the origin's connection
    and hand the client's connection back to the front for the next request
    (or close them).

    @ivar tunnel: The relay the connection became after the origin's
        C{101}, else C{None}.
    """

    _log = Logger()

    abandoned = "the client went away while the origin was connected"
    tunnel: _Relay | None = None

    def __init__(self, front: _Front, admission: _Admitted) -> None:
        """
        @param front: The front of the client's connection, in
            L{Phase.CONNECTING}.
        @param admission: The admission of the request.
        """
        self._front = front
        self._admission = admission
        self._client = cast(TunnelTransport, front.transport)
        self._target: UpstreamRequest | None = None
        self._framing = Framing()
        self._outgoing: h11.Request | None = None
        self._parent: ParentProxy | None = None
        self._key: PoolKey = ("direct", "", 0)
        self._pending: Deferred[Any] | None = None
        self._protocol: OriginProtocol | None = None
        self._upstream: TunnelTransport | None = None
        self._exchange: Exchange | None = None
        self._stats: TunnelStats | None = None
        self._deadline: _Deadline | None = None
        self._connectedAt = 0.0
        self._reused = False
        self._retried = False
        self._ended = False
        self._producers = False
        self._clientPaused = False
        self._clientDone = False

    # The _Handler interface.

    def start(self, target: UpstreamRequest) -> None:
        """
        Prepare the request for the origin and connect to it (or answer a
        TRACE or OPTIONS with C{Max-Forwards: 0} here).
        """
        self._target = target
        request = target.request
        destination = request.destination
        assert destination is not None
        self._framing = framing = requestFraming(request)
        via = getattr(self._front.factory.connector, "forwardVia", None)
        self._parent = None if via is None else via(target)
        forwards = maxForwards(request)
        if forwards == 0:
            self._answerHere(request)
            return
        fields = requestHeaders(
            request,
            framing,
            upgrade=wantsUpgrade(request),
            maxForwards=None if forwards is None else forwards - 1,
        )
        requestTarget = destination.path
        route = "direct"
        if self._parent is not None:
            # A parent proxy gets the absolute form, and its own
            # credentials (RFC 9112 section 3.2.2).
            route = self._parent.address
            requestTarget = f"http://{hostField(destination)}{destination.path}"
            authorization = self._parent.authorization
            if authorization is not None:
                fields.append(("Proxy-Authorization", authorization.decode("ascii")))
        self._key = (route, target.host, target.port)
        try:
            self._outgoing = h11.Request(
                method=request.method, target=requestTarget, headers=latin1(fields)
            )
        except h11.LocalProtocolError:
            self._front.refuse(400, "a header field of the request is not valid")
            return
        pooled = self._front.factory.upstreamPool.take(self._key)
        if pooled is not None:
            self._reused = True
            pooled.owner = self
            self._protocol = pooled
            self._connected(pooled)
            return
        self._connect()

    def cancel(self) -> None:
        """
        Stop: cancel the connect in flight, or (the client is gone) end the
        exchange and drop the origin's connection.
        """
        if self._pending is not None:
            self._pending.cancel()
            return
        if not self._ended and self._stats is not None:
            self._end(Outcome.ABANDONED, "the client went away")
            self._abortUpstream()

    def close(self, reason: str) -> None:
        """
        The proxy closes every connection: end the exchange now, closing
        the client's connection (a response being relayed is cut short);
        a tunnel after a C{101} closes gracefully.
        """
        if self.tunnel is not None:
            self.tunnel.close(reason)
            return
        if self._ended:
            return
        if self._stats is not None:
            self._end(Outcome.ABANDONED, reason)
        self._abortUpstream()
        self._front.finish()

    @property
    def done(self) -> bool:
        """
        Whether the connection to the origin is no longer this handler's
        (and a tunnel after a C{101} is closed).
        """
        tunnel = self.tunnel
        if tunnel is not None:
            return tunnel.stats.closedAt is not None
        return self._upstream is None

    # Answering here.

    def _answerHere(self, request: RequestHead) -> None:
        """
        Answer a TRACE or OPTIONS whose C{Max-Forwards} is 0 (RFC 9110
        section 7.6.2): the proxy is its final recipient.
        """
        front = self._front
        keepAlive = clientKeepsAlive(request) and self._framing.empty
        response = localAnswer(request, ("CONNECT", *FORWARDED_METHODS), keepAlive)
        self._ended = True
        early, _ = front.forward(self._ignore, self._ignoreFIN)
        self._client.write(response)
        admission = self._admission
        assert self._target is not None
        front.report(
            ForwardedRequest(
                client=front.client,
                method=request.method,
                target=self._url(request),
                host=self._target.host,
                port=self._target.port,
                upstream="",
                status=200,
                bytesDown=len(response),
                duration=front.clock.seconds() - admission.headAt,
                reason="answered by the proxy (Max-Forwards: 0)",
                user=self._target.user,
                admitTime=admission.admittedAt - admission.headAt,
            )
        )
        if keepAlive:
            front.requestDone(early)
        else:
            front.finish()

    def _ignore(self, data: bytes) -> None:
        pass

    def _ignoreFIN(self) -> None:
        pass

    def _url(self, request: RequestHead) -> str:
        """
        The request's URL as the access log shows it: without its query
        string unless C{--log-query}.
        """
        if self._front.settings.logQuery:
            return request.target
        return request.target.partition("?")[0]

    # Connecting.

    def _connect(self) -> None:
        """
        Connect a fresh upstream connection: to the origin through the
        connector, or to the parent proxy the connector names.
        """
        assert self._target is not None
        self._protocol = OriginProtocol(self)
        connector = self._front.factory.connector
        connect = connector.connectUpstream
        if self._parent is not None:
            connect = connector.connectForwarding  # type: ignore[attr-defined]
        d = maybeDeferred(connect, self._target, self._protocol)
        if self._retried:
            # The admission's deadline is over: a retry has its own.
            front = self._front
            d.addTimeout(front.settings.connectTimeout, front.clock)
        self._pending = d
        d.addCallbacks(self._connected, self._failed).addErrback(self._broken)

    def _failed(self, failure: Failure) -> None:
        self._pending = None
        front = self._front
        if front.phase is not Phase.CONNECTING and not (
            self._retried and front.phase is Phase.FORWARDING
        ):
            return
        timedOut = self._admission.timedOut or bool(failure.check(TimeoutError))
        status, reason, outcome = _connectErrorStatus(
            failure, timedOut, front.settings.connectTimeout
        )
        target = self._target.request.authority if self._target else ""
        if not _expectedConnectFailure(failure, timedOut):
            self._log.failure(
                "upstream connector failed connecting {client} to {target}",
                failure,
                event="connector_error",
                client=front.client,
                target=target,
            )
        elif status == 502 or failure.check(ParentProxyError):
            self._log.info(
                "connect to {target} failed: {error}",
                event="connect_failed",
                client=front.client,
                target=target,
                error=failure.getErrorMessage(),
            )
        self._stop()
        front.refuse(status, reason, outcome=outcome)

    def _broken(self, failure: Failure) -> None:
        self._pending = None
        self._abortUpstream()
        self._front.requestFailed(failure)

    def _connected(self, protocol: IProtocol) -> None:
        """
        The origin's connection is there (fresh, pooled, or for a retry):
        send the request, wire the producers and the deadline, and (the
        first time) let the exchange read the client.
        """
        self._pending = None
        front = self._front
        origin = self._protocol
        assert protocol is origin and origin is not None
        assert self._target is not None and self._outgoing is not None
        upstream = origin.upstream
        self._upstream = upstream
        self._connectedAt = front.clock.seconds()
        if self._stats is None:
            self._stats = TunnelStats(upstream.getPeer(), self._connectedAt)
        else:
            # A retry: the counts go on.
            self._stats.upstreamAddress = upstream.getPeer()
        settings = front.settings
        # Each side's transport slows the other when its buffer fills.
        upstream.registerProducer(self._client, True)  # type: ignore[arg-type]
        self._client.registerProducer(upstream, True)  # type: ignore[arg-type]
        self._producers = True
        exchange = self._exchange
        if exchange is not None:
            exchange.restart()
            self._watch()
            return
        self._exchange = exchange = Exchange(
            self._target.request,
            self._outgoing,
            self._framing,
            self._writeUpstream,
            self._writeClient,
            settings.maxRequestLine,
            settings.maxHeadSize,
            self._parent is not None,
        )
        exchange.begin()
        self._watch()
        early, finished = front.forward(self._clientData, self._clientFinished)
        self._clientData(early)
        if finished and not self._ended:
            self._clientFinished()

    def _watch(self) -> None:
        """
        Let the factory's sweeper keep the idle deadline, counted from now
        (the request head just sent).
        """
        assert self._stats is not None
        self._deadline = _Deadline(self, self._stats)
        self._front.factory.deadlines.watch(self._deadline, self._front.settings)

    def _retrying(self) -> bool:
        """
        Retry the request once on a fresh connection if the pooled one it
        was sent on died before any byte of the response, and the request
        is idempotent (RFC 9110 section 9.2.2) and had no body: the origin
        most likely closed the idle connection as the request went out.

        @return: Whether a retry started.
        """
        exchange = self._exchange
        if (
            exchange is None
            or self._ended
            or not self._reused
            or self._retried
            or exchange.responseBytes
            or not exchange.requestComplete
            or not self._framing.empty
            or self._target is None
            or self._target.request.method not in _IDEMPOTENT
        ):
            return False
        self._retried = True
        self._reused = False
        self._unwire()
        upstream, protocol = self._upstream, self._protocol
        self._upstream = None
        if protocol is not None:
            protocol.owner = _Closing()
            if upstream is not None and not protocol.lost:
                upstream.abortConnection()
        self._log.info(
            "pooled connection to {target} closed before the response; "
            "retrying on a fresh one",
            event="forward_retry",
            client=self._front.client,
            target=self._target.request.authority,
        )
        self._connect()
        return True

    # The client's side.

    def _clientData(self, data: bytes) -> None:
        """
        Bytes from the client: the request's body, then what it pipelined
        (read up to a head's worth while the response is relayed).
        """
        exchange = self._exchange
        if exchange is None or self._ended:
            return
        try:
            exchange.fromClient(data)
        except BadRequestBody as e:
            self._badRequestBody(e)
            return
        if len(exchange.leftover) > self._front.settings.maxHeadSize:
            if not self._clientPaused:
                self._clientPaused = True
                self._client.pauseProducing()
        self._maybeDone()

    def _clientFinished(self) -> None:
        """
        The client sent its FIN: a request whose body is incomplete is
        refused; after a complete one, the connection closes once the
        response is relayed.
        """
        self._clientDone = True
        exchange = self._exchange
        if exchange is None or self._ended:
            return
        try:
            exchange.clientFinished()
        except BadRequestBody as e:
            self._badRequestBody(e)

    def _badRequestBody(self, error: BadRequestBody) -> None:
        """
        The request's body is malformed, has too long a chunk line, or was
        cut short: 400 and close (or, once the response started, abort).
        """
        exchange = self._exchange
        assert exchange is not None
        limit = self._front.settings.maxRequestLine
        self._log.info(
            "bad request body from {client}: {error}",
            event="bad_request_body",
            client=self._front.client,
            error=str(error),
        )
        self._abortUpstream()
        if exchange.status:
            self._end(Outcome.BAD_REQUEST, "malformed request body")
            self._client.abortConnection()
            return
        self._stop()
        if error.tooLong:
            self._front.refuse(
                400,
                f"chunk line or trailer longer than {limit} bytes "
                "(see --max-request-line)",
            )
        elif exchange.clientEOF:
            self._front.refuse(
                400, "the client closed before the end of its request body"
            )
        else:
            self._front.refuse(400, "malformed chunked request body")

    # The origin's side.

    def upstreamData(self, data: bytes) -> None:
        """
        Bytes from the origin.
        """
        exchange = self._exchange
        if self._ended or exchange is None:
            return
        try:
            exchange.fromOrigin(data)
        except BadResponse as e:
            self._badResponse(str(e))
            return
        except ParentChallenge:
            self._parentChallenge()
            return
        if exchange.switched:
            self._switch()
            return
        self._maybeDone()

    def upstreamFinished(self) -> None:
        """
        The origin sent its FIN.
        """
        if not self._ended and self._exchange is not None:
            self._originEnded()

    def upstreamLost(self, reason: Failure) -> None:
        """
        The connection to the origin is gone.
        """
        if not self._ended and self._exchange is not None:
            self._originEnded()
            if not self._ended and self._upstream is not None:
                self._upstreamBroke("the origin's connection was lost")
        if self._upstream is not None and self._protocol is not None:
            if self._protocol.lost:
                self._upstream = None
        if self._front.phase is Phase.CLOSED:
            self._front.exchangeEnded()

    def _originEnded(self) -> None:
        """
        The origin's connection ended: a response read until the close is
        complete now; before any byte of the response, the request is
        retried or answered 502; in the middle of one, it is cut short.
        """
        exchange = self._exchange
        assert exchange is not None
        try:
            exchange.originFinished()
        except ClosedEarly:
            if not self._retrying():
                self._upstreamBroke("the origin closed the connection before answering")
            return
        except BadResponse as e:
            self._badResponse(str(e))
            return
        self._maybeDone()

    def _switch(self) -> None:
        """
        The origin switched protocols (C{101}, RFC 9110 section 15.2.2) and
        its head went to the client: hand both connections over to a relay,
        as a tunnel, with what the client sent after its request written
        upstream first.
        """
        exchange = self._exchange
        assert exchange is not None and self._protocol is not None
        front = self._front
        factory = front.factory
        self._ended = True
        self._unwire()
        self._clientPaused = False
        self._client.pauseProducing()
        relay = factory.relayFactory(
            front, self._protocol, front.clock, front.settings, self._switchedClosed
        )
        self.tunnel = relay
        factory.deadlines.watch(relay, front.settings)
        relay.start(bytes(exchange.leftover), self._clientDone)
        exchange.leftover.clear()

    def _switchedClosed(self, relay: _Relay) -> None:
        """
        The tunnel after a C{101} is closed: report the exchange, with what
        went through the tunnel.
        """
        front = self._front
        front.factory.deadlines.forget(relay)
        self._upstream = None
        assert self._stats is not None
        self._stats.bytesUp += relay.stats.bytesUp
        self._stats.bytesDown += relay.stats.bytesDown
        self._report(Outcome.OK, relay.stats.closeReason or "closed")
        front.exchangeEnded()

    def _parentChallenge(self) -> None:
        """
        The parent proxy answered 407: it wants other credentials than the
        operator's, which the client cannot fix (as for tunnels, 502).
        """
        assert self._parent is not None
        self._abortUpstream()
        self._stop()
        if self._parent.user is None:
            self._front.refuse(502, "the parent proxy requires credentials")
        else:
            self._front.refuse(502, "the parent proxy refused the proxy's credentials")

    def _badResponse(self, error: str) -> None:
        """
        The origin's response is not valid HTTP/1.1, is framed ambiguously
        or was cut short: 502 before its head reached the client, an
        aborted client connection after.
        """
        self._log.info(
            "bad response from {target}: {error}",
            event="bad_response",
            client=self._front.client,
            target=self._target.request.authority if self._target else "",
            error=error,
        )
        self._abortUpstream()
        if self._exchange is not None and self._exchange.status:
            self._end(Outcome.UPSTREAM_FAILED, "malformed response")
            self._client.abortConnection()
            return
        self._stop()
        self._front.refuse(502, "the origin's response is not valid HTTP")

    def _upstreamBroke(self, why: str) -> None:
        """
        The origin's connection ended before the end of the response.
        """
        self._abortUpstream()
        if self._exchange is not None and self._exchange.status:
            self._end(Outcome.UPSTREAM_FAILED, why)
            self._client.abortConnection()
            return
        self._stop()
        self._front.refuse(502, "the origin closed the connection before answering")

    def timedOut(self) -> None:
        """
        Nothing moved either way for the idle timeout: 504 while waiting
        for the response head, an aborted client connection during a body.
        """
        if self._ended:
            return
        self._abortUpstream()
        if self._exchange is not None and self._exchange.status:
            self._end(Outcome.TIMEOUT, "idle timeout")
            self._client.abortConnection()
            return
        self._stop()
        self._front.refuse(
            504,
            "timed out waiting for the origin's response after "
            f"{formatSeconds(self._front.settings.idleTimeout)} "
            "(see --idle-timeout)",
        )

    # The end of the exchange.

    def _maybeDone(self) -> None:
        """
        Once the response is complete, the exchange is over: the origin's
        connection is pooled or closed, and the client's connection carries
        the next request or is closed.  A response complete before its
        request (the origin answered early) closes both.
        """
        exchange = self._exchange
        if self._ended or exchange is None or not exchange.responseComplete:
            return
        if not exchange.requestComplete:
            self._end(Outcome.OK, "complete")
            self._abortUpstream()
            self._front.finish()
            return
        self._end(Outcome.OK, "complete")
        self._release(exchange.originReusable)
        if not exchange.clientReusable:
            self._front.finish()
            return
        self._clientPaused = False
        if not self._clientDone:
            # Read the next head (a transport that saw the client's FIN is
            # not resumed: it would report the FIN again).
            self._client.resumeProducing()
        self._front.requestDone(bytes(exchange.leftover))

    def _release(self, reusable: bool) -> None:
        """
        Put the origin's connection in the pool, or close it.
        """
        upstream, protocol = self._upstream, self._protocol
        self._upstream = None
        if upstream is None or protocol is None:
            return
        factory = self._front.factory
        settings = self._front.settings
        if not (
            reusable
            and not factory.draining
            and factory.upstreamPool.put(
                self._key,
                protocol,
                settings.upstreamKeepalive,
                settings.upstreamIdleTimeout,
            )
        ):
            protocol.owner = _Closing()
            upstream.loseConnection()

    def _stop(self) -> None:
        """
        Stop the exchange without a report (a refusal reports it).
        """
        self._ended = True
        self._unwire()

    def _end(self, outcome: Outcome, reason: str) -> None:
        """
        Stop the exchange and report it.
        """
        self._ended = True
        self._unwire()
        self._report(outcome, reason)

    def _report(self, outcome: Outcome, reason: str) -> None:
        """
        Report the exchange to the observers.
        """
        assert self._target is not None and self._stats is not None
        front = self._front
        admission = self._admission
        request = self._target.request
        front.report(
            ForwardedRequest(
                client=front.client,
                method=request.method,
                target=self._url(request),
                host=self._target.host,
                port=self._target.port,
                upstream=formatAddress(self._stats.upstreamAddress),
                status=0 if self._exchange is None else self._exchange.status,
                bytesUp=self._stats.bytesUp,
                bytesDown=self._stats.bytesDown,
                duration=front.clock.seconds() - admission.headAt,
                reason=reason,
                user=self._target.user,
                outcome=outcome,
                admitTime=admission.admittedAt - admission.headAt,
                connectTime=self._connectedAt - admission.admittedAt,
                parent=None if self._parent is None else self._parent.address,
                reused=self._reused,
            )
        )

    def _unwire(self) -> None:
        """
        Undo the producers and stop the deadline.
        """
        if self._producers:
            self._producers = False
            self._client.unregisterProducer()
            if self._upstream is not None:
                self._upstream.unregisterProducer()
        if self._deadline is not None:
            self._front.factory.deadlines.forget(self._deadline)
            self._deadline = None

    def _abortUpstream(self) -> None:
        upstream = self._upstream
        if upstream is not None and not (
            self._protocol is not None and self._protocol.lost
        ):
            if self._producers:
                self._unwire()
            upstream.abortConnection()

    # Writing.

    def _writeUpstream(self, data: bytes) -> None:
        if data:
            assert self._upstream is not None and self._stats is not None
            self._stats.bytesUp += len(data)
            self._upstream.write(data)

    def _writeClient(self, data: bytes) -> None:
        if data:
            assert self._stats is not None
            self._stats.bytesDown += len(data)
            self._client.write(data)
