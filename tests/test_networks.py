# -*- test-case-name: tests.test_networks -*-
"""
Tests for L{connectproxy._networks}: the destination network rules (the
default table of networks that are not globally routable, and operator
rules), as pure functions of their inputs.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectproxy import _networks
from connectproxy._networks import NetworkRules, parseAddress

_PROPERTY = settings(max_examples=200, deadline=None)
_DEFAULT = NetworkRules.fromStrings()


def _mapped(address: IPv4Address) -> IPv6Address:
    """Return the IPv4-mapped IPv6 form of C{address}."""
    return IPv6Address(0xFFFF_0000_0000 | int(address))


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


def test_parseAddressRemembers() -> None:
    """
    parseAddress parses as ip_address does, hands back the same object for
    the same text, and raises ValueError for text that is not an address.
    """
    first = parseAddress("192.0.2.1")
    assert first == IPv4Address("192.0.2.1")
    assert parseAddress("192.0.2.1") is first
    assert parseAddress("2001:db8::1") == IPv6Address("2001:db8::1")
    with pytest.raises(ValueError):
        parseAddress("example.com")


def test_verdictsRememberedBounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    The rules remember their verdicts, at most CACHE_SIZE of them: past
    that they start over, and every verdict stays the same.
    """
    monkeypatch.setattr(_networks, "CACHE_SIZE", 4)
    rules = NetworkRules.fromStrings(allow=["10.0.0.0/8"], deny=["10.0.0.3"])
    addresses = [IPv4Address(f"10.0.0.{n}") for n in range(1, 11)]
    for _ in range(2):
        verdicts = [rules.allows(address) for address in addresses]
        assert verdicts == [n != 3 for n in range(1, 11)]
        assert len(rules._verdicts) <= 4
    assert (
        rules.explain(addresses[2])
        == "10.0.0.3 is denied by --deny-network 10.0.0.3/32"
    )
