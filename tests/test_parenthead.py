# -*- test-case-name: tests.test_parenthead -*-
"""
Tests for L{connectproxy._parenthead}: the reader of a parent proxy's answer
to CONNECT, with plain byte strings.
"""

from __future__ import annotations

import pytest

from connectproxy._parenthead import (
    MalformedResponse,
    ParentResponse,
    ParentResponseReader,
)

ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"


def readAll(
    data: bytes, reader: ParentResponseReader | None = None
) -> tuple[ParentResponse, bytes]:
    """
    Feed C{data} in one call and return the result, which must be complete.
    """
    result = (reader or ParentResponseReader()).feed(data)
    assert result is not None
    return result


def readBytewise(data: bytes, **limits: int) -> tuple[ParentResponse, bytes] | None:
    """
    Feed C{data} one byte at a time to a reader with C{limits}; return the
    result once there is one, with every byte after the one that completed
    it appended to the leftover.
    """
    reader = ParentResponseReader(**limits)
    for index in range(len(data)):
        result = reader.feed(data[index : index + 1])
        if result is not None:
            response, leftover = result
            return response, leftover + data[index + 1 :]
    return None


def malformed(data: bytes, **limits: int) -> str:
    """
    The reason a reader with C{limits} refuses C{data} with, fed at once and
    byte by byte (the same either way).
    """
    with pytest.raises(MalformedResponse) as whole:
        ParentResponseReader(**limits).feed(data)
    with pytest.raises(MalformedResponse) as split:
        readBytewise(data, **limits)
    assert split.value.reason == whole.value.reason
    return whole.value.reason


def test_established() -> None:
    """
    A 200 with a reason phrase and no header fields.
    """
    response, leftover = readAll(ESTABLISHED)
    assert response == ParentResponse((1, 1), 200, "Connection established", ())
    assert response.successful
    assert leftover == b""


def test_bytesAfterTheHeadAreLeftOver() -> None:
    """
    What follows the head in the same chunk is the tunnel's first bytes,
    untouched, even when it looks like HTTP.
    """
    tail = b"\x16\x03\x01 server hello\r\nHTTP/1.1 200 OK\r\n\r\n\n\r"
    _, leftover = readAll(ESTABLISHED + tail)
    assert leftover == tail


def test_splitAnywhere() -> None:
    """
    Fed one byte at a time, the same head and leftover come out.
    """
    data = b"HTTP/1.0 200 OK\r\nVia: 1.1 squid\r\nX-A:  b \r\n\r\nearly"
    assert readBytewise(data) == readAll(data)
    response, leftover = readAll(data)
    assert response.version == (1, 0)
    assert response.headers == (("via", "1.1 squid"), ("x-a", "b"))
    assert leftover == b"early"


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_every2xxOpens(status: int) -> None:
    """
    Any 2xx is a success (RFC 9110 section 9.3.6); Content-Length and
    Transfer-Encoding on it are ignored, so the bytes after the head are
    tunnel data.
    """
    head = (
        f"HTTP/1.1 {status} Whatever\r\nContent-Length: 5\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    response, leftover = readAll(head + b"12345678")
    assert response.successful
    assert leftover == b"12345678"


@pytest.mark.parametrize("status", [101, 300, 403, 407, 502, 503, 504, 599])
def test_othersFail(status: int) -> None:
    """
    Any other final status is not a success, and what follows the head is
    handed back as it came (the caller never relays it).
    """
    response, leftover = readAll(f"HTTP/1.1 {status} No\r\n\r\nbody".encode())
    assert response.status == status
    assert not response.successful
    assert leftover == b"body"


def test_noReasonPhrase() -> None:
    """
    The reason phrase may be empty, and its space may be missing.
    """
    assert readAll(b"HTTP/1.1 200 \r\n\r\n")[0].reason == ""
    assert readAll(b"HTTP/1.1 200\r\n\r\n")[0].reason == ""


def test_interimResponsesDropped() -> None:
    """
    1xx responses before the final one are read and dropped (RFC 9110
    section 15.2), split or not.
    """
    data = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + ESTABLISHED + b"x"
    )
    response, leftover = readAll(data)
    assert (response.status, leftover) == (200, b"x")
    assert readBytewise(data) == (response, leftover)


def test_tooManyInterimResponses() -> None:
    """
    A parent that answers with interim responses only is cut off.
    """
    data = b"HTTP/1.1 100 Continue\r\n\r\n" * 3 + ESTABLISHED
    assert malformed(data, maxInterim=2) == "more than 2 interim (1xx) responses"
    assert readAll(data, ParentResponseReader(maxInterim=3))[0].status == 200


def test_incompleteNeedsMore() -> None:
    """
    Until the empty line, the reader needs more.
    """
    reader = ParentResponseReader()
    assert reader.feed(b"HTTP/1.1 200 OK\r\n") is None
    assert reader.feed(b"Via: x\r\n\r") is None
    assert reader.feed(b"\n") == (
        ParentResponse((1, 1), 200, "OK", (("via", "x"),)),
        b"",
    )


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\n\n",
        b"HTTP/1.1 200 OK\r\nVia: x\n\r\n",
        b"HTTP/1.1 200 OK\rVia: x\r\n\r\n",
        b"HTTP/1.1 200 O\rK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nVia: x\r\r\n\r\n",
        b"\nHTTP/1.1 200 OK\r\n\r\n",
    ],
)
def test_bareLineEnds(data: bytes) -> None:
    """
    A CR or LF that is not part of a CRLF is an error, never a line end,
    whether the head is complete or not.
    """
    assert malformed(data) == "bare CR or LF in response head"


def test_bareLineEndFoundEarly() -> None:
    """
    A bare LF is refused as soon as it arrives, before the head is
    complete.
    """
    reader = ParentResponseReader()
    assert reader.feed(b"HTTP/1.1 200 OK\r\n") is None
    with pytest.raises(MalformedResponse):
        reader.feed(b"Via: x\nmore")


def test_trailingCRWaits() -> None:
    """
    A CR at the end of what has arrived may be the start of a CRLF.
    """
    reader = ParentResponseReader()
    assert reader.feed(b"HTTP/1.1 200 OK\r") is None
    assert reader.feed(b"\n\r") is None
    assert reader.feed(b"\n") is not None


@pytest.mark.parametrize(
    "line",
    [
        b"HTTP/1.1 20 OK",
        b"HTTP/1.1 2000 OK",
        b"HTTP/1.1 099 OK",
        b"HTTP/1.1 600 OK",
        b"HTTP/2 200 OK",
        b"HTTP/1.2 200 OK",
        b"HTTP/1.1  200 OK",
        b"http/1.1 200 OK",
        b"HTTP/1.1 2x0 OK",
        b"ICY 200 OK",
        b"",
    ],
)
def test_malformedStatusLine(line: bytes) -> None:
    """
    The status line is C{HTTP/1.x SP 3DIGIT [SP reason]}, nothing else.
    """
    assert malformed(line + b"\r\n\r\n") == "malformed status line"


def test_controlInReason() -> None:
    """
    A reason phrase with a control byte is refused.
    """
    reason = malformed(b"HTTP/1.1 200 O\x00K\r\n\r\n")
    assert reason == "control character in reason phrase"


@pytest.mark.parametrize(
    ("field", "reason"),
    [
        (b" folded", "obsolete line folding in response header"),
        (b"\tfolded", "obsolete line folding in response header"),
        (b"NoColon", "response header field line without a colon"),
        (b"Bad Name: x", "malformed response header field name"),
        (b"Name : x", "malformed response header field name"),
        (b": x", "malformed response header field name"),
        (b"Name: a\x00b", "control character in response header field"),
        (b"Name: a\x7fb", "control character in response header field"),
    ],
)
def test_malformedFields(field: bytes, reason: str) -> None:
    """
    Header field lines follow RFC 9112 section 5.
    """
    assert malformed(b"HTTP/1.1 200 OK\r\n" + field + b"\r\n\r\n") == reason


def test_obsTextAllowed() -> None:
    """
    Bytes above 0x7f in values and reasons are obs-text, decoded as
    ISO-8859-1.
    """
    response, _ = readAll(b"HTTP/1.1 200 \xe9t\xe9\r\nX: caf\xe9\r\n\r\n")
    assert response.reason == "\xe9t\xe9"
    assert response.headers == (("x", "caf\xe9"),)


def test_headTooLarge() -> None:
    """
    A head larger than the limit is refused, complete or not, and the
    reader keeps no more than the limit.
    """
    reader = ParentResponseReader(maxHeadSize=64)
    assert reader.feed(b"HTTP/1.1 200 OK\r\n") is None
    with pytest.raises(MalformedResponse) as raised:
        reader.feed(b"X: " + b"a" * 60)
    assert raised.value.reason == "response head larger than 64 bytes"
    big = b"HTTP/1.1 200 OK\r\nX: " + b"a" * 41 + b"\r\n\r\n"
    assert malformed(big, maxHeadSize=64) == ("response head larger than 64 bytes")
    assert readAll(big, ParentResponseReader(maxHeadSize=len(big)))[0].status == 200


def test_interimHeadsCountAgainstTheLimit() -> None:
    """
    The size limit covers the interim heads too.
    """
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    data = interim + ESTABLISHED
    limit = len(data) - 1
    assert (
        malformed(data, maxHeadSize=limit)
        == f"response head larger than {len(data) - 1} bytes"
    )
    assert readAll(data, ParentResponseReader(maxHeadSize=len(data)))[0].status == 200


def test_tooManyFields() -> None:
    """
    More header fields than the limit are refused.
    """
    head = b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 3 + b"\r\n"
    assert malformed(head, maxHeaderFields=2) == ("more than 2 header fields")
    assert readAll(head, ParentResponseReader(maxHeaderFields=3))[0].status == 200


def test_notFedAfterTheEnd() -> None:
    """
    Once it has answered or refused, the reader takes nothing more.
    """
    reader = ParentResponseReader()
    reader.feed(ESTABLISHED)
    with pytest.raises(RuntimeError):
        reader.feed(b"more")
    broken = ParentResponseReader()
    with pytest.raises(MalformedResponse):
        broken.feed(b"nonsense\r\n\r\n")
    with pytest.raises(RuntimeError):
        broken.feed(b"more")


def test_bytewiseIsLinear() -> None:
    """
    Feeding a large head a byte at a time does not rescan what was already
    checked (a quadratic reader would take seconds here).
    """
    head = b"HTTP/1.1 200 OK\r\n" + b"X-Filler: " + b"a" * 60000 + b"\r\n\r\n"
    response, _ = readBytewise(head) or (None, b"")
    assert response is not None and response.status == 200
