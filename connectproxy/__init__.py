"""
connectproxy: an HTTP CONNECT forward proxy built on Twisted.

Run it with C{twistd connectproxy} or C{twist connectproxy}, deploy it from a
C{.tac} file with L{connectproxy.tap.makeService}, or embed
L{ConnectProxyFactory} in your own service.
"""

from ._observer import AccessLogObserver, RefusedRequest, TunnelRecord
from ._parser import BadRequest, ConnectRequest, ConnectRequestParser
from ._server import ConnectProxyFactory, ConnectProxyProtocol, ProxySettings
from ._tunnel import ProxyTunnel
from ._upstream import DirectConnector
from ._version import __version__

__all__ = [
    "AccessLogObserver",
    "BadRequest",
    "ConnectProxyFactory",
    "ConnectProxyProtocol",
    "ConnectRequest",
    "ConnectRequestParser",
    "DirectConnector",
    "ProxySettings",
    "ProxyTunnel",
    "RefusedRequest",
    "TunnelRecord",
    "__version__",
]
