# -*- test-case-name: tests.test_deadlines -*-
"""
L{DeadlineSweeper}: the idle, half-close and abort deadlines of every
tunnel, kept by one repeating timer instead of timers per tunnel.

A relay does no timekeeping on its per-chunk path: it only adds to the byte
counters of its L{TunnelStats}.  Each sweep compares every watched tunnel's
byte count with the one seen at the sweep before; a tunnel whose count has
not changed for its deadline is closed (the first stage of a close), and a
tunnel still closing after the abort timeout is aborted (the second stage).

The sweeps run L{SWEEPS_PER_DEADLINE} times per shortest deadline of the
tunnels watched.  Traffic is seen at most one sweep late and a deadline
fires at the first sweep after it, so a deadline fires at most two sweeps,
an eighth of the deadline, after it expired, never before.  The timer runs
only while a tunnel is watched.
"""

from __future__ import annotations

import math

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ._relay import _Relay
from ._settings import ProxySettings

__all__ = ["SWEEPS_PER_DEADLINE", "DeadlineSweeper"]

#: Sweeps per shortest deadline: a deadline fires at most two sweeps late
#: (one to see the last traffic, one to reach the deadline), so 16 keep
#: every deadline within an eighth of itself.
SWEEPS_PER_DEADLINE = 16

#: Seconds of floating-point slack when comparing times.
_SLACK = 1e-9


class _Watch:
    """
    One watched tunnel: its relay and deadlines, and what the sweeps saw.

    @ivar seen: The byte count (both ways) at the last sweep.
    @ivar lastActivity: When the byte count was last seen to change (or the
        watch began).
    @ivar gone: Whether the tunnel is no longer watched.
    """

    __slots__ = (
        "abortTimeout",
        "gone",
        "halfCloseTimeout",
        "idleTimeout",
        "lastActivity",
        "relay",
        "seen",
    )

    def __init__(self, relay: _Relay, settings: ProxySettings, now: float) -> None:
        self.relay = relay
        self.idleTimeout = settings.idleTimeout
        self.halfCloseTimeout = settings.halfCloseTimeout
        self.abortTimeout = settings.abortTimeout
        stats = relay.stats
        self.seen = stats.bytesUp + stats.bytesDown
        self.lastActivity = now
        self.gone = False


class DeadlineSweeper:
    """
    Keeps the deadlines of every tunnel with one timer on the injected
    clock.

    Each watched tunnel has, from the settings it was watched with:
      - the idle deadline (C{idleTimeout}): closed with C{"idle timeout"}
        when no byte moved either way for that long;
      - the half-close deadline (C{halfCloseTimeout}), once one direction
        has finished (C{stats.halfClosedAt}): closed with C{"half-close
        timeout"} when no byte moved for that long since the FIN or the
        last byte; the shorter of the two deadlines applies, and the FIN
        counts as activity for both;
      - the abort deadline (C{abortTimeout}), once the relay is closing
        (C{stats.closingAt}, whatever began the close): aborted that long
        after the close began.

    A tunnel keeps the deadlines it was watched with (a reload does not
    change them).  The sweeps run L{SWEEPS_PER_DEADLINE} times per shortest
    deadline of the tunnels watched since the timer started.

    @ivar interval: Seconds between two sweeps, or C{None} when nothing is
        watched (and no timer is pending).
    """

    def __init__(self, clock: IReactorTime) -> None:
        """
        @param clock: Where the one timer comes from.
        """
        self._clock = clock
        self._watched: dict[_Relay, _Watch] = {}
        self.interval: float | None = None
        self._epoch = 0.0
        self._call: IDelayedCall | None = None

    def __len__(self) -> int:
        """
        @return: How many tunnels are watched.
        """
        return len(self._watched)

    def watch(self, relay: _Relay, settings: ProxySettings) -> None:
        """
        Keep the deadlines of C{relay}, counted from now, until it is
        forgotten, aborted or closed.

        @param relay: A relay, started or about to be.
        @param settings: Its C{idleTimeout}, C{halfCloseTimeout} and
            C{abortTimeout} (seconds) apply.
        """
        now = self._clock.seconds()
        self._watched[relay] = _Watch(relay, settings, now)
        shortest = min(
            settings.idleTimeout, settings.halfCloseTimeout, settings.abortTimeout
        )
        interval = shortest / SWEEPS_PER_DEADLINE
        if self.interval is None or interval < self.interval:
            self.interval = interval
            self._epoch = now
            self._cancel()
            self._schedule(now)

    def forget(self, relay: _Relay) -> None:
        """
        Stop keeping the deadlines of C{relay} (its sides are gone); stop
        the timer if it was the last one.  Forgetting a relay that is not
        watched does nothing.
        """
        watch = self._watched.pop(relay, None)
        if watch is not None:
            watch.gone = True
            if not self._watched:
                self._stop()

    def _sweep(self) -> None:
        """
        Look at every watched tunnel once: note traffic, close the idle,
        abort those closing for too long.
        """
        self._call = None
        now = self._clock.seconds()
        for watch in list(self._watched.values()):
            if watch.gone:
                continue
            stats = watch.relay.stats
            closingAt = stats.closingAt
            if closingAt is not None:
                if stats.closedAt is not None:
                    self.forget(watch.relay)
                elif now - closingAt >= watch.abortTimeout - _SLACK:
                    # The second stage: nothing is left to watch after it.
                    self.forget(watch.relay)
                    watch.relay.abort()
                continue
            total = stats.bytesUp + stats.bytesDown
            if total != watch.seen:
                watch.seen = total
                watch.lastActivity = now
                continue
            since = watch.lastActivity
            timeout = watch.idleTimeout
            reason = "idle timeout"
            halfClosedAt = stats.halfClosedAt
            if halfClosedAt is not None:
                since = max(since, halfClosedAt)
                if watch.halfCloseTimeout <= timeout:
                    timeout = watch.halfCloseTimeout
                    reason = "half-close timeout"
            if now - since >= timeout - _SLACK:
                watch.relay.close(reason)
        if self._watched and self._call is None:
            self._schedule(now)

    def _schedule(self, now: float) -> None:
        """
        Arm the timer for the next sweep after C{now}, on the grid of sweep
        times that started at the epoch (so that a late sweep does not
        shift the later ones).
        """
        assert self.interval is not None
        ticks = math.floor((now - self._epoch) / self.interval + _SLACK) + 1
        delay = self._epoch + ticks * self.interval - now
        self._call = self._clock.callLater(delay, self._sweep)

    def _cancel(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None

    def _stop(self) -> None:
        self._cancel()
        self.interval = None
