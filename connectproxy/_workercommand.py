# -*- test-case-name: tests.test_workers -*-
"""
How the supervisor of C{--workers} starts a worker (L{WorkerCommand}): the
proxy's options as the supervisor got them, run by C{twist} (as C{python -m
connectproxy._worker}) on the same kind of reactor, with the listening
sockets, a pipe for its notifications and the marker that makes it a
worker; and where it logs (L{LogRoute}): the supervisor's own log file,
written by the worker itself, or a pipe the supervisor reads.
"""

from __future__ import annotations

import os
import site
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.application.reactors import getReactorTypes

from ._listenerproblems import startingEnvironment
from ._sharedports import SharedPort
from ._worker import MARKER, WorkerMarker

__all__ = ["Launch", "LogRoute", "WorkerCommand", "logRoute", "reactorName"]

#: The supervisor's end of each worker's standard input: it closes when
#: the supervisor exits, which stops the worker.
_STDIN = 0


def reactorName(reactor: Any) -> str | None:
    """
    The C{--reactor} name of a reactor, for workers to run the same kind.

    @return: The short name, or C{None} when none names its module.
    """
    module = type(reactor).__module__
    for installable in getReactorTypes():
        if getattr(installable, "moduleName", None) == module:
            return str(installable.shortName)
    return None


@dataclass(frozen=True, slots=True)
class LogRoute:
    """
    Where the workers write their log themselves: the supervisor's own log
    file, in its format.  Each worker adds its number and process ID to
    every event, so that its lines are the ones the supervisor would have
    written for it, without the supervisor reading and writing each event
    again.

    @ivar format: C{json} or C{text}.
    @ivar file: C{-} (standard output), C{+} (standard error), or the path
        of a file (opened for appending).
    @ivar level: The least level of the runner's own filter (C{twist
        --log-level}).
    """

    format: str
    file: str
    level: str = "debug"

    @property
    def arguments(self) -> list[str]:
        """
        The runner options that log there.
        """
        return [
            "--log-level",
            self.level,
            "--log-format",
            self.format,
            "--log-file",
            self.file,
        ]


def logRoute(runner: Any, level: str = "debug") -> LogRoute | None:
    """
    Where workers can write the log themselves, if the supervisor's runner
    logs where they can too: C{twist} (and the C{connectproxy} command) to
    standard output, standard error or a file, in text or JSON; C{twistd
    -n} to standard output.  Otherwise (a file C{twistd} rotates, syslog, a
    C{--logger}, a C{.tac} file) the supervisor writes their events
    (L{connectproxy._workerlog}).

    The workers filter the log at the operator's C{--log-level}, but
    never above C{info} (the access log keeps its C{info} events whatever
    the level; the worker's own level filter drops the rest once it runs)
    nor below the runner's own level.

    @param runner: The runner's options: the C{parent} of the proxy's
        L{Options <connectproxy.tap.Options>}, or C{None}.
    @param level: The proxy's C{--log-level}, one of
        L{LEVELS <connectproxy._loglevel.LEVELS>}.
    @return: The route, or C{None} for the supervisor to write them.
    """
    from twisted.application.twist._options import TwistOptions
    from twisted.logger import jsonFileLogObserver, textFileLogObserver

    if isinstance(runner, TwistOptions):
        factory = runner.get("fileLogObserverFactory")
        formats = {jsonFileLogObserver: "json", textFileLogObserver: "text"}
        where = _logFile(runner.get("logFile"))
        own = getattr(runner.get("logLevel"), "name", None)
        if factory in formats and where is not None and own is not None:
            return LogRoute(formats[factory], where, _routeLevel(own, level))
        return None
    if not isinstance(runner, Mapping) and not hasattr(runner, "get"):
        return None
    try:
        toStdout = (
            runner.get("nodaemon")
            and runner.get("logfile") in (None, "", "-")
            and not runner.get("syslog")
            and runner.get("logger") is None
        )
    except (KeyError, TypeError):
        return None
    return LogRoute("text", "-", _routeLevel("debug", level)) if toStdout else None


def _routeLevel(runner: str, proxy: str) -> str:
    """
    The level the workers' runner filters at: the proxy's C{--log-level},
    at most C{info}, at least the supervisor's runner's level.
    """
    from ._loglevel import LEVELS

    rank = {name: index for index, name in enumerate(LEVELS)}
    wanted = min(rank.get(proxy, 0), rank["info"])
    return LEVELS[max(wanted, rank.get(runner, 0))]


def _logFile(logFile: object) -> str | None:
    """
    How a worker names the log file the runner opened: C{-}, C{+} or an
    absolute path; C{None} for one it could not open the same.
    """
    try:
        fileno = logFile.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return None
    if fileno == 1:
        return "-"
    if fileno == 2:
        return "+"
    name = getattr(logFile, "name", None)
    if isinstance(name, str) and os.path.isfile(name):
        return os.path.abspath(name)
    return None


@dataclass(frozen=True, slots=True)
class Launch:
    """
    How to start one worker process.

    @ivar executable: The program.
    @ivar args: Its arguments, the program first.
    @ivar env: Its environment.
    @ivar path: Its working directory.
    @ivar childFDs: Its descriptors, as C{spawnProcess} takes them.
    @ivar log: The descriptor the worker logs to, read by the supervisor;
        C{None} when the worker writes the supervisor's log file itself.
    @ivar notify: The descriptor it notifies on (read by the supervisor).
    """

    executable: str
    args: list[str]
    env: dict[str, str]
    path: str
    childFDs: dict[int, int | str]
    log: int | None
    notify: int


class WorkerCommand:
    """
    The command line, environment and descriptors of the workers: the
    proxy's options as the supervisor got them, run by C{twist} (as
    C{python -m connectproxy._worker}) on the same kind of reactor, logging
    to the supervisor's log file (L{LogRoute}), or in JSON to a pipe the
    supervisor reads.
    """

    def __init__(
        self,
        argv: Sequence[str],
        reactor: str | None = None,
        environ: Mapping[str, str] | None = None,
        starting: Mapping[str, str] | None = None,
        cwd: str | None = None,
        log: LogRoute | None = None,
    ) -> None:
        """
        @param argv: The proxy's options (L{Options.argv
            <connectproxy.tap.Options>}).
        @param reactor: The C{--reactor} name, or C{None} for the default.
        @param log: Where the workers log themselves; C{None} to log to a
            pipe the supervisor reads.
        @param environ: The supervisor's environment; C{os.environ} by
            default.
        @param starting: The environment the supervisor started with, which
            still says which sockets systemd passed; by default
            L{startingEnvironment}.
        @param cwd: The working directory; the supervisor's by default.
        """
        self.argv = list(argv)
        self.reactor = reactor
        self._environ = os.environ if environ is None else environ
        self._starting = starting
        self._cwd = cwd
        self.log = log

    def launch(
        self, worker: int, ports: Sequence[SharedPort], metrics: str | None = None
    ) -> Launch:
        """
        How to start worker number C{worker}.

        @param ports: The listening sockets, in the order of C{--listen}.
        @param metrics: The UNIX socket it serves metrics on, if any.
        """
        childFDs: dict[int, int | str] = {_STDIN: "w", 1: 1, 2: "r"}
        if not _isOpen(1):
            childFDs[1] = "r"
        listen: list[tuple[str, int | None]] = []
        inherited = [port.fileno for port in ports if port.port is None]
        # Numbers systemd's sockets may use are left to them.
        free = max([2, *inherited]) + 1
        for port in ports:
            if port.port is None:
                childFDs[port.fileno] = port.fileno
                listen.append((port.description, None))
            else:
                childFDs[free] = port.fileno
                listen.append((port.description, free))
                free += 1
        notify = free
        childFDs[notify] = "r"
        log: int | None = None
        if self.log is None:
            log = notify + 1
            childFDs[log] = "r"
            runner = LogRoute("json", f"/dev/fd/{log}").arguments
        else:
            runner = self.log.arguments
            if self.log.file == "+":
                # The log is on standard error: the worker's goes there too.
                childFDs[2] = 2
        marker = WorkerMarker(worker, tuple(listen), notify, metrics)
        if self.reactor is not None:
            runner = ["--reactor", self.reactor, *runner]
        args = [sys.executable, "-m", "connectproxy._worker", *runner]
        args += ["connectproxy", *self.argv]
        env = self._environment(marker, bool(inherited))
        cwd = os.getcwd() if self._cwd is None else self._cwd
        return Launch(sys.executable, args, env, cwd, childFDs, log, notify)

    def _environment(self, marker: WorkerMarker, systemd: bool) -> dict[str, str]:
        env = dict(self._environ)
        for name in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
            env.pop(name, None)
        if systemd:
            starting = self._starting
            if starting is None:
                starting = startingEnvironment()
            for name in ("LISTEN_FDS", "LISTEN_FDNAMES"):
                if name in starting:
                    env[name] = starting[name]
        env[MARKER] = marker.encode()
        # The workers import this very package.
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if here not in _defaultPath():
            paths = [here, *env.get("PYTHONPATH", "").split(os.pathsep)]
            env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        return env


def _defaultPath() -> list[str]:
    """
    The directories a new interpreter imports from without C{PYTHONPATH}:
    its site-packages.
    """
    paths = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        paths.append(site.getusersitepackages())
    return [os.path.abspath(p) for p in paths]


def _isOpen(fileno: int) -> bool:
    try:
        os.fstat(fileno)
    except OSError:
        return False
    return True
