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
    family, bound = found
    if family == addressFamily or family not in _FAMILIES:
        return None
    domain, name = _FAMILIES[family]
    wantedDomain, wanted = _FAMILIES.get(addressFamily) or _named(addressFamily)
    article = "an" if name.startswith("I") else "a"
    return (
        f"systemd passed {article} {name} socket ({_where(family, bound)}), not "
        f"the {wanted} one domain={wantedDomain} asks for: write domain={domain}"
    )


def _named(addressFamily: int) -> tuple[str, str]:
    """
    The C{domain=} of a family Twisted does not adopt, for a message
    (Twisted's parser takes the family from C{socket.AF_}C{domain}).
    """
    name = socket.AddressFamily(addressFamily).name.removeprefix("AF_")
    return name, name


def _inspect(fileno: int) -> tuple[int, object] | None:
    """
    The real address family of a descriptor and the address it is bound
    to, read from a duplicate (the descriptor itself stays as it is).

    @return: C{(family, address)}, the address as C{getsockname} gives it;
        C{None} when the descriptor is not an open socket.
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
        return sock.family, sock.getsockname()


def _where(family: int, bound: object) -> str:
    """
    A socket address as the log writes it: C{host:port}, C{[v6]:port} or
    C{unix:path}.
    """
    if isinstance(bound, tuple):
        host = f"[{bound[0]}]" if family == socket.AF_INET6 else bound[0]
        return f"{host}:{bound[1]}"
    if isinstance(bound, bytes):
        # An abstract socket: a NUL, then its name.
        bound = "@" + bound[1:].decode("utf-8", "replace")
    return f"unix:{bound or '(unnamed)'}"
