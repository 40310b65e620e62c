# -*- test-case-name: tests.integration.test_observerplugin -*-
"""
A third-party observer plugin, dropped into a C{connectproxy/plugins}
directory on C{PYTHONPATH}, is listed by C{--help-observers} and, chosen
with C{--observer}, is told of real connections and tunnels, and runs its
own service for as long as the proxy does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
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
    dial,
    openTunnel,
    readExactly,
    readResponseHead,
    readToEnd,
)
from tests.test_observerplugins import COUNTING

pytestmark = pytest.mark.integration


def pluginEnvironment(tmp_path: Path) -> Mapping[str, str]:
    """
    Drop the C{counting} example plugin into a directory of its own and
    make an environment that imports connectproxy from the source tree and
    finds the plugin.
    """
    site = tmp_path / "site"
    plugins = site / "connectproxy" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "example_counting.py").write_text(
        textwrap.dedent(COUNTING), encoding="utf-8"
    )
    return cleanEnvironment(PYTHONPATH=os.pathsep.join([str(REPO_ROOT), str(site)]))


def test_helpObserversListsPlugin(tmp_path: Path) -> None:
    """
    C{--help-observers} lists the shipped C{accesslog} observer and the
    dropped-in one, and exits 0.
    """
    done = subprocess.run(
        [sys.executable, "-m", "twisted", "connectproxy", "--help-observers"],
        env=pluginEnvironment(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    names = [line.partition(":")[0] for line in done.stdout.splitlines()]
    assert names == ["accesslog", "counting"]


def test_pluginObservesProxy(
    tmp_path: Path,
    origin: OriginFactory,
    processes: list[ChildProcess[Any]],
    workerArgs: tuple[str, ...],
) -> None:
    """
    With C{--observer accesslog --observer counting:it}, the plugin's
    service starts with the proxy, the plugin is told of a tunnel and of a
    refusal from start to end, beside the access log, and its service stops
    with the proxy.
    """
    echo = origin("echo")
    observers = ["--observer", "accesslog", "--observer", "counting:it"]
    argv = proxyCommand(withWorkers(workerArgs, observers))
    proxy = ProxyProcess(argv, env=pluginEnvironment(tmp_path), cwd=tmp_path)
    processes.append(proxy)
    proxy.waitForNamed("counting_started", label="it")
    sock, rest = openTunnel(proxy.port, echo.port)
    tunnelClient = f"127.0.0.1:{sock.getsockname()[1]}"
    with sock:
        sock.sendall(b"observed")
        assert rest + readExactly(sock, 8 - len(rest)) == b"observed"
        proxy.waitForNamed("observed", method="tunnelOpened", openTunnels=1)
    proxy.waitForNamed("observed", method="connectionClosed", client=tunnelClient)
    proxy.waitForNamed("tunnel_close", port=echo.port)
    with dial(proxy.port) as refused:
        refusedClient = f"127.0.0.1:{refused.getsockname()[1]}"
        refused.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        response, _ = readResponseHead(refused)
        readToEnd(refused)
    assert response.status == 400
    proxy.waitForNamed("observed", method="connectionClosed", client=refusedClient)
    proxy.waitForNamed("request_refused", status=400, outcome="bad_request")
    observed = [
        (e["method"], e["client"], e["outcome"])
        for e in proxy.events
        if e.get("event") == "observed"
    ]
    assert observed == [
        ("connectionOpened", tunnelClient, ""),
        ("tunnelOpened", tunnelClient, "ok"),
        ("tunnelClosed", tunnelClient, "ok"),
        ("connectionClosed", tunnelClient, ""),
        ("connectionOpened", refusedClient, ""),
        ("requestRefused", refusedClient, "bad_request"),
        ("connectionClosed", refusedClient, ""),
    ]
    assert proxy.stop() in (0, -signal.SIGTERM), proxy.describe()
    # One per process: with --workers, each worker counts its own.
    stopped = [e for e in proxy.events if e.get("event") == "counting_stopped"]
    assert len(stopped) == len(proxy.servingPids)
    assert sum((Counter(e["counts"]) for e in stopped), Counter()) == {
        "connectionOpened": 2,
        "connectionClosed": 2,
        "requestRefused": 1,
        "tunnelOpened": 1,
        "tunnelClosed": 1,
    }
