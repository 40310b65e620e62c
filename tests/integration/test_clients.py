# -*- test-case-name: tests.integration.test_clients -*-
"""
Real clients (curl, requests, openssl s_client) and raw sockets through a
proxy process to origin servers on 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import pytest
import requests

from tests.integration._pki import TLSFiles
from tests.integration._processes import (
    OriginFactory,
    OriginProcess,
    ProxyFactory,
    ProxyProcess,
    cleanEnvironment,
)
from tests.integration._sockets import (
    LOCAL,
    closedPort,
    connectRequest,
    dial,
    openTunnel,
    readExactly,
    readResponseHead,
    readToEnd,
)

pytestmark = pytest.mark.integration

CLIENT_TIMEOUT = 30
"""
Seconds any client process may run.
"""


def expectedBody(path: str) -> str:
    """
    The body the C{https} origin answers with.

    @param path: The request path.
    @return: The body.
    """
    return f"hello from the origin\npath={path}\n"


def curl(proxyPort: int, url: str, ca: TLSFiles) -> subprocess.CompletedProcess[str]:
    """
    Fetch a URL with curl through the proxy, with no configuration file and
    no proxy setting from the environment.

    @param proxyPort: The proxy's port.
    @param url: The URL.
    @param ca: The PKI whose CA curl trusts (and no other).
    @return: The finished curl.
    """
    curlPath = shutil.which("curl")
    if curlPath is None:
        pytest.skip("curl is not installed")
    argv = [curlPath, "-q", "-sS", "--fail", "-p", "-x", f"http://{LOCAL}:{proxyPort}"]
    argv += ["--noproxy", "", "--cacert", str(ca.caCert), "--max-time", "20", url]
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=cleanEnvironment(),
        timeout=CLIENT_TIMEOUT,
        check=False,
    )


@pytest.fixture
def httpsOrigin(origin: OriginFactory) -> OriginProcess:
    """
    A TLS origin that answers C{GET}s.
    """
    return origin("https")


@pytest.fixture
def echoOrigin(origin: OriginFactory) -> OriginProcess:
    """
    A plain TCP echo origin.
    """
    return origin("echo")


@pytest.fixture
def oneProxy(proxy: ProxyFactory) -> ProxyProcess:
    """
    A proxy with the default options.
    """
    return proxy()


def test_curlThroughProxyByName(
    oneProxy: ProxyProcess, httpsOrigin: OriginProcess, tlsCertificate: TLSFiles
) -> None:
    """
    curl fetches an HTTPS URL naming C{localhost} through the proxy.
    """
    url = f"https://localhost:{httpsOrigin.port}/by-name?curl=1"
    result = curl(oneProxy.port, url, tlsCertificate)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == expectedBody("/by-name?curl=1")


def test_curlThroughProxyByAddress(
    oneProxy: ProxyProcess, httpsOrigin: OriginProcess, tlsCertificate: TLSFiles
) -> None:
    """
    curl fetches an HTTPS URL naming C{127.0.0.1} through the proxy.
    """
    url = f"https://127.0.0.1:{httpsOrigin.port}/"
    result = curl(oneProxy.port, url, tlsCertificate)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == expectedBody("/")


def test_requestsThroughProxy(
    oneProxy: ProxyProcess, httpsOrigin: OriginProcess, tlsCertificate: TLSFiles
) -> None:
    """
    requests fetches two URLs through the proxy on one session.
    """
    with requests.Session() as session:
        session.trust_env = False
        session.proxies = {"https": f"http://{LOCAL}:{oneProxy.port}"}
        session.verify = str(tlsCertificate.caCert)
        for path in ["/requests/1", "/requests/2"]:
            response = session.get(
                f"https://localhost:{httpsOrigin.port}{path}", timeout=20
            )
            assert response.status_code == 200
            assert response.text == expectedBody(path)


def test_opensslClientThroughProxy(
    oneProxy: ProxyProcess, httpsOrigin: OriginProcess, tlsCertificate: TLSFiles
) -> None:
    """
    openssl s_client tunnels through the proxy, verifies the origin's
    certificate and gets an HTTP answer.
    """
    opensslPath = shutil.which("openssl")
    if opensslPath is None:
        pytest.skip("openssl is not installed")
    argv = [opensslPath, "s_client", "-proxy", f"{LOCAL}:{oneProxy.port}"]
    argv += ["-connect", f"localhost:{httpsOrigin.port}", "-servername", "localhost"]
    argv += ["-CAfile", str(tlsCertificate.caCert), "-verify_return_error", "-ign_eof"]
    request = "GET /s_client HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    result = subprocess.run(
        argv,
        input=request,
        capture_output=True,
        text=True,
        env=cleanEnvironment(),
        timeout=CLIENT_TIMEOUT,
        check=False,
    )
    assert "HTTP/1.1 200 OK" in result.stdout, result.stdout + result.stderr
    assert expectedBody("/s_client") in result.stdout.replace("\r\n", "\n")
    assert "Verify return code: 0 (ok)" in result.stdout


def test_accessLogAfterCurl(
    oneProxy: ProxyProcess, httpsOrigin: OriginProcess, tlsCertificate: TLSFiles
) -> None:
    """
    A finished tunnel leaves one C{tunnel_close} event with the target and
    byte counts in both directions.
    """
    url = f"https://localhost:{httpsOrigin.port}/logged"
    result = curl(oneProxy.port, url, tlsCertificate)
    assert result.returncode == 0, result.stderr
    event = oneProxy.waitForNamed("tunnel_close")
    assert (event["status"], event["host"], event["port"]) == (
        200,
        "localhost",
        httpsOrigin.port,
    )
    assert event["bytesUp"] > 0
    assert event["bytesDown"] > len(expectedBody("/logged"))
    assert event["upstream"] == f"{LOCAL}:{httpsOrigin.port}"
    assert event["client"].startswith(f"{LOCAL}:")
    assert event["duration"] >= 0
    assert isinstance(event["reason"], str)


def refusal(proxyPort: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """
    Send a request that the proxy refuses and read its answer to the end.

    @param proxyPort: The proxy's port.
    @param request: The request head.
    @return: The status, the header fields and the body.
    """
    with dial(proxyPort) as sock:
        sock.sendall(request)
        response, rest = readResponseHead(sock)
        body = rest + readToEnd(sock)
    return response.status, response.headers, body


def test_connectToClosedPort(oneProxy: ProxyProcess) -> None:
    """
    CONNECT to a port where nothing listens gets 502 and closes, and is
    logged as refused.
    """
    status, headers, body = refusal(oneProxy.port, connectRequest(LOCAL, closedPort()))
    assert status == 502
    assert headers["connection"].lower() == "close"
    assert int(headers.get("content-length", len(body))) == len(body)
    event = oneProxy.waitForNamed("request_refused")
    assert event["status"] == 502
    assert event["client"].startswith(f"{LOCAL}:")
    assert event["reason"]


def test_connectWithoutPort(oneProxy: ProxyProcess) -> None:
    """
    CONNECT to an authority without a port gets 400.
    """
    status, headers, _ = refusal(oneProxy.port, connectRequest("localhost", None))
    assert status == 400
    assert headers["connection"].lower() == "close"
    assert oneProxy.waitForNamed("request_refused")["status"] == 400


def test_originFormIsRefused(oneProxy: ProxyProcess) -> None:
    """
    A GET in origin form (what a web server gets, not a proxy) gets 400
    saying to send the full URL, and the connection closed.
    """
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
    status, headers, body = refusal(oneProxy.port, request)
    assert status == 400
    assert b"send the full URL" in body
    assert headers["connection"].lower() == "close"


def test_earlyDataReachesOrigin(
    oneProxy: ProxyProcess, echoOrigin: OriginProcess
) -> None:
    """
    Bytes sent in the same segment as the CONNECT head reach the origin once
    the tunnel exists.
    """
    early = b"early bytes, before any answer"
    sock, rest = openTunnel(oneProxy.port, echoOrigin.port, early=early)
    with sock:
        assert rest + readExactly(sock, len(early) - len(rest)) == early
        sock.sendall(b"and after")
        assert readExactly(sock, 9) == b"and after"


def test_halfCloseOnRealSockets(
    oneProxy: ProxyProcess, echoOrigin: OriginProcess
) -> None:
    """
    After the client shuts down its sending side, every echoed byte still
    arrives, then end of input, and the log counts both directions.
    """
    payload = os.urandom(65536)
    sock, rest = openTunnel(oneProxy.port, echoOrigin.port)
    with sock:
        assert rest == b""
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        assert readToEnd(sock) == payload
    echoOrigin.waitForLine("echo eof")
    event = oneProxy.waitForNamed("tunnel_close", port=echoOrigin.port)
    assert (event["bytesUp"], event["bytesDown"]) == (len(payload), len(payload))
