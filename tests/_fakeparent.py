# -*- test-case-name: tests.test_parent -*-
"""
A parent proxy driven by hand, for testing parent-proxy connectors on a
L{MemoryReactorClock}: L{FakeParent} takes the connection a connector made
(from C{reactor.tcpClients}), shows what the connector sent, and answers
with whatever bytes the test gives it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from connectproxy.testing import HalfCloseableStringTransport

__all__ = ["ESTABLISHED", "FakeParent"]

#: The usual answer of a parent that opens the tunnel.
ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"


class FakeParent:
    """
    The far end of one connection a connector made to a parent proxy.

    @ivar host: The address the connector connected to.
    @ivar port: The port it connected to.
    @ivar timeout: The connector's timeout for that attempt.
    @ivar protocol: The protocol the connector connected (as the reactor
        sees it).
    @ivar transport: The connector's side of the connection: what it wrote
        and whether it closed.
    """

    def __init__(self, reactor: MemoryReactorClock, index: int = -1) -> None:
        """
        Accept the connection attempt C{reactor.tcpClients[index]}.
        """
        host, port, factory, timeout, _ = reactor.tcpClients[index]
        self.host, self.port, self.timeout = host, port, timeout
        family = IPv6Address if ":" in host else IPv4Address
        peer = family("TCP", host, port)
        self.transport = HalfCloseableStringTransport(peerAddress=peer)
        protocol = factory.buildProtocol(peer)
        assert protocol is not None, "the connector refused the connection"
        protocol.makeConnection(self.transport)
        # An attempt may give the transport its real protocol as it
        # connects (the direct connections do, with no wrapper between).
        self.protocol: Any = getattr(self.transport, "protocol", None) or protocol

    def received(self) -> bytes:
        """
        Everything the connector sent so far.
        """
        return bytes(self.transport.value())

    def clear(self) -> None:
        """
        Forget what the connector sent so far.
        """
        self.transport.clear()

    def send(self, data: bytes) -> None:
        """
        Answer the connector with C{data}.
        """
        self.protocol.dataReceived(data)

    def finish(self) -> None:
        """
        Send a FIN: half-close the parent's side.
        """
        halfCloseable = IHalfCloseableProtocol(self.protocol, None)
        assert halfCloseable is not None, (
            "the connector's protocol is not half-closeable"
        )
        halfCloseable.readConnectionLost()

    def close(self, clean: bool = True) -> None:
        """
        End the connection, cleanly or with a reset.
        """
        reason = ConnectionDone() if clean else ConnectionLost()
        self.protocol.connectionLost(Failure(reason))

    @property
    def dropped(self) -> bool:
        """
        Whether the connector closed or aborted the connection.
        """
        return bool(self.transport.disconnecting or self.transport.aborted)
