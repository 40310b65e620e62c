# -*- test-case-name: tests.test_address -*-
"""
Client and peer addresses: their text in logs, the host and port the
access checks and connection limits count, and who is at the other end of
a client connection (the client, and the load balancer it came through).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress

if TYPE_CHECKING:
    from ._tunnel import TunnelTransport

__all__ = ["clientAddresses", "clientHostPort", "formatAddress"]


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


def clientAddresses(
    transport: TunnelTransport,
    clientAddress: object,
    balancerAddress: IAddress | None,
) -> tuple[IAddress, IAddress | None]:
    """
    The client's address, and the load balancer's when the client came
    through one (C{None} otherwise).

    @param transport: The client connection's transport.
    @param clientAddress: The address the factory built the protocol for
        (C{buildProtocol}'s C{addr}), or C{None}.
    @param balancerAddress: The load balancer's address when the
        PROXY-protocol reader built the protocol for a client its header
        named, else C{None}.
    """
    peer = transport.getPeer()
    if balancerAddress is not None:
        # Built by the PROXY-protocol reader for the client it reported.
        if isinstance(clientAddress, IPv4Address | IPv6Address):
            return clientAddress, balancerAddress
        return peer, balancerAddress
    wrapped = _wrapperBalancer(transport)
    if wrapped is not None:
        # Twisted's haproxy: wrapper (in embedding code) reports the
        # client as the peer once its header named one.
        return peer, wrapped
    return peer, None


def _wrapperBalancer(transport: object) -> IAddress | None:
    """
    The load balancer's address under Twisted's own PROXY-protocol wrapper
    (C{twisted.protocols.haproxy}), once the header it read named a client;
    the wrapper reports that client as its peer.  C{None} for any other
    transport.
    """
    info = getattr(transport, "_proxyInfo", None)
    if getattr(info, "source", None) is None:
        return None
    inner = getattr(transport, "transport", None)
    getPeer = getattr(inner, "getPeer", None)
    return None if getPeer is None else cast(IAddress, getPeer())
