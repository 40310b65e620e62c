# -*- test-case-name: tests.test_tunnel -*-
"""
Passing a reset on to a plain TCP connection without destroying what was
already relayed to it: stop reading, flush, wait until the peer has
acknowledged every byte, then close with a reset (C{SO_LINGER} 0).

The transport relay uses it when one side of a tunnel is lost with an
error; a relay that owns the sockets (C{splice(2)}) needs the same.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall, IPullProducer, IReactorTime
from zope.interface import implementer

if TYPE_CHECKING:
    from ._tunnel import TunnelTransport

__all__ = ["ResetWhenFlushed"]

#: Seconds between checks of whether the peer has acknowledged everything
#: written to a connection that is to be reset.
_SENT_POLL = 0.05


def _socketOf(transport: Any) -> socket.socket | None:
    """
    The socket of a plain TCP transport, or C{None} for anything else.
    """
    getHandle = getattr(transport, "getHandle", None)
    if getHandle is None:
        return None
    handle = getHandle()
    return handle if isinstance(handle, socket.socket) else None


def _unsentBytes(transport: Any) -> int:
    """
    How many bytes written to C{transport}'s socket the peer has not yet
    acknowledged (C{SIOCOUTQ}, Linux); 0 where that cannot be known.
    """
    sock = _socketOf(transport)
    request = getattr(termios, "TIOCOUTQ", None)
    if sock is None or request is None:
        return 0
    try:
        raw = fcntl.ioctl(sock.fileno(), request, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0
    count: int = struct.unpack("i", raw)[0]
    return count


def _resetOnClose(transport: Any) -> None:
    """
    Make closing C{transport}'s socket send a reset (C{SO_LINGER} 0), even a
    close that Twisted considers orderly.
    """
    sock = _socketOf(transport)
    if sock is not None:
        try:
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        except (OSError, ValueError):
            pass


@implementer(IPullProducer)
class ResetWhenFlushed:
    """
    Reset a plain TCP connection once everything written to it has reached
    the peer: first Twisted's write buffer, then the kernel's send queue.

    It is registered as the transport's pull producer before
    C{loseConnection}: the transport then asks it for more data (calls
    L{resumeProducing}) when its buffer is empty, instead of closing with a
    FIN.  Once the peer has acknowledged every byte, C{abortConnection}
    closes with a reset.  The relay's abort deadline bounds the wait.
    """

    def __init__(self, transport: TunnelTransport, clock: IReactorTime) -> None:
        self._transport = transport
        self._clock = clock
        self._started = False
        self._done = False
        self._call: IDelayedCall | None = None

    def start(self, flushed: bool = False) -> None:
        """
        Stop reading, flush, then reset.

        @param flushed: Whether the transport holds nothing and writes
            nothing more (whoever owned its socket sent the FIN with
            C{shutdown}): then only the peer's acknowledgement is awaited.
        """
        _resetOnClose(self._transport)
        if flushed:
            self._started = True
            self._checkSent()
            return
        # The transport asks for data once as soon as it is registered;
        # only the requests after loseConnection mean "my buffer is empty".
        self._transport.registerProducer(self, False)
        self._started = True
        self._transport.loseConnection()

    def resumeProducing(self) -> None:
        if self._started and not self._done and self._call is None:
            self._checkSent()

    def _checkSent(self) -> None:
        self._call = None
        if _unsentBytes(self._transport):
            self._call = self._clock.callLater(_SENT_POLL, self._checkSent)
        else:
            self._done = True
            self._transport.abortConnection()

    def stopProducing(self) -> None:
        self._done = True
        if self._call is not None:
            self._call.cancel()
            self._call = None
