# -*- test-case-name: tests.integration.test_parents -*-
"""
Parent proxies end to end, on loopback: connectproxy -> a real squid (its
configuration written to a temporary directory) -> an origin, with and
without squid's Basic authentication, a squid that refuses and one that is
down, on 127.0.0.1 and on ::1 (C{http_port [::1]:PORT}, the parent named
C{http://[::1]:PORT}, by C{--upstream-proxy} or by a route); and
connectproxy -> connectproxy with an HTTPS-proxy (C{ssl:}) listener and a
private CA -> an origin, and the same with the wrong CA, for tunnels and
for forwarded plain C{http://} requests.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration._forwarding import FORWARDED, startHTTPOrigin
from tests.integration._pki import TLSFiles, makeTLSFiles
from tests.integration._processes import (
    LISTEN_ANY_PORT6,
    ChildProcess,
    OriginFactory,
    ProxyFactory,
    ProxyProcess,
    waitForPath,
)
from tests.integration._sockets import (
    LOCAL,
    LOCAL6,
    closedPort,
    connectRequest,
    dial,
    openTunnel,
    readExactly,
    readResponseHead,
    readToEnd,
)
from tests.integration._squid import (
    BASIC_AUTH_HELPER,
    SquidProcess,
    htpasswdFile,
    squidExecutable,
)
from tests.integration.test_reload import reload, replaceFile, roundTrip

pytestmark = pytest.mark.integration

#: For the tests that run squid (the Debian package) as the parent.
needsSquid = pytest.mark.skipif(
    squidExecutable() is None, reason="squid is not installed"
)

SquidFactory = Callable[..., SquidProcess]

#: squid's clients: the proxy, on IPv4 or IPv6 loopback.
CLIENTS = "acl clients src 127.0.0.0/8 ::1"

#: squid's access rules when it asks for no credentials: loopback clients
#: may CONNECT anywhere but to the port a test wants refused.
OPEN = (
    CLIENTS,
    "acl connect method CONNECT",
)


@pytest.fixture
def squid(scratchDir: Path, processes: list[ChildProcess[Any]]) -> SquidFactory:
    """
    Start squids: C{squid(*accessLines)} on 127.0.0.1 (C{host="::1"}: on
    ::1), each in a directory of its own under the test's scratch
    directory, stopped by PID at the end.
    """
    # squid runs as its own user: it must get through to its directory.
    scratchDir.chmod(0o711)
    started = 0

    def start(*access: str, host: str = LOCAL) -> SquidProcess:
        nonlocal started
        started += 1
        directory = scratchDir / f"squid{started}"
        directory.mkdir()
        process = SquidProcess(
            directory,
            access,
            # No DNS but loopback: every target here is an IP address.
            extra=["dns_nameservers 127.0.0.1"],
            host=host,
        )
        processes.append(process)
        return process

    return start


def openSquid(
    squid: SquidFactory, refusedPort: int = 0, host: str = LOCAL
) -> SquidProcess:
    """
    A squid on C{host} that lets loopback clients CONNECT to any port but
    C{refusedPort}, without credentials.
    """
    return squid(
        *OPEN,
        f"acl refused port {refusedPort or 1}",
        "http_access deny connect refused",
        "http_access allow clients",
        "http_access deny all",
        host=host,
    )


def authSquid(squid: SquidFactory, scratchDir: Path, host: str = LOCAL) -> SquidProcess:
    """
    A squid on C{host} that asks for Basic credentials (C{proxyuser},
    password C{p@ss:word}) checked by its C{basic_ncsa_auth} helper.
    """
    passwords = htpasswdFile(scratchDir / "squid-passwords", {"proxyuser": "p@ss:word"})
    return squid(
        f"auth_param basic program {BASIC_AUTH_HELPER} {passwords}",
        "auth_param basic realm parent",
        CLIENTS,
        "acl users proxy_auth REQUIRED",
        "http_access allow clients users",
        "http_access deny all",
        host=host,
    )


def echoThrough(
    proxyPort: int, originPort: int, host: str = LOCAL, proxyHost: str = LOCAL
) -> None:
    """
    Open a tunnel to the echo origin with early bytes in the same write as
    the request, and check everything comes back, in order, and the tunnel
    closes cleanly.

    @param host: The origin's address.
    @param proxyHost: The proxy's address.
    """
    early = b"\x16\x03\x01 early bytes"
    sock, rest = openTunnel(
        proxyPort, originPort, host, early=early, proxyHost=proxyHost
    )
    with sock:
        assert rest + readExactly(sock, len(early) - len(rest)) == early
        sock.sendall(b"ping")
        assert readExactly(sock, 4) == b"ping"
        sock.shutdown(socket.SHUT_WR)
        assert readToEnd(sock) == b""


def refusal(proxyPort: int, targetPort: int, host: str = LOCAL) -> tuple[int, bytes]:
    """
    Ask for a tunnel to C{host} that is refused: the status and the whole
    response.
    """
    with dial(proxyPort) as sock:
        sock.sendall(connectRequest(host, targetPort) + b"early")
        response, rest = readResponseHead(sock)
        body = rest + readToEnd(sock)
    return response.status, response.raw + body


@needsSquid
@pytest.mark.usefixtures("relay")
def test_throughSquid(
    origin: OriginFactory, proxy: ProxyFactory, squid: SquidFactory, relay: str
) -> None:
    """
    Every tunnel goes through squid, early bytes included, and the access
    log names squid as the upstream; through a parent over plain HTTP
    either relay applies.
    """
    echo = origin("echo")
    parent = openSquid(squid)
    running = proxy("--upstream-proxy", f"http://127.0.0.1:{parent.port}")
    echoThrough(running.port, echo.port)
    event = running.waitForNamed("tunnel_close")
    assert event["upstream"] == f"127.0.0.1:{parent.port}"
    assert (event["host"], event["port"]) == ("127.0.0.1", echo.port)
    assert event["relay"] == relay


@pytest.mark.usefixtures("relay")
def test_targetSpeaksFirstThroughParent(proxy: ProxyFactory, relay: str) -> None:
    """
    A target that speaks first (an SSH or SMTP server): its first bytes,
    which follow the parent's C{200} in the same segment, reach the client
    before anything else, and the tunnel then carries bytes both ways and
    the FINs, with either relay.  The test plays the parent.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(20)
        running = proxy(
            "--upstream-proxy", f"http://127.0.0.1:{listener.getsockname()[1]}"
        )
        with dial(running.port) as client:
            client.sendall(connectRequest("127.0.0.1", 22))
            parent, _ = listener.accept()
            with parent:
                parent.settimeout(20)
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    head += parent.recv(1)
                assert head.startswith(b"CONNECT 127.0.0.1:22 HTTP/1.1\r\n")
                parent.sendall(b"HTTP/1.1 200 Connection established\r\n\r\nbanner")
                response, rest = readResponseHead(client)
                assert response.status == 200
                assert rest + readExactly(client, 6 - len(rest)) == b"banner"
                client.sendall(b"hello")
                assert readExactly(parent, 5) == b"hello"
                parent.sendall(b"world")
                assert readExactly(client, 5) == b"world"
                client.shutdown(socket.SHUT_WR)
                assert parent.recv(1) == b""
            assert readToEnd(client) == b""
    event = running.waitForNamed("tunnel_close")
    assert (event["bytesUp"], event["bytesDown"]) == (5, 11)
    assert event["relay"] == relay


@needsSquid
def test_squidWithCredentials(
    origin: OriginFactory,
    proxy: ProxyFactory,
    squid: SquidFactory,
    scratchDir: Path,
) -> None:
    """
    With the parent's credentials in the URL (percent-encoded), squid's
    Basic authentication lets the tunnel through; the log never shows the
    password.
    """
    echo = origin("echo")
    parent = authSquid(squid, scratchDir)
    running = proxy(
        "--upstream-proxy", f"http://proxyuser:p%40ss%3Aword@127.0.0.1:{parent.port}"
    )
    echoThrough(running.port, echo.port)
    running.waitForNamed("tunnel_close")
    assert "p@ss:word" not in repr(running.events)
    assert "p%40ss" not in repr(running.events)


@needsSquid
def test_squidWrongCredentials(
    origin: OriginFactory,
    proxy: ProxyFactory,
    squid: SquidFactory,
    scratchDir: Path,
) -> None:
    """
    squid's 407 for credentials it refuses, or for none, reaches the client
    as 502 with a clear reason; squid's error page does not.
    """
    echo = origin("echo")
    parent = authSquid(squid, scratchDir)
    wrong = proxy("--upstream-proxy", f"http://proxyuser:nope@127.0.0.1:{parent.port}")
    status, response = refusal(wrong.port, echo.port)
    assert status == 502
    assert b"the parent proxy refused the proxy's credentials" in response
    assert b"squid" not in response.lower()
    event = wrong.waitForNamed("connect_failed")
    assert event["error"].startswith(
        "the parent proxy refused the proxy's credentials "
        f"(http://127.0.0.1:{parent.port}): 407"
    )
    assert "nope" not in repr(wrong.events)
    none = proxy("--upstream-proxy", f"http://127.0.0.1:{parent.port}")
    status, response = refusal(none.port, echo.port)
    assert status == 502
    assert b"the parent proxy requires credentials" in response


@needsSquid
def test_squidRefuses(
    origin: OriginFactory, proxy: ProxyFactory, squid: SquidFactory
) -> None:
    """
    squid's 403 reaches the client as 403; the early bytes and squid's
    error page go nowhere.
    """
    echo = origin("echo")
    parent = openSquid(squid, refusedPort=echo.port)
    running = proxy("--upstream-proxy", f"http://127.0.0.1:{parent.port}")
    status, response = refusal(running.port, echo.port)
    assert status == 403
    assert b"the parent proxy denied the tunnel" in response
    assert b"squid" not in response.lower()
    refused = running.waitForNamed("request_refused")
    assert refused["status"] == 403


def test_parentDown(origin: OriginFactory, proxy: ProxyFactory) -> None:
    """
    A parent that nothing listens for gets the client a 502.
    """
    echo = origin("echo")
    running = proxy("--upstream-proxy", f"http://127.0.0.1:{closedPort()}")
    status, response = refusal(running.port, echo.port)
    assert status == 502
    assert b"the parent proxy refused the connection" in response


@needsSquid
def test_routesAroundSquid(
    origin: OriginFactory, proxy: ProxyFactory, squid: SquidFactory
) -> None:
    """
    A route sends one target directly while the rest goes through squid.
    """
    echo = origin("echo")
    parent = openSquid(squid, refusedPort=echo.port)
    running = proxy(
        "--upstream-proxy",
        f"http://127.0.0.1:{parent.port}",
        "--upstream-route",
        "127.0.0.1=direct",
    )
    echoThrough(running.port, echo.port)
    event = running.waitForNamed("tunnel_close")
    assert event["upstream"] == f"127.0.0.1:{echo.port}"


# squid on ::1


def squidLogged(parent: SquidProcess, *targets: str) -> None:
    """
    Wait for squid's access log to show a tunnel to each target, from the
    proxy on ::1 (squid writes a line when a tunnel ends).

    @param targets: Each as C{host:port}, IPv6 hosts in brackets.
    """

    def logged() -> bool:
        lines = parent.accessLog().splitlines()
        return all(
            any(" ::1 " in line and f" CONNECT {target} " in line for line in lines)
            for target in targets
        )

    waitForPath(logged, 10, f"squid's log of the tunnels to {targets}")


@needsSquid
def test_throughSquidOnIPv6(
    origin: OriginFactory, proxy: ProxyFactory, squid: SquidFactory
) -> None:
    """
    A parent on ::1 (squid with C{http_port [::1]:PORT}, named
    C{http://[::1]:PORT}) carries tunnels from a C{tcp6:} listener to an
    origin on ::1 and to one on 127.0.0.1, early bytes included; the log
    names the parent C{[::1]:PORT}, and squid logs both tunnels, from ::1.
    """
    echo6 = origin("echo", host=LOCAL6)
    echo4 = origin("echo")
    parent = openSquid(squid, host=LOCAL6)
    assert parent.address == f"[::1]:{parent.port}"
    running = proxy(
        "--upstream-proxy", f"http://{parent.address}", listen=[LISTEN_ANY_PORT6]
    )
    for echo in [echo6, echo4]:
        echoThrough(running.port, echo.port, echo.host, proxyHost=LOCAL6)
        event = running.waitForNamed("tunnel_close", port=echo.port)
        assert (event["host"], event["upstream"]) == (echo.host, parent.address)
    squidLogged(parent, f"[::1]:{echo6.port}", f"127.0.0.1:{echo4.port}")


@needsSquid
def test_squidOnIPv6WithCredentials(
    origin: OriginFactory,
    proxy: ProxyFactory,
    squid: SquidFactory,
    scratchDir: Path,
) -> None:
    """
    squid on ::1 asking for Basic credentials: with them in the URL
    (C{http://user:pass@[::1]:PORT}, percent-encoded) the tunnel goes
    through; with wrong ones the client gets 502 and the log names the
    parent C{http://[::1]:PORT}, never the password.
    """
    echo = origin("echo", host=LOCAL6)
    parent = authSquid(squid, scratchDir, host=LOCAL6)
    running = proxy(
        "--upstream-proxy", f"http://proxyuser:p%40ss%3Aword@{parent.address}"
    )
    echoThrough(running.port, echo.port, LOCAL6)
    assert running.waitForNamed("tunnel_close")["upstream"] == parent.address
    wrong = proxy("--upstream-proxy", f"http://proxyuser:nope@{parent.address}")
    status, response = refusal(wrong.port, echo.port, LOCAL6)
    assert status == 502
    assert b"the parent proxy refused the proxy's credentials" in response
    event = wrong.waitForNamed("connect_failed")
    assert event["error"].startswith(
        "the parent proxy refused the proxy's credentials "
        f"(http://{parent.address}): 407"
    )
    for events in [running.events, wrong.events]:
        assert "p@ss" not in repr(events) and "p%40ss" not in repr(events)
        assert "nope" not in repr(events)


@needsSquid
def test_squidOnIPv6Refuses(
    origin: OriginFactory, proxy: ProxyFactory, squid: SquidFactory
) -> None:
    """
    squid on ::1 refusing the tunnel (403) gets the client 403, and its
    error page goes nowhere.
    """
    echo = origin("echo", host=LOCAL6)
    parent = openSquid(squid, refusedPort=echo.port, host=LOCAL6)
    running = proxy("--upstream-proxy", f"http://{parent.address}")
    status, response = refusal(running.port, echo.port, LOCAL6)
    assert status == 403
    assert b"the parent proxy denied the tunnel" in response
    assert b"squid" not in response.lower()
    event = running.waitForNamed("connect_failed")
    assert f"(http://{parent.address}): 403" in event["error"]


def test_parentDownOnIPv6(origin: OriginFactory, proxy: ProxyFactory) -> None:
    """
    A parent on ::1 that nothing listens for gets the client a 502, and the
    log names it C{http://[::1]:PORT}.
    """
    echo = origin("echo", host=LOCAL6)
    down = f"[::1]:{closedPort(LOCAL6)}"
    running = proxy("--upstream-proxy", f"http://{down}")
    status, response = refusal(running.port, echo.port, LOCAL6)
    assert status == 502
    assert b"the parent proxy refused the connection" in response
    event = running.waitForNamed("connect_failed")
    assert event["error"].startswith(
        f"the parent proxy refused the connection (http://{down})"
    )


@needsSquid
def test_routeToSquidOnIPv6(
    origin: OriginFactory, proxy: ProxyFactory, squid: SquidFactory
) -> None:
    """
    C{--upstream-route} sends the targets an IPv6 literal and a name match
    through squid on ::1 (C{PATTERN=http://[::1]:PORT}), while the rest go
    directly.
    """
    echo6 = origin("echo", host=LOCAL6)
    echo4 = origin("echo")
    parent = openSquid(squid, host=LOCAL6)
    running = proxy(
        *("--upstream-route", f"::1=http://{parent.address}"),
        *("--upstream-route", f"localhost=http://{parent.address}"),
    )
    echoThrough(running.port, echo6.port, LOCAL6)
    event = running.waitForNamed("tunnel_close", host=LOCAL6)
    assert event["upstream"] == parent.address
    echoThrough(running.port, echo4.port, "localhost")
    event = running.waitForNamed("tunnel_close", host="localhost")
    assert event["upstream"] == parent.address
    echoThrough(running.port, echo4.port, LOCAL)
    event = running.waitForNamed("tunnel_close", host=LOCAL)
    assert event["upstream"] == f"{LOCAL}:{echo4.port}"
    squidLogged(parent, f"[::1]:{echo6.port}", f"localhost:{echo4.port}")


# connectproxy as the parent, over TLS


@pytest.fixture
def otherCA(scratchDir: Path) -> Iterator[Path]:
    """
    The certificate of a CA that signed nothing the parent has.
    """
    directory = scratchDir / "other-ca"
    directory.mkdir()
    yield makeTLSFiles(directory).caCert


def tlsParent(proxy: ProxyFactory, pki: TLSFiles) -> ProxyProcess:
    """
    connectproxy as an HTTPS proxy on a free loopback port, tunnelling to
    loopback origins.
    """
    return proxy(
        listen=[
            f"ssl:0:interface=127.0.0.1:privateKey={pki.serverKey}"
            f":certKey={pki.serverCert}"
        ]
    )


def test_throughConnectproxyOverTLS(
    origin: OriginFactory, proxy: ProxyFactory, tlsCertificate: TLSFiles
) -> None:
    """
    connectproxy tunnels through another connectproxy's HTTPS-proxy
    listener, trusting its private CA; the parent sees the tunnel too.
    """
    echo = origin("echo")
    parent = tlsParent(proxy, tlsCertificate)
    running = proxy(
        "--upstream-proxy",
        f"https://127.0.0.1:{parent.port}",
        "--upstream-ca",
        str(tlsCertificate.caCert),
    )
    echoThrough(running.port, echo.port)
    event = running.waitForNamed("tunnel_close")
    assert event["upstream"] == f"127.0.0.1:{parent.port}"
    # TLS on one side: both proxies relay through the transports.
    assert event["relay"] == "transport"
    event = parent.waitForNamed("tunnel_close")
    assert (event["port"], event["relay"]) == (echo.port, "transport")


def test_connectproxyParentWrongCA(
    origin: OriginFactory,
    proxy: ProxyFactory,
    tlsCertificate: TLSFiles,
    otherCA: Path,
) -> None:
    """
    Trusting another CA, the proxy refuses the parent's certificate: the
    client gets 502, and the parent never sees a CONNECT.
    """
    echo = origin("echo")
    parent = tlsParent(proxy, tlsCertificate)
    running = proxy(
        "--upstream-proxy",
        f"https://127.0.0.1:{parent.port}",
        "--upstream-ca",
        str(otherCA),
    )
    status, response = refusal(running.port, echo.port)
    assert status == 502
    assert b"the TLS handshake with the parent proxy failed" in response
    event = running.waitForNamed("connect_failed")
    assert "certificate verify failed" in event["error"]
    parent.waitForNamed("tls_handshake_failed")
    assert not [e for e in parent.events if e.get("event") == "tunnel_close"]


def test_forwardingThroughConnectproxyOverTLS(
    proxy: ProxyFactory,
    tlsCertificate: TLSFiles,
    processes: list[ChildProcess[Any]],
) -> None:
    """
    Forwarded C{http://} requests (a GET, and a POST with a body checked at
    the origin) go through another connectproxy's HTTPS-proxy listener,
    trusting its private CA: the parent receives them in absolute form (its
    access log shows the URL), and the origin in origin form with both
    proxies in C{Via}.
    """
    httpOrigin = startHTTPOrigin()
    processes.append(httpOrigin)
    parent = tlsParent(proxy, tlsCertificate)
    running = proxy(
        "--upstream-proxy",
        f"https://127.0.0.1:{parent.port}",
        "--upstream-ca",
        str(tlsCertificate.caCert),
    )
    proxies = {"http": f"http://{LOCAL}:{running.port}"}
    base = f"http://{LOCAL}:{httpOrigin.port}"
    body = os.urandom(1 << 20)
    with requests.Session() as session:
        got = session.get(base + "/echo-head", proxies=proxies, timeout=30)
        assert got.status_code == 200, got.text
        seen = got.json()
        posted = session.post(base + "/sha256", data=body, proxies=proxies, timeout=30)
    assert seen["target"] == "/echo-head"
    vias = [value for name, value in seen["headers"] if name.lower() == "via"]
    assert vias == ["1.1 connectproxy", "1.1 connectproxy"], seen
    assert posted.status_code == 200, posted.text
    assert posted.json()["sha256"] == hashlib.sha256(body).hexdigest()
    for method, path in [("GET", "/echo-head"), ("POST", "/sha256")]:
        # The parent got the absolute form: it forwarded the whole URL (an
        # origin-form request would have got 400 there).
        atParent = parent.waitForNamed(FORWARDED, method=method, target=base + path)
        assert (atParent["status"], atParent["parent"]) == (200, None)
        assert atParent["upstream"] == f"{LOCAL}:{httpOrigin.port}"
        here = running.waitForNamed(FORWARDED, method=method, target=base + path)
        assert here["status"] == 200
        assert here["upstream"] == f"127.0.0.1:{parent.port}"
        assert here["parent"], here
    # The proxy keeps its connection to the parent alive and idle: the
    # parent's drain closes it at once, and the parent exits on SIGTERM
    # (it is not killed after a wait).
    assert parent.stop() == -signal.SIGTERM
    parent.waitForNamed("shutdown_drained")


def test_forwardingThroughConnectproxyWrongCA(
    proxy: ProxyFactory,
    tlsCertificate: TLSFiles,
    otherCA: Path,
    processes: list[ChildProcess[Any]],
) -> None:
    """
    Trusting another CA, the proxy refuses the parent's certificate for a
    forwarded C{http://} request too: the client gets 502 naming the
    handshake, and the parent never sees the request.
    """
    httpOrigin = startHTTPOrigin()
    processes.append(httpOrigin)
    parent = tlsParent(proxy, tlsCertificate)
    running = proxy(
        "--upstream-proxy",
        f"https://127.0.0.1:{parent.port}",
        "--upstream-ca",
        str(otherCA),
    )
    url = f"http://{LOCAL}:{httpOrigin.port}/echo-head"
    got = requests.get(
        url, proxies={"http": f"http://{LOCAL}:{running.port}"}, timeout=30
    )
    assert got.status_code == 502
    assert "the TLS handshake with the parent proxy failed" in got.text
    event = running.waitForNamed("connect_failed")
    assert "certificate verify failed" in event["error"]
    refused = running.waitForNamed("request_refused", status=502)
    assert (refused["method"], refused["target"]) == ("GET", url)
    parent.waitForNamed("tls_handshake_failed")
    assert not [e for e in parent.events if e.get("event") == FORWARDED]


@needsSquid
def test_sighupSwitchesParents(
    origin: OriginFactory,
    proxy: ProxyFactory,
    squid: SquidFactory,
    scratchDir: Path,
) -> None:
    """
    SIGHUP re-reads the parent from the configuration file: a down parent
    (502) is replaced by squid for new requests, and a tunnel through squid
    carries on through a reload that routes new tunnels directly.
    """
    echo = origin("echo")
    parent = openSquid(squid)
    config = scratchDir / "proxy.toml"
    replaceFile(config, f'upstream-proxy = "http://127.0.0.1:{closedPort()}"\n')
    running = proxy("--config", str(config))
    assert refusal(running.port, echo.port)[0] == 502
    replaceFile(config, f'upstream-proxy = "http://127.0.0.1:{parent.port}"\n')
    reload(running)
    sock, _ = openTunnel(running.port, echo.port)
    with sock:
        roundTrip(sock, b"through squid")
        replaceFile(
            config,
            f'upstream-proxy = "http://127.0.0.1:{parent.port}"\n'
            'upstream-route = ["127.0.0.1=direct"]\n',
        )
        reload(running)
        roundTrip(sock, b"still through squid")
        echoThrough(running.port, echo.port)
    running.waitForNamed("tunnel_close", upstream=f"127.0.0.1:{parent.port}")
    running.waitForNamed("tunnel_close", upstream=f"127.0.0.1:{echo.port}")
