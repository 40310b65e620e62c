# -*- test-case-name: tests.integration.test_outgoing -*-
"""
C{--outgoing-address} with real sockets: the origin (a listening socket in
the test) sees the connection come from the chosen loopback address, and an
address the machine does not have gets a clear 502.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.integration._processes import (
    LISTEN_ANY_PORT,
    LISTEN_ANY_PORT6,
    ProxyFactory,
)
from tests.integration._sockets import (
    LOCAL,
    connectRequest,
    dial,
    openTunnel,
    readResponseHead,
    readToEnd,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def origin4() -> Iterator[socket.socket]:
    """
    A listening socket on 127.0.0.1 (port 0), closed when the test ends.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((LOCAL, 0))
        listener.listen(4)
        listener.settimeout(20)
        yield listener


@pytest.fixture
def origin6() -> Iterator[socket.socket]:
    """
    A listening socket on ::1 (port 0), closed when the test ends.
    """
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as listener:
        listener.bind(("::1", 0))
        listener.listen(4)
        listener.settimeout(20)
        yield listener


def peerOfTunnel(proxyPort: int, origin: socket.socket, host: str) -> str:
    """
    Open a tunnel to C{origin} through the proxy, send a byte each way, and
    say where the origin saw the connection come from.
    """
    port = origin.getsockname()[1]
    sock, _ = openTunnel(proxyPort, port, host)
    with sock:
        accepted, peer = origin.accept()
        with accepted:
            sock.sendall(b"x")
            assert accepted.recv(1) == b"x"
            accepted.sendall(b"y")
            assert sock.recv(1) == b"y"
    return str(peer[0])


def test_originSeesOutgoingAddress(
    proxy: ProxyFactory, origin4: socket.socket, origin6: socket.socket
) -> None:
    """
    With an IPv4 and an IPv6 outgoing address, an IPv4 origin sees the
    connection come from 127.0.0.7 (not the usual 127.0.0.1), and an IPv6
    origin from ::1.
    """
    running = proxy("--outgoing-address", "127.0.0.7", "--outgoing-address", "::1")
    assert peerOfTunnel(running.port, origin4, LOCAL) == "127.0.0.7"
    assert peerOfTunnel(running.port, origin6, "[::1]") == "::1"


def test_familyWithoutOutgoingAddressNotTried(
    proxy: ProxyFactory, origin4: socket.socket
) -> None:
    """
    With an IPv4 outgoing address only, C{localhost} (::1 and 127.0.0.1)
    is reached over IPv4, from that address.
    """
    running = proxy("--outgoing-address", "127.0.0.7")
    assert peerOfTunnel(running.port, origin4, "localhost") == "127.0.0.7"


@pytest.mark.parametrize(
    "address, origin",
    [("192.0.2.1", "origin4"), ("2001:db8::1", "origin6")],
    ids=["ipv4", "ipv6"],
)
def test_addressNotOnThisMachine(
    proxy: ProxyFactory, request: pytest.FixtureRequest, address: str, origin: str
) -> None:
    """
    An outgoing address the machine does not have (IPv4 to an IPv4 origin,
    IPv6 to an IPv6 one, each through a listener of that family): the
    proxy starts with a warning, each connect gets 502 naming the option,
    and the log has one connect_failed line for it, without a traceback.
    """
    listening: socket.socket = request.getfixturevalue(origin)
    host, port = listening.getsockname()[:2]
    listen = LISTEN_ANY_PORT6 if ":" in host else LISTEN_ANY_PORT
    running = proxy("--outgoing-address", address, listen=[listen])
    running.waitForNamed("outgoing_address_unavailable", address=address)
    with dial(running.port, host=host) as sock:
        sock.sendall(connectRequest(host, port))
        response, rest = readResponseHead(sock)
        body = rest + readToEnd(sock)
    assert response.status == 502
    assert (
        body
        == (
            f"502 Bad Gateway: cannot bind the outgoing address {address} "
            "(see --outgoing-address)\n"
        ).encode()
    )
    running.waitForNamed("request_refused", status=502)
    failed = [e for e in running.events if e.get("event") == "connect_failed"]
    assert len(failed) == 1
    assert failed[0]["error"].startswith(
        f"cannot bind the outgoing address {address} (see --outgoing-address): "
    )


def test_parentSeesOutgoingAddress(proxy: ProxyFactory, origin4: socket.socket) -> None:
    """
    Through a parent proxy (C{--upstream-proxy}), the connection to the
    parent comes from the outgoing address too: a parent (here a listening
    socket that answers the proxy's CONNECT itself) sees 127.0.0.7.
    """
    parentPort = origin4.getsockname()[1]
    running = proxy(
        "--outgoing-address",
        "127.0.0.7",
        "--upstream-proxy",
        f"http://{LOCAL}:{parentPort}",
    )
    with dial(running.port) as client:
        client.sendall(connectRequest(LOCAL, 443))
        accepted, peer = origin4.accept()
        with accepted:
            accepted.settimeout(20)
            head, _ = readHead(accepted)
            assert head.startswith(b"CONNECT 127.0.0.1:443 HTTP/1.1\r\n")
            accepted.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            response, _ = readResponseHead(client)
            assert response.status == 200
    assert peer[0] == "127.0.0.7"
    event = running.waitForNamed("tunnel_close")
    assert event["upstream"] == f"{LOCAL}:{parentPort}"


def readHead(sock: socket.socket) -> tuple[bytes, bytes]:
    """
    Read a request head from a socket with a timeout.

    @return: The head (with its empty line) and what followed it.
    """
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"closed before a request head: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest
