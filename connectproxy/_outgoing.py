# -*- test-case-name: tests.test_outgoing -*-
"""
Where upstream connections come from: L{OutgoingAddresses}, the local
addresses of C{--outgoing-address} (squid's C{tcp_outgoing_address},
tinyproxy's C{Bind}), at most one per address family.

When any is given, every upstream connection is made from the one of its
family, and a target's addresses of a family without one are not tried:
an operator who names the address the proxy connects from (for a firewall
rule or an allowlist at the destination) expects no connection from any
other address.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.logger import Logger

__all__ = ["OutgoingAddresses", "warnUnbindable"]

_log = Logger()

_FAMILIES = {4: "IPv4", 6: "IPv6"}


def _parse(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """
    Check one C{--outgoing-address} value.

    @raise ValueError: When C{text} is not an IP address the proxy could
        connect from.
    """
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an IP address (give an address of this "
            "machine, like 192.0.2.10 or 2001:db8::10, not a name)"
        ) from None
    if address.is_unspecified:
        raise ValueError(
            f"{text} is the unspecified address; leave --outgoing-address "
            "out to let the system choose"
        )
    if address.is_multicast:
        raise ValueError(f"{text} is a multicast address")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        raise ValueError(
            f"{text} is an IPv4-mapped address; give {address.ipv4_mapped}"
        )
    return address


@dataclass(frozen=True, slots=True)
class OutgoingAddresses:
    """
    The local addresses upstream connections are made from, one per family
    at most; none means the system chooses.

    @ivar ipv4: The IPv4 address, or C{None}.
    @ivar ipv6: The IPv6 address, or C{None}.
    """

    ipv4: str | None = None
    ipv6: str | None = None

    @classmethod
    def fromStrings(cls, addresses: Iterable[str]) -> OutgoingAddresses:
        """
        Parse C{--outgoing-address} values.

        @param addresses: IP addresses, at most one IPv4 and one IPv6.
        @raise ValueError: For a value that is not an IP address (a name,
            say), the unspecified address, a multicast address, or a second
            address of one family; the message says which.
        """
        found: dict[int, str] = {}
        for text in addresses:
            address = _parse(text)
            previous = found.get(address.version)
            if previous is not None:
                family = _FAMILIES[address.version]
                raise ValueError(
                    f"{previous} and {text} are both {family} addresses; give "
                    "at most one IPv4 and one IPv6 address"
                )
            found[address.version] = str(address)
        return cls(found.get(4), found.get(6))

    def __bool__(self) -> bool:
        return self.ipv4 is not None or self.ipv6 is not None

    def strings(self) -> list[str]:
        """
        @return: The addresses, IPv4 first.
        """
        return [a for a in (self.ipv4, self.ipv6) if a is not None]

    def sourceFor(self, address: IPv4Address | IPv6Address) -> str | None:
        """
        The address to connect to C{address} from.

        @param address: An upstream address.
        @return: The outgoing address of its family, or C{None} when there
            is none (then, if this is not empty, C{address} is not tried).
        """
        if isinstance(address, IPv6Address):
            return self.ipv6
        return self.ipv4

    def missingFamily(
        self,
        addresses: Iterable[IPv4Address | IPv6Address],
        what: str = "the target",
    ) -> str:
        """
        Say why none of C{addresses} can be tried: the reason a client gets.

        @param addresses: The addresses of a target (or of a parent proxy),
            all of a family without an outgoing address.
        @param what: Names whose addresses they are, in the sentence.
        @return: A short sentence naming the option.
        """
        family = (
            "IPv6" if any(isinstance(a, IPv6Address) for a in addresses) else "IPv4"
        )
        return (
            f"{what} has only {family} addresses and --outgoing-address "
            f"gives no {family} address"
        )

    def unbindable(self) -> list[tuple[str, str]]:
        """
        Try to bind a TCP socket to each address now (port 0, closed at
        once): an address the machine does not have fails every connect.

        @return: C{(address, why)} for each address that cannot be bound.
        """
        problems = []
        for text in self.strings():
            family = socket.AF_INET6 if ":" in text else socket.AF_INET
            try:
                with socket.socket(family, socket.SOCK_STREAM) as probe:
                    probe.bind((text, 0))
            except OSError as e:
                problems.append((text, e.strerror or str(e)))
        return problems


def warnUnbindable(outgoing: OutgoingAddresses) -> None:
    """
    Log an C{outgoing_address_unavailable} warning for each outgoing address
    this machine cannot bind now (the proxy still starts: a failover address
    may arrive later; until then connects from it get 502).
    """
    for address, why in outgoing.unbindable():
        _log.warn(
            "cannot bind the outgoing address {address} now ({why}): upstream "
            "connects from it fail with 502 until this machine has it "
            "(see --outgoing-address)",
            event="outgoing_address_unavailable",
            address=address,
            why=why,
        )
