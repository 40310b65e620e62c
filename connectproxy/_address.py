# -*- test-case-name: tests.test_address -*-
"""
Client and peer addresses: their text in logs, the host and port the
access checks and connection limits count, and the peer of the socket
under a protocol wrapper.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

__all__ = ["clientHostPort", "formatAddress"]


def formatAddress(address: object) -> str:
    """
    Text for an address in logs: C{host:port}, C{[v6]:port} or
    C{unix:path}.
    """
    if isinstance(address, IPv4Address):
        return f"{address.host}:{address.port}"
    if isinstance(address, IPv6Address):
        return f"[{address.host}]:{address.port}"
    if isinstance(address, UNIXAddress):
        name = address.name or b""
        if isinstance(name, bytes):
            return "unix:" + name.decode("utf-8", "replace")
        return f"unix:{name}"
    return str(address)


def clientHostPort(address: object) -> tuple[str, int]:
    """
    The IP address (as text) and port of a client, or C{("", 0)} for one
    that has none (a UNIX socket).
    """
    if isinstance(address, IPv4Address | IPv6Address):
        return address.host, address.port
    return "", 0
