# -*- test-case-name: tests.test_tap -*-
"""
The command line of C{twistd connectproxy} and C{twist connectproxy}:
L{Options} parses and checks the arguments (and the configuration file);
L{makeService} has L{buildConfig} build the running configuration from
them and returns the services that run it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from functools import partial
from typing import Any, NoReturn

from twisted.application.service import IService, MultiService
from twisted.copyright import version as twistedVersion
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.strcred import AuthOptionMixin
from twisted.internet.testing import MemoryReactor
from twisted.python import usage
from twisted.python.deprecate import deprecated

from ._acceptguard import REFUSAL, AcceptGuard, DescriptorReserve, ExhaustionReport
from ._accesslog import FORMATS, FileAccessLog
from ._admission import Gatekeeper
from ._assembly import (
    DEFAULT_OBSERVERS,
    buildConfig,
    connectorFactories,
    connectorMaker,
    gatekeeperFor,
    observerFactories,
    policyFactories,
    proxySettings,
    reloader,
)
from ._auth import UNSUPPORTED_CHECKERS, adaptChecker
from ._config import ConfigKey, applyConfig, loadConfig
from ._connector import ConnectorContext, ConnectorMaker
from ._factory import ConnectProxyFactory
from ._limits import DescriptorLimitService
from ._listeners import (
    ListenerError,
    ListenerPlan,
    SystemdSocketMissing,
    overlap,
    planListener,
)
from ._loglevel import LogLevelService, logLevel
from ._logwriter import LineWriter, LineWriterService
from ._networks import NetworkRules
from ._observer import ObserverFanOut
from ._observercontext import ObserverContext, idleContext, makeObservers
from ._optionvalues import (
    accessLogFormat,
    accessLogPath,
    byteCount,
    checkNetwork,
    connectorChoice,
    count,
    fieldCount,
    nonNegativeFloat,
    parentProxyURL,
    positiveCount,
    positiveFloat,
    realm,
    relayMode,
    upstreamRoute,
)
from ._outgoing import OutgoingAddresses, warnUnbindable
from ._resolver import ResolverPool
from ._rules import (
    DEFAULT_PORTS,
    AccessRules,
    ClientRules,
    HostRules,
    PortRules,
    parsePortRange,
)
from ._service import proxyListeners, proxyService
from ._settings import ProxySettings
from ._tunnel import DEPRECATED_IN as _DEPRECATED_IN
from ._version import __version__
from .interfaces import (
    IAccessPolicy,
    IProxyObserver,
    IUpstreamConnector,
)

__all__ = ["DEFAULT_LISTEN", "Options", "buildConfig", "makeService"]

#: Where the proxy listens when no C{--listen} is given: loopback only.
DEFAULT_LISTEN = "tcp:3128:interface=127.0.0.1"

_defaults = ProxySettings()


#: What replaces the deprecated methods of L{Options} that built things.
_BUILT = "connectproxy.tap.buildConfig(options, reactor)"


#: An example value of each repeatable option, for messages about the
#: configuration file.
_LIST_EXAMPLES = {
    "listen": DEFAULT_LISTEN,
    "allow-port": "443",
    "allow-network": "10.0.0.0/8",
    "deny-network": "10.9.0.0/16",
    "allow-host": "*.example.com",
    "deny-host": "bad.example.com",
    "allow-client": "192.0.2.0/24",
    "trusted-proxy": "10.0.0.0/8",
    "policy": "hostlist:/etc/connectproxy/hosts",
    "observer": "accesslog",
    "auth": "htpasswd:/etc/connectproxy/htpasswd",
    "outgoing-address": "192.0.2.10",
    "upstream-route": "*.example.com=http://parent.example:3128",
    "metrics": "tcp:9108:interface=127.0.0.1",
}


class Options(usage.Options, AuthOptionMixin):
    """
    Options for C{twistd connectproxy}: they parse and check the arguments
    and the configuration file, and touch no reactor.  L{buildConfig}
    builds the running configuration from them.

    @ivar argv: The arguments parsed, kept so that a reload can parse them
        again (and re-read the configuration file).
    @ivar rules: The built-in access rules, parsed, after L{postOptions}.
    @ivar policies: The plugin policies, made from their arguments (which
        checks them), in order, after L{postOptions}.
    @ivar plans: Where each listener would listen, after parsing.
    @ivar metricsPlans: Where each metrics listener would listen, after
        parsing.
    """

    synopsis = "[options]"
    longdesc = (
        "An HTTP CONNECT forward proxy. Clients send 'CONNECT host:port'; the "
        "proxy connects to the target and relays bytes both ways. By default "
        "it listens on 127.0.0.1:3128, serves loopback clients only, tunnels "
        "to port 443 only, and never to loopback, private or other "
        "non-global addresses. Options can also come from --config FILE "
        "(TOML, the same keys); the command line wins. SIGHUP re-reads the "
        "file, password files and rules without dropping tunnels."
    )

    supportedInterfaces = [IUsernamePassword]

    optFlags: list[list[Any]] = [
        [
            "auth-allow-plaintext",
            None,
            "Accept plaintext passwords in htpasswd files (refused otherwise).",
        ],
        [
            "check-config",
            None,
            "Check the options, the configuration file, password files, "
            "policies, listeners and their certificates; print where the proxy "
            "would listen and exit (0: usable, 1: not), without listening.",
        ],
    ]

    #: Options that are not configuration, so not keys of the file.
    _notInFile = ("config", "check-config")

    optParameters: list[list[Any]] = [
        ["config", None, None, "Read options from this TOML file."],
        [
            "connect-timeout",
            None,
            _defaults.connectTimeout,
            "Seconds allowed for everything between the request head and the "
            "200: access checks, name resolution and every address tried; the "
            "client then gets 504 (503 while access is still being checked).",
            positiveFloat,
        ],
        [
            "idle-timeout",
            None,
            _defaults.idleTimeout,
            "Seconds a tunnel may go without a byte in either direction "
            "before it is closed.",
            positiveFloat,
        ],
        [
            "half-close-timeout",
            None,
            _defaults.halfCloseTimeout,
            "Seconds a tunnel with one direction finished (one side sent its "
            "FIN) may go without a byte before it is closed; the shorter of "
            "this and --idle-timeout applies.",
            positiveFloat,
        ],
        [
            "request-timeout",
            None,
            _defaults.requestTimeout,
            "Seconds a client has to send its complete request head; the "
            "client then gets 408 (slow clients cannot hold connections).",
            positiveFloat,
        ],
        [
            "abort-timeout",
            None,
            _defaults.abortTimeout,
            "Seconds a graceful close may take before the connection is aborted.",
            positiveFloat,
        ],
        [
            "shutdown-grace",
            None,
            _defaults.shutdownGrace,
            "Seconds established tunnels may keep running after SIGTERM, "
            "once the listeners are closed; then they are closed (reason "
            "shutdown). A second SIGTERM or SIGINT closes them at once. 0 "
            "closes them at once.",
            nonNegativeFloat,
        ],
        [
            "relay",
            None,
            _defaults.relay,
            "How tunnels move bytes: splice (splice(2) between plain TCP "
            "sockets, Linux; the bytes stay in the kernel), transport (through "
            "Twisted's transports), or auto (splice where it applies, the "
            "transports elsewhere: TLS, https:// parents, UNIX sockets). "
            "splice refuses to start where splice(2) does not exist.",
            relayMode,
        ],
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
        [
            "max-request-line",
            None,
            _defaults.maxRequestLine,
            "Longest request line accepted, in bytes; longer gets 414.",
            byteCount,
        ],
        [
            "max-head-size",
            None,
            _defaults.maxHeadSize,
            "Largest request head (request line and header fields) accepted, "
            "in bytes; larger gets 431.",
            byteCount,
        ],
        [
            "max-header-fields",
            None,
            _defaults.maxHeaderFields,
            "Most header fields in a request head; more gets 431.",
            fieldCount,
        ],
        [
            "max-connections",
            None,
            None,
            "Most client connections at once; more get 503 (0: no limit). The "
            "default is what the descriptor limit allows, (limit - 64) / 2, "
            "after the proxy raised it to the hard limit at start.",
            count,
        ],
        [
            "max-connections-per-client",
            None,
            _defaults.maxConnectionsPerClient,
            "Most connections at once from one client address; more get 503.",
            count,
        ],
        [
            "resolver-threads",
            None,
            _defaults.resolverThreads,
            "Most name lookups at once, each in a thread of the proxy's own "
            "resolver pool; more wait their turn, and get 503 if the connect "
            "deadline passes first.",
            positiveCount,
        ],
        [
            "resolver-per-client",
            None,
            _defaults.resolverPerClient,
            "Most name lookups at once for one client address, so that one "
            "client's slow names cannot hold up the others; more wait their "
            "turn. 0 lets one client use every resolver thread.",
            count,
        ],
        [
            "upstream",
            None,
            "direct",
            "How the proxy reaches targets: an upstream connector plugin, as "
            "NAME or NAME:ARGUMENT. See --help-upstreams.",
            connectorChoice,
        ],
        [
            "upstream-proxy",
            None,
            None,
            "Reach targets through this parent proxy, with CONNECT: "
            "http://HOST:PORT or https://HOST:PORT, with USER:PASSWORD@ before "
            "the host for its Basic credentials (percent-encoded). "
            "--upstream-route overrides it per host.",
            parentProxyURL,
        ],
        [
            "upstream-ca",
            None,
            None,
            "Trust only the CA certificates in this PEM file for https:// "
            "parent proxies, instead of the system's; re-read on SIGHUP.",
        ],
        [
            "auth-realm",
            None,
            "connectproxy",
            "The realm named in Proxy-Authenticate challenges (printable ASCII).",
            realm,
        ],
        [
            "auth-cache-ttl",
            None,
            30.0,
            "Seconds a verified user name and password is remembered (as a "
            "keyed hash) before it is verified again; 0 turns this off.",
            nonNegativeFloat,
        ],
        [
            "auth-max-failures",
            None,
            10,
            "Failed logins for one user name from one client address within "
            "--auth-failure-window before that user name is refused from that "
            "address with 429 for --auth-block-time (other users behind the "
            "same address still log in); 0 turns this off.",
            count,
        ],
        [
            "auth-max-failed-users",
            None,
            20,
            "Different user names with failed logins from one client address "
            "within --auth-failure-window before the whole address is refused "
            "with 429 for --auth-block-time (password spraying); 0 turns this "
            "off.",
            count,
        ],
        [
            "auth-failure-window",
            None,
            60.0,
            "Seconds over which failed logins are counted.",
            positiveFloat,
        ],
        [
            "auth-block-time",
            None,
            60.0,
            "Seconds a user name (or, after --auth-max-failed-users, a whole "
            "client address) is refused after too many failed logins.",
            positiveFloat,
        ],
    ]

    #: Repeatable options, each a list of strings.
    _lists = (
        "listen",
        "allow-port",
        "allow-network",
        "deny-network",
        "allow-host",
        "deny-host",
        "allow-client",
        "trusted-proxy",
        "policy",
        "outgoing-address",
        "observer",
        "upstream-route",
        "metrics",
    )

    def __init__(self) -> None:
        super().__init__()
        for name in self._lists:
            self[name] = []
        self.argv: list[str] = []
        # Which options the command line gave (getopt has already expanded
        # abbreviations when the handlers run): the file does not override
        # those.
        self.given: set[str] = set()
        for name, handler in list(self._dispatch.items()):
            self._dispatch[name] = partial(self._dispatchGiven, handler)
        self.rules = AccessRules.defaults()
        self.policies: list[IAccessPolicy] = []
        self.plans: list[ListenerPlan] = []
        self.metricsPlans: list[ListenerPlan] = []
        # systemd: listeners without their socket, refused after parsing
        # unless only checking the configuration (outside systemd).
        self._missingSockets: dict[str, SystemdSocketMissing] = {}
        self._missingMetricsSockets: dict[str, SystemdSocketMissing] = {}

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse the options.  Under C{twistd} or C{twist} (when this is their
        subcommand's options) an error exits with the message alone, instead
        of the whole usage text that they print before it.

        @raise usage.UsageError: For a bad option, when not a subcommand.
        @raise SystemExit: For a bad option, when a subcommand.
        """
        self.argv = list(sys.argv[1:] if options is None else options)
        try:
            super().parseOptions(self.argv)
        except usage.UsageError as e:
            if self.parent is None:
                raise
            from ._command import errorText

            raise SystemExit(errorText(e)) from None

    def _dispatchGiven(self, handler: Any, name: str, value: str) -> None:
        """
        Handle one option from the command line, noting that it was given,
        with error messages that name the option.
        """
        self.given.add(name)
        try:
            if isinstance(handler, usage.CoerceParameter):
                try:
                    self[name] = handler.coerce(value)
                except ValueError as e:
                    raise usage.UsageError(str(e)) from None
            else:
                handler(name, value)
        except usage.UsageError as e:
            message = str(e).removeprefix("Unexpected error: ")
            if not message.startswith(f"--{name}"):
                message = f"--{name}: {message}"
            raise usage.UsageError(message) from None

    def _append(self, name: str, value: str) -> None:
        self[name].append(value)

    def opt_listen(self, description: str) -> None:
        """
        Listen on this strports description (repeatable), for example
        tcp:3128:interface=127.0.0.1, tcp6:3128:interface=\\:\\:1,
        unix:/run/connectproxy.sock, ssl:3129:privateKey=key.pem:certKey=cert.pem,
        systemd:domain=INET:index=0 or haproxy:tcp:3128.
        [default: tcp:3128:interface=127.0.0.1]
        """
        try:
            self.plans.append(planListener(description))
        except SystemdSocketMissing as e:
            self._missingSockets[description] = e
        except ListenerError as e:
            raise usage.UsageError(f"--listen {e}") from None
        self._append("listen", description)

    def opt_version(self) -> NoReturn:
        """
        Print connectproxy's version (and Twisted's) and exit.
        """
        sys.stdout.write(f"connectproxy {__version__}\nTwisted {twistedVersion}\n")
        raise SystemExit(0)

    def opt_allow_port(self, ports: str) -> None:
        """
        Allow CONNECT to this port or range of ports, like 443 or 8000-8080
        (repeatable). [default: 443]
        """
        try:
            parsePortRange(ports)
        except ValueError as e:
            raise usage.UsageError(f"--allow-port: {e}") from None
        self._append("allow-port", ports)

    def opt_allow_network(self, network: str) -> None:
        """
        Allow tunnels to addresses in this network (CIDR, repeatable), for
        example 10.1.0.0/16. By default only globally routable addresses
        are allowed; the most specific --allow-network or --deny-network
        rule wins.
        """
        self._addNetwork("allow-network", network)

    def opt_deny_network(self, network: str) -> None:
        """
        Deny tunnels to addresses in this network (CIDR, repeatable).
        """
        self._addNetwork("deny-network", network)

    def _addNetwork(self, name: str, network: str) -> None:
        try:
            checkNetwork(network)
        except ValueError as e:
            raise usage.UsageError(f"--{name}: {e}") from None
        self._append(name, network)

    def opt_allow_host(self, pattern: str) -> None:
        """
        Allow tunnels to this host name, or to names under a domain with
        *.example.com (repeatable). Once any is given, other names are
        denied.
        """
        self._addHost("allow-host", pattern)

    def opt_deny_host(self, pattern: str) -> None:
        """
        Deny tunnels to this host name, or to names under a domain with
        *.example.com (repeatable).
        """
        self._addHost("deny-host", pattern)

    def _addHost(self, name: str, pattern: str) -> None:
        try:
            HostRules.fromStrings(allow=[pattern])
        except ValueError as e:
            raise usage.UsageError(f"--{name}: {e}") from None
        self._append(name, pattern)

    def opt_allow_client(self, network: str) -> None:
        """
        Serve clients from this network (CIDR, repeatable), besides loopback
        clients. Others get 403.
        """
        try:
            checkNetwork(network)
        except ValueError as e:
            raise usage.UsageError(f"--allow-client: {e}") from None
        self._append("allow-client", network)

    def opt_trusted_proxy(self, network: str) -> None:
        """
        Believe PROXY-protocol headers (haproxy: listeners) from load
        balancers in this network (CIDR, repeatable), besides loopback.
        Clients behind them must be in an --allow-client network.
        """
        try:
            checkNetwork(network)
        except ValueError as e:
            raise usage.UsageError(f"--trusted-proxy: {e}") from None
        self._append("trusted-proxy", network)

    def opt_outgoing_address(self, address: str) -> None:
        """
        Make upstream connections from this IP address of the machine
        (repeatable: at most one IPv4 and one IPv6 address). Target
        addresses of a family without one are not tried.
        """
        try:
            OutgoingAddresses.fromStrings([*self["outgoing-address"], address])
        except ValueError as e:
            raise usage.UsageError(f"--outgoing-address: {e}") from None
        self._append("outgoing-address", address)

    def opt_policy(self, description: str) -> None:
        """
        Apply this access policy plugin, as NAME or NAME:ARGUMENT
        (repeatable; applied in order after the built-in rules). See
        --help-policies.
        """
        name = description.partition(":")[0]
        if name not in policyFactories():
            raise usage.UsageError(
                f"no policy plugin named {name!r} "
                f"(installed: {', '.join(sorted(policyFactories())) or 'none'})"
            )
        self._append("policy", description)

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

    def opt_upstream_route(self, route: str) -> None:
        """
        Reach targets that match PATTERN (as in --allow-host) through a
        parent proxy, PATTERN=URL, or straight, PATTERN=direct (repeatable;
        the most specific pattern wins, --upstream-proxy or --upstream
        takes the rest).
        """
        try:
            upstreamRoute(route)
        except ValueError as e:
            raise usage.UsageError(f"--upstream-route: {e}") from None
        self._append("upstream-route", route)

    def opt_metrics(self, description: str) -> None:
        """
        Serve Prometheus metrics (GET /metrics) and a health check (GET
        /healthz) over HTTP on this strports description (repeatable), for
        example tcp:9108:interface=127.0.0.1; never on a proxy port.
        """
        try:
            self.metricsPlans.append(planListener(description))
        except SystemdSocketMissing as e:
            self._missingMetricsSockets[description] = e
        except ListenerError as e:
            raise usage.UsageError(f"--metrics {e}") from None
        self._append("metrics", description)

    def opt_auth(self, description: str) -> None:
        """
        Require Basic credentials checked by this checker (repeatable), for
        example htpasswd:/etc/connectproxy/htpasswd. See --help-auth.
        """
        authType = description.partition(":")[0]
        if authType in UNSUPPORTED_CHECKERS:
            raise usage.UsageError(
                f"--auth {authType} does not work in connectproxy: "
                f"{UNSUPPORTED_CHECKERS[authType]}"
            )
        try:
            super().opt_auth(description)
        except usage.UsageError as e:
            if str(e).startswith("Auth plugin not recognized"):
                known = sorted(
                    f.authType for f in self._checkerFactoriesForOptHelpAuth()
                )
                raise usage.UsageError(
                    f"no checker type {authType!r} (known: {', '.join(known)}; "
                    "see --help-auth)"
                ) from None
            raise usage.UsageError(str(e).removeprefix("Unexpected error: ")) from None
        try:
            adaptChecker(self["credCheckers"][-1])
        except ValueError as e:
            raise usage.UsageError(str(e)) from None

    def opt_help_auth_type(self, authType: str) -> None:
        """
        Show help for a particular authentication type and exit.
        """
        if authType in UNSUPPORTED_CHECKERS:
            raise usage.UsageError(
                f"--auth {authType} does not work in connectproxy: "
                f"{UNSUPPORTED_CHECKERS[authType]}"
            )
        super().opt_help_auth_type(authType)

    def _checkerFactoriesForOptHelpAuth(self) -> Iterator[Any]:
        """
        The checker types --help-auth lists: those that work in the proxy.
        """
        for factory in super()._checkerFactoriesForOptHelpAuth():
            if factory.authType not in UNSUPPORTED_CHECKERS:
                yield factory

    def opt_help_policies(self) -> None:
        """
        List the installed access policy plugins and exit.
        """
        for name, factory in sorted(policyFactories().items()):
            sys.stdout.write(f"{name}: {factory.description}\n")
        raise SystemExit(0)

    def opt_help_observers(self) -> None:
        """
        List the installed observer plugins and exit.
        """
        for name, factory in sorted(observerFactories().items()):
            sys.stdout.write(f"{name}: {factory.description}\n")
        raise SystemExit(0)

    def opt_help_upstreams(self) -> None:
        """
        List the installed upstream connector plugins and exit.
        """
        for name, factory in sorted(connectorFactories().items()):
            sys.stdout.write(f"{name}: {factory.description}\n")
        raise SystemExit(0)

    def postOptions(self) -> None:
        if self["config"] is not None:
            self._applyConfig(self["config"])
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
            self.plans = [planListener(DEFAULT_LISTEN)]
        self._checkDuplicateListeners()
        self._checkMetrics()
        if not self["allow-port"]:
            self["allow-port"] = list(DEFAULT_PORTS)
        if not self["observer"]:
            self["observer"] = list(DEFAULT_OBSERVERS)
        self._checkAccessLog()
        if self["max-head-size"] < self["max-request-line"]:
            raise usage.UsageError(
                "--max-head-size must be at least --max-request-line"
                + self._fromFile("max-head-size", "max-request-line")
            )
        try:
            self.rules = AccessRules(
                ports=PortRules.fromStrings(self["allow-port"]),
                networks=NetworkRules.fromStrings(
                    allow=self["allow-network"], deny=self["deny-network"]
                ),
                hosts=HostRules.fromStrings(
                    allow=self["allow-host"], deny=self["deny-host"]
                ),
                clients=ClientRules.fromStrings(
                    allow=self["allow-client"], trustedProxies=self["trusted-proxy"]
                ),
            )
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        self.policies = [self._makePolicy(d) for d in self["policy"]]
        self._checkUpstream()
        self._checkObservers()
        for checker in self.checkers():
            if hasattr(checker, "cacheTTL"):
                checker.cacheTTL = self["auth-cache-ttl"]
            if self["auth-allow-plaintext"] and hasattr(checker, "allowPlaintext"):
                # Entries are classified when the file is read.
                checker.allowPlaintext = True
                checker.reload()
        if self["check-config"]:
            self.checkConfig()
        for missing in self._missingSockets.values():
            raise usage.UsageError(f"--listen {missing}")
        for missing in self._missingMetricsSockets.values():
            raise usage.UsageError(f"--metrics {missing}")

    def _checkAccessLog(self) -> None:
        """
        Refuse an access-log format without a file to write, and a file
        that the C{accesslog} observer is not there to write.
        """
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

    def _checkDuplicateListeners(self) -> None:
        """
        Refuse two listeners on the same address, or on overlapping ones
        (every address and one of them, on one port): the second could
        never listen.  Port 0 asks for a different free port each time.
        """
        seen: dict[str, str] = {}
        for index, plan in enumerate(self.plans):
            if plan.port == 0 or plan.fileno is not None:
                continue
            if plan.where in seen:
                raise usage.UsageError(
                    f"--listen {seen[plan.where]!r} and {plan.description!r} "
                    f"both listen on {plan.where}" + self._fromFile("listen")
                )
            seen[plan.where] = plan.description
            for other in self.plans[:index]:
                shared = overlap(other, plan)
                if shared is not None:
                    raise usage.UsageError(
                        f"--listen {other.description!r} and "
                        f"{plan.description!r} overlap: {shared}"
                        + self._fromFile("listen")
                    )

    def _checkMetrics(self) -> None:
        """
        Refuse a metrics listener on the address of a proxy listener or of
        another metrics listener, and C{--metrics} without
        C{prometheus_client}.
        """
        if not self["metrics"]:
            return
        seen = [
            (plan, f"--listen {plan.description!r}")
            for plan in self.plans
            if _fixedAddress(plan)
        ]
        for plan in self.metricsPlans:
            if not _fixedAddress(plan):
                continue
            for other, named in seen:
                # The same address, or one that takes it too (0.0.0.0 and
                # 127.0.0.1 on one port, say).
                if plan.where == other.where:
                    clash = f"both listen on {plan.where}"
                else:
                    shared = overlap(other, plan)
                    if shared is None:
                        continue
                    clash = f"overlap: {shared}"
                raise usage.UsageError(
                    f"--metrics {plan.description!r} and {named} {clash}: give "
                    "the metrics a port of their own" + self._fromFile("metrics")
                )
            seen.append((plan, f"--metrics {plan.description!r}"))
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            raise usage.UsageError(
                "--metrics needs the prometheus_client package: "
                "pip install prometheus_client"
            ) from None

    def checkConfig(self) -> NoReturn:
        """
        Print where each listener would listen, one line each, and exit with
        status 0 (C{--check-config}).  Errors have already stopped parsing
        (and exit with status 1 from the command line).

        @raise SystemExit: Always.
        """
        plans = {plan.description: plan for plan in self.plans}
        lines = []
        for description in self["listen"]:
            if description in plans:
                lines.append(plans[description].describe())
            else:
                lines.append(
                    f"listen {description} -> a socket from systemd (not "
                    f"checked here: {self._missingSockets[description].reason})"
                )
        lines.extend(self._describeMetrics())
        lines.extend(self._describeOutgoing())
        lines.extend(self._describeAccessLog())
        source = f" ({self['config']})" if self["config"] is not None else ""
        lines.append(f"connectproxy {__version__}: configuration OK{source}")
        sys.stdout.write("\n".join(lines) + "\n")
        raise SystemExit(0)

    def _describeMetrics(self) -> list[str]:
        """
        The C{--check-config} lines of the metrics listeners.
        """
        plans = {plan.description: plan for plan in self.metricsPlans}
        lines = []
        for description in self["metrics"]:
            plan = plans.get(description)
            if plan is None:
                missing = self._missingMetricsSockets[description]
                where = f"a socket from systemd (not checked here: {missing.reason})"
            else:
                scheme = "https" if plan.tls else "http"
                where = f"{plan.where} ({scheme}: /metrics, /healthz)"
            lines.append(f"metrics {description} -> {where}")
        return lines

    def _describeOutgoing(self) -> list[str]:
        """
        The C{--check-config} lines of the outgoing addresses: each one is
        bound once to see whether this machine has it (not an error, since
        an address may arrive later, a failover address say).
        """
        outgoing = OutgoingAddresses.fromStrings(self["outgoing-address"])
        problems = dict(outgoing.unbindable())
        lines = []
        for address in outgoing.strings():
            if address in problems:
                lines.append(
                    f"outgoing address {address} -> cannot bind it now "
                    f"({problems[address]}): connects from it get 502 until "
                    "this machine has it"
                )
            else:
                lines.append(f"outgoing address {address}")
        return lines

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

    def _fromFile(self, *names: str) -> str:
        """
        Where values that failed a cross-check came from, when some came
        from the configuration file.
        """
        if self["config"] is not None and not self.given.issuperset(names):
            return f" (check {self['config']})"
        return ""

    def _makePolicy(self, description: str) -> IAccessPolicy:
        name, _, argument = description.partition(":")
        try:
            return policyFactories()[name].policyFromArgument(argument)
        except ValueError as e:
            raise usage.UsageError(f"{self._source('policy')} {name}: {e}") from None

    def _source(self, name: str) -> str:
        """
        Where an option's value came from, for a message about it:
        C{--name}, or C{FILE: key 'name':} when the configuration file gave
        it.
        """
        if self["config"] is not None and name not in self.given:
            return f"{self['config']}: key {name!r}:"
        return f"--{name}"

    def parseArgs(self, *args: str) -> None:
        """
        The proxy takes options only.

        @raise usage.UsageError: For any argument that is not an option,
            naming it, and the option before it when it looks like a second
            value for that option.
        """
        if not args:
            return
        unexpected = args[0]
        before = self.argv[: len(self.argv) - len(args)]
        option, value = _lastOption(before, self.longOpt)
        if option is None:
            raise usage.UsageError(
                f"unexpected argument {unexpected!r}: the proxy takes options only"
            )
        if value is None:
            raise usage.UsageError(
                f"unexpected argument {unexpected!r} after --{option}, which "
                "takes no value"
            )
        raise usage.UsageError(
            f"unexpected argument {unexpected!r} after --{option} {value}: an "
            "option takes one value; repeat the option for each (--"
            f"{option} {value} --{option} {unexpected})"
        )

    def configKeys(self) -> dict[str, ConfigKey]:
        """
        The keys a configuration file may have: the long names of the
        options, except C{config} and C{check-config}, with their kinds.  A
        parameter takes a TOML number (or a string) unless it has no coerce
        function or one marked C{string = True}; then only a string.
        """
        keys: dict[str, ConfigKey] = {}
        for name, _, default, _, *coerce in self.optParameters:
            if name not in self._notInFile:
                convert = coerce[0] if coerce else str
                if convert is str or getattr(convert, "string", False):
                    example = f'{name} = "{default}"'
                    keys[name] = ConfigKey("string", convert, example=example)
                else:
                    keys[name] = ConfigKey("number", convert, example=f"{name} = 30")
        for name in (*self._lists, "auth"):
            example = _LIST_EXAMPLES.get(name, "...")
            keys[name] = ConfigKey(
                "list",
                getattr(self, "opt_" + name.replace("-", "_")),
                integers=name == "allow-port",
                example=f'{name} = ["{example}"]',
            )
        for name, *_ in self.optFlags:
            if name not in self._notInFile:
                keys[name] = ConfigKey("flag", example=f"{name} = true")
        return keys

    def _checkUpstream(self) -> None:
        """
        Let the connector plugin check its argument now, before anything
        listens, by making a connector over a reactor that does nothing.
        """
        if self["upstream-proxy"] is not None and self["upstream"] != "direct":
            raise usage.UsageError(
                "--upstream-proxy and --upstream both say how targets are "
                "reached: give one of them"
                + self._fromFile("upstream-proxy", "upstream")
            )
        reactor = MemoryReactor()
        context = ConnectorContext(
            reactor, proxySettings(self), self.rules.networks, ResolverPool(reactor)
        )
        try:
            connectorMaker(self)(context)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None

    def observers(self, context: ObserverContext) -> list[IProxyObserver]:
        """
        Make the observers C{--observer} names, in order, from C{context}.

        @raise ValueError: Naming the option, when a plugin refuses its
            argument.
        """
        return makeObservers(self["observer"], context, observerFactories())

    def _checkObservers(self) -> None:
        """
        Let the observer plugins check their arguments before anything
        listens.
        """
        try:
            self.observers(idleContext(proxySettings(self)))
        except ValueError as e:
            raise usage.UsageError(str(e)) from None

    def _applyConfig(self, path: str) -> None:
        applyConfig(
            path, loadConfig(path), self.given, self.configKeys(), self.__setitem__
        )

    def checkers(self) -> list[Any]:
        """
        The credential checkers from C{--auth}.
        """
        return list(self.get("credCheckers", []))

    @deprecated(_DEPRECATED_IN, _BUILT + ".upstream")
    def upstream(self) -> ConnectorMaker:
        """
        @return: What makes the connector C{--upstream} names.
        """
        return connectorMaker(self)

    @deprecated(_DEPRECATED_IN, _BUILT + ".settings")
    def settings(self) -> ProxySettings:
        """
        @return: The L{ProxySettings} these options describe.
        """
        return proxySettings(self)

    @deprecated(_DEPRECATED_IN, _BUILT + ".gatekeeper")
    def gatekeeper(self, reactor: Any) -> Gatekeeper:
        """
        @return: The access checks these options describe, on C{reactor}.
        """
        return gatekeeperFor(self, reactor)

    @deprecated(_DEPRECATED_IN, _BUILT + ".unauthenticated")
    def unauthenticated(self) -> bool:
        """
        @return: Whether clients tunnel without authenticating (no C{--auth}).
        """
        return not self.checkers()


def _fixedAddress(plan: ListenerPlan) -> bool:
    """
    Whether a listener's address is known before it listens, and the same
    every time: a TCP port other than 0, a UNIX socket path, or a socket
    from systemd.
    """
    if plan.port is not None:
        return plan.port != 0
    return plan.path is not None or plan.fileno is not None


# usage.Options shows handler docstrings as they are, indentation included:
# make each one a single paragraph for --help.
for _name in dir(Options):
    _method = getattr(Options, _name)
    if _name.startswith("opt_") and _method.__doc__:
        _method.__doc__ = " ".join(_method.__doc__.split())


def _lastOption(
    argv: Sequence[str], longOpt: Sequence[str]
) -> tuple[str | None, str | None]:
    """
    The last option in C{argv}, as C{getopt} read it, and its value.

    @param argv: Arguments, ending with an option (and its value).
    @param longOpt: The long options, C{name=} for those taking a value.
    @return: The option's full name (C{None} when the last argument is not
        an option), and its value (C{None} for a flag).
    """

    def resolve(given: str) -> tuple[str, bool] | None:
        names = [o for o in longOpt if o.rstrip("=") == given]
        names = names or [o for o in longOpt if o.startswith(given)]
        if len(names) != 1:
            return None
        return names[0].rstrip("="), names[0].endswith("=")

    if argv and argv[-1].startswith("--"):
        given, equals, value = argv[-1][2:].partition("=")
        found = resolve(given)
        if found is not None:
            return found[0], (value if equals else None)
    if len(argv) >= 2 and argv[-2].startswith("--") and "=" not in argv[-2]:
        found = resolve(argv[-2][2:])
        if found is not None and found[1]:
            return found[0], argv[-1]
    return None, None


def _descriptorCeiling(reactor: Any) -> int | None:
    """
    The highest descriptor limit C{reactor} can use: C{select()} watches
    descriptors below C{FD_SETSIZE} (1024) only.
    """
    from twisted.internet.selectreactor import SelectReactor

    return 1024 if isinstance(reactor, SelectReactor) else None


def makeService(
    options: Options,
    reactor: Any = None,
    *,
    connector: IUpstreamConnector | None = None,
    observers: Iterable[IProxyObserver] | None = None,
) -> MultiService:
    """
    Build the proxy service: one listener per C{--listen}, sharing one
    factory, and the reload service (SIGHUP, with the global reactor).

    @param options: Parsed L{Options}.
    @param reactor: The reactor to use; the global one when C{None}.
    @param connector: A connector to use in place of the one C{--upstream}
        names, at start and after every reload.
    @param observers: Observers to tell of refusals and tunnels in place of
        the access log, at start and after every reload (the metrics of
        C{--metrics} are told too).
    @return: A L{MultiService} holding the listeners; its child named
        C{"reload"} has a C{reload()} method, the one named C{"descriptors"}
        raises the descriptor limit at start (only when C{reactor} is
        C{None}: in the proxy's own process), the one named C{"observers"}
        holds the services the C{--observer} plugins added (the
        C{--metrics} listeners, and, with
        C{--access-log}, the one named C{"accesslog"} whose C{writer}
        counts the lines it dropped, C{writer.droppedLines}), the one
        named C{"shutdown"} drains when the service stops, the one named
        C{"loglevel"} applies C{--log-level} (only in the proxy's own
        process), and the one named C{"notify"} tells systemd
        (C{$NOTIFY_SOCKET}) when the proxy is ready, reloading and
        stopping.  Stopping it drains first: see
        L{connectproxy._shutdown.ProxyService}.
    @raise usage.UsageError: When the C{--upstream} or an C{--observer}
        plugin refuses its argument.
    """
    installSignal = reactor is None
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    if observers is not None:
        observers = tuple(observers)
    config = buildConfig(options, reactor, connector=connector, observers=observers)
    try:
        factory = ConnectProxyFactory.fromConfig(reactor, config)
    except ValueError as e:
        # The connector plugin refused its argument after all.
        raise usage.UsageError(str(e)) from None
    warnUnbindable(factory.settings.outgoingAddresses)
    # What the observers need running starts before the listeners and
    # stops after them.
    observerServices = MultiService()
    observerServices.setName("observers")
    context = ObserverContext(reactor, factory, observerServices)
    accessLog = None
    if observers is None:
        # Made once, at start, by the --observer plugins; a reload keeps
        # them.
        accessLog = _fileAccessLog(options, reactor, observerServices, installSignal)
        context = ObserverContext(reactor, factory, observerServices, accessLog)
        try:
            observers = tuple(options.observers(context))
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        factory.observer = ObserverFanOut(observers)
    metrics = None
    if options["metrics"]:
        # Imported here: prometheus_client only with --metrics.
        from ._admin import addMetrics

        metrics = addMetrics(options["metrics"], context)
        if accessLog is not None:
            metrics.observer.accessLogDropped = lambda: accessLog.droppedLines
        factory.observer.observers.append(metrics.observer)
        observers = (*observers, metrics.observer)
    load = reloader(options, reactor, connector=connector, observers=observers)
    # Descriptors: raised at start in the proxy's own process (never in a
    # caller's that passes its reactor), before the listeners listen.
    reserve = DescriptorReserve()
    report = ExhaustionReport(reactor)
    limits = DescriptorLimitService(
        factory,
        reserve,
        report,
        raiseLimit=installSignal,
        automaticMaxConnections=options["max-connections"] is None,
        ceiling=_descriptorCeiling(reactor),
    )
    limits.setName("descriptors")
    plans = {plan.description: plan for plan in config.plans}

    def acceptGuard(description: str) -> AcceptGuard:
        plan = plans.get(description)
        tls = plan is not None and plan.tls
        return AcceptGuard(reactor, reserve, report, None if tls else REFUSAL)

    before: list[IService] = [limits, observerServices]
    if installSignal:
        # The process's log: filtered from the start to the very end.
        levels = LogLevelService(options["log-level"], reactor)
        levels.setName("loglevel")
        before.insert(0, levels)
    service = proxyService(
        reactor,
        factory,
        config,
        load,
        installSignal,
        before=before,
        acceptGuard=acceptGuard,
    )
    if metrics is not None:
        metrics.health.listeners = proxyListeners(service)
    return service


def _fileAccessLog(
    options: Options, reactor: Any, services: MultiService, installSignal: bool
) -> FileAccessLog | None:
    """
    The access log of C{--access-log}, if given, with the service that runs
    its writer (named C{"accesslog"}, added to C{services}; its C{writer}
    counts the lines it dropped in C{droppedLines}).

    @param installSignal: Whether C{SIGUSR1} re-opens the file.
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
