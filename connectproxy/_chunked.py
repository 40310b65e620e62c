# -*- test-case-name: tests.test_chunked -*-
"""
A strict reader of chunked transfer coding (RFC 9112 section 7.1) in front
of C{h11}: L{ChunkedChecker}.

C{h11} bounds only the lines it sees incomplete, so whether an over-long
chunk line passed depended on where the reads split the stream; it also
accepts a space before the CRLF of a chunk line, a bare LF ending the
trailer section, and refuses the whitespace RFC 9112 allows before a
chunk extension's C{;}.  The checker reads every chunk line and trailer
line itself, whole, whatever the reads: each is checked against the
grammar and the limits the moment it is complete (or, incomplete, the
moment it passes its limit), and C{h11} is given the same body with
each chunk line in a form it reads (C{SIZE CRLF} when needed: extensions
are dropped anyway) and an empty trailer section (trailers are dropped,
RFC 9110 section 6.5.1).  Chunk data passes through untouched; a read
with no chunk line to rewrite is handed on as it is, without a copy.
"""

from __future__ import annotations

import re

__all__ = ["ChunkError", "ChunkedChecker"]

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
# chunk-size [ chunk-ext ], RFC 9112 section 7.1.1: chunk-ext =
# *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ).
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]+)((?:[ \t]*;[ \t]*"
    + _TOKEN
    + rb"(?:[ \t]*=[ \t]*(?:"
    + _TOKEN
    + rb"|"
    + _QUOTED
    + rb"))?)*)"
)
# field-name ":" OWS field-value OWS (RFC 9110 section 5), no obs-fold.
_FIELD_LINE = re.compile(_TOKEN + rb":[\t -~\x80-\xff]*")

_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)

# The largest chunk size read: 2**63 - 1 bytes (h11 reads at most 20 hex
# digits; the canonical line given to it has at most 16).
_MAX_CHUNK = (1 << 63) - 1


class ChunkError(Exception):
    """
    A chunked body is malformed or passes a limit.

    @ivar reason: What to tell the peer and the operator, naming the
        option to change when a limit was passed (C{None} for a malformed
        body, whose detail is the exception's message).
    """

    def __init__(self, detail: str, reason: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason


class ChunkedChecker:
    """
    Reads a chunked body as it arrives, in reads split anywhere, and gives
    back what C{h11} is to read of it.

    @ivar done: Whether the body ended (its last chunk and trailer section
        were read).
    """

    def __init__(
        self,
        maxLine: int,
        maxTrailerFields: int | None,
        maxTrailerSection: int,
        lineOption: str,
    ) -> None:
        """
        @param maxLine: Longest chunk line or trailer field line, in bytes,
            without its CRLF.
        @param maxTrailerFields: Most trailer field lines (C{None}: no
            bound but C{maxTrailerSection}).
        @param maxTrailerSection: Largest trailer section, in bytes, its
            field lines and the final empty line with their CRLFs.
        @param lineOption: The option that sets C{maxLine}, for the reason
            of a refusal.
        """
        self._maxLine = maxLine
        self._maxFields = maxTrailerFields
        self._maxSection = maxTrailerSection
        self._lineOption = lineOption
        self._state = _SIZE
        self._remaining = 0
        self._line = bytearray()
        self._fields = 0
        self._section = 0
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """
        Read the next bytes of the body (and, once it ends, of what
        follows it, returned as they are).

        @param data: The bytes received.
        @return: The bytes for C{h11}: C{data} itself unless a chunk line
            had to be rewritten, spanned reads, or trailers were dropped.
        @raise ChunkError: As soon as the body is known to be malformed or
            a line or the trailer section passes its limit.
        """
        out: list[bytes] | None = None
        # data[kept:pos] is owed to the output unchanged.
        kept = pos = 0
        end = len(data)
        while pos < end:
            state = self._state
            if state == _DATA:
                step = min(self._remaining, end - pos)
                pos += step
                self._remaining -= step
                if not self._remaining:
                    self._state = _DATA_END
                    self._remaining = 2
                continue
            if state == _DATA_END:
                expected = b"\r\n"[2 - self._remaining :]
                got = data[pos : pos + len(expected)]
                if not expected.startswith(got):
                    raise ChunkError("a chunk's data is not followed by CRLF")
                pos += len(got)
                self._remaining -= len(got)
                if not self._remaining:
                    self._state = _SIZE
                continue
            if state == _DONE:
                pos = end
                break
            # A line: _SIZE or _TRAILER.
            start = pos
            newline = data.find(b"\n", pos)
            if newline == -1:
                self._line += data[pos:]
                self._checkIncomplete()
                if out is None:
                    out = []
                out.append(data[kept:start])
                kept = pos = end
                break
            pos = newline + 1
            whole = not self._line
            line = (
                self._line + data[start:newline] if not whole else data[start:newline]
            )
            self._line = bytearray()
            replacement = self._completeLine(bytes(line), whole)
            if replacement is not None:
                if out is None:
                    out = []
                out.append(data[kept:start])
                out.append(replacement)
                kept = pos
        if out is None:
            return data
        out.append(data[kept:])
        return b"".join(out)

    def _checkIncomplete(self) -> None:
        """
        Refuse an incomplete line already past its limit (its last byte
        may be the CR of its CRLF).
        """
        line = self._line
        self._checkLength(len(line) - (line[-1:] == b"\r"))

    def _checkLength(self, length: int) -> None:
        """
        Refuse a line whose content (without its CRLF) is C{length} bytes
        or more, if that passes a limit: the same verdict whether the line
        is complete or not, so that it does not depend on the reads.
        """
        if length > self._maxLine:
            raise self._tooLong()
        if self._state == _TRAILER and self._section + length + 2 > self._maxSection:
            raise self._sectionTooLarge()

    def _tooLong(self) -> ChunkError:
        what = "chunk line" if self._state == _SIZE else "trailer field line"
        return ChunkError(
            f"{what} too long",
            f"{what} longer than {self._maxLine} bytes (see {self._lineOption})",
        )

    def _sectionTooLarge(self) -> ChunkError:
        return ChunkError(
            "trailer section too large",
            f"trailer section larger than {self._maxSection} bytes "
            "(see --max-head-size)",
        )

    def _completeLine(self, line: bytes, whole: bool) -> bytes | None:
        """
        A line is complete (C{line}, with its CR, without its LF).

        @param whole: Whether it came in the current read (else its start
            was held back, and must be given to C{h11} now).
        @return: What to give C{h11} instead of the line, or C{None} to
            give it the line as received.
        """
        crlf = line.endswith(b"\r")
        content = line[:-1] if crlf else line
        self._checkLength(len(content))
        if not crlf:
            raise ChunkError("bare LF in a chunk line or trailer")
        if self._state == _SIZE:
            return self._sizeLine(content, whole)
        self._section += len(content) + 2
        if not content:
            # The end of the trailer section: h11 gets an empty one.
            self._state = _DONE
            self.done = True
            return b"\r\n"
        if _FIELD_LINE.fullmatch(content) is None:
            raise ChunkError(f"malformed trailer field line: {content[:64]!r}")
        self._fields += 1
        if self._maxFields is not None and self._fields > self._maxFields:
            raise ChunkError(
                "too many trailer fields",
                f"more than {self._maxFields} trailer fields (see --max-header-fields)",
            )
        return b""

    def _sizeLine(self, content: bytes, whole: bool) -> bytes | None:
        """
        A complete chunk line: its size starts the chunk's data, or (0)
        the trailer section.
        """
        match = _CHUNK_LINE.fullmatch(content)
        if match is None:
            raise ChunkError(f"illegal chunk line: {content[:64]!r}")
        size = int(match.group(1), 16)
        if size > _MAX_CHUNK:
            raise ChunkError("chunk size too large")
        if size:
            self._state = _DATA
            self._remaining = size
        else:
            self._state = _TRAILER
        digits = len(match.group(1))
        if whole and digits <= 16 and content[digits : digits + 1] in (b"", b";"):
            return None
        return b"%x\r\n" % size
