# -*- test-case-name: tests.test_parent -*-
"""
Tests for L{connectproxy._parent.ParentProxyConnector} on a memory reactor,
with the parent proxy answered by hand (L{tests._fakeparent.FakeParent}):
what it sends the parent, when it hands the tunnel over, how each answer
fails, and that a cancel at any stage leaves no connection.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import (
    ConnectBindError,
    ConnectingCancelledError,
    ConnectionDone,
    ConnectionRefusedError,
    NoRouteError,
)
from twisted.internet.interfaces import IHalfCloseableProtocol, IProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from connectproxy import ForbiddenDestination, NetworkRules, ProxySettings, ResolverBusy
from connectproxy._errors import ParentProxyError
from connectproxy._outgoing import OutgoingAddresses
from connectproxy._parent import ParentProxyConnector
from connectproxy._parenturl import ParentProxy
from connectproxy.interfaces import IUpstreamConnector
from connectproxy.testing import FakeResolver, connectorContext, upstreamRequest
from tests._fakeparent import ESTABLISHED, FakeParent
from tests.test_resolver import HangingResolver

PARENT_NAME = "parent.example"
PARENT_ADDRESS = "192.0.2.50"
HEAD = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"


@implementer(IHalfCloseableProtocol)
class RecordingProtocol(Protocol):
    """
    A tunnel protocol that records what happens to it, in order.
    """

    def __init__(self, log: list[Any] | None = None) -> None:
        self.log: list[Any] = [] if log is None else log

    def connectionMade(self) -> None:
        self.log.append("connected")

    def dataReceived(self, data: bytes) -> None:
        self.log.append(data)

    def readConnectionLost(self) -> None:
        self.log.append("fin")

    def writeConnectionLost(self) -> None:
        self.log.append("write closed")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.log.append(("lost", reason.type))


class Attempt:
    """
    One C{connectUpstream} of a parent-proxy connector on a memory reactor.

    @ivar reactor: The memory reactor.
    @ivar connector: The connector.
    @ivar protocol: The tunnel protocol it was asked to connect.
    @ivar outcome: What the Deferred fired with, once it has.
    @ivar deferred: The Deferred.
    """

    def __init__(
        self,
        url: str = f"http://{PARENT_NAME}:3128",
        host: str = "example.com",
        port: int = 443,
        networks: NetworkRules | None = None,
        resolver: Any = None,
        trustRoot: Any = None,
        outgoing: OutgoingAddresses | None = None,
        forwarding: bool = False,
    ) -> None:
        """
        @param forwarding: Whether to connect for plain HTTP forwarding
            (C{connectForwarding}: the connection to the parent itself)
            instead of a tunnel.
        """
        self.reactor = MemoryReactorClock()
        if resolver is None:
            resolver = FakeResolver({PARENT_NAME: [PARENT_ADDRESS]})
        self.resolver = resolver
        context = connectorContext(self.reactor, networks=networks, resolver=resolver)
        self.connector = ParentProxyConnector(
            self.reactor,
            ParentProxy.fromURL(url),
            7.0,
            context.networks,
            context.resolverPool,
            trustRoot,
            outgoing=outgoing,
        )
        self.protocol = RecordingProtocol()
        self.outcome: list[Any] = []
        connect = self.connector.connectUpstream
        if forwarding:
            connect = self.connector.connectForwarding
        self.deferred = connect(upstreamRequest(host, port), self.protocol)
        self.deferred.addBoth(self.record)

    def record(self, result: Any) -> Any:
        self.outcome.append(result)
        self.protocol.log.append("fired")
        return None

    def parent(self, index: int = -1) -> FakeParent:
        return FakeParent(self.reactor, index)

    def error(self) -> ParentProxyError:
        """
        The L{ParentProxyError} the attempt failed with.
        """
        [failure] = self.outcome
        assert isinstance(failure, Failure), failure
        failure.trap(ParentProxyError)
        assert isinstance(failure.value, ParentProxyError)
        return failure.value


def test_providesInterface() -> None:
    """
    The connector is an L{IUpstreamConnector}, and its repr names the
    parent without its credentials.
    """
    connector = Attempt("http://alice:s3cret@parent.example:3128").connector
    assert verifyObject(IUpstreamConnector, connector)
    assert repr(connector) == "<ParentProxyConnector http://parent.example:3128>"
    assert "s3cret" not in repr(connector.parent)


def test_sendsConnect() -> None:
    """
    The parent's name is resolved on the pool and the parent gets a CONNECT
    in authority form with a Host field; the target's name is not resolved
    here.
    """
    attempt = Attempt()
    assert attempt.resolver.names == [PARENT_NAME]
    parent = attempt.parent()
    assert (parent.host, parent.port, parent.timeout) == (PARENT_ADDRESS, 3128, 7.0)
    assert parent.received() == HEAD
    assert attempt.outcome == []
    assert attempt.protocol.log == []


def test_credentialsSent() -> None:
    """
    The URL's percent-decoded user information becomes Basic credentials.
    """
    attempt = Attempt("http://al%C3%AFce:p%40ss:w%25rd@parent.example:3128")
    token = base64.b64encode("al\xefce:p@ss:w%rd".encode()).decode()
    assert attempt.parent().received() == HEAD.replace(
        b"\r\n\r\n", f"\r\nProxy-Authorization: Basic {token}\r\n\r\n".encode()
    )


@pytest.mark.parametrize(
    ("host", "authority"),
    [
        ("2606:4700:4700::1111", b"[2606:4700:4700::1111]:8443"),
        ("8.8.8.8", b"8.8.8.8:8443"),
        ("xn--bcher-kva.example", b"xn--bcher-kva.example:8443"),
    ],
)
def test_authorityForm(host: str, authority: bytes) -> None:
    """
    IPv6 targets are bracketed, names go as the proxy normalised them.
    """
    attempt = Attempt(host=host, port=8443)
    assert attempt.parent().received() == (
        b"CONNECT " + authority + b" HTTP/1.1\r\nHost: " + authority + b"\r\n\r\n"
    )


def test_parentAddressIsNotVetted() -> None:
    """
    The parent's own address is the operator's choice: a loopback or
    private parent is connected to under the default network rules.
    """
    attempt = Attempt("http://127.0.0.1:3128")
    assert (attempt.parent().host, attempt.resolver.names) == ("127.0.0.1", [])
    attempt = Attempt("http://[::1]:3128")
    assert attempt.parent().host == "::1"


@pytest.mark.parametrize("host", ["10.0.0.1", "127.0.0.1", "::1", "localhost"])
def test_literalTargetVetted(host: str) -> None:
    """
    A target that needs no lookup is checked against the network rules, and
    refused without any connection to the parent.
    """
    attempt = Attempt(host=host)
    [failure] = attempt.outcome
    assert failure.check(ForbiddenDestination)
    assert attempt.reactor.tcpClients == []


def test_literalTargetAllowed() -> None:
    """
    An allowed IP-literal target goes to the parent.
    """
    networks = NetworkRules.fromStrings(allow=["10.0.0.0/8"])
    attempt = Attempt(host="10.0.0.1", networks=networks)
    assert attempt.parent().received().startswith(b"CONNECT 10.0.0.1:443 ")


def test_nameTargetNotResolvedLocally() -> None:
    """
    A name target is the parent's to resolve, whatever it would resolve to
    here.
    """
    resolver = FakeResolver({PARENT_NAME: [PARENT_ADDRESS], "internal": ["10.0.0.1"]})
    attempt = Attempt(host="internal", resolver=resolver)
    assert resolver.names == [PARENT_NAME]
    assert attempt.parent().received().startswith(b"CONNECT internal:443 ")


def test_tunnelAfterTheAnswer() -> None:
    """
    The tunnel protocol is connected and the Deferred fires only once the
    2xx head is complete, and the bytes after the head arrive after that.
    """
    attempt = Attempt()
    parent = attempt.parent()
    parent.send(ESTABLISHED[:-1])
    assert attempt.protocol.log == []
    parent.send(ESTABLISHED[-1:] + b"server hello")
    assert attempt.protocol.log == ["connected", "fired", b"server hello"]
    assert attempt.outcome == [attempt.protocol]
    assert attempt.protocol.transport is parent.transport
    assert not parent.dropped


def test_answerSplitAnywhere() -> None:
    """
    An answer that arrives a byte at a time, with interim responses and
    header fields, hands over exactly once, at its last byte.
    """
    attempt = Attempt()
    parent = attempt.parent()
    answer = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.0 200 OK\r\nVia: 1.1 squid\r\nContent-Length: 9\r\n\r\nabc"
    )
    for index in range(len(answer) - 3):
        assert attempt.protocol.log == []
        parent.send(answer[index : index + 1])
    assert attempt.protocol.log == ["connected", "fired"]
    parent.send(b"a")
    parent.send(b"bc")
    assert attempt.protocol.log == ["connected", "fired", b"a", b"bc"]


def test_tunnelGetsEverythingAfter() -> None:
    """
    After the hand-over the tunnel protocol gets the parent's bytes, its
    FIN and the loss of the connection; and writes reach the parent.
    """
    attempt = Attempt()
    parent = attempt.parent()
    parent.send(ESTABLISHED)
    parent.clear()
    assert attempt.protocol.transport is not None
    attempt.protocol.transport.write(b"client hello")
    assert parent.received() == b"client hello"
    parent.send(b"data")
    parent.finish()
    parent.close()
    assert attempt.protocol.log == [
        "connected",
        "fired",
        b"data",
        "fin",
        ("lost", ConnectionDone),
    ]


def test_finClosesAProtocolThatCannotHalfClose() -> None:
    """
    A FIN from the parent closes the connection when the tunnel protocol
    cannot take a half-close.
    """
    reactor = MemoryReactorClock()
    context = connectorContext(reactor)
    connector = ParentProxyConnector(
        reactor,
        ParentProxy.fromURL("http://192.0.2.50:3128"),
        7.0,
        context.networks,
        context.resolverPool,
    )
    protocol = Protocol()
    connector.connectUpstream(upstreamRequest(), protocol)
    parent = FakeParent(reactor)
    parent.send(ESTABLISHED)
    parent.finish()
    assert parent.transport.disconnecting


@pytest.mark.parametrize(
    ("answer", "status", "reason"),
    [
        (403, 403, "the parent proxy denied the tunnel"),
        (502, 502, "the parent proxy could not open the tunnel (502)"),
        (503, 503, "the parent proxy could not open the tunnel (503)"),
        (504, 504, "the parent proxy could not open the tunnel (504)"),
        (407, 502, "the parent proxy requires credentials"),
        (500, 502, "the parent proxy answered 500"),
        (404, 502, "the parent proxy answered 404"),
        (301, 502, "the parent proxy answered 301"),
        (101, 502, "the parent proxy answered 101"),
    ],
)
def test_refusals(answer: int, status: int, reason: str) -> None:
    """
    Every answer but a 2xx fails with the status the client gets; the
    connection to the parent is dropped and its content never reaches the
    tunnel protocol.
    """
    attempt = Attempt()
    parent = attempt.parent()
    parent.send(
        f"HTTP/1.1 {answer} Nope\r\nContent-Length: 11\r\n\r\nHTTP/1.1 200".encode()
    )
    error = attempt.error()
    assert (error.status, error.reason) == (status, reason)
    assert (error.parent, error.detail) == (
        "http://parent.example:3128",
        f"{answer} Nope",
    )
    assert parent.transport.aborted
    parent.send(b" more content")
    assert attempt.protocol.log == ["fired"]


def test_wrongCredentials() -> None:
    """
    A 407 when credentials were sent says they were refused: the
    operator's to fix, so 502.
    """
    attempt = Attempt("http://alice:wrong@parent.example:3128")
    attempt.parent().send(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
    error = attempt.error()
    assert (error.status, error.reason) == (
        502,
        "the parent proxy refused the proxy's credentials",
    )
    assert "wrong" not in str(error)


def test_malformedAnswer() -> None:
    """
    An answer that is not HTTP fails with 502, saying what is wrong in the
    detail.
    """
    attempt = Attempt()
    parent = attempt.parent()
    parent.send(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
    error = attempt.error()
    assert (error.status, error.reason, error.detail) == (
        502,
        "the parent proxy's answer is not valid HTTP",
        "malformed status line",
    )
    assert parent.transport.aborted


@pytest.mark.parametrize("how", ["close", "reset", "fin"])
def test_closedBeforeAnswering(how: str) -> None:
    """
    A parent that goes away before its answer fails the attempt with 502.
    """
    attempt = Attempt()
    parent = attempt.parent()
    parent.send(b"HTTP/1.1 200 Conn")
    if how == "fin":
        parent.finish()
        assert parent.transport.aborted
    else:
        parent.close(clean=how == "close")
    error = attempt.error()
    assert (error.status, error.reason) == (
        502,
        "the parent proxy closed the connection before answering",
    )
    assert attempt.protocol.log == ["fired"]


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ConnectionRefusedError(), "the parent proxy refused the connection"),
        (NoRouteError(), "could not connect to the parent proxy"),
    ],
)
def test_parentUnreachable(error: Exception, reason: str) -> None:
    """
    A parent that cannot be connected to fails the attempt with 502.
    """
    attempt = Attempt()
    _, _, factory, _, _ = attempt.reactor.tcpClients[0]
    factory.clientConnectionFailed(attempt.reactor.connectors[0], Failure(error))
    assert (attempt.error().status, attempt.error().reason) == (502, reason)


def test_parentNameUnknown() -> None:
    """
    A parent name with no address fails with 502.
    """
    attempt = Attempt(resolver=FakeResolver({}))
    error = attempt.error()
    assert (error.status, error.reason) == (
        502,
        "could not resolve the parent proxy's host name",
    )
    assert attempt.reactor.tcpClients == []


def test_answerTimeout() -> None:
    """
    A parent that accepts and never answers is given up after the attempt
    timeout (a backstop under the proxy's own deadline): 504, dropped.
    """
    attempt = Attempt()
    parent = attempt.parent()
    attempt.reactor.advance(6.9)
    assert attempt.outcome == []
    attempt.reactor.advance(0.1)
    error = attempt.error()
    assert (error.status, error.reason) == (
        504,
        "timed out waiting for the parent proxy's answer",
    )
    assert parent.transport.aborted


def test_answerStopsTheTimer() -> None:
    """
    Once the parent has answered, no timer is left.
    """
    attempt = Attempt()
    attempt.parent().send(ESTABLISHED)
    assert attempt.reactor.getDelayedCalls() == []
    refused = Attempt()
    refused.parent().send(b"HTTP/1.1 403 No\r\n\r\n")
    assert refused.reactor.getDelayedCalls() == []


# Cancelling at every stage.


def cancelled(attempt: Attempt) -> None:
    """
    Cancel the attempt and check it failed as a cancelled connect, with no
    timer left.
    """
    attempt.deferred.cancel()
    [failure] = attempt.outcome
    assert isinstance(failure, Failure)
    assert failure.check(ConnectingCancelledError)
    assert attempt.reactor.getDelayedCalls() == []


def test_cancelWhileResolving() -> None:
    """
    Cancelled while the parent's name is looked up: no connection is ever
    made, even when the lookup answers later.
    """
    resolver = HangingResolver()
    attempt = Attempt(resolver=resolver)
    cancelled(attempt)
    [(_, receiver)] = resolver.hanging
    receiver.addressResolved(IPv4Address("TCP", PARENT_ADDRESS, 0))
    receiver.resolutionComplete()
    assert attempt.reactor.tcpClients == []
    assert len(attempt.outcome) == 1


def test_cancelWhileConnecting() -> None:
    """
    Cancelled while connecting to the parent: the attempt is stopped.
    """
    attempt = Attempt()
    cancelled(attempt)
    assert attempt.reactor.connectors[0].stoppedConnecting


def test_cancelWhileWaitingForTheAnswer() -> None:
    """
    Cancelled after the CONNECT was sent: the connection is dropped, and a
    2xx that arrives anyway connects nothing.
    """
    attempt = Attempt()
    parent = attempt.parent()
    cancelled(attempt)
    assert parent.transport.aborted
    parent.send(ESTABLISHED + b"late")
    parent.close()
    assert attempt.protocol.log == ["fired"]


def test_cancelAfterTheTunnel() -> None:
    """
    Cancelling once the tunnel is handed over changes nothing.
    """
    attempt = Attempt()
    parent = attempt.parent()
    parent.send(ESTABLISHED)
    attempt.deferred.cancel()
    assert attempt.outcome == [attempt.protocol]
    assert not parent.dropped


def test_leftoverNotDeliveredAfterLoss() -> None:
    """
    When whoever took the tunnel drops it at once, the bytes after the
    answer are not delivered to a lost connection.
    """
    reactor = MemoryReactorClock()
    context = connectorContext(reactor)
    connector = ParentProxyConnector(
        reactor,
        ParentProxy.fromURL("http://192.0.2.50:3128"),
        7.0,
        context.networks,
        context.resolverPool,
    )
    protocol = RecordingProtocol()
    d: Deferred[IProtocol] = connector.connectUpstream(upstreamRequest(), protocol)
    parent = FakeParent(reactor)
    d.addCallback(lambda _: parent.close())
    parent.send(ESTABLISHED + b"leftover")
    assert protocol.log == ["connected", ("lost", ConnectionDone)]


def test_parentOverIPv6() -> None:
    """
    A parent name that resolves to IPv6 addresses is connected to on the
    parent's port.
    """
    attempt = Attempt(resolver=FakeResolver({PARENT_NAME: ["2001:db8::50"]}))
    parent = attempt.parent()
    assert (parent.host, parent.port) == ("2001:db8::50", 3128)


@pytest.mark.parametrize(
    ("address", "source"),
    [(PARENT_ADDRESS, "192.0.2.7"), ("2001:db8::50", "2001:db8::7")],
    ids=["ipv4", "ipv6"],
)
def test_outgoingAddress(address: str, source: str) -> None:
    """
    With outgoing addresses, the connection to the parent is made from the
    one of the parent address's family (C{--outgoing-address} covers every
    upstream connection, the parent's too).
    """
    attempt = Attempt(
        resolver=FakeResolver({PARENT_NAME: [address]}),
        outgoing=OutgoingAddresses("192.0.2.7", "2001:db8::7"),
    )
    # (Twisted's annotation of the bind address is wrong: it is a tuple.)
    bindAddress: object = attempt.reactor.tcpClients[0][4]
    assert bindAddress == (source, 0)


def test_noOutgoingAddressOfTheParentsFamily() -> None:
    """
    A parent with only IPv6 addresses, and an IPv4 outgoing address only:
    nothing is tried, and the client gets 502 saying so.
    """
    attempt = Attempt(
        resolver=FakeResolver({PARENT_NAME: ["2001:db8::50"]}),
        outgoing=OutgoingAddresses("192.0.2.7", None),
    )
    assert attempt.reactor.tcpClients == []
    error = attempt.error()
    assert (error.status, error.reason, error.parent) == (
        502,
        "the parent proxy has only IPv6 addresses and --outgoing-address "
        "gives no IPv6 address",
        f"http://{PARENT_NAME}:3128",
    )


def test_outgoingAddressCannotBeBound() -> None:
    """
    An outgoing address the machine does not have fails the connection to
    the parent with 502 naming the option, and the parent in the log.
    """
    attempt = Attempt(outgoing=OutgoingAddresses("192.0.2.7", None))
    _, _, factory, _, _ = attempt.reactor.tcpClients[0]
    factory.clientConnectionFailed(
        attempt.reactor.connectors[0],
        Failure(ConnectBindError(99, "Cannot assign requested address")),
    )
    error = attempt.error()
    assert (error.status, error.reason, error.parent) == (
        502,
        "cannot bind the outgoing address 192.0.2.7 (see --outgoing-address)",
        f"http://{PARENT_NAME}:3128",
    )
    assert "Cannot assign requested address" in error.detail


def test_writeClosedPassedOn() -> None:
    """
    After the hand-over, the end of the connection's writing side is passed
    on to the tunnel protocol.
    """
    attempt = Attempt()
    parent = attempt.parent()
    parent.send(ESTABLISHED)
    parent.protocol.writeConnectionLost()
    assert attempt.protocol.log[-1] == "write closed"


def test_unexpectedConnectFailure() -> None:
    """
    A connect failure that is not a connect error is passed on as it is
    (the proxy logs it with its traceback).
    """
    attempt = Attempt()
    _, _, factory, _, _ = attempt.reactor.tcpClients[0]
    factory.clientConnectionFailed(
        attempt.reactor.connectors[0], Failure(RuntimeError("bug"))
    )
    [failure] = attempt.outcome
    assert failure.check(RuntimeError)


def test_cancelWhileWaitingForAResolverThread() -> None:
    """
    Cancelled while the lookup of the parent's name waits for a resolver
    thread: the attempt fails with L{ResolverBusy}, whose reason names the
    option to raise, as a target's lookup would.
    """
    reactor = MemoryReactorClock()
    resolver = HangingResolver()
    context = connectorContext(
        reactor, settings=ProxySettings(resolverThreads=1), resolver=resolver
    )
    connector = ParentProxyConnector(
        reactor,
        ParentProxy.fromURL("http://parent.example:3128"),
        7.0,
        context.networks,
        context.resolverPool,
    )
    connector.connectUpstream(upstreamRequest(), Protocol())
    outcome: list[Any] = []
    waiting = connector.connectUpstream(upstreamRequest(), Protocol())
    waiting.addBoth(outcome.append)
    waiting.cancel()
    [failure] = outcome
    assert failure.check(ResolverBusy)
    assert "--resolver" in failure.value.reason
    assert len(resolver.hanging) == 1
