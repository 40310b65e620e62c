# -*- test-case-name: tests.test_observer -*-
"""
The records of what the proxy reports about each connection, request and
tunnel (L{ConnectionRecord}, L{RefusedRequest}, L{TunnelRecord},
L{ForwardedRequest}), and the bounded L{Outcome} of each request.  The
observers that receive them are in L{connectproxy._observer}.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from zope.interface import implementer

from .interfaces import IExchangeRecord

__all__ = [
    "ConnectionRecord",
    "ForwardedRequest",
    "Outcome",
    "RefusedRequest",
    "TunnelRecord",
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
