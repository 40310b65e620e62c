# -*- test-case-name: tests.integration.test_auth_process -*-
"""
Authentication of a proxy process, seen from loopback clients: every
checker C{--help-auth} offers, the ones it must not offer, duplicated
C{Proxy-Authorization} fields and password spraying.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectproxy.testing import connectHead
from tests.integration._processes import (
    OriginProcess,
    ProxyFactory,
    proxyCommand,
    stopAll,
)
from tests.integration._sockets import LOCAL
from tests.integration.test_access import (
    OTHER_LOOPBACK,
    Client,
    basic,
    refusal,
    tunnel,
)

pytestmark = pytest.mark.integration

COMMAND_TIMEOUT = 60
"""
Seconds a proxy command that must not start may take to give up.
"""


@pytest.fixture(scope="module")
def echo() -> Iterator[OriginProcess]:
    """
    A plain TCP echo origin, shared by the tests of this module.
    """
    started = OriginProcess("echo", ())
    try:
        yield started
    finally:
        stopAll([started])


def checkerArgument(kind: str, directory: Path) -> str:
    """
    An C{--auth} argument of this kind for C{alice}, password C{s3cret}.
    """
    if kind == "memory":
        return "memory:alice:s3cret"
    path = directory / "users"
    if kind == "file":
        path.write_text("alice:s3cret\n")
    else:
        # {SHA}: quick to verify, and written without the tool.
        digest = base64.b64encode(hashlib.sha1(b"s3cret").digest()).decode()
        path.write_text(f"alice:{{SHA}}{digest}\n")
    return f"{kind}:{path}"


@pytest.mark.parametrize("kind", ["memory", "file", "htpasswd"])
def test_offeredCheckersWork(
    proxy: ProxyFactory, echo: OriginProcess, scratchDir: Path, kind: str
) -> None:
    """
    Each checker C{--help-auth} offers admits the right password and
    challenges a wrong one.
    """
    running = proxy("--auth", checkerArgument(kind, scratchDir))
    target = f"{LOCAL}:{echo.port}"
    with Client(running.port) as client:
        client.send(connectHead(target, basic("alice", "wrong")))
        assert client.response()[0].status == 407
    with tunnel(running.port, connectHead(target, basic("alice", "s3cret"))) as client:
        client.echo(b"logged in with " + kind.encode())


def runCommand(*arguments: str) -> subprocess.CompletedProcess[str]:
    """
    Run the proxy command with these options, expecting it not to start.
    """
    return subprocess.run(
        proxyCommand(arguments),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def test_helpAuthOffersWorkingCheckers() -> None:
    """
    C{--help-auth} lists htpasswd, memory and file, not unix.
    """
    result = runCommand("--help-auth")
    assert result.returncode == 0, result.stderr
    kinds = {line.split()[0] for line in result.stdout.splitlines()[5:] if line.strip()}
    assert {"htpasswd", "memory", "file"} <= kinds
    assert "unix" not in kinds


def test_unixCheckerRefused() -> None:
    """
    C{--auth unix} stops the command before it listens, saying why.
    """
    result = runCommand("--auth", "unix")
    assert result.returncode != 0
    assert "--auth unix does not work in connectproxy" in result.stdout + result.stderr


def test_twoProxyAuthorizationFields(proxy: ProxyFactory, echo: OriginProcess) -> None:
    """
    A CONNECT with two C{Proxy-Authorization} fields gets 400.
    """
    running = proxy("--auth", "memory:alice:s3cret:bob:hunter2")
    target = f"{LOCAL}:{echo.port}"
    head = connectHead(target, basic("bob", "hunter2"), basic("alice", "s3cret"))
    response, body = refusal(running.port, head)
    assert response.status == 400
    assert body == "400 Bad Request: more than one Proxy-Authorization header field\n"


def test_sprayingBlocksTheAddress(proxy: ProxyFactory, echo: OriginProcess) -> None:
    """
    Failed logins with three different user names from one address, with
    C{--auth-max-failed-users 3}, refuse the whole address with 429, even
    for a user that never failed; another address still logs in.
    """
    running = proxy(
        *("--auth", "memory:alice:s3cret", "--auth-max-failed-users", "3"),
        *("--auth-block-time", "30"),
    )
    target = f"{LOCAL}:{echo.port}"
    with Client(running.port) as client:
        for user in ["carol", "dave", "erin"]:
            client.send(connectHead(target, basic(user, "guess")))
            assert client.response()[0].status == 407
    good = connectHead(target, basic("alice", "s3cret"))
    response, body = refusal(running.port, good)
    assert response.status == 429
    assert 1 <= int(response.headers["retry-after"]) <= 30
    assert "different user names" in body
    blocked = running.waitForNamed("auth_blocked")
    assert (blocked["scope"], blocked["client"]) == ("client", LOCAL)
    with tunnel(running.port, good, source=OTHER_LOOPBACK) as client:
        client.echo(b"another address is not blocked")
