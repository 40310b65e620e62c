# -*- test-case-name: tests.test_pemdirectory -*-
"""
The certificates of a C{tls:} listener: a directory of PEM files, read by
connectproxy itself.

Twisted's C{tls:} endpoint builds the certificate chains of its directory
with a loop that never ends when a certificate in it issued itself (a CA
certificate next to the server's, as most directories have) or when two
certificates issued each other, and reads the directory again for every
client naming a server it does not know.  L{tlsServerEndpoint} takes the
same description fields and reads the directory when it listens, with
L{DirectoryCertificates.fromDirectory}, and never for a client; a reload
(SIGHUP) reads it again.

How a directory is read:

  - every file whose name ends in C{.pem}, in subdirectories too, in the
    order of their paths; blocks other than certificates and private keys
    (C{EC PARAMETERS}, C{DH PARAMETERS}) are skipped;
  - each private key is paired with every certificate of its public key;
    each serves the DNS names of its subjectAltName (a name given by two
    certificates is served by the one valid longest);
  - its chain is the certificates that issued it, one after the other (the
    issuer's signature checked), up to but excluding a self-signed root,
    and never a certificate twice;
  - a client that names no server, or one the directory has no certificate
    for, gets the first certificate served.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.hashes import SHA256
from OpenSSL import SSL, crypto
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import TCP6ServerEndpoint, serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.ssl import CertificateOptions
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.filepath import FilePath, LinkError
from zope.interface import implementer

from ._descriptions import splitDescription

__all__ = [
    "DirectoryCertificates",
    "PEMDirectoryEndpoint",
    "PEMDirectoryError",
    "ServedCertificate",
    "buildChain",
    "pairKeys",
    "serverFromDescription",
    "tlsServerEndpoint",
]

#: The longest chain followed from a served certificate to its root.
MAX_CHAIN = 10

_SHA256 = SHA256()

_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)


class PEMDirectoryError(ValueError):
    """
    A C{tls:} directory that cannot be read; the message names the file
    and says why.
    """


@dataclass(frozen=True)
class ServedCertificate:
    """
    One certificate a directory serves.

    @ivar certificate: The certificate.
    @ivar chain: The certificates that issued it, its issuer first, without
        the self-signed root.
    @ivar names: The DNS names it serves (subjectAltName).
    @ivar options: The TLS configuration serving it.
    """

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    names: tuple[str, ...]
    options: CertificateOptions = field(repr=False, compare=False)


def _readBlocks(
    path: FilePath[str],
) -> tuple[list[x509.Certificate], list[PrivateKeyTypes]]:
    """
    The certificates and private keys of one PEM file.

    @raise PEMDirectoryError: When the file cannot be read or a block does
        not load.
    """
    try:
        content = path.getContent()
    except OSError as e:
        raise PEMDirectoryError(f"{path.path}: {e.strerror}") from None
    certificates, keys = [], []
    for match in _BLOCK.finditer(content):
        label = match.group(1)
        try:
            if label == b"CERTIFICATE":
                certificates.append(x509.load_pem_x509_certificate(match.group(0)))
            elif label.endswith(b"PRIVATE KEY"):
                keys.append(serialization.load_pem_private_key(match.group(0), None))
        except (ValueError, TypeError) as e:
            kind = label.decode("ascii").lower()
            raise PEMDirectoryError(
                f"{path.path}: a {kind} does not load ({e})"
            ) from None
    return certificates, keys


def _publicKey(key: object) -> bytes:
    """
    The SubjectPublicKeyInfo of a key's public half, to pair keys with
    certificates.
    """
    public = getattr(key, "public_key", None)
    if public is None:
        return b""
    try:
        return bytes(
            public().public_bytes(
                serialization.Encoding.DER,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
        )
    except (TypeError, ValueError):
        return b""


def _selfIssued(certificate: x509.Certificate) -> bool:
    return certificate.issuer == certificate.subject


def _issuedBy(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """
    Whether C{issuer}'s key signed C{certificate}.
    """
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def buildChain(
    certificate: x509.Certificate, candidates: Sequence[x509.Certificate]
) -> tuple[x509.Certificate, ...]:
    """
    The chain a server sends after its certificate: the certificate's
    issuer, the issuer's issuer, and so on, found among C{candidates}.  It
    stops before a self-signed (root) certificate, at a certificate with no
    issuer among the candidates, at a certificate already in the chain (two
    certificates that issued each other) and after L{MAX_CHAIN}
    certificates.

    @param certificate: The served certificate.
    @param candidates: The other certificates available.
    @return: The chain, the certificate's issuer first.
    """
    chain: list[x509.Certificate] = []
    seen = {certificate.fingerprint(_SHA256)}
    current = certificate
    while len(chain) < MAX_CHAIN and not _selfIssued(current):
        issuer = next(
            (
                candidate
                for candidate in candidates
                if candidate.subject == current.issuer
                and candidate.fingerprint(_SHA256) not in seen
                and _issuedBy(current, candidate)
            ),
            None,
        )
        if issuer is None or _selfIssued(issuer):
            break
        seen.add(issuer.fingerprint(_SHA256))
        chain.append(issuer)
        current = issuer
    return tuple(chain)


def _dnsNames(certificate: x509.Certificate) -> tuple[str, ...]:
    """
    The DNS names of a certificate's subjectAltName, in lower case.
    """
    try:
        extension = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
    except x509.ExtensionNotFound:
        return ()
    names = extension.value.get_values_for_type(x509.DNSName)
    return tuple(name.lower() for name in names)


def pairKeys(
    certificates: Sequence[x509.Certificate], keys: Iterable[PrivateKeyTypes]
) -> list[tuple[x509.Certificate, PrivateKeyTypes]]:
    """
    Pair each private key with every certificate of its public key (a
    renewal may keep the key).

    @return: The pairs, in the order of the keys, then of the certificates;
        each certificate once; keys without a certificate are left out.
    """
    byPublicKey: dict[bytes, list[x509.Certificate]] = {}
    for certificate in certificates:
        byPublicKey.setdefault(_publicKey(certificate), []).append(certificate)
    byPublicKey.pop(b"", None)
    pairs = []
    paired: set[bytes] = set()
    for key in keys:
        for certificate in byPublicKey.get(_publicKey(key), []):
            fingerprint = certificate.fingerprint(_SHA256)
            if fingerprint not in paired:
                paired.add(fingerprint)
                pairs.append((certificate, key))
    return pairs


@implementer(IOpenSSLServerConnectionCreator)
class DirectoryCertificates:
    """
    The TLS configuration of a C{tls:} listener: the certificates of its
    directory, chosen by the server name a client asks for (SNI).

    @ivar directory: The directory.
    @ivar served: The certificates served, the default (for clients that
        name no known server) first.
    """

    def __init__(
        self,
        directory: str,
        certificates: Sequence[x509.Certificate],
        keys: Iterable[PrivateKeyTypes],
    ) -> None:
        """
        @param directory: The directory, for messages.
        @param certificates: Every certificate found, in the order found.
        @param keys: Every private key found, in the order found.
        @raise PEMDirectoryError: When no certificate has its key and a DNS
            name.
        """
        self.directory = directory
        served = []
        for certificate, key in pairKeys(certificates, keys):
            names = _dnsNames(certificate)
            if not names:
                continue
            chain = buildChain(certificate, certificates)
            try:
                options = CertificateOptions(
                    # A key OpenSSL cannot serve with raises TypeError.
                    privateKey=crypto.PKey.from_cryptography_key(cast(Any, key)),
                    certificate=crypto.X509.from_cryptography(certificate),
                    extraCertChain=[crypto.X509.from_cryptography(c) for c in chain],
                    contextForServerName=self.contextFor,
                )
            except (TypeError, ValueError) as e:
                raise PEMDirectoryError(
                    f"the certificate for {', '.join(names)} in {directory!r} "
                    f"cannot be served: {e}"
                ) from None
            served.append(ServedCertificate(certificate, chain, names, options))
        if not served:
            raise PEMDirectoryError(
                f"no certificate in {directory!r} has its private key and a "
                "DNS name (subjectAltName) in a .pem file"
            )
        self.served: tuple[ServedCertificate, ...] = tuple(served)
        self._byName: dict[str, ServedCertificate] = {}
        for each in self.served:
            for name in each.names:
                known = self._byName.get(name)
                if known is None or (
                    known.certificate.not_valid_after_utc
                    < each.certificate.not_valid_after_utc
                ):
                    self._byName[name] = each

    @property
    def names(self) -> list[str]:
        """
        The DNS names served, sorted.
        """
        return sorted(self._byName)

    @classmethod
    def fromDirectory(cls, directory: str) -> DirectoryCertificates:
        """
        Read the C{.pem} files of a directory (see the module's docstring).

        @param directory: The directory's path.
        @return: Its certificates.
        @raise PEMDirectoryError: When it is not a directory, a file cannot
            be read or holds a block that does not load, or no certificate
            has its key and a DNS name.
        """
        path = FilePath(directory)
        if not path.isdir():
            raise PEMDirectoryError(
                f"the certificate directory {directory!r} is not a directory"
            )
        try:
            files = sorted(
                (each for each in path.walk() if each.basename().endswith(".pem")),
                key=lambda each: each.path,
            )
            certificates: list[x509.Certificate] = []
            keys: list[PrivateKeyTypes] = []
            for each in files:
                if each.isfile():
                    found, foundKeys = _readBlocks(each)
                    certificates.extend(found)
                    keys.extend(foundKeys)
        except (OSError, LinkError, PEMDirectoryError) as e:
            raise PEMDirectoryError(
                f"cannot load the PEM files of {directory!r}: {e}"
            ) from None
        return cls(directory, certificates, keys)

    def contextFor(self, serverName: bytes | None) -> SSL.Context:
        """
        The TLS context for a server name: the certificate of that name, or
        of its wildcard (C{*.example.com} for C{www.example.com}), or the
        default.  Nothing is read from the directory.

        @param serverName: The name the client sent (SNI), or C{None}.
        """
        served = self.served[0]
        if serverName:
            name = serverName.decode("ascii", "replace").lower()
            found = self._byName.get(name)
            if found is None and "." in name:
                found = self._byName.get("*." + name.partition(".")[2])
            if found is not None:
                served = found
        context: SSL.Context = served.options.getContext()
        return context

    def serverConnectionForTLS(self, protocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        """
        Make a client's TLS connection: with the default context, switched
        to the context of the name the client asks for once it does.

        @param protocol: The TLS protocol of the client's connection.
        """
        return SSL.Connection(self.contextFor(None))


@implementer(IStreamServerEndpoint)
class PEMDirectoryEndpoint:
    """
    A C{tls:} listener: TLS with the certificates of a directory, over
    another endpoint.  The directory is read when it listens, not before.

    @ivar directory: The directory of PEM files.
    @ivar endpoint: The endpoint under TLS.
    """

    def __init__(
        self,
        directory: str,
        endpoint: IStreamServerEndpoint,
        clock: IReactorTime | None = None,
    ) -> None:
        """
        @param directory: The directory of PEM files.
        @param endpoint: The endpoint to listen on.
        @param clock: The clock of the TLS layer.
        """
        self.directory = directory
        self.endpoint = endpoint
        self._clock = clock

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """
        Read the directory and listen.

        @return: What the wrapped endpoint's C{listen} returns, or a failure
            with L{PEMDirectoryError} when the directory cannot be used.
        """
        try:
            creator = DirectoryCertificates.fromDirectory(self.directory)
        except PEMDirectoryError:
            return fail()
        return self.endpoint.listen(
            TLSMemoryBIOFactory(creator, False, protocolFactory, clock=self._clock)
        )


def tlsServerEndpoint(
    reactor: Any,
    path: str,
    port: str = "443",
    backlog: str = "50",
    interface: str = "::",
) -> PEMDirectoryEndpoint:
    """
    The endpoint of a C{tls:} description, with the fields of Twisted's
    C{tls:} endpoint: C{tls:DIRECTORY:port=443:backlog=50:interface=::}.

    @param reactor: The reactor to listen with (and the TLS layer's clock).
    @raise ValueError: For a port or backlog that is not a number.
    @raise TypeError: For fields C{tls:} does not take.
    """
    return PEMDirectoryEndpoint(
        path, TCP6ServerEndpoint(reactor, int(port), int(backlog), interface), reactor
    )


def serverFromDescription(reactor: Any, description: str) -> IStreamServerEndpoint:
    """
    Like C{twisted.internet.endpoints.serverFromString}, except that a
    C{tls:} description gives a L{PEMDirectoryEndpoint}.

    @raise ValueError: For a description that does not parse (and what
        C{serverFromString} raises).
    @raise TypeError: For fields C{tls:} does not take.
    """
    args, kwargs = splitDescription(description)
    if args and args[0] == "tls":
        return tlsServerEndpoint(reactor, *args[1:], **kwargs)
    endpoint: IStreamServerEndpoint = serverFromString(reactor, description)
    return endpoint
