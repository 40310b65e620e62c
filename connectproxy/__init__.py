"""
connectproxy: an HTTP CONNECT forward proxy built on Twisted.

Run it with C{twistd connectproxy} or C{twist connectproxy}, deploy it from a
C{.tac} file with L{connectproxy.tap.makeService}, or embed
L{ConnectProxyFactory} in your own service.
"""

from twisted.python.deprecate import deprecatedModuleAttribute

from ._access import AccessRequest
from ._admission import Gatekeeper, userPortal
from ._assembly import ProxyConfig
from ._connector import ConnectorContext, UpstreamRequest
from ._errors import BadRequest, ForbiddenDestination, Refusal, ResolverBusy
from ._factory import ConnectProxyFactory
from ._front import ConnectProxyProtocol
from ._hostnames import HostPatternTable
from ._legacy import ConnectRequest as ConnectRequest
from ._legacy import ConnectRequestParser as ConnectRequestParser
from ._legacy import ProxyTunnel as ProxyTunnel
from ._observer import (
    AccessLogObserver,
    ConnectionRecord,
    Outcome,
    RefusedRequest,
    TunnelRecord,
)
from ._observercontext import ObserverContext
from ._parser import RequestHead, RequestHeadParser
from ._policy import AccessRules, ClientRules, HostRules, NetworkRules, PortRules
from ._proxyprotocol import serverEndpoint
from ._relay import TunnelStats
from ._resolver import ResolverPool
from ._settings import ProxySettings
from ._target import Target, TargetForm
from ._tunnel import DEPRECATED_IN as _DEPRECATED_IN
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
deprecatedModuleAttribute(
    _DEPRECATED_IN,
    "use connectproxy.RequestHeadParser",
    __name__,
    "ConnectRequestParser",
)

__all__ = [
    "AccessLogObserver",
    "AccessRequest",
    "AccessRules",
    "BadRequest",
    "ClientRules",
    "ConnectProxyFactory",
    "ConnectProxyProtocol",
    "ConnectionRecord",
    "ConnectorContext",
    "DirectConnector",
    "ForbiddenDestination",
    "Gatekeeper",
    "HostPatternTable",
    "HostRules",
    "NetworkRules",
    "ObserverContext",
    "Outcome",
    "PortRules",
    "ProxyConfig",
    "ProxySettings",
    "Refusal",
    "RefusedRequest",
    "RequestHead",
    "RequestHeadParser",
    "ResolverBusy",
    "ResolverPool",
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
