# -*- test-case-name: tests.integration.test_deploy -*-
"""
The processes the integration tests start (the proxy, in its several forms,
and the origin server), and how they wait for and stop them: always by the
PID they started, with a deadline on every wait.

The benchmark (C{bench/launch.py}) starts its processes with this harness
too: keep this module and C{_output.py} free of pytest.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

from tests.integration._output import (
    Event,
    EventCollector,
    LineCollector,
    OutputCollector,
)

_T = TypeVar("_T")

REPO_ROOT = Path(__file__).resolve().parents[2]
"""
The root of the source tree: C{connectproxy} and C{twisted/plugins} import
from here.
"""

ORIGIN_SCRIPT = Path(__file__).resolve().with_name("_origin.py")
"""
The origin server script (standard library only).
"""

HTTP_ORIGIN_SCRIPT = Path(__file__).resolve().with_name("_httporigin.py")
"""
The HTTP/1.1 origin server script of the forwarding tests (standard library
only).
"""

BIN_DIR = Path(sys.executable).parent
"""
The directory of the running interpreter, where C{twistd} and C{twist} live.
"""

LISTEN_ANY_PORT = "tcp:0:interface=127.0.0.1"
"""
A listener description for a free port on the loopback interface.
"""

LISTEN_ANY_PORT6 = "tcp6:0:interface=\\:\\:1"
"""
A listener description for a free port on the IPv6 loopback address.
"""

STOP_TIMEOUT = 10.0
"""
How long a process may take to exit after C{SIGTERM} before it is killed.
"""


WORKERS_TIMEOUT = 30.0
"""
How long a proxy may take to listen; with C{--workers}, its supervisor and
every worker.
"""


def cleanEnvironment(**extra: str) -> dict[str, str]:
    """
    Make an environment for a child process that no proxy setting, pip
    setting or C{PYTHONPATH} of the caller leaks into.

    @param extra: Variables to add.
    @return: The environment.
    """
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def sourceEnvironment(**extra: str) -> dict[str, str]:
    """
    Make an environment in which C{connectproxy} and its plugin import from
    the source tree.

    @param extra: Variables to add.
    @return: The environment.
    """
    return cleanEnvironment(PYTHONPATH=str(REPO_ROOT), **extra)


class ChildProcess(Generic[_T]):
    """
    A child process whose stdout is collected and that is stopped by PID.

    @ivar process: The process.
    @ivar output: Collects its stdout (stderr goes to the same pipe).
    """

    def __init__(
        self,
        argv: Sequence[str],
        collector: Callable[[IO[bytes], str], OutputCollector[_T]],
        env: Mapping[str, str],
        cwd: Path,
        passFds: Sequence[int] = (),
    ) -> None:
        """
        Start the process.

        @param argv: The command line.
        @param collector: Makes the output collector from the pipe.
        @param env: The environment.
        @param cwd: The working directory.
        @param passFds: Descriptors the child inherits, with the same
            numbers (a listening socket, say).
        """
        self.argv = list(argv)
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            pass_fds=tuple(passFds),
        )
        assert self.process.stdout is not None
        self.output = collector(self.process.stdout, f"drain-{self.process.pid}")

    @property
    def pid(self) -> int:
        """
        The child's process ID.
        """
        return self.process.pid

    def describe(self) -> str:
        """
        Say what ran and what it printed, for failure messages.

        @return: The command line and the output.
        """
        return f"{' '.join(self.argv)}\n--- output ---\n{self.output.text()}"

    def stop(self) -> int:
        """
        Stop the process: C{SIGTERM}, a bounded wait, then C{SIGKILL}.  Safe
        to call more than once.

        @return: Its exit status.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
        self.output.join(STOP_TIMEOUT)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return self.process.returncode


class OriginProcess(ChildProcess[str]):
    """
    The origin server of L{ORIGIN_SCRIPT}.

    @ivar host: The address it listens on (C{127.0.0.1} or C{::1}).
    @ivar port: The port it listens on.
    """

    def __init__(
        self,
        mode: str,
        arguments: Sequence[str],
        host: str = "127.0.0.1",
        script: Path = ORIGIN_SCRIPT,
    ) -> None:
        """
        Start the origin and wait for its port.

        @param mode: C{https}, C{echo}, C{bulk} or C{push} (of
            L{ORIGIN_SCRIPT}), or C{http} (of L{HTTP_ORIGIN_SCRIPT}).
        @param arguments: More command-line arguments.
        @param host: The loopback address to listen on.
        @param script: The origin server script.
        """
        self.host = host
        argv = [sys.executable, str(script), "--mode", mode, "--host", host]
        argv += arguments
        super().__init__(argv, LineCollector, cleanEnvironment(), REPO_ROOT)
        try:
            first = self.output.waitFor(lambda line: True, 20, "the origin's port")
            self.port = int(first)
        except BaseException:
            ChildProcess.stop(self)
            raise

    def waitForLine(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """
        Wait for an output line that matches C{pattern}.

        @param pattern: A regular expression matched at the start of a line.
        @param timeout: Seconds to wait at most.
        @return: The match.
        """
        line = self.output.waitFor(
            lambda line: re.match(pattern, line) is not None,
            timeout,
            f"a line matching {pattern!r} from the origin",
        )
        match = re.match(pattern, line)
        assert match is not None
        return match


def isUnexpectedFailure(event: Event) -> bool:
    """
    Tell an unhandled error apart from a deliberate log event: Twisted logs
    unhandled errors (in a Deferred, in a protocol) at the critical level
    with a failure attached and without our C{event} field.

    @param event: A log event.
    @return: Whether it reports an unhandled error.
    """
    level = event.get("log_level")
    critical = isinstance(level, dict) and level.get("name") == "critical"
    return "event" not in event and (critical or "log_failure" in event)


class ProxyProcess(ChildProcess[Event]):
    """
    The proxy, run with a JSON log on stdout.

    @ivar host: The address of its first listener (C{127.0.0.1}, C{::1}),
        or C{None} when that is not a TCP listener.
    @ivar port: The first port it listens on.
    @ivar listening: Every C{listening} event, one per listener (with
        C{--workers}, those of worker 1).
    @ivar workers: How many workers it runs (C{--workers}), or 0 when it
        serves clients itself.
    @ivar allowFailures: Set by a test that expects unhandled errors in the
        log; otherwise L{stop} fails on them.
    @cvar collectorType: Makes the collector of its JSON log; a subclass can
        pass one that keeps less.
    """

    collectorType: Callable[[IO[bytes], str], OutputCollector[Event]] = EventCollector

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: Path = REPO_ROOT,
        listeners: int = 1,
        passFds: Sequence[int] = (),
    ) -> None:
        """
        Start the proxy and wait until it listens.

        @param argv: The command line.
        @param env: The environment; by default, one that imports from the
            source tree.
        @param cwd: The working directory.
        @param listeners: How many C{listening} events to wait for.
        @param passFds: Descriptors the proxy inherits, with the same
            numbers.
        """
        super().__init__(
            argv,
            type(self).collectorType,
            sourceEnvironment() if env is None else env,
            cwd,
            passFds,
        )
        self.allowFailures = False
        self.listening: list[Event] = []
        self.workers = 0
        try:
            self._waitUntilListening(listeners)
        except BaseException:
            ChildProcess.stop(self)
            raise
        host = self.listening[0].get("host")
        self.host = host if isinstance(host, str) else None
        self.port = int(self.listening[0]["port"])

    def _waitUntilListening(self, listeners: int) -> None:
        """
        Wait until the proxy listens: one C{listening} event per listener
        from one process; with C{--workers}, until the supervisor says every
        worker listens (C{workers_ready}) and each worker's C{listening}
        events are in the log (they come through another pipe, so may come
        later), keeping the first worker's in L{listening}.

        @param listeners: How many listeners the proxy has.
        """
        first = self.output.waitFor(
            lambda e: e.get("event") in ("listening", "workers_starting"),
            WORKERS_TIMEOUT,
            "the proxy's 'listening' or 'workers_starting' event",
        )
        if first.get("event") == "workers_starting":
            self.workers = int(first["workers"])
            self.waitForNamed("workers_ready", WORKERS_TIMEOUT)
            self.output.waitFor(
                lambda e: all(
                    len(self._listeningOf(worker)) >= listeners
                    for worker in range(1, self.workers + 1)
                ),
                WORKERS_TIMEOUT,
                f"{listeners} 'listening' events from each worker",
            )
            self.listening = self._listeningOf(1)[:listeners]
            return
        for _ in range(listeners):
            self.listening.append(
                self.output.waitFor(
                    lambda e: e.get("event") == "listening" and e not in self.listening,
                    20,
                    "the proxy's 'listening' event",
                )
            )

    def _listeningOf(self, worker: int) -> list[Event]:
        return [
            e
            for e in self.events
            if e.get("event") == "listening" and e.get("worker") == worker
        ]

    @property
    def servingPids(self) -> list[int]:
        """
        The processes that serve clients: the proxy's own, or with
        C{--workers} those of its workers (as last started).
        """
        if not self.workers:
            return [self.pid]
        started = {
            e["worker"]: int(e["worker_pid"])
            for e in self.events
            if e.get("event") == "worker_started"
        }
        return [started[number] for number in sorted(started)]

    @property
    def events(self) -> list[Event]:
        """
        Every log event so far (the drain thread appends to this list).
        """
        return self.output.records

    def waitForEvent(
        self, predicate: Callable[[Event], bool], timeout: float = 10.0
    ) -> Event:
        """
        Wait for the first log event (old or new) that satisfies
        C{predicate}.

        @param predicate: Says whether an event is the one.
        @param timeout: Seconds to wait at most.
        @return: The event.
        @raise AssertionError: At the deadline, or if the proxy exited first.
        """
        return self.output.waitFor(predicate, timeout, "the awaited proxy event")

    def waitForNamed(self, name: str, timeout: float = 10.0, **fields: object) -> Event:
        """
        Wait for an event with C{event} equal to C{name} and the given fields.

        @param name: The value of the C{event} field.
        @param timeout: Seconds to wait at most.
        @param fields: Other fields the event must have, with these values.
        @return: The event.
        """
        return self.output.waitFor(
            lambda e: (
                e.get("event") == name
                and all(e.get(key) == value for key, value in fields.items())
            ),
            timeout,
            f"a {name!r} event with {fields!r}",
        )

    def waitForEach(
        self, predicate: Callable[[Event], bool], timeout: float = 10.0
    ) -> list[Event]:
        """
        Wait until the process that serves clients, or with C{--workers}
        every worker, has logged an event (old or new) that satisfies
        C{predicate}: what each process does on a signal (a reload, a
        drain), say.

        @param predicate: Says whether an event is the one.
        @param timeout: Seconds to wait at most.
        @return: The first such event of each process (by worker number).
        """
        if not self.workers:
            return [self.waitForEvent(predicate, timeout)]
        wanted = range(1, self.workers + 1)

        def firstOfEach() -> dict[int, Event]:
            found: dict[int, Event] = {}
            for e in self.events:
                if predicate(e):
                    found.setdefault(int(e.get("worker", 0)), e)
            return found

        self.output.waitFor(
            lambda e: all(worker in firstOfEach() for worker in wanted),
            timeout,
            "an awaited event from every worker",
        )
        found = firstOfEach()
        return [found[worker] for worker in wanted]

    def waitForDraining(self, timeout: float = 10.0) -> list[Event]:
        """
        Wait until the proxy, told to stop, no longer accepts: it logged
        C{shutdown_draining}; with C{--workers}, every worker did, or
        exited (one with nothing open exits at once).

        @param timeout: Seconds to wait at most.
        @return: The C{shutdown_draining} events.
        """
        if not self.workers:
            return [self.waitForNamed("shutdown_draining", timeout)]
        ended = ("shutdown_draining", "worker_exited")
        each = self.waitForEach(lambda e: e.get("event") in ended, timeout)
        return [e for e in each if e["event"] == "shutdown_draining"]

    def stop(self) -> int:
        """
        Stop the proxy, and fail if it logged an unhandled error or, with
        C{--workers}, if a worker outlived it (it is then killed).

        @return: Its exit status.
        """
        workers = self.servingPids if self.workers else []
        status = super().stop()
        outlived = [pid for pid in workers if not waitForExit(pid, STOP_TIMEOUT)]
        for pid in outlived:
            os.kill(pid, signal.SIGKILL)
        assert not outlived, f"workers {outlived} outlived the supervisor"
        failures = [e for e in self.events if isUnexpectedFailure(e)]
        if failures and not self.allowFailures:
            self.allowFailures = True  # Report them once.
            raise AssertionError(
                "the proxy logged unhandled errors:\n"
                + "\n".join(json.dumps(e, indent=1)[:4000] for e in failures)
            )
        return status


#: The options that let the proxy reach the tests' own origins: loopback
#: addresses on any port (both denied by default).
LOOPBACK_ORIGINS = (
    "--allow-port",
    "1-65535",
    "--allow-network",
    "127.0.0.0/8",
    "--allow-network",
    "::1/128",
)


def proxyCommand(
    extraArgs: Iterable[str],
    listen: Iterable[str] = (LISTEN_ANY_PORT,),
    loopbackOrigins: bool = True,
) -> list[str]:
    """
    Make the command line that runs the proxy from the source tree with a
    JSON log on stdout.

    @param extraArgs: Options after the listeners.
    @param listen: The listener descriptions.
    @param loopbackOrigins: Whether to allow loopback targets on any port
        (L{LOOPBACK_ORIGINS}); C{False} keeps the safe defaults.
    @return: The command line.
    """
    argv = [sys.executable, "-m", "twisted", "--log-format", "json"]
    argv += ["--log-file", "-", "connectproxy"]
    for description in listen:
        argv += ["--listen", description]
    if loopbackOrigins:
        argv += LOOPBACK_ORIGINS
    return argv + list(extraArgs)


def statusBytes(field: str, *pids: int) -> int:
    """
    Read a size in kB from C{/proc/PID/status} of processes (a proxy's
    L{servingPids <ProxyProcess.servingPids>}, say), added up.

    @param field: The field: C{VmRSS}, C{VmHWM}, ...
    @param pids: The processes.
    @return: The sizes in bytes, added up.
    """
    total = 0
    for pid in pids:
        status = Path(f"/proc/{pid}/status").read_text()
        match = re.search(rf"^{field}:\s+(\d+) kB$", status, re.MULTILINE)
        assert match is not None, status
        total += int(match.group(1)) * 1024
    return total


def residentBytes(*pids: int) -> int:
    """
    Read the resident set size of processes (a proxy's L{servingPids
    <ProxyProcess.servingPids>}, say), added up.

    @param pids: The processes.
    @return: Their C{VmRSS} in bytes, added up.
    """
    return statusBytes("VmRSS", *pids)


def waitForExit(pid: int, timeout: float) -> bool:
    """
    Wait for a process that is not our child to exit, with a pidfd (which
    becomes readable when the process exits).

    @param pid: The process.
    @param timeout: Seconds to wait at most.
    @return: Whether it exited in time.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(fd)


def waitForPath(
    check: Callable[[], bool], timeout: float, what: str, poll: float = 0.05
) -> None:
    """
    Wait for a condition on the file system, which offers no event to wait
    for without inotify: check it every C{poll} seconds until C{timeout}.

    @param check: Says whether the condition holds.
    @param timeout: Seconds to wait at most.
    @param what: Describes the condition, for the failure message.
    @param poll: Seconds between checks.
    @raise AssertionError: At the deadline.
    """
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not check():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{timeout}s passed before {what}")
        pause.wait(min(poll, remaining))


OriginFactory = Callable[..., OriginProcess]
"""
What the C{origin} fixture gives: starts an origin in a mode.
"""

ProxyFactory = Callable[..., ProxyProcess]
"""
What the C{proxy} fixture gives: starts a proxy with extra options.
"""


def stopAll(processes: Iterable[ChildProcess[Any]]) -> None:
    """
    Stop every process, even when stopping one of them fails.

    @param processes: The processes.
    @raise AssertionError: With every failure, after all are stopped.
    """
    errors = []
    for process in processes:
        try:
            process.stop()
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, "\n".join(errors)
