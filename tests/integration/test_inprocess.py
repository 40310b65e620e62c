# -*- test-case-name: tests.integration.test_inprocess -*-
"""
The proxy in this process on real loopback sockets, driven by pytest-twisted:
half-close, connect deadlines and clients that leave, observed from inside
the factory.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from zope.interface import implementer

from connectproxy import ConnectProxyFactory, ProxySettings
from connectproxy._admission import Gatekeeper
from connectproxy._connect import ConnectHandler
from connectproxy._handler import Phase
from connectproxy._networks import NetworkRules
from connectproxy._rules import AccessRules, ClientRules, HostRules, PortRules
from connectproxy.testing import RecordingObserver, connectHead

pytestmark = pytest.mark.integration

DEADLINE = 20.0


def reactor() -> Any:
    from twisted.internet import reactor as globalReactor

    return globalReactor


def withDeadline(d: Deferred[Any]) -> Deferred[Any]:
    """
    Fail C{d} instead of hanging the run if the event never comes.
    """
    return d.addTimeout(DEADLINE, reactor())


@implementer(IHalfCloseableProtocol)
class ShoutingServer(Protocol):
    """
    Collects everything until the client's FIN, then answers it upper-cased
    and closes.
    """

    def connectionMade(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def readConnectionLost(self) -> None:
        self.transport.write(self.received.upper())  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass


@implementer(IHalfCloseableProtocol)
class Client(Protocol):
    """
    Sends a CONNECT and records what comes back, and when the stream ends.
    """

    def __init__(self, head: bytes) -> None:
        self.head = head
        self.received = b""
        self.responded: Deferred[bytes] = Deferred()
        self.closed: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.head)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if b"\r\n\r\n" in self.received and not self.responded.called:
            self.responded.callback(self.received)

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        if not self.responded.called:
            self.responded.callback(self.received)
        self.closed.callback(None)


class Proxy:
    """
    A proxy listening on a loopback port, and what it reported.
    """

    def __init__(self, settings: ProxySettings) -> None:
        self.observer = RecordingObserver()
        rules = AccessRules(
            ports=PortRules.fromStrings(["1-65535"]),
            networks=NetworkRules.fromStrings(allow=["127.0.0.0/8"]),
            hosts=HostRules(),
            clients=ClientRules(),
        )
        self.factory = ConnectProxyFactory(
            reactor(), settings, observers=[self.observer], gatekeeper=Gatekeeper(rules)
        )
        self.port: Any = None

    @pytest_twisted.inlineCallbacks
    def start(self) -> Generator[Deferred[Any], Any, None]:
        endpoint = TCP4ServerEndpoint(reactor(), 0, interface="127.0.0.1")
        self.port = yield endpoint.listen(self.factory)

    def client(self, head: bytes) -> Deferred[Client]:
        endpoint = TCP4ClientEndpoint(reactor(), "127.0.0.1", self.port.getHost().port)
        protocol = Client(head)
        d: Deferred[Any] = endpoint.connect(Factory.forProtocol(lambda: protocol))
        return d


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    proxy = Proxy(ProxySettings(connectTimeout=1.0, abortTimeout=2.0))
    pytest_twisted.blockon(proxy.start())
    yield proxy
    pytest_twisted.blockon(proxy.port.stopListening())


@pytest.fixture
def shoutingOrigin() -> Iterator[int]:
    port = pytest_twisted.blockon(
        TCP4ServerEndpoint(reactor(), 0, interface="127.0.0.1").listen(
            Factory.forProtocol(ShoutingServer)
        )
    )
    yield port.getHost().port
    pytest_twisted.blockon(port.stopListening())


@pytest.fixture
def blackHole() -> Iterator[int]:
    """
    A loopback port whose accept queue is full, so new connections to it
    hang in SYN-SENT: an upstream that never answers.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    yield port
    for s in fillers:
        s.close()
    listener.close()


@pytest_twisted.inlineCallbacks
def test_halfCloseOnRealSockets(
    proxy: Proxy, shoutingOrigin: int
) -> Generator[Deferred[Any], Any, None]:
    """
    A client's FIN reaches the origin through the proxy, and the origin's
    answer still comes back afterwards.
    """
    client = yield proxy.client(connectHead(f"127.0.0.1:{shoutingOrigin}") + b"early ")
    response = yield withDeadline(client.responded)
    assert response.startswith(b"HTTP/1.1 200 Connection established\r\n\r\n")
    client.transport.write(b"and late")
    client.transport.loseWriteConnection()
    yield withDeadline(client.closed)
    assert client.received.endswith(b"\r\n\r\nEARLY AND LATE")
    yield waitUntil(lambda: proxy.observer.closed)
    [record] = proxy.observer.closed
    assert (record.bytesUp, record.bytesDown) == (14, 14)
    assert record.reason == "client closed"
    assert proxy.factory.connections == set()


@pytest_twisted.inlineCallbacks
def test_connectDeadlineOnRealSockets(
    proxy: Proxy, blackHole: int
) -> Generator[Deferred[Any], Any, None]:
    """
    An upstream that never answers gets the client a 504 after the connect
    deadline, and nothing is left open.
    """
    client = yield proxy.client(connectHead(f"127.0.0.1:{blackHole}"))
    yield withDeadline(client.closed)
    assert client.received.startswith(b"HTTP/1.1 504 ")
    assert proxy.observer.refused[0].status == 504
    yield waitUntil(lambda: not proxy.factory.connections)


@pytest_twisted.inlineCallbacks
def test_clientLeavesWhileConnecting(
    proxy: Proxy, blackHole: int
) -> Generator[Deferred[Any], Any, None]:
    """
    A client that leaves (with a reset) while the upstream connect hangs
    cancels it: the proxy keeps no connection and no timer for it, and the
    request is reported as abandoned, with no response.  (A FIN is not
    leaving: it may be a half-close, passed on once the tunnel exists.)
    """
    client = yield proxy.client(connectHead(f"127.0.0.1:{blackHole}"))
    yield waitUntil(lambda: proxy.factory.connections)
    [protocol] = proxy.factory.connections
    yield waitUntil(lambda: protocol.phase is Phase.CONNECTING)
    admission = protocol._admission
    assert admission is not None
    handler = admission.handler
    assert isinstance(handler, ConnectHandler)
    assert handler._pending is not None
    client.transport.abortConnection()
    yield withDeadline(client.closed)
    yield waitUntil(lambda: not proxy.factory.connections)
    assert handler._pending is None
    assert admission._timer is None
    [refused] = proxy.observer.refused
    assert (refused.status, refused.outcome) == (0, "abandoned")


@pytest_twisted.inlineCallbacks
def waitUntil(
    predicate: Callable[[], object], timeout: float = DEADLINE
) -> Generator[Deferred[Any], Any, None]:
    """
    Wait for state that no Deferred announces, checking every few
    milliseconds, and fail after C{timeout} seconds.
    """
    end = reactor().seconds() + timeout
    while not predicate():
        if reactor().seconds() > end:
            raise AssertionError(f"gave up waiting after {timeout}s")
        yield deferLater(reactor(), 0.005, lambda: None)
