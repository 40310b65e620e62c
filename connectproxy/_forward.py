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
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._address import formatAddress
from ._connect import _connectErrorStatus, _expectedConnectFailure
from ._connector import UpstreamRequest
from ._errors import ParentProxyError
from ._handler import Phase, _Admitted, _Front
from ._messages import (
    Framing,
    hostField,
    maxForwards,
    requestFraming,
    requestHeaders,
    responseHeaders,
    traceBody,
    wantsUpgrade,
)
from ._observer import ForwardedRequest, Outcome
from ._parenturl import ParentProxy
from ._parser import RequestHead, keepsAlive
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


def _latin1(fields: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """
    Header fields as bytes, for C{h11} (the parser decoded them as
    ISO-8859-1, which keeps every byte).
    """
    return [(n.encode("latin-1"), v.encode("latin-1")) for n, v in fields]


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


class ForwardHandler:
    """
    The handler of one admitted absolute-form request: connect to the
    origin, forward the request, relay the response, then hand the client's
    connection back to the front for the next request (or close it).

    @ivar tunnel: Always C{None}: a forwarded request has no tunnel.
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
        self._target: UpstreamRequest | None = None
        self._pending: Deferred[Any] | None = None
        self._protocol: OriginProtocol | None = None
        self._key: PoolKey = ("direct", "", 0)
        self._parent: ParentProxy | None = None
        self._reused = False
        self._retried = False
        self._responseBytes = 0
        self._originEOF = False
        self._upstream: TunnelTransport | None = None
        self._client = cast(TunnelTransport, front.transport)
        self._request: h11.Request | None = None
        self._framing = Framing()
        self._server: h11.Connection | None = None
        self._origin: h11.Connection | None = None
        self._stats: TunnelStats | None = None
        self._deadline: _Deadline | None = None
        self._connectedAt = 0.0
        # Where the exchange is.
        self._requestComplete = False
        self._responseComplete = False
        self._status = 0
        self._ended = False
        self._closeClient = False
        self._leftover = bytearray()
        self._clientPaused = False
        self._clientEOF = False
        self._clientDone = False
        self._producers = False

    # The _Handler interface.

    def start(self, target: UpstreamRequest) -> None:
        """
        Prepare the request for the origin and connect to it.
        """
        self._target = target
        request = target.request
        destination = request.destination
        assert destination is not None
        framing = requestFraming(request)
        self._framing = framing
        connector = self._front.factory.connector
        via = getattr(connector, "forwardVia", None)
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
            self._request = h11.Request(
                method=request.method,
                target=requestTarget,
                headers=_latin1(fields),
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

    def _answerHere(self, request: RequestHead) -> None:
        """
        Answer a TRACE or OPTIONS whose C{Max-Forwards} is 0 (RFC 9110
        section 7.6.2): the proxy is its final recipient.  TRACE gets the
        request head back (C{message/http}, without credentials or
        cookies), OPTIONS the methods served.
        """
        front = self._front
        keepAlive = _keepsAlive(request) and self._framing.empty
        if request.method == "TRACE":
            body = traceBody(request)
            fields = [("Content-Type", "message/http")]
        else:
            body = b""
            fields = [("Allow", ", ".join(("CONNECT", *FORWARDED_METHODS)))]
        fields.append(("Content-Length", str(len(body))))
        if not keepAlive:
            fields.append(("Connection", "close"))
        head = "HTTP/1.1 200 OK\r\n" + "".join(f"{n}: {v}\r\n" for n, v in fields)
        response = head.encode("ascii") + b"\r\n" + body
        self._ended = True
        early, _ = front.forward(self._ignore, lambda: None)
        self._client.write(response)
        now = front.clock.seconds()
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
                duration=now - admission.headAt,
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

    def _url(self, request: RequestHead) -> str:
        """
        The request's URL as the access log shows it: without its query
        string unless C{--log-query}.
        """
        if self._front.settings.logQuery:
            return request.target
        return request.target.partition("?")[0]

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
        self._pending = d
        d.addCallbacks(self._connected, self._failed).addErrback(self._broken)

    def cancel(self) -> None:
        """
        Stop: cancel the connect in flight, or (the client is gone, or the
        deadline passed) end the exchange and drop the origin's connection.
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
        Whether the connection to the origin is no longer this handler's.
        """
        tunnel = self.tunnel
        if tunnel is not None:
            return tunnel.stats.closedAt is not None
        return self._upstream is None

    # Connecting.

    def _failed(self, failure: Failure) -> None:
        self._pending = None
        front = self._front
        if front.phase is not Phase.CONNECTING and not (
            self._retried and front.phase is Phase.FORWARDING
        ):
            return
        timedOut = self._admission.timedOut
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
        front.refuse(status, reason, outcome=outcome)

    def _broken(self, failure: Failure) -> None:
        self._pending = None
        self._abortUpstream()
        self._front.requestFailed(failure)

    def _connected(self, protocol: IProtocol) -> None:
        self._pending = None
        front = self._front
        origin = self._protocol
        assert protocol is origin and origin is not None
        assert self._request is not None
        upstream = origin.upstream
        self._upstream = upstream
        clock = front.clock
        self._connectedAt = clock.seconds()
        if self._stats is None:
            self._stats = TunnelStats(upstream.getPeer(), self._connectedAt)
        else:
            # A retry: the counts go on.
            self._stats.upstreamAddress = upstream.getPeer()
        settings = front.settings
        self._origin = h11.Connection(
            h11.CLIENT, max_incomplete_event_size=settings.maxHeadSize
        )
        self._writeUpstream(self._origin.send(self._request))
        # Each side's transport slows the other when its buffer fills.
        upstream.registerProducer(self._client, True)  # type: ignore[arg-type]
        self._client.registerProducer(upstream, True)  # type: ignore[arg-type]
        self._producers = True
        self._deadline = _Deadline(self, self._stats)
        front.factory.deadlines.watch(self._deadline, settings)
        if self._server is not None:
            # A retry: the request (without a body) is complete already.
            self._writeUpstream(self._origin.send(h11.EndOfMessage()))
            return
        self._server = h11.Connection(
            h11.SERVER, max_incomplete_event_size=settings.maxRequestLine
        )
        self._server.receive_data(self._clientHead())
        event = self._server.next_event()
        assert isinstance(event, h11.Request)
        early, finished = front.forward(self._clientData, self._clientFinished)
        self._clientData(early)
        if finished and not self._ended:
            self._clientFinished()

    def _clientHead(self) -> bytes:
        """
        The head the client's C{h11} connection reads: the request's
        method and version, and its framing only (checked already).
        """
        assert self._target is not None
        request = self._target.request
        framing = requestFraming(request)
        version = f"HTTP/{request.version[0]}.{request.version[1]}"
        lines = [f"{request.method} / {version}", "Host: proxy"]
        lines.extend(f"{name}: {value}" for name, value in framing.fields())
        if not _keepsAlive(request):
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")

    # The request.

    def _clientData(self, data: bytes) -> None:
        """
        Bytes from the client: the request's body, then what it pipelined.
        """
        if self._requestComplete:
            self._pipelined(data)
            return
        assert self._server is not None
        if data:
            # Not an empty string: h11 reads that as the end of input.
            self._server.receive_data(data)
        self._readRequest()

    def _readRequest(self) -> None:
        server, origin = self._server, self._origin
        assert server is not None and origin is not None
        while not self._ended:
            try:
                event = server.next_event()
            except h11.RemoteProtocolError as e:
                self._badRequestBody(e)
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Data):
                self._writeUpstream(origin.send(h11.Data(data=event.data)))
            elif isinstance(event, h11.EndOfMessage):
                self._writeUpstream(origin.send(h11.EndOfMessage()))
                self._requestComplete = True
                self._pipelined(server.trailing_data[0])
                self._maybeDone()
                return

    def _pipelined(self, data: bytes) -> None:
        """
        Keep what the client sent after its request, for the front to read
        once the response is complete; stop reading the client once there
        is more than a head's worth.
        """
        if not data:
            return
        self._leftover += data
        if len(self._leftover) > self._front.settings.maxHeadSize:
            self._clientPaused = True
            self._client.pauseProducing()

    def _clientFinished(self) -> None:
        """
        The client sent its FIN: a request whose body is incomplete is
        refused; after a complete one, the connection closes once the
        response is relayed.
        """
        self._clientDone = True
        if self._requestComplete or self._ended:
            return
        assert self._server is not None
        self._clientEOF = True
        self._server.receive_data(b"")
        self._readRequest()

    def _badRequestBody(self, error: h11.RemoteProtocolError) -> None:
        """
        The request's body is malformed, too long a chunk line, or cut
        short: 400 and close (or, once the response started, abort).
        """
        limit = self._front.settings.maxRequestLine
        self._log.info(
            "bad request body from {client}: {error}",
            event="bad_request_body",
            client=self._front.client,
            error=str(error),
        )
        self._abortUpstream()
        if self._status:
            self._end(Outcome.BAD_REQUEST, "malformed request body")
            self._client.abortConnection()
        elif "Receive buffer too long" in str(error):
            self._stop()
            self._front.refuse(
                400,
                f"chunk line or trailer longer than {limit} bytes "
                "(see --max-request-line)",
            )
        elif self._clientEOF:
            self._stop()
            self._front.refuse(
                400, "the client closed before the end of its request body"
            )
        else:
            self._stop()
            self._front.refuse(400, "malformed chunked request body")

    # The response.

    def upstreamData(self, data: bytes) -> None:
        """
        Bytes from the origin.
        """
        if self._ended or self._origin is None:
            return
        self._responseBytes += len(data)
        self._origin.receive_data(data)
        self._readResponse()

    def upstreamFinished(self) -> None:
        """
        The origin sent its FIN.
        """
        if self._ended or self._origin is None:
            return
        self._originEOF = True
        self._origin.receive_data(b"")
        self._readResponse()

    def upstreamLost(self, reason: Failure) -> None:
        """
        The connection to the origin is gone.
        """
        if self._retrying():
            return
        if not self._ended and self._origin is not None:
            self._originEOF = True
            if self._origin.their_state is not h11.ERROR:
                self._origin.receive_data(b"")
            self._readResponse()
            if not self._ended:
                self._upstreamBroke("the origin's connection was lost")
        self._upstream = None
        if self._front.phase is Phase.CLOSED:
            self._front.exchangeEnded()

    def _retrying(self) -> bool:
        """
        Retry the request once on a fresh connection if the pooled one it
        was sent on died before any byte of the response, and the request
        is idempotent (RFC 9110 section 9.2.2) and had no body: the origin
        most likely closed the idle connection as the request went out.

        @return: Whether a retry started.
        """
        if (
            self._ended
            or not self._reused
            or self._retried
            or self._responseBytes
            or not self._requestComplete
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
        self._origin = None
        self._originEOF = False
        if protocol is not None:
            protocol.owner = _Closing()
        if upstream is not None and protocol is not None and not protocol.lost:
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

    def _readResponse(self) -> None:
        origin, server = self._origin, self._server
        assert origin is not None and server is not None
        while not self._ended:
            try:
                event = origin.next_event()
            except h11.RemoteProtocolError as e:
                if origin.their_state is h11.ERROR and self._closedEarly():
                    return
                self._badResponse(str(e))
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.InformationalResponse):
                self._informational(event)
            elif isinstance(event, h11.Response):
                if not self._responseHead(event):
                    return
            elif isinstance(event, h11.Data):
                self._writeClient(server.send(h11.Data(data=event.data)))
            elif isinstance(event, h11.EndOfMessage):
                self._writeClient(server.send(h11.EndOfMessage()))
                self._responseComplete = True
                self._maybeDone()
                return
            elif isinstance(event, h11.ConnectionClosed):
                self._closedEarly()
                return

    def _closedEarly(self) -> bool:
        """
        The origin's connection ended: before any byte of the response, the
        request is retried or answered 502.

        @return: Whether it ended before the response (and was dealt with).
        """
        if not self._originEOF or self._responseBytes:
            return False
        if not self._retrying():
            self._upstreamBroke("the origin closed the connection before answering")
        return True

    def _informational(self, event: h11.InformationalResponse) -> None:
        """
        Relay a 1xx (a C{100 Continue}) to an HTTP/1.1 client; an HTTP/1.0
        client gets none (RFC 9110 section 15.2).
        """
        assert self._target is not None and self._server is not None
        if event.status_code == 101:
            self._switch(event)
            return
        if self._target.request.version < (1, 1):
            return
        fields = responseHeaders(_text(event.headers.raw_items()))
        self._writeClient(
            self._server.send(
                h11.InformationalResponse(
                    status_code=event.status_code,
                    reason=event.reason,
                    headers=_latin1(fields),
                )
            )
        )

    def _switch(self, event: h11.InformationalResponse) -> None:
        """
        The origin switches protocols (C{101}, RFC 9110 section 15.2.2):
        relay its head, then hand both connections over to a relay, as a
        tunnel, with the bytes each side sent after the heads written
        first.
        """
        origin = self._origin
        assert origin is not None and self._protocol is not None
        front = self._front
        factory = front.factory
        fields = responseHeaders(_text(event.headers.raw_items()), upgrade=True)
        lines = [
            f"HTTP/1.1 101 {event.reason.decode('latin-1') or 'Switching Protocols'}"
        ]
        lines.extend(f"{name}: {value}" for name, value in fields)
        self._status = 101
        self._ended = True
        self._unwire()
        self._writeClient(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        fromOrigin, _ = origin.trailing_data
        if fromOrigin:
            self._writeClient(fromOrigin)
        self._clientPaused = False
        self._client.pauseProducing()
        relay = factory.relayFactory(
            front, self._protocol, front.clock, front.settings, self._switchedClosed
        )
        self.tunnel = relay
        factory.deadlines.watch(relay, front.settings)
        relay.start(bytes(self._leftover), self._clientDone)
        self._leftover.clear()

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

    def _responseHead(self, event: h11.Response) -> bool:
        """
        Relay the response head, unless it is framed ambiguously.

        @return: Whether it was relayed.
        """
        assert self._server is not None
        if self._parent is not None and event.status_code == 407:
            # The parent wants other credentials than the operator's: the
            # client cannot fix that (as for tunnels, 502).
            self._abortUpstream()
            self._stop()
            if self._parent.user is None:
                self._front.refuse(502, "the parent proxy requires credentials")
            else:
                self._front.refuse(
                    502, "the parent proxy refused the proxy's credentials"
                )
            return False
        received = _text(event.headers.raw_items())
        names = {name.lower() for name, _ in received}
        if "content-length" in names and "transfer-encoding" in names:
            # RFC 9112 section 6.3: an error, and the sign of a smuggling
            # attempt.
            self._badResponse("both Content-Length and Transfer-Encoding")
            return False
        fields = responseHeaders(received)
        if not self._requestComplete:
            # The origin answered before the end of the request body: the
            # rest of it is not read, so the connection cannot go on.
            self._closeClient = True
            fields.append(("Connection", "close"))
        try:
            head = self._server.send(
                h11.Response(
                    status_code=event.status_code,
                    reason=event.reason,
                    headers=_latin1(fields),
                )
            )
        except h11.LocalProtocolError as e:
            self._badResponse(str(e))
            return False
        self._status = event.status_code
        self._writeClient(head)
        return True

    def _badResponse(self, error: str) -> None:
        """
        The origin's response is not valid HTTP/1.1 or is framed
        ambiguously: 502 before its head reached the client, an aborted
        client connection after.
        """
        self._log.info(
            "bad response from {target}: {error}",
            event="bad_response",
            client=self._front.client,
            target=self._target.request.authority if self._target else "",
            error=error,
        )
        self._abortUpstream()
        if self._status:
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
        if self._status:
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
        if self._status:
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
        The request or the response is complete: once both are, the
        exchange is over.  A response complete before its request (the
        origin answered early) ends it too, closing the client's connection.
        """
        if not self._responseComplete:
            return
        if not self._requestComplete:
            self._end(Outcome.OK, "complete")
            self._abortUpstream()
            self._front.finish()
            return
        origin, server = self._origin, self._server
        assert origin is not None and server is not None
        self._end(Outcome.OK, "complete")
        upstream, protocol = self._upstream, self._protocol
        self._upstream = None
        factory = self._front.factory
        settings = self._front.settings
        reusable = (
            origin.our_state is h11.DONE
            and origin.their_state is h11.DONE
            and not origin.trailing_data[0]
            and not factory.draining
        )
        if upstream is not None and protocol is not None:
            if not (
                reusable
                and factory.upstreamPool.put(
                    self._key,
                    protocol,
                    settings.upstreamKeepalive,
                    settings.upstreamIdleTimeout,
                )
            ):
                protocol.owner = _Closing()
                upstream.loseConnection()
        keepAlive = (
            server.our_state is h11.DONE
            and server.their_state is h11.DONE
            and not self._closeClient
        )
        if not keepAlive:
            self._front.finish()
            return
        self._clientPaused = False
        if not self._clientDone:
            # Read the next head (a transport that saw the client's FIN is
            # not resumed: it would report the FIN again).
            self._client.resumeProducing()
        self._front.requestDone(bytes(self._leftover))

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
        destination = request.destination
        assert destination is not None
        now = front.clock.seconds()
        url = self._url(request)
        front.report(
            ForwardedRequest(
                client=front.client,
                method=request.method,
                target=url,
                host=self._target.host,
                port=self._target.port,
                upstream=formatAddress(self._stats.upstreamAddress),
                status=self._status,
                bytesUp=self._stats.bytesUp,
                bytesDown=self._stats.bytesDown,
                duration=now - admission.headAt,
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

    def _writeUpstream(self, data: bytes | None) -> None:
        if data:
            assert self._upstream is not None and self._stats is not None
            self._stats.bytesUp += len(data)
            self._upstream.write(data)

    def _writeClient(self, data: bytes | None) -> None:
        if data:
            assert self._stats is not None
            self._stats.bytesDown += len(data)
            self._client.write(data)


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


def _text(fields: Any) -> list[tuple[str, str]]:
    """
    Header fields from C{h11} (C{raw_items()}: names as received) as text.
    """
    return [(n.decode("latin-1"), v.decode("latin-1")) for n, v in fields]


def _keepsAlive(request: RequestHead) -> bool:
    """
    Whether the client's connection may carry another request after this
    one: HTTP/1.1 without C{Connection: close} (h11 keeps no HTTP/1.0
    connection open).
    """
    return keepsAlive(request) and request.version >= (1, 1)
