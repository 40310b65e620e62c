# -*- test-case-name: tests.test_deadlines -*-
"""
Tests for L{connectproxy._deadlines.DeadlineSweeper}: one timer for the
idle, half-close and abort deadlines of every tunnel, on a fake clock with
fake relays.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock

from connectproxy import ProxySettings
from connectproxy._deadlines import LATENESS, DeadlineSweeper, sweepInterval
from connectproxy._relay import TunnelStats

#: Idle 60 s, half-close 30 s, abort 15 s: sweeps every 15/8 s.
SETTINGS = ProxySettings(idleTimeout=60, halfCloseTimeout=30, abortTimeout=15)


class FakeRelay:
    """
    A relay that moves no bytes: the test adds to its counters and sees
    what the sweeper asked of it.

    @ivar closed: The reasons of every L{close}, in order.
    @ivar aborts: How many times L{abort} was called.
    """

    def __init__(self, clock: MemoryReactorClock) -> None:
        self._clock = clock
        self.stats = TunnelStats(IPv4Address("TCP", "192.0.2.7", 443), clock.seconds())
        self.closed: list[str] = []
        self.aborts = 0

    def start(self, earlyData: bytes = b"", clientFinished: bool = False) -> None:
        self.stats.bytesUp += len(earlyData)

    def close(self, reason: str) -> None:
        self.closed.append(reason)
        if self.stats.closeReason is None:
            self.stats.closeReason = reason
        if self.stats.closingAt is None:
            self.stats.closingAt = self._clock.seconds()

    def abort(self) -> None:
        self.aborts += 1

    def traffic(self, count: int = 1) -> None:
        """
        Bytes moved (upstream to client).
        """
        self.stats.bytesDown += count

    def finish(self) -> None:
        """
        One direction finished: a FIN was passed on.
        """
        self.stats.halfClosedAt = self._clock.seconds()


class Sweep:
    """
    A sweeper on a fake clock.
    """

    def __init__(self) -> None:
        self.clock = MemoryReactorClock()
        self.sweeper = DeadlineSweeper(self.clock)

    def relay(self, settings: ProxySettings = SETTINGS) -> FakeRelay:
        """
        A fake relay, watched with C{settings}.
        """
        relay = FakeRelay(self.clock)
        self.sweeper.watch(relay, settings)
        return relay

    def advanceTo(self, when: float) -> None:
        """
        Let the clock run to C{when}, one sweep at a time.
        """
        while True:
            calls = self.clock.getDelayedCalls()
            if not calls:
                break
            next = min(call.getTime() for call in calls)
            if next > when:
                break
            self.clock.advance(max(0.0, next - self.clock.seconds()))
        self.clock.advance(max(0.0, when - self.clock.seconds()))


def test_noTimerWhenNothingWatched() -> None:
    """
    A sweeper with nothing to watch has no timer pending.
    """
    s = Sweep()
    assert s.clock.getDelayedCalls() == []
    assert s.sweeper.interval is None
    assert len(s.sweeper) == 0


def test_oneTimerForAllTunnels() -> None:
    """
    However many tunnels are watched, one timer is pending; forgetting the
    last one cancels it.
    """
    s = Sweep()
    relays = [s.relay() for _ in range(100)]
    assert len(s.clock.getDelayedCalls()) == 1
    assert len(s.sweeper) == 100
    s.clock.advance(10)
    assert len(s.clock.getDelayedCalls()) == 1
    for relay in relays:
        s.sweeper.forget(relay)
    assert s.clock.getDelayedCalls() == []
    assert s.sweeper.interval is None
    s.sweeper.forget(relays[0])  # not watched: nothing happens


def test_intervalIsAFractionOfShortestDeadline() -> None:
    """
    The sweeps run often enough to keep every deadline within an eighth of
    itself: every eighth of the abort timeout (which starts at a time the
    relay notes), every sixteenth of the idle and half-close timeouts
    (which start at traffic a sweep samples); a tunnel watched with shorter
    deadlines makes them more frequent.
    """
    assert LATENESS == 1 / 8
    s = Sweep()
    s.relay()
    assert s.sweeper.interval == sweepInterval(SETTINGS) == 15 / 8
    s.relay(ProxySettings(idleTimeout=600, halfCloseTimeout=4, abortTimeout=15))
    assert s.sweeper.interval == 4 / 16
    s.relay()
    assert s.sweeper.interval == 4 / 16
    assert sweepInterval(ProxySettings(idleTimeout=8, abortTimeout=15)) == 8 / 16


def test_idleTimeout() -> None:
    """
    A tunnel where no byte moved for the idle timeout is closed with that
    reason, not before.
    """
    s = Sweep()
    relay = s.relay()
    s.advanceTo(59.9)
    assert relay.closed == []
    s.advanceTo(60)
    assert relay.closed == ["idle timeout"]


def test_trafficDefersIdleTimeout() -> None:
    """
    Traffic in either direction pushes the idle deadline back: the tunnel
    closes no sooner than the idle timeout after the last byte, and at most
    an eighth of it later.
    """
    s = Sweep()
    relay = s.relay()
    s.advanceTo(40.3)
    relay.traffic()
    s.advanceTo(100.3 - 1e-6)
    assert relay.closed == []
    s.advanceTo(100.3 + 60 / 8)
    assert relay.closed == ["idle timeout"]


def test_halfCloseTimeout() -> None:
    """
    Once one direction has finished, the (shorter) half-close timeout
    applies, counted from the FIN, with its own reason.
    """
    s = Sweep()
    relay = s.relay()
    s.advanceTo(20.1)
    relay.finish()
    s.advanceTo(50.1 - 1e-6)
    assert relay.closed == []
    s.advanceTo(50.1 + 30 / 8)
    assert relay.closed == ["half-close timeout"]


def test_halfCloseTimeoutDeferredByTraffic() -> None:
    """
    Traffic in the direction still open pushes the half-close deadline
    back.
    """
    s = Sweep()
    relay = s.relay()
    relay.finish()
    for when in range(25, 250, 25):
        s.advanceTo(when)
        relay.traffic()
    assert relay.closed == []
    s.advanceTo(225 + 30 + 30 / 8)
    assert relay.closed == ["half-close timeout"]


def test_idleShorterThanHalfClose() -> None:
    """
    With an idle timeout below the half-close timeout, a half-closed tunnel
    closes at the idle timeout, counted from the FIN.
    """
    s = Sweep()
    relay = s.relay(ProxySettings(idleTimeout=30, halfCloseTimeout=60))
    s.advanceTo(10)
    relay.finish()
    s.advanceTo(40 - 1e-6)
    assert relay.closed == []
    s.advanceTo(40 + 30 / 8)
    assert relay.closed == ["idle timeout"]


def test_abortAfterAbortTimeout() -> None:
    """
    A tunnel still closing the abort timeout after its close began
    (whatever began it) is aborted once, and no longer watched.
    """
    s = Sweep()
    relay = s.relay()
    s.advanceTo(7.5)
    relay.close("client closed")
    s.advanceTo(22.5 - 1e-6)
    assert relay.aborts == 0
    s.advanceTo(22.5)
    assert relay.aborts == 1
    assert len(s.sweeper) == 0
    assert s.clock.getDelayedCalls() == []


def test_idleThenAbort() -> None:
    """
    The two stages: an idle tunnel is closed, then aborted the abort
    timeout later if its close has not finished.
    """
    s = Sweep()
    relay = s.relay()
    s.advanceTo(60)
    assert relay.closed == ["idle timeout"]
    s.advanceTo(75 - 1e-6)
    assert relay.aborts == 0
    s.advanceTo(75)
    assert relay.aborts == 1
    assert relay.closed == ["idle timeout"]


def test_closedRelayDropped() -> None:
    """
    A relay whose sides are both gone is no longer watched, even if nobody
    forgot it; a closing one is not closed again.
    """
    s = Sweep()
    relay = s.relay()
    relay.close("upstream closed")
    relay.stats.closedAt = s.clock.seconds()
    assert s.sweeper.interval is not None
    s.clock.advance(s.sweeper.interval)
    assert len(s.sweeper) == 0
    assert s.clock.getDelayedCalls() == []
    assert relay.closed == ["upstream closed"]


def test_keepsDeadlinesOfItsSettings() -> None:
    """
    Each tunnel keeps the deadlines it was watched with (a reload changes
    them for new tunnels only).
    """
    s = Sweep()
    old = s.relay(ProxySettings(idleTimeout=600))
    new = s.relay(ProxySettings(idleTimeout=5))
    s.advanceTo(60)
    assert new.closed == ["idle timeout"]
    assert old.closed == []


def test_watchAgain() -> None:
    """
    Watching a relay again starts its deadlines afresh, with the new
    settings; it is still watched once.
    """
    s = Sweep()
    relay = s.relay()
    s.advanceTo(50)
    s.sweeper.watch(relay, ProxySettings(idleTimeout=30, abortTimeout=15))
    assert len(s.sweeper) == 1
    s.advanceTo(80 - 1e-6)
    assert relay.closed == []
    s.advanceTo(80 + 30 / 8)
    assert relay.closed == ["idle timeout"]


def test_forgetDuringSweep() -> None:
    """
    A relay that is forgotten while the sweep closes another (its close
    finished at once) is not looked at again.
    """
    s = Sweep()
    first = s.relay()
    second = s.relay()
    first.close = lambda reason: s.sweeper.forget(second)  # type: ignore[method-assign]
    second.close = lambda reason: pytest.fail("forgotten")  # type: ignore[method-assign]
    s.advanceTo(60)
    assert len(s.sweeper) == 1


@settings(max_examples=200, deadline=None)
@given(
    idle=st.floats(1, 1000),
    abort=st.floats(1, 100),
    start=st.floats(0, 50),
    traffic=st.lists(st.floats(0.001, 200), max_size=5),
)
def test_neverEarlyAtMostAnEighthLate(
    idle: float, abort: float, start: float, traffic: list[float]
) -> None:
    """
    Whatever the deadlines and the traffic, the idle deadline never fires
    before the idle timeout after the last byte, and fires at most an
    eighth of it later.
    """
    s = Sweep()
    s.advanceTo(start)
    s.relay(ProxySettings(idleTimeout=1000, abortTimeout=1000))  # sets the grid
    relay = s.relay(ProxySettings(idleTimeout=idle, abortTimeout=abort))
    last = s.clock.seconds()
    for gap in traffic:
        if gap >= idle:
            break
        s.advanceTo(last + gap)
        relay.traffic()
        last = s.clock.seconds()
    s.advanceTo(last + idle - 1e-6)
    assert relay.closed == []
    s.advanceTo(last + idle + idle / 8 + 1e-6)
    assert relay.closed == ["idle timeout"]
