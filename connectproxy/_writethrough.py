# -*- test-case-name: tests.test_writethrough -*-
"""
Write-through for the relay: a chunk for a plain TCP connection whose send
buffer is empty goes to its socket at once, in the call that received it,
instead of waiting in Twisted's buffer for the next turn of the reactor.

Twisted's C{write} only appends to a buffer and asks the reactor to watch
the socket for writability: the bytes leave one reactor iteration later,
after one more C{epoll_wait} and two C{epoll_ctl} calls (watch, unwatch).
For the small messages of an interactive tunnel (a TLS handshake, a
request, an echo) that is most of the cost of relaying a chunk, and it
delays every message by that extra iteration.  When the buffer is empty,
sending at once is exactly what the reactor would do next; when it is not
(the peer reads slowly, or the kernel took only part of the chunk), the
chunk, or what is left of it, goes through C{write} as before, behind the
bytes already waiting, with Twisted's flow control (the producer paused
when the buffer fills) unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import tcp

__all__ = ["writerFor"]

#: The attributes of Twisted's TCP transports that the write-through reads;
#: a transport without them (another Twisted version) is written to as
#: usual.
_STATE = (
    "dataBuffer",
    "_tempDataLen",
    "connected",
    "disconnecting",
    "_writeDisconnecting",
    "_aborting",
    "writeSomeData",
)


def writerFor(transport: Any) -> Callable[[bytes], None]:
    """
    The function that relays a chunk to C{transport}: C{transport.write}
    itself, or for a plain TCP connection (not TLS, not wrapped), one that
    writes through to the socket when nothing is waiting to be sent.

    @param transport: Where the chunks go.
    @return: A function of one chunk (C{bytes}).
    """
    if (
        not isinstance(transport, tcp.Connection)
        or getattr(transport, "TLS", True)
        or not all(hasattr(transport, name) for name in _STATE)
    ):
        return transport.write  # type: ignore[no-any-return]
    write = transport.write
    send = transport.writeSomeData

    def writeThrough(data: bytes) -> None:
        t = transport
        if (
            not t.dataBuffer
            and not t._tempDataLen
            and t.connected
            and not t.disconnecting
            and not t._writeDisconnecting
            and not t._aborting
        ):
            sent = send(data)
            if type(sent) is int:
                if sent == len(data):
                    return
                data = data[sent:]
            # An error (the connection is lost): write() buffers the chunk,
            # and the reactor finds the loss where it always does.
        write(data)

    return writeThrough
