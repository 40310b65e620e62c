# -*- test-case-name: tests.test_htpasswd -*-
"""
The C{--auth htpasswd:PATH} checker factory, found by
L{twisted.cred.strcred.makeChecker}.

Every C{twistd --help} on the machine imports this module, so it stays
import-light: L{connectproxy._htpasswd}, with bcrypt and passlib, is imported
only when a checker is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.cred.credentials import IUsernamePassword
from twisted.cred.strcred import ICheckerFactory
from twisted.plugin import IPlugin
from zope.interface import implementer

if TYPE_CHECKING:
    from connectproxy._htpasswd import HtpasswdChecker


@implementer(ICheckerFactory, IPlugin)
class HtpasswdCheckerFactory:
    """
    The C{htpasswd} auth type: makes an L{HtpasswdChecker} from
    C{--auth htpasswd:PATH}.
    """

    authType = "htpasswd"
    authHelp = """\
Check Proxy-Authorization: Basic credentials against an Apache htpasswd
file (user:hash lines, made with Apache's htpasswd tool). Supported hashes:
bcrypt (htpasswd -B, recommended; as with Apache, the first 72 bytes of a
password count), Apache MD5 (-m, the default), SHA-256 and SHA-512 crypt
(-2, -5), and unsalted SHA-1 (-s, weak: a warning is logged). Plaintext
entries (-p) are refused unless --auth-allow-plaintext is given; DES crypt
(-d) and other formats never match. The file is reloaded when it changes
and on SIGHUP; it must stay readable by the user the proxy runs as.
"""
    argStringFormat = "A path to an htpasswd file"
    credentialInterfaces = (IUsernamePassword,)

    def generateChecker(self, argstring: str) -> HtpasswdChecker:
        """
        @param argstring: The path of the htpasswd file.
        @raise ValueError: If there is no path or the file cannot be read.
        """
        from connectproxy._htpasswd import HtpasswdChecker

        if not argstring.strip():
            raise ValueError("htpasswd needs a file: --auth htpasswd:PATH")
        return HtpasswdChecker(argstring)


connectproxyHtpasswd = HtpasswdCheckerFactory()
