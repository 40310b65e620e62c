# -*- test-case-name: tests.test_workers -*-
"""
The supervisor of C{--workers N}: the process that C{twistd} or C{twist}
started binds the listening sockets (before C{twistd} drops privileges)
and runs N worker processes that share them, each a whole proxy with its
own reactor.

L{Supervisor} starts the workers (C{reactor.spawnProcess}, never a fork of
the running reactor), restarts one that dies after a backoff, and gives up
(stopping the proxy with exit status 1) when one keeps dying right after
it starts.  It passes SIGHUP (reload) and SIGUSR1 (re-open the access-log
file) on to every worker, and on SIGTERM or SIGINT closes its sockets and
tells every worker to drain, then stops once all have exited.  It tells
systemd C{READY=1} once every worker listens; the workers tell it, never
systemd (L{connectproxy._worker}).  What each worker logs reaches the
supervisor's log (L{connectproxy._workerlog}).  Its signal handlers are
L{connectproxy._workersignals}; the services it runs with are assembled by
L{connectproxy._supervisorservice}.
"""

from __future__ import annotations

import atexit
import os
import signal
import tempfile
from collections.abc import Callable, Mapping, Sequence
from shutil import rmtree
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._sdnotify import RELOAD_FAILED, SystemdNotifier
from ._sharedports import SharedPort, bindListeners
from ._workercommand import WorkerCommand
from ._workerprocess import (
    RestartPolicy,
    Spawner,
    WorkerProtocol,
    WorkerSlot,
    describeExit,
)
from ._workersignals import SignalHandlers, exitWith, reactorStopping

__all__ = [
    "RELOAD_WAIT",
    "Supervisor",
]

#: Seconds a reload may take in the workers before systemd is told
#: C{READY=1} without waiting for the rest.
RELOAD_WAIT = 30.0

#: When dead workers are started again, unless told otherwise.
_RESTARTS = RestartPolicy()


class Supervisor(Service):
    """
    Runs the worker processes of C{--workers}.

    @ivar ports: The shared listening sockets, once bound.
    @ivar directory: The supervisor's private directory (the workers'
        metrics sockets), or C{None}.
    @ivar exitStatus: C{1} once it gave up, else C{None}.
    @ivar everReady: Whether every worker has listened at once.
    """

    _log = Logger()
    ports: Sequence[SharedPort] = ()
    directory: str | None = None
    exitStatus: int | None = None
    everReady = False

    def __init__(
        self,
        reactor: Any,
        workers: int,
        descriptions: Sequence[str],
        command: WorkerCommand,
        *,
        notifier: SystemdNotifier | None = None,
        installSignals: bool = False,
        forwardUSR1: bool = False,
        privateDirectory: bool = False,
        spawn: Spawner | None = None,
        bind: Callable[[Any, Sequence[str]], Sequence[SharedPort]] = bindListeners,
        policy: RestartPolicy = _RESTARTS,
    ) -> None:
        """
        @param reactor: Where time and processes come from.
        @param workers: How many worker processes to run, at least 1.
        @param descriptions: The C{--listen} descriptions.
        @param command: How to start a worker.
        @param notifier: Tells systemd; none by default.
        @param installSignals: Whether to handle SIGHUP, SIGUSR1 and a
            second SIGTERM or SIGINT (only in the supervisor's own process).
        @param forwardUSR1: Whether the workers handle SIGUSR1 (they do with
            C{--access-log}; without, it would kill them).
        @param privateDirectory: Whether to make a private directory for
            the workers' metrics sockets.
        @param spawn: Starts a process; C{reactor.spawnProcess} by default.
        @param bind: Binds the listening sockets.
        @param policy: When dead workers are started again.
        """
        self._reactor = reactor
        self._slots = [WorkerSlot(number) for number in range(1, workers + 1)]
        self._descriptions = tuple(descriptions)
        self._command = command
        self._notifier = notifier or SystemdNotifier(None)
        self._installSignals = installSignals
        self._forwardUSR1 = forwardUSR1
        self._privateDirectory = privateDirectory
        self._spawn = spawn
        self._bind = bind
        self._policy = policy
        self._signals = SignalHandlers()
        self._stopping = False
        self._allEnded: Deferred[None] | None = None
        self._reloadTimer: IDelayedCall | None = None
        self.restarts = 0

    # What the metrics and /healthz read

    @property
    def draining(self) -> bool:
        """
        Whether the supervisor is stopping.
        """
        return self._stopping

    @property
    def isListening(self) -> bool:
        """
        Whether a worker is listening now.
        """
        return any(slot.ready for slot in self._slots)

    def readyWorkers(self) -> list[tuple[int, int]]:
        """
        The workers listening now.

        @return: The number and process ID of each.
        """
        return [(s.number, s.pid) for s in self._slots if s.ready and s.pid]

    def servingWorkers(self) -> list[tuple[int, int]]:
        """
        The workers whose process has listened and has not exited: those
        listening and those draining their tunnels.

        @return: The number and process ID of each.
        """
        return [(s.number, s.pid) for s in self._slots if s.serving and s.pid]

    def workerPids(self) -> dict[int, int]:
        """
        The process of each worker that has one now, ready or not.

        @return: Process IDs by worker number.
        """
        return {s.number: s.pid for s in self._slots if s.pid is not None}

    def metricsSocket(self, worker: int) -> str | None:
        """
        Where worker C{worker} serves its metrics, or C{None}.
        """
        if self.directory is None:
            return None
        return os.path.join(self.directory, f"m{worker}")

    # Starting

    def privilegedStartService(self) -> None:
        """
        Bind the listening sockets.

        @raise ListenFailed: When one cannot listen.
        """
        super().privilegedStartService()
        if not self.ports:
            self.ports = tuple(self._bind(self._reactor, self._descriptions))

    def startService(self) -> None:
        if not self.ports:
            self.privilegedStartService()
        super().startService()
        if self._privateDirectory and self.directory is None:
            # Made now, after twistd dropped privileges: the workers run as
            # the same user.
            self.directory = tempfile.mkdtemp(prefix="connectproxy-")
        self._installHandlers()
        self._log.info(
            "starting {workers} workers on {addresses}",
            event="workers_starting",
            workers=len(self._slots),
            addresses=", ".join(port.address() for port in self.ports),
        )
        self._reactor.callWhenRunning(self._startAll)

    def _startAll(self) -> None:
        for slot in self._slots:
            if slot.protocol is None and slot.restart is None:
                self._start(slot)

    def _start(self, slot: WorkerSlot) -> None:
        slot.restart = None
        if self._stopping or self.exitStatus is not None:
            return
        metrics = self.metricsSocket(slot.number)
        if metrics is not None and os.path.lexists(metrics):
            # Left by the worker's previous process.
            os.unlink(metrics)
        launch = self._command.launch(slot.number, self.ports, metrics)
        protocol = WorkerProtocol(self, slot.number, launch)
        slot.protocol = protocol
        slot.ready = slot.serving = slot.reloading = slot.reloadFailed = False
        slot.startedAt = self._reactor.seconds()
        try:
            spawn = self._spawn or self._reactor.spawnProcess
            transport = spawn(
                protocol,
                launch.executable,
                launch.args,
                env=launch.env,
                path=launch.path,
                childFDs=launch.childFDs,
            )
        except Exception as e:
            slot.protocol = None
            self._log.error(
                "could not start worker {worker}: {error}",
                event="worker_start_failed",
                worker=slot.number,
                error=str(e),
            )
            self._failed(slot, f"could not start: {e}")
            return
        slot.pid = transport.pid
        self._log.info(
            "worker {worker} started (pid {worker_pid})",
            event="worker_started",
            worker=slot.number,
            worker_pid=slot.pid,
        )

    # What workers say

    def workerNotified(
        self, worker: int, protocol: WorkerProtocol, assignments: Mapping[str, str]
    ) -> None:
        """
        A worker sent a notification (as to systemd: C{READY=1},
        C{RELOADING=1}, C{STOPPING=1}, with a C{STATUS=}).

        @param worker: Its number.
        @param protocol: Its process.
        @param assignments: The message's C{KEY=VALUE} assignments.
        """
        slot = self._slots[worker - 1]
        if slot.protocol is not protocol:
            return
        if assignments.get("STOPPING") == "1":
            slot.ready = False
            return
        if assignments.get("READY") != "1":
            return
        if not slot.ready:
            slot.ready = slot.serving = True
            self._workerReady(slot)
        elif slot.reloading:
            slot.reloading = False
            slot.reloadFailed = assignments.get("STATUS", "").endswith(RELOAD_FAILED)
            self._reloadProgress()

    def _workerReady(self, slot: WorkerSlot) -> None:
        self._log.info(
            "worker {worker} (pid {worker_pid}) is listening",
            event="worker_ready",
            worker=slot.number,
            worker_pid=slot.pid,
        )
        pending, slot.pending = slot.pending, []
        for number in dict.fromkeys(pending):
            if number == signal.SIGHUP:
                slot.reloading = True
            slot.signal(number)
        if not self.everReady and all(s.ready for s in self._slots):
            self.everReady = True
            addresses = ", ".join(port.address() for port in self.ports)
            self._log.info(
                "all {workers} workers are listening on {addresses}",
                event="workers_ready",
                workers=len(self._slots),
                addresses=addresses,
            )
            self._notifier.ready(self._status())

    def _status(self) -> str:
        addresses = ", ".join(port.address() for port in self.ports)
        return f"{len(self._slots)} workers listening on {addresses}"

    def workerEnded(
        self, worker: int, protocol: WorkerProtocol, reason: Failure
    ) -> None:
        """
        A worker process ended: start it again unless stopping.

        @param worker: Its number.
        @param protocol: Its process.
        @param reason: How it ended.
        """
        slot = self._slots[worker - 1]
        if slot.protocol is not protocol:
            return
        pid, slot.protocol, slot.pid = slot.pid, None, None
        slot.ready = slot.serving = False
        slot.pending = []
        how = describeExit(reason)
        if self._stopping:
            self._log.info(
                "worker {worker} (pid {worker_pid}) exited: {how}",
                event="worker_exited",
                worker=worker,
                worker_pid=pid,
                how=how,
            )
            self._checkAllEnded()
            return
        self._log.warn(
            "worker {worker} (pid {worker_pid}) exited unexpectedly: {how}",
            event="worker_exited",
            worker=worker,
            worker_pid=pid,
            how=how,
        )
        if slot.reloading:
            slot.reloading = False
            self._reloadProgress()
        lived = self._reactor.seconds() - slot.startedAt
        if lived >= self._policy.stableAfter:
            slot.failures = 0
            self._restart(slot)
        else:
            self._failed(slot, how)

    def _failed(self, slot: WorkerSlot, how: str) -> None:
        slot.failures += 1
        if slot.failures >= self._policy.maxFailures:
            self._giveUp(slot, how)
            return
        self._restart(slot)

    def _restart(self, slot: WorkerSlot) -> None:
        self.restarts += 1
        delay = self._policy.delay(slot.failures)
        self._log.info(
            "starting worker {worker} again in {delay}s",
            event="worker_restarting",
            worker=slot.number,
            delay=delay,
            failures=slot.failures,
        )
        slot.restart = self._reactor.callLater(delay, self._start, slot)

    def _giveUp(self, slot: WorkerSlot, how: str) -> None:
        if self.exitStatus is not None:
            # Another worker gave up first (in the same turn of the
            # reactor): the proxy is stopping already.
            return
        self._log.critical(
            "worker {worker} exited {failures} times in a row within "
            "{seconds}s of starting (last: {how}); giving up: the proxy "
            "stops with exit status 1",
            event="workers_gave_up",
            worker=slot.number,
            failures=slot.failures,
            seconds=self._policy.stableAfter,
            how=how,
        )
        self.exitStatus = 1
        if self._installSignals:
            atexit.register(exitWith, 1)
        if self._reactor.running:
            self._reactor.stop()

    # Signals

    def _installHandlers(self) -> None:
        if not self._installSignals:
            return
        wanted: list[tuple[int, Callable[[], None]]] = [(signal.SIGHUP, self.reload)]
        if self._forwardUSR1:
            wanted.append((signal.SIGUSR1, self.reopen))
        for number, action in wanted:
            self._signals.forward(self._reactor, number, action)

    def _forward(self, number: int) -> list[WorkerSlot]:
        """
        Pass a signal on to every worker that listens; those still
        starting get it once they do.

        @return: The workers it was sent to.
        """
        sent = []
        for slot in self._slots:
            if slot.protocol is None:
                continue
            if slot.ready:
                if slot.signal(number):
                    sent.append(slot)
            elif number not in slot.pending:
                slot.pending.append(number)
        return sent

    def reload(self) -> None:
        """
        Have every worker load the configuration again (SIGHUP), and tell
        systemd C{RELOADING=1}, then C{READY=1} once every worker has
        reloaded (or after L{RELOAD_WAIT} seconds).
        """
        if self._stopping:
            return
        self._log.info(
            "passing the reload on to {workers} workers",
            event="workers_reloading",
            workers=len(self._slots),
        )
        if self.everReady:
            self._notifier.reloading()
        for slot in self._forward(signal.SIGHUP):
            slot.reloading = True
            slot.reloadFailed = False
        if self._reloadTimer is not None and self._reloadTimer.active():
            self._reloadTimer.cancel()
        self._reloadTimer = self._reactor.callLater(
            RELOAD_WAIT, self._reloadProgress, True
        )
        self._reloadProgress()

    def _reloadProgress(self, late: bool = False) -> None:
        timer = self._reloadTimer
        if timer is None or (not late and any(s.reloading for s in self._slots)):
            return
        self._reloadTimer = None
        if not late and timer.active():
            timer.cancel()
        failed = [s.number for s in self._slots if s.reloadFailed]
        waiting = [s.number for s in self._slots if s.reloading]
        for slot in self._slots:
            slot.reloading = False
        status = self._status()
        if failed:
            status += f"; the last reload failed in workers {_numbers(failed)}"
        if waiting:
            status += f"; workers {_numbers(waiting)} did not say they reloaded"
        self._log.info(
            "reload passed on: {status}",
            event="workers_reloaded",
            status=status,
            failed=failed,
            waiting=waiting,
        )
        if self.everReady:
            self._notifier.ready(status)

    def reopen(self) -> None:
        """
        Have every worker re-open its access-log file (SIGUSR1).
        """
        self._forward(signal.SIGUSR1)

    # Stopping

    def stopService(self) -> Deferred[None]:
        """
        Close the listening sockets, tell every worker to drain (SIGTERM),
        and wait for all of them to exit.  A second SIGTERM or SIGINT is
        passed on, which closes their tunnels at once.

        @return: Fires when every worker has exited.
        """
        super().stopService()
        self._stopping = True
        # SIGHUP stays handled (ignored now): its default would end the
        # supervisor while its workers drain.
        self._notifier.stopping()
        for slot in self._slots:
            if slot.restart is not None and slot.restart.active():
                slot.restart.cancel()
            slot.restart = None
        if self._reloadTimer is not None and self._reloadTimer.active():
            self._reloadTimer.cancel()
        self._reloadTimer = None
        running = [s for s in self._slots if s.protocol is not None]
        self._log.info(
            "stopping: {workers} workers drain, then exit",
            event="workers_stopping",
            workers=len(running),
        )
        closing = [maybeDeferred(port.close) for port in self.ports]
        allEnded: Deferred[None] = Deferred()
        self._allEnded = allEnded
        # The workers drain once the supervisor's own copies of the sockets
        # are closed (Twisted closes a port on the next reactor iteration):
        # then a worker closing its copy leaves no socket that accepts, and
        # a client is refused from then on, not left in a backlog.
        DeferredList(closing, consumeErrors=True).addCallback(
            lambda _: self._terminate()
        )
        if self._installSignals:
            for number in (signal.SIGTERM, signal.SIGINT):
                self._signals.replace(number, self._again)
        self._checkAllEnded()
        done: Deferred[Any] = DeferredList([allEnded, *closing])
        return done.addBoth(self._stopped)

    def _again(self, signum: int, frame: object) -> None:
        self._reactor.callFromThread(self._terminate)

    def _terminate(self) -> None:
        """
        Send SIGTERM to every worker, listening or not (a draining worker
        says it is stopping): the first makes it drain, the second closes
        its tunnels at once.
        """
        for slot in self._slots:
            slot.pending = []
            slot.signal(signal.SIGTERM)

    def _checkAllEnded(self) -> None:
        ended = self._allEnded
        if ended is not None and all(s.protocol is None for s in self._slots):
            self._allEnded = None
            ended.callback(None)

    def _stopped(self, result: object) -> None:
        if not reactorStopping(self._reactor):
            self._signals.restore()
        if self.directory is not None:
            rmtree(self.directory, ignore_errors=True)
            self.directory = None
        self._log.info("every worker has exited", event="workers_stopped")


def _numbers(numbers: Sequence[int]) -> str:
    return ", ".join(str(n) for n in numbers)
