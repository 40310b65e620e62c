# -*- test-case-name: tests.test_tunnel -*-
"""
The relay seam: what every relay shares, so that another way of moving bytes
(a zero-copy C{splice(2)} relay between plain TCP sockets) can sit beside the
transport relay.

  - L{TunnelStats}: the one record of a tunnel's counters and times, which
    the deadlines and the access log read.
  - L{_Relay}: what the proxy and the deadlines need of a relay.
  - L{_RelayEnd}: what a relay gets of each side: the protocol connected to
    it, on which the relay installs its own receivers.
  - L{_RelayFactory}: builds a relay for one tunnel; the proxy factory holds
    one, and it may choose a different relay per tunnel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from twisted.internet.interfaces import IAddress, IReactorTime, ITransport
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from ._settings import ProxySettings

__all__ = ["TunnelStats", "_Relay", "_RelayEnd", "_RelayFactory"]


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
    @ivar relay: Which relay moves the tunnel's bytes (C{--relay}):
        C{"transport"} or C{"splice"}.
    """

    upstreamAddress: IAddress
    openedAt: float
    bytesUp: int = 0
    bytesDown: int = 0
    halfClosedAt: float | None = None
    closingAt: float | None = None
    closedAt: float | None = None
    closeReason: str | None = None
    relay: str = "transport"


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
        The tunnel's counters and times, kept current: the same record for
        the relay's whole life.
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


class _RelayEnd(Protocol):
    """
    One side of a tunnel, as a relay takes it over: the protocol connected
    to that side's transport (the proxy's protocol for the client, the
    upstream protocol for the upstream).

    The relay installs its own receivers on it, so that from then on the
    side's events reach the relay without the protocol choosing where they
    go.  A relay that moves bytes through the transport installs receivers
    that write to the other side; a relay that reads the sockets itself
    stops the transports reading and installs receivers for the loss only.
    """

    @property
    def transport(self) -> ITransport | None:
        """
        The side's transport, connected.
        """

    def installReceivers(
        self,
        dataReceived: Callable[[bytes], None],
        readConnectionLost: Callable[[], None],
        connectionLost: Callable[[Failure], None],
    ) -> None:
        """
        Hand this side's bytes, its FIN (plain TCP only) and the loss of
        its connection to a relay from now on.

        @param dataReceived: Called with each chunk received; it replaces
            the protocol's C{dataReceived}, so that a chunk costs no call
            of the protocol's own.
        @param readConnectionLost: Called when the side sent its FIN.
        @param connectionLost: Called with the reason when the connection
            is gone, after the protocol's own bookkeeping.
        """


class _RelayFactory(Protocol):
    """
    Builds the relay of one tunnel, and installs its receivers on both
    ends.  It is called once the upstream is connected and the C{200}
    written, and L{_Relay.start} follows in the same call: the client may
    still be reading (paused only when its early data filled the buffer),
    and a relay that must not read through the transport pauses it itself.
    """

    def __call__(
        self,
        client: _RelayEnd,
        upstream: _RelayEnd,
        clock: IReactorTime,
        settings: ProxySettings,
        onClosed: Callable[[_Relay], object],
    ) -> _Relay:
        """
        @param client: The client's side.
        @param upstream: The upstream's side.
        @param clock: Where the relay's times (and any timer it needs of its
            own) come from.
        @param settings: The proxy's settings when the tunnel opened.
        @param onClosed: To be called once, with the relay, when both sides
            are gone.
        @return: The relay, not started.
        """
