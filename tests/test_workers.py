"""
Tests for L{connectproxy._workers}: the supervisor of C{--workers}, with
processes started by a fake spawner and time from a memory clock.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import (
    ProcessDone,
    ProcessExitedAlready,
    ProcessTerminated,
    ReactorNotRunning,
)
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent, LogLevel, eventAsJSON
from twisted.python import usage
from twisted.python.failure import Failure

from connectproxy._sdnotify import RELOAD_FAILED, SystemdNotifier
from connectproxy._sharedports import SharedPort, workersProblem
from connectproxy._worker import MARKER, WorkerMarker
from connectproxy._workercommand import LogRoute, WorkerCommand, logRoute, reactorName
from connectproxy._workerprocess import RestartPolicy, WorkerProtocol, describeExit
from connectproxy._workers import RELOAD_WAIT, Supervisor
from connectproxy.tap import Options, makeService
from connectproxy.testing import FakeConnector


class RecordingNotifier(SystemdNotifier):
    """
    Records what would be sent to systemd.
    """

    def __init__(self) -> None:
        super().__init__("/nowhere", monotonic=lambda: 42)
        self.messages: list[tuple[str, ...]] = []

    def notify(self, *assignments: str) -> bool:
        self.messages.append(assignments)
        return True

    def states(self) -> list[str]:
        return [message[0] for message in self.messages]


class FakePort:
    """
    A listening port the supervisor holds; C{closing}, when set, is what
    its C{stopListening} returns (a port that closes later).
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.stopped = False
        self.closing: Deferred[None] | None = None

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", self.port)

    def stopListening(self) -> Deferred[None] | None:
        self.stopped = True
        return self.closing


class FakeProcess:
    """
    A process transport: records signals.
    """

    def __init__(self, pid: int) -> None:
        self.pid: int | None = pid
        self.signals: list[int] = []

    def signalProcess(self, number: int) -> None:
        if self.pid is None:
            raise ProcessExitedAlready()
        self.signals.append(number)


@dataclass
class Spawned:
    """
    One process the fake spawner started.
    """

    protocol: WorkerProtocol
    process: FakeProcess
    args: list[str]
    env: dict[str, str]
    childFDs: dict[int, int | str]

    @property
    def marker(self) -> WorkerMarker:
        return WorkerMarker.decode(self.env[MARKER])

    @property
    def logFD(self) -> int:
        return int(self.args[self.args.index("--log-file") + 1].rsplit("/", 1)[1])

    def notify(self, *assignments: str) -> None:
        """
        The worker sends a notification.
        """
        message = "\n".join(assignments).encode("utf-8") + b"\0"
        self.protocol.childDataReceived(self.marker.notify, message)

    def ready(self, status: str = "listening on 127.0.0.1:3128") -> None:
        self.notify("READY=1", f"STATUS={status}")

    def end(self, code: int | None = None, sig: int | None = None) -> None:
        """
        The process ends.
        """
        self.process.pid = None
        if code == 0 and sig is None:
            reason = Failure(ProcessDone(0))
        else:
            reason = Failure(ProcessTerminated(code, sig))
        self.protocol.processEnded(reason)


class Spawner:
    """
    Starts fake processes.
    """

    def __init__(self) -> None:
        self.spawned: list[Spawned] = []
        self._pid = 1000
        self.fail: Exception | None = None

    def __call__(
        self,
        protocol: WorkerProtocol,
        executable: str,
        args: list[str],
        env: dict[str, str],
        path: str,
        childFDs: dict[int, int | str],
    ) -> Any:
        if self.fail is not None:
            raise self.fail
        self._pid += 1
        process = FakeProcess(self._pid)
        protocol.makeConnection(process)
        self.spawned.append(Spawned(protocol, process, args, env, childFDs))
        return process

    def last(self, worker: int) -> Spawned:
        """
        The last process of worker C{worker}.
        """
        return [s for s in self.spawned if s.marker.worker == worker][-1]


def bindFake(reactor: Any, descriptions: Sequence[str]) -> list[SharedPort]:
    return [
        SharedPort(d, 20 + index, FakePort(3128 + index))  # type: ignore[arg-type]
        for index, d in enumerate(descriptions)
    ]


@dataclass
class Setup:
    supervisor: Supervisor
    reactor: MemoryReactorClock
    spawner: Spawner
    notifier: RecordingNotifier


def makeSupervisor(
    workers: int = 2, reactor: MemoryReactorClock | None = None, **kwargs: Any
) -> Setup:
    """
    A started supervisor over a running memory reactor.
    """
    reactor = MemoryReactorClock() if reactor is None else reactor
    reactor.running = True
    spawner = Spawner()
    notifier = RecordingNotifier()
    command = WorkerCommand(["--allow-port", "443"], environ={"PATH": "/bin"})
    supervisor = Supervisor(
        reactor,
        workers,
        ["tcp:3128:interface=127.0.0.1"],
        command,
        notifier=notifier,
        spawn=spawner,
        bind=bindFake,
        **kwargs,
    )
    supervisor.privilegedStartService()
    supervisor.startService()
    return Setup(supervisor, reactor, spawner, notifier)


def named(events: list[LogEvent], name: str) -> list[LogEvent]:
    return [e for e in events if e.get("event") == name]


# Starting


def test_startsEveryWorker() -> None:
    """
    Once the reactor runs, the supervisor starts one process per worker,
    each running the worker module with the proxy's options, a JSON log on
    a pipe, and the marker naming its inherited socket.
    """
    setup = makeSupervisor(3)
    spawned = setup.spawner.spawned
    assert [s.marker.worker for s in spawned] == [1, 2, 3]
    first = spawned[0]
    assert first.args[:3] == [sys.executable, "-m", "connectproxy._worker"]
    assert first.args[-2:] == ["--allow-port", "443"]
    assert first.args[first.args.index("--log-format") + 1] == "json"
    [(description, fd)] = first.marker.listen
    assert description == "tcp:3128:interface=127.0.0.1"
    assert fd is not None and first.childFDs[fd] == 20
    assert first.childFDs[0] == "w" and first.childFDs[1] == 1
    assert first.childFDs[2] == first.childFDs[first.logFD] == "r"
    assert first.childFDs[first.marker.notify] == "r"


def test_startsOnlyWhenRunning() -> None:
    """
    Workers start when the reactor runs, not before.
    """
    reactor = MemoryReactorClock()
    spawner = Spawner()
    supervisor = Supervisor(
        reactor, 2, ["tcp:0"], WorkerCommand([]), spawn=spawner, bind=bindFake
    )
    supervisor.startService()
    assert spawner.spawned == []
    reactor.run()
    assert len(spawner.spawned) == 2


def test_startedEvent(logEvents: list[LogEvent]) -> None:
    """
    Each start is logged with the worker's number and process ID.
    """
    makeSupervisor(2)
    started = named(logEvents, "worker_started")
    assert [(e["worker"], e["worker_pid"]) for e in started] == [(1, 1001), (2, 1002)]


def test_readyOnceEveryWorkerListens(logEvents: list[LogEvent]) -> None:
    """
    systemd is told READY=1 once, when the last worker says it listens.
    """
    setup = makeSupervisor(2)
    setup.spawner.last(1).ready()
    assert setup.notifier.messages == []
    assert setup.supervisor.isListening
    setup.spawner.last(2).ready()
    assert setup.notifier.messages == [
        ("READY=1", "STATUS=2 workers listening on 127.0.0.1:3128")
    ]
    [ready] = named(logEvents, "workers_ready")
    assert ready["workers"] == 2
    assert len(named(logEvents, "worker_ready")) == 2
    # A restarted worker's READY=1 is not passed on again.
    setup.spawner.last(1).end(sig=9)
    setup.reactor.advance(1)
    setup.spawner.last(1).ready()
    assert setup.notifier.states() == ["READY=1"]


def test_stoppingWorkerNotReady() -> None:
    """
    A worker that says it is stopping no longer counts as listening.
    """
    setup = makeSupervisor(1)
    setup.spawner.last(1).ready()
    setup.spawner.last(1).notify("STOPPING=1")
    assert not setup.supervisor.isListening
    assert setup.supervisor.readyWorkers() == []


def test_drainingWorkerStillServes() -> None:
    """
    A worker that says it is stopping (it drains its tunnels) still serves
    until its process exits; one started again serves once it listens.
    """
    setup = makeSupervisor(2)
    first = setup.spawner.last(1)
    first.ready()
    setup.spawner.last(2).ready()
    pid = setup.supervisor.workerPids()[1]
    first.notify("STOPPING=1")
    assert setup.supervisor.servingWorkers() == [
        (1, pid),
        (2, setup.supervisor.workerPids()[2]),
    ]
    first.end(sig=9)
    assert [n for n, _ in setup.supervisor.servingWorkers()] == [2]
    setup.reactor.advance(60)
    assert setup.spawner.last(1) is not first
    assert [n for n, _ in setup.supervisor.servingWorkers()] == [2]
    setup.spawner.last(1).ready()
    assert [n for n, _ in setup.supervisor.servingWorkers()] == [1, 2]


def test_notificationsSplitAcrossReads() -> None:
    """
    A notification that arrives in pieces counts once it is whole.
    """
    setup = makeSupervisor(1)
    spawned = setup.spawner.last(1)
    fd = spawned.marker.notify
    spawned.protocol.childDataReceived(fd, b"READY")
    assert not setup.supervisor.isListening
    spawned.protocol.childDataReceived(fd, b"=1\nSTATUS=x\0")
    assert setup.supervisor.readyWorkers() == [(1, spawned.process.pid)]


# Restarts


def test_restartAfterBackoff(logEvents: list[LogEvent]) -> None:
    """
    A worker that dies soon after it started is started again after half a
    second, then after twice as long each time it dies again.
    """
    setup = makeSupervisor(1)
    delays = []
    for _ in range(3):
        before = len(setup.spawner.spawned)
        setup.spawner.last(1).end(code=1)
        restart = named(logEvents, "worker_restarting")[-1]
        delays.append(restart["delay"])
        setup.reactor.advance(restart["delay"] - 0.01)
        assert len(setup.spawner.spawned) == before
        setup.reactor.advance(0.01)
        assert len(setup.spawner.spawned) == before + 1
    assert delays == [0.5, 1.0, 2.0]
    [exited, *_] = named(logEvents, "worker_exited")
    assert exited["how"] == "exit status 1"
    assert exited["log_level"] == LogLevel.warn
    assert setup.supervisor.restarts == 3


def test_stableWorkerRestartsAtOnce() -> None:
    """
    A worker that ran for a while is started again at once, and its
    failures are forgotten.
    """
    setup = makeSupervisor(1)
    setup.spawner.last(1).end(code=1)
    setup.reactor.advance(0.5)
    setup.reactor.advance(RestartPolicy().stableAfter)
    setup.spawner.last(1).end(sig=9)
    setup.reactor.advance(0)
    assert len(setup.spawner.spawned) == 3


def test_givesUp(logEvents: list[LogEvent]) -> None:
    """
    A worker that keeps dying at start makes the supervisor give up: one
    critical event, exit status 1, the reactor stopped, no more starts.
    """
    setup = makeSupervisor(2, policy=RestartPolicy(maxFailures=3))
    for _ in range(3):
        setup.spawner.last(2).end(code=1)
        setup.reactor.advance(60)
    [gaveUp] = named(logEvents, "workers_gave_up")
    assert gaveUp["log_level"] == LogLevel.critical
    assert gaveUp["worker"] == 2 and gaveUp["failures"] == 3
    assert setup.supervisor.exitStatus == 1
    assert setup.reactor.hasStopped
    assert len(setup.spawner.spawned) == 4


class StopOnce(MemoryReactorClock):
    """
    A memory reactor whose C{stop} fails when called twice, as a real
    reactor's does.
    """

    def stop(self) -> None:
        if self.hasStopped:
            raise ReactorNotRunning("Can't stop reactor that isn't running.")
        super().stop()


def test_givesUpOnce(logEvents: list[LogEvent]) -> None:
    """
    Two workers that give up in the same turn of the reactor stop it once,
    and the supervisor says it gives up once.
    """
    reactor = StopOnce()
    setup = makeSupervisor(2, policy=RestartPolicy(maxFailures=1), reactor=reactor)
    setup.spawner.last(1).end(code=1)
    setup.spawner.last(2).end(code=1)
    [gaveUp] = named(logEvents, "workers_gave_up")
    assert gaveUp["worker"] == 1
    assert setup.supervisor.exitStatus == 1
    assert reactor.hasStopped
    assert len(named(logEvents, "worker_exited")) == 2
    setup.reactor.advance(60)
    assert len(setup.spawner.spawned) == 2


def test_spawnFailureRetried(logEvents: list[LogEvent]) -> None:
    """
    A worker that cannot be started at all is logged and tried again.
    """
    setup = makeSupervisor(1)
    setup.spawner.last(1).end(code=1)
    setup.spawner.fail = OSError("no more processes")
    setup.reactor.advance(0.5)
    [failed] = named(logEvents, "worker_start_failed")
    assert failed["error"] == "no more processes"
    setup.spawner.fail = None
    setup.reactor.advance(1.0)
    assert len(setup.spawner.spawned) == 2


def test_oldProcessIgnored() -> None:
    """
    News from a process that was replaced changes nothing.
    """
    setup = makeSupervisor(1)
    old = setup.spawner.last(1)
    old.end(sig=9)
    setup.reactor.advance(0.5)
    new = setup.spawner.last(1)
    old.ready()
    old.protocol.processEnded(Failure(ProcessDone(0)))
    assert not setup.supervisor.isListening
    assert setup.supervisor.workerPids() == {1: new.process.pid}


def test_describeExit() -> None:
    """
    Exits are described by status or signal.
    """
    assert describeExit(Failure(ProcessDone(0))) == "exit status 0"
    assert describeExit(Failure(ProcessTerminated(3))) == "exit status 3"
    assert describeExit(Failure(ProcessTerminated(None, 9))) == "signal 9"


def test_restartDelays() -> None:
    """
    The delay doubles from its first value up to its largest.
    """
    policy = RestartPolicy(firstDelay=1, maxDelay=5)
    assert [policy.delay(n) for n in range(5)] == [0.0, 1.0, 2.0, 4.0, 5.0]


# Signals


def test_reloadPassedOn(logEvents: list[LogEvent]) -> None:
    """
    A reload sends SIGHUP to every worker that listens; systemd is told
    RELOADING=1, then READY=1 once every worker has said it reloaded.
    """
    setup = makeSupervisor(2)
    first, second = setup.spawner.last(1), setup.spawner.last(2)
    first.ready()
    second.ready()
    setup.supervisor.reload()
    assert first.process.signals == second.process.signals == [signal.SIGHUP]
    assert setup.notifier.states() == ["READY=1", "RELOADING=1"]
    first.ready()
    assert setup.notifier.states() == ["READY=1", "RELOADING=1"]
    second.ready()
    assert setup.notifier.messages[-1] == (
        "READY=1",
        "STATUS=2 workers listening on 127.0.0.1:3128",
    )
    [reloaded] = named(logEvents, "workers_reloaded")
    assert reloaded["failed"] == [] and reloaded["waiting"] == []


def test_reloadFailureSaid() -> None:
    """
    A worker whose reload failed is named in the status systemd gets.
    """
    setup = makeSupervisor(2)
    for worker in (1, 2):
        setup.spawner.last(worker).ready()
    setup.supervisor.reload()
    setup.spawner.last(1).ready()
    setup.spawner.last(2).ready("listening on 127.0.0.1:3128" + RELOAD_FAILED)
    assert setup.notifier.messages[-1] == (
        "READY=1",
        "STATUS=2 workers listening on 127.0.0.1:3128; the last reload "
        "failed in workers 2",
    )


def test_reloadWaitIsBounded() -> None:
    """
    Without word from a worker, systemd is told READY=1 after
    L{RELOAD_WAIT} seconds anyway, naming it.
    """
    setup = makeSupervisor(2)
    for worker in (1, 2):
        setup.spawner.last(worker).ready()
    setup.supervisor.reload()
    setup.spawner.last(1).ready()
    setup.reactor.advance(RELOAD_WAIT)
    assert setup.notifier.messages[-1][1].endswith(
        "; workers 2 did not say they reloaded"
    )


def test_reloadWhileStarting() -> None:
    """
    A worker still starting gets the SIGHUP once it listens (before, it
    would die of it).
    """
    setup = makeSupervisor(2)
    setup.spawner.last(1).ready()
    setup.supervisor.reload()
    second = setup.spawner.last(2)
    assert second.process.signals == []
    second.ready()
    assert second.process.signals == [signal.SIGHUP]


def test_reloadOfDeadWorker() -> None:
    """
    A worker that dies while reloading does not hold up the READY=1.
    """
    setup = makeSupervisor(2)
    for worker in (1, 2):
        setup.spawner.last(worker).ready()
    setup.supervisor.reload()
    setup.spawner.last(1).ready()
    setup.spawner.last(2).end(sig=9)
    assert setup.notifier.states()[-1] == "READY=1"


def test_reopenPassedOn() -> None:
    """
    SIGUSR1 goes to every worker that listens.
    """
    setup = makeSupervisor(2)
    setup.spawner.last(1).ready()
    setup.supervisor.reopen()
    assert setup.spawner.last(1).process.signals == [signal.SIGUSR1]
    setup.spawner.last(2).ready()
    assert setup.spawner.last(2).process.signals == [signal.SIGUSR1]


@pytest.fixture
def signals() -> Iterator[None]:
    """
    Put back the handlers of the signals the supervisor handles.
    """
    numbers = (signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)
    before = {number: signal.getsignal(number) for number in numbers}
    try:
        yield
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)


class ThreadCalls(MemoryReactorClock):
    """
    Runs C{callFromThread} calls at once.
    """

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        f(*args, **kw)


def handler(number: int) -> Callable[[int, Any], None]:
    """
    The Python handler of a signal now.
    """
    handling = signal.getsignal(number)
    assert callable(handling)
    return handling


@pytest.mark.usefixtures("signals")
def test_signalHandlers() -> None:
    """
    With its signals, the supervisor handles SIGHUP (and SIGUSR1 when the
    workers have an access-log file), calling the handler it replaced
    after its own; a second SIGTERM while stopping is passed on; every
    handler is put back once every worker has exited.
    """
    called = []

    def before(signum: int, frame: object) -> None:
        called.append(signum)

    signal.signal(signal.SIGUSR1, before)
    hupBefore = signal.getsignal(signal.SIGHUP)
    termBefore = signal.getsignal(signal.SIGTERM)
    _, supervisor, spawned = signalledSupervisor(forwardUSR1=True)
    handler(signal.SIGHUP)(signal.SIGHUP, None)
    handler(signal.SIGUSR1)(signal.SIGUSR1, None)
    assert spawned.process.signals == [signal.SIGHUP, signal.SIGUSR1]
    assert called == [signal.SIGUSR1]
    stopped = supervisor.stopService()
    spawned.notify("STOPPING=1", "STATUS=stopping")
    handler(signal.SIGTERM)(signal.SIGTERM, None)
    assert spawned.process.signals[-2:] == [signal.SIGTERM, signal.SIGTERM]
    spawned.end(sig=signal.SIGTERM)
    assert stopped.called
    assert signal.getsignal(signal.SIGUSR1) is before
    assert signal.getsignal(signal.SIGHUP) is hupBefore
    assert signal.getsignal(signal.SIGTERM) is termBefore


def signalledSupervisor(
    forwardUSR1: bool = False,
) -> tuple[ThreadCalls, Supervisor, Spawned]:
    """
    A started supervisor of one worker, ready, that owns the process's
    signals, on a running reactor that runs calls from threads at once.
    """
    reactor = ThreadCalls()
    reactor.running = True
    spawner = Spawner()
    supervisor = Supervisor(
        reactor,
        1,
        ["tcp:0"],
        WorkerCommand([]),
        spawn=spawner,
        bind=bindFake,
        installSignals=True,
        forwardUSR1=forwardUSR1,
    )
    supervisor.startService()
    spawned = spawner.last(1)
    spawned.ready()
    return reactor, supervisor, spawned


def test_handlersStayWhileTheReactorStops() -> None:
    """
    When the last worker exits during the reactor's shutdown (the
    supervisor exits next), the supervisor's handlers stay: Twisted's, put
    back, would answer one more SIGTERM with a critical
    C{ReactorNotRunning}.
    """
    termBefore = signal.getsignal(signal.SIGTERM)
    intBefore = signal.getsignal(signal.SIGINT)
    try:
        reactor, supervisor, spawned = signalledSupervisor()
        reactor._stopped = True  # type: ignore[attr-defined]
        stopped = supervisor.stopService()
        spawned.end(sig=signal.SIGTERM)
        assert stopped.called
        assert signal.getsignal(signal.SIGTERM) is not termBefore
        handler(signal.SIGTERM)(signal.SIGTERM, None)
        assert spawned.process.signals == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, termBefore)
        signal.signal(signal.SIGINT, intBefore)


def test_noUSR1WithoutAccessLog() -> None:
    """
    Without an access-log file, the workers would die of SIGUSR1: it is
    not handled (so not passed on).
    """
    setup = makeSupervisor(1)
    assert setup.supervisor._forwardUSR1 is False


# Stopping


def test_stopDrainsEveryWorker(logEvents: list[LogEvent]) -> None:
    """
    Stopping closes the shared sockets, sends SIGTERM to every worker and
    tells systemd STOPPING=1; it is done once every worker has exited.
    """
    setup = makeSupervisor(2)
    for worker in (1, 2):
        setup.spawner.last(worker).ready()
    stopped = setup.supervisor.stopService()
    port = setup.supervisor.ports[0].port
    assert isinstance(port, FakePort) and port.stopped
    assert setup.notifier.states()[-1] == "STOPPING=1"
    assert setup.supervisor.draining
    for worker in (1, 2):
        assert setup.spawner.last(worker).process.signals == [signal.SIGTERM]
    setup.spawner.last(1).end(sig=signal.SIGTERM)
    assert not stopped.called
    setup.spawner.last(2).end(sig=signal.SIGTERM)
    assert stopped.called
    assert len(setup.spawner.spawned) == 2
    exits = named(logEvents, "worker_exited")
    assert {e["log_level"] for e in exits} == {LogLevel.info}
    assert named(logEvents, "workers_stopped")


def test_workersDrainOnceTheSocketsAreClosed() -> None:
    """
    The workers are told to drain only once the supervisor's own copies of
    the listening sockets are closed: when the last worker has closed its
    copy, nothing accepts any more.
    """
    setup = makeSupervisor(2)
    for worker in (1, 2):
        setup.spawner.last(worker).ready()
    port = setup.supervisor.ports[0].port
    assert isinstance(port, FakePort)
    port.closing = Deferred()
    setup.supervisor.stopService()
    assert port.stopped
    for worker in (1, 2):
        assert setup.spawner.last(worker).process.signals == []
    port.closing.callback(None)
    for worker in (1, 2):
        assert setup.spawner.last(worker).process.signals == [signal.SIGTERM]


def test_stopCancelsRestart() -> None:
    """
    A worker waiting to be started again is not.
    """
    setup = makeSupervisor(1)
    setup.spawner.last(1).end(code=1)
    stopped: Deferred[None] = setup.supervisor.stopService()
    assert stopped.called
    setup.reactor.advance(60)
    assert len(setup.spawner.spawned) == 1


def test_stopRemovesPrivateDirectory() -> None:
    """
    The private directory (the workers' metrics sockets) is removed once
    every worker has exited.
    """
    setup = makeSupervisor(1, privateDirectory=True)
    directory = setup.supervisor.directory
    assert directory is not None and Path(directory).is_dir()
    marker = setup.spawner.last(1).marker
    assert marker.metrics == str(Path(directory) / "m1")
    setup.supervisor.stopService()
    setup.spawner.last(1).end(sig=signal.SIGTERM)
    assert not Path(directory).exists()


# Output


def test_workerLogRelayed(logEvents: list[LogEvent]) -> None:
    """
    A worker's JSON log records become events of the supervisor's log, with
    the worker's number and process ID.
    """
    setup = makeSupervisor(1)
    spawned = setup.spawner.last(1)
    record: dict[str, Any] = {}
    event = {
        "log_format": "tunnel {n}",
        "log_level": LogLevel.info,
        "log_namespace": "connectproxy.x",
        "log_time": 12.5,
        "event": "tunnel_close",
        "n": 7,
    }
    line = ("\x1e" + eventAsJSON(event) + "\n").encode("utf-8")
    spawned.protocol.childDataReceived(spawned.logFD, line[:10])
    spawned.protocol.childDataReceived(spawned.logFD, line[10:])
    [relayed] = named(logEvents, "tunnel_close")
    record.update(relayed)
    assert record["worker"] == 1
    assert record["worker_pid"] == spawned.process.pid
    assert record["log_time"] == 12.5
    assert (
        record["log_system"]
        == f"connectproxy.x#info worker=1 pid={spawned.process.pid}"
    )


def test_workerStderrRelayed(logEvents: list[LogEvent]) -> None:
    """
    Lines of a worker's standard error become C{worker_stderr} events; the
    last, unfinished one when the worker ends.
    """
    setup = makeSupervisor(1)
    spawned = setup.spawner.last(1)
    spawned.protocol.childDataReceived(2, b"Traceback (most recent call last):\n  Fi")
    spawned.protocol.childDataReceived(2, b"le x")
    spawned.end(code=1)
    lines = named(logEvents, "worker_stderr")
    assert [e["text"] for e in lines] == [
        "Traceback (most recent call last):",
        "  File x",
    ]
    assert {e["log_level"] for e in lines} == {LogLevel.error}


# The command


def test_commandReactor() -> None:
    """
    Workers run the supervisor's kind of reactor.
    """
    launch = WorkerCommand(["--workers", "2"], reactor="epoll").launch(1, [])
    assert launch.args[3:5] == ["--reactor", "epoll"]
    assert launch.args[-2:] == ["--workers", "2"]


def test_commandEnvironment(tmp_path: Path) -> None:
    """
    A worker's environment is the supervisor's, without systemd's
    notification socket, with the marker and the source tree importable.
    """
    environ = {"PATH": "/bin", "NOTIFY_SOCKET": "/run/x", "PYTHONPATH": "/a"}
    launch = WorkerCommand([], environ=environ, cwd=str(tmp_path)).launch(2, [])
    assert "NOTIFY_SOCKET" not in launch.env
    assert launch.env["PATH"] == "/bin"
    assert WorkerMarker.decode(launch.env[MARKER]).worker == 2
    root = str(Path(__file__).resolve().parent.parent)
    assert launch.env["PYTHONPATH"].split(":")[-1] == "/a"
    assert root in launch.env["PYTHONPATH"].split(":")
    assert launch.path == str(tmp_path)


def test_commandSystemdSockets() -> None:
    """
    A socket systemd passed keeps its number in the worker, with
    LISTEN_FDS and LISTEN_FDNAMES as systemd set them; the other sockets
    and pipes take the numbers after them.
    """
    starting = {"LISTEN_FDS": "2", "LISTEN_FDNAMES": "proxy:metrics", "LISTEN_PID": "1"}
    ports = [
        SharedPort("systemd:domain=INET:index=0", 3),
        SharedPort("tcp:0", 9, FakePort(1)),  # type: ignore[arg-type]
    ]
    command = WorkerCommand([], environ={"LISTEN_PID": "1"}, starting=starting)
    launch = command.launch(1, ports)
    marker = WorkerMarker.decode(launch.env[MARKER])
    assert marker.listen == (("systemd:domain=INET:index=0", None), ("tcp:0", 4))
    assert launch.childFDs[3] == 3 and launch.childFDs[4] == 9
    assert (launch.notify, launch.log) == (5, 6)
    assert launch.env["LISTEN_FDS"] == "2"
    assert launch.env["LISTEN_FDNAMES"] == "proxy:metrics"
    assert "LISTEN_PID" not in launch.env


def test_commandLogsItself() -> None:
    """
    With a log route, workers log there themselves: no pipe for their log;
    their standard error is the supervisor's when the log is there.
    """
    route = LogRoute("text", "+", "warn")
    launch = WorkerCommand([], log=route).launch(1, [])
    assert launch.log is None
    assert launch.args[3:9] == [
        "--log-level",
        "warn",
        "--log-format",
        "text",
        "--log-file",
        "+",
    ]
    assert launch.args[9] == "connectproxy"
    assert launch.childFDs[2] == 2
    assert sorted(v for v in launch.childFDs.values() if v == "r") == ["r"]


class LogFile:
    """
    An open log file, as the runner holds it.
    """

    def __init__(self, fileno: int, name: str = "") -> None:
        self._fileno = fileno
        self.name = name

    def fileno(self) -> int:
        return self._fileno


def twistOptions(logFile: LogFile, format: str = "json", level: str = "info") -> Any:
    """
    C{twist}'s options as parsing would leave them (parsing them would
    install the global reactor).
    """
    from twisted.application.twist._options import TwistOptions
    from twisted.logger import jsonFileLogObserver, textFileLogObserver

    options = TwistOptions()
    options["logFile"] = logFile
    options["logLevel"] = LogLevel.levelWithName(level)
    factories = {"json": jsonFileLogObserver, "text": textFileLogObserver}
    options["fileLogObserverFactory"] = factories[format]
    return options


def test_logRouteTwist(tmp_path: Path) -> None:
    """
    Under C{twist}, workers write the supervisor's log file in its format,
    with its level.
    """
    assert logRoute(twistOptions(LogFile(1))) == LogRoute("json", "-", "info")
    options = twistOptions(LogFile(2), "text")
    assert logRoute(options) == LogRoute("text", "+", "info")
    path = tmp_path / "proxy.log"
    path.touch()
    options = twistOptions(LogFile(9, str(path)), level="warn")
    assert logRoute(options) == LogRoute("json", str(path), "warn")
    assert logRoute(twistOptions(LogFile(9, "<fd>"))) is None
    options["fileLogObserverFactory"] = print
    assert logRoute(options) is None


def test_logRouteTwistd() -> None:
    """
    Under C{twistd -n} logging to standard output, workers write it too;
    otherwise (a file twistd rotates, syslog, a logger of its own, a daemon,
    no runner) the supervisor writes their events.
    """
    stdout = {"nodaemon": True, "logfile": None, "syslog": False, "logger": None}
    assert logRoute(stdout) == LogRoute("text", "-")
    assert logRoute({**stdout, "logfile": "-"}) == LogRoute("text", "-")
    assert logRoute({**stdout, "logfile": "/var/log/x"}) is None
    assert logRoute({**stdout, "syslog": True}) is None
    assert logRoute({**stdout, "logger": print}) is None
    assert logRoute({**stdout, "nodaemon": False}) is None
    assert logRoute(None) is None


def test_reactorName() -> None:
    """
    A reactor's C{--reactor} name comes from its module.
    """

    class EPollReactor:
        pass

    EPollReactor.__module__ = "twisted.internet.epollreactor"
    assert reactorName(EPollReactor()) == "epoll"
    assert reactorName(MemoryReactorClock()) is None


# Options and makeService


def test_workersProblem() -> None:
    """
    Listeners of plugin endpoint types cannot be shared.
    """
    assert workersProblem(1, ["fancy:1"]) is None
    assert workersProblem(2, ["tcp:0", "haproxy:ssl:0", "unix:/x"]) is None
    problem = workersProblem(2, ["fancy:1"])
    assert problem is not None and "'fancy:1' is an endpoint of a plugin" in problem


def test_makeServiceSupervises() -> None:
    """
    With C{--workers} 2 or more, makeService gives the supervisor's
    services; with C{--metrics} too, the metrics listeners.
    """
    options = Options()
    options.parseOptions(["--workers", "2", "--metrics", "tcp:0:interface=127.0.0.1"])
    service = makeService(options, MemoryReactorClock())
    names = [child.name for child in service]
    assert names == ["metrics", "workers"]
    supervisor = service.getServiceNamed("workers")
    assert isinstance(supervisor, Supervisor)


def test_makeServiceRefusesConnector() -> None:
    """
    A connector given to makeService cannot reach the workers.
    """
    options = Options()
    options.parseOptions(["--workers", "2"])
    with pytest.raises(usage.UsageError, match="--workers"):
        makeService(options, MemoryReactorClock(), connector=FakeConnector())


def test_markerRoundTrip() -> None:
    """
    The marker reads back as it was written.
    """
    marker = WorkerMarker(3, (("tcp:0", 5), ("systemd:index=0", None)), 7, "/x/m3")
    assert WorkerMarker.decode(marker.encode()) == marker
    assert json.loads(marker.encode())["worker"] == 3


def test_reloadWorkersIgnored(tmp_path: Path, logEvents: list[LogEvent]) -> None:
    """
    A reload that changes C{workers} warns that it takes a restart.
    """
    path = tmp_path / "proxy.toml"
    path.write_text("workers = 1\n")
    options = Options()
    options.parseOptions(["--config", str(path)])
    service = makeService(options, MemoryReactorClock())
    path.write_text("workers = 2\n")
    assert service.getServiceNamed("reload").reload()
    assert named(logEvents, "reload_workers_ignored")


def test_optionsRefuseUnsharable() -> None:
    """
    C{--workers} refuses a listener it cannot share, naming both.
    """
    options = Options()
    with pytest.raises(usage.UsageError, match="--workers 2: 'stdio:' is an endpoint"):
        options.parseOptions(["--workers", "2", "--listen", "stdio:"])


def test_checkConfigSaysWorkers(capsys: pytest.CaptureFixture[str]) -> None:
    """
    C{--check-config} says how many workers would run.
    """
    options = Options()
    with pytest.raises(SystemExit):
        options.parseOptions(["--workers", "3", "--check-config"])
    assert "workers 3 (sharing the listeners)" in capsys.readouterr().out


def test_logRouteOperatorsLevel() -> None:
    """
    Workers that write the log themselves filter it at the operator's
    C{--log-level} (at most C{info}, which the access log keeps), never
    below the runner's own level: under the C{connectproxy} command (whose
    C{twist} keeps every level) or C{twistd -n}, a worker's debug events
    stay out of the log at the default C{info}.
    """
    everything = twistOptions(LogFile(1), level="debug")
    assert logRoute(everything, "info") == LogRoute("json", "-", "info")
    assert logRoute(everything, "debug") == LogRoute("json", "-", "debug")
    assert logRoute(everything, "error") == LogRoute("json", "-", "info")
    quiet = twistOptions(LogFile(1), level="warn")
    assert logRoute(quiet, "debug") == LogRoute("json", "-", "warn")
    stdout = {"nodaemon": True, "logfile": None, "syslog": False, "logger": None}
    assert logRoute(stdout, "info") == LogRoute("text", "-", "info")
    assert logRoute(stdout, "debug") == LogRoute("text", "-", "debug")
