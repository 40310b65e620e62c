# -*- test-case-name: tests.test_forwardframing -*-
"""
The messages of plain absolute-form forwarding, without I/O: how a request
announces its body (L{requestFraming}, the smuggling checks of RFC 9112
section 6), and how a request head and a response head are rewritten on
their way through the proxy (RFC 9110 section 7.6: hop-by-hop fields,
C{Via}, C{Host}, C{Max-Forwards}).

The bodies themselves are framed by C{h11} (see L{connectproxy._exchange});
what is checked here is what C{h11} accepts but a proxy must refuse.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ._errors import BadRequest
from ._parser import RequestHead
from ._target import HTTP_PORT, Target

__all__ = [
    "HOP_BY_HOP",
    "VIA",
    "Framing",
    "connectionTokens",
    "hasBody",
    "localAnswer",
    "requestFraming",
    "requestHeaders",
    "responseHeaders",
    "traceBody",
    "wantsUpgrade",
]

#: The pseudonym this proxy gives itself in C{Via} (RFC 9110 section 7.6.3).
VIA = "connectproxy"

#: Fields that concern one connection only, never forwarded (RFC 9110
#: section 7.6.1), besides those named in C{Connection}.  C{Proxy-
#: Authorization} and C{Proxy-Authenticate} are the proxy's own (RFC 9110
#: sections 11.7.1 and 11.7.2); C{Transfer-Encoding} and C{Content-Length}
#: are re-framed (the body is framed again on the next hop).
HOP_BY_HOP = frozenset(
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
    ]
)

#: Fields never echoed in the body of a TRACE the proxy answers itself
#: (RFC 9110 section 9.3.8: credentials and cookies).
_SENSITIVE = frozenset(["proxy-authorization", "authorization", "cookie"])


@dataclass(frozen=True, slots=True)
class Framing:
    """
    How a request's body is delimited (RFC 9112 section 6.3).

    @ivar chunked: Whether it is chunked.
    @ivar length: Its length when it has a C{Content-Length}, else C{None}
        (chunked, or no body at all).
    """

    chunked: bool = False
    length: int | None = None

    @property
    def empty(self) -> bool:
        """
        Whether the request certainly has no body.
        """
        return not self.chunked and not self.length

    def fields(self) -> list[tuple[str, str]]:
        """
        The framing fields to send with the request on the next hop.
        """
        if self.chunked:
            return [("Transfer-Encoding", "chunked")]
        if self.length is not None:
            return [("Content-Length", str(self.length))]
        return []


def _values(headers: Iterable[tuple[str, str]], name: str) -> list[str]:
    """
    The comma-separated elements of every field called C{name}, stripped,
    empty ones left out (RFC 9110 section 5.6.1).
    """
    found: list[str] = []
    for key, value in headers:
        if key.lower() == name:
            found.extend(v.strip() for v in value.split(",") if v.strip())
    return found


def requestFraming(request: RequestHead) -> Framing:
    """
    Check how a request to forward announces its body, and say how it is
    delimited.  These are the requests a proxy must not forward, because
    the next hop may read their body differently (request smuggling, RFC
    9112 sections 6.1 and 6.3): each is answered 400 and the connection
    closed.

    @param request: The request head.
    @return: The framing.
    @raise BadRequest: (400) for both C{Content-Length} and
        C{Transfer-Encoding}; C{Transfer-Encoding} in an HTTP/1.0 request;
        a C{Transfer-Encoding} other than exactly C{chunked}; several
        C{Content-Length} values that differ, or one that is not a number.
    """
    headers = request.headers
    encodings = _values(headers, "transfer-encoding")
    hasEncoding = any(name == "transfer-encoding" for name, _ in headers)
    lengthFields = [value for name, value in headers if name == "content-length"]
    if hasEncoding and lengthFields:
        raise BadRequest(
            400, "a request must not have both Content-Length and Transfer-Encoding"
        )
    if hasEncoding:
        if request.version < (1, 1):
            raise BadRequest(400, "Transfer-Encoding is not allowed in HTTP/1.0")
        if [e.lower() for e in encodings] != ["chunked"]:
            raise BadRequest(
                400, "the only Transfer-Encoding this proxy forwards is chunked"
            )
        return Framing(chunked=True)
    if not lengthFields:
        return Framing()
    lengths = {v.strip() for value in lengthFields for v in value.split(",")}
    if not all(v.isascii() and v.isdigit() for v in lengths):
        raise BadRequest(400, "invalid Content-Length")
    if len({int(v) for v in lengths}) != 1:
        raise BadRequest(400, "several different Content-Length values")
    return Framing(length=int(lengths.pop()))


def hasBody(request: RequestHead) -> bool:
    """
    Whether a request announces a body (a C{Transfer-Encoding} or a
    C{Content-Length} other than 0), however valid.
    """
    for name, value in request.headers:
        if name == "transfer-encoding":
            return True
        if name == "content-length" and value.strip() != "0":
            return True
    return False


def connectionTokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    """
    The lower-cased options of every C{Connection} field (RFC 9110 section
    7.6.1).
    """
    return {value.lower() for value in _values(headers, "connection")}


def wantsUpgrade(request: RequestHead) -> bool:
    """
    Whether a request asks to switch protocols (RFC 9110 section 7.8):
    C{Upgrade} with C{upgrade} among its C{Connection} options.
    """
    return "upgrade" in connectionTokens(request.headers) and bool(
        _values(request.headers, "upgrade")
    )


def _endToEnd(
    headers: Iterable[tuple[str, str]], keep: frozenset[str] = frozenset()
) -> list[tuple[str, str]]:
    """
    The fields of C{headers} that go on to the next hop: without the
    hop-by-hop ones and those the C{Connection} fields name, nor
    C{Content-Length} (the body is framed again), except those in C{keep}.
    """
    headers = list(headers)
    dropped = (HOP_BY_HOP | connectionTokens(headers) | {"content-length"}) - keep
    return [(name, value) for name, value in headers if name.lower() not in dropped]


def hostField(target: Target) -> str:
    """
    The C{Host} field of a request for C{target}: its authority, without
    the port when it is the default (RFC 9112 section 3.2.2).
    """
    host = f"[{target.host}]" if ":" in target.host else target.host
    return host if target.port == HTTP_PORT else f"{host}:{target.port}"


def requestHeaders(
    request: RequestHead,
    framing: Framing,
    upgrade: bool = False,
    maxForwards: int | None = None,
) -> list[tuple[str, str]]:
    """
    The header fields of a request on its way to the origin (or a parent):
    C{Host} first, replaced by the target's authority; the end-to-end
    fields in their order; C{Max-Forwards} decremented; C{Via} with this
    proxy appended; the framing of the body.

    @param request: The request head, with its destination.
    @param framing: How its body is delimited (L{requestFraming}).
    @param upgrade: Whether to keep C{Upgrade} and C{Connection: upgrade}
        (a protocol switch, RFC 9110 section 7.8).
    @param maxForwards: The C{Max-Forwards} value to send instead of the
        request's, or C{None} to leave it as it is.
    @return: C{(name, value)} pairs.
    """
    destination = request.destination
    assert destination is not None
    keep = frozenset(["upgrade"]) if upgrade else frozenset()
    fields = [("Host", hostField(destination))]
    for name, value in _endToEnd(request.headers, keep):
        if name == "host" or (name == "max-forwards" and maxForwards is not None):
            continue
        fields.append((name, value))
    if maxForwards is not None:
        fields.append(("Max-Forwards", str(maxForwards)))
    # The version the request was received with (RFC 9110 section 7.6.3).
    fields.append(("Via", _via(request.version)))
    if upgrade:
        fields.append(("Connection", "upgrade"))
    fields.extend(framing.fields())
    return fields


def _via(version: tuple[int, int]) -> str:
    """
    This proxy's C{Via} entry for a message received with C{version}.
    """
    return f"{version[0]}.{version[1]} {VIA}"


def responseHeaders(
    headers: Sequence[tuple[str, str]],
    version: tuple[int, int],
    upgrade: bool = False,
    status: int = 200,
) -> list[tuple[str, str]]:
    """
    The header fields of a response on its way back to the client: the
    end-to-end ones, C{Content-Length} kept (the client's framing follows
    it), and C{Via} with this proxy appended.

    @param headers: The response's fields, as received.
    @param version: The protocol version the response was received with
        (its status line's): the one C{Via} names (RFC 9110 section
        7.6.3), whatever version it goes on with to the client.
    @param upgrade: Whether it switches protocols (a C{101}): C{Upgrade}
        and C{Connection: upgrade} are kept.
    @param status: Its status: a C{1xx} or C{204} loses its
        C{Content-Length}, which it must not have (RFC 9110 section 8.6); a
        C{304} keeps it (it describes the selected representation).
    """
    keep = (
        frozenset() if status < 200 or status == 204 else frozenset(["content-length"])
    )
    if upgrade:
        keep |= {"upgrade"}
    fields = _endToEnd(headers, keep)
    fields.append(("Via", _via(version)))
    if upgrade:
        fields.append(("Connection", "upgrade"))
    return fields


def maxForwards(request: RequestHead) -> int | None:
    """
    The C{Max-Forwards} of a TRACE or OPTIONS request (RFC 9110 section
    7.6.2), or C{None} for other methods and when there is none (or it is
    not a number, which is then ignored).

    @raise BadRequest: (400) When the request has several values (in one
        field or several): which one counts is ambiguous.
    """
    if request.method not in ("TRACE", "OPTIONS"):
        return None
    values = _values(request.headers, "max-forwards")
    if len(values) > 1:
        raise BadRequest(400, "several Max-Forwards values")
    if not values:
        return None
    value = values[0]
    if not value.isascii() or not value.isdigit():
        return None
    return int(value)


def localAnswer(request: RequestHead, methods: Sequence[str], keepAlive: bool) -> bytes:
    """
    The proxy's own answer to a TRACE or OPTIONS whose C{Max-Forwards} is
    0 (RFC 9110 section 7.6.2): TRACE gets the request head back
    (L{traceBody}), OPTIONS the methods served in C{Allow}.

    @param request: The request head.
    @param methods: The methods served.
    @param keepAlive: Whether the connection stays open after it.
    @return: The whole response.
    """
    if request.method == "TRACE":
        body = traceBody(request)
        fields = [("Content-Type", "message/http")]
    else:
        body = b""
        fields = [("Allow", ", ".join(methods))]
    fields.append(("Content-Length", str(len(body))))
    if not keepAlive:
        fields.append(("Connection", "close"))
    head = "HTTP/1.1 200 OK\r\n" + "".join(f"{n}: {v}\r\n" for n, v in fields)
    return head.encode("ascii") + b"\r\n" + body


def traceBody(request: RequestHead) -> bytes:
    """
    The body of the answer to a TRACE the proxy answers itself: the
    request head as received (C{message/http}, RFC 9110 section 9.3.8),
    without its credentials and cookies.
    """
    version = f"HTTP/{request.version[0]}.{request.version[1]}"
    lines = [f"{request.method} {request.target} {version}"]
    lines.extend(
        f"{name}: {value}" for name, value in request.headers if name not in _SENSITIVE
    )
    return ("\r\n".join(lines) + "\r\n\r\n").encode("iso-8859-1")
