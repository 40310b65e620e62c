# -*- test-case-name: tests.test_upstream -*-
"""
Upstream connectors: how the proxy reaches the target of a CONNECT.

The direct connector resolves the target first, checks every address
against the destination network rules, and connects only to the addresses
that passed, so a name cannot lead the proxy somewhere the rules forbid, DNS
rebinding included.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
)
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import (
    IAddress,
    IHostnameResolver,
    IHostResolution,
    IProtocol,
    IReactorPluggableNameResolver,
    IResolutionReceiver,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory
from zope.interface import implementer

from ._parser import ConnectRequest
from ._policy import NetworkRules
from .interfaces import IUpstreamConnector

__all__ = [
    "DirectConnector",
    "ForbiddenDestination",
    "StaticResolver",
    "connectQuietly",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


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


@implementer(IResolutionReceiver)
class _Collector:
    """
    Collects the addresses of one name resolution into a Deferred.
    """

    def __init__(self) -> None:
        self.addresses: list[IPv4Address | IPv6Address] = []
        self.deferred: Deferred[list[IPv4Address | IPv6Address]] = Deferred(
            lambda d: None
        )

    def resolutionBegan(self, resolutionInProgress: IHostResolution) -> None:
        pass

    def addressResolved(self, address: IAddress) -> None:
        if isinstance(address, IPv4Address | IPv6Address):
            self.addresses.append(address)

    def resolutionComplete(self) -> None:
        if not self.deferred.called:
            self.deferred.callback(self.addresses)


@implementer(IHostnameResolver)
class StaticResolver:
    """
    A resolver that answers every name with the same addresses, at once:
    the addresses that passed the rules, for a L{HostnameEndpoint}.
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


@implementer(IReactorPluggableNameResolver)
class _ReactorWithResolver:
    """
    The reactor, seen through a different name resolver: lets a
    L{HostnameEndpoint} try vetted addresses in Happy Eyeballs order.
    """

    def __init__(self, reactor: Any, resolver: IHostnameResolver) -> None:
        self._reactor = reactor
        self.nameResolver = resolver

    def installNameResolver(self, resolver: IHostnameResolver) -> IHostnameResolver:
        raise NotImplementedError("a vetted resolver cannot be replaced")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


@implementer(IUpstreamConnector)
class DirectConnector:
    """
    Connect straight to the target, to vetted addresses only.

    An IP address target is checked and connected to directly.  A name is
    resolved through the reactor's resolver; every address is checked
    against L{networks}, and a L{HostnameEndpoint} tries the addresses that
    passed in Happy Eyeballs order (RFC 8305).

    The proxy puts one total deadline over the whole attempt and cancels it
    when the client goes away; the per-attempt timeout here is a backstop.

    @ivar networks: The destination network rules; replaced when the
        configuration is reloaded.
    @ivar attemptTimeout: Seconds one connection attempt may take; also
        replaced on reload.
    """

    def __init__(
        self,
        reactor: Any,
        attemptTimeout: float = 30.0,
        networks: NetworkRules | None = None,
    ) -> None:
        """
        @param reactor: The reactor to resolve and connect with.
        @param attemptTimeout: Seconds allowed for one connection attempt.
        @param networks: The destination network rules; the default rules
            (globally routable unicast only) when C{None}.
        """
        self._reactor = reactor
        self.attemptTimeout = attemptTimeout
        self.networks = networks if networks is not None else NetworkRules.fromStrings()

    def connectUpstream(
        self, request: ConnectRequest, protocol: IProtocol
    ) -> Deferred[IProtocol]:
        host, port = request.host, request.port
        assert host is not None and port is not None
        if isIPAddress(host) or isIPv6Address(host):
            return maybeDeferred(self._connectAddress, host, port, protocol)
        collector = _Collector()
        self._reactor.nameResolver.resolveHostName(collector, host, port)
        d = collector.deferred

        def vetAndConnect(
            addresses: list[IPv4Address | IPv6Address],
        ) -> Deferred[IProtocol]:
            return self._connectVetted(host, port, addresses, protocol)

        return d.addCallback(vetAndConnect)

    def _connectAddress(
        self, host: str, port: int, protocol: IProtocol
    ) -> Deferred[IProtocol]:
        address = ipaddress.ip_address(host)
        if not self.networks.allows(address):
            raise ForbiddenDestination(self.networks.explain(address))
        endpoint: IStreamClientEndpoint
        if address.version == 4:
            endpoint = TCP4ClientEndpoint(
                self._reactor, host, port, timeout=self.attemptTimeout
            )
        else:
            endpoint = TCP6ClientEndpoint(
                self._reactor, host, port, timeout=self.attemptTimeout
            )
        return connectQuietly(endpoint, protocol)

    def _connectVetted(
        self,
        host: str,
        port: int,
        addresses: list[IPv4Address | IPv6Address],
        protocol: IProtocol,
    ) -> Deferred[IProtocol]:
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
            raise ForbiddenDestination(
                f"{host} resolves to {refusals[0]}".replace(" is ", ", which is ", 1)
            )
        # The name has been resolved: HostnameEndpoint gets an address as its
        # host (it would refuse names IDNA 2008 does not allow, such as ones
        # with underscores) and the vetted addresses from its resolver.
        endpoint = HostnameEndpoint(
            _ReactorWithResolver(self._reactor, StaticResolver(allowed)),
            allowed[0].host,
            port,
            timeout=self.attemptTimeout,
        )
        return connectQuietly(endpoint, protocol)
