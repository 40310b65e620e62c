# -*- test-case-name: tests.test_testing -*-
"""
Fakes for testing code that uses or extends connectproxy without sockets or
real time: an upstream connector you drive by hand, a transport that records
half-closes, a harness that wires a whole proxy to a L{MemoryReactorClock}
with a client that reads the proxy's responses, a parent proxy for
connectors that tunnel through one, and the records policies and
connectors receive.

Example::

    harness = ProxyHarness()
    client = harness.connectClient()
    client.send(connectHead("example.com:443"))
    attempt = harness.connector.attempts[-1]
    upstream = attempt.succeed()
    assert client.response().status == 200

The harness, its client and the recording observer are here; the other
fakes live in private modules by concern (C{_testingupstream}: connectors,
resolvers and plugin records; C{_testingparent}: the parent proxy;
C{_testinghttp}: transports and responses) and are imported from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from zope.interface import implementer

from ._admission import Gatekeeper
from ._factory import ConnectProxyFactory
from ._observer import (
    ConnectionRecord,
    ForwardedRequest,
    RefusedRequest,
    TunnelRecord,
)
from ._observercontext import ObserverContext
from ._settings import ProxySettings
from ._testinghttp import (
    HalfCloseableStringTransport,
    Response,
    connectHead,
    readResponses,
)
from ._testingparent import FakeParentProxy, ParentConnection
from ._testingupstream import (
    ConnectAttempt,
    FakeConnector,
    FakeResolver,
    accessRequest,
    checkPolicy,
    connectorContext,
    upstreamRequest,
)
from .interfaces import IForwardingObserver, IProxyObserver

__all__ = [
    "ConnectAttempt",
    "FakeClient",
    "FakeConnector",
    "FakeParentProxy",
    "FakeResolver",
    "HalfCloseableStringTransport",
    "ParentConnection",
    "ProxyHarness",
    "RecordingObserver",
    "Response",
    "accessRequest",
    "checkPolicy",
    "connectHead",
    "connectorContext",
    "upstreamRequest",
]


@implementer(IForwardingObserver)
class RecordingObserver:
    """
    An L{IProxyObserver} (and L{IForwardingObserver}) that keeps every
    report.

    @ivar connectionsOpened: Each L{ConnectionRecord} of
        C{connectionOpened}, in order.
    @ivar connectionsClosed: Each L{ConnectionRecord} of
        C{connectionClosed}.
    @ivar refused: Each L{RefusedRequest}.
    @ivar opened: Each L{TunnelRecord} of C{tunnelOpened}.
    @ivar closed: Each L{TunnelRecord} of C{tunnelClosed}.
    @ivar forwarded: Each L{ForwardedRequest} of C{requestForwarded}.
    @ivar events: Every report in order, as C{(method name, record)}.
    """

    def __init__(self) -> None:
        self.connectionsOpened: list[ConnectionRecord] = []
        self.connectionsClosed: list[ConnectionRecord] = []
        self.refused: list[RefusedRequest] = []
        self.opened: list[TunnelRecord] = []
        self.closed: list[TunnelRecord] = []
        self.forwarded: list[ForwardedRequest] = []
        self.events: list[tuple[str, object]] = []

    def connectionOpened(self, event: ConnectionRecord) -> None:
        self.connectionsOpened.append(event)
        self.events.append(("connectionOpened", event))

    def connectionClosed(self, event: ConnectionRecord) -> None:
        self.connectionsClosed.append(event)
        self.events.append(("connectionClosed", event))

    def requestRefused(self, event: RefusedRequest) -> None:
        self.refused.append(event)
        self.events.append(("requestRefused", event))

    def tunnelOpened(self, event: TunnelRecord) -> None:
        self.opened.append(event)
        self.events.append(("tunnelOpened", event))

    def tunnelClosed(self, event: TunnelRecord) -> None:
        self.closed.append(event)
        self.events.append(("tunnelClosed", event))

    def requestForwarded(self, event: ForwardedRequest) -> None:
        self.forwarded.append(event)
        self.events.append(("requestForwarded", event))


@dataclass
class FakeClient:
    """
    A client connection to a L{ProxyHarness}.

    @ivar protocol: The proxy's protocol for this client.
    @ivar transport: The client-side transport (what the proxy wrote).
    """

    protocol: Any
    transport: HalfCloseableStringTransport

    def send(self, data: bytes) -> None:
        """
        Deliver bytes from the client to the proxy.
        """
        self.protocol.dataReceived(data)

    def lose(self, reason: BaseException | None = None) -> None:
        """
        Tell the proxy the client's connection is gone.
        """
        self.protocol.connectionLost(Failure(reason or ConnectionDone()))

    def responses(self) -> list[Response]:
        """
        Read every response the proxy wrote to this client so far, in
        order.  Reading stops at a 2xx: it answers the CONNECT, and the
        bytes after it belong to the tunnel (RFC 9110 section 9.3.6).

        @return: The responses, perhaps none.
        @raise AssertionError: When what the proxy wrote is not a sequence
            of complete HTTP/1.x responses: a head or body cut short, a
            malformed status line or field line, or a body that neither
            C{Content-Length} nor the end of the connection delimits.
        """
        return readResponses(self.transport.value(), self.transport.disconnecting)

    def response(self) -> Response:
        """
        Read the one response the proxy wrote to this client.

        @raise AssertionError: When the proxy wrote no response or more
            than one, or anything L{responses} refuses.
        """
        found = self.responses()
        if len(found) != 1:
            raise AssertionError(
                f"expected one response, got {len(found)}: "
                f"{self.transport.value()[:200]!r}"
            )
        return found[0]


class ProxyHarness:
    """
    A whole proxy on a L{MemoryReactorClock} with a L{FakeConnector} and a
    L{RecordingObserver}.

    @ivar clock: The reactor and clock; call C{clock.advance(seconds)}.
    @ivar connector: The fake upstream connector.
    @ivar observer: What the proxy reported.
    @ivar factory: The proxy factory.
    @ivar services: Where observers made with L{observerContext} add their
        services; not started (call C{services.startService()}).
    """

    def __init__(
        self,
        settings: ProxySettings | None = None,
        gatekeeper: Gatekeeper | None = None,
    ) -> None:
        """
        @param settings: The proxy's tunables; the defaults when C{None}.
        @param gatekeeper: The access checks; the safe defaults when
            C{None} (loopback clients, port 443, or 80 and 443 for forwarded
            requests, no authentication).
        """
        self.clock = MemoryReactorClock()
        self.connector = FakeConnector()
        self.observer = RecordingObserver()
        self.factory = ConnectProxyFactory(
            self.clock, settings, self.connector, [self.observer], gatekeeper
        )
        self.services = MultiService()

    def observerContext(self) -> ObserverContext:
        """
        The L{ObserverContext} an observer plugin gets, for this proxy: its
        clock, its factory and L{services}.
        """
        return ObserverContext(self.clock, self.factory, self.services)

    def addObserver(self, observer: IProxyObserver) -> None:
        """
        Tell C{observer} too, after L{observer}, of what the proxy does from
        now on.
        """
        self.factory.observer.observers.append(observer)

    def connectClient(self, peer: Any = None) -> FakeClient:
        """
        Open a client connection to the proxy.

        @param peer: The client's address; 127.0.0.1 by default.
        """
        if peer is None:
            peer = IPv4Address(
                "TCP", "127.0.0.1", 40000 + len(self.factory.connections)
            )
        protocol = self.factory.buildProtocol(peer)
        if protocol is None:
            raise RuntimeError("the proxy closed the connection at once")
        transport = HalfCloseableStringTransport(peerAddress=peer)
        protocol.makeConnection(transport)
        return FakeClient(protocol, transport)
