# -*- test-case-name: tests.test_pool -*-
"""
Upstream connections of forwarded requests: L{OriginProtocol}, the protocol
of one, and L{UpstreamPool}, where idle ones wait to carry the next request
to the same origin through the same route.

A connection is pooled only after a complete response to a complete
request with neither side asking to close (the forwarding handler decides),
and only while the pool has room (C{--upstream-keepalive} in all).  While
idle it must stay silent: one that receives a byte or a FIN, or is lost, is
dropped.  Each waits at most C{--upstream-idle-timeout}; one timer on the
injected clock, set for the earliest deadline, keeps them all.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Protocol as TypingProtocol
from typing import cast

from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IReactorTime,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from ._tunnel import TunnelTransport

__all__ = ["OriginProtocol", "PoolKey", "UpstreamPool"]

#: What a pooled connection is reused for: the route (C{"direct"}, or the
#: parent proxy's address), the target host and the target port.
PoolKey = tuple[str, str, int]


class _Owner(TypingProtocol):
    """
    Whoever the connection's events go to: the handler of the exchange in
    flight, or the pool while it is idle.
    """

    def upstreamData(self, data: bytes) -> None: ...
    def upstreamFinished(self) -> None: ...
    def upstreamLost(self, reason: Failure) -> None: ...


@implementer(IHalfCloseableProtocol)
class OriginProtocol(Protocol):
    """
    The connection to the origin (or a parent proxy) of forwarded
    requests: it passes what happens on it to its L{owner}.

    @ivar owner: Where its bytes, its FIN and its loss go.
    @ivar lost: Whether the connection is gone.
    """

    def __init__(self, owner: _Owner) -> None:
        self.owner = owner
        self.lost = False

    @property
    def upstream(self) -> TunnelTransport:
        """
        The transport, connected.
        """
        return cast(TunnelTransport, self.transport)

    def installReceivers(
        self,
        dataReceived: Callable[[bytes], None],
        readConnectionLost: Callable[[], None],
        connectionLost: Callable[[Failure], None],
    ) -> None:
        """
        Hand the connection's bytes, FIN and loss to a relay (a tunnel
        after the origin's C{101}): see L{_RelayEnd.installReceivers
        <connectproxy._relay._RelayEnd.installReceivers>}.
        """
        self.dataReceived = dataReceived  # type: ignore[method-assign,assignment]
        self.owner = _RelayOwner(dataReceived, readConnectionLost, connectionLost)

    def dataReceived(self, data: bytes) -> None:
        self.owner.upstreamData(data)

    def readConnectionLost(self) -> None:
        self.owner.upstreamFinished()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = True
        self.owner.upstreamLost(reason)


@dataclass(frozen=True)
class _RelayOwner:
    """
    The owner of a connection a relay took over: its receivers.
    """

    upstreamData: Callable[[bytes], None]
    upstreamFinished: Callable[[], None]
    upstreamLost: Callable[[Failure], None]


@dataclass(eq=False)
class _Idle:
    """
    An idle pooled connection, the owner of its events meanwhile.
    """

    pool: UpstreamPool
    key: PoolKey
    protocol: OriginProtocol
    deadline: float

    def upstreamData(self, data: bytes) -> None:
        # An idle connection must be silent: whatever it says, it can
        # carry no request any more.
        self.pool.discard(self)
        self.protocol.upstream.abortConnection()

    def upstreamFinished(self) -> None:
        self.pool.discard(self)
        self.protocol.upstream.loseConnection()

    def upstreamLost(self, reason: Failure) -> None:
        self.pool.discard(self)


class UpstreamPool:
    """
    Idle upstream connections of forwarded requests, by L{PoolKey}, at most
    a number of them in all, each for at most a number of seconds.

    @ivar kept: How many connections were kept so far.
    """

    def __init__(self, clock: IReactorTime) -> None:
        """
        @param clock: Where the one idle timer comes from.
        """
        self._clock = clock
        # In the order they became idle: the oldest first.
        self._idle: dict[_Idle, None] = {}
        self._timer: IDelayedCall | None = None
        self.kept = 0

    def __len__(self) -> int:
        """
        @return: How many connections are idle in the pool.
        """
        return len(self._idle)

    def take(self, key: Hashable) -> OriginProtocol | None:
        """
        Take the connection that became idle last for C{key}, if any.

        @return: Its protocol, whose C{owner} the caller sets; C{None} when
            none is idle.
        """
        for idle in reversed(list(self._idle)):
            if idle.key == key:
                self.discard(idle)
                if not idle.protocol.lost:
                    return idle.protocol
        return None

    def put(
        self, key: PoolKey, protocol: OriginProtocol, limit: int, timeout: float
    ) -> bool:
        """
        Keep an idle connection for reuse, making room by closing the
        oldest one if the pool is full.

        @param key: What it may be reused for.
        @param protocol: The connection; its owner becomes the pool.
        @param limit: Most connections in the pool (C{--upstream-keepalive});
            0: none is kept.
        @param timeout: Seconds it is kept (C{--upstream-idle-timeout}).
        @return: Whether it was kept; if not, the caller closes it.
        """
        if limit <= 0 or protocol.lost:
            return False
        while len(self._idle) >= limit:
            oldest = next(iter(self._idle))
            self.discard(oldest)
            oldest.protocol.upstream.loseConnection()
        idle = _Idle(self, key, protocol, self._clock.seconds() + timeout)
        protocol.owner = idle
        self._idle[idle] = None
        self.kept += 1
        # It is read while idle, so that a close or stray bytes are seen.
        protocol.upstream.resumeProducing()
        self._schedule()
        return True

    def discard(self, idle: _Idle) -> None:
        """
        Forget an idle connection (taken, dropped or gone).
        """
        if self._idle.pop(idle, 0) is None:
            self._schedule()

    def closeAll(self) -> None:
        """
        Close every idle connection (the proxy drains or stops).
        """
        for idle in list(self._idle):
            self.discard(idle)
            idle.protocol.upstream.loseConnection()

    def _schedule(self) -> None:
        """
        Set the timer for the earliest deadline, or none when the pool is
        empty.
        """
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        if not self._idle:
            return
        earliest = min(idle.deadline for idle in self._idle)
        delay = max(0.0, earliest - self._clock.seconds())
        self._timer = self._clock.callLater(delay, self._expire)

    def _expire(self) -> None:
        """
        Close the connections whose deadline has passed.
        """
        self._timer = None
        now = self._clock.seconds()
        for idle in list(self._idle):
            if idle.deadline <= now + 1e-9:
                self._idle.pop(idle, None)
                idle.protocol.upstream.loseConnection()
        self._schedule()
