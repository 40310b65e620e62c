# -*- test-case-name: tests.integration.test_ipv6 -*-
"""
IPv6 end to end, on ::1: C{tcp6:} listeners beside C{tcp:} ones, IPv6
literal targets and IPv4-mapped ones, clients of one family tunnelling to
targets of the other, and IPv6 client rules behind a PROXY-protocol
listener (the only way to be a client outside loopback on loopback).

The other integration tests that can run on ::1 do too (the HTTPS-proxy
listener, PROXY protocol behind HAProxy, socket activation, the outgoing
address): see L{bothFamilies <tests.integration._sockets.bothFamilies>}.
"""

from __future__ import annotations

import socket

import pytest
from twisted.logger import formatEvent

from tests.integration._output import Event
from tests.integration._processes import (
    LISTEN_ANY_PORT,
    LISTEN_ANY_PORT6,
    OriginFactory,
    OriginProcess,
    ProxyFactory,
    ProxyProcess,
)
from tests.integration._sockets import (
    IPV4,
    IPV6,
    LOCAL,
    LOCAL6,
    Loopback,
    connectRequest,
    dial,
    openTunnel,
    readExactly,
    readResponseHead,
    readToEnd,
)

pytestmark = pytest.mark.integration


def answer(proxy: ProxyProcess, head: bytes, host: str = LOCAL6) -> tuple[int, str]:
    """
    Send a request the proxy refuses and read its answer to the end.

    @param proxy: The proxy; its first listener is on C{host}.
    @param head: What to send.
    @param host: The proxy's address.
    @return: The status and the body.
    """
    with dial(proxy.port, host=host) as sock:
        sock.sendall(head)
        response, rest = readResponseHead(sock)
        body = rest + readToEnd(sock)
    return response.status, body.decode("utf-8")


def echoThrough(
    proxyPort: int, proxyHost: str, target: str, port: int, payload: bytes
) -> int:
    """
    Open a tunnel to an echo origin, check that it echoes, and close it.

    @param target: The target's host as the request writes it.
    @return: The client's own port, which names it in the log.
    """
    sock, rest = openTunnel(proxyPort, port, target, proxyHost=proxyHost)
    with sock:
        assert rest == b""
        sock.sendall(payload)
        assert readExactly(sock, len(payload)) == payload
        clientPort: int = sock.getsockname()[1]
    return clientPort


def closedTunnel(proxy: ProxyProcess, family: Loopback, clientPort: int) -> Event:
    """
    Wait for the C{tunnel_close} event of the client on C{family}'s
    loopback address with port C{clientPort}.
    """
    return proxy.waitForNamed("tunnel_close", client=family.address(clientPort))


@pytest.fixture
def echo4(origin: OriginFactory) -> OriginProcess:
    """
    An echo origin on 127.0.0.1.
    """
    return origin("echo")


@pytest.fixture
def echo6(origin: OriginFactory) -> OriginProcess:
    """
    An echo origin on ::1.
    """
    return origin("echo", host=LOCAL6)


def test_ipv6Targets(
    proxy: ProxyFactory, echo4: OriginProcess, echo6: OriginProcess
) -> None:
    """
    With only C{--allow-network ::1/128}, a C{tcp6:} listener tunnels to
    C{[::1]:PORT} and to C{localhost} (over ::1, its 127.0.0.1 vetted out);
    127.0.0.1 and its IPv4-mapped spelling get 403 naming IPv4 loopback
    and the option; an IPv6 target without brackets or with a zone gets
    400.  The log writes every IPv6 address as C{[v6]:port}.
    """
    running = proxy(
        *("--allow-port", "1-65535", "--allow-network", "::1/128"),
        listen=[LISTEN_ANY_PORT6],
        loopbackOrigins=False,
    )
    assert running.host == LOCAL6
    clientPort = echoThrough(running.port, LOCAL6, "[::1]", echo6.port, b"v6")
    event = closedTunnel(running, IPV6, clientPort)
    assert (event["host"], event["upstream"]) == (LOCAL6, f"[::1]:{echo6.port}")
    assert formatEvent(event).startswith(
        f"tunnel closed [::1]:{clientPort} - -> [::1]:{echo6.port} "
        f"via [::1]:{echo6.port}: 2 bytes up, 2 bytes down, "
    )
    clientPort = echoThrough(running.port, LOCAL6, "localhost", echo6.port, b"name")
    event = closedTunnel(running, IPV6, clientPort)
    assert event["upstream"] == f"[::1]:{echo6.port}"

    loopback4 = (
        "403 Forbidden: 127.0.0.1 is a loopback address, not allowed by "
        "default (see --allow-network)\n"
    )
    for target in [LOCAL, "[::ffff:127.0.0.1]", "[::ffff:7f00:1]"]:
        head = connectRequest(target, echo4.port)
        assert answer(running, head) == (403, loopback4)
    for target, reason in [
        (f"::1:{echo6.port}", "IPv6 addresses must be in brackets"),
        ("[fe80::1%25lo]:443", "zone identifiers are not allowed in target"),
        ("[::1:443", "unterminated IPv6 literal in target"),
    ]:
        head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode()
        assert answer(running, head) == (400, f"400 Bad Request: {reason}\n")
    refused = running.waitForNamed(
        "request_refused", target=f"[::ffff:7f00:1]:{echo4.port}"
    )
    assert refused["client"].startswith("[::1]:")


@pytest.mark.usefixtures("relay")
def test_mixedFamilies(
    proxy: ProxyFactory, echo4: OriginProcess, echo6: OriginProcess, relay: str
) -> None:
    """
    A C{tcp:} and a C{tcp6:} listener at once: each says where it listens
    (C{127.0.0.1:PORT}, C{[::1]:PORT}), and a client of either family
    tunnels to a target of either family, IPv4-mapped targets reaching the
    IPv4 origin; the log names each client and upstream in its own family.
    Each relay moves bytes between any two families.
    """
    running = proxy(listen=[LISTEN_ANY_PORT, LISTEN_ANY_PORT6])
    ports = {}
    for event, family in zip(running.listening, [IPV4, IPV6], strict=True):
        ports[family] = int(event["port"])
        assert (event["host"], event["address"]) == (
            family.host,
            family.address(ports[family]),
        )
    targets = [
        (LOCAL, echo4, IPV4),
        ("[::1]", echo6, IPV6),
        ("[::ffff:127.0.0.1]", echo4, IPV4),
    ]
    for client in [IPV4, IPV6]:
        for target, origin, upstream in targets:
            payload = f"{client.name} to {target}".encode()
            clientPort = echoThrough(
                ports[client], client.host, target, origin.port, payload
            )
            event = closedTunnel(running, client, clientPort)
            assert event["upstream"] == upstream.address(origin.port)
            assert event["bytesUp"] == event["bytesDown"] == len(payload)
            assert event["relay"] == relay


def test_ipv6ClientRules(proxy: ProxyFactory, echo6: OriginProcess) -> None:
    """
    Behind a C{haproxy:tcp6:} listener, C{--allow-client 2001:db8:1::/48}
    serves a client of that network and refuses one outside it with 403
    naming the option; an IPv4-mapped network serves the IPv4 client an
    IPv6 balancer speaks for.  On a plain C{tcp6:} listener ::1 is served
    whatever the rules (loopback always is).
    """
    running = proxy(
        *("--allow-client", "2001:db8:1::/48"),
        *("--allow-client", "::ffff:203.0.113.0/120"),
        listen=["haproxy:tcp6:0:interface=\\:\\:1", LISTEN_ANY_PORT6],
    )
    balanced = running.port
    request = connectRequest(LOCAL6, echo6.port)
    for claimed, client in [
        ("TCP6 2001:db8:1::5 ::1", "[2001:db8:1::5]:4242"),
        ("TCP4 203.0.113.9 127.0.0.1", "203.0.113.9:4242"),
    ]:
        header = f"PROXY {claimed} 4242 {balanced}\r\n".encode()
        with dial(balanced, host=LOCAL6) as sock:
            sock.sendall(header + request + b"ping")
            response, rest = readResponseHead(sock)
            assert (response.status, rest + readExactly(sock, 4 - len(rest))) == (
                200,
                b"ping",
            )
        running.waitForNamed("tunnel_close", client=client)

    header = f"PROXY TCP6 2001:db8:2::5 ::1 4242 {balanced}\r\n".encode()
    assert answer(running, header + request) == (
        403,
        "403 Forbidden: client 2001:db8:2::5 is not allowed behind a load "
        "balancer (see --allow-client)\n",
    )
    event = running.waitForNamed("request_refused", client="[2001:db8:2::5]:4242")
    assert event["status"] == 403

    plain = int(running.listening[1]["port"])
    clientPort = echoThrough(plain, LOCAL6, "[::1]", echo6.port, b"loopback")
    closedTunnel(running, IPV6, clientPort)


def test_ipv4ClientOnMappedListener(proxy: ProxyFactory, echo4: OriginProcess) -> None:
    """
    A C{tcp6:} listener on the IPv4-mapped loopback address takes IPv4
    clients (as C{::ffff:127.0.0.1}): they are loopback clients, served
    without --allow-client, and the proxy does not warn of an open proxy.
    """
    running = proxy(listen=["tcp6:0:interface=\\:\\:ffff\\:127.0.0.1"])
    assert running.listening[0]["address"] == f"[::ffff:127.0.0.1]:{running.port}"
    with socket.create_connection((LOCAL, running.port), timeout=20) as sock:
        sock.sendall(connectRequest(LOCAL, echo4.port) + b"mapped")
        response, rest = readResponseHead(sock)
        assert response.status == 200
        assert rest + readExactly(sock, 6 - len(rest)) == b"mapped"
        clientPort = sock.getsockname()[1]
    event = running.waitForNamed(
        "tunnel_close", client=f"[::ffff:127.0.0.1]:{clientPort}"
    )
    assert event["upstream"] == f"{LOCAL}:{echo4.port}"
    assert [e for e in running.events if e.get("event") == "open_proxy"] == []
