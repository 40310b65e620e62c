# -*- test-case-name: tests.test_forward,tests.test_forwardends -*-
"""
One forwarded exchange streamed between the client's connection and the
origin's: L{StreamedExchange} feeds an L{Exchange
<connectproxy._exchange.Exchange>} (the framing, sans I/O) with the bytes
and the ends of both connections, writes what it frames, wires the two
transports as each other's producers, keeps the idle deadline, and ends
the exchange: complete (the origin's connection released, the client's
kept for the next request or closed), or cut short (400, 502, 504; once
the response head reached the client, its connection aborted instead).
Its handler (L{ForwardHandler <connectproxy._forward.ForwardHandler>})
decides on a retry, makes the tunnel after a C{101}, and reports it.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

import h11
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._exchange import (
    BadRequestBody,
    BadResponse,
    ClosedEarly,
    Exchange,
    ParentChallenge,
)
from ._forwardupstream import OriginLink
from ._handler import Phase, _Front
from ._messages import Framing
from ._observer import Outcome
from ._parser import RequestHead
from ._relay import TunnelStats
from ._resets import ResetWhenFlushed
from ._responses import formatSeconds
from ._tunnel import TunnelTransport, canHalfClose

__all__ = ["StreamedExchange"]


class _Handler(Protocol):
    """
    What a L{StreamedExchange} asks of its forwarding handler: a retry
    (the origin closed before any byte of the response; C{True} if one
    started), the report of the exchange, the tunnel after a C{101} (with
    what the client sent after its request, and whether it finished), and
    the answer to a parent proxy's 407.
    """

    def retry(self) -> bool: ...
    def parentChallenge(self) -> None: ...
    def report(self, outcome: str, reason: str) -> None: ...
    def switch(self, leftover: bytes, clientDone: bool) -> None: ...


class _Deadline:
    """
    What the factory's L{DeadlineSweeper
    <connectproxy._deadlines.DeadlineSweeper>} watches of one exchange: its
    byte counts, and whom to tell when no byte moved for the idle timeout.
    """

    def __init__(self, exchange: StreamedExchange, stats: TunnelStats) -> None:
        self._exchange = exchange
        self.stats = stats

    def start(self, earlyData: bytes, clientFinished: bool) -> None:
        pass

    def close(self, reason: str) -> None:
        self._exchange.timedOut(halfClosed=self.stats.halfClosedAt is not None)

    def abort(self) -> None:
        self._exchange.timedOut(halfClosed=self.stats.halfClosedAt is not None)


class StreamedExchange:
    """
    One forwarded request and its response, between the client's
    connection and the origin's (the events of the origin's connection in
    use come here).

    @ivar exchange: Its framing, once the first connection is there.
    @ivar stats: Its byte counts, from then on.
    @ivar ended: Whether it is over (reported, refused, or switched).
    @cvar resettable: Whether a transport is plain TCP, whose reset can
        wait until what was written to it has reached the peer.
    """

    _log = Logger()
    resettable: Any = staticmethod(canHalfClose)

    def __init__(
        self,
        front: _Front,
        handler: _Handler,
        request: RequestHead,
        outgoing: h11.Request,
        framing: Framing,
        throughParent: bool,
    ) -> None:
        """
        @param front: The front of the client's connection.
        @param handler: Its forwarding handler.
        @param request: The client's request head.
        @param outgoing: The request to send upstream.
        @param framing: How the request's body is delimited.
        @param throughParent: Whether it goes through a parent proxy (whose
            407 is not the client's business).
        """
        self._front = front
        self._handler = handler
        self._request = request
        self._outgoing = outgoing
        self._framing = framing
        self._throughParent = throughParent
        self._client = cast(TunnelTransport, front.transport)
        self.link: OriginLink | None = None
        self.exchange: Exchange | None = None
        self.stats: TunnelStats | None = None
        self.ended = False
        self._deadline: _Deadline | None = None
        self._producers = False
        self._clientPaused = False
        self._clientDone = False

    def connected(self, upstream: TunnelTransport, now: float) -> None:
        """
        The origin's connection is there (fresh, pooled, or for a retry):
        send the request, wire the producers and the deadline, and (the
        first time) read the client.
        """
        if self.stats is None:
            self.stats = TunnelStats(upstream.getPeer(), now)
        else:
            # A retry: the counts go on.
            self.stats.upstreamAddress = upstream.getPeer()
        # Each side's transport slows the other when its buffer fills.
        upstream.registerProducer(self._client, True)  # type: ignore[arg-type]
        self._client.registerProducer(upstream, True)  # type: ignore[arg-type]
        self._producers = True
        exchange = self.exchange
        if exchange is not None:
            exchange.restart()
            self._watch()
            return
        settings = self._front.settings
        self.exchange = exchange = Exchange(
            self._request,
            self._outgoing,
            self._framing,
            self._writeUpstream,
            self._writeClient,
            settings.maxRequestLine,
            settings.maxHeadSize,
            self._throughParent,
        )
        exchange.begin()
        self._watch()
        early, finished = self._front.forward(self._clientData, self._clientFinished)
        self._clientData(early)
        if finished and not self.ended:
            self._clientFinished()

    def _watch(self) -> None:
        """
        Let the factory's sweeper keep the idle deadline, from now on.
        """
        assert self.stats is not None
        self._deadline = _Deadline(self, self.stats)
        self._front.factory.deadlines.watch(self._deadline, self._front.settings)

    # The client's side.

    def _clientData(self, data: bytes) -> None:
        """
        Bytes from the client: the request's body, then what it pipelined
        (read up to a head's worth while the response is relayed).
        """
        exchange = self.exchange
        if exchange is None or self.ended:
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
        response is relayed, and from now on the half-close deadline
        (C{--half-close-timeout}) applies to the exchange, as to a tunnel
        with one direction finished: a client that left after its request
        does not keep the origin's connection until the idle timeout.
        """
        self._clientDone = True
        exchange = self.exchange
        if exchange is None or self.ended:
            return
        if self.stats is not None and self.stats.halfClosedAt is None:
            self.stats.halfClosedAt = self._front.clock.seconds()
        try:
            exchange.clientFinished()
        except BadRequestBody as e:
            self._badRequestBody(e)

    def _badRequestBody(self, error: BadRequestBody) -> None:
        """
        The request's body is malformed, has too long a chunk line, or was
        cut short: 400 and close.
        """
        assert self.exchange is not None
        limit = self._front.settings.maxRequestLine
        self._log.info(
            "bad request body from {client}: {error}",
            event="bad_request_body",
            client=self._front.client,
            error=str(error),
        )
        if error.tooLong:
            reason = (
                f"chunk line or trailer longer than {limit} bytes "
                "(see --max-request-line)"
            )
        elif self.exchange.clientEOF:
            reason = "the client closed before the end of its request body"
        else:
            reason = "malformed chunked request body"
        self._cutShort(Outcome.BAD_REQUEST, "malformed request body", 400, reason)

    # The origin's side.

    def upstreamData(self, data: bytes) -> None:
        """
        Bytes from the origin.
        """
        exchange = self.exchange
        if self.ended or exchange is None:
            return
        try:
            exchange.fromOrigin(data)
        except BadResponse as e:
            self._badResponse(str(e))
            return
        except ParentChallenge:
            self._handler.parentChallenge()
            return
        if exchange.switched:
            self._switch()
            return
        self._maybeDone()

    def upstreamFinished(self) -> None:
        """
        The origin sent its FIN.
        """
        if not self.ended and self.exchange is not None:
            self._originEnded()

    def upstreamLost(self, reason: Failure) -> None:
        """
        The connection to the origin is gone.
        """
        link = self.link
        assert link is not None
        if not self.ended and self.exchange is not None:
            self._originEnded()
            if not self.ended and link.transport is not None:
                self._cutShort(
                    Outcome.UPSTREAM_FAILED,
                    "the origin's connection was lost",
                    502,
                    "the origin closed the connection before answering",
                )
        link.forgetLost()
        if self._front.phase is Phase.CLOSED:
            self._front.exchangeEnded()

    def _originEnded(self) -> None:
        """
        The origin's connection ended: a response read until the close is
        complete now; before any byte of the response, the request is
        retried or answered 502; in the middle of one, it is cut short.
        """
        exchange = self.exchange
        assert exchange is not None
        try:
            exchange.originFinished()
        except ClosedEarly:
            if not self._handler.retry():
                why = "the origin closed the connection before answering"
                self._cutShort(Outcome.UPSTREAM_FAILED, why, 502, why)
            return
        except BadResponse as e:
            if exchange.status:
                # The head was relayed: the body was cut short.
                why = "the origin closed the connection before the end of the response"
                self._badResponse(str(e), why)
            else:
                self._badResponse(str(e))
            return
        self._maybeDone()

    def _switch(self) -> None:
        """
        The origin switched protocols (C{101}, RFC 9110 section 15.2.2) and
        its head went to the client: the handler makes both connections a
        tunnel, with what the client sent after its request first.
        """
        exchange = self.exchange
        assert exchange is not None
        self.ended = True
        self.unwire()
        self._clientPaused = False
        self._client.pauseProducing()
        leftover = bytes(exchange.leftover)
        exchange.leftover.clear()
        self._handler.switch(leftover, self._clientDone)

    def _badResponse(self, error: str, why: str = "malformed response") -> None:
        """
        The origin's response is not valid HTTP/1.1, is framed ambiguously
        or was cut short (C{why}, reported once the head was relayed).
        """
        self._log.info(
            "bad response from {target}: {error}",
            event="bad_response",
            client=self._front.client,
            target=self._request.authority,
            error=error,
        )
        self._cutShort(
            Outcome.UPSTREAM_FAILED,
            why,
            502,
            "the origin's response is not valid HTTP",
        )

    def timedOut(self, halfClosed: bool = False) -> None:
        """
        Nothing moved either way for the idle timeout, or, once the client
        sent its FIN (C{halfClosed}), for the half-close timeout if shorter.
        """
        if self.ended:
            return
        settings = self._front.settings
        if halfClosed and settings.halfCloseTimeout <= settings.idleTimeout:
            self._cutShort(
                Outcome.TIMEOUT,
                "half-close timeout",
                504,
                "timed out waiting for the origin's response after the "
                "client finished sending, "
                f"{formatSeconds(settings.halfCloseTimeout)} "
                "(see --half-close-timeout)",
            )
            return
        exchange = self.exchange
        if exchange is not None and not exchange.requestComplete:
            # The proxy was waiting for the client's body, not the origin.
            self._cutShort(
                Outcome.TIMEOUT,
                "request body timeout",
                408,
                "timed out waiting for the request body after "
                f"{formatSeconds(settings.idleTimeout)} "
                "(see --idle-timeout)",
            )
            return
        self._cutShort(
            Outcome.TIMEOUT,
            "idle timeout",
            504,
            "timed out waiting for the origin's response after "
            f"{formatSeconds(settings.idleTimeout)} "
            "(see --idle-timeout)",
        )

    # The end.

    def _cutShort(self, outcome: Outcome, why: str, status: int, reason: str) -> None:
        """
        End the exchange before its end, dropping the origin's connection:
        answered C{status} with C{reason} while no response head reached
        the client; after one, reported with C{outcome} and C{why}, and the
        client's connection reset (L{_resetClient}).
        """
        self.abortUpstream()
        if self.exchange is not None and self.exchange.status:
            self.end(outcome, why)
            self._resetClient()
            return
        self.stop()
        self._front.refuse(status, reason)

    def _resetClient(self) -> None:
        """
        Reset the client's connection after a response cut short, so that
        the client sees an error rather than a clean end: on plain TCP
        what was written to it (the head, the body so far) is delivered
        first, then the connection closes with a reset (C{SO_LINGER} 0),
        as a tunnel's reset does (L{ResetWhenFlushed}); the front's abort
        timer (C{--abort-timeout}) bounds the wait.  Any other transport
        (TLS) is aborted at once.
        """
        client = self._client
        if self.resettable(client):
            ResetWhenFlushed(client, self._front.clock).start()
            self._front.finish()
        else:
            client.abortConnection()

    def _maybeDone(self) -> None:
        """
        Once the response is complete, the exchange is over: the origin's
        connection is pooled or closed, and the client's connection carries
        the next request or is closed.  A response complete before its
        request (the origin answered early) closes both.
        """
        exchange = self.exchange
        if self.ended or exchange is None or not exchange.responseComplete:
            return
        link = self.link
        assert link is not None
        if not exchange.requestComplete:
            self.end(Outcome.OK, "complete")
            self.abortUpstream()
            self._front.finish()
            return
        self.end(Outcome.OK, "complete")
        link.release(exchange.originReusable)
        if not exchange.clientReusable:
            self._front.finish()
            return
        self._clientPaused = False
        if not self._clientDone:
            # Read the next head (a transport that saw the client's FIN is
            # not resumed: it would report the FIN again).
            self._client.resumeProducing()
        self._front.requestDone(bytes(exchange.leftover))

    def stop(self) -> None:
        """
        Stop the exchange without a report (a refusal reports it).
        """
        self.ended = True
        self.unwire()

    def end(self, outcome: Outcome, reason: str) -> None:
        """
        Stop the exchange and report it.
        """
        self.stop()
        self._handler.report(outcome, reason)

    def unwire(self) -> None:
        """
        Undo the producers and stop the deadline (the exchange ends, or the
        connection in use is given up for a retry).
        """
        if self._producers:
            self._producers = False
            self._client.unregisterProducer()
            upstream = None if self.link is None else self.link.transport
            if upstream is not None:
                upstream.unregisterProducer()
        if self._deadline is not None:
            self._front.factory.deadlines.forget(self._deadline)
            self._deadline = None

    def abortUpstream(self) -> None:
        """
        Abort the origin's connection in use (producers undone first),
        unless it is gone already.
        """
        link = self.link
        if link is not None and link.transport is not None and not link.lost:
            if self._producers:
                self.unwire()
            link.abort()

    # Writing.

    def _writeUpstream(self, data: bytes) -> None:
        if data:
            link, stats = self.link, self.stats
            assert link is not None and link.transport is not None and stats
            stats.bytesUp += len(data)
            link.transport.write(data)

    def _writeClient(self, data: bytes) -> None:
        if data:
            assert self.stats is not None
            self.stats.bytesDown += len(data)
            self._client.write(data)
