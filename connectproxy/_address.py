# -*- test-case-name: tests.test_front -*-
"""
Who is at the other end of a client connection: the client's address and,
behind a load balancer that speaks the PROXY protocol, the balancer's.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress

from ._tunnel import TunnelTransport

__all__ = ["clientAddresses"]


def clientAddresses(
    transport: TunnelTransport, clientAddress: object
) -> tuple[IAddress, IAddress | None]:
    """
    The client's address, and the load balancer's when the client came
    through one (C{None} otherwise).

    @param transport: The client connection's transport.
    @param clientAddress: The address the factory built the protocol for
        (C{buildProtocol}'s C{addr}), or C{None}.
    """
    peer = transport.getPeer()
    wrapped = cast("IAddress | None", _socketPeer(transport))
    if wrapped is not None and wrapped != peer:
        # A transport wrapper reports the client: Twisted's haproxy:
        # wrapper, once it has read the header.
        return peer, wrapped
    if isinstance(clientAddress, IPv4Address | IPv6Address) and clientAddress != peer:
        # Built for the client a load balancer reported.
        return clientAddress, peer
    return peer, None


def _socketPeer(transport: object) -> object:
    """
    The peer of the socket under a protocol wrapper (a PROXY-protocol
    listener reports the claimed client as its peer, and the load balancer
    is the peer of the transport it wraps), or C{None} when there is no
    wrapper.
    """
    inner = getattr(transport, "transport", None)
    getPeer = getattr(inner, "getPeer", None)
    return None if getPeer is None else getPeer()
