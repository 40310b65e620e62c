"""
connectproxy: an HTTP CONNECT forward proxy built on Twisted.

Run it with C{twistd connectproxy} or C{twist connectproxy}, deploy it from a
C{.tac} file with L{connectproxy.tap.makeService}, or embed
L{ConnectProxyFactory} in your own service.
"""

from twisted.python.deprecate import deprecatedModuleAttribute

from ._access import AccessRequest, Refusal
from ._admission import Gatekeeper, userPortal
from ._factory import ConnectProxyFactory
from ._legacy import ProxyTunnel as ProxyTunnel
from ._observer import AccessLogObserver, RefusedRequest, TunnelRecord
from ._parser import BadRequest, ConnectRequest, ConnectRequestParser
from ._policy import AccessRules, ClientRules, HostRules, NetworkRules, PortRules
from ._resolver import ResolverBusy, ResolverPool
from ._server import ConnectProxyProtocol
from ._settings import ProxySettings
from ._tunnel import DEPRECATED_IN as _DEPRECATED_IN
from ._upstream import DirectConnector, ForbiddenDestination
from ._version import __version__

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
    "DirectConnector",
    "ForbiddenDestination",
    "Gatekeeper",
    "HostRules",
    "NetworkRules",
    "PortRules",
    "ProxySettings",
    "Refusal",
    "RefusedRequest",
    "ResolverBusy",
    "ResolverPool",
    "TunnelRecord",
    "__version__",
    "userPortal",
]
