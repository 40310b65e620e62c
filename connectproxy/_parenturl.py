# -*- test-case-name: tests.test_parenturl -*-
"""
Where a parent proxy is and how to talk to it: L{ParentProxy}, parsed from
the URL of C{--upstream-proxy} and C{--upstream-route}, the C{CONNECT}
request the proxy sends it (L{connectHead}), and the certificates that
C{--upstream-ca} names (L{loadTrustRoot}).

Credentials come from the URL's user information, percent-decoded; no
message, C{repr} or log line here ever shows them.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from OpenSSL.crypto import Error as OpenSSLError
from twisted.internet.ssl import Certificate, trustRootFromCertificates

from ._hostnames import normalizeHost

__all__ = ["ParentProxy", "connectHead", "formatAuthority", "loadTrustRoot"]

_SCHEMES = ("http", "https")
# Percent signs that do not start a %XX escape.
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Controls are not allowed in a user-id or password (RFC 7617 section 2).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.S
)


def formatAuthority(host: str, port: int) -> str:
    """
    C{host:port}, an IPv6 address in brackets (RFC 9112 section 3.2.3).
    """
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class ParentProxy:
    """
    A parent proxy: where it listens, whether it speaks TLS, and the Basic
    credentials to give it.

    @ivar scheme: C{"http"}, or C{"https"} for TLS to the parent.
    @ivar host: Its host name (lower-cased, IDNA A-labels) or IP address
        (IPv6 without brackets).
    @ivar port: Its port.
    @ivar user: The user name to give it, or C{None} to give no
        credentials.
    @ivar password: The password to give it (C{""} when the URL has a user
        name only).
    """

    scheme: str
    host: str
    port: int
    user: str | None = field(default=None, repr=False)
    password: str = field(default="", repr=False)

    @classmethod
    def fromURL(cls, url: str) -> ParentProxy:
        """
        Parse C{http://[USER[:PASSWORD]@]HOST:PORT} or the same with
        C{https://}.  The user name and password are percent-decoded
        (UTF-8), so write C{%40} for C{@}, C{%3A} for C{:} in a password and
        C{%25} for C{%}.

        @param url: The URL; a trailing C{/} is allowed, nothing else after
            the port.
        @return: The parent.
        @raise ValueError: Saying what is wrong, without repeating the URL
            (it may hold a password).
        """
        if _CONTROL.search(url) or " " in url:
            raise ValueError("the URL must not contain spaces or control characters")
        scheme, sep, _ = url.partition("://")
        if not sep:
            raise ValueError("expected http://HOST:PORT or https://HOST:PORT")
        if scheme.lower() not in _SCHEMES:
            raise ValueError(
                f"unknown scheme {scheme[:20]!r}: a parent proxy URL starts with "
                "http:// or https://"
            )
        try:
            parts = urlsplit(url)
        except ValueError:
            raise ValueError("the URL's host is not valid") from None
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(
                "a parent proxy URL has no path, query or fragment (percent-encode "
                "/ ? and # in the credentials)"
            )
        userinfo, at, _ = parts.netloc.rpartition("@")
        host = _host(parts.hostname)
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port is None:
            raise ValueError(
                f"the URL needs a port: {parts.scheme}://{formatAuthority(host, 3128)}"
            )
        if not port:
            raise ValueError("the port must be a number from 1 to 65535")
        user, password = _credentials(userinfo) if at else (None, "")
        return cls(parts.scheme, host, port, user, password)

    @property
    def address(self) -> str:
        """
        C{scheme://host:port}: how logs and messages name the parent,
        without its credentials.
        """
        return f"{self.scheme}://{formatAuthority(self.host, self.port)}"

    def __str__(self) -> str:
        return self.address

    @property
    def tls(self) -> bool:
        """
        Whether the proxy speaks TLS to the parent (C{https://}).
        """
        return self.scheme == "https"

    @property
    def authorization(self) -> bytes | None:
        """
        The value of the C{Proxy-Authorization} field to send (Basic, RFC
        7617, the credentials encoded as UTF-8), or C{None} without
        credentials.
        """
        if self.user is None:
            return None
        token = f"{self.user}:{self.password}".encode()
        return b"Basic " + base64.b64encode(token)


def _host(hostname: str | None) -> str:
    """
    The normalised host of a parent URL.

    @param hostname: What L{urlsplit} found (lower-cased, brackets removed).
    @raise ValueError: When there is no host, or it is not a valid name or
        IP address.
    """
    if not hostname:
        raise ValueError("the URL needs a host")
    try:
        return normalizeHost(hostname)
    except ValueError as e:
        raise ValueError(f"the URL's host is not valid: {e}") from None


def _credentials(userinfo: str) -> tuple[str, str]:
    """
    The percent-decoded user name and password of a URL's user information.

    @raise ValueError: For a malformed escape, text that is not UTF-8, an
        empty user name, a colon in the user name or a control character.
    """
    if _BAD_ESCAPE.search(userinfo):
        raise ValueError(
            "the credentials have a % that does not start a %XX escape "
            "(write a % as %25)"
        )
    rawUser, _, rawPassword = userinfo.partition(":")
    try:
        user = unquote_to_bytes(rawUser).decode("utf-8")
        password = unquote_to_bytes(rawPassword).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the credentials are not UTF-8 once percent-decoded") from None
    if not user:
        raise ValueError("the credentials need a user name: USER:PASSWORD@HOST")
    if ":" in user:
        raise ValueError("a user name cannot contain a colon (RFC 7617)")
    if _CONTROL.search(user) or _CONTROL.search(password):
        raise ValueError("the credentials must not contain control characters")
    return user, password


def connectHead(host: str, port: int, authorization: bytes | None) -> bytes:
    """
    The request head that asks a parent proxy for a tunnel (RFC 9110
    section 9.3.6): authority form, a C{Host} field with the same authority
    (RFC 9112 section 3.2), and C{Proxy-Authorization} when there are
    credentials.

    @param host: The target host, normalised (IDNA A-labels; an IPv6
        address without brackets).
    @param port: The target port.
    @param authorization: The C{Proxy-Authorization} value, or C{None}.
    @return: The head, ending with its empty line.
    """
    authority = formatAuthority(host, port).encode("ascii")
    lines = [b"CONNECT " + authority + b" HTTP/1.1", b"Host: " + authority]
    if authorization is not None:
        lines.append(b"Proxy-Authorization: " + authorization)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def loadTrustRoot(path: str) -> Any:
    """
    Read the CA certificates that C{--upstream-ca} names: the only ones
    trusted for C{https://} parents.

    @param path: A file of one or more PEM certificates.
    @return: An L{IOpenSSLTrustRoot
        <twisted.internet.interfaces.IOpenSSLTrustRoot>} for
        L{optionsForClientTLS <twisted.internet.ssl.optionsForClientTLS>}.
    @raise ValueError: Naming the file, when it cannot be read or holds no
        valid certificate.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    blocks = _PEM_CERTIFICATE.findall(data)
    if not blocks:
        raise ValueError(f"{path} holds no PEM certificate")
    try:
        certificates = [Certificate.loadPEM(block) for block in blocks]
    except OpenSSLError:
        raise ValueError(f"{path} holds a certificate that is not valid") from None
    return trustRootFromCertificates(certificates)
