# -*- test-case-name: tests.test_eyeballs -*-
"""
Tests for L{connectproxy._eyeballs}: Happy Eyeballs over vetted addresses
(RFC 8305), on a memory reactor whose connection attempts the tests finish
by hand.
"""

from __future__ import annotations

import errno
from typing import Any

import pytest
from twisted.internet.address import HostnameAddress, IPv4Address, IPv6Address
from twisted.internet.error import (
    ConnectBindError,
    ConnectingCancelledError,
    ConnectionRefusedError,
    NoRouteError,
    TimeoutError,
)
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogEvent
from twisted.python.failure import Failure

from connectproxy._eyeballs import (
    ATTEMPT_DELAY,
    LocalConnectError,
    _OnceFactory,
    connectToFirst,
    interleave,
)

TARGET = HostnameAddress(b"name.example", 443)


def v4(host: str) -> IPv4Address:
    return IPv4Address("TCP", host, 443)


def v6(host: str) -> IPv6Address:
    return IPv6Address("TCP", host, 443)


class Race:
    """
    A L{connectToFirst} on a memory reactor, and what it fired with.
    """

    def __init__(self, *addresses: IPv4Address | IPv6Address) -> None:
        self.reactor = MemoryReactorClock()
        self.protocol = Protocol()
        self.outcome: list[Any] = []
        self.deferred = connectToFirst(
            self.reactor, addresses, self.protocol, TARGET, attemptTimeout=7
        )
        self.deferred.addBoth(self.outcome.append)

    def attempted(self) -> list[str]:
        """
        The hosts of the attempts started so far, in order.
        """
        return [host for host, *_ in self.reactor.tcpClients]

    def fail(self, index: int, error: Exception) -> None:
        _, _, factory, _, _ = self.reactor.tcpClients[index]
        factory.clientConnectionFailed(self.reactor.connectors[index], Failure(error))

    def connect(self, index: int) -> Any:
        host, port, factory, _, _ = self.reactor.tcpClients[index]
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        if protocol is not None:
            protocol.makeConnection(StringTransport())
        return protocol


def test_interleavesFamilies() -> None:
    """
    Families alternate, starting with the family of the first address, and
    each family keeps the resolver's order (RFC 8305 section 4).
    """
    addresses: list[IPv4Address | IPv6Address] = [v6("2001:db8::1")]
    addresses += [v6("2001:db8::2"), v4("192.0.2.1"), v4("192.0.2.2")]
    addresses += [v4("192.0.2.3")]
    assert [a.host for a in interleave(addresses)] == [
        "2001:db8::1",
        "192.0.2.1",
        "2001:db8::2",
        "192.0.2.2",
        "192.0.2.3",
    ]
    assert [a.host for a in interleave([v4("192.0.2.1"), v6("::1")])] == [
        "192.0.2.1",
        "::1",
    ]


def test_nextAttemptStartsWhenOneIsRefused() -> None:
    """
    When an attempt is refused the next one starts at once, without waiting
    for the attempt delay (RFC 8305 section 5), and the second address's
    connection wins.
    """
    race = Race(v6("::1"), v4("127.0.0.1"))
    assert race.attempted() == ["::1"]
    race.fail(0, ConnectionRefusedError())
    assert race.attempted() == ["::1", "127.0.0.1"]
    assert race.reactor.seconds() == 0
    race.connect(1)
    assert race.outcome == [race.protocol]
    assert race.reactor.getDelayedCalls() == []


def test_manyRefusalsCostNoDelay() -> None:
    """
    Many refusing addresses before a good one cost no time at all.
    """
    addresses = [v4(f"192.0.2.{i}") for i in range(1, 11)]
    race = Race(*addresses)
    for index in range(9):
        race.fail(index, ConnectionRefusedError())
    assert len(race.attempted()) == 10
    race.connect(9)
    assert race.outcome == [race.protocol]


def test_staggerWhilePending() -> None:
    """
    While an attempt is pending, the next one starts after the attempt
    delay; both stay in flight.
    """
    race = Race(v6("2001:db8::1"), v4("192.0.2.1"), v4("192.0.2.2"))
    race.reactor.advance(ATTEMPT_DELAY - 0.01)
    assert race.attempted() == ["2001:db8::1"]
    race.reactor.advance(0.01)
    assert race.attempted() == ["2001:db8::1", "192.0.2.1"]
    race.reactor.advance(ATTEMPT_DELAY)
    assert len(race.attempted()) == 3
    assert not any(c.stoppedConnecting for c in race.reactor.connectors)


def test_winnerCancelsTheOthers() -> None:
    """
    The first attempt to connect wins; every other attempt in flight is
    stopped and no timer is left.
    """
    race = Race(v6("2001:db8::1"), v4("192.0.2.1"), v4("192.0.2.2"))
    race.reactor.advance(ATTEMPT_DELAY)
    race.connect(1)
    assert race.outcome == [race.protocol]
    first, second = race.reactor.connectors
    assert first.stoppedConnecting and not second.stoppedConnecting
    assert race.reactor.getDelayedCalls() == []
    assert len(race.attempted()) == 2


def test_cancelStopsEveryAttempt() -> None:
    """
    Cancelling stops every attempt in flight and the stagger timer, and
    fails with L{ConnectingCancelledError} naming the target.
    """
    race = Race(v6("2001:db8::1"), v4("192.0.2.1"), v4("192.0.2.2"))
    race.reactor.advance(ATTEMPT_DELAY)
    race.deferred.cancel()
    [failure] = race.outcome
    assert failure.check(ConnectingCancelledError)
    assert failure.value.address == TARGET
    assert all(c.stoppedConnecting for c in race.reactor.connectors)
    assert race.reactor.getDelayedCalls() == []
    assert len(race.attempted()) == 2


def test_singleAddressConnects() -> None:
    """
    One address (an IP-literal target) is one attempt, with the attempt
    timeout and no stagger timer, and fires with the protocol.
    """
    race = Race(v4("192.0.2.1"))
    assert race.attempted() == ["192.0.2.1"]
    assert race.reactor.tcpClients[0][3] == 7
    assert race.reactor.getDelayedCalls() == []
    race.connect(0)
    assert race.outcome == [race.protocol]


def test_transportGivenTheProtocolItself() -> None:
    """
    The connection is given the protocol itself, with no wrapper between
    them (one call less per chunk received), and the Deferred fires after
    the protocol's C{connectionMade}; the transport's log prefix is the
    protocol's.
    """
    seen: list[str] = []

    class Recording(Protocol):
        def connectionMade(self) -> None:
            seen.append("connectionMade")

    reactor = MemoryReactorClock()
    protocol = Recording()
    d = connectToFirst(reactor, [v4("192.0.2.1")], protocol, TARGET)
    d.addCallback(lambda p: seen.append("fired"))
    host, port, factory, _, _ = reactor.tcpClients[0]
    handover: Any = factory.buildProtocol(IPv4Address("TCP", host, port))
    assert handover.logPrefix() == "Recording"
    transport: Any = StringTransport()
    handover.makeConnection(transport)
    assert transport.protocol is protocol
    assert protocol.transport is transport
    assert seen == ["connectionMade", "fired"]


def test_singleAddressFails() -> None:
    """
    The failure of the only attempt is the failure, a bind error on the
    proxy's side said as for a race (503 when out of descriptors).
    """
    race = Race(v4("192.0.2.1"))
    race.fail(0, ConnectionRefusedError())
    [failure] = race.outcome
    assert failure.check(ConnectionRefusedError)
    race = Race(v4("192.0.2.1"))
    race.fail(0, ConnectBindError(errno.EMFILE, "Too many open files"))
    [failure] = race.outcome
    assert failure.check(LocalConnectError)
    assert failure.value.status == 503


def test_singleAddressCancelled() -> None:
    """
    Cancelling the one attempt stops it and fails with
    L{ConnectingCancelledError} naming the target, once, even when the
    attempt then reports its own cancellation.
    """
    race = Race(v4("192.0.2.1"))
    race.deferred.cancel()
    [failure] = race.outcome
    assert failure.check(ConnectingCancelledError)
    assert failure.value.address == TARGET
    assert race.reactor.connectors[0].stoppedConnecting
    assert race.reactor.getDelayedCalls() == []


@pytest.mark.parametrize(
    "errors, expected",
    [
        ([TimeoutError(), ConnectionRefusedError()], ConnectionRefusedError),
        ([ConnectionRefusedError(), TimeoutError()], ConnectionRefusedError),
        ([TimeoutError(), NoRouteError()], NoRouteError),
        ([RuntimeError("bug"), TimeoutError()], TimeoutError),
        ([RuntimeError("bug"), RuntimeError("bug")], RuntimeError),
    ],
)
def test_mostTellingFailureWins(
    errors: list[Exception], expected: type[Exception]
) -> None:
    """
    When every attempt fails, the failure is the most telling one: a
    refusal, then another connect error, then a timeout, then anything
    else.
    """
    race = Race(v4("192.0.2.1"), v4("192.0.2.2"))
    for index, error in enumerate(errors):
        race.fail(index, error)
    [failure] = race.outcome
    assert failure.check(expected)
    assert race.reactor.getDelayedCalls() == []


def test_unexpectedFailuresNotLost(logEvents: list[LogEvent]) -> None:
    """
    An unexpected failure of one attempt that is not the reported one is
    logged with its traceback, once.
    """
    race = Race(v4("192.0.2.1"), v4("192.0.2.2"))
    race.fail(0, RuntimeError("bug"))
    race.fail(1, ConnectionRefusedError())
    [logged] = [e for e in logEvents if e.get("event") == "connector_error"]
    assert logged["log_failure"].check(RuntimeError)
    race.outcome[0].trap(ConnectionRefusedError)


def test_connectRaisingSynchronously() -> None:
    """
    A reactor that raises from C{connectTCP} fails that attempt at once and
    the next one starts; thousands of them do not nest calls.
    """

    class Raising(MemoryReactorClock):
        def connectTCP(self, host: str, *args: Any, **kwargs: Any) -> Any:
            self.tcpClients.append((host, *args))
            if host != "192.0.2.250":
                raise OSError("no socket for you")
            return super().connectTCP(host, *args, **kwargs)

    reactor = Raising()
    addresses = [v4(f"198.51.{i // 250}.{i % 250}") for i in range(3000)]
    outcome: list[Any] = []
    connectToFirst(reactor, addresses, Protocol(), TARGET).addBoth(outcome.append)
    [failure] = outcome
    assert failure.check(OSError)
    assert len(reactor.tcpClients) == 3000
    assert reactor.getDelayedCalls() == []


def test_onlyOneConnectionGetsTheProtocol() -> None:
    """
    The protocol is handed to one connection only.
    """
    protocol = Protocol()
    factory = _OnceFactory(protocol)
    assert factory.buildProtocol(v4("192.0.2.1")) is protocol
    assert factory.buildProtocol(v4("192.0.2.2")) is None


def test_noAddresses() -> None:
    """
    There must be an address to connect to.
    """
    with pytest.raises(ValueError):
        connectToFirst(MemoryReactorClock(), [], Protocol(), TARGET)
