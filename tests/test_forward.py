# -*- test-case-name: tests.test_forward -*-
"""
Protocol tests of plain HTTP forwarding (L{connectproxy._forward}): an
absolute-form request forwarded to its origin and the response relayed,
with a memory reactor, fake transports and a fake connector.
"""

from __future__ import annotations

import base64
import json
import warnings

import h11
import pytest
from twisted.internet.error import ConnectionRefusedError
from twisted.logger import LogEvent, formatEvent
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from connectproxy import ForbiddenDestination, ProxySettings
from connectproxy._accesslog import formatJSON, formatSquid, formatText
from connectproxy._front import MAX_CHALLENGES
from connectproxy._handler import Phase
from connectproxy._metrics import MetricsObserver
from connectproxy._observer import AccessLogObserver, ForwardedRequest, ObserverFanOut
from connectproxy._parent import ParentProxyConnector
from connectproxy._parenturl import ParentProxy
from connectproxy._parser import RequestHeadParser
from connectproxy._routing import RoutingConnector
from connectproxy._rules import PortRules
from connectproxy._tunnel import ReadingOf
from connectproxy.interfaces import IForwardingObserver
from connectproxy.tap import Options
from connectproxy.testing import (
    FakeResolver,
    ProxyHarness,
    RecordingObserver,
    connectHead,
    connectorContext,
)
from tests._fakeparent import FakeParent
from tests._forwarding import (
    ResponseReader,
    connectOrigin,
    forwardingHarness,
    get,
    header,
    phaseOf,
    responseOf,
)
from tests._helpers import ESTABLISHED, GOOD, authHarness, basic, rulesWith

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


def test_getForwarded() -> None:
    """
    A GET is forwarded in origin form with the target's Host, and the
    response relayed with its body; the exchange is reported once.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get("http://example.com/index.html?q=1", "Accept: */*"))
    [attempt] = harness.connector.attempts
    assert (attempt.target.host, attempt.target.port) == ("example.com", 80)
    origin = connectOrigin(harness)
    request = origin.request()
    assert (request.method, request.target) == ("GET", "/index.html?q=1")
    assert request.getHeader("host") == "example.com"
    assert request.getHeader("accept") == "*/*"
    assert request.getHeader("via") == "1.1 connectproxy"
    origin.send(OK)
    response, body, _ = responseOf(client)
    assert (response.status_code, body) == (200, b"hello")
    assert header(response, "via") == ["1.1 connectproxy"]
    [record] = harness.observer.forwarded
    assert (record.method, record.target, record.status) == (
        "GET",
        "http://example.com/index.html",
        200,
    )
    assert record.outcome == "ok"
    assert record.bytesDown == len(client.transport.value())


def test_headNoBody() -> None:
    """
    The response to a HEAD has no body, whatever its Content-Length says.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get(method="HEAD"))
    origin = connectOrigin(harness)
    origin.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
    response, body, _ = responseOf(client, "HEAD")
    assert header(response, "content-length") == ["1234"]
    assert body == b""


@pytest.mark.parametrize("status", [204, 304])
def test_bodilessStatuses(status: int) -> None:
    """
    A 204 or 304 response has no body.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    origin = connectOrigin(harness)
    origin.send(f"HTTP/1.1 {status} X\r\n\r\n".encode())
    response, body, _ = responseOf(client)
    assert (response.status_code, body) == (status, b"")
    assert phaseOf(client) is Phase.HEAD


def test_postContentLength() -> None:
    """
    A POST's body is forwarded with its Content-Length, the early bytes
    and those that come later alike.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(
        get("http://example.com/", "Content-Length: 10", method="POST") + b"01234"
    )
    origin = connectOrigin(harness)
    client.send(b"56789")
    assert origin.request().getHeader("content-length") == "10"
    assert origin.body() == b"0123456789"
    origin.send(OK)
    _response, body, _ = responseOf(client, "POST")
    assert body == b"hello"


def test_chunkedUpload() -> None:
    """
    A chunked body is forwarded chunked, framed again: its chunk
    extensions and trailers dropped.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(
        get("http://example.com/up", "Transfer-Encoding: chunked", method="PUT")
    )
    origin = connectOrigin(harness)
    client.send(b"5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n")
    assert origin.request().getHeader("transfer-encoding") == "chunked"
    assert origin.body() == b"5\r\nhello\r\n0\r\n\r\n"
    origin.send(OK)
    assert responseOf(client, "PUT")[1] == b"hello"


def test_chunkedResponse() -> None:
    """
    A chunked response is relayed chunked to an HTTP/1.1 client.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    origin = connectOrigin(harness)
    origin.send(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n"
    )
    response, body, _ = responseOf(client)
    assert header(response, "transfer-encoding") == ["chunked"]
    assert body == b"abcde"
    assert not client.transport.disconnecting


def test_closeDelimitedResponse() -> None:
    """
    A response read until the origin closes reaches an HTTP/1.1 client
    chunked, and the client's connection stays open.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    origin = connectOrigin(harness)
    origin.send(b"HTTP/1.0 200 OK\r\n\r\nsome")
    origin.send(b" bytes")
    origin.finish()
    response, body, _ = responseOf(client)
    assert body == b"some bytes"
    assert header(response, "transfer-encoding") == ["chunked"]
    assert not client.transport.disconnecting
    assert phaseOf(client) is Phase.HEAD


def test_closeDelimitedToHTTP10Client() -> None:
    """
    An HTTP/1.0 client gets a response without a length close-delimited,
    and its connection closed.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get(version="1.0", host=None))
    origin = connectOrigin(harness)
    origin.send(b"HTTP/1.0 200 OK\r\n\r\nsome bytes")
    origin.lose()
    value = client.transport.value()
    assert value.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding" not in value.lower()
    assert value.endswith(b"\r\n\r\nsome bytes")
    assert client.transport.disconnecting


def test_hopByHopRemoved() -> None:
    """
    Hop-by-hop fields, the client's Proxy-Authorization and every field
    Connection names are not forwarded, in either direction; Via is
    appended to the one there.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(
        get(
            "http://example.com/",
            "Connection: keep-alive, X-Secret",
            "X-Secret: 1",
            "Keep-Alive: timeout=5",
            "Proxy-Connection: keep-alive",
            "TE: trailers",
            "Trailer: X-T",
            "Upgrade: h2c",
            "Proxy-Authorization: Basic Zm9vOmJhcg==",
            "Via: 1.0 other",
            "X-Kept: yes",
        )
    )
    origin = connectOrigin(harness)
    request = origin.request()
    names = {name for name, _ in request.headers}
    assert names == {"host", "via", "x-kept"}
    assert [v for n, v in request.headers if n == "via"] == [
        "1.0 other",
        "1.1 connectproxy",
    ]
    origin.send(
        b"HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: x\r\n"
        b"Proxy-Authenticate: Basic\r\nUpgrade: foo\r\nX-End: 1\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    response, _, _ = responseOf(client)
    names2 = {n.decode() for n, _ in response.headers}
    assert names2 == {"x-end", "content-length", "via"}


@pytest.mark.parametrize(
    ("statusLine", "via"),
    [
        (b"HTTP/1.0 200 OK", "1.0 connectproxy"),
        (b"HTTP/1.1 200 OK", "1.1 connectproxy"),
    ],
)
def test_responseViaNamesOriginVersion(statusLine: bytes, via: str) -> None:
    """
    The Via added to a response names the protocol version the proxy
    received it with (RFC 9110 section 7.6.3): the origin's, not the one
    it goes on with to the client; after any Via already there.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    origin = connectOrigin(harness)
    origin.send(statusLine + b"\r\nVia: 1.1 cache\r\nContent-Length: 2\r\n\r\nok")
    response, body, _ = responseOf(client)
    assert response.http_version == b"1.1"
    assert header(response, "via") == ["1.1 cache", via]
    assert body == b"ok"


def test_informationalViaNamesOriginVersion() -> None:
    """
    A 100 Continue relayed to the client carries the proxy's Via too, with
    the origin's protocol version.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(
        get(
            "http://example.com/",
            "Expect: 100-continue",
            "Content-Length: 1",
            method="PUT",
        )
    )
    origin = connectOrigin(harness)
    origin.send(b"HTTP/1.1 100 Continue\r\n\r\n")
    client.send(b"x")
    origin.send(OK)
    _, _, events = responseOf(client, "PUT")
    assert isinstance(events[0], h11.InformationalResponse)
    assert header(events[0], "via") == ["1.1 connectproxy"]


def test_switchViaNamesOriginVersion() -> None:
    """
    The 101 of a protocol switch carries the proxy's Via with the origin's
    protocol version.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get("http://example.com/ws", "Connection: Upgrade", "Upgrade: echo"))
    origin = connectOrigin(harness)
    origin.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\n\r\n")
    assert b"\r\nVia: 1.1 connectproxy\r\n" in client.transport.value()


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_requestViaNamesClientVersion(version: str) -> None:
    """
    The Via added to a request names the client's protocol version, while
    the request goes on to the origin as HTTP/1.1.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get("http://example.com/", "Via: 1.1 first", version=version))
    origin = connectOrigin(harness)
    assert origin.read().startswith(b"GET / HTTP/1.1\r\n")
    assert [v for n, v in origin.request().headers if n == "via"] == [
        "1.1 first",
        f"{version} connectproxy",
    ]


def test_hostReplaced() -> None:
    """
    The Host field is replaced by the target's authority, with the port
    unless it is 80.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get("http://Example.com:8080/x", host="evil.example"))
    origin = connectOrigin(harness)
    assert origin.request().getHeader("host") == "example.com:8080"


def test_keepAliveSecondRequest() -> None:
    """
    After a complete exchange the connection reads the next request, which
    is admitted and forwarded on its own.
    """
    harness = forwardingHarness(ProxySettings(upstreamKeepalive=0))
    client = harness.connectClient()
    client.send(get())
    connectOrigin(harness).send(OK)
    assert phaseOf(client) is Phase.HEAD
    client.send(get("http://example.com/second"))
    assert len(harness.connector.attempts) == 2
    connectOrigin(harness).send(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    reader_events = client.transport.value().count(b"HTTP/1.1 ")
    assert reader_events == 2


def test_connectionCloseHonoured() -> None:
    """
    A client that asks for Connection: close gets it after the response.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get("http://example.com/", "Connection: close"))
    connectOrigin(harness).send(OK)
    response, _, _ = responseOf(client)
    assert header(response, "connection") == ["close"]
    assert client.transport.disconnecting


def test_badResponse502() -> None:
    """
    A response that is not HTTP gets 502.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    origin = connectOrigin(harness)
    origin.send(b"garbage\r\n\r\n")
    assert client.transport.value().startswith(b"HTTP/1.1 502 ")
    assert b"the origin's response is not valid HTTP" in client.transport.value()
    assert origin.transport.aborted


def test_originClosesBeforeAnswer() -> None:
    """
    An origin that closes without a response gets the client a 502.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    origin = connectOrigin(harness)
    origin.lose()
    assert client.transport.value().startswith(b"HTTP/1.1 502 ")


def test_responseTimeout() -> None:
    """
    An origin that does not answer within the idle timeout gets the client
    a 504 naming the option.
    """
    harness = forwardingHarness(ProxySettings(idleTimeout=20))
    client = harness.connectClient()
    client.send(get())
    origin = connectOrigin(harness)
    harness.clock.advance(25)
    value = client.transport.value()
    assert value.startswith(b"HTTP/1.1 504 ")
    assert b"--idle-timeout" in value
    assert origin.transport.aborted


def test_clientLeavesMidResponse() -> None:
    """
    A client that leaves during the response has its origin connection
    aborted and the exchange reported as abandoned.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    origin = connectOrigin(harness)
    origin.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
    client.lose()
    assert origin.transport.aborted
    origin.lose()
    [record] = harness.observer.forwarded
    assert (record.status, record.outcome) == (200, "abandoned")
    assert harness.observer.connectionsClosed


def test_flowControlWired() -> None:
    """
    While forwarding, each transport is the other's streaming producer;
    after the exchange neither is.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    origin = connectOrigin(harness)
    assert client.transport.producer is origin.transport
    assert origin.transport.producer is client.transport
    assert client.transport.streaming and origin.transport.streaming
    origin.send(OK)
    assert client.transport.producer is None
    assert origin.transport.producer is None


def test_informationalRelayed() -> None:
    """
    The origin's 100 Continue reaches the client before the final response.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(
        get(
            "http://example.com/",
            "Expect: 100-continue",
            "Content-Length: 3",
            method="POST",
        )
    )
    origin = connectOrigin(harness)
    assert origin.request().getHeader("expect") == "100-continue"
    origin.send(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert client.transport.value().startswith(b"HTTP/1.1 100 ")
    client.send(b"abc")
    assert origin.body() == b"abc"
    origin.send(OK)
    _, body, events = responseOf(client, "POST")
    assert isinstance(events[0], h11.InformationalResponse)
    assert body == b"hello"


def _record(**changes: object) -> ForwardedRequest:
    fields: dict[str, object] = {
        "client": "127.0.0.1:40000",
        "method": "GET",
        "target": "http://example.com/x",
        "host": "example.com",
        "port": 80,
        "upstream": "192.0.2.1:80",
        "status": 200,
        "bytesUp": 10,
        "bytesDown": 20,
        "duration": 0.5,
    }
    fields.update(changes)
    return ForwardedRequest(**fields)  # type: ignore[arg-type]


def test_accessLogEvent(logEvents: list[LogEvent]) -> None:
    """
    The access log has one C{request_forwarded} event per forwarded
    request, with every field of the record.
    """
    AccessLogObserver().requestForwarded(_record(user="alice"))
    [event] = [e for e in logEvents if e.get("event") == "request_forwarded"]
    assert (event["method"], event["status"], event["outcome"]) == ("GET", 200, "ok")
    text = formatEvent(event)
    assert text.startswith("forwarded 127.0.0.1:40000 alice GET http://example.com/x")
    assert "200 via 192.0.2.1:80" in text


def test_accessLogFormats() -> None:
    """
    The access-log file formats have a line for a forwarded request.
    """
    record = _record()
    assert " forwarded 127.0.0.1:40000 - GET http://example.com/x: 200 via" in (
        formatText(record, 0)
    )
    line = json.loads(formatJSON(record, 0))
    assert (line["event"], line["status"], line["reused"]) == (
        "request_forwarded",
        200,
        False,
    )
    squid = formatSquid(record, 0).split()
    assert squid[3:7] == ["TCP_MISS/200", "20", "GET", "http://example.com/x"]
    assert squid[8] == "HIER_DIRECT/192.0.2.1"


def test_metricsCountForwarded() -> None:
    """
    The metrics count forwarded requests by method and status class, and
    their bytes.
    """
    harness = forwardingHarness()
    metrics = MetricsObserver(harness.factory)
    metrics.requestForwarded(_record())
    metrics.requestForwarded(_record(status=0, method="POST", outcome="abandoned"))
    assert metrics.forwarded == {("GET", "2xx"): 1, ("POST", "none"): 1}
    assert (metrics.forwardedUp, metrics.forwardedDown) == (20, 40)
    names = {family.name for family in metrics.collect()}
    assert {"connectproxy_forwarded_requests", "connectproxy_forwarded_bytes"} <= names


def test_versionTwoObserverNotTold() -> None:
    """
    An observer without C{requestForwarded} (plugin API version 2) still
    gets every other report, and no warning.
    """

    class Old:
        def __init__(self) -> None:
            self.events: list[str] = []

        def connectionOpened(self, event: object) -> None:
            self.events.append("opened")

        def connectionClosed(self, event: object) -> None:
            self.events.append("closed")

        def requestRefused(self, event: object) -> None:
            self.events.append("refused")

        def tunnelOpened(self, event: object) -> None:
            pass

        def tunnelClosed(self, event: object) -> None:
            pass

    old = Old()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fanOut = ObserverFanOut([old])  # type: ignore[list-item]
    fanOut.requestForwarded(_record())
    assert old.events == []
    assert verifyObject(IForwardingObserver, RecordingObserver())


# Ports.


def test_port80ByDefaultForForwardedOnly() -> None:
    """
    With no --allow-port, forwarded requests may go to port 80, tunnels
    may not.
    """
    harness = ProxyHarness()
    client = harness.connectClient()
    client.send(get())
    assert len(harness.connector.attempts) == 1
    tunnel = harness.connectClient()
    tunnel.send(connectHead("example.com:80"))
    assert tunnel.response().status == 403
    assert b"port 80 is not allowed (see --allow-port)" in tunnel.transport.value()
    other = harness.connectClient()
    other.send(get("http://example.com:8080/"))
    assert other.response().status == 403


def test_explicitPortsApplyToBoth() -> None:
    """
    Ports the operator names apply to forwarded requests and tunnels alike:
    without 80 among them, a forwarded request to port 80 is refused.
    """
    options = Options()
    options.parseOptions(["--allow-port", "443"])
    assert not options.rules.ports.allows(80, forwarded=True)
    options = Options()
    options.parseOptions([])
    assert options.rules.ports.allows(80, forwarded=True)
    assert not options.rules.ports.allows(80)


# Persistent connections.


def test_pipelinedAnsweredInOrder() -> None:
    """
    Requests pipelined behind one another are answered in order: the
    second is read only once the first's response is complete.
    """
    harness = forwardingHarness(ProxySettings(upstreamKeepalive=0))
    client = harness.connectClient()
    client.send(get("http://example.com/1") + get("http://example.com/2"))
    assert len(harness.connector.attempts) == 1
    first = connectOrigin(harness)
    assert first.request().target == "/1"
    first.send(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none")
    assert len(harness.connector.attempts) == 2
    second = connectOrigin(harness)
    assert second.request().target == "/2"
    second.send(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo")
    reader = ResponseReader(client, ["GET", "GET"])
    bodies = [e.data for e in reader.poll() if isinstance(e, h11.Data)]
    assert bodies == [b"one", b"two"]


def test_pipelinedBytesBounded() -> None:
    """
    While a response is in flight the client is read only up to a head's
    worth of pipelined bytes, then paused; it is resumed for the next head.
    """
    harness = forwardingHarness(ProxySettings(maxHeadSize=1024, maxRequestLine=512))
    client = harness.connectClient()
    client.send(get())
    origin = connectOrigin(harness)
    client.send(b"x" * 600)
    assert client.transport.producerState == "producing"
    client.send(b"x" * 600)
    assert client.transport.producerState == "paused"
    origin.send(OK)
    assert client.transport.producerState == "producing"
    # The garbage is read as the next head, and refused.
    assert b"HTTP/1.1 4" in client.transport.value()[len(b"HTTP/1.1 200") :]


def test_connectAfterForwarded() -> None:
    """
    A CONNECT on a connection that carried forwarded requests opens a
    tunnel.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    connectOrigin(harness).send(OK)
    client.send(connectHead("example.com:443") + b"early")
    attempt = harness.connector.attempts[-1]
    assert attempt.request.method == "CONNECT"
    upstream = attempt.succeed()
    assert upstream.value() == b"early"
    assert client.transport.value().endswith(ESTABLISHED)
    assert phaseOf(client) is Phase.RELAYING


def test_eachRequestAuthenticated() -> None:
    """
    With authentication, a forwarded request without credentials gets 407
    and the connection stays for the retry; each request on the connection
    is admitted with its own credentials, and the client's
    Proxy-Authorization is never forwarded.
    """
    harness, _ = authHarness(rules=rulesWith(ports=PortRules.fromStrings(["80"])))
    client = harness.connectClient()
    client.send(get())
    assert client.transport.value().startswith(b"HTTP/1.1 407 ")
    assert not client.transport.disconnecting
    client.transport.clear()
    client.send(get("http://example.com/", basic(GOOD)))
    origin = connectOrigin(harness)
    assert origin.request().getHeader("proxy-authorization") is None
    assert harness.connector.attempts[-1].target.user == "alice"
    origin.send(OK)
    client.transport.clear()
    client.send(get("http://example.com/again"))
    assert client.transport.value().startswith(b"HTTP/1.1 407 ")


def test_challengeWithBodyCloses() -> None:
    """
    A 407 to a request with a body closes the connection: the body is not
    read, so no next request can be found after it.
    """
    harness, _ = authHarness(rules=rulesWith(ports=PortRules.fromStrings(["80"])))
    client = harness.connectClient()
    client.send(get("http://example.com/", "Content-Length: 3", method="POST") + b"abc")
    assert client.transport.value().startswith(b"HTTP/1.1 407 ")
    assert client.transport.disconnecting


def test_idleKeepAliveClosedQuietly() -> None:
    """
    A kept-alive connection with no next request is closed at the request
    timeout without a 408, and nothing is reported refused.
    """
    harness = forwardingHarness(ProxySettings(requestTimeout=5))
    client = harness.connectClient()
    client.send(get())
    connectOrigin(harness).send(OK)
    before = client.transport.value()
    harness.clock.advance(5)
    assert client.transport.value() == before
    assert client.transport.disconnecting
    assert harness.observer.refused == []


def test_partialNextHeadTimesOut() -> None:
    """
    A next head that starts but does not finish gets 408 at the request
    timeout.
    """
    harness = forwardingHarness(ProxySettings(requestTimeout=5))
    client = harness.connectClient()
    client.send(get())
    connectOrigin(harness).send(OK)
    client.send(b"GET http://exa")
    harness.clock.advance(5)
    assert b"HTTP/1.1 408 " in client.transport.value()


def test_drainingClosesAfterResponse() -> None:
    """
    While the proxy drains, a kept-alive connection is closed after the
    response in flight.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    origin = connectOrigin(harness)
    harness.factory.drain()
    origin.send(OK)
    assert client.transport.disconnecting


def test_drainClosesIdleKeepAlive() -> None:
    """
    A drain closes a kept-alive connection idle between requests at once,
    without a response (RFC 9112 section 9.6), so that a shutdown does not
    wait for it; C{whenIdle} fires once it is gone.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    connectOrigin(harness).send(OK)
    before = client.transport.value()
    harness.factory.drain()
    assert client.transport.disconnecting
    assert client.transport.value() == before
    idle: list[object] = []
    harness.factory.whenIdle().addCallback(idle.append)
    client.lose()
    assert idle == [None]
    assert harness.observer.refused == []


def test_drainAnswersStartedHead() -> None:
    """
    A drain leaves a kept-alive connection whose next head has begun: the
    request gets 503 once its head is complete.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    connectOrigin(harness).send(OK)
    client.send(b"GET http://example.com/next HTTP/1.1\r\n")
    harness.factory.drain()
    assert not client.transport.disconnecting
    client.send(b"Host: example.com\r\n\r\n")
    assert b"HTTP/1.1 503 " in client.transport.value()
    assert client.transport.disconnecting


# Upgrade.


def test_upgradeBecomesTunnel() -> None:
    """
    A request with Connection: upgrade and Upgrade is forwarded with both;
    on the origin's 101 the response is relayed and the connection becomes
    a tunnel, with the bytes each side sent after the heads relayed first.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(
        get("http://example.com/ws", "Connection: Upgrade", "Upgrade: websocket")
        + b"early-client"
    )
    origin = connectOrigin(harness)
    request = origin.request()
    assert request.getHeader("upgrade") == "websocket"
    assert "upgrade" in (request.getHeader("connection") or "").lower()
    origin.send(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\n\r\nearly-origin"
    )
    value = client.transport.value()
    assert value.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Upgrade: websocket\r\n" in value
    assert value.endswith(b"\r\n\r\nearly-origin")
    assert phaseOf(client) is Phase.RELAYING
    assert origin.read().endswith(b"early-client")
    client.send(b"ping")
    assert origin.read().endswith(b"ping")
    origin.send(b"pong")
    assert client.transport.value().endswith(b"pong")
    producer = client.transport.producer
    assert isinstance(producer, ReadingOf) and producer.transport is origin.transport
    origin.lose()
    client.lose()
    [record] = harness.observer.forwarded
    assert record.status == 101
    assert harness.observer.connectionsClosed


def test_upgradeRefusedStaysHTTP() -> None:
    """
    An upgrade request answered with anything but 101 stays HTTP.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(
        get("http://example.com/ws", "Connection: upgrade", "Upgrade: websocket")
    )
    origin = connectOrigin(harness)
    origin.send(b"HTTP/1.1 400 No\r\nContent-Length: 0\r\n\r\n")
    assert responseOf(client)[0].status_code == 400
    assert phaseOf(client) is Phase.HEAD


def test_upgradeClosedByShutdown() -> None:
    """
    Closing every connection closes a tunnel after a 101 gracefully.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get("http://example.com/ws", "Connection: upgrade", "Upgrade: x"))
    origin = connectOrigin(harness)
    origin.send(b"HTTP/1.1 101 OK\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n")
    harness.factory.closeAll("shutdown")
    assert client.transport.disconnecting and origin.transport.disconnecting


# Through a parent proxy.


def parentHarness(url: str = "http://alice:s3cret@parent.example:3128") -> ProxyHarness:
    """
    A proxy whose every route goes through the parent at C{url}
    (C{parent.example} is 192.0.2.50), over a memory reactor.
    """
    harness = ProxyHarness(ProxySettings(connectTimeout=5.0))
    context = connectorContext(
        harness.clock, resolver=FakeResolver({"parent.example": ["192.0.2.50"]})
    )
    parent = ParentProxyConnector(
        harness.clock,
        ParentProxy.fromURL(url),
        5.0,
        context.networks,
        context.resolverPool,
    )
    harness.factory.connector = RoutingConnector(
        [("direct.example", harness.connector)], parent
    )
    return harness


def test_parentGetsAbsoluteForm() -> None:
    """
    Through a parent, a forwarded request goes in absolute form with the
    parent's own credentials; the client's Proxy-Authorization never goes
    on, and no CONNECT is sent.
    """
    harness = parentHarness()
    client = harness.connectClient()
    client.send(
        get("http://example.com/a?b", "Proxy-Authorization: Basic Y2xpZW50OnB3")
    )
    parent = FakeParent(harness.clock)
    assert (parent.host, parent.port) == ("192.0.2.50", 3128)
    parsed = RequestHeadParser().feed(parent.received())
    assert parsed is not None
    request = parsed[0]
    assert (request.method, request.target) == ("GET", "http://example.com/a?b")
    assert request.getHeader("host") == "example.com"
    assert request.getHeader("proxy-authorization") == "Basic " + base64.b64encode(
        b"alice:s3cret"
    ).decode("ascii")
    parent.send(OK)
    response, body, _ = responseOf(client)
    assert (response.status_code, body) == (200, b"hello")
    [record] = harness.observer.forwarded
    assert record.parent == "http://parent.example:3128"


def test_parentRoutePooledApart() -> None:
    """
    A connection to a parent is pooled under the parent's route, apart
    from direct connections to the same host.
    """
    harness = parentHarness()
    client = harness.connectClient()
    client.send(get())
    parent = FakeParent(harness.clock)
    parent.send(OK)
    [(route, host, port)] = [idle.key for idle in harness.factory.upstreamPool._idle]
    assert (route, host, port) == ("http://parent.example:3128", "example.com", 80)
    client.send(get("http://direct.example/"))
    assert len(harness.connector.attempts) == 1


def test_parent407Is502() -> None:
    """
    A parent's 407 (it wants other credentials than the operator's) gets
    the client a 502, never the parent's challenge.
    """
    harness = parentHarness()
    client = harness.connectClient()
    client.send(get())
    parent = FakeParent(harness.clock)
    parent.send(
        b"HTTP/1.1 407 Auth\r\nProxy-Authenticate: Basic\r\nContent-Length: 0\r\n\r\n"
    )
    value = client.transport.value()
    assert value.startswith(b"HTTP/1.1 502 ")
    assert b"the parent proxy refused the proxy's credentials" in value


def test_parentUnreachable502() -> None:
    """
    A parent that refuses the connection gets the client a 502 saying so.
    """
    harness = parentHarness()
    client = harness.connectClient()
    client.send(get())
    _, _, factory, _, _ = harness.clock.tcpClients[-1]
    factory.clientConnectionFailed(
        harness.clock.connectors[-1], Failure(ConnectionRefusedError())
    )
    assert b"the parent proxy refused the connection" in client.transport.value()


def test_pluginConnectorWithoutForwardVia() -> None:
    """
    A connector without forwardVia has forwarded requests connected with
    connectUpstream, to the target itself.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    [attempt] = harness.connector.attempts
    assert (attempt.target.host, attempt.target.port) == ("example.com", 80)


# Max-Forwards.


def test_traceMaxForwardsZeroAnsweredHere() -> None:
    """
    A TRACE with Max-Forwards: 0 is answered by the proxy with the request
    head as message/http, without credentials or cookies; nothing is
    connected, and the connection stays.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(
        get(
            "http://example.com/t",
            "Max-Forwards: 0",
            "Cookie: secret=1",
            "Authorization: Basic eA==",
            "X-Seen: yes",
            method="TRACE",
        )
    )
    assert harness.connector.attempts == []
    response, body, _ = responseOf(client, "TRACE")
    assert header(response, "content-type") == ["message/http"]
    assert body.startswith(b"TRACE http://example.com/t HTTP/1.1\r\n")
    assert b"x-seen: yes" in body
    assert b"secret" not in body and b"eA==" not in body
    assert phaseOf(client) is Phase.HEAD
    [record] = harness.observer.forwarded
    assert (record.status, record.upstream) == (200, "")


def test_optionsMaxForwardsZeroAnsweredHere() -> None:
    """
    An OPTIONS with Max-Forwards: 0 gets 200 with the methods served.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get("http://example.com/", "Max-Forwards: 0", method="OPTIONS"))
    response, _, _ = responseOf(client, "OPTIONS")
    [allow] = header(response, "allow")
    assert "CONNECT" in allow and "GET" in allow and "TRACE" in allow
    assert harness.connector.attempts == []


def test_maxForwardsDecremented() -> None:
    """
    A TRACE or OPTIONS with Max-Forwards above 0 is forwarded with it one
    lower; other methods' Max-Forwards is left alone.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get("http://example.com/", "Max-Forwards: 3", method="OPTIONS"))
    origin = connectOrigin(harness)
    assert origin.request().getHeader("max-forwards") == "2"
    other = harness.connectClient()
    other.send(get("http://example.com/", "Max-Forwards: 0"))
    origin = connectOrigin(harness)
    assert origin.request().getHeader("max-forwards") == "0"


# Flow control.


def test_slowClientPausesOrigin() -> None:
    """
    A client whose buffer fills pauses reading from the origin (the
    transport calls its producer, the origin's transport), and resumes it
    when it drains; the response streams, unbuffered.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    origin = connectOrigin(harness)
    origin.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 50000)
    assert client.transport.value().endswith(b"x" * 50000)
    producer = client.transport.producer
    assert producer is origin.transport
    producer.pauseProducing()
    assert origin.transport.producerState == "paused"
    producer.resumeProducing()
    assert origin.transport.producerState == "producing"


def test_slowOriginPausesClient() -> None:
    """
    An origin whose buffer fills during a request body pauses reading from
    the client.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get("http://example.com/", "Content-Length: 100000", method="PUT"))
    origin = connectOrigin(harness)
    client.send(b"y" * 50000)
    assert origin.body() == b"y" * 50000
    producer = origin.transport.producer
    assert producer is client.transport
    producer.pauseProducing()
    assert client.transport.producerState == "paused"
    producer.resumeProducing()
    assert client.transport.producerState == "producing"


def test_connectTimeout504() -> None:
    """
    An origin not connected within --connect-timeout gets the client a
    504, as a CONNECT does, and the attempt cancelled.
    """
    harness = forwardingHarness(ProxySettings(connectTimeout=3))
    client = harness.connectClient()
    client.send(get())
    harness.clock.advance(3)
    [attempt] = harness.connector.attempts
    assert attempt.cancelled
    assert client.transport.value().startswith(b"HTTP/1.1 504 ")


def test_originSendsMoreNotPooled() -> None:
    """
    An origin that sends bytes after a complete response is not reused.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    origin = connectOrigin(harness)
    origin.send(OK + b"HTTP/1.1 200 OK\r\n")
    assert origin.transport.disconnecting
    assert len(harness.factory.upstreamPool) == 0


def test_clientFinishedAfterRequest() -> None:
    """
    A client that half-closes after its request still gets the response,
    then the connection is closed.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    client.protocol.readConnectionLost()
    origin = connectOrigin(harness)
    origin.send(OK)
    assert client.transport.value().endswith(b"hello")
    assert client.transport.disconnecting


def test_challengesCountedPerRequest() -> None:
    """
    The 407s a connection may get are counted from its last forwarded
    request: a long kept-alive connection is not closed for the 407s of
    many requests.
    """
    harness, _ = authHarness(rules=rulesWith(ports=PortRules.fromStrings(["80"])))
    client = harness.connectClient()
    origin = None
    for index in range(MAX_CHALLENGES + 2):
        client.send(get(f"http://example.com/{index}"))
        assert client.transport.value().startswith(b"HTTP/1.1 407 ")
        client.transport.clear()
        client.send(get(f"http://example.com/{index}", basic(GOOD)))
        # The first goes on a new connection, the others on the pooled one.
        origin = origin or connectOrigin(harness)
        origin.send(OK)
        assert client.transport.value().endswith(b"hello")
        client.transport.clear()
    assert not client.transport.disconnecting


def test_forbiddenDestination403() -> None:
    """
    A connector that refuses the destination (its addresses are denied by
    the network rules) gets the client a 403 with its reason, as a CONNECT.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    harness.connector.attempts[-1].fail(
        ForbiddenDestination("127.0.0.1 is a loopback address")
    )
    value = client.transport.value()
    assert value.startswith(b"HTTP/1.1 403 ")
    assert b"127.0.0.1 is a loopback address" in value
    [refused] = harness.observer.refused
    assert (refused.method, refused.outcome) == ("GET", "denied")
