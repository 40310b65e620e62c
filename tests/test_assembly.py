# -*- test-case-name: tests.test_assembly -*-
"""
Tests for L{connectproxy._assembly}: the running configuration
(L{ProxyConfig}) built from parsed options, at start and on reload; how the
factory takes one whole; what C{makeService} does with a connector and
observers of its own; and the deprecated ways that came before.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent

from connectproxy import (
    AccessLogObserver,
    AccessRules,
    ConnectProxyFactory,
    DirectConnector,
    Gatekeeper,
    ProxyConfig,
    ProxySettings,
    Refusal,
)
from connectproxy._htpasswd import HtpasswdChecker
from connectproxy._limiter import FailureLimiter
from connectproxy._networks import NetworkRules
from connectproxy._rules import PortRules
from connectproxy.tap import Options, buildConfig, makeService
from connectproxy.testing import (
    FakeConnector,
    HalfCloseableStringTransport,
    ProxyHarness,
    RecordingObserver,
    connectHead,
    connectorContext,
)
from tests._helpers import (
    ESTABLISHED,
    StaticPolicy,
    listenerFactory,
    named,
    parse,
    reloaderOf,
    rulesWith,
    sha1Entry,
    writeConfig,
)

ROOT = Path(__file__).resolve().parent.parent
PEER = IPv4Address("TCP", "127.0.0.1", 40000)


def request(
    factory: ConnectProxyFactory, authority: str
) -> HalfCloseableStringTransport:
    """
    Send a CONNECT for C{authority} from a loopback client to a factory
    and return the client's transport.
    """
    protocol = factory.buildProtocol(PEER)
    transport = HalfCloseableStringTransport(peerAddress=PEER)
    protocol.makeConnection(transport)
    protocol.dataReceived(connectHead(authority))
    return transport


# ProxyConfig


def test_configDefaults() -> None:
    """
    A L{ProxyConfig} has the command line's defaults: default settings, the
    safe access rules without authentication, the direct connector, and
    the access log; each has an access log and a gatekeeper of its own.
    """
    config = ProxyConfig()
    assert config.settings == ProxySettings()
    assert config.gatekeeper.rules == AccessRules.defaults()
    assert config.gatekeeper.portal is None and config.unauthenticated
    assert config.gatekeeper.limiter is None
    assert config.connector is None
    assert isinstance(config.upstream(connectorContext()), DirectConnector)
    [observer] = config.observers
    assert isinstance(observer, AccessLogObserver)
    other = ProxyConfig()
    assert other.observers[0] is not observer
    assert other.gatekeeper is not config.gatekeeper
    assert (config.listen, config.plans, config.allowClients, config.checkers) == (
        (),
        (),
        (),
        (),
    )


def test_configFrozen() -> None:
    """
    A configuration is a record: replaced, never changed.
    """
    config = ProxyConfig()
    with pytest.raises(AttributeError):
        config.settings = ProxySettings(idleTimeout=1)  # type: ignore[misc]


# buildConfig


def test_buildConfig(tmp_path: Path) -> None:
    """
    L{buildConfig} builds what the options describe: the settings, the
    access checks with the parsed rules and policies, a portal over the
    checkers (bound to the reactor), the realm and the failed-login limiter
    on the reactor's clock, the C{--upstream} maker, the access log, and
    what the listeners need.
    """
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(sha1Entry("alice", "secret"), encoding="utf-8")
    hosts = tmp_path / "hosts"
    hosts.write_text("a.example\n", encoding="utf-8")
    options = parse(
        "--idle-timeout",
        "42",
        "--resolver-threads",
        "5",
        "--auth",
        f"htpasswd:{htpasswd}",
        "--auth-realm",
        "Corp",
        "--auth-max-failures",
        "3",
        "--auth-max-failed-users",
        "4",
        "--auth-failure-window",
        "30",
        "--auth-block-time",
        "90",
        "--policy",
        f"hostlist:{hosts}",
        "--allow-client",
        "192.0.2.0/24",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    )
    clock = MemoryReactorClock()
    config = buildConfig(options, clock)
    assert config.settings == ProxySettings(idleTimeout=42, resolverThreads=5)
    gatekeeper = config.gatekeeper
    assert gatekeeper.rules is options.rules
    assert gatekeeper.policies == options.policies
    assert gatekeeper.realm == "Corp"
    assert gatekeeper.portal is not None and not config.unauthenticated
    [checker] = config.checkers
    assert isinstance(checker, HtpasswdChecker)
    bound: object = checker._reactor
    assert bound is clock
    limiter = gatekeeper.limiter
    assert limiter is not None and limiter._clock is clock
    assert (limiter.maxFailures, limiter.maxUsers) == (3, 4)
    assert (limiter.window, limiter.blockFor) == (30, 90)
    assert config.connector is None
    made = config.upstream(connectorContext(clock, config.settings))
    assert isinstance(made, DirectConnector)
    [observer] = config.observers
    assert isinstance(observer, AccessLogObserver)
    assert config.listen == ("tcp:0:interface=127.0.0.1",)
    assert [plan.description for plan in config.plans] == list(config.listen)
    assert config.allowClients == ("192.0.2.0/24",)


def test_buildConfigWithoutLimits() -> None:
    """
    With both failed-login limits turned off there is no limiter.
    """
    options = parse("--auth-max-failures", "0", "--auth-max-failed-users", "0")
    assert buildConfig(options, MemoryReactorClock()).gatekeeper.limiter is None


def test_buildConfigEachTimeNew() -> None:
    """
    Each build makes new access checks and a new limiter, so a failed
    reload leaves the ones in use alone.
    """
    options = parse()
    first = buildConfig(options, MemoryReactorClock())
    second = buildConfig(options, MemoryReactorClock())
    assert first.gatekeeper is not second.gatekeeper
    assert first.gatekeeper.limiter is not second.gatekeeper.limiter


def test_buildConfigGiven() -> None:
    """
    A connector and observers given to L{buildConfig} are the
    configuration's: the connector in place of the one C{--upstream} makes,
    the observers (any iterable) in place of the access log.
    """
    connector = FakeConnector()
    observer = RecordingObserver()
    config = buildConfig(
        parse(),
        MemoryReactorClock(),
        connector=connector,
        observers=iter([observer]),
    )
    assert config.connector is connector
    assert config.observers == (observer,)


def test_upstreamMakerNamesOption() -> None:
    """
    The C{--upstream} maker says which option to fix when the plugin
    refuses its argument.
    """
    options = parse()
    options["upstream"] = "direct:oops"
    config = buildConfig(options, MemoryReactorClock())
    with pytest.raises(ValueError, match=r"^--upstream direct: direct takes no"):
        config.upstream(connectorContext())


# The factory takes a configuration whole.


def test_factoryFromConfig() -> None:
    """
    L{ConnectProxyFactory.fromConfig} runs a configuration: its settings,
    access checks, observers, and the connector its maker makes on the
    factory's resolver pool.
    """
    clock = MemoryReactorClock()
    observer = RecordingObserver()
    config = ProxyConfig(settings=ProxySettings(idleTimeout=7), observers=(observer,))
    factory = ConnectProxyFactory.fromConfig(clock, config)
    assert factory.reactor is clock
    assert factory.settings is config.settings
    assert factory.gatekeeper is config.gatekeeper
    assert isinstance(factory.connector, DirectConnector)
    assert factory.connector.resolver is factory.resolverPool is not None
    request(factory, "example.com:22")
    assert [event.target for event in observer.refused] == ["example.com:22"]


def test_reconfigureSwapsObservers() -> None:
    """
    C{reconfigure} swaps the observers whole: new refusals reach the new
    ones only.
    """
    old, new = RecordingObserver(), RecordingObserver()
    factory = ConnectProxyFactory.fromConfig(
        MemoryReactorClock(), ProxyConfig(connector=FakeConnector(), observers=(old,))
    )
    request(factory, "example.com:22")
    factory.reconfigure(ProxyConfig(connector=FakeConnector(), observers=(new,)))
    request(factory, "example.com:23")
    assert [event.target for event in old.refused] == ["example.com:22"]
    assert [event.target for event in new.refused] == ["example.com:23"]


def test_reconfigureCarriesLimiter() -> None:
    """
    The failed-login limiter in use takes the place of the new
    configuration's, with its limits: an address blocked stays blocked.
    A configuration without a limiter turns limiting off.
    """
    clock = MemoryReactorClock()
    limiter = FailureLimiter(clock, maxFailures=1, blockFor=60)
    factory = ConnectProxyFactory.fromConfig(
        clock,
        ProxyConfig(gatekeeper=Gatekeeper(AccessRules.defaults(), limiter=limiter)),
    )
    limiter.recordFailure("192.0.2.7", "alice")
    new = Gatekeeper(
        AccessRules.defaults(),
        limiter=FailureLimiter(clock, maxFailures=5, blockFor=30, maxUsers=2),
    )
    factory.reconfigure(ProxyConfig(gatekeeper=new))
    assert factory.gatekeeper is new and new.limiter is limiter
    assert (limiter.maxFailures, limiter.blockFor, limiter.maxUsers) == (5, 30, 2)
    assert limiter.blockedFor("192.0.2.7", "alice") == 60
    factory.reconfigure(ProxyConfig())
    assert factory.gatekeeper.limiter is None


def test_deprecatedReconfigureNeedsGatekeeper() -> None:
    """
    The deprecated form without a gatekeeper is refused, as it always
    needed one.
    """
    factory = ConnectProxyFactory(MemoryReactorClock())
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError):
        factory.reconfigure(ProxySettings())  # type: ignore[call-overload]


def harnessConfig(
    harness: ProxyHarness, settings: ProxySettings, gatekeeper: Gatekeeper
) -> ProxyConfig:
    """
    A configuration with new settings and access checks, and the harness's
    own connector and observer.
    """
    return ProxyConfig(
        settings=settings,
        gatekeeper=gatekeeper,
        connector=harness.connector,
        observers=(harness.observer,),
    )


def test_reconfigureAffectsNewConnections() -> None:
    """
    After C{reconfigure}, new connections use the new settings and access
    checks.
    """
    harness = ProxyHarness()
    rules = rulesWith(ports=PortRules.fromStrings(["8443"]))
    harness.factory.reconfigure(
        harnessConfig(harness, ProxySettings(requestTimeout=5), Gatekeeper(rules))
    )
    client = harness.connectClient()
    client.send(connectHead("example.com:8443"))
    assert len(harness.connector.attempts) == 1
    client = harness.connectClient()
    client.send(connectHead("example.com:443"))
    assert client.response().status == 403
    slow = harness.connectClient()
    harness.clock.advance(5)
    assert slow.response().status == 408


def test_reconfigureKeepsTunnels() -> None:
    """
    A tunnel established before C{reconfigure} keeps relaying both ways,
    even when the new checks would refuse it.
    """
    harness = ProxyHarness()
    client = harness.connectClient()
    client.send(connectHead())
    attempt = harness.connector.attempts[0]
    upstream = attempt.succeed()
    refuseAll = StaticPolicy(Refusal(403, "closed for maintenance"))
    harness.factory.reconfigure(
        harnessConfig(
            harness, ProxySettings(), Gatekeeper(AccessRules.defaults(), [refuseAll])
        )
    )
    client.send(b"ping")
    attempt.protocol.dataReceived(b"pong")
    assert upstream.value() == b"ping"
    assert client.transport.value() == ESTABLISHED + b"pong"
    assert refuseAll.seen == []
    newcomer = harness.connectClient()
    newcomer.send(connectHead())
    assert newcomer.response().status == 403


def test_directConnectorGetsNetworkRules() -> None:
    """
    The built-in connector applies the gatekeeper's destination network
    rules, and C{reconfigure} hands it the new ones.
    """
    first = NetworkRules.fromStrings(deny=["8.8.8.0/24"])
    factory = ConnectProxyFactory(
        MemoryReactorClock(),
        ProxySettings(),
        gatekeeper=Gatekeeper(rulesWith(networks=first)),
    )
    assert isinstance(factory.connector, DirectConnector)
    assert factory.connector.networks is first
    networks = NetworkRules.fromStrings(allow=["10.0.0.0/8"])
    gatekeeper = Gatekeeper(rulesWith(networks=networks))
    factory.reconfigure(ProxyConfig(gatekeeper=gatekeeper))
    assert factory.gatekeeper is gatekeeper
    assert factory.connector.networks is networks


# makeService with a connector and observers of its own


def test_makeServiceConnector(tmp_path: Path) -> None:
    """
    A connector given to C{makeService} replaces the one C{--upstream}
    names, and stays across reloads.
    """
    path = writeConfig(tmp_path, "connect-timeout = 5\n")
    connector = FakeConnector()
    service = makeService(
        parse("--config", str(path)), MemoryReactorClock(), connector=connector
    )
    factory = listenerFactory(service)
    assert factory.connector is connector
    assert factory.resolverPool is None
    writeConfig(tmp_path, "connect-timeout = 8\n")
    assert reloaderOf(service).reload()
    assert factory.settings.connectTimeout == 8
    assert factory.connector is connector
    request(factory, "example.com:443")
    [attempt] = connector.attempts
    assert attempt.target.host == "example.com"


def test_makeServiceObservers(tmp_path: Path, logEvents: list[LogEvent]) -> None:
    """
    Observers given to C{makeService} replace the access log, and stay
    across reloads.
    """
    path = writeConfig(tmp_path, "idle-timeout = 60\n")

    def observers() -> Iterator[RecordingObserver]:
        yield observer

    observer = RecordingObserver()
    service = makeService(
        parse("--config", str(path)), MemoryReactorClock(), observers=observers()
    )
    factory = listenerFactory(service)
    request(factory, "example.com:22")
    writeConfig(tmp_path, "idle-timeout = 5\n")
    assert reloaderOf(service).reload()
    assert factory.settings.idleTimeout == 5
    request(factory, "example.com:23")
    assert [(event.target, event.status) for event in observer.refused] == [
        ("example.com:22", 403),
        ("example.com:23", 403),
    ]
    assert named(logEvents, "request_refused") == []


def test_makeServiceDefaultObservers(logEvents: list[LogEvent]) -> None:
    """
    Without observers of its own, the proxy tells the access log, before
    and after a reload.
    """
    service = makeService(parse(), MemoryReactorClock())
    factory = listenerFactory(service)
    request(factory, "example.com:22")
    assert reloaderOf(service).reload()
    request(factory, "example.com:23")
    events = named(logEvents, "request_refused")
    assert [event["target"] for event in events] == [
        "example.com:22",
        "example.com:23",
    ]


def test_reloadFailureKeepsLimits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A reload that fails after the new configuration was built (the
    connector cannot be made) leaves the limiter in use and its limits
    alone.
    """
    path = writeConfig(tmp_path, "auth-max-failures = 2\n")
    service = makeService(parse("--config", str(path)), MemoryReactorClock())
    factory = listenerFactory(service)
    limiter = factory.gatekeeper.limiter
    assert limiter is not None
    gatekeeper = factory.gatekeeper
    writeConfig(tmp_path, 'auth-max-failures = 7\nupstream = "direct:oops"\n')
    monkeypatch.setattr(Options, "_checkUpstream", lambda self: None)
    assert not reloaderOf(service).reload()
    assert factory.gatekeeper is gatekeeper and gatekeeper.limiter is limiter
    assert limiter.maxFailures == 2


# The deprecated ways


@pytest.mark.parametrize(
    "name, call, expected",
    [
        ("settings", lambda o: o.settings(), ProxySettings(idleTimeout=9)),
        ("unauthenticated", lambda o: o.unauthenticated(), True),
    ],
)
def test_optionsBuildersDeprecated(name: str, call: object, expected: object) -> None:
    """
    The methods of L{Options} that built parts of the configuration still
    do, with a deprecation warning that names what replaces them.
    """
    options = parse("--idle-timeout", "9")
    message = (
        rf"^connectproxy\.tap\.Options\.{name} was deprecated in connectproxy "
        rf"0\.1\.0; please use connectproxy\.tap\.buildConfig\(options, "
        rf"reactor\)\.{name} instead$"
    )
    with pytest.warns(DeprecationWarning, match=message):
        assert call(options) == expected  # type: ignore[operator]


def test_optionsGatekeeperDeprecated() -> None:
    """
    C{Options.gatekeeper(reactor)} still builds the access checks, and
    C{Options.upstream()} the connector maker, with deprecation warnings.
    """
    options = parse("--allow-port", "8443", "--auth-max-failures", "4")
    clock = MemoryReactorClock()
    with pytest.warns(DeprecationWarning, match=r"Options\.gatekeeper was dep"):
        gatekeeper = options.gatekeeper(clock)
    assert isinstance(gatekeeper, Gatekeeper)
    assert gatekeeper.rules is options.rules
    assert gatekeeper.limiter is not None and gatekeeper.limiter.maxFailures == 4
    with pytest.warns(DeprecationWarning, match=r"Options\.upstream was dep"):
        maker = options.upstream()
    assert isinstance(maker(connectorContext()), DirectConnector)


# No import cycle


def test_assemblyKnowsNoCommandLine() -> None:
    """
    The assembly and the services do not import the command line: the
    command line imports them.
    """
    code = (
        "import sys, connectproxy._assembly, connectproxy._service; "
        "sys.exit('connectproxy.tap' in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
