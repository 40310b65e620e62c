# -*- test-case-name: tests.test_tap,tests.test_observerplugins -*-
"""
The options that say who hears of what the proxy does: the observer
plugins, the access log (its file and format) and the level of the
proxy's own log.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.application.service import MultiService
from twisted.python import usage

from ._accesslog import FORMATS, FileAccessLog
from ._assembly import DEFAULT_OBSERVERS, observerFactories, proxySettings
from ._loglevel import logLevel
from ._logwriter import LineWriter, LineWriterService
from ._observercontext import ObserverContext, idleContext, makeObservers
from ._options_base import OptionGroup
from ._optionvalues import accessLogFormat, accessLogPath
from .interfaces import IProxyObserver

__all__ = ["ObserverOptions", "fileAccessLog"]


class ObserverOptions(OptionGroup):
    """
    C{--observer}, C{--access-log}, C{--access-log-format}, C{--log-level}
    and C{--log-query}.
    """

    optFlags: list[list[Any]] = [
        [
            "log-query",
            None,
            "Keep the query string of http:// URLs in the access log, for "
            "forwarded and refused requests (left out by default: it may "
            "carry secrets; user:password@ is always left out).",
        ],
    ]

    optParameters: list[list[Any]] = [
        [
            "access-log",
            None,
            None,
            "Write the access log to this file ('-' for standard output) "
            "instead of the proxy's log. SIGUSR1 re-opens it (logrotate).",
            accessLogPath,
        ],
        [
            "access-log-format",
            None,
            "text",
            "The format of --access-log: text (one readable line), json (one "
            "JSON object per line) or squid (squid's native access.log).",
            accessLogFormat,
        ],
        [
            "log-level",
            None,
            "info",
            "Log events of this level and above: debug, info, warn, error or "
            "critical (the access log keeps info).",
            logLevel,
        ],
    ]

    optLists: list[list[Any]] = [["observer", "accesslog"]]

    def opt_observer(self, description: str) -> None:
        """
        Tell this observer plugin what the proxy does, as NAME or
        NAME:ARGUMENT (repeatable). The first one replaces the default,
        accesslog: name it too to keep the access log. See
        --help-observers. [default: accesslog]
        """
        name = description.partition(":")[0]
        installed = observerFactories()
        if name not in installed:
            raise usage.UsageError(
                f"--observer: no observer plugin named {name!r} "
                f"(installed: {', '.join(sorted(installed)) or 'none'})"
            )
        self._append("observer", description)

    def opt_help_observers(self) -> None:
        """
        List the installed observer plugins and exit.
        """
        for name, factory in sorted(observerFactories().items()):
            sys.stdout.write(f"{name}: {factory.description}\n")
        raise SystemExit(0)

    def observers(self, context: ObserverContext) -> list[IProxyObserver]:
        """
        Make the observers C{--observer} names, in order, from C{context}.

        @raise ValueError: Naming the option, when a plugin refuses its
            argument.
        """
        return makeObservers(self["observer"], context, observerFactories())

    def _checkAccessLog(self) -> None:
        """
        Observe with the C{accesslog} observer when no C{--observer} is
        given; refuse an access-log format without a file to write, and a
        file that the C{accesslog} observer is not there to write.
        """
        if not self["observer"]:
            self["observer"] = list(DEFAULT_OBSERVERS)
        if self["access-log"] is None:
            if self["access-log-format"] != "text":
                raise usage.UsageError(
                    f"--access-log-format {self['access-log-format']} needs "
                    "--access-log FILE (or - for standard output)"
                    + self._fromFile("access-log-format")
                )
            return
        names = [d.partition(":")[0] for d in self["observer"]]
        if "accesslog" not in names:
            raise usage.UsageError(
                "--access-log needs the accesslog observer: add --observer "
                "accesslog" + self._fromFile("access-log", "observer")
            )

    def _checkObservers(self) -> None:
        """
        Let the observer plugins check their arguments before anything
        listens.
        """
        try:
            self.observers(idleContext(proxySettings(self)))
        except ValueError as e:
            raise usage.UsageError(str(e)) from None

    def _describeAccessLog(self) -> list[str]:
        """
        The C{--check-config} line of the access-log file.

        @raise usage.UsageError: When the file could not be written.
        """
        path = self["access-log"]
        if path is None:
            return []
        where = "standard output" if path == "-" else os.path.abspath(path)
        if path != "-":
            target = path if os.path.exists(path) else os.path.dirname(where)
            if not os.access(target, os.W_OK):
                raise usage.UsageError(
                    f"--access-log {path}: cannot write {target}"
                    + self._fromFile("access-log")
                )
        return [f"access log -> {where} ({self['access-log-format']})"]


def fileAccessLog(
    options: ObserverOptions, reactor: Any, services: MultiService, installSignal: bool
) -> FileAccessLog | None:
    """
    The access log of C{--access-log}, if given, with the service that runs
    its writer (named C{"accesslog"}, added to C{services}; its C{writer}
    counts the lines it dropped in C{droppedLines}).

    @param options: Parsed options.
    @param reactor: The reactor the writer reports to (from its thread, with
        C{callFromThread} when the reactor has it).
    @param services: Where the writer's service is added.
    @param installSignal: Whether C{SIGUSR1} re-opens the file.
    @return: The observer that writes the access log, or C{None} without
        C{--access-log}.
    """
    path = options["access-log"]
    if path is None:
        return None
    callFromThread = getattr(reactor, "callFromThread", _callNow)
    writer = LineWriter(path, reactor, callFromThread)
    service = LineWriterService(writer, callFromThread, installSignal)
    service.setName("accesslog")
    service.setServiceParent(services)
    return FileAccessLog(writer, FORMATS[options["access-log-format"]], reactor)


def _callNow(function: Any, *args: Any) -> None:
    """
    Call at once: what a reactor without threads (a test's) does for
    C{callFromThread}.
    """
    function(*args)
