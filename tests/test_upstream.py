# -*- test-case-name: tests.test_upstream -*-
"""
Tests for L{connectproxy._upstream.DirectConnector} on a memory reactor with
a fake resolver: no sockets, no DNS, no threads.  Public addresses here are only ever
handed to the memory reactor.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import (
    ConnectingCancelledError,
    ConnectionRefusedError,
    DNSLookupError,
)
from twisted.internet.interfaces import IHostResolution, IResolutionReceiver
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from zope.interface import implementer

from connectproxy import (
    DirectConnector,
    RequestHead,
    Target,
    TargetForm,
    UpstreamRequest,
)
from connectproxy._networks import NetworkRules
from connectproxy._resolver import ResolverPool
from connectproxy._upstream import ForbiddenDestination
from connectproxy.testing import FakeResolver, upstreamRequest
from tests.test_resolver import HangingResolver


def request(host: str, port: int = 443, client: str = "127.0.0.1") -> UpstreamRequest:
    return upstreamRequest(host, port, client=IPv4Address("TCP", client, 40000))


def connect(
    table: dict[str, list[str]], host: str, networks: NetworkRules | None = None
) -> tuple[MemoryReactorClock, FakeResolver, list[Any]]:
    """
    Connect to C{host} through a L{DirectConnector} whose resolver answers
    from C{table}; return the reactor, the resolver and the outcomes.
    """
    reactor = MemoryReactorClock()
    resolver = FakeResolver(table)
    reactor.installNameResolver(resolver)
    connector = DirectConnector(reactor, attemptTimeout=7, networks=networks)
    outcomes: list[Any] = []
    connector.connectUpstream(request(host), Protocol()).addBoth(outcomes.append)
    return reactor, resolver, outcomes


def refusal(outcomes: list[Any]) -> str:
    [failure] = outcomes
    assert isinstance(failure, Failure)
    failure.trap(ForbiddenDestination)
    assert isinstance(failure.value, ForbiddenDestination)
    return failure.value.reason


def test_connectsToResolvedAddress() -> None:
    """
    A name is resolved through the reactor's resolver and the result is
    connected to on the requested port.
    """
    reactor, resolver, _ = connect({"example.com": ["8.8.8.8"]}, "example.com")
    assert resolver.names == ["example.com"]
    [(host, port, _, timeout, _)] = reactor.tcpClients
    assert (host, port, timeout) == ("8.8.8.8", 443, 7)


def test_noTimerPerAttempt() -> None:
    """
    Without a timer per attempt (C{perAttemptTimer=False}: the caller's
    deadline covers the connect), the reactor is asked to connect with no
    timeout, so that it starts no timer.
    """
    reactor = MemoryReactorClock()
    reactor.installNameResolver(FakeResolver({"example.com": ["93.184.216.34"]}))
    connector = DirectConnector(reactor, attemptTimeout=7, perAttemptTimer=False)
    connector.connectUpstream(request("example.com"), Protocol())
    [(_, _, _, timeout, _)] = reactor.tcpClients
    assert timeout is None
    assert reactor.getDelayedCalls() == []


def test_nameResolvingToLoopbackRefused() -> None:
    """
    A name that resolves to a loopback address is refused without any
    connection attempt.
    """
    reactor, _, outcomes = connect({"localhost": ["127.0.0.1", "::1"]}, "localhost")
    assert "loopback" in refusal(outcomes)
    assert reactor.tcpClients == []


def test_onlyVettedAddressesTried() -> None:
    """
    Of the addresses a name resolves to, only those the rules allow are
    ever connected to.
    """
    reactor, _, _ = connect(
        {"mixed.example": ["10.0.0.1", "8.8.8.8", "192.168.1.1"]}, "mixed.example"
    )
    reactor.pump([1.0] * 40)  # every Happy Eyeballs attempt, and then some
    assert [host for host, *_ in reactor.tcpClients] == ["8.8.8.8"]


def test_operatorNetworkAllows() -> None:
    """
    An operator's --allow-network opens a range the defaults deny.
    """
    networks = NetworkRules.fromStrings(allow=["10.0.0.0/8"])
    reactor, _, _ = connect({"internal": ["10.1.2.3"]}, "internal", networks)
    [(host, *_)] = reactor.tcpClients
    assert host == "10.1.2.3"


@pytest.mark.parametrize("host", ["8.8.8.8", "2606:4700:4700::1111"])
def test_addressNeedsNoResolver(host: str) -> None:
    """
    An IP address target is checked and connected to directly, without the
    resolver.
    """
    reactor, resolver, _ = connect({}, host)
    [(connectedHost, port, _, _, _)] = reactor.tcpClients
    assert (connectedHost, port) == (host, 443)
    assert resolver.names == []


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "::ffff:127.0.0.1", "10.0.0.8"])
def test_forbiddenAddressRefused(host: str) -> None:
    """
    IP address targets are checked like resolved ones.
    """
    reactor, _, outcomes = connect({}, host)
    refusal(outcomes)
    assert reactor.tcpClients == []


def test_noAddressesIsLookupError() -> None:
    """
    A name with no addresses fails as a lookup error (502), not a refusal.
    """
    _, _, outcomes = connect({}, "nothing.example")
    [failure] = outcomes
    assert failure.check(DNSLookupError)


def test_cancelDuringResolution() -> None:
    """
    Cancelling while the name is being resolved fails the attempt at once;
    addresses that arrive later are ignored.
    """

    @implementer(IHostResolution)
    class Pending:
        name = "slow.example"

        def cancel(self) -> None:
            pass

    receivers: list[IResolutionReceiver] = []

    class SlowResolver(FakeResolver):
        def resolveHostName(
            self, receiver: IResolutionReceiver, hostName: str, *args: object
        ) -> IHostResolution:
            receivers.append(receiver)
            return Pending()

    reactor = MemoryReactorClock()
    reactor.installNameResolver(SlowResolver({}))
    d: Deferred[Any] = DirectConnector(reactor).connectUpstream(
        request("slow.example"), Protocol()
    )
    outcomes: list[Any] = []
    d.addBoth(outcomes.append)
    d.cancel()
    [failure] = outcomes
    assert failure.check(CancelledError)
    [receiver] = receivers
    receiver.resolutionComplete()
    assert reactor.tcpClients == []


def test_cancelLeavesNoConnection() -> None:
    """
    Cancelling while connecting stops the connection attempt in flight.
    """
    reactor = MemoryReactorClock()
    reactor.installNameResolver(FakeResolver({"example.com": ["8.8.8.8"]}))
    d = DirectConnector(reactor).connectUpstream(request("example.com"), Protocol())
    failures: list[Failure] = []
    d.addErrback(failures.append)
    d.cancel()
    [connector] = reactor.connectors
    assert connector.stoppedConnecting
    [failure] = failures
    assert failure.check(ConnectingCancelledError)


@pytest.mark.parametrize("host", ["my_host.example", "r4---sn-abc.example"])
def test_namesIDNARefusesConnect(host: str) -> None:
    """
    Names that strict IDNA refuses but DNS allows (underscores, hyphens in
    the third and fourth places) are connected to like any other.
    """
    reactor, _, outcomes = connect({host: ["8.8.8.8"]}, host)
    assert outcomes == []
    [(connectedHost, port, *_)] = reactor.tcpClients
    assert (connectedHost, port) == ("8.8.8.8", 443)


def test_localhostNeedsNoLookup() -> None:
    """
    C{localhost} and names under C{.localhost} are the loopback addresses
    without a lookup (RFC 6761 section 6.3), IPv6 first; the network rules
    still apply.
    """
    networks = NetworkRules.fromStrings(allow=["127.0.0.0/8", "::1/128"])
    for name in ("localhost", "app.localhost"):
        reactor, resolver, _ = connect({}, name, networks)
        assert resolver.names == []
        assert [host for host, *_ in reactor.tcpClients] == ["::1"]
        reactor.advance(0.25)
        assert [host for host, *_ in reactor.tcpClients] == ["::1", "127.0.0.1"]
    reactor, resolver, outcomes = connect({}, "localhost")
    assert "localhost resolves to ::1, which is" in refusal(outcomes)


def test_refusedAddressTriesNextAtOnce() -> None:
    """
    When the first address of a name refuses, the next one is tried at
    once, not after the attempt delay (RFC 8305 section 5).
    """
    reactor, _, outcomes = connect(
        {"dual.example": ["2606:4700::1", "93.184.216.34"]}, "dual.example"
    )
    [(_, _, factory, _, _)] = reactor.tcpClients
    factory.clientConnectionFailed(
        reactor.connectors[0], Failure(ConnectionRefusedError())
    )
    assert [host for host, *_ in reactor.tcpClients] == [
        "2606:4700::1",
        "93.184.216.34",
    ]
    assert reactor.seconds() == 0
    assert outcomes == []


def test_lookupsOnTheRequestingClientsShare() -> None:
    """
    Names are resolved on the share of the target's client: one client's
    hanging lookups make only its own next lookup wait.
    """
    reactor = MemoryReactorClock()
    resolver = HangingResolver({"fast.example": ["93.184.216.34"]})
    pool = ResolverPool(reactor, threads=4, perClient=1, resolver=resolver)
    connector = DirectConnector(reactor, resolver=pool)
    connector.connectUpstream(request("slow.example", client="192.0.2.1"), Protocol())
    connector.connectUpstream(request("fast.example", client="192.0.2.1"), Protocol())
    assert pool.waiting("192.0.2.1") == 1
    connector.connectUpstream(request("fast.example", client="192.0.2.2"), Protocol())
    assert [host for host, *_ in reactor.tcpClients] == ["93.184.216.34"]


def test_unixClientsShareOneShare() -> None:
    """
    Clients without an IP address (UNIX socket clients) resolve on one
    share, the one counted as C{""}.
    """
    reactor = MemoryReactorClock()
    pool = ResolverPool(reactor, threads=4, perClient=1, resolver=HangingResolver())
    connector = DirectConnector(reactor, resolver=pool)
    for _ in range(2):
        target = upstreamRequest("slow.example", client=UNIXAddress(b"/run/p.sock"))
        connector.connectUpstream(target, Protocol())
    assert (pool.running, pool.waiting("")) == (1, 1)


def test_connectRequestDeprecated() -> None:
    """
    Passing the parsed request, as plugin API version 1 did, still
    connects, with a deprecation warning naming the caller; the lookup
    counts against no client's share.
    """
    reactor = MemoryReactorClock()
    resolver = HangingResolver({"example.com": ["93.184.216.34"]})
    pool = ResolverPool(reactor, threads=4, perClient=1, resolver=resolver)
    connector = DirectConnector(reactor, resolver=pool)
    parsed = RequestHead(
        "CONNECT",
        "example.com:443",
        (1, 1),
        (),
        Target("example.com", 443, TargetForm.AUTHORITY),
    )
    with pytest.warns(
        DeprecationWarning, match="pass a connectproxy.UpstreamRequest"
    ) as w:
        connector.connectUpstream(parsed, Protocol())  # type: ignore[arg-type]
    assert w[0].filename == __file__
    assert [host for host, *_ in reactor.tcpClients] == ["93.184.216.34"]
    connector.connectUpstream(upstreamRequest("hangs.example", client=None), Protocol())
    assert pool.running == 1


def test_resolverRaisingFailsAtOnce() -> None:
    """
    A resolver that raises fails the connect at once with its exception.
    """

    class Broken(FakeResolver):
        def resolveHostName(self, *args: object, **kwargs: object) -> Any:
            raise RuntimeError("resolver bug")

    reactor = MemoryReactorClock()
    reactor.installNameResolver(Broken({}))
    outcomes: list[Any] = []
    d = DirectConnector(reactor).connectUpstream(request("x.example"), Protocol())
    d.addBoth(outcomes.append)
    [failure] = outcomes
    assert failure.check(RuntimeError)
    assert reactor.getDelayedCalls() == []
