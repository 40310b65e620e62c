# -*- test-case-name: tests.integration.test_access -*-
"""
The access controls of a proxy process, seen from loopback clients: the
default-deny destination rules (the SSRF guard), port, network, host and
client rules, proxy authentication with real clients and raw sockets, the
failed-login limiter, the connection limits and the C{hostlist} policy.

Every destination is on 127.0.0.1 or ::1; the only name resolved is
C{localhost}.
"""

from __future__ import annotations

import base64
import os
import select
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import pytest
import requests

from connectproxy.testing import connectHead
from tests.integration._output import Event
from tests.integration._pki import TLSFiles
from tests.integration._processes import (
    LISTEN_ANY_PORT,
    ChildProcess,
    OriginProcess,
    ProxyFactory,
    ProxyProcess,
    cleanEnvironment,
    proxyCommand,
    stopAll,
)
from tests.integration._sockets import LOCAL, Response

pytestmark = pytest.mark.integration

OTHER_LOOPBACK = "127.0.0.2"
"""
A second loopback address: a client or a destination that is not 127.0.0.1.
"""

REALM = 'loopback "tests"'
"""
The realm of the authenticating proxies, with quotes that must be escaped.
"""

CHALLENGE = 'Basic realm="loopback \\"tests\\"", charset="UTF-8"'
"""
The C{Proxy-Authenticate} value that L{REALM} gives.
"""

USERS = {
    # user: (htpasswd flags, password)
    "bcrypt-user": (("-B", "-C", "4"), "b-secret"),
    "apr1-user": (("-m",), "m-secret"),
    "sha-user": (("-s",), "s-secret"),
    "colons": (("-m",), "a:b:c:"),
    "jürgen": (("-B", "-C", "4"), "pä:ss:wört"),
}
"""
The users of the password file, one per hash format, and two with a colon
in the password (one of them with a name that is not ASCII).
"""

CLIENT_TIMEOUT = 30
"""
Seconds any client process may run.
"""


class Client:
    """
    A raw client socket with a receive buffer, so that responses that arrive
    together (a 407 and the 200 after it) are read one at a time.
    """

    def __init__(self, port: int, source: str = LOCAL, timeout: float = 10.0) -> None:
        """
        Connect to a port on 127.0.0.1.

        @param port: The proxy's port.
        @param source: The loopback address to connect from.
        @param timeout: The socket's timeout for every operation.
        """
        self.sock = socket.create_connection(
            (LOCAL, port), timeout=timeout, source_address=(source, 0)
        )
        self._buffer = bytearray()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        """
        Send all of C{data}.
        """
        self.sock.sendall(data)

    def _more(self, what: str) -> bool:
        """
        Receive once into the buffer.

        @param what: What the caller waits for, for the failure message.
        @return: Whether anything arrived (C{False} at end of input).
        """
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            raise AssertionError(
                f"waiting for {what}: nothing for {self.sock.gettimeout()}s "
                f"after {bytes(self._buffer[:300])!r}"
            ) from None
        self._buffer += chunk
        assert len(self._buffer) <= 1 << 20, "more than 1 MiB unread"
        return bool(chunk)

    def response(self) -> tuple[Response, bytes]:
        """
        Read one response: its head, then as much body as it announces.

        @return: The head and the body.
        """
        while b"\r\n\r\n" not in self._buffer:
            assert self._more("a response head"), (
                f"end of input before a response head: {bytes(self._buffer)!r}"
            )
        head, _, rest = bytes(self._buffer).partition(b"\r\n\r\n")
        self._buffer = bytearray(rest)
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        response = Response(
            int(lines[0].split(" ")[1]), lines[0], headers, head + b"\r\n\r\n"
        )
        return response, self.exactly(int(headers.get("content-length", "0")))

    def exactly(self, size: int) -> bytes:
        """
        Read exactly C{size} bytes.
        """
        while len(self._buffer) < size:
            assert self._more(f"{size} bytes"), f"end of input: {bytes(self._buffer)!r}"
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def toEnd(self) -> bytes:
        """
        Read until the peer closes its side.

        @return: Everything not read before.
        """
        while self._more("end of input"):
            pass
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def echo(self, payload: bytes) -> None:
        """
        Send C{payload} through a tunnel to an echo origin and check that it
        comes back.
        """
        self.send(payload)
        assert self.exactly(len(payload)) == payload


def basic(user: str, password: str) -> str:
    """
    A C{Proxy-Authorization} field line with Basic credentials in UTF-8.
    """
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Proxy-Authorization: Basic {token}"


def refusal(port: int, head: bytes, source: str = LOCAL) -> tuple[Response, str]:
    """
    Send a request that the proxy refuses, and read its answer to the end.

    @return: The response head and its body.
    """
    with Client(port, source) as client:
        client.send(head)
        response, body = client.response()
        assert response.status >= 400, response.raw
        assert client.toEnd() == b""
    return response, body.decode("utf-8")


def tunnel(port: int, head: bytes, source: str = LOCAL) -> Client:
    """
    Open a tunnel and check that the proxy answered 200.

    @return: The client, whose socket the caller closes.
    """
    client = Client(port, source)
    try:
        client.send(head)
        response, _ = client.response()
        assert response.status == 200, response.raw
    except BaseException:
        client.sock.close()
        raise
    return client


def startProxies(
    *extraArgs: str, loopbackOrigins: bool = True, listen: Sequence[str] = ()
) -> Iterator[ProxyProcess]:
    """
    Run one proxy for a fixture broader than a test, and stop it after.

    @param extraArgs: Options after the listeners.
    @param loopbackOrigins: Whether to allow loopback targets on any port.
    @param listen: The listeners; one on a free port of 127.0.0.1 if empty.
    """
    listeners = list(listen) or [LISTEN_ANY_PORT]
    started = ProxyProcess(
        proxyCommand(extraArgs, listeners, loopbackOrigins),
        listeners=len(listeners),
    )
    try:
        yield started
    finally:
        stopAll([started])


def laterEvents(running: ProxyProcess) -> Callable[..., Event]:
    """
    Remember the events a shared proxy has logged so far.

    @return: A function that waits for a later event with the given C{event}
        name and fields.
    """
    seen = {id(event) for event in running.events}

    def waitForLater(name: str, **fields: object) -> Event:
        return running.waitForEvent(
            lambda e: (
                id(e) not in seen
                and e.get("event") == name
                and all(e.get(key) == value for key, value in fields.items())
            )
        )

    return waitForLater


class Sentinel:
    """
    A listening socket that never accepts: a destination that must not be
    reached.  A connection that reached it waits in its accept queue, which
    makes it readable.
    """

    def __init__(self, host: str, port: int = 0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.sock.bind((host, port))
            self.sock.listen(8)
        except BaseException:
            self.sock.close()
            raise
        self.port: int = self.sock.getsockname()[1]

    def reached(self) -> bool:
        """
        Whether a connection is waiting, without waiting for one.
        """
        readable, _, _ = select.select([self.sock], [], [], 0)
        return bool(readable)


@pytest.fixture
def strictProxy(processes: list[ChildProcess[Any]]) -> ProxyFactory:
    """
    Start proxies with the default destination rules (no loopback, port 443
    only) plus the options given.
    """

    def start(*extraArgs: str) -> ProxyProcess:
        started = ProxyProcess(proxyCommand(extraArgs, loopbackOrigins=False))
        processes.append(started)
        return started

    return start


@pytest.fixture
def sentinel() -> Iterator[Sentinel]:
    """
    A L{Sentinel} on 127.0.0.1.
    """
    guard = Sentinel(LOCAL)
    with guard.sock:
        yield guard


@pytest.fixture(scope="module")
def loopbackSentinels() -> Iterator[tuple[Sentinel, Sentinel]]:
    """
    L{Sentinel}s on 127.0.0.1 and ::1 with the same port, so that no
    loopback spelling of that port reaches anything else.
    """
    for _ in range(20):
        first = Sentinel(LOCAL)
        try:
            second = Sentinel("::1", first.port)
        except OSError:
            first.sock.close()
            continue
        with first.sock, second.sock:
            yield first, second
        return
    pytest.fail("found no port free on both 127.0.0.1 and ::1")


@pytest.fixture(scope="module")
def defaultDenyProxy() -> Iterator[ProxyProcess]:
    """
    A proxy with the default destination networks, on every port.
    """
    yield from startProxies("--allow-port", "1-65535", loopbackOrigins=False)


@pytest.fixture(scope="module")
def echoOrigin() -> Iterator[OriginProcess]:
    """
    A plain TCP echo origin, shared by the tests of this module.
    """
    started = OriginProcess("echo", ())
    try:
        yield started
    finally:
        stopAll([started])


@pytest.mark.parametrize(
    "host, reason",
    [
        ("127.0.0.1", "127.0.0.1 is a loopback address"),
        ("[::1]", "::1 is a loopback address"),
        # The connector gets the target as the access checks normalised it:
        # an IPv4-mapped address is its IPv4 address on the wire.
        ("[::ffff:127.0.0.1]", "127.0.0.1 is a loopback address"),
        ("0.0.0.0", "0.0.0.0 is the unspecified address"),
        ("[::]", ":: is the unspecified address"),
        ("localhost", "localhost resolves to ::1, which is a loopback address"),
        ("LocalHost.", "localhost resolves to ::1, which is a loopback address"),
    ],
)
def test_loopbackDestinationsRefused(
    defaultDenyProxy: ProxyProcess,
    loopbackSentinels: tuple[Sentinel, Sentinel],
    host: str,
    reason: str,
) -> None:
    """
    With the default networks, every spelling of a loopback destination,
    names that resolve to one included, gets 403 and no connection; the
    body and the log say why and name the option that would allow it.
    """
    port = loopbackSentinels[0].port
    response, body = refusal(defaultDenyProxy.port, connectHead(f"{host}:{port}"))
    reason += ", not allowed by default (see --allow-network)"
    assert (response.status, body) == (403, f"403 Forbidden: {reason}\n")
    assert not any(guard.reached() for guard in loopbackSentinels)
    event = defaultDenyProxy.waitForNamed("request_refused", target=f"{host}:{port}")
    assert (event["status"], event["reason"]) == (403, reason)


@pytest.mark.parametrize(
    "host", ["0x7f000001", "0x7f.0x0.0x0.0x1", "0x7f.1", "2130706433", "017700000001"]
)
def test_numericNamesRefused(
    defaultDenyProxy: ProxyProcess,
    loopbackSentinels: tuple[Sentinel, Sentinel],
    host: str,
) -> None:
    """
    Names that a resolver would read as an IPv4 address (hexadecimal, octal,
    decimal or short forms) get 400 and no connection.
    """
    port = loopbackSentinels[0].port
    response, body = refusal(defaultDenyProxy.port, connectHead(f"{host}:{port}"))
    assert (response.status, body) == (
        400,
        "400 Bad Request: invalid IPv4 address in target\n",
    )
    assert not any(guard.reached() for guard in loopbackSentinels)


def test_portRule(
    strictProxy: ProxyFactory, echoOrigin: OriginProcess, sentinel: Sentinel
) -> None:
    """
    With the loopback network allowed but the default ports, a tunnel to the
    origin's port gets 403 naming the port; with that port allowed it works.
    """
    network = ("--allow-network", "127.0.0.0/8")
    defaultPorts = strictProxy(*network)
    for host in [LOCAL, "localhost"]:
        response, body = refusal(
            defaultPorts.port, connectHead(f"{host}:{echoOrigin.port}")
        )
        assert (response.status, body) == (
            403,
            f"403 Forbidden: port {echoOrigin.port} is not allowed "
            "(see --allow-port)\n",
        )
    onePort = strictProxy(*network, "--allow-port", str(echoOrigin.port))
    with tunnel(onePort.port, connectHead(f"{LOCAL}:{echoOrigin.port}")) as client:
        client.echo(b"through the allowed port")
    response, body = refusal(onePort.port, connectHead(f"{LOCAL}:{sentinel.port}"))
    assert (response.status, body) == (
        403,
        f"403 Forbidden: port {sentinel.port} is not allowed (see --allow-port)\n",
    )
    assert not sentinel.reached()


def test_narrowerDenyNetworkWins(
    strictProxy: ProxyFactory, echoOrigin: OriginProcess
) -> None:
    """
    C{--deny-network 127.0.0.2/32} inside C{--allow-network 127.0.0.0/8}
    refuses 127.0.0.2 (in either spelling) and still allows 127.0.0.1.
    """
    running = strictProxy(
        *("--allow-port", "1-65535", "--allow-network", "127.0.0.0/8"),
        *("--deny-network", "127.0.0.2/32"),
    )
    with tunnel(running.port, connectHead(f"{LOCAL}:{echoOrigin.port}")) as client:
        client.echo(b"127.0.0.1 is allowed")
    guard = Sentinel(OTHER_LOOPBACK)
    with guard.sock:
        for host in [OTHER_LOOPBACK, f"[::ffff:{OTHER_LOOPBACK}]"]:
            response, body = refusal(running.port, connectHead(f"{host}:{guard.port}"))
            assert response.status == 403
            assert body.startswith(
                "403 Forbidden: 127.0.0.2 is denied by --deny-network 127.0.0.2/32"
            ), body
        assert not guard.reached()


def test_denyHost(
    proxy: ProxyFactory, echoOrigin: OriginProcess, sentinel: Sentinel
) -> None:
    """
    C{--deny-host localhost} refuses the name in any case and with a
    trailing dot before connecting; the address itself is not a name.
    """
    running = proxy("--deny-host", "localhost")
    for host in ["localhost", "LOCALHOST."]:
        response, body = refusal(running.port, connectHead(f"{host}:{sentinel.port}"))
        assert (response.status, body) == (
            403,
            "403 Forbidden: host localhost is denied by --deny-host localhost\n",
        )
    assert not sentinel.reached()
    with tunnel(running.port, connectHead(f"{LOCAL}:{echoOrigin.port}")) as client:
        client.echo(b"an address is not the denied name")


def test_allowHost(
    proxy: ProxyFactory, echoOrigin: OriginProcess, sentinel: Sentinel
) -> None:
    """
    Once C{--allow-host} is given, only matching names are tunnelled to;
    other targets get 403 before any connection.
    """
    running = proxy("--allow-host", "localhost", "--allow-host", "*.localhost")
    with tunnel(running.port, connectHead(f"localhost:{echoOrigin.port}")) as client:
        client.echo(b"an allowed name")
    for host, shown in [(LOCAL, LOCAL), ("[::1]", "::1")]:
        response, body = refusal(running.port, connectHead(f"{host}:{sentinel.port}"))
        assert (response.status, body) == (
            403,
            f"403 Forbidden: host {shown} matches no --allow-host pattern\n",
        )
    assert not sentinel.reached()


@pytest.mark.parametrize(
    "host, answer",
    [
        (
            "[::ffff:127.0.0.1]",
            "403 Forbidden: host 127.0.0.1 is denied by --deny-host 127.0.0.1\n",
        ),
        ("0x7f000001", "400 Bad Request: invalid IPv4 address in target\n"),
        ("0x7f.0x0.0x0.0x1", "400 Bad Request: invalid IPv4 address in target\n"),
    ],
)
def test_denyHostAddressOtherSpellings(
    proxy: ProxyFactory, sentinel: Sentinel, host: str, answer: str
) -> None:
    """
    C{--deny-host 127.0.0.1} also keeps other spellings of that address from
    reaching it, with loopback destinations otherwise allowed.
    """
    running = proxy("--deny-host", LOCAL)
    _, body = refusal(running.port, connectHead(f"{host}:{sentinel.port}"))
    assert body == answer
    assert not sentinel.reached()


def test_otherLoopbackClientServed(
    proxy: ProxyFactory, echoOrigin: OriginProcess
) -> None:
    """
    A listener on 127.0.0.1 serves a client connecting from 127.0.0.2, since
    all of loopback is always allowed.
    """
    # Loopback clients cannot be refused, so refusal by address is shown
    # behind a PROXY-protocol listener below (and in the protocol tests).
    running = proxy()
    head = connectHead(f"{LOCAL}:{echoOrigin.port}")
    with tunnel(running.port, head, source=OTHER_LOOPBACK) as client:
        client.echo(b"from 127.0.0.2")
    event = running.waitForNamed("tunnel_close", port=echoOrigin.port)
    assert event["client"].startswith(f"{OTHER_LOOPBACK}:")


@pytest.mark.parametrize("allowed", [False, True])
def test_clientRulesBehindProxyProtocol(
    proxy: ProxyFactory, echoOrigin: OriginProcess, allowed: bool
) -> None:
    """
    Behind a PROXY-protocol listener, a client whose reported address is not
    loopback gets 403, unless C{--allow-client} names its network.
    """
    options = ["--allow-client", "203.0.113.0/24"] if allowed else []
    running = proxy(*options, listen=["haproxy:tcp:0:interface=127.0.0.1"])
    header = f"PROXY TCP4 203.0.113.5 127.0.0.1 5555 {running.port}\r\n".encode()
    head = header + connectHead(f"{LOCAL}:{echoOrigin.port}")
    if allowed:
        with tunnel(running.port, head) as client:
            client.echo(b"an allowed client network")
        event = running.waitForNamed("tunnel_close", port=echoOrigin.port)
    else:
        response, body = refusal(running.port, head)
        assert (response.status, body) == (
            403,
            "403 Forbidden: client 203.0.113.5 is not allowed behind a load "
            "balancer (see --allow-client)\n",
        )
        event = running.waitForNamed("request_refused", status=403)
    assert event["client"] == "203.0.113.5:5555"


@pytest.mark.parametrize(
    "claimed, options",
    [
        ("127.0.0.5", []),
        ("127.0.0.9", ["--trusted-proxy", "192.0.2.0/24"]),
    ],
)
def test_forgedLoopbackBehindProxyProtocol(
    proxy: ProxyFactory, echoOrigin: OriginProcess, claimed: str, options: list[str]
) -> None:
    """
    A PROXY header claiming a loopback client is not enough to be served:
    behind a PROXY-protocol listener only --allow-client networks are.
    """
    running = proxy(*options, listen=["haproxy:tcp:0:interface=127.0.0.1"])
    header = f"PROXY TCP4 {claimed} 127.0.0.1 5555 {running.port}\r\n".encode()
    response, _ = refusal(
        running.port, header + connectHead(f"{LOCAL}:{echoOrigin.port}")
    )
    assert response.status == 403
    event = running.waitForNamed("request_refused", status=403)
    assert event["client"] == f"{claimed}:5555"


def test_hostListPolicy(
    proxy: ProxyFactory,
    echoOrigin: OriginProcess,
    sentinel: Sentinel,
    scratchDir: Path,
) -> None:
    """
    C{--policy hostlist:FILE} tunnels to a listed name and refuses an
    unlisted target with the plugin's reason.
    """
    hosts = scratchDir / "hosts"
    hosts.write_text("# tunnel to these only\nlocalhost\n\n", encoding="utf-8")
    running = proxy("--policy", f"hostlist:{hosts}")
    with tunnel(running.port, connectHead(f"localhost:{echoOrigin.port}")) as client:
        client.echo(b"a listed name")
    response, body = refusal(running.port, connectHead(f"{LOCAL}:{sentinel.port}"))
    assert (response.status, body) == (
        403,
        "403 Forbidden: host 127.0.0.1 is not in the allowed list\n",
    )
    assert not sentinel.reached()


# Authentication.


@pytest.fixture(scope="module")
def htpasswdTool() -> str:
    """
    The path of Apache's C{htpasswd} tool; the tests that need it are skipped
    without it, except under C{CI}.
    """
    tool = shutil.which("htpasswd")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("htpasswd is missing: install the apache2-utils package")
        pytest.skip("htpasswd is missing: install the apache2-utils package")
    return tool


def addUser(tool: str, path: Path, user: str) -> None:
    """
    Add one of L{USERS} to an htpasswd file with the real tool.
    """
    flags, password = USERS[user]
    create = [] if path.exists() else ["-c"]
    argv = [tool, *create, "-b", *flags, str(path), user, password]
    subprocess.run(argv, check=True, capture_output=True, timeout=CLIENT_TIMEOUT)


@pytest.fixture(scope="module")
def usersFile(htpasswdTool: str) -> Iterator[Path]:
    """
    An htpasswd file with every one of L{USERS}.
    """
    with tempfile.TemporaryDirectory(prefix="connectproxy-users-") as directory:
        path = Path(directory) / "users"
        for user in USERS:
            addUser(htpasswdTool, path, user)
        yield path


@pytest.fixture(scope="module")
def authProxy(usersFile: Path) -> Iterator[ProxyProcess]:
    """
    A proxy that requires a password from the users file, reaches loopback
    origins, counts no failed logins (the limiter has its own tests) and
    takes header lines of up to 16 KiB.
    """
    yield from startProxies(
        *("--auth", f"htpasswd:{usersFile}", "--auth-realm", REALM),
        *("--auth-max-failures", "0", "--auth-max-failed-users", "0"),
        *("--max-request-line", "16384"),
    )


@pytest.fixture(scope="module")
def httpsOrigin(tlsCertificate: TLSFiles) -> Iterator[OriginProcess]:
    """
    A TLS origin that answers C{GET}s, shared by the tests of this module.
    """
    tls = ("--cert", str(tlsCertificate.serverCert), "--key")
    started = OriginProcess("https", (*tls, str(tlsCertificate.serverKey)))
    try:
        yield started
    finally:
        stopAll([started])


def expectedBody(path: str) -> str:
    """
    The body the C{https} origin answers with.
    """
    return f"hello from the origin\npath={path}\n"


@dataclass(frozen=True)
class CurlResult:
    """
    What curl did.

    @ivar returncode: Its exit status.
    @ivar body: The response body it wrote.
    @ivar connectStatus: The proxy's answer to its CONNECT, as text.
    @ivar stderr: Its error output.
    """

    returncode: int
    body: str
    connectStatus: str
    stderr: str


def curl(proxyPort: int, url: str, ca: TLSFiles, *extra: str) -> CurlResult:
    """
    Fetch a URL with curl through the proxy, with no configuration file and
    no proxy setting from the environment.

    @param extra: More arguments, such as C{--proxy-user}.
    """
    tool = shutil.which("curl")
    if tool is None:
        pytest.skip("curl is not installed")
    argv = [tool, "-q", "-sS", "-p", "-x", f"http://{LOCAL}:{proxyPort}"]
    argv += ["--noproxy", "", "--cacert", str(ca.caCert), "--max-time", "20"]
    argv += ["--write-out", "\n%{http_connect}", *extra, url]
    result = subprocess.run(
        argv,
        capture_output=True,
        env=cleanEnvironment(),
        timeout=CLIENT_TIMEOUT,
        check=False,
    )
    body, _, status = result.stdout.decode("utf-8").rpartition("\n")
    return CurlResult(
        result.returncode, body, status, result.stderr.decode("utf-8", "replace")
    )


@pytest.mark.parametrize("user", list(USERS))
def test_curlWithPassword(
    authProxy: ProxyProcess,
    httpsOrigin: OriginProcess,
    tlsCertificate: TLSFiles,
    user: str,
) -> None:
    """
    curl logs in with each hash format, a colon in the password and a UTF-8
    user name, and the user is named in the tunnel's C{tunnel_close}.
    """
    path = "/curl/" + quote(user)
    url = f"https://localhost:{httpsOrigin.port}{path}"
    proxyUser = f"{user}:{USERS[user][1]}"
    waitForLater = laterEvents(authProxy)
    result = curl(authProxy.port, url, tlsCertificate, "--proxy-user", proxyUser)
    assert (result.returncode, result.stderr) == (0, ""), result
    assert (result.connectStatus, result.body) == ("200", expectedBody(path))
    event = waitForLater("tunnel_close", port=httpsOrigin.port)
    assert (event["user"], event["host"]) == (user, "localhost")


@pytest.mark.parametrize("credentials", [None, "bcrypt-user:wrong", "nobody:b-secret"])
def test_curlRefused(
    authProxy: ProxyProcess,
    httpsOrigin: OriginProcess,
    tlsCertificate: TLSFiles,
    credentials: str | None,
) -> None:
    """
    curl without credentials, with a wrong password or an unknown user gets
    407 to its CONNECT and fails.
    """
    extra = [] if credentials is None else ["--proxy-user", credentials]
    url = f"https://localhost:{httpsOrigin.port}/refused"
    result = curl(authProxy.port, url, tlsCertificate, *extra)
    assert result.returncode != 0
    assert (result.connectStatus, result.body) == ("407", ""), result
    assert "407" in result.stderr


def requestsGet(proxyURL: str, url: str, ca: TLSFiles) -> requests.Response:
    """
    Fetch a URL with requests through a proxy, ignoring the environment.
    """
    with requests.Session() as session:
        session.trust_env = False
        session.proxies = {"https": proxyURL}
        session.verify = str(ca.caCert)
        return session.get(url, timeout=20)


@pytest.mark.parametrize("user", ["apr1-user", "colons"])
def test_requestsWithPassword(
    authProxy: ProxyProcess,
    httpsOrigin: OriginProcess,
    tlsCertificate: TLSFiles,
    user: str,
) -> None:
    """
    requests logs in with credentials percent-encoded in the proxy URL, a
    colon in the password included.
    """
    # requests encodes credentials as ISO-8859-1, not UTF-8, so a user name
    # that is not ASCII cannot log in with it; curl covers that case above.
    password = quote(USERS[user][1], safe="")
    proxyURL = f"http://{user}:{password}@{LOCAL}:{authProxy.port}"
    url = f"https://localhost:{httpsOrigin.port}/requests"
    response = requestsGet(proxyURL, url, tlsCertificate)
    assert (response.status_code, response.text) == (200, expectedBody("/requests"))


def test_requestsWrongPassword(
    authProxy: ProxyProcess, httpsOrigin: OriginProcess, tlsCertificate: TLSFiles
) -> None:
    """
    requests with a wrong password raises a C{ProxyError} that names 407.
    """
    proxyURL = f"http://apr1-user:wrong@{LOCAL}:{authProxy.port}"
    url = f"https://localhost:{httpsOrigin.port}/refused"
    with pytest.raises(requests.exceptions.ProxyError, match="407"):
        requestsGet(proxyURL, url, tlsCertificate)


def test_challengeThenRetryOnSameConnection(
    authProxy: ProxyProcess, echoOrigin: OriginProcess
) -> None:
    """
    A CONNECT without credentials gets a 407 challenge that keeps the
    connection open; the retry on it with credentials gets a working tunnel.
    """
    target = f"{LOCAL}:{echoOrigin.port}"
    with Client(authProxy.port) as client:
        address = "{}:{}".format(*client.sock.getsockname())
        client.send(connectHead(target))
        response, body = client.response()
        assert response.status == 407
        assert response.headers["proxy-authenticate"] == CHALLENGE
        assert "connection" not in response.headers
        assert (
            body
            == b"407 Proxy Authentication Required: proxy authentication required\n"
        )
        client.send(connectHead(target, basic("sha-user", "s-secret")))
        response, body = client.response()
        assert (response.status, body) == (200, b"")
        client.echo(b"after the challenge")
    event = authProxy.waitForNamed("tunnel_close", client=address)
    assert (event["user"], event["bytesUp"], event["bytesDown"]) == ("sha-user", 19, 19)


def test_pipelinedRetry(authProxy: ProxyProcess, echoOrigin: OriginProcess) -> None:
    """
    A request without credentials, the retry with credentials and the first
    tunnel bytes, sent at once, get the 407, the 200 and the echo in order.
    """
    target = f"{LOCAL}:{echoOrigin.port}"
    payload = b"pipelined behind two heads"
    with Client(authProxy.port) as client:
        client.send(
            connectHead(target)
            + connectHead(target, basic("bcrypt-user", "b-secret"))
            + payload
        )
        assert client.response()[0].status == 407
        assert client.response()[0].status == 200
        assert client.exactly(len(payload)) == payload


def test_http10ChallengeCloses(authProxy: ProxyProcess) -> None:
    """
    An HTTP/1.0 CONNECT without keep-alive gets its 407 with
    C{Connection: close}, and the connection closes.
    """
    head = connectHead(f"{LOCAL}:443", version="1.0")
    response, _ = refusal(authProxy.port, head)
    assert response.status == 407
    assert response.headers["proxy-authenticate"] == CHALLENGE
    assert response.headers["connection"] == "close"


MALFORMED = {
    "not base64": "Basic !!!not-base64!!!",
    "no colon": "Basic " + base64.b64encode(b"bcrypt-user").decode(),
    "other scheme": "Bearer x",
    "scheme alone": "Basic",
    "empty user": "Basic " + base64.b64encode(b":b-secret").decode(),
    "unpadded": "Basic " + base64.b64encode(b"bcrypt-user:b-secret").decode()[:-2],
    "not UTF-8": "Basic " + base64.b64encode(b"\xff\xfe:\xc3\x28").decode(),
    "ISO-8859-1 field": "Basic \xe9t\xe9",
    "10 KB of base64": "Basic " + base64.b64encode(bytes(range(256)) * 30).decode(),
    "10 KB of text": "Basic " + "garbage " * 1250,
}
"""
C{Proxy-Authorization} values that are not well-formed Basic credentials.
"""


@pytest.mark.parametrize("value", MALFORMED.values(), ids=list(MALFORMED))
def test_malformedCredentials(
    authProxy: ProxyProcess, echoOrigin: OriginProcess, value: str
) -> None:
    """
    Malformed credentials get a 407 challenge, and good ones on the same
    connection still get a tunnel.
    """
    target = f"{LOCAL}:{echoOrigin.port}"
    with Client(authProxy.port) as client:
        client.send(connectHead(target, f"Proxy-Authorization: {value}"))
        response, _ = client.response()
        assert response.status == 407
        assert response.headers["proxy-authenticate"] == CHALLENGE
        client.send(connectHead(target, basic("apr1-user", "m-secret")))
        assert client.response()[0].status == 200
        client.echo(b"still healthy")


def test_failedLoginsBlockClient(
    proxy: ProxyFactory, usersFile: Path, echoOrigin: OriginProcess
) -> None:
    """
    After three wrong passwords for a user name, that user name gets 429
    with Retry-After from that address, even with the right password, while
    another user from the same address (behind the same NAT) and the same
    user from another address still log in.
    """
    # The block outlasts the test, which does not wait it out: the protocol
    # tests cover its end on a fake clock.
    running = proxy(
        *("--auth", f"htpasswd:{usersFile}", "--auth-max-failures", "3"),
        *("--auth-failure-window", "60", "--auth-block-time", "30"),
    )
    target = f"{LOCAL}:{echoOrigin.port}"
    good = connectHead(target, basic("apr1-user", "m-secret"))
    with Client(running.port) as client:
        for _ in range(3):
            client.send(connectHead(target, basic("apr1-user", "wrong")))
            assert client.response()[0].status == 407
        client.send(good)
        response, body = client.response()
        assert client.toEnd() == b""
    for blocked in [response, refusal(running.port, good)[0]]:
        assert blocked.status == 429
        assert 1 <= int(blocked.headers["retry-after"]) <= 30
        assert blocked.headers["connection"] == "close"
    assert body == (
        b"429 Too Many Requests: too many failed logins for this user; "
        b"try again later\n"
    )
    # Logged after the failures, so all of them are in by then.
    running.waitForNamed("request_refused", status=429)
    failures = [e for e in running.events if e.get("event") == "auth_failed"]
    assert [(e["user"], e["client"], e["reason"]) for e in failures] == [
        ("apr1-user", LOCAL, "wrong user name or password")
    ] * 3
    with tunnel(running.port, good, source=OTHER_LOOPBACK) as client:
        client.echo(b"another address is not blocked")
    other = connectHead(target, basic("bcrypt-user", "b-secret"))
    with tunnel(running.port, other) as client:
        client.echo(b"another user behind the same address is not blocked")


def test_successDoesNotForgiveGuessing(
    proxy: ProxyFactory, usersFile: Path, echoOrigin: OriginProcess
) -> None:
    """
    Three wrong passwords for a user name within the window block that user
    name even when the client logs in successfully (to its own account)
    between them; its own account still works.
    """
    running = proxy(
        *("--auth", f"htpasswd:{usersFile}", "--auth-max-failures", "3"),
        *("--auth-failure-window", "60", "--auth-block-time", "30"),
    )
    target = f"{LOCAL}:{echoOrigin.port}"
    guess = connectHead(target, basic("bcrypt-user", "guess"))
    own = connectHead(target, basic("apr1-user", "m-secret"))
    with Client(running.port) as client:
        for request in [guess, guess, own]:
            client.send(request)
            response, _ = client.response()
        assert response.status == 200
    with Client(running.port) as client:
        client.send(guess)
        assert client.response()[0].status == 407
        client.send(guess)
        assert client.response()[0].status == 429
    with tunnel(running.port, own) as client:
        client.echo(b"still my own account")


@pytest.mark.parametrize(
    "port", [pytest.param(443, id="network rule"), pytest.param(9, id="port rule")]
)
def test_refusalAfterLoginNamesUser(
    strictProxy: ProxyFactory, usersFile: Path, port: int
) -> None:
    """
    A request refused after a successful login is logged with the user name.
    """
    running = strictProxy("--auth", f"htpasswd:{usersFile}")
    target = f"{LOCAL}:{port}"
    head = connectHead(target, basic("apr1-user", "m-secret"))
    assert refusal(running.port, head)[0].status == 403
    event = running.waitForNamed("request_refused", target=target)
    assert event["user"] == "apr1-user"


# Connection limits.


def test_maxConnections(proxy: ProxyFactory, echoOrigin: OriginProcess) -> None:
    """
    With C{--max-connections 2}, a third connection gets 503 and is closed;
    once one of the two is gone, a new one is served.
    """
    running = proxy("--max-connections", "2")
    head = connectHead(f"{LOCAL}:{echoOrigin.port}")
    with tunnel(running.port, head) as first, Client(running.port):
        # The kernel queues connections in order, so the idle second one is
        # accepted before the third.
        with Client(running.port) as third:
            response, body = third.response()
            assert third.toEnd() == b""
        assert (response.status, body) == (
            503,
            b"503 Service Unavailable: the proxy has too many connections "
            b"(see --max-connections)\n",
        )
        event = running.waitForNamed("request_refused", status=503)
        assert (event["method"], event["target"]) == ("", "")
        first.echo(b"the first still works")
        first.sock.close()
        # The proxy forgets a connection no later than it logs its tunnel.
        running.waitForNamed("tunnel_close", port=echoOrigin.port)
        with tunnel(running.port, head) as fourth:
            fourth.echo(b"room again, next to the idle one")


def test_maxConnectionsPerClient(
    proxy: ProxyFactory, echoOrigin: OriginProcess
) -> None:
    """
    With C{--max-connections-per-client 1}, a second connection from
    127.0.0.1 gets 503 while one from 127.0.0.2 is served.
    """
    running = proxy("--max-connections-per-client", "1")
    head = connectHead(f"{LOCAL}:{echoOrigin.port}")
    with tunnel(running.port, head) as first:
        with Client(running.port) as second:
            response, body = second.response()
            assert second.toEnd() == b""
        assert (response.status, body) == (
            503,
            b"503 Service Unavailable: this client has too many connections "
            b"(see --max-connections-per-client)\n",
        )
        event = running.waitForNamed("request_refused", status=503)
        assert event["client"].startswith(f"{LOCAL}:")
        with tunnel(running.port, head, source=OTHER_LOOPBACK) as other:
            other.echo(b"another client address")
        first.echo(b"the first still works")
