# -*- test-case-name: tests.test_parenthead -*-
"""
A strict, incremental, sans-I/O reader for a parent proxy's answer to
C{CONNECT}: L{ParentResponseReader}.

Bytes go in through L{ParentResponseReader.feed}; out comes C{None} (more
bytes are needed), or the final response head and every byte that followed
it, or L{MalformedResponse}.  Interim (1xx) responses before the final one
are read and dropped (RFC 9110 section 15.2).  Nothing here touches a
transport or a clock.

Where the head ends decides where the tunnel begins, so the reader accepts
only what RFC 9112 allows there: every line ends with CRLF, and a bare CR
or LF anywhere in a head is an error, never a line end.  After a 2xx the
bytes that follow the head are the first bytes of the tunnel; after any
other status they are the response's content, which the proxy never
relays.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "MAX_INTERIM_RESPONSES",
    "MAX_RESPONSE_HEAD",
    "MAX_RESPONSE_HEADER_FIELDS",
    "MalformedResponse",
    "ParentResponse",
    "ParentResponseReader",
]

#: The largest response head accepted, in bytes, interim heads included.
MAX_RESPONSE_HEAD = 65536

#: The most header fields accepted in one response head.
MAX_RESPONSE_HEADER_FIELDS = 256

#: The most interim (1xx) responses accepted before the final one.
MAX_INTERIM_RESPONSES = 8

_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-5][0-9][0-9])(?: (.*))?\Z", re.S)
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# A field value or reason phrase: visible ASCII, obs-text, SP and HTAB
# (RFC 9110 section 5.5, RFC 9112 section 4).
_TEXT = re.compile(rb"[\t\x20-\x7e\x80-\xff]*\Z")


class MalformedResponse(Exception):
    """
    The parent's response head is not valid HTTP/1.1, or is too large.

    @ivar reason: A short phrase saying what is wrong, free of the
        response's own bytes.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ParentResponse:
    """
    A parent proxy's final response head.

    @ivar version: C{(1, 0)} or C{(1, 1)}.
    @ivar status: The status code, 200-599 (or 101).
    @ivar reason: The reason phrase, decoded as ISO-8859-1 (it may be
        empty).
    @ivar headers: The header fields in order, names lower-cased, values
        decoded as ISO-8859-1 without surrounding whitespace.
    """

    version: tuple[int, int]
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]

    @property
    def successful(self) -> bool:
        """
        Whether the parent opened the tunnel: a 2xx (RFC 9110 section
        9.3.6).
        """
        return 200 <= self.status <= 299


class ParentResponseReader:
    """
    Collect and parse the response to one C{CONNECT}.

    @ivar _buffer: What was fed and not yet parsed.
    @ivar _searchFrom: Where in C{_buffer} to look for the end of the head
        next, so that feeding a byte at a time stays linear.
    @ivar _checked: How much of C{_buffer} has been checked for bare CR
        and LF.
    @ivar _consumed: Bytes of interim heads already read and dropped.
    @ivar _interim: How many interim heads were dropped.
    """

    def __init__(
        self,
        maxHeadSize: int = MAX_RESPONSE_HEAD,
        maxHeaderFields: int = MAX_RESPONSE_HEADER_FIELDS,
        maxInterim: int = MAX_INTERIM_RESPONSES,
    ) -> None:
        """
        @param maxHeadSize: Largest response head accepted, in bytes, with
            its final empty line and any interim heads before it.
        @param maxHeaderFields: Most header fields accepted in one head.
        @param maxInterim: Most interim (1xx) responses accepted.
        """
        self.maxHeadSize = maxHeadSize
        self.maxHeaderFields = maxHeaderFields
        self.maxInterim = maxInterim
        self._buffer = bytearray()
        self._searchFrom = 0
        self._checked = 0
        self._consumed = 0
        self._interim = 0
        self._done = False

    def feed(self, data: bytes) -> tuple[ParentResponse, bytes] | None:
        """
        Add bytes received from the parent.

        @param data: The next bytes of the stream.
        @return: C{None} while the final head is incomplete; then the final
            response and every byte that followed its head (possibly
            C{b""}).
        @raise MalformedResponse: When a head is malformed or too large.
            The reader must not be fed again afterwards.
        @raise RuntimeError: When fed after it returned or raised.
        """
        if self._done:
            raise RuntimeError("the response head was already read")
        self._buffer += data
        try:
            while True:
                result = self._nextHead()
                if result is None:
                    return None
                response, leftover = result
                if 100 <= response.status <= 199 and response.status != 101:
                    self._dropInterim(leftover)
                    continue
                self._done = True
                return response, leftover
        except MalformedResponse:
            self._done = True
            del self._buffer[:]
            raise

    def _nextHead(self) -> tuple[ParentResponse, bytes] | None:
        """
        Parse the head at the start of the buffer, if it is complete.
        """
        buf = self._buffer
        end = buf.find(b"\r\n\r\n", self._searchFrom)
        limit = self.maxHeadSize - self._consumed
        if end == -1:
            self._checkLineEnds(len(buf))
            if len(buf) >= limit:
                raise self._tooLarge()
            self._searchFrom = max(0, len(buf) - 3)
            return None
        headEnd = end + 4
        if headEnd > limit:
            raise self._tooLarge()
        self._checkLineEnds(end)
        response = self._parseHead(bytes(buf[:end]))
        leftover = bytes(buf[headEnd:])
        self._consumed += headEnd
        del buf[:]
        self._searchFrom = 0
        self._checked = 0
        return response, leftover

    def _dropInterim(self, leftover: bytes) -> None:
        """
        Forget an interim response and go on with what followed it.
        """
        self._interim += 1
        if self._interim > self.maxInterim:
            raise MalformedResponse(
                f"more than {self.maxInterim} interim (1xx) responses"
            )
        self._buffer += leftover

    def _checkLineEnds(self, end: int) -> None:
        """
        Refuse a CR or LF that is not part of a CRLF, among the bytes not
        checked yet before C{end}.  A CR that is the last byte received may
        be the start of a CRLF: it is checked again when more arrives.

        @raise MalformedResponse: For a bare CR or LF.
        """
        buf = self._buffer
        start = self._checked
        index = buf.find(b"\n", start, end)
        while index != -1:
            if index == 0 or buf[index - 1] != 0x0D:
                raise MalformedResponse("bare CR or LF in response head")
            index = buf.find(b"\n", index + 1, end)
        index = buf.find(b"\r", start, end)
        while index != -1:
            if index + 1 == len(buf):
                end = index
                break
            if buf[index + 1] != 0x0A:
                raise MalformedResponse("bare CR or LF in response head")
            index = buf.find(b"\r", index + 1, end)
        self._checked = max(start, end)

    def _tooLarge(self) -> MalformedResponse:
        return MalformedResponse(f"response head larger than {self.maxHeadSize} bytes")

    def _parseHead(self, head: bytes) -> ParentResponse:
        """
        Parse a complete head (without its final empty line).
        """
        lines = head.split(b"\r\n")
        match = _STATUS_LINE.match(lines[0])
        if match is None:
            raise MalformedResponse("malformed status line")
        reason = match.group(3) or b""
        if not _TEXT.match(reason):
            raise MalformedResponse("control character in reason phrase")
        fieldLines = lines[1:]
        if len(fieldLines) > self.maxHeaderFields:
            raise MalformedResponse(f"more than {self.maxHeaderFields} header fields")
        return ParentResponse(
            (1, int(match.group(1))),
            int(match.group(2)),
            reason.decode("iso-8859-1"),
            _parseFields(fieldLines),
        )


def _parseFields(lines: list[bytes]) -> tuple[tuple[str, str], ...]:
    """
    Parse header field lines (RFC 9112 section 5).

    @raise MalformedResponse: For obs-fold, a line without a colon, a
        malformed name (whitespace before the colon included) or a value
        with control bytes.
    """
    fields = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            raise MalformedResponse("obsolete line folding in response header")
        name, colon, value = line.partition(b":")
        if not colon:
            raise MalformedResponse("response header field line without a colon")
        if not _TOKEN.match(name):
            raise MalformedResponse("malformed response header field name")
        value = value.strip(b" \t")
        if not _TEXT.match(value):
            raise MalformedResponse("control character in response header field")
        fields.append((name.decode("ascii").lower(), value.decode("iso-8859-1")))
    return tuple(fields)
