# -*- test-case-name: tests.integration.test_workers -*-
"""
C{--workers 2} in real processes on loopback: C{twistd -n} (and C{twist})
start a supervisor and two workers sharing the port; tunnels work and both
workers serve them; a worker killed with SIGKILL is started again while the
other serves; SIGHUP reloads every worker; SIGTERM drains every worker and
the supervisor exits as a single proxy does; no worker outlives it; the
metrics are summed over the workers; systemd hears only the supervisor;
connection limits are per worker.

Every other integration test that starts a proxy runs with C{--workers 2}
too (C{tests/integration/_modes.py}).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration._output import Event, LineCollector
from tests.integration._processes import (
    BIN_DIR,
    LISTEN_ANY_PORT,
    LOOPBACK_ORIGINS,
    REPO_ROOT,
    ChildProcess,
    OriginFactory,
    OriginProcess,
    ProxyProcess,
    proxyCommand,
    sourceEnvironment,
    waitForExit,
)
from tests.integration._sockets import (
    LOCAL,
    connectRequest,
    dial,
    openTunnel,
    readExactly,
    readResponseHead,
    readToEnd,
)

pytestmark = pytest.mark.integration

#: Seconds for anything a test waits for.
WAIT = 30.0

#: The most tunnels a test opens before both workers have served one.
ATTEMPTS = 200


def twistdCommand(*extra: str) -> list[str]:
    """
    C{twistd -n connectproxy --workers 2} on a free port of 127.0.0.1, with
    its log in JSON on standard output.
    """
    argv = [str(BIN_DIR / "twistd"), "-n", "--pidfile="]
    argv += ["--logger=tests.integration._jsonlog.stdoutJSON", "connectproxy"]
    argv += ["--listen", LISTEN_ANY_PORT, *LOOPBACK_ORIGINS, "--workers", "2"]
    return argv + list(extra)


class Workers:
    """
    A supervisor and its workers, running.
    """

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.proxy = ProxyProcess(argv, env)
        self.ready()

    def ready(self) -> None:
        """
        Wait until both workers listen (their C{listening} events come
        through another pipe than their notifications, so may come later
        than C{workers_ready}).
        """
        self.proxy.waitForNamed("workers_ready", WAIT)
        waitCount(self, "listening", 2)

    @property
    def port(self) -> int:
        return self.proxy.port

    def named(self, name: str) -> list[Event]:
        return [e for e in self.proxy.events if e.get("event") == name]

    def workerPids(self) -> dict[int, int]:
        """
        The process of each worker, as last started.
        """
        started = self.named("worker_started")
        return {e["worker"]: e["worker_pid"] for e in started}

    def servedBy(self, name: str = "tunnel_close") -> set[int]:
        return {e["worker_pid"] for e in self.named(name)}

    def stop(self) -> int:
        return self.proxy.stop()


@pytest.fixture
def workers() -> Iterator[list[Workers]]:
    """
    The supervisors a test starts, stopped (by PID) at its end, with no
    worker left behind.
    """
    started: list[Workers] = []
    yield started
    for running in started:
        pids = list(running.workerPids().values())
        running.stop()
        for pid in pids:
            assert waitForExit(pid, WAIT), f"worker {pid} outlived its supervisor"


def echoOnce(port: int, origin: OriginProcess, payload: bytes = b"ping") -> None:
    sock, _ = openTunnel(port, origin.port)
    with sock:
        sock.sendall(payload)
        assert readExactly(sock, len(payload)) == payload


def waitCount(running: Workers, name: str, count: int) -> None:
    """
    Wait until C{name} was logged C{count} times.
    """
    running.proxy.output.waitFor(
        lambda e: len(running.named(name)) >= count, WAIT, f"{count} {name} events"
    )


def spreadTunnels(
    running: Workers, origin: OriginProcess, pids: set[int] | None = None
) -> int:
    """
    Open tunnels, eight at a time, until each worker (each of C{pids}) has
    served one.

    @return: How many were opened.
    """
    wanted = pids or set()
    opened = 0
    while len(running.servedBy()) < 2 or not wanted <= running.servedBy():
        assert opened < ATTEMPTS, f"after {opened} tunnels: {running.servedBy()}"
        before = len(running.named("tunnel_close"))
        held = [openTunnel(running.port, origin.port)[0] for _ in range(8)]
        for sock in held:
            sock.sendall(b"x")
            assert readExactly(sock, 1) == b"x"
            sock.close()
        opened += len(held)
        waitCount(running, "tunnel_close", before + len(held))
    return opened


def test_twistdWorkers(workers: list[Workers], origin: OriginFactory) -> None:
    """
    Under C{twistd -n}, two workers listen on the port the supervisor bound
    (port 0: one chosen for both), tunnels work, both workers serve some
    (their events carry their process IDs), and SIGTERM stops the whole
    proxy as it stops one process, with no worker left.
    """
    echo = origin("echo")
    running = Workers(twistdCommand())
    workers.append(running)
    listening = running.named("listening")
    assert {e["port"] for e in listening} == {running.port}
    pids = running.workerPids()
    assert {e["worker_pid"] for e in listening} == set(pids.values())
    assert sorted(pids) == [1, 2]
    assert all(os.getpgid(pid) == pid for pid in pids.values())
    spreadTunnels(running, echo)
    assert running.servedBy() == set(pids.values())
    running.proxy.process.send_signal(signal.SIGTERM)
    assert running.proxy.process.wait(WAIT) == -signal.SIGTERM
    for pid in pids.values():
        assert waitForExit(pid, WAIT)
    assert {e["worker"] for e in running.named("shutdown_drained")} == {1, 2}
    assert running.named("workers_stopped")


def test_twistdText(processes: list[ChildProcess[Any]], origin: OriginFactory) -> None:
    """
    Under C{twistd -n} logging text to standard output, every worker's lines
    are text lines there too, naming the worker in brackets.
    """
    echo = origin("echo")
    argv = [str(BIN_DIR / "twistd"), "-n", "--pidfile=", "connectproxy"]
    argv += ["--listen", LISTEN_ANY_PORT, *LOOPBACK_ORIGINS, "--workers", "2"]
    process = ChildProcess(argv, LineCollector, sourceEnvironment(), REPO_ROOT)
    processes.append(process)
    process.output.waitFor(
        lambda line: "all 2 workers are listening on" in line, WAIT, "readiness"
    )
    line = process.output.waitFor(
        lambda line: "connectproxy listening on" in line, WAIT, "a listening line"
    )
    assert re.search(r"\[connectproxy\S* worker=[12] pid=\d+\] ", line), line
    echoOnce(int(line.rsplit(":", 1)[1]), echo)
    closed = process.output.waitFor(
        lambda line: "tunnel closed" in line, WAIT, "the tunnel's line"
    )
    assert re.search(r"#info worker=[12] pid=\d+\] tunnel closed ", closed), closed
    assert not any(line.startswith(("{", "\x1e")) for line in process.output.records)


def test_workerRestarted(workers: list[Workers], origin: OriginFactory) -> None:
    """
    A worker killed with SIGKILL is started again; the other serves
    meanwhile, and both serve afterwards.
    """
    echo = origin("echo")
    running = Workers(proxyCommand(["--workers", "2"]))
    workers.append(running)
    pids = running.workerPids()
    os.kill(pids[1], signal.SIGKILL)
    echoOnce(running.port, echo)
    exited = running.proxy.waitForNamed("worker_exited", WAIT, worker=1)
    assert exited["how"] == "signal 9"
    assert waitForExit(pids[1], WAIT)
    running.proxy.waitForEvent(
        lambda e: (
            e.get("event") == "worker_ready"
            and e["worker"] == 1
            and e["worker_pid"] != pids[1]
        ),
        WAIT,
    )
    restarted = running.workerPids()
    assert restarted[1] != pids[1] and restarted[2] == pids[2]
    spreadTunnels(running, echo, set(restarted.values()))


def refused(port: int, target: int) -> bytes:
    """
    Send a CONNECT and return the response head's status line.
    """
    with dial(port) as sock:
        sock.sendall(connectRequest(LOCAL, target))
        response, _ = readResponseHead(sock)
        return response.raw.split(b"\r\n", 1)[0]


def test_reloadEveryWorker(
    workers: list[Workers], origin: OriginFactory, tmp_path: Path
) -> None:
    """
    SIGHUP reloads every worker: a port removed from the configuration
    file is refused by both, and the supervisor says each reloaded; a file
    that no longer loads is reported by each worker, and the old rules stay.
    """
    echo = origin("echo")
    config = tmp_path / "proxy.toml"
    config.write_text(f'allow-port = ["{echo.port}"]\n')
    argv = proxyCommand(["--workers", "2", "--config", str(config)])
    argv.remove("--allow-port")
    argv.remove("1-65535")
    running = Workers(argv)
    workers.append(running)
    echoOnce(running.port, echo)
    config.write_text('allow-port = ["1"]\n')
    running.proxy.process.send_signal(signal.SIGHUP)
    done = running.proxy.waitForNamed("workers_reloaded", WAIT)
    assert done["failed"] == [] and done["waiting"] == []
    assert {e["worker"] for e in running.named("reloaded")} == {1, 2}
    attempts = 0
    while len(running.servedBy("request_refused")) < 2:
        assert attempts < ATTEMPTS, "one worker answered every request"
        assert refused(running.port, echo.port) == b"HTTP/1.1 403 Forbidden"
        attempts += 1
        waitCount(running, "request_refused", attempts)
    config.write_text("allow-port = [\n")
    running.proxy.process.send_signal(signal.SIGHUP)
    running.proxy.waitForEvent(
        lambda e: e.get("event") == "workers_reloaded" and e["failed"], WAIT
    )
    failed = running.named("reload_failed")
    assert {e["worker"] for e in failed} == {1, 2}
    assert running.named("workers_reloaded")[-1]["failed"] == [1, 2]
    assert refused(running.port, echo.port) == b"HTTP/1.1 403 Forbidden"


def test_drainEveryWorker(workers: list[Workers], origin: OriginFactory) -> None:
    """
    SIGTERM makes every worker drain: the port refuses new clients at once,
    established tunnels (on both workers) keep flowing, a second SIGTERM
    closes them, and the proxy exits by the signal with no worker left.
    """
    echo = origin("echo")
    # twistd keeps debug events (twist's own --log-level would drop them).
    running = Workers(twistdCommand("--shutdown-grace", "600", "--log-level", "debug"))
    workers.append(running)
    held: list[socket.socket] = []
    try:
        while len(running.servedBy("tunnel_open")) < 2:
            assert len(held) < ATTEMPTS, "one worker took every tunnel"
            held.append(openTunnel(running.port, echo.port)[0])
            waitCount(running, "tunnel_open", len(held))
        pids = running.workerPids()
        running.proxy.process.send_signal(signal.SIGTERM)
        waitCount(running, "shutdown_draining", 2)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((LOCAL, running.port), timeout=5).close()
        for sock in held:
            sock.sendall(b"still")
            assert readExactly(sock, 5) == b"still"
        running.proxy.process.send_signal(signal.SIGTERM)
        for sock in held:
            assert readToEnd(sock) == b""
    finally:
        for sock in held:
            sock.close()
    assert running.proxy.process.wait(WAIT) == -signal.SIGTERM
    for pid in pids.values():
        assert waitForExit(pid, WAIT)
    assert {e["worker"] for e in running.named("shutdown_forced")} == {1, 2}


def test_metricsSummed(workers: list[Workers], origin: OriginFactory) -> None:
    """
    C{/metrics} of the supervisor counts the tunnels of both workers;
    C{/healthz} answers 200.
    """
    echo = origin("echo")
    running = Workers(
        proxyCommand(["--workers", "2", "--metrics", "tcp:0:interface=127.0.0.1"])
    )
    workers.append(running)
    [metrics] = [e for e in running.named("metrics_listening") if "worker" not in e]
    opened = spreadTunnels(running, echo)
    base = f"http://127.0.0.1:{metrics['port']}"
    with urllib.request.urlopen(base + "/metrics", timeout=WAIT) as response:
        text = response.read().decode("utf-8")
    lines = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#")
    )
    assert float(lines['connectproxy_requests_total{result="ok"}']) == opened
    assert float(lines["connectproxy_workers"]) == 2
    assert float(lines["connectproxy_tunnels_active"]) == 0
    with urllib.request.urlopen(base + "/healthz", timeout=WAIT) as response:
        assert response.read() == b"ok\n"


def test_supervisorKilled(workers: list[Workers], origin: OriginFactory) -> None:
    """
    Workers whose supervisor was killed with SIGKILL stop by themselves.
    """
    running = Workers(proxyCommand(["--workers", "2", "--shutdown-grace", "1"]))
    pids = running.workerPids()
    os.kill(running.proxy.pid, signal.SIGKILL)
    running.proxy.process.wait(WAIT)
    for pid in pids.values():
        assert waitForExit(pid, WAIT), f"worker {pid} outlived its supervisor"
    running.proxy.allowFailures = True
    running.stop()


def test_givesUp(workers: list[Workers], tmp_path: Path) -> None:
    """
    When a worker keeps dying at start (here: its configuration file no
    longer loads), the supervisor gives up, stops the other worker and
    exits with status 1; the worker's own message reaches the log.
    """
    config = tmp_path / "proxy.toml"
    config.write_text("idle-timeout = 60\n")
    running = Workers(proxyCommand(["--workers", "2", "--config", str(config)]))
    workers.append(running)
    config.write_text("idle-timeout = -1\n")
    os.kill(running.workerPids()[1], signal.SIGKILL)
    gaveUp = running.proxy.waitForNamed("workers_gave_up", 120)
    assert gaveUp["worker"] == 1
    assert running.proxy.process.wait(WAIT) == 1
    errors = [e["text"] for e in running.named("worker_stderr")]
    assert any("idle-timeout" in text for text in errors), errors


def test_systemd(workers: list[Workers], origin: OriginFactory, tmp_path: Path) -> None:
    """
    With a socket from systemd and C{NOTIFY_SOCKET}, the workers serve on
    that socket and only the supervisor notifies: C{READY=1} once both
    listen, C{STOPPING=1} at the end.
    """
    from tests.integration.test_systemd import ACTIVATE

    echo = origin("echo")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(tmp_path / "notify"))
        notify.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        notify.settimeout(WAIT)
        listening = socket.socket()
        listening.bind((LOCAL, 0))
        listening.listen(16)
        port = listening.getsockname()[1]
        fd = listening.fileno()
        argv = [sys.executable, "-c", ACTIVATE, str(fd)]
        argv += proxyCommand(["--workers", "2"], ["systemd:domain=INET:name=proxy"])
        env = sourceEnvironment(
            LISTEN_FDS="1",
            LISTEN_FDNAMES="proxy",
            NOTIFY_SOCKET=str(tmp_path / "notify"),
        )
        running = Workers.__new__(Workers)
        running.proxy = ProxyProcess(argv, env, passFds=[fd])
        workers.append(running)
        listening.close()
        ready = received(notify)
        running.ready()
        assert ready[0] == running.proxy.pid
        assert ready[1]["READY"] == "1"
        assert ready[1]["STATUS"] == "2 workers listening on systemd socket (fd 3)"
        spreadTunnels(running, echo)
        assert port == running.port
        running.proxy.process.send_signal(signal.SIGTERM)
        stopping = received(notify)
        assert stopping[0] == running.proxy.pid and stopping[1]["STOPPING"] == "1"
        running.proxy.process.wait(WAIT)
        notify.settimeout(0.5)
        with pytest.raises(TimeoutError):
            notify.recv(4096)


def received(sock: socket.socket) -> tuple[int, dict[str, str]]:
    """
    One notification and the process ID of its sender.
    """
    size = socket.CMSG_SPACE(3 * 4)
    data, ancillary, _, _ = sock.recvmsg(4096, size)
    pid = 0
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = int.from_bytes(payload[:4], sys.byteorder)
    fields = dict(line.split("=", 1) for line in data.decode("utf-8").split("\n"))
    return pid, fields


def test_limitsPerWorker(workers: list[Workers], origin: OriginFactory) -> None:
    """
    Connection limits are per worker: with C{--max-connections 1}, each of
    the two workers holds a tunnel (the other one's clients are served
    meanwhile), and a third client, whichever worker takes it, gets 503.
    """
    echo = origin("echo")
    # Under twistd, for the debug events (tunnel_open).
    running = Workers(twistdCommand("--max-connections", "1", "--log-level", "debug"))
    workers.append(running)
    held: list[socket.socket] = []
    try:
        statuses: list[int] = []
        while len(running.servedBy("tunnel_open")) < 2:
            assert len(statuses) < ATTEMPTS, "one worker took every client"
            sock = dial(running.port)
            sock.sendall(connectRequest(LOCAL, echo.port))
            response, _ = readResponseHead(sock)
            statuses.append(response.status)
            if response.status == 200:
                held.append(sock)
                waitCount(running, "tunnel_open", len(held))
            else:
                assert response.status == 503, response.raw
                sock.close()
        assert len(held) == 2
        assert refused(running.port, echo.port) == (b"HTTP/1.1 503 Service Unavailable")
        for sock in held:
            sock.sendall(b"both")
            assert readExactly(sock, 4) == b"both"
    finally:
        for sock in held:
            sock.close()
