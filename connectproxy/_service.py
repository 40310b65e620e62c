# -*- test-case-name: tests.test_service -*-
"""
The services L{connectproxy.tap.makeService} runs (L{proxyService}):
listeners that say where they listen (and warn when that is an open proxy),
the reload service (SIGHUP), the draining shutdown (SIGTERM), and the
systemd notifications.
"""

from __future__ import annotations

import ipaddress
import signal
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import (
    IService,
    IServiceCollection,
    MultiService,
    Service,
)
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python import usage

from ._address import formatAddress
from ._assembly import ProxyConfig
from ._factory import ConnectProxyFactory
from ._proxyprotocol import serverEndpoint
from ._sdnotify import NotifyService, SystemdNotifier
from ._sharedports import AdoptingReactor
from ._shutdown import ProxyService, ShutdownService
from ._tlslisteners import NegotiatingReactor, reloadCertificates

if TYPE_CHECKING:
    from ._acceptguard import AcceptGuard

__all__ = [
    "ListenFailed",
    "ListenerService",
    "ReloadService",
    "proxyListeners",
    "proxyService",
]


class ListenFailed(SystemExit, Exception):
    """
    A listener could not listen (its port is in use, say): the process
    cannot serve, so it exits with status 1 and one line, without a
    traceback.

    It is an L{Exception} too, so that C{twistd} in daemon mode reports it
    to the process that started it (and removes its pidfile), and a
    L{SystemExit}, so that C{twist} and C{twistd -n} exit with its message
    instead of a traceback.  C{str()} is the short message that fits the
    100 bytes C{twistd} passes from its daemon to its parent; C{code}, what
    the interpreter prints on exit, names the listener too.

    @ivar description: The listener's description.
    @ivar reason: Why it could not listen.
    """

    def __init__(
        self, description: str, where: str, reason: str, option: str = "--listen"
    ) -> None:
        """
        @param option: The option that gave the description.
        """
        super().__init__(f"cannot listen on {where}: {reason}")
        self.description = description
        self.reason = reason
        self.code = (
            f"connectproxy: cannot listen on {where}: {reason} ({option} {description})"
        )


def _listenFailure(error: BaseException) -> tuple[str, str]:
    """
    Where a listener tried to listen, and why it could not.
    """
    if isinstance(error, CannotListenError):
        reason = getattr(error.socketError, "strerror", None) or str(error.socketError)
        if error.interface is None:
            return f"unix:{error.port}", reason
        host = error.interface or "*"
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{error.port}", reason
    if isinstance(error, OSError) and error.strerror:
        return "its socket", error.strerror
    return "its address", str(error) or type(error).__name__


class ListenerService(StreamServerEndpointService):
    """
    A listener that says where it listens once it does (useful with port 0),
    and warns loudly when that is a non-loopback address without
    authentication.

    @ivar description: The listener description it was made from, for
        messages.
    @ivar acceptGuard: Refuses clients cleanly when the descriptors run
        out, once the port listens; C{None} for none.
    @ivar isListening: Whether the port listens: from the moment it does
        until the service stops.
    """

    _log = Logger()
    unauthenticated = False
    clientRules: Sequence[str] = ()
    description = ""
    acceptGuard: AcceptGuard | None = None
    isListening = False

    def privilegedStartService(self) -> None:
        """
        Listen.

        @raise ListenFailed: When the listener cannot listen.
        """
        try:
            super().privilegedStartService()
        except Exception as e:
            where, reason = _listenFailure(e)
            raise ListenFailed(self.description, where, reason) from None
        if self._waitingForPort is not None:
            self._waitingForPort.addCallback(self._listening)

    def stopService(self) -> Any:
        self.isListening = False
        if self.acceptGuard is not None:
            self.acceptGuard.stop()
        return super().stopService()

    def _listening(self, port: IListeningPort) -> IListeningPort:
        if self.acceptGuard is not None:
            self.acceptGuard.watch(port)
        address = port.getHost()
        self._log.info(
            "connectproxy listening on {address}",
            event="listening",
            address=formatAddress(address),
            host=getattr(address, "host", None),
            port=getattr(address, "port", None),
            description=self.description,
        )
        self._address = address
        self.isListening = True
        self.warnIfOpen()
        return port

    def warnIfOpen(self) -> None:
        """
        Warn loudly if this listener is on a non-loopback address and the
        configuration asks for no authentication.
        """
        address = getattr(self, "_address", None)
        host = getattr(address, "host", None)
        if self.unauthenticated and isinstance(host, str):
            bound = ipaddress.ip_address(host.partition("%")[0])
            if isinstance(bound, ipaddress.IPv6Address) and bound.ipv4_mapped:
                # ::ffff:127.0.0.1 takes IPv4 connections to 127.0.0.1 only.
                bound = bound.ipv4_mapped
            if not bound.is_loopback:
                self._warnOpen(formatAddress(address))

    def _warnOpen(self, address: str) -> None:
        if self.clientRules:
            self._log.critical(
                "OPEN PROXY: listening on {address} without authentication; "
                "every client in {clients} can tunnel through it. Add --auth "
                "unless that is what you want.",
                event="open_proxy",
                address=address,
                clients=", ".join(self.clientRules),
            )
        else:
            self._log.critical(
                "listening on {address} without authentication and without "
                "--allow-client: only loopback clients are served, everyone "
                "else gets 403. Add --auth and/or --allow-client.",
                event="open_proxy",
                address=address,
            )


class ReloadService(Service):
    """
    Loads the configuration again on SIGHUP (or when L{reload} is called):
    the configuration file, password files and rules, and the certificate
    files of TLS listeners.  New connections use the new configuration;
    established tunnels carry on.  A configuration that does not load, a
    certificate among it, is logged and the old one kept as a whole.

    @ivar config: The configuration in use.
    @ivar listeners: The listeners, told whether the new configuration
        makes them open proxies.
    """

    _log = Logger()
    #: Told when a reload starts and ends (systemd notifications).
    notifier: NotifyService | None = None
    #: The reactors the listeners listen with: those of TLS listeners hold
    #: the certificates a reload replaces.
    listenerReactors: Sequence[NegotiatingReactor] = ()

    def __init__(
        self,
        load: Callable[[], ProxyConfig],
        factory: ConnectProxyFactory,
        config: ProxyConfig,
        reactor: Any,
        installSignal: bool,
        listeners: Sequence[ListenerService] = (),
    ) -> None:
        """
        @param load: Loads the configuration again: returns the new
            L{ProxyConfig}, or raises L{usage.UsageError}, L{ValueError} or
            L{OSError} when it does not load.
        @param factory: The factory that runs the configuration.
        @param config: The configuration it runs now.
        @param reactor: Where reloads are scheduled (C{callFromThread}) and
            the replaced checkers are stopped (C{callLater}).
        @param installSignal: Whether to handle SIGHUP while running.
        @param listeners: The listeners to tell.
        """
        self._load = load
        self.config = config
        self._listen = config.listen
        self.listeners = listeners
        self._factory = factory
        self._reactor = reactor
        self._installSignal = installSignal
        self._previousHandler: Any = None
        self._installed = False

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._installHandler()

    def startService(self) -> None:
        super().startService()
        self._installHandler()

    def _installHandler(self) -> None:
        """
        Install the SIGHUP handler, before the listeners start (this service
        is added first; twistd starts services in two passes, twist in one),
        so that a SIGHUP sent as soon as the proxy says it listens is
        handled.
        """
        if self._installSignal and hasattr(signal, "SIGHUP") and not self._installed:
            self._installed = True
            self._previousHandler = signal.signal(signal.SIGHUP, self._onSignal)

    def stopService(self) -> None:
        super().stopService()
        if self._installed:
            self._installed = False
            signal.signal(signal.SIGHUP, self._previousHandler or signal.SIG_DFL)
        _stopCheckers(self.config.checkers)

    def _onSignal(self, signum: int, frame: object) -> None:
        self._reactor.callFromThread(self.reload)

    def reload(self) -> bool:
        """
        Load the configuration again.

        @return: Whether the new configuration is in use.
        """
        notifier = self.notifier
        if notifier is not None:
            notifier.reloading()
        succeeded = False
        try:
            succeeded = self._reload()
        finally:
            if notifier is not None:
                notifier.reloaded(succeeded)
        return succeeded

    def _reload(self) -> bool:
        try:
            config = self._load()
            useCertificates = reloadCertificates(self.listenerReactors, config.plans)
        except (usage.UsageError, ValueError, OSError) as e:
            return self._failed(e)
        if config.listen != self._listen:
            self._log.warn(
                "--listen changes take effect only after a restart",
                event="reload_listen_ignored",
            )
        try:
            # The connector is made again, whole, unless it was given.
            self._factory.reconfigure(config)
        except ValueError as e:
            return self._failed(e)
        old, self.config = self.config, config
        useCertificates()
        for listener in self.listeners:
            listener.unauthenticated = config.unauthenticated
            listener.clientRules = config.allowClients
            listener.warnIfOpen()
        # Verifications already running on the old checkers finish within
        # the admission deadline; stop their threads after it.
        self._reactor.callLater(
            config.settings.connectTimeout + 1, _stopCheckers, old.checkers
        )
        self._log.info("configuration reloaded", event="reloaded")
        return True

    def _failed(self, error: Exception) -> bool:
        """
        Log why a reload failed.

        @return: C{False}.
        """
        self._log.error(
            "configuration reload failed, keeping the old configuration: {error}",
            event="reload_failed",
            error=str(error),
        )
        return False


def _stopCheckers(checkers: Sequence[Any]) -> None:
    for checker in checkers:
        stop = getattr(checker, "stop", None)
        if stop is not None:
            stop()


def proxyService(
    reactor: Any,
    factory: ConnectProxyFactory,
    config: ProxyConfig,
    load: Callable[[], ProxyConfig],
    installSignal: bool,
    *,
    before: Sequence[IService] = (),
    acceptGuard: Callable[[str], AcceptGuard | None] | None = None,
    adopted: Sequence[int | None] = (),
    notifier: SystemdNotifier | None = None,
) -> MultiService:
    """
    The proxy's services: one listener per description in C{config.listen},
    sharing C{factory}; the reload service; the systemd notifications.

    @param reactor: The reactor to listen with.
    @param factory: The factory running C{config}.
    @param config: The configuration at start.
    @param load: What a reload calls for the new configuration (see
        L{ReloadService}).
    @param installSignal: Whether SIGHUP reloads, and a second SIGTERM or
        SIGINT ends a shutdown at once.
    @param before: Services started before the listeners (the descriptor
        limit, raised before anything listens), and stopped after the
        drain.
    @param acceptGuard: Makes the guard of the listener of a description,
        which refuses clients cleanly when the descriptors run out.
    @param adopted: In a worker process of C{--workers}, the inherited
        listening socket of each description, in order (C{None} for one
        that listens as usual, a C{systemd:} one); each listener adopts
        its socket instead of binding one.
    @param notifier: Where the notifications go; systemd's
        (C{$NOTIFY_SOCKET}) when C{None}.
    @return: A L{ProxyService} named C{"connectproxy"}; its child named
        C{"reload"} has a C{reload()} method, the one named C{"shutdown"}
        drains the factory when the service stops (once the listeners have
        stopped; see L{ShutdownService}), and the one named C{"notify"}
        tells systemd (C{$NOTIFY_SOCKET}) when the proxy is ready,
        reloading and stopping.
    """
    service = ProxyService()
    service.setName("connectproxy")
    for first in before:
        first.setServiceParent(service)
    reloader = ReloadService(load, factory, config, reactor, installSignal)
    reloader.setName("reload")
    reloader.setServiceParent(service)
    # Stopped after the listeners and the notifications, before the rest.
    shutdown = ShutdownService(factory, reactor, installSignal)
    shutdown.setName("shutdown")
    shutdown.setServiceParent(service)
    service.barrier = shutdown
    listeners = []
    listenerReactors = []
    for index, description in enumerate(config.listen):
        fileno = adopted[index] if index < len(adopted) else None
        # TLS listeners refuse clients that share no ALPN protocol cleanly,
        # and take new certificates on reload.
        listenerReactor = NegotiatingReactor(
            reactor if fileno is None else AdoptingReactor(reactor, fileno),
            description,
        )
        listenerReactors.append(listenerReactor)
        listener = ListenerService(
            serverEndpoint(listenerReactor, description), factory
        )
        listener._raiseSynchronously = True
        listener.description = description
        if acceptGuard is not None:
            listener.acceptGuard = acceptGuard(description)
        listener.unauthenticated = config.unauthenticated
        listener.clientRules = config.allowClients
        listener.setServiceParent(service)
        listeners.append(listener)
    reloader.listeners = listeners
    reloader.listenerReactors = listenerReactors
    if notifier is None:
        notifier = SystemdNotifier.fromEnvironment()
    notifications = NotifyService(notifier, listeners)
    notifications.setName("notify")
    notifications.setServiceParent(service)
    reloader.notifier = notifications
    return service


def proxyListeners(service: IService) -> list[ListenerService]:
    """
    The proxy's listeners among C{service} and the services under it.

    @param service: What L{proxyService} returned.
    """
    if isinstance(service, ListenerService):
        return [service]
    if not IServiceCollection.providedBy(service):
        return []
    return [found for child in service for found in proxyListeners(child)]
