# -*- test-case-name: tests.test_vetting -*-
"""
Destination vetting: the proxy's guard against server-side request forgery,
as a piece any upstream connector can apply.

The destination network rules (L{NetworkRules}) must be applied to every
address the proxy actually connects to, after name resolution, not only to
IP-literal targets, so that a name cannot lead the proxy somewhere the
rules forbid (DNS rebinding included).  L{vetAddresses} applies them to a
list of addresses; L{VettedResolver} resolves a name on a L{ResolverPool}
and vets the result.  A connector that lets another host resolve the name
(a parent proxy) cannot vet names, and chooses with
L{VettedResolver.vetLiteral} whether IP-literal targets are vetted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import DNSLookupError

from ._errors import ForbiddenDestination
from ._networks import NetworkRules, parseAddress
from ._resolver import ResolverPool

__all__ = ["VettedResolver", "literalAddresses", "vetAddresses"]

Address: TypeAlias = IPv4Address | IPv6Address


def literalAddresses(host: str, port: int) -> list[Address] | None:
    """
    The addresses of a target that needs no lookup: an IP address, or
    C{localhost} and names under C{.localhost}, which are always the
    loopback addresses (RFC 6761 section 6.3), IPv6 first (RFC 6724).

    @param host: The target host (an IPv6 address without brackets).
    @param port: The target port.
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


def vetAddresses(
    networks: NetworkRules, host: str, addresses: Sequence[Address]
) -> list[Address]:
    """
    Keep the addresses the destination network rules allow.

    @param networks: The destination network rules.
    @param host: The target host the addresses are for (a name, or the IP
        address itself), for the reason of a refusal.
    @param addresses: The target's addresses, in the order to try them.
    @return: The allowed addresses, in the same order; never empty.
    @raise DNSLookupError: When C{addresses} is empty (the proxy answers
        502).
    @raise ForbiddenDestination: When the rules allow none of them (403),
        with a reason that names the first address, what it is and the
        option that would allow it.
    """
    if not addresses:
        raise DNSLookupError(f"no addresses for {host}")
    allowed = []
    refusals = []
    for address in addresses:
        ip = parseAddress(address.host)
        if networks.allows(ip):
            allowed.append(address)
        else:
            refusals.append(networks.explain(ip))
    if not allowed:
        if isIPAddress(host) or isIPv6Address(host):
            raise ForbiddenDestination(refusals[0])
        raise ForbiddenDestination(
            f"{host} resolves to {refusals[0]}".replace(" is ", ", which is ", 1)
        )
    return allowed


def _withPort(address: Address, port: int) -> Address:
    """
    The same address with the requested port (a resolver may not set it).
    """
    if isinstance(address, IPv6Address):
        return IPv6Address("TCP", address.host, port, address.flowInfo, address.scopeID)
    return IPv4Address("TCP", address.host, port)


@dataclass(frozen=True, slots=True)
class VettedResolver:
    """
    Resolves a target to the addresses the destination network rules
    allow.

    @ivar networks: The destination network rules.
    @ivar pool: Where names are resolved, on the share of the client asking.
    """

    networks: NetworkRules
    pool: ResolverPool

    def vetLiteral(self, host: str, port: int) -> list[Address] | None:
        """
        Vet a target that needs no lookup (see L{literalAddresses}).

        @return: Its allowed addresses, or C{None} when C{host} is a name
            that needs a lookup.
        @raise ForbiddenDestination: When the rules allow none of them.
        """
        addresses = literalAddresses(host, port)
        if addresses is None:
            return None
        return vetAddresses(self.networks, host, addresses)

    def resolve(self, client: str, host: str, port: int) -> Deferred[list[Address]]:
        """
        Resolve C{host} (unless it needs no lookup) and vet its addresses.

        @param client: The client asking (its IP address as text, C{""} for
            a UNIX socket client): the lookup counts against its share of
            the pool.
        @param host: The target host.
        @param port: The target port.
        @return: A Deferred firing with the allowed addresses, each with
            C{port}, in the resolver's order; or failing with
            L{ForbiddenDestination}, L{DNSLookupError} (no addresses), or
            whatever the pool failed with.  Cancelling it cancels the
            lookup (see L{ResolverPool.resolve}).
        """
        try:
            literal = self.vetLiteral(host, port)
        except Exception:
            return fail()
        if literal is not None:
            return succeed(literal)

        def vet(addresses: list[Address]) -> list[Address]:
            allowed = vetAddresses(self.networks, host, addresses)
            return [_withPort(address, port) for address in allowed]

        return self.pool.resolve(client, host, port).addCallback(vet)
