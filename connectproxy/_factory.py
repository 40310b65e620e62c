# -*- test-case-name: tests.test_limits -*-
"""
L{ConnectProxyFactory}: builds a L{ConnectProxyProtocol} per client
connection, holds what they share, and enforces the connection limits
(counted and checked by L{connectproxy._connlimits}).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any, overload

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IProtocolNegotiationFactory,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.versions import getVersionString
from zope.interface import implementer

from ._address import clientHostPort
from ._admission import Gatekeeper
from ._assembly import ProxyConfig, directConnector
from ._connector import ConnectorContext, ConnectorMaker
from ._connlimits import ConnectionLimits
from ._deadlines import DeadlineSweeper
from ._deprecation import DEPRECATED_IN
from ._dnscache import CachingDNSResolver, chooseResolver, dnsResolver
from ._front import SHUTTING_DOWN, ConnectProxyProtocol
from ._observer import (
    AccessLogObserver,
    ConnectionRecord,
    ForwardedRequest,
    ObserverFanOut,
    RefusedRequest,
    TunnelRecord,
)
from ._pool import UpstreamPool
from ._refuser import RefusalProtocol, ShedProtocol
from ._relay import TunnelStats, _Relay, _RelayFactory
from ._relaychoice import RelayChoice
from ._resolver import ResolverPool
from ._rules import AccessRules
from ._settings import ProxySettings
from ._tls import ALPN_PROTOCOLS
from .interfaces import IProxyObserver, IUpstreamConnector

__all__ = ["ConnectProxyFactory"]


@implementer(IProtocolNegotiationFactory)
class ConnectProxyFactory(Factory):
    """
    Builds a L{ConnectProxyProtocol} per client connection and holds what
    they share: settings, the clock, the access checks, the upstream
    connector and the observers.

    Under a TLS listener it tells ALPN (RFC 7301) that it speaks HTTP/1.1
    (L{acceptableProtocols}); without that, Twisted fails the handshake of
    every client that offers ALPN.

    @ivar reactor: The reactor (clock, resolver, connector) in use.
    @ivar settings: The proxy's tunables.
    @ivar gatekeeper: The access checks.
    @ivar connector: How upstream connections are made.
    @ivar resolverPool: The name resolver pool that connectors made by the
        factory share (sized by the settings, stopped with the factory), or
        C{None} when the connector was given and no context was asked for.
    @ivar observer: Where reports go (all the observers given).
    @ivar connections: The client connections now open.
    @ivar refusing: How many connections over a limit are being answered
        with a 503 now.
    @ivar openTunnels: How many tunnels are open now.
    @ivar relays: The relays of the tunnels open now, from their 200 until
        both of their sides are gone.
    @ivar draining: Whether L{drain} was called: requests whose head is
        complete from then on are answered with 503, and none gets a 407
        it may retry on the same connection.
    @ivar deadlines: Keeps the idle, half-close and abort deadlines of every
        tunnel, with one timer on the reactor.
    @ivar upstreamPool: The idle upstream connections of forwarded
        requests, kept for reuse (C{--upstream-keepalive}).
    @ivar relayFactory: Builds the relay of each tunnel (it may choose a
        different relay per tunnel); by default a L{RelayChoice
        <connectproxy._relaychoice.RelayChoice>}, which follows the
        C{relay} setting of the tunnel's settings (C{--relay}).  Not yet a
        stable extension point.
    """

    _log = Logger()
    noisy = False

    def __init__(
        self,
        reactor: Any,
        settings: ProxySettings | None = None,
        connector: IUpstreamConnector | None = None,
        observers: Iterable[IProxyObserver] | None = None,
        gatekeeper: Gatekeeper | None = None,
        upstream: ConnectorMaker | None = None,
    ) -> None:
        """
        @param reactor: Provides
            L{twisted.internet.interfaces.IReactorTime} and, for the default
            connector, name resolution and TCP.
        @param settings: Tunables; the defaults when C{None}.
        @param connector: Makes upstream connections, for as long as no
            reconfiguration replaces it; when C{None}, C{upstream} makes
            one.
        @param observers: Told of refusals and tunnels; the access log when
            C{None}.
        @param gatekeeper: The access checks; the safe defaults (loopback
            clients, port 443, or 80 and 443 for forwarded requests, no
            authentication) when C{None}.
        @param upstream: Makes the connector when none is given, now and
            again at each L{reconfigure}, from a L{ConnectorContext} with
            the factory's L{ResolverPool}; when C{None}, the built-in
            direct connector (a L{DirectConnector} with the gatekeeper's
            network rules).
        @raise ValueError: When C{upstream} cannot make a connector.
        @raise TypeError: When both C{connector} and C{upstream} are given.
        """
        self.reactor: Any = reactor
        self.settings = settings if settings is not None else ProxySettings()
        if gatekeeper is None:
            gatekeeper = Gatekeeper(AccessRules.defaults())
        self.gatekeeper = gatekeeper
        self.resolverPool: ResolverPool | None = None
        self._upstream: ConnectorMaker | None = None
        if connector is None:
            self._upstream = directConnector if upstream is None else upstream
            connector = self._upstream(self.connectorContext())
        elif upstream is not None:
            raise TypeError("give a connector or an upstream maker, not both")
        self.connector = connector
        if observers is None:
            observers = [AccessLogObserver()]
        # A deprecation warning names the code that made this factory.
        self.observer = ObserverFanOut(observers, stacklevel=3)
        self.connections: set[ConnectProxyProtocol] = set()
        self.openTunnels = 0
        self.draining = False
        # Every connection not yet gone (refused and shed ones included,
        # and those whose tunnel is still closing), for whenIdle.
        self._live = 0
        self._idle: list[Deferred[None]] = []
        self.relays: set[_Relay] = set()
        self.deadlines = DeadlineSweeper(reactor)
        self.upstreamPool = UpstreamPool(reactor)
        self.relayFactory: _RelayFactory = RelayChoice()
        self.refusing = 0
        self._limits = ConnectionLimits(self._log)

    #: What C{--resolver auto} asks which resolver to use (at start and at
    #: each reload): L{chooseResolver}, replaced in tests.
    chooseResolver = staticmethod(chooseResolver)

    def _resolverFor(self, settings: ProxySettings) -> str:
        """
        C{"dns"} or C{"system"}: C{settings.resolver}, or what C{auto}
        chooses (logged as C{resolver_chosen}).
        """
        if settings.resolver != "auto":
            return settings.resolver
        chosen, why = self.chooseResolver()
        self._log.info(
            "--resolver auto chose {chosen}: {why}",
            event="resolver_chosen",
            chosen=chosen,
            why=why,
        )
        return chosen

    def _dnsResolver(self, settings: ProxySettings) -> CachingDNSResolver | None:
        """
        The DNS resolver of C{--resolver dns} (or C{auto} choosing it), or
        C{None} for C{system}.
        """
        if self._resolverFor(settings) != "dns":
            return None
        return dnsResolver(
            self.reactor, settings.dnsCacheSize, deadline=settings.connectTimeout
        )

    def connectorContext(
        self,
        settings: ProxySettings | None = None,
        gatekeeper: Gatekeeper | None = None,
    ) -> ConnectorContext:
        """
        What a connector is made from: this factory's reactor and resolver
        pool (made now if there is none yet), with C{settings} and the
        network rules of C{gatekeeper}.

        @param settings: The settings; the factory's when C{None}.
        @param gatekeeper: Whose network rules; the factory's when C{None}.
        """
        settings = self.settings if settings is None else settings
        gatekeeper = self.gatekeeper if gatekeeper is None else gatekeeper
        if self.resolverPool is None:
            self.resolverPool = ResolverPool(
                self.reactor,
                settings.resolverThreads,
                settings.resolverPerClient,
                dns=self._dnsResolver(settings),
            )
        return ConnectorContext(
            self.reactor, settings, gatekeeper.rules.networks, self.resolverPool
        )

    @classmethod
    def fromConfig(cls, reactor: Any, config: ProxyConfig) -> ConnectProxyFactory:
        """
        Build a factory that runs a configuration.

        @param reactor: As for the constructor.
        @param config: The configuration: its settings, access checks,
            observers, and its connector or what makes one.
        @raise ValueError: When the connector cannot be made.
        """
        if config.connector is not None:
            return cls(
                reactor,
                config.settings,
                config.connector,
                config.observers,
                config.gatekeeper,
            )
        return cls(
            reactor,
            config.settings,
            observers=config.observers,
            gatekeeper=config.gatekeeper,
            upstream=config.upstream,
        )

    @overload
    def reconfigure(self, config: ProxyConfig) -> None: ...

    @overload
    def reconfigure(
        self,
        config: ProxySettings,
        gatekeeper: Gatekeeper,
        upstream: ConnectorMaker | None = None,
    ) -> None: ...

    def reconfigure(
        self,
        config: ProxyConfig | ProxySettings,
        gatekeeper: Gatekeeper | None = None,
        upstream: ConnectorMaker | None = None,
    ) -> None:
        """
        Run a new configuration (a reload): its settings, access checks,
        connector and observers replace the old ones, whole, for new
        connections; established tunnels, and requests already being
        connected, carry on as they are.  The connector is the
        configuration's own, or made by its C{upstream} maker on this
        factory's resolver pool, which stays, resized.  The failed-login
        limiter in use stays too, with the new limits, so that a block
        outlives a reload: it takes the place of the limiter of the new
        configuration's gatekeeper, unless that gatekeeper has none.

        Called as C{reconfigure(settings, gatekeeper, upstream=None)}, as
        before L{ProxyConfig}, it changes the settings, the access checks
        and (with a maker, or by remaking it with the maker in use) the
        connector only; that form is deprecated.

        @param config: The new configuration.
        @raise ValueError: When the connector cannot be made; nothing has
            changed then.
        """
        if not isinstance(config, ProxyConfig):
            warnings.warn(
                "ConnectProxyFactory.reconfigure(settings, gatekeeper, upstream) "
                f"was deprecated in {getVersionString(DEPRECATED_IN)}; please use "
                "reconfigure(ProxyConfig(...)) instead",
                DeprecationWarning,
                stacklevel=2,
            )
            if gatekeeper is None:
                raise TypeError("reconfigure(settings, gatekeeper) needs a gatekeeper")
            self._reconfigureParts(config, gatekeeper, upstream)
            return
        connector = config.connector
        maker = None
        if connector is None:
            maker = config.upstream
            connector = maker(self.connectorContext(config.settings, config.gatekeeper))
        gatekeeper = config.gatekeeper
        previous = self.gatekeeper.limiter
        if previous is not None and gatekeeper.limiter is not None:
            gatekeeper.limiter = previous.reconfigured(gatekeeper.limiter)
        self._use(config.settings, gatekeeper, connector, maker)
        self.observer = ObserverFanOut(config.observers)

    def _reconfigureParts(
        self,
        settings: ProxySettings,
        gatekeeper: Gatekeeper,
        upstream: ConnectorMaker | None,
    ) -> None:
        """
        The deprecated L{reconfigure}: a new maker, or the one in use; a
        connector given to the constructor is kept.
        """
        maker = self._upstream if upstream is None else upstream
        connector = self.connector
        if maker is not None:
            connector = maker(self.connectorContext(settings, gatekeeper))
        self._use(settings, gatekeeper, connector, maker)

    def _use(
        self,
        settings: ProxySettings,
        gatekeeper: Gatekeeper,
        connector: IUpstreamConnector,
        maker: ConnectorMaker | None,
    ) -> None:
        """
        Switch to new settings, access checks and connector.
        """
        self.settings = settings
        self.gatekeeper = gatekeeper
        self.connector = connector
        self._upstream = maker
        pool = self.resolverPool
        if pool is not None:
            pool.resize(settings.resolverThreads, settings.resolverPerClient)
            resolver = self._resolverFor(settings)
            if pool.dns is None or resolver != "dns":
                if isinstance(pool.dns, CachingDNSResolver):
                    pool.dns.stop()
                pool.dns = (
                    dnsResolver(
                        self.reactor,
                        settings.dnsCacheSize,
                        deadline=settings.connectTimeout,
                    )
                    if resolver == "dns"
                    else None
                )
            elif isinstance(pool.dns, CachingDNSResolver):
                # A smaller cache drops its least recently used answers as
                # new ones come.
                pool.dns.size = settings.dnsCacheSize
                pool.dns.setDeadline(settings.connectTimeout)

    def stopFactory(self) -> None:
        """
        The last listener stopped: log the shed connections not logged yet,
        let the resolver threads go, and close what the relay factory keeps
        for the next tunnels (its C{stop}, if it has one).
        """
        stop = getattr(self.relayFactory, "stop", None)
        if stop is not None:
            stop()
        self._limits.stop()
        self.upstreamPool.closeAll()
        if self.resolverPool is not None:
            self.resolverPool.stop()

    def acceptableProtocols(self) -> list[bytes]:
        """
        The ALPN protocol IDs the proxy speaks, in order of preference.

        @return: C{[b"http/1.1"]}.
        """
        return list(ALPN_PROTOCOLS)

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        """
        Build the protocol for a client connection, or the 503 refusal of a
        connection over a limit.

        @param addr: The client's address: the transport's peer, or (behind
            connectproxy's PROXY-protocol listener) the address the load
            balancer reported.  Per-client limits count it.
        """
        clientHost, _ = clientHostPort(addr)
        refusal = self._limits.overLimit(
            self.settings, len(self.connections), clientHost
        )
        if refusal is not None:
            return self._shedOrRefuse(addr, 503, refusal)
        protocol = ConnectProxyProtocol(self)
        protocol.clientAddress = addr
        protocol.clientHost = clientHost
        self.connections.add(protocol)
        self._limits.opened(clientHost)
        return protocol

    def buildProxiedProtocol(self, client: IAddress, balancer: IAddress) -> Protocol:
        """
        Build the protocol for a client a load balancer named in a PROXY
        protocol header: as L{buildProtocol} for C{client}, and marked as
        behind C{balancer}, so that only the rules for clients behind a
        balancer apply to it (C{--allow-client}; loopback is not implied,
        even when it claims the balancer's own address).

        @param client: The client's address, from the header.
        @param balancer: The address of the connection's peer.
        """
        protocol = self.buildProtocol(client)
        if isinstance(protocol, ConnectProxyProtocol | RefusalProtocol):
            protocol.balancerAddress = balancer
        return protocol

    def buildRefusal(self, addr: IAddress | None, status: int, reason: str) -> Protocol:
        """
        Build a protocol that answers an error at once and closes: for a
        connection a listener refuses before the proxy reads from it.

        @param addr: The peer's address.
        @param status: The status to answer with.
        @param reason: The short reason, sent and logged.
        """
        return self._shedOrRefuse(addr, status, reason)

    def _shedOrRefuse(
        self, addr: IAddress | None, status: int, reason: str
    ) -> Protocol:
        """
        Refuse a connection: with an error response, or (far over the total
        limit, where even a response costs too much) by closing it at once,
        logging a count at most once a second (L{ConnectionLimits.countShed
        <connectproxy._connlimits.ConnectionLimits.countShed>}).
        """
        open = len(self.connections) + self.refusing
        if self._limits.shouldShed(self.settings, open):
            self._limits.countShed(reason, self.reactor)
            # Not None: the TLS and PROXY-protocol wrapping factories would
            # wrap it anyway and leave the connection open.
            return ShedProtocol(self, addr, reason)
        return RefusalProtocol(self, addr, status, reason)

    def connectionClosed(self, protocol: ConnectProxyProtocol) -> None:
        """
        A client connection is gone.
        """
        self.connections.discard(protocol)
        self._limits.closed(protocol.clientHost)

    def connectionStarted(self, event: ConnectionRecord) -> None:
        """
        A client connection was made (any, refused or shed ones included):
        count it and tell the observers.
        """
        self._live += 1
        self.observer.connectionOpened(event)

    def connectionEnded(self, event: ConnectionRecord) -> None:
        """
        A client connection is gone, with its tunnel if it had one: tell the
        observers, and fire L{whenIdle}'s Deferreds if it was the last.
        """
        self._live -= 1
        self.observer.connectionClosed(event)
        if self._live == 0 and self._idle:
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)

    def requestRefused(self, event: RefusedRequest) -> None:
        self.observer.requestRefused(event)

    def requestForwarded(self, event: ForwardedRequest) -> None:
        """
        A forwarded request's exchange is over: tell the observers.
        """
        self.observer.requestForwarded(event)

    def tunnelOpened(self, event: TunnelRecord) -> None:
        self.openTunnels += 1
        self.observer.tunnelOpened(event)

    def tunnelClosed(self, event: TunnelRecord) -> None:
        self.openTunnels -= 1
        self.observer.tunnelClosed(event)

    def openTunnelStats(self) -> list[TunnelStats]:
        """
        The counters of every tunnel open now, for an observer that reports
        bytes while long tunnels are still open (a metrics scrape): each
        relay's own live record, kept current as bytes move.  Read them,
        do not keep them: a tunnel's final counts come in its
        L{TunnelRecord} when it closes.

        @return: One L{TunnelStats} per open tunnel, in no order.
        """
        return [relay.stats for relay in self.relays]

    def drain(self) -> None:
        """
        Stop admitting requests, for a shutdown that lets established
        tunnels finish: from now on a request whose head is complete gets
        503 ("the proxy is shutting down") and C{Connection: close}, and a
        407 no longer keeps the connection open for another try.  Requests
        already being checked or connected go on (and may become tunnels);
        tunnels keep running.  Listeners are not touched: stop them first,
        so that no new connections arrive.  Idle upstream connections of
        forwarded requests are closed, and none is kept from then on; so
        are client connections kept alive and idle between forwarded
        requests.  Calling it again does nothing.
        """
        self.draining = True
        self.upstreamPool.closeAll()
        for protocol in list(self.connections):
            protocol.drainIdle()

    def whenIdle(self) -> Deferred[None]:
        """
        Wait until no client connection is left: every one made so far and
        until then (refused and shed ones included) is gone, and so is the
        upstream side of every tunnel, and every upstream connection of a
        forwarded request that was not pooled (idle pooled connections are
        the pool's: L{drain} closes them, without waiting).  Behind a
        PROXY-protocol listener a
        connection counts from the moment its header names the client.

        @return: A Deferred that fires with C{None} then (at once when no
            connection is open now).  Cancelling it stops the wait.
        """
        if self._live == 0:
            return succeed(None)

        def cancel(d: Deferred[None]) -> None:
            if d in self._idle:
                self._idle.remove(d)

        d: Deferred[None] = Deferred(cancel)
        self._idle.append(d)
        return d

    def closeAll(self, reason: str = "shutdown", message: str = SHUTTING_DOWN) -> None:
        """
        Close every client connection open now: each tunnel gracefully with
        C{reason} as its close reason (and aborted if that takes longer
        than the abort timeout); each request not yet tunnelled with a 503
        and C{message}, its access checks or upstream connect cancelled.
        Connections refused over a limit, and being closed already, finish
        closing on their own.  New connections are not refused: call
        L{drain} and stop the listeners for that.

        @param reason: The close reason of the tunnels (what their
            L{TunnelRecord} and the access log say).
        @param message: The short reason the 503 answers carry.
        """
        for protocol in list(self.connections):
            protocol.closeWith(reason, message)
        self.upstreamPool.closeAll()
