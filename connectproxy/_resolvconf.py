# -*- test-case-name: tests.test_dnscache -*-
"""
What the machine's resolver configuration says, for C{--resolver}: the
hosts file (L{HostsFile}), the query timeouts of C{resolv.conf}
(L{queryTimeouts}), and which resolver C{--resolver auto} chooses from
C{nsswitch.conf} and C{resolv.conf} (L{chooseResolver}).
"""

from __future__ import annotations

import os
import socket

from twisted.internet.interfaces import IReactorTime

__all__ = [
    "DEFAULT_QUERY_ATTEMPTS",
    "DEFAULT_QUERY_TIMEOUT",
    "HOSTS_CHECK_INTERVAL",
    "HostsFile",
    "chooseResolver",
    "queryTimeouts",
]

#: How often, at most, the hosts file is checked for changes (seconds).
HOSTS_CHECK_INTERVAL = 1.0


class HostsFile:
    """
    The addresses C{/etc/hosts} gives names, read again when the file
    changes (its modification time or size, checked at most once per
    L{HOSTS_CHECK_INTERVAL}), as the system resolver reads it before asking
    the DNS.
    """

    def __init__(self, clock: IReactorTime, path: str = "/etc/hosts") -> None:
        self._clock = clock
        self._path = path
        self._stamp: tuple[float, int] | None = None
        self._checked = float("-inf")
        self._names: dict[str, tuple[list[str], list[str]]] = {}

    def lookup(self, name: str) -> tuple[list[str], list[str]] | None:
        """
        @param name: A host name, lower-case, without a trailing dot.
        @return: Its IPv6 and its IPv4 addresses, or C{None} when the file
            does not name it.
        """
        now = self._clock.seconds()
        if now - self._checked >= HOSTS_CHECK_INTERVAL:
            self._checked = now
            self._reload()
        return self._names.get(name)

    def _reload(self) -> None:
        try:
            status = os.stat(self._path)
        except OSError:
            self._stamp, self._names = None, {}
            return
        stamp = (status.st_mtime, status.st_size)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        names: dict[str, tuple[list[str], list[str]]] = {}
        try:
            with open(self._path, encoding="utf-8", errors="replace") as hosts:
                lines = hosts.readlines()
        except OSError:
            lines = []
        for line in lines:
            fields = line.split("#", 1)[0].split()
            if len(fields) < 2:
                continue
            address = fields[0].split("%", 1)[0]
            for family, index in ((socket.AF_INET6, 0), (socket.AF_INET, 1)):
                try:
                    socket.inet_pton(family, address)
                except OSError:
                    continue
                for alias in fields[1:]:
                    entry = names.setdefault(alias.lower().rstrip("."), ([], []))
                    if address not in entry[index]:
                        entry[index].append(address)
                break
        self._names = names


#: C{resolv.conf}'s default C{timeout} (seconds) and C{attempts}, as glibc's.
DEFAULT_QUERY_TIMEOUT = 5.0
DEFAULT_QUERY_ATTEMPTS = 2


def queryTimeouts(resolvConf: str, deadline: float | None) -> tuple[float, ...]:
    """
    How long each round of a DNS query waits for an answer, in seconds:
    C{resolvConf}'s C{options timeout:N} (5) for each of its C{attempts:N}
    (2), as the system resolver does, cut so that the rounds end within
    C{deadline} (the connect deadline), when given.

    @return: At least one positive timeout.
    """
    timeout, attempts = DEFAULT_QUERY_TIMEOUT, DEFAULT_QUERY_ATTEMPTS
    try:
        with open(resolvConf, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        lines = []
    for line in lines:
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if not fields or fields[0] != "options":
            continue
        for option in fields[1:]:
            name, _, value = option.partition(":")
            try:
                if name == "timeout":
                    timeout = float(min(max(int(value), 1), 30))
                elif name == "attempts":
                    attempts = min(max(int(value), 1), 5)
            except ValueError:
                pass
    timeouts: list[float] = []
    left = float("inf") if deadline is None else deadline
    for _ in range(attempts):
        if left <= 0:
            break
        timeouts.append(min(timeout, left))
        left -= timeout
    return tuple(timeouts) or (timeout,)


def _hostsSources(nsswitch: str) -> list[str] | None:
    """
    The sources of the C{hosts:} line of C{nsswitch} (C{[...]} actions
    included, as words), C{None} when the file does not exist, and an empty
    list when it has no such line.
    """
    try:
        with open(nsswitch, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except FileNotFoundError:
        return None
    sources: list[str] = []
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if fields and fields[0] == "hosts:":
            sources = fields[1:]
    return sources


def _ndots(resolvConf: str) -> int:
    """
    The C{ndots} of C{resolvConf}'s last C{options} line that sets it (1,
    the default, when none does or the file cannot be read).
    """
    ndots = 1
    try:
        with open(resolvConf, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return ndots
    for line in lines:
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if not fields or fields[0] != "options":
            continue
        for option in fields[1:]:
            if option.startswith("ndots:"):
                try:
                    ndots = int(option[len("ndots:") :])
                except ValueError:
                    pass
    return ndots


def chooseResolver(
    nsswitch: str = "/etc/nsswitch.conf", resolvConf: str = "/etc/resolv.conf"
) -> tuple[str, str]:
    """
    What C{--resolver auto} resolves with: C{"dns"} only where it gives the
    answers the system resolver would, that is when C{nsswitch} does not
    exist or its C{hosts:} line is exactly C{files dns} or C{dns files},
    and C{resolvConf} sets no C{ndots} above 1; C{"system"} otherwise (LDAP,
    mDNS, sssd or another source, C{[...]} actions, or the search rules of
    C{ndots:5} in Kubernetes, which the DNS client does not follow).

    @param nsswitch: The name service switch configuration file.
    @param resolvConf: The resolver configuration file.
    @return: C{"dns"} or C{"system"}, and why, for the log and
        C{--check-config}.
    """
    sources = _hostsSources(nsswitch)
    if sources is not None and sources not in (["files", "dns"], ["dns", "files"]):
        line = " ".join(sources) if sources else "(none)"
        return "system", f"{nsswitch} has hosts: {line}, not files dns"
    ndots = _ndots(resolvConf)
    if ndots > 1:
        return "system", f"{resolvConf} sets ndots:{ndots}"
    if sources is None:
        return "dns", f"no {nsswitch}, and {resolvConf} sets no ndots above 1"
    return "dns", (
        f"{nsswitch} has hosts: {' '.join(sources)}, and {resolvConf} sets "
        "no ndots above 1"
    )
