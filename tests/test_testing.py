# -*- test-case-name: tests.test_testing -*-
"""
Tests for L{connectproxy.testing}, the fakes offered to plugin authors and
used by the project's own tests: the client's response reader, request
heads, the fake parent proxy, and the records policies and connectors
receive.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import TCP6ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from connectproxy import (
    AccessRequest,
    ProxySettings,
    Refusal,
    RequestHead,
    Target,
    TargetForm,
)
from connectproxy._networks import NetworkRules
from connectproxy.testing import (
    FakeClient,
    FakeParentProxy,
    HalfCloseableStringTransport,
    ProxyHarness,
    Response,
    accessRequest,
    checkPolicy,
    connectHead,
    connectorContext,
    upstreamRequest,
)
from tests._helpers import ESTABLISHED, StaticPolicy


def written(data: bytes, closed: bool = False) -> FakeClient:
    """
    A client to which the proxy wrote C{data}, and then closed the
    connection if C{closed}.
    """
    transport = HalfCloseableStringTransport()
    transport.write(data)
    if closed:
        transport.loseConnection()
    return FakeClient(Protocol(), transport)


# Request heads


def test_connectHeadDefaults() -> None:
    """
    By default, the head of a CONNECT to example.com:443 with its Host
    field.
    """
    assert connectHead() == (
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
    )


def test_connectHeadFields() -> None:
    """
    More fields follow C{Host} in order, the version goes in the request
    line, and text is encoded as ISO-8859-1.
    """
    head = connectHead("[::1]:8443", "X-A: 1", "X-B: caf\xe9", version="1.0")
    assert head == (
        b"CONNECT [::1]:8443 HTTP/1.0\r\nHost: [::1]:8443\r\n"
        b"X-A: 1\r\nX-B: caf\xe9\r\n\r\n"
    )


# Reading responses


def test_responseOfTheProxy() -> None:
    """
    The proxy's refusal reads as its status, phrase, fields and body.
    """
    harness = ProxyHarness()
    client = harness.connectClient()
    client.send(connectHead("example.com:80"))
    response = client.response()
    assert (response.version, response.status, response.phrase) == (
        (1, 1),
        403,
        "Forbidden",
    )
    assert response.header("content-type") == "text/plain; charset=utf-8"
    assert response.header("CONNECTION") == "close"
    assert response.header("X-Missing") is None
    assert (
        response.body == b"403 Forbidden: port 80 is not allowed (see --allow-port)\n"
    )
    assert response.headers[0] == ("Content-Type", "text/plain; charset=utf-8")


def test_responsesStopAtTheTunnel() -> None:
    """
    After a 2xx, the bytes belong to the tunnel: they are not read as a
    body or as another response.
    """
    harness = ProxyHarness()
    client = harness.connectClient()
    client.send(connectHead())
    attempt = harness.connector.attempts[0]
    attempt.succeed()
    attempt.protocol.dataReceived(b"HTTP/1.1 500 not a response\r\n\r\n")
    [response] = client.responses()
    assert (response.status, response.phrase, response.body) == (
        200,
        "Connection established",
        b"",
    )
    assert client.transport.value().startswith(ESTABLISHED)


def test_responsesInOrder() -> None:
    """
    Several responses on one connection are read in order, each body as
    long as its C{Content-Length}; a 1xx has no body.
    """
    client = written(
        b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 3\r\n\r\n"
        b"abc"
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 403 \r\nContent-Length: 0\r\n\r\n"
        b"HTTP/1.0 200 OK\r\n\r\ntunnel"
    )
    assert [(r.status, r.phrase, r.body) for r in client.responses()] == [
        (407, "Proxy Authentication Required", b"abc"),
        (100, "Continue", b""),
        (403, "", b""),
        (200, "OK", b""),
    ]
    with pytest.raises(AssertionError, match="expected one response, got 4"):
        client.response()


def test_noResponse() -> None:
    """
    Nothing written is no response; L{FakeClient.response} wants one.
    """
    client = written(b"")
    assert client.responses() == []
    with pytest.raises(AssertionError, match="expected one response, got 0"):
        client.response()


def test_fieldValuesTrimmed() -> None:
    """
    Field values lose their surrounding spaces and tabs, keep inner ones,
    and are decoded as ISO-8859-1; names keep their case.
    """
    client = written(
        b"HTTP/1.1 403 Forbidden\r\nX-Name:\t a  b \t\r\nX-Byte: \xe9\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert client.response().headers == (
        ("X-Name", "a  b"),
        ("X-Byte", "\xe9"),
        ("Content-Length", "0"),
    )


@pytest.mark.parametrize("status", [204, 304])
def test_noBodyStatuses(status: int) -> None:
    """
    204 and 304 responses have no body, whatever follows.
    """
    client = written(b"HTTP/1.1 %d X\r\n\r\n" % status, closed=True)
    assert client.response().body == b""


def test_bodyUntilClose() -> None:
    """
    Without C{Content-Length}, the body of a response on a connection the
    proxy closed is everything after the head.
    """
    client = written(b"HTTP/1.1 502 Bad Gateway\r\n\r\nall of it", closed=True)
    assert client.response().body == b"all of it"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n",
            "incomplete response head",
        ),
        (b"HTTP/1.1 403\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 4033 Forbidden\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 403 For\x00bidden\r\n\r\n", "malformed status line"),
        (b"HTTP/2 403 Forbidden\r\n\r\n", "malformed status line"),
        (b"garbage\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 403 F\r\nContent-Length : 0\r\n\r\n", "malformed header field"),
        (b"HTTP/1.1 403 F\r\nX-A: 1\r\n folded\r\n\r\n", "malformed header field"),
        (b"HTTP/1.1 403 F\r\nno colon\r\n\r\n", "malformed header field"),
        (b"HTTP/1.1 403 F\r\nX-A: a\x01b\r\n\r\n", "control character"),
        (b"HTTP/1.1 403 F\r\nX-A: a\nb\r\n\r\n", "control character"),
        (b"HTTP/1.1 403 F\r\nContent-Length: 5\r\n\r\nabc", "incomplete body"),
        (
            b"HTTP/1.1 403 F\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            "invalid Content-Length",
        ),
        (b"HTTP/1.1 403 F\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length"),
        (
            b"HTTP/1.1 403 F\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "Transfer-Encoding",
        ),
        (b"HTTP/1.1 403 F\r\n\r\nbody", "without Content-Length"),
    ],
)
def test_malformedResponses(data: bytes, message: str) -> None:
    """
    Anything but complete, well-formed responses is an L{AssertionError}
    saying what is wrong.
    """
    with pytest.raises(AssertionError, match=message):
        written(data).responses()


def test_repeatedEqualContentLength() -> None:
    """
    C{Content-Length} repeated with one value is that length.
    """
    client = written(
        b"HTTP/1.1 403 F\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab"
    )
    assert client.response().body == b"ab"


def test_responseRecord() -> None:
    """
    A L{Response} is a plain value.
    """
    response = Response((1, 1), 403, "Forbidden", (("A", "1"),), b"x")
    assert response == Response((1, 1), 403, "Forbidden", (("A", "1"),), b"x")
    assert response.header("a") == "1"


# The fake parent proxy


class Handshake(Protocol):
    """
    What a parent-proxy connector does first: send a CONNECT, then keep
    what comes back.

    @ivar received: Every byte received.
    @ivar lost: Why the connection was lost, once it was.
    """

    def __init__(self, head: bytes = b"") -> None:
        self.head = head or connectHead("example.com:443")
        self.received = b""
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.head)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = reason


def connected(parent: FakeParentProxy, head: bytes = b"") -> Handshake:
    """
    Connect a L{Handshake} to C{parent} through its endpoint.
    """
    results: list[Any] = []
    parent.endpoint().connect(Factory.forProtocol(lambda: Handshake(head))).addBoth(
        results.append
    )
    [protocol] = results
    assert isinstance(protocol, Handshake)
    return protocol


def test_parentEndpoint() -> None:
    """
    The parent's endpoint connects at once; each connection's transport has
    the parent as its peer.
    """
    parent = FakeParentProxy()
    assert verifyObject(IStreamClientEndpoint, parent.endpoint())
    protocol = connected(parent)
    [connection] = parent.connections
    assert connection.protocol is protocol
    assert protocol.transport is connection.transport
    assert connection.transport.getPeer() == IPv4Address("TCP", "192.0.2.8", 3128)


def test_parentAnswersAndRelays() -> None:
    """
    On L{FakeParentProxy.flush} the parent reads the CONNECT and answers
    it; after that, what the connector sends is relayed, and what the test
    sends reaches the connector.
    """
    parent = FakeParentProxy()
    protocol = connected(parent)
    [connection] = parent.connections
    assert (connection.request, protocol.received) == (None, b"")
    parent.flush()
    assert connection.request is not None
    assert connection.request.authority == "example.com:443"
    assert connection.request.getHeader("host") == "example.com:443"
    assert connection.answered
    assert protocol.received == b"HTTP/1.1 200 Connection established\r\n\r\n"
    connection.transport.write(b"ClientHello")
    assert connection.received == b""
    parent.flush()
    assert connection.received == b"ClientHello"
    connection.send(b"ServerHello")
    assert protocol.received.endswith(b"\r\n\r\nServerHello")


def test_parentReadsHeadInPieces() -> None:
    """
    A head written in pieces is read once complete; bytes written with its
    end are relayed.
    """
    parent = FakeParentProxy()
    head = connectHead("[2001:db8::1]:22")
    protocol = connected(parent, head[:10])
    [connection] = parent.connections
    parent.flush()
    assert connection.request is None and protocol.received == b""
    connection.transport.write(head[10:] + b"early")
    parent.flush()
    assert connection.request is not None
    assert (connection.request.host, connection.request.port) == ("2001:db8::1", 22)
    assert connection.received == b"early"


def test_parentRefuses() -> None:
    """
    The answer is the given status line, then the given fields as they
    are, then the body.
    """
    parent = FakeParentProxy(
        "HTTP/1.1 407 Proxy Authentication Required",
        [("Proxy-Authenticate", 'Basic realm="parent"'), ("Content-Length", "2")],
        b"no",
    )
    protocol = connected(parent)
    parent.flush()
    assert protocol.received == (
        b"HTTP/1.1 407 Proxy Authentication Required\r\n"
        b'Proxy-Authenticate: Basic realm="parent"\r\n'
        b"Content-Length: 2\r\n\r\nno"
    )


def test_parentThatDoesNotAnswer() -> None:
    """
    A parent without a status line reads the request and waits; the test
    answers with L{ParentConnection.send}.
    """
    parent = FakeParentProxy(None)
    protocol = connected(parent)
    parent.flush()
    [connection] = parent.connections
    assert connection.request is not None and not connection.answered
    assert protocol.received == b""
    connection.send(b"HTTP/1.1 200 OK\r\n\r\n")
    assert protocol.received == b"HTTP/1.1 200 OK\r\n\r\n"


def test_parentRefusesBadRequests() -> None:
    """
    A malformed request fails the test at L{FakeParentProxy.flush}.
    """
    parent = FakeParentProxy()
    connected(parent, b"CONNECT example.com HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(AssertionError, match="bad request: 400 CONNECT target"):
        parent.flush()


@pytest.mark.parametrize(
    ("close", "reason"),
    [("loseConnection", ConnectionDone), ("abortConnection", ConnectionAborted)],
)
def test_parentSeesClose(close: str, reason: type[Exception]) -> None:
    """
    A connector that closes its transport is told the connection is gone,
    once, on the next flush.
    """
    parent = FakeParentProxy()
    protocol = connected(parent)
    parent.flush()
    getattr(protocol.transport, close)()
    assert protocol.lost is None
    parent.flush()
    assert protocol.lost is not None and protocol.lost.check(reason)
    [connection] = parent.connections
    assert connection.closed
    protocol.lost = None
    parent.flush()
    connection.lose()
    assert protocol.lost is None


def test_parentCloses() -> None:
    """
    L{ParentConnection.lose} closes the connection from the parent's side,
    once.
    """
    parent = FakeParentProxy()
    protocol = connected(parent)
    [connection] = parent.connections
    connection.lose(ConnectionAborted())
    assert protocol.lost is not None and protocol.lost.check(ConnectionAborted)
    protocol.lost = None
    connection.lose()
    parent.flush()
    assert protocol.lost is None


def test_parentAcceptsReactorAttempts() -> None:
    """
    L{FakeParentProxy.acceptFrom} completes a connection attempt left in a
    memory reactor's C{tcpClients}, as the address it dialled.
    """
    reactor = MemoryReactorClock()
    protocol = Handshake()
    results: list[Any] = []
    endpoint = TCP6ClientEndpoint(reactor, "2001:db8::8", 3128)
    connectProtocol(endpoint, protocol).addBoth(results.append)
    parent = FakeParentProxy()
    connection = parent.acceptFrom(reactor)
    assert results == [protocol]
    assert connection.transport.getPeer() == IPv6Address("TCP", "2001:db8::8", 3128)
    parent.flush()
    assert connection.request is not None
    assert protocol.received.startswith(b"HTTP/1.1 200 ")


def test_parentAcceptsFactories() -> None:
    """
    L{FakeParentProxy.accept} connects a factory's protocol, with the
    parent's address as its peer unless told otherwise.
    """
    parent = FakeParentProxy(address=IPv4Address("TCP", "192.0.2.9", 8080))
    first = parent.accept(Factory.forProtocol(Handshake))
    other = IPv4Address("TCP", "192.0.2.10", 3128)
    second = parent.accept(Factory.forProtocol(Handshake), other)
    assert first.transport.getPeer() == IPv4Address("TCP", "192.0.2.9", 8080)
    assert second.transport.getPeer() == other
    assert parent.connections == [first, second]


@implementer(IHalfCloseableProtocol)
class HalfCloseableHandshake(Handshake):
    """
    A L{Handshake} that hears the parent's FIN.
    """

    finished = False

    def readConnectionLost(self) -> None:
        self.finished = True

    def writeConnectionLost(self) -> None:
        pass


def test_parentFinishes() -> None:
    """
    L{ParentConnection.finish} half-closes the connection from the
    parent's side; a protocol that cannot be half-closed fails the test.
    """
    parent = FakeParentProxy()
    halfCloseable = parent.accept(Factory.forProtocol(HalfCloseableHandshake))
    halfCloseable.finish()
    assert isinstance(halfCloseable.protocol, HalfCloseableHandshake)
    assert halfCloseable.protocol.finished
    assert not halfCloseable.closed
    plain = parent.accept(Factory.forProtocol(Handshake))
    with pytest.raises(AssertionError, match="cannot be half-closed"):
        plain.finish()


def test_parentFactoryWithoutProtocol() -> None:
    """
    A factory that builds no protocol fails the connect.
    """

    class Nothing(Factory):
        def buildProtocol(self, addr: Any) -> None:
            return None

    results: list[Any] = []
    FakeParentProxy().endpoint().connect(Nothing()).addBoth(results.append)
    [failure] = results
    assert isinstance(failure, Failure) and failure.check(ValueError)


# The records policies and connectors receive


def test_accessRequestDefaults() -> None:
    """
    accessRequest() describes a loopback client asking for example.com:443
    without a user.
    """
    request = RequestHead(
        "CONNECT",
        "example.com:443",
        (1, 1),
        (("host", "example.com:443"),),
        Target("example.com", 443, TargetForm.AUTHORITY),
    )
    assert accessRequest() == AccessRequest(
        "127.0.0.1", 40000, None, "example.com", 443, request
    )


def test_accessRequestIPv6() -> None:
    """
    An IPv6 target is bracketed in the request target and the Host field,
    and bare in C{host}.
    """
    access = accessRequest(host="2001:db8::1", port=8443)
    assert (access.host, access.port) == ("2001:db8::1", 8443)
    assert access.request.target == "[2001:db8::1]:8443"
    assert access.request.getHeader("host") == "[2001:db8::1]:8443"
    assert access.request.authority == "[2001:db8::1]:8443"
    assert (access.request.host, access.request.port) == ("2001:db8::1", 8443)


def test_accessRequestFields() -> None:
    """
    The user, client and extra header fields given end up in the request.
    """
    access = accessRequest(
        user="alice",
        clientHost="192.0.2.7",
        clientPort=5555,
        headers=(("user-agent", "curl/8.5"),),
    )
    assert (access.user, access.clientHost, access.clientPort) == (
        "alice",
        "192.0.2.7",
        5555,
    )
    assert access.request.getHeader("User-Agent") == "curl/8.5"
    assert access.request.method == "CONNECT"


@pytest.mark.parametrize(
    "makeAnswer, expected",
    [
        (lambda: None, None),
        (lambda: Refusal(403, "no"), Refusal(403, "no")),
        (lambda: succeed(None), None),
        (lambda: succeed(Refusal(451, "legal")), Refusal(451, "legal")),
    ],
    ids=["none", "refusal", "firedNone", "firedRefusal"],
)
def test_checkPolicyAnswers(
    makeAnswer: Callable[[], Any], expected: Refusal | None
) -> None:
    """
    checkPolicy returns a direct answer, or the result of a fired Deferred.
    """
    policy = StaticPolicy(makeAnswer())
    access = accessRequest()
    assert checkPolicy(policy, access) == expected
    assert policy.seen == [access]


def test_checkPolicyReraisesFailure() -> None:
    """
    checkPolicy raises what a failed Deferred failed with.
    """
    with pytest.raises(RuntimeError, match="directory down"):
        checkPolicy(StaticPolicy(fail(RuntimeError("directory down"))), accessRequest())


def test_checkPolicyReraisesException() -> None:
    """
    checkPolicy lets an exception the policy raised through.
    """
    with pytest.raises(KeyError):
        checkPolicy(StaticPolicy(KeyError("x")), accessRequest())


def test_checkPolicyUnfired() -> None:
    """
    checkPolicy refuses to guess when the Deferred has not fired.
    """
    policy = StaticPolicy(Deferred())
    with pytest.raises(AssertionError, match="has not answered yet"):
        checkPolicy(policy, accessRequest())


def test_upstreamRequestHelper() -> None:
    """
    C{upstreamRequest()} builds what a connector gets for a loopback client
    asking for example.com:443 without a user; an IPv6 target is
    bracketed in the request, bare in C{host}.
    """
    target = upstreamRequest()
    assert (target.host, target.port, target.user) == ("example.com", 443, None)
    assert target.client == IPv4Address("TCP", "127.0.0.1", 40000)
    assert target.request.authority == "example.com:443"
    ipv6 = upstreamRequest("2001:db8::1", 8443, user="bob", headers=(("x-a", "1"),))
    assert (ipv6.host, ipv6.user) == ("2001:db8::1", "bob")
    assert ipv6.request.target == "[2001:db8::1]:8443"
    assert ipv6.request.getHeader("x-a") == "1"


def test_connectorContextHelper() -> None:
    """
    C{connectorContext()} gives a plugin a memory reactor, the default
    settings and rules, and a resolver pool that looks up nothing outside
    the process: an unknown name has no addresses.
    """
    made = connectorContext()
    assert isinstance(made.reactor, MemoryReactorClock)
    assert made.settings == ProxySettings()
    assert made.networks == NetworkRules.fromStrings()
    assert (made.resolverPool.threads, made.resolverPool.perClient) == (32, 8)
    found: list[Any] = []
    made.resolverPool.resolve("", "example.com", 443).addCallback(found.append)
    assert found == [[]]
    clock = MemoryReactorClock()
    settings = ProxySettings(resolverThreads=2)
    assert connectorContext(clock, settings).reactor is clock
    assert connectorContext(clock, settings).resolverPool.threads == 2
