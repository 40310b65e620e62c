# -*- test-case-name: tests.test_networks -*-
"""
The destination network rules: which addresses the proxy may connect to.

They are the proxy's guard against server-side request forgery: they must
be applied to every address the proxy actually connects to, after name
resolution, not only to IP-literal targets.  Everything here is pure
computation on addresses already in hand; nothing resolves names or
touches the network.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import TypeAlias

__all__ = ["IPAddress", "IPNetwork", "NetworkRules", "parseAddress"]

IPAddress: TypeAlias = IPv4Address | IPv6Address
IPNetwork: TypeAlias = IPv4Network | IPv6Network

_MAPPED = IPv6Network("::ffff:0:0/96")
_COMPATIBLE = IPv6Network("::/96")
_NAT64 = IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = IPv6Network("64:ff9b:1::/48")
_NETWORK_TYPES: dict[int, type[IPv4Network] | type[IPv6Network]] = {
    4: IPv4Network,
    6: IPv6Network,
}


#: How many addresses L{parseAddress} and each L{NetworkRules} remember: the
#: clients and targets of the moment, bounded so that many different ones
#: cost memory once.
CACHE_SIZE = 4096


@lru_cache(maxsize=CACHE_SIZE)
def parseAddress(text: str) -> IPAddress:
    """
    Parse an IP address, as L{ipaddress.ip_address} does, remembering the
    last L{CACHE_SIZE} (the objects are immutable): a tunnel's client and
    target addresses are parsed once, not at every check.

    @raise ValueError: When C{text} is not an IP address (not remembered).
    """
    return ip_address(text)


def _parseNetwork(text: str) -> IPNetwork:
    """
    Parse a CIDR network or a bare address (a network of one), folding
    networks of IPv4-mapped IPv6 addresses to their IPv4 form.

    @raise ValueError: Naming C{text}, when it is not a network, has bits set
        past its prefix length, or carries an IPv6 zone.
    """
    try:
        if "%" in text:
            raise ValueError("zone identifiers are not allowed")
        network = ip_network(text, strict=True)
    except ValueError as error:
        raise ValueError(f"invalid network {text!r}: {error}") from None
    if isinstance(network, IPv6Network) and network.subnet_of(_MAPPED):
        mapped = network.network_address.ipv4_mapped
        assert mapped is not None
        return IPv4Network((mapped, network.prefixlen - 96))
    return network


def _unmap(address: IPAddress) -> IPAddress:
    """
    @return: The IPv4 address an IPv4-mapped IPv6 address stands for, or
        C{address} itself.
    """
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True, slots=True)
class _Block:
    """
    One entry of the table of destination networks denied by default.

    @ivar network: The denied network.
    @ivar description: What addresses in it are, completing "X is ...".
    @ivar unlessGlobal: Deny only addresses that L{ipaddress} does not
        consider global (for blocks with globally reachable exceptions).
    """

    network: IPNetwork
    description: str
    unlessGlobal: bool = False


def _blocks(*rows: tuple[str, str] | tuple[str, str, bool]) -> tuple[_Block, ...]:
    """
    @param rows: C{(network, description)} or C{(network, description,
        unlessGlobal)} rows.
    @return: The table of L{_Block}s.
    """
    return tuple(_Block(ip_network(row[0]), *row[1:]) for row in rows)


#: Destination networks denied unless an operator rule says otherwise, on
#: top of whatever L{ipaddress} reports as not global, private, reserved,
#: loopback, link-local, multicast or unspecified.  Listed explicitly so the
#: guard does not depend on the Python version's special-purpose registry,
#: and so denials can say why.
_DEFAULT_BLOCKS = _blocks(
    ("0.0.0.0/8", "in the 'this network' block 0.0.0.0/8"),
    ("0.0.0.0/32", "the unspecified address"),
    ("10.0.0.0/8", "a private address (RFC 1918)"),
    ("100.64.0.0/10", "a carrier-grade NAT address (RFC 6598)"),
    ("127.0.0.0/8", "a loopback address"),
    ("169.254.0.0/16", "a link-local address"),
    ("172.16.0.0/12", "a private address (RFC 1918)"),
    ("192.0.0.0/24", "an IETF protocol assignment (192.0.0.0/24)"),
    ("192.0.2.0/24", "a documentation address (RFC 5737)"),
    ("192.88.99.0/24", "a 6to4 relay anycast address (RFC 7526)"),
    ("192.168.0.0/16", "a private address (RFC 1918)"),
    ("198.18.0.0/15", "a benchmarking address (RFC 2544)"),
    ("198.51.100.0/24", "a documentation address (RFC 5737)"),
    ("203.0.113.0/24", "a documentation address (RFC 5737)"),
    ("224.0.0.0/4", "a multicast address"),
    ("240.0.0.0/4", "a reserved address (240.0.0.0/4)"),
    ("255.255.255.255/32", "the broadcast address"),
    ("::/128", "the unspecified address"),
    ("::1/128", "a loopback address"),
    ("::/96", "an IPv4-compatible address (deprecated)"),
    ("64:ff9b:1::/48", "a local-use NAT64 address (RFC 8215)"),
    ("100::/64", "a discard-only address (RFC 6666)"),
    ("2001::/23", "an IETF protocol assignment (2001::/23)", True),
    ("2001::/32", "a Teredo address"),
    ("2001:db8::/32", "a documentation address (RFC 3849)"),
    ("3fff::/20", "a documentation address (RFC 9637)"),
    ("5f00::/16", "a segment routing SID (RFC 9602)"),
    ("fc00::/7", "a unique local address"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a site-local address (deprecated)"),
    ("ff00::/8", "a multicast address"),
)


def _defaultDenial(address: IPAddress) -> str | None:
    """
    Apply the default destination rule: only globally routable unicast.

    @param address: Not an IPv4-mapped address.
    @return: Why C{address} is denied ("is ..."), or C{None} if it passes.
    """
    blocks = [
        block
        for block in _DEFAULT_BLOCKS
        if address in block.network and not (block.unlessGlobal and address.is_global)
    ]
    if blocks:
        return max(blocks, key=lambda block: block.network.prefixlen).description
    if address in _NAT64:
        # Python counts 64:ff9b::/96 in the reserved ::/8, but IANA lists it
        # as globally reachable; the embedded IPv4 address is judged instead.
        return None
    for flag, description in [
        (address.is_loopback, "a loopback address"),
        (address.is_unspecified, "the unspecified address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address.is_private, "a private address"),
        (address.is_reserved, "a reserved address"),
        (not address.is_global, "not a globally routable address"),
    ]:
        if flag:
            return description
    return None


def _embeddedIPv4(address: IPv6Address) -> tuple[IPv4Address, ...]:
    """
    @return: The IPv4 addresses that packets to C{address} may end up at
        through a translator or tunnel: NAT64 (the last 32 bits, also for
        the local-use prefix 64:ff9b:1::/48), 6to4, Teredo (server and
        client) or IPv4-compatible.
    """
    if address in _NAT64 or address in _NAT64_LOCAL:
        return (IPv4Address(int(address) & 0xFFFFFFFF),)
    if address.sixtofour is not None:
        return (address.sixtofour,)
    if address.teredo is not None:
        return address.teredo
    if address in _COMPATIBLE and int(address) > 1:
        return (IPv4Address(int(address)),)
    return ()


@dataclass(frozen=True, slots=True)
class NetworkRules:
    """
    Which destination addresses the proxy may connect to.

    Operator rules come first: of the operator's networks (allowed and
    denied) that contain the address, the one with the longest prefix
    decides, and at equal prefix length a denial wins.  When none contains
    it, the default applies: only globally routable unicast addresses pass
    (see L{_DEFAULT_BLOCKS}).

    An IPv4-mapped address (C{::ffff:a.b.c.d}) is judged exactly as its IPv4
    address.  A NAT64, 6to4, Teredo or IPv4-compatible address passes only
    if both it and every IPv4 address embedded in it pass.

    @ivar allow: The operator's allowed networks.
    @ivar deny: The operator's denied networks.
    """

    allow: tuple[IPNetwork, ...] = ()
    deny: tuple[IPNetwork, ...] = ()
    _index: dict[IPNetwork, tuple[bool, str]] = field(
        init=False, repr=False, compare=False
    )
    _lengths: dict[int, tuple[int, ...]] = field(init=False, repr=False, compare=False)
    # Verdicts already reached (the rules never change), at most CACHE_SIZE.
    _verdicts: dict[IPAddress, tuple[bool, str]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        index: dict[IPNetwork, tuple[bool, str]] = {}
        for network in self.allow:
            index[network] = (True, f"allowed by --allow-network {network}")
        for network in self.deny:
            index[network] = (False, f"denied by --deny-network {network}")
        lengths = {
            version: tuple(
                sorted(
                    {n.prefixlen for n in index if n.version == version}, reverse=True
                )
            )
            for version in (4, 6)
        }
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_lengths", lengths)
        object.__setattr__(self, "_verdicts", {})

    @classmethod
    def fromStrings(
        cls, *, allow: Iterable[str] = (), deny: Iterable[str] = ()
    ) -> NetworkRules:
        """
        @param allow: CIDR networks or bare addresses to allow.
        @param deny: CIDR networks or bare addresses to deny.
        @raise ValueError: Naming the text, when one is not a network or has
            host bits set (C{10.0.0.1/8}).
        """
        return cls(
            tuple(_parseNetwork(text) for text in allow),
            tuple(_parseNetwork(text) for text in deny),
        )

    def allows(self, address: IPAddress) -> bool:
        """
        @return: Whether the proxy may connect to C{address}.
        """
        return self._judge(address)[0]

    def explain(self, address: IPAddress) -> str:
        """
        @return: One line saying why C{address} is denied (or allowed), for
            the client and the log, naming the option that decides: for
            example C{"127.0.0.1 is a loopback address, not allowed by
            default (see --allow-network)"} or C{"10.1.2.3 is denied by
            --deny-network 10.0.0.0/8"}.
        """
        return self._judge(address)[1]

    def _judge(self, address: IPAddress) -> tuple[bool, str]:
        """
        @return: The verdict on C{address} and its one-line reason,
            remembered for the next time.
        """
        verdicts = self._verdicts
        verdict = verdicts.get(address)
        if verdict is None:
            if len(verdicts) >= CACHE_SIZE:
                verdicts.clear()
            verdict = verdicts[address] = self._judgeNow(address)
        return verdict

    def _judgeNow(self, address: IPAddress) -> tuple[bool, str]:
        """
        @return: The verdict on C{address} and its one-line reason.
        """
        unmapped = _unmap(address)
        if unmapped is not address:
            verdict, reason, byDefault = self._judgeOne(unmapped)
            reason = f"{reason}, IPv4-mapped as ::ffff:{unmapped}"
        else:
            verdict, reason, byDefault = self._judgeOne(address)
            if verdict and isinstance(address, IPv6Address):
                for embedded in _embeddedIPv4(address):
                    verdict, reason, byDefault = self._judgeOne(embedded)
                    reason = f"{reason}, embedded in {address}"
                    if not verdict:
                        break
        if not verdict and byDefault:
            reason += ", not allowed by default (see --allow-network)"
        return verdict, reason

    def _judgeOne(self, address: IPAddress) -> tuple[bool, str, bool]:
        """
        Judge one address by the operator rules, then the default, without
        looking at embedded IPv4 addresses.

        @return: The verdict, its reason, and whether the default decided.
        """
        for length in self._lengths[address.version]:
            network = _NETWORK_TYPES[address.version]((int(address), length), False)
            if network in self._index:
                verdict, reason = self._index[network]
                return verdict, f"{address} is {reason}", False
        denial = _defaultDenial(address)
        if denial is None:
            return True, f"{address} is a globally routable address", True
        return False, f"{address} is {denial}", True
