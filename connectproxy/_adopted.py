# -*- test-case-name: tests.test_listeners -*-
"""
The sockets systemd passes (C{systemd:} listeners): whether one is of the
address family its description names.

Twisted adopts an inherited socket as the family C{domain=} says, whatever
the socket really is.  An IPv6 socket (what C{ListenStream=3128} makes)
adopted as C{domain=INET} listens, but every client address then reads
wrong (a truncated IPv6 address), so that every client is refused; this
module finds the mismatch before anything listens.
"""

from __future__ import annotations

import os
import socket

__all__ = ["adoptedSocketProblem"]

#: The families Twisted adopts: the C{domain=} that names each, and how a
#: message calls it.
_FAMILIES: dict[int, tuple[str, str]] = {
    socket.AF_INET: ("INET", "IPv4"),
    socket.AF_INET6: ("INET6", "IPv6"),
    socket.AF_UNIX: ("UNIX", "UNIX"),
}


def adoptedSocketProblem(fileno: int, addressFamily: int) -> str | None:
    """
    Say why an inherited socket does not fit its C{systemd:} listener.

    @param fileno: The inherited descriptor.
    @param addressFamily: The family the description's C{domain=} names
        (C{socket.AF_INET}, ...).
    @return: One sentence saying what systemd passed and the C{domain=} to
        write, or C{None} when the families agree or the descriptor cannot
        be inspected (not a socket, or of a family Twisted does not adopt:
        adopting it fails with its own message).
    """
    found = _inspect(fileno)
    if found is None:
        return None
    family, where = found
    if family == addressFamily or family not in _FAMILIES:
        return None
    domain, name = _FAMILIES[family]
    wanted = _FAMILIES.get(addressFamily)
    asked = (
        f"the {wanted[1]} one domain={wanted[0]} asks for"
        if wanted is not None
        else "of the family its domain= asks for"
    )
    article = "an" if name.startswith("I") else "a"
    return (
        f"systemd passed {article} {name} socket ({where}), not {asked}: "
        f"write domain={domain}"
    )


def _inspect(fileno: int) -> tuple[int, str] | None:
    """
    The real address family of a descriptor and where it is bound, read
    from a duplicate (the descriptor itself stays as it is).

    @return: C{(family, address)}, the address as the log writes it
        (C{host:port}, C{[v6]:port}, C{unix:path}); C{None} when the
        descriptor is not a socket.
    """
    try:
        duplicate = os.dup(fileno)
    except OSError:
        return None
    try:
        sock = socket.socket(fileno=duplicate)
    except OSError:
        os.close(duplicate)
        return None
    with sock:
        try:
            bound = sock.getsockname()
        except OSError:
            bound = None
        return sock.family, _where(sock.family, bound)


def _where(family: int, bound: object) -> str:
    """
    A socket address as the log writes it.
    """
    if isinstance(bound, tuple) and family == socket.AF_INET6:
        return f"[{bound[0]}]:{bound[1]}"
    if isinstance(bound, tuple):
        return f"{bound[0]}:{bound[1]}"
    if isinstance(bound, bytes):
        bound = bound.decode("utf-8", "replace")
    if family == socket.AF_UNIX:
        return f"unix:{bound or '(unnamed)'}"
    return "address unknown"
