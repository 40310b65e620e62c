# -*- test-case-name: tests.test_server -*-
"""
The proxy's server side: one L{ConnectProxyProtocol} per client connection,
built by a L{ConnectProxyFactory}.

The protocol reads the request head (with a deadline), answers errors, makes
the upstream connection (with one total deadline), answers C{200} and hands
the connection to a L{ProxyTunnel}.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import (
    ConnectError,
    ConnectingCancelledError,
    ConnectionRefusedError,
    DNSLookupError,
)
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IProtocol,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._observer import (
    AccessLogObserver,
    ObserverFanOut,
    RefusedRequest,
    TunnelRecord,
    formatAddress,
)
from ._parser import BadRequest, ConnectRequest, ConnectRequestParser
from ._responses import CONNECTION_ESTABLISHED, errorResponse
from ._tunnel import ProxyTunnel, TunnelTransport, canHalfClose
from ._upstream import DirectConnector
from .interfaces import IProxyObserver, IUpstreamConnector

__all__ = ["ConnectProxyFactory", "ConnectProxyProtocol", "ProxySettings"]

#: After an error response on plain TCP, how long (at most) and how many
#: bytes the proxy keeps reading and discarding before it closes.
LINGER_SECONDS = 2.0
LINGER_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """
    The tunables of a proxy.

    @ivar requestTimeout: Seconds a client has to send a complete request
        head (408 after that).
    @ivar connectTimeout: Seconds for the whole upstream connect, name
        resolution and every attempt included (504 after that).
    @ivar idleTimeout: Seconds a tunnel may stay without traffic either way.
    @ivar abortTimeout: Seconds a graceful close may take before the
        connection is aborted.
    @ivar maxRequestLine: Longest request line accepted, in bytes (414).
    @ivar maxHeadSize: Largest request head accepted, in bytes (431).
    """

    requestTimeout: float = 30.0
    connectTimeout: float = 10.0
    idleTimeout: float = 600.0
    abortTimeout: float = 15.0
    maxRequestLine: int = 8192
    maxHeadSize: int = 65536


def _connectErrorStatus(failure: Failure) -> tuple[int, str]:
    """
    The status and reason for a failed upstream connect.
    """
    if failure.check(DNSLookupError):
        return 502, "could not resolve the target host"
    if failure.check(ConnectionRefusedError):
        return 502, "the target refused the connection"
    if failure.check(ConnectError):
        return 502, "could not connect to the target"
    return 502, "could not connect to the target"


@implementer(IHalfCloseableProtocol)
class _UpstreamProtocol(Protocol):
    """
    The upstream half of a tunnel: hands what it receives to the tunnel.

    @ivar tunnel: Set once the tunnel exists; until then nothing can arrive.
    """

    tunnel: ProxyTunnel | None = None

    def dataReceived(self, data: bytes) -> None:
        assert self.tunnel is not None
        self.tunnel.upstreamData(data)

    def readConnectionLost(self) -> None:
        if self.tunnel is not None:
            self.tunnel.upstreamReadClosed()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.tunnel is not None:
            self.tunnel.upstreamConnectionLost(reason)


@implementer(IHalfCloseableProtocol)
class ConnectProxyProtocol(Protocol):
    """
    One client connection: read the CONNECT, connect upstream, relay.

    Incoming bytes go to C{_receive}, which is swapped as the connection
    moves through its phases: head parsing, buffering early data while
    connecting, relaying, and discarding after an error.

    @ivar request: The parsed request, once there is one.
    @ivar tunnel: The tunnel, once established.
    """

    _log = Logger()

    factory: ConnectProxyFactory
    request: ConnectRequest | None = None
    tunnel: ProxyTunnel | None = None

    def __init__(self, factory: ConnectProxyFactory) -> None:
        self.factory = factory
        self._settings = factory.settings
        self._clock: IReactorTime = factory.reactor
        self._parser = ConnectRequestParser(
            self._settings.maxRequestLine, self._settings.maxHeadSize
        )
        self._receive: Callable[[bytes], None] = self._headReceived
        self._early = bytearray()
        self._client = ""
        self._timer: IDelayedCall | None = None
        self._connecting: Deferred[IProtocol] | None = None
        self._connectTimedOut = False
        self._paused = False
        self._discarded = 0
        self._closing = False
        self._gone = False

    def connectionMade(self) -> None:
        self._transport = cast(TunnelTransport, self.transport)
        self._client = formatAddress(self._transport.getPeer())
        self._timer = self._clock.callLater(
            self._settings.requestTimeout, self._requestTimedOut
        )

    def dataReceived(self, data: bytes) -> None:
        self._receive(data)

    # Phase 1: the request head.

    def _headReceived(self, data: bytes) -> None:
        try:
            result = self._parser.feed(data)
        except BadRequest as e:
            self._refuse(e.status, e.reason)
            return
        if result is None:
            return
        request, leftover = result
        self._cancelTimer()
        self.request = request
        self._early += leftover
        self._receive = self._earlyReceived
        if request.method != "CONNECT":
            self._refuse(
                405, "this proxy only tunnels with CONNECT", [("Allow", "CONNECT")]
            )
            return
        self._connectUpstream(request)

    def _requestTimedOut(self) -> None:
        self._timer = None
        self._refuse(408, "the request head took too long")

    # Phase 2: connecting upstream.

    def _earlyReceived(self, data: bytes) -> None:
        """
        Keep bytes that arrive while the upstream connect is in flight.

        The client is still read from, so that a client that leaves is
        noticed and its connect cancelled; once it has sent more than the
        head size limit it is paused until the tunnel exists.
        """
        self._early += data
        if len(self._early) > self._settings.maxHeadSize and not self._paused:
            self._paused = True
            self._transport.pauseProducing()

    def _connectUpstream(self, request: ConnectRequest) -> None:
        upstream = _UpstreamProtocol()
        self._timer = self._clock.callLater(
            self._settings.connectTimeout, self._connectDeadline
        )
        try:
            d = self.factory.connector.connectUpstream(request, upstream)
        except Exception:
            self._log.failure("upstream connector failed")
            self._cancelTimer()
            self._refuse(502, "could not connect to the target")
            return
        self._connecting = d
        d.addCallbacks(self._upstreamConnected, self._upstreamFailed)

    def _connectDeadline(self) -> None:
        self._timer = None
        self._connectTimedOut = True
        if self._connecting is not None:
            self._connecting.cancel()

    def _upstreamFailed(self, failure: Failure) -> None:
        self._connecting = None
        self._cancelTimer()
        if self._gone:
            return
        if self._connectTimedOut or failure.check(ConnectingCancelledError):
            self._refuse(504, "timed out connecting to the target")
            return
        if failure.check(CancelledError):
            return
        status, reason = _connectErrorStatus(failure)
        self._log.info(
            "connect to {target} failed: {error}",
            event="connect_failed",
            client=self._client,
            target=self.request.authority if self.request else "",
            error=failure.getErrorMessage(),
        )
        self._refuse(status, reason)

    def _upstreamConnected(self, upstream: IProtocol) -> None:
        self._connecting = None
        self._cancelTimer()
        assert isinstance(upstream, _UpstreamProtocol)
        request = self.request
        assert request is not None
        settings = self._settings
        tunnel = ProxyTunnel(
            self._transport,
            cast(TunnelTransport, upstream.transport),
            self._clock,
            settings.idleTimeout,
            settings.abortTimeout,
            self._tunnelClosed,
        )
        self.tunnel = upstream.tunnel = tunnel
        self._receive = tunnel.clientData
        self._transport.write(CONNECTION_ESTABLISHED)
        early = bytes(self._early)
        del self._early[:]
        if not self._paused:
            # The tunnel resumes the client once its producers are wired.
            self._transport.pauseProducing()
        tunnel.start(early)
        self.factory.tunnelOpened(self._tunnelRecord(tunnel))

    # Phase 3: the tunnel.

    def readConnectionLost(self) -> None:
        if self.tunnel is not None:
            self.tunnel.clientReadClosed()
        else:
            # A FIN before the 200 means the client gave up (one that closes
            # fully sends nothing else): close, which cancels any connect in
            # flight.  After an error response it ends the linger.
            self._transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._gone = True
        self._cancelTimer()
        if self._connecting is not None:
            self._log.info(
                "client {client} went away while connecting to {target}",
                event="connect_abandoned",
                client=self._client,
                target=self.request.authority if self.request else "",
            )
            self._connecting.cancel()
        if self.tunnel is not None:
            self.tunnel.clientConnectionLost(reason)
        self.factory.connectionClosed(self)

    def _tunnelClosed(self, tunnel: ProxyTunnel) -> None:
        self.factory.tunnelClosed(self._tunnelRecord(tunnel))

    def _tunnelRecord(self, tunnel: ProxyTunnel) -> TunnelRecord:
        request = self.request
        assert request is not None and request.host is not None
        assert request.port is not None
        end = tunnel.closedAt
        return TunnelRecord(
            client=self._client,
            host=request.host,
            port=request.port,
            upstream=formatAddress(tunnel.upstreamAddress),
            bytesUp=tunnel.bytesUp,
            bytesDown=tunnel.bytesDown,
            duration=0.0 if end is None else end - tunnel.openedAt,
            reason=tunnel.closeReason,
        )

    # Errors.

    def _refuse(
        self, status: int, reason: str, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        """
        Answer with an error, report it, and close the connection.

        On plain TCP the close lingers: the response is followed by a FIN,
        and what the client still sends is read and thrown away for a short
        while, so that the kernel does not answer those bytes with a reset
        that could destroy the response before the client reads it.
        """
        if self._closing or self._gone:
            return
        self._closing = True
        self._cancelTimer()
        self._receive = self._discardReceived
        request = self.request
        self._transport.write(errorResponse(status, reason, headers=headers))
        self.factory.requestRefused(
            RefusedRequest(
                client=self._client,
                method=request.method if request else "",
                target=request.target if request else "",
                status=status,
                reason=reason,
            )
        )
        if canHalfClose(self._transport):
            self._transport.loseWriteConnection()  # type: ignore[attr-defined]
            self._timer = self._clock.callLater(
                min(LINGER_SECONDS, self._settings.abortTimeout), self._close
            )
        else:
            self._close()

    def _discardReceived(self, data: bytes) -> None:
        """
        Throw away what a refused client still sends, up to a limit.
        """
        self._discarded += len(data)
        if self._discarded > LINGER_BYTES:
            self._close()

    def _close(self) -> None:
        """
        Close the client connection gracefully, and abort it if that takes
        longer than the abort timeout.
        """
        self._cancelTimer()
        self._receive = _discard
        self._transport.loseConnection()
        self._timer = self._clock.callLater(
            self._settings.abortTimeout, self._transport.abortConnection
        )

    def _cancelTimer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None


def _discard(data: bytes) -> None:
    """
    Ignore bytes from a client whose connection is closing.
    """


class ConnectProxyFactory(Factory):
    """
    Builds a L{ConnectProxyProtocol} per client connection and holds what
    they share: settings, the clock, the upstream connector and the
    observers.

    @ivar reactor: The reactor (clock, resolver, connector) in use.
    @ivar settings: The proxy's tunables.
    @ivar connector: How upstream connections are made.
    @ivar observer: Where reports go (all the observers given).
    @ivar connections: The client connections now open.
    @ivar openTunnels: How many tunnels are open now.
    """

    _log = Logger()
    noisy = False

    def __init__(
        self,
        reactor: Any,
        settings: ProxySettings | None = None,
        connector: IUpstreamConnector | None = None,
        observers: Iterable[IProxyObserver] | None = None,
    ) -> None:
        """
        @param reactor: Provides L{IReactorTime} and, for the default
            connector, name resolution and TCP.
        @param settings: Tunables; the defaults when C{None}.
        @param connector: Makes upstream connections; a L{DirectConnector}
            over C{reactor} when C{None}.
        @param observers: Told of refusals and tunnels; the access log when
            C{None}.
        """
        self.reactor: Any = reactor
        self.settings = settings if settings is not None else ProxySettings()
        if connector is None:
            connector = DirectConnector(reactor, self.settings.connectTimeout)
        self.connector = connector
        if observers is None:
            observers = [AccessLogObserver()]
        self.observer = ObserverFanOut(observers)
        self.connections: set[ConnectProxyProtocol] = set()
        self.openTunnels = 0

    def buildProtocol(  # type: ignore[override]
        self, addr: IAddress | None
    ) -> ConnectProxyProtocol:
        protocol = ConnectProxyProtocol(self)
        self.connections.add(protocol)
        return protocol

    def connectionClosed(self, protocol: ConnectProxyProtocol) -> None:
        """
        A client connection is gone.
        """
        self.connections.discard(protocol)

    def requestRefused(self, event: RefusedRequest) -> None:
        self.observer.requestRefused(event)

    def tunnelOpened(self, event: TunnelRecord) -> None:
        self.openTunnels += 1
        self.observer.tunnelOpened(event)

    def tunnelClosed(self, event: TunnelRecord) -> None:
        self.openTunnels -= 1
        self.observer.tunnelClosed(event)
