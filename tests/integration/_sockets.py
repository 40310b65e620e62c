# -*- test-case-name: tests.integration.test_clients -*-
"""
HTTP CONNECT from a raw socket: send a request head, read the response head,
read exact amounts or up to end of input.  Every socket has a timeout, so no
read waits forever.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

LOCAL = "127.0.0.1"
"""
The only address the tests talk to.
"""


@dataclass(frozen=True)
class Response:
    """
    An HTTP response head read from a raw socket.

    @ivar status: The status code.
    @ivar statusLine: The whole first line.
    @ivar headers: The header fields, names lowercased.
    @ivar raw: The head as received, with the final empty line.
    """

    status: int
    statusLine: str
    headers: dict[str, str]
    raw: bytes


def readResponseHead(sock: socket.socket, limit: int = 65536) -> tuple[Response, bytes]:
    """
    Read an HTTP response head.

    @param sock: A socket with a timeout set.
    @param limit: Fail if the head grows larger than this.
    @return: The head and whatever followed it.
    @raise AssertionError: If the peer closed first or the head is too large.
    """
    buffer = bytearray()
    while b"\r\n\r\n" not in buffer:
        chunk = _receive(sock, 65536, buffer, "a response head")
        assert chunk, f"connection closed before a response head: {buffer!r}"
        buffer += chunk
        assert len(buffer) <= limit, f"response head too large: {buffer[:200]!r}"
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Response(
        int(lines[0].split(" ")[1]), lines[0], headers, head + b"\r\n\r\n"
    ), rest


def _receive(sock: socket.socket, size: int, sofar: bytearray, what: str) -> bytes:
    """
    Receive once, turning the socket's timeout into a message that says what
    was awaited.

    @param sock: A socket with a timeout set.
    @param size: Receive at most this much.
    @param sofar: What arrived before, for the message.
    @param what: What the caller waits for.
    @return: What arrived; empty at end of input.
    @raise AssertionError: If nothing arrives within the socket's timeout.
    """
    try:
        return sock.recv(size)
    except TimeoutError:
        raise AssertionError(
            f"waiting for {what}: {len(sofar)} bytes arrived, then nothing "
            f"for {sock.gettimeout()}s"
        ) from None


def readToEnd(sock: socket.socket, limit: int = 1 << 24) -> bytes:
    """
    Read until the peer closes (or half-closes) its side.

    @param sock: A socket with a timeout set.
    @param limit: Fail if more than this arrives.
    @return: Everything read.
    """
    data = bytearray()
    while True:
        chunk = _receive(sock, 65536, data, "end of input")
        if not chunk:
            return bytes(data)
        data += chunk
        assert len(data) <= limit, f"more than {limit} bytes before end of input"


def readExactly(sock: socket.socket, size: int) -> bytes:
    """
    Read exactly C{size} bytes.

    @param sock: A socket with a timeout set.
    @param size: How many bytes.
    @return: The bytes.
    """
    data = bytearray()
    while len(data) < size:
        chunk = _receive(sock, size - len(data), data, f"{size} bytes")
        assert chunk, f"end of input after {len(data)} of {size} bytes"
        data += chunk
    return bytes(data)


def connectRequest(host: str, port: int | None) -> bytes:
    """
    Format a CONNECT request head.

    @param host: The authority's host.
    @param port: Its port; L{None} leaves it out.
    @return: The head.
    """
    authority = host if port is None else f"{host}:{port}"
    return (f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").encode(
        "ascii"
    )


def dial(port: int, timeout: float = 20.0) -> socket.socket:
    """
    Connect to a port on 127.0.0.1.

    @param port: The port.
    @param timeout: The socket's timeout for every later operation.
    @return: The connected socket.
    """
    return socket.create_connection((LOCAL, port), timeout=timeout)


def openTunnel(
    proxyPort: int, targetPort: int, host: str = LOCAL, early: bytes = b""
) -> tuple[socket.socket, bytes]:
    """
    Open a tunnel through the proxy and check that it answered 200.

    @param proxyPort: The proxy's port.
    @param targetPort: The destination's port.
    @param host: The destination's host.
    @param early: Bytes to send right after the request head, in the same
        C{sendall}.
    @return: The socket and whatever followed the response head.
    """
    sock = dial(proxyPort)
    try:
        sock.sendall(connectRequest(host, targetPort) + early)
        response, rest = readResponseHead(sock)
        assert response.raw == b"HTTP/1.1 200 Connection established\r\n\r\n", (
            response.raw
        )
    except BaseException:
        sock.close()
        raise
    return sock, rest


def closedPort() -> int:
    """
    Find a port on 127.0.0.1 that nothing listens on.

    @return: The port of a socket that was bound, then closed.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOCAL, 0))
        port: int = probe.getsockname()[1]
    return port
