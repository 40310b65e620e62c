# -*- test-case-name: tests.test_routing -*-
"""
Routes: which connector reaches which target.  L{RoutingConnector} chooses
one per request by the target's host name, the most specific matching
pattern first (as C{--allow-host} patterns match); L{ParentRoutes} is what
C{--upstream-proxy}, C{--upstream-route} and C{--upstream-ca} describe, and
makes the connector from them at start and at every reload.

    --upstream-proxy http://parent.example:3128
    --upstream-route '*.internal.example=direct'
    --upstream-route 'partner.example=https://gw.partner.example:3129'

Like tinyproxy's C{upstream http parent:3128 ".example.com"} and
C{upstream none ".internal.example"}.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocol
from zope.interface import implementer

from ._connector import ConnectorContext, ConnectorMaker, UpstreamRequest
from ._hostnames import HostPatternTable, normalizePattern
from ._parent import ParentProxyConnector
from ._parenturl import ParentProxy, loadTrustRoot
from ._upstream import DirectConnectorFactory
from .interfaces import IUpstreamConnector

__all__ = ["DIRECT", "ParentRoutes", "RoutingConnector", "parseRoute"]

#: The word that routes a pattern to the direct connector.
DIRECT = "direct"


@implementer(IUpstreamConnector)
class RoutingConnector:
    """
    Send each request to the connector of the most specific route pattern
    that matches its target host, or to the default connector when none
    does.

    Patterns are those of C{--allow-host}: an exact name or IP address, or
    C{*.example.com} for every name below C{example.com}; an exact name
    beats a wildcard, a longer wildcard a shorter one, and wildcards never
    match IP addresses.

    @ivar routes: The patterns and their connectors.
    @ivar default: The connector for targets no pattern matches.
    """

    def __init__(
        self,
        routes: Iterable[tuple[str, IUpstreamConnector]],
        default: IUpstreamConnector,
    ) -> None:
        """
        @param routes: C{(pattern, connector)} pairs.
        @param default: The connector for the other targets.
        @raise ValueError: Naming the pattern, when one is not valid.
        """
        self.routes: HostPatternTable[IUpstreamConnector] = HostPatternTable(routes)
        self.default = default

    def connectorFor(self, host: str) -> IUpstreamConnector:
        """
        @param host: A target host, normalised.
        @return: The connector that reaches it.
        """
        found = self.routes.match(host)
        return self.default if found is None else found[1]

    def connectUpstream(
        self, target: UpstreamRequest, protocol: IProtocol
    ) -> Deferred[IProtocol]:
        """
        Connect through the connector of C{target.host}'s route.
        """
        return self.connectorFor(target.host).connectUpstream(target, protocol)

    def forwardVia(self, target: UpstreamRequest) -> ParentProxy | None:
        """
        The parent proxy plain HTTP requests for C{target} go to: its
        route's, or C{None} for a direct route (or a connector without
        parents).
        """
        via = getattr(self.connectorFor(target.host), "forwardVia", None)
        return None if via is None else cast(ParentProxy | None, via(target))

    def connectForwarding(
        self, target: UpstreamRequest, protocol: IProtocol
    ) -> Deferred[IProtocol]:
        """
        Connect to the parent of C{target}'s route (L{forwardVia} named
        one).
        """
        connector = self.connectorFor(target.host)
        return cast(
            "Deferred[IProtocol]",
            connector.connectForwarding(target, protocol),  # type: ignore[attr-defined]
        )


def parseRoute(text: str) -> tuple[str, ParentProxy | None]:
    """
    Parse one C{--upstream-route}: C{PATTERN=URL} or C{PATTERN=direct}.

    @return: The pattern, normalised, and the parent, or C{None} for
        C{direct}.
    @raise ValueError: Saying what is wrong, without repeating the URL (it
        may hold a password).
    """
    pattern, equals, where = text.partition("=")
    if not equals:
        raise ValueError("expected PATTERN=URL or PATTERN=direct")
    pattern = normalizePattern(pattern.strip())
    where = where.strip()
    if where.lower() == DIRECT:
        return pattern, None
    try:
        return pattern, ParentProxy.fromURL(where)
    except ValueError as e:
        raise ValueError(f"the route for {pattern}: {e}") from None


@dataclass(frozen=True, slots=True)
class ParentRoutes:
    """
    The parent proxies the options name, and for which targets.

    @ivar proxy: The parent for every target no route names
        (C{--upstream-proxy}), or C{None} for the C{--upstream} connector.
    @ivar routes: C{(pattern, parent)} pairs (C{--upstream-route}); a
        C{None} parent means C{direct}.
    @ivar caFile: The PEM file of the CA certificates trusted for
        C{https://} parents (C{--upstream-ca}), or C{None} for the system's.
    """

    proxy: ParentProxy | None = None
    routes: tuple[tuple[str, ParentProxy | None], ...] = ()
    caFile: str | None = None

    @classmethod
    def fromOptions(
        cls, proxy: str | None, routes: Sequence[str], caFile: str | None
    ) -> ParentRoutes | None:
        """
        @param proxy: The C{--upstream-proxy} URL, or C{None}.
        @param routes: The C{--upstream-route} values.
        @param caFile: The C{--upstream-ca} file, or C{None}.
        @return: The routes, or C{None} when the options name no parent
            and no route (the C{--upstream} connector alone then).
        @raise ValueError: Naming the option, when a value is not valid or
            a pattern is routed twice.
        """
        if proxy is None and not routes and caFile is None:
            return None
        try:
            parent = None if proxy is None else ParentProxy.fromURL(proxy)
        except ValueError as e:
            raise ValueError(f"--upstream-proxy: {e}") from None
        parsed: dict[str, ParentProxy | None] = {}
        for text in routes:
            try:
                pattern, where = parseRoute(text)
            except ValueError as e:
                raise ValueError(f"--upstream-route: {e}") from None
            if pattern in parsed:
                raise ValueError(f"--upstream-route: {pattern} is routed twice")
            parsed[pattern] = where
        return cls(parent, tuple(parsed.items()), caFile)

    def maker(self, fallback: ConnectorMaker) -> ConnectorMaker:
        """
        What makes the connector, from a L{ConnectorContext}: a
        L{ParentProxyConnector} per parent, the direct connector for
        C{direct} routes, and C{fallback}'s connector for targets that
        neither C{--upstream-proxy} nor a route covers.

        @param fallback: Makes the C{--upstream} connector.
        @return: The maker; it reads the C{--upstream-ca} file each time
            (at start, and at every reload), and raises L{ValueError}
            naming the option when it cannot.
        """

        def make(context: ConnectorContext) -> IUpstreamConnector:
            trustRoot = None
            if self.caFile is not None:
                try:
                    trustRoot = loadTrustRoot(self.caFile)
                except ValueError as e:
                    raise ValueError(f"--upstream-ca: {e}") from None
            connectors: dict[ParentProxy, ParentProxyConnector] = {}

            def through(parent: ParentProxy) -> ParentProxyConnector:
                if parent not in connectors:
                    connectors[parent] = ParentProxyConnector(
                        context.reactor,
                        parent,
                        context.settings.connectTimeout,
                        context.networks,
                        context.resolverPool,
                        trustRoot,
                        outgoing=context.settings.outgoingAddresses,
                    )
                return connectors[parent]

            default = fallback(context) if self.proxy is None else through(self.proxy)
            if not self.routes:
                return default
            direct = DirectConnectorFactory().connectorFromArgument("", context)
            return RoutingConnector(
                [
                    (pattern, direct if parent is None else through(parent))
                    for pattern, parent in self.routes
                ],
                default,
            )

        return make
