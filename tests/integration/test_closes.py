# -*- test-case-name: tests.integration.test_closes -*-
"""
How a tunnel ends, on real loopback sockets through a proxy process: a reset
on one side is a reset on the other (after every byte that arrived before
it), a clean close stays clean, and a FIN sent together with the CONNECT is
passed on after the early data.

The test drives both ends itself with blocking sockets (each with a
timeout): it is the client and, through a listening socket of its own, the
origin.  Each test runs with each relay (C{--relay transport} and C{--relay
splice}), and checks that the access log names the relay that moved the
bytes.
"""

from __future__ import annotations

import fcntl
import socket
import ssl
import struct
import termios
from collections.abc import Iterator

import pytest

from tests.integration._pki import TLSFiles
from tests.integration._processes import OriginFactory, ProxyFactory, waitForPath
from tests.integration._sockets import (
    LOCAL,
    connectRequest,
    readExactly,
    readResponseHead,
    readToEnd,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("relay")]

PAYLOAD = bytes(range(256)) * 256
"""
64 KiB sent before the reset.
"""

ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """
    A listening socket on 127.0.0.1: the origin, played by the test.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCAL, 0))
        sock.listen(4)
        sock.settimeout(20)
        yield sock


def dialSmall(port: int) -> socket.socket:
    """
    Connect to 127.0.0.1 with a small receive buffer, so that the proxy
    cannot hand everything to the kernel at once and has to keep some of it
    in its own write buffer.

    @param port: The port.
    @return: The connected socket, with a timeout.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(20)
    sock.connect((LOCAL, port))
    return sock


def openThrough(
    proxyPort: int, listener: socket.socket
) -> tuple[socket.socket, socket.socket]:
    """
    Open a tunnel to the test's own origin.

    @return: The client's socket and the origin's accepted socket.
    """
    client = dialSmall(proxyPort)
    client.sendall(connectRequest(LOCAL, listener.getsockname()[1]))
    response, rest = readResponseHead(client)
    assert (response.raw, rest) == (ESTABLISHED, b"")
    origin, _ = listener.accept()
    origin.settimeout(20)
    return client, origin


def unsentBytes(sock: socket.socket) -> int:
    """
    How many bytes written to C{sock} the peer has not acknowledged yet
    (Linux C{SIOCOUTQ}).
    """
    raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4)
    count: int = struct.unpack("i", raw)[0]
    return count


def sendThenReset(sock: socket.socket, data: bytes) -> None:
    """
    Send C{data}, wait until the peer's kernel has acknowledged all of it,
    then close with C{SO_LINGER} 0: a reset, and no FIN.
    """
    sock.sendall(data)
    waitForPath(lambda: unsentBytes(sock) == 0, 20, "the peer took every byte")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def readUntilReset(sock: socket.socket, limit: int = 1 << 20) -> tuple[bytes, str]:
    """
    Read until the connection ends.

    @return: Everything read, and C{"reset"} or C{"eof"}.
    """
    data = bytearray()
    while len(data) <= limit:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return bytes(data), "reset"
        if not chunk:
            return bytes(data), "eof"
        data += chunk
    raise AssertionError(f"more than {limit} bytes")


def test_originResetReachesClient(
    proxy: ProxyFactory, listener: socket.socket, relay: str
) -> None:
    """
    An origin that sends 64 KiB and resets: the client gets every byte and
    then a reset, not a clean end of input that would make the truncated
    transfer look complete.
    """
    running = proxy()
    client, origin = openThrough(running.port, listener)
    with client:
        sendThenReset(origin, PAYLOAD)
        received, end = readUntilReset(client)
    assert (len(received), end) == (len(PAYLOAD), "reset")
    assert received == PAYLOAD
    event = running.waitForNamed("tunnel_close", port=listener.getsockname()[1])
    assert event["reason"].startswith("upstream connection lost")
    assert (event["bytesUp"], event["bytesDown"]) == (0, len(PAYLOAD))
    assert event["relay"] == relay


def test_clientResetReachesOrigin(
    proxy: ProxyFactory, listener: socket.socket, relay: str
) -> None:
    """
    A client that sends 64 KiB and resets: the origin gets every byte and
    then a reset.
    """
    running = proxy()
    client, origin = openThrough(running.port, listener)
    with origin:
        sendThenReset(client, PAYLOAD)
        received, end = readUntilReset(origin)
    assert (len(received), end) == (len(PAYLOAD), "reset")
    assert received == PAYLOAD
    event = running.waitForNamed("tunnel_close", port=listener.getsockname()[1])
    assert event["reason"].startswith("client connection lost")
    assert (event["bytesUp"], event["bytesDown"]) == (len(PAYLOAD), 0)
    assert event["relay"] == relay


def test_originResetReachesTLSClient(
    proxy: ProxyFactory, listener: socket.socket, tlsCertificate: TLSFiles
) -> None:
    """
    Behind a TLS listener an origin's reset reaches the client as a reset
    of the TCP connection, not as a TLS close_notify (a clean end).  Such a
    tunnel relays through the transports, whatever C{--relay} says.
    """
    tls = tlsCertificate
    running = proxy(
        listen=[
            f"ssl:0:interface=127.0.0.1:privateKey={tls.serverKey}"
            f":certKey={tls.serverCert}"
        ]
    )
    context = ssl.create_default_context(cafile=str(tls.caCert))
    raw = socket.create_connection((LOCAL, running.port), timeout=20)
    with context.wrap_socket(
        raw, server_hostname=LOCAL, suppress_ragged_eofs=False
    ) as client:
        client.sendall(connectRequest(LOCAL, listener.getsockname()[1]))
        response, rest = readResponseHead(client)
        assert (response.raw, rest) == (ESTABLISHED, b"")
        origin, _ = listener.accept()
        origin.settimeout(20)
        origin.sendall(PAYLOAD)
        assert readExactly(client, len(PAYLOAD)) == PAYLOAD
        sendThenReset(origin, b"")
        with pytest.raises((ConnectionResetError, ssl.SSLError)):
            client.recv(65536)
    event = running.waitForNamed("tunnel_close", port=listener.getsockname()[1])
    assert event["reason"].startswith("upstream connection lost")
    assert event["relay"] == "transport"


def test_cleanCloseStaysClean(
    proxy: ProxyFactory, listener: socket.socket, relay: str
) -> None:
    """
    An origin that sends 64 KiB and closes normally: the client gets every
    byte and a clean end of input.
    """
    running = proxy()
    client, origin = openThrough(running.port, listener)
    with client:
        origin.sendall(PAYLOAD)
        origin.close()
        received, end = readUntilReset(client)
    assert (received, end) == (PAYLOAD, "eof")
    event = running.waitForNamed("tunnel_close", port=listener.getsockname()[1])
    assert event["reason"] == "upstream closed"
    assert event["relay"] == relay


def test_finWithConnect(proxy: ProxyFactory, origin: OriginFactory, relay: str) -> None:
    """
    A CONNECT with a request body and a FIN right behind it (what
    C{printf ... | nc -N} sends): the origin gets the body and the FIN, and
    its reply reaches the client before the end of input.
    """
    running = proxy()
    echo = origin("echo")
    target = f"{LOCAL}:{echo.port}".encode("ascii")
    with socket.create_connection((LOCAL, running.port), timeout=20) as client:
        client.sendall(
            b"CONNECT " + target + b" HTTP/1.1\r\nHost: " + target + b"\r\n\r\n"
            b"request-body"
        )
        client.shutdown(socket.SHUT_WR)
        assert readExactly(client, len(ESTABLISHED)) == ESTABLISHED
        assert readToEnd(client) == b"request-body"
    echo.waitForLine("echo eof")
    event = running.waitForNamed("tunnel_close", port=echo.port)
    assert (event["bytesUp"], event["bytesDown"]) == (12, 12)
    assert event["reason"] == "client closed"
    assert event["relay"] == relay


def test_halfCloseTimeout(
    proxy: ProxyFactory, listener: socket.socket, relay: str
) -> None:
    """
    With C{--half-close-timeout}, a tunnel whose client has sent its FIN and
    whose origin never closes is closed after that time (not after the
    idle timeout), and the access log says why.
    """
    running = proxy("--half-close-timeout", "1", "--idle-timeout", "600")
    client, origin = openThrough(running.port, listener)
    with client, origin:
        client.sendall(b"question")
        client.shutdown(socket.SHUT_WR)
        assert readExactly(origin, 8) == b"question"
        assert origin.recv(1) == b""  # the FIN, passed on
        origin.sendall(b"answer")
        assert readExactly(client, 6) == b"answer"
        # The origin keeps its side open; the proxy closes both.
        assert readToEnd(client) == b""
    event = running.waitForNamed("tunnel_close", port=listener.getsockname()[1])
    assert event["reason"] == "half-close timeout"
    assert 1.0 <= event["duration"] < 5.0
    assert event["relay"] == relay
