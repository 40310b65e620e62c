"""
Benchmark connectproxy's tunnels against direct connections on loopback.

Run C{python bench/tunnel.py --help}; C{bench/README.md} explains the figures.
The script starts its own origin servers (C{bench/origin.py}, a separate
process) and its own proxy, measures bulk throughput and tunnel setup rate
directly and through the proxy in the same run, reports each proxy figure as a
ratio of the direct one, and stops every process it started.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import IO, Any

# Wire format of bench/origin.py; change both together.
CHUNK = 256 * 1024
BULK_HEADER = struct.Struct("!QQ")
BULK_TRAILER = struct.Struct("!Q")
ECHO_SIZE = 32

LOOPBACK = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent
STALL_TIMEOUT = 10.0
START_TIMEOUT = 30.0
MODES = {"upload": (1, 0), "download": (0, 1), "both": (1, 1)}
_PAYLOAD = memoryview(bytes(range(256)) * (CHUNK // 256))
_MESSAGE = b"connectproxy-bench-ping".ljust(ECHO_SIZE, b".")


class BenchError(Exception):
    """
    A connection, the origin or the proxy did not behave as expected.
    """


def _log(message: str) -> None:
    """
    Write one progress line to stderr.
    """
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _parentDeathHook() -> Callable[[], None] | None:
    """
    Build a C{preexec_fn} that makes a child get SIGTERM when we die.

    The benchmark starts its children before it starts any thread, so running
    this hook between fork and exec is safe.

    @return: The hook, or L{None} where C{prctl} is not available.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prSetPdeathsig = 1

    def hook() -> None:
        prctl(prSetPdeathsig, signal.SIGTERM)

    return hook


def _readUntil(sock: socket.socket, marker: bytes, limit: int) -> bytes:
    """
    Read from C{sock} until C{marker} has arrived.

    @return: Everything read, which includes C{marker}.
    @raise BenchError: If the peer closes first or sends more than C{limit}
        bytes.
    """
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise BenchError(f"connection closed after {data!r}")
        data += chunk
        if len(data) > limit:
            raise BenchError(f"no {marker!r} in the first {limit} bytes: {data!r}")
    return data


def _recvExactly(sock: socket.socket, count: int) -> bytes:
    """
    Read exactly C{count} bytes.

    @raise BenchError: If the peer closes first.
    """
    data = bytearray()
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise BenchError(f"connection closed after {len(data)} of {count} bytes")
        data += chunk
    return bytes(data)


class Route:
    """
    A way to reach an origin port: directly, or through a CONNECT tunnel.

    @ivar name: C{"direct"} or C{"proxy"}.
    @ivar proxyPort: The proxy's port, or L{None} for direct connections.
    @ivar opened: How many tunnels the proxy has accepted with a 200.
    @ivar moved: Bytes sent up and down inside completed exchanges, to
        compare with the proxy's own count; L{None} once a capped transfer
        made the total unknown.
    """

    def __init__(self, name: str, proxyPort: int | None) -> None:
        self.name = name
        self.proxyPort = proxyPort
        self.opened = 0
        self.moved: list[int] | None = [0, 0]
        self._lock = threading.Lock()

    def addMoved(self, up: int, down: int | None) -> None:
        """
        Count bytes moved through one finished exchange; C{down} is L{None}
        when the exact count is unknown.
        """
        with self._lock:
            if self.moved is None or down is None:
                self.moved = None
            else:
                self.moved[0] += up
                self.moved[1] += down

    def open(self, port: int) -> socket.socket:
        """
        Connect to origin C{port} on loopback.

        @return: A connected socket with L{STALL_TIMEOUT} set.
        @raise BenchError: If the proxy does not answer 200.
        """
        sock = socket.create_connection(
            (LOOPBACK, port if self.proxyPort is None else self.proxyPort),
            timeout=STALL_TIMEOUT,
        )
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.proxyPort is None:
            return sock
        try:
            authority = f"{LOOPBACK}:{port}".encode("ascii")
            sock.sendall(
                b"CONNECT "
                + authority
                + b" HTTP/1.1\r\nHost: "
                + authority
                + b"\r\n\r\n"
            )
            head = _readUntil(sock, b"\r\n\r\n", 65536)
            if not head.startswith(b"HTTP/1.1 200 "):
                raise BenchError(f"CONNECT {authority!r} answered {head!r}")
            if not head.endswith(b"\r\n\r\n"):
                # The origins never speak first, so nothing may follow the 200.
                raise BenchError(f"unexpected bytes after the 200: {head!r}")
        except BaseException:
            sock.close()
            raise
        with self._lock:
            self.opened += 1
        return sock


@dataclass
class BulkSample:
    """
    One bulk transfer.

    @ivar moved: Payload bytes moved in both directions.
    @ivar seconds: Wall time from the header to the origin's trailer.
    @ivar capped: Whether the time cap cut the transfer short, in which case
        the origin did not get to confirm the byte count.
    """

    moved: int
    seconds: float
    capped: bool


class _Sender:
    """
    The upload half of a bulk transfer, run inline or in a thread.

    @ivar sent: Payload bytes sent so far.
    @ivar error: What stopped the upload before the deadline, if anything.
    """

    def __init__(self, sock: socket.socket, count: int, deadline: float) -> None:
        self._sock = sock
        self._count = count
        self._deadline = deadline
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        """
        Send the payload until done or past the deadline.
        """
        try:
            while self.sent < self._count and time.monotonic() < self._deadline:
                size = min(CHUNK, self._count - self.sent)
                self._sock.sendall(_PAYLOAD[:size])
                self.sent += size
        except OSError as e:
            if time.monotonic() < self._deadline:
                self.error = e  # Later errors come from the shutdown at the cap.


def _receiveBulk(sock: socket.socket, count: int, deadline: float) -> int:
    """
    Receive C{count} payload bytes into one reused buffer, or stop at the
    deadline.

    @return: How many bytes arrived.
    @raise BenchError: If the peer closes early.
    """
    buffer = bytearray(CHUNK)
    received = 0
    while received < count and time.monotonic() < deadline:
        size = sock.recv_into(buffer, min(CHUNK, count - received))
        if size == 0:
            raise BenchError(f"closed after {received} of {count} bytes downloaded")
        received += size
    return received


def _wakeSender(sock: socket.socket) -> None:
    """
    Shut C{sock} down so that an upload blocked in C{sendall} returns.
    """
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def bulkOnce(route: Route, port: int, mode: str, size: int, cap: float) -> BulkSample:
    """
    Run one bulk transfer against the bulk origin.

    @param mode: A key of L{MODES}.
    @param size: Bytes to move in each active direction.
    @param cap: Seconds after which the transfer is cut short.
    @raise BenchError: If bytes go missing or the tunnel fails.
    """
    upload, download = (size * flag for flag in MODES[mode])
    with route.open(port) as sock:
        deadline = time.monotonic() + cap
        started = time.perf_counter()
        sock.sendall(BULK_HEADER.pack(upload, download))
        sender = _Sender(sock, upload, deadline)
        thread = threading.Thread(target=sender.run, daemon=True)
        thread.start()
        received = 0
        try:
            received = _receiveBulk(sock, download, deadline)
        finally:
            if received < download or time.monotonic() >= deadline:
                _wakeSender(sock)
            thread.join()
        if sender.error is not None:
            raise BenchError(f"upload failed after {sender.sent} bytes: {sender.error}")
        if sender.sent < upload or received < download:
            route.addMoved(0, None)
            moved = sender.sent + received
            return BulkSample(moved, time.perf_counter() - started, True)
        (counted,) = BULK_TRAILER.unpack(_recvExactly(sock, BULK_TRAILER.size))
        seconds = time.perf_counter() - started
        if counted != upload:
            raise BenchError(f"origin received {counted} of {upload} bytes")
        if sock.recv(1) != b"":
            raise BenchError("unexpected bytes after the origin's trailer")
        route.addMoved(BULK_HEADER.size + upload, download + BULK_TRAILER.size)
    return BulkSample(upload + download, seconds, False)


@dataclass
class RateSample:
    """
    One tunnel-rate loop.

    @ivar count: Completed exchanges.
    @ivar seconds: Wall time of the loop.
    """

    count: int
    seconds: float


def exchangeOnce(route: Route, port: int) -> None:
    """
    Open a connection, send one message to the echo origin, read it back,
    close.

    @raise BenchError: If the echo does not come back intact.
    """
    with route.open(port) as sock:
        sock.sendall(_MESSAGE)
        reply = _recvExactly(sock, ECHO_SIZE)
    if reply != _MESSAGE:
        raise BenchError(f"echo came back as {reply!r}")
    route.addMoved(ECHO_SIZE, ECHO_SIZE)


def rateRun(
    route: Route, port: int, limit: int, seconds: float, concurrency: int
) -> RateSample:
    """
    Run L{exchangeOnce} from C{concurrency} threads until C{limit} exchanges
    have completed or C{seconds} have passed.

    @raise BenchError: With the first failure, after all threads stopped.
    """
    lock = threading.Lock()
    claimed = [0, 0]  # started, completed
    errors: list[str] = []
    deadline = time.monotonic() + seconds

    def worker() -> None:
        while not errors and time.monotonic() < deadline:
            with lock:
                if claimed[0] >= limit:
                    return
                claimed[0] += 1
            try:
                exchangeOnce(route, port)
            except (OSError, BenchError) as e:
                errors.append(f"{type(e).__name__}: {e}")
                return
            with lock:
                claimed[1] += 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise BenchError(f"after {claimed[1]} exchanges: {errors[0]}")
    return RateSample(claimed[1], elapsed)


class OriginProcess:
    """
    The origin servers of C{bench/origin.py}, in a child process.

    @ivar bulkPort: The bulk server's port.
    @ivar echoPort: The echo server's port.
    """

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("origin.py"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            preexec_fn=_parentDeathHook(),
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        try:
            ports = json.loads(line)
            self.bulkPort = int(ports["bulk"])
            self.echoPort = int(ports["echo"])
        except (ValueError, KeyError, TypeError) as e:
            self.stop()
            raise BenchError(f"origin did not announce its ports: {line!r}") from e

    def stop(self) -> None:
        """
        Close the origin's stdin so it exits; kill it if it lingers.
        """
        _stopProcess(self._process, closeStdin=True)


def _stopProcess(process: subprocess.Popen[bytes], closeStdin: bool) -> int | None:
    """
    Stop one child: close its stdin or send SIGTERM, then SIGKILL after 10 s.

    @return: The exit status, or L{None} if it had to be killed.
    """
    if process.poll() is None:
        if closeStdin and process.stdin is not None:
            process.stdin.close()
        else:
            process.terminate()
        try:
            return process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return None
    return process.returncode


def _procStatusKiB(pid: int, field: str) -> int | None:
    """
    Read one C{kB} field such as C{VmHWM} from C{/proc/PID/status}.
    """
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _procCpuSeconds(pid: int) -> float:
    """
    Read user plus system CPU time from C{/proc/PID/stat}.
    """
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ProxyProcess:
    """
    The proxy under test, started with C{python -m twisted connectproxy}.

    Two threads drain its stdout (JSON text sequences) and stderr so the pipes
    never fill.

    @ivar command: The full command line, for reproductions.
    @ivar port: The port from its C{listening} event.
    @ivar events: How many times each C{event} value was logged.
    @ivar errorEvents: Raw error and failure events, at most ten.
    @ivar logged: Sums of C{bytesUp} and C{bytesDown} over C{tunnel_close}.
    """

    def __init__(self, extraArgs: list[str]) -> None:
        self.command = [
            sys.executable, "-m", "twisted", "--log-format", "json",
            "--log-file", "-", "connectproxy",
            "--listen", f"tcp:0:interface={LOOPBACK}",
            # The bench's origins are on loopback, on ports other than 443:
            # both denied by default.
            "--allow-network", "127.0.0.0/8", "--allow-port", "1-65535",
            *extraArgs,
        ]  # fmt: skip
        self.port: int | None = None
        self.events: Counter[str] = Counter()
        self.errorEvents: list[str] = []
        self.logged = [0, 0]
        self._listening = threading.Event()
        self._head: list[str] = []
        self._tail: deque[str] = deque(maxlen=12)
        self._lock = threading.Lock()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p
        )
        self._process = subprocess.Popen(
            self.command,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_parentDeathHook(),
        )
        self.pid = self._process.pid
        self._drains = [
            threading.Thread(target=self._drain, args=(pipe, isJson), daemon=True)
            for pipe, isJson in (
                (self._process.stdout, True),
                (self._process.stderr, False),
            )
        ]
        for thread in self._drains:
            thread.start()

    def _drain(self, pipe: IO[bytes] | None, isJson: bool) -> None:
        """
        Read one pipe to its end, parsing JSON events if C{isJson}.
        """
        assert pipe is not None
        for raw in pipe:
            line = raw.decode("utf-8", "replace").strip("\x1e\r\n ")
            if not line:
                continue
            with self._lock:
                shown = ("" if isJson else "stderr: ") + line[:400]
                if len(self._head) < 4:
                    self._head.append(shown)
                else:
                    self._tail.append(shown)
            if isJson:
                try:
                    self._handleEvent(line)
                except (ValueError, TypeError, KeyError, AttributeError):
                    pass  # Not an event we understand; keep draining.

    def _handleEvent(self, line: str) -> None:
        """
        Count one JSON event and note the listening port and any errors.
        """
        event = json.loads(line)
        if not isinstance(event, dict):
            return
        name = str(event.get("event", ""))
        level = event.get("log_level")
        levelName = level.get("name") if isinstance(level, dict) else level
        with self._lock:
            self.events[name] += 1
            if name == "tunnel_close":
                self.logged[0] += int(event.get("bytesUp") or 0)
                self.logged[1] += int(event.get("bytesDown") or 0)
            if ("log_failure" in event or levelName in ("error", "critical")) and len(
                self.errorEvents
            ) < 10:
                self.errorEvents.append(line[:2000])
        if name == "listening" and self.port is None:
            self.port = int(event["port"])
            self._listening.set()

    def waitListening(self) -> int:
        """
        Wait for the C{listening} event.

        @return: The proxy's port.
        @raise BenchError: If the proxy exits or stays silent for too long.
        """
        deadline = time.monotonic() + START_TIMEOUT
        while not self._listening.wait(0.1):
            if self._process.poll() is not None or time.monotonic() > deadline:
                time.sleep(0.2)
                raise BenchError("the proxy did not start listening")
        assert self.port is not None
        return self.port

    def alive(self) -> bool:
        """
        Whether the proxy process is still running.
        """
        return self._process.poll() is None

    def cpuSeconds(self) -> float:
        """
        The proxy's user plus system CPU time so far.
        """
        return _procCpuSeconds(self.pid)

    def memoryKiB(self, field: str) -> int | None:
        """
        One C{kB} field of the proxy's C{/proc/PID/status}, such as C{VmHWM}.
        """
        return _procStatusKiB(self.pid, field)

    def waitForEvents(self, name: str, count: int, timeout: float) -> int:
        """
        Wait until C{name} was logged C{count} times or C{timeout} passed.

        @return: How many times it was logged.
        """
        deadline = time.monotonic() + timeout
        while self.events[name] < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.events[name]

    def stop(self) -> int | None:
        """
        Send SIGTERM, wait for exit (SIGKILL after 10 s), finish the drains.

        @return: The exit status, or L{None} if it had to be killed.
        """
        status = _stopProcess(self._process, closeStdin=False)
        for thread in self._drains:
            thread.join(5)
        return status

    def diagnostics(self) -> str:
        """
        The command line, exit status and first and last output lines, for
        reports.
        """
        with self._lock:
            lines = [*self._head, *(["..."] if self._tail else []), *self._tail]
        output = "\n".join("    " + line for line in lines)
        return (
            f"  command: cd {REPO_ROOT} && PYTHONPATH={REPO_ROOT} "
            f"{' '.join(self.command)}\n  exit status: {self._process.poll()}\n"
            f"  output (first and last lines):\n{output}"
        )


@dataclass
class Measurement:
    """
    One figure measured directly and through the proxy.

    @ivar name: What was measured, for example C{"upload"}.
    @ivar unit: C{"MB/s"} or C{"tunnels/s"}.
    @ivar direct: Samples over direct connections.
    @ivar proxy: Samples through the proxy.
    @ivar proxyCpu: Proxy CPU seconds spent during the proxy samples.
    @ivar proxyWall: Wall seconds of the proxy samples.
    @ivar capped: Whether a time cap cut any sample short.
    @ivar errors: Failures, prefixed with the route.
    """

    name: str
    unit: str
    direct: list[float] = field(default_factory=list)
    proxy: list[float] = field(default_factory=list)
    proxyCpu: float = 0.0
    proxyWall: float = 0.0
    capped: bool = False
    errors: list[str] = field(default_factory=list)

    def median(self, route: str) -> float | None:
        """
        The median sample of C{route}, or L{None} without samples.
        """
        samples = self.direct if route == "direct" else self.proxy
        return statistics.median(samples) if samples else None

    def ratio(self) -> float | None:
        """
        The median proxy figure divided by the median direct one.
        """
        direct, proxy = self.median("direct"), self.median("proxy")
        if direct is None or proxy is None or direct == 0:
            return None
        return proxy / direct

    def record(
        self,
        route: Route,
        sample: Callable[[], tuple[float, float, bool]],
        proxy: ProxyProcess,
    ) -> None:
        """
        Take one sample over C{route}, charging proxy CPU to proxy samples.

        @param sample: Returns the figure, its wall seconds, and whether it was
            capped; raises L{BenchError} or L{OSError} on failure.
        """
        if route.proxyPort is not None:
            if any(e.startswith("proxy:") for e in self.errors):
                return
            if not proxy.alive():
                self.errors.append("proxy: the proxy process has exited")
                return
        cpuBefore = proxy.cpuSeconds()
        try:
            value, seconds, capped = sample()
        except (OSError, BenchError) as e:
            self.errors.append(f"{route.name}: {type(e).__name__}: {e}")
            return
        self.capped = self.capped or capped
        if route.proxyPort is None:
            self.direct.append(value)
        else:
            self.proxy.append(value)
            self.proxyCpu += proxy.cpuSeconds() - cpuBefore
            self.proxyWall += seconds


def _bulkFigure(
    route: Route, port: int, mode: str, size: int, cap: float
) -> tuple[float, float, bool]:
    """
    Run one bulk transfer and turn it into MB/s (10**6 bytes per second).
    """
    sample = bulkOnce(route, port, mode, size, cap)
    figure = sample.moved / sample.seconds / 1e6
    capped = " (time cap reached)" if sample.capped else ""
    _log(
        f"  {mode:<8} {route.name:<6} {figure:10.1f} MB/s "
        f"in {sample.seconds:6.2f} s{capped}"
    )
    return figure, sample.seconds, sample.capped


def _rateFigure(
    route: Route, port: int, limit: int, seconds: float, concurrency: int
) -> tuple[float, float, bool]:
    """
    Run one tunnel-rate loop and turn it into exchanges per second.
    """
    sample = rateRun(route, port, limit, seconds, concurrency)
    figure = sample.count / sample.seconds
    _log(
        f"  rate     {route.name:<6} {figure:10.1f} tunnels/s "
        f"({sample.count} in {sample.seconds:.2f} s)"
    )
    return figure, sample.seconds, False


def runBulk(
    args: argparse.Namespace, routes: list[Route], port: int, proxy: ProxyProcess
) -> list[Measurement]:
    """
    Measure upload, download and both at once, C{args.rounds} times each,
    alternating which route goes first.
    """
    size = args.megabytes * 1024 * 1024
    measurements = [Measurement(mode, "MB/s") for mode in MODES]
    for roundIndex in range(args.rounds):
        _log(f"bulk round {roundIndex + 1} of {args.rounds}")
        order = routes if roundIndex % 2 == 0 else routes[::-1]
        for measurement in measurements:
            for route in order:
                sample = partial(
                    _bulkFigure, route, port, measurement.name, size, args.cap
                )
                measurement.record(route, sample, proxy)
    return measurements


def runRate(
    args: argparse.Namespace, routes: list[Route], port: int, proxy: ProxyProcess
) -> Measurement:
    """
    Measure the tunnel rate C{args.rounds} times per route, alternating which
    route goes first.
    """
    measurement = Measurement("tunnel rate", "tunnels/s")
    for roundIndex in range(args.rounds):
        _log(f"tunnel-rate round {roundIndex + 1} of {args.rounds}")
        for route in routes if roundIndex % 2 == 0 else routes[::-1]:
            sample = partial(
                _rateFigure, route, port, args.tunnels, args.seconds, args.concurrency
            )
            measurement.record(route, sample, proxy)
    return measurement


def _fmt(value: float | None, spec: str) -> str:
    """
    Format a figure, or a dash when there is none.
    """
    return "-" if value is None else format(value, spec)


def formatTable(report: dict[str, Any]) -> str:
    """
    Render the report as the human-readable table.
    """
    lines = [
        "connectproxy tunnel benchmark: " + report["config"]["summary"],
        "",
        f"{'measurement':<22}{'direct':>11}{'proxy':>11}{'proxy/direct':>14}"
        f"{'proxy CPU s':>13}{'CPU/wall':>10}",
    ]
    for row in report["measurements"]:
        cpu, wall = row["proxyCpuSeconds"], row["proxyWallSeconds"]
        lines.append(
            f"{row['name'] + ' ' + row['unit']:<22}"
            f"{_fmt(row['direct'], '.1f'):>11}{_fmt(row['proxy'], '.1f'):>11}"
            f"{_fmt(row['ratio'], '.3f'):>14}{_fmt(cpu if wall else None, '.2f'):>13}"
            f"{_fmt(cpu / wall if wall else None, '.2f'):>10}"
            + (" *" if row["capped"] else "")
        )
    proxy = report["proxy"]
    lines += ["", _formatMemory(proxy)]
    lines.append(
        f"proxy log: {proxy['tunnelCloseEvents']} tunnel_close events for "
        f"{proxy['tunnelsOpened']} tunnels opened, {len(proxy['errorEvents'])} "
        f"error events; exit status after SIGTERM: {proxy['exitStatus']}"
    )
    moved, logged = proxy["bytesMoved"], proxy["bytesLogged"]
    if moved is not None:
        agree = "matches" if moved == logged else "DIFFERS from"
        lines.append(
            f"proxy byte count ({logged[0]} up, {logged[1]} down) {agree} "
            f"the bench's ({moved[0]} up, {moved[1]} down)"
        )
    if any(row["capped"] for row in report["measurements"]):
        lines.append("* a time cap cut at least one sample short (not verified)")
    problems = report["problems"]
    if problems:
        lines += ["", "PROBLEMS:"] + ["  " + problem for problem in problems]
    return "\n".join(lines)


def _formatMemory(proxy: dict[str, Any]) -> str:
    """
    Render the proxy's peak and startup resident set sizes.
    """
    peak, start = proxy["vmHwmKiB"], proxy["vmRssStartKiB"]
    if peak is None or start is None:
        return "proxy memory: unavailable"
    return (
        f"proxy max RSS (VmHWM): {peak / 1024:.1f} MiB; VmRSS after startup: "
        f"{start / 1024:.1f} MiB; peak/startup {peak / start:.2f}"
    )


def buildReport(
    args: argparse.Namespace,
    measurements: list[Measurement],
    proxy: dict[str, Any],
    problems: list[str],
) -> dict[str, Any]:
    """
    Collect everything measured into one JSON-compatible dict.
    """
    summary = (
        f"{args.megabytes} MiB per direction, median of {args.rounds} rounds; "
        f"tunnel rate: up to {args.tunnels} tunnels or {args.seconds:g} s, "
        f"{args.concurrency} concurrent; {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f}"
    )
    rows = [
        {
            "name": m.name,
            "unit": m.unit,
            "direct": m.median("direct"),
            "proxy": m.median("proxy"),
            "ratio": m.ratio(),
            "directSamples": m.direct,
            "proxySamples": m.proxy,
            "proxyCpuSeconds": m.proxyCpu,
            "proxyWallSeconds": m.proxyWall,
            "capped": m.capped,
            "errors": m.errors,
        }
        for m in measurements
    ]
    config = {
        "megabytes": args.megabytes,
        "tunnels": args.tunnels,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "cap": args.cap,
        "proxyArgs": args.proxy_arg,
        "summary": summary,
    }
    return {
        "config": config,
        "measurements": rows,
        "proxy": proxy,
        "problems": problems,
        "ok": not problems,
    }


def parseArgs(argv: list[str] | None) -> argparse.Namespace:
    """
    Parse the command line.
    """
    parser = argparse.ArgumentParser(
        description="Benchmark connectproxy tunnels against direct loopback "
        "connections; every figure is reported next to its direct reference."
    )
    parser.add_argument(
        "--megabytes",
        type=int,
        default=256,
        metavar="N",
        help="MiB per direction per bulk transfer (default 256)",
    )
    parser.add_argument(
        "--tunnels",
        type=int,
        default=2000,
        metavar="N",
        help="tunnel-rate loop stops after N tunnels (default 2000)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=5.0,
        metavar="S",
        help="tunnel-rate loop stops after S seconds (default 5)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        metavar="N",
        help="samples per route and measurement; the median is reported (default 5)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=4,
        metavar="N",
        help="threads in the tunnel-rate loop (default 4)",
    )
    parser.add_argument(
        "--cap",
        type=float,
        default=15.0,
        metavar="S",
        help="time cap in seconds for one bulk transfer (default 15)",
    )
    parser.add_argument(
        "--proxy-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for the proxy, repeatable; write "
        "options as --proxy-arg=--allow-port=1234",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the report as JSON on stdout (table on stderr)",
    )
    args = parser.parse_args(argv)
    for name in ("megabytes", "tunnels", "rounds", "concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.seconds <= 0 or args.cap <= 0:
        parser.error("--seconds and --cap must be positive")
    return args


def _warmUp(routes: list[Route], origin: OriginProcess) -> None:
    """
    Check that each route works end to end and warm it up.

    @raise BenchError: If a route fails; the message names it.
    """
    for route in routes:
        try:
            exchangeOnce(route, origin.echoPort)
            for mode in MODES:
                bulkOnce(route, origin.bulkPort, mode, 8 * 1024 * 1024, 30.0)
        except (OSError, BenchError) as e:
            raise BenchError(
                f"{route.name} warm-up failed: {type(e).__name__}: {e}"
            ) from e


def _proxyFacts(
    proxy: ProxyProcess, via: Route, rssStart: int | None
) -> dict[str, Any]:
    """
    Collect the proxy's memory and log counts, then stop it.
    """
    closes = proxy.waitForEvents("tunnel_close", via.opened, 5.0)
    peak = proxy.memoryKiB("VmHWM")
    status = proxy.stop()
    return {
        "pid": proxy.pid,
        "command": proxy.command,
        "vmHwmKiB": peak,
        "vmRssStartKiB": rssStart,
        "tunnelsOpened": via.opened,
        "tunnelCloseEvents": closes,
        "bytesLogged": list(proxy.logged),
        "bytesMoved": via.moved,
        "events": {name: n for name, n in proxy.events.items() if name},
        "errorEvents": list(proxy.errorEvents),
        "exitStatus": status,
    }


def _problems(measurements: list[Measurement], facts: dict[str, Any]) -> list[str]:
    """
    List everything that went wrong, in words for the report.
    """
    problems = [f"{m.name}: {error}" for m in measurements for error in m.errors]
    if facts["tunnelCloseEvents"] != facts["tunnelsOpened"]:
        problems.append(
            f"proxy logged {facts['tunnelCloseEvents']} tunnel_close events for "
            f"{facts['tunnelsOpened']} tunnels"
        )
    moved, logged = facts["bytesMoved"], facts["bytesLogged"]
    if moved is not None and moved != logged:
        problems.append(
            f"proxy logged {logged[0]} bytes up and {logged[1]} down; the "
            f"bench moved {moved[0]} up and {moved[1]} down"
        )
    problems += [f"proxy error event: {line}" for line in facts["errorEvents"]]
    # twist re-raises SIGTERM on itself after a clean shutdown.
    if facts["exitStatus"] not in (0, -signal.SIGTERM):
        problems.append(f"proxy exit status after SIGTERM: {facts['exitStatus']}")
    return problems


def runAll(args: argparse.Namespace, origin: OriginProcess, proxy: ProxyProcess) -> int:
    """
    Run every phase against a listening proxy and print the report.

    @return: The exit status: 0 if nothing went wrong, 1 otherwise.
    """
    port = proxy.waitListening()
    rssStart = proxy.memoryKiB("VmRSS")
    direct, via = Route("direct", None), Route("proxy", port)
    routes = [direct, via]
    _log(
        f"proxy pid {proxy.pid} listening on {LOOPBACK}:{port}; origin ports "
        f"bulk {origin.bulkPort}, echo {origin.echoPort}"
    )
    _warmUp(routes, origin)
    measurements = runBulk(args, routes, origin.bulkPort, proxy)
    measurements.append(runRate(args, routes, origin.echoPort, proxy))
    facts = _proxyFacts(proxy, via, rssStart)
    problems = _problems(measurements, facts)
    report = buildReport(args, measurements, facts, problems)
    table = formatTable(report)
    if args.json:
        _log(table)
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        sys.stdout.write(table + "\n")
    if problems:
        _log(proxy.diagnostics())
    return 1 if problems else 0


def _exitOnSignal(signum: int, frame: FrameType | None) -> None:
    """
    Turn SIGTERM into L{SystemExit} so the cleanup in L{main} runs.
    """
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """
    Start the origin and the proxy, benchmark, and stop both whatever happens.

    @return: The process exit status.
    """
    args = parseArgs(argv)
    signal.signal(signal.SIGTERM, _exitOnSignal)
    origin = OriginProcess()
    proxy: ProxyProcess | None = None
    try:
        proxy = ProxyProcess(args.proxy_arg)
        return runAll(args, origin, proxy)
    except BenchError as e:
        _log(f"benchmark failed: {e}")
        if proxy is not None:
            _log(proxy.diagnostics())
        return 1
    except KeyboardInterrupt:
        _log("interrupted; stopping the proxy and the origin")
        return 130
    finally:
        if proxy is not None:
            proxy.stop()
        origin.stop()


if __name__ == "__main__":
    sys.exit(main())
