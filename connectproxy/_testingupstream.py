# -*- test-case-name: tests.test_testing -*-
"""
Fakes for the upstream side and the plugin records, for
L{connectproxy.testing}: a connector driven by hand (L{FakeConnector}), a
name resolver answering from a table (L{FakeResolver}), and the records a
policy or a connector receives (L{accessRequest}, L{upstreamRequest},
L{connectorContext}), with L{checkPolicy} to ask a policy synchronously.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IHostnameResolver,
    IHostResolution,
    IProtocol,
    IResolutionReceiver,
)
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from zope.interface import implementer

from ._access import AccessRequest, Refusal
from ._connector import ConnectorContext, UpstreamRequest
from ._networks import NetworkRules
from ._parser import RequestHead
from ._resolver import ResolverPool
from ._settings import ProxySettings
from ._target import Target, TargetForm
from ._testinghttp import HalfCloseableStringTransport
from ._upstream import StaticResolver
from .interfaces import IAccessPolicy, IUpstreamConnector

__all__ = [
    "ConnectAttempt",
    "FakeConnector",
    "FakeResolver",
    "accessRequest",
    "checkPolicy",
    "connectorContext",
    "upstreamRequest",
]


@dataclass
class ConnectAttempt:
    """
    One call to L{FakeConnector.connectUpstream}, to be finished by the test.

    @ivar target: What the connector was asked to connect to.
    @ivar protocol: The protocol to connect.
    @ivar deferred: What the connector returned.
    @ivar cancelled: Whether the proxy cancelled the attempt.
    @ivar transport: The upstream transport, after L{succeed}.
    """

    target: UpstreamRequest
    protocol: IProtocol
    deferred: Deferred[IProtocol] = field(repr=False)
    cancelled: bool = False
    transport: HalfCloseableStringTransport | None = None

    @property
    def request(self) -> RequestHead:
        """
        The parsed request being connected (C{target.request}).
        """
        return self.target.request

    def succeed(
        self, peer: Any = None, transport: HalfCloseableStringTransport | None = None
    ) -> HalfCloseableStringTransport:
        """
        Connect the protocol to a fresh (or the given) transport and fire the
        attempt.

        @param peer: The upstream address; by default the requested target as
            an IPv4 address.
        @return: The upstream transport.
        """
        if transport is None:
            if peer is None:
                peer = IPv4Address("TCP", "192.0.2.1", self.target.port)
            transport = HalfCloseableStringTransport(peerAddress=peer)
        self.transport = transport
        self.protocol.makeConnection(transport)
        self.deferred.callback(self.protocol)
        return transport

    def fail(self, reason: BaseException | Failure) -> None:
        """
        Fail the attempt.
        """
        self.deferred.errback(reason)

    def loseUpstream(self, reason: BaseException | None = None) -> None:
        """
        Tell the connected upstream protocol its connection is gone.
        """
        self.protocol.connectionLost(Failure(reason or ConnectionDone()))


@implementer(IUpstreamConnector)
class FakeConnector:
    """
    An L{IUpstreamConnector} that connects nothing until told to.

    @ivar attempts: Every attempt, in order.
    """

    def __init__(self) -> None:
        self.attempts: list[ConnectAttempt] = []

    def connectUpstream(
        self, target: UpstreamRequest, protocol: IProtocol
    ) -> Deferred[IProtocol]:
        def cancel(d: Deferred[IProtocol]) -> None:
            attempt.cancelled = True

        d: Deferred[IProtocol] = Deferred(cancel)
        attempt = ConnectAttempt(target, protocol, d)
        self.attempts.append(attempt)
        return d


def accessRequest(
    host: str = "example.com",
    port: int = 443,
    user: str | None = None,
    clientHost: str = "127.0.0.1",
    clientPort: int = 40000,
    headers: tuple[tuple[str, str], ...] = (),
) -> AccessRequest:
    """
    Build the L{AccessRequest} a policy would receive for a CONNECT to
    C{host:port}.
    """
    request = _connectRequest(host, port, headers)
    return AccessRequest(clientHost, clientPort, user, host, port, request)


def upstreamRequest(
    host: str = "example.com",
    port: int = 443,
    user: str | None = None,
    client: IAddress | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> UpstreamRequest:
    """
    Build the L{UpstreamRequest} a connector would receive for a CONNECT to
    C{host:port}.

    @param host: The target host, normalised as the proxy hands it over (a
        lower-cased name, or an IP address without brackets).
    @param client: The client's address; C{127.0.0.1} port 40000 when
        C{None}.
    @param headers: Header fields of the request besides C{Host}, as
        C{(lower-cased name, value)} pairs.
    """
    if client is None:
        client = IPv4Address("TCP", "127.0.0.1", 40000)
    request = _connectRequest(host, port, headers)
    return UpstreamRequest(host, port, user, client, request)


def connectorContext(
    reactor: Any = None,
    settings: ProxySettings | None = None,
    networks: NetworkRules | None = None,
    resolver: IHostnameResolver | None = None,
) -> ConnectorContext:
    """
    Build the L{ConnectorContext} a connector plugin gets, with no sockets,
    threads or DNS: for testing C{connectorFromArgument} and the connector
    it makes.

    @param reactor: The reactor; a new L{MemoryReactorClock} when C{None}
        (the connector's attempts then show in C{reactor.tcpClients}).
    @param settings: The settings; the defaults when C{None}.
    @param networks: The destination network rules; the defaults (globally
        routable addresses only) when C{None}.
    @param resolver: What the resolver pool resolves names with; a
        L{FakeResolver} that knows no name when C{None}.
    """
    reactor = MemoryReactorClock() if reactor is None else reactor
    settings = ProxySettings() if settings is None else settings
    pool = ResolverPool(
        reactor,
        settings.resolverThreads,
        settings.resolverPerClient,
        resolver=FakeResolver({}) if resolver is None else resolver,
    )
    if networks is None:
        networks = NetworkRules.fromStrings()
    return ConnectorContext(reactor, settings, networks, pool)


def _connectRequest(
    host: str, port: int, headers: tuple[tuple[str, str], ...]
) -> RequestHead:
    """
    The parsed head of a CONNECT to C{host:port}, as a client sends it.
    """
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return RequestHead(
        "CONNECT",
        authority,
        (1, 1),
        (("host", authority), *headers),
        Target(host, port, TargetForm.AUTHORITY),
    )


def checkPolicy(policy: IAccessPolicy, access: AccessRequest) -> Refusal | None:
    """
    Ask a policy about a request and return its answer, synchronously.

    @return: C{None} (allowed) or the L{Refusal}.
    @raise AssertionError: When the policy answers with a Deferred that has
        not fired: drive its clock or fakes first, then call
        C{policy.checkAccess} yourself.
    @raise Exception: Whatever the policy raised or failed with.
    """
    result = policy.checkAccess(access)
    if isinstance(result, Deferred):
        outcome: list[Any] = []
        result.addBoth(outcome.append)
        if not outcome:
            raise AssertionError(f"{policy!r} has not answered yet")
        answer = outcome[0]
        if isinstance(answer, Failure):
            answer.raiseException()
        return cast(Refusal | None, answer)
    return result


@implementer(IHostnameResolver)
class FakeResolver:
    """
    An L{IHostnameResolver} answering from a table, at once, with no DNS:
    install it with C{reactor.installNameResolver(FakeResolver({...}))}.

    @ivar names: Every name asked for, in order.
    """

    def __init__(self, table: dict[str, list[str]]) -> None:
        """
        @param table: Host name to IP addresses (as text); names not in it
            resolve to nothing.
        """
        self._table = table
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
        addresses = [
            (IPv6Address if ":" in text else IPv4Address)("TCP", text, portNumber)
            for text in self._table.get(hostName, [])
        ]
        return StaticResolver(addresses).resolveHostName(resolutionReceiver, hostName)
