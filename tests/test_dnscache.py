# -*- test-case-name: tests.test_dnscache -*-
"""
C{--resolver dns}: L{CachingDNSResolver} over a fake DNS client and a
clock (no query leaves the process), the hosts file it reads first, and
how the resolver pool and the factory use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from twisted.internet._resolver import GAIResolver
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IHostnameResolver, IResolutionReceiver
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.names import dns
from twisted.names.error import (
    DNSNameError,
    DNSQueryRefusedError,
    DNSQueryTimeoutError,
    DNSServerError,
)
from twisted.python import log
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer
from zope.interface.verify import verifyObject

from connectproxy import ProxySettings
from connectproxy._assembly import ProxyConfig
from connectproxy._dnscache import (
    MAX_NEGATIVE_TTL,
    MAX_TTL,
    CachingDNSResolver,
    DNSServerFailure,
    HostsFile,
    _quietly,
    chooseResolver,
    dnsResolver,
    queryTimeouts,
)
from connectproxy._factory import ConnectProxyFactory
from connectproxy._loglevel import LevelFilter, levelPredicate
from connectproxy._resolver import ResolverPool, _resolveWith
from connectproxy._upstream import DirectConnector
from connectproxy.testing import ProxyHarness, connectHead
from tests._helpers import succeeded


def _a(name: str, address: str, ttl: int) -> dns.RRHeader:
    return dns.RRHeader(name, dns.A, ttl=ttl, payload=dns.Record_A(address, ttl))


def _aaaa(name: str, address: str, ttl: int) -> dns.RRHeader:
    return dns.RRHeader(name, dns.AAAA, ttl=ttl, payload=dns.Record_AAAA(address, ttl))


def _cname(name: str, target: str, ttl: int) -> dns.RRHeader:
    return dns.RRHeader(name, dns.CNAME, ttl=ttl, payload=dns.Record_CNAME(target, ttl))


def _soa(ttl: int, minimum: int) -> dns.RRHeader:
    payload = dns.Record_SOA(b"ns.example", b"root.example", minimum=minimum, ttl=ttl)
    return dns.RRHeader("example", dns.SOA, ttl=ttl, payload=payload)


class FakeDNS:
    """
    A DNS client whose answers the test gives: each lookup is recorded and
    waits until answered, or is answered at once from L{answers}.

    @ivar asked: The (record type, name) of every query, in order.
    @ivar pending: The queries not answered yet, by (type, name).
    @ivar answers: Answers given at once, by (type, name): the three
        sections, or an exception to fail with.
    """

    def __init__(self) -> None:
        self.asked: list[tuple[int, str]] = []
        self.pending: dict[tuple[int, str], Deferred[Any]] = {}
        self.answers: dict[tuple[int, str], Any] = {}

    def _ask(self, kind: int, name: str) -> Deferred[Any]:
        self.asked.append((kind, name))
        answer = self.answers.get((kind, name))
        if isinstance(answer, Exception):
            return fail(answer)
        if answer is not None:
            return succeed(answer)
        d: Deferred[Any] = Deferred()
        self.pending[(kind, name)] = d
        return d

    def lookupAddress(self, name: str) -> Deferred[Any]:
        return self._ask(dns.A, name)

    def lookupIPV6Address(self, name: str) -> Deferred[Any]:
        return self._ask(dns.AAAA, name)

    def answer(
        self, kind: int, name: str, answers: list[Any], authority: Any = ()
    ) -> None:
        self.pending.pop((kind, name)).callback((answers, list(authority), []))

    def refuse(self, kind: int, name: str, error: Exception) -> None:
        self.pending.pop((kind, name)).errback(error)


def _resolver(size: int = 100) -> tuple[CachingDNSResolver, FakeDNS, Clock]:
    clock = Clock()
    client = FakeDNS()
    return CachingDNSResolver(clock, client, size), client, clock


def _known(
    client: FakeDNS,
    name: str,
    v4: list[Any] | None = None,
    v6: list[Any] | None = None,
    authority: list[Any] | None = None,
) -> None:
    """
    Answer C{name}'s A and AAAA queries at once; an empty answer comes with
    an SOA whose negative TTL is 60 s unless C{authority} is given.
    """
    if authority is None:
        authority = [_soa(ttl=60, minimum=60)]
    client.answers[(dns.A, name)] = (v4 or [], list(authority), [])
    client.answers[(dns.AAAA, name)] = (v6 or [], list(authority), [])


def _addresses(resolver: CachingDNSResolver, name: str, port: int = 443) -> Any:
    return succeeded(_resolveWith(resolver, name, port))


def test_providesInterface() -> None:
    """
    The resolver is an L{IHostnameResolver}.
    """
    resolver, _, _ = _resolver()
    assert verifyObject(IHostnameResolver, resolver)


def test_addressesIPv6First() -> None:
    """
    A name's AAAA and A records are asked for at once; its addresses come
    IPv6 first, each family in the order the DNS gave, with the port.
    """
    resolver, client, _ = _resolver()
    d = _resolveWith(resolver, "www.example", 443)
    assert sorted(client.asked) == [(dns.A, "www.example"), (dns.AAAA, "www.example")]
    client.answer(
        dns.A,
        "www.example",
        [_a("www.example", "192.0.2.2", 60), _a("www.example", "192.0.2.1", 60)],
    )
    assert not d.called
    client.answer(dns.AAAA, "www.example", [_aaaa("www.example", "2001:db8::1", 60)])
    assert succeeded(d) == [
        IPv6Address("TCP", "2001:db8::1", 443),
        IPv4Address("TCP", "192.0.2.2", 443),
        IPv4Address("TCP", "192.0.2.1", 443),
    ]


def test_answersKeptForTheirTTL() -> None:
    """
    An answer is kept for the shortest TTL of its records, CNAMEs included:
    until then no query is made; after, the DNS is asked again.
    """
    resolver, client, clock = _resolver()
    _known(
        client,
        "www.example",
        v4=[
            _cname("www.example", "cdn.example", 30),
            _a("cdn.example", "192.0.2.1", 300),
        ],
    )
    first = _addresses(resolver, "www.example")
    assert first == [IPv4Address("TCP", "192.0.2.1", 443)]
    assert len(client.asked) == 2
    clock.advance(29)
    assert _addresses(resolver, "www.example", 80) == [
        IPv4Address("TCP", "192.0.2.1", 80)
    ]
    assert len(client.asked) == 2
    clock.advance(1)
    _addresses(resolver, "www.example")
    assert client.asked[2:] == [(dns.A, "www.example")]


def test_longTTLsCapped() -> None:
    """
    No answer is kept longer than L{MAX_TTL}.
    """
    resolver, client, clock = _resolver()
    long = [_a("www.example", "192.0.2.1", 10 * MAX_TTL)]
    _known(client, "www.example", long, [_aaaa("www.example", "::2", 10 * MAX_TTL)])
    _addresses(resolver, "www.example")
    clock.advance(MAX_TTL - 1)
    _addresses(resolver, "www.example")
    assert len(client.asked) == 2
    clock.advance(1)
    _addresses(resolver, "www.example")
    assert client.asked[2:] == [(dns.AAAA, "www.example"), (dns.A, "www.example")]


def test_noDataKeptForNegativeTTL() -> None:
    """
    A record type the name does not have (an empty answer with the zone's
    SOA) is remembered for the smaller of the SOA's TTL and minimum.
    """
    resolver, client, clock = _resolver()
    _known(
        client,
        "v4only.example",
        v4=[_a("v4only.example", "192.0.2.1", 600)],
        authority=[_soa(ttl=120, minimum=60)],
    )
    _addresses(resolver, "v4only.example")
    clock.advance(59)
    _addresses(resolver, "v4only.example")
    assert len(client.asked) == 2
    clock.advance(1)
    _addresses(resolver, "v4only.example")
    assert client.asked[2:] == [(dns.AAAA, "v4only.example")]


def test_missingNameRemembered() -> None:
    """
    A name that does not exist (NXDOMAIN) has no address, and is
    remembered for its SOA's negative TTL, at most L{MAX_NEGATIVE_TTL}.
    """
    resolver, client, clock = _resolver()
    message = dns.Message(rCode=dns.ENAME)
    message.authority = [_soa(ttl=10 * MAX_NEGATIVE_TTL, minimum=10 * MAX_NEGATIVE_TTL)]
    for kind in (dns.A, dns.AAAA):
        client.answers[(kind, "nx.example")] = DNSNameError(message)
    assert _addresses(resolver, "nx.example") == []
    clock.advance(MAX_NEGATIVE_TTL - 1)
    assert _addresses(resolver, "nx.example") == []
    assert len(client.asked) == 2
    clock.advance(1)
    _addresses(resolver, "nx.example")
    assert len(client.asked) == 4


def test_failuresNotRemembered() -> None:
    """
    A query that fails (a timeout, a server failure, NXDOMAIN without an
    SOA) gives no address and is not remembered: the next lookup asks.
    """
    resolver, client, _ = _resolver()
    client.answers[(dns.A, "down.example")] = DNSQueryTimeoutError("down.example")
    client.answers[(dns.AAAA, "down.example")] = DNSNameError(dns.Message())
    assert _addresses(resolver, "down.example") == []
    assert _addresses(resolver, "down.example") == []
    assert len(client.asked) == 4
    assert len(resolver) == 0


def test_oneQueryForLookupsAtOnce() -> None:
    """
    Lookups of a name whose answer is awaited wait for that answer rather
    than asking again, and all get it.
    """
    resolver, client, _ = _resolver()
    first = _resolveWith(resolver, "www.example", 443)
    second = _resolveWith(resolver, "www.example", 8443)
    assert len(client.asked) == 2
    client.answer(dns.A, "www.example", [_a("www.example", "192.0.2.1", 60)])
    client.answer(dns.AAAA, "www.example", [])
    assert succeeded(first) == [IPv4Address("TCP", "192.0.2.1", 443)]
    assert succeeded(second) == [IPv4Address("TCP", "192.0.2.1", 8443)]


def test_cacheBounded() -> None:
    """
    The cache keeps at most C{size} answers, dropping the least recently
    used first; a size of 0 keeps nothing.
    """
    resolver, client, _ = _resolver(size=4)
    for name in ("a.example", "b.example", "c.example"):
        _known(client, name, v4=[_a(name, "192.0.2.1", 60)])
    _addresses(resolver, "a.example")
    _addresses(resolver, "b.example")
    _addresses(resolver, "a.example")  # Now b is the least recently used.
    _addresses(resolver, "c.example")
    assert len(resolver) == 4
    asked = len(client.asked)
    _addresses(resolver, "a.example")
    assert len(client.asked) == asked
    _addresses(resolver, "b.example")
    assert len(client.asked) == asked + 2
    resolver.size = 0
    _known(client, "d.example", v4=[_a("d.example", "192.0.2.1", 60)])
    _addresses(resolver, "d.example")
    assert len(resolver) == 0
    _addresses(resolver, "d.example")
    assert len(client.asked) == asked + 6


def test_addressTypesFilter() -> None:
    """
    Only the address types asked for are delivered.
    """
    resolver, client, _ = _resolver()
    _known(
        client,
        "dual.example",
        v4=[_a("dual.example", "192.0.2.1", 60)],
        v6=[_aaaa("dual.example", "2001:db8::1", 60)],
    )
    delivered: list[Any] = []

    @implementer(IResolutionReceiver)
    class Receiver:
        def resolutionBegan(self, resolution: Any) -> None:
            pass

        def addressResolved(self, address: Any) -> None:
            delivered.append(address)

        def resolutionComplete(self) -> None:
            delivered.append("done")

    resolver.resolveHostName(Receiver(), "Dual.Example.", 80, [IPv4Address])
    assert delivered == [IPv4Address("TCP", "192.0.2.1", 80), "done"]


def test_hostsFileFirst(tmp_path: Path) -> None:
    """
    Names in the hosts file are answered from it, without a query, and the
    file is read again when it changes (checked at most once a second).
    """
    path = tmp_path / "hosts"
    path.write_text(
        "# comment\n127.0.0.1 localhost\n192.0.2.7 Origin.Test alias\n::1 v6.test\n"
    )
    clock = Clock()
    client = FakeDNS()
    resolver = CachingDNSResolver(clock, client, 100, HostsFile(clock, str(path)))
    assert _addresses(resolver, "origin.test") == [IPv4Address("TCP", "192.0.2.7", 443)]
    assert _addresses(resolver, "alias") == [IPv4Address("TCP", "192.0.2.7", 443)]
    assert _addresses(resolver, "v6.test") == [IPv6Address("TCP", "::1", 443)]
    assert client.asked == []
    path.write_text("192.0.2.8 origin.test other.test\n")
    clock.advance(1)
    assert _addresses(resolver, "origin.test") == [IPv4Address("TCP", "192.0.2.8", 443)]
    _known(client, "alias", v4=[_a("alias", "198.51.100.1", 60)])
    assert _addresses(resolver, "alias") == [IPv4Address("TCP", "198.51.100.1", 443)]


def test_missingHostsFile(tmp_path: Path) -> None:
    """
    Without a hosts file every name goes to the DNS.
    """
    clock = Clock()
    hosts = HostsFile(clock, str(tmp_path / "none"))
    assert hosts.lookup("localhost") is None


def test_poolUsesItForTheStockResolver() -> None:
    """
    The resolver pool resolves with it in place of Twisted's stock
    resolver (C{getaddrinfo} in threads), under the same bounds; a reactor
    with a resolver of its own (a test's fake) keeps that.
    """
    resolver, client, _ = _resolver()
    _known(client, "www.example", v4=[_a("www.example", "192.0.2.1", 60)])
    reactor: Any = MemoryReactorClock()
    reactor.nameResolver = GAIResolver(reactor, getThreadPool=ThreadPool)
    pool = ResolverPool(reactor, 4, 2, dns=resolver)
    d = pool.resolve("127.0.0.1", "www.example", 443)
    assert succeeded(d) == [IPv4Address("TCP", "192.0.2.1", 443)]
    assert pool.running == 0


def test_factoryMakesIt() -> None:
    """
    The factory's resolver pool has a DNS resolver for C{--resolver dns}
    , made without touching the DNS, and none for
    C{system}; a reload switches between them and resizes the cache.
    """
    reactor = MemoryReactorClock()
    factory = ConnectProxyFactory(
        reactor, ProxySettings(resolver="dns", dnsCacheSize=10)
    )
    pool = factory.connectorContext().resolverPool
    assert isinstance(pool.dns, CachingDNSResolver)
    assert pool.dns.size == 10
    assert reactor.getDelayedCalls() == []
    assert pool.dns._resolver._client is None
    factory.reconfigure(ProxyConfig(settings=ProxySettings(resolver="system")))
    assert pool.dns is None
    factory.reconfigure(
        ProxyConfig(settings=ProxySettings(resolver="dns", dnsCacheSize=5))
    )
    assert isinstance(pool.dns, CachingDNSResolver) and pool.dns.size == 5
    kept = pool.dns
    factory.reconfigure(
        ProxyConfig(settings=ProxySettings(resolver="dns", dnsCacheSize=7))
    )
    assert pool.dns is kept and kept.size == 7


def test_dnsResolverReadsResolvConfOnFirstLookup(tmp_path: Path) -> None:
    """
    The DNS client of L{dnsResolver} is made at the first lookup that
    needs it (it reads resolv.conf and keeps a timer to read it again),
    and stopping lets that timer go.
    """
    resolvConf = tmp_path / "resolv.conf"
    resolvConf.write_text("nameserver 127.0.0.153\n")
    reactor = MemoryReactorClock()
    resolver = dnsResolver(reactor, 10, str(resolvConf))
    assert reactor.getDelayedCalls() == []
    resolver.addresses("www.example")

    def rereads() -> list[Any]:
        return [
            call
            for call in reactor.getDelayedCalls()
            if getattr(getattr(call, "func", None), "__name__", "")
            == "maybeParseConfig"
        ]

    assert len(rereads()) == 1
    resolver.stop()
    assert rereads() == []


@pytest.mark.parametrize("size", [0, 1])
def test_sizeZeroOrOne(size: int) -> None:
    """
    Tiny caches work: 0 keeps nothing, 1 keeps the last answer.
    """
    resolver, client, _ = _resolver(size=size)
    _known(client, "www.example", v4=[_a("www.example", "192.0.2.1", 60)])
    _addresses(resolver, "www.example")
    assert len(resolver) == size


class SearchingDNS(FakeDNS):
    """
    A fake DNS client with search domains, as resolv.conf's C{search} line
    gives them.
    """

    def __init__(self, *domains: str) -> None:
        super().__init__()
        self.domains = list(domains)

    def searchDomains(self) -> list[str]:
        return self.domains


def test_singleLabelSearched() -> None:
    """
    A name of one label is looked up in each search domain in turn, then
    as it is: the first with an address wins.  A longer name is looked up
    as it is only.
    """
    clock = Clock()
    client = SearchingDNS("corp.example", "example")
    resolver = CachingDNSResolver(clock, client, 100)
    _known(client, "intranet.corp.example")
    _known(client, "intranet.example", v4=[_a("intranet.example", "192.0.2.9", 60)])
    assert _addresses(resolver, "intranet") == [IPv4Address("TCP", "192.0.2.9", 443)]
    assert [name for _, name in client.asked] == [
        "intranet.corp.example",
        "intranet.corp.example",
        "intranet.example",
        "intranet.example",
    ]
    _known(client, "host.example")
    assert _addresses(resolver, "host.example") == []
    assert client.asked[4:] == [(dns.AAAA, "host.example"), (dns.A, "host.example")]


def test_singleLabelItselfLast() -> None:
    """
    When no search domain has the name, the name itself is looked up last;
    every answer is cached, so the next lookup asks nothing.
    """
    clock = Clock()
    client = SearchingDNS("corp.example")
    resolver = CachingDNSResolver(clock, client, 100)
    _known(client, "printer.corp.example")
    _known(client, "printer", v6=[_aaaa("printer", "2001:db8::7", 60)])
    assert _addresses(resolver, "printer") == [IPv6Address("TCP", "2001:db8::7", 443)]
    assert len(client.asked) == 4
    _addresses(resolver, "printer")
    assert len(client.asked) == 4


def test_searchDomainsFromResolvConf(tmp_path: Path) -> None:
    """
    The search domains come from resolv.conf's C{search} line, or its
    C{domain} line.
    """
    reactor = MemoryReactorClock()
    for text, domains in (
        (
            "nameserver 127.0.0.153\nsearch Corp.Example. example\n",
            ["corp.example", "example"],
        ),
        ("nameserver 127.0.0.153\ndomain lan\n", ["lan"]),
        ("nameserver 127.0.0.153\n", []),
    ):
        resolvConf = tmp_path / "resolv.conf"
        resolvConf.write_text(text)
        resolver = dnsResolver(reactor, 10, str(resolvConf))
        assert resolver._searchDomains() == domains
        resolver.stop()


@pytest.mark.parametrize(
    ("nsswitch", "resolvConf", "chosen", "why"),
    [
        (None, "nameserver 127.0.0.53\n", "dns", "no "),
        ("hosts: files dns\n", "options ndots:1\n", "dns", "files dns"),
        ("passwd: files\nhosts:   dns   files # x\n", "", "dns", "dns files"),
        ("hosts: files ldap dns\n", "", "system", "files ldap dns"),
        ("hosts: files mdns4_minimal [NOTFOUND=return] dns\n", "", "system", "mdns"),
        ("hosts: files dns [!UNAVAIL=return]\n", "", "system", "UNAVAIL"),
        ("hosts: files\n", "", "system", "hosts: files,"),
        ("passwd: files\n", "", "system", "(none)"),
        ("hosts: files dns\n", "search a.svc\noptions ndots:5\n", "system", "ndots:5"),
        (None, "options rotate ndots:2 timeout:1\n", "system", "ndots:2"),
    ],
)
def test_chooseResolver(
    tmp_path: Path, nsswitch: str | None, resolvConf: str, chosen: str, why: str
) -> None:
    """
    C{--resolver auto} chooses C{dns} only where nsswitch.conf is missing
    or says exactly C{files dns} (or C{dns files}) and resolv.conf sets no
    C{ndots} above 1; C{system} otherwise, saying why.
    """
    nsswitchPath = tmp_path / "nsswitch.conf"
    if nsswitch is not None:
        nsswitchPath.write_text(nsswitch)
    resolvPath = tmp_path / "resolv.conf"
    resolvPath.write_text(resolvConf)
    result = chooseResolver(str(nsswitchPath), str(resolvPath))
    assert result[0] == chosen
    assert why in result[1]


def test_autoChosenAtStartAndReload(logEvents: list[LogEvent]) -> None:
    """
    With C{--resolver auto} (the default) the factory asks which resolver
    to use at start and at each reload, and logs one C{resolver_chosen}
    event each time.
    """
    choices = [("system", "because"), ("dns", "now dns")]
    reactor = MemoryReactorClock()

    class Factory(ConnectProxyFactory):
        @staticmethod
        def chooseResolver() -> tuple[str, str]:  # type: ignore[override]
            return choices.pop(0)

    assert ProxySettings().resolver == "auto"
    factory = Factory(reactor, ProxySettings())
    pool = factory.connectorContext().resolverPool
    assert pool.dns is None
    factory.reconfigure(ProxyConfig(settings=ProxySettings()))
    assert isinstance(pool.dns, CachingDNSResolver)
    chosen = [e for e in logEvents if e.get("event") == "resolver_chosen"]
    assert [(e["chosen"], e["why"]) for e in chosen] == [
        ("system", "because"),
        ("dns", "now dns"),
    ]


def _proxyOverDNS(perClient: int = 1) -> tuple[ProxyHarness, ResolverPool, FakeDNS]:
    """
    A proxy whose direct connector resolves on a pool over a
    L{CachingDNSResolver} whose DNS never answers (unless told to).
    """
    harness = ProxyHarness(ProxySettings(connectTimeout=10))
    clock: Any = harness.clock
    clock.nameResolver = GAIResolver(clock, getThreadPool=ThreadPool)
    client = FakeDNS()
    pool = ResolverPool(clock, 4, perClient, dns=CachingDNSResolver(clock, client))
    harness.factory.connector = DirectConnector(clock, 10, resolver=pool)
    return harness, pool, client


def test_abandonedDNSLookupFreesItsSlotAtTheDeadline() -> None:
    """
    A DNS lookup that never answers holds its client's slot only until
    its request's connect deadline: right after the 504 the slot is free,
    and the client's next lookup starts at once.  A late answer is kept
    for the next asker and changes nothing else.
    """
    harness, pool, client = _proxyOverDNS()
    first = harness.connectClient(IPv4Address("TCP", "127.0.0.1", 40000))
    first.send(connectHead("slow.example:443"))
    assert (pool.running, pool.waiting()) == (1, 0)
    harness.clock.advance(10)
    assert first.response().status == 504
    assert pool.running == 0
    second = harness.connectClient(IPv4Address("TCP", "127.0.0.1", 40001))
    second.send(connectHead("other.example:443"))
    assert (pool.running, pool.waiting()) == (1, 0)
    client.answer(dns.A, "slow.example", [_a("slow.example", "192.0.2.1", 60)])
    client.answer(dns.AAAA, "slow.example", [])
    assert pool.running == 1


def test_abandonedDNSLookupFreesItsSlotWhenTheClientLeaves() -> None:
    """
    A client that leaves while its DNS lookup runs frees its slot at once.
    """
    harness, pool, _ = _proxyOverDNS()
    first = harness.connectClient(IPv4Address("TCP", "127.0.0.1", 40000))
    first.send(connectHead("slow.example:443"))
    assert pool.running == 1
    first.lose()
    assert pool.running == 0
    second = harness.connectClient(IPv4Address("TCP", "127.0.0.1", 40001))
    second.send(connectHead("other.example:443"))
    assert (pool.running, pool.waiting()) == (1, 0)


@pytest.mark.parametrize(
    ("options", "deadline", "timeouts"),
    [
        ("", None, (5.0, 5.0)),
        ("", 10.0, (5.0, 5.0)),
        ("", 7.0, (5.0, 2.0)),
        ("", 3.0, (3.0,)),
        ("options timeout:1 attempts:3\n", 10.0, (1.0, 1.0, 1.0)),
        ("options attempts:9 timeout:0\n", None, (1.0,) * 5),
        ("options timeout:x attempts:\n", None, (5.0, 5.0)),
    ],
)
def test_queryTimeouts(
    tmp_path: Path,
    options: str,
    deadline: float | None,
    timeouts: tuple[float, ...],
) -> None:
    """
    DNS queries wait as resolv.conf's C{timeout} and C{attempts} say
    (glibc's 5 s and 2 by default, bounded as glibc bounds them), cut to
    end within the connect deadline.
    """
    resolvConf = tmp_path / "resolv.conf"
    resolvConf.write_text("nameserver 127.0.0.153\n" + options)
    assert queryTimeouts(str(resolvConf), deadline) == timeouts


class _UDPPort:
    """
    A UDP port of L{UDPMemoryReactor}: what is written is kept.
    """

    def __init__(self, reactor: UDPMemoryReactor, protocol: Any) -> None:
        self._reactor = reactor
        self.protocol = protocol
        self.written: list[tuple[bytes, Any]] = []

    def write(self, data: bytes, address: Any) -> None:
        self.written.append((data, address))

    def stopListening(self) -> None:
        self._reactor.udpOpen.remove(self)
        self.protocol.doStop()


class UDPMemoryReactor(MemoryReactorClock):
    """
    A memory reactor with UDP ports that send nowhere.

    @ivar udpOpen: The ports listening now.
    """

    def __init__(self) -> None:
        super().__init__()
        self.udpOpen: list[_UDPPort] = []

    def listenUDP(self, port: int, protocol: Any, *args: Any, **kw: Any) -> _UDPPort:
        udp = _UDPPort(self, protocol)
        self.udpOpen.append(udp)
        protocol.makeConnection(udp)
        return udp


def test_unansweredQueryEndsWithinTheDeadline(tmp_path: Path) -> None:
    """
    The real DNS client's query that gets no answer fails once the
    resolv.conf timeouts (within the connect deadline) have passed, not
    after Twisted's 60 s; the lookup ends with no address, and a reload's
    new deadline applies to the next query.
    """
    resolvConf = tmp_path / "resolv.conf"
    resolvConf.write_text("nameserver 127.0.0.153\n")
    reactor = UDPMemoryReactor()
    resolver = dnsResolver(reactor, 10, str(resolvConf), deadline=8)
    d = resolver.addresses("www.example")
    assert len(reactor.udpOpen) == 2
    reactor.advance(5)
    assert not d.called
    reactor.advance(3)
    assert succeeded(d) == ((), ())
    assert reactor.udpOpen == []
    resolver.setDeadline(2)
    d = resolver.addresses("www.example")
    reactor.advance(1.9)
    assert not d.called
    reactor.advance(0.1)
    assert succeeded(d) == ((), ())
    assert reactor.udpOpen == []
    resolver.stop()
    assert reactor.getDelayedCalls() == []


def test_lookupsLogNothing(tmp_path: Path, logEvents: list[LogEvent]) -> None:
    """
    The DNS client's per-query machinery (its UDP port and protocol
    starting and stopping, its first reading of resolv.conf) logs nothing
    the proxy's log keeps: its protocols are not noisy, and what its ports
    log is marked so that the proxy's level filter leaves it out.
    """
    resolvConf = tmp_path / "resolv.conf"
    resolvConf.write_text("nameserver 127.0.0.153\n")
    reactor = UDPMemoryReactor()
    resolver = dnsResolver(reactor, 10, str(resolvConf), deadline=4)
    kept: list[LogEvent] = []
    keep = LevelFilter(cast(ILogObserver, kept.append), levelPredicate("debug"))
    d = resolver.addresses("www.example")
    assert [port.protocol.noisy for port in reactor.udpOpen] == [False, False]
    reactor.advance(4)
    assert succeeded(d) == ((), ())
    resolver.stop()
    for event in logEvents:
        keep(event)
    assert [formatEvent(e) for e in kept] == []
    # What the ports of a real reactor log is left out too.
    marked: list[LogEvent] = []
    observer = cast(ILogObserver, marked.append)
    globalLogPublisher.addObserver(observer)
    try:
        _quietly(log.msg, "(UDP Port 4242 Closed)")
    finally:
        globalLogPublisher.removeObserver(observer)
    assert len(marked) == 1
    keep(marked[0])
    assert kept == []


@pytest.mark.parametrize(
    ("error", "why"),
    [
        (DNSServerError("servfail"), "SERVFAIL"),
        (DNSQueryRefusedError("refused"), "REFUSED"),
        (DNSQueryTimeoutError(1), "timeout"),
    ],
)
def test_serverFailureToldApart(error: Exception, why: str) -> None:
    """
    A name the DNS failed to answer for (a server failure, a refusal, no
    answer in time) fails with L{DNSServerFailure} saying what went wrong;
    a name that does not exist or has no address resolves to no address,
    as before.
    """
    resolver, client, _ = _resolver()
    client.answers[(dns.A, "broken.example")] = error
    client.answers[(dns.AAAA, "broken.example")] = error
    client.answers[(dns.A, "gone.example")] = DNSNameError("nxdomain")
    client.answers[(dns.AAAA, "gone.example")] = DNSNameError("nxdomain")
    _known(client, "empty.example")
    failures: list[Any] = []
    resolver.resolve("broken.example", 443).addErrback(failures.append)
    [failure] = failures
    assert failure.check(DNSServerFailure)
    assert str(failure.value) == (
        f"DNS lookup failed: the DNS server failed for broken.example ({why})."
    )
    assert succeeded(resolver.resolve("gone.example", 443)) == []
    assert succeeded(resolver.resolve("empty.example", 443)) == []


def test_serverFailureAnswered502(logEvents: list[LogEvent]) -> None:
    """
    Through the proxy, a DNS server failure is answered 502 with its own
    reason, logged in one C{connect_failed} event that says what went
    wrong; a missing name keeps its reason.
    """
    harness, _, client = _proxyOverDNS(perClient=2)
    client.answers[(dns.A, "broken.example")] = DNSServerError("servfail")
    client.answers[(dns.AAAA, "broken.example")] = DNSServerError("servfail")
    _known(client, "empty.example")
    broken = harness.connectClient(IPv4Address("TCP", "127.0.0.1", 40000))
    broken.send(connectHead("broken.example:443"))
    response = broken.response()
    assert response.status == 502
    assert b"the DNS server failed to resolve the target host" in response.body
    empty = harness.connectClient(IPv4Address("TCP", "127.0.0.1", 40001))
    empty.send(connectHead("empty.example:443"))
    assert empty.response().status == 502
    assert b"could not resolve the target host" in empty.response().body
    [failed, _] = [e for e in logEvents if e.get("event") == "connect_failed"]
    assert failed["error"] == (
        "DNS lookup failed: the DNS server failed for broken.example (SERVFAIL)."
    )
