# -*- test-case-name: tests.integration.test_fallback -*-
"""
Happy Eyeballs on real loopback sockets, in this process: when the first
address of a target refuses, the next one is tried at once (RFC 8305
section 5), not after the attempt delay.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock

from connectproxy import ConnectProxyFactory, DirectConnector, ProxySettings
from connectproxy._admission import Gatekeeper
from connectproxy._networks import NetworkRules
from connectproxy._rules import AccessRules, ClientRules, HostRules, PortRules
from connectproxy.testing import RecordingObserver

pytestmark = pytest.mark.integration

DEADLINE = 20.0


def reactor() -> Any:
    from twisted.internet import reactor as globalReactor

    return globalReactor


class RecordingReactor:
    """
    The global reactor, with every C{connectTCP} host noted.
    """

    def __init__(self) -> None:
        self.hosts: list[str] = []

    def connectTCP(self, host: str, *args: Any, **kwargs: Any) -> Any:
        self.hosts.append(host)
        return reactor().connectTCP(host, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(reactor(), name)


class Client(Protocol):
    """
    Sends a CONNECT and fires C{responded} with the response head.
    """

    def __init__(self, head: bytes) -> None:
        self.head = head
        self.received = b""
        self.responded: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.head)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if b"\r\n\r\n" in self.received and not self.responded.called:
            self.responded.callback(self.received)


@pytest_twisted.inlineCallbacks
def test_refusedAddressFallsBackAtOnce() -> Generator[Deferred[Any], Any, None]:
    """
    C{localhost} is C{::1} then C{127.0.0.1}; with the origin on
    C{127.0.0.1} only, C{::1} refuses and C{127.0.0.1} is tried at once: the
    200 arrives although the clock of the attempt delay never moves.
    """
    origin = yield TCP4ServerEndpoint(reactor(), 0, interface="127.0.0.1").listen(
        Factory.forProtocol(Protocol)
    )
    stagger = Clock()
    recording = RecordingReactor()
    networks = NetworkRules.fromStrings(allow=["127.0.0.0/8", "::1/128"])
    rules = AccessRules(
        ports=PortRules.fromStrings(["1-65535"]),
        networks=networks,
        hosts=HostRules(),
        clients=ClientRules(),
    )
    connector = DirectConnector(recording, 5.0, networks, clock=stagger)
    factory = ConnectProxyFactory(
        reactor(),
        ProxySettings(connectTimeout=5.0, abortTimeout=2.0),
        connector,
        [RecordingObserver()],
        Gatekeeper(rules),
    )
    listener = yield TCP4ServerEndpoint(reactor(), 0, interface="127.0.0.1").listen(
        factory
    )
    target = b"localhost:%d" % (origin.getHost().port,)
    client = Client(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, target))
    try:
        yield TCP4ClientEndpoint(
            reactor(), "127.0.0.1", listener.getHost().port
        ).connect(Factory.forProtocol(lambda: client))
        response = yield client.responded.addTimeout(DEADLINE, reactor())
        assert response == b"HTTP/1.1 200 Connection established\r\n\r\n"
        assert recording.hosts == ["::1", "127.0.0.1"]
        assert stagger.getDelayedCalls() == []
    finally:
        if client.transport is not None:
            client.transport.abortConnection()  # type: ignore[attr-defined]
        yield listener.stopListening()
        yield origin.stopListening()
