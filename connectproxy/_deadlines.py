# -*- test-case-name: tests.test_deadlines -*-
"""
L{DeadlineSweeper}: the idle, half-close and abort deadlines of every
tunnel, kept by one repeating timer instead of timers per tunnel.

A relay does no timekeeping on its per-chunk path: it only adds to the byte
counters of its L{TunnelStats <connectproxy._relay.TunnelStats>}, and notes
when the first FIN was passed on and when it began to close.  Each sweep
compares every watched tunnel's byte count with the one seen at the sweep
before; a tunnel whose count has not changed for its deadline is closed
(the first stage of a close), and a tunnel still closing after the abort
timeout is aborted (the second stage).

Every deadline fires at most an eighth of itself late, never early (see
L{DeadlineSweeper} for how the sweep interval ensures it).  The timer runs
only while a tunnel is watched.
"""

from __future__ import annotations

import math

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ._relay import TunnelStats, _Relay
from ._settings import ProxySettings

__all__ = ["LATENESS", "DeadlineSweeper", "sweepInterval"]

#: How late, as a fraction of itself, a deadline may fire at most.
LATENESS = 1 / 8

#: Seconds of floating-point slack when comparing times.
_SLACK = 1e-9


def sweepInterval(settings: ProxySettings) -> float:
    """
    The longest interval between sweeps that keeps every deadline of a
    tunnel with these settings within L{LATENESS} of itself.

    The abort deadline counts from a time the relay notes (when its close
    began), so it fires at most one sweep late.  The idle and half-close
    deadlines count from the last traffic, which a sweep sees at most one
    sweep after it happened, so they fire at most two sweeps late.

    @param settings: C{idleTimeout}, C{halfCloseTimeout} and
        C{abortTimeout}, in seconds.
    @return: Seconds.
    """
    return LATENESS * min(
        settings.abortTimeout, settings.idleTimeout / 2, settings.halfCloseTimeout / 2
    )


class _Watch:
    """
    One watched tunnel: its relay and deadlines, and what the sweeps saw.

    @ivar stats: The relay's stats record (the same for its whole life).
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
        "stats",
    )

    def __init__(self, relay: _Relay, settings: ProxySettings, now: float) -> None:
        self.relay = relay
        self.stats: TunnelStats = relay.stats
        self.idleTimeout = settings.idleTimeout
        self.halfCloseTimeout = settings.halfCloseTimeout
        self.abortTimeout = settings.abortTimeout
        self.seen = self.stats.bytesUp + self.stats.bytesDown
        self.lastActivity = now
        self.gone = False

    def expired(self, now: float) -> str | None:
        """
        The close reason if an inactivity deadline has passed, else C{None}.
        """
        since = self.lastActivity
        timeout = self.idleTimeout
        reason = "idle timeout"
        halfClosedAt = self.stats.halfClosedAt
        if halfClosedAt is not None:
            # The FIN counts as activity for both deadlines.
            since = max(since, halfClosedAt)
            if self.halfCloseTimeout <= timeout:
                timeout = self.halfCloseTimeout
                reason = "half-close timeout"
        if now - since >= timeout - _SLACK:
            return reason
        return None


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
    change them).  The sweeps run at the shortest L{sweepInterval} of the
    tunnels watched since the timer started, on a fixed grid (a late sweep
    does not shift the later ones).

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
        forgotten, aborted or closed.  Watching a relay again starts its
        deadlines afresh.

        @param relay: A relay, started or about to be.
        @param settings: Its C{idleTimeout}, C{halfCloseTimeout} and
            C{abortTimeout} (seconds) apply.
        """
        now = self._clock.seconds()
        previous = self._watched.get(relay)
        if previous is not None:
            previous.gone = True
        self._watched[relay] = _Watch(relay, settings, now)
        interval = sweepInterval(settings)
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
                self._cancel()
                self.interval = None

    def _sweep(self) -> None:
        """
        Look at every watched tunnel once: note traffic, then close the idle
        and abort those closing for too long.

        The loop only reads and notes; the relays are called after it, so
        that what they do (a close that finishes at once) cannot change
        what is being looked at.
        """
        self._call = None
        now = self._clock.seconds()
        toAbort: list[_Watch] = []
        toClose: list[tuple[_Watch, str]] = []
        for watch in self._watched.values():
            stats = watch.stats
            closingAt = stats.closingAt
            if closingAt is not None:
                if (
                    stats.closedAt is not None
                    or now - closingAt >= watch.abortTimeout - _SLACK
                ):
                    toAbort.append(watch)
                continue
            total = stats.bytesUp + stats.bytesDown
            if total != watch.seen:
                watch.seen = total
                watch.lastActivity = now
                continue
            reason = watch.expired(now)
            if reason is not None:
                toClose.append((watch, reason))
        for watch in toAbort:
            if not watch.gone:
                # The second stage: nothing is left to watch after it.
                self.forget(watch.relay)
                if watch.stats.closedAt is None:
                    watch.relay.abort()
        for watch, reason in toClose:
            if not watch.gone and watch.stats.closingAt is None:
                watch.relay.close(reason)
        if self._watched and self._call is None:
            self._schedule(now)

    def _schedule(self, now: float) -> None:
        """
        Arm the timer for the next sweep after C{now}, on the grid of sweep
        times that started at the epoch.
        """
        assert self.interval is not None
        ticks = math.floor((now - self._epoch) / self.interval + _SLACK) + 1
        delay = self._epoch + ticks * self.interval - now
        self._call = self._clock.callLater(delay, self._sweep)

    def _cancel(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None
