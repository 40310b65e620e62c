# -*- test-case-name: tests.integration.test_descriptors -*-
"""
File descriptors, with the proxy started under a low C{RLIMIT_NOFILE}: it
raises its soft limit to the hard limit and sizes C{--max-connections} from
it; and where even the hard limit is low, a flood of clients is refused
cleanly (503s, a warning at most once a second, no busy loop), and the proxy
serves again once the clients are gone.

The limit is set in the proxy's own process (between fork and exec of a
small wrapper), never in the test's.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from connectproxy._pipes import PipePool
from tests.integration._modes import onlyOneProcess, withWorkers
from tests.integration._output import Event
from tests.integration._processes import (
    LISTEN_ANY_PORT,
    ChildProcess,
    OriginFactory,
    ProxyFactory,
    ProxyProcess,
    proxyCommand,
    waitForPath,
)
from tests.integration._sockets import LOCAL, openTunnel, readExactly, readToEnd

pytestmark = pytest.mark.integration

ATTEMPTS = 200
"""
How many clients connect at once to the proxy with 64 descriptors.
"""

#: Sets the descriptor limit, then becomes the command that follows (same
#: PID, so the test measures and stops the proxy itself).
_WRAPPER = (
    "import os, resource, sys; "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2]))); "
    "os.execv(sys.argv[3], sys.argv[3:])"
)


def limitedProxy(
    soft: int, hard: int, extraArgs: Sequence[str], workerArgs: Sequence[str] = ()
) -> ProxyProcess:
    """
    Start a proxy whose descriptor limit is C{soft} (and C{hard}), in the
    process mode of C{workerArgs} (its workers inherit the limit).
    """
    command = proxyCommand(withWorkers(workerArgs, extraArgs), [LISTEN_ANY_PORT])
    return ProxyProcess(
        [sys.executable, "-c", _WRAPPER, str(soft), str(hard), *command]
    )


def cpuSeconds(pid: int) -> float:
    """
    The CPU time (user and system) a process has used, from /proc.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def openDescriptors(*pids: int) -> int:
    return sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in pids)


def test_raisesToHardLimit(
    processes: list[ChildProcess[Any]], workerArgs: tuple[str, ...]
) -> None:
    """
    Started with a soft limit of 64 under a hard limit of 4096, the proxy
    (with C{--workers}, each worker) raises it to 4096, logs it, and its
    default --max-connections follows ((4096 - 64) / 2).
    """
    running = limitedProxy(64, 4096, [], workerArgs)
    processes.append(running)
    for event in running.waitForEach(lambda e: e.get("event") == "descriptor_limit"):
        assert (event["limit"], event["before"], event["hard"]) == (4096, 64, 4096)
        assert event["maxConnections"] == 2016
    for pid in running.servingPids:
        limits = Path(f"/proc/{pid}/limits").read_text()
        [line] = [
            line for line in limits.splitlines() if line.startswith("Max open files")
        ]
        assert line.split()[3:5] == ["4096", "4096"]


#: What each client of the flood sends: the start of a request head, so that
#: a client the proxy serves stays open waiting for the rest (a client that
#: sends nothing at all could be lost in the kernel's SYN-cookie handshake
#: under such a flood, neither served nor refused).
PARTIAL_HEAD = b"CONNECT 127.0.0.1:9 HTTP/1.1\r\n"


class Flood:
    """
    Many clients connecting at once, each sending the start of a request
    head, kept open until the proxy answers or closes it.
    """

    def __init__(self, port: int, count: int) -> None:
        self.connecting: dict[int, socket.socket] = {}
        self.pending: dict[int, socket.socket] = {}
        self.answers: list[bytes] = []
        self.closed: list[socket.socket] = []
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            code = sock.connect_ex((LOCAL, port))
            assert code in (0, errno.EINPROGRESS), os.strerror(code)
            self.connecting[sock.fileno()] = sock

    def collect(self, atLeast: int, timeout: float) -> None:
        """
        Send each client's head once it is connected, and read what the
        proxy answers, until C{atLeast} clients were answered or closed.
        """
        deadline = time.monotonic() + timeout
        while len(self.answers) < atLeast:
            remaining = deadline - time.monotonic()
            assert remaining > 0, (
                f"{timeout}s passed with {len(self.answers)} clients refused, "
                f"{len(self.pending)} open, {len(self.connecting)} connecting"
            )
            readable, writable, _ = select.select(
                list(self.pending.values()),
                list(self.connecting.values()),
                [],
                remaining,
            )
            for sock in writable:
                del self.connecting[sock.fileno()]
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    self._answered(sock, errno.errorcode[error].encode())
                else:
                    sock.send(PARTIAL_HEAD)
                    self.pending[sock.fileno()] = sock
            for sock in readable:
                try:
                    answer = sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError as e:
                    answer = errno.errorcode.get(e.errno or 0, "error").encode()
                del self.pending[sock.fileno()]
                self._answered(sock, answer)

    def _answered(self, sock: socket.socket, answer: bytes) -> None:
        self.answers.append(answer)
        self.closed.append(sock)

    def close(self) -> None:
        for sock in [*self.connecting.values(), *self.pending.values(), *self.closed]:
            sock.close()


@onlyOneProcess(
    "counts what one process with 64 descriptors refuses of 200 clients; each"
    " worker has its own descriptor limit (docs/operating.md, Limits are per"
    " worker)"
)
def test_floodAtDescriptorLimit(
    processes: list[ChildProcess[Any]], origin: OriginFactory
) -> None:
    """
    With 64 descriptors (soft and hard, so raising cannot help) and no
    connection limit below that, 200 clients at once: those that find no
    descriptor get a 503 naming the cause, the proxy logs a warning at most
    once a second (Twisted nothing), uses little CPU meanwhile (no busy
    accept loop), and once the clients are gone a tunnel works.
    """
    echo = origin("echo")
    running = limitedProxy(64, 64, ["--max-connections", "1000"])
    processes.append(running)
    limit = running.waitForNamed("descriptor_limit")
    assert (limit["limit"], limit["maxConnections"]) == (64, 1000)

    cpuBefore, wallBefore = cpuSeconds(running.pid), time.monotonic()
    flood = Flood(running.port, ATTEMPTS)
    try:
        # The proxy can hold at most 64 descriptors: the others are refused.
        flood.collect(ATTEMPTS - 64, timeout=60)
        running.waitForNamed("descriptors_exhausted")
        cpu = cpuSeconds(running.pid) - cpuBefore
        wall = time.monotonic() - wallBefore
        # /proc counts CPU time in 10 ms ticks: allow a few of them, so a
        # flood answered in a few milliseconds does not count as busy.
        assert cpu < 0.5 * wall + 0.05, f"{cpu:.2f} s of CPU in {wall:.2f} s"
        refusal = (
            b"HTTP/1.1 503 Service Unavailable\r\n",
            b"503 Service Unavailable: the proxy is out of file descriptors; "
            b"try again later\n",
        )
        refused = [a for a in flood.answers if a.startswith(refusal[0])]
        assert refused, flood.answers[:5]
        assert all(a.endswith(refusal[1]) for a in refused)
        assert len(flood.pending) > 10, "the proxy held hardly any clients"
    finally:
        flood.close()

    def warnings() -> list[Event]:
        return [e for e in running.events if e.get("event") == "descriptors_exhausted"]

    # The last count comes at most a second after the one before.
    running.waitForEvent(
        lambda e: sum(w["count"] for w in warnings()) >= len(refused), timeout=5
    )
    assert len(warnings()) <= time.monotonic() - wallBefore + 1
    twisted = [e for e in running.events if "EMFILE" in str(e.get("log_format", ""))]
    assert twisted == []

    waitForPath(
        lambda: openDescriptors(running.pid) < 32,
        20,
        "the proxy to close the connections of the clients that left",
    )
    sock, early = openTunnel(running.port, echo.port)
    with sock:
        sock.sendall(b"still serving")
        assert early + readExactly(sock, len(b"still serving") - len(early)) == (
            b"still serving"
        )


def closedAtLeast(running: ProxyProcess, count: int) -> bool:
    """
    Whether the proxy logged at least C{count} C{tunnel_close} events.
    """
    closes = [e for e in running.events if e.get("event") == "tunnel_close"]
    return len(closes) >= count


def servedBy(running: ProxyProcess) -> set[int]:
    """
    The processes that logged a C{tunnel_close}: the proxy's own, or with
    C{--workers} those of the workers.
    """
    closes = [e for e in running.events if e.get("event") == "tunnel_close"]
    return {int(e.get("worker_pid", running.pid)) for e in closes}


#: What the push origin sends through each tunnel that waits to be read.
PUSHED = 2 << 20


@pytest.mark.usefixtures("relay")
def test_noDescriptorLeftAfterTunnels(
    proxy: ProxyFactory, origin: OriginFactory, relay: str
) -> None:
    """
    Many tunnels leave no descriptor behind, with either relay: after two
    rounds of tunnels (several at once that wait to be read while the
    origin pushes, so that the splice relay holds pipes for them, then
    echo tunnels one after the other) the proxy holds no more descriptors
    than when it started, but for the empty pipes the splice relay keeps
    for the next tunnels (a bounded number).
    """
    push = origin("push", "--bytes", str(PUSHED))
    echo = origin("echo")
    running = proxy()
    pids = running.servingPids
    kept = 2 * PipePool().keep * len(pids) if relay == "splice" else 0

    def tunnelRound(waiting: int, echoes: int) -> None:
        opened = [openTunnel(running.port, push.port) for _ in range(waiting)]
        for sock, rest in opened:
            with sock:
                assert len(rest) + len(readToEnd(sock, PUSHED)) == PUSHED
        for _ in range(echoes):
            sock, rest = openTunnel(running.port, echo.port)
            with sock:
                sock.sendall(b"x" * 1000)
                assert rest + readExactly(sock, 1000 - len(rest)) == b"x" * 1000

    # What the proxy makes once, at its first tunnels (the reactor's
    # waker for threads, say), is not a leak.
    # With --workers, in each worker.
    tunnels = 0
    while tunnels < 2 or not set(pids) <= servedBy(running):
        assert tunnels < 100, f"no tunnel reached some of the workers {pids}"
        tunnelRound(1, 1)
        tunnels += 2
        waitForPath(
            partial(closedAtLeast, running, tunnels), 30, f"{tunnels} tunnel_close"
        )
    before = openDescriptors(*pids)
    for _ in range(2):
        tunnelRound(8, 40)
        tunnels += 48
        waitForPath(
            partial(closedAtLeast, running, tunnels), 30, f"{tunnels} tunnel_close"
        )
        waitForPath(
            lambda: openDescriptors(*pids) <= before + kept,
            20,
            "the proxy to close the descriptors of the tunnels",
        )
    closes = [e for e in running.events if e.get("event") == "tunnel_close"]
    assert {e["relay"] for e in closes} == {relay}
