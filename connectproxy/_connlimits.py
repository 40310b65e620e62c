# -*- test-case-name: tests.test_limits -*-
"""
The connection limits of L{ConnectProxyFactory
<connectproxy._factory.ConnectProxyFactory>}: the count of connections
per client, the checks of C{--max-connections} and
C{--max-connections-per-client}, when a connection over them is shed
(closed at once) rather than answered, and the C{connections_shed}
summaries logged at most once a second.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ._settings import ProxySettings

__all__ = ["ConnectionLimits"]


class ConnectionLimits:
    """
    Counts client connections per client host and decides which are over
    a limit, and which of those are shed.
    """

    def __init__(self, log: Any) -> None:
        """
        @param log: The logger the C{connections_shed} events go to (the
            factory's).
        """
        self._log = log
        self._perClient: dict[str, int] = {}
        # Connections shed since the last connections_shed event, the
        # reason of the last one, the clock and the timer of the next
        # summary.
        self._shed = 0
        self._shedReason = ""
        self._clock: IReactorTime | None = None
        self._shedTimer: IDelayedCall | None = None

    def overLimit(
        self, settings: ProxySettings, connections: int, clientHost: str
    ) -> str | None:
        """
        Whether one more connection from C{clientHost} is over a limit.

        @param settings: The limits.
        @param connections: How many client connections are open now.
        @param clientHost: The client's host, or C{""} when unknown.
        @return: The reason it is refused (naming the option), or C{None}.
        """
        total = settings.maxConnections
        if total and connections >= total:
            return "the proxy has too many connections (see --max-connections)"
        perClient = settings.maxConnectionsPerClient
        if perClient and clientHost and self._perClient.get(clientHost, 0) >= perClient:
            return (
                "this client has too many connections "
                "(see --max-connections-per-client)"
            )
        return None

    def shouldShed(self, settings: ProxySettings, open: int) -> bool:
        """
        Whether a connection refused now is closed at once rather than
        answered: C{open} (connections open and being refused) is far over
        the total limit, where even a response costs too much.
        """
        limit = settings.maxConnections
        return bool(limit) and open >= limit + max(16, limit // 10)

    def opened(self, clientHost: str) -> None:
        """
        A connection from C{clientHost} was accepted.
        """
        if clientHost:
            self._perClient[clientHost] = self._perClient.get(clientHost, 0) + 1

    def closed(self, clientHost: str) -> None:
        """
        A connection from C{clientHost} accepted by L{opened} is gone.
        """
        if clientHost:
            count = self._perClient.get(clientHost, 0) - 1
            if count > 0:
                self._perClient[clientHost] = count
            else:
                self._perClient.pop(clientHost, None)

    def countShed(self, reason: str, clock: IReactorTime) -> None:
        """
        Count a shed connection: the first of a burst is logged at once,
        the rest in one C{connections_shed} event a second later (then one
        a second while shedding goes on), from a timer on C{clock} that
        runs only while there is something to log.
        """
        self._shed += 1
        self._shedReason = reason
        self._clock = clock
        if self._shedTimer is None:
            self._logShed()

    def _logShed(self) -> None:
        """
        Log the connections shed since the last event, if any, and look
        again a second later; stop looking after a quiet second.
        """
        self._shedTimer = None
        if not self._shed:
            return
        self._log.warn(
            "closed {count} connections at once: {reason}",
            event="connections_shed",
            count=self._shed,
            reason=self._shedReason,
        )
        self._shed = 0
        assert self._clock is not None
        self._shedTimer = self._clock.callLater(1.0, self._logShed)

    def stop(self) -> None:
        """
        Log the shed connections not logged yet, and stop the timer.
        """
        if self._shedTimer is not None:
            self._shedTimer.cancel()
            self._logShed()
            if self._shedTimer is not None:
                self._shedTimer.cancel()
                self._shedTimer = None
