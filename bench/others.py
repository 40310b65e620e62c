# -*- test-case-name: tests.test_bench,tests.integration.test_bench -*-
"""
The other proxies the benchmark compares connectproxy with, where they are
installed: squid and tinyproxy (Debian packages), proxy.py and pproxy (in a
virtual environment of their own that C{--install-others} makes), and the
naive Twisted relay of L{bench.naive}.

Each gets its own configuration in a temporary directory, listens on
127.0.0.1 only, allows C{CONNECT} from loopback clients to any port, and runs
in the foreground as a child of the benchmark, never as a system service.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.launch import ExternalProxy, commandVersion
from tests.integration._processes import REPO_ROOT
from tests.integration._squid import squidUser, writeSquidConfig

OTHERS_VENV = REPO_ROOT / "bench" / ".others-venv"
"""
The virtual environment C{--install-others} makes for proxy.py and pproxy.
"""

OTHERS_PACKAGES = ("proxy.py", "pproxy")


def _executable(name: str) -> str | None:
    """
    Find a program on C{PATH}, in C{/usr/sbin} (squid's home) or in
    L{OTHERS_VENV}.
    """
    venvBin = OTHERS_VENV / "bin" / name
    if venvBin.exists():
        return str(venvBin)
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def _giveTo(user: str) -> Callable[[Path], None]:
    """
    Make a function that gives a directory to C{user} when we are root, for
    a server that drops its privileges to that user after starting.
    """

    def give(directory: Path) -> None:
        if os.geteuid() != 0:
            return
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            return
        os.chown(directory, entry.pw_uid, entry.pw_gid)
        directory.chmod(0o755)

    return give


def _squidArgv(
    exe: str, limit: int, nameserver: str | None
) -> Callable[[int, Path], list[str]]:
    """
    Make the function that writes squid's configuration and command line;
    with C{nameserver}, squid's own DNS client asks only that server (on
    port 53).
    """
    dns = [f"dns_nameservers {nameserver}"] if nameserver else []

    def argv(port: int, directory: Path) -> list[str]:
        config = writeSquidConfig(
            directory,
            port,
            [
                "acl benchclients src 127.0.0.0/8",
                "http_access allow benchclients",
                "http_access deny all",
            ],
            [f"max_filedescriptors {limit}", *dns],
            hostname="bench.invalid",
        )
        return [exe, "-N", "-f", str(config)]

    return argv


def _tinyproxyUser() -> str | None:
    """
    The user tinyproxy drops to when started by root.
    """
    if os.geteuid() != 0:
        return None
    for user in ("tinyproxy", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return user
    return None


def _tinyproxyArgv(exe: str, limit: int) -> Callable[[int, Path], list[str]]:
    """
    Make the function that writes tinyproxy's configuration and command
    line. No C{ConnectPort} line means C{CONNECT} to any port.
    """

    def argv(port: int, directory: Path) -> list[str]:
        user = _tinyproxyUser()
        lines = [
            f"Port {port}",
            "Listen 127.0.0.1",
            "Timeout 600",
            f"MaxClients {max(100, limit // 2)}",
            "Allow 127.0.0.0/8",
            f'LogFile "{directory}/tinyproxy.log"',
            "LogLevel Connect",
            f'PidFile "{directory}/tinyproxy.pid"',
            "DisableViaHeader Yes",
            *([f"User {user}", f"Group {user}"] if user else []),
        ]
        config = directory / "tinyproxy.conf"
        config.write_text("\n".join(lines) + "\n")
        config.chmod(0o644)
        return [exe, "-d", "-c", str(config)]

    return argv


@dataclass(frozen=True)
class Other:
    """
    One other proxy the benchmark knows how to run.

    @ivar name: Its name in the report and in C{--proxies}.
    @ivar find: Returns its executable, or L{None} when not installed.
    @ivar start: Starts it, given the executable, the descriptor limit and
        the address of a DNS server (or L{None}).
    @ivar resolvesWith: Whether it can be told to resolve names with the
        benchmark's DNS server (the others would ask the machine's).
    """

    name: str
    find: Callable[[], str | None]
    start: Callable[[str, int, str | None], ExternalProxy]
    resolvesWith: bool = False


def _startSquid(exe: str, limit: int, nameserver: str | None) -> ExternalProxy:
    user = squidUser()
    return ExternalProxy(
        "squid",
        _squidArgv(exe, limit, nameserver),
        commandVersion([exe, "-v"]),
        _giveTo(user) if user else lambda directory: None,
        ("cache.log",),
    )


def _startTinyproxy(exe: str, limit: int, nameserver: str | None) -> ExternalProxy:
    user = _tinyproxyUser()
    return ExternalProxy(
        "tinyproxy",
        _tinyproxyArgv(exe, limit),
        commandVersion([exe, "-v"]),
        _giveTo(user) if user else lambda directory: None,
        ("tinyproxy.log",),
    )


def _startProxyPy(exe: str, limit: int, nameserver: str | None) -> ExternalProxy:
    return ExternalProxy(
        "proxy.py",
        lambda port, directory: [
            exe,
            "--hostname",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "WARNING",
            # Its default drops tunnels idle for 10 s; the others keep them
            # for 10 minutes.
            "--timeout",
            "600",
        ],
        commandVersion([exe, "--version"]),
    )


def _startPproxy(exe: str, limit: int, nameserver: str | None) -> ExternalProxy:
    return ExternalProxy(
        "pproxy",
        lambda port, directory: [exe, "-l", f"http://127.0.0.1:{port}"],
        commandVersion([exe, "--version"]),
    )


def _startNaive(exe: str, limit: int, nameserver: str | None) -> ExternalProxy:
    import twisted

    return ExternalProxy(
        "naive",
        lambda port, directory: [exe, "-m", "bench.naive", "--port", str(port)],
        f"Twisted {twisted.__version__}",
    )


OTHERS = (
    Other("squid", lambda: _executable("squid"), _startSquid, resolvesWith=True),
    Other("tinyproxy", lambda: _executable("tinyproxy"), _startTinyproxy),
    Other("proxy.py", lambda: _executable("proxy"), _startProxyPy),
    Other("pproxy", lambda: _executable("pproxy"), _startPproxy),
    Other("naive", lambda: sys.executable, _startNaive),
)
"""
Every other proxy, in the order of the report.
"""


def installOthers() -> None:
    """
    Make L{OTHERS_VENV} and install proxy.py and pproxy into it with pip.

    @raise subprocess.CalledProcessError: If the venv or pip fails.
    """
    python = OTHERS_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(OTHERS_VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *OTHERS_PACKAGES], check=True
    )
