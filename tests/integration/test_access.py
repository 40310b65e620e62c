# -*- test-case-name: tests.integration.test_access -*-
"""
The access controls of a proxy process, seen from loopback clients: the
default-deny destination rules (the SSRF guard), port, network, host and
client rules, the connection limits and the C{hostlist} policy.
Authentication is tested in tests/integration/test_auth_process.py.

Every destination is on 127.0.0.1 or ::1; the only name resolved is
C{localhost}.
"""

from __future__ import annotations

import base64
import select
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType

import pytest

from connectproxy.testing import connectHead
from tests.integration._modes import onlyOneProcess, withWorkers
from tests.integration._output import Event
from tests.integration._processes import (
    LISTEN_ANY_PORT,
    OriginProcess,
    ProxyFactory,
    ProxyProcess,
    proxyCommand,
    stopAll,
)
from tests.integration._sockets import LOCAL, Response

pytestmark = pytest.mark.integration

OTHER_LOOPBACK = "127.0.0.2"
"""
A second loopback address: a client or a destination that is not 127.0.0.1.
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
    *extraArgs: str,
    loopbackOrigins: bool = True,
    listen: Sequence[str] = (),
    workerArgs: Sequence[str] = (),
) -> Iterator[ProxyProcess]:
    """
    Run one proxy for a fixture broader than a test, and stop it after.

    @param extraArgs: Options after the listeners.
    @param loopbackOrigins: Whether to allow loopback targets on any port.
    @param listen: The listeners; one on a free port of 127.0.0.1 if empty.
    @param workerArgs: The options of the process mode (the C{workerArgs}
        fixture).
    """
    listeners = list(listen) or [LISTEN_ANY_PORT]
    started = ProxyProcess(
        proxyCommand(withWorkers(workerArgs, extraArgs), listeners, loopbackOrigins),
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
def defaultDenyProxy(workerArgs: tuple[str, ...]) -> Iterator[ProxyProcess]:
    """
    A proxy with the default destination networks, on every port.
    """
    yield from startProxies(
        "--allow-port", "1-65535", loopbackOrigins=False, workerArgs=workerArgs
    )


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
        "403 Forbidden: host 127.0.0.1 is not in the allowed list "
        f"(see --policy hostlist:{hosts})\n",
    )
    assert not sentinel.reached()


# Connection limits.


@onlyOneProcess(
    "counts --max-connections, which is per worker "
    "(docs/operating.md, Limits are per worker)"
)
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


@onlyOneProcess(
    "counts --max-connections-per-client, which is per worker "
    "(docs/operating.md, Limits are per worker)"
)
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
