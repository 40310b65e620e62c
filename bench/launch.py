# -*- test-case-name: tests.test_bench,tests.integration.test_bench -*-
"""
Start and stop what the benchmark measures: the origin servers, connectproxy
(one process per variant) and other proxies, each on 127.0.0.1, each stopped
by the PID it was started with.

The process harness is the integration tests' own
(C{tests/integration/_processes.py} and C{_output.py}, standard library
only): L{ChildProcess} starts a child with its output drained by a thread
and stops it with C{SIGTERM}, then C{SIGKILL} after a bounded wait;
L{ProxyProcess} waits for connectproxy's C{listening} event. The benchmark
adds a collector that keeps counts instead of every event, because a run
logs hundreds of thousands of them.
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from bench.measure import BenchError

if TYPE_CHECKING:
    from bench.memory import HolderShare
from bench.proc import processTree
from connectproxy._optionvalues import workerCount as workerValue
from tests.integration._output import Event, EventCollector, LineCollector
from tests.integration._processes import (
    LISTEN_ANY_PORT,
    LOOPBACK_ORIGINS,
    REPO_ROOT,
    ChildProcess,
    ProxyProcess,
    cleanEnvironment,
    isUnexpectedFailure,
    sourceEnvironment,
)

START_TIMEOUT = 30.0
DEFAULT_CONNECTPROXY_COMMAND = (
    "{python} -m twisted --log-format json --log-file - connectproxy"
)
_HEAD_BYTES = 8192
_TAIL_BYTES = 16384


def raiseDescriptorLimit() -> int:
    """
    Raise this process's soft C{RLIMIT_NOFILE} to its hard limit; the
    children started afterwards inherit it.

    @return: The soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return hard if soft == resource.RLIM_INFINITY else soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def freePort() -> int:
    """
    Find a free TCP port on 127.0.0.1 for a proxy that cannot report the
    port it chose itself.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _BoundedText:
    """
    The first and last few KiB of a child's output, for failure reports.
    """

    def __init__(self) -> None:
        self._head = bytearray()
        self._tail: deque[bytes] = deque()
        self._tailSize = 0
        self._skipped = False

    def add(self, chunk: bytes) -> None:
        """
        Keep C{chunk}, or the parts of it that fit.
        """
        room = _HEAD_BYTES - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        if not chunk:
            return
        self._tail.append(chunk)
        self._tailSize += len(chunk)
        while self._tailSize - len(self._tail[0]) >= _TAIL_BYTES:
            self._tailSize -= len(self._tail.popleft())
            self._skipped = True

    def text(self) -> str:
        """
        The kept output, with C{...} where some was left out.
        """
        middle = b"\n...\n" if self._skipped else b""
        raw = bytes(self._head) + middle + b"".join(self._tail)
        return raw.decode("utf-8", "replace").replace("\x1e", "")


class TallyCollector(EventCollector):
    """
    Collect connectproxy's JSON log as counts: events by name, the bytes of
    every C{tunnel_close}, a few error events, and the output's first and
    last lines. Only C{listening} events, unhandled failures and a few
    non-JSON lines stay in L{records}.

    @ivar counts: How many times each C{event} value was logged.
    @ivar bytesLogged: Sums of C{bytesUp} and C{bytesDown} over
        C{tunnel_close} events.
    @ivar errorEvents: Up to ten events at level error or critical.
    """

    def __init__(self, pipe: IO[bytes], name: str) -> None:
        self.counts: Counter[str] = Counter()
        self.bytesLogged = [0, 0]
        self.errorEvents: list[Event] = []
        self._text = _BoundedText()
        self._others = 0
        super().__init__(pipe, name)

    def keep(self, chunk: bytes, records: list[Event]) -> None:
        """
        Count the events just read; called by the drain thread with the lock
        held.
        """
        self._text.add(chunk)
        for event in records:
            name = str(event.get("event", ""))
            self.counts[name] += 1
            if name == "tunnel_close":
                self.bytesLogged[0] += int(event.get("bytesUp") or 0)
                self.bytesLogged[1] += int(event.get("bytesDown") or 0)
            level = event.get("log_level")
            levelName = level.get("name") if isinstance(level, dict) else level
            if levelName in ("error", "critical") and len(self.errorEvents) < 10:
                self.errorEvents.append(event)
            if name == "listening" or isUnexpectedFailure(event):
                self.records.append(event)
            elif "_text" in event and self._others < 50:
                self._others += 1
                self.records.append(event)

    def text(self) -> str:
        """
        The first and last lines of the output.
        """
        return self._text.text()

    def waitForCount(self, name: str, count: int, timeout: float) -> int:
        """
        Wait until C{name} was logged C{count} times, or C{timeout} seconds.

        @return: How many times it was logged.
        """
        with self._condition:
            self._condition.wait_for(lambda: self.counts[name] >= count, timeout)
            return self.counts[name]


class _BoundedLines(LineCollector):
    """
    Collect a third-party proxy's output, keeping only its first and last
    few KiB.
    """

    def __init__(self, pipe: IO[bytes], name: str) -> None:
        self._text = _BoundedText()
        super().__init__(pipe, name)

    def keep(self, chunk: bytes, records: list[str]) -> None:
        """
        Keep the text, not the lines.
        """
        self._text.add(chunk)

    def text(self) -> str:
        """
        The first and last lines of the output.
        """
        return self._text.text()


class _TallyProxyProcess(ProxyProcess):
    """
    connectproxy with its log collected by a L{TallyCollector}.
    """

    collectorType = TallyCollector


class Launched:
    """
    A proxy under test, running.

    @ivar name: Its name in the report.
    @ivar kind: C{"connectproxy"} or the other proxy's name.
    @ivar port: Its port on 127.0.0.1.
    @ivar version: What it says its version is.
    @ivar processes: How many processes serve its tunnels, each with its own
        descriptor limit (C{--workers}).
    """

    name: str
    kind: str
    port: int
    version: str
    child: ChildProcess[Any]
    processes: int = 1

    @property
    def pid(self) -> int:
        """
        The PID it was started with.
        """
        return self.child.pid

    def pids(self) -> list[int]:
        """
        Its process and all their descendants.
        """
        return processTree(self.child.pid)

    def alive(self) -> bool:
        """
        Whether the process is still running.
        """
        return self.child.process.poll() is None

    def stop(self) -> int:
        """
        Stop it by PID: C{SIGTERM}, then C{SIGKILL} after 10 s.

        @return: The exit status.
        """
        return self.child.stop()

    def describe(self) -> str:
        """
        The command line and output, for failure reports.
        """
        return self.child.describe()

    def facts(self) -> dict[str, Any]:
        """
        What the JSON report says about it.
        """
        return {
            "kind": self.kind,
            "version": self.version,
            "command": self.child.argv,
            "pid": self.pid,
        }


class ConnectproxyVariant(Launched):
    """
    connectproxy started from the source tree with one variant's options.

    @ivar tally: The counts from its log.
    """

    def __init__(
        self,
        name: str,
        prefix: str,
        options: str,
        root: Path = REPO_ROOT,
        nameserver: str | None = None,
    ) -> None:
        """
        Start it and wait for its C{listening} event.

        @param name: The variant's name.
        @param prefix: The command before the options, with C{{python}} for
            this interpreter; it must log JSON events to stdout.
        @param options: The variant's options, split as a shell would.
        @param root: The source tree it runs from (another commit's, to
            compare two in one run).
        @param nameserver: A loopback address whose port 53 answers DNS
            queries: the proxy then runs in a mount namespace of its own
            whose C{/etc/resolv.conf} names only that server (and whose
            C{/etc/hosts} has only C{localhost}); see L{inNamespace}.
        @raise BenchError: If it does not start listening.
        """
        self.name, self.kind = name, "connectproxy"
        argv = shlex.split(prefix.replace("{python}", shlex.quote(sys.executable)))
        argv += ["--listen", LISTEN_ANY_PORT, *LOOPBACK_ORIGINS]
        argv += shlex.split(options)
        workers = workerCount(shlex.split(options))
        self.processes = workers
        env = sourceEnvironment()
        env["PYTHONPATH"] = str(root)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if nameserver is not None:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"bench-{name}-")
            argv = inNamespace(Path(self._tmp.name), nameserver, argv)
        try:
            process = _TallyProxyProcess(argv, env, root)
        except AssertionError as e:
            self._cleanUp()
            raise BenchError(f"{name} did not start listening: {e}") from e
        process.allowFailures = True  # Reported, not raised, by the bench.
        self.child = process
        self.port = process.port
        self.tally = cast(TallyCollector, process.output)
        self.version = _gitVersion(root)
        if workers > 1:
            # The first worker's "listening" came first: measure once all
            # of them listen.
            if self.tally.waitForCount("workers_ready", 1, START_TIMEOUT) < 1:
                self.stop()
                raise BenchError(
                    f"{name}: not every worker listened\n{self.describe()}"
                )

    def failures(self) -> list[Event]:
        """
        The unhandled errors it logged.
        """
        return [e for e in self.child.output.records if isUnexpectedFailure(e)]

    def stop(self) -> int:
        """
        Stop it by PID, and remove its resolver files.
        """
        try:
            return self.child.stop()
        finally:
            self._cleanUp()

    def _cleanUp(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def workerCount(options: Sequence[str]) -> int:
    """
    How many worker processes the options ask for (C{--workers N} or
    C{auto}); 1 without the option.
    """
    value = "1"
    for index, option in enumerate(options):
        if option == "--workers" and index + 1 < len(options):
            value = options[index + 1]
        elif option.startswith("--workers="):
            value = option.partition("=")[2]
    if value == "auto":
        return workerValue("auto")
    return int(value) if value.isdigit() else 1


#: Runs a command with the files given first bind-mounted over
#: /etc/resolv.conf and /etc/hosts (it runs under C{unshare --mount}, so
#: only the command sees them).  C{unshare} and C{sh} exec the command: its
#: PID is the one started.
_NAMESPACE = (
    'mount --bind "$1" /etc/resolv.conf && mount --bind "$2" /etc/hosts '
    '&& shift 2 && exec "$@"'
)


def inNamespace(directory: Path, nameserver: str, argv: list[str]) -> list[str]:
    """
    The command line that runs C{argv} in a mount namespace of its own,
    where C{/etc/resolv.conf} names only C{nameserver} and C{/etc/hosts}
    has only C{localhost}: its name lookups go to the benchmark's DNS
    server, and the machine's resolver configuration is never touched.

    @param directory: Where to write the two files.
    """
    resolvConf = directory / "resolv.conf"
    resolvConf.write_text(f"nameserver {nameserver}\noptions timeout:5 attempts:2\n")
    hosts = directory / "hosts"
    hosts.write_text("127.0.0.1 localhost\n::1 localhost\n")
    for path in (directory, resolvConf, hosts):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return [
        "unshare",
        "--mount",
        "sh",
        "-c",
        _NAMESPACE,
        "sh",
        str(resolvConf),
        str(hosts),
        *argv,
    ]


def namespaceRefusal() -> str | None:
    """
    Why name lookups cannot be pointed at the benchmark's DNS server here
    (not Linux, not root, no C{unshare}), or C{None} when they can.
    """
    if not sys.platform.startswith("linux"):
        return "mount namespaces are Linux only"
    if os.geteuid() != 0:
        return "a DNS server on port 53 and bind-mounting /etc/resolv.conf need root"
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    with tempfile.TemporaryDirectory(prefix="bench-probe-") as directory:
        argv = inNamespace(Path(directory), "127.0.0.1", ["true"])
        try:
            result = subprocess.run(argv, capture_output=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"unshare failed: {e}"
    if result.returncode != 0:
        return f"unshare --mount is not permitted: {result.stderr!r}"
    return None


class DnsServer:
    """
    The DNS server of C{bench/dnsserver.py}, in a child process, on UDP
    port 53 of one loopback address per proxy.

    @ivar zone: The zone it serves: every name in it is 127.0.0.1.
    @ivar addresses: Its addresses.
    @ivar queries: After L{stop}, the queries each address received.
    """

    def __init__(self, count: int, ttl: int, zone: str = "bench.test") -> None:
        """
        Start it on C{count} addresses and wait until it is ready.

        @param ttl: The TTL of its records, and of its negative answers.
        @raise BenchError: If it does not start.
        """
        self.zone = zone
        base = f"127.53.{os.getpid() % 200 + 50}"
        self.addresses = [f"{base}.{index + 1}" for index in range(count)]
        self.queries: dict[str, int] = {}
        argv = [sys.executable, "-m", "bench.dnsserver", "--zone", zone]
        argv += ["--ttl", str(ttl), *self.addresses]
        self.child = ChildProcess(argv, LineCollector, sourceEnvironment(), REPO_ROOT)
        try:
            self.child.output.waitFor(lambda line: "ready" in line, 20, "DNS ready")
        except AssertionError as e:
            detail = self.child.describe()
            self.child.stop()
            raise BenchError(f"the DNS server did not start: {detail}") from e

    def stop(self) -> None:
        """
        Stop it by PID and read how many queries each address received.
        """
        self.child.stop()
        for line in self.child.output.records:
            if line.startswith('{"queries"'):
                self.queries = json.loads(line)["queries"]


def _gitVersion(root: Path) -> str:
    """
    The commit of the source tree in C{root}, with C{+dirty} if it has
    uncommitted changes.
    """
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty=+dirty"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return described or "unknown"


def commandVersion(argv: Sequence[str]) -> str:
    """
    Run C{argv} (a C{--version} command) and return its first line.
    """
    try:
        result = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            env=cleanEnvironment(),
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (result.stdout + result.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def waitForPort(port: int, child: ChildProcess[Any], timeout: float) -> None:
    """
    Wait until something accepts connections on C{port}, for a proxy that
    does not say when it is ready.

    @raise BenchError: If C{child} exits first or C{timeout} passes.
    """
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        if child.process.poll() is not None:
            raise BenchError(f"exited with status {child.process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), 1.0):
                return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise BenchError(f"nothing listening on port {port} after {timeout}s")
        pause.wait(0.05)


class ExternalProxy(Launched):
    """
    A proxy other than connectproxy, with its configuration in a temporary
    directory of its own.

    @ivar directory: That directory, removed by L{stop}.
    """

    def __init__(
        self,
        name: str,
        argv: Callable[[int, Path], list[str]],
        version: str,
        owner: Callable[[Path], None] = lambda directory: None,
        logs: Sequence[str] = (),
    ) -> None:
        """
        Write its configuration, start it, wait until its port accepts.

        @param argv: Writes the configuration for a port into a directory
            and returns the command line.
        @param owner: Gives the directory to the user the proxy runs as.
        @param logs: Files in the directory worth showing on failure.
        @raise BenchError: If it does not start.
        """
        self.name = self.kind = name
        self.version = version
        self._tmp = tempfile.TemporaryDirectory(prefix=f"bench-{name}-")
        self.directory = Path(self._tmp.name)
        self._logs = logs
        self.port = freePort()
        try:
            owner(self.directory)
            command = argv(self.port, self.directory)
            self.child = ChildProcess(
                command, _BoundedLines, cleanEnvironment(), REPO_ROOT
            )
        except BaseException:
            self._tmp.cleanup()
            raise
        try:
            waitForPort(self.port, self.child, START_TIMEOUT)
        except BaseException as e:
            detail = self.describe()
            self.stop()
            raise BenchError(f"{name} did not start: {e}\n{detail}") from e

    def describe(self) -> str:
        """
        The command line, output and the tail of its log files.
        """
        parts = [self.child.describe()]
        for name in self._logs:
            try:
                text = (self.directory / name).read_text(errors="replace")
            except OSError:
                continue
            parts.append(f"--- {name} (end) ---\n{text[-4000:]}")
        return "\n".join(parts)

    def stop(self) -> int:
        """
        Stop it by PID and remove its directory.
        """
        try:
            return self.child.stop()
        finally:
            self._tmp.cleanup()


class Origin:
    """
    The origin servers of C{bench/origin.py}, in a child process.

    @ivar bulkPort: The bulk server's port.
    @ivar echoPort: The one-message echo server's port.
    @ivar holdPorts: The hold servers' ports.
    """

    def __init__(self, holdPorts: int) -> None:
        """
        Start the origin and read its ports.

        @raise BenchError: If it does not announce them.
        """
        argv = [sys.executable, "-m", "bench.origin", "--hold", str(holdPorts)]
        self.child = ChildProcess(argv, LineCollector, sourceEnvironment(), REPO_ROOT)
        try:
            line = self.child.output.waitFor(lambda line: True, 20, "origin ports")
            ports = json.loads(line)
            self.bulkPort = int(ports["bulk"])
            self.echoPort = int(ports["echo"])
            self.holdPorts = [int(port) for port in ports["hold"]]
        except (AssertionError, ValueError, KeyError, TypeError) as e:
            detail = self.child.describe()
            self.child.stop()
            raise BenchError(f"the origin did not announce its ports: {detail}") from e

    def stop(self) -> None:
        """
        Stop it by PID.
        """
        self.child.stop()


class HolderProcess(ChildProcess[str]):
    """
    A client process of the idle-tunnel scale test (C{bench.holders}): it
    opens and holds its share of the tunnels, and takes commands on its
    standard input.
    """

    def __init__(self, proxyPort: int, share: HolderShare, timeout: float = 30.0):
        """
        Start it; it starts opening its tunnels at once.

        @param proxyPort: The proxy's port on 127.0.0.1.
        @param share: What it opens.
        @param timeout: Seconds each of its socket operations may take.
        """
        job = {
            "proxyPort": proxyPort,
            "count": share.count,
            "sources": list(share.sources),
            "ports": list(share.ports),
            "sample": share.sample,
            "timeout": timeout,
        }
        self.argv = [sys.executable, "-m", "bench.holders", json.dumps(job)]
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=sourceEnvironment(),
            cwd=REPO_ROOT,
        )
        assert self.process.stdout is not None
        self.output = LineCollector(self.process.stdout, f"drain-{self.process.pid}")

    def send(self, command: str) -> None:
        """
        Write one command line (C{check}, C{close}) to its standard input.

        @raise BenchError: If it has exited.
        """
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(command.encode("ascii") + b"\n")
            self.process.stdin.flush()
        except OSError as e:
            raise BenchError(f"holder {self.pid} is gone: {e}") from e

    def waitFor(self, key: str, timeout: float) -> dict[str, Any]:
        """
        Wait for its JSON line that has C{key}.

        @param timeout: Seconds to wait at most.
        @return: That line, parsed.
        @raise BenchError: If it does not come in time.
        """

        def has(line: str) -> bool:
            try:
                return line.startswith("{") and key in json.loads(line)
            except ValueError:
                return False

        try:
            return cast(
                dict[str, Any], json.loads(self.output.waitFor(has, timeout, key))
            )
        except AssertionError as e:
            raise BenchError(f"holder {self.pid}: {e}") from e

    def close(self) -> None:
        """
        Tell it to close its tunnels, wait a bounded time for it to exit,
        and stop it by PID if it has not.
        """
        try:
            self.send("close")
            assert self.process.stdin is not None
            self.process.stdin.close()
            self.process.wait(30.0)
        except (BenchError, OSError, subprocess.TimeoutExpired):
            pass
        self.stop()
