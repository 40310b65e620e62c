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
supervisor's log (L{connectproxy._workerlog}).
"""

from __future__ import annotations

import atexit
import os
import signal
import site
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from shutil import rmtree
from typing import Any

from twisted.application.reactors import getReactorTypes
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import IDelayedCall, IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._listeners import startingEnvironment
from ._loglevel import LogLevelService
from ._sdnotify import RELOAD_FAILED, SystemdNotifier
from ._sharedports import SharedPort, bindListeners, unsharable
from ._shutdown import ProxyService
from ._worker import MARKER, WorkerMarker
from ._workerlog import WorkerOutput

__all__ = [
    "RELOAD_WAIT",
    "LogRoute",
    "RestartPolicy",
    "Supervisor",
    "WorkerCommand",
    "WorkerProtocol",
    "describeExit",
    "logRoute",
    "supervisorService",
    "workersProblem",
]

#: Seconds a reload may take in the workers before systemd is told
#: C{READY=1} without waiting for the rest.
RELOAD_WAIT = 30.0

#: The supervisor's end of each worker's standard input: it closes when
#: the supervisor exits, which stops the worker.
_STDIN = 0


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


def reactorName(reactor: Any) -> str | None:
    """
    The C{--reactor} name of a reactor, for workers to run the same kind.

    @return: The short name, or C{None} when none names its module.
    """
    module = type(reactor).__module__
    for installable in getReactorTypes():
        if getattr(installable, "moduleName", None) == module:
            return str(installable.shortName)
    return None


@dataclass(frozen=True, slots=True)
class LogRoute:
    """
    Where the workers write their log themselves: the supervisor's own log
    file, in its format.  Each worker adds its number and process ID to
    every event, so that its lines are the ones the supervisor would have
    written for it, without the supervisor reading and writing each event
    again.

    @ivar format: C{json} or C{text}.
    @ivar file: C{-} (standard output), C{+} (standard error), or the path
        of a file (opened for appending).
    @ivar level: The least level of the runner's own filter (C{twist
        --log-level}).
    """

    format: str
    file: str
    level: str = "debug"

    @property
    def arguments(self) -> list[str]:
        """
        The runner options that log there.
        """
        return [
            "--log-level",
            self.level,
            "--log-format",
            self.format,
            "--log-file",
            self.file,
        ]


def logRoute(runner: Any) -> LogRoute | None:
    """
    Where workers can write the log themselves, if the supervisor's runner
    logs where they can too: C{twist} (and the C{connectproxy} command) to
    standard output, standard error or a file, in text or JSON; C{twistd
    -n} to standard output.  Otherwise (a file C{twistd} rotates, syslog, a
    C{--logger}, a C{.tac} file) the supervisor writes their events
    (L{connectproxy._workerlog}).

    @param runner: The runner's options: the C{parent} of the proxy's
        L{Options <connectproxy.tap.Options>}, or C{None}.
    @return: The route, or C{None} for the supervisor to write them.
    """
    from twisted.application.twist._options import TwistOptions
    from twisted.logger import jsonFileLogObserver, textFileLogObserver

    if isinstance(runner, TwistOptions):
        factory = runner.get("fileLogObserverFactory")
        formats = {jsonFileLogObserver: "json", textFileLogObserver: "text"}
        where = _logFile(runner.get("logFile"))
        level = getattr(runner.get("logLevel"), "name", None)
        if factory in formats and where is not None and level is not None:
            return LogRoute(formats[factory], where, level)
        return None
    if not isinstance(runner, Mapping) and not hasattr(runner, "get"):
        return None
    try:
        toStdout = (
            runner.get("nodaemon")
            and runner.get("logfile") in (None, "", "-")
            and not runner.get("syslog")
            and runner.get("logger") is None
        )
    except (KeyError, TypeError):
        return None
    return LogRoute("text", "-") if toStdout else None


def _logFile(logFile: object) -> str | None:
    """
    How a worker names the log file the runner opened: C{-}, C{+} or an
    absolute path; C{None} for one it could not open the same.
    """
    try:
        fileno = logFile.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return None
    if fileno == 1:
        return "-"
    if fileno == 2:
        return "+"
    name = getattr(logFile, "name", None)
    if isinstance(name, str) and os.path.isfile(name):
        return os.path.abspath(name)
    return None


@dataclass(frozen=True, slots=True)
class Launch:
    """
    How to start one worker process.

    @ivar executable: The program.
    @ivar args: Its arguments, the program first.
    @ivar env: Its environment.
    @ivar path: Its working directory.
    @ivar childFDs: Its descriptors, as C{spawnProcess} takes them.
    @ivar log: The descriptor the worker logs to, read by the supervisor;
        C{None} when the worker writes the supervisor's log file itself.
    @ivar notify: The descriptor it notifies on (read by the supervisor).
    """

    executable: str
    args: list[str]
    env: dict[str, str]
    path: str
    childFDs: dict[int, int | str]
    log: int | None
    notify: int


class WorkerCommand:
    """
    The command line, environment and descriptors of the workers: the
    proxy's options as the supervisor got them, run by C{twist} (as
    C{python -m connectproxy._worker}) on the same kind of reactor, logging
    to the supervisor's log file (L{LogRoute}), or in JSON to a pipe the
    supervisor reads.
    """

    def __init__(
        self,
        argv: Sequence[str],
        reactor: str | None = None,
        environ: Mapping[str, str] | None = None,
        starting: Mapping[str, str] | None = None,
        cwd: str | None = None,
        log: LogRoute | None = None,
    ) -> None:
        """
        @param argv: The proxy's options (L{Options.argv
            <connectproxy.tap.Options>}).
        @param reactor: The C{--reactor} name, or C{None} for the default.
        @param log: Where the workers log themselves; C{None} to log to a
            pipe the supervisor reads.
        @param environ: The supervisor's environment; C{os.environ} by
            default.
        @param starting: The environment the supervisor started with, which
            still says which sockets systemd passed; by default
            L{startingEnvironment}.
        @param cwd: The working directory; the supervisor's by default.
        """
        self.argv = list(argv)
        self.reactor = reactor
        self._environ = os.environ if environ is None else environ
        self._starting = starting
        self._cwd = cwd
        self.log = log

    def launch(
        self, worker: int, ports: Sequence[SharedPort], metrics: str | None = None
    ) -> Launch:
        """
        How to start worker number C{worker}.

        @param ports: The listening sockets, in the order of C{--listen}.
        @param metrics: The UNIX socket it serves metrics on, if any.
        """
        childFDs: dict[int, int | str] = {_STDIN: "w", 1: 1, 2: "r"}
        if not _isOpen(1):
            childFDs[1] = "r"
        listen: list[tuple[str, int | None]] = []
        inherited = [port.fileno for port in ports if port.port is None]
        # Numbers systemd's sockets may use are left to them.
        free = max([2, *inherited]) + 1
        for port in ports:
            if port.port is None:
                childFDs[port.fileno] = port.fileno
                listen.append((port.description, None))
            else:
                childFDs[free] = port.fileno
                listen.append((port.description, free))
                free += 1
        notify = free
        childFDs[notify] = "r"
        log: int | None = None
        if self.log is None:
            log = notify + 1
            childFDs[log] = "r"
            runner = LogRoute("json", f"/dev/fd/{log}").arguments
        else:
            runner = self.log.arguments
            if self.log.file == "+":
                # The log is on standard error: the worker's goes there too.
                childFDs[2] = 2
        marker = WorkerMarker(worker, tuple(listen), notify, metrics)
        if self.reactor is not None:
            runner = ["--reactor", self.reactor, *runner]
        args = [sys.executable, "-m", "connectproxy._worker", *runner]
        args += ["connectproxy", *self.argv]
        env = self._environment(marker, bool(inherited))
        cwd = os.getcwd() if self._cwd is None else self._cwd
        return Launch(sys.executable, args, env, cwd, childFDs, log, notify)

    def _environment(self, marker: WorkerMarker, systemd: bool) -> dict[str, str]:
        env = dict(self._environ)
        for name in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
            env.pop(name, None)
        if systemd:
            starting = self._starting
            if starting is None:
                starting = startingEnvironment()
            for name in ("LISTEN_FDS", "LISTEN_FDNAMES"):
                if name in starting:
                    env[name] = starting[name]
        env[MARKER] = marker.encode()
        # The workers import this very package.
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if here not in _defaultPath():
            paths = [here, *env.get("PYTHONPATH", "").split(os.pathsep)]
            env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        return env


def _defaultPath() -> list[str]:
    """
    The directories a new interpreter imports from without C{PYTHONPATH}:
    its site-packages.
    """
    paths = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        paths.append(site.getusersitepackages())
    return [os.path.abspath(p) for p in paths]


def _isOpen(fileno: int) -> bool:
    try:
        os.fstat(fileno)
    except OSError:
        return False
    return True


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

    def __init__(self, supervisor: Supervisor, worker: int, launch: Launch) -> None:
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
class _Slot:
    """
    One of the N workers, over its successive processes.

    @ivar number: The worker's number, from 1.
    @ivar protocol: Its process now, or C{None} between processes.
    @ivar pid: The process's ID.
    @ivar startedAt: When the process started, on the reactor's clock.
    @ivar ready: Whether it says it listens.
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
        policy: RestartPolicy = RestartPolicy(),
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
        self._slots = [_Slot(number) for number in range(1, workers + 1)]
        self._descriptions = tuple(descriptions)
        self._command = command
        self._notifier = notifier or SystemdNotifier(None)
        self._installSignals = installSignals
        self._forwardUSR1 = forwardUSR1
        self._privateDirectory = privateDirectory
        self._spawn = spawn
        self._bind = bind
        self._policy = policy
        self._previous: dict[int, Any] = {}
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

    def _start(self, slot: _Slot) -> None:
        slot.restart = None
        if self._stopping:
            return
        metrics = self.metricsSocket(slot.number)
        if metrics is not None and os.path.lexists(metrics):
            # Left by the worker's previous process.
            os.unlink(metrics)
        launch = self._command.launch(slot.number, self.ports, metrics)
        protocol = WorkerProtocol(self, slot.number, launch)
        slot.protocol = protocol
        slot.ready = slot.reloading = slot.reloadFailed = False
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
            slot.ready = True
            self._workerReady(slot)
        elif slot.reloading:
            slot.reloading = False
            slot.reloadFailed = assignments.get("STATUS", "").endswith(RELOAD_FAILED)
            self._reloadProgress()

    def _workerReady(self, slot: _Slot) -> None:
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
        slot.ready = False
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

    def _failed(self, slot: _Slot, how: str) -> None:
        slot.failures += 1
        if slot.failures >= self._policy.maxFailures:
            self._giveUp(slot, how)
            return
        self._restart(slot)

    def _restart(self, slot: _Slot) -> None:
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

    def _giveUp(self, slot: _Slot, how: str) -> None:
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
            atexit.register(_exitWith, 1)
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
            self._previous[number] = signal.signal(
                number, _handler(self._reactor, action, self._previous, number)
            )

    def _restoreHandlers(self) -> None:
        previous, self._previous = self._previous, {}
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)

    def _forward(self, number: int) -> list[_Slot]:
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
        self._terminate()
        if self._installSignals:
            for number in (signal.SIGTERM, signal.SIGINT):
                self._previous[number] = signal.signal(number, self._again)
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
        self._restoreHandlers()
        if self.directory is not None:
            rmtree(self.directory, ignore_errors=True)
            self.directory = None
        self._log.info("every worker has exited", event="workers_stopped")


def _numbers(numbers: Sequence[int]) -> str:
    return ", ".join(str(n) for n in numbers)


def _handler(
    reactor: Any, action: Callable[[], None], previous: Mapping[int, Any], number: int
) -> Callable[[int, object], None]:
    """
    A signal handler that runs C{action} on the reactor, then whatever
    handled the signal before (C{twistd} rotates its log on SIGUSR1).
    """

    def handle(signum: int, frame: object) -> None:
        reactor.callFromThread(action)
        before = previous.get(number)
        if callable(before):
            before(signum, frame)

    return handle


def _exitWith(status: int) -> None:
    """
    End the process with C{status}, once C{twistd} or C{twist} is done:
    they exit with 0 when the reactor stops.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


def workersProblem(workers: int, descriptions: Sequence[str]) -> str | None:
    """
    Say why the proxy cannot run C{workers} worker processes.

    @param workers: The number C{--workers} gave.
    @param descriptions: The C{--listen} descriptions.
    @return: A sentence, or C{None} when it can (always with one worker:
        then there is no supervisor).
    """
    if workers <= 1:
        return None
    if os.name != "posix":
        return "worker processes need a POSIX system"
    for description in descriptions:
        problem = unsharable(description)
        if problem is not None:
            return problem
    return None


def supervisorService(options: Any, reactor: Any, installSignal: bool) -> MultiService:
    """
    The services of the supervisor of C{--workers N}: the log level, the
    C{--metrics} listeners (the workers' metrics added up) and the
    L{Supervisor}, which stops (its workers drained) before the others.

    @param options: The parsed L{Options <connectproxy.tap.Options>}; its
        C{argv} is what the workers run.
    @param reactor: The reactor.
    @param installSignal: Whether the supervisor owns the process's signals
        (and log).
    @return: A L{ProxyService} named C{"connectproxy"}; its child named
        C{"workers"} is the L{Supervisor}.
    """
    service = ProxyService()
    service.setName("connectproxy")
    if installSignal:
        levels = LogLevelService(options["log-level"], reactor)
        levels.setName("loglevel")
        levels.setServiceParent(service)
    supervisor = Supervisor(
        reactor,
        options["workers"],
        options["listen"],
        WorkerCommand(
            options.argv,
            reactorName(reactor),
            log=logRoute(getattr(options, "parent", None)) if installSignal else None,
        ),
        notifier=SystemdNotifier.fromEnvironment(),
        installSignals=installSignal,
        forwardUSR1=options["access-log"] is not None,
        privateDirectory=bool(options["metrics"]),
    )
    if options["metrics"]:
        # Imported here: prometheus_client only with --metrics.
        from ._workermetrics import addWorkerMetrics

        metrics = MultiService()
        metrics.setName("metrics")
        metrics.setServiceParent(service)
        addWorkerMetrics(options["metrics"], reactor, supervisor, metrics)
    supervisor.setName("workers")
    supervisor.setServiceParent(service)
    service.barrier = supervisor
    return service
