# -*- test-case-name: tests.integration.test_connectorplugin -*-
"""
A third-party upstream connector plugin, dropped into a
C{connectproxy/plugins} directory on C{PYTHONPATH}, is listed by
C{--help-upstreams} and, chosen with C{--upstream}, carries real tunnels.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.integration._modes import withWorkers
from tests.integration._processes import (
    REPO_ROOT,
    ChildProcess,
    OriginFactory,
    ProxyProcess,
    cleanEnvironment,
    proxyCommand,
)
from tests.integration._sockets import (
    LOCAL,
    connectRequest,
    dial,
    openTunnel,
    readExactly,
    readResponseHead,
    readToEnd,
)
from tests.test_connectorplugins import PINNED

pytestmark = pytest.mark.integration


def pluginEnvironment(tmp_path: Path) -> Mapping[str, str]:
    """
    Drop the C{pinned} example plugin into a directory of its own and make
    an environment that imports connectproxy from the source tree and finds
    the plugin.
    """
    site = tmp_path / "site"
    plugins = site / "connectproxy" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "example_pinned.py").write_text(PINNED, encoding="utf-8")
    return cleanEnvironment(PYTHONPATH=os.pathsep.join([str(REPO_ROOT), str(site)]))


def test_helpUpstreamsListsPlugin(tmp_path: Path) -> None:
    """
    C{--help-upstreams} lists the shipped C{direct} connector and the
    dropped-in one, and exits 0.
    """
    done = subprocess.run(
        [sys.executable, "-m", "twisted", "connectproxy", "--help-upstreams"],
        env=pluginEnvironment(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    names = [line.partition(":")[0] for line in done.stdout.splitlines()]
    assert names == ["direct", "pinned"]


def test_pluginCarriesTunnels(
    tmp_path: Path,
    origin: OriginFactory,
    processes: list[ChildProcess[Any]],
    workerArgs: tuple[str, ...],
) -> None:
    """
    With C{--upstream pinned:HOST:PORT}, a CONNECT to a name that does not
    even resolve reaches the pinned echo origin, and the access log says
    where the tunnel went.
    """
    echo = origin("echo")
    argv = proxyCommand(
        withWorkers(workerArgs, ["--upstream", f"pinned:{LOCAL}:{echo.port}"])
    )
    proxy = ProxyProcess(argv, env=pluginEnvironment(tmp_path), cwd=tmp_path)
    processes.append(proxy)
    sock, rest = openTunnel(proxy.port, 443, host="nowhere.invalid")
    with sock:
        sock.sendall(b"through the pinned connector")
        echoed = rest + readExactly(sock, 28 - len(rest))
    assert echoed == b"through the pinned connector"
    event = proxy.waitForNamed("tunnel_close", host="nowhere.invalid")
    assert event["upstream"] == f"{LOCAL}:{echo.port}"
    assert proxy.stop() in (0, -signal.SIGTERM), proxy.describe()


def test_pluginVettingRefuses(
    tmp_path: Path,
    origin: OriginFactory,
    processes: list[ChildProcess[Any]],
    workerArgs: tuple[str, ...],
) -> None:
    """
    Without C{--allow-network} for loopback, the plugin's own use of
    C{vetAddresses} gets the client the proxy's 403 with the reason.
    """
    echo = origin("echo")
    argv = proxyCommand(
        withWorkers(workerArgs, ["--upstream", f"pinned:{LOCAL}:{echo.port}"]),
        loopbackOrigins=False,
    )
    proxy = ProxyProcess(argv, env=pluginEnvironment(tmp_path), cwd=tmp_path)
    processes.append(proxy)
    with dial(proxy.port) as sock:
        sock.sendall(connectRequest("example.com", 443))
        response, rest = readResponseHead(sock)
        body = rest + readToEnd(sock)
    assert response.status == 403, response.raw
    assert body.startswith(b"403 Forbidden: 127.0.0.1 is a loopback address")
    proxy.waitForNamed("request_refused", status=403)
