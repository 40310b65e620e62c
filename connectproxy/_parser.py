# -*- test-case-name: tests.test_parser -*-
"""
A strict, incremental, sans-I/O parser for the head of an HTTP/1.x request.

Bytes go in through L{RequestHeadParser.feed}; out comes C{None} (more bytes
are needed), a C{(RequestHead, leftover)} pair, or a L{BadRequest} carrying
the status the proxy should answer with.  Nothing here touches a transport
or a clock.

The grammar is RFC 9112 (message syntax) and RFC 9110 (semantics); the
request-target of a CONNECT becomes a L{Target} (its authority form, RFC
9110 section 9.3.6, parsed in L{connectproxy._target}).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._errors import BadRequest
from ._target import Target, parseAuthority

__all__ = [
    "KNOWN_METHODS",
    "MAX_HEADER_FIELDS",
    "BadRequest",
    "RequestHead",
    "RequestHeadParser",
    "keepsAlive",
    "parseAuthority",
    "requestLineOf",
]

#: Methods defined by RFC 9110 (and PATCH, RFC 5789).  Any other token gets
#: 501; these get 405 when no handler serves them.
KNOWN_METHODS = frozenset(
    [
        b"GET",
        b"HEAD",
        b"POST",
        b"PUT",
        b"DELETE",
        b"CONNECT",
        b"OPTIONS",
        b"TRACE",
        b"PATCH",
    ]
)

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])\Z")
# A request-target: visible ASCII only (RFC 9112 section 3.2).
_TARGET = re.compile(rb"[\x21-\x7e]+\Z")
#: A Host field value: visible ASCII only, or empty.
_HOST_FIELD = re.compile(r"[\x21-\x7e]*\Z")
# A field value: visible ASCII, obs-text, SP and HTAB (RFC 9110 section 5.5).
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*\Z")
#: The default limit on header fields in one head (C{--max-header-fields}).
MAX_HEADER_FIELDS = 256
_MAX_LEADING_EMPTY_LINES = 8


@dataclass(frozen=True, slots=True)
class RequestHead:
    """
    A parsed request head: what a client asks for, before any content.

    @ivar method: The request method, for example C{"CONNECT"}.
    @ivar target: The request-target exactly as sent.
    @ivar version: C{(1, 0)} or C{(1, 1)}.
    @ivar headers: The header fields in order, names lower-cased, values
        decoded as ISO-8859-1 (lossless) with surrounding whitespace removed.
    @ivar destination: Where the request goes, parsed from C{target}: for a
        CONNECT, a L{Target} of the authority form.  C{None} for other
        methods, whose absolute-form targets the proxy does not serve yet
        (L{Target.fromAbsoluteForm} parses them).
    """

    method: str
    target: str
    version: tuple[int, int]
    headers: tuple[tuple[str, str], ...]
    destination: Target | None = None

    def getHeader(self, name: str) -> str | None:
        """
        @param name: A header field name, in any case.
        @return: The value of the first field with that name, or C{None}.
        """
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def host(self) -> str | None:
        """
        The destination's host (see C{Target.host}), or C{None} without one.
        """
        destination = self.destination
        return None if destination is None else destination.host

    @property
    def port(self) -> int | None:
        """
        The destination's port (1-65535), or C{None} without one.
        """
        destination = self.destination
        return None if destination is None else destination.port

    @property
    def authority(self) -> str:
        """
        The destination as C{host:port}, IPv6 addresses in brackets; C{""}
        without one.
        """
        destination = self.destination
        return "" if destination is None else destination.authority


class RequestHeadParser:
    """
    Collect and parse one request head.

    @ivar _buffer: What was fed and not yet parsed.
    @ivar _searchFrom: Where in C{_buffer} to look for the end of the head
        next, so that feeding a byte at a time stays linear.
    @ivar _done: Whether a head was already returned (or refused).
    """

    def __init__(
        self,
        maxRequestLine: int = 8192,
        maxHeadSize: int = 65536,
        maxHeaderFields: int = MAX_HEADER_FIELDS,
    ) -> None:
        """
        @param maxRequestLine: Longest request line accepted, in bytes, without
            its CRLF; longer gets 414.
        @param maxHeadSize: Largest head accepted, in bytes, including the
            request line and the final empty line; larger gets 431.
        @param maxHeaderFields: Most header field lines accepted in one head
            (C{Host} included); more gets 431.
        """
        self.maxRequestLine = maxRequestLine
        self.maxHeadSize = maxHeadSize
        self.maxHeaderFields = maxHeaderFields
        self._buffer = bytearray()
        self._searchFrom = 0
        self._emptyLines = 0
        self._started = False
        self._done = False
        self._head: bytes | None = None

    def feed(self, data: bytes) -> tuple[RequestHead, bytes] | None:
        """
        Add bytes received from the client.

        @param data: The next bytes of the stream.
        @return: C{None} while the head is incomplete; then the request and
            every byte that followed its head (possibly C{b""}).
        @raise BadRequest: When the head is malformed or too large, with
            the method and target of its request line when that line is
            complete and readable (L{requestLineOf}).  The parser must not
            be fed again afterwards.
        """
        try:
            return self._feed(data)
        except BadRequest as e:
            if not (e.method or e.target):
                head = self._head
                received = bytes(self._buffer) if head is None else head + b"\r\n"
                line = requestLineOf(received, self.maxRequestLine)
                if line is not None:
                    e.method, e.target = line
            raise

    @property
    def started(self) -> bool:
        """
        Whether any byte was fed (empty lines before the request line
        included).
        """
        return self._started or bool(self._buffer) or self._emptyLines > 0

    def requestLine(self) -> tuple[str, str] | None:
        """
        The method and target of the request line received so far, for the
        log of a request refused before its head was complete (a 408).

        @return: As L{requestLineOf}, for the bytes not parsed yet.
        """
        return requestLineOf(bytes(self._buffer), self.maxRequestLine)

    def _feed(self, data: bytes) -> tuple[RequestHead, bytes] | None:
        if self._done:
            raise RuntimeError("the request head was already parsed")
        buf = self._buffer
        newFrom = len(buf)
        buf += data
        if not self._started:
            self._skipLeadingEmptyLines()
            newFrom = 0
        end = buf.find(b"\r\n\r\n", self._searchFrom)
        # Only the head is checked: what follows it is tunnel payload.
        self._checkBareLineFeeds(newFrom, len(buf) if end == -1 else end + 4)
        if end == -1:
            self._searchFrom = max(0, len(buf) - 3)
            self._checkIncompleteSize()
            return None
        headEnd = end + 4
        if headEnd > self.maxHeadSize:
            self._done = True
            raise self._headTooLarge()
        self._done = True
        head = self._head = bytes(buf[:end])
        leftover = bytes(buf[headEnd:])
        del buf[:]
        return self._parseHead(head), leftover

    def _skipLeadingEmptyLines(self) -> None:
        """
        Drop the empty lines a client may send before the request line
        (RFC 9112 section 2.2), a bounded number of them.
        """
        buf = self._buffer
        while buf.startswith(b"\r\n"):
            del buf[:2]
            self._emptyLines += 1
            if self._emptyLines > _MAX_LEADING_EMPTY_LINES:
                self._done = True
                raise BadRequest(400, "too many empty lines before the request")
        self._started = bool(buf) and buf != b"\r"

    def _checkBareLineFeeds(self, start: int, end: int) -> None:
        """
        Refuse a line feed that does not end a CRLF, as soon as it arrives.

        @param start: Where the bytes not yet checked begin.
        @param end: Where the head ends (or the buffer, if it has not).
        @raise BadRequest: (400) for a bare LF.
        """
        buf = self._buffer
        index = buf.find(b"\n", start, end)
        while index != -1:
            if index == 0 or buf[index - 1] != 0x0D:
                self._done = True
                raise BadRequest(400, "bare LF in request head")
            index = buf.find(b"\n", index + 1, end)

    def _checkIncompleteSize(self) -> None:
        """
        Refuse an incomplete head that is already too large.

        @raise BadRequest: 414 when the request line alone is too long, 431
            when the head is.
        """
        buf = self._buffer
        lineEnd = buf.find(b"\n")
        if lineEnd == -1:
            # A trailing CR may be the start of the CRLF.
            lineLength = len(buf) - 1 if buf.endswith(b"\r") else len(buf)
        else:
            lineLength = lineEnd - 1
        if lineLength > self.maxRequestLine:
            self._done = True
            raise self._lineTooLong()
        if len(buf) >= self.maxHeadSize:
            self._done = True
            raise self._headTooLarge()

    def _lineTooLong(self) -> BadRequest:
        """
        @return: The 414 for a request line over C{maxRequestLine}, naming
            the option that sets it.
        """
        return BadRequest(
            414,
            f"request line longer than {self.maxRequestLine} bytes "
            "(see --max-request-line)",
        )

    def _headTooLarge(self) -> BadRequest:
        """
        @return: The 431 for a head over C{maxHeadSize}, naming the option
            that sets it.
        """
        return BadRequest(
            431,
            f"request head larger than {self.maxHeadSize} bytes (see --max-head-size)",
        )

    def _parseHead(self, head: bytes) -> RequestHead:
        """
        Parse a complete head (without its final empty line).
        """
        lines = head.split(b"\r\n")
        for line in lines:
            if b"\r" in line or b"\n" in line:
                raise BadRequest(400, "bare CR or LF in request head")
        requestLine = lines[0]
        if len(requestLine) > self.maxRequestLine:
            raise self._lineTooLong()
        method, target, version = _parseRequestLine(requestLine)
        fieldLines = lines[1:]
        if len(fieldLines) > self.maxHeaderFields:
            raise BadRequest(
                431,
                f"more than {self.maxHeaderFields} header fields "
                "(the limit is --max-header-fields)",
            )
        headers = _parseFields(fieldLines, self.maxRequestLine)
        hosts = [value for name, value in headers if name == "host"]
        if len(hosts) > 1:
            raise BadRequest(400, "more than one Host header field")
        if version == (1, 1) and not hosts:
            raise BadRequest(400, "missing Host header field")
        if hosts and not _validHostField(hosts[0]):
            raise BadRequest(400, "invalid Host header field")
        if [name for name, _ in headers].count("proxy-authorization") > 1:
            raise BadRequest(400, "more than one Proxy-Authorization header field")
        destination: Target | None = None
        if method == "CONNECT":
            destination = Target.fromAuthorityForm(target)
            _checkNoContent(headers)
        return RequestHead(method, target, version, headers, destination)


def keepsAlive(request: RequestHead | None) -> bool:
    """
    Whether the client asked to keep its connection open after a response
    (RFC 9112 section 9.3): HTTP/1.1 unless it said C{close}, HTTP/1.0 only
    if it said C{keep-alive}.

    @param request: The request head, or C{None} when there is none.
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


def requestLineOf(data: bytes, maxLength: int = 8192) -> tuple[str, str] | None:
    """
    The method and target of the request line at the start of C{data}, for
    the log of a request refused before (or while) it was parsed.

    @param data: What a client sent, from the start of its request.
    @param maxLength: The longest request line accepted, in bytes.
    @return: C{None} unless C{data} holds a whole first line (ended by
        CRLF, after at most a few empty lines) of at most C{maxLength}
        bytes, made of three fields; then
        the method when it is a token, the target when it is printable
        ASCII (each C{""} otherwise).
    """
    start = 0
    for _ in range(_MAX_LEADING_EMPTY_LINES + 1):
        if not data.startswith(b"\r\n", start):
            break
        start += 2
    end = data.find(b"\r\n", start, start + maxLength + 2)
    if end == -1:
        return None
    parts = data[start:end].split(b" ")
    if len(parts) != 3:
        return None
    method, target = parts[0], parts[1]
    return (
        method.decode("ascii") if _TOKEN.match(method) else "",
        target.decode("ascii") if _TARGET.match(target) else "",
    )


def _parseRequestLine(line: bytes) -> tuple[str, str, tuple[int, int]]:
    """
    Split and check C{method SP request-target SP HTTP-version}.

    @raise BadRequest: 400 when malformed, 501 for an unknown method, 505 for
        an HTTP version other than 1.0 and 1.1.
    """
    parts = line.split(b" ")
    if len(parts) != 3 or not all(parts):
        raise BadRequest(400, "malformed request line")
    rawMethod, rawTarget, rawVersion = parts
    if not _TOKEN.match(rawMethod):
        raise BadRequest(400, "malformed method")
    match = _VERSION.match(rawVersion)
    if match is None:
        raise BadRequest(400, "malformed HTTP version")
    version = (int(match.group(1)), int(match.group(2)))
    if version not in ((1, 0), (1, 1)):
        raise BadRequest(505, "HTTP version not supported: use HTTP/1.1")
    if rawMethod not in KNOWN_METHODS:
        raise BadRequest(
            501, "unknown method (methods are case-sensitive: GET, not get)"
        )
    if not _TARGET.match(rawTarget):
        raise BadRequest(400, "malformed request target")
    return rawMethod.decode("ascii"), rawTarget.decode("ascii"), version


def _parseFields(lines: list[bytes], maxLine: int) -> tuple[tuple[str, str], ...]:
    """
    Parse header field lines (RFC 9112 section 5).

    @raise BadRequest: 400 for obs-fold, whitespace before the colon, a
        malformed name or a value with control bytes; 431 for an over-long
        field line.
    """
    fields = []
    for line in lines:
        if len(line) > maxLine:
            raise BadRequest(
                431,
                f"header field line longer than {maxLine} bytes "
                "(see --max-request-line)",
            )
        if line[:1] in (b" ", b"\t"):
            raise BadRequest(400, "obsolete line folding in header")
        name, colon, value = line.partition(b":")
        if not colon:
            raise BadRequest(400, "header field line without a colon")
        if not _TOKEN.match(name):
            # Covers whitespace between the name and the colon too.
            raise BadRequest(400, "malformed header field name")
        value = value.strip(b" \t")
        if not _FIELD_VALUE.match(value):
            raise BadRequest(400, "control character in header field value")
        fields.append((name.decode("ascii").lower(), value.decode("iso-8859-1")))
    return tuple(fields)


def _validHostField(value: str) -> bool:
    """
    Whether a Host field value is plausible: empty, or C{uri-host [":" port]}
    with no whitespace or controls.
    """
    return _HOST_FIELD.match(value) is not None


def _checkNoContent(headers: tuple[tuple[str, str], ...]) -> None:
    """
    A CONNECT request has no content (RFC 9110 section 9.3.6); one that
    announces some is refused so nothing can be smuggled into the tunnel.

    @raise BadRequest: 400 for C{Transfer-Encoding} or a non-zero
        C{Content-Length}.
    """
    for name, value in headers:
        if name == "transfer-encoding":
            raise BadRequest(400, "CONNECT must not have content")
        zero = value.isascii() and value.isdigit() and int(value) == 0
        if name == "content-length" and not zero:
            raise BadRequest(400, "CONNECT must not have content")
