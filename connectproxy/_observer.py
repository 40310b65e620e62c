# -*- test-case-name: tests.test_observer -*-
"""
What the proxy reports about each connection, request and tunnel: the
records and their outcomes, the fan-out to several observers, and the access
log that turns refusals and tunnels into one structured log event each.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from twisted.logger import Logger, LogLevel
from twisted.plugin import IPlugin
from twisted.python.versions import getVersionString
from zope.interface import implementer

from ._address import formatAddress
from ._deprecation import DEPRECATED_IN
from .interfaces import (
    IExchangeRecord,
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


class Outcome(StrEnum):
    """
    What came of a request, in a small fixed set: the C{outcome} of every
    L{RefusedRequest}, and of every L{TunnelRecord} (always C{"ok"}).

    The members are strings (C{Outcome.DENIED == "denied"}), so they can be
    used as they are as metric labels and in logs.  L{requestResult} maps
    each to the result of a request in the proxy's request metrics.
    """

    #: The tunnel was established (the 200 was sent).
    OK = "ok"
    #: The request head was malformed, too large, of a method not served,
    #: or named an invalid target, or a forwarded request's body was framed
    #: ambiguously or malformed (400, 405, 414, 431, 501, 505).
    BAD_REQUEST = "bad_request"
    #: Authentication is required and the request had no credentials (407).
    AUTH_REQUIRED = "auth_required"
    #: The request's credentials were wrong or malformed (407).
    AUTH_FAILED = "auth_failed"
    #: The client, port, host, destination address or a policy refused it,
    #: or the client failed to log in too often (403, 429).
    DENIED = "denied"
    #: The upstream connect failed: name not resolved, connection refused
    #: or unreachable (502).
    UPSTREAM_FAILED = "upstream_failed"
    #: A deadline passed: the request head (408), the access checks (503)
    #: or the upstream connect (504).
    TIMEOUT = "timeout"
    #: A limit was reached, or the proxy is shutting down (503).
    OVERLOADED = "overloaded"
    #: A bug in the proxy, a policy, a checker or a connector (500, or 502
    #: for a connector that failed unexpectedly).
    ERROR = "error"
    #: The connection was closed at once, far over C{--max-connections},
    #: before any request was read; no response was sent (status 0).
    SHED = "shed"
    #: The client went away while its request was being checked or
    #: connected; no response was sent (status 0).
    ABANDONED = "abandoned"

    @property
    def requestResult(self) -> str | None:
        """
        The result of the request this outcome ends, as the proxy's request
        metrics count it: the outcome itself, except that C{auth_failed}
        counts as C{auth_required} (both are 407 challenges), and C{shed}
        and C{abandoned} are not answered requests (C{None}).
        """
        if self is Outcome.AUTH_FAILED:
            return Outcome.AUTH_REQUIRED.value
        if self is Outcome.SHED or self is Outcome.ABANDONED:
            return None
        return self.value


_OUTCOME_BY_STATUS = {
    403: Outcome.DENIED,
    407: Outcome.AUTH_REQUIRED,
    408: Outcome.TIMEOUT,
    429: Outcome.DENIED,
    451: Outcome.DENIED,
    500: Outcome.ERROR,
    501: Outcome.BAD_REQUEST,
    502: Outcome.UPSTREAM_FAILED,
    503: Outcome.OVERLOADED,
    504: Outcome.TIMEOUT,
    505: Outcome.BAD_REQUEST,
}


def outcomeForStatus(status: int) -> Outcome:
    """
    The usual outcome of a refusal with C{status}, for refusals that do not
    say (a policy's, for instance): 403, 429 and 451 are C{"denied"},
    407 C{"auth_required"}, 408 and 504 C{"timeout"}, 502
    C{"upstream_failed"}, 503 C{"overloaded"}, other 4xx (and
    501, 505) C{"bad_request"}, anything else C{"error"}.

    @param status: An HTTP status code.
    """
    outcome = _OUTCOME_BY_STATUS.get(status)
    if outcome is not None:
        return outcome
    if 400 <= status < 500:
        return Outcome.BAD_REQUEST
    return Outcome.ERROR


@implementer(IExchangeRecord)
@dataclass(frozen=True, slots=True)
class RefusedRequest:
    """
    A request that did not become a tunnel: answered with an error, or (as
    C{status} 0) not answered at all because the client went away or the
    connection was shed.

    @ivar client: The client's address.
    @ivar method: The request method, or C{""} when the head was unreadable.
    @ivar target: The request-target as sent, or C{""}.
    @ivar status: The status sent, or 0 when none was sent.
    @ivar reason: The short reason sent (or, with status 0, why none was).
    @ivar user: The authenticated user name, if any.
    @ivar outcome: What came of the request, an L{Outcome}; when not given,
        the usual one for C{status} (L{outcomeForStatus}).
    @raise ValueError: For an C{outcome} that is not an L{Outcome}.
    """

    client: str
    method: str
    target: str
    status: int
    reason: str
    user: str | None = None
    outcome: str = ""

    def __post_init__(self) -> None:
        outcome = (
            Outcome(self.outcome) if self.outcome else outcomeForStatus(self.status)
        )
        object.__setattr__(self, "outcome", outcome)


@implementer(IExchangeRecord)
@dataclass(frozen=True, slots=True)
class TunnelRecord:
    """
    A tunnel, when it opens (byte counts zero, C{reason} C{None}) and when it
    closes.

    Times are measured with the proxy's clock, in seconds.

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
    @ivar method: Always C{"CONNECT"}.
    @ivar target: The request-target as sent; C{host:port} when not given.
    @ivar admitTime: Seconds from the complete request head to the end of
        the access checks (authentication, rules, policies).
    @ivar connectTime: Seconds from the end of the access checks to the
        upstream connection (name resolution and every attempt included).
    @ivar relay: How the tunnel moved its bytes (C{--relay}):
        C{"transport"} or C{"splice"}.
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
    method: str = "CONNECT"
    target: str = ""
    admitTime: float = 0.0
    connectTime: float = 0.0
    relay: str = "transport"

    def __post_init__(self) -> None:
        if not self.target:
            host = f"[{self.host}]" if ":" in self.host else self.host
            object.__setattr__(self, "target", f"{host}:{self.port}")

    @property
    def outcome(self) -> Outcome:
        """
        Always C{Outcome.OK}: the tunnel was established.
        """
        return Outcome.OK


@implementer(IExchangeRecord)
@dataclass(frozen=True, slots=True)
class ForwardedRequest:
    """
    A plain HTTP request the proxy forwarded (an absolute-form C{http://}
    request), once its exchange is over: the response relayed whole, or
    the exchange cut short.

    Times are measured with the proxy's clock, in seconds.

    @ivar client: The client's address.
    @ivar method: The request method.
    @ivar target: The request's URL, without its query string unless
        C{--log-query} is given.
    @ivar host: The target host, normalised.
    @ivar port: The target port.
    @ivar upstream: The address the request went to (the origin, or a
        parent proxy); C{""} when none was reached.
    @ivar status: The response's status as relayed to the client, or 0 when
        no response head reached the client.
    @ivar bytesUp: Bytes sent upstream: the request head and its body (as
        framed on that leg).
    @ivar bytesDown: Bytes written to the client: the response heads and
        its body (as framed on that leg).
    @ivar duration: Seconds from the complete request head to the end of
        the exchange.
    @ivar reason: How the exchange ended (C{"complete"}, or what cut it
        short).
    @ivar user: The authenticated user name, if any.
    @ivar outcome: C{"ok"} for a response relayed whole, else what cut it
        short (C{"abandoned"}, C{"upstream_failed"}, C{"timeout"},
        C{"bad_request"}, C{"error"}).
    @ivar parent: The parent proxy the request went through, or C{None}.
    @ivar admitTime: Seconds from the complete request head to the end of
        the access checks.
    @ivar connectTime: Seconds from the end of the access checks to the
        upstream connection (0 for a pooled one).
    @ivar reused: Whether the upstream connection was an idle pooled one.
    """

    client: str
    method: str
    target: str
    host: str
    port: int
    upstream: str
    status: int
    bytesUp: int = 0
    bytesDown: int = 0
    duration: float = 0.0
    reason: str = "complete"
    user: str | None = None
    outcome: str = Outcome.OK.value
    parent: str | None = None
    admitTime: float = 0.0
    connectTime: float = 0.0
    reused: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "outcome", Outcome(self.outcome))


@dataclass(frozen=True, slots=True)
class ConnectionRecord:
    """
    A client connection, when it opens (C{duration} and C{requests} zero)
    and when it is gone.  Every connection the proxy accepts has one, those
    refused over a limit or shed included; behind a PROXY-protocol listener,
    from the moment the header names the client.

    @ivar client: The client's address.
    @ivar duration: Seconds from the connection to its end (with its
        tunnel, if it had one: the record of a closed connection comes after
        that of its closed tunnel), by the proxy's clock.
    @ivar requests: How many request heads were read on it.
    """

    client: str
    duration: float = 0.0
    requests: int = 0


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
