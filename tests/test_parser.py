# -*- test-case-name: tests.test_parser -*-
"""
Tests for L{connectproxy._parser}: the incremental request-head parser and
the CONNECT authority parser, driven with plain byte strings and no transport.
"""

from __future__ import annotations

import ipaddress
import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectproxy._parser import (
    BadRequest,
    RequestHead,
    RequestHeadParser,
    parseAuthority,
    requestLineOf,
)
from connectproxy._target import Target, TargetForm

_PROPERTY = settings(max_examples=250, deadline=None)
_STATUSES = {400, 414, 431, 501, 505}
_LONG_NAME = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])  # 253 chars
_H10 = b"CONNECT a:1 HTTP/1.0\r\n"
_H11 = b"CONNECT a:1 HTTP/1.1\r\n"
_TLS_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00\r\r\n\r\n\xff"


def _parse(data: bytes, **limits: int) -> tuple[RequestHead, bytes]:
    """Feed C{data} in one call to a new parser and return its result."""
    result = RequestHeadParser(**limits).feed(data)
    assert result is not None
    return result


def _refusal(data: bytes, **limits: int) -> int:
    """Feed C{data} in one call to a new parser and return the refusal status."""
    with pytest.raises(BadRequest) as info:
        RequestHeadParser(**limits).feed(data)
    return info.value.status


def _reason(data: bytes, **limits: int) -> tuple[int, str]:
    """
    Feed C{data} in one call to a new parser and return the refusal status
    and reason.
    """
    with pytest.raises(BadRequest) as info:
        RequestHeadParser(**limits).feed(data)
    return info.value.status, info.value.reason


def _authority(host: str, port: int) -> Target:
    """The destination of a CONNECT to C{host} and C{port}."""
    return Target(host, port, TargetForm.AUTHORITY)


def _connect(target: str, version: str = "1.1") -> bytes:
    """Build a CONNECT head for C{target} with a matching Host field."""
    return f"CONNECT {target} HTTP/{version}\r\nHost: {target}\r\n\r\n".encode()


def _paddedHead(size: int, lineMax: int) -> bytes:
    """
    Build a valid HTTP/1.0 CONNECT head of exactly C{size} bytes (final CRLFCRLF
    included) whose field lines are at most C{lineMax} bytes long.
    """
    head = b"CONNECT a:1 HTTP/1.0\r\n"
    remaining = size - len(head) - 2
    count = -(-remaining // (lineMax + 2))
    for index in range(count):
        length = remaining // count + (index < remaining % count) - 2
        head += b"X:" + b"v" * (length - 2) + b"\r\n"
    head += b"\r\n"
    assert len(head) == size
    return head


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    """Split C{data} at the given cut points (clamped, possibly empty chunks)."""
    bounds = [0, *sorted(min(cut, len(data)) for cut in cuts), len(data)]
    return [data[start:end] for start, end in itertools.pairwise(bounds)]


def _feedChunks(
    parser: RequestHeadParser, chunks: list[bytes]
) -> tuple[RequestHead, bytes] | None:
    """
    Feed chunks until a result, which gets the chunks never fed appended to its
    leftover.
    """
    for index, chunk in enumerate(chunks):
        result = parser.feed(chunk)
        if result is not None:
            return result[0], result[1] + b"".join(chunks[index + 1 :])
    return None


# Valid requests.


@pytest.mark.parametrize(
    ("target", "host", "port"),
    [
        ("example.com:443", "example.com", 443),
        ("EXAMPLE.Com:80", "example.com", 80),
        ("example.com.:443", "example.com", 443),
        ("a_b-c.example:1", "a_b-c.example", 1),
        ("localhost:65535", "localhost", 65535),
        ("x:00443", "x", 443),
        ("a" * 63 + ".com:443", "a" * 63 + ".com", 443),
        (_LONG_NAME + ":443", _LONG_NAME, 443),
        (_LONG_NAME + ".:443", _LONG_NAME, 443),
        ("127.0.0.1:8080", "127.0.0.1", 8080),
        ("[::1]:443", "::1", 443),
        ("[2001:DB8:0:0:0:0:0:1]:443", "2001:db8::1", 443),
        ("[::ffff:1.2.3.4]:443", str(ipaddress.IPv6Address("::ffff:1.2.3.4")), 443),
    ],
)
def test_connectTarget(target: str, host: str, port: int) -> None:
    """A valid CONNECT target comes back as a normalised host and an integer port."""
    request, leftover = _parse(_connect(target))
    assert request == RequestHead(
        "CONNECT", target, (1, 1), (("host", target),), _authority(host, port)
    )
    assert leftover == b""


def test_http10WithoutHost() -> None:
    """An HTTP/1.0 CONNECT needs no Host field."""
    request, _ = _parse(b"CONNECT example.com:443 HTTP/1.0\r\n\r\n")
    assert (request.version, request.headers) == ((1, 0), ())
    assert (request.host, request.port) == ("example.com", 443)


def test_emptyHostField() -> None:
    """An empty Host field satisfies HTTP/1.1."""
    request, _ = _parse(b"CONNECT a:1 HTTP/1.1\r\nHost:\r\n\r\n")
    assert request.headers == (("host", ""),)


def test_headersInOrder() -> None:
    """Header fields keep their order, with names lower-cased and OWS stripped."""
    request, _ = _parse(
        b"CONNECT a:1 HTTP/1.1\r\nX-One:  a b \t\r\nHOST:a:1\r\n"
        b"x-TWO:\tv\r\nEmpty:\r\nX-One: again\r\n\r\n"
    )
    assert request.headers == (
        ("x-one", "a b"),
        ("host", "a:1"),
        ("x-two", "v"),
        ("empty", ""),
        ("x-one", "again"),
    )


def test_obsTextInValue() -> None:
    """Bytes 0x80-0xff in a field value are accepted and decoded as ISO-8859-1."""
    request, _ = _parse(b"CONNECT a:1 HTTP/1.0\r\nX: caf\xe9 \x80\xff\r\n\r\n")
    assert request.getHeader("x") == "caf\xe9 \x80\xff"


def test_contentLengthZero() -> None:
    """C{Content-Length: 0} on a CONNECT announces no content and is accepted."""
    request, _ = _parse(b"CONNECT a:1 HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
    assert request.getHeader("content-length") == "0"


@pytest.mark.parametrize("count", range(1, 9))
def test_leadingEmptyLines(count: int) -> None:
    """Up to eight empty lines before the request line are skipped."""
    head = _connect("a:1")
    assert _parse(b"\r\n" * count + head) == _parse(head)
    parser = RequestHeadParser()
    for _ in range(count):
        assert parser.feed(b"\r") is None
        assert parser.feed(b"\n") is None
    assert parser.feed(head) == _parse(head)


def test_tooManyLeadingEmptyLines() -> None:
    """A ninth empty line before the request line is refused with 400 at once."""
    assert _refusal(b"\r\n" * 9) == 400
    assert _refusal(b"\r\n" * 9 + _connect("a:1")) == 400


def test_getHeaderCaseInsensitive() -> None:
    """C{getHeader} matches any case and returns the first field, or None."""
    request, _ = _parse(b"CONNECT a:1 HTTP/1.0\r\nX-A: 1\r\nx-a: 2\r\n\r\n")
    assert request.getHeader("X-A") == "1"
    assert request.getHeader("x-a") == "1"
    assert request.getHeader("missing") is None


@pytest.mark.parametrize(
    ("host", "authority"),
    [
        ("::1", "[::1]:443"),
        ("example.com", "example.com:443"),
        ("1.2.3.4", "1.2.3.4:443"),
    ],
)
def test_authorityProperty(host: str, authority: str) -> None:
    """C{authority} formats host and port, bracketing IPv6 addresses."""
    request = RequestHead("CONNECT", authority, (1, 1), (), _authority(host, 443))
    assert request.authority == authority


@pytest.mark.parametrize(
    "line",
    [b"GET / HTTP/1.1", b"OPTIONS * HTTP/1.1", b"POST http://x/ HTTP/1.1"],
)
def test_otherKnownMethods(line: bytes) -> None:
    """Known methods other than CONNECT parse (405 is not the parser's job)."""
    request, _ = _parse(line + b"\r\nHost: x\r\n\r\n")
    assert request.method == line.split()[0].decode()
    assert (request.host, request.port) == (None, None)


# Leftover bytes.


@pytest.mark.parametrize("payload", [b"", b"x", b"\r\n\r\nCONNECT b:2", _TLS_HELLO])
def test_leftoverOneFeed(payload: bytes) -> None:
    """Everything after the head in the same chunk is returned unchanged."""
    head = _connect("a:1")
    request, leftover = _parse(head + payload)
    assert (request, leftover) == (_parse(head)[0], payload)


def test_leftoverByteByByte() -> None:
    """Fed a byte at a time, the result arrives on the final LF with no leftover."""
    head = _connect("a:1")
    parser = RequestHeadParser()
    for index in range(len(head) - 1):
        assert parser.feed(head[index : index + 1]) is None
    assert parser.feed(head[-1:]) == (_parse(head)[0], b"")


def test_leftoverInCompletingChunk() -> None:
    """The chunk that completes the head hands back what follows the head."""
    head = _connect("a:1")
    parser = RequestHeadParser()
    assert parser.feed(head[:-2]) is None
    assert parser.feed(head[-2:] + _TLS_HELLO) == (_parse(head)[0], _TLS_HELLO)


@pytest.mark.parametrize(
    "payload", [b"\n", b"a\nb", b"\x16\x03\x01\x00\x0a\x01", b"GET / HTTP/1.1\n\n"]
)
def test_leftoverWithLineFeed(payload: bytes) -> None:
    """Leftover bytes containing a LF are returned unchanged like any others."""
    head = _connect("a:1")
    assert _parse(head + payload) == (_parse(head)[0], payload)


@pytest.mark.parametrize("data", [_connect("a:1"), b"FOO / HTTP/1.1\r\n\r\n"])
def test_feedAfterDone(data: bytes) -> None:
    """Feeding a parser that returned a result or refused raises RuntimeError."""
    parser = RequestHeadParser()
    try:
        parser.feed(data)
    except BadRequest:
        pass
    with pytest.raises(RuntimeError):
        parser.feed(b"x")
    with pytest.raises(RuntimeError):
        parser.feed(b"")


# 400 Bad Request.

_BAD_AUTHORITIES = [
    *("host", "host:", "host:http", "host:0", "host:00000", "host:65536"),
    *("host:000443", "host:+443", "host:-1", "host: 443", ":443"),
    *("user@host:443", "user@[::1]:443", "::1:443", "::1", "[::1]:"),
    *("[::g]:443", "[1.2.3.4]:443", "[]:443", "[fe80::1%25eth0]:443"),
    *("[fe80::1%eth0]:443", "[::1:443", "[::1]443", "[::1]:443]"),
    *("ex ample:443", "a..b:443", ".:443", "a.com..:443", "-a.com:443"),
    *("a-.com:443", "a" * 64 + ".com:443", _LONG_NAME + "e:443", "ex\xe4mple:443"),
]


@pytest.mark.parametrize("authority", _BAD_AUTHORITIES)
def test_parseAuthorityRefuses(authority: str) -> None:
    """C{parseAuthority} refuses an invalid CONNECT target with 400."""
    with pytest.raises(BadRequest) as info:
        parseAuthority(authority)
    assert info.value.status == 400


@pytest.mark.parametrize("authority", _BAD_AUTHORITIES)
def test_badConnectTarget(authority: str) -> None:
    """A CONNECT request with an invalid target is refused with 400."""
    data = f"CONNECT {authority} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    assert _refusal(data) == 400


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_H11 + b"Host : a\r\n\r\n", id="spaceColon"),
        pytest.param(_H10 + b"X\t: a\r\n\r\n", id="tabColon"),
        pytest.param(_H11 + b"Host: a\r\nX: y\r\n z\r\n\r\n", id="fold"),
        pytest.param(_H11 + b"Host: a\r\nX: y\r\n\tz\r\n\r\n", id="foldTab"),
        pytest.param(_H11 + b" Host: a\r\n\r\n", id="foldFirst"),
        pytest.param(b"CONNECT a:1\rHTTP/1.1\r\nHost: a\r\n\r\n", id="crRequestLine"),
        pytest.param(_H11 + b"Host: a\rb\r\n\r\n", id="crValue"),
        pytest.param(_H11 + b"Host: a\r\r\n\r\n", id="crEndOfLine"),
        pytest.param(_H11 + b"Host: a\r\n\r\r\n\r\n", id="crEmptyLine"),
        pytest.param(b"\rCONNECT a:1 HTTP/1.1\r\nHost: a\r\n\r\n", id="crLeading"),
        pytest.param(_H10 + b"X: a\x00b\r\n\r\n", id="nulValue"),
        pytest.param(_H10 + b"X: a\x01\r\n\r\n", id="ctlValue"),
        pytest.param(_H10 + b"X: \x1b[0m\r\n\r\n", id="escValue"),
        pytest.param(_H10 + b"X: a\x7f\r\n\r\n", id="delValue"),
        pytest.param(_H11 + b"Host a\r\n\r\n", id="noColon"),
        pytest.param(_H10 + b"X(y): z\r\n\r\n", id="badName"),
        pytest.param(_H10 + b": z\r\n\r\n", id="emptyName"),
        pytest.param(_H10 + b"X\x80: z\r\n\r\n", id="obsTextName"),
        pytest.param(_H11 + b"\r\n", id="noHost"),
        pytest.param(_H11 + b"X: y\r\n\r\n", id="noHostFields"),
        pytest.param(_H11 + b"Host: a\r\nHost: a\r\n\r\n", id="twoHosts"),
        pytest.param(_H10 + b"Host: a\r\nhost: b\r\n\r\n", id="twoHosts10"),
        pytest.param(_H11 + b"Host: a b\r\n\r\n", id="hostSpace"),
        pytest.param(_H11 + b"Host: a\tb\r\n\r\n", id="hostTab"),
        pytest.param(_H11 + b"Host: a\x80\r\n\r\n", id="hostObsText"),
        pytest.param(_H11 + b"Host: a\x01\r\n\r\n", id="hostCtl"),
        pytest.param(b"CONNECT  a:1 HTTP/1.1\r\nHost: a\r\n\r\n", id="doubleSpace"),
        pytest.param(b"CONNECT a:1  HTTP/1.1\r\nHost: a\r\n\r\n", id="doubleSpace2"),
        pytest.param(b"CONNECT a:1 HTTP/1.1 \r\nHost: a\r\n\r\n", id="trailingSpace"),
        pytest.param(b" CONNECT a:1 HTTP/1.1\r\nHost: a\r\n\r\n", id="leadingSpace"),
        pytest.param(b"CONNECT\ta:1 HTTP/1.1\r\nHost: a\r\n\r\n", id="tabSeparator"),
        pytest.param(b"CONNECT a:1\r\nHost: a\r\n\r\n", id="noVersion"),
        pytest.param(b"CONNECT HTTP/1.1\r\nHost: a\r\n\r\n", id="noTarget"),
        pytest.param(b"CONNECT\r\n\r\n", id="methodOnly"),
        pytest.param(b"CONNECT a:1 http/1.1\r\nHost: a\r\n\r\n", id="lowerVersion"),
        pytest.param(b"CONNECT a:1 HTTP/1.10\r\nHost: a\r\n\r\n", id="version110"),
        pytest.param(b"CONNECT a:1 HTTP/1\r\nHost: a\r\n\r\n", id="version1"),
        pytest.param(b"CONNECT a:1 HTTP/11\r\nHost: a\r\n\r\n", id="version11"),
        pytest.param(b"CON(NECT a:1 HTTP/1.1\r\nHost: a\r\n\r\n", id="badMethod"),
        pytest.param(b"CONNECT a:1\x01 HTTP/1.1\r\nHost: a\r\n\r\n", id="ctlTarget"),
        pytest.param(b"CONNECT a\x7f:1 HTTP/1.1\r\nHost: a\r\n\r\n", id="delTarget"),
        pytest.param(b"CONNECT \xe9:1 HTTP/1.1\r\nHost: a\r\n\r\n", id="obsTarget"),
        pytest.param(
            _H11 + b"Host: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            id="transferEncoding",
        ),
        pytest.param(
            _H10 + b"TRANSFER-ENCODING: identity\r\n\r\n",
            id="transferEncodingUpper",
        ),
        pytest.param(_H10 + b"Content-Length: 5\r\n\r\n", id="length"),
        pytest.param(
            _H10 + b"Content-Length: 0\r\nContent-Length: 1\r\n\r\n",
            id="secondLength",
        ),
    ],
)
def test_badRequest(data: bytes) -> None:
    """A malformed head is refused with 400."""
    assert _refusal(data) == 400


@pytest.mark.parametrize(
    "data",
    [
        b"\n",
        b"CONNECT a:1 HTTP/1.1\n",
        b"CONNECT a\n:1 HTTP/1.1",
        b"CONNECT a:1 HTTP/1.1\r\nHost: a\n",
        b"CONNECT a:1 HTTP/1.1\r\n\n",
        b"\r\n\n",
        b"CONNECT a:1 HTTP/1.1\nHost: a\n\n",
    ],
)
def test_bareLineFeed(data: bytes) -> None:
    """A LF not preceded by CR is refused with 400 as soon as it arrives."""
    assert _refusal(data) == 400
    parser = RequestHeadParser()
    lineFeed = data.index(b"\n")
    assert parser.feed(data[:lineFeed]) is None
    with pytest.raises(BadRequest) as info:
        parser.feed(data[lineFeed:])
    assert info.value.status == 400


# 414 URI Too Long.


def test_requestLineAtLimit() -> None:
    """A request line of exactly C{maxRequestLine} bytes is accepted."""
    line = b"CONNECT example.com:443 HTTP/1.0"
    request, _ = _parse(line + b"\r\n\r\n", maxRequestLine=len(line))
    assert request.host == "example.com"
    path = b"/" + b"a" * (8192 - len(b"GET  HTTP/1.0") - 1)
    request, _ = _parse(b"GET " + path + b" HTTP/1.0\r\n\r\n")
    assert request.target == path.decode()


def test_requestLineTooLong() -> None:
    """
    A complete head whose request line exceeds C{maxRequestLine} gets 414
    naming the limit and the option that sets it.
    """
    line = b"CONNECT example.com:443 HTTP/1.0"
    assert _reason(line + b"\r\n\r\n", maxRequestLine=len(line) - 1) == (
        414,
        f"request line longer than {len(line) - 1} bytes (see --max-request-line)",
    )
    path = b"/" + b"a" * (8192 - len(b"GET  HTTP/1.0"))
    assert _reason(b"GET " + path + b" HTTP/1.0\r\n\r\n") == (
        414,
        "request line longer than 8192 bytes (see --max-request-line)",
    )


@pytest.mark.parametrize("limits", [{"maxRequestLine": 16}, {}])
def test_requestLineTooLongEarly(limits: dict[str, int]) -> None:
    """An unterminated request line already too long gets 414 before any CRLF."""
    limit = limits.get("maxRequestLine", 8192)
    reason = f"request line longer than {limit} bytes (see --max-request-line)"
    assert _reason(b"GET /" + b"a" * limit, **limits) == (414, reason)
    parser = RequestHeadParser(**limits)
    with pytest.raises(BadRequest) as info:
        for _ in range(limit + 2):
            parser.feed(b"a")
    assert (info.value.status, info.value.reason) == (414, reason)


def test_requestLineAtLimitThenCR() -> None:
    """C{maxRequestLine} bytes and a CR may still end in CRLF, so wait for more."""
    parser = RequestHeadParser(maxRequestLine=8)
    assert parser.feed(b"a" * 8 + b"\r") is None


def test_requestLineOneOverLimitEarly() -> None:
    """An unterminated line of C{maxRequestLine + 1} bytes, no CR, gets 414 at once."""
    assert _refusal(b"a" * 9, maxRequestLine=8) == 414


# 431 Request Header Fields Too Large.


@pytest.mark.parametrize(("lineMax", "headMax"), [(32, 64), (64, 200), (8192, 65536)])
def test_headSizeLimit(lineMax: int, headMax: int) -> None:
    """
    A head of exactly C{maxHeadSize} bytes is accepted, one more gets 431
    naming the limit and the option that sets it.
    """
    limits = {"maxRequestLine": lineMax, "maxHeadSize": headMax}
    request, leftover = _parse(_paddedHead(headMax, lineMax) + b"x", **limits)
    assert (request.host, leftover) == ("a", b"x")
    assert _reason(_paddedHead(headMax + 1, lineMax), **limits) == (
        431,
        f"request head larger than {headMax} bytes (see --max-head-size)",
    )


@pytest.mark.parametrize(("lineMax", "headMax"), [(32, 64), (8192, 65536)])
def test_incompleteHeadTooLarge(lineMax: int, headMax: int) -> None:
    """An unfinished head of C{maxHeadSize} bytes gets 431 before it completes."""
    limits = {"maxRequestLine": lineMax, "maxHeadSize": headMax}
    head = _paddedHead(headMax + 1, lineMax)
    assert RequestHeadParser(**limits).feed(head[: headMax - 1]) is None
    assert _reason(head[:headMax], **limits) == (
        431,
        f"request head larger than {headMax} bytes (see --max-head-size)",
    )


def _ordinaryFields(count: int, size: int) -> bytes:
    """
    C{count} distinct, ordinary-looking header field lines (CRLF included)
    of C{size} bytes each.
    """
    lines = []
    for index in range(count):
        line = b"X-Field-%04d: " % index
        lines.append(line + b"v" * (size - len(line) - 2) + b"\r\n")
    return b"".join(lines)


def test_fieldReportHeadAccepted() -> None:
    """
    The head of the field report: 100 ordinary fields plus C{Host}, 16 KiB
    in all, well within the size limits, is accepted by default.
    """
    head = _connect("a:1").replace(b"\r\n\r\n", b"\r\n")
    fields = _ordinaryFields(100, (16384 - len(head) - 2) // 100)
    request, leftover = _parse(head + fields + b"\r\n")
    assert len(request.headers) == 101
    assert leftover == b""


@pytest.mark.parametrize(("count", "status"), [(256, None), (257, 431)])
def test_fieldCountDefault(count: int, status: int | None) -> None:
    """
    By default 256 header fields are accepted and 257 get 431, with a reason
    that names the option to change.
    """
    data = _H10 + b"X: y\r\n" * count + b"\r\n"
    if status is None:
        assert len(_parse(data)[0].headers) == count
        return
    with pytest.raises(BadRequest) as info:
        RequestHeadParser().feed(data)
    assert info.value.status == 431
    assert "--max-header-fields" in info.value.reason
    assert "256" in info.value.reason


def test_fieldCountWithinSizeDefaults() -> None:
    """
    The default field limit is not stricter than the default size limit for
    ordinary fields: 256 fields of 250 bytes fill a head close to 64 KiB.
    """
    data = _H10 + _ordinaryFields(256, 250) + b"\r\n"
    assert len(data) <= 65536
    assert len(_parse(data)[0].headers) == 256


@pytest.mark.parametrize(("count", "status"), [(3, None), (4, 431)])
def test_fieldCountLimit(count: int, status: int | None) -> None:
    """
    C{maxHeaderFields} sets the limit; C{Host} counts as a field.
    """
    data = _H11 + b"Host: a:1\r\n" + b"X: y\r\n" * (count - 1) + b"\r\n"
    if status is None:
        assert len(_parse(data, maxHeaderFields=3)[0].headers) == count
    else:
        assert _refusal(data, maxHeaderFields=3) == status


@pytest.mark.parametrize("lineMax", [32, 8192])
def test_fieldLineLength(lineMax: int) -> None:
    """A field line of C{maxRequestLine} bytes is accepted, one more gets 431."""
    for length, status in [(lineMax, None), (lineMax + 1, 431)]:
        data = b"CONNECT a:1 HTTP/1.0\r\nX:" + b"v" * (length - 2) + b"\r\n\r\n"
        if status is None:
            assert _parse(data, maxRequestLine=lineMax)[0].getHeader("x")
        else:
            assert _reason(data, maxRequestLine=lineMax) == (
                status,
                f"header field line longer than {lineMax} bytes "
                "(see --max-request-line)",
            )


# 501 and 505.


@pytest.mark.parametrize("method", [b"FOO", b"connect", b"Connect", b"PROPFIND"])
def test_unknownMethod(method: bytes) -> None:
    """A well-formed but unknown method token gets 501 saying what works."""
    assert _reason(method + b" a:1 HTTP/1.1\r\nHost: a\r\n\r\n") == (
        501,
        "unknown method (methods are case-sensitive: GET, not get)",
    )


@pytest.mark.parametrize(
    "version", [b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.2", b"HTTP/9.9"]
)
def test_unsupportedVersion(version: bytes) -> None:
    """A well-formed HTTP version other than 1.0 and 1.1 gets 505 saying what works."""
    assert _reason(b"CONNECT a:1 " + version + b"\r\nHost: a\r\n\r\n") == (
        505,
        "HTTP version not supported: use HTTP/1.1",
    )


# Properties.

_LABEL_PATTERN = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,10}[A-Za-z0-9_])?"
_LABEL = st.from_regex(_LABEL_PATTERN, fullmatch=True)
_TOKEN = st.from_regex(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,12}", fullmatch=True)
_VALUE_BYTES = [9, *range(0x20, 0x7F), *range(0x80, 0x100)]


@st.composite
def _hostNames(draw: st.DrawFn) -> tuple[str, str]:
    """Draw a host name as sent (any case, maybe a trailing dot) and as parsed."""
    labels = draw(st.lists(_LABEL, min_size=1, max_size=4))
    # A name of numbers (or with an all-digit last label) is an IPv4
    # address or nothing.
    numeric = re.compile(r"(0[xX][0-9A-Fa-f]*|[0-9]+)\Z")
    if labels[-1].isdigit() or all(numeric.match(label) for label in labels):
        labels[-1] += draw(st.sampled_from(["g", "-y", "_"]))
    name = ".".join(labels)
    return name + draw(st.sampled_from(["", "."])), name.lower()


@st.composite
def _ipv6Literals(draw: st.DrawFn) -> tuple[str, str]:
    """Draw a bracketed IPv6 literal in some spelling, and its normal form."""
    address = draw(st.ip_addresses(v=6))
    text = draw(st.sampled_from([address.compressed, address.exploded]))
    text = text.upper() if draw(st.booleans()) else text
    return f"[{text}]", str(address)


_HOSTS = st.one_of(
    _hostNames(),
    st.ip_addresses(v=4).map(lambda address: (str(address), str(address))),
    _ipv6Literals(),
)


@st.composite
def _fields(draw: st.DrawFn) -> tuple[bytes, tuple[str, str]]:
    """Draw a header field line (without CRLF) and the parsed (name, value)."""
    name = draw(_TOKEN.filter(lambda n: n.lower() not in {"host", "content-length"}))
    value = bytes(draw(st.lists(st.sampled_from(_VALUE_BYTES), max_size=12)))
    ows = st.sampled_from([b"", b" ", b"\t", b" \t "])
    line = name.encode() + b":" + draw(ows) + value + draw(ows)
    return line, (name.lower(), value.strip(b" \t").decode("iso-8859-1"))


@st.composite
def _validRequests(draw: st.DrawFn) -> tuple[bytes, RequestHead]:
    """Draw a valid CONNECT head and the request it parses to."""
    hostText, host = draw(_HOSTS)
    port = draw(st.integers(1, 65535))
    target = f"{hostText}:{str(port).zfill(draw(st.integers(1, 5)))}"
    version = draw(st.sampled_from([(1, 0), (1, 1)]))
    fields = draw(st.lists(_fields(), max_size=4))
    if version == (1, 1) or draw(st.booleans()):
        hostField = (f"Host: {target}".encode(), ("host", target))
        fields.insert(draw(st.integers(0, len(fields))), hostField)
    head = b"\r\n" * draw(st.integers(0, 8))
    head += f"CONNECT {target} HTTP/{version[0]}.{version[1]}\r\n".encode()
    head += b"".join(line + b"\r\n" for line, _ in fields) + b"\r\n"
    headers = tuple(parsed for _, parsed in fields)
    return head, RequestHead(
        "CONNECT", target, version, headers, _authority(host, port)
    )


@_PROPERTY
@given(
    case=_validRequests(),
    leftover=st.binary(max_size=40),
    data=st.data(),
)
def test_anySplit(
    case: tuple[bytes, RequestHead], leftover: bytes, data: st.DataObject
) -> None:
    """Any split of a valid request gives the same result as feeding it at once."""
    head, expected = case
    stream = head + leftover
    assert _parse(stream) == (expected, leftover)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    assert _feedChunks(RequestHeadParser(), _chunks(stream, cuts)) == (
        expected,
        leftover,
    )


_PIECES = [b"\r\n", b"\r\n\r\n", b"\r", b"\n", b" ", b"\t", b":", b"[", b"]", b"%"]
_PIECES += [b"Host: ", b"CONNECT ", b"GET ", b" HTTP/1.1", b"\x00", b"\xff", b"0"]
_PIECES += [b"Content-Length: ", b"Transfer-Encoding: ", b"::1", b"443"]
_NOISE = st.lists(st.binary(max_size=8) | st.sampled_from(_PIECES), max_size=40)


@_PROPERTY
@given(
    prefix=st.sampled_from([b"", b"CONNECT a:1 HTTP/1.1\r\n", b"\r\n"]),
    noise=_NOISE.map(b"".join) | st.binary(max_size=300),
    cuts=st.lists(st.integers(0, 400), max_size=8),
    limits=st.sampled_from([{}, {"maxRequestLine": 24, "maxHeadSize": 96}])
    | st.fixed_dictionaries(
        {"maxRequestLine": st.integers(1, 64), "maxHeadSize": st.integers(1, 256)}
    ),
)
def test_noCrash(
    prefix: bytes, noise: bytes, cuts: list[int], limits: dict[str, int]
) -> None:
    """
    Arbitrary input, split arbitrarily, only ever yields None, a result or a
    BadRequest with a known status.
    """
    parser = RequestHeadParser(**limits)
    try:
        result = _feedChunks(parser, _chunks(prefix + noise, cuts))
    except BadRequest as error:
        assert error.status in _STATUSES
    else:
        if result is not None:
            assert isinstance(result[0], RequestHead)
            assert isinstance(result[1], bytes)


@_PROPERTY
@given(target=_HOSTS, port=st.integers(1, 65535))
def test_authorityRoundTrip(target: tuple[str, str], port: int) -> None:
    """Parsing a formatted or re-formatted authority gives back host and port."""
    hostText, host = target
    assert parseAuthority(f"{hostText}:{port}") == (host, port)
    request = RequestHead("CONNECT", "", (1, 1), (), _authority(host, port))
    assert parseAuthority(request.authority) == (host, port)


@_PROPERTY
@given(case=_validRequests())
def test_byteByByteValidHead(case: tuple[bytes, RequestHead]) -> None:
    """A valid head fed byte by byte gives None until its final LF, then the result."""
    head, expected = case
    parser = RequestHeadParser()
    for index in range(len(head) - 1):
        assert parser.feed(head[index : index + 1]) is None
    assert parser.feed(head[-1:]) == (expected, b"")


@pytest.mark.parametrize(
    "target", ["1234:443", "999.1.1.1:443", "010.1.1.1:443", "1.2.3:443"]
)
def test_allDigitNamesMustBeAddresses(target: str) -> None:
    """An all-digit host that is not a dotted-quad IPv4 address gets 400."""
    with pytest.raises(BadRequest) as raised:
        parseAuthority(target)
    assert raised.value.status == 400


@pytest.mark.parametrize("target", ["a1.b2345:443", "1.2.3.4:443", "12.example:443"])
def test_digitsInNamesAllowed(target: str) -> None:
    """Digits are fine in names whose last label is not all digits, and in
    dotted-quad addresses."""
    assert parseAuthority(target)[1] == 443


def test_zeroContentLengthSpellings() -> None:
    """Any spelling of a zero Content-Length on a CONNECT is accepted."""
    request, _ = _parse(
        b"CONNECT a:1 HTTP/1.1\r\nHost: a\r\nContent-Length: 00\r\n\r\n"
    )
    assert request.port == 1


@pytest.mark.parametrize(
    "target",
    ["0x7f000001:443", "0x7f.0x0.0x0.0x1:443", "0x7f.1:443", "017700000001:443"],
)
def test_numericNamesMustBeDottedQuads(target: str) -> None:
    """Names made only of numbers (hex, octal, decimal) that are not a
    dotted-quad IPv4 address get 400: resolvers would read them as
    addresses."""
    with pytest.raises(BadRequest) as raised:
        parseAuthority(target)
    assert raised.value.status == 400


@pytest.mark.parametrize("target", ["0xdead.example:443", "a.0x1f:443", "0x-1.com:443"])
def test_hexLookingLabelsInNamesAllowed(target: str) -> None:
    """A name with a label that is not a number stays a name."""
    assert parseAuthority(target)[1] == 443


@pytest.mark.parametrize("value", [b"\xb2", b"\xb9", b"\xbc", b"\xd9\xa0"])
def test_nonASCIIDigitsInContentLength(value: bytes) -> None:
    """A Content-Length of digits other than ASCII ones gets 400, not a
    crash."""
    head = b"CONNECT a:1 HTTP/1.1\r\nHost: a\r\nContent-Length: " + value + b"\r\n\r\n"
    with pytest.raises(BadRequest) as raised:
        RequestHeadParser().feed(head)
    assert raised.value.status == 400


# What a refusal says about the request.

_CRLF2 = b"\r\n\r\n"


@pytest.mark.parametrize(
    "data, status, method, target",
    [
        (b"CONNECT a HTTP/1.1\r\nHost: a" + _CRLF2, 400, "CONNECT", "a"),
        (b"CONNECT a:443 HTTP/1.1" + _CRLF2, 400, "CONNECT", "a:443"),
        (_H11 + b"Host: a\r\nHost: b" + _CRLF2, 400, "CONNECT", "a:1"),
        (b"CONNECT a:1 HTTP/3.0" + _CRLF2, 505, "CONNECT", "a:1"),
        (b"BREW a:1 HTTP/1.1\r\nHost: a" + _CRLF2, 501, "BREW", "a:1"),
        (_H11 + b"Host: a\r\nX: \x00" + _CRLF2, 400, "CONNECT", "a:1"),
        (_H10 + b"Content-Length: 5" + _CRLF2, 400, "CONNECT", "a:1"),
        (b"\r\n" + _H11 + b"Host: a\r\nTE: x\r\nbad" + _CRLF2, 400, "CONNECT", "a:1"),
        (_H11 + b"Host: a\nX: y" + _CRLF2, 400, "CONNECT", "a:1"),
        (_H11 + b"X: " + b"y" * 70000, 431, "CONNECT", "a:1"),
        (b"CONNECT a\x01b:1 HTTP/1.1" + _CRLF2, 400, "CONNECT", ""),
        (b"CON\x00NECT a:1 HTTP/1.1" + _CRLF2, 400, "", "a:1"),
        (b"CONNECT a:1" + _CRLF2, 400, "", ""),
        (b"CONNECT a:1 HTTP/1.1\n", 400, "", ""),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1" + _CRLF2, 414, "", ""),
        (_TLS_HELLO, 400, "", ""),
    ],
)
def test_refusalNamesRequestLine(
    data: bytes, status: int, method: str, target: str
) -> None:
    """
    A refusal carries the method and target of a request line that was
    complete and readable (a method that is a token, a target of printable
    ASCII), and none otherwise.
    """
    with pytest.raises(BadRequest) as info:
        RequestHeadParser().feed(data)
    assert (info.value.status, info.value.method, info.value.target) == (
        status,
        method,
        target,
    )


def test_requestLineOf() -> None:
    """
    L{requestLineOf} reads the method and target of a whole first line,
    after empty lines, within a length limit.
    """
    assert requestLineOf(b"CONNECT a:1 HTTP/1.1\r\n") == ("CONNECT", "a:1")
    assert requestLineOf(b"\r\n\r\nGET / HTTP/1.1\r\nHost") == ("GET", "/")
    assert requestLineOf(b"CONNECT a:1 HTTP/1.1") is None
    assert requestLineOf(b"CONNECT a:1\r\n") is None
    assert requestLineOf(b"CONNECT a:1 HTTP/1.1\r\n", maxLength=10) is None
    assert requestLineOf(b"CONNECT a:1 HTTP/1.1\r\n", maxLength=20) == (
        "CONNECT",
        "a:1",
    )


# The names before RequestHead.


def test_deprecatedParserName() -> None:
    """
    C{connectproxy.ConnectRequestParser}, deprecated, is
    L{RequestHeadParser}.
    """
    import connectproxy

    with pytest.warns(DeprecationWarning, match="get the parsed RequestHead"):
        parser = connectproxy.ConnectRequestParser
    assert parser is RequestHeadParser


def test_deprecatedRequestName() -> None:
    """
    C{connectproxy.ConnectRequest}, with a deprecation warning, still builds
    a request from its old fields (host and port, positional or by name)
    that equals the parsed head, and every parsed head is an instance of it.
    """
    import connectproxy

    with pytest.warns(DeprecationWarning, match=r"use connectproxy\.RequestHead"):
        legacy = connectproxy.ConnectRequest
    parsed, _ = _parse(_connect("example.com:443"))
    headers = (("host", "example.com:443"),)
    built = legacy(
        "CONNECT",
        "example.com:443",
        (1, 1),
        headers,
        "example.com",  # type: ignore[arg-type]
        443,  # type: ignore[call-arg]
    )
    assert built == parsed
    assert type(built) is RequestHead
    assert built.destination == _authority("example.com", 443)
    named = legacy(
        method="CONNECT",
        target="example.com:443",
        version=(1, 1),
        headers=headers,
        host="example.com",  # type: ignore[call-arg]
        port=443,
    )
    assert named == parsed
    assert isinstance(parsed, legacy)
    assert issubclass(RequestHead, legacy)
    assert not isinstance("CONNECT example.com:443", legacy)
    other = legacy("GET", "/", (1, 1), (("host", "x"),))
    assert (other.destination, other.host, other.port) == (None, None, None)
    assert other.authority == ""
