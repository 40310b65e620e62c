# -*- test-case-name: tests.test_server -*-
"""
What the proxy reports about each request and tunnel: the records, and the
access log that turns them into one structured log event each.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from twisted.logger import Logger
from zope.interface import implementer

from ._address import formatAddress
from .interfaces import IProxyObserver, IProxyObserverRecord

__all__ = [
    "AccessLogObserver",
    "ObserverFanOut",
    "RefusedRequest",
    "TunnelRecord",
    "formatAddress",
]


@implementer(IProxyObserverRecord)
@dataclass(frozen=True, slots=True)
class RefusedRequest:
    """
    A request answered with an error.

    @ivar client: The client's address.
    @ivar method: The request method, or C{""} when the head was unreadable.
    @ivar target: The request-target, or C{""}.
    @ivar status: The status sent.
    @ivar reason: The short reason sent.
    @ivar user: The authenticated user name, if any.
    """

    client: str
    method: str
    target: str
    status: int
    reason: str
    user: str | None = None


@implementer(IProxyObserverRecord)
@dataclass(frozen=True, slots=True)
class TunnelRecord:
    """
    A tunnel, when it opens (byte counts zero, C{reason} C{None}) and when it
    closes.

    @ivar client: The client's address.
    @ivar host: The target host as requested.
    @ivar port: The target port.
    @ivar upstream: The address actually connected to.
    @ivar status: Always 200: the tunnel was established.
    @ivar bytesUp: Bytes relayed from the client to the upstream.
    @ivar bytesDown: Bytes relayed from the upstream to the client.
    @ivar duration: Seconds from the 200 to the close.
    @ivar reason: What ended the tunnel.
    @ivar user: The authenticated user name, if any.
    """

    client: str
    host: str
    port: int
    upstream: str
    status: int = 200
    bytesUp: int = 0
    bytesDown: int = 0
    duration: float = 0.0
    reason: str | None = None
    user: str | None = None


@implementer(IProxyObserver)
class AccessLogObserver:
    """
    The access log: one C{twisted.logger} event per refused request and per
    closed tunnel, with a stable C{event} field (C{request_refused},
    C{tunnel_close}) and every field of the record.
    """

    _log = Logger(namespace="connectproxy.access")

    def requestRefused(self, event: RefusedRequest) -> None:
        self._log.info(
            "refused {client} {method} {target}: {status} {reason}",
            event="request_refused",
            client=event.client,
            method=event.method,
            target=event.target,
            status=event.status,
            reason=event.reason,
            user=event.user,
        )

    def tunnelOpened(self, event: TunnelRecord) -> None:
        self._log.debug(
            "tunnel opened {client} -> {host}:{port} via {upstream}",
            event="tunnel_open",
            client=event.client,
            host=event.host,
            port=event.port,
            upstream=event.upstream,
            user=event.user,
        )

    def tunnelClosed(self, event: TunnelRecord) -> None:
        self._log.info(
            "tunnel closed {client} -> {host}:{port} via {upstream}: "
            "{bytesUp} bytes up, {bytesDown} bytes down, {duration:.3f}s, "
            "{reason}",
            event="tunnel_close",
            client=event.client,
            host=event.host,
            port=event.port,
            upstream=event.upstream,
            status=event.status,
            bytesUp=event.bytesUp,
            bytesDown=event.bytesDown,
            duration=event.duration,
            reason=event.reason,
            user=event.user,
        )


@implementer(IProxyObserver)
class ObserverFanOut:
    """
    Pass each report to several observers; one that raises is logged and
    does not stop the others or the proxy.
    """

    _log = Logger()

    def __init__(self, observers: Iterable[IProxyObserver]) -> None:
        self.observers = list(observers)

    def _notify(self, method: str, event: object) -> None:
        for observer in self.observers:
            try:
                getattr(observer, method)(event)
            except Exception:
                self._log.failure(
                    "observer {observer!r} failed in {method}",
                    observer=observer,
                    method=method,
                    event="observer_error",
                )

    def requestRefused(self, event: RefusedRequest) -> None:
        self._notify("requestRefused", event)

    def tunnelOpened(self, event: TunnelRecord) -> None:
        self._notify("tunnelOpened", event)

    def tunnelClosed(self, event: TunnelRecord) -> None:
        self._notify("tunnelClosed", event)
