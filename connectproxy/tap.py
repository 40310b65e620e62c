# -*- test-case-name: tests.test_tap -*-
"""
The command line of C{twistd connectproxy} and C{twist connectproxy}:
L{Options} and L{makeService}.
"""

from __future__ import annotations

import ipaddress
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any, TypeVar

from twisted.application.service import MultiService
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.strcred import AuthOptionMixin
from twisted.internet.endpoints import serverFromString
from twisted.internet.testing import MemoryReactor
from twisted.plugin import getPlugins
from twisted.python import usage

from . import plugins as pluginPackage
from ._admission import Gatekeeper, userPortal
from ._auth import UNSUPPORTED_CHECKERS, FailureLimiter, adaptChecker
from ._config import applyConfig, loadConfig
from ._factory import ConnectProxyFactory
from ._policy import (
    DEFAULT_PORTS,
    AccessRules,
    ClientRules,
    HostRules,
    NetworkRules,
    PortRules,
    parsePortRange,
)
from ._service import ListenerService, ReloadService
from ._settings import ProxySettings
from .interfaces import IAccessPolicy, IAccessPolicyFactory

__all__ = ["DEFAULT_LISTEN", "Options", "makeService"]

#: Where the proxy listens when no C{--listen} is given: loopback only.
DEFAULT_LISTEN = "tcp:3128:interface=127.0.0.1"

_defaults = ProxySettings()


_T = TypeVar("_T", int, float)


def _coercer(
    convert: Callable[[str], _T],
    unit: str,
    allowed: Callable[[_T], bool],
    requirement: str,
    doc: str,
) -> Callable[[str], _T]:
    """
    Make a coerce function for C{optParameters} that converts a value and
    checks it, with messages that say what was expected.
    """

    def coerce(text: str) -> _T:
        try:
            value = convert(text)
        except ValueError:
            raise ValueError(f"{text!r} is not {unit}") from None
        if not allowed(value):
            raise ValueError(f"{text!r} {requirement}")
        return value

    coerce.coerceDoc = doc  # type: ignore[attr-defined]
    return coerce


_positiveFloat = _coercer(
    float,
    "a number of seconds",
    lambda v: 0 < v < math.inf,
    "must be a positive number of seconds",
    "Seconds, a positive number.",
)
_nonNegativeFloat = _coercer(
    float,
    "a number of seconds",
    lambda v: 0 <= v < math.inf,
    "must not be negative",
    "Seconds, 0 or more.",
)
_byteCount = _coercer(
    int,
    "a whole number of bytes",
    lambda v: v >= 64,
    "is too small: at least 64 bytes",
    "Bytes, a whole number, at least 64.",
)
_count = _coercer(
    int,
    "a whole number",
    lambda v: v >= 0,
    "must not be negative",
    "A whole number; 0 means no limit.",
)


def _realm(text: str) -> str:
    if not text or not all(" " <= c <= "~" for c in text):
        raise ValueError(f"{text!r} must be printable ASCII, not empty")
    return text


_realm.coerceDoc = "Printable ASCII."  # type: ignore[attr-defined]


def _network(text: str) -> str:
    try:
        ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        raise ValueError(f"{text!r} is not a network ({e})") from None
    return text


def policyFactories() -> dict[str, IAccessPolicyFactory]:
    """
    The access policy plugins installed, by name.
    """
    return {
        factory.name: factory
        for factory in getPlugins(IAccessPolicyFactory, pluginPackage)
    }


class Options(usage.Options, AuthOptionMixin):
    """
    Options for C{twistd connectproxy}.

    @ivar argv: The arguments parsed, kept so that a reload can parse them
        again (and re-read the configuration file).
    @ivar rules: The built-in access rules, after L{postOptions}.
    @ivar policies: The plugin policies, in order, after L{postOptions}.
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
    ]

    optParameters: list[list[Any]] = [
        ["config", None, None, "Read options from this TOML file."],
        [
            "connect-timeout",
            None,
            _defaults.connectTimeout,
            "Seconds allowed for everything between the request head and the "
            "200: access checks, name resolution and every address tried; the "
            "client then gets 504 (503 while access is still being checked).",
            _positiveFloat,
        ],
        [
            "idle-timeout",
            None,
            _defaults.idleTimeout,
            "Seconds a tunnel may go without a byte in either direction "
            "before it is closed.",
            _positiveFloat,
        ],
        [
            "request-timeout",
            None,
            _defaults.requestTimeout,
            "Seconds a client has to send its complete request head; the "
            "client then gets 408 (slow clients cannot hold connections).",
            _positiveFloat,
        ],
        [
            "abort-timeout",
            None,
            _defaults.abortTimeout,
            "Seconds a graceful close may take before the connection is aborted.",
            _positiveFloat,
        ],
        [
            "max-request-line",
            None,
            _defaults.maxRequestLine,
            "Longest request line accepted, in bytes; longer gets 414.",
            _byteCount,
        ],
        [
            "max-head-size",
            None,
            _defaults.maxHeadSize,
            "Largest request head (request line and header fields) accepted, "
            "in bytes; larger gets 431.",
            _byteCount,
        ],
        [
            "max-connections",
            None,
            _defaults.maxConnections,
            "Most client connections at once; more get 503. The default is "
            "what the process's descriptor limit allows.",
            _count,
        ],
        [
            "max-connections-per-client",
            None,
            _defaults.maxConnectionsPerClient,
            "Most connections at once from one client address; more get 503.",
            _count,
        ],
        [
            "auth-realm",
            None,
            "connectproxy",
            "The realm named in Proxy-Authenticate challenges (printable ASCII).",
            _realm,
        ],
        [
            "auth-cache-ttl",
            None,
            30.0,
            "Seconds a verified user name and password is remembered (as a "
            "keyed hash) before it is verified again; 0 turns this off.",
            _nonNegativeFloat,
        ],
        [
            "auth-max-failures",
            None,
            10,
            "Failed logins for one user name from one client address within "
            "--auth-failure-window before that user name is refused from that "
            "address with 429 for --auth-block-time (other users behind the "
            "same address still log in); 0 turns this off.",
            _count,
        ],
        [
            "auth-max-failed-users",
            None,
            20,
            "Different user names with failed logins from one client address "
            "within --auth-failure-window before the whole address is refused "
            "with 429 for --auth-block-time (password spraying); 0 turns this "
            "off.",
            _count,
        ],
        [
            "auth-failure-window",
            None,
            60.0,
            "Seconds over which failed logins are counted.",
            _positiveFloat,
        ],
        [
            "auth-block-time",
            None,
            60.0,
            "Seconds a user name (or, after --auth-max-failed-users, a whole "
            "client address) is refused after too many failed logins.",
            _positiveFloat,
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

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        self.argv = list(sys.argv[1:] if options is None else options)
        super().parseOptions(self.argv)

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
            serverFromString(MemoryReactor(), description)
        except (ValueError, KeyError, TypeError, IndexError, OSError) as e:
            raise usage.UsageError(
                f"--listen {description!r} is not a valid listener: {e!r}"
            ) from None
        self._append("listen", description)

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
            _network(network)
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
            _network(network)
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
            _network(network)
        except ValueError as e:
            raise usage.UsageError(f"--trusted-proxy: {e}") from None
        self._append("trusted-proxy", network)

    def opt_policy(self, description: str) -> None:
        """
        Apply this access policy plugin, as NAME or NAME:ARGUMENT
        (repeatable; applied in order after the built-in rules). See
        --help-policies.
        """
        name = description.partition(":")[0]
        if name not in policyFactories():
            raise usage.UsageError(
                f"--policy: no policy plugin named {name!r} "
                f"(installed: {', '.join(sorted(policyFactories())) or 'none'})"
            )
        self._append("policy", description)

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
        super().opt_auth(description)
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

    def postOptions(self) -> None:
        if self["config"] is not None:
            self._applyConfig(self["config"])
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        if not self["allow-port"]:
            self["allow-port"] = list(DEFAULT_PORTS)
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
        for checker in self.checkers():
            if hasattr(checker, "cacheTTL"):
                checker.cacheTTL = self["auth-cache-ttl"]
            if self["auth-allow-plaintext"] and hasattr(checker, "allowPlaintext"):
                # Entries are classified when the file is read.
                checker.allowPlaintext = True
                checker.reload()

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
            raise usage.UsageError(f"--policy {name}: {e}") from None

    def _applyConfig(self, path: str) -> None:
        parameters = {
            row[0]: row[4] if len(row) > 4 else str for row in self.optParameters
        }
        del parameters["config"]
        lists = {
            name: getattr(self, "opt_" + name.replace("-", "_")) for name in self._lists
        }
        lists["auth"] = self.opt_auth
        flags = [row[0] for row in self.optFlags]
        applyConfig(
            path,
            loadConfig(path),
            self.given,
            parameters,
            lists,
            flags,
            self.__setitem__,
        )

    def settings(self) -> ProxySettings:
        """
        @return: The L{ProxySettings} these options describe.
        """
        return ProxySettings(
            requestTimeout=self["request-timeout"],
            connectTimeout=self["connect-timeout"],
            idleTimeout=self["idle-timeout"],
            abortTimeout=self["abort-timeout"],
            maxRequestLine=self["max-request-line"],
            maxHeadSize=self["max-head-size"],
            maxConnections=self["max-connections"],
            maxConnectionsPerClient=self["max-connections-per-client"],
        )

    def checkers(self) -> list[Any]:
        """
        The credential checkers from C{--auth}.
        """
        return list(self.get("credCheckers", []))

    def gatekeeper(self, reactor: Any) -> Gatekeeper:
        """
        Build the access checks these options describe.

        @param reactor: The clock and thread-pool host for the checkers.
        """
        checkers = self.checkers()
        for checker in checkers:
            bind = getattr(checker, "bind", None)
            if bind is not None:
                bind(reactor)
        limiter = None
        if self["auth-max-failures"] or self["auth-max-failed-users"]:
            limiter = FailureLimiter(
                reactor,
                maxFailures=self["auth-max-failures"],
                window=self["auth-failure-window"],
                blockFor=self["auth-block-time"],
                maxUsers=self["auth-max-failed-users"],
            )
        return Gatekeeper(
            self.rules,
            self.policies,
            userPortal(checkers) if checkers else None,
            self["auth-realm"],
            limiter,
        )

    def unauthenticated(self) -> bool:
        """
        Whether clients tunnel without authenticating (no C{--auth}).
        """
        return not self.checkers()


# usage.Options shows handler docstrings as they are, indentation included:
# make each one a single paragraph for --help.
for _name in dir(Options):
    _method = getattr(Options, _name)
    if _name.startswith("opt_") and _method.__doc__:
        _method.__doc__ = " ".join(_method.__doc__.split())


def makeService(options: Options, reactor: Any = None) -> MultiService:
    """
    Build the proxy service: one listener per C{--listen}, sharing one
    factory, and the reload service (SIGHUP, with the global reactor).

    @param options: Parsed L{Options}.
    @param reactor: The reactor to use; the global one when C{None}.
    @return: A L{MultiService} holding the listeners; its child named
        C{"reload"} has a C{reload()} method.
    """
    installSignal = reactor is None
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    factory = ConnectProxyFactory(
        reactor, options.settings(), gatekeeper=options.gatekeeper(reactor)
    )
    service = MultiService()
    service.setName("connectproxy")
    reloader = ReloadService(options, factory, reactor, installSignal)
    reloader.setName("reload")
    reloader.setServiceParent(service)
    listeners = []
    for description in options["listen"]:
        listener = ListenerService(serverFromString(reactor, description), factory)
        listener._raiseSynchronously = True
        listener.unauthenticated = options.unauthenticated()
        listener.clientRules = options["allow-client"]
        listener.setServiceParent(service)
        listeners.append(listener)
    reloader.listeners = listeners
    return service
