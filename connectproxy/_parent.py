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

One attempt through the parent (its name resolved, the connection made,
the C{CONNECT} sent, the tunnel handed over) is
L{connectproxy._parentattempt}; the connection to the parent itself (the
C{CONNECT}, its answer, and what a refusal means for the client) is
L{connectproxy._parenthandshake}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IProtocol, IReactorTime
from twisted.internet.ssl import optionsForClientTLS, platformTrust
from zope.interface import implementer

from ._connector import UpstreamRequest
from ._errors import ParentProxyError
from ._eyeballs import ATTEMPT_DELAY
from ._outgoing import OutgoingAddresses
from ._parentattempt import _ParentAttempt
from ._parenturl import ParentProxy
from ._policy import NetworkRules
from ._resolver import ResolverPool
from ._vetting import VettedResolver
from .interfaces import IUpstreamConnector

__all__ = ["ParentProxyConnector", "ParentProxyError"]


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
            L{ConnectingCancelledError
            <twisted.internet.error.ConnectingCancelledError>} when cancelled.
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
