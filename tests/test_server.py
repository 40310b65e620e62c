# -*- test-case-name: tests.test_server -*-
"""
Protocol tests of a client connection through the front
(L{connectproxy._front}) and the CONNECT handler (L{connectproxy._connect}):
a fake clock, fake transports and a fake upstream connector; no sockets, no
real time.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.address import IPv6Address
from twisted.internet.error import (
    ConnectError,
    ConnectingCancelledError,
    ConnectionAborted,
    ConnectionLost,
    ConnectionRefusedError,
    DNSLookupError,
    NoRouteError,
)
from twisted.logger import LogEvent, formatEvent
from zope.interface.verify import verifyObject

from connectproxy import ProxySettings, _refuser
from connectproxy._connect import ConnectHandler
from connectproxy._front import ConnectProxyProtocol
from connectproxy._observer import (
    AccessLogObserver,
    ObserverFanOut,
    RefusedRequest,
    TunnelRecord,
)
from connectproxy._tunnel import ReadingOf, TransportRelay, transportRelay
from connectproxy.interfaces import IProxyObserver, IUpstreamConnector
from connectproxy.testing import (
    ProxyHarness,
    RecordingObserver,
    connectHead,
)
from tests._helpers import (
    ESTABLISHED,
    LaterPolicy,
    PendingChecker,
    basic,
    makeHarness,
)


@pytest.fixture
def harness() -> ProxyHarness:
    return ProxyHarness()


def test_connectAnswers200(harness: ProxyHarness) -> None:
    """
    A CONNECT is answered with a bare 200 once the upstream connects.
    """
    client = harness.connectClient()
    client.send(connectHead())
    assert client.transport.value() == b""
    [attempt] = harness.connector.attempts
    assert (attempt.request.host, attempt.request.port) == ("example.com", 443)
    attempt.succeed()
    assert client.transport.value() == ESTABLISHED
    assert b"Content-Length" not in client.transport.value()


def test_clientReadWhileConnecting(harness: ProxyHarness) -> None:
    """
    The client is still read while the upstream connect is in flight (so a
    client that leaves is noticed), and producing once the tunnel exists.
    """
    client = harness.connectClient()
    client.send(connectHead())
    assert client.transport.producerState == "producing"
    harness.connector.attempts[0].succeed()
    assert client.transport.producerState == "producing"


def test_earlyDataFloodPauses() -> None:
    """
    A client that sends more than the head size limit before its tunnel
    exists is paused; nothing it sent is lost.
    """
    harness = ProxyHarness(ProxySettings(maxRequestLine=100, maxHeadSize=200))
    client = harness.connectClient()
    client.send(b"CONNECT a:443 HTTP/1.0\r\n\r\n")
    client.send(b"x" * 150)
    assert client.transport.producerState == "producing"
    client.send(b"y" * 100)
    assert client.transport.producerState == "paused"
    upstream = harness.connector.attempts[0].succeed()
    assert upstream.value() == b"x" * 150 + b"y" * 100
    assert client.transport.producerState == "producing"


def test_producersCrossRegistered(harness: ProxyHarness) -> None:
    """
    Each transport is the other's streaming producer once the tunnel exists
    (through a L{ReadingOf}).
    """
    client = harness.connectClient()
    client.send(connectHead())
    upstream = harness.connector.attempts[0].succeed()
    assert isinstance(client.transport.producer, ReadingOf)
    assert client.transport.producer.transport is upstream
    assert client.transport.streaming is True
    assert isinstance(upstream.producer, ReadingOf)
    assert upstream.producer.transport is client.transport
    assert upstream.streaming is True


@pytest.mark.parametrize("split", [False, True])
def test_earlyDataReachesUpstreamFirst(harness: ProxyHarness, split: bool) -> None:
    """
    Bytes sent with the head, or while connecting, reach the upstream first
    and in order, whether the head arrives whole or a byte at a time.
    """
    client = harness.connectClient()
    data = connectHead() + b"\x16\x03\x01hello"
    if split:
        for i in range(len(data)):
            client.send(data[i : i + 1])
    else:
        client.send(data)
    client.send(b" more")
    upstream = harness.connector.attempts[0].succeed()
    assert upstream.value() == b"\x16\x03\x01hello more"
    client.send(b" after")
    assert upstream.value() == b"\x16\x03\x01hello more after"
    assert harness.factory.openTunnels == 1


def test_relayBothWays(harness: ProxyHarness) -> None:
    """
    Bytes flow both ways through the tunnel and are counted.
    """
    client = harness.connectClient()
    client.send(connectHead())
    attempt = harness.connector.attempts[0]
    upstream = attempt.succeed()
    client.send(b"ping")
    attempt.protocol.dataReceived(b"pong!")
    assert upstream.value() == b"ping"
    assert client.transport.value() == ESTABLISHED + b"pong!"
    tunnel = client.protocol.tunnel
    assert tunnel is not None
    assert (tunnel.stats.bytesUp, tunnel.stats.bytesDown) == (4, 5)


def test_tunnelCloseReported(harness: ProxyHarness) -> None:
    """
    When both sides are gone the observer gets one record with the counts,
    duration, upstream address and reason.
    """
    client = harness.connectClient()
    client.send(connectHead() + b"abc")
    attempt = harness.connector.attempts[0]
    attempt.succeed(peer=IPv6Address("TCP", "2001:db8::1", 443))
    assert len(harness.observer.opened) == 1
    harness.clock.advance(2.5)
    attempt.protocol.dataReceived(b"12345")
    attempt.loseUpstream()
    assert client.transport.disconnecting
    assert harness.observer.closed == []
    client.lose()
    [record] = harness.observer.closed
    assert record.client == "127.0.0.1:40000"
    assert (record.host, record.port) == ("example.com", 443)
    assert record.upstream == "[2001:db8::1]:443"
    assert (record.bytesUp, record.bytesDown) == (3, 5)
    assert record.duration == pytest.approx(2.5)
    assert record.reason == "upstream closed"
    assert record.status == 200
    assert harness.factory.openTunnels == 0
    assert harness.factory.connections == set()


def test_relayFactoryPerTunnel(harness: ProxyHarness) -> None:
    """
    Each tunnel's relay comes from the factory's C{relayFactory}, given
    both sides' protocols, the clock, the settings and the close callback;
    the client's bytes then go straight to the relay's receiver.
    """
    calls = []

    def relayFactory(
        client: Any, upstream: Any, clock: Any, settings: Any, onClosed: Any
    ) -> Any:
        calls.append((client, upstream, clock, settings))
        return transportRelay(client, upstream, clock, settings, onClosed)

    harness.factory.relayFactory = relayFactory
    client = harness.connectClient()
    client.send(connectHead())
    attempt = harness.connector.attempts[0]
    upstream = attempt.succeed()
    assert calls == [
        (client.protocol, attempt.protocol, harness.clock, harness.factory.settings)
    ]
    tunnel = client.protocol.tunnel
    assert isinstance(tunnel, TransportRelay)
    assert client.protocol.dataReceived == tunnel.clientData
    client.send(b"ping")
    assert upstream.value() == b"ping"
    attempt.loseUpstream()
    client.lose()
    [record] = harness.observer.closed
    assert (record.bytesUp, record.reason) == (4, "upstream closed")


def test_tunnelsShareOneTimer(harness: ProxyHarness) -> None:
    """
    The deadlines of every tunnel are kept by the factory's one sweeper:
    with three tunnels open one timer is pending, and none once they are
    gone.
    """
    tunnels = []
    for _ in range(3):
        client = harness.connectClient()
        client.send(connectHead())
        attempt = harness.connector.attempts[-1]
        attempt.succeed()
        tunnels.append((client, attempt))
    assert len(harness.factory.deadlines) == 3
    assert len(harness.clock.getDelayedCalls()) == 1
    for client, attempt in tunnels:
        attempt.loseUpstream()
        client.lose()
    assert len(harness.factory.deadlines) == 0
    assert harness.clock.getDelayedCalls() == []


@pytest.mark.parametrize(
    "request_, status, reason",
    [
        (
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
            "this is a proxy: send the full URL (http://host/path), "
            "or CONNECT for a tunnel",
        ),
        (
            b"GET https://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
            "use CONNECT for https:// URLs",
        ),
        (b"CONNECT a HTTP/1.1\r\nHost: a\r\n\r\n", 400, "CONNECT target needs a port"),
        (
            b"CONNECT a:0 HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
            "port out of range in target",
        ),
        (b"CONNECT a:443 HTTP/1.1\r\n\r\n", 400, "missing Host header field"),
        (
            b"CONNECT a:443 HTTP/3.0\r\n\r\n",
            505,
            "HTTP version not supported: use HTTP/1.1",
        ),
        (
            b"BREW a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
            501,
            "unknown method (methods are case-sensitive: GET, not get)",
        ),
        (
            b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\nX: \x00\r\n\r\n",
            400,
            "control character in header field value",
        ),
    ],
)
def test_refusals(
    harness: ProxyHarness, request_: bytes, status: int, reason: str
) -> None:
    """
    Bad or unsupported requests get their status, a plain-text body saying
    what is wrong, C{Connection: close}, a report with the same reason, and a
    closed connection; nothing is connected upstream.
    """
    client = harness.connectClient()
    client.send(request_)
    assert client.response().status == status
    assert client.response().body.endswith(f": {reason}\n".encode())
    response = client.response()
    assert response.header("Connection") == "close"
    assert response.header("Content-Type") == "text/plain; charset=utf-8"
    assert client.transport.disconnecting
    assert harness.connector.attempts == []
    [refused] = harness.observer.refused
    assert (refused.status, refused.reason) == (status, reason)
    assert refused.client == "127.0.0.1:40000"


def test_405NamesConnect(
    harness: ProxyHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A 405 says which method is allowed: with CONNECT alone served, that it
    only tunnels.
    """
    monkeypatch.setattr(ConnectProxyProtocol, "handlers", {"CONNECT": ConnectHandler})
    client = harness.connectClient()
    client.send(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
    value = client.transport.value()
    assert b"\r\nAllow: CONNECT\r\n" in value
    assert b"this proxy only tunnels with CONNECT" in value


def test_oversizedHeads() -> None:
    """
    An over-long request line gets 414 and an over-large head 431, as soon
    as the limit is passed, naming the limit and the option that sets it.
    """
    harness = ProxyHarness(ProxySettings(maxRequestLine=100, maxHeadSize=200))
    client = harness.connectClient()
    client.send(b"CONNECT " + b"a" * 200)
    assert client.response().status == 414
    assert client.response().body == (
        b"414 Request-URI Too Long: request line longer than 100 bytes "
        b"(see --max-request-line)\n"
    )
    client = harness.connectClient()
    client.send(b"CONNECT a:1 HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 40)
    assert client.response().status == 431
    assert client.response().body == (
        b"431 Request Header Fields Too Large: request head larger than 200 "
        b"bytes (see --max-head-size)\n"
    )


def test_nothingReadAfterRefusal(harness: ProxyHarness) -> None:
    """
    Bytes that arrive after a refusal are ignored.
    """
    client = harness.connectClient()
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    before = client.transport.value()
    client.send(connectHead())
    assert client.transport.value() == before
    assert harness.connector.attempts == []


@pytest.mark.parametrize(
    "error, reason",
    [
        (ConnectionRefusedError(), b"refused"),
        (DNSLookupError("nope"), b"resolve"),
        (NoRouteError(), b"could not connect"),
        (ConnectError("x"), b"could not connect"),
        (RuntimeError("surprise"), b"could not connect"),
    ],
)
def test_upstreamFailureIs502(
    harness: ProxyHarness, error: Exception, reason: bytes
) -> None:
    """
    An upstream that refuses, cannot be resolved or cannot be reached gets
    502 with a reason.
    """
    client = harness.connectClient()
    client.send(connectHead())
    harness.connector.attempts[0].fail(error)
    assert client.response().status == 502
    assert reason in client.transport.value()
    assert client.transport.disconnecting
    assert harness.observer.refused[0].status == 502


def test_connectDeadlineIs504(harness: ProxyHarness) -> None:
    """
    An upstream connect that outlives the total deadline is cancelled and the
    client gets 504, whatever error the cancellation produced.
    """
    client = harness.connectClient()
    client.send(connectHead())
    attempt = harness.connector.attempts[0]
    harness.clock.advance(9.9)
    assert client.transport.value() == b""
    harness.clock.advance(0.1)
    assert attempt.cancelled
    assert client.response().status == 504
    assert client.response().body == (
        b"504 Gateway Timeout: timed out connecting to the target after "
        b"10 seconds (see --connect-timeout)\n"
    )


def test_connectDeadlineDuringDNS() -> None:
    """
    A deadline hit while resolving (where cancelling fails with
    L{DNSLookupError}) is still a 504.
    """
    harness = ProxyHarness(ProxySettings(connectTimeout=1))
    client = harness.connectClient()
    client.send(connectHead())
    attempt = harness.connector.attempts[0]
    attempt.deferred._canceller = lambda d: d.errback(DNSLookupError("cancelled"))
    harness.clock.advance(1)
    assert client.response().status == 504
    assert client.response().body.endswith(b"after 1 second (see --connect-timeout)\n")


def test_connectingCancelledErrorIs504(harness: ProxyHarness) -> None:
    """
    L{ConnectingCancelledError} from the endpoint means a timeout.
    """
    client = harness.connectClient()
    client.send(connectHead())
    harness.connector.attempts[0].fail(ConnectingCancelledError(None))
    assert client.response().status == 504


def test_clientGoneWhileConnecting(harness: ProxyHarness) -> None:
    """
    A client that leaves while the upstream connect is in flight cancels it;
    nothing is written, and the request is reported once, as abandoned with
    no status.
    """
    client = harness.connectClient()
    client.send(connectHead())
    attempt = harness.connector.attempts[0]
    client.lose(ConnectionLost())
    assert attempt.cancelled
    assert client.transport.value() == b""
    [refused] = harness.observer.refused
    assert (refused.status, refused.outcome) == (0, "abandoned")
    assert refused.reason == "the client went away while the target was connected"
    assert (refused.method, refused.target) == ("CONNECT", "example.com:443")
    assert harness.clock.getDelayedCalls() == []


def test_connectorRaises(harness: ProxyHarness) -> None:
    """
    A connector that raises instead of failing its Deferred gives a 502.
    """

    def broken(request: object, protocol: object) -> None:
        raise ValueError("broken connector")

    harness.factory.connector.connectUpstream = broken  # type: ignore[method-assign,assignment]
    client = harness.connectClient()
    client.send(connectHead())
    assert client.response().status == 502


def test_requestTimeoutIs408(harness: ProxyHarness) -> None:
    """
    A client that does not finish its head in time gets 408, naming the
    timeout and the option that sets it, and is closed.
    """
    client = harness.connectClient()
    client.send(b"CONNECT example.com:443 HTTP/1.1\r\n")
    harness.clock.advance(29)
    assert client.transport.value() == b""
    harness.clock.advance(1)
    assert client.response().status == 408
    assert client.response().body == (
        b"408 Request Timeout: timed out waiting for the request head after "
        b"30 seconds (see --request-timeout)\n"
    )
    assert client.transport.disconnecting


def test_requestTimeoutStopsAtHead(harness: ProxyHarness) -> None:
    """
    The head deadline ends when the head is complete.
    """
    client = harness.connectClient()
    client.send(connectHead())
    harness.connector.attempts[0].succeed()
    harness.clock.advance(100)
    assert client.transport.value() == ESTABLISHED


def test_refusalAbortsIfCloseHangs(harness: ProxyHarness) -> None:
    """
    A refused connection whose close does not finish is aborted after the
    abort timeout.
    """
    client = harness.connectClient()
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    harness.clock.advance(14.9)
    assert not client.transport.aborted
    harness.clock.advance(0.1)
    assert client.transport.aborted


def test_refusalAbortCancelledOnClose(harness: ProxyHarness) -> None:
    """
    No abort timer is left once a refused connection is gone.
    """
    client = harness.connectClient()
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    client.lose()
    assert harness.clock.getDelayedCalls() == []


def test_halfCloseBeforeHeadCloses(harness: ProxyHarness) -> None:
    """
    A client that sends a FIN before its head is complete is closed.
    """
    client = harness.connectClient()
    client.send(b"CONNECT a")
    client.protocol.readConnectionLost()
    assert client.transport.disconnecting


#: The input of the field report: a CONNECT with a request body, and a FIN
#: right behind it (what C{printf ... | nc -N} sends).
NC_INPUT = b"CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\nrequest-body"


def test_finWithConnectPassedOn(harness: ProxyHarness) -> None:
    """
    A FIN that arrives with the CONNECT is remembered while the upstream
    connect is in flight and passed on after the early data: the upstream
    gets the body and then the FIN, and its reply reaches the client.
    """
    client = harness.connectClient()
    client.send(NC_INPUT)
    client.protocol.readConnectionLost()
    assert not client.transport.disconnecting
    attempt = harness.connector.attempts[0]
    assert not attempt.cancelled
    upstream = attempt.succeed()
    assert client.transport.value() == ESTABLISHED
    assert upstream.value() == b"request-body"
    assert upstream.disconnecting  # not plain TCP: closed after flushing
    assert client.transport.producer is None
    tunnel = client.protocol.tunnel
    assert tunnel is not None and tunnel.stats.closeReason == "client closed"


def test_finWithConnectHalfCloses(
    harness: ProxyHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    Where the upstream can half-close, the FIN reaches it as a FIN after
    the body, the reply flows back, and the upstream's FIN ends the tunnel.
    """
    monkeypatch.setattr(TransportRelay, "halfClose", staticmethod(lambda t: True))
    client = harness.connectClient()
    client.send(NC_INPUT)
    client.protocol.readConnectionLost()
    attempt = harness.connector.attempts[0]
    upstream = attempt.succeed()
    assert upstream.value() == b"request-body"
    assert upstream.writeClosed and not upstream.disconnecting
    assert upstream.producer is None  # the client produces nothing more
    attempt.protocol.dataReceived(b"reply")
    assert client.transport.value() == ESTABLISHED + b"reply"
    attempt.protocol.readConnectionLost()  # type: ignore[attr-defined]
    assert client.transport.disconnecting and upstream.disconnecting
    attempt.loseUpstream()
    client.lose()
    [record] = harness.observer.closed
    assert (record.bytesUp, record.bytesDown) == (12, 5)
    assert record.reason == "client closed"


def test_finWhileAdmissionPending() -> None:
    """
    A FIN while the access checks are still running is remembered too.
    """
    policy = LaterPolicy()
    harness = makeHarness(policies=[policy])
    client = harness.connectClient()
    client.send(NC_INPUT)
    client.protocol.readConnectionLost()
    assert harness.connector.attempts == []
    policy.pending[0].callback(None)
    upstream = harness.connector.attempts[0].succeed()
    assert client.transport.value() == ESTABLISHED
    assert upstream.value() == b"request-body"
    assert upstream.disconnecting


@pytest.mark.usefixtures("lingering")
def test_finThenRefusalClosesAtOnce(harness: ProxyHarness) -> None:
    """
    A client that sent its FIN gets its error response and the close at
    once: there is nothing left to read, so no linger.
    """
    client = harness.connectClient()
    client.send(connectHead())
    client.protocol.readConnectionLost()
    harness.connector.attempts[0].fail(ConnectionRefusedError())
    assert client.response().status == 502
    assert not client.transport.writeClosed
    assert client.transport.disconnecting


def test_finThen407Closes() -> None:
    """
    A client that sent its FIN cannot retry after a 407: the challenge says
    C{Connection: close} and the connection is closed.
    """
    checker = PendingChecker()
    harness = makeHarness(checker=checker)
    client = harness.connectClient()
    client.send(connectHead("example.com:443", basic(b"alice:wrong")))
    client.protocol.readConnectionLost()
    checker.pending[0].errback(UnauthorizedLogin())
    assert client.response().status == 407
    assert client.response().header("Connection") == "close"
    assert client.transport.disconnecting


def test_finAfterPipelinedRetryPassedOn() -> None:
    """
    A FIN that arrives before a pipelined retry has even been parsed (it
    waits behind a request whose check is pending) is remembered too: the
    retry gets its tunnel, with its body and then the FIN.
    """
    checker = PendingChecker()
    harness = makeHarness(checker=checker)
    client = harness.connectClient()
    client.send(
        connectHead("example.com:443", basic(b"alice:wrong"))
        + connectHead("example.com:443", basic(b"alice:secret"))
        + b"request-body"
    )
    client.protocol.readConnectionLost()
    checker.pending[0].errback(UnauthorizedLogin())
    assert not client.transport.disconnecting
    checker.pending[1].callback(b"alice")
    upstream = harness.connector.attempts[0].succeed()
    assert [r.status for r in client.responses()] == [407, 200]
    assert upstream.value() == b"request-body"
    assert upstream.disconnecting  # the FIN, where half-close is not real


def test_finAfter407WithPartialHeadCloses() -> None:
    """
    After a 407, a FIN with only part of the next head buffered closes the
    connection: that head can never be completed.
    """
    checker = PendingChecker()
    harness = makeHarness(checker=checker)
    client = harness.connectClient()
    client.send(connectHead("example.com:443", basic(b"alice:wrong")) + b"CONN")
    client.protocol.readConnectionLost()
    checker.pending[0].errback(UnauthorizedLogin())
    assert client.response().status == 407
    assert client.transport.disconnecting


def test_finThenGoneCancels(harness: ProxyHarness) -> None:
    """
    A client that sent its FIN and then goes away (a reset) cancels the
    connect in flight.
    """
    client = harness.connectClient()
    client.send(connectHead())
    client.protocol.readConnectionLost()
    client.lose(ConnectionLost())
    assert harness.connector.attempts[0].cancelled
    assert client.transport.value() == b""
    assert harness.clock.getDelayedCalls() == []


def test_clientLostDuringTunnel(harness: ProxyHarness) -> None:
    """
    A client lost with an error mid-tunnel resets the upstream (not plain
    TCP here: aborted at once) after unregistering its producer.
    """
    client = harness.connectClient()
    client.send(connectHead())
    attempt = harness.connector.attempts[0]
    upstream = attempt.succeed()
    client.lose(ConnectionLost())
    assert upstream.producer is None
    assert upstream.aborted
    attempt.loseUpstream(ConnectionAborted())
    [record] = harness.observer.closed
    assert record.reason is not None and record.reason.startswith(
        "client connection lost"
    )
    assert harness.clock.getDelayedCalls() == []


def test_upstreamResetResetsClient(
    harness: ProxyHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    An upstream reset reaches the client as a reset once what the upstream
    sent before it has been written: the client never sees a clean close.
    """
    monkeypatch.setattr(TransportRelay, "halfClose", staticmethod(lambda t: True))
    client = harness.connectClient()
    client.send(connectHead())
    attempt = harness.connector.attempts[0]
    attempt.succeed()
    attempt.protocol.dataReceived(b"x" * 65536)
    attempt.loseUpstream(ConnectionLost("Connection reset by peer"))
    assert client.transport.disconnecting and not client.transport.aborted
    assert client.transport.producer is not None
    client.transport.producer.resumeProducing()  # the buffer is empty
    assert client.transport.aborted
    assert client.transport.value() == ESTABLISHED + b"x" * 65536
    client.lose(ConnectionAborted())
    [record] = harness.observer.closed
    assert record.reason is not None
    assert record.reason.startswith("upstream connection lost")


def test_halfCloseTimeoutSetting(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    The tunnel gets C{halfCloseTimeout} from the settings: a half-closed
    tunnel closes after it, with its own reason.
    """
    monkeypatch.setattr(TransportRelay, "halfClose", staticmethod(lambda t: True))
    harness = ProxyHarness(ProxySettings(idleTimeout=600, halfCloseTimeout=8))
    client = harness.connectClient()
    client.send(connectHead())
    attempt = harness.connector.attempts[0]
    upstream = attempt.succeed()
    client.protocol.readConnectionLost()
    assert upstream.writeClosed
    harness.clock.pump([1] * 7)
    assert not client.transport.disconnecting
    harness.clock.pump([1] * 2)
    assert client.transport.disconnecting and upstream.disconnecting
    attempt.loseUpstream()
    client.lose()
    [record] = harness.observer.closed
    assert record.reason == "half-close timeout"


def _fieldReportHead(fields: int) -> bytes:
    """
    A CONNECT head with C{Host} and C{fields} ordinary header fields, 160
    bytes each (100 of them make the 16 KiB head of the field report).
    """
    head = connectHead()[: -len(b"\r\n")]
    for index in range(fields):
        line = b"X-Field-%04d: " % index
        head += line + b"v" * (160 - len(line) - 2) + b"\r\n"
    return head + b"\r\n"


def test_fieldReportHeadAccepted(harness: ProxyHarness) -> None:
    """
    100 ordinary header fields plus C{Host}, about 16 KiB, are accepted.
    """
    head = _fieldReportHead(100)
    assert 16000 < len(head) <= 16384
    client = harness.connectClient()
    client.send(head)
    harness.connector.attempts[0].succeed()
    assert client.transport.value() == ESTABLISHED


@pytest.mark.parametrize(
    "settings, fields",
    [(ProxySettings(), 255), (ProxySettings(maxHeaderFields=20), 19)],
)
def test_tooManyFieldsIs431(settings: ProxySettings, fields: int) -> None:
    """
    Up to C{--max-header-fields} fields (C{Host} included) are accepted;
    one more gets 431 with a reason naming the option.
    """
    harness = ProxyHarness(settings)
    client = harness.connectClient()
    client.send(_fieldReportHead(fields))
    assert len(harness.connector.attempts) == 1
    client = harness.connectClient()
    client.send(_fieldReportHead(fields + 1))
    assert client.response().status == 431
    assert b"--max-header-fields" in client.transport.value()
    [refused] = harness.observer.refused
    assert refused.status == 431
    assert "--max-header-fields" in refused.reason


def test_observerErrorsContained(logEvents: list[LogEvent]) -> None:
    """
    An observer that raises is logged and the others still hear of events.
    """

    class Broken:
        def requestRefused(self, event: object) -> None:
            raise RuntimeError("observer bug")

    recorder = RecordingObserver()
    with pytest.warns(DeprecationWarning, match="lacks connectionOpened"):
        fanOut = ObserverFanOut([Broken(), recorder])  # type: ignore[list-item]
    harness = ProxyHarness()
    harness.factory.observer = fanOut
    client = harness.connectClient()
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert len(recorder.refused) == 1
    assert any("log_failure" in e for e in logEvents)


def test_accessLogEvents(logEvents: list[LogEvent]) -> None:
    """
    The access log emits one structured event per refusal and per closed
    tunnel, with stable C{event} names.
    """
    harness = ProxyHarness()
    harness.factory.observer = ObserverFanOut([AccessLogObserver()])
    client = harness.connectClient()
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    client = harness.connectClient()
    client.send(connectHead())
    attempt = harness.connector.attempts[0]
    attempt.succeed()
    client.send(b"x" * 10)
    for _ in range(100):
        attempt.protocol.dataReceived(b"y" * 10)
    attempt.loseUpstream()
    client.lose()
    byName: dict[str, list[LogEvent]] = {}
    for e in logEvents:
        if "event" in e:
            byName.setdefault(e["event"], []).append(e)
    [refused] = byName["request_refused"]
    assert (refused["status"], refused["method"]) == (400, "GET")
    [closed] = byName["tunnel_close"]
    assert (closed["bytesUp"], closed["bytesDown"]) == (10, 1000)
    assert closed["host"] == "example.com"
    assert closed["upstream"] == "192.0.2.1:443"
    assert closed["reason"] == "upstream closed"
    assert len(byName["tunnel_open"]) == 1


def test_timeoutNamesTheRequestLine(harness: ProxyHarness) -> None:
    """
    A 408 for a head that did not complete names the request line when it
    came whole.
    """
    client = harness.connectClient()
    client.send(b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.ex")
    other = harness.connectClient()
    other.send(b"CONNECT a.exa")
    harness.clock.advance(harness.factory.settings.requestTimeout)
    assert [(r.status, r.method, r.target) for r in harness.observer.refused] == [
        (408, "CONNECT", "a.example:443"),
        (408, "", ""),
    ]


@pytest.mark.parametrize(
    "request_, method, target",
    [
        (b"CONNECT a HTTP/1.1\r\nHost: a\r\n\r\n", "CONNECT", "a"),
        (b"CONNECT a:443 HTTP/1.1\r\n\r\n", "CONNECT", "a:443"),
        (b"BREW a:443 HTTP/1.1\r\nHost: a\r\n\r\n", "BREW", "a:443"),
        (b"CONNECT a:443 HTTP/2.0\r\n\r\n", "CONNECT", "a:443"),
        (b"CONNECT a:443\r\n\r\n", "", ""),
    ],
)
def test_refusalsNameTheRequest(
    harness: ProxyHarness, request_: bytes, method: str, target: str
) -> None:
    """
    A request refused by the parser is reported with its method and target
    when its request line was readable.
    """
    client = harness.connectClient()
    client.send(request_)
    [refused] = harness.observer.refused
    assert (refused.method, refused.target) == (method, target)


@pytest.mark.parametrize(
    "record, text",
    [
        (
            RefusedRequest("127.0.0.1:5", "CONNECT", "a", 400, "needs a port"),
            "refused 127.0.0.1:5 - CONNECT a: 400 needs a port",
        ),
        (
            RefusedRequest("127.0.0.1:5", "", "", 400, "malformed request line"),
            "refused 127.0.0.1:5 - -: 400 malformed request line",
        ),
        (
            RefusedRequest("127.0.0.1:5", "CONNECT", "", 400, "malformed target"),
            "refused 127.0.0.1:5 - CONNECT -: 400 malformed target",
        ),
        (
            RefusedRequest("127.0.0.1:5", "CONNECT", "a:25", 403, "no", "alice"),
            "refused 127.0.0.1:5 alice CONNECT a:25: 403 no",
        ),
        (
            TunnelRecord("127.0.0.1:5", "a", 443, "192.0.2.1:443", user="alice"),
            "tunnel closed 127.0.0.1:5 alice -> a:443 via 192.0.2.1:443: "
            "0 bytes up, 0 bytes down, 0.000s, None",
        ),
        (
            TunnelRecord("127.0.0.1:5", "a", 443, "192.0.2.1:443", reason="idle"),
            "tunnel closed 127.0.0.1:5 - -> a:443 via 192.0.2.1:443: "
            "0 bytes up, 0 bytes down, 0.000s, idle",
        ),
    ],
)
def test_accessLogText(
    logEvents: list[LogEvent], record: RefusedRequest | TunnelRecord, text: str
) -> None:
    """
    The text of an access-log line names the client, the user (C{-} for
    none) and the request (C{-} for what was not read); the fields stay
    as they are.
    """
    observer = AccessLogObserver()
    if isinstance(record, RefusedRequest):
        observer.requestRefused(record)
    else:
        observer.tunnelClosed(record)
    [event] = logEvents
    assert formatEvent(event) == text
    assert event["user"] == record.user
    if isinstance(record, RefusedRequest):
        assert (event["method"], event["target"]) == (record.method, record.target)


def test_interfacesProvided(harness: ProxyHarness) -> None:
    """
    The built-in connector and observers provide their interfaces.
    """
    from connectproxy import DirectConnector

    assert verifyObject(IUpstreamConnector, DirectConnector(harness.clock))
    assert verifyObject(IUpstreamConnector, harness.connector)
    assert verifyObject(IProxyObserver, AccessLogObserver())
    assert verifyObject(IProxyObserver, ObserverFanOut([]))
    assert verifyObject(IProxyObserver, RecordingObserver())


@pytest.fixture
def lingering(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Treat the fake client transport as plain TCP, which can half-close.
    """
    monkeypatch.setattr(_refuser, "canHalfClose", lambda transport: True)


@pytest.mark.usefixtures("lingering")
def test_refusalLingers(harness: ProxyHarness) -> None:
    """
    On plain TCP an error response is followed by a FIN; the client's further
    bytes are discarded, and the connection is closed after the linger time.
    """
    client = harness.connectClient()
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert client.transport.writeClosed
    assert not client.transport.disconnecting
    client.send(b"more of a large upload")
    harness.clock.advance(_refuser.LINGER_SECONDS)
    assert client.transport.disconnecting
    harness.clock.advance(15)
    assert client.transport.aborted


@pytest.mark.usefixtures("lingering")
def test_lingerEndsAtLimit(harness: ProxyHarness) -> None:
    """
    A client that keeps sending after an error is closed once it has sent
    more than the linger byte limit.
    """
    client = harness.connectClient()
    client.send(b"CONNECT a:1 HTTP/1.1\r\n\r\n")
    assert client.response().status == 400
    client.send(b"x" * _refuser.LINGER_BYTES)
    assert not client.transport.disconnecting
    client.send(b"x")
    assert client.transport.disconnecting


@pytest.mark.usefixtures("lingering")
def test_lingerEndsAtClientFin(harness: ProxyHarness) -> None:
    """
    The client's FIN ends the linger at once.
    """
    client = harness.connectClient()
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    client.protocol.readConnectionLost()
    assert client.transport.disconnecting


def test_unresolvableNameNotLoggedAsError(
    harness: ProxyHarness, logEvents: list[LogEvent]
) -> None:
    """
    A target name that does not resolve is an ordinary 502, logged without
    a traceback.
    """
    client = harness.connectClient()
    client.send(connectHead())
    harness.connector.attempts[0].fail(DNSLookupError("no addresses"))
    assert client.response().status == 502
    assert not [e for e in logEvents if "log_failure" in e]
