# -*- test-case-name: tests.test_pool,tests.test_forwardends -*-
"""
The upstream connection of one forwarded request: L{OriginLink} takes an
idle pooled connection or connects a fresh one (to the origin through the
connector, or to the parent proxy the connector names), connects again for
a retry under a deadline of its own, and once the exchange is over puts the
connection back in the pool or closes it: gracefully, and aborted after
the abort timeout (a two-stage close).  Until every connection it closed is
gone it is not L{done <OriginLink.done>}, and the end of the client's
connection waits for it.

Which request goes on it, and what its bytes mean, is the forwarding
handler's (L{connectproxy._forward}) and its exchange's
(L{connectproxy._forwardstream}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, TimeoutError, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._connect import connectRefusal
from ._connector import UpstreamRequest
from ._handler import _Front
from ._parenturl import ParentProxy
from ._pool import OriginProtocol, PoolKey, _Owner
from ._tunnel import TunnelTransport

__all__ = ["OriginLink"]


class _Closing:
    """
    The owner of an upstream connection its link closes: what it still
    says is ignored, and its loss tells the link.
    """

    def __init__(self, link: OriginLink, protocol: OriginProtocol) -> None:
        self._link = link
        self._protocol = protocol

    def upstreamData(self, data: bytes) -> None:
        pass

    def upstreamFinished(self) -> None:
        pass

    def upstreamLost(self, reason: Failure) -> None:
        self._link._closed(self._protocol)


class OriginLink:
    """
    The upstream connection of one forwarded request.

    @ivar key: What its connections are pooled under: the route (C{"direct"}
        or the parent proxy's address), the target's host and port.
    @ivar protocol: The protocol of the connection in use or being
        connected, else C{None}.
    @ivar transport: The connection in use, once connected; C{None} before,
        once released, given up or lost.
    @ivar reused: Whether the connection in use came from the pool.
    @ivar retried: Whether the request was sent again on a fresh
        connection.
    """

    _log = Logger()

    def __init__(
        self,
        front: _Front,
        owner: _Owner,
        target: UpstreamRequest,
        parent: ParentProxy | None,
        onClosed: Callable[[], None],
    ) -> None:
        """
        @param front: The front of the client's connection: the factory (the
            connector, the pool), the settings and the clock.
        @param owner: Where the events of the connection in use go.
        @param target: What to connect to, for whom.
        @param parent: The parent proxy the request goes through, else
            C{None}.
        @param onClosed: Called when a connection the link closed is gone.
        """
        self._front = front
        self._owner = owner
        self._target = target
        self._parent = parent
        self._onClosed = onClosed
        route = "direct" if parent is None else parent.address
        self.key: PoolKey = (route, target.host, target.port)
        self.protocol: OriginProtocol | None = None
        self.transport: TunnelTransport | None = None
        self.reused = False
        self.retried = False
        self._pending: Deferred[Any] | None = None
        # The connections being closed, each with the timer that aborts it
        # if it takes too long (none when aborted already).
        self._closing: dict[OriginProtocol, IDelayedCall | None] = {}

    # Acquiring.

    def takePooled(self) -> bool:
        """
        Take the idle pooled connection for L{key} that became idle last.

        @return: Whether there was one: it is L{protocol} now.
        """
        pooled = self._front.factory.upstreamPool.take(self.key)
        if pooled is None:
            return False
        pooled.owner = self._owner
        self.protocol = pooled
        self.reused = True
        return True

    def connect(self) -> Deferred[IProtocol]:
        """
        Connect a fresh connection: to the origin through the connector, or
        to the parent proxy the connector names (C{connectForwarding}).  A
        retry's connect has the connect deadline of its own (the
        admission's is over).

        @return: The connector's Deferred.
        """
        self.protocol = OriginProtocol(self._owner)
        connector = self._front.factory.connector
        connect = connector.connectUpstream
        if self._parent is not None:
            connect = connector.connectForwarding  # type: ignore[attr-defined]
        d = maybeDeferred(connect, self._target, self.protocol)
        if self.retried:
            front = self._front
            d.addTimeout(front.settings.connectTimeout, front.clock)
        self._pending = d
        d.addBoth(self._settled)
        return d

    def _settled(self, result: object) -> object:
        self._pending = None
        return result

    def cancel(self) -> None:
        """
        Cancel the connect in flight, if any.
        """
        if self._pending is not None:
            self._pending.cancel()

    def attach(self) -> TunnelTransport:
        """
        The connection L{protocol} is connected: it is the one in use.

        @return: Its transport.
        """
        assert self.protocol is not None
        self.transport = self.protocol.upstream
        return self.transport

    def retry(self) -> Deferred[IProtocol]:
        """
        Give the connection in use up (aborted: it died before answering)
        and connect a fresh one, once.

        @return: The connector's Deferred.
        """
        self.retried = True
        self.reused = False
        protocol = self.protocol
        self.transport = None
        if protocol is not None:
            self._close(protocol, abort=True)
        return self.connect()

    def refusal(self, failure: Failure, timedOut: bool) -> tuple[int, str, str]:
        """
        What a failed connect is answered (as for a tunnel), logged: an
        unexpected failure with its traceback, an unreachable origin or a
        parent's refusal as C{connect_failed}.

        @param failure: Why the connect failed.
        @param timedOut: Whether a deadline passed.
        @return: The status, the reason and the outcome.
        """
        timedOut = timedOut or bool(failure.check(TimeoutError))
        return connectRefusal(
            self._log, failure, timedOut, self._front, self._target.request.authority
        )

    # Letting go.

    @property
    def lost(self) -> bool:
        """
        Whether the connection of L{protocol} is gone.
        """
        return self.protocol is not None and self.protocol.lost

    def forgetLost(self) -> None:
        """
        The connection in use is gone, if it is: it is in use no more.
        """
        if self.transport is not None and self.lost:
            self.transport = None

    def abort(self) -> None:
        """
        Abort the connection in use, unless it is gone already (it stays
        in use until it is: L{forgetLost}).
        """
        if self.transport is not None and not self.lost:
            self.transport.abortConnection()

    def release(self, reusable: bool) -> None:
        """
        The exchange is over: put the connection in use in the pool, or
        close it.

        @param reusable: Whether it may carry another request.
        """
        transport, protocol = self.transport, self.protocol
        self.transport = None
        if transport is None or protocol is None:
            return
        factory = self._front.factory
        settings = self._front.settings
        if not (
            reusable
            and not factory.draining
            and factory.upstreamPool.put(
                self.key,
                protocol,
                settings.upstreamKeepalive,
                settings.upstreamIdleTimeout,
            )
        ):
            self._close(protocol, abort=False)

    def _close(self, protocol: OriginProtocol, abort: bool) -> None:
        """
        Close a connection no longer in use, and keep it until it is gone:
        aborted, or closed gracefully and aborted after the abort timeout.
        """
        if protocol.lost:
            return
        protocol.owner = _Closing(self, protocol)
        upstream = protocol.upstream
        timer = None
        if abort:
            upstream.abortConnection()
        else:
            upstream.loseConnection()
            front = self._front
            timer = front.clock.callLater(
                front.settings.abortTimeout, upstream.abortConnection
            )
        self._closing[protocol] = timer

    def _closed(self, protocol: OriginProtocol) -> None:
        """
        A connection the link closed is gone.
        """
        timer = self._closing.pop(protocol, None)
        if timer is not None and timer.active():
            timer.cancel()
        self._onClosed()

    @property
    def closing(self) -> bool:
        """
        Whether a connection the link closed is not gone yet.
        """
        return bool(self._closing)
