# -*- test-case-name: tests.integration.test_systemd -*-
"""
The proxy under systemd, played by the test: a listening socket passed the
way socket activation passes it (descriptor 3, C{LISTEN_FDS},
C{LISTEN_PID} naming the proxy's own process, C{LISTEN_FDNAMES}), and a
notification socket named in C{NOTIFY_SOCKET} that receives C{READY=1},
C{RELOADING=1} and C{STOPPING=1}.  Also: the shipped unit files pass
C{systemd-analyze verify}.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration._output import LineCollector
from tests.integration._processes import (
    BIN_DIR,
    LOOPBACK_ORIGINS,
    REPO_ROOT,
    ChildProcess,
    OriginFactory,
    OriginProcess,
    sourceEnvironment,
)
from tests.integration._sockets import IPV4, IPV6, Loopback, openTunnel, readExactly

pytestmark = pytest.mark.integration

#: Runs the rest of its command line with the descriptor named by its first
#: argument as descriptor 3 and LISTEN_PID set to its own PID, which the
#: program it executes keeps: what systemd does between fork and exec.
ACTIVATE = (
    "import os, sys\n"
    "fd = int(sys.argv[1])\n"
    "if fd != 3:\n"
    "    os.dup2(fd, 3)\n"
    "    os.close(fd)\n"
    "os.environ['LISTEN_PID'] = str(os.getpid())\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)

UNITS = REPO_ROOT / "docs" / "examples"

RUNNERS = {
    "twist": [str(BIN_DIR / "twist"), "--log-format", "text"],
    "twistd": [str(BIN_DIR / "twistd"), "-n", "--pidfile=", "-l", "-"],
}


@pytest.fixture
def echoOrigin(origin: OriginFactory, family: Loopback) -> OriginProcess:
    """
    A plain TCP echo origin, on the loopback address of C{family}.
    """
    return origin("echo", host=family.host)


@pytest.fixture
def notifySocket(scratchDir: Path) -> Iterator[socket.socket]:
    """
    systemd's notification socket: a datagram socket bound to a path.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(scratchDir / "notify"))
        sock.settimeout(20)
        yield sock


@pytest.fixture
def activationSocket(family: Loopback) -> Iterator[socket.socket]:
    """
    The listening socket systemd would create from a C{.socket} unit
    (C{ListenStream=127.0.0.1:PORT}, or C{[::1]:PORT}).
    """
    with socket.socket(family.family, socket.SOCK_STREAM) as sock:
        sock.bind((family.host, 0))
        sock.listen(16)
        yield sock


def message(sock: socket.socket) -> dict[str, str]:
    """
    Receive one notification and split its assignments.
    """
    try:
        data = sock.recv(4096)
    except TimeoutError:
        raise AssertionError(f"no notification within {sock.gettimeout()}s") from None
    return dict(line.split("=", 1) for line in data.decode("utf-8").split("\n"))


def monotonicMicroseconds() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


@pytest.mark.parametrize(
    "runner, selector, family",
    [
        ("twist", "index=0", IPV4),
        ("twist", "name=proxy", IPV4),
        ("twistd", "index=0", IPV4),
        ("twistd", "name=proxy", IPV4),
        ("twist", "name=proxy", IPV6),
    ],
    ids=[
        "twist-index",
        "twist-name",
        "twistd-index",
        "twistd-name",
        "twist-name-INET6",
    ],
    indirect=["family"],
)
def test_socketActivationAndNotifications(
    processes: list[ChildProcess[Any]],
    scratchDir: Path,
    notifySocket: socket.socket,
    activationSocket: socket.socket,
    echoOrigin: OriginProcess,
    runner: str,
    selector: str,
    family: Loopback,
) -> None:
    """
    With a socket passed by systemd (by index or by name; IPv4, or IPv6
    with C{domain=INET6}) and C{NOTIFY_SOCKET} set, the proxy says
    C{READY=1} once it listens on that socket, tunnels through it, frames a
    C{SIGHUP} reload with C{RELOADING=1} (and the time) and C{READY=1},
    and says C{STOPPING=1} on C{SIGTERM}.
    """
    fd = activationSocket.fileno()
    domain = "INET6" if family == IPV6 else "INET"
    argv = [sys.executable, "-c", ACTIVATE, str(fd), *RUNNERS[runner]]
    argv += ["connectproxy", "--listen", f"systemd:domain={domain}:{selector}"]
    argv += LOOPBACK_ORIGINS
    env = sourceEnvironment(
        LISTEN_FDS="1",
        LISTEN_FDNAMES="proxy",
        NOTIFY_SOCKET=notifySocket.getsockname(),
    )
    proxy = ChildProcess(argv, LineCollector, env, scratchDir, passFds=[fd])
    processes.append(proxy)
    port = activationSocket.getsockname()[1]
    activationSocket.close()  # The proxy has its own copy.

    ready = message(notifySocket)
    assert ready["READY"] == "1"
    assert ready["STATUS"] == f"listening on {family.address(port)}"

    sock, rest = openTunnel(
        port, echoOrigin.port, echoOrigin.host, proxyHost=family.host
    )
    with sock:
        assert rest == b""
        sock.sendall(b"socket activation")
        assert readExactly(sock, 17) == b"socket activation"

    before = monotonicMicroseconds()
    proxy.process.send_signal(signal.SIGHUP)
    reloading = message(notifySocket)
    after = monotonicMicroseconds()
    assert reloading["RELOADING"] == "1"
    assert before <= int(reloading["MONOTONIC_USEC"]) <= after
    assert message(notifySocket) == ready

    proxy.process.send_signal(signal.SIGTERM)
    assert message(notifySocket)["STOPPING"] == "1"
    assert proxy.stop() in (0, -signal.SIGTERM), proxy.describe()
    listening = f"connectproxy listening on {family.address(port)}"
    assert listening in proxy.output.text()


@pytest.mark.parametrize("family", [IPV6], ids=["ipv6"], indirect=True)
def test_socketOfAnotherFamily(
    processes: list[ChildProcess[Any]],
    scratchDir: Path,
    activationSocket: socket.socket,
) -> None:
    """
    An IPv6 socket from systemd (C{ListenStream=[::1]:PORT}, or
    C{ListenStream=PORT}) under C{systemd:domain=INET} stops the proxy
    before it listens, with a message naming the C{domain=} to write
    (Twisted would adopt it and refuse every client).
    """
    fd = activationSocket.fileno()
    argv = [sys.executable, "-c", ACTIVATE, str(fd), *RUNNERS["twist"]]
    argv += ["connectproxy", "--listen", "systemd:domain=INET:name=proxy"]
    env = sourceEnvironment(LISTEN_FDS="1", LISTEN_FDNAMES="proxy")
    proxy = ChildProcess(argv, LineCollector, env, scratchDir, passFds=[fd])
    processes.append(proxy)
    port = activationSocket.getsockname()[1]
    activationSocket.close()
    assert proxy.process.wait(60) != 0, proxy.describe()
    proxy.output.join(10)
    assert (
        "--listen 'systemd:domain=INET:name=proxy' is not a valid listener: "
        f"systemd passed an IPv6 socket ([::1]:{port}), not the IPv4 one "
        "domain=INET asks for: write domain=INET6"
    ) in proxy.output.text(), proxy.describe()


def test_unitFiles(scratchDir: Path) -> None:
    """
    The shipped C{.service} and C{.socket} units pass C{systemd-analyze
    verify} (with C{ExecStart=} pointing at this installation's C{twist});
    where that tool is missing, they have the keys the deployment guide
    relies on.
    """
    service = (UNITS / "connectproxy.service").read_text(encoding="utf-8")
    socketUnit = (UNITS / "connectproxy.socket").read_text(encoding="utf-8")
    assert "ExecStart=/opt/connectproxy/bin/twist " in service
    analyze = shutil.which("systemd-analyze")
    if analyze is not None:
        local = service.replace("/opt/connectproxy/bin/twist", str(BIN_DIR / "twist"))
        (scratchDir / "connectproxy.service").write_text(local, encoding="utf-8")
        (scratchDir / "connectproxy.socket").write_text(socketUnit, encoding="utf-8")
        result = subprocess.run(
            [analyze, "verify", "connectproxy.service", "connectproxy.socket"],
            cwd=scratchDir,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (result.returncode, result.stdout + result.stderr) == (0, "")
    serviceKeys = unitKeys(service)
    assert serviceKeys["Service"]["Type"] == ["notify"]
    assert serviceKeys["Service"]["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    for key, value in [
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("LoadCredential", "htpasswd:/etc/connectproxy/htpasswd"),
    ]:
        assert serviceKeys["Service"][key] == [value], key
    execStart = serviceKeys["Service"]["ExecStart"][0]
    assert "--listen systemd:domain=INET:name=proxy" in execStart
    assert "--auth htpasswd:%d/htpasswd" in execStart
    socketKeys = unitKeys(socketUnit)
    assert socketKeys["Socket"]["FileDescriptorName"] == ["proxy"]
    assert socketKeys["Socket"]["ListenStream"] == ["127.0.0.1:3128"]


def unitKeys(text: str) -> dict[str, dict[str, list[str]]]:
    """
    Parse a unit file: sections of keys, each with its values in order;
    comments skipped and continuation lines joined.
    """
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    logical = re.sub(r"\\\n\s*", " ", text)
    for line in logical.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            assert line.endswith("]"), line
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and "=" in line, line
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections
