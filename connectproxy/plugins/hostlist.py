# -*- test-case-name: tests.test_hostlist -*-
"""
The C{hostlist} access policy: tunnel only to the host names listed in a
file.

    twistd connectproxy --policy hostlist:/etc/connectproxy/hosts

The file has one pattern per line, an exact name (C{example.com}) or every
name under a domain (C{*.example.com}); blank lines and lines starting with
C{#} are ignored.  Names are compared case-insensitively, IDNA-normalised,
without a trailing dot.  The file is read at start and again on SIGHUP.
"""

from __future__ import annotations

from twisted.plugin import IPlugin
from zope.interface import implementer

from connectproxy import AccessRequest, HostRules, Refusal
from connectproxy.interfaces import IAccessPolicy, IAccessPolicyFactory


@implementer(IAccessPolicy)
class HostListPolicy:
    """
    Refuses (403) every target whose name is not in the list, with a
    reason naming the file to add it to.

    @ivar path: The file the list came from.
    @ivar patterns: The patterns read.
    @ivar rules: The patterns as allow rules (C{None} for an empty list,
        which allows nothing).
    """

    def __init__(self, path: str) -> None:
        """
        @raise ValueError: When the file cannot be read or has an invalid
            pattern (the message names the line).
        """
        self.path = path
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as e:
            reason = e.strerror or str(e)
            raise ValueError(f"cannot read host list {path}: {reason}") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"cannot read host list {path}: {e}") from None
        patterns = []
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                HostRules.fromStrings(allow=[line])
            except ValueError as e:
                raise ValueError(f"{path}, line {number}: {e}") from None
            patterns.append(line)
        self.patterns = patterns
        self.rules = HostRules.fromStrings(allow=patterns) if patterns else None

    def checkAccess(self, access: AccessRequest) -> Refusal | None:
        if self.rules is not None and self.rules.check(access.host):
            return None
        return Refusal(
            403,
            f"host {access.host} is not in the allowed list "
            f"(see --policy hostlist:{self.path})",
        )


@implementer(IPlugin, IAccessPolicyFactory)
class HostListPolicyFactory:
    """
    Makes a L{HostListPolicy} from C{--policy hostlist:PATH}.
    """

    name = "hostlist"
    description = (
        "Tunnel only to the host names listed in a file: --policy hostlist:PATH "
        "(one name or *.domain per line)."
    )

    def policyFromArgument(self, argument: str) -> IAccessPolicy:
        if not argument:
            raise ValueError("hostlist needs a file: --policy hostlist:PATH")
        return HostListPolicy(argument)


hostlist = HostListPolicyFactory()
