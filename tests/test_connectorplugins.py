# -*- test-case-name: tests.test_connectorplugins -*-
"""
Tests for upstream connector plugins: discovery, C{--upstream} and
C{--help-upstreams}, the shipped C{direct} plugin, a third-party plugin
dropped on the plugin path, and how the factory makes and swaps
connectors at start and on reload.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent
from twisted.plugin import IPlugin
from twisted.python.usage import UsageError
from zope.interface import implementer
from zope.interface.verify import verifyObject

import connectproxy.plugins
from connectproxy import (
    AccessRules,
    ConnectorContext,
    ConnectProxyFactory,
    DirectConnector,
    Gatekeeper,
    NetworkRules,
    ProxyConfig,
    ProxySettings,
    ResolverPool,
)
from connectproxy._assembly import connectorFactories
from connectproxy._limiter import FailureLimiter
from connectproxy._upstream import DirectConnectorFactory
from connectproxy.interfaces import IUpstreamConnector, IUpstreamConnectorFactory
from connectproxy.plugins import direct as directModule
from connectproxy.tap import Options, makeService
from connectproxy.testing import (
    FakeConnector,
    HalfCloseableStringTransport,
    connectHead,
    upstreamRequest,
)
from tests._helpers import ESTABLISHED, listenerFactory, named, reloaderOf, writeConfig

PINNED = '''
"""
An example connector plugin: every tunnel goes to one address, whatever
the target, as long as the destination network rules allow it.
"""

from twisted.internet.defer import fail
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.plugin import IPlugin
from zope.interface import implementer

from connectproxy import vetAddresses
from connectproxy.interfaces import IUpstreamConnector, IUpstreamConnectorFactory
from twisted.internet.address import IPv4Address


@implementer(IUpstreamConnector)
class PinnedConnector:
    def __init__(self, host, port, context):
        self.address = IPv4Address("TCP", host, port)
        self.context = context
        self.targets = []

    def connectUpstream(self, target, protocol):
        self.targets.append(target)
        try:
            vetAddresses(self.context.networks, self.address.host, [self.address])
        except Exception:
            return fail()
        endpoint = TCP4ClientEndpoint(
            self.context.reactor, self.address.host, self.address.port
        )
        return connectProtocol(endpoint, protocol)


@implementer(IPlugin, IUpstreamConnectorFactory)
class PinnedFactory:
    name = "pinned"
    description = "Send every tunnel to one address: --upstream pinned:HOST:PORT."

    def connectorFromArgument(self, argument, context):
        host, _, port = argument.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError("needs an address: --upstream pinned:HOST:PORT")
        return PinnedConnector(host, int(port), context)


pinned = PinnedFactory()
'''


@pytest.fixture
def pinnedPlugin(tmp_path: Path) -> Iterator[Path]:
    """
    The C{pinned} example connector plugin, dropped into a
    C{connectproxy/plugins} directory of its own on the plugin path.
    """
    directory = tmp_path / "site" / "connectproxy" / "plugins"
    directory.mkdir(parents=True)
    (directory / "example_pinned.py").write_text(
        textwrap.dedent(PINNED), encoding="utf-8"
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


def context(networks: NetworkRules | None = None, **settings: Any) -> ConnectorContext:
    clock = MemoryReactorClock()
    return ConnectorContext(
        clock,
        ProxySettings(**settings),
        networks if networks is not None else NetworkRules.fromStrings(),
        ResolverPool(clock),
    )


def connectThrough(factory: ConnectProxyFactory, authority: str) -> Any:
    """
    Send a CONNECT for C{authority} from a loopback client to a factory
    and return the client's transport.
    """
    peer = IPv4Address("TCP", "127.0.0.1", 40000)
    protocol = factory.buildProtocol(peer)
    transport = HalfCloseableStringTransport(peerAddress=peer)
    protocol.makeConnection(transport)
    protocol.dataReceived(connectHead(authority))
    return transport


# The shipped direct plugin


def test_directDiscovered() -> None:
    """
    C{getPlugins} finds the shipped C{direct} connector plugin, which
    provides the plugin interfaces.
    """
    factory = connectorFactories()["direct"]
    assert factory is directModule.direct
    assert verifyObject(IPlugin, factory)
    assert verifyObject(IUpstreamConnectorFactory, factory)


def test_directMadeFromContext() -> None:
    """
    The C{direct} plugin makes a L{DirectConnector} with the context's
    network rules and resolver pool, and the connect timeout as its
    attempt timeout, with no timer per attempt (the proxy's connect
    deadline covers it).
    """
    made = context(NetworkRules.fromStrings(allow=["10.0.0.0/8"]), connectTimeout=4)
    connector = DirectConnectorFactory().connectorFromArgument("", made)
    assert verifyObject(IUpstreamConnector, connector)
    assert isinstance(connector, DirectConnector)
    assert connector.networks is made.networks
    assert connector.resolver is made.resolverPool
    assert connector.attemptTimeout == 4
    assert connector.perAttemptTimer is False


def test_directTakesNoArgument() -> None:
    """
    An argument to C{direct} is refused with a message for the operator.
    """
    with pytest.raises(ValueError, match="direct takes no argument"):
        DirectConnectorFactory().connectorFromArgument("x", context())


# The command line


def test_upstreamDefault() -> None:
    """
    Without C{--upstream}, the proxy connects directly, on the factory's
    resolver pool and with the gatekeeper's network rules.
    """
    options = parse("--allow-network", "10.0.0.0/8")
    assert options["upstream"] == "direct"
    factory = listenerFactory(makeService(options, MemoryReactorClock()))
    connector = factory.connector
    assert isinstance(connector, DirectConnector)
    assert connector.resolver is factory.resolverPool is not None
    assert connector.networks is factory.gatekeeper.rules.networks


def test_unknownUpstreamNamesInstalled() -> None:
    """
    C{--upstream} with an unknown name fails, naming what is installed.
    """
    with pytest.raises(UsageError) as raised:
        parse("--upstream", "parent:proxy.example:3128")
    assert str(raised.value) == (
        "--upstream: no connector plugin named 'parent' (installed: direct)"
    )


def test_badUpstreamArgument() -> None:
    """
    A plugin refusing its argument stops the command before anything
    listens, with its message after the option and the plugin's name.
    """
    with pytest.raises(UsageError) as raised:
        parse("--upstream", "direct:something")
    assert str(raised.value) == (
        "--upstream direct: direct takes no argument: --upstream direct"
    )


def test_helpUpstreams(capsys: pytest.CaptureFixture[str]) -> None:
    """
    C{--help-upstreams} lists the installed connector plugins and exits.
    """
    with pytest.raises(SystemExit) as exited:
        parse("--help-upstreams")
    assert exited.value.code == 0
    assert capsys.readouterr().out == (
        "direct: Connect straight to the target, to the addresses the "
        "destination network rules allow, Happy Eyeballs style (the default).\n"
    )


# A third-party plugin on the plugin path


def test_pluginListed(pinnedPlugin: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """
    A connector plugin dropped on the plugin path is listed by name.
    """
    with pytest.raises(SystemExit):
        parse("--help-upstreams")
    lines = capsys.readouterr().out.splitlines()
    assert [line.partition(":")[0] for line in lines] == ["direct", "pinned"]
    assert "pinned: Send every tunnel to one address" in lines[1]


def test_pluginSelectedByName(pinnedPlugin: Path) -> None:
    """
    C{--upstream NAME:ARGUMENT} selects the plugin, which gets the proxy's
    reactor and rules, and the requests it connects.
    """
    clock = MemoryReactorClock()
    options = parse(
        "--upstream", "pinned:127.0.0.1:8443", "--allow-network", "127.0.0.0/8"
    )
    factory = listenerFactory(makeService(options, clock))
    connector: Any = factory.connector
    assert type(connector).__name__ == "PinnedConnector"
    assert connector.context.reactor is clock
    assert connector.context.resolverPool is factory.resolverPool
    connectThrough(factory, "example.com:443")
    [target] = connector.targets
    assert (target.host, target.port, target.user) == ("example.com", 443, None)
    [(host, port, *_)] = clock.tcpClients
    assert (host, port) == ("127.0.0.1", 8443)


def test_pluginReusesVetting(pinnedPlugin: Path) -> None:
    """
    A plugin that vets with L{connectproxy.vetAddresses} gets the
    proxy's 403 for a forbidden address.
    """
    clock = MemoryReactorClock()
    options = parse("--upstream", "pinned:127.0.0.1:8443")
    factory = listenerFactory(makeService(options, clock))
    transport = connectThrough(factory, "example.com:443")
    assert transport.value().startswith(b"HTTP/1.1 403 Forbidden")
    assert b"127.0.0.1 is a loopback address" in transport.value()
    assert clock.tcpClients == []


def test_pluginArgumentChecked(pinnedPlugin: Path) -> None:
    """
    A third-party plugin's refusal of its argument stops the command too.
    """
    with pytest.raises(UsageError, match=r"^--upstream pinned: needs an address"):
        parse("--upstream", "pinned:")


def test_reloadSwapsConnector(pinnedPlugin: Path, tmp_path: Path) -> None:
    """
    A reload makes the connector again, whole, from the plugin the new
    configuration names; the resolver pool stays.
    """
    path = writeConfig(tmp_path, 'upstream = "pinned:127.0.0.1:8443"\n')
    service = makeService(parse("--config", str(path)), MemoryReactorClock())
    factory = listenerFactory(service)
    pool = factory.resolverPool
    first = factory.connector
    assert reloaderOf(service).reload()
    second: Any = factory.connector
    assert second is not first and type(second) is type(first)
    writeConfig(tmp_path, 'upstream = "direct"\nconnect-timeout = 3\n')
    assert reloaderOf(service).reload()
    assert isinstance(factory.connector, DirectConnector)
    assert factory.connector.attemptTimeout == 3
    assert factory.resolverPool is pool


def test_reloadRefusesBadUpstream(
    tmp_path: Path, logEvents: list[LogEvent], monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    When the connector cannot be made on reload, even once the command
    line passed its checks, the reload fails and the old configuration,
    connector included, stays.
    """
    path = writeConfig(tmp_path, "connect-timeout = 4\n")
    service = makeService(parse("--config", str(path)), MemoryReactorClock())
    factory = listenerFactory(service)
    before = (factory.settings, factory.gatekeeper, factory.connector)
    writeConfig(tmp_path, 'connect-timeout = 8\nupstream = "direct:oops"\n')
    monkeypatch.setattr(Options, "_checkUpstream", lambda self: None)
    assert not reloaderOf(service).reload()
    assert (factory.settings, factory.gatekeeper, factory.connector) == before
    [event] = named(logEvents, "reload_failed")
    # The value came from the file: the message names the file and key.
    assert event["error"] == (
        f"{path}: key 'upstream': direct: direct takes no argument: --upstream direct"
    )


# The factory


def test_factoryRemakesItsConnector() -> None:
    """
    A factory that made its connector makes it again on C{reconfigure},
    with the new settings and network rules, on the same resolver pool.
    """
    factory = ConnectProxyFactory(MemoryReactorClock())
    first = factory.connector
    networks = NetworkRules.fromStrings(allow=["10.0.0.0/8"])
    rules = AccessRules.defaults()
    gatekeeper = Gatekeeper(
        AccessRules(rules.ports, networks, rules.hosts, rules.clients)
    )
    settings = ProxySettings(connectTimeout=2, resolverThreads=5)
    factory.reconfigure(ProxyConfig(settings=settings, gatekeeper=gatekeeper))
    second = factory.connector
    assert isinstance(second, DirectConnector) and second is not first
    assert (second.networks, second.attemptTimeout) == (networks, 2)
    assert second.resolver is factory.resolverPool
    assert factory.resolverPool is not None and factory.resolverPool.threads == 5


def test_factoryUpstreamMaker() -> None:
    """
    An C{upstream} maker makes the connector from the factory's context,
    now and at every reconfiguration; a configuration's own connector is
    used as it is.
    """
    contexts: list[ConnectorContext] = []

    def maker(made: ConnectorContext) -> FakeConnector:
        contexts.append(made)
        return FakeConnector()

    clock = MemoryReactorClock()
    factory = ConnectProxyFactory(clock, upstream=maker)
    assert isinstance(factory.connector, FakeConnector)
    [made] = contexts
    assert made.reactor is clock and made.resolverPool is factory.resolverPool
    assert made.settings is factory.settings
    assert made.networks is factory.gatekeeper.rules.networks
    settings = ProxySettings(idleTimeout=5)
    factory.reconfigure(ProxyConfig(settings=settings, upstream=maker))
    assert len(contexts) == 2 and contexts[1].settings is settings
    replacement = FakeConnector()
    factory.reconfigure(ProxyConfig(connector=replacement, upstream=maker))
    assert factory.connector is replacement
    assert len(contexts) == 2


def test_deprecatedReconfigure() -> None:
    """
    C{reconfigure(settings, gatekeeper, upstream=None)}, the form before
    L{ProxyConfig}, still works as it did, with a deprecation warning: it
    remakes the connector with the maker in use until another maker
    replaces it, and leaves the observers alone.
    """
    contexts: list[ConnectorContext] = []

    def maker(made: ConnectorContext) -> FakeConnector:
        contexts.append(made)
        return FakeConnector()

    factory = ConnectProxyFactory(MemoryReactorClock(), upstream=maker)
    observer = factory.observer
    deprecation = (
        r"^ConnectProxyFactory\.reconfigure\(settings, gatekeeper, upstream\) "
    )
    deprecation += r"was deprecated in connectproxy 0\.1\.0; please use "
    deprecation += r"reconfigure\(ProxyConfig\(\.\.\.\)\) instead$"
    with pytest.warns(DeprecationWarning, match=deprecation):
        factory.reconfigure(ProxySettings(idleTimeout=5), factory.gatekeeper)
    assert len(contexts) == 2 and contexts[1].settings.idleTimeout == 5
    replacement = FakeConnector()
    with pytest.warns(DeprecationWarning, match=deprecation):
        factory.reconfigure(factory.settings, factory.gatekeeper, lambda c: replacement)
    assert factory.connector is replacement
    with pytest.warns(DeprecationWarning, match=deprecation):
        factory.reconfigure(factory.settings, factory.gatekeeper)
    assert factory.connector is replacement
    assert len(contexts) == 2
    assert factory.observer is observer


def test_failedReconfigureChangesNothing() -> None:
    """
    When the connector cannot be made, C{reconfigure} raises and the
    factory keeps its settings, access checks, limiter, connector and
    observers.
    """
    limiter = FailureLimiter(MemoryReactorClock(), maxFailures=3)
    factory = ConnectProxyFactory(
        MemoryReactorClock(),
        gatekeeper=Gatekeeper(AccessRules.defaults(), limiter=limiter),
    )
    before = (factory.settings, factory.gatekeeper, factory.connector, factory.observer)

    def refuse(made: ConnectorContext) -> IUpstreamConnector:
        raise ValueError("no")

    new = Gatekeeper(
        AccessRules.defaults(),
        limiter=FailureLimiter(MemoryReactorClock(), maxFailures=9),
    )
    with pytest.raises(ValueError, match="no"):
        factory.reconfigure(
            ProxyConfig(
                settings=ProxySettings(idleTimeout=1), gatekeeper=new, upstream=refuse
            )
        )
    assert (
        factory.settings,
        factory.gatekeeper,
        factory.connector,
        factory.observer,
    ) == before
    assert limiter.maxFailures == 3
    assert new.limiter is not limiter


def test_deprecatedReconfigureKeepsGivenConnector() -> None:
    """
    A connector given to the factory is kept across reconfigurations of
    the deprecated form, and the factory has no resolver pool of its own
    until one is asked for.
    """
    connector = FakeConnector()
    factory = ConnectProxyFactory(MemoryReactorClock(), connector=connector)
    with pytest.warns(DeprecationWarning):
        factory.reconfigure(ProxySettings(), Gatekeeper(AccessRules.defaults()))
    assert factory.connector is connector
    assert factory.resolverPool is None
    pool = factory.connectorContext().resolverPool
    assert factory.resolverPool is pool


def test_configConnectorUsedAsItIs() -> None:
    """
    A configuration's own connector is used as it is, at start and on
    reconfiguration, and the factory has no resolver pool of its own until
    one is asked for.
    """
    connector = FakeConnector()
    factory = ConnectProxyFactory.fromConfig(
        MemoryReactorClock(), ProxyConfig(connector=connector)
    )
    assert factory.connector is connector
    factory.reconfigure(ProxyConfig(connector=connector))
    assert factory.connector is connector
    assert factory.resolverPool is None
    pool = factory.connectorContext().resolverPool
    assert factory.resolverPool is pool


def test_connectorAndMakerExclusive() -> None:
    """
    A factory takes a connector or a maker, not both.
    """
    with pytest.raises(TypeError):
        ConnectProxyFactory(
            MemoryReactorClock(),
            connector=FakeConnector(),
            upstream=lambda c: FakeConnector(),
        )


@implementer(IUpstreamConnector)
class Remembering:
    """
    A connector that keeps every target (to check what a plugin gets).
    """

    def __init__(self) -> None:
        self.inner = FakeConnector()

    def connectUpstream(self, target: Any, protocol: Any) -> Any:
        return self.inner.connectUpstream(target, protocol)


def test_swappedConnectorUsedForNewRequests() -> None:
    """
    After a swap, new requests go to the new connector; one already being
    connected finishes on the old one.
    """
    old = Remembering()
    factory = ConnectProxyFactory(MemoryReactorClock(), upstream=lambda c: old)
    first = connectThrough(factory, "example.com:443")
    new = Remembering()
    factory.reconfigure(ProxyConfig(upstream=lambda c: new))
    second = connectThrough(factory, "example.org:443")
    [pending] = old.inner.attempts
    [attempt] = new.inner.attempts
    assert attempt.target.host == "example.org"
    pending.succeed()
    attempt.succeed()
    assert first.value() == second.value() == ESTABLISHED
    assert upstreamRequest("example.org").host == attempt.target.host


def test_makeServiceRefusesBadUpstream(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Should a connector plugin refuse its argument only when the service is
    made, the command still fails with a usage error naming the option.
    """
    monkeypatch.setattr(Options, "_checkUpstream", lambda self: None)
    options = parse("--upstream", "direct:oops")
    with pytest.raises(UsageError, match=r"^--upstream direct: direct takes no"):
        makeService(options, MemoryReactorClock())
