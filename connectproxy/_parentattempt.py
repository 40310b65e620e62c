# -*- test-case-name: tests.test_parent -*-
"""
One connection through a parent proxy: L{_ParentAttempt} resolves the
parent's name, connects to it (over TLS for C{https://}), sends the
C{CONNECT} and hands the tunnel over only after the parent's 2xx (or, for
plain HTTP forwarding, hands over the connection to the parent itself).
L{ParentProxyConnector <connectproxy._parent.ParentProxyConnector>} starts
one per upstream connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.address import HostnameAddress, IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.error import (
    ConnectError,
    ConnectingCancelledError,
    ConnectionRefusedError,
    DNSLookupError,
)
from twisted.internet.interfaces import IDelayedCall, IProtocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from ._connector import UpstreamRequest
from ._errors import ParentProxyError, ResolverBusy
from ._eyeballs import LocalConnectError, connectToFirst
from ._parenthandshake import ParentHandshake, lostBeforeAnswer, refusalFor
from ._parenthead import MalformedResponse, ParentResponse
from ._parenturl import connectHead
from ._upstream import _OneProtocolFactory
from ._vetting import literalAddresses

if TYPE_CHECKING:
    from ._parent import ParentProxyConnector

__all__ = ["_ParentAttempt"]

Address = IPv4Address | IPv6Address


class _ParentAttempt:
    """
    One C{CONNECT} through a parent: resolve the parent's name, connect to
    it (over TLS for C{https://}), ask for the tunnel, and fire
    L{deferred} with the tunnel's protocol after the 2xx.

    @ivar deferred: Fires with the tunnel's protocol, connected, or fails;
        cancelling it abandons the attempt at whatever stage it is and
        leaves no connection.
    """

    def __init__(
        self,
        connector: ParentProxyConnector,
        target: UpstreamRequest,
        protocol: IProtocol,
        tunnel: bool = True,
    ) -> None:
        """
        @param tunnel: Whether to ask the parent for a tunnel (C{CONNECT});
            without, the connection to the parent itself is handed over
            once made (plain HTTP forwarding sends its own requests on it).
        """
        self._tunnel = tunnel
        self._connector = connector
        self._parent = connector.parent
        self._target = target
        self._protocol = protocol
        self._address = HostnameAddress(
            self._parent.host.encode("ascii"), self._parent.port
        )
        self._pending: Deferred[Any] | None = None
        self._handshake: ParentHandshake | None = None
        self._timer: IDelayedCall | None = None
        self._done = False
        # Why the lookup of the parent's name failed when it was cancelled
        # while waiting for a resolver thread: the client is told that.
        self._busy: Failure | None = None
        self.deferred: Deferred[IProtocol] = Deferred(self._cancel)

    def start(self) -> Deferred[IProtocol]:
        parent = self._parent
        addresses = literalAddresses(parent.host, parent.port)
        if addresses is not None:
            self._connect(addresses)
        else:
            d = self._connector.resolver.resolve(
                self._target.clientHost, parent.host, parent.port
            )
            self._pending = d
            d.addCallbacks(self._resolved, self._resolveFailed)
        return self.deferred

    # Finding and reaching the parent.

    def _resolved(self, addresses: list[Address]) -> None:
        self._pending = None
        if self._done:
            # Cancelled meanwhile.
            return
        if not addresses:
            self._resolveFailed(Failure(DNSLookupError(self._parent.host)))
            return
        port = self._parent.port
        self._connect(
            [
                IPv6Address("TCP", a.host, port, a.flowInfo, a.scopeID)
                if isinstance(a, IPv6Address)
                else IPv4Address("TCP", a.host, port)
                for a in addresses
            ]
        )

    def _resolveFailed(self, failure: Failure) -> None:
        self._pending = None
        if self._done:
            if failure.check(ResolverBusy):
                self._busy = failure
            return
        if failure.check(DNSLookupError):
            failure = Failure(
                ParentProxyError(
                    502,
                    "could not resolve the parent proxy's host name",
                    self._parent.address,
                    failure.getErrorMessage(),
                )
            )
        self._fail(failure)

    def _connect(self, addresses: list[Address]) -> None:
        connector = self._connector
        outgoing = connector.outgoing
        if outgoing and all(outgoing.sourceFor(a) is None for a in addresses):
            reason = outgoing.missingFamily(addresses, "the parent proxy")
            self._fail(Failure(ParentProxyError(502, reason, self._parent.address)))
            return
        head = b""
        if self._tunnel:
            head = connectHead(
                self._target.host, self._target.port, self._parent.authorization
            )
        handshake = ParentHandshake(self, head)
        self._handshake = handshake
        protocol: IProtocol = handshake
        if connector.tlsOptions is not None:
            handshake.listenForHandshake()
            tls = TLSMemoryBIOFactory(
                connector.tlsOptions,
                True,
                _OneProtocolFactory(handshake),
                connector.clock,
            )
            protocol = tls.buildProtocol(self._address)
        d = connectToFirst(
            connector.reactor,
            addresses,
            protocol,
            self._address,
            connector.attemptTimeout,
            connector.attemptDelay,
            connector.clock,
            outgoing,
        )
        self._pending = d
        d.addCallbacks(self._connected, self._connectFailed)

    def _connected(self, protocol: IProtocol) -> None:
        self._pending = None

    def _connectFailed(self, failure: Failure) -> None:
        self._pending = None
        if self._done:
            return
        where = self._parent.address
        if failure.check(LocalConnectError):
            # The outgoing address cannot be bound, or no descriptor is left.
            local = failure.value
            assert isinstance(local, LocalConnectError)
            error = ParentProxyError(local.status, local.reason, where, local.detail)
        elif failure.check(ConnectionRefusedError):
            error = ParentProxyError(
                502, "the parent proxy refused the connection", where
            )
        elif failure.check(ConnectError):
            error = ParentProxyError(
                502,
                "could not connect to the parent proxy",
                where,
                failure.getErrorMessage(),
            )
        else:
            self._fail(failure)
            return
        self._fail(Failure(error))

    # The parent's answer.

    def connectionMade(self, handshake: ParentHandshake) -> None:
        """
        The connection to the parent exists and the C{CONNECT} is on its
        way: wait for the answer, at most the attempt timeout.  Without a
        C{CONNECT} to send, hand the connection over now, or over TLS once
        the handshake is done (at most the attempt timeout too): a parent
        whose certificate is refused then fails the connect, with the
        reason, instead of the first request sent on it.
        """
        connector = self._connector
        if not self._tunnel:
            if connector.tlsOptions is None:
                self._handOver(handshake)
                return
            self._timer = connector.clock.callLater(
                connector.attemptTimeout, self._handshakeTimedOut
            )
            return
        self._timer = connector.clock.callLater(
            connector.attemptTimeout, self._answerTimedOut
        )

    def handshakeCompleted(self, handshake: ParentHandshake) -> None:
        """
        The TLS handshake with the parent is done: without a C{CONNECT},
        the connection is ready.
        """
        if not self._tunnel and not self._done:
            self._handOver(handshake)

    def _handOver(self, handshake: ParentHandshake) -> None:
        self._finish()
        handshake.handOver(self._protocol)
        self.deferred.callback(self._protocol)

    def answered(self, response: ParentResponse, leftover: bytes) -> None:
        """
        The parent answered: hand the tunnel over after a 2xx, with the
        bytes that followed the head; otherwise drop the connection (its
        content is never read) and fail.
        """
        handshake = self._handshake
        assert handshake is not None
        if not response.successful:
            handshake.abort()
            self._fail(Failure(refusalFor(response, self._parent)))
            return
        self._handOver(handshake)
        if leftover:
            handshake.deliver(leftover)

    def malformed(self, error: MalformedResponse) -> None:
        assert self._handshake is not None
        self._handshake.abort()
        self._fail(
            Failure(
                ParentProxyError(
                    502,
                    "the parent proxy's answer is not valid HTTP",
                    self._parent.address,
                    error.reason,
                )
            )
        )

    def lost(self, reason: Failure) -> None:
        self._fail(Failure(lostBeforeAnswer(reason, self._parent)))

    def _answerTimedOut(self) -> None:
        self._timer = None
        assert self._handshake is not None
        self._handshake.abort()
        self._fail(
            Failure(
                ParentProxyError(
                    504,
                    "timed out waiting for the parent proxy's answer",
                    self._parent.address,
                )
            )
        )

    def _handshakeTimedOut(self) -> None:
        self._timer = None
        assert self._handshake is not None
        self._handshake.abort()
        self._fail(
            Failure(
                ParentProxyError(
                    504,
                    "timed out waiting for the TLS handshake with the parent proxy",
                    self._parent.address,
                )
            )
        )

    # Ending.

    def _finish(self) -> None:
        self._done = True
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _fail(self, failure: Failure) -> None:
        """
        Fail the attempt, unless it has already ended (the handshake stops
        reporting once dropped, so this is a safety net).
        """
        if self._done:
            return
        self._finish()
        self.deferred.errback(failure)

    def _cancel(self, d: Deferred[IProtocol]) -> None:
        """
        Abandon the attempt: stop the lookup or the connection attempts, or
        drop the connection to the parent.  A lookup of the parent's name
        still waiting for a resolver thread fails with L{ResolverBusy}, as
        a target's would (503, naming the option to raise).
        """
        self._finish()
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
        if self._handshake is not None:
            self._handshake.abort()
        d.errback(self._busy or Failure(ConnectingCancelledError(self._address)))
