# -*- test-case-name: tests.integration.test_deploy -*-
"""
The ways an operator starts the proxy: C{twistd} in the foreground and as a
daemon, C{twist}, and the example C{.tac} file; and what a bad command line
does.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
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
    OriginProcess,
    ProxyProcess,
    sourceEnvironment,
    waitForExit,
    waitForPath,
)
from tests.integration._sockets import openTunnel, readExactly

pytestmark = pytest.mark.integration

TWISTD = str(BIN_DIR / "twistd")
TWIST = str(BIN_DIR / "twist")

LISTENING = re.compile(r"connectproxy listening on 127\.0\.0\.1:(\d+)")
"""
The line of the text log that says where the proxy listens.
"""

TAC = REPO_ROOT / "docs" / "examples" / "connectproxy.tac"


@pytest.fixture
def echoOrigin(origin: OriginFactory) -> OriginProcess:
    """
    A plain TCP echo origin.
    """
    return origin("echo")


def echoRoundTrip(proxyPort: int, echoPort: int) -> None:
    """
    Tunnel to the echo origin and back.

    @param proxyPort: The proxy's port.
    @param echoPort: The echo origin's port.
    """
    sock, rest = openTunnel(proxyPort, echoPort)
    with sock:
        assert rest == b""
        sock.sendall(b"ping through the proxy")
        assert readExactly(sock, 22) == b"ping through the proxy"


def listeningPort(process: ChildProcess[str]) -> int:
    """
    Wait for the text log line that says where the proxy listens.

    @param process: A C{twistd} whose log goes to its stdout.
    @return: The port.
    """
    line = process.output.waitFor(
        lambda line: LISTENING.search(line) is not None, 20, "the listening line"
    )
    match = LISTENING.search(line)
    assert match is not None
    return int(match.group(1))


def stoppedBySignal(status: int) -> bool:
    """
    Tell whether an exit status means a clean stop after C{SIGTERM}: Twisted
    re-raises the signal once it has shut down, so either 0 or death by
    C{SIGTERM} (not C{SIGKILL}, which L{ChildProcess.stop} falls back to).

    @param status: A C{Popen} return code.
    @return: Whether it was a clean stop.
    """
    return status in (0, -signal.SIGTERM)


def test_twistdForeground(
    processes: list[ChildProcess[Any]], scratchDir: Path, echoOrigin: OriginProcess
) -> None:
    """
    C{twistd -n} writes its pidfile, tunnels, and on C{SIGTERM} stops and
    removes the pidfile.
    """
    pidfile = scratchDir / "twistd.pid"
    argv = [TWISTD, "-n", "--pidfile", str(pidfile), "-l", "-"]
    argv += ["connectproxy", "--listen", LISTEN_ANY_PORT, *LOOPBACK_ORIGINS]
    twistd = ChildProcess(argv, LineCollector, sourceEnvironment(), scratchDir)
    processes.append(twistd)
    port = listeningPort(twistd)
    assert pidfile.read_text().strip() == str(twistd.pid)
    echoRoundTrip(port, echoOrigin.port)
    assert stoppedBySignal(twistd.stop()), twistd.describe()
    assert not pidfile.exists()


@pytest.fixture
def daemonPidfile(scratchDir: Path) -> Iterator[Path]:
    """
    Where a daemon writes its PID; the daemon named there is stopped when
    the test ends, if it still runs.
    """
    pidfile = scratchDir / "daemon.pid"
    yield pidfile
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        pid = int(pidfile.read_text())
        os.kill(pid, signal.SIGTERM)
        if not waitForExit(pid, 10):
            os.kill(pid, signal.SIGKILL)
            waitForExit(pid, 10)


def test_twistdDaemon(
    daemonPidfile: Path, scratchDir: Path, echoOrigin: OriginProcess
) -> None:
    """
    C{twistd} as a daemon writes its pidfile and log file, tunnels, and on
    C{SIGTERM} to the PID in the pidfile exits and removes the pidfile.
    """
    logfile = scratchDir / "daemon.log"
    argv = [TWISTD, "--pidfile", str(daemonPidfile), "--logfile", str(logfile)]
    argv += ["connectproxy", "--listen", LISTEN_ANY_PORT, *LOOPBACK_ORIGINS]
    launcher = subprocess.run(
        argv,
        env=sourceEnvironment(),
        cwd=scratchDir,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert launcher.returncode == 0, launcher.stdout + launcher.stderr
    waitForPath(daemonPidfile.exists, 10, "the daemon's pidfile appears")
    pid = int(daemonPidfile.read_text())
    match = None

    def listening() -> bool:
        nonlocal match
        match = LISTENING.search(logfile.read_text() if logfile.exists() else "")
        return match is not None

    waitForPath(listening, 20, "the listening line in the daemon's log")
    assert match is not None
    echoRoundTrip(int(match.group(1)), echoOrigin.port)
    os.kill(pid, signal.SIGTERM)
    assert waitForExit(pid, 20), "the daemon did not exit after SIGTERM"
    assert not daemonPidfile.exists()


def test_twist(
    processes: list[ChildProcess[Any]], scratchDir: Path, echoOrigin: OriginProcess
) -> None:
    """
    C{twist connectproxy} logs JSON, tunnels, and stops on C{SIGTERM}.
    """
    argv = [TWIST, "--log-format", "json", "--log-file", "-"]
    argv += ["connectproxy", "--listen", LISTEN_ANY_PORT, *LOOPBACK_ORIGINS]
    twist = ProxyProcess(argv, cwd=scratchDir)
    processes.append(twist)
    echoRoundTrip(twist.port, echoOrigin.port)
    twist.waitForNamed("tunnel_close", port=echoOrigin.port)
    assert stoppedBySignal(twist.stop()), twist.describe()


def test_tacFile(
    processes: list[ChildProcess[Any]],
    scratchDir: Path,
    echoOrigin: OriginProcess,
    tmp_path: Path,
) -> None:
    """
    The example C{.tac} file listens where C{CONNECTPROXY_LISTEN} says, reads
    the configuration file C{CONNECTPROXY_CONFIG} names, and tunnels.
    """
    config = tmp_path / "tac-config.toml"
    config.write_text(
        'allow-port = ["1-65535"]\nallow-network = ["127.0.0.0/8", "::1/128"]\n'
    )
    argv = [TWISTD, "-ny", str(TAC), "--pidfile=", "-l", "-"]
    env = sourceEnvironment(
        CONNECTPROXY_LISTEN=LISTEN_ANY_PORT, CONNECTPROXY_CONFIG=str(config)
    )
    twistd = ChildProcess(argv, LineCollector, env, scratchDir)
    processes.append(twistd)
    echoRoundTrip(listeningPort(twistd), echoOrigin.port)
    assert stoppedBySignal(twistd.stop()), twistd.describe()
    assert list(scratchDir.iterdir()) == []


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        (["--connect-timeout", "-1"], "'-1' must be a positive number"),
        (["--idle-timeout", "soon"], "'soon' is not a number"),
        (["--listen", "bogus:xyz"], "--listen 'bogus:xyz' is not a valid listener"),
    ],
)
def test_invalidOption(scratchDir: Path, arguments: list[str], complaint: str) -> None:
    """
    An invalid option makes C{twist connectproxy} exit with a usage error
    that names the problem, before it listens anywhere.
    """
    argv = [TWIST, "--log-format", "text", "--log-file", "-", "connectproxy"]
    result = subprocess.run(
        argv + arguments,
        env=sourceEnvironment(),
        cwd=scratchDir,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert complaint in output
    assert "Traceback" not in output
    assert "listening on" not in output
