# -*- test-case-name: tests.integration.test_clients -*-
"""
A throwaway PKI: a self-signed CA and a server certificate for
C{localhost}, C{127.0.0.1} and C{::1}.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class TLSFiles:
    """
    The files of a throwaway PKI.

    @ivar caCert: The CA certificate (PEM), the only thing clients trust.
    @ivar serverCert: The server certificate (PEM) for C{localhost},
        C{127.0.0.1} and C{::1}, signed by the CA.
    @ivar serverKey: The server's private key (PEM).
    @ivar caKey: The CA's private key (PEM), to issue more certificates
        (L{renewTLSFiles}).
    """

    caCert: Path
    serverCert: Path
    serverKey: Path
    caKey: Path | None = None


def _name(commonName: str) -> x509.Name:
    """
    Make a distinguished name.

    @param commonName: Its CN.
    @return: The name.
    """
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, commonName)])


def _keyUsage(certSign: bool) -> x509.KeyUsage:
    """
    Make the key usage of a CA or of a server.

    @param certSign: Whether this is a CA.
    @return: The extension.
    """
    return x509.KeyUsage(
        digital_signature=not certSign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=certSign,
        crl_sign=certSign,
        encipher_only=False,
        decipher_only=False,
    )


def makeTLSFiles(directory: Path) -> TLSFiles:
    """
    Make a self-signed CA and a server certificate it signed.

    @param directory: Where to write the PEM files.
    @return: Their paths.
    """
    now = datetime.datetime.now(datetime.UTC)
    caKey = ec.generate_private_key(ec.SECP256R1())
    caSubjectKey = x509.SubjectKeyIdentifier.from_public_key(caKey.public_key())
    caCert = (
        x509.CertificateBuilder()
        .subject_name(_name("connectproxy test CA"))
        .issuer_name(_name("connectproxy test CA"))
        .public_key(caKey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_keyUsage(certSign=True), critical=True)
        .add_extension(caSubjectKey, critical=False)
        .sign(caKey, hashes.SHA256())
    )
    files = TLSFiles(
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
        directory / "ca.key",
    )
    files.caCert.write_bytes(caCert.public_bytes(serialization.Encoding.PEM))
    assert files.caKey is not None
    files.caKey.write_bytes(_privatePEM(caKey))
    _issueServerCertificate(caCert, caKey, files)
    return files


def renewTLSFiles(ca: TLSFiles, directory: Path) -> TLSFiles:
    """
    Issue another server certificate (a new key, a new serial number, the
    same names) from the CA of C{ca}, as a renewal does.

    @param ca: Files made by L{makeTLSFiles}.
    @param directory: Where to write the new certificate and key (made if
        missing).
    @return: The same CA's files, with the new certificate and key.
    """
    assert ca.caKey is not None
    directory.mkdir(parents=True, exist_ok=True)
    caCert = x509.load_pem_x509_certificate(ca.caCert.read_bytes())
    caKey = serialization.load_pem_private_key(ca.caKey.read_bytes(), None)
    assert isinstance(caKey, ec.EllipticCurvePrivateKey)
    files = TLSFiles(
        ca.caCert, directory / "server.pem", directory / "server.key", ca.caKey
    )
    _issueServerCertificate(caCert, caKey, files)
    return files


def _privatePEM(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _issueServerCertificate(
    caCert: x509.Certificate, caKey: ec.EllipticCurvePrivateKey, files: TLSFiles
) -> None:
    """
    Make a server key and a certificate for it signed by the CA, and write
    them where C{files} says.
    """
    now = datetime.datetime.now(datetime.UTC)
    caSubjectKey = x509.SubjectKeyIdentifier.from_public_key(caKey.public_key())
    serverKey = ec.generate_private_key(ec.SECP256R1())
    alternativeNames = x509.SubjectAlternativeName(
        [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
    )
    serverCert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(caCert.subject)
        .public_key(serverKey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(_keyUsage(certSign=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(alternativeNames, critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(serverKey.public_key()),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                caSubjectKey
            ),
            critical=False,
        )
        .sign(caKey, hashes.SHA256())
    )
    files.serverCert.write_bytes(serverCert.public_bytes(serialization.Encoding.PEM))
    files.serverKey.write_bytes(_privatePEM(serverKey))
