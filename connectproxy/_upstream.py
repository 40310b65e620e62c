# -*- test-case-name: tests.test_upstream -*-
"""
Upstream connectors: how the proxy reaches the target of a CONNECT.

The direct connector resolves the target first (on a L{ResolverPool}, with
a share per client), checks every address against the destination network
rules, and connects only to the addresses that passed, so a name cannot
lead the proxy somewhere the rules forbid, DNS rebinding included.  The
addresses are tried Happy Eyeballs style (L{connectToFirst}).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.address import HostnameAddress, IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import (
    IAddress,
    IHostnameResolver,
    IHostResolution,
    IProtocol,
    IReactorTime,
    IResolutionReceiver,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory
from zope.interface import implementer

from ._eyeballs import ATTEMPT_DELAY, connectToFirst
from ._outgoing import OutgoingAddresses
from ._parser import ConnectRequest
from ._policy import NetworkRules
from ._resolver import ResolverPool
from .interfaces import IUpstreamConnector

__all__ = [
    "DirectConnector",
    "ForbiddenDestination",
    "StaticResolver",
    "connectQuietly",
    "requestingClient",
]

Address = IPv4Address | IPv6Address

_client: ContextVar[str] = ContextVar("connectproxy_client", default="")


@contextmanager
def requestingClient(client: str) -> Iterator[None]:
    """
    Say whose request the connects started in the block are for: a
    L{DirectConnector} resolves names on that client's share of its
    L{ResolverPool}.  (The connector interface carries only the request, and
    connectors that wrap a L{DirectConnector} need not pass anything on.)

    @param client: The client's IP address as text (C{""} for a UNIX socket
        client).
    """
    token = _client.set(client)
    try:
        yield
    finally:
        _client.reset(token)


def _localAddresses(host: str, port: int) -> list[Address] | None:
    """
    The addresses of a target that needs no lookup: an IP address, or
    C{localhost} and names under C{.localhost}, which are always the
    loopback addresses (RFC 6761 section 6.3), IPv6 first (RFC 6724).

    @return: The addresses, or C{None} when C{host} needs a lookup.
    """
    if isIPv6Address(host):
        return [IPv6Address("TCP", host, port)]
    if isIPAddress(host):
        return [IPv4Address("TCP", host, port)]
    name = host.lower()
    if name == "localhost" or name.endswith(".localhost"):
        return [IPv6Address("TCP", "::1", port), IPv4Address("TCP", "127.0.0.1", port)]
    return None


class ForbiddenDestination(Exception):
    """
    Every address of the target is forbidden by the destination network
    rules.  The proxy answers 403 with C{reason}.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _OneProtocolFactory(Factory):
    """
    Hands out one ready-made protocol, without logging each start and stop.
    """

    noisy = False

    def __init__(self, protocol: IProtocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: IAddress) -> IProtocol:  # type: ignore[override]
        return self._protocol


def connectQuietly(
    endpoint: IStreamClientEndpoint, protocol: IProtocol
) -> Deferred[IProtocol]:
    """
    Like L{twisted.internet.endpoints.connectProtocol}, without the two log
    lines per connection.
    """
    return endpoint.connect(_OneProtocolFactory(protocol))


@implementer(IHostnameResolver)
class StaticResolver:
    """
    A resolver that answers every name with the same addresses, at once.
    """

    def __init__(self, addresses: Sequence[IPv4Address | IPv6Address]) -> None:
        self._addresses = addresses

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: object = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        resolution = _Resolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)
        for address in self._addresses:
            resolutionReceiver.addressResolved(address)
        resolutionReceiver.resolutionComplete()
        return resolution


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        pass


@implementer(IUpstreamConnector)
class DirectConnector:
    """
    Connect straight to the target, to vetted addresses only.

    An IP address target, C{localhost} and names under C{.localhost} need no
    lookup; other names are resolved on L{resolver} for the client of the
    request (see L{requestingClient}).  Every address is checked against
    L{networks}, and the addresses that passed are tried Happy Eyeballs
    style (RFC 8305): the next attempt starts as soon as one fails, or
    after the attempt delay while it is pending.

    The proxy puts one total deadline over the whole attempt and cancels it
    when the client goes away; the per-attempt timeout here is a backstop.

    @ivar networks: The destination network rules; replaced when the
        configuration is reloaded.
    @ivar attemptTimeout: Seconds one connection attempt may take; also
        replaced on reload.
    @ivar resolver: Where names are resolved.
    @ivar outgoing: The local addresses to connect from
        (C{--outgoing-address}); also replaced on reload.
    """

    def __init__(
        self,
        reactor: Any,
        attemptTimeout: float = 30.0,
        networks: NetworkRules | None = None,
        resolver: ResolverPool | None = None,
        attemptDelay: float = ATTEMPT_DELAY,
        clock: IReactorTime | None = None,
        outgoing: OutgoingAddresses | None = None,
    ) -> None:
        """
        @param reactor: The reactor to connect with
            (L{twisted.internet.interfaces.IReactorTCP}).
        @param attemptTimeout: Seconds allowed for one connection attempt.
        @param networks: The destination network rules; the default rules
            (globally routable unicast only) when C{None}.
        @param resolver: Resolves names; when C{None}, a L{ResolverPool}
            with its default bounds over the reactor's name resolver.
        @param attemptDelay: Seconds before the next address is tried while
            an attempt is pending.
        @param clock: Times the attempt delay; C{reactor} when C{None}.
        @param outgoing: The local addresses to connect from; the system
            chooses when C{None}.
        """
        self._reactor = reactor
        self._clock = reactor if clock is None else clock
        self.attemptTimeout = attemptTimeout
        self._attemptDelay = attemptDelay
        self.networks = networks if networks is not None else NetworkRules.fromStrings()
        self.resolver = resolver if resolver is not None else ResolverPool(reactor)
        self.outgoing = outgoing if outgoing is not None else OutgoingAddresses()

    def connectUpstream(
        self, request: ConnectRequest, protocol: IProtocol
    ) -> Deferred[IProtocol]:
        host, port = request.host, request.port
        assert host is not None and port is not None
        addresses = _localAddresses(host, port)
        if addresses is not None:
            return maybeDeferred(self._connectVetted, host, port, addresses, protocol)
        d = self.resolver.resolve(_client.get(), host, port)

        def vetAndConnect(addresses: list[Address]) -> Deferred[IProtocol]:
            return self._connectVetted(host, port, addresses, protocol)

        return d.addCallback(vetAndConnect)

    def _connectVetted(
        self,
        host: str,
        port: int,
        addresses: Sequence[Address],
        protocol: IProtocol,
    ) -> Deferred[IProtocol]:
        """
        Connect to those of C{addresses} the network rules allow.

        @raise DNSLookupError: When there are no addresses.
        @raise ForbiddenDestination: When the rules allow none of them.
        """
        if not addresses:
            raise DNSLookupError(f"no addresses for {host}")
        allowed = []
        refusals = []
        for address in addresses:
            ip = ipaddress.ip_address(address.host)
            if self.networks.allows(ip):
                allowed.append(address)
            else:
                refusals.append(self.networks.explain(ip))
        if not allowed:
            if isIPAddress(host) or isIPv6Address(host):
                raise ForbiddenDestination(refusals[0])
            raise ForbiddenDestination(
                f"{host} resolves to {refusals[0]}".replace(" is ", ", which is ", 1)
            )
        return connectToFirst(
            self._reactor,
            [_withPort(address, port) for address in allowed],
            protocol,
            HostnameAddress(host.encode("ascii", "replace"), port),
            self.attemptTimeout,
            self._attemptDelay,
            self._clock,
            self.outgoing,
        )


def _withPort(address: Address, port: int) -> Address:
    """
    The same address with the requested port (a resolver may not set it).
    """
    if isinstance(address, IPv6Address):
        return IPv6Address("TCP", address.host, port, address.flowInfo, address.scopeID)
    return IPv4Address("TCP", address.host, port)
