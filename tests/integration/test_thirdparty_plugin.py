# -*- test-case-name: tests.integration.test_thirdparty_plugin -*-
"""
The example third-party policy plugin of C{docs/examples/plugin}, built as
its own wheel and installed next to connectproxy's wheel in a fresh virtual
environment: it lands in connectproxy's plugin namespace without clobbering
it, C{--help-policies} lists it, and a running proxy applies it.
"""

from __future__ import annotations

import json
import shutil
import signal
import socketserver
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration._processes import REPO_ROOT, ChildProcess, ProxyProcess
from tests.integration._sockets import (
    LOCAL,
    connectRequest,
    dial,
    readExactly,
    readResponseHead,
    readToEnd,
)
from tests.integration._wheels import buildWheel, outsideEnvironment, recordOf, run

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXAMPLE = REPO_ROOT / "docs" / "examples" / "plugin"
"""
The example plugin's source tree.
"""

PLUGIN_FILE = "connectproxy/plugins/example_hours.py"
"""
The one file the example installs into connectproxy's plugin namespace.
"""

INSPECT = """
import importlib.metadata, json, pathlib, sys
found = sorted(
    str(path)
    for entry in sys.path
    if entry and pathlib.Path(entry).is_dir()
    for path in pathlib.Path(entry).glob("connectproxy/plugins/*")
)
owners = {}
for name in ("connectproxy", "connectproxy-example-policy"):
    dist = importlib.metadata.distribution(name)
    owners[name] = sorted(
        str(f)
        for f in dist.files or ()
        if str(f).startswith("connectproxy/") and "__pycache__" not in str(f)
    )
print(json.dumps({"found": found, "owners": owners}))
"""
"""
Run in the new environment: every file in a C{connectproxy/plugins}
directory on C{sys.path}, and which of connectproxy's files (bytecode
aside) each distribution says it installed.
"""


FIND_MODULES = """
import connectproxy.plugins, json, pathlib
print(json.dumps(sorted(
    str(path)
    for entry in connectproxy.plugins.__path__
    for path in pathlib.Path(entry).glob("*.py")
)))
"""
"""
Run in the new environment: the Python files in every directory of
C{connectproxy.plugins}.
"""


class EchoHandler(socketserver.BaseRequestHandler):
    """
    Sends back whatever arrives until the peer closes.
    """

    def handle(self) -> None:
        self.request.settimeout(20)
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echoPort() -> Iterator[int]:
    """
    An echo server on 127.0.0.1, in a thread, and its port.
    """
    server = socketserver.ThreadingTCPServer((LOCAL, 0), EchoHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="echo", daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """
    A fresh virtual environment (outside the source tree) with the wheels of
    connectproxy and of the example plugin installed, and the example's
    wheel checked on the way; C{example.whl} in it links to that wheel.
    """
    scratchDir = tmp_path_factory.mktemp("thirdparty")
    connectproxyWheel = buildWheel(REPO_ROOT, scratchDir, "connectproxy")
    exampleWheel = buildWheel(EXAMPLE, scratchDir, "connectproxy-example-policy")
    inNamespace = [p for p in recordOf(exampleWheel) if p.startswith("connectproxy/")]
    assert inNamespace == [PLUGIN_FILE]
    venv = scratchDir / "venv"
    run([sys.executable, "-m", "venv", str(venv)], scratchDir, 120)
    python = str(venv / "bin" / "python")
    wheels = [str(connectproxyWheel), str(exampleWheel)]
    run([python, "-m", "pip", "install", "--no-input", *wheels], scratchDir, 600)
    (venv / "example.whl").symlink_to(exampleWheel)
    yield venv
    shutil.rmtree(scratchDir, ignore_errors=True)


def test_pluginInstalledBesideConnectproxy(installed: Path) -> None:
    """
    The example adds exactly one module to connectproxy's plugin directory;
    the only C{__init__.py} there is connectproxy's own.
    """
    python = str(installed / "bin" / "python")
    report = json.loads(run([python, "-c", INSPECT], installed, 60))
    found = [Path(p) for p in report["found"]]
    assert all(p.is_relative_to(installed) for p in found)
    assert sorted(p.name for p in found if p.suffix == ".py") == [
        "__init__.py",
        "accesslog.py",
        "direct.py",
        "example_hours.py",
        "hostlist.py",
    ]
    owners = report["owners"]
    assert owners["connectproxy-example-policy"] == [PLUGIN_FILE]
    assert "connectproxy/plugins/__init__.py" in owners["connectproxy"]
    assert "connectproxy/__init__.py" in owners["connectproxy"]


def test_helpPoliciesListsPlugin(installed: Path) -> None:
    """
    C{twistd connectproxy --help-policies} lists the example's C{hours}
    policy and the shipped C{hostlist}, and exits 0.
    """
    out = run(
        [str(installed / "bin" / "twistd"), "connectproxy", "--help-policies"],
        installed,
        60,
    )
    names = sorted(line.partition(":")[0] for line in out.splitlines() if line)
    assert names == ["hostlist", "hours"]
    assert "hours: Tunnel only during a daily time window" in out


def test_uninstallLeavesConnectproxy(installed: Path) -> None:
    """
    Uninstalling the example removes its plugin module and nothing of
    connectproxy's, whose own plugin is still found.
    """
    python = str(installed / "bin" / "python")
    twistd = [str(installed / "bin" / "twistd"), "connectproxy", "--help-policies"]
    pip = [python, "-m", "pip"]
    run([*pip, "uninstall", "--yes", "connectproxy-example-policy"], installed, 120)
    try:
        out = run(twistd, installed, 60)
        assert [line.partition(":")[0] for line in out.splitlines()] == ["hostlist"]
        report = json.loads(run([python, "-c", FIND_MODULES], installed, 60))
        assert [Path(p).name for p in report] == [
            "__init__.py",
            "accesslog.py",
            "direct.py",
            "hostlist.py",
        ]
    finally:
        example = str((installed / "example.whl").resolve())
        run([*pip, "install", "--no-input", "--no-deps", example], installed, 300)


def window(start: timedelta, end: timedelta) -> str:
    """
    A time window for C{--policy hours:...}, relative to the local time now.
    """
    now = datetime.now()
    return f"{now + start:%H:%M}-{now + end:%H:%M}"


def stoppedCleanly(status: int) -> bool:
    """
    Whether an exit status is a clean stop after C{SIGTERM}: Twisted
    re-raises the signal once it has shut down.
    """
    return status in (0, -signal.SIGTERM)


def startProxy(
    installed: Path, processes: list[ChildProcess[Any]], policy: str
) -> ProxyProcess:
    """
    Run the installed C{twist connectproxy} with a JSON log, on a free
    loopback port, allowed to reach loopback origins, with C{policy}.
    """
    argv = [str(installed / "bin" / "twist"), "--log-format", "json"]
    argv += ["connectproxy", "--listen", "tcp:0:interface=127.0.0.1"]
    argv += ["--allow-port", "1-65535", "--allow-network", "127.0.0.0/8"]
    argv += ["--policy", policy]
    proxy = ProxyProcess(argv, env=outsideEnvironment(), cwd=installed)
    processes.append(proxy)
    return proxy


def test_policyAllowsInsideWindow(
    installed: Path, processes: list[ChildProcess[Any]], echoPort: int
) -> None:
    """
    Inside the window the installed plugin lets a tunnel through to the
    origin.
    """
    proxy = startProxy(
        installed, processes, "hours:" + window(-timedelta(hours=2), timedelta(hours=2))
    )
    with dial(proxy.port) as sock:
        sock.sendall(connectRequest(LOCAL, echoPort))
        response, rest = readResponseHead(sock)
        assert response.status == 200, response.raw
        sock.sendall(b"through the hours policy")
        assert rest + readExactly(sock, 24 - len(rest)) == b"through the hours policy"
    assert stoppedCleanly(proxy.stop()), proxy.describe()


def test_policyRefusesOutsideWindow(
    installed: Path, processes: list[ChildProcess[Any]], echoPort: int
) -> None:
    """
    Outside the window the installed plugin refuses with 403 and its own
    reason, which the access log records.
    """
    policy = window(timedelta(hours=2), timedelta(hours=4))
    proxy = startProxy(installed, processes, "hours:" + policy)
    start, _, end = policy.partition("-")
    reason = f"tunnels are allowed only between {start} and {end}"
    with dial(proxy.port) as sock:
        sock.sendall(connectRequest(LOCAL, echoPort))
        response, rest = readResponseHead(sock)
        body = rest + readToEnd(sock)
    assert response.status == 403, response.raw
    assert body.decode("utf-8") == f"403 Forbidden: {reason}\n"
    event = proxy.waitForNamed("request_refused", status=403)
    assert event["reason"] == reason
    assert stoppedCleanly(proxy.stop()), proxy.describe()
