# -*- test-case-name: tests.integration.test_clients -*-
"""
HTTP CONNECT from a raw socket: send a request head, read the response head,
read exact amounts or up to end of input.  Every socket has a timeout, so no
read waits forever.  The loopback address of each family (L{IPV4},
L{IPV6}), for tests that run on both (L{bothFamilies}).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

import pytest

LOCAL = "127.0.0.1"
"""
The IPv4 address the tests talk to.
"""

LOCAL6 = "::1"
"""
The IPv6 address the tests talk to.
"""


def bracketed(host: str) -> str:
    """
    A host as an authority or URL writes it: an IPv6 address in brackets.

    @param host: A name, an IPv4 address, an IPv6 address with or without
        brackets, or anything else (a whole C{host:port}), left as it is.
    """
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return host
    return f"[{host}]"


@dataclass(frozen=True)
class Loopback:
    """
    An address family the tests run on, through its loopback address.

    @ivar name: C{ipv4} or C{ipv6}, the test ID.
    @ivar host: C{127.0.0.1} or C{::1}.
    @ivar family: C{AF_INET} or C{AF_INET6}.
    """

    name: str
    host: str
    family: socket.AddressFamily

    @property
    def authority(self) -> str:
        """
        The host as an authority or URL writes it (C{[::1]}).
        """
        return bracketed(self.host)

    @property
    def interface(self) -> str:
        """
        The host as a listener description writes it (C{\\:\\:1}).
        """
        return self.host.replace(":", "\\:")

    @property
    def listen(self) -> str:
        """
        A listener description for a free port on this address.
        """
        kind = "tcp6" if self.family == socket.AF_INET6 else "tcp"
        return f"{kind}:0:interface={self.interface}"

    def address(self, port: int) -> str:
        """
        An address on this host as the log writes it: C{127.0.0.1:PORT} or
        C{[::1]:PORT}.
        """
        return f"{self.authority}:{port}"


IPV4 = Loopback("ipv4", LOCAL, socket.AF_INET)
IPV6 = Loopback("ipv6", LOCAL6, socket.AF_INET6)

bothFamilies = pytest.mark.parametrize(
    "family", [IPV4, IPV6], ids=["ipv4", "ipv6"], indirect=True
)
"""
Runs a test that takes the C{family} fixture (L{IPV4} by default) on both
address families.
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

    @param host: The authority's host (an IPv6 address gets its brackets).
    @param port: Its port; L{None} leaves it out.
    @return: The head.
    """
    host = bracketed(host)
    authority = host if port is None else f"{host}:{port}"
    return (f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").encode(
        "ascii"
    )


def dial(port: int, timeout: float = 20.0, host: str = LOCAL) -> socket.socket:
    """
    Connect to a port on loopback.

    @param port: The port.
    @param timeout: The socket's timeout for every later operation.
    @param host: C{127.0.0.1} or C{::1}.
    @return: The connected socket.
    """
    return socket.create_connection((host, port), timeout=timeout)


def openTunnel(
    proxyPort: int,
    targetPort: int,
    host: str = LOCAL,
    early: bytes = b"",
    proxyHost: str = LOCAL,
) -> tuple[socket.socket, bytes]:
    """
    Open a tunnel through the proxy and check that it answered 200.

    @param proxyPort: The proxy's port.
    @param targetPort: The destination's port.
    @param host: The destination's host.
    @param early: Bytes to send right after the request head, in the same
        C{sendall}.
    @param proxyHost: The proxy's address (C{127.0.0.1} or C{::1}).
    @return: The socket and whatever followed the response head.
    """
    sock = dial(proxyPort, host=proxyHost)
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


def closedPort(host: str = LOCAL) -> int:
    """
    Find a port on loopback that nothing listens on.

    @param host: C{127.0.0.1} or C{::1}.
    @return: The port of a socket that was bound, then closed.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
    return port
