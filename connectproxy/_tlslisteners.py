# -*- test-case-name: tests.test_tlslisteners -*-
"""
The TLS layer of C{ssl:} and C{tls:} listeners (C{haproxy:} in front or
not), and certificate rotation.

Each listener listens through its own L{NegotiatingReactor}, which hands the
listener's TLS layer a L{ListenerTLS} instead of the configuration Twisted
made from the description: it gives C{ssl:} contexts the ALPN selection of
L{refuseUnsharedProtocols <connectproxy._tls.refuseUnsharedProtocols>}, and
makes every new connection from the configuration put in use last.  On
reload (SIGHUP), L{reloadCertificates} loads every listener's files again,
with the code C{--check-config} checks them with
(L{planListener <connectproxy._listeners.planListener>}), and puts them in
use once the whole new configuration has loaded.  A connection keeps the
context it was made with, so established tunnels and handshakes in progress
are not touched.

A C{tls:} listener reads its directory when it starts
(L{PEMDirectoryEndpoint <connectproxy._pemdirectory.PEMDirectoryEndpoint>})
and never for a client, so its connection creator is replaced as a whole
too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from cryptography.hazmat.primitives.hashes import SHA256
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from zope.interface import directlyProvides, implementer, providedBy

from ._listeners import ListenerPlan, planListener
from ._tls import refuseUnsharedProtocols

__all__ = ["ListenerTLS", "NegotiatingReactor", "reloadCertificates"]


def _connectionMaker(configuration: Any) -> Callable[[Any], SSL.Connection] | None:
    """
    How a TLS configuration makes a server connection: through
    L{IOpenSSLServerConnectionCreator} (L{CertificateOptions
    <twisted.internet.ssl.CertificateOptions>} in recent Twisted, the
    creator of C{tls:} listeners), or from the context of an older context
    factory, as the TLS layer does.

    @return: The maker, or C{None} for something that is neither.
    """
    if IOpenSSLServerConnectionCreator.providedBy(configuration):
        maker: Callable[[Any], SSL.Connection] = configuration.serverConnectionForTLS
        return maker
    getContext = getattr(configuration, "getContext", None)
    if getContext is None:
        return None
    return lambda protocol: SSL.Connection(getContext(), None)


def _certificateFields(configuration: Any) -> dict[str, str]:
    """
    What an C{ssl:} configuration serves, for the log: the certificate's
    C{subject}, C{serial} (hexadecimal), C{notAfter} (ISO 8601, UTC) and
    SHA-256 C{fingerprint}; nothing for other configurations.
    """
    certificate = getattr(configuration, "certificate", None)
    toCryptography = getattr(certificate, "to_cryptography", None)
    if toCryptography is None:
        return {}
    served = toCryptography()
    return {
        "subject": served.subject.rfc4514_string(),
        "serial": format(served.serial_number, "x"),
        "notAfter": served.not_valid_after_utc.isoformat(),
        "fingerprint": served.fingerprint(SHA256()).hex(),
    }


@implementer(IOpenSSLServerConnectionCreator)
class ListenerTLS:
    """
    The TLS configuration of one C{ssl:} or C{tls:} listener, as its TLS
    layer sees it: every new connection is made by the configuration put in
    use last.  pyOpenSSL refuses changes to a context once it has made a
    connection, so a reload puts a whole new configuration in use rather
    than changing the old one; connections made before keep theirs.

    @ivar description: The listener's description, whose files a reload
        reads again.
    """

    _log = Logger(namespace="connectproxy.tls")

    def __init__(self, description: str, configuration: Any, factory: Any) -> None:
        """
        @param description: The listener's description.
        @param configuration: Its TLS configuration: a L{CertificateOptions
            <twisted.internet.ssl.CertificateOptions>} for C{ssl:}, Twisted's
            connection creator for C{tls:}.
        @param factory: The factory under the TLS layer, which says what
            ALPN protocols it speaks (L{refuseUnsharedProtocols}).
        @raise TypeError: For a configuration that cannot make connections.
        """
        self.description = description
        self._factory = factory
        self._configuration, self._make = self._prepare(configuration)

    @property
    def configuration(self) -> Any:
        """
        The configuration new connections are made with.
        """
        return self._configuration

    def _prepare(
        self, configuration: Any
    ) -> tuple[Any, Callable[[Any], SSL.Connection]]:
        """
        Give a configuration the listener's ALPN selection.

        @return: The configuration and how it makes connections.
        @raise TypeError: For a configuration that cannot make connections.
        """
        make = _connectionMaker(configuration)
        if make is None:
            raise TypeError(f"{configuration!r} cannot make TLS connections")
        refuseUnsharedProtocols(configuration, self._factory)
        return configuration, make

    def serverConnectionForTLS(self, protocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        """
        Make the TLS connection of a new client, with the configuration in
        use.

        @param protocol: The TLS protocol of the client's connection.
        @return: The new connection.
        """
        return self._make(protocol)

    def use(self, configuration: Any) -> None:
        """
        Make new connections with another configuration (loaded from the
        files again), and log what it serves: one
        C{tls_certificate_reloaded} event.

        @param configuration: As for the constructor; its context must not
            have made a connection yet.
        """
        before = _certificateFields(self._configuration)
        self._configuration, self._make = self._prepare(configuration)
        after = _certificateFields(configuration)
        if not after:
            self._log.info(
                "{listener}: new connections get the certificates now in its directory",
                event="tls_certificate_reloaded",
                listener=self.description,
            )
            return
        changed = before.get("fingerprint") != after["fingerprint"]
        self._log.info(
            "{listener}: new connections get certificate {subject} serial "
            "{serial}, valid until {notAfter}" + ("" if changed else " (unchanged)"),
            event="tls_certificate_reloaded",
            listener=self.description,
            changed=changed,
            **after,
        )


class NegotiatingReactor:
    """
    The reactor a listener listens with: everything goes to the real
    reactor, except that L{listenSSL} (which C{ssl:} and C{haproxy:ssl:}
    listeners call) and L{listenTCP} with a TLS factory (C{tls:}) hand the
    TLS layer a L{ListenerTLS}, which new certificates can be given on
    reload and which gives C{ssl:} contexts the ALPN selection of
    L{refuseUnsharedProtocols}.

    @ivar reactor: The real reactor.
    @ivar description: The description of the listener listening with it.
    @ivar served: The listener's TLS configuration once it listens with TLS,
        else C{None}.
    """

    def __init__(self, reactor: Any, description: str = "") -> None:
        """
        @param reactor: The real reactor; this one provides the same
            interfaces.
        @param description: The listener's description, for reloads; with
            none its TLS files are never read again.
        """
        self.reactor = reactor
        self.description = description
        self.served: ListenerTLS | None = None
        directlyProvides(self, providedBy(reactor))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reactor, name)

    def listenSSL(
        self,
        port: int,
        factory: Any,
        contextFactory: Any,
        backlog: int = 50,
        interface: str = "",
    ) -> Any:
        """
        Listen with TLS, see L{IReactorSSL.listenSSL
        <twisted.internet.interfaces.IReactorSSL.listenSSL>}.
        """
        if _connectionMaker(contextFactory) is not None:
            self.served = ListenerTLS(self.description, contextFactory, factory)
            contextFactory = self.served
        return self.reactor.listenSSL(port, factory, contextFactory, backlog, interface)

    def listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ) -> Any:
        """
        Listen, see L{IReactorTCP.listenTCP
        <twisted.internet.interfaces.IReactorTCP.listenTCP>}.  The TLS
        factory of a C{tls:} listener is made again around a L{ListenerTLS}
        holding the certificates of its directory, with this reactor as its
        clock.
        """
        if isinstance(factory, TLSMemoryBIOFactory) and self.description:
            configuration = planListener(self.description).tlsConfiguration
            if configuration is not None:
                wrapped = factory.wrappedFactory
                self.served = ListenerTLS(self.description, configuration, wrapped)
                factory = TLSMemoryBIOFactory(
                    self.served, False, wrapped, clock=self.reactor
                )
        return self.reactor.listenTCP(port, factory, backlog, interface)


def reloadCertificates(
    reactors: Iterable[NegotiatingReactor], plans: Iterable[ListenerPlan]
) -> Callable[[], None]:
    """
    Load the certificate, key, chain and DH parameter files (or the PEM
    directory) of every TLS listener again, without using them yet.

    @param reactors: The reactors the listeners listen with.
    @param plans: The listeners of the configuration being loaded, whose
        TLS files are already loaded; a listener that is not among them
        (its C{--listen} changed, which takes a restart) loads its own.
    @return: What puts the new configurations in use for new connections.
    @raise ListenerError: When a listener's files do not load (naming the
        listener and the file); nothing is in use then.
    """
    loaded = {plan.description: plan.tlsConfiguration for plan in plans}
    reloads = []
    for reactor in reactors:
        served = reactor.served
        if served is None or not served.description:
            continue
        configuration = loaded.get(served.description)
        if configuration is None:
            configuration = planListener(served.description).tlsConfiguration
        if configuration is not None:
            reloads.append((served, configuration))

    def use() -> None:
        for served, configuration in reloads:
            served.use(configuration)

    return use
