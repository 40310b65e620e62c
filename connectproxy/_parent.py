# -*- test-case-name: tests.test_parent -*-
"""
The parent-proxy connector: L{ParentProxyConnector} reaches the target
through another HTTP proxy, by sending it its own C{CONNECT}.

The tunnel is handed to the proxy only after the parent's 2xx.  Until then
the client's early bytes stay where the proxy holds them, so nothing the
client sent can reach the parent before the parent has agreed to tunnel:
bytes sent early would otherwise be read by the parent as a second request
(the request desync of Envoy's CVE-2025-64763).  The bytes that follow the
parent's 2xx head are the target's first bytes and reach the client; the
content of any other answer never does.

The parent's own address is the operator's choice: it is resolved on the
proxy's resolver pool, but not checked against the destination network
rules.  The target is checked as far as this proxy can: an IP-literal
target (and C{localhost}) against the network rules; a name goes to the
parent unresolved, and the parent resolves it.

The connection to the parent itself (the C{CONNECT}, its answer, and what a
refusal means for the client) is L{connectproxy._parenthandshake}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import HostnameAddress, IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import (
    ConnectError,
    ConnectingCancelledError,
    ConnectionRefusedError,
    DNSLookupError,
)
from twisted.internet.interfaces import (
    IDelayedCall,
    IProtocol,
    IReactorTime,
)
from twisted.internet.ssl import optionsForClientTLS, platformTrust
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from ._connector import UpstreamRequest
from ._errors import ParentProxyError, ResolverBusy
from ._eyeballs import ATTEMPT_DELAY, LocalConnectError, connectToFirst
from ._outgoing import OutgoingAddresses
from ._parenthandshake import ParentHandshake, lostBeforeAnswer, refusalFor
from ._parenthead import MalformedResponse, ParentResponse
from ._parenturl import ParentProxy, connectHead
from ._policy import NetworkRules
from ._resolver import ResolverPool
from ._upstream import _OneProtocolFactory
from ._vetting import VettedResolver, literalAddresses
from .interfaces import IUpstreamConnector

__all__ = ["ParentProxyConnector", "ParentProxyError"]

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


@implementer(IUpstreamConnector)
class ParentProxyConnector:
    """
    Reach every target through one parent proxy, with C{CONNECT}.

    The parent's name is resolved on L{resolver} and its addresses are
    tried Happy Eyeballs style; over C{https://} the parent's certificate is
    verified against C{ParentProxy.host} (C{service_identity}).  The
    C{CONNECT} names the target as the proxy received it (normalised) and
    carries the parent's credentials, if any.  The connect Deferred fires
    only after the parent's 2xx.

    How the parent's answers reach the client: 403 as 403; 502, 503 and
    504 as themselves; 407 (the parent wants other credentials than the
    operator configured) and every other answer as 502; a parent that
    cannot be reached, closes early, fails TLS or answers with something
    that is not HTTP as 502.  Each fails the Deferred with a
    L{ParentProxyError} carrying that status.

    @ivar parent: The parent proxy.
    @ivar networks: The destination network rules, applied to IP-literal
        targets (and C{localhost}) only: names are resolved by the parent.
    @ivar resolver: Where the parent's name is resolved.
    @ivar attemptTimeout: Seconds one connection attempt to the parent may
        take, and then again seconds its answer may take; a backstop under
        the proxy's own deadline.
    @ivar attemptDelay: Seconds before the next address of the parent is
        tried while an attempt is pending.
    @ivar outgoing: The local addresses the parent is connected to from
        (C{--outgoing-address}).
    @ivar tlsOptions: The TLS client options for an C{https://} parent,
        C{None} for C{http://}.
    """

    def __init__(
        self,
        reactor: Any,
        parent: ParentProxy,
        attemptTimeout: float = 30.0,
        networks: NetworkRules | None = None,
        resolver: ResolverPool | None = None,
        trustRoot: Any = None,
        attemptDelay: float = ATTEMPT_DELAY,
        clock: IReactorTime | None = None,
        outgoing: OutgoingAddresses | None = None,
    ) -> None:
        """
        @param reactor: The reactor to connect with
            (L{twisted.internet.interfaces.IReactorTCP}).
        @param parent: The parent proxy.
        @param attemptTimeout: Seconds one connection attempt, and the wait
            for the parent's answer, may take.
        @param networks: The destination network rules; the defaults
            (globally routable unicast only) when C{None}.
        @param resolver: Resolves the parent's name; a L{ResolverPool} with
            its default bounds over the reactor's resolver when C{None}.
        @param trustRoot: The certificates trusted for an C{https://}
            parent (a Twisted C{IOpenSSLTrustRoot}, see
            L{loadTrustRoot <connectproxy._parenturl.loadTrustRoot>}); the
            system's when C{None}.
        @param attemptDelay: Seconds before the next address is tried while
            an attempt is pending.
        @param clock: Times the attempts, the wait for the answer and TLS;
            C{reactor} when C{None}.
        @param outgoing: The local addresses to connect to the parent from
            (C{--outgoing-address}): the one of each parent address's
            family, and addresses of a family without one are not tried;
            the system chooses when C{None} or empty.
        """
        self.reactor = reactor
        self.clock: IReactorTime = reactor if clock is None else clock
        self.parent = parent
        self.attemptTimeout = attemptTimeout
        self.attemptDelay = attemptDelay
        self.outgoing = outgoing if outgoing is not None else OutgoingAddresses()
        self.networks = networks if networks is not None else NetworkRules.fromStrings()
        self.resolver = resolver if resolver is not None else ResolverPool(reactor)
        self.tlsOptions: Any = None
        if parent.tls:
            self.tlsOptions = optionsForClientTLS(
                parent.host,
                platformTrust() if trustRoot is None else trustRoot,
                acceptableProtocols=[b"http/1.1"],
            )

    def __repr__(self) -> str:
        return f"<ParentProxyConnector {self.parent.address}>"

    def connectUpstream(
        self, target: UpstreamRequest, protocol: IProtocol
    ) -> Deferred[IProtocol]:
        """
        Ask the parent for a tunnel to C{target} and connect C{protocol} to
        it once the parent has answered 2xx.

        @return: A Deferred firing with C{protocol} after the 2xx, or
            failing with L{ForbiddenDestination
            <connectproxy.ForbiddenDestination>} (an IP-literal target the
            network rules deny), L{ParentProxyError}, or
            L{ConnectingCancelledError} when cancelled.
        """
        try:
            VettedResolver(self.networks, self.resolver).vetLiteral(
                target.host, target.port
            )
        except Exception:
            return fail()
        return _ParentAttempt(self, target, protocol).start()

    def forwardVia(self, target: UpstreamRequest) -> ParentProxy:
        """
        Where plain HTTP requests for C{target} go: this connector's parent
        (see L{IUpstreamConnector
        <connectproxy.interfaces.IUpstreamConnector>}'s optional methods).
        """
        return self.parent

    def connectForwarding(
        self, target: UpstreamRequest, protocol: IProtocol
    ) -> Deferred[IProtocol]:
        """
        Connect C{protocol} to the parent itself, for plain HTTP requests
        to C{target} that the proxy sends it in absolute form: the parent's
        name resolved, its addresses tried, TLS to an C{https://} parent
        verified as for tunnels; an IP-literal target checked against the
        network rules first.

        @return: A Deferred firing with C{protocol} once connected, or
            failing as L{connectUpstream} does.
        """
        try:
            VettedResolver(self.networks, self.resolver).vetLiteral(
                target.host, target.port
            )
        except Exception:
            return fail()
        return _ParentAttempt(self, target, protocol, tunnel=False).start()
