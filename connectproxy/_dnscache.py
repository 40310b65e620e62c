# -*- test-case-name: tests.test_dnscache -*-
"""
C{--resolver dns}: names resolved by a DNS client on the reactor
(C{twisted.names}), with a bounded cache that keeps each answer for its
TTL (L{CachingDNSResolver}).

The system resolver (C{getaddrinfo}) blocks a thread per lookup and tells
nothing of how long an answer stays true, so nothing can be cached safely
and every tunnel to a name costs a lookup (two queries, A and AAAA).  A DNS
client gets the TTL of each record: an address is reused until its TTL
runs out, and a name or a record type that does not exist is remembered as
long as its zone's SOA says (RFC 2308 section 5).
"""

from __future__ import annotations

import os
import socket
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet._resolver import HostResolution
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import (
    IAddress,
    IHostnameResolver,
    IHostResolution,
    IReactorTime,
    IResolutionReceiver,
)
from twisted.names import dns
from twisted.names.error import (
    DNSNameError,
    DNSQueryRefusedError,
    DNSQueryTimeoutError,
    DNSServerError,
)
from twisted.python import log
from twisted.python.failure import Failure
from zope.interface import implementer

from ._resolvconf import (
    HostsFile,
    chooseResolver,
    queryTimeouts,
)

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "MAX_NEGATIVE_TTL",
    "MAX_TTL",
    "CachingDNSResolver",
    "DNSServerFailure",
    "HostsFile",
    "chooseResolver",
    "dnsResolver",
    "queryTimeouts",
]

#: How many answers (one per name and record type) the cache keeps.
DEFAULT_CACHE_SIZE = 4096

#: The longest an address is kept, whatever its TTL says (seconds): six
#: hours, as squid's C{positive_dns_ttl}.
MAX_TTL = 6 * 3600

#: The longest a name or record type that does not exist is remembered
#: (seconds), whatever its zone's SOA says: RFC 2308 section 5 suggests one
#: to three hours.
MAX_NEGATIVE_TTL = 3600

_TYPES = (dns.AAAA, dns.A)


class DNSServerFailure(DNSLookupError):
    """
    The DNS gave no answer for a name (a server failure, a refusal, no
    answer in time), rather than saying it has no address: the proxy
    answers 502 with L{REASON}.
    """

    #: The reason the client is told.
    REASON = "the DNS server failed to resolve the target host"


class _NoAnswer(tuple[str, ...]):
    """
    No addresses because the DNS failed, not because there are none.

    @ivar why: What went wrong (C{SERVFAIL}, C{REFUSED}, C{timeout}, ...).
    """

    why: str


def _noAnswer(why: str) -> _NoAnswer:
    result = _NoAnswer()
    result.why = why
    return result


def _why(failure: Failure) -> str:
    """
    What a failed query's failure says went wrong, in a word.
    """
    if failure.check(DNSServerError):
        return "SERVFAIL"
    if failure.check(DNSQueryRefusedError):
        return "REFUSED"
    if failure.check(DNSQueryTimeoutError, TimeoutError, defer.TimeoutError):
        return "timeout"
    return type(failure.value).__name__


@dataclass(frozen=True, slots=True)
class _Answer:
    """
    What the DNS said for one name and record type.

    @ivar addresses: The addresses, as text (empty: none).
    @ivar expires: When to ask again (the clock's seconds).
    """

    addresses: tuple[str, ...]
    expires: float


@implementer(IHostnameResolver)
class CachingDNSResolver:
    """
    Resolves names with a DNS client (an L{twisted.names} C{IResolver}),
    after the hosts file, and keeps the answers for their TTL.

    Each name's A and AAAA records are asked for at once and cached apart:
    an answer with addresses for the shortest TTL of its records (the
    CNAMEs leading to them included), one without (the name or the type
    does not exist) for the negative TTL of the SOA that came with it, and
    a failure (no answer, a server failure) not at all.  Lookups of a name
    already asked for wait for that answer instead of asking again.  The
    cache keeps at most L{size} answers, dropping the least recently used.

    Addresses come IPv6 first (RFC 8305 section 4), each family in the
    order the DNS gave them.  A name of one label is looked up in each
    search domain of C{resolv.conf} first, then as it is, as the system
    resolver does with its default C{ndots:1}; a longer name as it is.

    @ivar size: The most answers kept.
    """

    def __init__(
        self,
        clock: IReactorTime,
        resolver: Any,
        size: int = DEFAULT_CACHE_SIZE,
        hosts: HostsFile | None = None,
        maxTTL: float = MAX_TTL,
        maxNegativeTTL: float = MAX_NEGATIVE_TTL,
    ) -> None:
        """
        @param clock: Where the time comes from.
        @param resolver: The DNS client: its C{lookupAddress} and
            C{lookupIPV6Address} (L{twisted.names.client.Resolver}).
        @param size: The most answers kept (0: none).
        @param hosts: Read before the DNS; none when C{None}.
        @param maxTTL: The longest an address is kept, in seconds.
        @param maxNegativeTTL: The longest a missing name is remembered.
        """
        self._clock = clock
        self._resolver = resolver
        self.size = size
        self._hosts = hosts
        self._maxTTL = maxTTL
        self._maxNegativeTTL = maxNegativeTTL
        self._cache: OrderedDict[tuple[str, int], _Answer] = OrderedDict()
        self._asking: dict[tuple[str, int], list[Deferred[tuple[str, ...]]]] = {}

    def __len__(self) -> int:
        """
        @return: How many answers are kept now.
        """
        return len(self._cache)

    def setDeadline(self, deadline: float) -> None:
        """
        Bound the DNS client's queries by a new connect deadline (a
        reload), if it takes one (its C{deadline}).

        @param deadline: Seconds.
        """
        if hasattr(self._resolver, "deadline"):
            self._resolver.deadline = deadline

    def stop(self) -> None:
        """
        Let the DNS client go, if it can be (the proxy stops); the cache
        stays.
        """
        stop = getattr(self._resolver, "stop", None)
        if stop is not None:
            stop()

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Sequence[type[IAddress]] | None = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        """
        Resolve C{hostName}, from the hosts file, the cache or the DNS; the
        receiver learns every address, then that the resolution is
        complete (with no address when the name has none or the DNS
        failed).  See L{IHostnameResolver.resolveHostName}.
        """
        resolution = HostResolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)
        name = hostName.lower().rstrip(".")
        wanted: Sequence[type[IAddress]] = (
            (IPv6Address, IPv4Address) if addressTypes is None else addressTypes
        )

        def deliver(families: tuple[Sequence[str], Sequence[str]]) -> None:
            for addressType, addresses in zip(
                (IPv6Address, IPv4Address), families, strict=True
            ):
                if addressType in wanted:
                    for address in addresses:
                        resolutionReceiver.addressResolved(
                            addressType(transportSemantics, address, portNumber)
                        )
            resolutionReceiver.resolutionComplete()

        self.addresses(name).addCallback(deliver)
        return resolution

    def resolve(self, host: str, port: int) -> Deferred[list[Any]]:
        """
        The addresses of C{host}, IPv6 first.

        @param host: A host name.
        @param port: The port of the addresses.
        @return: A Deferred firing with the L{IPv6Address} and
            L{IPv4Address} objects (possibly none: the name or its records
            do not exist), or failing with L{DNSServerFailure} when there
            is none because the DNS failed to answer.
        """
        name = host.lower().rstrip(".")

        def found(families: tuple[Sequence[str], Sequence[str]]) -> list[Any]:
            v6, v4 = families
            if not v6 and not v4:
                whys = [f.why for f in families if isinstance(f, _NoAnswer)]
                whys = sorted(set(whys), key=whys.index)
                if whys:
                    raise DNSServerFailure(
                        f"the DNS server failed for {host} ({', '.join(whys)})"
                    )
            return [IPv6Address("TCP", a, port) for a in v6] + [
                IPv4Address("TCP", a, port) for a in v4
            ]

        return self.addresses(name).addCallback(found)

    def addresses(self, name: str) -> Deferred[tuple[Sequence[str], Sequence[str]]]:
        """
        The IPv6 and IPv4 addresses of C{name}, each possibly empty.

        @param name: A host name, lower-case, without a trailing dot.
        @return: A Deferred that never fails (already fired when the hosts
            file or the cache knows the name).
        """
        if self._hosts is not None:
            known = self._hosts.lookup(name)
            if known is not None:
                return succeed(known)
        if "." in name:
            return self._both(name)
        # A single label: the search domains first, then the name itself,
        # as the system resolver does (resolv.conf's default ndots:1).
        candidates = [f"{name}.{domain}" for domain in self._searchDomains()]
        candidates.append(name)

        def tryNext(found: tuple[Sequence[str], Sequence[str]], index: int) -> Any:
            if found[0] or found[1] or index == len(candidates):
                return found
            return self._both(candidates[index]).addCallback(tryNext, index + 1)

        return self._both(candidates[0]).addCallback(tryNext, 1)

    def _searchDomains(self) -> Sequence[str]:
        """
        The search domains of the DNS client's configuration (its
        C{searchDomains()}, if it has one).
        """
        domains = getattr(self._resolver, "searchDomains", None)
        return () if domains is None else domains()

    def _both(self, name: str) -> Deferred[tuple[Sequence[str], Sequence[str]]]:
        """
        The IPv6 and IPv4 addresses of exactly C{name}.
        """
        v6, v4 = (self._lookup(name, kind) for kind in _TYPES)
        if v6.called and v4.called:
            # Both cached: no Deferred chain to wait through.
            return succeed((_result(v6), _result(v4)))
        result: Deferred[tuple[Sequence[str], Sequence[str]]] = Deferred()
        found: dict[int, tuple[str, ...]] = {}

        def one(addresses: tuple[str, ...], kind: int) -> None:
            found[kind] = addresses
            if len(found) == 2:
                result.callback((found[dns.AAAA], found[dns.A]))

        v6.addCallback(one, dns.AAAA)
        v4.addCallback(one, dns.A)
        return result

    def _lookup(self, name: str, kind: int) -> Deferred[tuple[str, ...]]:
        """
        The addresses of one record type, from the cache or the DNS.
        """
        key = (name, kind)
        cached = self._cache.get(key)
        if cached is not None:
            if cached.expires > self._clock.seconds():
                self._cache.move_to_end(key)
                return succeed(cached.addresses)
            del self._cache[key]
        waiting: Deferred[tuple[str, ...]] = Deferred()
        asking = self._asking.get(key)
        if asking is not None:
            asking.append(waiting)
            return waiting
        self._asking[key] = [waiting]
        ask = (
            self._resolver.lookupIPV6Address
            if kind == dns.AAAA
            else self._resolver.lookupAddress
        )
        try:
            query: Deferred[Any] = ask(name)
        except Exception:
            query = Deferred()
            query.errback()
        query.addCallbacks(
            self._answered,
            self._failed,
            callbackArgs=(key,),
            errbackArgs=(key,),
        )
        return waiting

    def _answered(
        self, sections: tuple[list[Any], list[Any], list[Any]], key: tuple[str, int]
    ) -> None:
        answers, authority, _ = sections
        kind = key[1]
        addresses = []
        ttls = []
        for record in answers:
            if record.type == kind:
                addresses.append(_text(record.payload, kind))
                ttls.append(record.ttl)
            elif record.type == dns.CNAME:
                ttls.append(record.ttl)
        if addresses:
            self._finish(key, tuple(addresses), min(min(ttls), self._maxTTL))
        else:
            self._finish(key, (), _negativeTTL(authority, self._maxNegativeTTL))

    def _failed(self, failure: Failure, key: tuple[str, int]) -> None:
        if failure.check(DNSNameError):
            # The name does not exist (NXDOMAIN): as long as its SOA says.
            args = getattr(failure.value, "args", ())
            message = args[0] if args else None
            authority = getattr(message, "authority", [])
            self._finish(key, (), _negativeTTL(authority, self._maxNegativeTTL))
        else:
            # No answer: not remembered, and told apart from no address.
            self._finish(key, _noAnswer(_why(failure)), None)

    def _finish(
        self, key: tuple[str, int], addresses: tuple[str, ...], ttl: float | None
    ) -> None:
        """
        Keep an answer for C{ttl} seconds (not at all when C{None} or not
        positive) and hand it to everyone waiting for it.
        """
        cache = self._cache
        if ttl is not None and ttl > 0 and self.size > 0:
            cache[key] = _Answer(addresses, self._clock.seconds() + ttl)
            cache.move_to_end(key)
        while len(cache) > self.size:
            cache.popitem(last=False)
        for waiting in self._asking.pop(key, []):
            waiting.callback(addresses)


def _result(d: Deferred[tuple[str, ...]]) -> tuple[str, ...]:
    """
    The result of a Deferred that has fired with addresses.
    """
    results: list[tuple[str, ...]] = []
    d.addCallback(results.append)
    return results[0]


def _text(payload: Any, kind: int) -> str:
    """
    An A or AAAA record's address as text.
    """
    if kind == dns.A:
        return str(payload.dottedQuad())
    return socket.inet_ntop(socket.AF_INET6, payload.address)


def _negativeTTL(authority: list[Any], cap: float) -> float | None:
    """
    How long a negative answer stays true: the smaller of its SOA record's
    TTL and the SOA's minimum field (RFC 2308 section 5), at most C{cap};
    C{None} (not cached) without an SOA.
    """
    for record in authority:
        if record.type == dns.SOA:
            return float(min(record.ttl, record.payload.minimum, cap))
    return None


#: The log context key of the events of the DNS client's own machinery
#: (each query's UDP port starting and closing, the first reading of
#: C{resolv.conf}), which the proxy's log leaves out
#: (L{LevelFilter <connectproxy._loglevel.LevelFilter>}).
QUIET = "connectproxy_dns_quiet"


def _quietly(f: Any, *args: Any) -> Any:
    """
    Call C{f} with the log events it emits marked L{QUIET}.
    """
    return log.callWithContext({QUIET: True}, f, *args)


class _QuietReactor:
    """
    The reactor as the DNS client sees it: each query's UDP port (one per
    query, from a random source port) and its protocol log nothing when
    they start and stop, where Twisted logs four lines a query.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def listenUDP(self, port: int, protocol: Any, *args: Any, **kw: Any) -> Any:
        protocol.noisy = False
        udpPort = _quietly(lambda: self._reactor.listenUDP(port, protocol, *args, **kw))
        connectionLost = getattr(udpPort, "connectionLost", None)
        if connectionLost is not None:
            # Logs "(UDP Port N Closed)" a reactor turn after stopListening.
            udpPort.connectionLost = lambda *a: _quietly(connectionLost, *a)
        return udpPort


class _LazyClient:
    """
    A L{twisted.names.client.Resolver} made at its first lookup (it reads
    C{resolv.conf} and keeps a timer to read it again when it changes), and
    let go by L{stop}.  Its queries wait as long as C{resolv.conf}'s
    C{timeout} and C{attempts} say, within L{deadline} (L{queryTimeouts}),
    rather than Twisted's 1 + 3 + 11 + 45 seconds.

    @ivar deadline: The connect deadline (seconds), or C{None}.
    """

    def __init__(
        self, reactor: Any, resolvConf: str, deadline: float | None = None
    ) -> None:
        self._reactor = reactor
        self._resolvConf = resolvConf
        self._client: Any = None
        self.deadline = deadline
        self._timeouts: tuple[float, ...] = ()
        self._stamp: tuple[float | None, float | None] | None = None

    def timeouts(self) -> tuple[float, ...]:
        """
        The timeouts of the next query (L{queryTimeouts}), read again when
        C{resolv.conf} or the deadline changes.
        """
        try:
            mtime: float | None = os.stat(self._resolvConf).st_mtime
        except OSError:
            mtime = None
        stamp = (mtime, self.deadline)
        if stamp != self._stamp:
            self._stamp = stamp
            self._timeouts = queryTimeouts(self._resolvConf, self.deadline)
        return self._timeouts

    def _get(self) -> Any:
        if self._client is None:
            from twisted.names.client import Resolver

            # Its first reading of resolv.conf logs that it "changed".
            self._client = _quietly(
                lambda: Resolver(
                    resolv=self._resolvConf, reactor=_QuietReactor(self._reactor)
                )
            )
        return self._client

    def lookupAddress(self, name: str) -> Deferred[Any]:
        client = self._get()
        return client.lookupAddress(name, self.timeouts())  # type: ignore[no-any-return]

    def lookupIPV6Address(self, name: str) -> Deferred[Any]:
        client = self._get()
        return client.lookupIPV6Address(name, self.timeouts())  # type: ignore[no-any-return]

    def searchDomains(self) -> list[str]:
        """
        The domains of C{resolv.conf}'s C{search} line, or of its C{domain}
        line.
        """
        client = self._get()
        domain = getattr(client, "domain", None)
        search = getattr(client, "search", None) or ([domain] if domain else [])
        return [
            d.decode("ascii", "replace").strip(".").lower()
            if isinstance(d, bytes)
            else str(d).strip(".").lower()
            for d in search
            if d
        ]

    def stop(self) -> None:
        """
        Stop reading C{resolv.conf} again (queries in flight still end).
        """
        client, self._client = self._client, None
        call = getattr(client, "_parseCall", None)
        if call is not None and call.active():
            call.cancel()


def dnsResolver(
    reactor: Any,
    size: int,
    resolvConf: str = "/etc/resolv.conf",
    deadline: float | None = None,
) -> CachingDNSResolver:
    """
    A L{CachingDNSResolver} over the name servers of C{resolvConf} (read
    again when it changes) and the hosts file, for C{--resolver dns}.  The
    DNS client is made at the first lookup that needs it.

    @param reactor: The reactor: its clock, and where the queries go.
    @param size: The most answers kept (C{--dns-cache-size}).
    @param deadline: The connect deadline (C{--connect-timeout}, seconds):
        no query waits longer (see L{CachingDNSResolver.setDeadline}).
    """
    return CachingDNSResolver(
        reactor, _LazyClient(reactor, resolvConf, deadline), size, HostsFile(reactor)
    )
