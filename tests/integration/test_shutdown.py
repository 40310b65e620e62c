# -*- test-case-name: tests.integration.test_shutdown -*-
"""
The draining shutdown of a real proxy process: on SIGTERM it stops
accepting at once, established tunnels keep flowing for the grace period
and are then closed with the reason C{shutdown} (a flow-blocked one too,
aborted after the abort timeout), and the process exits; a second signal
ends it at once; with nothing open it exits at once.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections import Counter
from typing import Any

import pytest

from tests.integration._output import LineCollector
from tests.integration._processes import (
    BIN_DIR,
    LISTEN_ANY_PORT,
    LOOPBACK_ORIGINS,
    REPO_ROOT,
    ChildProcess,
    OriginFactory,
    ProxyFactory,
    ProxyProcess,
    sourceEnvironment,
)
from tests.integration._sockets import (
    LOCAL,
    connectRequest,
    openTunnel,
    readExactly,
    readToEnd,
)

pytestmark = pytest.mark.integration

#: Tests that run with each relay (C{--relay}): how a tunnel closes is the
#: relay's business.
bothRelays = pytest.mark.usefixtures("relay")

GRACE = 3.0
ABORT = 2.0

#: Seconds of slack on the exit deadline (start-up of the interpreter's
#: exit, scheduling on a busy machine).
SLACK = 5.0


def tunnelCloses(proxy: ProxyProcess) -> list[dict[str, Any]]:
    return [e for e in proxy.events if e.get("event") == "tunnel_close"]


def refusedNow(port: int) -> None:
    """
    A new connection to the proxy's port is refused: nothing listens there.
    """
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((LOCAL, port), timeout=5).close()


def waitExit(proxy: ChildProcess[Any], timeout: float) -> float:
    """
    Wait for the process to exit.

    @return: How many seconds it took.
    """
    started = time.monotonic()
    try:
        proxy.process.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the proxy was still running after {timeout}s") from None
    return time.monotonic() - started


@bothRelays
def test_drainThenClose(proxy: ProxyFactory, origin: OriginFactory, relay: str) -> None:
    """
    After SIGTERM: new connections are refused at once; an established
    tunnel keeps relaying through the grace period, then its client sees
    the end of the tunnel; a tunnel blocked by a client that reads nothing
    is closed too (aborted after the abort timeout); each gets exactly one
    C{tunnel_close} with the reason C{shutdown}, and the process exits
    within the grace period and the abort timeout.
    """
    echo = origin("echo")
    push = origin("push", "--bytes", str(1 << 30), "--stall", "0.2")
    p = proxy("--shutdown-grace", str(GRACE), "--abort-timeout", str(ABORT))
    flowing, _ = openTunnel(p.port, echo.port)
    blocked, _ = openTunnel(p.port, push.port)
    with flowing, blocked:
        flowing.sendall(b"before")
        assert readExactly(flowing, 6) == b"before"
        # The blocked tunnel's client reads nothing: the proxy stops
        # reading the origin, which then cannot send.
        push.waitForLine(r"blocked \d+")
        signalled = time.monotonic()
        p.process.send_signal(signal.SIGTERM)
        # With --workers, each worker drains its own tunnels.
        draining = p.waitForDraining()
        assert sum(e["tunnels"] for e in draining) == 2
        assert {e["grace"] for e in draining} == {GRACE}
        refusedNow(p.port)
        # The tunnel flows during the grace period, more than once.
        for word in (b"during", b"grace"):
            flowing.sendall(word)
            assert readExactly(flowing, len(word)) == word
        assert time.monotonic() - signalled < GRACE
        assert tunnelCloses(p) == []
        # Then it ends, cleanly for its client.
        assert readToEnd(flowing) == b""
        assert time.monotonic() - signalled >= GRACE - 0.5
        waitExit(p, GRACE + ABORT + SLACK)
    assert time.monotonic() - signalled < GRACE + ABORT + SLACK
    closes = tunnelCloses(p)
    assert sorted(e["port"] for e in closes) == sorted([echo.port, push.port])
    assert [e["reason"] for e in closes] == ["shutdown", "shutdown"]
    assert [e["relay"] for e in closes] == [relay, relay]
    names = [e.get("event") for e in p.events]
    for name in ("shutdown_closing", "shutdown_aborting"):
        # Once, by the process (each worker) that had tunnels to close.
        perProcess = Counter(
            e.get("worker") for e in p.events if e.get("event") == name
        )
        assert list(perProcess.values()) in ([1], [1, 1]), (name, perProcess)
    assert names.count("shutdown_drained") == len(p.servingPids)
    assert "shutdown_incomplete" not in names


@bothRelays
def test_secondSignal(proxy: ProxyFactory, origin: OriginFactory) -> None:
    """
    A second SIGTERM (or SIGINT) during the grace period closes every
    tunnel at once, with the reason C{shutdown}, and the process exits.
    """
    echo = origin("echo")
    p = proxy("--shutdown-grace", "600")
    sock, _ = openTunnel(p.port, echo.port)
    with sock:
        p.process.send_signal(signal.SIGTERM)
        p.waitForDraining()
        sock.sendall(b"still")
        assert readExactly(sock, 5) == b"still"
        p.process.send_signal(signal.SIGINT)
        p.waitForNamed("shutdown_forced")
        assert readToEnd(sock) == b""
        waitExit(p, SLACK)
    [close] = tunnelCloses(p)
    assert close["reason"] == "shutdown"


def test_idleExitsAtOnce(proxy: ProxyFactory) -> None:
    """
    With nothing open, SIGTERM stops the proxy at once, grace or not.
    """
    p = proxy("--shutdown-grace", "600")
    p.process.send_signal(signal.SIGTERM)
    assert waitExit(p, SLACK) < SLACK
    assert p.process.returncode == -signal.SIGTERM


@bothRelays
def test_lastTunnelEndsTheDrain(proxy: ProxyFactory, origin: OriginFactory) -> None:
    """
    When the last tunnel ends during the grace period, the proxy exits
    then, without waiting for the rest of it; the tunnel keeps its own
    close reason.
    """
    echo = origin("echo")
    p = proxy("--shutdown-grace", "600")
    sock, _ = openTunnel(p.port, echo.port)
    with sock:
        p.process.send_signal(signal.SIGTERM)
        p.waitForDraining()
        sock.sendall(b"bye")
        assert readExactly(sock, 3) == b"bye"
        sock.shutdown(socket.SHUT_WR)
        assert readToEnd(sock) == b""
    waitExit(p, SLACK)
    [close] = tunnelCloses(p)
    assert close["reason"] == "client closed"


def test_twistd(origin: OriginFactory) -> None:
    """
    Under C{twistd -n} too, SIGTERM closes the listener at once, the tunnel
    keeps flowing, and SIGINT ends the drain at once.
    """
    echo = origin("echo")
    argv = [str(BIN_DIR / "twistd"), "-n", "--pidfile=", "connectproxy"]
    argv += ["--listen", LISTEN_ANY_PORT, *LOOPBACK_ORIGINS]
    argv += ["--shutdown-grace", "600"]
    process = ChildProcess(argv, LineCollector, sourceEnvironment(), REPO_ROOT)
    try:
        line = process.output.waitFor(
            lambda line: "connectproxy listening on" in line, 20, "the listening line"
        )
        port = int(line.rsplit(":", 1)[1])
        sock, _ = openTunnel(port, echo.port)
        with sock:
            process.process.send_signal(signal.SIGTERM)
            process.output.waitFor(
                lambda line: "shutting down: no longer accepting" in line,
                10,
                "the drain",
            )
            refusedNow(port)
            sock.sendall(b"twistd")
            assert readExactly(sock, 6) == b"twistd"
            process.process.send_signal(signal.SIGINT)
            assert readToEnd(sock) == b""
            waitExit(process, SLACK)
        closes = [line for line in process.output.records if "tunnel closed" in line]
        assert len(closes) == 1 and closes[0].endswith(", shutdown"), closes
    finally:
        process.stop()


def test_newRequestOnOpenConnection(proxy: ProxyFactory, origin: OriginFactory) -> None:
    """
    A connection accepted before SIGTERM whose request comes after it gets
    503: the proxy answers nothing new.
    """
    echo = origin("echo")
    p = proxy("--shutdown-grace", "600")
    early = socket.create_connection((LOCAL, p.port), timeout=20)
    # Connections are accepted in order: once this later one is a tunnel,
    # the proxy has accepted the early one.
    holding, _ = openTunnel(p.port, echo.port)
    with holding, early:
        p.process.send_signal(signal.SIGTERM)
        p.waitForDraining()
        early.sendall(connectRequest(LOCAL, echo.port))
        response = readToEnd(early)
        assert response.startswith(b"HTTP/1.1 503 ")
        assert b"the proxy is shutting down" in response
        p.process.send_signal(signal.SIGTERM)
        waitExit(p, SLACK)
