# -*- test-case-name: tests.test_tunnel -*-
"""
What every relay shares: L{TunnelStats}, the one record of a tunnel's
counters and times, which the access log and the deadlines read.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.interfaces import IAddress

__all__ = ["TunnelStats"]


@dataclass(slots=True)
class TunnelStats:
    """
    The counters and times of one tunnel, kept up to date by its relay.

    Unlike the frozen records the observers get, this one is live: the relay
    adds to its counters as bytes move (that is the whole of its per-chunk
    bookkeeping), and readers take what they need when they need it.

    @ivar upstreamAddress: The upstream's address, as connected.
    @ivar openedAt: When the relay started, by the injected clock (seconds).
    @ivar bytesUp: Bytes relayed from the client to the upstream, early data
        included.
    @ivar bytesDown: Bytes relayed from the upstream to the client.
    @ivar closedAt: When both sides were gone, or C{None}.
    @ivar closeReason: What ended the tunnel, or C{None} while open: the
        first side that closed or was lost, or the deadline that expired.
    """

    upstreamAddress: IAddress
    openedAt: float
    bytesUp: int = 0
    bytesDown: int = 0
    closedAt: float | None = None
    closeReason: str | None = None
