# -*- test-case-name: tests.test_assembly -*-
"""
What the parsed command line becomes.

L{connectproxy.tap.Options} parses and checks the arguments (and the
configuration file); L{buildConfig} builds from them the running
configuration, a L{ProxyConfig}: the settings, the access checks with their
failed-login limiter, what makes the connector, and the observers.  It does
so once at start and again at every reload (L{reloader}), and the factory
takes each whole (L{ConnectProxyFactory.fromConfig
<connectproxy.ConnectProxyFactory.fromConfig>}, L{ConnectProxyFactory.reconfigure
<connectproxy.ConnectProxyFactory.reconfigure>}).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from twisted.logger import Logger
from twisted.plugin import getPlugins

from . import plugins as pluginPackage
from ._admission import Gatekeeper, userPortal
from ._connector import ConnectorContext, ConnectorMaker
from ._limiter import FailureLimiter
from ._listeners import ListenerPlan
from ._observer import AccessLogObserver
from ._outgoing import OutgoingAddresses
from ._routing import ParentRoutes
from ._rules import AccessRules
from ._settings import ProxySettings, defaultMaxConnections
from ._upstream import DirectConnectorFactory
from .interfaces import (
    IAccessPolicy,
    IAccessPolicyFactory,
    IProxyObserver,
    IProxyObserverFactory,
    IUpstreamConnector,
    IUpstreamConnectorFactory,
)

__all__ = [
    "ParsedOptions",
    "ProxyConfig",
    "buildConfig",
    "connectorFactories",
    "connectorMaker",
    "directConnector",
    "gatekeeperFor",
    "policyFactories",
    "proxySettings",
    "reloader",
]

_log = Logger()

#: Makes the built-in direct connector (C{--upstream direct}).
directConnector: ConnectorMaker = partial(
    DirectConnectorFactory().connectorFromArgument, ""
)


def _defaultGatekeeper() -> Gatekeeper:
    return Gatekeeper(AccessRules.defaults())


def _accessLog() -> tuple[IProxyObserver, ...]:
    return (AccessLogObserver(),)


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """
    The running configuration of a proxy: what a reload replaces, whole.

    Every field has the command line's default, so an embedder names only
    what differs: C{ProxyConfig(connector=myConnector)}.

    @ivar settings: The tunables.
    @ivar gatekeeper: The access checks, with the failed-login limiter.
    @ivar upstream: Makes the connector from the factory's
        L{ConnectorContext} (its reactor, resolver pool, these settings and
        the gatekeeper's network rules): the C{--upstream} plugin's maker,
        the built-in direct connector's by default.
    @ivar connector: A connector used as it is, in place of one made by
        C{upstream}; C{None} to make one.
    @ivar observers: Told of refusals and tunnels; the access log by
        default.
    @ivar listen: The listener descriptions (C{--listen}).  Listeners are
        made once, at start: a reload that changes these only warns.
    @ivar plans: Where each listener would listen (those that are known
        before listening).
    @ivar allowClients: The client networks (C{--allow-client}), as
        written, for the open-proxy warning.
    @ivar checkers: The credential checkers (C{--auth}), stopped when this
        configuration is replaced (once requests being checked are done)
        or the proxy stops.
    """

    settings: ProxySettings = field(default_factory=ProxySettings)
    gatekeeper: Gatekeeper = field(default_factory=_defaultGatekeeper)
    upstream: ConnectorMaker = directConnector
    connector: IUpstreamConnector | None = None
    observers: tuple[IProxyObserver, ...] = field(default_factory=_accessLog)
    listen: tuple[str, ...] = ()
    plans: tuple[ListenerPlan, ...] = ()
    allowClients: tuple[str, ...] = ()
    checkers: tuple[Any, ...] = ()

    @property
    def unauthenticated(self) -> bool:
        """
        Whether clients tunnel without authenticating (no C{--auth}).
        """
        return self.gatekeeper.portal is None


class ParsedOptions(Protocol):
    """
    What L{buildConfig} reads of parsed L{connectproxy.tap.Options}.
    """

    argv: list[str]
    rules: AccessRules
    policies: list[IAccessPolicy]
    plans: list[ListenerPlan]

    def __getitem__(self, name: str) -> Any: ...

    def checkers(self) -> list[Any]: ...

    def parseOptions(self, options: Sequence[str] | None = None) -> None: ...


def policyFactories() -> dict[str, IAccessPolicyFactory]:
    """
    The access policy plugins installed, by name.
    """
    return {
        factory.name: factory
        for factory in getPlugins(IAccessPolicyFactory, pluginPackage)
    }


def connectorFactories() -> dict[str, IUpstreamConnectorFactory]:
    """
    The upstream connector plugins installed, by name.
    """
    return {
        factory.name: factory
        for factory in getPlugins(IUpstreamConnectorFactory, pluginPackage)
    }


def observerFactories() -> dict[str, IProxyObserverFactory]:
    """
    The observer plugins installed, by name.
    """
    return {
        factory.name: factory
        for factory in getPlugins(IProxyObserverFactory, pluginPackage)
    }


#: The observers when no C{--observer} is given.
DEFAULT_OBSERVERS = ("accesslog",)


def connectorMaker(options: ParsedOptions) -> ConnectorMaker:
    """
    @param options: Parsed options.
    @return: What makes the connector C{--upstream} names, with the parent
        proxies of C{--upstream-proxy} and C{--upstream-route} in front of
        it, from a L{ConnectorContext}; it raises L{ValueError} naming the
        option when the plugin refuses its argument or the C{--upstream-ca}
        file cannot be read.
    """
    name, _, argument = options["upstream"].partition(":")
    factory = connectorFactories()[name]
    # Where the value came from: the command line, or a key of the
    # configuration file.
    source = getattr(options, "_source", lambda name: f"--{name}")("upstream")

    def make(context: ConnectorContext) -> IUpstreamConnector:
        try:
            return factory.connectorFromArgument(argument, context)
        except ValueError as e:
            raise ValueError(f"{source} {name}: {e}") from None

    parents = ParentRoutes.fromOptions(
        options["upstream-proxy"], options["upstream-route"], options["upstream-ca"]
    )
    return make if parents is None else parents.maker(make)


def proxySettings(options: ParsedOptions) -> ProxySettings:
    """
    @param options: Parsed options.
    @return: The L{ProxySettings} they describe.
    """
    return ProxySettings(
        requestTimeout=options["request-timeout"],
        connectTimeout=options["connect-timeout"],
        idleTimeout=options["idle-timeout"],
        halfCloseTimeout=options["half-close-timeout"],
        abortTimeout=options["abort-timeout"],
        maxRequestLine=options["max-request-line"],
        maxHeadSize=options["max-head-size"],
        maxHeaderFields=options["max-header-fields"],
        maxConnections=_maxConnections(options),
        maxConnectionsPerClient=options["max-connections-per-client"],
        resolverThreads=options["resolver-threads"],
        resolverPerClient=options["resolver-per-client"],
        resolver=options["resolver"],
        dnsCacheSize=options["dns-cache-size"],
        outgoingAddresses=OutgoingAddresses.fromStrings(options["outgoing-address"]),
        shutdownGrace=options["shutdown-grace"],
        relay=options["relay"],
        upstreamKeepalive=options["upstream-keepalive"],
        upstreamIdleTimeout=options["upstream-idle-timeout"],
        logQuery=bool(options["log-query"]),
    )


def _maxConnections(options: ParsedOptions) -> int:
    """
    C{--max-connections}, or when it is not given what the descriptor limit
    in effect now allows.
    """
    given: int | None = options["max-connections"]
    return defaultMaxConnections() if given is None else given


def _limiter(options: ParsedOptions, reactor: Any) -> FailureLimiter | None:
    """
    The failed-login limiter the options describe, if any limit is on.
    """
    if not (options["auth-max-failures"] or options["auth-max-failed-users"]):
        return None
    return FailureLimiter(
        reactor,
        maxFailures=options["auth-max-failures"],
        window=options["auth-failure-window"],
        blockFor=options["auth-block-time"],
        maxUsers=options["auth-max-failed-users"],
    )


def gatekeeperFor(options: ParsedOptions, reactor: Any) -> Gatekeeper:
    """
    Build the access checks the options describe, binding the credential
    checkers to the reactor (their threads, their clock).

    @param options: Parsed options.
    @param reactor: The clock of the failed-login limiter and the checkers.
    """
    checkers = options.checkers()
    for checker in checkers:
        bind = getattr(checker, "bind", None)
        if bind is not None:
            bind(reactor)
    return Gatekeeper(
        options.rules,
        options.policies,
        userPortal(checkers) if checkers else None,
        options["auth-realm"],
        _limiter(options, reactor),
    )


def buildConfig(
    options: ParsedOptions,
    reactor: Any,
    *,
    connector: IUpstreamConnector | None = None,
    observers: Iterable[IProxyObserver] | None = None,
) -> ProxyConfig:
    """
    Build the running configuration that parsed options describe.

    @param options: Parsed L{connectproxy.tap.Options}.
    @param reactor: The reactor the proxy runs on (the limiter's clock, the
        host of the checkers' threads).
    @param connector: A connector to use in place of the one C{--upstream}
        names.
    @param observers: Observers to tell in place of the access log.
    @return: The configuration; its connector is made only when the
        factory takes it (it needs the factory's resolver pool).
    """
    return ProxyConfig(
        settings=proxySettings(options),
        gatekeeper=gatekeeperFor(options, reactor),
        upstream=connectorMaker(options),
        connector=connector,
        observers=_accessLog() if observers is None else tuple(observers),
        listen=tuple(options["listen"]),
        plans=tuple(options.plans),
        allowClients=tuple(options["allow-client"]),
        checkers=tuple(options.checkers()),
    )


#: The logging options, which a reload does not change.
_LOGGING = ("access-log", "access-log-format", "log-level")


def reloader(
    options: ParsedOptions,
    reactor: Any,
    *,
    connector: IUpstreamConnector | None = None,
    observers: Iterable[IProxyObserver] | None = None,
) -> Callable[[], ProxyConfig]:
    """
    What loads the configuration again, at a reload: it parses the same
    arguments again, so the configuration file, the password files and the
    policies' files are read as they are now, and builds what they
    describe, with the same C{connector} and C{observers} when given.

    @param options: The options parsed at start.
    @param reactor: As for L{buildConfig}.
    @return: A callable returning the new L{ProxyConfig}; it raises
        L{twisted.python.usage.UsageError}, L{ValueError} or L{OSError}
        when the configuration does not load.
    """
    argv = list(options.argv)
    kind = type(options)
    if observers is not None:
        observers = tuple(observers)

    startObservers = options["observer"]
    startMetrics = options["metrics"]
    startLogging = [options[name] for name in _LOGGING]
    startWorkers = options["workers"]

    def load() -> ProxyConfig:
        parsed = kind()
        parsed.parseOptions(argv)
        if parsed["observer"] != startObservers:
            _log.warn(
                "--observer changes take effect only after a restart",
                event="reload_observer_ignored",
            )
        if parsed["metrics"] != startMetrics:
            _log.warn(
                "--metrics changes take effect only after a restart",
                event="reload_metrics_ignored",
            )
        if [parsed[name] for name in _LOGGING] != startLogging:
            _log.warn(
                "--access-log, --access-log-format and --log-level changes "
                "take effect only after a restart",
                event="reload_logging_ignored",
            )
        if parsed["workers"] != startWorkers:
            _log.warn(
                "--workers changes take effect only after a restart",
                event="reload_workers_ignored",
            )
        return buildConfig(parsed, reactor, connector=connector, observers=observers)

    return load
