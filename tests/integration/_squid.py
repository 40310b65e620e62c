# -*- test-case-name: tests.integration.test_parents -*-
"""
squid (the Debian package) as a real parent proxy for the tests, and as a
proxy the benchmark compares with: L{writeSquidConfig} writes a
configuration for a temporary directory, L{SquidProcess} starts squid on
loopback (127.0.0.1, or ::1) in the foreground and stops it by PID.

Started by root, squid drops to an unprivileged user (C{proxy} on Debian):
its directory, configuration, logs and password file must be readable by
that user, and the directory writable (L{giveToSquid}).

Like the rest of this harness, this module is free of pytest: the benchmark
imports it.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import shutil
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.integration._output import LineCollector
from tests.integration._processes import ChildProcess, cleanEnvironment

__all__ = [
    "BASIC_AUTH_HELPER",
    "SquidProcess",
    "bracketed",
    "freePort",
    "giveToSquid",
    "housekeeping",
    "htpasswdFile",
    "squidExecutable",
    "squidUser",
    "writeConfigLines",
    "writeSquidConfig",
]

#: squid's helper that checks Basic credentials against an htpasswd file.
BASIC_AUTH_HELPER = Path("/usr/lib/squid/basic_ncsa_auth")

#: Seconds squid may take to start listening.
START_TIMEOUT = 30.0

#: The address squid listens on unless told otherwise.
LOCAL = "127.0.0.1"


def bracketed(host: str) -> str:
    """
    An address as C{http_port} and URLs write it: an IPv6 one in brackets.
    """
    return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host


def freePort(host: str = LOCAL) -> int:
    """
    A port on C{host} that nothing listens on now (squid cannot listen on
    port 0 and report the port).

    @param host: A loopback address, IPv4 or IPv6.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def squidExecutable() -> str | None:
    """
    Where squid is (on C{PATH} or in C{/usr/sbin}), or C{None}.
    """
    return shutil.which("squid") or shutil.which("squid", path="/usr/sbin:/sbin")


def squidUser() -> str | None:
    """
    The user squid runs as when started by root, or C{None} when not root.
    """
    if os.geteuid() != 0:
        return None
    for user in ("proxy", "squid", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return user
    return None


def giveToSquid(path: Path) -> None:
    """
    Give a file or directory to the user squid runs as (when we are root),
    readable by everyone and, for a directory, writable by squid.
    """
    user = squidUser()
    if user is None:
        return
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(0o755 if path.is_dir() else 0o644)


def housekeeping(directory: Path, hostname: str = "squid.invalid") -> list[str]:
    """
    The configuration lines that keep squid's files (logs, PID file, core
    files) in C{directory}, cache nothing, start no helper it does not need,
    stop at once, and run as the user L{squidUser} names when we are root.

    @param directory: The directory (given to squid's user already).
    @param hostname: squid's C{visible_hostname}.
    @return: The lines.
    """
    user = squidUser()
    return [
        "cache deny all",
        "cache_mem 8 MB",
        f"access_log stdio:{directory}/access.log",
        f"cache_log {directory}/cache.log",
        f"pid_filename {directory}/squid.pid",
        f"coredump_dir {directory}",
        "netdb_filename none",
        "pinger_enable off",
        f"visible_hostname {hostname}",
        "shutdown_lifetime 0 seconds",
        "logfile_rotate 0",
        *([f"cache_effective_user {user}"] if user else []),
    ]


def writeSquidConfig(
    directory: Path,
    port: int,
    access: Sequence[str],
    extra: Sequence[str] = (),
    hostname: str = "squid.invalid",
    host: str = LOCAL,
) -> Path:
    """
    Write a squid configuration that listens on C{host:port}, caches
    nothing and keeps its logs, PID file and core files in C{directory}.

    @param directory: The directory (given to squid's user already).
    @param port: The port to listen on.
    @param access: The C{acl}, C{auth_param} and C{http_access} lines.
    @param extra: More lines.
    @param hostname: squid's C{visible_hostname}.
    @param host: The address to listen on: C{127.0.0.1}, C{::1} (written
        C{http_port [::1]:PORT}) or another loopback address.
    @return: The configuration file.
    """
    lines = [f"http_port {bracketed(host)}:{port}", *access, *extra]
    return writeConfigLines(directory, lines + housekeeping(directory, hostname))


def writeConfigLines(directory: Path, lines: Sequence[str]) -> Path:
    """
    Write C{squid.conf} in C{directory}, readable by squid's user.

    @param directory: The directory.
    @param lines: The whole configuration.
    @return: The file.
    """
    config = directory / "squid.conf"
    config.write_text("\n".join(lines) + "\n")
    config.chmod(0o644)
    return config


def htpasswdFile(path: Path, users: dict[str, str]) -> Path:
    """
    Write an htpasswd file (bcrypt entries, which squid's helper reads)
    with Apache's C{htpasswd}, readable by squid.

    @param path: Where.
    @param users: User names and passwords.
    @return: C{path}.
    """
    path.write_text("")
    for user, password in users.items():
        subprocess.run(
            ["htpasswd", "-b", "-B", str(path), user, password],
            check=True,
            capture_output=True,
            timeout=30,
        )
    giveToSquid(path)
    return path


class SquidProcess(ChildProcess[str]):
    """
    squid in the foreground (C{-N}), with its cache log on stdout (C{-d 1}).

    @ivar host: The address it listens on (C{127.0.0.1}, C{::1}, ...).
    @ivar port: The port it listens on.
    @ivar directory: Its directory.
    """

    def __init__(
        self,
        directory: Path,
        access: Sequence[str] = (),
        extra: Sequence[str] = (),
        host: str = LOCAL,
        config: Path | None = None,
        port: int | None = None,
    ) -> None:
        """
        Write the configuration in C{directory} (unless given), start squid
        and wait until it says it accepts connections.

        @param directory: An empty directory.
        @param access: The C{acl}, C{auth_param} and C{http_access} lines.
        @param extra: More configuration lines.
        @param host: The loopback address it listens on.
        @param config: A configuration written already (L{writeConfigLines})
            that listens on C{host:port}; C{access} and C{extra} are then
            not used.
        @param port: The port C{config} listens on; without C{config}, a
            free port is chosen.
        @raise AssertionError: When squid is not installed, or does not
            start within L{START_TIMEOUT}.
        """
        executable = squidExecutable()
        assert executable is not None, "squid is not installed"
        assert (config is None) is (port is None), "give a config with its port"
        giveToSquid(directory)
        self.directory = directory
        self.host = host
        # squid cannot listen on port 0 and report the port.
        self.port = freePort(host) if port is None else port
        if config is None:
            config = writeSquidConfig(directory, self.port, access, extra, host=host)
        super().__init__(
            [executable, "-N", "-d", "1", "-f", str(config)],
            LineCollector,
            cleanEnvironment(),
            directory,
        )
        try:
            self.output.waitFor(
                lambda line: "Accepting HTTP Socket connections" in line,
                START_TIMEOUT,
                "squid to accept connections",
            )
        except BaseException:
            ChildProcess.stop(self)
            raise

    @property
    def address(self) -> str:
        """
        Where it listens, as a URL and the proxy's log write it:
        C{127.0.0.1:PORT} or C{[::1]:PORT}.
        """
        return f"{bracketed(self.host)}:{self.port}"

    def accessLog(self) -> str:
        """
        squid's access log so far (each line is written when a request or a
        tunnel ends).
        """
        try:
            return (self.directory / "access.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""
