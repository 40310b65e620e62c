# -*- test-case-name: tests.test_shutdown -*-
"""
The draining shutdown: on C{SIGTERM} (or C{stopService}) the proxy stops
accepting at once, lets established tunnels run for up to
C{--shutdown-grace} seconds, then closes what is left (close reason
C{shutdown}) and exits; a second C{SIGTERM} or C{SIGINT} ends it at once.

  - L{Drain}: one shutdown of a factory, step by step, on the injected
    clock.
  - L{ShutdownService}: runs a L{Drain} when stopped, and handles the
    second signal meanwhile.
  - L{ProxyService}: the proxy's L{MultiService}, which stops the services
    added after its L{ShutdownService} (the listeners, the systemd
    notifications) first, then waits for the drain, then stops the others
    (the reload service, the observers' services such as the access-log
    file), so that every tunnel's last report is written.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._factory import ConnectProxyFactory
from ._workersignals import reactorStopping

__all__ = ["FINAL_WAIT", "SHUTDOWN_REASON", "Drain", "ProxyService", "ShutdownService"]

#: The close reason of the tunnels a shutdown closes.
SHUTDOWN_REASON = "shutdown"

#: Seconds to wait, after aborting what was left, for the aborted
#: connections to be gone.
FINAL_WAIT = 1.0


class Drain:
    """
    One draining shutdown of a factory:

      1. L{start}: the factory stops admitting (C{drain()}: a request whose
         head completes gets 503); tunnels carry on.  The listeners must be
         stopped already.
      2. When no connection is left, or after C{grace} seconds, whichever
         comes first: every connection left is closed
         (C{closeAll("shutdown")}: tunnels gracefully, requests with 503).
      3. When no connection is left, or after C{abortTimeout} more seconds:
         whatever is still open is aborted.
      4. When no connection is left, or after L{FINAL_WAIT} more seconds,
         the Deferred L{start} returned fires.

    L{now} (a second signal) skips to step 2 at once, with L{FINAL_WAIT}
    seconds for the closes instead of C{abortTimeout}.
    """

    _log = Logger()

    def __init__(
        self,
        factory: ConnectProxyFactory,
        clock: IReactorTime,
        grace: float,
        abortTimeout: float,
    ) -> None:
        """
        @param factory: The factory to drain.
        @param clock: Where the deadlines come from.
        @param grace: Seconds established tunnels may keep running (0: close
            them at once).
        @param abortTimeout: Seconds the closes may take before the
            connections are aborted.
        """
        self._factory = factory
        self._clock = clock
        self.grace = grace
        self.abortTimeout = abortTimeout
        self._done: Deferred[None] | None = None
        self._timer: IDelayedCall | None = None
        self._idle: Deferred[None] | None = None
        self._startedAt = 0.0
        # Seconds the closes of the last closeAll may take.
        self._closing = abortTimeout
        self.finished = False

    def start(self) -> Deferred[None]:
        """
        Begin: stop admitting requests and wait for the connections.

        @return: A Deferred that fires (with C{None}) once no connection is
            left, or at the last deadline.
        """
        if self._done is not None:
            return self._done
        self._done = Deferred()
        self._startedAt = self._clock.seconds()
        factory = self._factory
        factory.drain()
        self._log.info(
            "shutting down: no longer accepting; {tunnels} tunnels and "
            "{connections} connections may finish within {grace}s",
            event="shutdown_draining",
            tunnels=factory.openTunnels,
            connections=len(factory.connections),
            grace=self.grace,
        )
        if self.grace > 0:
            self._waitIdle(self.grace, self._graceOver)
        else:
            self._graceOver()
        return self._done

    def now(self) -> None:
        """
        End at once: close every connection left, abort those still open
        L{FINAL_WAIT} seconds later, and finish as soon as they are gone
        (or L{FINAL_WAIT} seconds after that).  Does nothing before
        L{start} or once finished.
        """
        if self._done is None or self.finished:
            return
        self._cancelWaits()
        factory = self._factory
        self._log.warn(
            "shutting down now: closing {tunnels} tunnels and {connections} "
            "connections",
            event="shutdown_forced",
            tunnels=factory.openTunnels,
            connections=len(factory.connections),
        )
        factory.closeAll(SHUTDOWN_REASON)
        self._closing = FINAL_WAIT
        self._waitIdle(FINAL_WAIT, self._abortRest)

    def _graceOver(self) -> None:
        factory = self._factory
        if factory.connections or factory.openTunnels:
            self._log.info(
                "shutdown grace over: closing {tunnels} tunnels and "
                "{connections} connections",
                event="shutdown_closing",
                tunnels=factory.openTunnels,
                connections=len(factory.connections),
                grace=self.grace,
            )
        factory.closeAll(SHUTDOWN_REASON)
        self._closing = self.abortTimeout
        self._waitIdle(self.abortTimeout, self._abortRest)

    def _abortRest(self) -> None:
        factory = self._factory
        self._log.warn(
            "aborting {connections} connections that did not close within {seconds}s",
            event="shutdown_aborting",
            connections=len(factory.connections),
            seconds=self._closing,
        )
        self._abortAll()
        self._waitIdle(FINAL_WAIT, self._giveUp)

    def _abortAll(self) -> None:
        """
        Abort both sides of every tunnel and every client connection left.
        """
        factory = self._factory
        for relay in list(factory.relays):
            relay.abort()
        for protocol in list(factory.connections):
            transport = protocol.transport
            if transport is not None:
                transport.abortConnection()  # type: ignore[attr-defined]

    def _giveUp(self) -> None:
        self._log.warn(
            "{connections} connections were still open at shutdown",
            event="shutdown_incomplete",
            connections=len(self._factory.connections),
        )
        self._finish()

    def _waitIdle(self, seconds: float, then: Callable[[], None]) -> None:
        """
        Finish when the factory is idle; call C{then} if it is not within
        C{seconds}.
        """
        self._timer = self._clock.callLater(seconds, self._expired, then)
        idle = self._factory.whenIdle()
        self._idle = idle
        idle.addCallbacks(self._becameIdle, _ignoreCancel)

    def _becameIdle(self, result: None) -> None:
        self._idle = None
        self._finish()

    def _expired(self, then: Callable[[], None]) -> None:
        self._timer = None
        idle, self._idle = self._idle, None
        if idle is not None:
            idle.cancel()
        then()

    def _cancelWaits(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        idle, self._idle = self._idle, None
        if idle is not None:
            idle.cancel()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self._cancelWaits()
        self._log.info(
            "every connection is closed after {seconds:.3f}s; stopping",
            event="shutdown_drained",
            seconds=self._clock.seconds() - self._startedAt,
        )
        assert self._done is not None
        self._done.callback(None)


def _ignoreCancel(failure: Failure) -> None:
    failure.trap(CancelledError)


class ShutdownService(Service):
    """
    Drains the factory when stopped (see L{Drain}), with the grace period
    and abort timeout of the factory's settings at that moment, and ends
    the drain at once on a second C{SIGTERM} or C{SIGINT} when the process
    owns its signals.

    @ivar drain: The drain under way, or C{None}.
    """

    _log = Logger()

    def __init__(
        self, factory: ConnectProxyFactory, reactor: Any, installSignals: bool
    ) -> None:
        """
        @param factory: The factory to drain.
        @param reactor: The clock, and where a signal handler hands over
            (C{callFromThread}).
        @param installSignals: Whether to handle C{SIGTERM} and C{SIGINT}
            while draining.
        """
        self._factory = factory
        self._reactor = reactor
        self._installSignals = installSignals
        self._previous: dict[int, Any] = {}
        self.drain: Drain | None = None

    def stopService(self) -> Deferred[None]:
        """
        Drain.

        @return: A Deferred that fires when the drain has finished.
        """
        super().stopService()
        settings = self._factory.settings
        drain = Drain(
            self._factory,
            self._reactor,
            settings.shutdownGrace,
            settings.abortTimeout,
        )
        self.drain = drain
        if self._installSignals:
            for number in (signal.SIGTERM, signal.SIGINT):
                self._previous[number] = signal.signal(number, self._onSignal)
        done = drain.start()
        done.addBoth(self._restoreSignals)
        return done

    def _onSignal(self, signum: int, frame: object) -> None:
        drain = self.drain
        if drain is not None:
            self._reactor.callFromThread(drain.now)

    def _restoreSignals(self, result: object) -> object:
        if reactorStopping(self._reactor):
            # The process exits next: a late SIGTERM goes to drain.now,
            # which does nothing once the drain is over.
            return result
        previous, self._previous = self._previous, {}
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
        return result


class ProxyService(MultiService):
    """
    The proxy's services, stopped in three steps: the services added after
    L{barrier} (the listeners, the systemd notifications) all at once;
    once they have stopped (the listening sockets are closed), the barrier
    (the drain); and once its Deferred has fired, the services added
    before it, in reverse order as L{MultiService} does.

    @ivar barrier: The service whose stop the services added before it
        wait for; C{None} to stop like a plain L{MultiService}.
    """

    _log = Logger()
    barrier: IService | None = None

    def stopService(self) -> Deferred[Any]:
        children = list(self)
        barrier = self.barrier
        if barrier is None or barrier not in children:
            return super().stopService()  # type: ignore[no-any-return]
        Service.stopService(self)
        at = children.index(barrier)
        first = [maybeDeferred(s.stopService) for s in reversed(children[at + 1 :])]

        def drain(result: object) -> Deferred[Any]:
            return maybeDeferred(barrier.stopService)

        def rest(result: object) -> Deferred[Any]:
            if isinstance(result, Failure):
                self._log.failure(
                    "the shutdown failed", result, event="shutdown_failed"
                )
            later = [maybeDeferred(s.stopService) for s in reversed(children[:at])]
            return DeferredList(first + later)

        return DeferredList(first).addCallback(drain).addBoth(rest)
