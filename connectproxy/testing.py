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
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from twisted.application.service import MultiService
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IHostnameResolver,
    IHostResolution,
    IProtocol,
    IProtocolFactory,
    IResolutionReceiver,
    IStreamClientEndpoint,
)
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from ._access import AccessRequest, Refusal
from ._admission import Gatekeeper
from ._connector import ConnectorContext, UpstreamRequest
from ._errors import BadRequest
from ._factory import ConnectProxyFactory
from ._networks import NetworkRules
from ._observer import (
    ConnectionRecord,
    ForwardedRequest,
    RefusedRequest,
    TunnelRecord,
)
from ._observercontext import ObserverContext
from ._parser import RequestHead, RequestHeadParser
from ._resolver import ResolverPool
from ._settings import ProxySettings
from ._target import Target, TargetForm
from ._upstream import StaticResolver
from .interfaces import (
    IAccessPolicy,
    IForwardingObserver,
    IProxyObserver,
    IUpstreamConnector,
)

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


class HalfCloseableStringTransport(StringTransport):
    """
    A L{StringTransport} that also records C{loseWriteConnection} and
    C{abortConnection}.

    @ivar writeClosed: Whether C{loseWriteConnection} was called.
    @ivar aborted: Whether C{abortConnection} was called.
    """

    writeClosed = False
    aborted = False

    def loseWriteConnection(self) -> None:
        self.writeClosed = True

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


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
        return _readResponses(self.transport.value(), self.transport.disconnecting)

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
            C{None} (loopback clients, port 443, no authentication).
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


@dataclass(frozen=True, slots=True)
class Response:
    """
    One HTTP response, as L{FakeClient.responses} reads it.

    @ivar version: The HTTP version of the status line, for example
        C{(1, 1)}.
    @ivar status: The status code.
    @ivar phrase: The reason phrase, perhaps C{""}.
    @ivar headers: The header fields in order, as C{(name, value)} pairs:
        the name as sent, the value without surrounding whitespace, both
        decoded as ISO-8859-1 (which keeps every byte).
    @ivar body: The body: as many bytes as C{Content-Length} says, or all
        that followed the head when the proxy closed the connection without
        one; always C{b""} for a 1xx, 2xx, 204 or 304 response.
    """

    version: tuple[int, int]
    status: int
    phrase: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """
        @param name: A header field name, in any case.
        @return: The value of the first field with that name, or C{None}.
        """
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


_STATUS_LINE = re.compile(
    r"HTTP/([0-9])\.([0-9]) ([0-9]{3}) ([^\x00-\x08\x0a-\x1f\x7f]*)"
)
_FIELD_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _readResponses(data: bytes, closed: bool) -> list[Response]:
    """
    Parse the responses in what a server wrote (RFC 9112 sections 4 to 6).

    @param data: Everything the server wrote.
    @param closed: Whether the server closed the connection after it (a
        body without C{Content-Length} then ends with the connection).
    @raise AssertionError: For anything but complete responses.
    """
    found: list[Response] = []
    while data:
        head, separator, rest = data.partition(b"\r\n\r\n")
        if not separator:
            raise AssertionError(f"incomplete response head: {data[:200]!r}")
        statusLine, *lines = head.decode("iso-8859-1").split("\r\n")
        match = _STATUS_LINE.fullmatch(statusLine)
        if match is None:
            raise AssertionError(f"malformed status line: {statusLine!r}")
        headers = tuple(_readField(line) for line in lines)
        status = int(match.group(3))
        version = (int(match.group(1)), int(match.group(2)))
        lengths = {v for n, v in headers if n.lower() == "content-length"}
        if any(n.lower() == "transfer-encoding" for n, _ in headers):
            raise AssertionError(f"a {status} response with Transfer-Encoding")
        if status < 200 or 200 <= status < 300 or status in (204, 304):
            body, data = b"", rest
        elif not lengths:
            if not closed:
                raise AssertionError(
                    f"a {status} response without Content-Length on a "
                    "connection that is still open"
                )
            body, data = rest, b""
        else:
            length = _contentLength(lengths)
            if len(rest) < length:
                raise AssertionError(
                    f"incomplete body: {len(rest)} of {length} bytes: {rest[:200]!r}"
                )
            body, data = rest[:length], rest[length:]
        found.append(Response(version, status, match.group(4), headers, body))
        if 200 <= status < 300:
            break
    return found


def _readField(line: str) -> tuple[str, str]:
    """
    @return: The name and value of a field line (RFC 9112 section 5).
    @raise AssertionError: For a line folded onto the previous one, a
        name that is not a token, or a control character in the value.
    """
    name, colon, value = line.partition(":")
    if not colon or _FIELD_NAME.fullmatch(name) is None:
        raise AssertionError(f"malformed header field line: {line!r}")
    value = value.strip(" \t")
    if any((c < " " and c != "\t") or c == "\x7f" for c in value):
        raise AssertionError(f"control character in header field: {line!r}")
    return name, value


def _contentLength(values: set[str]) -> int:
    """
    @param values: The distinct values of the C{Content-Length} fields.
    @return: The length they agree on.
    @raise AssertionError: When they disagree or one is not a number.
    """
    if len(values) != 1 or not next(iter(values)).isdigit():
        raise AssertionError(f"invalid Content-Length: {sorted(values)!r}")
    return int(next(iter(values)))


def connectHead(
    target: str = "example.com:443", *fields: str, version: str = "1.1"
) -> bytes:
    """
    Build a complete CONNECT request head, as a client sends it.

    @param target: The authority to tunnel to, C{host:port}; it is also
        the value of the C{Host} field.
    @param fields: More header field lines, each C{"Name: value"}.
    @param version: The HTTP version of the request line.
    @return: The head, encoded as ISO-8859-1 (so that a test can send any
        byte in a field).
    """
    lines = [f"CONNECT {target} HTTP/{version}", f"Host: {target}", *fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("iso-8859-1")


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
