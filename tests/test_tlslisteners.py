"""
Tests for L{connectproxy._tlslisteners}: the certificates of C{ssl:} and
C{tls:} listeners rotate on reload.  New connections get the new
certificate; established tunnels and handshakes in progress keep theirs; a
file that does not load fails the whole reload and the old certificate
stays.

TLS runs for real (pyOpenSSL on both ends) over in-memory transports
(L{twisted.test.iosim}) and a L{MemoryReactorClock}.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.hashes import SHA256
from OpenSSL import SSL
from twisted.application.service import IService, MultiService
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface.verify import verifyObject

from connectproxy._listeners import ListenerError, planListener
from connectproxy._proxyprotocol import serverEndpoint
from connectproxy._service import ReloadService
from connectproxy._tlslisteners import (
    ListenerTLS,
    NegotiatingReactor,
    reloadCertificates,
)
from connectproxy.tap import Options, makeService
from connectproxy.testing import ProxyHarness, connectHead
from tests.integration._pki import TLSFiles, makeTLSFiles, renewTLSFiles
from tests.test_tls import Connection, TLSClient, clientOptions

# Twisted's certificate loading (the ssl: strport's too) still hands
# pyOpenSSL objects to pyOpenSSL, which warns.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Passing pyOpenSSL:DeprecationWarning",
    "ignore:X509.get_issuer is deprecated:DeprecationWarning",
    "ignore:X509.get_subject is deprecated:DeprecationWarning",
)

#: RFC 7919's ffdhe2048 group, as C{openssl genpkey -genparam -algorithm DH
#: -pkeyopt group:ffdhe2048} writes it.
FFDHE2048 = b"""\
-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
"""


@pytest.fixture(scope="module")
def certA(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """
    The CA the clients trust and the proxy's first certificate.
    """
    return makeTLSFiles(tmp_path_factory.mktemp("a"))


@pytest.fixture(scope="module")
def certB(certA: TLSFiles, tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """
    The renewed certificate: the same CA and names, a new key and serial.
    """
    return renewTLSFiles(certA, tmp_path_factory.mktemp("b"))


@pytest.fixture(scope="module")
def otherCA(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """
    Files of another CA, for a chain file and for keys that match nothing.
    """
    return makeTLSFiles(tmp_path_factory.mktemp("other"))


def replaceFile(path: Path, content: bytes) -> None:
    """
    Replace a file at once, as deployment tools do.
    """
    staging = path.with_name(path.name + ".new")
    staging.write_bytes(content)
    os.replace(staging, path)


@dataclass(frozen=True)
class Live:
    """
    The files a listener is configured with, which the tests replace.
    """

    cert: Path
    key: Path

    def install(self, files: TLSFiles) -> None:
        """
        Put another certificate and key in place.
        """
        replaceFile(self.cert, files.serverCert.read_bytes())
        replaceFile(self.key, files.serverKey.read_bytes())

    def ssl(self, extra: str = "") -> str:
        """
        An C{ssl:} listener description with these files.
        """
        files = f"privateKey={self.key}:certKey={self.cert}"
        return f"ssl:0:interface=127.0.0.1:{files}{extra}"


@pytest.fixture
def live(tmp_path: Path, certA: TLSFiles) -> Live:
    """
    A listener's files, holding certificate A.
    """
    files = Live(tmp_path / "cert.pem", tmp_path / "key.pem")
    files.install(certA)
    return files


def serialOf(files: TLSFiles) -> int:
    """
    The serial number of a server certificate.
    """
    return x509.load_pem_x509_certificate(files.serverCert.read_bytes()).serial_number


class CertificateClient(TLSClient):
    """
    A client that notes the serial number of the server's certificate when
    its handshake is done.
    """

    serial: int | None = None

    def handshakeCompleted(self) -> None:
        super().handshakeCompleted()
        certificate = self.transport.getPeerCertificate()  # type: ignore[union-attr]
        self.serial = int(certificate.get_serial_number())


def servedSerial(client: TLSClient) -> int | None:
    """
    The serial number of the certificate the server showed a client.
    """
    assert isinstance(client, CertificateClient)
    return client.serial


def handshake(
    tls: Any, ca: TLSFiles, clock: MemoryReactorClock, protocols: list[bytes] | None
) -> TLSClient:
    """
    A new client connection to a listener's TLS factory, handshake done.
    """
    client = CertificateClient()
    connection = Connection(tls, client, clientOptions(ca, protocols), clock)
    connection.flush()
    client.pump = connection.pump  # type: ignore[attr-defined]
    return client


def named(events: list[LogEvent], name: str) -> list[LogEvent]:
    return [event for event in events if event.get("event") == name]


# The listener's TLS layer, with a tunnel through it.


def listenSSL(
    harness: ProxyHarness, description: str
) -> tuple[Any, NegotiatingReactor]:
    """
    Listen with the harness's proxy factory through a L{NegotiatingReactor},
    as L{makeService} does.

    @return: The TLS factory the real reactor would make, and the reactor.
    """
    reactor = NegotiatingReactor(harness.clock, description)
    serverFromString(reactor, description).listen(harness.factory)
    [(_, factory, creator, _, _)] = harness.clock.sslServers
    assert reactor.served is not None and creator is reactor.served
    return TLSMemoryBIOFactory(reactor.served, False, factory, clock=harness.clock), (
        reactor
    )


def test_listenerTLSProvidesCreator(live: Live) -> None:
    """
    L{ListenerTLS} is an L{IOpenSSLServerConnectionCreator}, which the TLS
    layer asks for every new connection.
    """
    from twisted.internet.interfaces import IOpenSSLServerConnectionCreator

    configuration = planListener(live.ssl()).tlsConfiguration
    served = ListenerTLS(live.ssl(), configuration, Factory())
    assert verifyObject(IOpenSSLServerConnectionCreator, served)
    assert served.configuration is configuration


def test_legacyContextFactory(live: Live, certA: TLSFiles) -> None:
    """
    A context factory of the older kind (C{getContext} only) makes the
    connections from its context, as the TLS layer would.
    """
    options = planListener(live.ssl()).tlsConfiguration

    class Legacy:
        def getContext(self) -> SSL.Context:
            return options.getContext()  # type: ignore[attr-defined, no-any-return]

    clock = MemoryReactorClock()
    served = ListenerTLS("", Legacy(), Factory.forProtocol(Protocol))
    tls = TLSMemoryBIOFactory(served, False, Factory.forProtocol(Protocol), clock=clock)
    client = handshake(tls, certA, clock, None)
    assert servedSerial(client) == serialOf(certA)


def test_listenerTLSRefusesNonsense() -> None:
    """
    A configuration that can make neither connections nor contexts is
    refused at once; L{NegotiatingReactor} passes one on untouched.
    """
    with pytest.raises(TypeError):
        ListenerTLS("ssl:0", object(), Factory())
    clock = MemoryReactorClock()
    reactor = NegotiatingReactor(clock, "ssl:0")
    odd = object()
    reactor.listenSSL(0, Factory(), odd)
    assert clock.sslServers[0][2] is odd and reactor.served is None


def test_newConnectionsGetNewCertificate(
    live: Live, certA: TLSFiles, certB: TLSFiles
) -> None:
    """
    After a reload, a new handshake shows the new certificate, while a
    tunnel opened before still relays both ways.
    """
    harness = ProxyHarness()
    tls, reactor = listenSSL(harness, live.ssl())
    client = CertificateClient(connectHead())
    connection = Connection(
        tls, client, clientOptions(certA, [b"http/1.1"]), harness.clock
    )
    connection.flush()
    [attempt] = harness.connector.attempts
    upstream = attempt.succeed()
    connection.flush()
    assert client.received.startswith(b"HTTP/1.1 200 ")
    assert servedSerial(client) == serialOf(certA)

    live.install(certB)
    reloadCertificates([reactor], [])()

    assert servedSerial(handshake(tls, certA, harness.clock, None)) == serialOf(certB)
    del client.received[:]
    client.transport.write(b"up after the reload")  # type: ignore[union-attr]
    connection.flush()
    assert upstream.value() == b"up after the reload"
    attempt.protocol.dataReceived(b"down after the reload")
    connection.flush()
    assert bytes(client.received) == b"down after the reload"
    assert client.lost is None


def test_handshakeInProgressKeepsCertificate(
    live: Live, certA: TLSFiles, certB: TLSFiles
) -> None:
    """
    A connection accepted before the reload, whose handshake is not done,
    finishes it with the certificate it started with.
    """
    harness = ProxyHarness()
    tls, reactor = listenSSL(harness, live.ssl())
    client = CertificateClient()
    connection = Connection(tls, client, clientOptions(certA, None), harness.clock)
    live.install(certB)
    reloadCertificates([reactor], [])()
    connection.flush()
    assert client.handshakeDone
    assert servedSerial(client) == serialOf(certA)


def test_alpnAfterReload(live: Live, certA: TLSFiles, certB: TLSFiles) -> None:
    """
    The new certificate's context has the listener's ALPN selection: it
    negotiates HTTP/1.1 and refuses a client offering only h2 with a
    no_application_protocol alert.
    """
    harness = ProxyHarness()
    tls, reactor = listenSSL(harness, live.ssl())
    live.install(certB)
    reloadCertificates([reactor], [])()
    accepted = handshake(tls, certA, harness.clock, [b"h2", b"http/1.1"])
    assert (accepted.negotiated, servedSerial(accepted)) == (
        b"http/1.1",
        serialOf(certB),
    )
    refused = handshake(tls, certA, harness.clock, [b"h2"])
    assert refused.lost is not None and refused.lost.check(SSL.Error)
    assert "no application protocol" in str(refused.lost.value)


def servedChain(tls: Any, clock: MemoryReactorClock) -> list[bytes]:
    """
    The SHA-256 fingerprints of the certificates a server sends after its
    own, to a client that checks nothing.
    """
    client = TLSClient()
    Connection(tls, client, _sniOnly(b"localhost"), clock).flush()
    chain = client.transport.getHandle().get_peer_cert_chain()  # type: ignore[union-attr]
    return [c.to_cryptography().fingerprint(SHA256()) for c in chain[1:]]


def fingerprint(path: Path) -> bytes:
    """
    The SHA-256 fingerprint of a PEM certificate file.
    """
    return x509.load_pem_x509_certificate(path.read_bytes()).fingerprint(SHA256())


def test_chainReloaded(live: Live, certA: TLSFiles, otherCA: TLSFiles) -> None:
    """
    The C{extraCertChain=} file is read again too: new connections get the
    chain it holds now.
    """
    chain = live.cert.with_name("chain.pem")
    replaceFile(chain, otherCA.caCert.read_bytes())
    harness = ProxyHarness()
    tls, reactor = listenSSL(harness, live.ssl(f":extraCertChain={chain}"))
    assert servedChain(tls, harness.clock) == [fingerprint(otherCA.caCert)]
    replaceFile(chain, certA.caCert.read_bytes())
    reloadCertificates([reactor], [])()
    assert servedChain(tls, harness.clock) == [fingerprint(certA.caCert)]


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("garbage certificate", "certKey={cert} holds no PEM certificate"),
        ("garbage key", "privateKey={key} holds no PEM private key"),
        ("other key", "the certificate in certKey={cert} and the private key in"),
        ("missing certificate", "cannot read certKey={cert}: No such file"),
        ("missing chain", "cannot read extraCertChain={chain}: No such file"),
        ("garbage chain", "extraCertChain={chain} holds no PEM certificate"),
        ("garbage DH parameters", "cannot load dhParameters={dh}: OpenSSL"),
    ],
)
def test_brokenFilesKeepOldCertificate(
    live: Live,
    certA: TLSFiles,
    otherCA: TLSFiles,
    breakage: str,
    message: str,
) -> None:
    """
    A file that does not load fails the reload with an error naming the
    listener and the file, and the old certificate stays in use.
    """
    chain = live.cert.with_name("chain.pem")
    replaceFile(chain, certA.caCert.read_bytes())
    dh = live.cert.with_name("dh.pem")
    replaceFile(dh, FFDHE2048)
    description = live.ssl(f":extraCertChain={chain}:dhParameters={dh}")
    harness = ProxyHarness()
    tls, reactor = listenSSL(harness, description)
    garbage = b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"
    if breakage == "garbage certificate":
        replaceFile(live.cert, garbage)
    elif breakage == "garbage key":
        replaceFile(live.key, b"not a key\n")
    elif breakage == "other key":
        replaceFile(live.key, otherCA.serverKey.read_bytes())
    elif breakage == "missing certificate":
        live.cert.unlink()
    elif breakage == "missing chain":
        chain.unlink()
    elif breakage == "garbage chain":
        replaceFile(chain, b"nothing here\n")
    else:
        replaceFile(dh, b"nothing here\n")
    with pytest.raises(ListenerError) as raised:
        reloadCertificates([reactor], [])
    text = str(raised.value)
    assert text.startswith(repr(description))
    assert message.format(cert=live.cert, key=live.key, chain=chain, dh=dh) in text
    assert "\n" not in text
    assert servedSerial(handshake(tls, certA, harness.clock, None)) == serialOf(certA)


def test_unlistenedReactorsSkipped(live: Live) -> None:
    """
    Reactors whose listener has not listened with TLS (or has no
    description to read the files from) have nothing to reload.
    """
    clock = MemoryReactorClock()
    plain = NegotiatingReactor(clock, "tcp:0")
    serverFromString(plain, "tcp:0").listen(Factory())
    anonymous = NegotiatingReactor(clock)
    serverFromString(anonymous, live.ssl()).listen(Factory.forProtocol(Protocol))
    assert anonymous.served is not None
    reloadCertificates([plain, anonymous], [])()


# Through the reload service (SIGHUP).


def started(*argv: str) -> tuple[MemoryReactorClock, MultiService, ReloadService]:
    """
    Start L{makeService} on a memory reactor.

    @return: The reactor, the service and its reload service.
    """
    options = Options()
    options.parseOptions(list(argv))
    reactor = MemoryReactorClock()
    service = makeService(options, reactor)
    IService(service).startService()
    reloader = service.getServiceNamed("reload")
    assert isinstance(reloader, ReloadService)
    return reactor, service, reloader


def sslFactory(reactor: MemoryReactorClock, index: int = 0) -> TLSMemoryBIOFactory:
    """
    The TLS factory the real reactor would make for an C{ssl:} listener.
    """
    _, factory, creator, _, _ = reactor.sslServers[index]
    return TLSMemoryBIOFactory(creator, False, factory, clock=reactor)


def test_reloadServesNewCertificate(
    live: Live, certA: TLSFiles, certB: TLSFiles, logEvents: list[LogEvent]
) -> None:
    """
    A SIGHUP reload reads the files of an C{ssl:} listener again: new
    connections get the new certificate, one established before still
    talks, and one C{tls_certificate_reloaded} event says what is served.
    """
    reactor, service, reloader = started("--listen", live.ssl())
    tls = sslFactory(reactor)
    before = handshake(tls, certA, reactor, None)
    assert servedSerial(before) == serialOf(certA)

    live.install(certB)
    assert reloader.reload() is True

    assert servedSerial(handshake(tls, certA, reactor, None)) == serialOf(certB)
    [event] = named(logEvents, "tls_certificate_reloaded")
    assert event["listener"] == live.ssl()
    assert (event["serial"], event["changed"]) == (format(serialOf(certB), "x"), True)
    assert event["subject"] == "CN=localhost"
    assert len(named(logEvents, "reloaded")) == 1
    assertStillServed(before)
    IService(service).stopService()


def assertStillServed(client: TLSClient) -> None:
    """
    A client whose handshake was done before the reload still talks to the
    proxy: its CONNECT to a port that is not allowed gets the 403.
    """
    assert client.lost is None and client.received == b""
    client.transport.write(  # type: ignore[union-attr]
        connectHead("example.com:1")
    )
    client.pump.flush()  # type: ignore[attr-defined]
    assert client.received.startswith(b"HTTP/1.1 403 ")


def test_reloadUnchangedCertificate(
    live: Live, certA: TLSFiles, logEvents: list[LogEvent]
) -> None:
    """
    A reload with the same files says the certificate is unchanged.
    """
    reactor, service, reloader = started("--listen", live.ssl())
    assert reloader.reload() is True
    [event] = named(logEvents, "tls_certificate_reloaded")
    assert event["changed"] is False
    assert servedSerial(
        handshake(sslFactory(reactor), certA, reactor, None)
    ) == serialOf(certA)
    IService(service).stopService()


def test_brokenFileFailsReload(
    live: Live, certA: TLSFiles, certB: TLSFiles, logEvents: list[LogEvent]
) -> None:
    """
    A certificate that does not load fails the whole reload, as any other
    file that does not load: one C{reload_failed} event naming the file,
    the certificate and the rest of the configuration stay; once the file
    is fixed, the next reload succeeds.
    """
    reactor, service, reloader = started("--listen", live.ssl())
    live.install(certB)
    assert reloader.reload() is True
    replaceFile(live.cert, b"")
    assert reloader.reload() is False
    [failed] = named(logEvents, "reload_failed")
    assert f"certKey={live.cert} holds no PEM certificate" in failed["error"]
    assert len(named(logEvents, "tls_certificate_reloaded")) == 1
    tls = sslFactory(reactor)
    assert servedSerial(handshake(tls, certA, reactor, None)) == serialOf(certB)
    live.install(certA)
    assert reloader.reload() is True
    assert servedSerial(handshake(tls, certA, reactor, None)) == serialOf(certA)
    IService(service).stopService()


def test_listenChangedStillReloadsRunningListener(
    tmp_path: Path,
    live: Live,
    certA: TLSFiles,
    certB: TLSFiles,
    logEvents: list[LogEvent],
) -> None:
    """
    When the configuration file's C{listen} changed (which takes a
    restart), the running listener's own files are still read again, and
    one that does not load fails the reload.
    """
    config = tmp_path / "proxy.toml"
    config.write_text(f"listen = [{live.ssl()!r}]\n", encoding="utf-8")
    reactor, service, reloader = started("--config", str(config))
    config.write_text('listen = ["tcp:0:interface=127.0.0.1"]\n', encoding="utf-8")
    live.install(certB)
    assert reloader.reload() is True
    assert len(named(logEvents, "reload_listen_ignored")) == 1
    tls = sslFactory(reactor)
    assert servedSerial(handshake(tls, certA, reactor, None)) == serialOf(certB)
    live.key.unlink()
    assert reloader.reload() is False
    [failed] = named(logEvents, "reload_failed")
    assert f"cannot read privateKey={live.key}" in failed["error"]
    IService(service).stopService()


def test_haproxySSLReloaded(live: Live, certA: TLSFiles, certB: TLSFiles) -> None:
    """
    An C{haproxy:ssl:} listener's certificate is reloaded as well.
    """
    reactor, service, reloader = started("--listen", "haproxy:" + live.ssl())
    live.install(certB)
    assert reloader.reload() is True
    assert servedSerial(
        handshake(sslFactory(reactor), certA, reactor, None)
    ) == serialOf(certB)
    IService(service).stopService()


def pemDirectory(directory: Path, files: TLSFiles) -> None:
    """
    Put one certificate and its key, in one PEM file, in a C{tls:}
    directory.
    """
    directory.mkdir(exist_ok=True)
    replaceFile(
        directory / "proxy.pem",
        files.serverCert.read_bytes() + files.serverKey.read_bytes(),
    )


def test_tlsDirectoryReloaded(
    tmp_path: Path, certA: TLSFiles, certB: TLSFiles, logEvents: list[LogEvent]
) -> None:
    """
    A C{tls:} listener (a directory of PEM files, chosen by SNI) reads its
    directory again on reload: new connections get the new certificate,
    established ones still talk; a directory that no longer loads fails the
    reload and the certificate stays.
    """
    pems = tmp_path / "pems"
    pemDirectory(pems, certA)
    reactor, service, reloader = started("--listen", f"tls:{pems}:port=0")
    [(_, tls, _, _)] = reactor.tcpServers
    assert isinstance(tls, TLSMemoryBIOFactory)
    before = handshake(tls, certA, reactor, [b"http/1.1"])
    assert servedSerial(before) == serialOf(certA)

    pemDirectory(pems, certB)
    assert reloader.reload() is True
    after = handshake(tls, certA, reactor, [b"h2", b"http/1.1"])
    assert (servedSerial(after), after.negotiated) == (serialOf(certB), b"http/1.1")
    [event] = named(logEvents, "tls_certificate_reloaded")
    assert event["listener"] == f"tls:{pems}:port=0"

    (pems / "proxy.pem").write_bytes(
        b"-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"
    )
    assert reloader.reload() is False
    [failed] = named(logEvents, "reload_failed")
    assert (
        "cannot load the PEM files" in failed["error"] and str(pems) in failed["error"]
    )
    assert servedSerial(handshake(tls, certA, reactor, None)) == serialOf(certB)
    assertStillServed(before)
    IService(service).stopService()


def test_tlsDirectoryReadOnce(tmp_path: Path, certA: TLSFiles, certB: TLSFiles) -> None:
    """
    A C{tls:} listener never reads its directory again by itself, not even
    for a server name it does not know: what the reload is for.
    """
    pems = tmp_path / "pems"
    pemDirectory(pems, certA)
    clock = MemoryReactorClock()
    serverEndpoint(clock, f"tls:{pems}:port=0").listen(Factory.forProtocol(Protocol))
    [(_, tls, _, _)] = clock.tcpServers
    assert servedSerial(handshake(tls, certA, clock, None)) == serialOf(certA)
    pemDirectory(pems, certB)
    unknown = CertificateClient()
    Connection(tls, unknown, _sniOnly(b"unknown.example"), clock).flush()
    assert servedSerial(unknown) == serialOf(certA)
    assert servedSerial(handshake(tls, certA, clock, None)) == serialOf(certA)


def _sniOnly(name: bytes) -> Any:
    """
    A client that sends a server name and checks nothing.
    """
    from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
    from zope.interface import implementer

    @implementer(IOpenSSLClientConnectionCreator)
    class Creator:
        def clientConnectionForTLS(self, protocol: Any) -> SSL.Connection:
            connection = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
            connection.set_tlsext_host_name(name)
            return connection

    return Creator()


def test_checkConfigLoadsDHParameters(live: Live) -> None:
    """
    C{--check-config} (L{planListener}) reads the C{dhParameters=} file too,
    which Twisted leaves until the first connection, and keeps the loaded
    options for the reload to use.
    """
    dh = live.cert.with_name("dh.pem")
    replaceFile(dh, FFDHE2048)
    plan = planListener(live.ssl(f":dhParameters={dh}"))
    assert plan.tlsConfiguration is not None
    dh.unlink()
    with pytest.raises(ListenerError, match=f"cannot load dhParameters={dh}"):
        planListener(live.ssl(f":dhParameters={dh}"))


def test_haproxyTLSDirectoryReloaded(
    tmp_path: Path, certA: TLSFiles, certB: TLSFiles
) -> None:
    """
    An C{haproxy:tls:} listener's directory is read again on reload too.
    """
    pems = tmp_path / "pems"
    pemDirectory(pems, certA)
    reactor, service, reloader = started("--listen", f"haproxy:tls:{pems}:port=0")
    [(_, tls, _, _)] = reactor.tcpServers
    assert servedSerial(handshake(tls, certA, reactor, None)) == serialOf(certA)
    pemDirectory(pems, certB)
    assert reloader.reload() is True
    assert servedSerial(handshake(tls, certA, reactor, None)) == serialOf(certB)
    IService(service).stopService()
