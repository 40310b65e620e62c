# -*- test-case-name: tests.test_tap,tests.test_parentoptions -*-
"""
The options that say how the proxy reaches targets: the upstream connector
plugin, parent proxies and routes to them, the outgoing addresses, and the
resolver's threads.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet.testing import MemoryReactor
from twisted.python import usage

from ._assembly import connectorFactories, connectorMaker, proxySettings
from ._connector import ConnectorContext
from ._dnscache import chooseResolver
from ._options_base import OptionGroup
from ._optionvalues import (
    connectorChoice,
    count,
    parentProxyURL,
    positiveCount,
    positiveFloat,
    resolverChoice,
    upstreamRoute,
)
from ._outgoing import OutgoingAddresses
from ._resolver import ResolverPool
from ._settings import ProxySettings

__all__ = ["UpstreamOptions"]

_defaults = ProxySettings()


class UpstreamOptions(OptionGroup):
    """
    C{--upstream}, C{--upstream-proxy}, C{--upstream-ca},
    C{--upstream-route}, C{--outgoing-address}, C{--resolver-threads},
    C{--resolver-per-client}, C{--resolver}, C{--dns-cache-size},
    C{--upstream-keepalive} and
    C{--upstream-idle-timeout}.
    """

    optParameters: list[list[Any]] = [
        [
            "upstream-keepalive",
            None,
            _defaults.upstreamKeepalive,
            "Most idle upstream connections of forwarded http:// requests "
            "kept open for reuse, in all (0: none).",
            count,
        ],
        [
            "upstream-idle-timeout",
            None,
            _defaults.upstreamIdleTimeout,
            "Seconds an idle upstream connection of forwarded requests is "
            "kept for reuse.",
            positiveFloat,
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
            "resolver",
            None,
            _defaults.resolver,
            "How target names are resolved: dns (a DNS client asking the "
            "name servers of /etc/resolv.conf, after /etc/hosts, its answers "
            "kept for their TTL), system (getaddrinfo in the resolver "
            "threads, nothing kept) or auto (dns when /etc/nsswitch.conf has "
            "hosts: files dns, or none, and resolv.conf no ndots above 1; "
            "system otherwise).",
            resolverChoice,
        ],
        [
            "dns-cache-size",
            None,
            _defaults.dnsCacheSize,
            "Most DNS answers --resolver dns keeps (one per name and record "
            "type), the least recently used dropped first; 0 keeps none.",
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
    ]

    optLists: list[list[Any]] = [
        ["outgoing-address", "192.0.2.10"],
        ["upstream-route", "*.example.com=http://parent.example:3128"],
    ]

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

    def opt_help_upstreams(self) -> None:
        """
        List the installed upstream connector plugins and exit.
        """
        for name, factory in sorted(connectorFactories().items()):
            sys.stdout.write(f"{name}: {factory.description}\n")
        raise SystemExit(0)

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

    def _describeResolver(self) -> list[str]:
        """
        The C{--check-config} line of C{--resolver}: with C{auto}, which
        resolver it chooses on this machine now, and why.
        """
        if self["resolver"] != "auto":
            return [f"resolver: {self['resolver']}"]
        chosen, why = chooseResolver()
        return [f"resolver: auto -> {chosen} ({why})"]

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
