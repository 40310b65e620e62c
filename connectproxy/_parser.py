# -*- test-case-name: tests.test_parser -*-
"""
A strict, incremental, sans-I/O parser for the head of an HTTP/1.x request.

Bytes go in through L{ConnectRequestParser.feed}; out comes C{None} (more
bytes are needed), a C{(ConnectRequest, leftover)} pair, or a L{BadRequest}
carrying the status the proxy should answer with.  Nothing here touches a
transport or a clock.

The grammar is RFC 9112 (message syntax) and RFC 9110 (semantics); the
authority form of a CONNECT target is RFC 9110 section 9.3.6 with the host
syntax of RFC 3986 section 3.2.2.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ._errors import BadRequest

__all__ = [
    "KNOWN_METHODS",
    "MAX_HEADER_FIELDS",
    "BadRequest",
    "ConnectRequest",
    "ConnectRequestParser",
    "parseAuthority",
    "requestLineOf",
]

#: Methods defined by RFC 9110 (and PATCH, RFC 5789).  Any other token gets
#: 501; these get 405 when they are not CONNECT.
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
# A field value: visible ASCII, obs-text, SP and HTAB (RFC 9110 section 5.5).
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*\Z")
# A DNS-style host name label: letters, digits, hyphen and underscore.
_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\Z")
_PORT = re.compile(r"[0-9]{1,5}\Z")
# A number as inet_aton reads one: decimal, octal or hexadecimal.
_NUMBER = re.compile(r"(0[xX][0-9A-Fa-f]*|[0-9]+)\Z")

#: The default limit on header fields in one head (C{--max-header-fields}).
MAX_HEADER_FIELDS = 256
_MAX_LEADING_EMPTY_LINES = 8


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """
    A parsed request head.

    @ivar method: The request method, for example C{"CONNECT"}.
    @ivar target: The request-target exactly as sent.
    @ivar version: C{(1, 0)} or C{(1, 1)}.
    @ivar headers: The header fields in order, names lower-cased, values
        decoded as ISO-8859-1 (lossless) with surrounding whitespace removed.
    @ivar host: For CONNECT, the target host: a lower-cased name, a dotted
        IPv4 address, or an IPv6 address without brackets.  C{None} for other
        methods.
    @ivar port: For CONNECT, the target port (1-65535); C{None} otherwise.
    """

    method: str
    target: str
    version: tuple[int, int]
    headers: tuple[tuple[str, str], ...]
    host: str | None = None
    port: int | None = None

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
    def authority(self) -> str:
        """
        The CONNECT target as C{host:port}, IPv6 addresses in brackets.
        """
        host = self.host or ""
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.port}"


def parseAuthority(authority: str) -> tuple[str, int]:
    """
    Parse the authority form of a CONNECT request-target (C{host:port}).

    @param authority: The request-target.
    @return: The host (lower-cased name, IPv4 address, or IPv6 address without
        brackets) and the port.
    @raise BadRequest: (400) when it is not a valid C{host:port}.
    """
    if authority.startswith("["):
        end = authority.find("]")
        if end == -1:
            raise BadRequest(400, "unterminated IPv6 literal in target")
        literal = authority[1:end]
        rest = authority[end + 1 :]
        try:
            host = str(ipaddress.IPv6Address(literal))
        except ValueError:
            raise BadRequest(400, "invalid IPv6 literal in target") from None
        if "%" in literal:
            raise BadRequest(400, "zone identifiers are not allowed in target")
        if not rest.startswith(":"):
            raise BadRequest(400, "CONNECT target needs a port")
        portText = rest[1:]
    else:
        host, sep, portText = authority.rpartition(":")
        if not sep:
            raise BadRequest(400, "CONNECT target needs a port")
        host = _checkHostName(host)
    return host, _checkPort(portText)


def _checkHostName(host: str) -> str:
    """
    Validate a reg-name or IPv4 address from an authority.

    @return: The host, lower-cased, without one trailing dot.
    @raise BadRequest: When it is empty or not a plausible host name.
    """
    if not host:
        raise BadRequest(400, "CONNECT target needs a host")
    if "@" in host:
        raise BadRequest(400, "user information is not allowed in target")
    if ":" in host:
        raise BadRequest(400, "IPv6 addresses must be in brackets")
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise BadRequest(400, "invalid host name in target")
    if labels[-1].isdigit() or all(_NUMBER.match(label) for label in labels):
        # Names made of numbers are IPv4 addresses or nothing: resolvers
        # read "1234", "010.1.1.1" or "0x7f.1" as addresses (inet_aton),
        # which rules written for dotted quads would not see.
        try:
            ipaddress.IPv4Address(name)
        except ValueError:
            raise BadRequest(400, "invalid IPv4 address in target") from None
    return name.lower()


def _checkPort(portText: str) -> int:
    """
    Validate the port of a CONNECT target (RFC 9110 section 9.3.6).

    @raise BadRequest: When it is empty, not a number, zero or above 65535.
    """
    if not portText:
        raise BadRequest(400, "CONNECT target needs a port")
    if not _PORT.match(portText):
        raise BadRequest(400, "invalid port in target")
    port = int(portText)
    if not 0 < port < 65536:
        raise BadRequest(400, "port out of range in target")
    return port


class ConnectRequestParser:
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

    def feed(self, data: bytes) -> tuple[ConnectRequest, bytes] | None:
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

    def requestLine(self) -> tuple[str, str] | None:
        """
        The method and target of the request line received so far, for the
        log of a request refused before its head was complete (a 408).

        @return: As L{requestLineOf}, for the bytes not parsed yet.
        """
        return requestLineOf(bytes(self._buffer), self.maxRequestLine)

    def _feed(self, data: bytes) -> tuple[ConnectRequest, bytes] | None:
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

    def _parseHead(self, head: bytes) -> ConnectRequest:
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
        host: str | None = None
        port: int | None = None
        if method == "CONNECT":
            host, port = parseAuthority(target)
            _checkNoContent(headers)
        return ConnectRequest(method, target, version, headers, host, port)


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
        raise BadRequest(501, "unknown method: this proxy only tunnels with CONNECT")
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
    return all(0x21 <= ord(c) <= 0x7E for c in value)


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
