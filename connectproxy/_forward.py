# -*- test-case-name: tests.test_forward,tests.test_forwardends -*-
"""
Plain HTTP forwarding (RFC 9112 section 3.2.2): L{ForwardHandler} forwards
an admitted absolute-form C{http://} request to its origin and relays the
response, both bodies streamed with flow control.

The front of the connection (L{ConnectProxyProtocol
<connectproxy._front.ConnectProxyProtocol>}) has read and checked the
request head with the proxy's own strict parser, including how its body is
framed (L{requestFraming <connectproxy._messages.requestFraming>}: what a
proxy must refuse so that no request is smuggled).  The handler rewrites
the head for the next hop (L{requestHeaders
<connectproxy._messages.requestHeaders>}), and its work is in three parts:

  - L{OriginLink <connectproxy._forwardupstream.OriginLink>}: the upstream
    connection, taken from the pool or connected, connected again for a
    retry, and pooled or closed at the end;
  - L{StreamedExchange <connectproxy._forwardstream.StreamedExchange>}:
    the exchange on it, framed by C{h11} on both legs
    (L{Exchange <connectproxy._exchange.Exchange>}), with its ends;
  - this handler: what the front asks of it (start, cancel, close,
    C{done}), which connect and which retry, the tunnel after a C{101},
    and the report.

A TRACE or OPTIONS with C{Max-Forwards: 0} is answered here
(L{connectproxy._forwardlocal}).  When the exchange is over and both sides
allow it, the client's connection carries the next request (the front reads
its head, with what the client pipelined meanwhile).
"""

from __future__ import annotations

import h11
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._address import formatAddress
from ._connector import UpstreamRequest
from ._errors import BadRequest
from ._exchange import latin1
from ._forwardlocal import answerHere, loggedURL
from ._forwardstream import StreamedExchange
from ._forwardupstream import OriginLink
from ._handler import Phase, _Admitted, _Front
from ._messages import (
    Framing,
    hostField,
    maxForwards,
    requestFraming,
    requestHeaders,
    wantsUpgrade,
)
from ._observer import ForwardedRequest, Outcome
from ._parenturl import ParentProxy
from ._relay import _Relay

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


def _emptyPath(target: str) -> bool:
    """
    Whether an absolute-form target (checked) has an empty path and no
    query: C{http://host[:port]}.
    """
    rest = target.partition("://")[2]
    return "/" not in rest and "?" not in rest


class ForwardHandler:
    """
    The handler of one admitted absolute-form request: connect to the
    origin (or take an idle pooled connection), forward the request and
    relay the response (a L{StreamedExchange}), then pool the origin's
    connection and hand the client's connection back to the front for the
    next request (or close them).

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
        self._target: UpstreamRequest | None = None
        self._framing = Framing()
        self._parent: ParentProxy | None = None
        self._stream: StreamedExchange | None = None
        self._link: OriginLink | None = None
        self._connectedAt = 0.0

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
        self._parent = parent = None if via is None else via(target)
        try:
            forwards = maxForwards(request)
        except BadRequest as e:
            self._front.refuse(e.status, e.reason, outcome=Outcome.BAD_REQUEST)
            return
        if forwards == 0:
            methods = ("CONNECT", *FORWARDED_METHODS)
            answerHere(self._front, self._admission, target, framing, methods)
            return
        fields = requestHeaders(
            request,
            framing,
            upgrade=wantsUpgrade(request),
            maxForwards=None if forwards is None else forwards - 1,
        )
        requestTarget = destination.path
        asterisk = request.method == "OPTIONS" and _emptyPath(request.target)
        if asterisk:
            # RFC 9112 section 3.2.4: the server as a whole, not "/".
            requestTarget = "*"
        if parent is not None:
            # A parent proxy gets the absolute form (with the empty path
            # kept, for the last proxy to send "*"), and its own
            # credentials (RFC 9112 section 3.2.2).
            path = "" if asterisk else destination.path
            requestTarget = f"http://{hostField(destination)}{path}"
            if parent.authorization is not None:
                authorization = parent.authorization.decode("ascii")
                fields.append(("Proxy-Authorization", authorization))
        try:
            outgoing = h11.Request(
                method=request.method, target=requestTarget, headers=latin1(fields)
            )
        except h11.LocalProtocolError:
            self._front.refuse(400, "a header field of the request is not valid")
            return
        stream = StreamedExchange(
            self._front, self, request, outgoing, framing, parent is not None
        )
        self._stream = stream
        self._link = link = OriginLink(
            self._front, stream, target, parent, self._upstreamClosed
        )
        stream.link = link
        if link.takePooled():
            self._connected(link.protocol)
            return
        self._connect(link.connect())

    def cancel(self) -> None:
        """
        Stop: cancel the connect in flight, and (the client is gone) end
        the exchange, if it began, and drop the origin's connection.  The
        first connect's end is the front's to report (a refusal, or the
        client abandoning); once the exchange began (a retry's connect
        included), it is reported here, once.
        """
        if self._link is not None:
            self._link.cancel()
        self._abandon("the client went away")

    def close(self, reason: str) -> None:
        """
        The proxy closes every connection: end the exchange now, closing
        the client's connection (a response being relayed is cut short,
        a retry's connect is cancelled); a tunnel after a C{101} closes
        gracefully.
        """
        if self.tunnel is not None:
            self.tunnel.close(reason)
            return
        stream, link = self._stream, self._link
        if stream is None or link is None or stream.ended:
            return
        # Reported first: the cancelled connect then finds it over.
        self._abandon(reason)
        link.cancel()
        stream.abortUpstream()
        self._front.finish()

    def _abandon(self, reason: str) -> None:
        """
        The client is gone, or the proxy closes its connection: once the
        exchange began, report it abandoned and drop the origin's
        connection.
        """
        stream = self._stream
        if stream is not None and not stream.ended and stream.stats is not None:
            stream.end(Outcome.ABANDONED, reason)
            stream.abortUpstream()

    @property
    def done(self) -> bool:
        """
        Whether no upstream connection is this handler's any more: none in
        use, none it closed still open (a pooled one is the pool's), and a
        tunnel after a C{101} closed.
        """
        link = self._link
        if link is not None and link.closing:
            return False
        tunnel = self.tunnel
        if tunnel is not None:
            return tunnel.stats.closedAt is not None
        return link is None or link.transport is None

    # Connecting.

    def _connect(self, d: Deferred[IProtocol]) -> None:
        """
        Follow a connect of the link: the exchange goes on once connected.
        """
        d.addCallbacks(self._connected, self._failed).addErrback(self._broken)

    def _failed(self, failure: Failure) -> None:
        """
        The connect failed: refused with the reason (502, 503, 504), unless
        it was cancelled because the client left or the proxy closes the
        connection (and reported the exchange if it began).
        """
        front = self._front
        stream, link = self._stream, self._link
        assert stream is not None and link is not None
        if stream.ended or (
            front.phase is not Phase.CONNECTING
            and not (link.retried and front.phase is Phase.FORWARDING)
        ):
            return
        status, reason, outcome = link.refusal(failure, self._admission.timedOut)
        stream.stop()
        front.refuse(status, reason, outcome=outcome)

    def _broken(self, failure: Failure) -> None:
        """
        Connecting or starting the exchange failed unexpectedly (a bug):
        leave no upstream connection behind, and let the front answer.
        """
        if self._stream is not None:
            self._stream.abortUpstream()
        self._front.requestFailed(failure)

    def _connected(self, protocol: IProtocol | None) -> None:
        """
        The origin's connection is there (fresh, pooled, or for a retry):
        the exchange goes on it.
        """
        stream, link = self._stream, self._link
        assert stream is not None and link is not None
        assert protocol is link.protocol and protocol is not None
        upstream = link.attach()
        self._connectedAt = self._front.clock.seconds()
        stream.connected(upstream, self._connectedAt)

    def retry(self) -> bool:
        """
        Retry the request once on a fresh connection if the pooled one it
        was sent on died before any byte of the response, and the request
        is idempotent (RFC 9110 section 9.2.2) and had no body: the origin
        most likely closed the idle connection as the request went out.

        @return: Whether a retry started.
        """
        stream, link, target = self._stream, self._link, self._target
        assert stream is not None and link is not None and target is not None
        exchange = stream.exchange
        if (
            exchange is None
            or stream.ended
            or not link.reused
            or link.retried
            or exchange.responseBytes
            or not exchange.requestComplete
            or not self._framing.empty
            or target.request.method not in _IDEMPOTENT
        ):
            return False
        # The producers are undone while the connection is still known.
        stream.unwire()
        self._log.info(
            "pooled connection to {target} closed before the response; "
            "retrying on a fresh one",
            event="forward_retry",
            client=self._front.client,
            target=target.request.authority,
        )
        self._connect(link.retry())
        return True

    # The end.

    def switch(self, leftover: bytes, clientDone: bool) -> None:
        """
        The origin switched protocols (C{101}, RFC 9110 section 15.2.2) and
        its head went to the client: hand both connections over to a relay,
        as a tunnel, with what the client sent after its request written
        upstream first.
        """
        link = self._link
        assert link is not None and link.protocol is not None
        front = self._front
        factory = front.factory
        relay = factory.relayFactory(
            front, link.protocol, front.clock, front.settings, self._switchedClosed
        )
        self.tunnel = relay
        factory.deadlines.watch(relay, front.settings)
        relay.start(leftover, clientDone)

    def _switchedClosed(self, relay: _Relay) -> None:
        """
        The tunnel after a C{101} is closed: report the exchange, with what
        went through the tunnel.
        """
        front = self._front
        front.factory.deadlines.forget(relay)
        stream, link = self._stream, self._link
        assert stream is not None and stream.stats is not None and link is not None
        link.transport = None
        stream.stats.bytesUp += relay.stats.bytesUp
        stream.stats.bytesDown += relay.stats.bytesDown
        self.report(Outcome.OK, relay.stats.closeReason or "closed")
        front.exchangeEnded()

    def parentChallenge(self) -> None:
        """
        The parent proxy answered 407: it wants other credentials than the
        operator's, which the client cannot fix (as for tunnels, 502).
        """
        stream, parent = self._stream, self._parent
        assert stream is not None and parent is not None
        stream.abortUpstream()
        stream.stop()
        if parent.user is None:
            self._front.refuse(502, "the parent proxy requires credentials")
        else:
            self._front.refuse(502, "the parent proxy refused the proxy's credentials")

    def _upstreamClosed(self) -> None:
        """
        An upstream connection the link closed is gone: the client
        connection's end may be reported once nothing else is left.
        """
        if self._front.phase is Phase.CLOSED:
            self._front.exchangeEnded()

    def report(self, outcome: str, reason: str) -> None:
        """
        Report the exchange to the observers.
        """
        stream, link, target = self._stream, self._link, self._target
        assert stream is not None and link is not None and target is not None
        stats = stream.stats
        assert stats is not None
        front = self._front
        admission = self._admission
        request = target.request
        front.report(
            ForwardedRequest(
                client=front.client,
                method=request.method,
                target=loggedURL(front, request),
                host=target.host,
                port=target.port,
                upstream=formatAddress(stats.upstreamAddress),
                status=0 if stream.exchange is None else stream.exchange.status,
                bytesUp=stats.bytesUp,
                bytesDown=stats.bytesDown,
                duration=front.clock.seconds() - admission.headAt,
                reason=reason,
                user=target.user,
                outcome=outcome,
                admitTime=admission.admittedAt - admission.headAt,
                connectTime=self._connectedAt - admission.admittedAt,
                parent=None if self._parent is None else self._parent.address,
                reused=link.reused,
            )
        )
