"""
connectproxy: an HTTP CONNECT forward proxy built on Twisted.

Run it with C{twistd connectproxy} or C{twist connectproxy}, deploy it from a
C{.tac} file with L{connectproxy.tap.makeService}, or embed
L{ConnectProxyFactory} in your own service.
"""

from ._access import AccessRequest
from ._admission import Gatekeeper, userPortal
from ._connector import ConnectorContext, UpstreamRequest
from ._errors import BadRequest, ForbiddenDestination, Refusal, ResolverBusy
from ._factory import ConnectProxyFactory
from ._hostnames import HostPatternTable
from ._observer import AccessLogObserver, RefusedRequest, TunnelRecord
from ._parser import ConnectRequest, ConnectRequestParser
from ._policy import AccessRules, ClientRules, HostRules, NetworkRules, PortRules
from ._proxyprotocol import serverEndpoint
from ._resolver import ResolverPool
from ._server import ConnectProxyProtocol
from ._settings import ProxySettings
from ._tunnel import ProxyTunnel
from ._upstream import DirectConnector
from ._version import __version__
from ._vetting import VettedResolver, vetAddresses

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
    "ProxySettings",
    "ProxyTunnel",
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
