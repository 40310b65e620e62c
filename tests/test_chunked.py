"""
Tests for L{connectproxy._chunked}: chunked bodies read strictly, with the
same verdict however the reads split them.
"""

from __future__ import annotations

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectproxy import ProxySettings
from connectproxy._chunked import ChunkedChecker, ChunkError
from tests._forwarding import connectOrigin, forwardingHarness, get


def checker(
    maxLine: int = 100, maxFields: int | None = 4, maxSection: int = 200
) -> ChunkedChecker:
    return ChunkedChecker(maxLine, maxFields, maxSection, "--max-request-line")


def run(data: bytes, cuts: list[int], **kwargs: int) -> tuple[str, bytes]:
    """
    Feed C{data} split at C{cuts}; the verdict (C{"ok"}, C{"incomplete"},
    or the reason of the error) and what h11 was given.
    """
    c = checker(**kwargs)
    given_ = []
    start = 0
    try:
        for cut in [*sorted(set(cuts)), len(data)]:
            given_.append(c.feed(data[start:cut]))
            start = cut
    except ChunkError as e:
        return (e.reason or "malformed"), b""
    return ("ok" if c.done else "incomplete"), b"".join(given_)


def decode(data: bytes) -> bytes:
    """
    What h11 reads of a chunked body.
    """
    server = h11.Connection(h11.SERVER)
    server.receive_data(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + data
    )
    body = b""
    while True:
        event = server.next_event()
        if isinstance(event, h11.Data):
            body += event.data
        elif event is h11.NEED_DATA or isinstance(event, h11.EndOfMessage):
            return body


@pytest.mark.parametrize(
    "body",
    [
        b"5\r\nhello\r\n0\r\n\r\n",
        b"5;a=b\r\nhello\r\n0\r\n\r\n",
        b"5 ;a=b\r\nhello\r\n0\r\n\r\n",
        b'5\t; a = "q \\" x"\r\nhello\r\n0\r\n\r\n',
        b"005\r\nhello\r\n0\r\nX-T: 1\r\nY:\r\n\r\n",
        b"0\r\n\r\n",
    ],
)
def test_valid(body: bytes) -> None:
    """
    Valid bodies, with extensions (whitespace before C{;} included, RFC
    9112 section 7.1.1) and trailers, are accepted; h11 reads their data
    from what the checker gives it, without the trailers.
    """
    verdict, out = run(body, [])
    assert verdict == "ok"
    assert decode(out) == b"hello" * (b"hello" in body)
    assert b"X-T" not in out


@pytest.mark.parametrize(
    "body",
    [
        b"5 \r\nhello\r\n0\r\n\r\n",
        b"5;a=b \r\nhello\r\n0\r\n\r\n",
        b"5;\r\nhello\r\n0\r\n\r\n",
        b"0\r\n\n",
        b"0\n\n",
        b"5\nhello\r\n0\r\n\r\n",
        b"5\r\nhelloX\r\n0\r\n\r\n",
        b"zz\r\n",
        b"-5\r\n",
        b"0\r\nX T: 1\r\n\r\n",
        b"0\r\n folded\r\n\r\n",
        b"0\r\nX-T: 1\n\r\n",
        b"1" * 17 + b"\r\n",
    ],
)
def test_malformed(body: bytes) -> None:
    """
    A space before the CRLF of a chunk line, a bare LF anywhere (the final
    empty line included), a bad size, a chunk without its CRLF, a bad
    trailer line: refused as soon as the line is complete.
    """
    assert run(body, [])[0] == "malformed"


def test_bareLfRefusedAtOnce() -> None:
    """
    A bare-LF last chunk is refused at once, not left waiting for a CRLF.
    """
    with pytest.raises(ChunkError):
        checker().feed(b"0\n")
    c = checker()
    c.feed(b"0\r\n")
    with pytest.raises(ChunkError):
        c.feed(b"\n")


def test_limits() -> None:
    """
    Each limit is exact, and its reason names the option.
    """
    assert run(b"1;" + b"a" * 98 + b"\r\nx\r\n0\r\n\r\n", [])[0] == "ok"
    assert run(b"1;" + b"a" * 99 + b"\r\nx\r\n0\r\n\r\n", [])[0] == (
        "chunk line longer than 100 bytes (see --max-request-line)"
    )
    assert run(b"0\r\nX: " + b"a" * 97 + b"\r\n\r\n", [])[0] == "ok"
    assert run(b"0\r\nX: " + b"a" * 98 + b"\r\n\r\n", [])[0] == (
        "trailer field line longer than 100 bytes (see --max-request-line)"
    )
    assert run(b"0\r\n" + b"a: b\r\n" * 4 + b"\r\n", [])[0] == "ok"
    assert run(b"0\r\n" + b"a: b\r\n" * 5 + b"\r\n", [])[0] == (
        "more than 4 trailer fields (see --max-header-fields)"
    )
    line = b"X: " + b"a" * 95 + b"\r\n"  # 100 bytes
    assert run(b"0\r\n" + line * 2 + b"\r\n", [], maxSection=202)[0] == "ok"
    assert run(b"0\r\n" + line * 2 + b"\r\n", [], maxSection=201)[0] == (
        "trailer section larger than 201 bytes (see --max-head-size)"
    )


def test_passesThrough() -> None:
    """
    A read with nothing to rewrite is given back as it is; what follows
    the body is given back after it.
    """
    c = checker()
    data = b"5;x=y\r\nhello\r\n"
    assert c.feed(data) is data
    assert c.feed(b"0\r\nT: 1\r\n\r\nGET next") == b"0\r\n\r\nGET next"
    assert c.done


_bodies = st.sampled_from(
    [
        b"5;" + b"a" * 60 + b"\r\nhello\r\n0\r\n\r\n",
        b"5;" + b"a" * 200 + b"\r\nhello\r\n0\r\n\r\n",
        b"5 ;a=b\r\nhello\r\n0\r\nT: 1\r\n\r\nNEXT",
        b"5 \r\nhello\r\n0\r\n\r\n",
        b"0\r\n" + b"a: b\r\n" * 5 + b"\r\n",
        b"0\r\n" + b"a: b\r\n" * 3 + b"\r\n",
        b"0\r\nX: " + b"a" * 98 + b"\r\n\r\n",
        b"0\r\n" + (b"X: " + b"a" * 95 + b"\r\n") * 2 + b"\r\n",
        b"3\r\nabc\r\n0\r\n\n",
        b"3\r\nabc\r\n0\n\n",
    ]
)


@settings(max_examples=300, deadline=None)
@given(_bodies, st.lists(st.integers(min_value=0, max_value=300), max_size=12))
def test_anySplitSameVerdict(body: bytes, cuts: list[int]) -> None:
    """
    Any split of the same bytes gives the same verdict, and h11 reads the
    same body from what it is given.
    """
    cuts = [cut for cut in cuts if cut <= len(body)]
    whole = run(body, [])
    split = run(body, cuts)
    assert split[0] == whole[0]
    assert decode(split[1]) == decode(whole[1])


# Through the proxy.


_LONG = b"5;" + b"a" * 60_000 + b"\r\nhello\r\n0\r\n\r\n"


@pytest.mark.parametrize("pieces", [1, 7, 1000])
def test_longChunkLineAnySplit(pieces: int) -> None:
    """
    A chunk line past --max-request-line gets 400 naming it, whether it
    came in one read or many.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get("http://example.com/", "Transfer-Encoding: chunked", method="POST"))
    origin = connectOrigin(harness)
    size = -(-len(_LONG) // pieces)
    for start in range(0, len(_LONG), size):
        if client.transport.value():
            break
        client.send(_LONG[start : start + size])
    value = client.transport.value()
    assert value.startswith(b"HTTP/1.1 400 "), value[:100]
    assert b"chunk line longer than 8192 bytes (see --max-request-line)" in value
    assert origin.transport.aborted


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            b"0\r\n" + b"a: b\r\n" * 20_000 + b"\r\n",
            b"more than 4 trailer fields (see --max-header-fields)",
        ),
        (
            b"0\r\n" + (b"a: " + b"b" * 1000 + b"\r\n") * 3 + b"\r\n",
            b"trailer section larger than 2048 bytes (see --max-head-size)",
        ),
        (b"0\r\n\n", b"malformed chunked request body"),
        (b"0\n\n", b"malformed chunked request body"),
        (b"5 \r\nhello\r\n0\r\n\r\n", b"malformed chunked request body"),
    ],
)
def test_trailerLimitsAndBareLf(body: bytes, reason: bytes) -> None:
    """
    Too many trailer fields, too large a trailer section, a bare-LF end
    and a space before a chunk line's CRLF get 400 at once, with their
    reason.
    """
    harness = forwardingHarness(
        ProxySettings(maxRequestLine=1024, maxHeadSize=2048, maxHeaderFields=4)
    )
    client = harness.connectClient()
    client.send(get("http://example.com/", "Transfer-Encoding: chunked", method="POST"))
    connectOrigin(harness)
    client.send(body)
    value = client.transport.value()
    assert value.startswith(b"HTTP/1.1 400 "), value[:100]
    assert reason in value


def test_bwsBeforeExtensionForwarded() -> None:
    """
    C{5 ;a=b} is valid (RFC 9112 section 7.1.1): the body is forwarded.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get("http://example.com/", "Transfer-Encoding: chunked", method="POST"))
    origin = connectOrigin(harness)
    client.send(b"5 ;a=b\r\nhel")
    client.send(b"lo\r\n0\r\nT: 1\r\n\r\n")
    assert decode(origin.body()) == b"hello"
    assert origin.body().endswith(b"0\r\n\r\n")
    origin.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert client.transport.value().startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize(
    "body",
    [
        b"5 \r\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\r\n0\r\n\n",
        b"5\r\nhello\r\n0\n\n",
        b"1;" + b"a" * 70_000 + b"\r\nx\r\n0\r\n\r\n",
    ],
)
@pytest.mark.parametrize("split", [False, True])
def test_badResponseChunks502(body: bytes, split: bool) -> None:
    """
    The same checks apply to a chunked response (a chunk line past
    --max-head-size), in one read with its head or in many: 502.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    origin = connectOrigin(harness)
    response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    if split:
        for index in range(0, len(response), 7):
            if origin.transport.aborted:
                break
            origin.send(response[index : index + 7])
    else:
        origin.send(response)
    assert origin.transport.aborted
    assert client.transport.aborted or client.transport.value().startswith(
        b"HTTP/1.1 502 "
    )


def test_responseBwsAndTrailers() -> None:
    """
    A chunked response with C{5 ;a=b} and trailers, in one read with its
    head, reaches the client whole (trailers dropped).
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    origin = connectOrigin(harness)
    origin.send(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5 ;a=b\r\nhello\r\n0\r\nT: 1\r\n\r\n"
    )
    value = client.transport.value()
    assert value.startswith(b"HTTP/1.1 200 ")
    assert value.endswith(b"5\r\nhello\r\n0\r\n\r\n")
    assert not origin.transport.aborted
