# -*- test-case-name: tests.test_hostnames -*-
"""
Host names: the normal form that rules compare (L{normalizeHost}), and
L{HostPatternTable}, which finds the most specific of a set of host
patterns that matches a name.  The host rules use the table; so can a
connector that routes by host name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import lru_cache
from ipaddress import IPv6Address, ip_address
from typing import Generic, TypeVar

import idna

__all__ = ["HostPatternTable", "isAddress", "normalizeHost", "normalizePattern"]

_T = TypeVar("_T")

# A host name label, as the request parser accepts it: letters, digits,
# hyphen and underscore.
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\Z")


def normalizeHost(host: str) -> str:
    """
    Bring a host name to the form rules compare: UTS #46 mapping (which
    lower-cases), one trailing dot removed, and IDNA 2008 A-labels for
    labels that are not ASCII.  ASCII labels may contain underscores, as
    the request parser allows.  IP addresses come back in L{ipaddress}'s
    canonical text form, IPv4-mapped IPv6 addresses as their IPv4 address.

    The last L{_NORMALIZED} results are remembered: a target's name is
    normalised by several checks, and the same targets come back.

    @raise ValueError: Naming C{host}, when it is not a valid host name or
        IP address (empty or blank labels, an all-digit name that is not an
        IPv4 address, an invalid A-label, a name too long).
    """
    return _normalized(host)


#: How many host names L{normalizeHost} remembers.
_NORMALIZED = 4096


@lru_cache(maxsize=_NORMALIZED)
def _normalized(host: str) -> str:
    """
    L{normalizeHost}, remembered (a L{ValueError} is not).
    """
    try:
        if host.isascii():
            # UTS #46 maps ASCII to itself, lower-cased, when STD3 rules are off.
            mapped = host.lower()
        else:
            mapped = idna.uts46_remap(host, std3_rules=False, transitional=False)
        name = mapped[:-1] if mapped.endswith(".") else mapped
        try:
            address = ip_address(name)
        except ValueError:
            pass
        else:
            if "%" in name:
                raise ValueError("zone identifiers are not allowed")
            if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
                # ::ffff:a.b.c.d is a.b.c.d on the wire: compare it as such.
                return str(address.ipv4_mapped)
            return str(address)
        labels = [_normalizeLabel(label) for label in name.split(".")]
        normal = ".".join(labels)
        if len(normal) > 253:
            raise ValueError("name longer than 253 characters")
        if labels[-1].isdigit():
            raise ValueError("all-digit name that is not an IPv4 address")
        return normal
    except ValueError as error:
        raise ValueError(f"invalid host name {host!r}: {error}") from None


def _normalizeLabel(label: str) -> str:
    """
    @param label: One UTS #46 mapped label.
    @return: Its ASCII form.
    @raise ValueError: When it is not valid.
    """
    if not label.isascii():
        return idna.alabel(label).decode("ascii")
    if not _LABEL.match(label):
        raise ValueError(f"invalid label {label!r}")
    if label.startswith("xn--") and idna.alabel(idna.ulabel(label)) != label.encode():
        raise ValueError(f"invalid A-label {label!r}")
    return label


def normalizePattern(pattern: str) -> str:
    """
    Bring a host pattern to the form L{HostPatternTable} compares: an exact
    name or IP address as L{normalizeHost} makes it, or C{*.} followed by a
    normalised name.  An IPv6 address may be written in brackets, as in a
    URL's authority (C{[::1]}).

    @return: The pattern with its name part normalised, C{*.} kept.
    @raise ValueError: Naming it, when it is not an exact name, an IP
        address, or C{*.} followed by a name.
    """
    if not pattern or any(char.isspace() for char in pattern):
        raise ValueError(f"invalid host pattern {pattern!r}: empty or has whitespace")
    if pattern == "*":
        raise ValueError(f"invalid host pattern {pattern!r}: '*' alone matches all")
    wildcard = pattern.startswith("*.")
    name = pattern[2:] if wildcard else pattern
    if name.startswith("[") and name.endswith("]") and ":" in name:
        # An IPv6 address as a URL writes it (RFC 3986 section 3.2.2).
        name = name[1:-1]
    if "*" in name:
        raise ValueError(
            f"invalid host pattern {pattern!r}: '*' may only be the first label"
        )
    try:
        normal = normalizeHost(name)
    except ValueError as error:
        raise ValueError(f"invalid host pattern {pattern!r}: {error}") from None
    if not wildcard:
        return normal
    if isAddress(normal):
        raise ValueError(f"invalid host pattern {pattern!r}: wildcard IP address")
    return "*." + normal


@lru_cache(maxsize=_NORMALIZED)
def isAddress(host: str) -> bool:
    """
    @return: Whether C{host} is an IP address (as text, without brackets);
        the last answers are remembered, as L{normalizeHost}'s are.
    """
    try:
        ip_address(host)
    except ValueError:
        return False
    return True


class HostPatternTable(Generic[_T]):
    """
    Host patterns, each with a value; a host name finds the value of the
    most specific pattern that matches it.

    A pattern is an exact name or IP address (C{example.com},
    C{192.0.2.1}) or a suffix wildcard (C{*.example.com}), which matches
    every name below C{example.com} at any depth but not C{example.com}
    itself.  Names and patterns are compared after L{normalizeHost}, so
    case, one trailing dot and Unicode versus A-label spellings do not
    matter.  Wildcards never match IP addresses.

    The most specific pattern wins: an exact name beats any wildcard, and a
    wildcard with a longer suffix (more labels) beats a shorter one.  Two
    different patterns that match the same name always differ in
    specificity; the same pattern given twice keeps its last value.

    Looking a name up costs one dictionary lookup per label of the name,
    however many patterns there are.
    """

    def __init__(self, entries: Iterable[tuple[str, _T]] = ()) -> None:
        """
        @param entries: C{(pattern, value)} pairs.
        @raise ValueError: Naming the pattern, when one is empty, contains
            whitespace, is C{*} alone, has C{*} anywhere but as the whole
            first label, wildcards an IP address, or is not a valid name.
        """
        self._table: dict[str, _T] = {
            normalizePattern(pattern): value for pattern, value in entries
        }

    def __len__(self) -> int:
        return len(self._table)

    def __iter__(self) -> Iterator[tuple[str, _T]]:
        """
        @return: The normalised patterns and their values, in the order
            they were first given.
        """
        return iter(self._table.items())

    def match(self, host: str) -> tuple[str, _T] | None:
        """
        Find the most specific pattern that matches C{host}.

        @param host: A host name or IP address, in any spelling
            L{normalizeHost} accepts.
        @return: The matching pattern (normalised) and its value, or
            C{None} when no pattern matches.
        @raise ValueError: When C{host} is not a valid host name or IP
            address.
        """
        name = normalizeHost(host)
        table = self._table
        if name in table:
            return name, table[name]
        if isAddress(name):
            return None
        rest = name
        while True:
            _, dot, rest = rest.partition(".")
            if not dot:
                return None
            pattern = "*." + rest
            if pattern in table:
                return pattern, table[pattern]
