"""
Tests for the keep-alive of HTTP/1.0 clients of plain HTTP forwarding (RFC
9112 section 9.3 and Appendix C.2.2): the connection is kept, and the
client told so, only after a response whose length it can tell.
"""

from __future__ import annotations

import pytest

from connectproxy._handler import Phase
from connectproxy._rules import PortRules
from tests._forwarding import connectOrigin, forwardingHarness, get, phaseOf
from tests._helpers import authHarness, rulesWith

KEEP = "Connection: keep-alive"
URL = "http://example.com/index.html"


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\n\r\n",
    ],
)
def test_keptAfterLengthDelimited(response: bytes) -> None:
    """
    An HTTP/1.0 client that asked for keep-alive gets C{Connection:
    keep-alive} with a response whose end it can tell, and its connection
    carries the next request.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get(URL, KEEP, version="1.0", host=None))
    origin = connectOrigin(harness)
    origin.send(response)
    value = client.transport.value()
    assert value.startswith(response.split(b"\r\n")[0])
    head = value.split(b"\r\n\r\n")[0].lower()
    assert b"connection: keep-alive" in head
    assert b"close" not in head
    assert value.endswith(response.split(b"\r\n\r\n", 1)[1])
    assert not client.transport.disconnecting
    assert phaseOf(client) is Phase.HEAD
    client.send(get("http://example.com/next", KEEP, version="1.0", host=None))
    assert phaseOf(client) is not Phase.HEAD or client.transport.value() != value


@pytest.mark.parametrize(
    ("response", "body"),
    [
        (b"HTTP/1.0 200 OK\r\n\r\nsome bytes", b"some bytes"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4\r\nsome\r\n6\r\n bytes\r\n0\r\n\r\n",
            b"some bytes",
        ),
    ],
)
def test_closedAfterNoLength(response: bytes, body: bytes) -> None:
    """
    A response without a length (read until the origin closes, or chunked)
    reaches an HTTP/1.0 client with keep-alive as it comes, with
    C{Connection: close}, and the connection is closed after it.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get(URL, KEEP, version="1.0", host=None))
    origin = connectOrigin(harness)
    origin.send(response)
    if response.startswith(b"HTTP/1.0"):
        origin.finish()
    value = client.transport.value()
    assert value.startswith(b"HTTP/1.1 200 OK\r\n")
    head, _, received = value.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    assert b"keep-alive" not in head.lower()
    assert b"transfer-encoding" not in head.lower()
    assert received == body
    assert client.transport.disconnecting


def test_http10WithoutKeepAliveCloses() -> None:
    """
    An HTTP/1.0 client that did not ask for keep-alive gets C{Connection:
    close}, whatever the response.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get(version="1.0", host=None))
    origin = connectOrigin(harness)
    origin.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    head = client.transport.value().split(b"\r\n\r\n")[0].lower()
    assert b"connection: close" in head
    assert client.transport.disconnecting


def test_challengeTellsHttp10Client() -> None:
    """
    A 407 keeps an HTTP/1.0 client's connection only if it asked for
    keep-alive, and then says so; otherwise it closes.
    """
    rules = rulesWith(ports=PortRules.fromStrings(["80"]))
    harness, _ = authHarness(rules=rules)
    client = harness.connectClient()
    client.send(get(URL, KEEP, version="1.0", host=None))
    value = client.transport.value()
    assert value.startswith(b"HTTP/1.1 407 ")
    assert b"Connection: keep-alive" in value
    assert not client.transport.disconnecting
    harness, _ = authHarness(rules=rules)
    client = harness.connectClient()
    client.send(get(version="1.0", host=None))
    value = client.transport.value()
    assert value.startswith(b"HTTP/1.1 407 ")
    assert b"Connection: close" in value
    assert client.transport.disconnecting


def test_localAnswerTellsHttp10Client() -> None:
    """
    The proxy's own answer to C{OPTIONS} with C{Max-Forwards: 0} keeps an
    HTTP/1.0 client's connection if it asked, and says so.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(
        get(
            "http://example.com/",
            KEEP,
            "Max-Forwards: 0",
            method="OPTIONS",
            version="1.0",
            host=None,
        )
    )
    value = client.transport.value()
    assert value.startswith(b"HTTP/1.1 200 ")
    assert b"Connection: keep-alive" in value
    assert not client.transport.disconnecting
