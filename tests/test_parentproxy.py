# -*- test-case-name: tests.test_parentproxy -*-
"""
The whole proxy with a parent-proxy connector, on a memory reactor: the
client's early bytes are held until the parent's 2xx (the request desync of
Envoy's CVE-2025-64763), the parent's bytes after its 2xx reach the client,
and each way the parent fails reaches the client as its status.
"""

from __future__ import annotations

import pytest
from twisted.internet.error import ConnectionRefusedError
from twisted.logger import LogEvent
from twisted.python.failure import Failure

from connectproxy import ProxySettings
from connectproxy._parent import ParentProxyConnector
from connectproxy._parenturl import ParentProxy
from connectproxy.testing import (
    FakeClient,
    FakeResolver,
    ProxyHarness,
    connectorContext,
)
from tests._fakeparent import ESTABLISHED, FakeParent

REQUEST = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
OK = b"HTTP/1.1 200 Connection established\r\n\r\n"


def harnessWithParent(
    url: str = "http://alice:s3cret@parent.example:3128",
) -> ProxyHarness:
    """
    A proxy whose connector goes through the parent at C{url}
    (C{parent.example} is 192.0.2.50).
    """
    harness = ProxyHarness(ProxySettings(connectTimeout=5.0))
    context = connectorContext(
        harness.clock, resolver=FakeResolver({"parent.example": ["192.0.2.50"]})
    )
    harness.factory.connector = ParentProxyConnector(
        harness.clock,
        ParentProxy.fromURL(url),
        5.0,
        context.networks,
        context.resolverPool,
    )
    return harness


def requestThroughParent(
    early: bytes = b"",
) -> tuple[ProxyHarness, FakeClient, FakeParent]:
    """
    A client's CONNECT, with C{early} bytes in the same chunk, and the
    parent's connection, not answered yet.
    """
    harness = harnessWithParent()
    client = harness.connectClient()
    client.send(REQUEST + early)
    return harness, client, FakeParent(harness.clock)


def test_earlyDataHeldUntilTheParentAnswers() -> None:
    """
    Bytes the client sends with its request reach the parent only after the
    parent's 2xx, right after the proxy's own CONNECT, never before it.
    """
    harness, client, parent = requestThroughParent(b"\x16\x03\x01client hello")
    head = parent.received()
    assert head.startswith(b"CONNECT example.com:443 HTTP/1.1\r\n")
    assert head.endswith(b"\r\n\r\n")
    client.send(b" and more")
    assert parent.received() == head
    assert client.transport.value() == b""
    parent.send(ESTABLISHED[:10])
    parent.send(ESTABLISHED[10:])
    assert parent.received() == head + b"\x16\x03\x01client hello and more"
    assert client.transport.value() == OK
    [record] = harness.observer.opened
    assert record.upstream == "192.0.2.50:3128"


def test_earlyDataSplitAnswer() -> None:
    """
    With the parent's answer arriving a byte at a time, nothing of the
    client's reaches the parent before the answer's last byte.
    """
    _, client, parent = requestThroughParent(b"early")
    head = parent.received()
    for index in range(len(ESTABLISHED) - 1):
        parent.send(ESTABLISHED[index : index + 1])
        assert parent.received() == head
        assert client.transport.value() == b""
    parent.send(ESTABLISHED[-1:])
    assert parent.received() == head + b"early"


def test_bytesAfterTheAnswerReachTheClient() -> None:
    """
    What the parent sends after its 2xx head, in the same chunk, reaches the
    client after the proxy's 200; then the tunnel relays both ways.
    """
    harness, client, parent = requestThroughParent()
    parent.send(ESTABLISHED + b"server hello")
    assert client.transport.value() == OK + b"server hello"
    parent.clear()
    client.send(b"request")
    parent.send(b"response")
    assert parent.received() == b"request"
    assert client.transport.value() == OK + b"server hello" + b"response"
    parent.close()
    client.lose()
    [record] = harness.observer.closed
    assert (record.bytesUp, record.bytesDown) == (7, 20)


@pytest.mark.parametrize(
    ("answer", "status", "reason"),
    [
        (b"407 Proxy Authentication Required", 502, "refused the proxy's credentials"),
        (b"403 Forbidden", 403, "the parent proxy denied the tunnel"),
        (b"502 Bad Gateway", 502, "could not open the tunnel (502)"),
        (b"503 Service Unavailable", 503, "could not open the tunnel (503)"),
        (b"504 Gateway Timeout", 504, "could not open the tunnel (504)"),
        (b"500 Internal Server Error", 502, "the parent proxy answered 500"),
    ],
)
def test_parentAnswersReachTheClient(answer: bytes, status: int, reason: str) -> None:
    """
    The parent's refusals reach the client as the status they map to; the
    parent's content never does, and neither do the client's early bytes
    reach the parent.
    """
    harness, client, parent = requestThroughParent(b"early")
    head = parent.received()
    parent.send(b"HTTP/1.1 " + answer + b"\r\nContent-Length: 14\r\n\r\nsecret content")
    response = client.transport.value()
    assert response.startswith(f"HTTP/1.1 {status} ".encode())
    assert reason.encode() in response
    assert b"secret content" not in response
    assert parent.received() == head
    assert parent.transport.aborted
    [refused] = harness.observer.refused
    assert (refused.status, refused.reason.endswith(reason)) == (status, True)


def test_parentFailureLogged(logEvents: list[LogEvent]) -> None:
    """
    The log says which parent failed and how, and never its credentials.
    """
    _, _, parent = requestThroughParent()
    parent.send(b"HTTP/1.1 503 Overloaded\r\n\r\n")
    [event] = [e for e in logEvents if e.get("event") == "connect_failed"]
    assert event["error"] == (
        "the parent proxy could not open the tunnel (503) "
        "(http://parent.example:3128): 503 Overloaded"
    )
    assert not any("s3cret" in repr(e) for e in logEvents)


def test_deadlineWhileWaitingForTheParent() -> None:
    """
    A parent that does not answer within --connect-timeout gets the client
    a 504, and its connection is dropped.
    """
    harness, client, parent = requestThroughParent(b"early")
    harness.clock.advance(5.0)
    assert client.transport.value().startswith(b"HTTP/1.1 504 ")
    assert parent.transport.aborted
    assert parent.received().endswith(b"\r\n\r\n")
    assert b"early" not in parent.received()


def test_deadlineWhileConnectingToTheParent() -> None:
    """
    A parent that cannot be reached within --connect-timeout gets the
    client a 504, and the attempt is stopped.
    """
    harness = harnessWithParent()
    client = harness.connectClient()
    client.send(REQUEST)
    harness.clock.advance(5.0)
    assert client.transport.value().startswith(b"HTTP/1.1 504 ")
    assert harness.clock.connectors[0].stoppedConnecting


def test_clientLeavesWhileWaitingForTheParent() -> None:
    """
    A client that goes away before the parent answers leaves no connection
    to the parent behind.
    """
    _, client, parent = requestThroughParent()
    client.lose()
    assert parent.transport.aborted


def test_parentUnreachable() -> None:
    """
    A parent that refuses the connection gets the client a 502.
    """
    harness = harnessWithParent()
    client = harness.connectClient()
    client.send(REQUEST)
    _, _, factory, _, _ = harness.clock.tcpClients[0]
    factory.clientConnectionFailed(
        harness.clock.connectors[0], Failure(ConnectionRefusedError())
    )
    response = client.transport.value()
    assert response.startswith(b"HTTP/1.1 502 ")
    assert b"the parent proxy refused the connection" in response
