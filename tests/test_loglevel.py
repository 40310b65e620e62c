# -*- test-case-name: tests.test_loglevel -*-
"""
Tests for C{--log-level} (L{connectproxy._loglevel}).
"""

from __future__ import annotations

from typing import cast

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, LogEvent, Logger, LogLevel, LogPublisher

from connectproxy._loglevel import (
    ACCESS_NAMESPACE,
    LEVELS,
    LevelFilter,
    LogLevelService,
    levelPredicate,
    logLevel,
)
from connectproxy._observer import AccessLogObserver, RefusedRequest, TunnelRecord
from connectproxy.tap import Options, makeService


def emitAll(publisher: LogPublisher) -> None:
    """
    One event of each level from the proxy, and one of each from the
    access log.
    """
    for namespace in ("connectproxy._server", ACCESS_NAMESPACE):
        log = Logger(namespace=namespace, observer=publisher)
        for name in LEVELS:
            log.emit(LogLevel.levelWithName(name), name, event=name)


def seen(events: list[LogEvent]) -> list[tuple[str, str]]:
    return [
        ("access" if e["log_namespace"] == ACCESS_NAMESPACE else "_server", e["event"])
        for e in events
    ]


def running(level: str) -> tuple[LogLevelService, LogPublisher, list[LogEvent]]:
    """
    A started service filtering a publisher with one observer, after the
    reactor started.
    """
    events: list[LogEvent] = []
    publisher = LogPublisher(cast(ILogObserver, events.append))
    reactor = MemoryReactorClock()
    service = LogLevelService(level, reactor, publisher)
    service.startService()
    reactor.run()
    return service, publisher, events


def test_logLevelValues() -> None:
    """
    C{--log-level} takes the names of Twisted's levels.
    """
    assert [logLevel(name) for name in LEVELS] == list(LEVELS)
    with pytest.raises(ValueError, match="'verbose' is not one of debug, info"):
        logLevel("verbose")


def test_filters() -> None:
    """
    Events below the level are dropped; the access log keeps C{info}.
    """
    _, publisher, events = running("error")
    emitAll(publisher)
    assert seen(events) == [
        ("_server", "error"),
        ("_server", "critical"),
        ("access", "info"),
        ("access", "warn"),
        ("access", "error"),
        ("access", "critical"),
    ]


def test_filtersTheSameEveryTime() -> None:
    """
    The filter keeps what C{FilteringLogObserver} with the same predicate
    keeps, the second time an event of a namespace and level comes as the
    first: events of sub-namespaces by their parent's level, and none
    without a level or a namespace.
    """
    events: list[LogEvent] = []
    keep = LevelFilter(cast(ILogObserver, events.append), levelPredicate("warn"))
    sent: list[LogEvent] = [
        {"log_namespace": "connectproxy._front", "log_level": LogLevel.info},
        {"log_namespace": "connectproxy._front", "log_level": LogLevel.warn},
        {"log_namespace": ACCESS_NAMESPACE, "log_level": LogLevel.info},
        {"log_namespace": ACCESS_NAMESPACE + ".sub", "log_level": LogLevel.info},
        {"log_namespace": ACCESS_NAMESPACE, "log_level": LogLevel.debug},
        {"log_namespace": "connectproxy._front"},
        {"log_level": LogLevel.error},
    ]
    for _ in range(2):
        for event in sent:
            keep(dict(event))
    expected = [sent[1], sent[2], sent[3]]
    assert events == expected + expected


def test_filterTraced() -> None:
    """
    A traced event (C{log_trace}) names the filter and its observer, as
    Twisted's filtering observer does.
    """
    events: list[LogEvent] = []
    observer = cast(ILogObserver, events.append)
    keep = LevelFilter(observer, levelPredicate("info"))
    trace: list[object] = []
    keep({"log_namespace": "x", "log_level": LogLevel.info, "log_trace": trace})
    assert trace == [(keep, observer)]


def test_accessNamespace(logEvents: list[LogEvent]) -> None:
    """
    The access log's events are in the namespace the filter keeps.
    """
    AccessLogObserver().requestRefused(RefusedRequest("c", "CONNECT", "t", 403, "no"))
    [event] = [e for e in logEvents if e.get("event") == "request_refused"]
    assert event["log_namespace"] == ACCESS_NAMESPACE


def test_debug() -> None:
    """
    At C{debug}, everything passes, the access log's debug events too.
    """
    _, publisher, events = running("debug")
    emitAll(publisher)
    assert len(events) == 2 * len(LEVELS)


@pytest.mark.parametrize("level, logged", [("info", []), ("debug", ["tunnel_open"])])
def test_tunnelOpenOnlyWhenShown(
    logEvents: list[LogEvent], level: str, logged: list[str]
) -> None:
    """
    Below C{debug} the access log makes no C{tunnel_open} event (the
    filter would drop it); at C{debug} it does, and once the filter is
    taken away it does again.
    """
    service, _, _ = running(level)
    record = TunnelRecord("127.0.0.1:5", "example.com", 443, "192.0.2.1:443")
    AccessLogObserver().tunnelOpened(record)
    assert [e["event"] for e in logEvents] == logged
    service.stopService()
    AccessLogObserver().tunnelOpened(record)
    assert [e["event"] for e in logEvents] == [*logged, "tunnel_open"]


def test_onlyOnceRunning() -> None:
    """
    The filter goes in when the reactor runs (after C{twist} and
    C{twistd} have begun logging), not at start.
    """
    events: list[LogEvent] = []
    publisher = LogPublisher(cast(ILogObserver, events.append))
    reactor = MemoryReactorClock()
    service = LogLevelService("warn", reactor, publisher)
    service.startService()
    emitAll(publisher)
    assert len(events) == 2 * len(LEVELS)


def test_stopPutsBack() -> None:
    """
    Stopping the service takes the filter away.
    """
    service, publisher, events = running("critical")
    service.stopService()
    emitAll(publisher)
    assert len(events) == 2 * len(LEVELS)
    service.install()
    emitAll(publisher)
    assert len(events) == 4 * len(LEVELS)


def test_makeServiceWithReactor() -> None:
    """
    A caller that passes its reactor keeps its log as it is: only the
    proxy's own process filters it (tests/integration/test_accesslog.py
    checks that).
    """
    options = Options()
    options.parseOptions(["--log-level", "warn"])
    service = makeService(options, MemoryReactorClock())
    assert "loglevel" not in [s.name for s in service]
