# -*- test-case-name: tests.test_config -*-
"""
The services L{connectproxy.tap.makeService} assembles: listeners that say
where they listen (and warn when that is an open proxy), and the reload
service (SIGHUP).
"""

from __future__ import annotations

import ipaddress
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import Service
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python import usage

from ._factory import ConnectProxyFactory
from ._observer import formatAddress

if TYPE_CHECKING:
    from .tap import Options

__all__ = ["ListenerService", "ReloadService"]


class ListenerService(StreamServerEndpointService):
    """
    A listener that says where it listens once it does (useful with port 0),
    and warns loudly when that is a non-loopback address without
    authentication.
    """

    _log = Logger()
    unauthenticated = False
    clientRules: Sequence[str] = ()

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if self._waitingForPort is not None:
            self._waitingForPort.addCallback(self._listening)

    def _listening(self, port: IListeningPort) -> IListeningPort:
        address = port.getHost()
        self._log.info(
            "connectproxy listening on {address}",
            event="listening",
            address=formatAddress(address),
            host=getattr(address, "host", None),
            port=getattr(address, "port", None),
        )
        self._address = address
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
            if not ipaddress.ip_address(host.partition("%")[0]).is_loopback:
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
    Re-reads the configuration on SIGHUP (or when L{reload} is called):
    the configuration file, password files and rules.  New connections use
    the new configuration; established tunnels carry on.  A configuration
    that does not load is logged and the old one kept.
    """

    _log = Logger()

    def __init__(
        self,
        options: Options,
        factory: ConnectProxyFactory,
        reactor: Any,
        installSignal: bool,
        listeners: Sequence[ListenerService] = (),
    ) -> None:
        self._options = options
        self._listen = options["listen"]
        self.listeners = listeners
        self._factory = factory
        self._reactor = reactor
        self._installSignal = installSignal
        self._previousHandler: Any = None
        self._installed = False
        self._checkers = options.checkers()

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
        _stopCheckers(self._checkers)

    def _onSignal(self, signum: int, frame: object) -> None:
        self._reactor.callFromThread(self.reload)

    def reload(self) -> bool:
        """
        Load the configuration again.

        @return: Whether the new configuration is in use.
        """
        options = type(self._options)()
        try:
            options.parseOptions(self._options.argv)
            gatekeeper = options.gatekeeper(self._reactor)
        except (usage.UsageError, ValueError, OSError) as e:
            self._log.error(
                "configuration reload failed, keeping the old configuration: {error}",
                event="reload_failed",
                error=str(e),
            )
            return False
        if options["listen"] != self._listen:
            self._log.warn(
                "--listen changes take effect only after a restart",
                event="reload_listen_ignored",
            )
        old, self._checkers = self._checkers, options.checkers()
        self._options = options
        previous = self._factory.gatekeeper.limiter
        if previous is not None and gatekeeper.limiter is not None:
            # Keep counting (and blocking) across reloads, with the new limits.
            previous.maxFailures = gatekeeper.limiter.maxFailures
            previous.window = gatekeeper.limiter.window
            previous.blockFor = gatekeeper.limiter.blockFor
            previous.maxUsers = gatekeeper.limiter.maxUsers
            gatekeeper.limiter = previous
        self._factory.reconfigure(options.settings(), gatekeeper)
        for listener in self.listeners:
            listener.unauthenticated = options.unauthenticated()
            listener.clientRules = options["allow-client"]
            listener.warnIfOpen()
        # Verifications already running on the old checkers finish within
        # the admission deadline; stop their threads after it.
        self._reactor.callLater(options["connect-timeout"] + 1, _stopCheckers, old)
        self._log.info("configuration reloaded", event="reloaded")
        return True


def _stopCheckers(checkers: Sequence[Any]) -> None:
    for checker in checkers:
        stop = getattr(checker, "stop", None)
        if stop is not None:
            stop()
