# -*- test-case-name: tests.test_tunnel -*-
"""
Names kept for one release after they were deprecated.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime

from ._deadlines import DeadlineSweeper
from ._settings import ProxySettings
from ._tunnel import TransportRelay, TunnelTransport

__all__ = ["ProxyTunnel"]


class ProxyTunnel(TransportRelay):
    """
    A L{TransportRelay} that keeps its own idle, half-close and abort
    deadlines, as a tunnel did before they moved to the proxy's shared
    L{DeadlineSweeper}.

    @deprecated: Tunnels are built and watched by L{ConnectProxyFactory
        <connectproxy.ConnectProxyFactory>}; read what they did from the
        C{TunnelRecord} an L{IProxyObserver
        <connectproxy.interfaces.IProxyObserver>} gets.
    """

    def __init__(
        self,
        client: TunnelTransport,
        upstream: TunnelTransport,
        clock: IReactorTime,
        idleTimeout: float,
        abortTimeout: float,
        onClosed: Callable[[ProxyTunnel], object],
        halfCloseTimeout: float | None = None,
    ) -> None:
        """
        @param client: The client's transport, paused.
        @param upstream: The upstream's transport, connected.
        @param clock: Where timers come from.
        @param idleTimeout: Seconds without traffic either way before the
            tunnel is closed.
        @param abortTimeout: Seconds a graceful close (or the flush before a
            reset) may take before the connections are aborted.
        @param onClosed: Called once, with the tunnel, when both sides are
            gone.
        @param halfCloseTimeout: Seconds without traffic before a tunnel
            with one direction finished is closed; the idle timeout when
            C{None}.  The shorter of the two applies.
        """
        super().__init__(client, upstream, clock, onClosed)
        self._deadlines = DeadlineSweeper(clock)
        self._deadlineSettings = ProxySettings(
            idleTimeout=idleTimeout,
            halfCloseTimeout=(
                idleTimeout if halfCloseTimeout is None else halfCloseTimeout
            ),
            abortTimeout=abortTimeout,
        )

    def start(self, earlyData: bytes = b"", clientFinished: bool = False) -> None:
        self._deadlines.watch(self, self._deadlineSettings)
        super().start(earlyData, clientFinished)

    def _finished(self) -> None:
        self._deadlines.forget(self)
        super()._finished()
