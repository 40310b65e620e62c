# -*- test-case-name: tests.test_vetting -*-
"""
Tests for L{connectproxy._vetting}: destination vetting any connector can
apply.  No sockets, no DNS, no threads.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IHostResolution, IResolutionReceiver
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from zope.interface import implementer

from connectproxy import (
    ForbiddenDestination,
    NetworkRules,
    ResolverPool,
    VettedResolver,
    vetAddresses,
)
from connectproxy._vetting import literalAddresses
from connectproxy.testing import FakeResolver
from tests.test_resolver import HangingResolver

DEFAULT = NetworkRules.fromStrings()


def v4(host: str, port: int = 443) -> IPv4Address:
    return IPv4Address("TCP", host, port)


def v6(host: str, port: int = 443) -> IPv6Address:
    return IPv6Address("TCP", host, port)


def outcome(d: Any) -> Any:
    results: list[Any] = []
    d.addBoth(results.append)
    [result] = results
    return result


def test_vetKeepsAllowedInOrder() -> None:
    """
    Only the allowed addresses are kept, in the order given.
    """
    addresses: list[IPv4Address | IPv6Address] = [
        v4("10.0.0.1"),
        v6("2606:4700::1"),
        v4("192.168.0.1"),
        v4("8.8.8.8"),
    ]
    assert vetAddresses(DEFAULT, "mixed.example", addresses) == [
        v6("2606:4700::1"),
        v4("8.8.8.8"),
    ]


def test_vetNoAddresses() -> None:
    """
    No addresses at all is a lookup failure (502), not a refusal.
    """
    with pytest.raises(DNSLookupError, match=r"no addresses for gone\.example"):
        vetAddresses(DEFAULT, "gone.example", [])


def test_vetRefusesNameNamingFirstAddress() -> None:
    """
    When none is allowed, the reason says what the name resolves to and
    which option would allow it.
    """
    with pytest.raises(ForbiddenDestination) as raised:
        vetAddresses(DEFAULT, "internal.example", [v4("10.1.2.3"), v4("127.0.0.1")])
    assert raised.value.reason == (
        "internal.example resolves to 10.1.2.3, which is a private address "
        "(RFC 1918), not allowed by default (see --allow-network)"
    )


def test_vetRefusesLiteral() -> None:
    """
    An IP-literal target's reason is the rule's explanation of the address.
    """
    with pytest.raises(ForbiddenDestination) as raised:
        vetAddresses(DEFAULT, "::1", [v6("::1")])
    assert raised.value.reason == (
        "::1 is a loopback address, not allowed by default (see --allow-network)"
    )


def test_vetOperatorRules() -> None:
    """
    The operator's network rules decide, the most specific one winning.
    """
    rules = NetworkRules.fromStrings(allow=["10.0.0.0/8"], deny=["10.9.0.0/16"])
    assert vetAddresses(rules, "a", [v4("10.1.1.1")]) == [v4("10.1.1.1")]
    with pytest.raises(ForbiddenDestination, match="denied by --deny-network"):
        vetAddresses(rules, "a", [v4("10.9.1.1")])


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("192.0.2.7", [v4("192.0.2.7", 8443)]),
        ("2001:db8::7", [v6("2001:db8::7", 8443)]),
        ("localhost", [v6("::1", 8443), v4("127.0.0.1", 8443)]),
        ("app.localhost", [v6("::1", 8443), v4("127.0.0.1", 8443)]),
        ("example.com", None),
        ("localhost.example", None),
    ],
)
def test_literalAddresses(host: str, expected: list[Any] | None) -> None:
    """
    IP addresses and C{localhost} names need no lookup (RFC 6761 section
    6.3, IPv6 first); other names do.
    """
    assert literalAddresses(host, 8443) == expected


def resolverOver(table: dict[str, list[str]], networks: NetworkRules = DEFAULT) -> Any:
    resolver = FakeResolver(table)
    pool = ResolverPool(MemoryReactorClock(), resolver=resolver)
    return VettedResolver(networks, pool), resolver


def test_vetLiteralChoosesWithoutLookup() -> None:
    """
    C{vetLiteral} vets IP-literal and C{localhost} targets and says
    C{None} for names, without looking anything up: a connector that lets
    another host resolve names uses it to vet what it can.
    """
    vetted, resolver = resolverOver({})
    assert vetted.vetLiteral("8.8.8.8", 443) == [v4("8.8.8.8")]
    assert vetted.vetLiteral("example.com", 443) is None
    with pytest.raises(ForbiddenDestination):
        vetted.vetLiteral("localhost", 443)
    assert resolver.names == []


def test_resolveVetsAndSetsPort() -> None:
    """
    C{resolve} looks the name up and fires with the allowed addresses, on
    the requested port.
    """
    vetted, resolver = resolverOver({"mixed.example": ["10.0.0.1", "8.8.4.4"]})
    addresses = outcome(vetted.resolve("127.0.0.1", "mixed.example", 8443))
    assert addresses == [v4("8.8.4.4", 8443)]
    assert resolver.names == ["mixed.example"]


def test_resolveLiteralAtOnce() -> None:
    """
    An IP-literal target resolves at once, without the pool.
    """
    vetted, resolver = resolverOver({})
    assert outcome(vetted.resolve("", "2606:4700::1", 443)) == [v6("2606:4700::1")]
    refused = outcome(vetted.resolve("", "10.0.0.1", 443))
    assert isinstance(refused, Failure) and refused.check(ForbiddenDestination)
    assert resolver.names == []


def test_resolveRefuses() -> None:
    """
    A name whose addresses are all forbidden fails with
    L{ForbiddenDestination}; one with none fails with L{DNSLookupError}.
    """
    vetted, _ = resolverOver({"rebind.example": ["127.0.0.1"]})
    refused = outcome(vetted.resolve("", "rebind.example", 443))
    assert refused.check(ForbiddenDestination)
    missing = outcome(vetted.resolve("", "missing.example", 443))
    assert missing.check(DNSLookupError)


def test_resolveOnTheClientsShare() -> None:
    """
    Lookups count against the share of the client named: one client's
    hanging lookups make only its own next lookup wait.
    """
    resolver = HangingResolver({"fast.example": ["93.184.216.34"]})
    pool = ResolverPool(MemoryReactorClock(), threads=4, perClient=1, resolver=resolver)
    vetted = VettedResolver(DEFAULT, pool)
    vetted.resolve("192.0.2.1", "slow.example", 443)
    waiting = vetted.resolve("192.0.2.1", "fast.example", 443)
    assert pool.waiting("192.0.2.1") == 1
    assert outcome(vetted.resolve("192.0.2.2", "fast.example", 443)) == [
        v4("93.184.216.34")
    ]
    assert not waiting.called


def test_cancelCancelsLookup() -> None:
    """
    Cancelling a resolution cancels the lookup in the pool, and addresses
    that arrive later are ignored.
    """

    @implementer(IHostResolution)
    class Pending:
        name = "slow.example"

        def cancel(self) -> None:
            pass

    receivers: list[IResolutionReceiver] = []

    class Slow(FakeResolver):
        def resolveHostName(
            self, receiver: IResolutionReceiver, hostName: str, *args: object
        ) -> IHostResolution:
            receivers.append(receiver)
            return Pending()

    pool = ResolverPool(MemoryReactorClock(), resolver=Slow({}))
    d = VettedResolver(DEFAULT, pool).resolve("", "slow.example", 443)
    d.cancel()
    assert outcome(d).check(CancelledError)
    [receiver] = receivers
    receiver.addressResolved(v4("8.8.8.8"))
    receiver.resolutionComplete()
    assert pool.running == 0
