# -*- test-case-name: tests.test_resolver -*-
"""
Tests for L{connectproxy._resolver.ResolverPool}: bounded lookups, shares
per client, queues that forget cancelled lookups.  Lookups go to a fake
resolver the tests finish by hand; only the tests of the lookup threads
themselves start threads.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import (
    IHostnameResolver,
    IHostResolution,
    IResolutionReceiver,
)
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from zope.interface import implementer

from connectproxy._resolver import (
    LookupAbandoned,
    ResolverBusy,
    ResolverPool,
    _LookupThreads,
)

WAIT = 10.0


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        pass


@implementer(IHostnameResolver)
class HangingResolver:
    """
    An L{IHostnameResolver} that answers the names in its table at once
    and lets every other lookup hang until the test calls L{finish}, like a
    DNS server that does not answer.

    @ivar names: Every name asked for, in order.
    @ivar hanging: The lookups not finished yet: name and receiver.
    """

    def __init__(self, table: dict[str, list[str]] | None = None) -> None:
        self.table = table or {}
        self.names: list[str] = []
        self.hanging: list[tuple[str, IResolutionReceiver]] = []

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: object = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        self.names.append(hostName)
        resolution = _Resolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)
        if hostName in self.table:
            deliver(resolutionReceiver, self.table[hostName], portNumber)
        else:
            self.hanging.append((hostName, resolutionReceiver))
        return resolution

    def finish(self, index: int = 0, addresses: list[str] | None = None) -> None:
        """
        Finish the C{index}th hanging lookup, with C{addresses} (none when
        C{None}: the name does not exist).
        """
        _, receiver = self.hanging.pop(index)
        deliver(receiver, addresses or [], 443)


def deliver(receiver: IResolutionReceiver, addresses: list[str], port: int) -> None:
    for text in addresses:
        receiver.addressResolved(
            (IPv6Address if ":" in text else IPv4Address)("TCP", text, port)
        )
    receiver.resolutionComplete()


def outcome(d: Deferred[Any]) -> list[Any]:
    """
    Collect what C{d} fires with (nothing while it has not).
    """
    results: list[Any] = []
    d.addBoth(results.append)
    return results


def makePool(
    threads: int = 4, perClient: int = 2, table: dict[str, list[str]] | None = None
) -> tuple[ResolverPool, HangingResolver]:
    resolver = HangingResolver(table)
    return ResolverPool(MemoryReactorClock(), threads, perClient, resolver), resolver


def test_resolves() -> None:
    """
    A lookup fires with the resolver's addresses and frees its slot.
    """
    pool, _ = makePool(table={"fast.example": ["192.0.2.1", "2001:db8::1"]})
    [addresses] = outcome(pool.resolve("198.51.100.1", "fast.example", 443))
    assert addresses == [
        IPv4Address("TCP", "192.0.2.1", 443),
        IPv6Address("TCP", "2001:db8::1", 443),
    ]
    assert pool.running == 0


def test_clientOverItsShareWaits() -> None:
    """
    A client's lookups beyond its share wait in its own queue, while
    another client's lookup starts (and here finishes) at once.
    """
    pool, resolver = makePool(table={"fast.example": ["192.0.2.1"]})
    slow = [pool.resolve("A", f"slow{i}.example", 443) for i in range(5)]
    assert resolver.names == ["slow0.example", "slow1.example"]
    assert (pool.running, pool.waiting("A")) == (2, 3)
    [addresses] = outcome(pool.resolve("B", "fast.example", 443))
    assert addresses == [IPv4Address("TCP", "192.0.2.1", 443)]
    assert [outcome(d) for d in slow] == [[]] * 5


def test_fullPoolTakesTurns() -> None:
    """
    When every thread is busy, freed threads go to the waiting clients in
    turn, each client's lookups in the order asked.
    """
    pool, resolver = makePool(threads=2, perClient=0)
    for i in range(2):
        pool.resolve("A", f"a{i}.example", 443)
    pool.resolve("A", "a2.example", 443)
    pool.resolve("A", "a3.example", 443)
    pool.resolve("B", "b0.example", 443)
    assert pool.waiting() == 3
    resolver.finish()
    resolver.finish()
    assert resolver.names[2:] == ["a2.example", "b0.example"]
    resolver.finish()
    assert resolver.names[4:] == ["a3.example"]


def test_cancelWhileWaitingNamesPerClientOption() -> None:
    """
    A lookup cancelled while it waits because its client is at its share
    fails at once with L{ResolverBusy} naming C{--resolver-per-client}, and
    leaves the queue.
    """
    pool, resolver = makePool()
    for i in range(2):
        pool.resolve("A", f"slow{i}.example", 443)
    waiting = pool.resolve("A", "third.example", 443)
    waiting.cancel()
    [failure] = outcome(waiting)
    assert isinstance(failure.value, ResolverBusy)
    assert "--resolver-per-client" in failure.value.reason
    assert pool.waiting() == 0
    resolver.finish()
    assert "third.example" not in resolver.names


def test_cancelWhileWaitingNamesThreadsOption() -> None:
    """
    A lookup cancelled while it waits because every thread is busy names
    C{--resolver-threads}.
    """
    pool, _ = makePool(threads=2, perClient=2)
    for i in range(2):
        pool.resolve("A", f"slow{i}.example", 443)
    waiting = pool.resolve("B", "b.example", 443)
    waiting.cancel()
    [failure] = outcome(waiting)
    assert isinstance(failure.value, ResolverBusy)
    assert "--resolver-threads" in failure.value.reason


def test_cancelRunningKeepsSlotUntilLookupEnds() -> None:
    """
    A running lookup that is cancelled fails at once with
    L{LookupAbandoned}; its thread is busy until the lookup ends, so its
    slot (and its client's share) is held until then, and then goes to the
    next waiting lookup.  The late result is dropped.
    """
    pool, resolver = makePool(threads=1, perClient=1)
    running = pool.resolve("A", "slow.example", 443)
    nextOne = pool.resolve("B", "next.example", 443)
    running.cancel()
    [failure] = outcome(running)
    assert isinstance(failure.value, LookupAbandoned)
    assert (pool.running, resolver.names) == (1, ["slow.example"])
    resolver.finish(0, ["192.0.2.9"])
    assert resolver.names == ["slow.example", "next.example"]
    resolver.finish(0, ["192.0.2.10"])
    assert outcome(nextOne) == [[IPv4Address("TCP", "192.0.2.10", 443)]]
    assert pool.running == 0


def test_abandonedLookupsCountAgainstTheirClient() -> None:
    """
    A client cannot fill the pool by asking and leaving: its abandoned
    lookups still count against its share until they end.
    """
    pool, resolver = makePool(threads=4, perClient=2)
    for i in range(2):
        pool.resolve("A", f"slow{i}.example", 443).cancel()
    third = pool.resolve("A", "slow2.example", 443)
    assert pool.waiting("A") == 1
    assert outcome(third) == []
    assert len(resolver.hanging) == 2


def test_resolverRaisingFreesSlot() -> None:
    """
    A resolver that raises fails the lookup at once with its exception and
    frees the slot.
    """

    @implementer(IHostnameResolver)
    class Broken:
        def resolveHostName(self, *args: object, **kwargs: object) -> IHostResolution:
            raise RuntimeError("resolver bug")

    pool = ResolverPool(MemoryReactorClock(), 1, 1, Broken())
    [failure] = outcome(pool.resolve("A", "x.example", 443))
    assert isinstance(failure, Failure)
    assert failure.check(RuntimeError)
    assert pool.running == 0


def test_synchronousResolverDrainsQueueWithoutRecursion() -> None:
    """
    Many waiting lookups that a resolver answers at once are started by one
    loop: no recursion, whatever the queue's length.
    """
    pool, resolver = makePool(threads=1, perClient=1)
    pool.resolve("A", "slow.example", 443)
    resolver.table = {f"n{i}.example": ["192.0.2.1"] for i in range(3000)}
    waiting = [pool.resolve("A", f"n{i}.example", 443) for i in range(3000)]
    resolver.finish()
    assert all(outcome(d) for d in waiting)
    assert pool.running == 0


def test_resizeStartsWaitingLookups() -> None:
    """
    Growing the pool (a reload) starts lookups that were waiting.
    """
    pool, resolver = makePool(threads=1, perClient=1)
    pool.resolve("A", "a.example", 443)
    pool.resolve("A", "b.example", 443)
    pool.resize(4, 2)
    assert resolver.names == ["a.example", "b.example"]


def test_resizeRefusesNonsense() -> None:
    """
    A pool needs at least one thread.
    """
    pool, _ = makePool()
    with pytest.raises(ValueError):
        pool.resize(0, 1)


def test_reactorResolverUsedUnlessStock() -> None:
    """
    Without a resolver of its own, the pool uses the reactor's name
    resolver when it is not Twisted's stock one (a memory reactor's, here).
    """
    reactor = MemoryReactorClock()
    pool = ResolverPool(reactor)
    [addresses] = outcome(pool.resolve("A", "anything.example", 443))
    assert addresses == [IPv4Address("TCP", "127.0.0.1", 443)]


# The lookup threads.


class ThreadsReactor:
    """
    Enough of a reactor for L{_LookupThreads}: C{callFromThread} hands
    calls to the test thread, which runs them with L{runOne}.
    """

    def __init__(self) -> None:
        self._calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._ready = threading.Condition()

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        with self._ready:
            self._calls.append((f, args))
            self._ready.notify()

    def runOne(self) -> None:
        with self._ready:
            assert self._ready.wait_for(lambda: self._calls, WAIT)
            f, args = self._calls.pop(0)
        f(*args)


def test_lookupThreadsDeliverResults() -> None:
    """
    A lookup runs C{getaddrinfo} in a daemon thread and delivers the
    addresses on the reactor thread; C{getaddrinfo} errors are
    L{DNSLookupError}s, other exceptions arrive as they are.
    """
    seen: list[tuple[Any, ...]] = []

    def getaddrinfo(host: bytes, port: int, family: int, kind: int) -> list[Any]:
        seen.append((host, port, family, kind, threading.current_thread().daemon))
        if host == b"missing.example":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if host == b"buggy.example":
            raise RuntimeError("unexpected")
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:db8::1", port, 0, 0)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", port)),
        ]

    reactor = ThreadsReactor()
    threads = _LookupThreads(reactor.callFromThread, getaddrinfo)
    try:
        results = [
            outcome(threads.lookup(name, 443))
            for name in ("ok.example", "missing.example", "buggy.example")
        ]
        for _ in range(3):
            reactor.runOne()
        assert results[0] == [
            [
                IPv6Address("TCP", "2001:db8::1", 443),
                IPv4Address("TCP", "192.0.2.1", 443),
            ]
        ]
        assert results[1][0].check(DNSLookupError)
        assert "missing.example" in results[1][0].getErrorMessage()
        assert results[2][0].check(RuntimeError)
        assert {s[1:] for s in seen} == {
            (443, socket.AF_UNSPEC, socket.SOCK_STREAM, True)
        }
    finally:
        threads.trim(0)


def test_lookupThreadsStopWithoutWaiting() -> None:
    """
    Stopping does not wait for a thread stuck in a lookup (it is a daemon
    thread: it cannot keep the process from exiting); idle threads exit,
    and the stuck one exits once its lookup returns.
    """
    release = threading.Event()

    def getaddrinfo(host: bytes, *args: object) -> list[Any]:
        if host == b"stuck.example":
            release.wait(WAIT)
        return []

    reactor = ThreadsReactor()
    threads = _LookupThreads(reactor.callFromThread, getaddrinfo)
    before = set(threading.enumerate())
    stuck = outcome(threads.lookup("stuck.example", 443))
    idle = outcome(threads.lookup("idle.example", 443))
    reactor.runOne()
    assert idle == [[]]
    started = set(threading.enumerate()) - before
    assert len(started) == 2
    assert all(t.daemon for t in started)
    threads.trim(0)
    assert threads.threads == 0
    release.set()
    reactor.runOne()
    assert stuck == [[]]
    for thread in started:
        thread.join(WAIT)
        assert not thread.is_alive()


def test_stockResolverReplacedByOwnThreads() -> None:
    """
    When the reactor has Twisted's stock resolver (C{getaddrinfo} on the
    reactor's shared thread pool), the pool calls C{getaddrinfo} on its own
    threads instead, and never touches the reactor's pool.
    """
    from twisted.internet._resolver import GAIResolver

    class Reactor(ThreadsReactor):
        def getThreadPool(self) -> object:
            raise AssertionError("the reactor's thread pool was used")

    reactor = Reactor()
    reactor.nameResolver = GAIResolver(reactor)  # type: ignore[attr-defined,arg-type]
    names: list[bytes] = []

    def getaddrinfo(host: bytes, port: int, *args: object) -> list[Any]:
        names.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.7", port))]

    pool = ResolverPool(reactor, 2, 1, getaddrinfo=getaddrinfo)
    try:
        result = outcome(pool.resolve("A", "name.example", 443))
        reactor.runOne()
        assert result == [[IPv4Address("TCP", "192.0.2.7", 443)]]
        assert names == [b"name.example"]
    finally:
        pool.stop()


def test_lookupThreadsCountedAcrossStop() -> None:
    """
    A lookup asked for after a stop, while the old threads are still busy,
    is served, and the threads end up as many as the lookups need: none
    is left uncounted.
    """
    release = threading.Event()

    def getaddrinfo(host: bytes, *args: object) -> list[Any]:
        if host.startswith(b"stuck"):
            release.wait(WAIT)
        return []

    reactor = ThreadsReactor()
    threads = _LookupThreads(reactor.callFromThread, getaddrinfo)
    before = set(threading.enumerate())
    stuck = [outcome(threads.lookup(f"stuck{i}.example", 443)) for i in range(2)]
    threads.trim(0)
    later = outcome(threads.lookup("later.example", 443))
    assert threads.threads == 1
    release.set()
    for _ in range(3):
        reactor.runOne()
    assert stuck == [[[]], [[]]] and later == [[]]
    threads.trim(0)
    for thread in set(threading.enumerate()) - before:
        thread.join(WAIT)
        assert not thread.is_alive()
    assert threads.threads == 0
