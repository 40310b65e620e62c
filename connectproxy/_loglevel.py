# -*- test-case-name: tests.test_loglevel -*-
"""
C{--log-level}: the least level of the events the proxy's log keeps, the
same under C{twistd} (which has no such option), C{twist} and a C{.tac}
file.

L{LogLevelService} puts a level filter in front of every observer of the
global log publisher once the reactor runs (by then C{twist} and C{twistd}
have both begun logging), and takes it away when stopped.  The access log
(the events of L{AccessLogObserver}) is kept at C{info} whatever the
level, so that C{--log-level warn} quiets the rest of the log only.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.logger import (
    ILogObserver,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    LogPublisher,
    PredicateResult,
    globalLogPublisher,
)
from zope.interface import implementer

from ._dnscache import QUIET
from ._observer import AccessLogObserver

__all__ = ["ACCESS_NAMESPACE", "LEVELS", "LevelFilter", "LogLevelService", "logLevel"]

#: The namespace of the access log's events (a L{Logger} that is a class
#: attribute logs in the namespace of its class).
ACCESS_NAMESPACE = f"{AccessLogObserver.__module__}.{AccessLogObserver.__qualname__}"

#: The level names C{--log-level} takes, least severe first.
LEVELS = ("debug", "info", "warn", "error", "critical")


def logLevel(text: str) -> str:
    """
    A C{--log-level} value: one of L{LEVELS}.

    @raise ValueError: For another.
    """
    if text not in LEVELS:
        raise ValueError(f"{text!r} is not one of {', '.join(LEVELS)}")
    return text


logLevel.coerceDoc = "One of " + ", ".join(LEVELS) + "."  # type: ignore[attr-defined]
#: A string in the configuration file, never a number.
logLevel.string = True  # type: ignore[attr-defined]


def levelPredicate(name: str) -> LogLevelFilterPredicate:
    """
    The filter of C{--log-level name}: events below that level are dropped,
    except that access-log events at C{info} and above always pass.

    @param name: One of L{LEVELS}.
    """
    level = LogLevel.levelWithName(name)
    predicate = LogLevelFilterPredicate(defaultLogLevel=level)
    access = level if LEVELS.index(name) < LEVELS.index("info") else LogLevel.info
    predicate.setLogLevelForNamespace(ACCESS_NAMESPACE, access)
    return predicate


#: How many (namespace, level) answers a L{LevelFilter} keeps at most.
_CACHED = 1024


@implementer(ILogObserver)
class LevelFilter:
    """
    Passes the events a L{LogLevelFilterPredicate} keeps on to an observer,
    as C{FilteringLogObserver(observer, [predicate])} does, with the
    predicate's answer kept for each namespace and level: every event
    costs a dictionary look-up, not a walk up its namespace.

    @ivar observer: The observer the kept events go to.
    """

    def __init__(
        self, observer: ILogObserver, predicate: LogLevelFilterPredicate
    ) -> None:
        """
        @param observer: Where the kept events go.
        @param predicate: Says which are kept; its levels must not change
            afterwards.
        """
        self.observer = observer
        self._predicate = predicate
        self._kept: dict[tuple[object, object], bool] = {}

    def __call__(self, event: LogEvent) -> None:
        if QUIET in event:
            # The DNS client's per-query machinery: nothing an operator
            # needs, several lines per name looked up.
            return
        key = (event.get("log_namespace"), event.get("log_level"))
        kept = self._kept.get(key)
        if kept is None:
            if len(self._kept) >= _CACHED:
                self._kept.clear()
            kept = self._predicate(event) is not PredicateResult.no
            self._kept[key] = kept
        if kept:
            if "log_trace" in event:
                event["log_trace"].append((self, self.observer))
            self.observer(event)


class LogLevelService(Service):
    """
    Filters the events of the process's log by level while running.

    Observers added to the publisher after the reactor started are not
    filtered.
    """

    def __init__(
        self, level: str, reactor: Any, publisher: LogPublisher = globalLogPublisher
    ) -> None:
        """
        @param level: One of L{LEVELS}.
        @param reactor: Says when it runs (C{callWhenRunning}).
        @param publisher: The publisher whose observers to filter.
        """
        self.level = level
        self._reactor = reactor
        self._publisher = publisher
        self._predicate = levelPredicate(level)
        self._wrapped: list[tuple[ILogObserver, ILogObserver]] = []

    def startService(self) -> None:
        super().startService()
        self._reactor.callWhenRunning(self.install)

    def install(self) -> None:
        """
        Put the filter in front of every observer of the publisher now.
        """
        if not self.running or self._wrapped:
            return
        # Events below the level are dropped: the access log need not make
        # its debug ones (tunnel_open, one per tunnel).
        AccessLogObserver.debugShown = self.level == "debug"
        # A LogPublisher does not list its observers but keeps them here.
        observers = list(getattr(self._publisher, "_observers", ()))
        for observer in observers:
            wrapper = LevelFilter(observer, self._predicate)
            self._publisher.removeObserver(observer)
            self._publisher.addObserver(wrapper)
            self._wrapped.append((observer, wrapper))

    def stopService(self) -> None:
        super().stopService()
        AccessLogObserver.debugShown = True
        wrapped, self._wrapped = self._wrapped, []
        for observer, wrapper in wrapped:
            self._publisher.removeObserver(wrapper)
            self._publisher.addObserver(observer)
