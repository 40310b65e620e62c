# -*- test-case-name: tests.test_namespace -*-
"""
The release that deprecates what plugin API version 2 replaced: one
version for every deprecation warning of that change, so that they all
name the same release.
"""

from __future__ import annotations

from twisted.python.versions import Version

__all__ = ["DEPRECATED_IN"]

#: The release that deprecates everything plugin API version 2 replaced:
#: C{ProxyTunnel} and the tunnel attributes that moved to C{TunnelStats},
#: C{ConnectRequest}, the protocol, parser and error names of the package,
#: version-1 connectors and observers, the attributes of the parsed request
#: on C{UpstreamRequest}, the configuration builders of C{Options} and the
#: old C{reconfigure}.  That is connectproxy 0.1.0, the version of the
#: package (C{connectproxy/_version.py}): no release was made before these
#: changes, so 0.1.0 is the first to carry them.
DEPRECATED_IN = Version("connectproxy", 0, 1, 0)
