# -*- test-case-name: tests.test_observerplugins -*-
"""
Tests for observer plugins: discovery, C{--observer} and
C{--help-observers}, the shipped C{accesslog} plugin, a third-party plugin
dropped on the plugin path (with a service of its own), and how observers
are made once, at start, and kept across reloads.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.application.service import IService, MultiService
from twisted.internet.testing import MemoryReactor, MemoryReactorClock
from twisted.logger import LogEvent
from twisted.plugin import IPlugin
from twisted.python.usage import UsageError
from zope.interface.verify import verifyObject

import connectproxy.plugins
from connectproxy import AccessLogObserver, ConnectProxyFactory, ObserverContext
from connectproxy._assembly import observerFactories
from connectproxy._observer import AccessLogObserverFactory
from connectproxy.interfaces import IProxyObserver, IProxyObserverFactory
from connectproxy.plugins import accesslog as accesslogModule
from connectproxy.tap import Options, makeService
from tests.test_config import listenerFactory, named, reloaderOf, writeConfig
from tests.test_connectorplugins import connectThrough

COUNTING = '''
"""
An example observer plugin: counts every report and logs it, and runs a
service of its own that logs the counts when the proxy stops.
"""

from twisted.application.service import Service
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from connectproxy.interfaces import IProxyObserver, IProxyObserverFactory


@implementer(IProxyObserver)
class CountingObserver:
    log = Logger()

    def __init__(self, label, context):
        self.label = label
        self.context = context
        self.counts = {}

    def _seen(self, method, record):
        self.counts[method] = self.counts.get(method, 0) + 1
        self.log.info(
            "{label}: {method}",
            event="observed",
            label=self.label,
            method=method,
            client=record.client,
            outcome=str(getattr(record, "outcome", "")),
            openTunnels=self.context.factory.openTunnels,
        )

    def connectionOpened(self, record):
        self._seen("connectionOpened", record)

    def connectionClosed(self, record):
        self._seen("connectionClosed", record)

    def requestRefused(self, record):
        self._seen("requestRefused", record)

    def tunnelOpened(self, record):
        self._seen("tunnelOpened", record)

    def tunnelClosed(self, record):
        self._seen("tunnelClosed", record)


class CountingService(Service):
    log = Logger()

    def __init__(self, observer):
        self.observer = observer

    def startService(self):
        super().startService()
        self.log.info("counting", event="counting_started", label=self.observer.label)

    def stopService(self):
        self.log.info(
            "counted {counts}",
            event="counting_stopped",
            label=self.observer.label,
            counts=dict(self.observer.counts),
        )
        return super().stopService()


@implementer(IPlugin, IProxyObserverFactory)
class CountingFactory:
    name = "counting"
    description = "Count and log every report: --observer counting:LABEL."
    made = []

    def observerFromArgument(self, argument, context):
        if not argument:
            raise ValueError("needs a label: --observer counting:LABEL")
        observer = CountingObserver(argument, context)
        CountingService(observer).setServiceParent(context.services)
        self.made.append(observer)
        return observer


counting = CountingFactory()
'''


@pytest.fixture
def countingPlugin(tmp_path: Path) -> Iterator[Path]:
    """
    The C{counting} example observer plugin, dropped into a
    C{connectproxy/plugins} directory of its own on the plugin path.
    """
    directory = tmp_path / "site" / "connectproxy" / "plugins"
    directory.mkdir(parents=True)
    (directory / "example_counting.py").write_text(
        textwrap.dedent(COUNTING), encoding="utf-8"
    )
    path = connectproxy.plugins.__path__
    path.append(str(directory))
    try:
        yield directory
    finally:
        path.remove(str(directory))


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def observersOf(factory: ConnectProxyFactory) -> list[Any]:
    return list(factory.observer.observers)


def context(reactor: Any = None) -> ObserverContext:
    reactor = MemoryReactorClock() if reactor is None else reactor
    return ObserverContext(reactor, ConnectProxyFactory(reactor), MultiService())


# The shipped accesslog plugin


def test_accesslogDiscovered() -> None:
    """
    C{getPlugins} finds the shipped C{accesslog} observer plugin, which
    provides the plugin interfaces and makes an access log.
    """
    factory = observerFactories()["accesslog"]
    assert factory is accesslogModule.accesslog
    assert verifyObject(IPlugin, factory)
    assert verifyObject(IProxyObserverFactory, factory)
    observer = factory.observerFromArgument("", context())
    assert isinstance(observer, AccessLogObserver)
    assert verifyObject(IProxyObserver, observer)


def test_accesslogTakesNoArgument() -> None:
    """
    An argument to C{accesslog} is refused with a message for the operator.
    """
    with pytest.raises(ValueError, match="accesslog takes no argument"):
        AccessLogObserverFactory().observerFromArgument("x", context())


# The command line


def test_accessLogByDefault() -> None:
    """
    Without C{--observer}, the proxy's one observer is the access log, and
    the observers' services are an empty child of the service.
    """
    options = parse()
    assert options["observer"] == ["accesslog"]
    service = makeService(options, MemoryReactorClock())
    [observer] = observersOf(listenerFactory(service))
    assert isinstance(observer, AccessLogObserver)
    observers = service.getServiceNamed("observers")
    assert isinstance(observers, MultiService) and list(observers) == []


def test_unknownObserverNamesInstalled() -> None:
    """
    C{--observer} with an unknown name fails, naming what is installed.
    """
    with pytest.raises(UsageError) as raised:
        parse("--observer", "prometheus:9100")
    assert str(raised.value) == (
        "--observer: no observer plugin named 'prometheus' (installed: accesslog)"
    )


def test_badObserverArgument() -> None:
    """
    A plugin refusing its argument stops the command before anything
    listens, with its message after the option and the plugin's name.
    """
    with pytest.raises(UsageError) as raised:
        parse("--observer", "accesslog:x")
    assert str(raised.value) == (
        "--observer accesslog: accesslog takes no argument: --observer accesslog"
    )


def test_helpObservers(capsys: pytest.CaptureFixture[str]) -> None:
    """
    C{--help-observers} lists the installed observer plugins and exits.
    """
    with pytest.raises(SystemExit) as exited:
        parse("--help-observers")
    assert exited.value.code == 0
    assert capsys.readouterr().out == (
        "accesslog: The access log: one event per refused request and per "
        "closed tunnel (the default; give it with other --observer options "
        "to keep it).\n"
    )


def test_makeServiceRefusesBadObserver(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Should an observer plugin refuse its argument only when the service is
    made, the command still fails with a usage error naming the option.
    """
    monkeypatch.setattr(Options, "_checkObservers", lambda self: None)
    options = parse("--observer", "accesslog:oops")
    with pytest.raises(UsageError, match=r"^--observer accesslog: accesslog takes"):
        makeService(options, MemoryReactorClock())


# A third-party plugin on the plugin path


def test_pluginListed(countingPlugin: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """
    An observer plugin dropped on the plugin path is listed by name.
    """
    with pytest.raises(SystemExit):
        parse("--help-observers")
    lines = capsys.readouterr().out.splitlines()
    assert [line.partition(":")[0] for line in lines] == ["accesslog", "counting"]
    assert "counting: Count and log every report" in lines[1]


def test_pluginSelectedByName(countingPlugin: Path) -> None:
    """
    C{--observer NAME:ARGUMENT} selects the plugin, which gets the proxy's
    reactor and factory, and every report, beside the access log when that
    is named too; the first C{--observer} replaces the default.
    """
    clock = MemoryReactorClock()
    options = parse("--observer", "accesslog", "--observer", "counting:first")
    factory = listenerFactory(makeService(options, clock))
    accessLog, counting = observersOf(factory)
    assert isinstance(accessLog, AccessLogObserver)
    assert type(counting).__name__ == "CountingObserver"
    assert verifyObject(IProxyObserver, counting)
    assert counting.label == "first"
    assert counting.context.reactor is clock
    assert counting.context.factory is factory
    connectThrough(factory, "example.com:25")
    assert counting.counts == {"connectionOpened": 1, "requestRefused": 1}
    [only] = observersOf(
        listenerFactory(makeService(parse("--observer", "counting:x"), clock))
    )
    assert type(only).__name__ == "CountingObserver"


def test_pluginServiceRunsWithProxy(
    countingPlugin: Path, logEvents: list[LogEvent]
) -> None:
    """
    A service the plugin adds to its context starts and stops with the
    proxy's service.
    """
    options = parse("--observer", "counting:svc")
    service = makeService(options, MemoryReactorClock())
    [added] = service.getServiceNamed("observers")
    assert verifyObject(IService, added)
    assert added.observer is observersOf(listenerFactory(service))[0]
    service.startService()
    assert added.running
    assert [e["label"] for e in named(logEvents, "counting_started")] == ["svc"]
    service.stopService()
    assert not added.running
    assert len(named(logEvents, "counting_stopped")) == 1


def test_pluginArgumentChecked(countingPlugin: Path) -> None:
    """
    A third-party plugin's refusal of its argument stops the command too.
    """
    with pytest.raises(UsageError, match=r"^--observer counting: needs a label"):
        parse("--observer", "counting")


def test_checkedOverIdleReactor(countingPlugin: Path) -> None:
    """
    The check of the command line makes the observer over a reactor that
    does nothing, with services that are never started, and drops it.
    """
    made = observerFactories()["counting"].made  # type: ignore[attr-defined]
    del made[:]
    clock = MemoryReactorClock()
    service = makeService(parse("--observer", "counting:c"), clock)
    checked, kept = made
    assert isinstance(checked.context.reactor, MemoryReactor)
    assert checked.context.reactor is not clock
    assert not checked.context.services.running
    assert observersOf(listenerFactory(service)) == [kept]


def test_observersKeptOnReload(
    countingPlugin: Path, tmp_path: Path, logEvents: list[LogEvent]
) -> None:
    """
    A reload keeps the observers made at start, even when the
    configuration names others: that is logged, as it takes a restart.
    """
    path = writeConfig(tmp_path, 'observer = ["counting:one"]\n')
    service = makeService(parse("--config", str(path)), MemoryReactorClock())
    factory = listenerFactory(service)
    before = observersOf(factory)
    assert reloaderOf(service).reload()
    assert observersOf(factory) == before
    assert named(logEvents, "reload_observer_ignored") == []
    writeConfig(tmp_path, 'observer = ["accesslog"]\nidle-timeout = 5\n')
    assert reloaderOf(service).reload()
    assert factory.settings.idleTimeout == 5
    assert observersOf(factory) == before
    [ignored] = named(logEvents, "reload_observer_ignored")
    assert ignored["log_level"].name == "warn"


def test_reloadRefusesBadObserverArgument(
    countingPlugin: Path, tmp_path: Path, logEvents: list[LogEvent]
) -> None:
    """
    A reload whose observer arguments are refused fails, and the old
    configuration stays.
    """
    path = writeConfig(tmp_path, 'observer = ["counting:one"]\n')
    service = makeService(parse("--config", str(path)), MemoryReactorClock())
    writeConfig(tmp_path, 'observer = ["counting"]\n')
    assert not reloaderOf(service).reload()
    [failed] = named(logEvents, "reload_failed")
    assert failed["error"] == (
        "--observer counting: needs a label: --observer counting:LABEL"
    )
