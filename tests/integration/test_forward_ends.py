# -*- test-case-name: tests.integration.test_forward_ends -*-
"""
How forwarded exchanges end on real sockets: a response the origin cuts
short reaches the client as far as it came, then a reset; a client that
leaves (a FIN after its request, or a reset) does not keep the origin's
connection.  The origin is a scripted one the test runs in a thread.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from tests.integration._processes import ProxyFactory, ProxyProcess
from tests.integration._sockets import LOCAL, dial

pytestmark = pytest.mark.integration

TIMEOUT = 20.0


class ScriptedOrigin:
    """
    An origin on 127.0.0.1 that accepts connections, reads each request
    head, answers C{answer} (nothing when empty) and then closes, or, with
    C{hold}, keeps the connection until the proxy closes it.

    @ivar port: Where it listens.
    @ivar closedByPeer: Set when a held connection was closed by the proxy
        (before or after the request head came).
    """

    def __init__(self, answer: bytes, hold: bool = False) -> None:
        self._answer = answer
        self._hold = hold
        self._listener = socket.create_server((LOCAL, 0))
        self.port: int = self._listener.getsockname()[1]
        self.accepted = threading.Event()
        self.closedByPeer = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._listener.settimeout(TIMEOUT)
        try:
            connection, _ = self._listener.accept()
        except OSError:
            return
        with connection:
            self.accepted.set()
            connection.settimeout(TIMEOUT)
            received = b""
            try:
                while b"\r\n\r\n" not in received:
                    chunk = connection.recv(65536)
                    if not chunk:
                        # The proxy closed before sending the whole head:
                        # it gave the connection up (its client left before
                        # it was connected), which is closing it too.
                        if self._hold:
                            self.closedByPeer.set()
                        return
                    received += chunk
                if self._answer:
                    connection.sendall(self._answer)
                if self._hold:
                    while connection.recv(65536):
                        pass
                    self.closedByPeer.set()
            except OSError:
                self.closedByPeer.set()

    def close(self) -> None:
        self._listener.close()
        self._thread.join(TIMEOUT)


@pytest.fixture
def origins() -> Iterator[list[ScriptedOrigin]]:
    made: list[ScriptedOrigin] = []
    yield made
    for origin in made:
        origin.close()


def _request(port: int) -> bytes:
    return (
        f"GET http://{LOCAL}:{port}/ HTTP/1.1\r\nHost: {LOCAL}:{port}\r\n\r\n"
    ).encode()


def _readUntilEnd(sock: socket.socket) -> tuple[bytes, bool]:
    """
    Read until the end of input.

    @return: What came, and whether the end was a reset.
    """
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, False
        data += chunk


def test_cutShortResponseDelivered(
    proxy: ProxyFactory, origins: list[ScriptedOrigin]
) -> None:
    """
    The origin sends a head announcing 100 bytes and 5 of them, then
    closes: the client gets the head and the 5 bytes, then a reset, and the
    access log says so.
    """
    running = proxy()
    origin = ScriptedOrigin(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
    origins.append(origin)
    with dial(running.port, TIMEOUT) as sock:
        sock.sendall(_request(origin.port))
        data, reset = _readUntilEnd(sock)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b"\r\n\r\nshort")
    assert reset
    event = running.waitForNamed("request_forwarded", outcome="upstream_failed")
    assert event["status"] == 200
    assert event["reason"] == (
        "the origin closed the connection before the end of the response"
    )


def openSockets(process: ProxyProcess) -> int:
    """
    How many sockets the proxy process (with C{--workers}, its workers)
    has open.  Sockets only: the reactor opens pipes of its own (its
    waker) once it runs, which may be after the proxy says it listens.
    """
    count = 0
    for pid in process.servingPids:
        directory = f"/proc/{pid}/fd"
        for name in os.listdir(directory):
            try:
                target = os.readlink(f"{directory}/{name}")
            except FileNotFoundError:
                continue
            count += target.startswith("socket:")
    return count


def waitForSockets(process: ProxyProcess, count: int) -> None:
    """
    Wait (bounded) until the proxy has C{count} sockets open.
    """
    deadline = time.monotonic() + TIMEOUT
    while openSockets(process) != count:
        assert time.monotonic() < deadline, (openSockets(process), count)
        time.sleep(0.05)


@pytest.mark.parametrize("reset", [False, True])
def test_clientGoneReleasesOrigin(
    proxy: ProxyFactory, origins: list[ScriptedOrigin], reset: bool
) -> None:
    """
    A client that sends its request and closes its socket (a FIN), or
    resets it, while the origin does not answer: the proxy closes the
    origin's connection (after --half-close-timeout for a FIN, at once for
    a reset, long before --idle-timeout), and its sockets come back to
    what they were.  A client that leaves before the proxy is connected
    (the origin accepted, the proxy has not heard yet) has the connect
    given up, which closes the origin's connection before any request.
    """
    running = proxy("--half-close-timeout", "1", "--idle-timeout", "600")
    origin = ScriptedOrigin(b"", hold=True)
    origins.append(origin)
    baseline = openSockets(running)
    sock = dial(running.port, TIMEOUT)
    sock.sendall(_request(origin.port))
    assert origin.accepted.wait(TIMEOUT)
    if reset:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    assert origin.closedByPeer.wait(TIMEOUT)
    waitForSockets(running, baseline)
    if not reset:
        event = running.waitForNamed("request_refused", status=504)
        assert "--half-close-timeout" in str(event["reason"])
