# -*- test-case-name: tests.test_forwardframing -*-
"""
The framing of one forwarded request and its response, on both legs, with
C{h11}: L{Exchange}.  No transport, no clock: bytes from the client and
from the origin go in, bytes for the origin and for the client come out
through the two writers it is given, and what went wrong comes out as an
exception.

  - The client's leg: an C{h11} server connection is fed a minimal head
    carrying only the framing fields the proxy checked (C{Content-Length}
    or C{Transfer-Encoding: chunked}), then the client's bytes; its
    C{Data} events go to the origin, and it frames the response for the
    client (chunked for an HTTP/1.1 client when the origin's response is
    read until the close, so that the client's connection can stay open;
    close-delimited for HTTP/1.0).
  - The origin's leg: an C{h11} client connection sends the rewritten
    request and reads the response (1xx, bodiless HEAD/204/304,
    C{Content-Length}, chunked, read until the close).

Chunk extensions and trailers are dropped: each leg's body is framed
anew (RFC 9110 section 6.5.1 allows discarding trailers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import h11

from ._messages import Framing, responseHeaders
from ._parser import RequestHead, keepsAlive

__all__ = [
    "BadRequestBody",
    "BadResponse",
    "ClosedEarly",
    "Exchange",
    "ParentChallenge",
    "latin1",
]


class BadRequestBody(Exception):
    """
    The client's request body is malformed, has too long a chunk line or
    trailer (C{tooLong}), or was cut short by the client's FIN.

    @ivar tooLong: Whether a chunk line or the trailers passed the limit.
    """

    def __init__(self, detail: str, tooLong: bool = False) -> None:
        super().__init__(detail)
        self.tooLong = tooLong


class BadResponse(Exception):
    """
    The origin's response is not valid HTTP/1.1, is framed ambiguously, or
    was cut short.
    """


class ClosedEarly(Exception):
    """
    The origin's connection ended before any byte of the response.
    """


class ParentChallenge(Exception):
    """
    The parent proxy answered 407: it wants other credentials than the
    operator's.
    """


def latin1(fields: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """
    Header fields as bytes, for C{h11} (the parser decoded them as
    ISO-8859-1, which keeps every byte).
    """
    return [(n.encode("latin-1"), v.encode("latin-1")) for n, v in fields]


def _text(fields: Any) -> list[tuple[str, str]]:
    """
    Header fields from C{h11} (C{raw_items()}: names as received) as text.
    """
    return [(n.decode("latin-1"), v.decode("latin-1")) for n, v in fields]


def _version(event: h11.Response | h11.InformationalResponse) -> tuple[int, int]:
    """
    The protocol version of a response's status line (C{h11} reads only
    C{HTTP/1.0} and C{HTTP/1.1}).
    """
    major, _, minor = event.http_version.partition(b".")
    return int(major), int(minor)


def clientKeepsAlive(request: RequestHead) -> bool:
    """
    Whether the client's connection may carry another request after this
    one: HTTP/1.1 without C{Connection: close} (h11 keeps no HTTP/1.0
    connection open).
    """
    return keepsAlive(request) and request.version >= (1, 1)


class Exchange:
    """
    Frames one forwarded request and its response.

    @ivar requestComplete: Whether the request's body is complete.
    @ivar responseComplete: Whether the response is complete.
    @ivar status: The status of the response relayed to the client, 0
        before its head.
    @ivar switched: Whether the origin switched protocols (C{101}): its
        head went to the client, with the bytes that followed it.
    @ivar closeClient: Whether the client's connection closes after the
        response (the origin answered before the end of the request body).
    @ivar clientEOF: Whether the client's FIN came before the end of the
        request body.
    @ivar leftover: What the client sent after its request.
    @ivar responseBytes: Bytes received from the origin on its current
        connection.
    """

    def __init__(
        self,
        request: RequestHead,
        outgoing: h11.Request,
        framing: Framing,
        writeUpstream: Callable[[bytes], object],
        writeClient: Callable[[bytes], object],
        maxChunkLine: int,
        maxResponseHead: int,
        throughParent: bool = False,
    ) -> None:
        """
        @param request: The client's request head.
        @param outgoing: The request to send upstream.
        @param framing: How the client's body is delimited (checked).
        @param writeUpstream: Writes bytes to the origin.
        @param writeClient: Writes bytes to the client.
        @param maxChunkLine: Longest chunk line or trailer section of the
            request, in bytes.
        @param maxResponseHead: Largest response head, in bytes.
        @param throughParent: Whether the request goes to a parent proxy
            (whose 407 is not the client's business).
        """
        self._request = request
        self._outgoing = outgoing
        self._framing = framing
        self._writeUpstream = writeUpstream
        self._writeClient = writeClient
        self._maxResponseHead = maxResponseHead
        self._throughParent = throughParent
        self._server = h11.Connection(
            h11.SERVER, max_incomplete_event_size=maxChunkLine
        )
        self._origin: h11.Connection | None = None
        self._originEOF = False
        self._interimOnly = False
        self.requestComplete = False
        self.responseComplete = False
        self.status = 0
        self.switched = False
        self.closeClient = False
        self.clientEOF = False
        self.leftover = bytearray()
        self.responseBytes = 0

    def begin(self) -> None:
        """
        Start: the client's leg reads the request's framing, and the
        request's head goes to the origin.
        """
        request = self._request
        version = f"HTTP/{request.version[0]}.{request.version[1]}"
        lines = [f"{request.method} / {version}", "Host: proxy"]
        lines.extend(f"{name}: {value}" for name, value in self._framing.fields())
        if not clientKeepsAlive(request):
            lines.append("Connection: close")
        self._server.receive_data(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
        event = self._server.next_event()
        assert isinstance(event, h11.Request)
        self._newOrigin()
        self._readRequest()

    def restart(self) -> None:
        """
        Send the request (complete, without a body) again, on a fresh
        connection to the origin: a retry.
        """
        assert self.requestComplete
        origin = self._newOrigin()
        self._writeUpstream(origin.send(h11.EndOfMessage()))

    def _newOrigin(self) -> h11.Connection:
        origin = h11.Connection(
            h11.CLIENT, max_incomplete_event_size=self._maxResponseHead
        )
        self._origin = origin
        self._originEOF = False
        self._interimOnly = False
        self.responseBytes = 0
        self._writeUpstream(origin.send(self._outgoing))
        return origin

    # The request.

    def fromClient(self, data: bytes) -> None:
        """
        Bytes from the client: the request's body, then what it pipelined.

        @raise BadRequestBody: When the body is malformed.
        """
        if self.requestComplete:
            self.leftover += data
            return
        if data:
            # Not an empty string: h11 reads that as the end of input.
            self._server.receive_data(data)
        self._readRequest()

    def clientFinished(self) -> None:
        """
        The client sent its FIN.

        @raise BadRequestBody: When the request's body is not complete.
        """
        if self.requestComplete:
            return
        self.clientEOF = True
        self._server.receive_data(b"")
        self._readRequest()

    def _readRequest(self) -> None:
        server, origin = self._server, self._origin
        assert origin is not None
        while True:
            try:
                event = server.next_event()
            except h11.RemoteProtocolError as e:
                raise BadRequestBody(
                    str(e), tooLong="Receive buffer too long" in str(e)
                ) from None
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Data):
                self._writeUpstream(origin.send(h11.Data(data=event.data)))
            elif isinstance(event, h11.EndOfMessage):
                self._writeUpstream(origin.send(h11.EndOfMessage()))
                self.requestComplete = True
                self.leftover += server.trailing_data[0]
                return

    # The response.

    def fromOrigin(self, data: bytes) -> None:
        """
        Bytes from the origin.

        @raise BadResponse: When the response is malformed or ambiguous.
        @raise ParentChallenge: When a parent proxy answered 407.
        """
        assert self._origin is not None
        self.responseBytes += len(data)
        self._origin.receive_data(data)
        self._readResponse()

    def originFinished(self) -> None:
        """
        The origin's connection ended (its FIN, or its loss).

        @raise ClosedEarly: When no byte of the response came.
        @raise BadResponse: When the response was cut short.
        """
        origin = self._origin
        assert origin is not None
        if self._originEOF:
            return
        self._originEOF = True
        if origin.their_state is not h11.ERROR:
            origin.receive_data(b"")
        self._readResponse()

    def _readResponse(self) -> None:
        origin = self._origin
        assert origin is not None
        while not (self.responseComplete or self.switched):
            try:
                event = origin.next_event()
            except h11.RemoteProtocolError as e:
                if self._originEOF and self._unanswered:
                    raise ClosedEarly() from None
                raise BadResponse(str(e)) from None
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.InformationalResponse):
                self._informational(event)
            elif isinstance(event, h11.Response):
                self._responseHead(event)
            elif isinstance(event, h11.Data):
                self._writeClient(self._server.send(h11.Data(data=event.data)))
            elif isinstance(event, h11.EndOfMessage):
                self._writeClient(self._server.send(h11.EndOfMessage()))
                self.responseComplete = True
            elif isinstance(event, h11.ConnectionClosed):
                if self._unanswered:
                    raise ClosedEarly()
                raise BadResponse("the origin closed the connection")

    @property
    def _unanswered(self) -> bool:
        """
        Whether the origin sent nothing but whole interim responses (a
        C{100 Continue}) on its current connection, or nothing at all.
        """
        return not self.responseBytes or self._interimOnly

    def _informational(self, event: h11.InformationalResponse) -> None:
        """
        Relay a 1xx (a C{100 Continue}) to an HTTP/1.1 client; an HTTP/1.0
        client gets none (RFC 9110 section 15.2).  A C{101} switches
        protocols: its head, and what followed it, go to the client.
        """
        self._interimOnly = True
        if event.status_code == 101:
            fields = responseHeaders(
                _text(event.headers.raw_items()),
                _version(event),
                upgrade=True,
                status=101,
            )
            phrase = event.reason.decode("latin-1") or "Switching Protocols"
            lines = [f"HTTP/1.1 101 {phrase}"]
            lines.extend(f"{name}: {value}" for name, value in fields)
            self.status = 101
            self.switched = True
            self._writeClient(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            assert self._origin is not None
            fromOrigin, _ = self._origin.trailing_data
            if fromOrigin:
                self._writeClient(fromOrigin)
            return
        if self._request.version < (1, 1):
            return
        fields = responseHeaders(
            _text(event.headers.raw_items()), _version(event), status=event.status_code
        )
        self._writeClient(
            self._server.send(
                h11.InformationalResponse(
                    status_code=event.status_code,
                    reason=event.reason,
                    headers=latin1(fields),
                )
            )
        )

    def _responseHead(self, event: h11.Response) -> None:
        """
        Relay the response head, unless it is framed ambiguously.

        @raise BadResponse: When it is.
        @raise ParentChallenge: For a parent proxy's 407.
        """
        self._interimOnly = False
        if self._throughParent and event.status_code == 407:
            raise ParentChallenge()
        received = _text(event.headers.raw_items())
        names = {name.lower() for name, _ in received}
        if "content-length" in names and "transfer-encoding" in names:
            # RFC 9112 section 6.3: an error, and the sign of a smuggling
            # attempt.
            raise BadResponse("both Content-Length and Transfer-Encoding")
        fields = responseHeaders(received, _version(event), status=event.status_code)
        if not self.requestComplete:
            # The origin answered before the end of the request body: the
            # rest of it is not read, so the connection cannot go on.
            self.closeClient = True
            fields.append(("Connection", "close"))
        try:
            head = self._server.send(
                h11.Response(
                    status_code=event.status_code,
                    reason=event.reason,
                    headers=latin1(fields),
                )
            )
        except h11.LocalProtocolError as e:
            raise BadResponse(str(e)) from None
        self.status = event.status_code
        self._writeClient(head)

    # After the response.

    @property
    def originReusable(self) -> bool:
        """
        Whether the origin's connection may carry another request: both
        messages complete, neither side asked to close, and the origin sent
        nothing more.
        """
        origin = self._origin
        return (
            origin is not None
            and origin.our_state is h11.DONE
            and origin.their_state is h11.DONE
            and not origin.trailing_data[0]
        )

    @property
    def clientReusable(self) -> bool:
        """
        Whether the client's connection may carry another request.
        """
        server = self._server
        return (
            server.our_state is h11.DONE
            and server.their_state is h11.DONE
            and not self.closeClient
        )
