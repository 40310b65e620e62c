# -*- test-case-name: tests.test_policy -*-
"""
Tests for L{connectproxy._policy}: the built-in port, destination network,
destination name and client rules, as pure functions of their inputs.
"""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectproxy._policy import (
    DEFAULT_PORTS,
    AccessRules,
    ClientRules,
    HostRules,
    NetworkRules,
    PortRules,
    normalizeHost,
    parsePortRange,
)

_PROPERTY = settings(max_examples=200, deadline=None)
_DEFAULT = NetworkRules.fromStrings()


def _mapped(address: IPv4Address) -> IPv6Address:
    """Return the IPv4-mapped IPv6 form of C{address}."""
    return IPv6Address(0xFFFF_0000_0000 | int(address))


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


# Destination networks: the default


_DENIED_BY_DEFAULT = [
    ("0.0.0.0", "the unspecified address"),
    ("0.1.2.3", "'this network'"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.254", "carrier-grade NAT"),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("169.254.169.254", "link-local"),
    ("192.0.0.1", "IETF protocol assignment"),
    ("192.0.0.9", "IETF protocol assignment"),
    ("192.0.2.1", "documentation"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.200", "documentation"),
    ("192.88.99.1", "6to4 relay anycast"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.254", "benchmarking"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.254", "reserved"),
    ("255.255.255.255", "the broadcast address"),
    ("::", "the unspecified address"),
    ("::1", "loopback"),
    ("::7f00:1", "IPv4-compatible"),
    ("::808:808", "IPv4-compatible"),
    ("::ffff:0:808:808", "reserved"),
    ("100::1", "discard-only"),
    ("2001::1", "Teredo"),
    ("2001:2::1", "IETF protocol assignment"),
    ("2001:10::1", "IETF protocol assignment"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("3fff:fff:ffff::1", "documentation"),
    ("5f00::1", "segment routing"),
    ("fc00::1", "unique local"),
    ("fd12:3456::1", "unique local"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("64:ff9b:1::808:808", "local-use NAT64"),
    ("4000::1", "reserved"),
    # IPv4-mapped: judged as the IPv4 address.
    ("::ffff:127.0.0.1", "127.0.0.1 is a loopback"),
    ("::ffff:10.0.0.1", "10.0.0.1 is a private"),
    ("::ffff:169.254.169.254", "link-local"),
    ("::ffff:0.0.0.0", "unspecified"),
    # NAT64: the embedded IPv4 address must pass too.
    ("64:ff9b::7f00:1", "127.0.0.1 is a loopback"),
    ("64:ff9b::a00:1", "10.0.0.1 is a private"),
    ("64:ff9b::a9fe:a9fe", "169.254.169.254 is a link-local"),
    # 6to4 embedding non-global IPv4 addresses.
    ("2002:a00:1::1", "10.0.0.1 is a private"),
    ("2002:7f00:1::", "127.0.0.1 is a loopback"),
    ("2002:c0a8:101:1::1", "192.168.1.1 is a private"),
    # Teredo, whatever it embeds.
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
    ("2001:0:808:808::f5f5:f5f5", "Teredo"),
]


@pytest.mark.parametrize(("text", "reason"), _DENIED_BY_DEFAULT)
def test_defaultDenies(text: str, reason: str) -> None:
    """Addresses that are not globally routable unicast are denied by default."""
    address = ip_address(text)
    assert not _DEFAULT.allows(address)
    explanation = _DEFAULT.explain(address)
    assert reason in explanation
    assert explanation.endswith(", not allowed by default (see --allow-network)")


@pytest.mark.parametrize(
    "text",
    [
        "8.8.8.8",
        "1.1.1.1",
        "9.9.9.9",
        "100.63.255.255",
        "100.128.0.0",
        "172.15.255.255",
        "172.32.0.0",
        "192.0.1.255",
        "192.169.0.1",
        "198.17.255.255",
        "198.20.0.0",
        "223.255.255.254",
        "2606:4700:4700::1111",
        "2001:4860:4860::8888",
        "2a00:1450:4001::1",
        "::ffff:8.8.8.8",
        "::ffff:1.1.1.1",
        "64:ff9b::808:808",
        "64:ff9b::101:101",
        "2002:808:808::1",
    ],
)
def test_defaultAllowsGlobal(text: str) -> None:
    """Globally routable unicast addresses, directly or embedded, pass by default."""
    address = ip_address(text)
    assert _DEFAULT.allows(address)
    assert "globally routable" in _DEFAULT.explain(address)


# Destination networks: operator rules


_NESTED = NetworkRules.fromStrings(
    allow=["10.0.0.0/8", "10.1.2.0/24", "10.1.2.3"],
    deny=["10.1.0.0/16", "10.1.2.128/25", "10.1.2.3/32"],
)


@pytest.mark.parametrize(
    ("text", "allowed", "rule"),
    [
        ("10.9.9.9", True, "--allow-network 10.0.0.0/8"),
        ("10.1.9.9", False, "--deny-network 10.1.0.0/16"),
        ("10.1.2.4", True, "--allow-network 10.1.2.0/24"),
        ("10.1.2.200", False, "--deny-network 10.1.2.128/25"),
        ("10.1.2.3", False, "--deny-network 10.1.2.3/32"),
        ("::ffff:10.9.9.9", True, "--allow-network 10.0.0.0/8"),
        ("::ffff:10.1.9.9", False, "--deny-network 10.1.0.0/16"),
        ("64:ff9b::a09:909", True, "--allow-network 10.0.0.0/8"),
        ("64:ff9b::a01:909", False, "--deny-network 10.1.0.0/16"),
        ("2002:a09:909::", True, "--allow-network 10.0.0.0/8"),
        ("11.0.0.1", True, "globally routable"),
        ("192.168.0.1", False, "private"),
    ],
)
def test_mostSpecificWins(text: str, allowed: bool, rule: str) -> None:
    """The longest operator prefix containing the address decides, deny at ties."""
    address = ip_address(text)
    assert _NESTED.allows(address) is allowed
    assert rule in _NESTED.explain(address)


def test_equalPrefixDenyWins() -> None:
    """The same network allowed and denied is denied."""
    rules = NetworkRules.fromStrings(allow=["10.0.0.0/8"], deny=["10.0.0.0/8"])
    assert not rules.allows(IPv4Address("10.0.0.1"))
    assert not rules.allows(ip_address("2001:db8::1"))


def test_denyEverything() -> None:
    """Denying 0.0.0.0/0 and ::/0 denies global addresses, mapped or embedded too."""
    rules = NetworkRules.fromStrings(deny=["0.0.0.0/0"])
    assert not rules.allows(IPv4Address("8.8.8.8"))
    assert not rules.allows(ip_address("::ffff:8.8.8.8"))
    assert not rules.allows(ip_address("64:ff9b::808:808"))
    assert not rules.allows(ip_address("2002:808:808::1"))
    assert rules.allows(ip_address("2606:4700:4700::1111"))
    rules = NetworkRules.fromStrings(deny=["0.0.0.0/0", "::/0"])
    assert not rules.allows(ip_address("2606:4700:4700::1111"))
    assert (
        rules.explain(IPv4Address("8.8.8.8"))
        == "8.8.8.8 is denied by --deny-network 0.0.0.0/0"
    )


def test_allowLoopback() -> None:
    """Allowing 127.0.0.0/8 allows IPv4 loopback, mapped too, but not ::1."""
    rules = NetworkRules.fromStrings(allow=["127.0.0.0/8"])
    assert rules.allows(IPv4Address("127.0.0.1"))
    assert rules.allows(ip_address("::ffff:127.0.0.1"))
    assert rules.allows(ip_address("64:ff9b::7f00:1"))
    assert not rules.allows(ip_address("::1"))
    assert not rules.allows(IPv4Address("10.0.0.1"))


def test_ipv6RuleCoversContainerOnly() -> None:
    """An allowed NAT64 or Teredo prefix still needs its embedded IPv4 to pass."""
    rules = NetworkRules.fromStrings(
        allow=["64:ff9b:1::/48", "2001::/32"], deny=["64:ff9b::/96"]
    )
    assert rules.allows(ip_address("64:ff9b:1::808:808"))
    assert not rules.allows(ip_address("64:ff9b:1::a00:1"))
    assert not rules.allows(ip_address("64:ff9b::808:808"))
    assert rules.allows(ip_address("2001:0:808:808::f7f7:f7f7"))
    assert not rules.allows(ip_address("2001:0:a00:1::f7f7:f7f7"))
    assert not rules.allows(ip_address("2001:0:808:808::8000:fffe"))
    compatible = NetworkRules.fromStrings(allow=["::/96"])
    assert compatible.allows(ip_address("::808:808"))
    assert not compatible.allows(ip_address("::a00:1"))


def test_mappedNetworkRulesFoldToIPv4() -> None:
    """An operator network of IPv4-mapped addresses is an IPv4 network."""
    rules = NetworkRules.fromStrings(allow=["::ffff:10.0.0.0/104"])
    assert [str(network) for network in rules.allow] == ["10.0.0.0/8"]
    assert rules.allows(IPv4Address("10.1.2.3"))
    assert rules.allows(ip_address("::ffff:10.1.2.3"))


def test_allowedIPv6Explained() -> None:
    """An operator allow rule for IPv6 is named in the explanation."""
    rules = NetworkRules.fromStrings(allow=["fd00::/8"])
    address = ip_address("fd00::5")
    assert rules.allows(address)
    assert rules.explain(address) == "fd00::5 is allowed by --allow-network fd00::/8"


@pytest.mark.parametrize(
    "text",
    ["", "10.0.0.1/8", "10.0.0.0/33", "300.0.0.0/8", " 10.0.0.0/8", "fe80::%eth0/64"],
)
def test_networkRulesRejectBadNetworks(text: str) -> None:
    """A network with host bits set or otherwise invalid is a ValueError naming it."""
    with pytest.raises(ValueError, match="invalid network") as info:
        NetworkRules.fromStrings(deny=[text])
    assert repr(text) in str(info.value)
    with pytest.raises(ValueError, match="invalid network"):
        NetworkRules.fromStrings(allow=[text])


def test_bareAddressIsOneAddressNetwork() -> None:
    """A bare address is a /32 or /128 network."""
    rules = NetworkRules.fromStrings(allow=["10.0.0.5", "fd00::5"])
    assert [str(network) for network in rules.allow] == ["10.0.0.5/32", "fd00::5/128"]
    assert rules.allows(IPv4Address("10.0.0.5"))
    assert not rules.allows(IPv4Address("10.0.0.6"))
    assert rules.allows(ip_address("fd00::5"))


@pytest.mark.parametrize(
    ("text", "explanation"),
    [
        (
            "127.0.0.1",
            "127.0.0.1 is a loopback address, not allowed by default "
            "(see --allow-network)",
        ),
        (
            "10.1.2.3",
            "10.1.2.3 is a private address (RFC 1918), not allowed by default "
            "(see --allow-network)",
        ),
        ("8.8.8.8", "8.8.8.8 is a globally routable address"),
        (
            "::ffff:127.0.0.1",
            "127.0.0.1 is a loopback address, IPv4-mapped as ::ffff:127.0.0.1, "
            "not allowed by default (see --allow-network)",
        ),
        (
            "64:ff9b::a00:1",
            "10.0.0.1 is a private address (RFC 1918), embedded in 64:ff9b::a00:1, "
            "not allowed by default (see --allow-network)",
        ),
        (
            "fe80::1",
            "fe80::1 is a link-local address, not allowed by default "
            "(see --allow-network)",
        ),
    ],
)
def test_networkExplanations(text: str, explanation: str) -> None:
    """
    Explanations are one short line naming the address, the reason, and the
    option that would allow it.
    """
    assert _DEFAULT.explain(ip_address(text)) == explanation


@pytest.mark.parametrize(
    ("text", "explanation"),
    [
        ("10.1.2.3", "10.1.2.3 is denied by --deny-network 10.0.0.0/8"),
        ("10.20.30.40", "10.20.30.40 is allowed by --allow-network 10.20.0.0/16"),
        (
            "::ffff:10.1.2.3",
            "10.1.2.3 is denied by --deny-network 10.0.0.0/8, "
            "IPv4-mapped as ::ffff:10.1.2.3",
        ),
        (
            "64:ff9b::a01:203",
            "10.1.2.3 is denied by --deny-network 10.0.0.0/8, "
            "embedded in 64:ff9b::a01:203",
        ),
        (
            "2002:7f00:1::",
            "127.0.0.1 is a loopback address, embedded in 2002:7f00:1::, "
            "not allowed by default (see --allow-network)",
        ),
        (
            "192.168.1.1",
            "192.168.1.1 is a private address (RFC 1918), not allowed by default "
            "(see --allow-network)",
        ),
    ],
)
def test_operatorNetworkExplanations(text: str, explanation: str) -> None:
    """
    An operator rule's explanation names the rule; the default's, the option
    that overrides it, also for an address the operator allowed that embeds
    one the default denies.
    """
    rules = NetworkRules.fromStrings(
        allow=["10.20.0.0/16", "2002::/16"], deny=["10.0.0.0/8"]
    )
    assert rules.explain(ip_address(text)) == explanation


def test_networkRulesEquality() -> None:
    """Rules built from the same networks are equal and hash alike."""
    one = NetworkRules.fromStrings(allow=["10.0.0.0/8"], deny=["10.1.0.0/16"])
    two = NetworkRules.fromStrings(allow=["10.0.0.0/8"], deny=["10.1.0.0/16"])
    assert one == two
    assert hash(one) == hash(two)
    assert one != _DEFAULT


_ipv4 = st.ip_addresses(v=4)
_ipv6 = st.one_of(
    st.ip_addresses(v=6),
    *(
        st.ip_addresses(network=network)
        for network in [
            "::ffff:0:0/96",
            "64:ff9b::/96",
            "64:ff9b:1::/48",
            "2002::/16",
            "2001::/32",
            "::/96",
            "2000::/3",
        ]
    ),
)


def _ipv4Network(address: IPv4Address, length: int) -> str:
    """Return the text of the /C{length} network containing C{address}."""
    network = IPv4Address(int(address) >> (32 - length) << (32 - length))
    return f"{network}/{length}"


_ipv4Networks = st.builds(_ipv4Network, _ipv4, st.integers(0, 32))


@_PROPERTY
@given(
    _ipv4,
    st.lists(_ipv4Networks, max_size=4),
    st.lists(_ipv4Networks, max_size=4),
)
def test_mappedMatchesIPv4(
    address: IPv4Address, allow: list[str], deny: list[str]
) -> None:
    """An IPv4 address and its IPv4-mapped form always get the same verdict."""
    rules = NetworkRules.fromStrings(allow=allow, deny=deny)
    assert rules.allows(address) == rules.allows(_mapped(address))
    assert _DEFAULT.allows(address) == _DEFAULT.allows(_mapped(address))


@_PROPERTY
@given(st.one_of(_ipv4, _ipv6))
def test_defaultAllowsOnlyGlobal(address: IPv4Address | IPv6Address) -> None:
    """With no operator rules, only global addresses (and their embeddings) pass."""
    if _DEFAULT.allows(address):
        judged = address
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            judged = address.ipv4_mapped
        assert judged.is_global
        assert not judged.is_multicast
        assert "\n" not in _DEFAULT.explain(address)


@_PROPERTY
@given(st.one_of(_ipv4, _ipv6))
def test_allowEverything(address: IPv4Address | IPv6Address) -> None:
    """Allowing both whole address spaces allows every address."""
    rules = NetworkRules.fromStrings(allow=["0.0.0.0/0", "::/0"])
    assert rules.allows(address)


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
    """The defaults are port 443, global destinations, any name, loopback clients."""
    rules = AccessRules.defaults()
    assert rules == AccessRules(
        PortRules(((443, 443),)),
        NetworkRules(),
        HostRules(),
        ClientRules.fromStrings(),
    )
    assert rules.ports.allows(443) and not rules.ports.allows(80)
    assert not rules.networks.allows(IPv4Address("127.0.0.1"))
    assert rules.hosts.check("example.com")
    assert rules.clients.allows(IPv4Address("127.0.0.1"))
    assert not rules.clients.allows(IPv4Address("10.0.0.1"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        rules.ports = PortRules(())  # type: ignore[misc]
    assert hash(rules) == hash(AccessRules.defaults())
