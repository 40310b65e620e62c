# -*- test-case-name: tests.integration.test_reload -*-
"""
Reloading a proxy process with C{SIGHUP}: new rules, users and host lists
apply to new requests, established tunnels carry on, and a configuration
that does not load leaves the old one in force.

Each test makes a request before its first C{SIGHUP}: the proxy answers only
once its reactor runs, which is after the reload service has installed its
signal handler, so the signal cannot meet the default action (exit).
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration._modes import withWorkers
from tests.integration._output import Event
from tests.integration._processes import (
    ChildProcess,
    OriginFactory,
    OriginProcess,
    ProxyProcess,
    proxyCommand,
)
from tests.integration._sockets import (
    LOCAL,
    Response,
    connectRequest,
    dial,
    openTunnel,
    readExactly,
    readResponseHead,
    readToEnd,
)

pytestmark = pytest.mark.integration

ProxyStarter = Callable[..., ProxyProcess]


@pytest.fixture
def startProxy(
    processes: list[ChildProcess[Any]], workerArgs: tuple[str, ...]
) -> ProxyStarter:
    """
    Start proxies with the given options, and with the loopback-origin
    options only when asked (they would override the configuration file).
    """

    def start(*extraArgs: str, loopbackOrigins: bool = False) -> ProxyProcess:
        command = proxyCommand(
            withWorkers(workerArgs, extraArgs), loopbackOrigins=loopbackOrigins
        )
        started = ProxyProcess(command)
        processes.append(started)
        return started

    return start


@pytest.fixture
def echoOrigin(origin: OriginFactory) -> OriginProcess:
    """
    A plain TCP echo origin.
    """
    return origin("echo")


def replaceFile(path: Path, content: str | bytes) -> None:
    """
    Replace a file's content at once, as editors and deployment tools do.
    """
    data = content.encode("utf-8") if isinstance(content, str) else content
    staging = path.with_name(path.name + ".new")
    staging.write_bytes(data)
    os.replace(staging, path)


def allowing(port: int, *lines: str) -> str:
    """
    A configuration file that allows the loopback network on one port.

    @param lines: More lines for the file.
    """
    return "\n".join(
        ['allow-network = ["127.0.0.0/8"]', f'allow-port = ["{port}"]', *lines, ""]
    )


def reload(running: ProxyProcess, outcome: str = "reloaded") -> Event:
    """
    Send C{SIGHUP} and wait for the proxy to report how the reload went.

    @param outcome: The event expected: C{reloaded} or C{reload_failed}.
    @return: The event.
    """
    names = ("reloaded", "reload_failed")
    before = [e for e in running.events if e.get("event") in names]
    os.kill(running.pid, signal.SIGHUP)
    # With --workers, once every worker has said.
    events = running.waitForEach(
        lambda e: e.get("event") in names and not any(e is b for b in before)
    )
    assert all(e["event"] == outcome for e in events), events
    return events[0]


def roundTrip(sock: socket.socket, payload: bytes) -> None:
    """
    Send C{payload} through a tunnel to an echo origin and read it back.
    """
    sock.sendall(payload)
    assert readExactly(sock, len(payload)) == payload


def refusal(proxyPort: int, request: bytes) -> tuple[int, str]:
    """
    Send a request that the proxy refuses, and read its answer to the end.

    @return: The status and the body.
    """
    with dial(proxyPort, timeout=10) as sock:
        sock.sendall(request)
        response, rest = readResponseHead(sock)
        assert response.status >= 400, response.raw
        body = rest + readToEnd(sock)
    return response.status, body.decode("utf-8")


def authenticated(port: int, user: str, password: str) -> bytes:
    """
    A CONNECT to the echo origin on C{port} with Basic credentials.
    """
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    authority = f"{LOCAL}:{port}"
    return (
        f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
        f"Proxy-Authorization: Basic {token}\r\n\r\n"
    ).encode()


def ask(proxyPort: int, request: bytes) -> tuple[Response, socket.socket]:
    """
    Send a request and read the response head.

    @return: The head and the socket, which the caller closes.
    """
    sock = dial(proxyPort, timeout=10)
    try:
        sock.sendall(request)
        response, rest = readResponseHead(sock)
        assert response.status != 200 or rest == b"", rest
    except BaseException:
        sock.close()
        raise
    return response, sock


def test_reloadDeniesPortKeepsTunnel(
    startProxy: ProxyStarter, echoOrigin: OriginProcess, scratchDir: Path
) -> None:
    """
    After the configuration file stops allowing a port and C{SIGHUP}, a new
    CONNECT to it gets 403 while a tunnel opened before still relays.
    """
    config = scratchDir / "connectproxy.toml"
    replaceFile(config, allowing(echoOrigin.port))
    running = startProxy("--config", str(config))
    sock, _ = openTunnel(running.port, echoOrigin.port)
    with sock:
        roundTrip(sock, b"before the reload")
        replaceFile(config, allowing(443))
        reload(running)
        assert refusal(running.port, connectRequest(LOCAL, echoOrigin.port)) == (
            403,
            f"403 Forbidden: port {echoOrigin.port} is not allowed "
            "(see --allow-port)\n",
        )
        roundTrip(sock, b"after the reload")
    event = running.waitForNamed("tunnel_close", port=echoOrigin.port)
    assert (event["bytesUp"], event["bytesDown"]) == (33, 33)


@pytest.mark.parametrize("where", ["config", "command line"])
def test_reloadReadsNewUsers(
    startProxy: ProxyStarter,
    echoOrigin: OriginProcess,
    scratchDir: Path,
    where: str,
) -> None:
    """
    A user added to the htpasswd file with Apache's tool logs in after
    C{SIGHUP}, with C{--auth} in the configuration file or on the command
    line; the users from before still do.
    """
    tool = shutil.which("htpasswd")
    if tool is None:
        pytest.skip("htpasswd is missing: install the apache2-utils package")
    users = scratchDir / "users"

    def addUser(user: str, password: str, *create: str) -> None:
        argv = [tool, *create, "-b", "-B", "-C", "4", str(users), user, password]
        subprocess.run(argv, check=True, capture_output=True, timeout=30)

    addUser("alice", "alice-pw", "-c")
    auth = f"htpasswd:{users}"
    config = scratchDir / "connectproxy.toml"
    inConfig = [f'auth = "{auth}"'] if where == "config" else []
    replaceFile(config, allowing(echoOrigin.port, *inConfig))
    onCommandLine = ["--auth", auth] if where == "command line" else []
    running = startProxy("--config", str(config), *onCommandLine)
    bob = authenticated(echoOrigin.port, "bob", "bob-pw")
    response, sock = ask(running.port, bob)
    sock.close()
    assert response.status == 407
    addUser("bob", "bob-pw")
    reload(running)
    for request in [bob, authenticated(echoOrigin.port, "alice", "alice-pw")]:
        response, sock = ask(running.port, request)
        with sock:
            assert response.status == 200, response.raw
            roundTrip(sock, b"logged in")
    event = running.waitForNamed("tunnel_close", user="bob")
    assert event["port"] == echoOrigin.port


BROKEN = {
    "invalid TOML": ('allow-port = ["', "is not valid TOML"),
    "not UTF-8": (b'allow-port = ["\xff"]\n', "is not valid TOML"),
    "unknown key": ('allow-prot = ["443"]\n', "unknown key 'allow-prot'"),
    "bad value": ('allow-port = ["0"]\n', "key 'allow-port'"),
    "missing password file": (
        'auth = "htpasswd:/nonexistent/connectproxy-users"\n',
        "cannot read htpasswd file",
    ),
    "deleted": (None, "cannot read"),
}
"""
Configuration files that do not load: the content (C{None} for no file) and
part of the error the proxy logs, besides the file's name.
"""


@pytest.mark.parametrize("content, error", BROKEN.values(), ids=list(BROKEN))
def test_brokenConfigKeepsOld(
    startProxy: ProxyStarter,
    echoOrigin: OriginProcess,
    scratchDir: Path,
    content: str | bytes | None,
    error: str,
) -> None:
    """
    A configuration that does not load makes C{SIGHUP} log C{reload_failed};
    the proxy keeps running with the old rules, and reloads a fixed file.
    """
    config = scratchDir / "connectproxy.toml"
    replaceFile(config, allowing(echoOrigin.port))
    running = startProxy("--config", str(config))
    sock, _ = openTunnel(running.port, echoOrigin.port)
    with sock:
        roundTrip(sock, b"before")
        if content is None:
            config.unlink()
        else:
            replaceFile(config, content)
        event = reload(running, "reload_failed")
        assert str(config) in event["error"]
        assert error in event["error"]
        second, _ = openTunnel(running.port, echoOrigin.port)
        with second:
            roundTrip(second, b"the old rules still allow this")
        roundTrip(sock, b"and the old tunnel still relays")
    assert running.process.poll() is None
    replaceFile(config, allowing(443))
    reload(running)
    assert refusal(running.port, connectRequest(LOCAL, echoOrigin.port)) == (
        403,
        f"403 Forbidden: port {echoOrigin.port} is not allowed (see --allow-port)\n",
    )


def test_reloadHostList(
    startProxy: ProxyStarter, echoOrigin: OriginProcess, scratchDir: Path
) -> None:
    """
    The C{hostlist} policy's file is read again on C{SIGHUP}.
    """
    hosts = scratchDir / "hosts"
    replaceFile(hosts, "localhost\n")
    running = startProxy("--policy", f"hostlist:{hosts}", loopbackOrigins=True)
    notListed = (
        "403 Forbidden: host {} is not in the allowed list "
        f"(see --policy hostlist:{hosts})\n"
    )
    byAddress = connectRequest(LOCAL, echoOrigin.port)
    assert refusal(running.port, byAddress) == (403, notListed.format(LOCAL))
    replaceFile(hosts, f"{LOCAL}\n")
    reload(running)
    sock, _ = openTunnel(running.port, echoOrigin.port)
    with sock:
        roundTrip(sock, b"now listed")
    byName = connectRequest("localhost", echoOrigin.port)
    assert refusal(running.port, byName) == (403, notListed.format("localhost"))
