# -*- test-case-name: tests.test_bench,tests.integration.test_bench -*-
"""
Origin servers for the benchmark, run as a separate process.

C{python -m bench} starts this module as C{python -m bench.origin --hold N}.
It uses plain sockets, no Twisted, so that it measures the proxies and not
itself. It binds its listeners on 127.0.0.1 port 0 and prints one JSON line
to stdout: C{{"bulk": PORT, "echo": PORT, "hold": [PORT, ...]}}. It runs
until it gets C{SIGTERM}.

The bulk server (one thread per connection) reads a 16-byte header of two
network-order unsigned 64-bit integers, C{upload} and C{download}. It then
receives C{upload} bytes while it sends C{download} bytes of L{payloadChunk},
and finally sends a 12-byte trailer: how many bytes it received and their
CRC-32, so that the client can check both. Then it half-closes and waits for
the client to close.

The echo server (one C{selectors} loop) reads exactly L{ECHO_SIZE} bytes,
sends them back, and closes the connection.

The hold servers (one C{selectors} loop for all of them, several ports so
that tens of thousands of connections from one address do not run out of
ports) send back whatever they read until the client closes: an idle client
keeps its connection open at almost no cost, and a client that sends a
message gets it back (the latency test).

The wire format is repeated in C{bench/measure.py}; change both together.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import struct
import sys
import threading
import zlib
from dataclasses import dataclass, field

CHUNK = 256 * 1024
BULK_HEADER = struct.Struct("!QQ")
BULK_TRAILER = struct.Struct("!QI")
ECHO_SIZE = 32
_IDLE_TIMEOUT = 60.0


def payloadChunk() -> memoryview:
    """
    The bytes every bulk transfer repeats: L{CHUNK} bytes with no short
    period, so that a dropped or repeated block changes the CRC.

    @return: The chunk.
    """
    block = bytearray()
    counter = 0
    while len(block) < CHUNK:
        block += zlib.crc32(counter.to_bytes(4, "big")).to_bytes(4, "big")
        counter += 1
    return memoryview(bytes(block[:CHUNK]))


_PAYLOAD = payloadChunk()


def _listen() -> socket.socket:
    """
    Bind a listening TCP socket on an ephemeral loopback port.

    @return: The listening socket.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
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


def _receiveBulk(conn: socket.socket, count: int) -> tuple[int, int]:
    """
    Receive up to C{count} bytes into one reused buffer.

    @return: How many bytes arrived before C{count} was reached or the peer
        stopped sending, and their CRC-32.
    """
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    received = crc = 0
    try:
        while received < count:
            size = conn.recv_into(buffer, min(CHUNK, count - received))
            if size == 0:
                break
            crc = zlib.crc32(view[:size], crc)
            received += size
    except OSError:
        pass
    return received, crc


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
            received, crc = _receiveBulk(conn, upload)
            sender.join()
            conn.sendall(BULK_TRAILER.pack(received, crc))
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
    One connection in progress on a C{selectors} server.

    @ivar conn: The accepted socket.
    @ivar once: Whether to close after one L{ECHO_SIZE} message (the echo
        server) or echo until the client closes (the hold servers).
    @ivar received: The bytes of the current message read so far.
    """

    conn: socket.socket
    once: bool
    received: bytearray = field(default_factory=bytearray)


@dataclass(frozen=True)
class _Listener:
    """
    A listening socket on a C{selectors} server.

    @ivar sock: The socket.
    @ivar once: Passed to every L{_EchoState} it accepts.
    """

    sock: socket.socket
    once: bool


def _accept(selector: selectors.BaseSelector, listener: _Listener) -> None:
    """
    Accept every pending connection and register it for reading.
    """
    while True:
        try:
            conn, _ = listener.sock.accept()
        except BlockingIOError:
            return
        except OSError:
            return  # Out of descriptors: the client sees the failure.
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        selector.register(conn, selectors.EVENT_READ, _EchoState(conn, listener.once))


def _read(selector: selectors.BaseSelector, state: _EchoState) -> None:
    """
    Read from one connection; echo what came, and close when done.
    """
    try:
        data = state.conn.recv(65536 if not state.once else ECHO_SIZE)
    except BlockingIOError:
        return
    except OSError:
        data = b""
    if data and not state.once:
        try:
            state.conn.sendall(data)
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


def _serveSelected(listeners: list[_Listener]) -> None:
    """
    Run one C{selectors} loop for the echo and hold servers, forever.
    """
    selector = selectors.DefaultSelector()
    for listener in listeners:
        listener.sock.setblocking(False)
        selector.register(listener.sock, selectors.EVENT_READ, listener)
    while True:
        for key, _ in selector.select():
            if isinstance(key.data, _Listener):
                _accept(selector, key.data)
            else:
                _read(selector, key.data)


def main(argv: list[str] | None = None) -> int:
    """
    Start all servers, announce their ports, and run until killed.

    @return: The process exit status.
    """
    parser = argparse.ArgumentParser(description="bench origin servers")
    parser.add_argument("--hold", type=int, default=4, help="hold server ports")
    args = parser.parse_args(argv)
    bulk = _listen()
    echo = _listen()
    holds = [_listen() for _ in range(max(1, args.hold))]
    threading.Thread(target=_acceptBulk, args=(bulk,), daemon=True).start()
    listeners = [_Listener(echo, True)] + [_Listener(h, False) for h in holds]
    threading.Thread(target=_serveSelected, args=(listeners,), daemon=True).start()
    ports = {
        "bulk": bulk.getsockname()[1],
        "echo": echo.getsockname()[1],
        "hold": [h.getsockname()[1] for h in holds],
    }
    sys.stdout.write(json.dumps(ports) + "\n")
    sys.stdout.flush()
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
