# -*- test-case-name: tests.test_resolver -*-
"""
Name resolution with bounded concurrency: L{ResolverPool}.

C{getaddrinfo} blocks, so names are resolved in threads.  Twisted's stock
resolver uses the reactor's shared pool of ten threads, which a few names
whose DNS server never answers fill up, so that every other client waits.
The pool here has its own threads, a bound on the lookups running at once,
and a share per client: a client over its share waits in its own queue,
clients take turns when the pool is full, and a waiting lookup is dropped as
soon as the request behind it is cancelled (its deadline passed, or its
client left).

A lookup that has started in a thread cannot be interrupted:
C{getaddrinfo} returns when the system resolver gives up.  Until then it
holds its thread and counts against its client's share, even if the client
has gone, so that a client cannot fill the pool by asking and leaving.  A
lookup on the DNS client of C{--resolver dns} holds no thread: its slot is
let go as soon as its request stops waiting, and its queries end by
themselves within their timeouts (its answer still goes to the cache).
"""

from __future__ import annotations

import queue
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from twisted.internet._resolver import GAIResolver
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import (
    IAddress,
    IHostnameResolver,
    IHostResolution,
    IResolutionReceiver,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from ._errors import LookupAbandoned, ResolverBusy

__all__ = ["LookupAbandoned", "ResolverBusy", "ResolverPool"]

Address: TypeAlias = IPv4Address | IPv6Address
_GetAddrInfo: TypeAlias = Callable[..., list[tuple[Any, ...]]]


@implementer(IResolutionReceiver)
class _Collector:
    """
    Collects the addresses of one resolution by an L{IHostnameResolver}
    into a Deferred, which fires when the resolution is complete.
    """

    def __init__(self) -> None:
        self.addresses: list[Address] = []
        self.deferred: Deferred[list[Address]] = Deferred()

    def resolutionBegan(self, resolutionInProgress: IHostResolution) -> None:
        pass

    def addressResolved(self, address: IAddress) -> None:
        if isinstance(address, IPv4Address | IPv6Address):
            self.addresses.append(address)

    def resolutionComplete(self) -> None:
        if not self.deferred.called:
            self.deferred.callback(self.addresses)


def _resolveWith(
    resolver: IHostnameResolver, host: str, port: int
) -> Deferred[list[Address]]:
    """
    Resolve C{host} with an L{IHostnameResolver}; the Deferred fires when it
    says the resolution is complete.
    """
    collector = _Collector()
    resolver.resolveHostName(collector, host, port)
    return collector.deferred


def _addresses(results: list[tuple[Any, ...]]) -> list[Address]:
    """
    Turn C{getaddrinfo} results into address objects, in order, without
    duplicates.
    """
    addresses: list[Address] = []
    for family, _, _, _, sockaddr in results:
        address: Address
        if family == socket.AF_INET:
            address = IPv4Address("TCP", sockaddr[0], sockaddr[1])
        elif family == socket.AF_INET6:
            address = IPv6Address("TCP", *sockaddr)
        else:
            continue
        if address not in addresses:
            addresses.append(address)
    return addresses


class _LookupThreads:
    """
    Threads that call C{getaddrinfo}, started as lookups need them.

    They are daemon threads and L{trim} does not wait for them: a thread
    stuck in a lookup that never ends must not keep the process from
    exiting (Twisted's L{ThreadPool} joins its threads when it stops).  The
    caller bounds how many lookups run at once; this starts a thread
    whenever more lookups run than there are threads to take them.
    """

    def __init__(self, callFromThread: Any, getaddrinfo: _GetAddrInfo) -> None:
        """
        @param callFromThread: Runs a function on the reactor thread
            (L{IReactorFromThreads.callFromThread}).
        @param getaddrinfo: What to call, with the signature of
            L{socket.getaddrinfo}.
        """
        self._callFromThread = callFromThread
        self._getaddrinfo = getaddrinfo
        self._jobs: queue.SimpleQueue[tuple[str, int, Deferred[Any]] | None]
        self._jobs = queue.SimpleQueue()
        # Lookups handed out and not delivered yet (reactor thread only).
        self._busy = 0
        # Threads alive, and how many of them are told to exit; a thread
        # that takes an exit order updates both.
        self._lock = threading.Lock()
        self._alive = 0
        self._exiting = 0
        self._started = 0

    @property
    def threads(self) -> int:
        """
        How many threads there are, not counting those told to exit.
        """
        with self._lock:
            return self._alive - self._exiting

    def lookup(self, host: str, port: int) -> Deferred[list[Address]]:
        """
        Resolve C{host} in a thread.

        @return: A Deferred firing on the reactor thread with the addresses,
            or failing with L{DNSLookupError} (or whatever else
            C{getaddrinfo} raised).  It cannot be cancelled.
        """
        d: Deferred[list[Address]] = Deferred()
        self._busy += 1
        with self._lock:
            start = self._busy > self._alive - self._exiting
            if start:
                self._alive += 1
                self._started += 1
        if start:
            threading.Thread(
                target=self._work,
                name=f"connectproxy-resolver-{self._started}",
                daemon=True,
            ).start()
        self._jobs.put((host, port, d))
        return d

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            host, port, d = job
            result: list[Address] | Failure
            try:
                result = _addresses(
                    self._getaddrinfo(
                        host.encode("ascii"), port, socket.AF_UNSPEC, socket.SOCK_STREAM
                    )
                )
            except (socket.gaierror, UnicodeError) as e:
                result = Failure(DNSLookupError(f"{host}: {e}"))
            except BaseException:
                result = Failure()
            self._callFromThread(self._deliver, d, result)
        with self._lock:
            self._alive -= 1
            self._exiting -= 1

    def _deliver(self, d: Deferred[list[Address]], result: Any) -> None:
        self._busy -= 1
        if isinstance(result, Failure):
            d.errback(result)
        else:
            d.callback(result)

    def trim(self, size: int) -> None:
        """
        Tell threads beyond C{size} to exit once they are idle (a thread in
        a lookup exits when the lookup ends).
        """
        with self._lock:
            excess = self._alive - self._exiting - size
            self._exiting += max(0, excess)
        for _ in range(excess):
            self._jobs.put(None)


@dataclass(eq=False)
class _Waiter:
    """
    One lookup asked for, from its request to its end.

    @ivar client: Whose share it counts against.
    @ivar deferred: What the requester holds.
    @ivar running: Whether it holds a slot.
    @ivar overShare: Whether it waited for its client's share (rather
        than for a free slot in the pool) when it was queued.
    @ivar interruptible: Whether its slot is let go when it is cancelled
        while it runs (a DNS query on the reactor, which holds no thread
        and ends by itself within its own timeouts), rather than when the
        lookup ends (a thread in C{getaddrinfo}).
    """

    client: str
    host: str
    port: int
    deferred: Deferred[list[Address]] = field(init=False, repr=False)
    running: bool = False
    interruptible: bool = False
    overShare: bool = False


class ResolverPool:
    """
    Resolves names with at most L{threads} lookups at once, and at most
    L{perClient} of them for one client; more wait, each client in its own
    queue, and clients take turns for free threads.

    @ivar threads: The most lookups at once.
    @ivar perClient: The most lookups at once for one client (0: no limit
        but L{threads}).
    @ivar dns: What replaces Twisted's stock resolver (C{--resolver dns}:
        a L{CachingDNSResolver <connectproxy._dnscache.CachingDNSResolver>}),
        or C{None} for C{getaddrinfo} on this pool's threads.
    """

    def __init__(
        self,
        reactor: Any,
        threads: int = 32,
        perClient: int = 8,
        resolver: IHostnameResolver | None = None,
        getaddrinfo: _GetAddrInfo = socket.getaddrinfo,
        dns: IHostnameResolver | None = None,
    ) -> None:
        """
        @param reactor: The reactor: its C{callFromThread} delivers results,
            and its C{nameResolver} is used when C{resolver} is C{None}.
        @param threads: The most lookups at once (at least 1).
        @param perClient: The most lookups at once for one client.
        @param resolver: Resolves names (under the same bounds) instead of
            C{getaddrinfo}.  When C{None}, the reactor's name resolver
            does, except that Twisted's stock one (C{getaddrinfo} on the
            reactor's shared thread pool) is replaced by C{getaddrinfo} on
            this pool's own threads.
        @param getaddrinfo: The function those threads call.
        @param dns: Replaces Twisted's stock resolver instead of those
            threads, under the same bounds (C{--resolver dns}).
        """
        self._reactor = reactor
        self._resolver = resolver
        self.dns = dns
        self._getaddrinfo = getaddrinfo
        self._lookupThreads: _LookupThreads | None = None
        self._running = 0
        self._runningFor: dict[str, int] = {}
        # Insertion order is the order in which clients get their turn.
        self._queues: dict[str, deque[_Waiter]] = {}
        self._dispatching = False
        self.threads = 1
        self.perClient = 0
        self.resize(threads, perClient)

    def resize(self, threads: int, perClient: int) -> None:
        """
        Change the bounds (a reload).  Lookups already running finish; no
        new one starts while more than the new bounds run.

        @raise ValueError: When C{threads} is less than 1 or C{perClient}
            is negative.
        """
        if threads < 1 or perClient < 0:
            raise ValueError("a resolver pool needs a thread, and shares are >= 0")
        self.threads = threads
        self.perClient = perClient
        if self._lookupThreads is not None:
            self._lookupThreads.trim(threads)
        self._dispatch()

    def stop(self) -> None:
        """
        Let every idle thread exit, and threads still in a lookup exit when
        it ends.  Lookups asked for later start threads again.
        """
        if self._lookupThreads is not None:
            self._lookupThreads.trim(0)
        stop = getattr(self.dns, "stop", None)
        if stop is not None:
            stop()

    @property
    def running(self) -> int:
        """
        How many lookups hold a thread now.
        """
        return self._running

    def waiting(self, client: str | None = None) -> int:
        """
        How many lookups wait for a thread (for C{client}, or in all).
        """
        if client is not None:
            return len(self._queues.get(client, ()))
        return sum(len(q) for q in self._queues.values())

    def resolve(self, client: str, host: str, port: int) -> Deferred[list[Address]]:
        """
        Resolve C{host} for C{client}.

        @param client: Who asks (a client's IP address); lookups are
            bounded per client.
        @param host: The name.
        @param port: The port, for the addresses.
        @return: A Deferred firing with the addresses (possibly none), or
            failing with L{DNSLookupError} or whatever the resolver failed
            with.  Cancelling it fails it at once with L{ResolverBusy}
            while it waits for a thread, or with L{LookupAbandoned} once it
            runs.
        """
        waiter = _Waiter(client, host, port)
        waiter.deferred = Deferred(lambda d: self._cancel(waiter))
        if self._queues.get(client) or not self._hasRoomFor(client):
            waiter.overShare = self._runningFor.get(client, 0) >= self._share()
            self._queues.setdefault(client, deque()).append(waiter)
        else:
            self._start(waiter)
        return waiter.deferred

    def _share(self) -> int:
        if self.perClient == 0:
            return self.threads
        return min(self.perClient, self.threads)

    def _hasRoomFor(self, client: str) -> bool:
        return (
            self._running < self.threads
            and self._runningFor.get(client, 0) < self._share()
        )

    def _start(self, waiter: _Waiter) -> None:
        waiter.running = True
        waiter.interruptible = self._onDNS()
        self._running += 1
        self._runningFor[waiter.client] = self._runningFor.get(waiter.client, 0) + 1
        d = maybeDeferred(self._lookup, waiter.host, waiter.port)
        d.addBoth(self._finished, waiter)

    def _onDNS(self) -> bool:
        """
        Whether lookups go to L{dns} (rather than to threads or to a
        resolver of the caller's).
        """
        return (
            self._resolver is None
            and self.dns is not None
            and isinstance(self._reactor.nameResolver, GAIResolver)
        )

    def _release(self, waiter: _Waiter) -> None:
        """
        Let go of a running lookup's slot.
        """
        self._running -= 1
        count = self._runningFor[waiter.client] - 1
        if count:
            self._runningFor[waiter.client] = count
        else:
            del self._runningFor[waiter.client]
        waiter.running = False

    def _lookup(self, host: str, port: int) -> Deferred[list[Address]]:
        resolver = self._resolver
        if resolver is None:
            resolver = self._reactor.nameResolver
            if isinstance(resolver, GAIResolver):
                if self.dns is not None:
                    resolve = getattr(self.dns, "resolve", None)
                    if resolve is not None:
                        # It tells a failed DNS apart from a name without
                        # addresses (DNSServerFailure).
                        return resolve(host, port)  # type: ignore[no-any-return]
                    return _resolveWith(self.dns, host, port)
                if self._lookupThreads is None:
                    self._lookupThreads = _LookupThreads(
                        self._reactor.callFromThread, self._getaddrinfo
                    )
                return self._lookupThreads.lookup(host, port)
        return _resolveWith(resolver, host, port)

    def _finished(self, result: object, waiter: _Waiter) -> None:
        if not waiter.running:
            # Its slot went when it was cancelled; the result is dropped.
            return
        self._release(waiter)
        if not waiter.deferred.called:
            if isinstance(result, Failure):
                waiter.deferred.errback(result)
            else:
                waiter.deferred.callback(result)  # type: ignore[arg-type]
        self._dispatch()

    def _dispatch(self) -> None:
        """
        Start waiting lookups while there is room, one client at a time in
        turn, skipping clients at their share.  Lookups that end at once
        (a resolver that answers synchronously) are handled by this same
        loop rather than by recursion.
        """
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while self._running < self.threads:
                client = self._nextClient()
                if client is None:
                    return
                waiting = self._queues.pop(client)
                waiter = waiting.popleft()
                if waiting:
                    # Its next lookup waits for the other clients' turns.
                    self._queues[client] = waiting
                self._start(waiter)
        finally:
            self._dispatching = False

    def _nextClient(self) -> str | None:
        """
        The first client in turn that waits and is below its share.
        """
        share = self._share()
        for client in self._queues:
            if self._runningFor.get(client, 0) < share:
                return client
        return None

    def _cancel(self, waiter: _Waiter) -> None:
        if waiter.running:
            if waiter.interruptible:
                self._release(waiter)
            waiter.deferred.errback(
                LookupAbandoned(f"stopped waiting for {waiter.host} to resolve")
            )
            if not waiter.running:
                # A turn later: the requests whose deadlines pass at the
                # same time as this one's are answered first, rather than
                # started and abandoned at once.
                self._reactor.callLater(0, self._dispatch)
            return
        waiting = self._queues[waiter.client]
        waiting.remove(waiter)
        if not waiting:
            del self._queues[waiter.client]
        overShare = self._runningFor.get(waiter.client, 0) >= self._share()
        if not overShare and self._running < self.threads:
            # There is room now (a slot let go a moment ago, its turn not
            # come yet): say why it waited.
            overShare = waiter.overShare
        if overShare:
            reason = (
                "this client has too many name lookups in progress "
                "(see --resolver-per-client)"
            )
        else:
            reason = "too many name lookups are in progress (see --resolver-threads)"
        waiter.deferred.errback(ResolverBusy(reason))
