"""
Tests for L{connectproxy._pemdirectory}: the certificates of a C{tls:}
listener's directory, their chains (which end at a self-signed root and
never loop), and the certificate chosen for a server name.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols import _sni
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface.verify import verifyObject

from connectproxy._listeners import ListenerError, planListener
from connectproxy._pemdirectory import (
    DirectoryCertificates,
    PEMDirectoryEndpoint,
    PEMDirectoryError,
    buildChain,
    serverFromDescription,
)
from connectproxy._proxyprotocol import ProxyProtocolEndpoint, serverEndpoint
from tests.integration._pki import TLSFiles, makeTLSFiles

pytestmark = pytest.mark.filterwarnings(
    "ignore:Passing pyOpenSSL:DeprecationWarning",
)


@pytest.fixture(autouse=True)
def noTwistedChains(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """
    Twisted's chain building, which never ends on a self-signed
    certificate, is never called.
    """

    def refuse(self: object) -> None:
        raise AssertionError("Twisted's inferDomainMapping was called")

    monkeypatch.setattr(_sni.PEMObjects, "inferDomainMapping", refuse)
    yield


class Issuer:
    """
    A certificate and its key, which can issue more.
    """

    def __init__(
        self,
        name: str,
        issuer: Issuer | None = None,
        names: tuple[str, ...] = (),
        days: int = 30,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> None:
        """
        @param name: Its common name.
        @param issuer: Who signs it; itself when C{None}.
        @param names: DNS names (subjectAltName).
        @param days: How long it is valid.
        @param key: Its key; a new one by default.
        """
        self.key = key or ec.generate_private_key(ec.SECP256R1())
        self.name = _name(name)
        now = datetime.datetime.now(datetime.UTC)
        signer = issuer.key if issuer is not None else self.key
        writtenIssuer = issuer.name if issuer is not None else self.name
        builder = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(writtenIssuer)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days))
        )
        if names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False
            )
        self.certificate = builder.sign(signer, hashes.SHA256())

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def keyPEM(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """
    A self-signed CA and a server certificate it issued.
    """
    return makeTLSFiles(tmp_path_factory.mktemp("pki"))


def caDirectory(directory: Path, pki: TLSFiles) -> Path:
    """
    The directory an operator reported: C{localhost.pem} (certificate and
    key) and C{ca.pem}, the self-signed CA that issued it.
    """
    directory.mkdir(exist_ok=True)
    (directory / "localhost.pem").write_bytes(
        pki.serverCert.read_bytes() + pki.serverKey.read_bytes()
    )
    (directory / "ca.pem").write_bytes(pki.caCert.read_bytes())
    return directory


def test_selfSignedCA(tmp_path: Path, pki: TLSFiles) -> None:
    """
    A directory with the server's certificate and the self-signed CA that
    issued it loads: the certificate serves its names and its chain stops
    before the root.
    """
    certificates = DirectoryCertificates.fromDirectory(str(caDirectory(tmp_path, pki)))
    assert verifyObject(IOpenSSLServerConnectionCreator, certificates)
    [served] = certificates.served
    assert served.names == ("localhost",) and served.chain == ()
    assert certificates.names == ["localhost"]


def test_planSelfSignedCA(tmp_path: Path, pki: TLSFiles) -> None:
    """
    C{--check-config} (L{planListener}) of a C{tls:} listener, alone and
    behind C{haproxy:}, on such a directory returns its certificates.
    """
    directory = caDirectory(tmp_path, pki)
    for description in (
        f"tls:{directory}:port=3129",
        f"haproxy:tls:{directory}:port=3129",
    ):
        plan = planListener(description)
        assert plan.tls and plan.where == "[::]:3129"
        assert isinstance(plan.tlsConfiguration, DirectoryCertificates)


def test_intermediateChain(tmp_path: Path) -> None:
    """
    A served certificate's chain is its issuers, the nearest first, without
    the self-signed root; an issuer of the same name but another key is
    passed over.
    """
    root = Issuer("root")
    intermediate = Issuer("intermediate", root)
    impostor = Issuer("intermediate", root)
    leaf = Issuer("leaf", intermediate, ("proxy.example",))
    (tmp_path / "a-impostor.pem").write_bytes(impostor.pem)
    (tmp_path / "chain.pem").write_bytes(intermediate.pem + root.pem)
    (tmp_path / "proxy.pem").write_bytes(leaf.pem + leaf.keyPEM)
    [served] = DirectoryCertificates.fromDirectory(str(tmp_path)).served
    assert served.chain == (intermediate.certificate,)


def test_cycle(tmp_path: Path) -> None:
    """
    Two certificates that issued each other (each signature valid) end the
    chain after each was named once.
    """
    first = Issuer("A")
    b = Issuer("B", first)
    a = Issuer("A", b, key=first.key)
    b.certificate.verify_directly_issued_by(a.certificate)
    leaf = Issuer("leaf", a, ("proxy.example",))
    assert buildChain(leaf.certificate, [a.certificate, b.certificate]) == (
        a.certificate,
        b.certificate,
    )
    (tmp_path / "ab.pem").write_bytes(a.pem + b.pem)
    (tmp_path / "proxy.pem").write_bytes(leaf.pem + leaf.keyPEM)
    [served] = DirectoryCertificates.fromDirectory(str(tmp_path)).served
    assert served.chain == (a.certificate, b.certificate)
    plan = planListener(f"tls:{tmp_path}:port=3129")
    assert isinstance(plan.tlsConfiguration, DirectoryCertificates)


def test_selfSignedServer(tmp_path: Path) -> None:
    """
    A self-signed server certificate with its key is served, with no
    chain.
    """
    alone = Issuer("alone", names=("proxy.example",))
    (tmp_path / "alone.pem").write_bytes(alone.keyPEM + alone.pem)
    [served] = DirectoryCertificates.fromDirectory(str(tmp_path)).served
    assert served.chain == () and served.names == ("proxy.example",)


def test_serverNames(tmp_path: Path) -> None:
    """
    A client gets the certificate of the name it asks for (in any case),
    of its wildcard, or the first one served; of two certificates for a
    name, the one valid longest.
    """
    root = Issuer("root")
    first = Issuer("first", root, ("a.example",))
    wildcard = Issuer("wildcard", root, ("*.b.example",))
    short = Issuer("short", root, ("c.example",), days=10)
    long = Issuer("long", root, ("c.example",), days=20)
    for name, issued in [("1", first), ("2", wildcard), ("3", long), ("4", short)]:
        (tmp_path / f"{name}.pem").write_bytes(issued.pem + issued.keyPEM)
    certificates = DirectoryCertificates.fromDirectory(str(tmp_path))

    def served(name: bytes | None) -> x509.Certificate:
        context = certificates.contextFor(name)
        for each in certificates.served:
            if each.options.getContext() is context:
                return each.certificate
        raise AssertionError("no such context")

    assert served(b"A.Example") == first.certificate
    assert served(b"www.b.example") == wildcard.certificate
    assert served(b"c.example") == long.certificate
    assert served(b"unknown.example") == first.certificate
    assert served(None) == first.certificate
    assert certificates.names == ["*.b.example", "a.example", "c.example"]


def test_renewalWithTheSameKey(tmp_path: Path) -> None:
    """
    Two certificates of one key (a renewal that kept it) are both served,
    the one valid longest for their name, and a certificate found twice is
    served once.
    """
    root = Issuer("root")
    old = Issuer("old", root, ("a.example",), days=10)
    new = Issuer("new", root, ("a.example",), days=90, key=old.key)
    (tmp_path / "1-old.pem").write_bytes(old.pem + old.keyPEM)
    (tmp_path / "2-new.pem").write_bytes(new.pem + new.keyPEM)
    (tmp_path / "3-copy.pem").write_bytes(new.pem)
    certificates = DirectoryCertificates.fromDirectory(str(tmp_path))
    assert [s.certificate for s in certificates.served] == [
        old.certificate,
        new.certificate,
    ]
    context = certificates.contextFor(b"a.example")
    assert context is certificates.served[1].options.getContext()


def test_otherBlocksSkipped(tmp_path: Path) -> None:
    """
    Blocks other than certificates and private keys (the C{EC PARAMETERS}
    that C{openssl ecparam -genkey} writes) are skipped, and files not
    ending in C{.pem} are not read.
    """
    alone = Issuer("alone", names=("proxy.example",))
    parameters = (
        b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n"
        b"-----END EC PARAMETERS-----\n"
    )
    (tmp_path / "alone.pem").write_bytes(parameters + alone.keyPEM + alone.pem)
    (tmp_path / "notes.txt").write_bytes(b"-----BEGIN CERTIFICATE-----\nx\n")
    assert DirectoryCertificates.fromDirectory(str(tmp_path)).names == ["proxy.example"]


@pytest.mark.parametrize(
    "content, message",
    [
        (
            b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
            "broken.pem: a certificate does not load",
        ),
        (
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "broken.pem: a private key does not load",
        ),
    ],
)
def test_unreadableBlock(tmp_path: Path, content: bytes, message: str) -> None:
    """
    A block that does not load refuses the directory, naming the file.
    """
    (tmp_path / "broken.pem").write_bytes(content)
    with pytest.raises(PEMDirectoryError) as raised:
        DirectoryCertificates.fromDirectory(str(tmp_path))
    assert str(raised.value).startswith(f"cannot load the PEM files of '{tmp_path}'")
    assert message in str(raised.value)


def test_nothingServed(tmp_path: Path, pki: TLSFiles) -> None:
    """
    A directory without a certificate that has its key and a DNS name is
    refused; so is a path that is not a directory.
    """
    (tmp_path / "ca.pem").write_bytes(pki.caCert.read_bytes())
    with pytest.raises(PEMDirectoryError, match="has its private key and a DNS"):
        DirectoryCertificates.fromDirectory(str(tmp_path))
    with pytest.raises(PEMDirectoryError, match="is not a directory"):
        DirectoryCertificates.fromDirectory(str(tmp_path / "ca.pem"))


def test_endpoints(tmp_path: Path, pki: TLSFiles) -> None:
    """
    C{tls:} descriptions, alone or under C{haproxy:}, give a
    L{PEMDirectoryEndpoint} with Twisted's C{tls:} fields, which reads the
    directory when it listens; other descriptions are Twisted's.
    """
    directory = caDirectory(tmp_path / "pems", pki)
    clock = MemoryReactorClock()
    endpoint = serverFromDescription(
        clock, f"tls:{directory}:port=3129:interface=127.0.0.1:backlog=7"
    )
    assert isinstance(endpoint, PEMDirectoryEndpoint)
    endpoint.listen(Factory.forProtocol(Protocol))
    [(port, factory, backlog, interface)] = clock.tcpServers
    assert (port, backlog, interface) == (3129, 7, "127.0.0.1")
    assert isinstance(factory, TLSMemoryBIOFactory)
    wrapped = serverEndpoint(clock, f"haproxy:tls:{directory}:port=3129")
    assert isinstance(wrapped, ProxyProtocolEndpoint)
    assert isinstance(wrapped.wrapped, PEMDirectoryEndpoint)
    with pytest.raises(TypeError):
        serverFromDescription(clock, f"tls:{directory}:colour=blue")

    failures: list[object] = []
    broken = serverFromDescription(clock, f"tls:{tmp_path / 'missing'}:port=3129")
    broken.listen(Factory.forProtocol(Protocol)).addErrback(failures.append)
    [failure] = failures
    assert failure.check(PEMDirectoryError)  # type: ignore[attr-defined]


def test_planRefusesBrokenDirectory(tmp_path: Path) -> None:
    """
    L{planListener} names the description and the problem.
    """
    with pytest.raises(ListenerError) as raised:
        planListener(f"tls:{tmp_path}:port=3129")
    assert str(raised.value) == (
        f"'tls:{tmp_path}:port=3129': no certificate in '{tmp_path}' has its "
        "private key and a DNS name (subjectAltName) in a .pem file"
    )


def test_handshakeChoosesByServerName(tmp_path: Path) -> None:
    """
    Over a real TLS handshake a client gets the certificate of the name it
    sends (SNI), with its chain, and the first certificate without a name.
    """
    from cryptography.hazmat.primitives.hashes import SHA256
    from twisted.internet.protocol import Factory

    from tests.test_tls import Connection, TLSClient
    from tests.test_tlslisteners import _sniOnly

    root = Issuer("root")
    intermediate = Issuer("intermediate", root)
    first = Issuer("first", root, ("a.example",))
    second = Issuer("second", intermediate, ("b.example",))
    (tmp_path / "1.pem").write_bytes(first.pem + first.keyPEM)
    (tmp_path / "2.pem").write_bytes(second.pem + second.keyPEM + intermediate.pem)
    (tmp_path / "root.pem").write_bytes(root.pem)
    clock = MemoryReactorClock()
    certificates = DirectoryCertificates.fromDirectory(str(tmp_path))
    tls = TLSMemoryBIOFactory(
        certificates, False, Factory.forProtocol(Protocol), clock=clock
    )

    def served(name: bytes | None) -> list[bytes]:
        client = TLSClient()
        creator = _sniOnly(name) if name is not None else _sniOnly(b"")
        Connection(tls, client, creator, clock).flush()
        handle = client.transport.getHandle()  # type: ignore[union-attr]
        chain = handle.get_peer_cert_chain()
        return [c.to_cryptography().fingerprint(SHA256()) for c in chain]

    def fingerprints(*issued: Issuer) -> list[bytes]:
        return [i.certificate.fingerprint(SHA256()) for i in issued]

    assert served(b"b.example") == fingerprints(second, intermediate)
    assert served(b"a.example") == fingerprints(first)
    assert served(b"") == fingerprints(first)
