# -*- test-case-name: tests.test_worker -*-
"""
The worker side of C{--workers}: what a worker process is told by its
supervisor, and what it does differently from a proxy on its own.

The supervisor starts each worker as C{python -m connectproxy._worker},
which runs C{twist} with the runner options the supervisor chose (its
reactor; its own log file and format, or a JSON log on a pipe it reads),
then C{connectproxy} and the proxy's own options, as given to the
supervisor (the same configuration file).  What makes it a worker is
the environment variable L{MARKER}, which only the supervisor sets (no
option of the command line does): it names the listening sockets the
worker inherited, the pipe for its notifications and where to serve its
metrics to the supervisor.  A worker:

  - listens on the inherited sockets (L{adopted}), with the descriptions
    the supervisor bound, even if the configuration file now says
    otherwise (a change of C{--listen} takes a restart);
  - tells the supervisor, never systemd, when it is ready, reloading and
    stopping (L{PipeNotifier <connectproxy._sdnotify.PipeNotifier>});
  - serves its metrics on a UNIX socket of the supervisor's private
    directory, never on the C{--metrics} addresses, which the supervisor
    serves;
  - runs in a process group of its own, so that a Ctrl-C in a terminal
    reaches the supervisor only (which tells every worker once), and stops
    (draining) when its supervisor is gone (L{ParentWatch}).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._assembly import ProxyConfig
from ._sdnotify import PipeNotifier

__all__ = ["MARKER", "ParentWatch", "WorkerMarker", "current", "main"]

#: The environment variable that makes a process a worker: set by the
#: supervisor only, read and removed by L{main}.
MARKER = "CONNECTPROXY_WORKER"

#: The program name of a worker, in its messages.
PROGRAM = "connectproxy"


@dataclass(frozen=True, slots=True)
class WorkerMarker:
    """
    What the supervisor tells a worker it starts.

    @ivar worker: The worker's number, from 1.
    @ivar listen: Each listener description the supervisor bound, in
        order, with the descriptor of its socket in the worker (C{None} for
        a C{systemd:} socket, inherited under the number systemd gave it).
    @ivar notify: The descriptor of the pipe for the worker's
        notifications.
    @ivar metrics: The UNIX socket to serve metrics on, with C{--metrics};
        else C{None}.
    @ivar parent: The descriptor of the pipe from the supervisor, which
        closes when it exits: the worker's standard input.
    """

    worker: int
    listen: tuple[tuple[str, int | None], ...]
    notify: int
    metrics: str | None = None
    parent: int = 0

    def encode(self) -> str:
        """
        The value of L{MARKER}.
        """
        return json.dumps(
            {
                "worker": self.worker,
                "listen": [list(pair) for pair in self.listen],
                "notify": self.notify,
                "metrics": self.metrics,
                "parent": self.parent,
            }
        )

    @classmethod
    def decode(cls, text: str) -> WorkerMarker:
        """
        Read the value of L{MARKER}.

        @raise ValueError: When it is not one L{encode} made.
        """
        try:
            fields = json.loads(text)
            worker, notify = fields["worker"], fields["notify"]
            metrics = fields["metrics"]
            parent = _required(fields["parent"])
            listen = tuple((str(d), _descriptor(fd)) for d, fd in fields["listen"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{MARKER} is not what a supervisor sets: {e}") from None
        if not isinstance(worker, int) or worker < 1:
            raise ValueError(f"{MARKER}: bad worker number {worker!r}")
        if metrics is not None and not isinstance(metrics, str):
            raise ValueError(f"{MARKER}: bad metrics socket {metrics!r}")
        return cls(worker, listen, _required(notify), metrics, parent)

    @property
    def adopted(self) -> list[int | None]:
        """
        The inherited socket of each listener, in order.
        """
        return [fd for _, fd in self.listen]

    def configure(self, config: ProxyConfig) -> ProxyConfig:
        """
        The configuration with the listeners the supervisor bound.
        """
        return replace(config, listen=tuple(d for d, _ in self.listen))

    def metricsListen(self, descriptions: Sequence[str]) -> list[str]:
        """
        Where the worker serves its metrics: its private UNIX socket when
        C{--metrics} gave any description, else nowhere.
        """
        if not descriptions or self.metrics is None:
            return []
        escaped = self.metrics.replace("\\", "\\\\").replace(":", "\\:")
        return [f"unix:{escaped}:mode=600:lockfile=0"]

    def notifier(self) -> PipeNotifier:
        """
        What tells the supervisor when the worker is ready.
        """
        return PipeNotifier(self.notify)


def _descriptor(value: object) -> int | None:
    return None if value is None else _required(value)


def _required(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{MARKER}: bad descriptor {value!r}")
    return value


_current: WorkerMarker | None = None


def current() -> WorkerMarker | None:
    """
    What the supervisor told this process, if it is a worker.
    """
    return _current


def main(argv: Sequence[str] | None = None) -> None:
    """
    Run a worker: C{python -m connectproxy._worker [runner options] [proxy
    options]}, with L{MARKER} set.

    @param argv: The arguments after the program name; C{sys.argv[1:]} by
        default.
    @raise SystemExit: Without L{MARKER}, or when the proxy stops.
    """
    global _current
    text = os.environ.pop(MARKER, None)
    if text is None:
        raise SystemExit(
            "connectproxy._worker runs the worker processes of --workers; "
            "start connectproxy (with --workers) instead"
        )
    try:
        _current = WorkerMarker.decode(text)
    except ValueError as e:
        raise SystemExit(f"connectproxy._worker: {e}") from None
    try:
        os.setpgid(0, 0)
    except OSError:
        # A sandbox may forbid it; the worker then gets the terminal's
        # signals too.
        pass
    if "LISTEN_FDS" in os.environ:
        _adoptSystemdSockets()
    _run(_current.worker, list(sys.argv[1:] if argv is None else argv))


def _run(worker: int, argv: list[str]) -> None:
    """
    Run C{twist} with C{argv} (runner options, C{connectproxy}, the
    proxy's options), every event of its log carrying the worker's number
    and process ID.
    """
    from ._command import _Twist
    from ._workerlog import workerFields

    class WorkerTwist(_Twist):
        @staticmethod
        def options(argv: Sequence[str]) -> Any:
            options = _Twist.options(argv)
            factory = options["fileLogObserverFactory"]
            options["fileLogObserverFactory"] = lambda outFile: workerFields(
                factory(outFile), worker, os.getpid()
            )
            return options

    # The program name the proxy's options report (in a usage error, its
    # help): the command the operator runs, not this module.
    sys.argv = [PROGRAM, *argv]
    WorkerTwist.main([PROGRAM, *argv])


def _adoptSystemdSockets() -> None:
    """
    Make the sockets systemd passed the supervisor, inherited under the
    same numbers, this process's: Twisted reads C{LISTEN_PID} when its
    endpoints module is imported, which happened before this process could
    set it.
    """
    os.environ["LISTEN_PID"] = str(os.getpid())
    from twisted.internet import endpoints
    from twisted.python.systemd import ListenFDs

    parser = getattr(endpoints, "_SystemdParser", None)
    if parser is not None:
        parser._sddaemon = ListenFDs.fromEnvironment()


@implementer(IReadDescriptor)
class _PipeEnd:
    """
    The reading end of a pipe, watched for its other end closing.
    """

    def __init__(self, fileno: int, closed: Callable[[], None]) -> None:
        self._fileno = fileno
        self._closed = closed

    def fileno(self) -> int:
        return self._fileno

    def logPrefix(self) -> str:
        return "supervisor"

    def doRead(self) -> None:
        try:
            data = os.read(self._fileno, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._closed()

    def connectionLost(self, reason: Failure) -> None:
        self._closed()


class ParentWatch(Service):
    """
    Stops the worker (a draining shutdown, as on SIGTERM) when its
    supervisor is gone: the supervisor holds the other end of the worker's
    standard input, which the system closes when it exits, even when
    killed.
    """

    _log = Logger()

    def __init__(self, reactor: Any, worker: int, fileno: int = 0) -> None:
        """
        @param reactor: The reactor to watch with and to stop.
        @param worker: The worker's number, for the log.
        @param fileno: The pipe from the supervisor.
        """
        self._reactor = reactor
        self._worker = worker
        self._fileno = fileno
        self._reader: _PipeEnd | None = None

    def startService(self) -> None:
        super().startService()
        os.set_blocking(self._fileno, False)
        self._reader = _PipeEnd(self._fileno, self._gone)
        self._reactor.addReader(self._reader)

    def stopService(self) -> None:
        super().stopService()
        reader, self._reader = self._reader, None
        if reader is not None:
            self._reactor.removeReader(reader)

    def _gone(self) -> None:
        reader, self._reader = self._reader, None
        if reader is None:
            return
        self._reactor.removeReader(reader)
        self._log.warn(
            "worker {worker}: the supervisor is gone; stopping",
            event="supervisor_gone",
            worker=self._worker,
        )
        self._reactor.stop()


if __name__ == "__main__":
    # Run as the module, not as __main__: makeService asks the module.
    from connectproxy._worker import main as _main

    _main()
