# -*- test-case-name: tests.test_front -*-
"""
Where the proxy protocol lived before the request path was split by method:
the front of a client connection is in L{connectproxy._front}, CONNECT in
L{connectproxy._connect}, and how refusals are answered in
L{connectproxy._refuser}.  These names are kept here for code that imported
them from this module.
"""

from __future__ import annotations

from ._address import clientAddresses
from ._front import SHUTTING_DOWN, ConnectProxyProtocol
from ._refuser import LINGER_BYTES, LINGER_SECONDS

__all__ = [
    "LINGER_BYTES",
    "LINGER_SECONDS",
    "SHUTTING_DOWN",
    "ConnectProxyProtocol",
    "clientAddresses",
]
