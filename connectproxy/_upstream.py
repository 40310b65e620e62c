# -*- test-case-name: tests.test_upstream -*-
"""
Upstream connectors: how the proxy reaches the target of a CONNECT.

The direct connector resolves the target first (on a L{ResolverPool}, with
a share per client), checks every address against the destination network
rules, and connects only to the addresses that passed (L{VettedResolver}),
so a name cannot lead the proxy somewhere the rules forbid, DNS rebinding
included.  The addresses are tried Happy Eyeballs style (L{connectToFirst}).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from twisted.internet.address import HostnameAddress, IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import (
    IAddress,
    IHostnameResolver,
    IHostResolution,
    IProtocol,
    IReactorTime,
    IResolutionReceiver,
)
from twisted.internet.protocol import Factory
from twisted.plugin import IPlugin
from twisted.python.versions import getVersionString
from zope.interface import implementer

from ._connector import ConnectorContext, UpstreamRequest
from ._deprecation import DEPRECATED_IN
from ._errors import ForbiddenDestination
from ._eyeballs import ATTEMPT_DELAY, connectToFirst
from ._networks import NetworkRules
from ._outgoing import OutgoingAddresses
from ._parser import RequestHead
from ._resolver import ResolverPool
from ._vetting import VettedResolver
from .interfaces import IUpstreamConnector, IUpstreamConnectorFactory

__all__ = [
    "DirectConnector",
    "DirectConnectorFactory",
    "ForbiddenDestination",
    "StaticResolver",
]

Address = IPv4Address | IPv6Address


class _OneProtocolFactory(Factory):
    """
    Hands out one ready-made protocol, without logging each start and stop.
    """

    noisy = False

    def __init__(self, protocol: IProtocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: IAddress) -> IProtocol:  # type: ignore[override]
        return self._protocol


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
    lookup; other names are resolved on L{resolver}, on the share of the
    target's client.  Every address is checked against L{networks}, and the
    addresses that passed are tried Happy Eyeballs style (RFC 8305): the
    next attempt starts as soon as one fails, or after the attempt delay
    while it is pending.

    The proxy puts one total deadline over the whole attempt and cancels it
    when the client goes away; the per-attempt timeout here is a backstop,
    left out (no timer per attempt) when C{perAttemptTimer} is false.

    @ivar networks: The destination network rules; replaced when the
        configuration is reloaded.
    @ivar attemptTimeout: Seconds one connection attempt may take; also
        replaced on reload.
    @ivar resolver: Where names are resolved.
    @ivar outgoing: The local addresses to connect from
        (C{--outgoing-address}).
    @ivar perAttemptTimer: Whether each attempt is timed on its own
        (C{attemptTimeout}); false when the caller keeps a deadline over
        every connect that is no longer, as the proxy does with
        C{--connect-timeout}.
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
        perAttemptTimer: bool = True,
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
        @param perAttemptTimer: Whether to time each attempt with
            C{attemptTimeout}; C{False} saves a timer per attempt when the
            caller's own deadline over the connect is no longer.
        """
        self._reactor = reactor
        self.perAttemptTimer = perAttemptTimer
        self._clock = reactor if clock is None else clock
        self.attemptTimeout = attemptTimeout
        self._attemptDelay = attemptDelay
        self.networks = networks if networks is not None else NetworkRules.fromStrings()
        self.resolver = resolver if resolver is not None else ResolverPool(reactor)
        self.outgoing = outgoing if outgoing is not None else OutgoingAddresses()

    def connectUpstream(
        self, target: UpstreamRequest, protocol: IProtocol
    ) -> Deferred[IProtocol]:
        """
        Connect C{protocol} to the vetted addresses of C{target}.

        @param target: The target; passing the parsed L{RequestHead}
            instead, as plugin API version 1 did, is deprecated (the
            lookup then counts against no client's share).
        """
        if isinstance(target, RequestHead):
            target = _fromVersion1(target)
        host, port = target.host, target.port
        resolver = VettedResolver(self.networks, self.resolver)
        attemptTimeout = self.attemptTimeout if self.perAttemptTimer else None

        def connect(addresses: list[Address]) -> Deferred[IProtocol]:
            return connectToFirst(
                self._reactor,
                addresses,
                protocol,
                HostnameAddress(host.encode("ascii", "replace"), port),
                attemptTimeout,
                self._attemptDelay,
                self._clock,
                self.outgoing,
            )

        try:
            literal = resolver.vetLiteral(host, port)
            if literal is not None:
                # An IP-literal target (or localhost): nothing to wait for.
                return connect(literal)
        except Exception:
            return fail()
        return resolver.resolve(target.clientHost, host, port).addCallback(connect)


def _fromVersion1(request: RequestHead) -> UpstreamRequest:
    """
    The target of a request given the way plugin API version 1 did, with a
    deprecation warning for the caller of C{connectUpstream}.
    """
    warnings.warn(
        "Passing the parsed request (a RequestHead) to "
        "connectproxy.DirectConnector.connectUpstream "
        f"was deprecated in {getVersionString(DEPRECATED_IN)}; please pass "
        "a connectproxy.UpstreamRequest instead",
        DeprecationWarning,
        stacklevel=3,
    )
    assert request.host is not None and request.port is not None
    return UpstreamRequest(request.host, request.port, None, None, request)


@implementer(IPlugin, IUpstreamConnectorFactory)
class DirectConnectorFactory:
    """
    The C{direct} connector plugin, the default C{--upstream}: a
    L{DirectConnector} with the proxy's network rules and resolver pool,
    and the connect timeout as its attempt timeout; no timer per attempt,
    since the proxy's connect deadline (the same timeout, started before
    the connect) covers every attempt.
    """

    name = "direct"
    description = (
        "Connect straight to the target, to the addresses the destination "
        "network rules allow, Happy Eyeballs style (the default)."
    )

    def connectorFromArgument(
        self, argument: str, context: ConnectorContext
    ) -> DirectConnector:
        """
        @raise ValueError: When given an argument: it takes none.
        """
        if argument:
            raise ValueError("direct takes no argument: --upstream direct")
        return DirectConnector(
            context.reactor,
            context.settings.connectTimeout,
            context.networks,
            context.resolverPool,
            outgoing=context.settings.outgoingAddresses,
            perAttemptTimer=False,
        )
