# -*- test-case-name: tests.test_upstream -*-
"""
Upstream connectors: how the proxy reaches the target of a CONNECT.
"""

from __future__ import annotations

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
)
from twisted.internet.interfaces import (
    IAddress,
    IProtocol,
    IReactorCore,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory
from zope.interface import implementer

from ._parser import ConnectRequest
from .interfaces import IUpstreamConnector

__all__ = ["DirectConnector", "connectQuietly"]


class _OneProtocolFactory(Factory):
    """
    Hands out one ready-made protocol, without logging each start and stop.
    """

    noisy = False

    def __init__(self, protocol: IProtocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: IAddress) -> IProtocol:  # type: ignore[override]
        return self._protocol


def connectQuietly(
    endpoint: IStreamClientEndpoint, protocol: IProtocol
) -> Deferred[IProtocol]:
    """
    Like L{twisted.internet.endpoints.connectProtocol}, without the two log
    lines per connection.
    """
    return endpoint.connect(_OneProtocolFactory(protocol))


@implementer(IUpstreamConnector)
class DirectConnector:
    """
    Connect straight to the target: an IP address directly, a name with a
    L{HostnameEndpoint}, which resolves it through the reactor's resolver and
    tries the addresses in Happy Eyeballs order (RFC 8305).

    The proxy puts one total deadline over the whole attempt and cancels it
    when the client goes away; the per-attempt timeout here is only a
    backstop.
    """

    def __init__(self, reactor: IReactorCore, attemptTimeout: float = 30.0) -> None:
        """
        @param reactor: The reactor to resolve and connect with.
        @param attemptTimeout: Seconds allowed for one connection attempt.
        """
        self._reactor = reactor
        self._attemptTimeout = attemptTimeout

    def connectUpstream(
        self, request: ConnectRequest, protocol: IProtocol
    ) -> Deferred[IProtocol]:
        host, port = request.host, request.port
        assert host is not None and port is not None
        endpoint: IStreamClientEndpoint
        if isIPAddress(host):
            # An address needs no resolver (and no thread) to be connected.
            endpoint = TCP4ClientEndpoint(
                self._reactor, host, port, timeout=self._attemptTimeout
            )
        elif isIPv6Address(host):
            endpoint = TCP6ClientEndpoint(
                self._reactor, host, port, timeout=self._attemptTimeout
            )
        else:
            endpoint = HostnameEndpoint(
                self._reactor, host, port, timeout=self._attemptTimeout
            )
        return connectQuietly(endpoint, protocol)
