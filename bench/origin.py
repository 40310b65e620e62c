"""
Origin servers for the tunnel benchmark, run as a separate process.

C{bench/tunnel.py} starts this file with C{python bench/origin.py}. It uses
plain sockets, no Twisted, so that it measures the proxy and not itself. It
binds two listeners on 127.0.0.1 port 0 and prints one JSON line to stdout:
C{{"bulk": PORT, "echo": PORT}}. It runs until its stdin reaches end of file,
which happens when the benchmark closes the pipe or dies.

The bulk server (one thread per connection) reads a 16-byte header of two
network-order unsigned 64-bit integers, C{upload} and C{download}. It then
receives C{upload} bytes while it sends C{download} bytes, and finally sends
an 8-byte trailer holding how many bytes it received, so that the client can
check the count. Then it half-closes and waits for the client to close.

The echo server (one C{selectors} loop) reads exactly L{ECHO_SIZE} bytes,
sends them back, and closes the connection.

The wire format is repeated in C{bench/tunnel.py}; change both together.
"""

from __future__ import annotations

import json
import selectors
import socket
import struct
import sys
import threading
from dataclasses import dataclass, field

CHUNK = 256 * 1024
BULK_HEADER = struct.Struct("!QQ")
BULK_TRAILER = struct.Struct("!Q")
ECHO_SIZE = 32
_IDLE_TIMEOUT = 60.0
_PAYLOAD = memoryview(bytes(range(256)) * (CHUNK // 256))


def _listen() -> socket.socket:
    """
    Bind a listening TCP socket on an ephemeral loopback port.

    @return: The listening socket.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    return listener


def _recvExactly(conn: socket.socket, count: int) -> bytes | None:
    """
    Read exactly C{count} bytes.

    @return: The bytes, or L{None} if the peer closed first.
    """
    data = bytearray()
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def _sendBulk(conn: socket.socket, count: int) -> None:
    """
    Send C{count} bytes of payload, giving up quietly if the peer goes away.
    """
    remaining = count
    try:
        while remaining > 0:
            size = min(remaining, CHUNK)
            conn.sendall(_PAYLOAD[:size])
            remaining -= size
    except OSError:
        return


def _receiveBulk(conn: socket.socket, count: int) -> int:
    """
    Receive up to C{count} bytes into one reused buffer.

    @return: How many bytes arrived before C{count} was reached or the peer
        stopped sending.
    """
    buffer = bytearray(CHUNK)
    received = 0
    try:
        while received < count:
            size = conn.recv_into(buffer, min(CHUNK, count - received))
            if size == 0:
                break
            received += size
    except OSError:
        pass
    return received


def _serveBulkConnection(conn: socket.socket) -> None:
    """
    Run one bulk transfer as described in the module docstring.
    """
    with conn:
        conn.settimeout(_IDLE_TIMEOUT)
        try:
            header = _recvExactly(conn, BULK_HEADER.size)
            if header is None:
                return
            upload, download = BULK_HEADER.unpack(header)
            sender = threading.Thread(target=_sendBulk, args=(conn, download))
            sender.start()
            received = _receiveBulk(conn, upload)
            sender.join()
            conn.sendall(BULK_TRAILER.pack(received))
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(CHUNK):
                pass
        except OSError:
            return


def _acceptBulk(listener: socket.socket) -> None:
    """
    Accept bulk connections forever, one daemon thread each.
    """
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_serveBulkConnection, args=(conn,), daemon=True).start()


@dataclass
class _EchoState:
    """
    One echo connection in progress.

    @ivar conn: The accepted socket.
    @ivar received: The bytes read so far.
    """

    conn: socket.socket
    received: bytearray = field(default_factory=bytearray)


def _acceptEcho(selector: selectors.BaseSelector, listener: socket.socket) -> None:
    """
    Accept every pending echo connection and register it for reading.
    """
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        selector.register(conn, selectors.EVENT_READ, _EchoState(conn))


def _readEcho(selector: selectors.BaseSelector, state: _EchoState) -> None:
    """
    Read from one echo connection; answer and close once the message is in.
    """
    try:
        data = state.conn.recv(ECHO_SIZE - len(state.received))
    except BlockingIOError:
        return
    except OSError:
        data = b""
    state.received += data
    if data and len(state.received) < ECHO_SIZE:
        return
    if data:
        try:
            state.conn.send(bytes(state.received))
        except OSError:
            pass
    selector.unregister(state.conn)
    state.conn.close()


def _serveEcho(listener: socket.socket) -> None:
    """
    Run the echo server's event loop forever.
    """
    selector = selectors.DefaultSelector()
    listener.setblocking(False)
    selector.register(listener, selectors.EVENT_READ, None)
    while True:
        for key, _ in selector.select():
            if key.data is None:
                _acceptEcho(selector, listener)
            else:
                _readEcho(selector, key.data)


def main() -> int:
    """
    Start both servers, announce their ports, and run until stdin closes.

    @return: The process exit status.
    """
    bulk = _listen()
    echo = _listen()
    threading.Thread(target=_acceptBulk, args=(bulk,), daemon=True).start()
    threading.Thread(target=_serveEcho, args=(echo,), daemon=True).start()
    ports = {"bulk": bulk.getsockname()[1], "echo": echo.getsockname()[1]}
    sys.stdout.write(json.dumps(ports) + "\n")
    sys.stdout.flush()
    sys.stdin.buffer.read()
    return 0


if __name__ == "__main__":
    sys.exit(main())
