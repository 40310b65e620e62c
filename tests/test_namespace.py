# -*- test-case-name: tests.test_namespace -*-
"""
Tests for the public names of L{connectproxy}: what an embedding
application needs, and the machinery that was public once and is now
deprecated.
"""

from __future__ import annotations

import warnings

import pytest

import connectproxy
from connectproxy import _errors, _front, _legacy, _parser

PUBLIC = {
    # The factory, its configuration and its listeners.
    "ConnectProxyFactory",
    "ProxyConfig",
    "ProxySettings",
    "serverEndpoint",
    "__version__",
    # The access checks.
    "AccessRules",
    "ClientRules",
    "Gatekeeper",
    "HostPatternTable",
    "HostRules",
    "NetworkRules",
    "PortRules",
    "userPortal",
    # What policies, connectors and observers receive or answer.
    "AccessLogObserver",
    "AccessRequest",
    "ConnectorContext",
    "ForbiddenDestination",
    "ForwardedRequest",
    "Refusal",
    "RefusedRequest",
    "ResolverBusy",
    "TunnelRecord",
    "UpstreamRequest",
    # The parsed request head and its destination.
    "RequestHead",
    "Target",
    "TargetForm",
    # What a connector is built from.
    "DirectConnector",
    "ResolverPool",
    "VettedResolver",
    "vetAddresses",
    # Parent proxies and routes.
    "ParentProxy",
    "ParentProxyConnector",
    "ParentProxyError",
    "RoutingConnector",
    # Observer contract 2.
    "ConnectionRecord",
    "ObserverContext",
    "Outcome",
    "TunnelStats",
}

DEPRECATED = {
    "BadRequest": _errors.BadRequest,
    "ConnectProxyProtocol": _front.ConnectProxyProtocol,
    "ConnectRequest": _legacy.ConnectRequest,
    "ConnectRequestParser": _parser.RequestHeadParser,
    "ProxyTunnel": _legacy.ProxyTunnel,
}


def test_publicNames() -> None:
    """
    C{__all__} names what an embedding application needs, and each name is
    there without a warning.
    """
    assert set(connectproxy.__all__) == PUBLIC
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in PUBLIC:
            getattr(connectproxy, name)


@pytest.mark.parametrize("name", sorted(DEPRECATED))
def test_deprecatedNames(name: str) -> None:
    """
    The proxy's machinery, public once, still works for this release, with
    a L{DeprecationWarning} that says since when and what to use instead.
    """
    with pytest.warns(DeprecationWarning) as caught:
        found = getattr(connectproxy, name)
    assert found is DEPRECATED[name]
    [warning] = caught
    message = str(warning.message)
    assert message.startswith(
        f"connectproxy.{name} was deprecated in connectproxy 0.1.0: "
    )
    assert warning.filename == __file__
