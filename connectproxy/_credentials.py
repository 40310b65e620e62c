# -*- test-case-name: tests.test_credentials -*-
"""
C{Proxy-Authorization: Basic} credentials (RFC 7617): parsing the field,
and the credentials a checker receives, which name the client.
"""

from __future__ import annotations

import base64
import hmac
import unicodedata
from dataclasses import dataclass, field

from twisted.cred.credentials import IUsernamePassword
from zope.interface import implementer

from ._errors import InvalidCredentials

__all__ = ["InvalidCredentials", "ProxyCredentials", "parseBasicCredentials"]


@implementer(IUsernamePassword)
@dataclass(frozen=True, slots=True)
class ProxyCredentials:
    """
    Basic credentials from a C{Proxy-Authorization} field, and the address
    of the client that sent them (so that a checker can share its work
    fairly between clients).

    @ivar username: The user-id, UTF-8.
    @ivar password: The password, UTF-8 (never shown in C{repr}).
    @ivar client: The client's IP address as text; C{""} for UNIX socket
        clients.
    """

    username: bytes
    password: bytes = field(repr=False)
    client: str = ""

    def checkPassword(self, password: bytes | str) -> bool:
        """
        Compare with a stored plaintext password, in constant time.

        @param password: The stored password; text is taken as UTF-8.
        """
        return hmac.compare_digest(self.password, _asBytes(password))


def parseBasicCredentials(value: str) -> tuple[str, str]:
    """
    Parse the value of a C{Proxy-Authorization} header as Basic credentials
    (RFC 7617): the scheme C{Basic} in any case, one or more spaces, then
    canonical padded base64 of C{user-id:password} in UTF-8.

    @param value: The field value, decoded as ISO-8859-1.
    @return: The user-id and the password (which may contain colons).
    @raise InvalidCredentials: For anything else.
    """
    scheme, _, rest = value.strip(" \t").partition(" ")
    if not (scheme.isascii() and scheme.lower() == "basic"):
        raise InvalidCredentials("not Basic credentials")
    token = rest.lstrip(" ")
    if not token:
        raise InvalidCredentials("no credentials after Basic")
    try:
        decoded = base64.b64decode(token.encode("ascii"), validate=True)
    except ValueError:  # binascii.Error and UnicodeEncodeError are ValueErrors
        raise InvalidCredentials("credentials are not base64") from None
    if base64.b64encode(decoded) != token.encode("ascii"):
        raise InvalidCredentials("credentials are not canonical base64")
    userBytes, colon, passwordBytes = decoded.partition(b":")
    if not colon:
        raise InvalidCredentials("no colon in the credentials")
    try:
        user = userBytes.decode("utf-8")
        password = passwordBytes.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidCredentials("credentials are not UTF-8") from None
    if not user:
        raise InvalidCredentials("empty user-id")
    if _hasControl(user):
        raise InvalidCredentials("control character in the user-id")
    return user, password


def _hasControl(text: str) -> bool:
    """
    @return: Whether C{text} contains a C0 or C1 control character or DEL.
    """
    return any(unicodedata.category(c) == "Cc" for c in text)


def _asBytes(value: bytes | str) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value
