# -*- test-case-name: tests.test_forwardcut -*-
"""
Protocol tests of forwarded exchanges that end before their end: a
response cut short by the origin, a client that leaves or stalls.
"""

from __future__ import annotations

import pytest
from twisted.logger import LogEvent

from connectproxy import ProxySettings
from connectproxy._forwardstream import StreamedExchange
from connectproxy._resets import ResetWhenFlushed
from connectproxy.testing import FakeClient, ProxyHarness
from tests._forwarding import Origin, connectOrigin, forwardingHarness, get

SHORT = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"


@pytest.fixture
def resettable(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Let the string transports of the tests be reset as plain TCP ones are
    (after a flush).
    """
    monkeypatch.setattr(
        StreamedExchange, "resettable", staticmethod(lambda transport: True)
    )


def _cutShort(
    settings: ProxySettings | None = None,
) -> tuple[ProxyHarness, FakeClient, Origin]:
    harness = forwardingHarness(settings)
    client = harness.connectClient()
    client.send(get())
    origin = connectOrigin(harness)
    origin.send(SHORT)
    origin.finish()
    return harness, client, origin


@pytest.mark.usefixtures("resettable")
def test_cutShortResponseDeliveredThenReset() -> None:
    """
    A response the origin cuts short reaches the client as far as it came
    (head and body so far), and only then is the client's connection reset
    (once everything was flushed): the client sees an error, not a clean
    end, and not a reset that loses what was written.
    """
    harness, client, origin = _cutShort()
    assert client.transport.value() == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nVia: 1.1 connectproxy\r\n\r\nshort"
    )
    assert origin.transport.aborted
    producer = client.transport.producer
    assert isinstance(producer, ResetWhenFlushed)
    assert client.transport.disconnecting and not client.transport.aborted
    # The transport's buffer is empty: the reset goes out.
    producer.resumeProducing()
    assert client.transport.aborted
    [record] = harness.observer.forwarded
    assert (record.status, record.outcome) == (200, "upstream_failed")
    assert record.reason == (
        "the origin closed the connection before the end of the response"
    )
    assert record.bytesDown == len(client.transport.value())


@pytest.mark.usefixtures("resettable")
def test_cutShortResetBounded() -> None:
    """
    A client that does not take what was written is aborted after the
    abort timeout.
    """
    harness, client, _ = _cutShort(ProxySettings(abortTimeout=5))
    assert not client.transport.aborted
    harness.clock.advance(5)
    assert client.transport.aborted


def test_cutShortOtherTransportAborted() -> None:
    """
    A transport that is not plain TCP (TLS) cannot wait for the peer's
    acknowledgement: it is aborted at once.
    """
    _, client, _ = _cutShort()
    assert client.transport.aborted


@pytest.mark.usefixtures("resettable")
def test_badResponseBodyDeliveredThenReset() -> None:
    """
    A malformed chunked body after a relayed head ends the same way: what
    was relayed is delivered, then the reset.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    origin = connectOrigin(harness)
    origin.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    origin.send(b"zz\r\n")
    assert client.transport.value().endswith(b"3\r\nabc\r\n")
    assert isinstance(client.transport.producer, ResetWhenFlushed)
    [record] = harness.observer.forwarded
    assert (record.status, record.reason) == (200, "malformed response")


def test_clientFINAppliesHalfCloseTimeout() -> None:
    """
    A client that sends its FIN after a whole request does not keep the
    origin's connection until the idle timeout: after the half-close
    timeout the origin's connection is aborted and the client's closed,
    with a 504 naming the option.
    """
    harness = forwardingHarness(ProxySettings(halfCloseTimeout=10, idleTimeout=600))
    client = harness.connectClient()
    client.send(get())
    client.protocol.readConnectionLost()
    origin = connectOrigin(harness)
    harness.clock.advance(9)
    assert not origin.transport.aborted
    harness.clock.advance(2)
    assert origin.transport.aborted
    value = client.transport.value()
    assert value.startswith(b"HTTP/1.1 504 ")
    assert b"--half-close-timeout" in value
    assert client.transport.disconnecting


def test_clientFINResponseMovingGoesOn() -> None:
    """
    After the client's FIN, a response whose bytes keep moving is relayed
    to its end, however long it takes.
    """
    harness = forwardingHarness(ProxySettings(halfCloseTimeout=10))
    client = harness.connectClient()
    client.send(get())
    client.protocol.readConnectionLost()
    origin = connectOrigin(harness)
    origin.send(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n")
    for piece in (b"a", b"b"):
        harness.clock.advance(8)
        origin.send(piece)
    harness.clock.advance(8)
    origin.send(b"c")
    assert client.transport.value().endswith(b"abc")
    assert not origin.transport.aborted
    [record] = harness.observer.forwarded
    assert record.outcome == "ok"


def test_clientGoneAbortsUpstream() -> None:
    """
    A client whose connection is lost (a reset, a failed write) while the
    origin has not answered has the origin's connection aborted at once.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    origin = connectOrigin(harness)
    client.lose()
    assert origin.transport.aborted


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("http://example.com", "*"),
        ("http://example.com:8080", "*"),
        ("http://example.com/", "/"),
        ("http://example.com?x", "/?x"),
    ],
)
def test_optionsEmptyPathAsterisk(url: str, target: str) -> None:
    """
    An OPTIONS whose URL has an empty path and no query reaches the origin
    as C{OPTIONS *} (RFC 9112 section 3.2.4); any other path as it is.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get(url, method="OPTIONS"))
    origin = connectOrigin(harness)
    assert origin.read().startswith(f"OPTIONS {target} HTTP/1.1\r\n".encode())


def test_getEmptyPathSlash() -> None:
    """
    Other methods get C{/} for an empty path.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get("http://example.com"))
    assert connectOrigin(harness).read().startswith(b"GET / HTTP/1.1\r\n")


@pytest.mark.parametrize(("status", "kept"), [(204, False), (304, True), (200, True)])
def test_contentLengthOfBodilessResponses(status: int, kept: bool) -> None:
    """
    A 204's Content-Length is dropped (RFC 9110 section 8.6: it must have
    none); a 304's is kept (it describes the representation).
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get(method="HEAD" if status == 200 else "GET"))
    origin = connectOrigin(harness)
    origin.send(b"HTTP/1.1 %d X\r\nContent-Length: 7\r\n\r\n" % status)
    head = client.transport.value().lower()
    assert head.startswith(b"http/1.1 %d " % status)
    assert (b"content-length: 7\r\n" in head) is kept


def test_contentLengthOfInformationalDropped() -> None:
    """
    A 100 Continue loses a Content-Length the origin gave it.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get("http://example.com/", "Content-Length: 3", method="POST"))
    origin = connectOrigin(harness)
    origin.send(b"HTTP/1.1 100 Continue\r\nContent-Length: 0\r\n\r\n")
    assert client.transport.value().startswith(b"HTTP/1.1 100 ")
    assert b"content-length" not in client.transport.value().lower()


@pytest.mark.parametrize(
    "fields",
    [("Max-Forwards: 5", "Max-Forwards: 0"), ("Max-Forwards: 5, 0",)],
)
def test_duplicateMaxForwardsRefused(fields: tuple[str, ...]) -> None:
    """
    A TRACE or OPTIONS with several Max-Forwards values is ambiguous: 400,
    never forwarded.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get("http://example.com/", *fields, method="OPTIONS"))
    value = client.transport.value()
    assert value.startswith(b"HTTP/1.1 400 ")
    assert b"several Max-Forwards values" in value
    assert not harness.connector.attempts
    [refused] = harness.observer.refused
    assert refused.outcome == "bad_request"


def test_continueThenCloseIsClosedBeforeAnswering(
    logEvents: list[LogEvent],
) -> None:
    """
    An origin that sends C{100 Continue} and closes has not answered: 502
    "the origin closed the connection before answering", not a parser's
    error, and no C{bad_response} event.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get("http://example.com/", "Content-Length: 3", method="POST"))
    origin = connectOrigin(harness)
    origin.send(b"HTTP/1.1 100 Continue\r\n\r\n")
    origin.finish()
    value = client.transport.value()
    assert value.startswith(b"HTTP/1.1 100 Continue\r\n")
    assert b"HTTP/1.1 502 " in value
    [refused] = harness.observer.refused
    assert refused.reason == "the origin closed the connection before answering"
    assert not [e for e in logEvents if e.get("event") == "bad_response"]


def test_stalledRequestBody408() -> None:
    """
    A request body that stops arriving is the client's fault: 408 naming
    the request body and the option, not a 504 blaming the origin.
    """
    harness = forwardingHarness(ProxySettings(idleTimeout=20))
    client = harness.connectClient()
    client.send(get("http://example.com/", "Content-Length: 10", method="POST"))
    client.send(b"abc")
    origin = connectOrigin(harness)
    for _ in range(4):
        harness.clock.advance(10)
    value = client.transport.value()
    assert value.startswith(b"HTTP/1.1 408 ")
    assert b"timed out waiting for the request body" in value
    assert b"--idle-timeout" in value
    assert origin.transport.aborted
    [refused] = harness.observer.refused
    assert refused.status == 408
