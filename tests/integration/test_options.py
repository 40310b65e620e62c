# -*- test-case-name: tests.integration.test_options -*-
"""
The command-line options of a proxy process, seen from a raw socket: the
deadlines, the size limits and several listeners.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.integration._processes import OriginFactory, ProxyFactory
from tests.integration._sockets import (
    LOCAL,
    connectRequest,
    dial,
    openTunnel,
    readExactly,
    readResponseHead,
    readToEnd,
)

pytestmark = pytest.mark.integration

LONG_TARGET = b"127.0.0.1:" + b"0" * 80 + b"9"
"""
A long request target that names nothing but 127.0.0.1 (port 9, with
leading zeros), so that a proxy that does not enforce the line limit still
neither resolves a name nor leaves the machine.
"""


@pytest.fixture
def blackHole() -> Iterator[int]:
    """
    A port on 127.0.0.1 whose accept queue is full (a backlog of 0 and one
    connection nobody accepts), so the kernel drops new connection attempts
    and they hang: an upstream that never answers.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((LOCAL, 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        with socket.create_connection((LOCAL, port), timeout=5):
            yield port


def test_connectTimeout(proxy: ProxyFactory, blackHole: int) -> None:
    """
    With C{--connect-timeout}, an upstream that never answers gets the client
    a 504 and a C{request_refused} event.
    """
    running = proxy("--connect-timeout", "1")
    with dial(running.port) as sock:
        sock.sendall(connectRequest(LOCAL, blackHole))
        response, _ = readResponseHead(sock)
        readToEnd(sock)
    assert response.status == 504
    assert response.headers["connection"].lower() == "close"
    assert running.waitForNamed("request_refused")["status"] == 504


def test_idleTimeout(proxy: ProxyFactory, origin: OriginFactory) -> None:
    """
    With C{--idle-timeout}, a tunnel that carries nothing is closed and the
    access log says why.
    """
    running = proxy("--idle-timeout", "1")
    echo = origin("echo")
    sock, _ = openTunnel(running.port, echo.port)
    with sock:
        sock.sendall(b"one round trip")
        assert readExactly(sock, 14) == b"one round trip"
        assert readToEnd(sock) == b""
    event = running.waitForNamed("tunnel_close", port=echo.port)
    assert (event["bytesUp"], event["bytesDown"]) == (14, 14)
    assert "idle" in event["reason"].lower()


def test_requestTimeout(proxy: ProxyFactory) -> None:
    """
    With C{--request-timeout}, a client that never finishes its request head
    gets 408 naming the timeout and the option; the log says the same.
    """
    running = proxy("--request-timeout", "1")
    reason = "timed out waiting for the request head after 1 second"
    reason += " (see --request-timeout)"
    with dial(running.port) as sock:
        sock.sendall(b"CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1")
        response, body = readResponseHead(sock)
        body += readToEnd(sock)
    assert response.status == 408
    assert body == f"408 Request Timeout: {reason}\n".encode()
    event = running.waitForNamed("request_refused")
    assert (event["status"], event["reason"]) == (408, reason)


@pytest.mark.parametrize(
    ("options", "head", "status", "reason"),
    [
        (
            ["--max-request-line", "64"],
            connectRequest(LOCAL, None).replace(LOCAL.encode(), LONG_TARGET, 1),
            414,
            "request line longer than 64 bytes (see --max-request-line)",
        ),
        (
            ["--max-head-size", "256", "--max-request-line", "64"],
            connectRequest(LOCAL, 9)[:-2] + b"X-Padding: " + b"p" * 300 + b"\r\n\r\n",
            431,
            "request head larger than 256 bytes (see --max-head-size)",
        ),
    ],
)
def test_sizeLimits(
    proxy: ProxyFactory, options: list[str], head: bytes, status: int, reason: str
) -> None:
    """
    A request line or head larger than the configured limit is refused with
    its own status and a reason naming the limit and its option, before any
    upstream connect.
    """
    running = proxy(*options)
    with dial(running.port) as sock:
        sock.sendall(head)
        response, body = readResponseHead(sock)
        body += readToEnd(sock)
    assert response.status == status
    assert body.endswith(f": {reason}\n".encode())
    assert running.waitForNamed("request_refused")["reason"] == reason
    assert response.headers["connection"].lower() == "close"
    assert not any(e.get("event") == "connect_failed" for e in running.events)


def test_severalListeners(proxy: ProxyFactory, origin: OriginFactory) -> None:
    """
    Each C{--listen} is a working listener of its own.
    """
    listen = ["tcp:0:interface=127.0.0.1"] * 2
    running = proxy(listen=listen)
    ports = {int(event["port"]) for event in running.listening}
    assert len(ports) == 2
    echo = origin("echo")
    for port in ports:
        sock, _ = openTunnel(port, echo.port)
        with sock:
            sock.sendall(str(port).encode())
            assert readExactly(sock, len(str(port))) == str(port).encode()
