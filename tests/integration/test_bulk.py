# -*- test-case-name: tests.integration.test_bulk -*-
"""
Bulk transfer in both directions at once through a proxy process, checked
with SHA-256 at both ends, with each relay (C{--relay}).
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading

import pytest

from tests.integration._origin import (
    BULK_HEADER_SIZE,
    TRAILER_SIZE,
    blockStream,
    parseTrailer,
    streamDigest,
)
from tests.integration._processes import OriginFactory, ProxyFactory
from tests.integration._sockets import openTunnel, readToEnd

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.usefixtures("relay"),
]

SIZE = 64 << 20
"""
Bytes sent in each direction.
"""


def sendUpload(sock: socket.socket, errors: list[BaseException]) -> str:
    """
    Send the header and L{SIZE} bytes of the C{up} stream, then half-close.

    @param sock: The tunnel.
    @param errors: Gets any exception, for the main thread to raise.
    @return: The hex SHA-256 of what was sent after the header.
    """
    digest = hashlib.sha256()
    try:
        sock.sendall(b"%0*d" % (BULK_HEADER_SIZE, SIZE))
        for block in blockStream("up", SIZE):
            sock.sendall(block)
            digest.update(block)
        sock.shutdown(socket.SHUT_WR)
    except BaseException as e:
        errors.append(e)
    return digest.hexdigest()


def receiveDownload(sock: socket.socket) -> tuple[str, int]:
    """
    Receive the origin's L{SIZE} bytes.

    @param sock: The tunnel.
    @return: The hex SHA-256 of what arrived, and how much arrived.
    """
    digest = hashlib.sha256()
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    count = 0
    while count < SIZE:
        got = sock.recv_into(view[: min(len(buffer), SIZE - count)])
        assert got, f"end of input after {count} of {SIZE} bytes"
        digest.update(view[:got])
        count += got
    return digest.hexdigest(), count


def test_bothDirectionsAtOnce(
    proxy: ProxyFactory, origin: OriginFactory, relay: str
) -> None:
    """
    64 MiB up and 64 MiB down at the same time arrive intact at both ends,
    and the access log counts every byte, with each relay.
    """
    server = origin("bulk")
    running = proxy()
    sock, rest = openTunnel(running.port, server.port)
    errors: list[BaseException] = []
    sentDigest: list[str] = []
    sender = threading.Thread(
        target=lambda: sentDigest.append(sendUpload(sock, errors)), daemon=True
    )
    with sock:
        assert rest == b""
        sender.start()
        try:
            receivedDigest, receivedCount = receiveDownload(sock)
            trailer = readToEnd(sock, TRAILER_SIZE)
        finally:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sender.join(60)
    assert not sender.is_alive(), "the sender is stuck"
    assert errors == []
    expected = streamDigest("down", SIZE)
    assert (receivedDigest, receivedCount) == (expected, SIZE)
    originSaw = parseTrailer(trailer)
    assert originSaw["RECV"] == (sentDigest[0], SIZE)
    assert originSaw["SENT"] == (expected, SIZE)
    line = server.waitForLine(r"bulk recv=(\w+) (\d+) sent=(\w+) (\d+) upload=(\w+)$")
    assert line.groups() == (sentDigest[0], str(SIZE), expected, str(SIZE), "ok")
    event = running.waitForNamed("tunnel_close", port=server.port)
    assert event["status"] == 200
    assert event["bytesUp"] == BULK_HEADER_SIZE + SIZE
    assert event["bytesDown"] == SIZE + TRAILER_SIZE
    assert event["relay"] == relay
