# -*- test-case-name: tests.test_parentoptions -*-
"""
Tests for the parent-proxy options (C{--upstream-proxy}, C{--upstream-route},
C{--upstream-ca}): from the command line and the configuration file to the
connector the proxy uses, at start and after a reload.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent
from twisted.python.usage import UsageError

from connectproxy import DirectConnector
from connectproxy._parent import ParentProxyConnector
from connectproxy._parenturl import ParentProxy
from connectproxy._routing import RoutingConnector
from connectproxy.tap import Options, makeService
from tests.integration._pki import makeTLSFiles
from tests.test_config import listenerFactory, named, reloaderOf, writeConfig
from tests.test_connectorplugins import pinnedPlugin

__all__ = ["pinnedPlugin"]


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def test_parentForEveryTarget() -> None:
    """
    --upstream-proxy alone sends every tunnel through the parent.
    """
    options = parse("--upstream-proxy", "http://alice:pw@parent.example:3128")
    factory = listenerFactory(makeService(options, MemoryReactorClock()))
    connector = factory.connector
    assert isinstance(connector, ParentProxyConnector)
    assert connector.parent == ParentProxy.fromURL(
        "http://alice:pw@parent.example:3128"
    )
    assert connector.resolver is factory.resolverPool
    assert connector.networks is factory.gatekeeper.rules.networks


def test_routesWithoutParent() -> None:
    """
    Routes alone send their patterns' targets through their parents, and
    everything else through --upstream (direct).
    """
    options = parse(
        "--upstream-route",
        "*.partner.example=http://gw.partner.example:3128",
        "--upstream-route",
        "intranet.partner.example=direct",
    )
    factory = listenerFactory(makeService(options, MemoryReactorClock()))
    connector = factory.connector
    assert isinstance(connector, RoutingConnector)
    assert isinstance(connector.default, DirectConnector)
    assert isinstance(connector.connectorFor("a.partner.example"), ParentProxyConnector)
    assert isinstance(
        connector.connectorFor("intranet.partner.example"), DirectConnector
    )


def test_parentAndPluginConflict(pinnedPlugin: Path) -> None:
    """
    --upstream-proxy and a connector plugin both say how targets are
    reached: the command is refused.
    """
    with pytest.raises(UsageError, match="--upstream-proxy and --upstream both"):
        parse("--upstream", "pinned:127.0.0.1:1", "--upstream-proxy", "http://p:3128")


def test_routesAroundAPlugin(pinnedPlugin: Path) -> None:
    """
    Routes may send some targets around a connector plugin, which takes the
    others.
    """
    options = parse(
        "--upstream", "pinned:127.0.0.1:1", "--upstream-route", "*.lan=direct"
    )
    connector = listenerFactory(makeService(options, MemoryReactorClock())).connector
    assert isinstance(connector, RoutingConnector)
    assert type(connector.default).__name__ == "PinnedConnector"


def test_fromTheConfigurationFile(tmp_path: Path) -> None:
    """
    The same keys work in the configuration file.
    """
    files = makeTLSFiles(tmp_path)
    path = writeConfig(
        tmp_path,
        'upstream-proxy = "https://parent.example:3129"\n'
        'upstream-route = ["*.lan=direct"]\n'
        f'upstream-ca = "{files.caCert}"\n',
    )
    options = parse("--config", str(path))
    assert options["upstream-proxy"] == "https://parent.example:3129"
    assert options["upstream-route"] == ["*.lan=direct"]
    assert options["upstream-ca"] == str(files.caCert)
    connector = listenerFactory(makeService(options, MemoryReactorClock())).connector
    assert isinstance(connector, RoutingConnector)
    assert isinstance(connector.default, ParentProxyConnector)
    assert connector.default.tlsOptions is not None


def test_configurationErrorsNameTheKey(tmp_path: Path) -> None:
    """
    A bad value in the file names the key, and never the password.
    """
    path = writeConfig(tmp_path, 'upstream-proxy = "http://alice:hunter2@p"\n')
    with pytest.raises(UsageError) as raised:
        parse("--config", str(path))
    assert "key 'upstream-proxy': the URL needs a port" in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_reloadChangesTheParent(tmp_path: Path) -> None:
    """
    SIGHUP re-reads the parent options: a new parent, routes, then none.
    """
    path = writeConfig(tmp_path, 'upstream-proxy = "http://one.example:3128"\n')
    service = makeService(parse("--config", str(path)), MemoryReactorClock())
    factory = listenerFactory(service)
    first = factory.connector
    assert isinstance(first, ParentProxyConnector)
    writeConfig(tmp_path, 'upstream-proxy = "http://two.example:3128"\n')
    assert reloaderOf(service).reload()
    second = factory.connector
    assert isinstance(second, ParentProxyConnector)
    assert second.parent.host == "two.example"
    writeConfig(tmp_path, 'upstream-route = ["x.example=http://two.example:3128"]\n')
    assert reloaderOf(service).reload()
    assert isinstance(factory.connector, RoutingConnector)
    writeConfig(tmp_path, "")
    assert reloaderOf(service).reload()
    assert isinstance(factory.connector, DirectConnector)


def test_reloadRereadsTheCA(tmp_path: Path, logEvents: list[LogEvent]) -> None:
    """
    The --upstream-ca file is read again at each reload; when it cannot be
    used the reload is refused and the old connector stays.
    """
    files = makeTLSFiles(tmp_path)
    path = writeConfig(
        tmp_path,
        'upstream-proxy = "https://parent.example:3129"\n'
        f'upstream-ca = "{files.caCert}"\n',
    )
    service = makeService(parse("--config", str(path)), MemoryReactorClock())
    factory = listenerFactory(service)
    first = factory.connector
    assert reloaderOf(service).reload()
    assert factory.connector is not first
    kept = factory.connector
    files.caCert.write_text("not a certificate\n")
    assert not reloaderOf(service).reload()
    assert factory.connector is kept
    [event] = named(logEvents, "reload_failed")
    assert "--upstream-ca: " in event["error"]
    assert "holds no PEM certificate" in event["error"]
