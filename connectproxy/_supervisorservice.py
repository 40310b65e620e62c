# -*- test-case-name: tests.test_workers,tests.test_tap -*-
"""
The services of the supervisor of C{--workers N}, assembled from the parsed
options: what C{makeService} returns with C{--workers}.  The supervisor
itself is L{connectproxy._workers}.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService

from ._loglevel import LogLevelService
from ._sdnotify import SystemdNotifier
from ._shutdown import ProxyService
from ._workercommand import WorkerCommand, logRoute, reactorName
from ._workers import Supervisor

__all__ = ["supervisorService"]


def supervisorService(options: Any, reactor: Any, installSignal: bool) -> MultiService:
    """
    The services of the supervisor of C{--workers N}: the log level, the
    C{--metrics} listeners (the workers' metrics added up) and the
    L{Supervisor}, which stops (its workers drained) before the others.

    @param options: The parsed L{Options <connectproxy.tap.Options>}; its
        C{argv} is what the workers run.
    @param reactor: The reactor.
    @param installSignal: Whether the supervisor owns the process's signals
        (and log).
    @return: A L{ProxyService} named C{"connectproxy"}; its child named
        C{"workers"} is the L{Supervisor}.
    """
    service = ProxyService()
    service.setName("connectproxy")
    if installSignal:
        levels = LogLevelService(options["log-level"], reactor)
        levels.setName("loglevel")
        levels.setServiceParent(service)
    supervisor = Supervisor(
        reactor,
        options["workers"],
        options["listen"],
        WorkerCommand(
            options.argv,
            reactorName(reactor),
            log=(
                logRoute(getattr(options, "parent", None), options["log-level"])
                if installSignal
                else None
            ),
        ),
        notifier=SystemdNotifier.fromEnvironment(),
        installSignals=installSignal,
        forwardUSR1=options["access-log"] is not None,
        privateDirectory=bool(options["metrics"]),
    )
    if options["metrics"]:
        # Imported here: prometheus_client only with --metrics.
        from ._workermetrics import addWorkerMetrics

        metrics = MultiService()
        metrics.setName("metrics")
        metrics.setServiceParent(service)
        addWorkerMetrics(options["metrics"], reactor, supervisor, metrics)
    supervisor.setName("workers")
    supervisor.setServiceParent(service)
    service.barrier = supervisor
    return service
