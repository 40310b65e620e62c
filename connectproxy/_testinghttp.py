# -*- test-case-name: tests.test_testing -*-
"""
What goes over a client's connection in a test, for L{connectproxy.testing}:
a transport that records half-closes and aborts, the reading of the
responses a proxy wrote (L{readResponses}, strict about RFC 9112 framing),
and the CONNECT head a client sends (L{connectHead}).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from twisted.internet.testing import StringTransport

__all__ = [
    "HalfCloseableStringTransport",
    "Response",
    "connectHead",
    "readResponses",
]


class HalfCloseableStringTransport(StringTransport):
    """
    A L{StringTransport} that also records C{loseWriteConnection} and
    C{abortConnection}.

    @ivar writeClosed: Whether C{loseWriteConnection} was called.
    @ivar aborted: Whether C{abortConnection} was called.
    """

    writeClosed = False
    aborted = False

    def loseWriteConnection(self) -> None:
        self.writeClosed = True

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


@dataclass(frozen=True, slots=True)
class Response:
    """
    One HTTP response, as L{FakeClient.responses
    <connectproxy.testing.FakeClient.responses>} reads it.

    @ivar version: The HTTP version of the status line, for example
        C{(1, 1)}.
    @ivar status: The status code.
    @ivar phrase: The reason phrase, perhaps C{""}.
    @ivar headers: The header fields in order, as C{(name, value)} pairs:
        the name as sent, the value without surrounding whitespace, both
        decoded as ISO-8859-1 (which keeps every byte).
    @ivar body: The body: as many bytes as C{Content-Length} says, or all
        that followed the head when the proxy closed the connection without
        one; always C{b""} for a 1xx, 2xx, 204 or 304 response.
    """

    version: tuple[int, int]
    status: int
    phrase: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """
        @param name: A header field name, in any case.
        @return: The value of the first field with that name, or C{None}.
        """
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


_STATUS_LINE = re.compile(
    r"HTTP/([0-9])\.([0-9]) ([0-9]{3}) ([^\x00-\x08\x0a-\x1f\x7f]*)"
)
_FIELD_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def readResponses(data: bytes, closed: bool) -> list[Response]:
    """
    Parse the responses in what a server wrote (RFC 9112 sections 4 to 6).

    @param data: Everything the server wrote.
    @param closed: Whether the server closed the connection after it (a
        body without C{Content-Length} then ends with the connection).
    @raise AssertionError: For anything but complete responses.
    """
    found: list[Response] = []
    while data:
        head, separator, rest = data.partition(b"\r\n\r\n")
        if not separator:
            raise AssertionError(f"incomplete response head: {data[:200]!r}")
        statusLine, *lines = head.decode("iso-8859-1").split("\r\n")
        match = _STATUS_LINE.fullmatch(statusLine)
        if match is None:
            raise AssertionError(f"malformed status line: {statusLine!r}")
        headers = tuple(_readField(line) for line in lines)
        status = int(match.group(3))
        version = (int(match.group(1)), int(match.group(2)))
        lengths = {v for n, v in headers if n.lower() == "content-length"}
        if any(n.lower() == "transfer-encoding" for n, _ in headers):
            raise AssertionError(f"a {status} response with Transfer-Encoding")
        if status < 200 or 200 <= status < 300 or status in (204, 304):
            body, data = b"", rest
        elif not lengths:
            if not closed:
                raise AssertionError(
                    f"a {status} response without Content-Length on a "
                    "connection that is still open"
                )
            body, data = rest, b""
        else:
            length = _contentLength(lengths)
            if len(rest) < length:
                raise AssertionError(
                    f"incomplete body: {len(rest)} of {length} bytes: {rest[:200]!r}"
                )
            body, data = rest[:length], rest[length:]
        found.append(Response(version, status, match.group(4), headers, body))
        if 200 <= status < 300:
            break
    return found


def _readField(line: str) -> tuple[str, str]:
    """
    @return: The name and value of a field line (RFC 9112 section 5).
    @raise AssertionError: For a line folded onto the previous one, a
        name that is not a token, or a control character in the value.
    """
    name, colon, value = line.partition(":")
    if not colon or _FIELD_NAME.fullmatch(name) is None:
        raise AssertionError(f"malformed header field line: {line!r}")
    value = value.strip(" \t")
    if any((c < " " and c != "\t") or c == "\x7f" for c in value):
        raise AssertionError(f"control character in header field: {line!r}")
    return name, value


def _contentLength(values: set[str]) -> int:
    """
    @param values: The distinct values of the C{Content-Length} fields.
    @return: The length they agree on.
    @raise AssertionError: When they disagree or one is not a number.
    """
    if len(values) != 1 or not next(iter(values)).isdigit():
        raise AssertionError(f"invalid Content-Length: {sorted(values)!r}")
    return int(next(iter(values)))


def connectHead(
    target: str = "example.com:443", *fields: str, version: str = "1.1"
) -> bytes:
    """
    Build a complete CONNECT request head, as a client sends it.

    @param target: The authority to tunnel to, C{host:port}; it is also
        the value of the C{Host} field.
    @param fields: More header field lines, each C{"Name: value"}.
    @param version: The HTTP version of the request line.
    @return: The head, encoded as ISO-8859-1 (so that a test can send any
        byte in a field).
    """
    lines = [f"CONNECT {target} HTTP/{version}", f"Host: {target}", *fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("iso-8859-1")
