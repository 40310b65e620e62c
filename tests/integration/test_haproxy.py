# -*- test-case-name: tests.integration.test_haproxy -*-
"""
The proxy behind a load balancer that sends the PROXY protocol: a real
HAProxy in TCP mode with C{send-proxy-v2} in front of a C{haproxy:}
listener, and raw headers sent by the test itself.

HAProxy runs in the foreground (C{-db}) with a configuration in a temporary
directory, listening on a socket the test binds and passes to it
(C{bind fd@N}), so it accepts as soon as it runs; it is stopped by PID.
"""

from __future__ import annotations

import shutil
import socket
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration._modes import onlyOneProcess
from tests.integration._output import LineCollector
from tests.integration._processes import (
    ChildProcess,
    OriginFactory,
    OriginProcess,
    ProxyFactory,
    ProxyProcess,
    cleanEnvironment,
    waitForPath,
)
from tests.integration._sockets import (
    LOCAL,
    connectRequest,
    readExactly,
    readResponseHead,
    readToEnd,
)
from tests.integration.test_closes import readUntilReset, sendThenReset

pytestmark = pytest.mark.integration

HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")

ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"

#: A PROXY-protocol listener on a free port of 127.0.0.1.
LISTEN_PROXY = "haproxy:tcp:0:interface=127.0.0.1"

#: Serve clients anywhere on loopback behind the balancer (loopback is not
#: implied behind a PROXY-protocol listener).
ALLOW_LOOPBACK = ("--allow-client", "127.0.0.0/8")

HAProxyFactory = Callable[..., int]


@pytest.fixture
def echoOrigin(origin: OriginFactory) -> OriginProcess:
    """
    A plain TCP echo origin on 127.0.0.1.
    """
    return origin("echo")


@pytest.fixture
def haproxy(
    scratchDir: Path, processes: list[ChildProcess[Any]]
) -> Iterator[HAProxyFactory]:
    """
    Start HAProxy in front of a proxy: C{haproxy(running, family)} returns
    the port it listens on (on 127.0.0.1, or ::1 for C{AF_INET6}), with the
    proxy's first listener as its only server, reached over the same
    family unless C{serverFamily} says otherwise.
    """
    if HAPROXY is None:
        pytest.skip("haproxy is not installed")
    counter = iter(range(1000))

    def start(
        running: ProxyProcess,
        family: int = socket.AF_INET,
        serverFamily: int | None = None,
    ) -> int:
        host = LOCAL if family == socket.AF_INET else "::1"
        if serverFamily is None:
            serverFamily = family
        with socket.socket(family, socket.SOCK_STREAM) as front:
            front.bind((host, 0))
            front.listen(16)
            port: int = front.getsockname()[1]
            server = f"ipv4@{LOCAL}" if serverFamily == socket.AF_INET else "ipv6@::1"
            config = scratchDir / f"haproxy-{next(counter)}.cfg"
            config.write_text(
                "global\n"
                "    maxconn 256\n"
                "defaults\n"
                "    mode tcp\n"
                "    timeout connect 5s\n"
                "    timeout client 30s\n"
                "    timeout server 30s\n"
                "frontend front\n"
                f"    bind fd@{front.fileno()}\n"
                "    default_backend proxies\n"
                "backend proxies\n"
                f"    server connectproxy {server}:{running.port} send-proxy-v2\n",
                encoding="ascii",
            )
            argv = [HAPROXY, "-db", "-f", str(config)]
            balancer = ChildProcess(
                argv,
                LineCollector,
                cleanEnvironment(),
                scratchDir,
                passFds=[front.fileno()],
            )
            processes.append(balancer)
        return port

    yield start


def dialFrom(
    port: int, source: str = LOCAL, family: int = socket.AF_INET
) -> socket.socket:
    """
    Connect to a port on loopback from a given loopback address.

    @param port: The port, on 127.0.0.1 (or ::1 for C{AF_INET6}).
    @param source: The address to connect from.
    @return: The socket, with a timeout.
    """
    host = LOCAL if family == socket.AF_INET else "::1"
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(20)
    try:
        sock.bind((source, 0))
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def tunnelFrom(
    port: int, echo: OriginProcess, source: str = LOCAL, family: int = socket.AF_INET
) -> socket.socket:
    """
    Open a tunnel to the echo origin from C{source}, and check that it
    echoes.

    @return: The client's socket.
    """
    sock = dialFrom(port, source, family)
    try:
        sock.sendall(connectRequest(LOCAL, echo.port))
        response, rest = readResponseHead(sock)
        assert (response.raw, rest) == (ESTABLISHED, b"")
        sock.sendall(b"through the balancer")
        assert readExactly(sock, 20) == b"through the balancer"
    except BaseException:
        sock.close()
        raise
    return sock


def test_clientAddressFromHAProxy(
    proxy: ProxyFactory, haproxy: HAProxyFactory, echoOrigin: OriginProcess
) -> None:
    """
    Behind HAProxy (C{send-proxy-v2}), the access log names the client
    (127.0.0.5 and its own port), not the balancer.
    """
    running = proxy(*ALLOW_LOOPBACK, listen=[LISTEN_PROXY])
    front = haproxy(running)
    with tunnelFrom(front, echoOrigin, "127.0.0.5") as client:
        clientPort = client.getsockname()[1]
    event = running.waitForNamed("tunnel_close", port=echoOrigin.port)
    assert event["client"] == f"127.0.0.5:{clientPort}"


@onlyOneProcess(
    "counts --max-connections-per-client, which is per worker "
    "(docs/operating.md, Limits are per worker)"
)
def test_perClientLimitBehindHAProxy(
    proxy: ProxyFactory, haproxy: HAProxyFactory, echoOrigin: OriginProcess
) -> None:
    """
    C{--max-connections-per-client} counts each client behind the balancer:
    127.0.0.5's second connection gets 503 while 127.0.0.6 is served.
    """
    running = proxy(
        *ALLOW_LOOPBACK, "--max-connections-per-client", "1", listen=[LISTEN_PROXY]
    )
    front = haproxy(running)
    with tunnelFrom(front, echoOrigin, "127.0.0.5") as first:
        with dialFrom(front, "127.0.0.5") as second:
            second.sendall(connectRequest(LOCAL, echoOrigin.port))
            response, body = readResponseHead(second)
            assert response.status == 503
            assert (body + readToEnd(second)).endswith(
                b"this client has too many connections "
                b"(see --max-connections-per-client)\n"
            )
        with tunnelFrom(front, echoOrigin, "127.0.0.6"):
            pass
        first.sendall(b"still open")
        assert readExactly(first, 10) == b"still open"
    event = running.waitForNamed("request_refused", status=503)
    assert event["client"].startswith("127.0.0.5:")


def test_clientAddressFromHAProxyIPv6(
    proxy: ProxyFactory, haproxy: HAProxyFactory, echoOrigin: OriginProcess
) -> None:
    """
    The same over IPv6: HAProxy on ::1 in front of a C{haproxy:tcp6:}
    listener; the access log names the client's own port.  The client (::1,
    as the balancer) must be in --allow-client: loopback is not implied.
    """
    running = proxy(
        "--allow-client", "::1/128", listen=["haproxy:tcp6:0:interface=\\:\\:1"]
    )
    front = haproxy(running, socket.AF_INET6)
    with tunnelFrom(front, echoOrigin, "::1", socket.AF_INET6) as client:
        clientPort = client.getsockname()[1]
    event = running.waitForNamed("tunnel_close", port=echoOrigin.port)
    assert event["client"] == f"[::1]:{clientPort}"


def test_ipv6ClientThroughIPv4Balancer(
    proxy: ProxyFactory, haproxy: HAProxyFactory, echoOrigin: OriginProcess
) -> None:
    """
    Mixed families behind HAProxy: a client on ::1 reaches HAProxy over
    IPv6, HAProxy reaches a C{haproxy:tcp:} listener on 127.0.0.1 over
    IPv4; the header carries the IPv6 client, whom the IPv6 C{--allow-client}
    serves and the log names as C{[::1]:PORT}.
    """
    running = proxy("--allow-client", "::1/128", listen=[LISTEN_PROXY])
    front = haproxy(running, socket.AF_INET6, socket.AF_INET)
    with tunnelFrom(front, echoOrigin, "::1", socket.AF_INET6) as client:
        clientPort = client.getsockname()[1]
    event = running.waitForNamed("tunnel_close", port=echoOrigin.port)
    assert event["client"] == f"[::1]:{clientPort}"


# Headers sent by the test itself.


def unreadByPeer(sock: socket.socket) -> int:
    """
    How many bytes sent on C{sock} the peer process has not read yet: the
    receive queue of the other end of the connection, from
    C{/proc/net/tcp} (Linux, IPv4 loopback).

    @param sock: A connected IPv4 socket.
    @return: The peer socket's C{rx_queue}.
    """

    def hexAddress(address: tuple[str, int]) -> str:
        host = struct.unpack("<I", socket.inet_aton(address[0]))[0]
        return f"{host:08X}:{address[1]:04X}"

    local, remote = hexAddress(sock.getpeername()), hexAddress(sock.getsockname())
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[2] == remote:
            return int(fields[4].split(":")[1], 16)
    raise AssertionError(f"no socket {local} -> {remote} in /proc/net/tcp")


def test_headerByteByByte(proxy: ProxyFactory, echoOrigin: OriginProcess) -> None:
    """
    A version 2 header sent a byte at a time, each byte read by the proxy
    before the next is sent (the header split across segments at every
    byte), is read, and the client it names is served.
    """
    running = proxy(*ALLOW_LOOPBACK, listen=[LISTEN_PROXY])
    header = (
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c"
        + socket.inet_aton("127.0.0.9")
        + socket.inet_aton(LOCAL)
        + (4242).to_bytes(2, "big")
        + running.port.to_bytes(2, "big")
    )
    with dialFrom(running.port) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for index in range(len(header)):
            sock.sendall(header[index : index + 1])
            waitForPath(
                lambda: unreadByPeer(sock) == 0, 10, "the proxy read a byte", 0.002
            )
        sock.sendall(connectRequest(LOCAL, echoOrigin.port))
        assert readExactly(sock, len(ESTABLISHED)) == ESTABLISHED
    event = running.waitForNamed("tunnel_close", port=echoOrigin.port)
    assert event["client"] == "127.0.0.9:4242"


@pytest.mark.usefixtures("relay")
def test_finPassedOnBehindProxyProtocol(
    proxy: ProxyFactory, echoOrigin: OriginProcess, relay: str
) -> None:
    """
    Behind a PROXY-protocol listener the proxy runs on the plain TCP
    connection: a FIN right after the request reaches the origin as a FIN,
    and the origin's reply still reaches the client.  Either relay applies
    there (the header was read before the tunnel).
    """
    running = proxy(*ALLOW_LOOPBACK, listen=[LISTEN_PROXY])
    header = f"PROXY TCP4 127.0.0.9 {LOCAL} 4242 {running.port}\r\n".encode()
    with dialFrom(running.port) as sock:
        sock.sendall(header + connectRequest(LOCAL, echoOrigin.port) + b"body")
        sock.shutdown(socket.SHUT_WR)
        assert readExactly(sock, len(ESTABLISHED)) == ESTABLISHED
        assert readToEnd(sock) == b"body"
    echoOrigin.waitForLine("echo eof")
    event = running.waitForNamed("tunnel_close", port=echoOrigin.port)
    assert (event["bytesUp"], event["bytesDown"], event["reason"]) == (
        4,
        4,
        "client closed",
    )
    assert event["relay"] == relay


@pytest.mark.usefixtures("relay")
def test_originResetReachesClientBehindProxyProtocol(
    proxy: ProxyFactory, relay: str
) -> None:
    """
    Behind a PROXY-protocol listener, an origin that sends 64 KiB and
    resets: the client gets every byte and then a reset, as on a plain TCP
    listener.
    """
    running = proxy(*ALLOW_LOOPBACK, listen=[LISTEN_PROXY])
    payload = bytes(range(256)) * 256
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((LOCAL, 0))
        listener.listen(1)
        listener.settimeout(20)
        target = listener.getsockname()[1]
        header = f"PROXY TCP4 127.0.0.9 {LOCAL} 4242 {running.port}\r\n".encode()
        with dialFrom(running.port) as client:
            client.sendall(header + connectRequest(LOCAL, target))
            response, rest = readResponseHead(client)
            assert (response.raw, rest) == (ESTABLISHED, b"")
            origin, _ = listener.accept()
            sendThenReset(origin, payload)
            received, end = readUntilReset(client)
    assert (len(received), end) == (len(payload), "reset")
    assert received == payload
    event = running.waitForNamed("tunnel_close", port=target)
    assert event["client"] == "127.0.0.9:4242"
    assert event["relay"] == relay


def test_headerNeverCompletes(proxy: ProxyFactory) -> None:
    """
    A header that does not complete within C{--request-timeout} closes the
    connection, with one log event.
    """
    running = proxy("--request-timeout", "1", listen=[LISTEN_PROXY])
    with dialFrom(running.port) as sock:
        sock.sendall(b"PROXY TCP4 127.0.0.9 ")
        event = running.waitForNamed("proxy_header_timeout")
        try:
            assert sock.recv(100) == b""
        except ConnectionResetError:
            pass
    assert event["source"].startswith(f"{LOCAL}:")
    assert event["timeout"] == 1


def test_invalidHeader(proxy: ProxyFactory) -> None:
    """
    A client that talks HTTP to a PROXY-protocol listener is disconnected
    at once without a response, and the log says why.
    """
    running = proxy(listen=[LISTEN_PROXY])
    with dialFrom(running.port) as sock:
        sock.sendall(connectRequest(LOCAL, 443))
        try:
            assert sock.recv(100) == b""
        except ConnectionResetError:
            pass
    event = running.waitForNamed("proxy_header_invalid")
    assert "does not start with a PROXY header" in event["reason"]


def test_claimedBalancerAddressNotLoopback(proxy: ProxyFactory) -> None:
    """
    A header claiming the balancer's own address (127.0.0.1, the very port
    it connects from) is a client behind the balancer: outside
    C{--allow-client} it gets 403, loopback is not implied.
    """
    running = proxy("--allow-client", "192.0.2.0/24", listen=[LISTEN_PROXY])
    with dialFrom(running.port) as sock:
        source, sourcePort = sock.getsockname()
        header = f"PROXY TCP4 {source} {LOCAL} {sourcePort} {running.port}\r\n"
        sock.sendall(header.encode() + connectRequest(LOCAL, 443))
        response, _ = readResponseHead(sock)
    assert response.status == 403
    event = running.waitForNamed("request_refused")
    assert event["client"] == f"{source}:{sourcePort}"
    assert "is not allowed behind a load balancer" in event["reason"]
