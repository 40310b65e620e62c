# -*- test-case-name: tests.integration.test_commands -*-
"""
The first hour with the proxy, from every entry point (C{connectproxy},
C{python -m connectproxy}, C{twist connectproxy}, C{twistd connectproxy}):
C{--version}, C{--check-config}, a bad option, a port already in use (in the
foreground and as a daemon) and a socket passed by systemd.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectproxy import __version__
from connectproxy._dnscache import chooseResolver
from tests.integration._output import LineCollector
from tests.integration._processes import (
    BIN_DIR,
    LISTEN_ANY_PORT,
    LOOPBACK_ORIGINS,
    REPO_ROOT,
    STOP_TIMEOUT,
    ChildProcess,
    OriginFactory,
    ProxyProcess,
    sourceEnvironment,
    waitForPath,
)
from tests.integration._sockets import LOCAL, openTunnel, readExactly

pytestmark = pytest.mark.integration

ENTRY_POINTS = {
    "connectproxy": [str(BIN_DIR / "connectproxy")],
    "python -m connectproxy": [sys.executable, "-m", "connectproxy"],
    "twist connectproxy": [str(BIN_DIR / "twist"), "connectproxy"],
    "twistd connectproxy": [
        str(BIN_DIR / "twistd"),
        "--pidfile",
        "twistd.pid",
        "connectproxy",
    ],
}
"""
Each way to start the proxy, up to its options.
"""


def run(
    argv: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """
    Run a command to its end, with a deadline.
    """
    return subprocess.run(
        argv,
        env=sourceEnvironment() if env is None else env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def busyPort() -> Iterator[int]:
    """
    A port of 127.0.0.1 that this test holds open.
    """
    with socket.socket() as holder:
        holder.bind((LOCAL, 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_version(scratchDir: Path, entry: str) -> None:
    """
    C{--version} prints connectproxy's version (and Twisted's on a second
    line), not only Twisted's.
    """
    result = run([*ENTRY_POINTS[entry], "--version"], scratchDir)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"connectproxy {__version__}"
    assert lines[1].startswith("Twisted ")


def assertShortError(
    result: subprocess.CompletedProcess[str], entry: str, *names: str
) -> None:
    """
    The command failed with a short message on stderr that names C{names}
    and says how to get help, and printed no usage text.
    """
    assert result.returncode != 0, result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith(f"{entry}: error: ")
    for name in names:
        assert name in lines[0]
    assert lines[1] == f"See '{entry} --help' for the options."
    assert "Usage:" not in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_badOption(scratchDir: Path, entry: str) -> None:
    """
    An unknown option or a bad value prints the error alone (not the usage
    text before it, nor twistd's own arguments as a prefix), naming the
    option, and exits non-zero before listening.
    """
    for arguments, names in [
        (["--no-such-option"], ["--no-such-option"]),
        (["--idle-timeout", "soon"], ["--idle-timeout", "'soon'"]),
        (
            ["--allow-port", "443", "8443"],
            ["unexpected argument '8443'", "--allow-port 443 --allow-port 8443"],
        ),
    ]:
        result = run([*ENTRY_POINTS[entry], *arguments], scratchDir)
        assertShortError(result, entry, *names)
    assert list(scratchDir.iterdir()) == []


@pytest.mark.parametrize(
    "arguments, names",
    [
        (["--listen", "tls:3129"], ["'tls:3129' would listen on [::]:443"]),
        (
            ["--listen", "tcp6:3128:interface=::1"],
            ["escape the colons of an IPv6 address"],
        ),
        (
            ["--listen", "systemd:domain=INET:index=0"],
            ["'systemd:domain=INET:index=0'", "LISTEN_FDS is not set"],
        ),
        (["--auth", "htpasswd:/nonexistent/htpasswd"], ["--auth", "/nonexistent"]),
        (
            [
                *("--check-config", "--listen", "tcp:18136"),
                *("--listen", "tcp:18136:interface=127.0.0.1"),
            ],
            ["overlap", "0.0.0.0:18136 and 127.0.0.1:18136"],
        ),
    ],
)
def test_badListener(scratchDir: Path, arguments: list[str], names: list[str]) -> None:
    """
    A listener that would not listen where it says, or at all, is refused
    with one line that says why.
    """
    result = run([*ENTRY_POINTS["connectproxy"], *arguments], scratchDir)
    assertShortError(result, "connectproxy", *names)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_checkConfig(scratchDir: Path, busyPort: int, entry: str) -> None:
    """
    C{--check-config} with a configuration file prints one line per
    listener and exits 0, without binding (the port is in use) or starting
    anything (no pidfile, no log).
    """
    config = scratchDir / "proxy.toml"
    listen = f"tcp:{busyPort}:interface=127.0.0.1"
    config.write_text(f'listen = ["{listen}", "unix:proxy.sock"]\n')
    result = run(
        [*ENTRY_POINTS[entry], "--config", str(config), "--check-config"], scratchDir
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        f"listen {listen} -> 127.0.0.1:{busyPort} (plain HTTP)",
        "listen unix:proxy.sock -> unix:proxy.sock (plain HTTP)",
        "resolver: auto -> {} ({})".format(*chooseResolver()),
        f"connectproxy {__version__}: configuration OK ({config})",
    ]
    assert list(scratchDir.iterdir()) == [config]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_checkConfigFails(scratchDir: Path, entry: str) -> None:
    """
    C{--check-config} with a bad configuration file exits 1 with the error,
    naming the file and the key.
    """
    config = scratchDir / "proxy.toml"
    config.write_text('listen = "tcp:3128:interface=127.0.0.1"\nauth-realm = 7\n')
    result = run(
        [*ENTRY_POINTS[entry], "--check-config", "--config", str(config)], scratchDir
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assertShortError(result, entry, str(config), "'auth-realm'", "must be a string")


def test_checkSample(scratchDir: Path) -> None:
    """
    The sample configuration file passes C{--check-config}.
    """
    sample = REPO_ROOT / "docs" / "examples" / "connectproxy.toml"
    result = run(
        [*ENTRY_POINTS["connectproxy"], "--config", str(sample), "--check-config"],
        scratchDir,
    )
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout


FOREGROUND = {
    "connectproxy": [*ENTRY_POINTS["connectproxy"], "--log-format", "text"],
    "python -m connectproxy": [*ENTRY_POINTS["python -m connectproxy"]],
    "twist connectproxy": [
        str(BIN_DIR / "twist"),
        "--log-format",
        "text",
        "connectproxy",
    ],
    "twistd -n connectproxy": [
        str(BIN_DIR / "twistd"),
        "-n",
        "--pidfile",
        "twistd.pid",
        "-l",
        "-",
        "connectproxy",
    ],
}
"""
Each way to run the proxy in the foreground.
"""


@pytest.mark.parametrize("entry", FOREGROUND)
def test_portInUse(scratchDir: Path, busyPort: int, entry: str) -> None:
    """
    A port already in use stops the proxy with status 1 and one line naming
    the address, the reason and the listener, without a traceback; twistd
    removes its pidfile.
    """
    listen = f"tcp:{busyPort}:interface=127.0.0.1"
    result = run([*FOREGROUND[entry], "--listen", listen], scratchDir)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    expected = (
        f"connectproxy: cannot listen on 127.0.0.1:{busyPort}: Address already "
        f"in use (--listen {listen})"
    )
    [line] = [line for line in output.splitlines() if "cannot listen" in line]
    assert line.endswith(expected)
    assert "Traceback" not in output
    # The start lines (the resolver --resolver auto chose, the descriptor
    # limit, the runner's own) and the error.
    assert len(output.splitlines()) <= 5, output
    assert list(scratchDir.iterdir()) == []


def test_portInUseDaemon(scratchDir: Path, busyPort: int) -> None:
    """
    In daemon mode, C{twistd} reports the same reason, not cut off, exits
    non-zero and removes its pidfile; the log file has the whole line.
    """
    listen = f"tcp:{busyPort}:interface=127.0.0.1"
    argv = [str(BIN_DIR / "twistd"), "--pidfile", "twistd.pid", "--logfile", "log"]
    result = run([*argv, "connectproxy", "--listen", listen], scratchDir)
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        f"cannot listen on 127.0.0.1:{busyPort}: Address already in use'"
        in result.stderr
    )
    assert "Traceback" not in result.stderr
    # The daemon removes its pidfile and logs the line after it has told the
    # parent, which may exit first.
    pidfile, logfile = scratchDir / "twistd.pid", scratchDir / "log"
    waitForPath(lambda: not pidfile.exists(), 20, "the daemon removes its pidfile")
    line = (
        f"connectproxy: cannot listen on 127.0.0.1:{busyPort}: Address already in "
        f"use (--listen {listen})"
    )
    waitForPath(lambda: line in logfile.read_text(), 20, "the line in the log")
    assert "Traceback" not in logfile.read_text()


# systemd socket activation

ACTIVATE = """
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[2], sys.argv[2:])
"""
"""
Does what systemd does before it runs the command: the socket on
descriptor 3, C{LISTEN_PID} set to the process that runs the command.
"""


def activated(
    listener: socket.socket, scratchDir: Path, names: str | None, *arguments: str
) -> subprocess.Popen[bytes]:
    """
    Start the proxy with C{listener} passed the way systemd passes it: on
    descriptor 3, with C{LISTEN_FDS=1}, C{LISTEN_PID} the proxy's process
    and C{LISTEN_FDNAMES} (unless C{names} is C{None}).
    """
    env = sourceEnvironment(LISTEN_FDS="1")
    if names is not None:
        env["LISTEN_FDNAMES"] = names
    command = [*ENTRY_POINTS["connectproxy"], "--log-format", "text", *arguments]
    return subprocess.Popen(
        [sys.executable, "-c", ACTIVATE, str(listener.fileno()), *command],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=scratchDir,
        pass_fds=[listener.fileno()],
    )


def test_systemdSocket(scratchDir: Path, origin: OriginFactory) -> None:
    """
    With LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES set, a systemd: listener
    serves on the socket passed, and says where; --check-config shows it.
    """
    echo = origin("echo")
    allow = ["--allow-port", str(echo.port), "--allow-network", "127.0.0.0/8"]
    listen = ["--listen", "systemd:domain=INET:name=proxy"]
    with socket.socket() as listener:
        listener.bind((LOCAL, 0))
        listener.listen()
        port = listener.getsockname()[1]
        check = activated(listener, scratchDir, "proxy", *listen, "--check-config")
        checked, _ = check.communicate(timeout=60)
        process = activated(listener, scratchDir, "proxy", *listen, *allow)
    assert check.returncode == 0, checked
    assert checked.decode().splitlines()[0] == (
        "listen systemd:domain=INET:name=proxy -> systemd socket (fd 3) (plain HTTP)"
    )
    assert process.stdout is not None
    output = LineCollector(process.stdout, "systemd-proxy")
    try:
        output.waitFor(
            lambda line: f"connectproxy listening on 127.0.0.1:{port}" in line,
            20,
            "the listening line",
        )
        sock, _ = openTunnel(port, echo.port)
        with sock:
            sock.sendall(b"activated")
            assert readExactly(sock, 9) == b"activated"
    finally:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)
        output.join(STOP_TIMEOUT)
        process.stdout.close()


def test_systemdWithoutNames(scratchDir: Path) -> None:
    """
    With LISTEN_FDS but no LISTEN_FDNAMES (which Twisted needs), the proxy
    says so instead of failing with an IndexError.
    """
    with socket.socket() as listener:
        listener.bind((LOCAL, 0))
        process = activated(
            listener, scratchDir, None, "--listen", "systemd:domain=INET:index=0"
        )
    out, _ = process.communicate(timeout=60)
    text = out.decode()
    assert process.returncode == 1, text
    assert "LISTEN_FDS=1 but LISTEN_FDNAMES is not set" in text
    assert "IndexError" not in text


@pytest.mark.parametrize("entry", ["connectproxy", "python -m connectproxy"])
def test_runs(
    processes: list[ChildProcess[Any]],
    scratchDir: Path,
    origin: OriginFactory,
    entry: str,
) -> None:
    """
    C{connectproxy} and C{python -m connectproxy} run the proxy, taking
    twist's logging options among the proxy's, and stop on SIGTERM.
    """
    echo = origin("echo")
    argv = [*ENTRY_POINTS[entry], "--listen", LISTEN_ANY_PORT, "--log-format"]
    argv += ["json", *LOOPBACK_ORIGINS, "--log-file", "-"]
    proxy = ProxyProcess(argv, cwd=scratchDir)
    processes.append(proxy)
    assert proxy.listening[0]["description"] == LISTEN_ANY_PORT
    sock, _ = openTunnel(proxy.port, echo.port)
    with sock:
        sock.sendall(b"ping")
        assert readExactly(sock, 4) == b"ping"
    proxy.waitForNamed("tunnel_close", port=echo.port)
    assert proxy.stop() in (0, -signal.SIGTERM), proxy.describe()


def test_twistdLogsOneLinePerTunnel(
    processes: list[ChildProcess[Any]], scratchDir: Path, origin: OriginFactory
) -> None:
    """
    Under C{twistd}, which shows every log level, each tunnel is one log
    line (C{tunnel closed}, no debug C{tunnel opened}), and nothing else is
    logged per connection; the listener's C{starting on} line comes once.
    """
    echo = origin("echo")
    argv = [*FOREGROUND["twistd -n connectproxy"], "--listen", LISTEN_ANY_PORT]
    proxy = ChildProcess(
        [*argv, *LOOPBACK_ORIGINS], LineCollector, sourceEnvironment(), scratchDir
    )
    processes.append(proxy)
    listening = proxy.output.waitFor(
        lambda line: "connectproxy listening on" in line, 20, "the listening line"
    )
    port = int(listening.rsplit(":", 1)[1])
    for _ in range(3):
        sock, _ = openTunnel(port, echo.port)
        with sock:
            sock.sendall(b"ping")
            assert readExactly(sock, 4) == b"ping"

    def allClosed(line: str) -> bool:
        return sum("tunnel closed" in seen for seen in proxy.output.records) >= 3

    proxy.output.waitFor(allClosed, 20, "3 tunnel closed lines")
    proxy.stop()
    lines = proxy.output.records
    served = [line for line in lines if f"-> {LOCAL}:{echo.port}" in line]
    assert len(served) == 3 and all("tunnel closed" in line for line in served)
    assert not any("tunnel opened" in line for line in lines), proxy.describe()
    assert not any("Starting factory" in line for line in lines), proxy.describe()
    assert len([line for line in lines if " starting on " in line]) == 1
