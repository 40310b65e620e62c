# -*- test-case-name: tests.test_proxyprotocol -*-
"""
Listeners behind a load balancer that sends the PROXY protocol:
C{--listen haproxy:tcp:3128} and any other C{haproxy:} description.

Twisted's own C{haproxy:} endpoint drops a header split across TCP segments
(Twisted #8287), has no deadline for the header, and reports the balancer
as the client until the first bytes arrive, so connection limits count the
balancer.  L{serverEndpoint} builds C{haproxy:} listeners from this module
instead, with the same description syntax:

  - L{ProxyHeaderProtocol} reads the header with L{ProxyHeaderParser}
    (versions 1 and 2, in pieces of any size) under C{--request-timeout},
    from C{--trusted-proxy} balancers only;
  - then it asks the proxy's factory for a protocol for the client's
    address (so per-client limits, client rules and logs see the client)
    and connects that protocol to the connection's own transport: the proxy
    runs on the plain TCP connection as if the client had connected
    directly, half-close and resets included, with no wrapper in the way.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IProtocolNegotiationFactory,
    IStreamServerEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import alsoProvides, implementer

from ._address import formatAddress
from ._pemdirectory import serverFromDescription
from ._proxyheader import InvalidProxyHeader, ProxyHeader, ProxyHeaderParser
from ._responses import formatSeconds
from ._tls import handshakePending, logHandshakeFailure, logHandshakeTimeout

if TYPE_CHECKING:
    from ._factory import ConnectProxyFactory

__all__ = [
    "ProxyHeaderFactory",
    "ProxyHeaderProtocol",
    "ProxyProtocolEndpoint",
    "serverEndpoint",
]

#: The endpoint prefix connectproxy serves itself rather than through
#: Twisted's plugin.
PREFIX = "haproxy"

#: What a source that is not a trusted load balancer is told.
UNTRUSTED_REASON = "this listener serves trusted load balancers only"


def serverEndpoint(reactor: Any, description: str) -> IStreamServerEndpoint:
    """
    Build a listening endpoint from a strports description, like
    C{twisted.internet.endpoints.serverFromString}, except that
    C{haproxy:DESCRIPTION} gives a L{ProxyProtocolEndpoint} around the
    endpoint C{DESCRIPTION} describes, and C{tls:} (alone or under
    C{haproxy:}) a L{PEMDirectoryEndpoint
    <connectproxy._pemdirectory.PEMDirectoryEndpoint>}.

    @param reactor: The reactor to listen with.
    @param description: The description, for example C{haproxy:tcp:3128}.
    @return: The endpoint.  A L{ProxyProtocolEndpoint} listens only with a
        L{connectproxy.ConnectProxyFactory}.
    @raise ValueError: For a description Twisted cannot parse (and the
        other exceptions C{serverFromString} raises).
    """
    prefix, colon, rest = description.partition(":")
    if colon and prefix.lower() == PREFIX:
        return ProxyProtocolEndpoint(serverFromDescription(reactor, rest))
    return serverFromDescription(reactor, description)


@implementer(IStreamServerEndpoint)
class ProxyProtocolEndpoint:
    """
    Listen on another endpoint and read a PROXY protocol header at the
    start of every connection.
    """

    def __init__(self, wrapped: IStreamServerEndpoint) -> None:
        """
        @param wrapped: Where to listen (a TCP endpoint, usually).
        """
        self.wrapped = wrapped

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """
        @param protocolFactory: A L{connectproxy.ConnectProxyFactory}.
        @return: What the wrapped endpoint's C{listen} returns.
        """
        factory = cast("ConnectProxyFactory", protocolFactory)
        return self.wrapped.listen(ProxyHeaderFactory(factory))


class ProxyHeaderFactory(Factory):
    """
    Builds a L{ProxyHeaderProtocol} for every connection, for the proxy's
    factory.

    @ivar wrappedFactory: The proxy's factory: its settings, clock and
        access rules apply, and it builds the protocol for each client.
    """

    noisy = False

    def __init__(self, wrappedFactory: ConnectProxyFactory) -> None:
        self.wrappedFactory = wrappedFactory
        if IProtocolNegotiationFactory.providedBy(wrappedFactory):
            # A TLS listener under this one asks for the ALPN protocols.
            alsoProvides(self, IProtocolNegotiationFactory)

    def acceptableProtocols(self) -> list[bytes]:
        """
        The wrapped factory's ALPN protocols (only offered when it has
        them).
        """
        wrapped = cast(IProtocolNegotiationFactory, self.wrappedFactory)
        return wrapped.acceptableProtocols()

    def doStart(self) -> None:
        self.wrappedFactory.doStart()

    def doStop(self) -> None:
        self.wrappedFactory.doStop()

    def logPrefix(self) -> str:
        return "ConnectProxyFactory (PROXY)"

    def buildProtocol(self, addr: IAddress | None) -> ProxyHeaderProtocol:
        return ProxyHeaderProtocol(self.wrappedFactory)


@implementer(IHalfCloseableProtocol)
class ProxyHeaderProtocol(Protocol):
    """
    Reads the PROXY header of one connection, then hands the connection to
    a protocol the proxy's factory builds for the client's address, and
    passes it every later event.

    A connection from outside C{--trusted-proxy} gets the proxy's 403 at
    once, without its header being read.  An invalid header (or none: an
    HTTP client talking to this port directly) closes the connection at
    once, as the specification requires, and so does a header that is not
    complete within C{--request-timeout}; each with one log event.

    @ivar wrappedProtocol: The proxy's protocol, once there is one.
    """

    _log = Logger()
    wrappedProtocol: IProtocol | None = None

    def __init__(self, proxyFactory: ConnectProxyFactory) -> None:
        self._proxy = proxyFactory
        self._parser: ProxyHeaderParser | None = None
        self._timer: IDelayedCall | None = None
        self._timeout = proxyFactory.settings.requestTimeout

    def connectionMade(self) -> None:
        transport = cast(ITCPTransport, self.transport)
        peer = transport.getPeer()
        if not _trusted(self._proxy, peer):
            self._attach(self._proxy.buildRefusal(peer, 403, UNTRUSTED_REASON))
            return
        self._parser = ProxyHeaderParser()
        self._timer = self._proxy.reactor.callLater(self._timeout, self._timedOut)

    def dataReceived(self, data: bytes) -> None:
        # Only before the header: _attach replaces this method.
        parser = self._parser
        if parser is None:
            return
        try:
            result = parser.feed(data)
        except InvalidProxyHeader as e:
            self._closeWith(
                "closed the connection from {source}: invalid PROXY header: {reason}",
                "proxy_header_invalid",
                reason=e.reason,
            )
            return
        if result is None:
            return
        header, leftover = result
        self._stopTimer()
        self._parser = None
        peer = cast(ITCPTransport, self.transport).getPeer()
        if header.source is None:
            # LOCAL, UNKNOWN: the balancer's own connection.
            self._attach(self._proxy.buildProtocol(peer))
        else:
            client = clientAddress(header, peer)
            self._attach(self._proxy.buildProxiedProtocol(client, peer))
        if leftover and self.wrappedProtocol is not None:
            self.wrappedProtocol.dataReceived(leftover)

    def _attach(self, protocol: IProtocol | None) -> None:
        """
        Connect C{protocol} to this connection's transport, and pass it
        every later byte directly.
        """
        if protocol is None:
            cast(ITCPTransport, self.transport).loseConnection()
            return
        self.wrappedProtocol = protocol
        # The transport calls this attribute for every chunk: make it the
        # proxy's own method, so that relaying costs no extra call.
        self.dataReceived = protocol.dataReceived  # type: ignore[method-assign]
        protocol.makeConnection(cast(ITCPTransport, self.transport))

    def _timedOut(self) -> None:
        self._timer = None
        transport = cast(ITCPTransport, self.transport)
        if handshakePending(transport):
            # Under TLS (haproxy:ssl:, haproxy:tls:) the header never came
            # because the handshake never finished.
            self._parser = None
            logHandshakeTimeout(
                formatAddress(transport.getPeer()), formatSeconds(self._timeout)
            )
            transport.abortConnection()
            return
        self._closeWith(
            "closed the connection from {source}: no complete PROXY header "
            "within {timeout} seconds",
            "proxy_header_timeout",
            timeout=self._timeout,
        )

    def _closeWith(self, message: str, event: str, **fields: object) -> None:
        """
        Log one event and abort the connection.
        """
        self._stopTimer()
        self._parser = None
        transport = cast(ITCPTransport, self.transport)
        self._log.warn(
            message,
            event=event,
            source=formatAddress(transport.getPeer()),
            **fields,
        )
        transport.abortConnection()

    def _stopTimer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def readConnectionLost(self) -> None:
        """
        The peer sent a FIN: pass it on, or close if there is no protocol
        yet (no header can follow) or it cannot take a half-close.
        """
        halfCloseable = IHalfCloseableProtocol(self.wrappedProtocol, None)
        if halfCloseable is not None:
            halfCloseable.readConnectionLost()
            return
        self._stopTimer()
        self._parser = None
        cast(ITCPTransport, self.transport).loseConnection()

    def writeConnectionLost(self) -> None:
        halfCloseable = IHalfCloseableProtocol(self.wrappedProtocol, None)
        if halfCloseable is not None:
            halfCloseable.writeConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stopTimer()
        self._parser = None
        protocol, self.wrappedProtocol = self.wrappedProtocol, None
        if protocol is not None:
            protocol.connectionLost(reason)
        elif self.transport is not None:
            # No header came through: under a TLS listener (haproxy:ssl:)
            # the handshake may have failed.
            logHandshakeFailure(formatAddress(self.transport.getPeer()), reason)


def _trusted(proxyFactory: ConnectProxyFactory, peer: IAddress) -> bool:
    """
    Whether PROXY headers from C{peer} are believed: IP peers must be in
    C{--trusted-proxy} (loopback by default); a UNIX socket's peers are
    guarded by the socket file's permissions.
    """
    if not isinstance(peer, IPv4Address | IPv6Address):
        return True
    address = ipaddress.ip_address(peer.host.partition("%")[0])
    return proxyFactory.gatekeeper.rules.clients.trustsProxy(address)


def clientAddress(header: ProxyHeader, peer: IAddress) -> IAddress:
    """
    The client's address a header gives, or C{peer} (the connection's own
    peer, the balancer) when the header gives none (C{LOCAL}, C{UNKNOWN},
    and families other than TCP).  An IPv4-mapped IPv6 source is the IPv4
    client it stands for.

    @param header: The parsed header.
    @param peer: The transport's peer.
    """
    source = header.source
    if source is None:
        return peer
    if isinstance(source, IPv6Address):
        mapped = ipaddress.IPv6Address(source.host).ipv4_mapped
        if mapped is not None:
            return IPv4Address("TCP", str(mapped), source.port)
    return source
