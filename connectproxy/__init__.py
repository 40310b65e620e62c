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
from ._hostnames import HostPatternTable
from ._legacy import ProxyTunnel as ProxyTunnel
from ._networks import NetworkRules
from ._observer import AccessLogObserver, RefusedRequest, TunnelRecord
from ._parser import ConnectRequest, ConnectRequestParser
from ._proxyprotocol import serverEndpoint
from ._resolver import ResolverPool
from ._rules import AccessRules, ClientRules, HostRules, PortRules
from ._server import ConnectProxyProtocol
from ._settings import ProxySettings
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

__all__ = [
    "AccessLogObserver",
    "AccessRequest",
    "AccessRules",
    "BadRequest",
    "ClientRules",
    "ConnectProxyFactory",
    "ConnectProxyProtocol",
    "ConnectRequest",
    "ConnectRequestParser",
    "ConnectorContext",
    "DirectConnector",
    "ForbiddenDestination",
    "Gatekeeper",
    "HostPatternTable",
    "HostRules",
    "NetworkRules",
    "PortRules",
    "ProxyConfig",
    "ProxySettings",
    "Refusal",
    "RefusedRequest",
    "ResolverBusy",
    "ResolverPool",
    "TunnelRecord",
    "UpstreamRequest",
    "VettedResolver",
    "__version__",
    "serverEndpoint",
    "userPortal",
    "vetAddresses",
]
