# -*- test-case-name: tests.test_namespace -*-
"""
connectproxy: an HTTP CONNECT forward proxy built on Twisted.

Run it with C{twistd connectproxy} or C{twist connectproxy}, deploy it from a
C{.tac} file with L{connectproxy.tap.makeService}, or embed
L{ConnectProxyFactory} in your own service.

The names here are what an application embedding the proxy needs: the
factory and its configuration records, the access rules, the records
policies, connectors and observers receive, and the pieces a connector is
built from.  Extension interfaces are in L{connectproxy.interfaces}, fakes
for tests in L{connectproxy.testing}.
"""

from twisted.python.deprecate import deprecatedModuleAttribute

from ._access import AccessRequest
from ._admission import Gatekeeper, userPortal
from ._assembly import ProxyConfig
from ._connector import ConnectorContext, UpstreamRequest
from ._deprecation import DEPRECATED_IN as _DEPRECATED_IN
from ._errors import BadRequest as BadRequest
from ._errors import ForbiddenDestination, ParentProxyError, Refusal, ResolverBusy
from ._factory import ConnectProxyFactory
from ._front import ConnectProxyProtocol as ConnectProxyProtocol
from ._hostnames import HostPatternTable
from ._legacy import ConnectRequest as ConnectRequest
from ._legacy import ConnectRequestParser as ConnectRequestParser
from ._legacy import ProxyTunnel as ProxyTunnel
from ._networks import NetworkRules
from ._observer import (
    AccessLogObserver,
    ConnectionRecord,
    ForwardedRequest,
    Outcome,
    RefusedRequest,
    TunnelRecord,
)
from ._observercontext import ObserverContext
from ._parent import ParentProxyConnector
from ._parenturl import ParentProxy
from ._parser import RequestHead
from ._proxyprotocol import serverEndpoint
from ._relay import TunnelStats
from ._resolver import ResolverPool
from ._routing import RoutingConnector
from ._rules import AccessRules, ClientRules, HostRules, PortRules
from ._settings import ProxySettings
from ._target import Target, TargetForm
from ._upstream import DirectConnector
from ._version import __version__
from ._vetting import VettedResolver, vetAddresses

deprecatedModuleAttribute(
    _DEPRECATED_IN,
    "tunnels are built and watched by ConnectProxyFactory; "
    "an IProxyObserver gets each tunnel's TunnelRecord",
    __name__,
    "ProxyTunnel",
)
deprecatedModuleAttribute(
    _DEPRECATED_IN,
    "use connectproxy.RequestHead: its host, port and authority are those "
    "of its destination, a connectproxy.Target",
    __name__,
    "ConnectRequest",
)

# The proxy's machinery: public once, not what an embedding application
# uses.  They still work for this release.
deprecatedModuleAttribute(
    _DEPRECATED_IN,
    "the protocol of a client connection is built by ConnectProxyFactory",
    __name__,
    "ConnectProxyProtocol",
)
deprecatedModuleAttribute(
    _DEPRECATED_IN,
    "request heads are parsed by the proxy; policies and connectors get "
    "the parsed RequestHead",
    __name__,
    "ConnectRequestParser",
)
deprecatedModuleAttribute(
    _DEPRECATED_IN,
    "the proxy answers a malformed request head itself",
    __name__,
    "BadRequest",
)

__all__ = [
    "AccessLogObserver",
    "AccessRequest",
    "AccessRules",
    "ClientRules",
    "ConnectProxyFactory",
    "ConnectionRecord",
    "ConnectorContext",
    "DirectConnector",
    "ForbiddenDestination",
    "ForwardedRequest",
    "Gatekeeper",
    "HostPatternTable",
    "HostRules",
    "NetworkRules",
    "ObserverContext",
    "Outcome",
    "ParentProxy",
    "ParentProxyConnector",
    "ParentProxyError",
    "PortRules",
    "ProxyConfig",
    "ProxySettings",
    "Refusal",
    "RefusedRequest",
    "RequestHead",
    "ResolverBusy",
    "ResolverPool",
    "RoutingConnector",
    "Target",
    "TargetForm",
    "TunnelRecord",
    "TunnelStats",
    "UpstreamRequest",
    "VettedResolver",
    "__version__",
    "serverEndpoint",
    "userPortal",
    "vetAddresses",
]
