# -*- test-case-name: tests.test_observer -*-
"""
The observers of what the proxy reports about each connection, request and
tunnel: the fan-out to several observers, and the access log that turns
refusals and tunnels into one structured log event each.  The records they
receive, and their outcomes, are in L{connectproxy._records} (and imported
from here too).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING

from twisted.logger import Logger, LogLevel
from twisted.plugin import IPlugin
from twisted.python.versions import getVersionString
from zope.interface import implementer

from ._address import formatAddress
from ._deprecation import DEPRECATED_IN
from ._records import (
    ConnectionRecord,
    ForwardedRequest,
    Outcome,
    RefusedRequest,
    TunnelRecord,
    outcomeForStatus,
)
from .interfaces import (
    IForwardingObserver,
    IProxyObserver,
    IProxyObserverFactory,
)

if TYPE_CHECKING:
    from ._observercontext import ObserverContext

__all__ = [
    "AccessLogObserver",
    "AccessLogObserverFactory",
    "ConnectionRecord",
    "ForwardedRequest",
    "ObserverFanOut",
    "Outcome",
    "RefusedRequest",
    "TunnelRecord",
    "formatAddress",
    "outcomeForStatus",
]


#: The format of the access log's events, whose text is formatted once, by
#: C{str.format_map}, when the event is made (in C{log_text}, as Twisted's
#: legacy log events have it): every observer that renders the event (the
#: text and JSON files of C{twistd} and C{twist}) then has one field to
#: fill, not a dozen to look up and format through C{twisted.logger}'s
#: pure-Python formatter, once per tunnel.  The fields are all in the event
#: still, with their names and values.
_PREFORMATTED = "{log_text}"


def _userText(user: str | None) -> str:
    """
    The user in the text of an access-log line: the C{{user}} field, or
    C{-} when there is none (as in the Common Log Format).
    """
    return "{user}" if user else "-"


def _destinationText(host: str) -> str:
    """
    The destination in the text of a tunnel line: C{{host}:{port}}, with an
    IPv6 host in brackets (C{[v6]:port}, as every address in the log).
    """
    return "[{host}]:{port}" if ":" in host else "{host}:{port}"


def _requestText(method: str, target: str) -> str:
    """
    The request in the text of a refusal: C{{method}} C{{target}}, C{-} in
    place of either that is unknown, or a single C{-} when both are.
    """
    if not (method or target):
        return "-"
    return ("{method}" if method else "-") + " " + ("{target}" if target else "-")


@implementer(IForwardingObserver)
class AccessLogObserver:
    """
    The access log: one C{twisted.logger} event per refused request and per
    closed tunnel, with a stable C{event} field (C{request_refused},
    C{tunnel_close}) and every field of the record.  The text of each line
    names the client, then the user (C{-} for none), then the request; the
    fields are the same whatever the text says (C{method} and C{target} are
    C{""} when the request line was not read, C{user} C{None}).

    Requests with no response (C{shed}, C{abandoned}) are left out: the
    proxy logs those itself (C{connections_shed}, counted at most once a
    second; C{connect_abandoned}).  Connections are not logged.

    @ivar logOpens: Whether a tunnel that opens is logged (C{tunnel_open},
        at debug level, which C{--log-level debug} shows).
    @cvar debugShown: Whether the proxy's log keeps debug events: while
        C{--log-level} is above C{debug}, the level filter
        (L{LogLevelService <connectproxy._loglevel.LogLevelService>}) sets
        it false, and no C{tunnel_open} event is made, to be dropped.
    """

    _log = Logger(namespace="connectproxy.access")
    debugShown = True

    def __init__(self, logOpens: bool = True) -> None:
        self.logOpens = logOpens
        # The logger bound to this observer (the events' source), made once
        # rather than by the descriptor at every event.
        self._emit = self._log.emit

    def connectionOpened(self, event: ConnectionRecord) -> None:
        pass

    def connectionClosed(self, event: ConnectionRecord) -> None:
        pass

    def requestRefused(self, event: RefusedRequest) -> None:
        if not event.status:
            return
        fields = {
            "client": event.client,
            "method": event.method,
            "target": event.target,
            "status": event.status,
            "reason": event.reason,
            "user": event.user,
            "outcome": str(event.outcome),
        }
        text = (
            "refused {client} "
            + _userText(event.user)
            + " "
            + _requestText(event.method, event.target)
            + ": {status} {reason}"
        ).format_map(fields)
        self._emit(
            LogLevel.info,
            _PREFORMATTED,
            log_text=text,
            event="request_refused",
            **fields,
        )

    def tunnelOpened(self, event: TunnelRecord) -> None:
        if not (self.logOpens and self.debugShown):
            return
        self._log.debug(
            "tunnel opened {client} "
            + _userText(event.user)
            + " -> "
            + _destinationText(event.host)
            + " via {upstream}",
            event="tunnel_open",
            client=event.client,
            host=event.host,
            port=event.port,
            upstream=event.upstream,
            user=event.user,
            admitTime=event.admitTime,
            connectTime=event.connectTime,
            relay=event.relay,
        )

    def requestForwarded(self, event: ForwardedRequest) -> None:
        self._log.info(
            "forwarded {client} "
            + _userText(event.user)
            + " {method} {target}: {status} via {upstream}, "
            "{bytesUp} bytes up, {bytesDown} bytes down, {duration:.3f}s, "
            "{reason}",
            event="request_forwarded",
            client=event.client,
            method=event.method,
            target=event.target,
            host=event.host,
            port=event.port,
            status=event.status,
            upstream=event.upstream,
            parent=event.parent,
            bytesUp=event.bytesUp,
            bytesDown=event.bytesDown,
            duration=event.duration,
            reason=event.reason,
            user=event.user,
            outcome=str(event.outcome),
            reused=event.reused,
            admitTime=event.admitTime,
            connectTime=event.connectTime,
        )

    def tunnelClosed(self, event: TunnelRecord) -> None:
        fields = {
            "client": event.client,
            "host": event.host,
            "port": event.port,
            "upstream": event.upstream,
            "status": event.status,
            "bytesUp": event.bytesUp,
            "bytesDown": event.bytesDown,
            "duration": event.duration,
            "reason": event.reason,
            "user": event.user,
            "admitTime": event.admitTime,
            "connectTime": event.connectTime,
            "relay": event.relay,
        }
        text = (
            "tunnel closed {client} "
            + _userText(event.user)
            + " -> "
            + _destinationText(event.host)
            + " via {upstream}: "
            "{bytesUp} bytes up, {bytesDown} bytes down, {duration:.3f}s, "
            "{reason}"
        ).format_map(fields)
        self._emit(
            LogLevel.info, _PREFORMATTED, log_text=text, event="tunnel_close", **fields
        )


@implementer(IPlugin, IProxyObserverFactory)
class AccessLogObserverFactory:
    """
    The C{accesslog} observer plugin, the default C{--observer}: an
    L{AccessLogObserver}.
    """

    name = "accesslog"
    description = (
        "The access log: one event per refused request and per closed "
        "tunnel (the default; give it with other --observer options to keep it)."
    )

    def observerFromArgument(
        self, argument: str, context: ObserverContext
    ) -> IProxyObserver:
        """
        @return: The context's access log (the file of C{--access-log}),
            or an L{AccessLogObserver}.
        @raise ValueError: When given an argument: it takes none.
        """
        if argument:
            raise ValueError("accesslog takes no argument: --observer accesslog")
        if context.accessLog is not None:
            return context.accessLog
        return AccessLogObserver()


#: The methods of L{IProxyObserver} that version 1 of the plugin API did not
#: have.
_NEW_IN_VERSION_2 = ("connectionOpened", "connectionClosed")

#: The optional methods of L{IProxyObserver}, new in version 3: an observer
#: without them is not told of what they report, and not warned about.
_OPTIONAL = ("requestForwarded",)


@implementer(IForwardingObserver)
class ObserverFanOut:
    """
    Pass each report to several observers; one that raises is logged and
    does not stop the others or the proxy.

    An observer written for version 1 of the plugin API, without
    C{connectionOpened} and C{connectionClosed}, still gets the other
    reports, with a L{DeprecationWarning} when the fan-out is made.

    @ivar observers: The observers, in order.
    """

    _log = Logger()

    def __init__(
        self, observers: Iterable[IProxyObserver], stacklevel: int = 2
    ) -> None:
        """
        @param observers: The observers.
        @param stacklevel: Which caller a deprecation warning names (2: the
            caller of this constructor).
        """
        self.observers = list(observers)
        for observer in self.observers:
            missing = [m for m in _NEW_IN_VERSION_2 if not hasattr(observer, m)]
            if missing:
                warnings.warn(
                    f"{observer!r} lacks {' and '.join(missing)}: observers "
                    "written for plugin API version 1 were deprecated in "
                    f"{getVersionString(DEPRECATED_IN)}; please implement "
                    "every method of connectproxy.interfaces.IProxyObserver",
                    DeprecationWarning,
                    stacklevel=stacklevel,
                )

    def _notify(self, method: str, event: object) -> None:
        for observer in self.observers:
            try:
                report = getattr(observer, method, None)
                if report is None:
                    if method in _NEW_IN_VERSION_2 or method in _OPTIONAL:
                        # A version 1 observer (warned about above).
                        continue
                    report = getattr(observer, method)
                report(event)
            except Exception:
                self._log.failure(
                    "observer {observer!r} failed in {method}",
                    observer=observer,
                    method=method,
                    event="observer_error",
                )

    def connectionOpened(self, event: ConnectionRecord) -> None:
        self._notify("connectionOpened", event)

    def connectionClosed(self, event: ConnectionRecord) -> None:
        self._notify("connectionClosed", event)

    def requestRefused(self, event: RefusedRequest) -> None:
        self._notify("requestRefused", event)

    def tunnelOpened(self, event: TunnelRecord) -> None:
        self._notify("tunnelOpened", event)

    def tunnelClosed(self, event: TunnelRecord) -> None:
        self._notify("tunnelClosed", event)

    def requestForwarded(self, event: ForwardedRequest) -> None:
        self._notify("requestForwarded", event)
