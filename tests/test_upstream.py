# -*- test-case-name: tests.test_upstream -*-
"""
Tests for L{connectproxy._upstream.DirectConnector} on a memory reactor with
a fake resolver: no sockets, no DNS.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.interfaces import (
    IHostnameResolver,
    IHostResolution,
    IResolutionReceiver,
)
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from zope.interface import implementer

from connectproxy import ConnectRequest, DirectConnector


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        pass


@implementer(IHostnameResolver)
class FakeResolver:
    """
    Resolves every name to the given addresses, at once.
    """

    def __init__(self, addresses: Sequence[IPv4Address | IPv6Address]) -> None:
        self.addresses = addresses
        self.names: list[str] = []

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: object = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        self.names.append(hostName)
        resolution = _Resolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)
        for address in self.addresses:
            resolutionReceiver.addressResolved(
                type(address)("TCP", address.host, portNumber)
            )
        resolutionReceiver.resolutionComplete()
        return resolution


def request(host: str, port: int) -> ConnectRequest:
    return ConnectRequest("CONNECT", f"{host}:{port}", (1, 1), (), host, port)


def test_connectsToResolvedAddress() -> None:
    """
    The connector resolves the target through the reactor's resolver and
    connects to the result on the requested port.
    """
    reactor = MemoryReactorClock()
    resolver = FakeResolver([IPv4Address("TCP", "192.0.2.10", 0)])
    reactor.installNameResolver(resolver)
    connector = DirectConnector(reactor, attemptTimeout=7)
    connector.connectUpstream(request("example.com", 8443), Protocol())
    assert resolver.names == ["example.com"]
    [(host, port, _, timeout, _)] = reactor.tcpClients
    assert (host, port, timeout) == ("192.0.2.10", 8443, 7)


def test_cancelLeavesNoConnection() -> None:
    """
    Cancelling the attempt stops the connection attempt in flight.
    """
    reactor = MemoryReactorClock()
    reactor.installNameResolver(FakeResolver([IPv4Address("TCP", "192.0.2.10", 0)]))
    d = DirectConnector(reactor).connectUpstream(
        request("example.com", 443), Protocol()
    )
    failures: list[object] = []
    d.addErrback(failures.append)
    d.cancel()
    [connector] = reactor.connectors
    assert connector.stoppedConnecting
    [failure] = failures
    assert failure.check(ConnectingCancelledError)  # type: ignore[attr-defined]


@pytest.mark.parametrize("host", ["2001:db8::5", "192.0.2.5"])
def test_addressNeedsNoResolver(host: str) -> None:
    """
    An IP address target is connected to directly, without the resolver.
    """
    reactor = MemoryReactorClock()
    resolver = FakeResolver([])
    reactor.installNameResolver(resolver)
    DirectConnector(reactor).connectUpstream(request(host, 443), Protocol())
    [(connectedHost, port, _, _, _)] = reactor.tcpClients
    assert (connectedHost, port) == (host, 443)
    assert resolver.names == []
