# -*- test-case-name: tests.test_errors -*-
"""
Every way a request can be refused, in one place.

The exceptions that carry their own answer derive from L{RefusalError}:
the proxy answers the client with their C{status} and C{reason}.  The
others are mapped to a status where they are caught:

    exception                 raised by                     status
    ------------------------  ----------------------------  ------------------
    L{BadRequest}             the request-head parser       its own (400, 414,
                                                            431, 501, 505)
    L{Refused}                the access checks             its own
    L{ForbiddenDestination}   an upstream connector         403
    L{ParentProxyError}       a parent-proxy connector      its own (403, 502,
                                                            503, 504)
    L{ResolverBusy}           the resolver pool, cancelled  503
                              while waiting for a thread
    L{LookupAbandoned}        the resolver pool, cancelled  504
                              while a lookup runs
    L{CheckerBusy}            the htpasswd checker          503
    L{InvalidCredentials}     the Basic credentials parser  407

L{Refusal} is not an exception but the record an access policy answers
with; the access checks turn it into a L{Refused}.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from twisted.internet.defer import CancelledError

__all__ = [
    "BadRequest",
    "CheckerBusy",
    "ForbiddenDestination",
    "InvalidCredentials",
    "LookupAbandoned",
    "ParentProxyError",
    "Refusal",
    "RefusalError",
    "Refused",
    "ResolverBusy",
]


class RefusalError(Exception):
    """
    A request cannot go on, and the proxy answers it with C{status} and
    C{reason}.

    @ivar status: The HTTP status to answer with (RFC 9110 section 15).
    @ivar reason: A short sentence for the client and the log, free of
        secrets.
    """

    status: int = 500
    reason: str = ""


class BadRequest(RefusalError):
    """
    The request head cannot be accepted.

    @ivar status: The HTTP status code to answer with (400, 414, 431, 501,
        505).
    @ivar reason: A short explanation, safe to show the client.
    @ivar method: The request method, when the request line could be split
        into a method, a target and a version, and the method is a token;
        else C{""}.  The parser fills it in.
    @ivar target: The request-target then, when it is printable ASCII;
        else C{""}.
    """

    def __init__(
        self, status: int, reason: str, method: str = "", target: str = ""
    ) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.method = method
        self.target = target

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"


class Refused(RefusalError):
    """
    The access checks refuse the request.

    @ivar status: The status to answer with.
    @ivar reason: The short reason.
    @ivar headers: Extra header fields for the response.
    @ivar keepAlive: Whether the client may retry on the same connection
        (a 407 challenge).
    @ivar user: The authenticated user refused, if any.
    @ivar outcome: What the observers are told came of the request (a
        L{connectproxy.Outcome} value), or C{""} for the usual outcome of
        C{status}.
    """

    def __init__(
        self,
        status: int,
        reason: str,
        headers: Sequence[tuple[str, str]] = (),
        keepAlive: bool = False,
        user: str | None = None,
        outcome: str = "",
    ) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.headers = headers
        self.keepAlive = keepAlive
        self.user = user
        self.outcome = outcome


class ForbiddenDestination(RefusalError):
    """
    The destination network rules allow none of the target's addresses.
    Any upstream connector may raise it; the proxy answers 403 with
    C{reason}.
    """

    status = 403

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ParentProxyError(RefusalError):
    """
    A parent proxy did not open the tunnel: it could not be reached, it
    refused or answered with an error, its TLS certificate did not verify,
    or its answer was not valid HTTP.  Any upstream connector may raise it;
    the proxy answers the client with C{status} and C{reason}.

    @ivar status: The status for the client, 400-599: the parent's own 403,
        502, 503 or 504, and 502 for everything else.
    @ivar reason: A short sentence for the client and the log, which never
        names the parent's address or credentials.
    @ivar parent: The parent, as C{scheme://host:port} (never with its
        credentials), or C{""}; for the log.
    @ivar detail: What exactly went wrong, for the log (the parent's status
        line, the TLS error), or C{""}.
    """

    def __init__(
        self, status: int, reason: str, parent: str = "", detail: str = ""
    ) -> None:
        """
        @raise ValueError: When C{status} is not 400-599.
        """
        if not 400 <= status <= 599:
            raise ValueError(
                f"a parent proxy error needs a 4xx or 5xx status, not {status}"
            )
        super().__init__(status, reason, parent, detail)
        self.status = status
        self.reason = reason
        self.parent = parent
        self.detail = detail

    def __str__(self) -> str:
        """
        The reason with the parent and the detail, for the log.
        """
        text = self.reason
        if self.parent:
            text += f" ({self.parent})"
        if self.detail:
            text += f": {self.detail}"
        return text


class ResolverBusy(CancelledError, RefusalError):
    """
    A lookup was cancelled while it waited for a resolver thread.  The
    proxy answers 503 with L{reason}, which names the option to raise.

    @ivar reason: A short sentence for the client and the log.
    """

    status = 503

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LookupAbandoned(CancelledError):
    """
    A lookup was cancelled while it ran (the proxy answers 504 when its
    deadline passed).  Its thread stays busy until C{getaddrinfo} returns.
    """


class CheckerBusy(RefusalError):
    """
    Too many password checks are queued to take another one now.  This is
    not a failed login: the client is asked to retry (503).
    """

    status = 503

    def __init__(self, reason: str = "too many logins are being checked") -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidCredentials(Exception):
    """
    A C{Proxy-Authorization} header value is not well-formed Basic
    credentials; the client is challenged again (407).

    @ivar reason: A short phrase for the log, free of any secret.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Refusal:
    """
    A policy's refusal.

    @ivar status: The HTTP status to answer with, 400-599 (usually 403).
    @ivar reason: A short sentence for the client and the log.
    """

    status: int
    reason: str

    def __post_init__(self) -> None:
        if not 400 <= self.status <= 599:
            raise ValueError(f"a refusal needs a 4xx or 5xx status, not {self.status}")
