# -*- test-case-name: tests.test_target -*-
"""
Where a request goes: the L{Target} of a request head, parsed from its
request-target.

Two forms of request-target name a host and a port (RFC 9112 section 3.2):
the authority form of a CONNECT (C{host:port}, section 3.2.3) and the
absolute form a client sends a forward proxy for any other method
(C{http://host[:port]/path?query}, section 3.2.2).  Both share one strict
host syntax (RFC 3986 section 3.2.2): a DNS-style name, a dotted-quad IPv4
address, or an IPv6 address in brackets without a zone.  Nothing here
resolves a name or touches the network.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum

from ._errors import BadRequest
from ._networks import parseAddress

__all__ = ["Target", "TargetForm", "loggedTarget", "parseAuthority"]

# A DNS-style host name label: letters, digits, hyphen and underscore.
_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\Z")
_PORT = re.compile(r"[0-9]{1,5}\Z")
# A number as inet_aton reads one: decimal, octal or hexadecimal.
_NUMBER = re.compile(r"(0[xX][0-9A-Fa-f]*|[0-9]+)\Z")
# A request-target: visible ASCII only (RFC 9112 section 3.2).
_VISIBLE = re.compile(r"[\x21-\x7e]+\Z")
# The scheme of an absolute-form target, and what separates it from the
# authority (RFC 3986 section 3).
_HTTP = re.compile(r"http://", re.IGNORECASE)
_HTTPS = re.compile(r"https://", re.IGNORECASE)

#: The port of an C{http} URI that names none (RFC 9110 section 4.2.1).
HTTP_PORT = 80


class TargetForm(StrEnum):
    """
    The form of a request-target that names a host and a port (RFC 9112
    section 3.2).  The members are strings (C{TargetForm.AUTHORITY ==
    "authority"}).
    """

    #: C{host:port}: the target of a CONNECT (RFC 9112 section 3.2.3).
    AUTHORITY = "authority"
    #: C{http://host[:port]/path}: what a client sends a forward proxy for
    #: any other method (RFC 9112 section 3.2.2).
    ABSOLUTE = "absolute"


@dataclass(frozen=True, slots=True)
class Target:
    """
    The host and port a request is for, from its request-target.

    @ivar host: A lower-cased name without one trailing dot, a dotted-quad
        IPv4 address, or an IPv6 address without brackets.  The name is as
        the client wrote it (its IDNA form is the access checks' business).
    @ivar port: The port, 1-65535 (80 when an absolute-form target names
        none).
    @ivar form: Which form of request-target it came from.
    @ivar path: For the absolute form, the path and query to ask the origin
        for (the origin form of RFC 9112 section 3.2.1: C{"/"} when the URI
        has no path); C{""} for the authority form.
    """

    host: str
    port: int
    form: TargetForm
    path: str = ""

    @property
    def authority(self) -> str:
        """
        The host and port as C{host:port}, an IPv6 address in brackets: the
        authority form of this target.
        """
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @classmethod
    def fromAuthorityForm(cls, text: str) -> Target:
        """
        Parse the authority form of a request-target (a CONNECT's, RFC 9110
        section 9.3.6): C{host:port}, the port required.

        @param text: The request-target as sent.
        @return: A target of form C{TargetForm.AUTHORITY}.
        @raise BadRequest: (400) When it is not a valid C{host:port}.
        """
        host, port = parseAuthority(text)
        return cls(host, port, TargetForm.AUTHORITY)

    @classmethod
    def fromAbsoluteForm(cls, text: str) -> Target:
        """
        Parse the absolute form of a request-target (RFC 9112 section
        3.2.2): an C{http} URI with a host, an optional port (80 when absent
        or empty, RFC 3986 section 3.2.3), and a path and query.  The host
        follows the same strict rules as a CONNECT's; user information and
        fragments are refused (RFC 9110 section 4.2.4, RFC 9112 section 3.2).

        @param text: The request-target as sent.
        @return: A target of form C{TargetForm.ABSOLUTE}.
        @raise BadRequest: (400) When it is not such a URI.
        """
        if not _VISIBLE.match(text):
            raise BadRequest(400, "malformed request target")
        if text.startswith("/") or text == "*":
            raise BadRequest(
                400,
                "this is a proxy: send the full URL (http://host/path), "
                "or CONNECT for a tunnel",
            )
        if _HTTPS.match(text):
            raise BadRequest(400, "use CONNECT for https:// URLs")
        if not _HTTP.match(text):
            raise BadRequest(400, "absolute-form target must be an http:// URI")
        rest = text[len("http://") :]
        if "#" in rest:
            raise BadRequest(400, "fragments are not allowed in target")
        end = len(rest)
        for delimiter in "/?":
            index = rest.find(delimiter)
            if index != -1:
                end = min(end, index)
        authority, path = rest[:end], rest[end:]
        if "@" in authority:
            raise BadRequest(400, "user information is not allowed in target")
        host, port = _splitHostPort(authority, TargetForm.ABSOLUTE)
        if not path.startswith("/"):
            path = "/" + path
        return cls(host, port, TargetForm.ABSOLUTE, path)


def parseAuthority(authority: str) -> tuple[str, int]:
    """
    Parse the authority form of a CONNECT request-target (C{host:port}).

    @param authority: The request-target.
    @return: The host (lower-cased name, IPv4 address, or IPv6 address without
        brackets) and the port.
    @raise BadRequest: (400) when it is not a valid C{host:port}.
    """
    return _splitHostPort(authority, TargetForm.AUTHORITY)


def _splitHostPort(authority: str, form: TargetForm) -> tuple[str, int]:
    """
    Split and check C{host[:port]}: the port is required in the authority
    form, and 80 when absent or empty in the absolute form.

    @raise BadRequest: (400) When the host or the port is not valid.
    """
    required = form is TargetForm.AUTHORITY
    portText: str | None
    if authority.startswith("["):
        end = authority.find("]")
        if end == -1:
            raise BadRequest(400, "unterminated IPv6 literal in target")
        literal = authority[1:end]
        rest = authority[end + 1 :]
        try:
            host = str(ipaddress.IPv6Address(literal))
        except ValueError:
            raise BadRequest(400, "invalid IPv6 literal in target") from None
        if "%" in literal:
            raise BadRequest(400, "zone identifiers are not allowed in target")
        if rest.startswith(":"):
            portText = rest[1:]
        elif required:
            raise BadRequest(400, "CONNECT target needs a port")
        elif rest:
            raise BadRequest(400, "invalid IPv6 literal in target")
        else:
            portText = None
    else:
        name, sep, portText = authority.rpartition(":")
        if not sep:
            if required:
                raise BadRequest(400, "CONNECT target needs a port")
            name, portText = authority, None
        host = _checkHostName(name, form)
    if not required and not portText:
        return host, HTTP_PORT
    return host, _checkPort(portText or "")


def _checkHostName(host: str, form: TargetForm = TargetForm.AUTHORITY) -> str:
    """
    Validate a reg-name or IPv4 address from an authority.

    @return: The host, lower-cased, without one trailing dot.
    @raise BadRequest: When it is empty or not a plausible host name.
    """
    if not host:
        if form is TargetForm.AUTHORITY:
            raise BadRequest(400, "CONNECT target needs a host")
        raise BadRequest(400, "absolute-form target needs a host")
    if "@" in host:
        raise BadRequest(400, "user information is not allowed in target")
    if ":" in host:
        raise BadRequest(400, "IPv6 addresses must be in brackets")
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise BadRequest(400, "invalid host name in target")
    if labels[-1].isdigit() or all(_NUMBER.match(label) for label in labels):
        # Names made of numbers are IPv4 addresses or nothing: resolvers
        # read "1234", "010.1.1.1" or "0x7f.1" as addresses (inet_aton),
        # which rules written for dotted quads would not see.
        try:
            parseAddress(name)  # No colon here: an IPv4 address or nothing.
        except ValueError:
            raise BadRequest(400, "invalid IPv4 address in target") from None
    return name.lower()


def _checkPort(portText: str) -> int:
    """
    Validate the port of a target (RFC 9110 section 9.3.6).

    @raise BadRequest: When it is empty, not a number, zero or above 65535.
    """
    if not portText:
        raise BadRequest(400, "CONNECT target needs a port")
    if not _PORT.match(portText):
        raise BadRequest(400, "invalid port in target")
    port = int(portText)
    if not 0 < port < 65536:
        raise BadRequest(400, "port out of range in target")
    return port


def loggedTarget(target: str, logQuery: bool = False) -> str:
    """
    A request-target as a log or an observer record may show it: never
    with user information (C{user:password@} before a host, RFC 3986
    section 3.2.1), and without its query and fragment unless
    C{logQuery} (they often carry tokens).  Any text is accepted (the
    target of a refused request may be malformed).

    @param target: The request-target as received.
    @param logQuery: Whether to keep the query (C{--log-query}).
    @return: The target to log.
    """
    scheme, separator, rest = target.partition("://")
    if not separator:
        scheme, rest = "", target
    if not rest.startswith("/"):
        # An authority (absolute or authority form) first: it ends at the
        # first of "/", "?" or "#".
        end = len(rest)
        for delimiter in "/?#":
            index = rest.find(delimiter)
            if index != -1:
                end = min(end, index)
        at = rest.rfind("@", 0, end)
        if at != -1:
            rest = rest[at + 1 :]
    if not logQuery:
        for delimiter in "?#":
            rest = rest.partition(delimiter)[0]
    return scheme + separator + rest
