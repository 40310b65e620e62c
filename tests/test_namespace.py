# -*- test-case-name: tests.test_namespace -*-
"""
Tests for the public names of L{connectproxy}: what an embedding
application needs, and the machinery that was public once and is now
deprecated.
"""

from __future__ import annotations

import re
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


def test_deprecationsNameOneRelease() -> None:
    """
    Every deprecation of plugin API version 2 names the same release,
    C{DEPRECATED_IN}, whichever module warns: a tunnel attribute that moved
    to its stats, an attribute of the parsed request read on
    L{connectproxy.UpstreamRequest}, and a version-1 call to
    L{connectproxy.DirectConnector}.  That release is not later than the
    package's own version.
    """
    from twisted.internet.protocol import Protocol
    from twisted.internet.testing import MemoryReactorClock
    from twisted.python.versions import Version, getVersionString

    from connectproxy._deprecation import DEPRECATED_IN
    from connectproxy.testing import FakeResolver, upstreamRequest
    from tests.test_tunnel import Tunnel

    release = getVersionString(DEPRECATED_IN)
    assert release == "connectproxy 0.1.0"
    current = re.match(r"(\d+)\.(\d+)\.(\d+)", connectproxy.__version__)
    assert current is not None
    assert DEPRECATED_IN <= Version("connectproxy", *map(int, current.groups()))
    target = upstreamRequest("example.com")
    connector = connectproxy.DirectConnector(
        MemoryReactorClock(),
        resolver=connectproxy.ResolverPool(
            MemoryReactorClock(), resolver=FakeResolver({})
        ),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Tunnel().start(b"").tunnel.bytesUp  # noqa: B018
        target.authority  # noqa: B018
        connector.connectUpstream(target.request, Protocol())  # type: ignore[arg-type]
    messages = [str(w.message) for w in caught]
    assert len(messages) == 3
    for message in messages:
        assert f"deprecated in {release}" in message, message
