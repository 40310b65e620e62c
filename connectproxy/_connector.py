# -*- test-case-name: tests.test_connector -*-
"""
The record an upstream connector receives: L{UpstreamRequest}.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress
from twisted.python.versions import Version, getVersionString

from ._parser import ConnectRequest

__all__ = ["UpstreamRequest"]

#: The release that deprecates what API version 2 replaces.
DEPRECATED_IN = Version("connectproxy", 0, 2, 0)

# What a version-1 connector could read on the ConnectRequest it was given,
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
    request: ConnectRequest

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
