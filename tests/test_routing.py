# -*- test-case-name: tests.test_routing -*-
"""
Tests for L{connectproxy._routing}: per-host routes to parent proxies or
straight to the target, and the connector C{--upstream-proxy},
C{--upstream-route} and C{--upstream-ca} make.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.protocol import Protocol
from zope.interface.verify import verifyObject

from connectproxy import DirectConnector, ProxySettings
from connectproxy._connector import ConnectorContext
from connectproxy._outgoing import OutgoingAddresses
from connectproxy._parent import ParentProxyConnector
from connectproxy._parenturl import ParentProxy
from connectproxy._routing import ParentRoutes, RoutingConnector, parseRoute
from connectproxy.interfaces import IUpstreamConnector
from connectproxy.testing import (
    FakeConnector,
    FakeResolver,
    connectorContext,
    upstreamRequest,
)
from tests.integration._pki import makeTLSFiles

PARENT = ParentProxy.fromURL("http://parent.example:3128")
OTHER = ParentProxy.fromURL("https://alice:pw@other.example:3129")


def routed(connector: RoutingConnector, host: str) -> FakeConnector:
    """
    Connect to C{host} and return the fake connector that got the attempt.
    """
    connector.connectUpstream(upstreamRequest(host), Protocol())
    for candidate in [connector.default, *(c for _, c in connector.routes)]:
        assert isinstance(candidate, FakeConnector)
        if candidate.attempts:
            [attempt] = candidate.attempts
            assert attempt.target.host == host
            candidate.attempts.clear()
            return candidate
    raise AssertionError(f"no connector got {host}")


def test_mostSpecificRouteWins() -> None:
    """
    An exact name beats a wildcard, a longer wildcard a shorter one, and
    what nothing matches goes to the default; wildcards never match IP
    addresses.
    """
    default, wide, narrow, exact, address = (FakeConnector() for _ in range(5))
    connector = RoutingConnector(
        [
            ("*.example.com", wide),
            ("*.internal.example.com", narrow),
            ("api.internal.example.com", exact),
            ("203.0.113.7", address),
        ],
        default,
    )
    assert verifyObject(IUpstreamConnector, connector)
    assert routed(connector, "www.example.com") is wide
    assert routed(connector, "a.b.internal.example.com") is narrow
    assert routed(connector, "api.internal.example.com") is exact
    assert routed(connector, "example.com") is default
    assert routed(connector, "203.0.113.7") is address
    assert routed(connector, "203.0.113.8") is default


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("*.Example.COM=direct", ("*.example.com", None)),
        ("host.example = DIRECT", ("host.example", None)),
        ("192.0.2.1=http://parent.example:3128", ("192.0.2.1", PARENT)),
        ("h=https://alice:pw@other.example:3129/", ("h", OTHER)),
    ],
)
def test_parseRoute(text: str, expected: tuple[str, ParentProxy | None]) -> None:
    """
    A route is PATTERN=URL or PATTERN=direct, the pattern normalised.
    """
    assert parseRoute(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("example.com", "expected PATTERN=URL or PATTERN=direct"),
        ("=direct", "invalid host pattern ''"),
        ("*=direct", "'\\*' alone matches all"),
        ("a.*.b=direct", "'\\*' may only be the first label"),
        ("*.192.0.2.1=direct", "wildcard IP address"),
        ("h=ftp://p:1", "the route for h: unknown scheme 'ftp'"),
        ("h=http://alice:hunter2@p", "the route for h: the URL needs a port"),
        ("h=", "the route for h: expected http://HOST:PORT"),
    ],
)
def test_badRoute(text: str, message: str) -> None:
    """
    A route that cannot be used is refused, saying why, without its
    password.
    """
    with pytest.raises(ValueError, match=message) as raised:
        parseRoute(text)
    assert "hunter2" not in str(raised.value)


def test_fromOptionsNothing() -> None:
    """
    Without parent options there are no routes: the --upstream connector
    stays as it is.
    """
    assert ParentRoutes.fromOptions(None, [], None) is None


def test_fromOptions() -> None:
    """
    The options become the default parent, the routes in order and the CA
    file.
    """
    routes = ParentRoutes.fromOptions(
        "http://parent.example:3128",
        ["*.internal=direct", "partner.example=https://alice:pw@other.example:3129"],
        "/ca.pem",
    )
    assert routes == ParentRoutes(
        PARENT, (("*.internal", None), ("partner.example", OTHER)), "/ca.pem"
    )


@pytest.mark.parametrize(
    ("proxy", "routes", "message"),
    [
        ("socks://p:1", [], "--upstream-proxy: unknown scheme 'socks'"),
        (None, ["nonsense"], "--upstream-route: expected PATTERN=URL"),
        (None, ["a=direct", "A.=direct"], "--upstream-route: a is routed twice"),
    ],
)
def test_fromOptionsErrors(proxy: str | None, routes: list[str], message: str) -> None:
    """
    Errors name the option.
    """
    with pytest.raises(ValueError, match=message):
        ParentRoutes.fromOptions(proxy, routes, None)


def context() -> ConnectorContext:
    return connectorContext(resolver=FakeResolver({}))


def test_makerParentOnly() -> None:
    """
    --upstream-proxy alone makes one parent connector, with the context's
    rules, pool and connect timeout.
    """
    ctx = context()
    connector = ParentRoutes(PARENT).maker(lambda c: FakeConnector())(ctx)
    assert isinstance(connector, ParentProxyConnector)
    assert connector.parent == PARENT
    assert connector.networks is ctx.networks
    assert connector.resolver is ctx.resolverPool
    assert connector.attemptTimeout == ctx.settings.connectTimeout
    assert connector.tlsOptions is None


def test_makerOutgoingAddresses() -> None:
    """
    Parent connectors connect from the settings' outgoing addresses
    (C{--outgoing-address}), as the direct connector does.
    """
    outgoing = OutgoingAddresses("192.0.2.7", None)
    ctx = connectorContext(
        settings=ProxySettings(outgoingAddresses=outgoing),
        resolver=FakeResolver({}),
    )
    connector = ParentRoutes(PARENT, (("*.lan", PARENT),)).maker(
        lambda c: FakeConnector()
    )(ctx)
    assert isinstance(connector, RoutingConnector)
    parent = connector.connectorFor("a.lan")
    assert isinstance(parent, ParentProxyConnector)
    assert parent.outgoing is outgoing
    assert isinstance(connector.default, ParentProxyConnector)
    assert connector.default.outgoing is outgoing


def test_makerRoutes() -> None:
    """
    Routes to the same parent share one connector; direct routes get the
    direct connector; without --upstream-proxy the --upstream connector
    takes the rest.
    """
    ctx = context()
    fallbackConnector = FakeConnector()
    routes = ParentRoutes(
        None,
        (("a.example", PARENT), ("b.example", PARENT), ("*.lan", None)),
    )
    connector = routes.maker(lambda c: fallbackConnector)(ctx)
    assert isinstance(connector, RoutingConnector)
    assert connector.default is fallbackConnector
    a = connector.connectorFor("a.example")
    assert isinstance(a, ParentProxyConnector)
    assert connector.connectorFor("b.example") is a
    direct = connector.connectorFor("x.lan")
    assert isinstance(direct, DirectConnector)
    assert direct.networks is ctx.networks


def test_makerParentWithRoutes() -> None:
    """
    With --upstream-proxy, the parent takes what no route covers, and the
    --upstream connector is not made.
    """
    made: list[ConnectorContext] = []

    def fallback(c: ConnectorContext) -> IUpstreamConnector:
        made.append(c)
        return FakeConnector()

    connector = ParentRoutes(PARENT, (("*.lan", None),)).maker(fallback)(context())
    assert isinstance(connector, RoutingConnector)
    assert isinstance(connector.default, ParentProxyConnector)
    assert made == []


def test_makerReadsTheCA(tmp_path: Path) -> None:
    """
    The --upstream-ca file is read each time a connector is made, and a
    file that cannot be used stops it, naming the option.
    """
    files = makeTLSFiles(tmp_path)
    maker = ParentRoutes(OTHER, (), str(files.caCert)).maker(lambda c: FakeConnector())
    connector = maker(context())
    assert isinstance(connector, ParentProxyConnector)
    assert connector.tlsOptions is not None
    files.caCert.write_text("gone\n")
    with pytest.raises(ValueError, match=r"--upstream-ca: .* holds no PEM certificate"):
        maker(context())
