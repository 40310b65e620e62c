# -*- test-case-name: tests.test_parenttls -*-
"""
Tests for C{https://} parents of L{connectproxy._parent.ParentProxyConnector}:
real TLS between the connector and a parent in memory (L{twisted.test.iosim}),
with certificates from a throwaway CA: the parent's certificate and name
are verified before any CONNECT is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IProtocolNegotiationFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import PrivateCertificate
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test.iosim import FakeTransport, IOPump, connect
from zope.interface import implementer

from connectproxy._parenturl import loadTrustRoot
from tests._fakeparent import ESTABLISHED
from tests.integration._pki import TLSFiles, makeTLSFiles
from tests.test_parent import Attempt

# The parent's side (Twisted's server TLS options) hands pyOpenSSL objects to
# pyOpenSSL; the connector's side does not.
pytestmark = pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")


class ParentServer(Protocol):
    """
    A parent proxy that answers the first request head with a 200 and a
    greeting from the target, and keeps what it received.
    """

    def __init__(self) -> None:
        self.received = b""
        self.answered = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if not self.answered and b"\r\n\r\n" in self.received:
            self.answered = True
            assert self.transport is not None
            self.transport.write(ESTABLISHED + b"hello")


@implementer(IProtocolNegotiationFactory)
class ParentServerFactory(Factory):
    """
    Makes L{ParentServer}s, and offers HTTP/1.1 to ALPN.
    """

    protocol = ParentServer

    def acceptableProtocols(self) -> list[bytes]:
        return [b"http/1.1"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """
    A CA and a certificate for localhost, 127.0.0.1 and ::1.
    """
    return makeTLSFiles(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def otherCA(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """
    The certificate of a CA that signed nothing the parent has.
    """
    return makeTLSFiles(tmp_path_factory.mktemp("other")).caCert


def serveTLS(attempt: Attempt, files: TLSFiles) -> tuple[IOPump, Any, ParentServer]:
    """
    Accept the attempt's connection with a TLS parent that has the
    certificate of C{files}, and pump until nothing moves.

    @return: The pump, the connector's protocol and the parent's.
    """
    certificate = PrivateCertificate.loadPEM(
        files.serverCert.read_text() + files.serverKey.read_text()
    )
    serverFactory = ParentServerFactory()
    tls = TLSMemoryBIOFactory(
        certificate.options(), False, serverFactory, attempt.reactor
    )
    host, port, factory, _, _ = attempt.reactor.tcpClients[-1]
    address = IPv4Address("TCP", host, port)
    clientProtocol = factory.buildProtocol(address)
    serverProtocol = tls.buildProtocol(address)
    server = serverProtocol.wrappedProtocol
    assert isinstance(server, ParentServer)
    pump = connect(
        serverProtocol,
        FakeTransport(serverProtocol, True),
        clientProtocol,
        FakeTransport(clientProtocol, False),
        clock=attempt.reactor,
    )
    pump.flush()
    return pump, clientProtocol, server


def test_verifiedParent(pki: TLSFiles) -> None:
    """
    A parent whose certificate the given CA signed for its address gets
    the CONNECT over TLS, and the tunnel works through it.
    """
    attempt = Attempt(
        "https://127.0.0.1:3129", trustRoot=loadTrustRoot(str(pki.caCert))
    )
    pump, _, server = serveTLS(attempt, pki)
    assert server.received.startswith(b"CONNECT example.com:443 HTTP/1.1\r\n")
    assert attempt.outcome == [attempt.protocol]
    assert attempt.protocol.log == ["connected", "fired", b"hello"]
    transport = attempt.protocol.transport
    assert transport is not None
    assert transport.negotiatedProtocol == b"http/1.1"  # type: ignore[attr-defined]
    transport.write(b"client data")
    pump.flush()
    assert server.received.endswith(b"\r\n\r\nclient data")


def test_untrustedParent(pki: TLSFiles, otherCA: Path) -> None:
    """
    A parent whose certificate no trusted CA signed never sees the CONNECT;
    the attempt fails with 502.
    """
    attempt = Attempt("https://127.0.0.1:3129", trustRoot=loadTrustRoot(str(otherCA)))
    _, _, server = serveTLS(attempt, pki)
    assert server.received == b""
    error = attempt.error()
    assert (error.status, error.reason) == (
        502,
        "the TLS handshake with the parent proxy failed",
    )
    assert "certificate verify failed" in error.detail
    assert attempt.protocol.log == ["fired"]


def test_parentNameMismatch(pki: TLSFiles) -> None:
    """
    A certificate from a trusted CA for another name is refused too.
    """
    attempt = Attempt(
        "https://parent.example:3129", trustRoot=loadTrustRoot(str(pki.caCert))
    )
    _, _, server = serveTLS(attempt, pki)
    assert server.received == b""
    error = attempt.error()
    assert (error.status, error.reason) == (
        502,
        "the parent proxy's certificate does not match its name",
    )
    assert "parent.example" in error.detail


def test_systemTrustByDefault(pki: TLSFiles) -> None:
    """
    Without --upstream-ca the system's CAs are trusted, so a private CA's
    certificate is refused.
    """
    attempt = Attempt("https://127.0.0.1:3129")
    serveTLS(attempt, pki)
    assert attempt.error().reason == "the TLS handshake with the parent proxy failed"


def test_forwardingVerifiedParent(pki: TLSFiles) -> None:
    """
    For plain HTTP forwarding, the connection to a verified parent is
    handed over once the TLS handshake is done, and carries the requests
    written on it.
    """
    attempt = Attempt(
        "https://127.0.0.1:3129",
        host="example.com",
        port=80,
        trustRoot=loadTrustRoot(str(pki.caCert)),
        forwarding=True,
    )
    pump, _, server = serveTLS(attempt, pki)
    assert attempt.outcome == [attempt.protocol]
    assert attempt.protocol.log == ["connected", "fired"]
    transport = attempt.protocol.transport
    assert transport is not None
    transport.write(b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
    pump.flush()
    assert server.received.startswith(b"GET http://example.com/ HTTP/1.1\r\n")
    assert (
        attempt.protocol.log[-1] == b"HTTP/1.1 200 Connection established\r\n\r\nhello"
    )


def test_forwardingUntrustedParent(pki: TLSFiles, otherCA: Path) -> None:
    """
    For plain HTTP forwarding too, a parent whose certificate no trusted CA
    signed fails the connect itself with 502 naming the TLS handshake: the
    forwarded request never goes out on a connection that cannot carry it.
    """
    attempt = Attempt(
        "https://127.0.0.1:3129",
        port=80,
        trustRoot=loadTrustRoot(str(otherCA)),
        forwarding=True,
    )
    _, _, server = serveTLS(attempt, pki)
    assert server.received == b""
    error = attempt.error()
    assert (error.status, error.reason) == (
        502,
        "the TLS handshake with the parent proxy failed",
    )
    assert "certificate verify failed" in error.detail
    assert attempt.protocol.log == ["fired"]


def test_forwardingHandshakeTimeout(pki: TLSFiles) -> None:
    """
    For plain HTTP forwarding, a parent that never completes the TLS
    handshake fails the connect after the attempt timeout, with 504, and
    its connection is dropped.
    """
    attempt = Attempt(
        "https://127.0.0.1:3129",
        port=80,
        trustRoot=loadTrustRoot(str(pki.caCert)),
        forwarding=True,
    )
    host, port, factory, _, _ = attempt.reactor.tcpClients[-1]
    clientProtocol = factory.buildProtocol(IPv4Address("TCP", host, port))
    assert clientProtocol is not None
    transport = StringTransport()
    clientProtocol.makeConnection(transport)
    assert attempt.outcome == []
    attempt.reactor.advance(7.0)
    error = attempt.error()
    assert (error.status, error.reason) == (
        504,
        "timed out waiting for the TLS handshake with the parent proxy",
    )
    assert transport.disconnecting or transport.disconnected
    assert attempt.protocol.log == ["fired"]
