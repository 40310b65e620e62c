# -*- test-case-name: tests.test_tunnel -*-
"""
What every relay shares: L{TunnelStats}, the one record of a tunnel's
counters and times, and L{_Relay}, what the proxy and the deadlines need of
a relay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from twisted.internet.interfaces import IAddress

__all__ = ["TunnelStats", "_Relay"]


@dataclass(slots=True)
class TunnelStats:
    """
    The counters and times of one tunnel, kept up to date by its relay.

    Unlike the frozen records the observers get, this one is live: the relay
    adds to its counters as bytes move (that is the whole of its per-chunk
    bookkeeping) and notes when the tunnel changes phase; the deadlines and
    the access log read it.  Times are by the injected clock, in seconds.

    @ivar upstreamAddress: The upstream's address, as connected.
    @ivar openedAt: When the relay started.
    @ivar bytesUp: Bytes relayed from the client to the upstream, early data
        included.
    @ivar bytesDown: Bytes relayed from the upstream to the client.
    @ivar halfClosedAt: When one direction finished (the first FIN was
        passed on), or C{None}.
    @ivar closingAt: When the relay began to close (gracefully, or passing
        on a reset), or C{None}.
    @ivar closedAt: When both sides were gone, or C{None}.
    @ivar closeReason: What ended the tunnel, or C{None} while open: the
        first side that closed or was lost, or the deadline that expired.
    """

    upstreamAddress: IAddress
    openedAt: float
    bytesUp: int = 0
    bytesDown: int = 0
    halfClosedAt: float | None = None
    closingAt: float | None = None
    closedAt: float | None = None
    closeReason: str | None = None


class _Relay(Protocol):
    """
    A relay between a client and its upstream, as the proxy and the
    deadlines see it.

    A relay keeps L{stats} current as bytes move, passes half-closes and
    resets from one side to the other, and calls back once when both sides
    are gone.  It keeps no deadline of its own: idle, half-close and abort
    deadlines are kept for it by the L{DeadlineSweeper
    <connectproxy._deadlines.DeadlineSweeper>}, which reads L{stats} and
    calls L{close} and L{abort}.
    """

    @property
    def stats(self) -> TunnelStats:
        """
        The tunnel's counters and times, kept current.
        """

    def start(self, earlyData: bytes, clientFinished: bool) -> None:
        """
        Begin relaying: write C{earlyData} upstream first, then move bytes
        both ways.

        @param earlyData: Bytes the client sent after its request head.
        @param clientFinished: Whether the client already sent its FIN: it
            is passed on after the early data.
        """

    def close(self, reason: str) -> None:
        """
        Close both sides gracefully (what was relayed is flushed first); the
        first stage of a close.

        @param reason: The close reason, unless the tunnel has one already.
        """

    def abort(self) -> None:
        """
        Abort whatever is still open, at once: the second stage of a close
        that took too long.
        """
