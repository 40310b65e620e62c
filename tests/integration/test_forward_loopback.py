# -*- test-case-name: tests.integration.test_forward_loopback -*-
"""
Plain HTTP forwarding through a real proxy process to a small origin on
loopback that the test runs in a thread (standard library sockets only):
the pool seen from the origin's side, a body with its checksum, and an
Upgrade that becomes an echo tunnel after the origin's 101.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
from collections.abc import Iterator

import pytest
import requests

from tests.integration._modes import onlyOneProcess
from tests.integration._processes import ProxyFactory
from tests.integration._sockets import LOCAL, dial, readExactly, readResponseHead

pytestmark = pytest.mark.integration

TIMEOUT = 20.0


class TinyOrigin:
    """
    An HTTP/1.1 origin on 127.0.0.1 that keeps connections alive and
    counts them: every request gets C{200} with the path and the SHA-256 of
    its body (C{Content-Length} bodies only); a request with C{Upgrade}
    gets C{101}, and the connection then echoes what it receives.

    @ivar port: Where it listens.
    @ivar connections: How many connections it accepted.
    """

    def __init__(self) -> None:
        self._listener = socket.create_server((LOCAL, 0))
        self._listener.settimeout(TIMEOUT)
        self.port: int = self._listener.getsockname()[1]
        self.connections = 0
        self._stopping = False
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._serve, daemon=True)
        self._accepting.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._stopping:
                    # The connection that woke the accept up to stop.
                    connection.close()
                    return
                self._open.add(connection)
            self.connections += 1
            thread = threading.Thread(
                target=self._handle, args=(connection,), daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _handle(self, connection: socket.socket) -> None:
        try:
            self._exchange(connection)
        except OSError:
            # Closed under it by close(), or timed out.
            pass
        finally:
            with self._lock:
                self._open.discard(connection)
            connection.close()

    def _exchange(self, connection: socket.socket) -> None:
        connection.settimeout(TIMEOUT)
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                data = connection.recv(65536)
                if not data:
                    return
                buffer += data
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            target = lines[0].split(b" ")[1]
            fields = dict(
                (name.strip().lower(), value.strip())
                for name, _, value in (line.partition(b":") for line in lines[1:])
            )
            length = int(fields.get(b"content-length", b"0"))
            digest = hashlib.sha256()
            while length:
                if not buffer:
                    buffer = connection.recv(65536)
                    if not buffer:
                        return
                piece, buffer = buffer[:length], buffer[length:]
                digest.update(piece)
                length -= len(piece)
            if b"upgrade" in fields:
                connection.sendall(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\n"
                    b"Connection: Upgrade\r\n\r\n" + buffer
                )
                while data := connection.recv(65536):
                    connection.sendall(data)
                return
            reply = b"path=" + target + b" sha256=" + digest.hexdigest().encode()
            connection.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Length: "
                + str(len(reply)).encode()
                + b"\r\n\r\n"
                + reply
            )

    def close(self) -> None:
        """
        Stop at once: wake the thread blocked in C{accept} with a
        connection of its own (closing a listening socket does not wake
        it), shut down every connection still open (which wakes the
        threads blocked reading them), and wait for every thread, each
        for a bounded time.

        @raise AssertionError: When a thread is still running after that.
        """
        with self._lock:
            self._stopping = True
            still = list(self._open)
        with contextlib.suppress(OSError):
            socket.create_connection((LOCAL, self.port), TIMEOUT).close()
        for connection in still:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._accepting.join(TIMEOUT)
        self._listener.close()
        for thread in self._threads:
            thread.join(TIMEOUT)
        running = [t for t in [self._accepting, *self._threads] if t.is_alive()]
        assert not running, running


@pytest.fixture
def tinyOrigin() -> Iterator[TinyOrigin]:
    """
    A L{TinyOrigin}, closed when the test ends.
    """
    origin = TinyOrigin()
    yield origin
    origin.close()


@onlyOneProcess(
    "a second client connection reuses the first one's upstream "
    "connection only on the same worker: the pool is per worker "
    "(docs/operating.md, Limits are per worker)"
)
def test_poolReusesOneOriginConnection(
    proxy: ProxyFactory, tinyOrigin: TinyOrigin
) -> None:
    """
    Requests from two client connections, one after the other, reach the
    origin on one connection: the second goes on the pooled one.  The
    access log has one event per request, the second marked reused.
    """
    running = proxy()
    proxies = {"http": f"http://{LOCAL}:{running.port}"}
    base = f"http://{LOCAL}:{tinyOrigin.port}"
    for path in ("/one", "/two"):
        with requests.Session() as session:
            response = session.get(base + path, proxies=proxies, timeout=TIMEOUT)
        assert response.status_code == 200
        assert response.text.startswith(f"path={path} ")
        assert response.headers["Via"] == "1.1 connectproxy"
    assert tinyOrigin.connections == 1
    second = running.waitForNamed("request_forwarded", target=base + "/two")
    assert second["reused"] is True
    assert second["status"] == 200


def test_postBodyChecksum(proxy: ProxyFactory, tinyOrigin: TinyOrigin) -> None:
    """
    A POST body of a few megabytes reaches the origin whole.
    """
    running = proxy()
    body = bytes(range(256)) * (4 * 4096)
    response = requests.post(
        f"http://{LOCAL}:{tinyOrigin.port}/upload",
        data=body,
        proxies={"http": f"http://{LOCAL}:{running.port}"},
        timeout=TIMEOUT,
    )
    assert response.text.endswith(hashlib.sha256(body).hexdigest())


def test_upgradeEchoTunnel(proxy: ProxyFactory, tinyOrigin: TinyOrigin) -> None:
    """
    An Upgrade request through the proxy gets the origin's 101, and the
    connection then carries bytes both ways, as a tunnel.
    """
    running = proxy()
    with dial(running.port, TIMEOUT) as sock:
        sock.sendall(
            f"GET http://{LOCAL}:{tinyOrigin.port}/ws HTTP/1.1\r\n"
            f"Host: {LOCAL}:{tinyOrigin.port}\r\n"
            "Connection: Upgrade\r\nUpgrade: echo\r\n\r\n".encode()
        )
        head, rest = readResponseHead(sock)
        assert head.status == 101
        for message in (b"hello", b"world" * 1000):
            sock.sendall(message)
            echoed = rest + readExactly(sock, len(message) - len(rest))
            rest = b""
            assert echoed == message
    event = running.waitForNamed("request_forwarded", status=101)
    assert event["bytesUp"] > 5000
