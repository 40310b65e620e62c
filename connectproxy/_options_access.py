# -*- test-case-name: tests.test_tap,tests.test_auth_proxy,tests.test_plugins -*-
"""
The options that say who may tunnel where: the port, network, host and
client rules, the access policy plugins, and authentication (C{--auth},
its cache and its failure limits).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

from twisted.cred.credentials import IUsernamePassword
from twisted.cred.strcred import AuthOptionMixin
from twisted.python import usage

from ._assembly import policyFactories
from ._auth import UNSUPPORTED_CHECKERS, adaptChecker
from ._networks import NetworkRules
from ._options_base import OptionGroup
from ._optionvalues import checkNetwork, count, nonNegativeFloat, positiveFloat, realm
from ._rules import (
    DEFAULT_PORTS,
    AccessRules,
    ClientRules,
    HostRules,
    PortRules,
    parsePortRange,
)
from .interfaces import IAccessPolicy

__all__ = ["AUTH_EXAMPLE", "AccessOptions"]

#: An example value of C{--auth}, for messages about the configuration file.
AUTH_EXAMPLE = "htpasswd:/etc/connectproxy/htpasswd"


class AccessOptions(OptionGroup, AuthOptionMixin):
    """
    The access rules (C{--allow-port}, C{--allow-network},
    C{--deny-network}, C{--allow-host}, C{--deny-host},
    C{--allow-client}), C{--policy}, and C{--auth} with the C{--auth-*}
    options.

    @ivar rules: The built-in access rules, parsed, after C{postOptions}.
    @ivar policies: The plugin policies, made from their arguments (which
        checks them), in order, after C{postOptions}.
    """

    supportedInterfaces = [IUsernamePassword]

    optFlags: list[list[Any]] = [
        [
            "auth-allow-plaintext",
            None,
            "Accept plaintext passwords in htpasswd files (refused otherwise).",
        ],
    ]

    optParameters: list[list[Any]] = [
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

    optLists: list[list[Any]] = [
        ["allow-port", "443"],
        ["allow-network", "10.0.0.0/8"],
        ["deny-network", "10.9.0.0/16"],
        ["allow-host", "*.example.com"],
        ["deny-host", "bad.example.com"],
        ["allow-client", "192.0.2.0/24"],
        ["policy", "hostlist:/etc/connectproxy/hosts"],
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rules = AccessRules.defaults()
        self.policies = []

    def opt_allow_port(self, ports: str) -> None:
        """
        Allow CONNECT and forwarded http:// requests to this port or range
        of ports, like 443 or 8000-8080 (repeatable; replaces both
        defaults). [default: 443 for CONNECT, 80 and 443 for forwarded
        http:// requests]
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

    def _checkAccess(self) -> None:
        """
        Build the access rules and the policies, which checks their
        arguments.  Without C{--allow-port}, the default ports
        (L{PortRules.defaults}): 443 for CONNECT, 80 and 443 for forwarded
        C{http://} requests; the option's value then shows C{443} only.
        Ports given replace both defaults and apply to both alike.
        """
        defaultPorts = not self["allow-port"]
        if defaultPorts:
            self["allow-port"] = list(DEFAULT_PORTS)
        try:
            self.rules = AccessRules(
                ports=PortRules.defaults()
                if defaultPorts
                else PortRules.fromStrings(self["allow-port"]),
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

    def _makePolicy(self, description: str) -> IAccessPolicy:
        name, _, argument = description.partition(":")
        try:
            return policyFactories()[name].policyFromArgument(argument)
        except ValueError as e:
            raise usage.UsageError(f"{self._source('policy')} {name}: {e}") from None

    def _configureCheckers(self) -> None:
        """
        Give the credential checkers the C{--auth-cache-ttl} and
        C{--auth-allow-plaintext} of the options.
        """
        for checker in self.checkers():
            if hasattr(checker, "cacheTTL"):
                checker.cacheTTL = self["auth-cache-ttl"]
            if self["auth-allow-plaintext"] and hasattr(checker, "allowPlaintext"):
                # Entries are classified when the file is read.
                checker.allowPlaintext = True
                checker.reload()
