# -*- test-case-name: tests.integration.test_tls -*-
"""
The HTTPS-proxy listener (C{--listen ssl:...}) end to end: real clients that
offer ALPN (curl, httpx, requests, openssl s_client) tunnel through it, a
client sharing no protocol is refused cleanly, plaintext and untrusting
clients cost one log event each, and tunnels over TLS close fully.
"""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from tests.integration._output import Event, LineCollector
from tests.integration._pki import TLSFiles
from tests.integration._processes import (
    BIN_DIR,
    REPO_ROOT,
    ChildProcess,
    OriginFactory,
    OriginProcess,
    ProxyFactory,
    ProxyProcess,
    cleanEnvironment,
    sourceEnvironment,
)
from tests.integration._sockets import (
    IPV4,
    IPV6,
    LOCAL,
    LOCAL6,
    Loopback,
    bothFamilies,
    connectRequest,
    dial,
    readExactly,
    readResponseHead,
    readToEnd,
)

pytestmark = pytest.mark.integration

CLIENT_TIMEOUT = 30
"""
Seconds any client process or socket operation may take.
"""

TAC = REPO_ROOT / "docs" / "examples" / "connectproxy.tac"


def sslListener(pki: TLSFiles, prefix: str = "", family: Loopback = IPV4) -> str:
    """
    The description of an HTTPS-proxy listener on a free loopback port.

    @param pki: Where the proxy's certificate and key are.
    @param prefix: A wrapper in front (C{haproxy:}).
    @param family: Whose loopback address to listen on.
    @return: The strports description.
    """
    return (
        f"{prefix}ssl:0:interface={family.interface}:privateKey={pki.serverKey}"
        f":certKey={pki.serverCert}"
    )


def originHost(family: Loopback) -> str:
    """
    The host of the URLs the clients fetch from the C{https} origin: the
    name C{localhost} over IPv4, the literal C{[::1]} over IPv6 (the
    origin listens on that address only).
    """
    return "localhost" if family == IPV4 else family.authority


def expectedBody(path: str) -> str:
    """
    The body the C{https} origin answers with.
    """
    return f"hello from the origin\npath={path}\n"


def connectionEvents(running: ProxyProcess) -> list[Event]:
    """
    Stop the proxy (which fails on any unhandled error it logged) and return
    every event it logged about a client connection.
    """
    running.stop()
    return [e for e in running.events if "client" in e]


def tlsContext(ca: TLSFiles, alpn: list[str] | None) -> ssl.SSLContext:
    """
    A client TLS context that trusts C{ca} and offers C{alpn}.
    """
    context = ssl.create_default_context(cafile=str(ca.caCert))
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    return context


def tlsDial(
    port: int, ca: TLSFiles, alpn: list[str] | None, host: str = LOCAL
) -> ssl.SSLSocket:
    """
    Connect to the HTTPS-proxy listener and complete the handshake.

    @param host: The proxy's address (C{127.0.0.1} or C{::1}).
    @return: The TLS socket, which raises L{ssl.SSLEOFError} on a close
        without close_notify.
    """
    sock = dial(port, CLIENT_TIMEOUT, host)
    try:
        return tlsContext(ca, alpn).wrap_socket(
            sock, server_hostname=host, suppress_ragged_eofs=False
        )
    except BaseException:
        sock.close()
        raise


def openTLSTunnel(
    port: int, ca: TLSFiles, target: int, preface: bytes = b"", host: str = LOCAL
) -> ssl.SSLSocket:
    """
    Open a tunnel through the HTTPS-proxy listener, offering http/1.1.

    @param preface: Bytes sent inside TLS before the request (a PROXY
        header).
    @param host: The address of both the proxy and the target.
    @return: The TLS socket, after the C{200}.
    """
    tls = tlsDial(port, ca, ["http/1.1"], host)
    try:
        assert tls.selected_alpn_protocol() == "http/1.1"
        tls.sendall(preface + connectRequest(host, target))
        response, rest = readResponseHead(tls)
        assert (response.status, rest) == (200, b""), response.raw
    except BaseException:
        tls.close()
        raise
    return tls


def run(argv: list[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    """
    Run a client with a bounded time and no proxy settings from outside.
    """
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} is not installed")
    return subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        text=True,
        env=cleanEnvironment(),
        timeout=CLIENT_TIMEOUT,
        check=False,
    )


@pytest.fixture
def httpsOrigin(origin: OriginFactory, family: Loopback) -> OriginProcess:
    """
    A TLS origin that answers C{GET}s, on the loopback address of
    C{family}.
    """
    return origin("https", host=family.host)


@pytest.fixture
def tlsProxy(
    proxy: ProxyFactory, tlsCertificate: TLSFiles, family: Loopback
) -> ProxyProcess:
    """
    A proxy with one HTTPS-proxy listener, on the loopback address of
    C{family}.
    """
    return proxy(listen=[sslListener(tlsCertificate, family=family)])


# Real clients, through the proxy to an HTTPS origin.


@bothFamilies
def test_curl(
    tlsProxy: ProxyProcess,
    httpsOrigin: OriginProcess,
    tlsCertificate: TLSFiles,
    family: Loopback,
) -> None:
    """
    C{curl -x https://...} fetches an HTTPS URL through the HTTPS proxy:
    over IPv4, and over IPv6 (C{-x https://[::1]:PORT}, the origin's URL
    an IPv6 literal too).
    """
    url = f"https://{originHost(family)}:{httpsOrigin.port}/curl"
    ca = str(tlsCertificate.caCert)
    result = run(
        [
            *("curl", "-q", "-sS", "--fail", "-p", "--noproxy", "", "--max-time", "20"),
            *("-x", f"https://{family.address(tlsProxy.port)}", "--proxy-cacert", ca),
            *("--cacert", ca, url),
        ]
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == expectedBody("/curl")
    event = tlsProxy.waitForNamed("tunnel_close", port=httpsOrigin.port)
    assert event["client"].startswith(family.authority + ":")
    assert event["upstream"] == family.address(httpsOrigin.port)


@bothFamilies
def test_httpx(
    tlsProxy: ProxyProcess,
    httpsOrigin: OriginProcess,
    tlsCertificate: TLSFiles,
    family: Loopback,
) -> None:
    """
    httpx, which offers ALPN to the proxy, fetches through the HTTPS proxy
    listening on IPv4 or IPv6.  The origin is C{localhost}, over IPv6 too:
    httpcore (1.0) writes an IPv6 literal target without its brackets
    (C{CONNECT ::1:PORT}), which the proxy refuses with 400 as RFC 9112
    says.
    """
    context = tlsContext(tlsCertificate, None)
    proxyURL = f"https://{family.address(tlsProxy.port)}"
    with httpx.Client(
        proxy=httpx.Proxy(proxyURL, ssl_context=context),
        verify=context,
        trust_env=False,
        timeout=CLIENT_TIMEOUT,
    ) as client:
        response = client.get(f"https://localhost:{httpsOrigin.port}/httpx")
    assert (response.status_code, response.text) == (200, expectedBody("/httpx"))
    tlsProxy.waitForNamed("tunnel_close", port=httpsOrigin.port)


def test_requests(
    tlsProxy: ProxyProcess, httpsOrigin: OriginProcess, tlsCertificate: TLSFiles
) -> None:
    """
    requests (urllib3 2, which offers ALPN to the proxy) fetches through the
    HTTPS proxy.
    """
    assert int(version("urllib3").split(".")[0]) >= 2
    with requests.Session() as session:
        session.trust_env = False
        response = session.get(
            f"https://localhost:{httpsOrigin.port}/requests",
            proxies={"https": f"https://{LOCAL}:{tlsProxy.port}"},
            verify=str(tlsCertificate.caCert),
            timeout=CLIENT_TIMEOUT,
        )
    assert (response.status_code, response.text) == (200, expectedBody("/requests"))


@pytest.mark.parametrize(
    ("alpn", "negotiated"),
    [
        ([], "No ALPN negotiated"),
        (["-alpn", "http/1.1"], "ALPN protocol: http/1.1"),
        (["-alpn", "h2,http/1.1"], "ALPN protocol: http/1.1"),
    ],
    ids=["none", "http1.1", "h2-then-http1.1"],
)
def test_opensslClient(
    tlsProxy: ProxyProcess,
    tlsCertificate: TLSFiles,
    alpn: list[str],
    negotiated: str,
) -> None:
    """
    C{openssl s_client}, with or without ALPN, completes the handshake and
    gets an HTTP answer from the proxy.
    """
    result = run(
        [
            *("openssl", "s_client", "-connect", f"{LOCAL}:{tlsProxy.port}"),
            *("-ign_eof", "-CAfile", str(tlsCertificate.caCert)),
            *("-verify_return_error", *alpn),
        ],
        stdin="GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    )
    assert negotiated in result.stdout, result.stdout + result.stderr
    assert "Verify return code: 0 (ok)" in result.stdout
    assert "HTTP/1.1 400 Bad Request" in result.stdout
    [event] = connectionEvents(tlsProxy)
    assert (event["event"], event["status"]) == ("request_refused", 400)


# Clients that fail the handshake: one log event each, nothing else.


@bothFamilies
def test_opensslOnlyH2Refused(
    tlsProxy: ProxyProcess, tlsCertificate: TLSFiles, family: Loopback
) -> None:
    """
    A client offering only C{h2} gets a C{no_application_protocol} alert;
    the proxy logs it once, naming the client (C{[::1]:PORT} over IPv6).
    """
    result = run(
        [
            *("openssl", "s_client", "-connect", family.address(tlsProxy.port)),
            *("-CAfile", str(tlsCertificate.caCert), "-alpn", "h2"),
        ]
    )
    output = result.stdout + result.stderr
    assert "alert no application protocol" in output, output
    assert "SSL alert number 120" in output
    [event] = connectionEvents(tlsProxy)
    assert event["event"] == "tls_handshake_failed"
    assert event["cause"] == "no_shared_protocol"
    assert event["reason"] == (
        "the client offered h2 over ALPN; this proxy speaks http/1.1"
    )
    assert event["client"].startswith(family.authority + ":")


def test_pythonOnlyH2Refused(tlsProxy: ProxyProcess, tlsCertificate: TLSFiles) -> None:
    """
    Python's TLS client offering only C{h2} sees the handshake fail with
    the C{no_application_protocol} alert.
    """
    with pytest.raises(ssl.SSLError, match="alert no application protocol"):
        tlsDial(tlsProxy.port, tlsCertificate, ["h2"]).close()
    [event] = connectionEvents(tlsProxy)
    assert (event["event"], event["cause"]) == (
        "tls_handshake_failed",
        "no_shared_protocol",
    )


@bothFamilies
def test_plaintextToTLSPort(
    tlsProxy: ProxyProcess, httpsOrigin: OriginProcess, family: Loopback
) -> None:
    """
    A plain CONNECT sent to the TLS port ends the connection at once, with
    one log event that says the client did not speak TLS.
    """
    with dial(tlsProxy.port, CLIENT_TIMEOUT, family.host) as sock:
        sock.sendall(connectRequest(family.host, httpsOrigin.port))
        try:
            answer = readToEnd(sock)
        except ConnectionResetError:
            answer = b""
    assert b"HTTP/" not in answer
    [event] = connectionEvents(tlsProxy)
    assert (event["event"], event["cause"]) == ("tls_handshake_failed", "plaintext")
    assert "https proxy request" in event["reason"]


def test_untrustingClient(
    tlsProxy: ProxyProcess, httpsOrigin: OriginProcess, tlsCertificate: TLSFiles
) -> None:
    """
    curl that does not trust the proxy's CA gives up on the handshake; the
    proxy logs one event naming the certificate.
    """
    result = run(
        [
            *("curl", "-q", "-sS", "-p", "--noproxy", "", "--max-time", "20"),
            *("-x", f"https://{LOCAL}:{tlsProxy.port}"),
            f"https://localhost:{httpsOrigin.port}/",
        ]
    )
    assert result.returncode == 60, result.stderr
    [event] = connectionEvents(tlsProxy)
    assert (event["event"], event["cause"]) == ("tls_handshake_failed", "certificate")
    assert "unknown ca" in event["reason"]


def test_handshakeNeverFinished(proxy: ProxyFactory, tlsCertificate: TLSFiles) -> None:
    """
    A client that starts a TLS handshake and never finishes it is cut off
    at the request timeout, without waiting for the abort timeout, and
    logged once as a handshake that timed out (never as a 408).
    """
    running = proxy(
        *("--request-timeout", "1", "--abort-timeout", "60"),
        listen=[sslListener(tlsCertificate)],
    )
    with dial(running.port, CLIENT_TIMEOUT) as sock:
        sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        try:
            answer = readToEnd(sock)
        except ConnectionResetError:
            answer = b""
    assert answer == b""
    event = running.waitForNamed("tls_handshake_failed")
    assert event["cause"] == "timeout"
    assert [e for e in running.events if e.get("event") == "request_refused"] == []


# Tunnels over TLS close fully.


@bothFamilies
def test_tunnelFlushedAndClosed(
    proxy: ProxyFactory,
    origin: OriginFactory,
    tlsCertificate: TLSFiles,
    family: Loopback,
) -> None:
    """
    When the upstream sends its last bytes and closes, a TLS client gets
    every byte, then close_notify (TLS cannot half-close); answering it
    closes the tunnel at once, well within the abort timeout.
    """
    size = 3 << 20
    push = origin("push", "--bytes", str(size), host=family.host)
    running = proxy(
        "--abort-timeout",
        "60",
        listen=[sslListener(tlsCertificate, family=family)],
    )
    tls = openTLSTunnel(running.port, tlsCertificate, push.port, host=family.host)
    with tls:
        received = readToEnd(tls, limit=size)
        assert len(received) == size
        tls.unwrap().close()
    event = running.waitForNamed("tunnel_close", port=push.port)
    assert (event["bytesDown"], event["reason"]) == (size, "upstream closed")
    assert event["duration"] < 60


def test_silentTLSClientAborted(
    proxy: ProxyFactory, origin: OriginFactory, tlsCertificate: TLSFiles
) -> None:
    """
    A TLS client that never answers the proxy's close_notify is cut off
    after the abort timeout.
    """
    push = origin("push", "--bytes", "1000")
    running = proxy("--abort-timeout", "1.5", listen=[sslListener(tlsCertificate)])
    tls = openTLSTunnel(running.port, tlsCertificate, push.port)
    with tls:
        assert len(readExactly(tls, 1000)) == 1000
        # Read nothing more, answer nothing: the close_notify waits unread.
        event = running.waitForNamed("tunnel_close", port=push.port, timeout=20)
        assert event["duration"] >= 1.5
        assert event["bytesDown"] == 1000


# Other ways to run the HTTPS-proxy listener.


@bothFamilies
def test_haproxySSLListener(
    proxy: ProxyFactory,
    origin: OriginFactory,
    tlsCertificate: TLSFiles,
    family: Loopback,
) -> None:
    """
    An C{haproxy:ssl:} listener (the PROXY header inside TLS) negotiates
    http/1.1 through the PROXY-protocol wrapper and tunnels; a client
    sharing no protocol is refused cleanly there too.  Over IPv6 the header
    names an IPv6 client (C{TCP6}), served by an IPv6 C{--allow-client}.
    """
    echo = origin("echo", host=family.host)
    if family == IPV6:
        clients, claimed = "2001:db8:5::/48", f"TCP6 2001:db8:5::7 {LOCAL6}"
        client = "[2001:db8:5::7]:5555"
    else:
        clients, claimed = "203.0.113.0/24", f"TCP4 203.0.113.5 {LOCAL}"
        client = "203.0.113.5:5555"
    running = proxy(
        "--allow-client",
        clients,
        listen=[sslListener(tlsCertificate, "haproxy:", family)],
    )
    header = f"PROXY {claimed} 5555 {running.port}\r\n".encode()
    with openTLSTunnel(
        running.port, tlsCertificate, echo.port, header, family.host
    ) as tls:
        tls.sendall(b"through PROXY inside TLS")
        assert readExactly(tls, 24) == b"through PROXY inside TLS"
    event = running.waitForNamed("tunnel_close", port=echo.port)
    assert event["client"] == client
    with pytest.raises(ssl.SSLError, match="alert no application protocol"):
        tlsDial(running.port, tlsCertificate, ["h2"], family.host).close()
    running.waitForNamed("tls_handshake_failed", cause="no_shared_protocol")


@pytest.fixture
def tacProxy(tlsCertificate: TLSFiles, tmp_path: Path) -> Iterator[int]:
    """
    The example C{.tac} file run by C{twistd} with an HTTPS-proxy listener.

    @return: Its port.
    """
    config = tmp_path / "tls.toml"
    config.write_text(
        'allow-port = ["1-65535"]\nallow-network = ["127.0.0.0/8", "::1/128"]\n'
    )
    argv = [str(BIN_DIR / "twistd"), "-ny", str(TAC), "--pidfile=", "-l", "-"]
    env = sourceEnvironment(
        CONNECTPROXY_LISTEN=sslListener(tlsCertificate),
        CONNECTPROXY_CONFIG=str(config),
    )
    twistd: ChildProcess[Any] = ChildProcess(argv, LineCollector, env, tmp_path)
    try:
        pattern = re.compile(r"connectproxy listening on 127\.0\.0\.1:(\d+)")
        line = twistd.output.waitFor(
            lambda line: pattern.search(line) is not None, 20, "the listening line"
        )
        match = pattern.search(line)
        assert match is not None
        yield int(match.group(1))
    finally:
        twistd.stop()


def test_tacFile(
    tacProxy: int, httpsOrigin: OriginProcess, tlsCertificate: TLSFiles
) -> None:
    """
    The example C{.tac} file with an HTTPS-proxy listener serves httpx.
    """
    context = tlsContext(tlsCertificate, None)
    with httpx.Client(
        proxy=httpx.Proxy(f"https://{LOCAL}:{tacProxy}", ssl_context=context),
        verify=context,
        trust_env=False,
        timeout=CLIENT_TIMEOUT,
    ) as client:
        response = client.get(f"https://localhost:{httpsOrigin.port}/tac")
    assert response.text == expectedBody("/tac")
