# -*- test-case-name: tests.test_rules -*-
"""
Tests for L{connectproxy._rules}: the built-in port, destination name and
client rules, and all the rules together, as pure functions of their
inputs.
"""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, ip_address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectproxy._hostnames import normalizeHost
from connectproxy._networks import NetworkRules
from connectproxy._rules import (
    DEFAULT_PORTS,
    AccessRules,
    ClientRules,
    HostRules,
    PortRules,
    parsePortRange,
)

_PROPERTY = settings(max_examples=200, deadline=None)


# Ports


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("443", (443, 443)),
        ("1", (1, 1)),
        ("65535", (65535, 65535)),
        ("0443", (443, 443)),
        ("8000-8080", (8000, 8080)),
        ("80-80", (80, 80)),
        ("1-65535", (1, 65535)),
    ],
)
def test_parsePortRange(text: str, expected: tuple[int, int]) -> None:
    """A port or an inclusive range parses to its low and high ends."""
    assert parsePortRange(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0",
        "65536",
        "99999",
        "123456",
        "0-10",
        "10-65536",
        "8080-8000",
        "-1",
        "-80",
        "80-",
        "+443",
        " 443",
        "443 ",
        "443,8443",
        "1-2-3",
        "https",
        "\u0664\u0664\u0663",
    ],
)
def test_parsePortRangeRejects(text: str) -> None:
    """Anything but a port or an ordered range of ports is a ValueError naming it."""
    with pytest.raises(ValueError, match="invalid port range") as info:
        parsePortRange(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(
    ("port", "allowed"),
    [
        (1, False),
        (442, False),
        (443, True),
        (444, False),
        (7999, False),
        (8000, True),
        (8040, True),
        (8080, True),
        (8081, False),
        (65535, False),
    ],
)
def test_portRulesBoundaries(port: int, allowed: bool) -> None:
    """Range ends are inclusive and nothing outside the ranges is allowed."""
    rules = PortRules.fromStrings(["443", "8000-8080"])
    assert rules.allows(port) is allowed


def test_portRulesDefaults() -> None:
    """The default ports allow 443 only, and no ranges allow nothing."""
    rules = PortRules.fromStrings(DEFAULT_PORTS)
    assert rules.ranges == ((443, 443),)
    assert [port for port in range(1, 65536) if rules.allows(port)] == [443]
    assert not PortRules.fromStrings([]).allows(443)


def test_portRulesRejectBadEntry() -> None:
    """One bad entry makes the whole list a ValueError naming that entry."""
    with pytest.raises(ValueError, match="'80-70'"):
        PortRules.fromStrings(["443", "80-70"])


_ports = st.integers(1, 65535)


@_PROPERTY
@given(st.lists(st.tuples(_ports, _ports).map(sorted), max_size=5), _ports)
def test_portRulesMatchRanges(ranges: list[list[int]], port: int) -> None:
    """A port is allowed exactly when it lies in one of the parsed ranges."""
    texts = [f"{low}-{high}" if low != high else str(low) for low, high in ranges]
    expected = any(low <= port <= high for low, high in ranges)
    assert PortRules.fromStrings(texts).allows(port) is expected


# Destination names


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("example.com", "example.com"),
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.EXAMPLE", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.example.", "xn--bcher-kva.example"),
        ("faß.de", "xn--fa-hia.de"),
        ("\uff45\uff58.com", "ex.com"),
        ("example\u3002com", "example.com"),
        ("_srv.my_host.internal", "_srv.my_host.internal"),
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("::1", "::1"),
        ("2001:DB8:0::1", "2001:db8::1"),
        ("1.2.3.4.example", "1.2.3.4.example"),
    ],
)
def test_normalizeHost(host: str, expected: str) -> None:
    """Names are mapped, lower-cased, stripped of one dot, and A-label encoded."""
    assert normalizeHost(host) == expected


@pytest.mark.parametrize(
    "host",
    [
        "",
        ".",
        "example..com",
        "example.com..",
        "a b.example",
        " example.com",
        "-a.example",
        "a-.example",
        "xn--zz.example",
        "\u2603.net",
        "1234",
        "10.1.1",
        "a" * 64 + ".example",
        ".".join(["a" * 63] * 4),
        "fe80::1%eth0",
        "example.com/path",
    ],
)
def test_normalizeHostRejects(host: str) -> None:
    """Names that cannot be encoded are a ValueError naming them."""
    with pytest.raises(ValueError, match="invalid host name") as info:
        normalizeHost(host)
    assert repr(host) in str(info.value)


_labels = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?", fullmatch=True)
_names = (
    st.lists(_labels, min_size=1, max_size=4)
    .map(".".join)
    .filter(lambda name: not name.rsplit(".", 1)[-1].isdigit())
)


@_PROPERTY
@given(_names, st.booleans())
def test_normalizeHostIdempotent(name: str, dot: bool) -> None:
    """Normalising twice is normalising once; case and one dot never matter."""
    normal = normalizeHost(name + "." * dot)
    assert normalizeHost(normal) == normal
    assert normal == name.lower()
    assert normalizeHost(name.upper()) == normal


@pytest.mark.parametrize(
    ("allow", "deny", "host", "allowed"),
    [
        # No patterns: everything.
        ([], [], "anything.example", True),
        # Exact names, case and trailing dot.
        ([], ["example.com"], "example.com", False),
        ([], ["example.com"], "EXAMPLE.com.", False),
        ([], ["Example.COM."], "example.com", False),
        ([], ["example.com"], "www.example.com", True),
        ([], ["example.com"], "example.community", True),
        # Wildcards match strictly below, at any depth.
        ([], ["*.example.com"], "www.example.com", False),
        ([], ["*.example.com"], "a.b.example.com", False),
        ([], ["*.example.com"], "example.com", True),
        ([], ["*.example.com"], "badexample.com", True),
        ([], ["*.com"], "example.com", False),
        # IDNA: Unicode and A-label spellings are the same name.
        ([], ["bücher.example"], "xn--bcher-kva.example", False),
        ([], ["xn--bcher-kva.example"], "BÜCHER.example", False),
        ([], ["*.bücher.example"], "www.xn--bcher-kva.example", False),
        # An allow list denies what it does not match.
        (["example.com"], [], "example.com", True),
        (["example.com"], [], "example.org", False),
        (["*.example.com"], [], "example.com", False),
        (["*.example.com"], [], "api.example.com", True),
        # Most specific wins; deny wins at equal specificity.
        (
            ["*.example.com"],
            ["*.internal.example.com"],
            "a.internal.example.com",
            False,
        ),
        (["*.example.com"], ["*.internal.example.com"], "a.public.example.com", True),
        (
            ["ok.internal.example.com"],
            ["*.example.com"],
            "ok.internal.example.com",
            True,
        ),
        (["*.internal.example.com"], ["*.example.com"], "x.internal.example.com", True),
        (["*.example.com"], ["example.com"], "example.com", False),
        (["example.com"], ["*.com"], "example.com", True),
        (["example.com"], ["example.com"], "example.com", False),
        (["*.example.com"], ["*.example.com"], "a.example.com", False),
        # IP literals: exact patterns only.
        ([], ["127.0.0.1"], "127.0.0.1", False),
        ([], ["::1"], "0:0::1", False),
        ([], ["*.com"], "127.0.0.1", True),
        (["*.com"], [], "127.0.0.1", False),
        # Hosts that are not names are denied.
        ([], [], "bad name", False),
    ],
)
def test_hostRules(allow: list[str], deny: list[str], host: str, allowed: bool) -> None:
    """The most specific pattern decides, deny at ties; allow lists deny the rest."""
    rules = HostRules.fromStrings(allow=allow, deny=deny)
    assert rules.check(host) is allowed
    assert (rules.explain(host) is None) is allowed


@pytest.mark.parametrize(
    "pattern",
    [
        "",
        " ",
        "*",
        "*.",
        "**.example.com",
        "*example.com",
        "a.*.example.com",
        "example.*",
        "*.*.example.com",
        "exa mple.com",
        "example.com\n",
        "\texample.com",
        "*.127.0.0.1",
        "*.1",
        "-bad.example",
    ],
)
def test_hostRulesRejectBadPatterns(pattern: str) -> None:
    """Empty, blank, misplaced-wildcard or unencodable patterns are ValueErrors."""
    with pytest.raises(ValueError, match="invalid host pattern") as info:
        HostRules.fromStrings(deny=[pattern])
    assert repr(pattern) in str(info.value)
    with pytest.raises(ValueError, match="invalid host pattern"):
        HostRules.fromStrings(allow=[pattern])


def test_hostPatternsNormalised() -> None:
    """Patterns are stored normalised, with the wildcard kept."""
    rules = HostRules.fromStrings(allow=["*.BÜCHER.example.", "Example.COM"])
    assert rules.allow == frozenset({"*.xn--bcher-kva.example", "example.com"})


@pytest.mark.parametrize(
    ("host", "explanation"),
    [
        ("www.example.com", "www.example.com is denied by --deny-host *.example.com"),
        ("bad.example.org", "bad.example.org is denied by --deny-host bad.example.org"),
        ("other.net", "other.net matches no --allow-host pattern"),
        ("good.example.org", None),
        ("a b", "invalid host name 'a b': invalid label 'a b'"),
    ],
)
def test_hostExplanations(host: str, explanation: str | None) -> None:
    """Host explanations name the deciding pattern or the missing allow match."""
    rules = HostRules.fromStrings(
        allow=["*.example.org", "*.example.com"],
        deny=["*.example.com", "bad.example.org"],
    )
    assert rules.explain(host) == explanation


@_PROPERTY
@given(_names, _labels)
def test_wildcardMatchesStrictlyBelow(name: str, label: str) -> None:
    """A wildcard denies every name below its suffix but not the suffix itself."""
    rules = HostRules.fromStrings(deny=["*." + name])
    assert not rules.check(label + "." + name)
    assert rules.check(name)


# Clients


@pytest.mark.parametrize(
    ("text", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("192.168.1.10", False),
        ("8.8.8.8", False),
        ("::2", False),
        ("::ffff:10.0.0.1", False),
        ("fe80::1", False),
        ("64:ff9b::7f00:1", False),
    ],
)
def test_clientDefaults(text: str, allowed: bool) -> None:
    """By default only loopback clients, IPv4-mapped loopback included, are allowed."""
    assert ClientRules.fromStrings().allows(ip_address(text)) is allowed


@pytest.mark.parametrize(
    ("text", "allowed"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("10.1.2.3", True),
        ("::ffff:10.1.2.3", True),
        ("10.2.0.1", False),
        ("fd00::1", True),
        ("fd01::1", False),
        ("192.0.2.1", True),
    ],
)
def test_clientOperatorAdditions(text: str, allowed: bool) -> None:
    """Operator networks are added to the loopback default."""
    rules = ClientRules.fromStrings(allow=["10.1.0.0/16", "fd00::/16", "192.0.2.1"])
    assert rules.allows(ip_address(text)) is allowed


@pytest.mark.parametrize(
    ("text", "explanation"),
    [
        ("127.0.0.1", None),
        ("10.1.2.3", None),
        ("10.2.0.1", "client 10.2.0.1 is not allowed (see --allow-client)"),
        ("::ffff:10.2.0.1", "client 10.2.0.1 is not allowed (see --allow-client)"),
        ("fd01::1", "client fd01::1 is not allowed (see --allow-client)"),
    ],
)
def test_clientExplanations(text: str, explanation: str | None) -> None:
    """A refused client's explanation names it and the option that allows it."""
    rules = ClientRules.fromStrings(allow=["10.1.0.0/16"])
    assert rules.explain(ip_address(text)) == explanation


@pytest.mark.parametrize(
    ("client", "balancer", "explanation"),
    [
        ("10.1.2.3", "127.0.0.1", None),
        ("10.1.2.3", "192.0.2.9", None),
        (
            "10.1.2.3",
            "198.51.100.9",
            "load balancer 198.51.100.9 is not a trusted proxy (see --trusted-proxy)",
        ),
        (
            "127.0.0.1",
            "192.0.2.9",
            "client 127.0.0.1 is not allowed behind a load balancer "
            "(see --allow-client)",
        ),
        (
            "::ffff:10.9.9.9",
            "::ffff:192.0.2.9",
            "client 10.9.9.9 is not allowed behind a load balancer "
            "(see --allow-client)",
        ),
    ],
)
def test_proxiedClientExplanations(
    client: str, balancer: str, explanation: str | None
) -> None:
    """
    Behind a load balancer, a refusal names the balancer that is not trusted
    or the client that is not allowed, and the option to change.
    """
    rules = ClientRules.fromStrings(
        allow=["10.1.0.0/16"], trustedProxies=["192.0.2.0/24"]
    )
    clientAddress, balancerAddress = ip_address(client), ip_address(balancer)
    assert rules.explainProxied(clientAddress, balancerAddress) == explanation
    assert rules.allowsProxied(clientAddress, balancerAddress) is (explanation is None)


def test_clientRulesRejectBadNetworks() -> None:
    """An invalid client network is a ValueError naming it."""
    with pytest.raises(ValueError, match=r"'10\.0\.0\.1/8'"):
        ClientRules.fromStrings(allow=["10.0.0.1/8"])


# The bundle


def test_accessRulesDefaults() -> None:
    """
    The defaults are port 443 (and 80 for forwarded requests), global
    destinations, any name, loopback clients.
    """
    rules = AccessRules.defaults()
    assert rules == AccessRules(
        PortRules(((443, 443),), ((80, 80), (443, 443))),
        NetworkRules(),
        HostRules(),
        ClientRules.fromStrings(),
    )
    assert rules.ports.allows(443) and not rules.ports.allows(80)
    assert rules.ports.allows(80, forwarded=True)
    assert rules.ports.allows(443, forwarded=True)
    assert not rules.ports.allows(8080, forwarded=True)
    assert not rules.networks.allows(IPv4Address("127.0.0.1"))
    assert rules.hosts.check("example.com")
    assert rules.clients.allows(IPv4Address("127.0.0.1"))
    assert not rules.clients.allows(IPv4Address("10.0.0.1"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        rules.ports = PortRules(())  # type: ignore[misc]
    assert hash(rules) == hash(AccessRules.defaults())


def test_oldImportPath() -> None:
    """
    The rules are still importable from C{connectproxy._policy}, where they
    were before the destination network rules got a module of their own.
    """
    from connectproxy import _hostnames, _networks, _policy, _rules

    for name in _rules.__all__:
        assert getattr(_policy, name) is getattr(_rules, name)
    assert _policy.NetworkRules is _networks.NetworkRules
    assert _policy.normalizeHost is _hostnames.normalizeHost
