# -*- test-case-name: tests.test_htpasswd -*-
"""
The hash formats of htpasswd files: which scheme a stored hash uses and
whether it is well formed (L{classify}), and checking a password against it
(L{HtpasswdEntry.verify}): bcrypt, SHA-512 and SHA-256 crypt, Apache's
MD5 (apr1), unsalted SHA-1, and plaintext when allowed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

import bcrypt

__all__ = ["VERIFIERS", "HtpasswdEntry", "classify", "slowest"]


_BCRYPT_MAX: Final = 72


def _checkBcrypt(stored: str, password: bytes) -> bool:
    # bcrypt only ever uses the first 72 bytes of a password. Apache's
    # htpasswd -B accepts longer ones and hashes those 72 bytes; bcrypt 5
    # raises ValueError for longer passwords, older versions truncate. Verify
    # the first 72 bytes, as Apache does, so the password the user set works.
    try:
        return bcrypt.checkpw(password[:_BCRYPT_MAX], stored.encode("ascii"))
    except ValueError:
        return False


def _passlibHandler(name: str) -> Any:
    from passlib import hash as passlibHash  # type: ignore[import-untyped]

    return getattr(passlibHash, name)


def _checkPasslib(name: str, stored: str, password: bytes) -> bool:
    try:
        return bool(_passlibHandler(name).verify(password, stored))
    except (ValueError, TypeError):
        return False


def _checkSha1(stored: str, password: bytes) -> bool:
    digest = base64.b64encode(hashlib.sha1(password).digest())
    return hmac.compare_digest(digest, stored[len("{SHA}") :].encode("utf-8"))


def _checkPlaintext(stored: str, password: bytes) -> bool:
    return hmac.compare_digest(password, stored.encode("utf-8"))


#: How to check a password against a stored hash, by scheme, from the most
#: to the least expensive (see L{slowest}).
VERIFIERS: Final[dict[str, Callable[[str, bytes], bool]]] = {
    "bcrypt": _checkBcrypt,
    "sha512-crypt": partial(_checkPasslib, "sha512_crypt"),
    "sha256-crypt": partial(_checkPasslib, "sha256_crypt"),
    "apr1": partial(_checkPasslib, "apr_md5_crypt"),
    "sha1": _checkSha1,
    "plaintext": _checkPlaintext,
}
_PREFIXES: Final = (
    ("$2y$", "bcrypt"),
    ("$2a$", "bcrypt"),
    ("$2b$", "bcrypt"),
    ("$6$", "sha512-crypt"),
    ("$5$", "sha256-crypt"),
    ("$apr1$", "apr1"),
    ("{SHA}", "sha1"),
)
_PASSLIB_NAMES: Final = {
    "sha512-crypt": "sha512_crypt",
    "sha256-crypt": "sha256_crypt",
    "apr1": "apr_md5_crypt",
}
_BCRYPT_HASH: Final = re.compile(r"\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}")
_SHA1_HASH: Final = re.compile(r"\{SHA\}[A-Za-z0-9+/]{27}=")
_OTHER_HASH: Final = re.compile(r"\$|\{[A-Za-z0-9-]+\}|[./A-Za-z0-9]{13}\Z")


@dataclass(frozen=True, slots=True)
class HtpasswdEntry:
    """
    One user's line of an htpasswd file.

    @ivar scheme: A key of L{VERIFIERS}, or C{None} if it never matches.
    @ivar stored: The stored hash (or plaintext password).
    """

    scheme: str | None
    stored: str

    def verify(self, password: bytes) -> bool:
        """
        @return: Whether C{password} matches; always C{False} without a scheme.
        """
        verifier = VERIFIERS.get(self.scheme or "")
        return verifier is not None and verifier(self.stored, password)


def classify(stored: str, allowPlaintext: bool) -> tuple[str | None, str]:
    """
    Find how to verify an htpasswd hash field.

    @return: The scheme (C{None} if the entry must never match) and, if it
        must not, why.
    """
    scheme = next(
        (name for prefix, name in _PREFIXES if stored.startswith(prefix)), None
    )
    if scheme is None:
        if not stored:
            return None, "empty password field"
        if _OTHER_HASH.match(stored):
            return None, "unsupported hash format (re-create it with htpasswd -B)"
        if not allowPlaintext:
            return None, "plaintext password refused (see --auth-allow-plaintext)"
        return "plaintext", ""
    if scheme == "bcrypt":
        wellFormed = _BCRYPT_HASH.fullmatch(stored) is not None
    elif scheme == "sha1":
        wellFormed = _SHA1_HASH.fullmatch(stored) is not None
    else:
        try:
            _passlibHandler(_PASSLIB_NAMES[scheme]).from_string(stored)
            wellFormed = True
        except (ValueError, TypeError):
            wellFormed = False
    return (scheme, "") if wellFormed else (None, f"malformed {scheme} hash")


def slowest(entries: Iterable[HtpasswdEntry]) -> HtpasswdEntry | None:
    """
    The usable entry whose scheme costs the most to verify: verifying a
    password against it for a user the file does not have takes as long as
    for the most expensive user it has.

    @return: That entry, or C{None} when no entry can ever match.
    """
    ranks = list(VERIFIERS)
    usable = [e for e in entries if e.scheme is not None]
    return min(usable, key=lambda e: ranks.index(e.scheme or ""), default=None)
