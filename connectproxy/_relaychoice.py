# -*- test-case-name: tests.test_relaychoice -*-
"""
Which relay moves a tunnel's bytes (C{--relay}): L{RelayChoice}, the relay
factory of L{ConnectProxyFactory <connectproxy.ConnectProxyFactory>}, picks
per tunnel the splice relay (L{SpliceRelay
<connectproxy._splice.SpliceRelay>}) where it applies and the transport
relay (L{TransportRelay <connectproxy._tunnel.TransportRelay>}) everywhere
else, by the settings the tunnel opened with (so a reload changes it for
new tunnels).
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import IReactorFDSet, IReactorTime

from ._pipes import PIPES, PipePool
from ._relay import _Relay, _RelayEnd
from ._settings import ProxySettings
from ._splice import spliceRelay
from ._tunnel import transportRelay

__all__ = [
    "RELAY_MODES",
    "RelayChoice",
    "spliceAvailable",
    "spliceUnavailableReason",
    "spliceable",
]

#: The values of C{--relay}: C{auto} splices where it can; C{splice} does
#: too, and refuses to start where C{splice(2)} does not exist; C{transport}
#: never splices.
RELAY_MODES = ("auto", "splice", "transport")

#: The address families the splice relay takes: TCP over IPv4 and IPv6.
_FAMILIES = (socket.AF_INET, socket.AF_INET6)


def spliceUnavailableReason(
    platform: str | None = None, osModule: Any = os
) -> str | None:
    """
    Why this platform cannot splice, or C{None} when it can.

    @param platform: C{sys.platform}, by default.
    @param osModule: Where C{splice} and C{pipe2} are looked for.
    @return: A short reason, naming what is missing.
    """
    platform = sys.platform if platform is None else platform
    if not platform.startswith("linux"):
        return f"splice(2) is Linux only (this is {platform})"
    if not (hasattr(osModule, "splice") and hasattr(osModule, "pipe2")):
        return "this Python has no os.splice (Python 3.10 or later on Linux)"
    return None


def spliceAvailable() -> bool:
    """
    Whether this platform can splice.
    """
    return spliceUnavailableReason() is None


def spliceable(transport: object) -> bool:
    """
    Whether the splice relay can take C{transport}'s socket over: a plain,
    connected TCP connection (IPv4 or IPv6) of a reactor whose descriptors
    it can register, with no TLS and no producer.

    TLS (C{tls:} and C{ssl:} listeners, C{https://} parents) wraps the
    connection in a protocol, so its transport is no C{tcp.Connection};
    neither is any other wrapper's.  A connection behind connectproxy's own
    PROXY-protocol listener (C{haproxy:tcp:...}) is: the header was read
    before the request, and the proxy's protocol runs on the plain TCP
    transport.  UNIX sockets are relayed through the transports.
    """
    if not isinstance(transport, tcp.Connection):
        return False
    if getattr(transport, "TLS", False) or not transport.connected:
        return False
    if transport.disconnecting or transport.producer is not None:
        return False
    if not IReactorFDSet.providedBy(transport.reactor):
        return False
    sock = transport.getHandle()
    return sock.family in _FAMILIES and sock.type == socket.SOCK_STREAM


class RelayChoice:
    """
    The relay factory that follows C{--relay} (L{ProxySettings.relay}) per
    tunnel: the splice relay when the mode is not C{transport}, the platform
    can splice and both sides are L{spliceable}; the transport relay
    otherwise.  The access log names the relay each tunnel used.

    @ivar pool: The pipes of the splice relays.
    """

    def __init__(self, pool: PipePool = PIPES, available: bool | None = None) -> None:
        """
        @param pool: The pipes of the splice relays (the process's by
            default).
        @param available: Whether the platform can splice; found out when
            C{None}.
        """
        self.pool = pool
        self.available = spliceAvailable() if available is None else available

    def __call__(
        self,
        client: _RelayEnd,
        upstream: _RelayEnd,
        clock: IReactorTime,
        settings: ProxySettings,
        onClosed: Callable[[_Relay], object],
    ) -> _Relay:
        """
        Build the relay of one tunnel (a L{_RelayFactory
        <connectproxy._relay._RelayFactory>}).
        """
        if (
            settings.relay != "transport"
            and self.available
            and spliceable(client.transport)
            and spliceable(upstream.transport)
        ):
            return spliceRelay(client, upstream, clock, settings, onClosed, self.pool)
        return transportRelay(client, upstream, clock, settings, onClosed)

    def stop(self) -> None:
        """
        Close the empty pipes kept for the next tunnels (the proxy stopped
        listening); tunnels still open go on, and make pipes as they need.
        """
        self.pool.close()
