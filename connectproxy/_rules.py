# -*- test-case-name: tests.test_rules -*-
"""
The built-in access rules: which ports, destination names and clients the
proxy accepts, and all the built-in rules together (with the destination
network rules of L{connectproxy._networks}).

Everything here is pure computation on values already in hand (a port, an
address, a host name); nothing resolves names or touches the network.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network

from ._hostnames import HostPatternTable, normalizeHost, normalizePattern
from ._networks import IPAddress, IPNetwork, NetworkRules, _parseNetwork, _unmap

__all__ = [
    "DEFAULT_PORTS",
    "AccessRules",
    "ClientRules",
    "HostRules",
    "PortRules",
    "parsePortRange",
]

#: The destination ports allowed when the operator names none.
DEFAULT_PORTS = ("443",)

#: The destination ports allowed to forwarded (plain C{http://}) requests
#: when the operator names none: port 80 besides the tunnels' 443.
DEFAULT_FORWARD_PORTS = ("80", "443")

_PORT_RANGE = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?\Z")


def parsePortRange(text: str) -> tuple[int, int]:
    """
    Parse a port (C{"443"}) or an inclusive port range (C{"8000-8080"}).

    @param text: The operator's text.
    @return: The lowest and highest port of the range.
    @raise ValueError: When C{text} is not a port or a range of ports from 1
        to 65535 with the low end first.
    """
    match = _PORT_RANGE.match(text)
    if match is None:
        raise ValueError(f"invalid port range {text!r}: expected PORT or LOW-HIGH")
    low = int(match.group(1))
    high = low if match.group(2) is None else int(match.group(2))
    if not (1 <= low <= 65535 and 1 <= high <= 65535):
        raise ValueError(f"invalid port range {text!r}: ports go from 1 to 65535")
    if low > high:
        raise ValueError(f"invalid port range {text!r}: {low} is above {high}")
    return low, high


@dataclass(frozen=True, slots=True)
class PortRules:
    """
    The destination ports clients may tunnel to.

    @ivar ranges: Inclusive C{(low, high)} port ranges; a port is allowed
        when it falls in any of them, so no ranges allow nothing.
    @ivar forwardRanges: The ranges for forwarded (plain C{http://})
        requests, or C{None} for the same as C{ranges}: only the defaults
        differ (L{DEFAULT_FORWARD_PORTS}); ports the operator names apply
        to both.
    """

    ranges: tuple[tuple[int, int], ...]
    forwardRanges: tuple[tuple[int, int], ...] | None = None

    @classmethod
    def defaults(cls) -> PortRules:
        """
        @return: The rules when the operator names no port: 443 for
            tunnels, 80 and 443 for forwarded requests.
        """
        return cls(
            tuple(parsePortRange(text) for text in DEFAULT_PORTS),
            tuple(parsePortRange(text) for text in DEFAULT_FORWARD_PORTS),
        )

    @classmethod
    def fromStrings(cls, texts: Iterable[str]) -> PortRules:
        """
        @param texts: Ports and ranges, each as L{parsePortRange} accepts.
        @raise ValueError: When one of them is invalid.
        """
        return cls(tuple(parsePortRange(text) for text in texts))

    def allows(self, port: int, forwarded: bool = False) -> bool:
        """
        @param port: The destination port.
        @param forwarded: Whether the request is a forwarded one (an
            absolute-form C{http://} request) rather than a tunnel.
        @return: Whether C{port} is in one of the ranges.
        """
        ranges = self.ranges
        if forwarded and self.forwardRanges is not None:
            ranges = self.forwardRanges
        return any(low <= port <= high for low, high in ranges)


@dataclass(frozen=True, slots=True)
class HostRules:
    """
    Which destination host names (and IP-literal targets) clients may ask
    for.

    A pattern is an exact name (C{example.com}) or a suffix wildcard
    (C{*.example.com}), matched as L{HostPatternTable} matches: the most
    specific matching pattern decides, an exact name beating any wildcard
    and a longer suffix beating a shorter one; the same pattern both
    allowed and denied is denied.  When no pattern matches, the host is
    denied if there are allow patterns, and allowed if there are only deny
    patterns or none at all.  A host that cannot be normalised is denied.

    @ivar allow: The normalised allow patterns.
    @ivar deny: The normalised deny patterns.
    """

    allow: frozenset[str] = frozenset()
    deny: frozenset[str] = frozenset()
    _table: HostPatternTable[bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        entries = [(pattern, True) for pattern in self.allow]
        entries += [(pattern, False) for pattern in self.deny]
        object.__setattr__(self, "_table", HostPatternTable(entries))

    @classmethod
    def fromStrings(
        cls, *, allow: Iterable[str] = (), deny: Iterable[str] = ()
    ) -> HostRules:
        """
        @param allow: Patterns to allow.
        @param deny: Patterns to deny.
        @raise ValueError: Naming the pattern, when one is empty, contains
            whitespace, is C{*} alone, has C{*} anywhere but as the whole
            first label, wildcards an IP address, or is not a valid name.
        """
        return cls(
            frozenset(normalizePattern(pattern) for pattern in allow),
            frozenset(normalizePattern(pattern) for pattern in deny),
        )

    def check(self, host: str) -> bool:
        """
        @return: Whether the proxy may tunnel to C{host}.
        """
        return self.explain(host) is None

    def explain(self, host: str) -> str | None:
        """
        @return: One line saying why C{host} is denied, or C{None} if it is
            allowed.
        """
        try:
            name = normalizeHost(host)
            found = self._table.match(name)
        except ValueError as error:
            return str(error)
        if found is not None:
            pattern, allowed = found
            return None if allowed else f"{name} is denied by --deny-host {pattern}"
        if self.allow:
            return f"{name} matches no --allow-host pattern"
        return None


#: Clients allowed whatever the operator adds: loopback only.
_DEFAULT_CLIENTS = (IPv4Network("127.0.0.0/8"), IPv6Network("::1/128"))


@dataclass(frozen=True, slots=True)
class ClientRules:
    """
    Which client addresses may use the proxy: loopback, plus the operator's
    networks.  IPv4-mapped client addresses are judged as their IPv4 form.

    Behind a PROXY-protocol listener the client address is what the load
    balancer claims: the balancer's own address must be in
    C{trustedProxies}, and the claimed address must be in the operator's
    networks (loopback is not implicitly allowed there, since anyone who
    can reach the listener could claim it).

    @ivar networks: All allowed networks, the loopback defaults included.
    @ivar operatorNetworks: The operator's networks only.
    @ivar trustedProxies: Where PROXY-protocol headers are believed from;
        loopback by default.
    """

    networks: tuple[IPNetwork, ...] = _DEFAULT_CLIENTS
    operatorNetworks: tuple[IPNetwork, ...] = ()
    trustedProxies: tuple[IPNetwork, ...] = _DEFAULT_CLIENTS

    @classmethod
    def fromStrings(
        cls, *, allow: Iterable[str] = (), trustedProxies: Iterable[str] = ()
    ) -> ClientRules:
        """
        @param allow: CIDR networks or bare addresses to allow besides
            loopback.
        @param trustedProxies: CIDR networks of load balancers whose PROXY
            headers are believed, besides loopback.
        @raise ValueError: Naming the text, when one is not a network.
        """
        operator = tuple(_parseNetwork(text) for text in allow)
        proxies = tuple(_parseNetwork(text) for text in trustedProxies)
        return cls(_DEFAULT_CLIENTS + operator, operator, _DEFAULT_CLIENTS + proxies)

    def allows(self, address: IPAddress) -> bool:
        """
        @return: Whether a client connecting from C{address} may use the
            proxy.
        """
        address = _unmap(address)
        return any(address in network for network in self.networks)

    def trustsProxy(self, balancer: IPAddress) -> bool:
        """
        @param balancer: The address a PROXY header comes from.
        @return: Whether headers from there are believed.
        """
        balancer = _unmap(balancer)
        return any(balancer in network for network in self.trustedProxies)

    def allowsProxied(self, client: IPAddress, balancer: IPAddress) -> bool:
        """
        @param client: The client address a PROXY header claims.
        @param balancer: The address the header came from.
        @return: Whether to serve that client: the balancer is trusted and
            the client is in the operator's networks.
        """
        return self.explainProxied(client, balancer) is None

    def explain(self, address: IPAddress) -> str | None:
        """
        @return: One line saying why a client connecting from C{address} may
            not use the proxy, naming the option to change, or C{None} if it
            may.
        """
        if self.allows(address):
            return None
        return f"client {_unmap(address)} is not allowed (see --allow-client)"

    def explainProxied(self, client: IPAddress, balancer: IPAddress) -> str | None:
        """
        @param client: The client address a PROXY header claims.
        @param balancer: The address the header came from.
        @return: One line saying why that client may not use the proxy,
            naming the option to change, or C{None} if it may.
        """
        balancer = _unmap(balancer)
        client = _unmap(client)
        if not any(balancer in network for network in self.trustedProxies):
            return (
                f"load balancer {balancer} is not a trusted proxy (see --trusted-proxy)"
            )
        if not any(client in network for network in self.operatorNetworks):
            return (
                f"client {client} is not allowed behind a load balancer "
                "(see --allow-client)"
            )
        return None


@dataclass(frozen=True, slots=True)
class AccessRules:
    """
    All the built-in access rules.

    @ivar ports: Allowed destination ports.
    @ivar networks: Allowed destination addresses.
    @ivar hosts: Allowed destination names.
    @ivar clients: Allowed client addresses.
    """

    ports: PortRules
    networks: NetworkRules
    hosts: HostRules
    clients: ClientRules

    @classmethod
    def defaults(cls) -> AccessRules:
        """
        @return: The rules with no operator options: port 443 (and 80 for
            forwarded requests), globally routable destinations, any host
            name, loopback clients.
        """
        return cls(
            PortRules.defaults(),
            NetworkRules.fromStrings(),
            HostRules.fromStrings(),
            ClientRules.fromStrings(),
        )
