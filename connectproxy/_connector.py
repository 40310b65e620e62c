# -*- test-case-name: tests.test_connector -*-
"""
What upstream connectors receive: L{UpstreamRequest} for each request, and
L{ConnectorContext} when a connector plugin makes one.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress
from twisted.python.versions import getVersionString

from ._deprecation import DEPRECATED_IN
from ._networks import NetworkRules
from ._parser import RequestHead
from ._resolver import ResolverPool
from ._settings import ProxySettings

if TYPE_CHECKING:
    from .interfaces import IUpstreamConnector

__all__ = ["ConnectorContext", "ConnectorMaker", "UpstreamRequest"]


# What a version-1 connector could read on the parsed request it was given,
# besides host and port.
_REQUEST_ATTRIBUTES = frozenset(
    ["authority", "getHeader", "headers", "method", "target", "version"]
)


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """
    What an upstream connector is asked to connect to, and for whom.  Built
    once per admitted request, after authentication and the access checks.

    A connector written for plugin API version 1 read C{request.host} and
    C{request.port} on the parsed request; it reads the same names here,
    so it works unchanged.

    @ivar host: The target host, normalised as the host rules and access
        policies saw it: a lower-cased name with IDNA A-labels and no
        trailing dot, or an IP address in canonical form (IPv6 without
        brackets, IPv4-mapped IPv6 as IPv4).
    @ivar port: The target port, 1-65535.
    @ivar user: The authenticated user name, or C{None} without
        authentication.
    @ivar client: The client's address as the proxy sees it: behind a
        PROXY-protocol listener, the client the header claims.  An
        L{IPv4Address} or L{IPv6Address}, or for a UNIX socket client a
        L{twisted.internet.address.UNIXAddress}; C{None} when unknown.
    @ivar request: The whole parsed request head (its header fields, for
        example).
    """

    host: str
    port: int
    user: str | None
    client: IAddress | None
    request: RequestHead

    @property
    def clientHost(self) -> str:
        """
        The client's IP address as text, or C{""} for a client without one
        (a UNIX socket client): what the resolver pool's per-client share
        counts by.
        """
        client = self.client
        if isinstance(client, IPv4Address | IPv6Address):
            return client.host
        return ""

    def __getattr__(self, name: str) -> Any:
        """
        Let a version-1 connector read what else it could read on the
        parsed request, with a deprecation warning.
        """
        if name not in _REQUEST_ATTRIBUTES:
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r}"
            )
        warnings.warn(
            f"connectproxy.UpstreamRequest.{name} was deprecated in "
            f"{getVersionString(DEPRECATED_IN)}; please use "
            f"UpstreamRequest.request.{name} instead",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(self.request, name)


@dataclass(frozen=True, slots=True)
class ConnectorContext:
    """
    What a connector plugin builds its connector from
    (L{connectproxy.interfaces.IUpstreamConnectorFactory}): the proxy's
    reactor, settings, destination network rules and resolver pool.  A new
    context is given at every reload.

    @ivar reactor: The reactor to connect with and to take time from
        (L{twisted.internet.interfaces.IReactorTCP},
        L{twisted.internet.interfaces.IReactorTime}); a memory reactor in tests.
    @ivar settings: The proxy's tunables; C{settings.connectTimeout} is the
        proxy's own total deadline over each connect.
    @ivar networks: The destination network rules (C{--allow-network},
        C{--deny-network}), for L{connectproxy.vetAddresses} and
        L{connectproxy.VettedResolver}.
    @ivar resolverPool: The proxy's name resolver pool, shared by every
        connector it makes and resized on reload.
    """

    reactor: Any
    settings: ProxySettings
    networks: NetworkRules
    resolverPool: ResolverPool


#: Makes a connector from a context: what C{--upstream} stands for.
ConnectorMaker: TypeAlias = Callable[[ConnectorContext], "IUpstreamConnector"]
