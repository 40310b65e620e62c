# -*- test-case-name: tests.test_requestpath -*-
"""
Protocol tests of the request path between the head and the 200 with the
real direct connector: one client's slow names or slow policies do not hold
up another client, deadlines drop queued work, and unexpected failures are
answered at once and logged once.  A memory reactor, fake transports and a
fake resolver: no sockets, no threads, no real time.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IHostnameResolver, IHostResolution
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent
from twisted.python.failure import Failure
from zope.interface import implementer

from connectproxy import ConnectProxyFactory, ProxySettings
from connectproxy._access import AccessRequest, Refusal
from connectproxy._admission import Gatekeeper
from connectproxy._networks import NetworkRules
from connectproxy._resolver import ResolverPool
from connectproxy._rules import AccessRules
from connectproxy._upstream import DirectConnector
from connectproxy.interfaces import IAccessPolicy
from connectproxy.testing import (
    FakeClient,
    HalfCloseableStringTransport,
    ProxyHarness,
    connectHead,
)
from tests._helpers import ESTABLISHED
from tests.test_resolver import HangingResolver

FAST = "fast.example"


def peer(host: str, port: int = 40000) -> IPv4Address:
    return IPv4Address("TCP", host, port)


class Proxy:
    """
    A proxy on a memory reactor whose connector is the real
    L{DirectConnector}, resolving on a L{ResolverPool} over a
    L{HangingResolver}: names in C{table} resolve at once, others hang.
    """

    def __init__(
        self,
        threads: int = 4,
        perClient: int = 2,
        table: dict[str, list[str]] | None = None,
        policies: Sequence[IAccessPolicy] = (),
        resolver: IHostnameResolver | None = None,
    ) -> None:
        self.harness = ProxyHarness(ProxySettings(connectTimeout=10))
        self.clock = self.harness.clock
        self.resolver = HangingResolver(table or {FAST: ["93.184.216.34"]})
        self.pool = ResolverPool(
            self.clock, threads, perClient, resolver or self.resolver
        )
        self.harness.factory.connector = DirectConnector(
            self.clock, 10, resolver=self.pool
        )
        self.harness.factory.gatekeeper = Gatekeeper(AccessRules.defaults(), policies)
        self.observer = self.harness.observer

    def request(self, client: str, host: str) -> FakeClient:
        fake = self.harness.connectClient(peer(client, 40000 + len(self.clients())))
        fake.send(connectHead(f"{host}:443"))
        return fake

    def clients(self) -> set[Any]:
        return self.harness.factory.connections

    def attempted(self) -> list[str]:
        return [host for host, *_ in self.clock.tcpClients]

    def connect(self, index: int) -> HalfCloseableStringTransport:
        """
        Let the C{index}th TCP attempt connect.
        """
        host, port, factory, _, _ = self.clock.tcpClients[index]
        protocol = factory.buildProtocol(peer(host, port))
        assert protocol is not None
        transport = HalfCloseableStringTransport(peerAddress=peer(host, port))
        protocol.makeConnection(transport)
        return transport

    def fail(self, index: int, error: BaseException) -> None:
        """
        Fail the C{index}th TCP attempt with C{error}.
        """
        _, _, factory, _, _ = self.clock.tcpClients[index]
        factory.clientConnectionFailed(self.clock.connectors[index], Failure(error))

    def leftovers(self) -> list[Any]:
        """
        What is still scheduled or queued once every client is gone.
        """
        return [*self.clock.getDelayedCalls(), *([None] * self.pool.waiting())]


def failures(events: list[LogEvent]) -> list[LogEvent]:
    return [e for e in events if "log_failure" in e]


# A: one client's slow names.


def test_hangingLookupsOfOneClientDoNotDelayAnother() -> None:
    """
    Many lookups from one client that hang (a DNS server that never
    answers) take only that client's share: another client's request for a
    name that resolves is connected at once, and gets its 200.
    """
    proxy = Proxy(threads=4, perClient=2)
    slow = [proxy.request("127.0.0.1", f"slow{i}.example") for i in range(12)]
    assert (proxy.pool.running, proxy.pool.waiting("127.0.0.1")) == (2, 10)
    other = proxy.request("127.0.0.2", FAST)
    assert proxy.attempted() == ["93.184.216.34"]
    proxy.connect(0)
    assert other.transport.value() == ESTABLISHED
    assert all(c.transport.value() == b"" for c in slow)


def test_queuedLookupAnswered503AtDeadline() -> None:
    """
    A request whose lookup still waits for its client's share at the
    deadline gets 503 naming C{--resolver-per-client}; one whose lookup ran
    gets 504; nothing stays queued for them.
    """
    proxy = Proxy(threads=4, perClient=1)
    running = proxy.request("127.0.0.1", "slow.example")
    queued = proxy.request("127.0.0.1", "later.example")
    proxy.clock.advance(10)
    assert running.response().status == 504
    assert b"timed out resolving the target host" in running.transport.value()
    assert queued.response().status == 503
    assert b"--resolver-per-client" in queued.transport.value()
    assert proxy.pool.waiting() == 0
    proxy.resolver.finish()
    assert proxy.resolver.names == ["slow.example"]


def test_queuedBehindFullPoolNamesThreadsOption() -> None:
    """
    A request whose lookup waits because every resolver thread is busy gets
    503 naming C{--resolver-threads} at its deadline.
    """
    proxy = Proxy(threads=2, perClient=2)
    for _ in range(2):
        proxy.request("127.0.0.1", "slow.example")
    queued = proxy.request("127.0.0.2", "other.example")
    proxy.clock.advance(10)
    assert queued.response().status == 503
    assert b"--resolver-threads" in queued.transport.value()


def test_deadlineFreesTheQueueForOthers() -> None:
    """
    A request dropped from the queue at its deadline never takes a thread:
    when the hanging lookups end, the thread goes to a live request.
    """
    proxy = Proxy(threads=1, perClient=1)
    proxy.request("127.0.0.1", "slow.example")
    proxy.request("127.0.0.2", "dropped.example")
    proxy.clock.advance(5)
    live = proxy.request("127.0.0.3", FAST)
    proxy.clock.advance(5)
    proxy.resolver.finish()
    assert proxy.resolver.names == ["slow.example", FAST]
    proxy.connect(0)
    assert live.transport.value() == ESTABLISHED


def test_clientLeavingDropsItsQueuedLookups() -> None:
    """
    A client that leaves while its lookup waits takes it out of the queue:
    no work is left for a client that is gone, nothing is written, and each
    request is reported as abandoned, never answered.
    """
    proxy = Proxy(threads=4, perClient=1)
    first = proxy.request("127.0.0.1", "slow.example")
    second = proxy.request("127.0.0.1", "later.example")
    assert proxy.pool.waiting() == 1
    second.lose()
    assert proxy.pool.waiting() == 0
    assert second.transport.value() == b""
    first.lose()
    assert proxy.leftovers() == []
    proxy.resolver.finish()
    assert proxy.resolver.names == ["slow.example"]
    assert [(r.target, r.status, r.outcome) for r in proxy.observer.refused] == [
        ("later.example:443", 0, "abandoned"),
        ("slow.example:443", 0, "abandoned"),
    ]


def test_localhostAndAddressesNeedNoLookup() -> None:
    """
    C{localhost} and IP address targets are connected to even while every
    resolver thread is busy.
    """
    proxy = Proxy(threads=1, perClient=1)
    connector = proxy.harness.factory.connector
    assert isinstance(connector, DirectConnector)
    connector.networks = NetworkRules.fromStrings(allow=["127.0.0.0/8", "::1/128"])
    proxy.request("127.0.0.2", "slow.example")
    proxy.request("127.0.0.1", "localhost")
    proxy.request("127.0.0.1", "93.184.216.35")
    assert proxy.attempted() == ["::1", "93.184.216.35"]
    assert proxy.resolver.names == ["slow.example"]


# A: one client's slow policies.


@implementer(IAccessPolicy)
class SlowForOneClient:
    """
    A policy that never answers for one client (like a plugin waiting on a
    slow service) and allows everyone else at once.

    @ivar pending: Its unanswered Deferreds.
    @ivar cancelled: How many of them the proxy cancelled.
    """

    def __init__(self, slowClient: str) -> None:
        self.slowClient = slowClient
        self.pending: list[Deferred[Refusal | None]] = []
        self.cancelled = 0

    def checkAccess(self, access: AccessRequest) -> Deferred[Refusal | None] | None:
        if access.clientHost != self.slowClient:
            return None
        d: Deferred[Refusal | None] = Deferred(self._cancel)
        self.pending.append(d)
        return d

    def _cancel(self, d: Deferred[Refusal | None]) -> None:
        self.cancelled += 1


def test_slowPoliciesOfOneClientDoNotDelayAnother() -> None:
    """
    Many requests from one client waiting on a slow policy do not hold up
    another client's admission; at their deadline each gets 503 and its
    policy call is cancelled, leaving nothing behind.
    """
    policy = SlowForOneClient("127.0.0.1")
    proxy = Proxy(policies=[policy])
    slow = [proxy.request("127.0.0.1", FAST) for _ in range(50)]
    assert len(policy.pending) == 50
    other = proxy.request("127.0.0.2", FAST)
    proxy.connect(0)
    assert other.transport.value() == ESTABLISHED
    proxy.clock.advance(10)
    assert {c.response().status for c in slow} == {503}
    assert policy.cancelled == 50
    for client in slow:
        client.lose()
    assert proxy.attempted() == ["93.184.216.34"]


# C: unexpected failures on the request path.


@implementer(IHostnameResolver)
class RaisingResolver:
    def resolveHostName(self, *args: object, **kwargs: object) -> IHostResolution:
        raise RuntimeError("resolver bug")


def assertAnsweredAndLoggedOnce(
    proxy: Proxy,
    client: FakeClient,
    events: list[LogEvent],
    status: int,
    eventName: str,
    error: type[BaseException],
) -> None:
    """
    The client got C{status} at once, one event with a traceback of
    C{error} was logged, and once the client is gone nothing is left.
    """
    assert client.response().status == status
    gc.collect()  # An unhandled error in a Deferred is logged when it goes.
    [logged] = failures(events)
    assert logged["event"] == eventName
    assert logged["log_failure"].check(error)
    assert not [e for e in events if e.get("log_namespace") == "twisted.internet.defer"]
    client.lose()
    assert proxy.leftovers() == []
    assert proxy.clients() == set()


def test_resolverRaisingIsAnsweredAtOnce(logEvents: list[LogEvent]) -> None:
    """
    A resolver that raises gets the client a 502 at once (not a 504 at the
    deadline), logged once with its traceback; the resolver slot is free.
    """
    proxy = Proxy(resolver=RaisingResolver())
    client = proxy.request("127.0.0.1", "name.example")
    assert proxy.pool.running == 0
    assertAnsweredAndLoggedOnce(
        proxy, client, logEvents, 502, "connector_error", RuntimeError
    )


def test_connectorRaisingIsAnsweredAtOnce(logEvents: list[LogEvent]) -> None:
    """
    A connector that raises synchronously gets the client a 502, logged
    once with its traceback.
    """
    proxy = Proxy()

    def broken(target: object, protocol: object) -> None:
        raise ValueError("connector bug")

    proxy.harness.factory.connector.connectUpstream = broken  # type: ignore[method-assign,assignment]
    client = proxy.request("127.0.0.1", FAST)
    assertAnsweredAndLoggedOnce(
        proxy, client, logEvents, 502, "connector_error", ValueError
    )


def test_connectorFailingUnexpectedly(logEvents: list[LogEvent]) -> None:
    """
    A connector whose Deferred fails with an exception that is no connect
    error gets the client a 502 at once, logged once with its traceback
    (not as well as an ordinary C{connect_failed}).
    """
    proxy = Proxy()

    def broken(target: object, protocol: object) -> Deferred[Any]:
        return fail(KeyError("connector bug"))

    proxy.harness.factory.connector.connectUpstream = broken  # type: ignore[method-assign]
    client = proxy.request("127.0.0.1", FAST)
    assert not [e for e in logEvents if e.get("event") == "connect_failed"]
    assertAnsweredAndLoggedOnce(
        proxy, client, logEvents, 502, "connector_error", KeyError
    )


def test_attemptFailingUnexpectedly(logEvents: list[LogEvent]) -> None:
    """
    A connection attempt of the direct connector failing with an unexpected
    exception is answered at once as well.
    """
    proxy = Proxy()
    client = proxy.request("127.0.0.1", FAST)
    proxy.fail(0, ZeroDivisionError("surprise"))
    assertAnsweredAndLoggedOnce(
        proxy, client, logEvents, 502, "connector_error", ZeroDivisionError
    )


def test_connectorBreakingItsContract(logEvents: list[LogEvent]) -> None:
    """
    A connector that fires with a protocol it never connected (a broken
    plugin) gets the client a 500 at once, logged once with its traceback,
    instead of a request that hangs with no timer left.
    """
    proxy = Proxy()

    def broken(target: object, protocol: object) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        d.callback(Protocol())
        return d

    proxy.harness.factory.connector.connectUpstream = broken  # type: ignore[method-assign]
    client = proxy.request("127.0.0.1", FAST)
    assertAnsweredAndLoggedOnce(
        proxy, client, logEvents, 500, "request_error", AssertionError
    )


def test_brokenConnectionClosedOn500(logEvents: list[LogEvent]) -> None:
    """
    When handling fails after the upstream connected but before the tunnel
    exists, the upstream connection is aborted, not leaked.
    """
    proxy = Proxy()
    upstreams: list[HalfCloseableStringTransport] = []

    def broken(target: object, protocol: Any) -> Deferred[Any]:
        transport = HalfCloseableStringTransport()
        upstreams.append(transport)
        protocol.makeConnection(transport)
        d: Deferred[Any] = Deferred()
        d.callback(Protocol())
        return d

    proxy.harness.factory.connector.connectUpstream = broken  # type: ignore[method-assign]
    client = proxy.request("127.0.0.1", FAST)
    assert client.response().status == 500
    [upstream] = upstreams
    assert upstream.aborted


@pytest.mark.parametrize("error", [ConnectionRefusedError()])
def test_expectedFailuresLoggedWithoutTraceback(
    error: Exception, logEvents: list[LogEvent]
) -> None:
    """
    An ordinary connect failure (every address refused) is one line in the
    log, without a traceback.
    """
    proxy = Proxy()
    client = proxy.request("127.0.0.1", FAST)
    proxy.fail(0, error)
    assert client.response().status == 502
    assert failures(logEvents) == []
    assert [e["event"] for e in logEvents if e.get("event") == "connect_failed"] == [
        "connect_failed"
    ]


def test_factoryOwnsItsResolverPool() -> None:
    """
    The factory's default connector resolves on a pool sized by the
    settings, which the factory stops when its last listener stops.
    """
    factory = ConnectProxyFactory(
        MemoryReactorClock(), ProxySettings(resolverThreads=5, resolverPerClient=3)
    )
    pool = factory.resolverPool
    assert pool is not None and (pool.threads, pool.perClient) == (5, 3)
    connector = factory.connector
    assert isinstance(connector, DirectConnector) and connector.resolver is pool
    stopped: list[bool] = []
    pool.stop = lambda: stopped.append(True)  # type: ignore[method-assign]
    factory.doStart()
    factory.doStart()
    factory.doStop()
    assert stopped == []
    factory.doStop()
    assert stopped == [True]
    assert ProxyHarness().factory.resolverPool is None
