# -*- test-case-name: tests.integration.test_memory -*-
"""
A slow reader behind the proxy: the proxy must stop reading from the origin
instead of buffering, so its memory stays bounded however much the origin
has to send.
"""

from __future__ import annotations

import socket

import pytest

from tests.integration._processes import OriginFactory, ProxyFactory, residentBytes
from tests.integration._sockets import LOCAL, connectRequest, readResponseHead

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.usefixtures("relay"),
]

TOTAL = 512 << 20
"""
What the origin pushes.
"""

MARGIN = 64 << 20
"""
How far above its idle size the proxy's resident memory may grow.
"""

SAMPLE_EVERY = 4 << 20
"""
Read this many bytes between two samples of the proxy's memory.
"""


def slowClient(proxyPort: int, originPort: int) -> tuple[socket.socket, int]:
    """
    Open a tunnel from a client with a small receive buffer, so that the
    kernel holds little on its behalf.

    @param proxyPort: The proxy's port.
    @param originPort: The origin's port.
    @return: The tunnel, and how many bytes of the origin's stream arrived
        with the response head.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.settimeout(30)
        sock.connect((LOCAL, proxyPort))
        sock.sendall(connectRequest(LOCAL, originPort))
        response, rest = readResponseHead(sock)
        assert response.status == 200, response.raw
    except BaseException:
        sock.close()
        raise
    return sock, len(rest)


def test_slowReaderKeepsProxyMemoryBounded(
    proxy: ProxyFactory, origin: OriginFactory, relay: str
) -> None:
    """
    While the client reads nothing the origin gets blocked after a small
    part of 512 MiB, and while the client reads it all in small pieces the
    proxy's resident memory stays within 64 MiB of its idle size, with each
    relay.
    """
    running = proxy()
    baseline = residentBytes(*running.servingPids)
    pusher = origin("push", "--bytes", str(TOTAL))
    sock, received = slowClient(running.port, pusher.port)
    with sock:
        state = pusher.waitForLine(r"(blocked|done) (\d+)$", timeout=30)
        assert state.group(1) == "blocked", (
            f"the origin sent all {TOTAL} bytes to a client that read none"
        )
        assert int(state.group(2)) < TOTAL // 8
        blockedSize = residentBytes(*running.servingPids)
        assert blockedSize < baseline + MARGIN, (baseline, blockedSize)
        largest = blockedSize
        nextSample = received + SAMPLE_EVERY
        while True:
            chunk = sock.recv(16384)
            if not chunk:
                break
            received += len(chunk)
            if received >= nextSample:
                largest = max(largest, residentBytes(*running.servingPids))
                nextSample += SAMPLE_EVERY
    assert received == TOTAL
    assert largest < baseline + MARGIN, (baseline, largest)
    pusher.waitForLine(f"done {TOTAL}$")
    event = running.waitForNamed("tunnel_close", port=pusher.port)
    assert (event["bytesUp"], event["bytesDown"]) == (0, TOTAL)
    assert event["relay"] == relay
