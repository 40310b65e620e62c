# -*- test-case-name: tests.test_forwardframing -*-
"""
The framing rules of plain HTTP forwarding, one by one: requests whose body
the next hop could read differently are answered 400 and never forwarded;
responses framed badly get 502.  Sans-I/O tests of L{connectproxy._messages}
and protocol tests through a whole proxy.
"""

from __future__ import annotations

import h11
import pytest

from connectproxy import ProxySettings
from connectproxy._errors import BadRequest
from connectproxy._exchange import (
    BadRequestBody,
    BadResponse,
    ClosedEarly,
    Exchange,
    ParentChallenge,
    latin1,
)
from connectproxy._messages import Framing, requestFraming
from connectproxy._parser import RequestHeadParser
from connectproxy.testing import FakeClient, ProxyHarness
from tests._forwarding import Origin, connectOrigin, forwardingHarness, get


def head(*fields: str, version: str = "1.1") -> bytes:
    """
    A POST head with C{fields}.
    """
    return get("http://example.com/", *fields, method="POST", version=version)


def parse(data: bytes) -> Framing:
    """
    The framing of the request head C{data}.
    """
    parsed = RequestHeadParser().feed(data)
    assert parsed is not None
    return requestFraming(parsed[0])


# The rules, sans I/O.


@pytest.mark.parametrize(
    ("fields", "framing"),
    [
        ((), Framing()),
        (("Content-Length: 0",), Framing(length=0)),
        (("Content-Length: 12",), Framing(length=12)),
        (("Content-Length: 12", "Content-Length: 12"), Framing(length=12)),
        (("Content-Length: 12, 12",), Framing(length=12)),
        (("Transfer-Encoding: chunked",), Framing(chunked=True)),
        (("Transfer-Encoding: Chunked",), Framing(chunked=True)),
    ],
)
def test_validFraming(fields: tuple[str, ...], framing: Framing) -> None:
    """
    A body announced once, clearly, has the framing it says.
    """
    assert parse(head(*fields)) == framing


@pytest.mark.parametrize(
    ("fields", "version", "reason"),
    [
        (
            ("Content-Length: 5", "Transfer-Encoding: chunked"),
            "1.1",
            "a request must not have both Content-Length and Transfer-Encoding",
        ),
        (
            ("Transfer-Encoding: chunked",),
            "1.0",
            "Transfer-Encoding is not allowed in HTTP/1.0",
        ),
        (
            ("Transfer-Encoding: gzip, chunked",),
            "1.1",
            "the only Transfer-Encoding this proxy forwards is chunked",
        ),
        (
            ("Transfer-Encoding: chunked, gzip",),
            "1.1",
            "the only Transfer-Encoding this proxy forwards is chunked",
        ),
        (
            ("Transfer-Encoding: chunked", "Transfer-Encoding: chunked"),
            "1.1",
            "the only Transfer-Encoding this proxy forwards is chunked",
        ),
        (
            ("Transfer-Encoding: identity",),
            "1.1",
            "the only Transfer-Encoding this proxy forwards is chunked",
        ),
        (("Content-Length: 5", "Content-Length: 6"), "1.1", "several different"),
        (("Content-Length: 5, 6",), "1.1", "several different"),
        (("Content-Length: -1",), "1.1", "invalid Content-Length"),
        (("Content-Length: 0x10",), "1.1", "invalid Content-Length"),
        (("Content-Length: 5,",), "1.1", "invalid Content-Length"),
    ],
)
def test_smugglingFramingRefused(
    fields: tuple[str, ...], version: str, reason: str
) -> None:
    """
    Every framing a next hop could read differently is refused with 400.
    """
    with pytest.raises(BadRequest) as info:
        parse(head(*fields, version=version))
    assert info.value.status == 400
    assert info.value.reason.startswith(reason)


# The rules through a whole proxy: never forwarded.


@pytest.mark.parametrize(
    ("fields", "version"),
    [
        (("Content-Length: 5", "Transfer-Encoding: chunked"), "1.1"),
        (("Transfer-Encoding: chunked",), "1.0"),
        (("Transfer-Encoding: gzip, chunked",), "1.1"),
        (("Transfer-Encoding: chunked, gzip",), "1.1"),
        (("Content-Length: 5", "Content-Length: 6"), "1.1"),
    ],
)
def test_requestRefusedBeforeConnecting(fields: tuple[str, ...], version: str) -> None:
    """
    A request framed ambiguously is answered 400 and the connection closed;
    no upstream connection is even attempted.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(head(*fields, version=version) + b"5\r\nhello\r\n0\r\n\r\n")
    assert client.transport.value().startswith(b"HTTP/1.1 400 ")
    assert b"Connection: close" in client.transport.value()
    assert harness.connector.attempts == []
    [refused] = harness.observer.refused
    assert refused.outcome == "bad_request"


def _chunked(
    settings: ProxySettings | None = None,
) -> tuple[ProxyHarness, FakeClient, Origin]:
    """
    A proxy forwarding a chunked POST, connected to its origin.
    """
    harness = forwardingHarness(settings)
    client = harness.connectClient()
    client.send(head("Transfer-Encoding: chunked"))
    origin = connectOrigin(harness)
    return harness, client, origin


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\nhello\r\n0\r\n\r\n",
        b"-5\r\nhello\r\n0\r\n\r\n",
        b"5\nhello\r\n0\r\n\r\n",
        b"5\r\nhelloXX0\r\n\r\n",
    ],
)
def test_badChunk400(body: bytes) -> None:
    """
    A bad chunk size, a bare LF in a chunk line, or a chunk without its
    CRLF gets 400 and close; nothing of it reaches the origin, whose
    connection is aborted.
    """
    _, client, origin = _chunked()
    before = origin.read()
    client.send(body)
    value = client.transport.value()
    assert value.startswith(b"HTTP/1.1 400 ")
    assert b"malformed chunked request body" in value
    assert origin.transport.aborted
    # The body is framed again for the origin: the malformed chunk never
    # reaches it as sent.
    assert body not in origin.read()[len(before) :]


def test_longChunkExtensionOverSeveralReads() -> None:
    """
    A chunk line whose extension grows past the limit over several reads
    gets 400 naming the option, and the origin connection is aborted.
    """
    _, client, origin = _chunked(ProxySettings(maxRequestLine=1024, maxHeadSize=4096))
    client.send(b"5;ext=")
    for _ in range(20):
        if client.transport.value():
            break
        client.send(b"x" * 100)
    value = client.transport.value()
    assert value.startswith(b"HTTP/1.1 400 ")
    assert b"--max-request-line" in value
    assert origin.transport.aborted
    assert origin.body() == b""


def test_longTrailer() -> None:
    """
    A trailer section past the limit is refused the same way.
    """
    _, client, _origin = _chunked(ProxySettings(maxRequestLine=1024, maxHeadSize=4096))
    client.send(b"0\r\nX-T: " + b"y" * 2000)
    assert client.transport.value().startswith(b"HTTP/1.1 400 ")


def test_truncatedBody400() -> None:
    """
    A client that half-closes before the end of its body gets 400.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(head("Content-Length: 10") + b"abc")
    origin = connectOrigin(harness)
    client.protocol.readConnectionLost()
    value = client.transport.value()
    assert value.startswith(b"HTTP/1.1 400 ")
    assert b"the client closed before the end of its request body" in value
    assert origin.transport.aborted


# Responses.


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
    ],
)
def test_badResponseFraming502(response: bytes) -> None:
    """
    A response framed ambiguously or malformed gets 502 and the origin
    connection aborted.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    origin = connectOrigin(harness)
    origin.send(response)
    value = client.transport.value()
    assert value.startswith(b"HTTP/1.1 502 "), value
    assert b"the origin's response is not valid HTTP" in value
    assert origin.transport.aborted
    [refused] = harness.observer.refused
    assert (refused.status, refused.outcome) == (502, "upstream_failed")


def test_badChunkInResponseAborts() -> None:
    """
    A bad chunk once the response head reached the client aborts the
    client's connection; the exchange is reported cut short.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    origin = connectOrigin(harness)
    origin.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    origin.send(b"zz\r\n")
    assert client.transport.aborted
    assert origin.transport.aborted
    [record] = harness.observer.forwarded
    assert (record.status, record.outcome) == (200, "upstream_failed")


def test_truncatedResponseAborts() -> None:
    """
    An origin that closes before the end of a Content-Length body gets the
    client's connection aborted, not a clean end.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    origin = connectOrigin(harness)
    origin.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    origin.lose()
    assert client.transport.aborted
    [record] = harness.observer.forwarded
    assert record.outcome == "upstream_failed"


# The exchange, sans I/O.


def exchange(
    *fields: str, method: str = "POST", throughParent: bool = False
) -> tuple[Exchange, list[bytes], list[bytes]]:
    """
    An L{Exchange} for a request with C{fields}, begun, and what it wrote
    upstream and to the client.
    """
    parsed = RequestHeadParser().feed(
        get("http://example.com/", *fields, method=method)
    )
    assert parsed is not None
    request = parsed[0]
    framing = requestFraming(request)
    outgoing = h11.Request(
        method=method,
        target="/",
        headers=latin1([("Host", "example.com"), *framing.fields()]),
    )
    upstream: list[bytes] = []
    client: list[bytes] = []
    result = Exchange(
        request,
        outgoing,
        framing,
        upstream.append,
        client.append,
        1024,
        4096,
        throughParent,
    )
    result.begin()
    return result, upstream, client


def test_exchangeReframes() -> None:
    """
    The exchange sends the request head and the body as the origin's
    framing says, and the response to the client, tracking where each
    message is.
    """
    ex, upstream, client = exchange("Transfer-Encoding: chunked")
    assert b"".join(upstream).startswith(b"POST / HTTP/1.1\r\n")
    ex.fromClient(b"3;x\r\nabc\r\n0\r\n\r\nGET next")
    assert b"".join(upstream).endswith(b"3\r\nabc\r\n0\r\n\r\n")
    assert ex.requestComplete and bytes(ex.leftover) == b"GET next"
    ex.fromOrigin(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert (ex.status, ex.responseComplete) == (200, True)
    assert b"".join(client).endswith(b"\r\n\r\nok")
    assert ex.originReusable and ex.clientReusable


def test_exchangeErrors() -> None:
    """
    A bad body, a close before the response, a bad response and a
    parent's 407 each come out as their exception.
    """
    ex, _, _ = exchange("Transfer-Encoding: chunked")
    with pytest.raises(BadRequestBody):
        ex.fromClient(b"zz\r\n")
    ex, _, _ = exchange(method="GET")
    with pytest.raises(ClosedEarly):
        ex.originFinished()
    ex, _, _ = exchange(method="GET")
    with pytest.raises(BadResponse):
        ex.fromOrigin(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
        )
    ex, _, _ = exchange(method="GET", throughParent=True)
    with pytest.raises(ParentChallenge):
        ex.fromOrigin(b"HTTP/1.1 407 No\r\nContent-Length: 0\r\n\r\n")
