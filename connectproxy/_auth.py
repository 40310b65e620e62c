# -*- test-case-name: tests.test_auth -*-
"""
Proxy authentication with the checkers of C{twisted.cred.strcred}: the ones
that cannot work in the proxy, and making the others fit the credentials
the proxy passes.

Basic credentials parsing is in L{connectproxy._credentials}, the htpasswd
checker in L{connectproxy._htpasswd} and the failed-login limiter in
L{connectproxy._limiter}; their names are still importable from here.
"""

from __future__ import annotations

from typing import Any, Final

from twisted.cred.checkers import (
    FilePasswordDB,
    InMemoryUsernamePasswordDatabaseDontUse,
)

from ._credentials import ProxyCredentials, _asBytes, parseBasicCredentials
from ._errors import CheckerBusy, InvalidCredentials
from ._htpasswd import HtpasswdChecker, _readFile, unreadableFile
from ._limiter import FailureLimiter

__all__ = [
    "UNSUPPORTED_CHECKERS",
    "CheckerBusy",
    "FailureLimiter",
    "HtpasswdChecker",
    "InvalidCredentials",
    "ProxyCredentials",
    "adaptChecker",
    "parseBasicCredentials",
    "unreadableFile",
]


UNSUPPORTED_CHECKERS: Final = {
    "unix": (
        "it hashes on the reactor thread, needs the crypt and spwd modules "
        "(gone in Python 3.13) and read access to /etc/shadow; use htpasswd:FILE"
    ),
}
"""
Checker types that C{--auth} offers through C{twisted.cred.strcred} but
that cannot work in the proxy, with why (C{--help-auth} does not list them).
"""


def adaptChecker(checker: Any) -> Any:
    """
    Make a checker from C{twisted.cred.strcred} work with the credentials
    the proxy passes (L{ProxyCredentials}: UTF-8 bytes).

    C{memory:USER:PASSWORD} stores the text from the command line, so a
    user name in bytes is never found in it: its table is converted to
    UTF-8 bytes.  C{file:PATH} reads its file at every login: it is read
    once here, so that a file that cannot be read stops the command
    instead of failing every login.

    @return: C{checker}.
    @raise ValueError: If the file of a C{file:} checker cannot be read.
    """
    if isinstance(checker, InMemoryUsernamePasswordDatabaseDontUse):
        checker.users = {
            _asBytes(name): _asBytes(password)
            for name, password in checker.users.items()
        }
    elif isinstance(checker, FilePasswordDB):
        try:
            _readFile(checker.filename)
        except OSError as e:
            raise ValueError(
                f"cannot read password file {checker.filename}: {unreadableFile(e)}"
            ) from e
    return checker
