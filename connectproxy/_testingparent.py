# -*- test-case-name: tests.test_testing -*-
"""
A parent proxy in memory, for L{connectproxy.testing}: L{FakeParentProxy}
reads the CONNECT each connection sends, answers it as told, and relays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from zope.interface import implementer

from ._errors import BadRequest
from ._parser import RequestHead, RequestHeadParser
from ._testinghttp import HalfCloseableStringTransport

__all__ = ["FakeParentProxy", "ParentConnection"]


@dataclass(eq=False)
class ParentConnection:
    """
    One connection to a L{FakeParentProxy}.

    @ivar protocol: The protocol that connected (the connector's).
    @ivar transport: Its transport: C{transport.value()} is everything it
        wrote, C{transport.producer} what it registered, and
        C{transport.writeClosed} whether it half-closed.
    @ivar request: The CONNECT request the parent read, once its head is
        complete.
    @ivar answered: Whether the parent has answered the request.
    @ivar received: What came after the request head: the bytes relayed to
        the target.
    @ivar closed: Whether the connection is gone (either side closed it).
    """

    protocol: IProtocol
    transport: HalfCloseableStringTransport
    request: RequestHead | None = None
    answered: bool = False
    received: bytes = b""
    closed: bool = False
    _parser: RequestHeadParser = field(
        init=False, default_factory=RequestHeadParser, repr=False
    )
    _readUpTo: int = field(init=False, default=0, repr=False)

    def send(self, data: bytes) -> None:
        """
        Deliver bytes to the connector's protocol at once: the target's
        bytes relayed by the parent, or a response of the test's own.
        """
        self.protocol.dataReceived(data)

    def lose(self, reason: BaseException | None = None) -> None:
        """
        Close the connection from the parent's side.

        @param reason: What the protocol is told; C{ConnectionDone} when
            C{None}.
        """
        if not self.closed:
            self.closed = True
            self.protocol.connectionLost(Failure(reason or ConnectionDone()))

    def finish(self) -> None:
        """
        Half-close the connection from the parent's side (its FIN, when the
        target finished sending): the protocol's C{readConnectionLost}.

        @raise AssertionError: When the protocol cannot be half-closed (it
            does not provide L{IHalfCloseableProtocol}).
        """
        halfCloseable = IHalfCloseableProtocol(self.protocol, None)
        if halfCloseable is None:
            raise AssertionError(f"{self.protocol!r} cannot be half-closed")
        halfCloseable.readConnectionLost()

    def _read(self, parent: FakeParentProxy) -> bool:
        """
        Read what the protocol wrote since the last time, answer a request
        head that is complete, and deliver the close of a transport the
        protocol closed.

        @return: Whether anything happened.
        """
        if self.closed:
            return False
        data = self.transport.value()[self._readUpTo :]
        self._readUpTo += len(data)
        acted = bool(data)
        if data and self.request is None:
            try:
                parsed = self._parser.feed(data)
            except BadRequest as e:
                raise AssertionError(f"the parent proxy got a bad request: {e}") from e
            self.request, data = (None, b"") if parsed is None else parsed
        self.received += data
        if self.request is not None and not self.answered:
            answer = parent._answer()
            if answer is not None:
                self.answered = acted = True
                self.send(answer)
        if self.transport.disconnecting:
            self.closed = acted = True
            reason = ConnectionAborted() if self.transport.aborted else ConnectionDone()
            self.protocol.connectionLost(Failure(reason))
        return acted


@implementer(IStreamClientEndpoint)
@dataclass(frozen=True, eq=False)
class _ParentEndpoint:
    """
    An endpoint whose connections go to a L{FakeParentProxy}.
    """

    parent: FakeParentProxy

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """
        Build a protocol and connect it to the parent at once.

        @return: A Deferred that has fired with the protocol (or failed,
            when the factory built none).
        """
        return maybeDeferred(lambda: self.parent.accept(protocolFactory).protocol)


class FakeParentProxy:
    """
    A parent proxy in memory, for testing connectors that tunnel through
    one: it reads the CONNECT request each connection sends, answers it
    with a given status line and header fields, and then relays: what
    comes after the request is kept as what reached the target, and the
    test sends the target's bytes back.

    Nothing moves until the test calls L{flush}, as between two turns of
    an event loop: no connector code runs inside its own C{write}.

    With a connector that connects to its parent through an endpoint::

        parent = FakeParentProxy()
        connector = MyParentConnector(parent.endpoint())
        protocol = Protocol()
        d = connector.connectUpstream(upstreamRequest("example.com"), protocol)
        parent.flush()  # the parent reads the CONNECT and answers 200
        [connection] = parent.connections
        assert connection.request.authority == "example.com:443"
        protocol.transport.write(b"ClientHello")
        parent.flush()
        assert connection.received == b"ClientHello"
        connection.send(b"ServerHello")  # from the target

    A connector that dials its parent itself (C{HostnameEndpoint} on a
    L{MemoryReactorClock}, for example) leaves an attempt in
    C{reactor.tcpClients}; L{acceptFrom} completes it::

        connection = parent.acceptFrom(reactor)  # the latest attempt

    A parent that refuses: C{FakeParentProxy("HTTP/1.1 407 Proxy
    Authentication Required", [("Proxy-Authenticate", 'Basic
    realm="parent"'), ("Content-Length", "0")])}.  A parent that does not
    answer (for deadlines): C{FakeParentProxy(None)}, then
    C{connection.send(...)} when the test wants an answer.

    @ivar statusLine: The status line each request is answered with,
        without its CRLF, or C{None} to leave requests unanswered.
    @ivar headers: The header fields of the answer, written as given (add
        C{Content-Length} yourself for a body).
    @ivar body: The bytes after the answer's head.
    @ivar address: The parent's address, each connection's peer.
    @ivar connections: Every connection, in order.
    """

    def __init__(
        self,
        statusLine: str | None = "HTTP/1.1 200 Connection established",
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        address: IAddress | None = None,
    ) -> None:
        self.statusLine = statusLine
        self.headers = list(headers)
        self.body = body
        self.address = (
            IPv4Address("TCP", "192.0.2.8", 3128) if address is None else address
        )
        self.connections: list[ParentConnection] = []

    def _answer(self) -> bytes | None:
        """
        @return: The answer to a request, as written to the connection, or
            C{None} when requests are left unanswered.
        """
        if self.statusLine is None:
            return None
        lines = [self.statusLine, *(f"{n}: {v}" for n, v in self.headers)]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("iso-8859-1") + self.body

    def endpoint(self) -> IStreamClientEndpoint:
        """
        @return: An endpoint that connects each protocol to this parent at
            once.
        """
        return _ParentEndpoint(self)

    def accept(
        self, factory: IProtocolFactory, address: IAddress | None = None
    ) -> ParentConnection:
        """
        Accept a connection: build the factory's protocol and connect it.

        @param factory: A client factory, such as the one of an attempt in
            C{MemoryReactorClock.tcpClients} (L{acceptFrom} takes those).
        @param address: The parent's address on this connection (the
            protocol's peer); L{address} when C{None}.
        @return: The new connection.
        @raise ValueError: When the factory builds no protocol.
        """
        peer = self.address if address is None else address
        protocol = factory.buildProtocol(peer)
        if protocol is None:
            raise ValueError(f"{factory!r} built no protocol")
        local = IPv4Address("TCP", "192.0.2.1", 50000 + len(self.connections))
        transport = HalfCloseableStringTransport(local, peer)
        connection = ParentConnection(protocol, transport)
        self.connections.append(connection)
        protocol.makeConnection(transport)
        # An attempt may give the transport its real protocol as it
        # connects (the direct connections do, with no wrapper between).
        connection.protocol = getattr(transport, "protocol", None) or protocol
        return connection

    def acceptFrom(
        self, reactor: MemoryReactorClock, index: int = -1
    ) -> ParentConnection:
        """
        Accept the connection attempt C{reactor.tcpClients[index]}: the
        parent answers at the address the connector dialled.

        @return: The new connection.
        @raise ValueError: When the attempt's factory builds no protocol.
        """
        host, port, factory, _, _ = reactor.tcpClients[index]
        family = IPv6Address if ":" in host else IPv4Address
        return self.accept(factory, family("TCP", host, port))

    def flush(self) -> None:
        """
        Move bytes until nothing more happens: read what every connection
        wrote, answer each complete request head, keep what followed it as
        relayed, and tell a protocol that closed its transport that the
        connection is gone.

        @raise AssertionError: When a connection sent a malformed request.
        """
        while any([c._read(self) for c in self.connections]):
            pass
