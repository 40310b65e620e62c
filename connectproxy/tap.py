# -*- test-case-name: tests.test_tap -*-
"""
The command line of C{twistd connectproxy} and C{twist connectproxy}:
L{Options} and L{makeService}.
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.testing import MemoryReactor
from twisted.logger import Logger
from twisted.python import usage

from ._observer import formatAddress
from ._server import ConnectProxyFactory, ProxySettings

__all__ = ["DEFAULT_LISTEN", "Options", "makeService"]

#: Where the proxy listens when no C{--listen} is given: loopback only.
DEFAULT_LISTEN = "tcp:3128:interface=127.0.0.1"

_defaults = ProxySettings()


def _positiveFloat(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise ValueError(f"{text!r} must be a positive number of seconds")
    return value


_positiveFloat.coerceDoc = "Seconds, a positive number."  # type: ignore[attr-defined]


def _positiveInt(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number of bytes") from None
    if value < 64:
        raise ValueError(f"{text!r} is too small: at least 64 bytes")
    return value


_positiveInt.coerceDoc = "Bytes, a whole number, at least 64."  # type: ignore[attr-defined]


class Options(usage.Options):
    """
    Options for C{twistd connectproxy}.
    """

    synopsis = "[options]"
    longdesc = (
        "An HTTP CONNECT forward proxy. Clients send 'CONNECT host:port'; the "
        "proxy connects to the target and relays bytes both ways. By default "
        "it listens on 127.0.0.1:3128 only."
    )

    optParameters = [
        [
            "connect-timeout",
            None,
            _defaults.connectTimeout,
            "Seconds allowed for the whole upstream connect, name resolution "
            "and every address tried included; the client then gets 504.",
            _positiveFloat,
        ],
        [
            "idle-timeout",
            None,
            _defaults.idleTimeout,
            "Seconds a tunnel may go without a byte in either direction "
            "before it is closed.",
            _positiveFloat,
        ],
        [
            "request-timeout",
            None,
            _defaults.requestTimeout,
            "Seconds a client has to send its complete request head; the "
            "client then gets 408 (slow clients cannot hold connections).",
            _positiveFloat,
        ],
        [
            "abort-timeout",
            None,
            _defaults.abortTimeout,
            "Seconds a graceful close may take before the connection is aborted.",
            _positiveFloat,
        ],
        [
            "max-request-line",
            None,
            _defaults.maxRequestLine,
            "Longest request line accepted, in bytes; longer gets 414.",
            _positiveInt,
        ],
        [
            "max-head-size",
            None,
            _defaults.maxHeadSize,
            "Largest request head (request line and header fields) accepted, "
            "in bytes; larger gets 431.",
            _positiveInt,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, description: str) -> None:
        """
        Listen on this strports description (repeatable), for example
        tcp:3128:interface=127.0.0.1, tcp6:3128:interface=\\:\\:1,
        unix:/run/connectproxy.sock, ssl:3129:privateKey=key.pem:certKey=cert.pem,
        systemd:domain=INET:index=0 or haproxy:tcp:3128.
        [default: tcp:3128:interface=127.0.0.1]
        """
        try:
            serverFromString(MemoryReactor(), description)
        except (ValueError, KeyError, TypeError, OSError) as e:
            raise usage.UsageError(
                f"--listen {description!r} is not a valid listener: {e}"
            ) from None
        self["listen"].append(description)

    def postOptions(self) -> None:
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        if self["max-head-size"] < self["max-request-line"]:
            raise usage.UsageError(
                "--max-head-size must be at least --max-request-line"
            )

    def settings(self) -> ProxySettings:
        """
        @return: The L{ProxySettings} these options describe.
        """
        return ProxySettings(
            requestTimeout=self["request-timeout"],
            connectTimeout=self["connect-timeout"],
            idleTimeout=self["idle-timeout"],
            abortTimeout=self["abort-timeout"],
            maxRequestLine=self["max-request-line"],
            maxHeadSize=self["max-head-size"],
        )


class _ListenerService(StreamServerEndpointService):
    """
    A listener that says where it listens once it does (useful with port 0).
    """

    _log = Logger()

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
        return port


def makeService(options: Options, reactor: Any = None) -> MultiService:
    """
    Build the proxy service: one listener per C{--listen}, sharing one
    factory.

    @param options: Parsed L{Options}.
    @param reactor: The reactor to use; the global one when C{None}.
    @return: A L{MultiService} holding the listeners.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    factory = ConnectProxyFactory(reactor, options.settings())
    service = MultiService()
    service.setName("connectproxy")
    for description in options["listen"]:
        listener = _ListenerService(serverFromString(reactor, description), factory)
        listener._raiseSynchronously = True
        listener.setServiceParent(service)
    return service
