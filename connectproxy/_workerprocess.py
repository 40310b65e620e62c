# -*- test-case-name: tests.test_workers -*-
"""
One worker process of C{--workers}, as its supervisor sees it: its output
and notifications (L{WorkerProtocol}), how it ended (L{describeExit}), and
when a dead one is started again (L{RestartPolicy}).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import IDelayedCall, IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from ._workerlog import WorkerOutput

if TYPE_CHECKING:
    from ._workercommand import Launch

__all__ = ["RestartPolicy", "Spawner", "WorkerProtocol", "WorkerSlot", "describeExit"]


class _Supervisor(Protocol):
    """
    What a worker's process tells its supervisor
    (L{Supervisor <connectproxy._workers.Supervisor>}).
    """

    def workerNotified(
        self, worker: int, protocol: WorkerProtocol, assignments: Mapping[str, str]
    ) -> None: ...

    def workerEnded(
        self, worker: int, protocol: WorkerProtocol, reason: Failure
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """
    When a dead worker is started again.

    A worker that exits within C{stableAfter} seconds of its start has
    failed; after C{maxFailures} such failures in a row the supervisor
    gives up.  The next start waits C{firstDelay} seconds after the first
    failure, twice as long after each further one, at most C{maxDelay};
    a worker that ran longer is started again at once.
    """

    stableAfter: float = 10.0
    firstDelay: float = 0.5
    maxDelay: float = 30.0
    maxFailures: int = 5

    def delay(self, failures: int) -> float:
        """
        Seconds to wait before the next start.

        @param failures: Failures in a row so far (0 after a worker that
            ran long enough).
        """
        if failures <= 0:
            return 0.0
        return float(min(self.maxDelay, self.firstDelay * 2 ** (failures - 1)))


def describeExit(reason: Failure) -> str:
    """
    How a worker ended, for the log: C{exit status 1}, C{signal 9}.
    """
    value = reason.value
    if isinstance(value, ProcessDone):
        return "exit status 0"
    if isinstance(value, ProcessTerminated):
        if value.signal is not None:
            return f"signal {value.signal}"
        return f"exit status {value.exitCode}"
    return str(value)


Spawner = Callable[..., IProcessTransport]
"""
Starts a process: C{reactor.spawnProcess}'s signature.
"""


class WorkerProtocol(ProcessProtocol):
    """
    One worker process: its log, standard error and notifications go to
    the supervisor, and so does its end.

    @ivar worker: The worker's number.
    """

    def __init__(self, supervisor: _Supervisor, worker: int, launch: Launch) -> None:
        self._supervisor = supervisor
        self.worker = worker
        self._log = launch.log
        self._notify = launch.notify
        self._pending = b""
        self.output: WorkerOutput | None = None

    def connectionMade(self) -> None:
        pid = self.transport.pid  # type: ignore[union-attr]
        self.output = WorkerOutput(self.worker, pid)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        output = self.output
        if output is None:
            return
        if childFD == self._log:
            output.logReceived(data)
        elif childFD == self._notify:
            self._notified(data)
        else:
            output.stderrReceived(data)

    def _notified(self, data: bytes) -> None:
        messages = (self._pending + data).split(b"\0")
        self._pending = messages.pop()[-65536:]
        for message in messages:
            assignments = {}
            for line in message.decode("utf-8", "replace").split("\n"):
                key, equals, value = line.partition("=")
                if equals:
                    assignments[key] = value
            self._supervisor.workerNotified(self.worker, self, assignments)

    def processEnded(self, reason: Failure) -> None:
        if self.output is not None:
            self.output.ended()
        self._supervisor.workerEnded(self.worker, self, reason)


@dataclass
class WorkerSlot:
    """
    One of the N workers, over its successive processes.

    @ivar number: The worker's number, from 1.
    @ivar protocol: Its process now, or C{None} between processes.
    @ivar pid: The process's ID.
    @ivar startedAt: When the process started, on the reactor's clock.
    @ivar ready: Whether it says it listens.
    @ivar serving: Whether its process has said it listens: it serves
        clients (and its metrics) until it exits, draining included.
    @ivar failures: Failures in a row (see L{RestartPolicy}).
    @ivar restart: The start waiting for its delay.
    @ivar pending: Signals to pass on once it is ready (it would not
        survive them before).
    @ivar reloading: Whether a reload was passed on and not yet done.
    @ivar reloadFailed: Whether its last reload did not load.
    """

    number: int
    protocol: WorkerProtocol | None = None
    pid: int | None = None
    startedAt: float = 0.0
    ready: bool = False
    serving: bool = False
    failures: int = 0
    restart: IDelayedCall | None = None
    pending: list[int] = field(default_factory=list)
    reloading: bool = False
    reloadFailed: bool = False

    def signal(self, number: int) -> bool:
        """
        Send a signal to the process.

        @return: Whether it had a process to send it to.
        """
        protocol = self.protocol
        if protocol is None or protocol.transport is None:
            return False
        try:
            protocol.transport.signalProcess(number)
        except ProcessExitedAlready:
            return False
        return True
