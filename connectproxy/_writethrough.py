# -*- test-case-name: tests.test_writethrough -*-
"""
Write-through and close-through for the relay.

Write-through: a chunk for a plain TCP connection whose send
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

Close-through (L{loseConnectionNow}) is the same for the end of a
connection: Twisted's C{loseConnection} waits for the next writability
event even when nothing is buffered, then sends zero bytes before it
closes (one more reactor iteration, two C{epoll_ctl} calls and an empty
C{send}); with nothing buffered, closing at once is what it would do.
Its C{loseWriteConnection} (a half-close: the FIN of RFC 9293 section
3.6 with the other direction still open) waits the same way, and
L{loseWriteConnectionNow} sends the FIN at once instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.internet.main import CONNECTION_DONE
from twisted.python.failure import Failure

__all__ = ["loseConnectionNow", "loseWriteConnectionNow", "writerFor"]

#: The attributes of Twisted's TCP transports that the write-, close- and
#: half-close-through read and set (defined on the class, or set by its
#: constructor); a transport without them (another Twisted version) is
#: written to and closed as usual.
_STATE = (
    "dataBuffer",
    "_tempDataLen",
    "connected",
    "disconnecting",
    "_writeDisconnecting",
    "_writeDisconnected",
    "_aborting",
    "producer",
    "writeSomeData",
    "stopReading",
    "stopWriting",
    "_closeWriteConnection",
)

#: Whether the transports of each class seen have the attributes of
#: L{_STATE}: looked at on the first connection of the class only.
_knownClasses: dict[type, bool] = {}


def _plainTCP(transport: Any) -> bool:
    """
    Whether C{transport} is a plain TCP connection (not TLS, not wrapped)
    of a Twisted version with the attributes of L{_STATE}.
    """
    cls = type(transport)
    known = _knownClasses.get(cls)
    if known is None:
        known = _knownClasses[cls] = issubclass(cls, tcp.Connection) and all(
            hasattr(transport, name) for name in _STATE
        )
    return known and not getattr(transport, "TLS", True)


def writerFor(transport: Any) -> Callable[[bytes], None]:
    """
    The function that relays a chunk to C{transport}: C{transport.write}
    itself, or for a plain TCP connection (not TLS, not wrapped), one that
    writes through to the socket when nothing is waiting to be sent.

    @param transport: Where the chunks go.
    @return: A function of one chunk (C{bytes}).
    """
    if not _plainTCP(transport):
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


def _closable(t: Any) -> bool:
    """
    Whether C{t} is a plain TCP connection that is open, not closing or
    aborting, with nothing waiting to be written and no producer: one that
    Twisted would close (or half-close) on its next writability event
    without writing anything.
    """
    return bool(
        _plainTCP(t)
        and not t.dataBuffer
        and not t._tempDataLen
        and t.connected
        and not t.disconnecting
        and not t._aborting
        and t.producer is None
    )


def loseConnectionNow(transport: Any) -> None:
    """
    Close C{transport} gracefully: a plain TCP connection with nothing
    waiting to be written and no producer is closed in this call (its
    protocol's C{connectionLost} is called, with L{ConnectionDone
    <twisted.internet.error.ConnectionDone>}, before this returns);
    anything else (bytes still buffered, a producer, TLS, a wrapped
    transport, a connection already closing) through its own
    C{loseConnection}, which sends what is buffered first.

    @param transport: The connection to close.
    """
    t = transport
    if _closable(t):
        t.stopReading()
        t.stopWriting()
        t.connectionLost(Failure(CONNECTION_DONE))
        return
    t.loseConnection()


def loseWriteConnectionNow(transport: Any) -> None:
    """
    Half-close C{transport} (send a FIN, keep reading): in this call for a
    plain TCP connection with nothing waiting to be written and no producer
    (its protocol's C{writeConnectionLost} is called before this returns,
    as Twisted does after its own half-close); anything else through its
    own C{loseWriteConnection}, which sends what is buffered first.

    @param transport: The connection to half-close (its protocol supports
        half-close).
    """
    t = transport
    if _closable(t) and not t._writeDisconnecting:
        # What Twisted's doWrite does once the buffer is empty.
        t._writeDisconnecting = True
        t._writeDisconnected = True
        t._closeWriteConnection()
        return
    t.loseWriteConnection()
