"""
Tests for L{connectproxy._tls}: the proxy names HTTP/1.1 in ALPN under every
listener wrapping, refuses clients that share no protocol with a clean alert,
logs each failed handshake once, and closes TLS tunnels fully.

TLS runs for real (pyOpenSSL on both ends) over in-memory transports
(L{twisted.test.iosim}) and a L{MemoryReactorClock}.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from OpenSSL import SSL
from twisted.application.service import IService
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IProtocolNegotiationFactory,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    PrivateCertificate,
    optionsForClientTLS,
)
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent
from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory
from twisted.protocols.policies import TimeoutFactory, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport, IOPump, connect
from zope.interface import implementer
from zope.interface.verify import verifyObject

from connectproxy._factory import ConnectProxyFactory
from connectproxy._proxyprotocol import ProxyHeaderFactory
from connectproxy._settings import ProxySettings
from connectproxy._tls import (
    ALPN_PROTOCOLS,
    NoSharedProtocol,
    describeHandshakeFailure,
    logHandshakeFailure,
    refuseUnsharedProtocols,
)
from connectproxy._tlslisteners import NegotiatingReactor
from connectproxy.tap import Options, makeService
from connectproxy.testing import ProxyHarness
from tests.integration._pki import TLSFiles, makeTLSFiles

# Twisted's certificate loading (the ssl: strport's too) still hands
# pyOpenSSL objects to pyOpenSSL, which warns.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Passing pyOpenSSL:DeprecationWarning",
    "ignore:X509.get_issuer is deprecated:DeprecationWarning",
)

CLIENT = IPv4Address("TCP", "127.0.0.1", 40001)
PROXY = IPv4Address("TCP", "127.0.0.1", 3129)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """
    The CA the clients trust and the proxy's certificate.
    """
    return makeTLSFiles(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def otherCA(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """
    A CA that did not sign the proxy's certificate.
    """
    return makeTLSFiles(tmp_path_factory.mktemp("other"))


def serverOptions(pki: TLSFiles) -> CertificateOptions:
    """
    The TLS options an C{ssl:} listener with the proxy's certificate has.
    """
    pem = pki.serverCert.read_bytes() + pki.serverKey.read_bytes()
    options: CertificateOptions = PrivateCertificate.loadPEM(pem).options()
    return options


def clientOptions(
    ca: TLSFiles, protocols: list[bytes] | None
) -> IOpenSSLClientConnectionCreator:
    """
    A client's TLS options: trust C{ca}, offer C{protocols} over ALPN.
    """
    trust = Certificate.loadPEM(ca.caCert.read_bytes())
    return optionsForClientTLS("localhost", trust, acceptableProtocols=protocols)


@implementer(IHandshakeListener)
class TLSClient(Protocol):
    """
    The client end: records what it receives, the handshake and the end.
    """

    def __init__(self, greeting: bytes = b"") -> None:
        self.greeting = greeting
        self.received = bytearray()
        self.handshakeDone = False
        self.negotiated: bytes | None = None
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        if self.greeting:
            self.transport.write(self.greeting)  # type: ignore[union-attr]

    def handshakeCompleted(self) -> None:
        self.handshakeDone = True
        self.negotiated = self.transport.negotiatedProtocol  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
        self.lost = reason


class Connection:
    """
    A client connected over an in-memory transport to a server-side
    protocol factory.
    """

    def __init__(
        self,
        serverFactory: Any,
        client: TLSClient,
        clientCreator: IOpenSSLClientConnectionCreator | None,
        clock: MemoryReactorClock,
    ) -> None:
        self.client = client
        self.server = serverFactory.buildProtocol(CLIENT)
        self.serverTransport = FakeTransport(
            self.server, isServer=True, hostAddress=PROXY, peerAddress=CLIENT
        )
        clientSide: Any = client
        if clientCreator is not None:
            wrapped = Factory.forProtocol(lambda: client)
            tls = TLSMemoryBIOFactory(clientCreator, True, wrapped, clock=clock)
            clientSide = tls.buildProtocol(PROXY)
        self.clientTransport = FakeTransport(
            clientSide, isServer=False, hostAddress=CLIENT, peerAddress=PROXY
        )
        self.pump: IOPump = connect(
            self.server,
            self.serverTransport,
            clientSide,
            self.clientTransport,
            greet=False,
            clock=clock,
        )

    def flush(self) -> None:
        self.pump.flush()


def tlsServer(
    factory: Any, pki: TLSFiles, clock: MemoryReactorClock, refuse: bool = True
) -> TLSMemoryBIOFactory:
    """
    What an C{ssl:} listener of L{makeService} wraps around the factory.

    @param refuse: Whether the context refuses clients sharing no protocol
        (L{refuseUnsharedProtocols}), or keeps Twisted's own selection.
    """
    options = serverOptions(pki)
    if refuse:
        assert refuseUnsharedProtocols(options, factory)
    return TLSMemoryBIOFactory(options, False, factory, clock=clock)


def handshakeEvents(events: list[LogEvent]) -> list[LogEvent]:
    return [e for e in events if e.get("event") == "tls_handshake_failed"]


# What the factory says it speaks, under every wrapper.


def test_factoryNamesHTTP11() -> None:
    """
    The proxy factory provides L{IProtocolNegotiationFactory} and speaks
    HTTP/1.1 only.
    """
    factory = ProxyHarness().factory
    assert verifyObject(IProtocolNegotiationFactory, factory)
    assert factory.acceptableProtocols() == [b"http/1.1"]
    assert list(ALPN_PROTOCOLS) == [b"http/1.1"]


@pytest.mark.parametrize(
    "wrap",
    [
        HAProxyWrappingFactory,
        WrappingFactory,
        lambda f: TimeoutFactory(f, timeoutPeriod=30),
        lambda f: HAProxyWrappingFactory(HAProxyWrappingFactory(f)),
    ],
    ids=["haproxy", "wrapping", "timeout", "nested"],
)
def test_wrappersForwardNegotiation(wrap: Callable[[Any], WrappingFactory]) -> None:
    """
    A wrapping factory (the PROXY-protocol wrapper of C{haproxy:} listeners,
    the C{policies} wrappers) speaks what the proxy factory it wraps speaks.
    """
    wrapper = wrap(ProxyHarness().factory)
    negotiation = IProtocolNegotiationFactory(wrapper)
    assert negotiation.acceptableProtocols() == [b"http/1.1"]


def test_wrapperOfSilentFactoryNamesNothing() -> None:
    """
    A wrapper around a factory that names no protocols names none either.
    """
    assert IProtocolNegotiationFactory(WrappingFactory(Factory()), None) is None


def listened(description: str, pki: TLSFiles) -> tuple[MemoryReactorClock, Any]:
    """
    Start L{makeService} with one listener on a memory reactor.

    @return: The reactor and the service.
    """
    description = description.format(key=pki.serverKey, cert=pki.serverCert)
    options = Options()
    options.parseOptions(["--listen", description])
    reactor = MemoryReactorClock()
    service = makeService(options, reactor)
    IService(service).startService()
    return reactor, service


def test_sslListenerFactory(pki: TLSFiles) -> None:
    """
    An C{ssl:} listener wraps the proxy factory itself in TLS, with a context
    that refuses clients sharing no protocol.
    """
    reactor, service = listened("ssl:0:privateKey={key}:certKey={cert}", pki)
    [(_, factory, contextFactory, _, _)] = reactor.sslServers
    assert isinstance(factory, ConnectProxyFactory)
    client = TLSClient()
    tls = TLSMemoryBIOFactory(contextFactory, False, factory, clock=reactor)
    Connection(tls, client, clientOptions(pki, [b"h2"]), reactor).flush()
    assert client.lost is not None and client.lost.check(SSL.Error)
    assert "no application protocol" in str(client.lost.value)
    IService(service).stopService()


def test_haproxySSLListenerFactory(pki: TLSFiles) -> None:
    """
    An C{haproxy:ssl:} listener wraps the PROXY-protocol wrapper in TLS; the
    wrapper answers ALPN for the proxy, and the context refuses clients
    sharing no protocol.
    """
    reactor, service = listened("haproxy:ssl:0:privateKey={key}:certKey={cert}", pki)
    [(_, factory, contextFactory, _, _)] = reactor.sslServers
    assert isinstance(factory, ProxyHeaderFactory)
    assert IProtocolNegotiationFactory(factory).acceptableProtocols() == [b"http/1.1"]
    tls = TLSMemoryBIOFactory(contextFactory, False, factory, clock=reactor)
    accepted = TLSClient(b"PROXY TCP4 127.0.0.9 127.0.0.1 5000 3129\r\n")
    Connection(tls, accepted, clientOptions(pki, [b"http/1.1"]), reactor).flush()
    assert (accepted.handshakeDone, accepted.negotiated) == (True, b"http/1.1")
    refused = TLSClient()
    Connection(tls, refused, clientOptions(pki, [b"h2"]), reactor).flush()
    assert refused.lost is not None
    assert "no application protocol" in str(refused.lost.value)
    IService(service).stopService()


def test_tlsListenerFactory(pki: TLSFiles, tmp_path: Path) -> None:
    """
    A C{tls:} listener (a directory of PEM files, chosen by SNI) wraps the
    proxy factory in TLS, so ALPN clients negotiate HTTP/1.1.
    """
    pems = tmp_path / "pems"
    pems.mkdir()
    (pems / "proxy.pem").write_bytes(
        pki.serverCert.read_bytes() + pki.serverKey.read_bytes()
    )
    reactor, service = listened(f"tls:{pems}:port=0", pki)
    [(_, tls, _, _)] = reactor.tcpServers
    assert isinstance(tls, TLSMemoryBIOFactory)
    assert isinstance(tls.wrappedFactory, ConnectProxyFactory)
    client = TLSClient()
    Connection(tls, client, clientOptions(pki, [b"h2", b"http/1.1"]), reactor).flush()
    assert (client.handshakeDone, client.negotiated) == (True, b"http/1.1")
    IService(service).stopService()


def test_negotiatingReactorForwards() -> None:
    """
    L{NegotiatingReactor} is the reactor it wraps for everything but
    C{listenSSL}: same interfaces, same attributes.
    """
    reactor = MemoryReactorClock()
    wrapped = NegotiatingReactor(reactor)
    assert set(wrapped.__provides__) >= set(reactor.__provides__)  # type: ignore[attr-defined]
    assert wrapped.seconds() == reactor.seconds()
    serverFromString(wrapped, "tcp:0").listen(Factory())
    assert len(reactor.tcpServers) == 1


def test_refuseNeedsAContext() -> None:
    """
    A context factory without C{getContext}, or one that gives something
    other than a pyOpenSSL context, is left alone.
    """
    assert not refuseUnsharedProtocols(object(), Factory())

    class Odd:
        def getContext(self) -> object:
            return object()

    assert not refuseUnsharedProtocols(Odd(), Factory())


def test_refuseTooLate(pki: TLSFiles) -> None:
    """
    A context that has already made a connection cannot be changed any more:
    L{refuseUnsharedProtocols} leaves it alone and says so.
    """
    options = serverOptions(pki)
    SSL.Connection(options.getContext(), None)
    assert not refuseUnsharedProtocols(options, ProxyHarness().factory)


def test_silentFactoryGoesOnWithoutALPN(pki: TLSFiles) -> None:
    """
    Under a context prepared for a factory that names no protocols, a client
    offering ALPN goes on without it.
    """
    clock = MemoryReactorClock()
    client = TLSClient()
    tls = tlsServer(Factory.forProtocol(Protocol), pki, clock)
    Connection(tls, client, clientOptions(pki, [b"h2"]), clock).flush()
    assert (client.handshakeDone, client.negotiated) == (True, None)


# Handshakes.


def test_alpnClientNegotiatesHTTP11(pki: TLSFiles) -> None:
    """
    A client offering C{http/1.1} (alone or after C{h2}) completes the
    handshake with it and gets an answer from the proxy.
    """
    for offer in ([b"http/1.1"], [b"h2", b"http/1.1"]):
        harness = ProxyHarness()
        client = TLSClient(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        tls = tlsServer(harness.factory, pki, harness.clock)
        Connection(tls, client, clientOptions(pki, offer), harness.clock).flush()
        assert (client.handshakeDone, client.negotiated) == (True, b"http/1.1")
        assert client.received.startswith(b"HTTP/1.1 400 ")


def test_connectionLimitOverTLS(pki: TLSFiles, logEvents: list[LogEvent]) -> None:
    """
    A client over the connection limit of a TLS listener negotiates
    HTTP/1.1 like any other, then reads its 503 and the connection closes.
    """
    harness = ProxyHarness(ProxySettings(maxConnections=1))
    tls = tlsServer(harness.factory, pki, harness.clock)
    first = TLSClient()
    Connection(tls, first, clientOptions(pki, [b"http/1.1"]), harness.clock).flush()
    over = TLSClient()
    connection = Connection(tls, over, clientOptions(pki, [b"http/1.1"]), harness.clock)
    connection.flush()
    assert (over.handshakeDone, over.negotiated) == (True, b"http/1.1")
    assert over.received.startswith(b"HTTP/1.1 503 ")
    assert over.lost is not None and over.lost.check(ConnectionDone)
    assert handshakeEvents(logEvents) == []
    assert harness.factory.refusing == 0


def test_clientWithoutALPN(pki: TLSFiles) -> None:
    """
    A client that offers no ALPN completes the handshake without a
    negotiated protocol.
    """
    harness = ProxyHarness()
    client = TLSClient()
    tls = tlsServer(harness.factory, pki, harness.clock)
    Connection(tls, client, clientOptions(pki, None), harness.clock).flush()
    assert (client.handshakeDone, client.negotiated) == (True, None)


def test_twistedSelectionFailsWithoutRefusal(pki: TLSFiles) -> None:
    """
    Without L{refuseUnsharedProtocols} (as on C{tls:} listeners), ALPN
    clients still negotiate HTTP/1.1 through L{acceptableProtocols}; a
    client sharing no protocol gets Twisted's internal error.
    """
    harness = ProxyHarness()
    tls = tlsServer(harness.factory, pki, harness.clock, refuse=False)
    good = TLSClient()
    Connection(tls, good, clientOptions(pki, [b"http/1.1"]), harness.clock).flush()
    assert good.negotiated == b"http/1.1"
    bad = TLSClient()
    Connection(tls, bad, clientOptions(pki, [b"h2"]), harness.clock).flush()
    assert bad.lost is not None and "internal error" in str(bad.lost.value)


def test_noSharedProtocolRefused(pki: TLSFiles, logEvents: list[LogEvent]) -> None:
    """
    A client offering only protocols the proxy does not speak gets a
    C{no_application_protocol} alert, and the proxy logs one
    C{tls_handshake_failed} event that says so, and closes.
    """
    harness = ProxyHarness()
    client = TLSClient()
    tls = tlsServer(harness.factory, pki, harness.clock)
    connection = Connection(tls, client, clientOptions(pki, [b"h2"]), harness.clock)
    connection.flush()
    assert not client.handshakeDone
    assert client.lost is not None
    assert "tlsv1 alert no application protocol" in str(client.lost.value)
    assert connection.serverTransport.disconnected
    [event] = logEvents
    assert event["event"] == "tls_handshake_failed"
    assert event["client"] == "127.0.0.1:40001"
    assert event["cause"] == "no_shared_protocol"
    assert event["reason"] == (
        "the client offered h2 over ALPN; this proxy speaks http/1.1"
    )
    assert "log_failure" not in event
    assert harness.factory.connections == set()
    assert harness.observer.refused == []
    assert harness.clock.getDelayedCalls() == []


def test_untrustedCertificateLogged(
    pki: TLSFiles, otherCA: TLSFiles, logEvents: list[LogEvent]
) -> None:
    """
    A client that does not trust the proxy's certificate aborts the
    handshake; the proxy logs one event naming the certificate.
    """
    harness = ProxyHarness()
    client = TLSClient()
    tls = tlsServer(harness.factory, pki, harness.clock)
    connection = Connection(
        tls, client, clientOptions(otherCA, [b"http/1.1"]), harness.clock
    )
    connection.flush()
    assert connection.serverTransport.disconnected
    [event] = logEvents
    assert (event["event"], event["cause"]) == ("tls_handshake_failed", "certificate")
    assert "unknown ca" in event["reason"]
    assert harness.factory.connections == set()
    assert harness.clock.getDelayedCalls() == []


@pytest.mark.parametrize(
    "greeting",
    [b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n", b"GET / HT"],
    ids=["connect", "get"],
)
def test_plaintextLogged(
    pki: TLSFiles, greeting: bytes, logEvents: list[LogEvent]
) -> None:
    """
    Plain HTTP sent to the TLS port ends the connection with one log event
    saying the client did not speak TLS.
    """
    harness = ProxyHarness()
    tls = tlsServer(harness.factory, pki, harness.clock)
    connection = Connection(tls, TLSClient(greeting), None, harness.clock)
    connection.flush()
    assert connection.serverTransport.disconnected
    [event] = logEvents
    assert (event["event"], event["cause"]) == ("tls_handshake_failed", "plaintext")
    assert "did not speak TLS" in event["reason"]
    assert harness.factory.connections == set()
    assert harness.clock.getDelayedCalls() == []


def test_clientGoneBeforeHandshakeNotLogged(
    pki: TLSFiles, logEvents: list[LogEvent]
) -> None:
    """
    A client that connects and leaves without a word (a port check) is not
    a failed handshake.
    """
    harness = ProxyHarness()
    tls = tlsServer(harness.factory, pki, harness.clock)
    connection = Connection(tls, TLSClient(), None, harness.clock)
    connection.clientTransport.loseConnection()
    connection.flush()
    assert handshakeEvents(logEvents) == []
    assert harness.factory.connections == set()


@pytest.mark.parametrize(
    "sent",
    [b"", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"],
    ids=["nothing", "part-of-a-client-hello"],
)
def test_handshakeTimeout(
    pki: TLSFiles, sent: bytes, logEvents: list[LogEvent]
) -> None:
    """
    A client that does not finish its TLS handshake within the request
    timeout is cut off at once (nothing can be sent to it before the
    handshake, so there is nothing to flush and no 408), with one
    C{tls_handshake_failed} event whose cause is C{timeout}.
    """
    harness = ProxyHarness(ProxySettings(requestTimeout=7, abortTimeout=15))
    tls = tlsServer(harness.factory, pki, harness.clock)
    connection = Connection(tls, TLSClient(sent), None, harness.clock)
    aborted: list[bool] = []
    connection.serverTransport.abortConnection = (  # type: ignore[method-assign]
        lambda: aborted.append(True)
    )
    connection.flush()
    harness.clock.advance(6.9)
    assert aborted == []
    harness.clock.advance(0.1)
    assert aborted == [True]
    assert harness.clock.getDelayedCalls() == []
    assert harness.observer.refused == []
    [event] = logEvents
    assert (event["event"], event["cause"]) == ("tls_handshake_failed", "timeout")
    assert event["client"] == "127.0.0.1:40001"
    assert event["reason"] == (
        "the handshake was not complete within 7 seconds (see --request-timeout)"
    )
    connection.server.connectionLost(Failure(ConnectionDone()))
    assert len(logEvents) == 1
    assert harness.factory.connections == set()


def test_handshakeTimeoutBeforeProxyHeader(
    pki: TLSFiles, logEvents: list[LogEvent]
) -> None:
    """
    Under an C{haproxy:ssl:} listener (the header inside TLS), a handshake
    that never finishes is logged as such, not as a missing header.
    """
    harness = ProxyHarness(ProxySettings(requestTimeout=7))
    tls = tlsServer(ProxyHeaderFactory(harness.factory), pki, harness.clock)
    connection = Connection(tls, TLSClient(), None, harness.clock)
    aborted: list[bool] = []
    connection.serverTransport.abortConnection = (  # type: ignore[method-assign]
        lambda: aborted.append(True)
    )
    connection.flush()
    harness.clock.advance(7)
    assert aborted == [True]
    [event] = logEvents
    assert (event["event"], event["cause"]) == ("tls_handshake_failed", "timeout")
    assert harness.clock.getDelayedCalls() == []


def test_requestTimeoutAfterHandshake(pki: TLSFiles, logEvents: list[LogEvent]) -> None:
    """
    A TLS client that finished its handshake but sends no request gets the
    usual 408: it can be told.
    """
    harness = ProxyHarness(ProxySettings(requestTimeout=7))
    tls = tlsServer(harness.factory, pki, harness.clock)
    client = TLSClient()
    connection = Connection(tls, client, clientOptions(pki, None), harness.clock)
    connection.flush()
    assert client.handshakeDone
    harness.clock.advance(7)
    connection.flush()
    assert client.received.startswith(b"HTTP/1.1 408 ")
    [refused] = harness.observer.refused
    assert refused.status == 408
    assert handshakeEvents(logEvents) == []


def test_describeOtherErrors() -> None:
    """
    A TLS error of no known kind is reported with OpenSSL's words.
    """
    error = SSL.Error([("SSL routines", "", "no shared cipher")])
    assert describeHandshakeFailure(error) == ("tls_error", "no shared cipher")
    assert describeHandshakeFailure(SSL.Error()) == ("tls_error", "unknown TLS error")
    assert describeHandshakeFailure(SSL.Error("odd")) == ("tls_error", "odd")


def test_offeredProtocolsEscapedAndCut() -> None:
    """
    The protocol IDs a client offered are logged with control and non-ASCII
    bytes escaped, and long offers cut short.
    """
    odd = NoSharedProtocol([b"h2\r\nforged: 1", b"\xff" * 30], [b"http/1.1"])
    assert str(odd) == (
        "the client offered h2\\r\\nforged: 1, "
        + "\\xff" * 10
        + "... over ALPN; this proxy speaks http/1.1"
    )
    many = NoSharedProtocol([b"p%d" % i for i in range(10)], [b"http/1.1"])
    assert str(many).startswith("the client offered p0, p1, p2, p3, p4, p5, p6, p7")
    assert "p7, 2 more over ALPN" in str(many)


def test_onlyTLSErrorsLogged(logEvents: list[LogEvent]) -> None:
    """
    L{logHandshakeFailure} logs TLS errors only.
    """
    assert not logHandshakeFailure("c", Failure(ConnectionDone()))
    assert logHandshakeFailure("c", Failure(NoSharedProtocol([b"h2"], [b"x"])))
    assert [e["reason"] for e in logEvents] == [
        "the client offered h2 over ALPN; this proxy speaks x"
    ]


# Closing a tunnel whose client speaks TLS.


def openTunnel(pki: TLSFiles, abortTimeout: float = 15.0) -> tuple[Any, ...]:
    """
    Open a tunnel for a TLS client through a proxy on a memory reactor.

    @return: The harness, the connection, the client and the upstream
        attempt.
    """
    harness = ProxyHarness(ProxySettings(abortTimeout=abortTimeout))
    client = TLSClient(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n")
    tls = tlsServer(harness.factory, pki, harness.clock)
    connection = Connection(
        tls, client, clientOptions(pki, [b"http/1.1"]), harness.clock
    )
    connection.flush()
    [attempt] = harness.connector.attempts
    attempt.succeed()
    connection.flush()
    assert client.received.startswith(b"HTTP/1.1 200 ")
    del client.received[:]
    return harness, connection, client, attempt


def test_tunnelFlushesAndClosesTLS(pki: TLSFiles) -> None:
    """
    When the upstream sends its last bytes and a FIN, a TLS client gets
    every byte, then close_notify, and the connection closes fully (TLS
    cannot half-close).
    """
    harness, connection, client, attempt = openTunnel(pki)
    payload = bytes(range(256)) * 4096
    attempt.protocol.dataReceived(payload)
    attempt.protocol.readConnectionLost()
    assert attempt.transport.disconnecting
    attempt.loseUpstream()
    connection.flush()
    assert bytes(client.received) == payload
    assert client.lost is not None and client.lost.check(ConnectionDone)
    assert connection.serverTransport.disconnected
    [closed] = harness.observer.closed
    assert (closed.bytesDown, closed.reason) == (len(payload), "upstream closed")
    assert harness.clock.getDelayedCalls() == []


def test_silentTLSPeerAborted(pki: TLSFiles) -> None:
    """
    A TLS client that never answers the proxy's close_notify is aborted
    after the abort timeout.
    """
    harness, connection, _, attempt = openTunnel(pki, abortTimeout=7.0)
    attempt.protocol.readConnectionLost()
    attempt.loseUpstream()
    # The client never reads the close_notify, so it never answers.
    harness.clock.advance(6.9)
    assert not connection.serverTransport.disconnecting
    harness.clock.advance(0.1)
    assert connection.serverTransport.disconnecting
    connection.flush()
    assert len(harness.observer.closed) == 1
    assert harness.factory.connections == set()
    assert harness.clock.getDelayedCalls() == []
