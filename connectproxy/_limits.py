# -*- test-case-name: tests.test_descriptors -*-
"""
The descriptor limit: L{DescriptorLimitService} raises the soft
C{RLIMIT_NOFILE} to the hard limit when the proxy starts, so that the
default C{--max-connections} (which follows it) is as large as the system
allows, and logs the figures.  When descriptors run out anyway, the
listeners' L{connectproxy._acceptguard.AcceptGuard} refuses new clients
cleanly.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger

from ._acceptguard import DescriptorReserve, ExhaustionReport
from ._settings import defaultMaxConnections

__all__ = [
    "DescriptorLimitService",
    "LimitChange",
    "descriptorCeiling",
    "raiseDescriptorLimit",
]

#: The soft limit tried when the hard limit is infinite (macOS refuses more
#: than C{OPEN_MAX}, the second figure).
_INFINITE_TARGETS = (1 << 20, 10240)

_Getter = Callable[[int], tuple[int, int]]
_Setter = Callable[[int, tuple[int, int]], None]


@dataclass(frozen=True, slots=True)
class LimitChange:
    """
    What L{raiseDescriptorLimit} did.

    @ivar before: The soft limit it found (C{-1}: infinite).
    @ivar after: The soft limit in effect now.
    @ivar hard: The hard limit.
    @ivar error: Why raising failed, or C{None}.
    """

    before: int
    after: int
    hard: int
    error: str | None = None


def raiseDescriptorLimit(
    ceiling: int | None = None,
    getrlimit: _Getter = resource.getrlimit,
    setrlimit: _Setter = resource.setrlimit,
) -> LimitChange:
    """
    Raise the soft limit on open descriptors (C{RLIMIT_NOFILE}) to the hard
    limit, which needs no privilege.  It never lowers it.

    @param ceiling: Raise it no higher than this (a C{select()} reactor
        cannot watch descriptors from 1024 on); C{None} for no ceiling.
    @param getrlimit: Reads a limit (L{resource.getrlimit}).
    @param setrlimit: Sets a limit (L{resource.setrlimit}).
    @return: The limits before and after.
    """
    kind = resource.RLIMIT_NOFILE
    soft, hard = getrlimit(kind)
    infinite = resource.RLIM_INFINITY
    targets = [hard] if hard != infinite else list(_INFINITE_TARGETS)
    if ceiling is not None:
        targets = [min(t, ceiling) for t in targets]
    error = None
    for target in targets:
        if soft == infinite or target <= soft:
            break
        try:
            setrlimit(kind, (target, hard))
        except (ValueError, OSError) as e:
            error = str(e)
        else:
            error = None
            break
    return LimitChange(soft, getrlimit(kind)[0], hard, error)


class DescriptorLimitService(Service):
    """
    At start, raises the descriptor limit to the hard limit (when asked),
    makes the factory's automatic C{--max-connections} follow it, and logs
    both figures; at stop, closes the spare descriptor of the listeners'
    guards and logs any exhaustion count not yet reported.
    """

    _log = Logger()

    def __init__(
        self,
        factory: Any,
        reserve: DescriptorReserve,
        report: ExhaustionReport,
        raiseLimit: bool,
        automaticMaxConnections: bool,
        ceiling: int | None = None,
    ) -> None:
        """
        @param factory: The L{ConnectProxyFactory}; its C{settings} get the
            new connection limit.
        @param reserve: The listeners' spare descriptor, closed at stop.
        @param report: The listeners' exhaustion report, flushed at stop.
        @param raiseLimit: Whether to raise the limit (only in the process
            the proxy owns, never in a test's).
        @param automaticMaxConnections: Whether C{--max-connections} was
            left to its default, which follows the descriptor limit.
        @param ceiling: The highest soft limit the reactor can use, if any.
        """
        self._factory = factory
        self._reserve = reserve
        self._report = report
        self._raiseLimit = raiseLimit
        self._automatic = automaticMaxConnections
        self._ceiling = ceiling
        self._started = False

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._start()

    def startService(self) -> None:
        super().startService()
        self._start()

    def stopService(self) -> None:
        super().stopService()
        self._started = False
        self._report.stop()
        self._reserve.release()

    def _start(self) -> None:
        """
        Raise the limit once (twistd starts services in two passes, twist
        in one), before the listeners listen.
        """
        if self._started:
            return
        self._started = True
        if not self._raiseLimit:
            return
        change = raiseDescriptorLimit(self._ceiling)
        if self._automatic:
            self._factory.settings = replace(
                self._factory.settings, maxConnections=defaultMaxConnections()
            )
        if change.error is not None:
            self._log.warn(
                "could not raise the file descriptor limit from {before} to "
                "{hard}: {error}",
                event="descriptor_limit_unchanged",
                before=change.before,
                hard=change.hard,
                error=change.error,
            )
        self._log.info(
            "file descriptor limit {limit} (was {before}, hard limit {hard}); "
            "at most {maxConnections} client connections (--max-connections)",
            event="descriptor_limit",
            limit=change.after,
            before=change.before,
            hard=change.hard,
            maxConnections=self._factory.settings.maxConnections,
        )


def descriptorCeiling(reactor: Any) -> int | None:
    """
    The highest descriptor limit C{reactor} can use: C{select()} watches
    descriptors below C{FD_SETSIZE} (1024) only.
    """
    from twisted.internet.selectreactor import SelectReactor

    return 1024 if isinstance(reactor, SelectReactor) else None
