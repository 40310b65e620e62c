# -*- test-case-name: tests.integration.test_accesslog -*-
"""
The access-log file and C{--log-level} in a real process, the same under
C{twist}, C{twistd}, the example C{.tac} file and the C{connectproxy}
command: the file gets one line per refusal and per tunnel in the format
asked for, SIGUSR1 re-opens it after it was renamed (logrotate), a full
disk costs lines and never tunnels, and C{--log-level warn} quiets the
rest of the log but not the access log.
"""

from __future__ import annotations

import json
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration._output import LineCollector
from tests.integration._processes import (
    BIN_DIR,
    REPO_ROOT,
    ChildProcess,
    OriginFactory,
    OriginProcess,
    sourceEnvironment,
    waitForPath,
)
from tests.integration._sockets import (
    connectRequest,
    dial,
    openTunnel,
    readExactly,
    readResponseHead,
)

pytestmark = pytest.mark.integration

TAC = REPO_ROOT / "docs" / "examples" / "connectproxy.tac"

LISTENING = re.compile(r"connectproxy listening on 127\.0\.0\.1:(\d+)")

#: How the proxy is started, by name: the command line before the
#: configuration file, and whether the file is named by the environment.
RUNNERS = {
    "twist": [sys.executable, "-m", "twisted", "--log-format", "text", "connectproxy"],
    "twistd": [str(BIN_DIR / "twistd"), "-n", "--pidfile=", "connectproxy"],
    "tac": [str(BIN_DIR / "twistd"), "-ny", str(TAC), "--pidfile="],
    "command": [sys.executable, "-m", "connectproxy", "--log-format", "text"],
}

#: A line of squid's native format.
SQUID = re.compile(
    r"^\d{10}\.\d{3} +\d+ 127\.0\.0\.1 (?P<result>[A-Z_]+/\d{3}) (?P<bytes>\d+) "
    r"CONNECT (?P<url>\S+) - (?P<peer>\S+) (?P<type>\S+)$"
)

#: What the proxy answers a CONNECT with.
ESTABLISHED = len(b"HTTP/1.1 200 Connection established\r\n\r\n")


class Proxy:
    """
    A proxy process with a text log on its stdout.

    @ivar process: The process.
    @ivar port: Where it listens.
    """

    def __init__(self, runner: str, config: Path, cwd: Path) -> None:
        argv = list(RUNNERS[runner])
        env = sourceEnvironment()
        if runner == "tac":
            env["CONNECTPROXY_CONFIG"] = str(config)
        else:
            argv += ["--config", str(config)]
        self.process = ChildProcess(argv, LineCollector, env, cwd)
        try:
            line = self.waitForLine(LISTENING.pattern)
        except BaseException:
            self.process.stop()
            raise
        match = LISTENING.search(line)
        assert match is not None
        self.port = int(match.group(1))

    def waitForLine(self, pattern: str, timeout: float = 20.0) -> str:
        """
        Wait for a log line that matches C{pattern} anywhere.
        """
        return self.process.output.waitFor(
            lambda line: re.search(pattern, line) is not None,
            timeout,
            f"a log line matching {pattern!r}",
        )

    def lines(self) -> list[str]:
        return list(self.process.output.records)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[list[Proxy]]:
    """
    A list to put the proxies a test starts in, stopped when it ends.
    """
    started: list[Proxy] = []
    yield started
    for proxy in started:
        proxy.process.stop()


def writeConfig(directory: Path, extra: str) -> Path:
    """
    A configuration file that lets the proxy reach the tests' origins,
    denies one host, and has C{extra}.
    """
    path = directory / "proxy.toml"
    path.write_text(
        'listen = ["tcp:0:interface=127.0.0.1"]\n'
        'allow-port = ["1-65535"]\n'
        'allow-network = ["127.0.0.0/8"]\n'
        'deny-host = ["denied.example"]\n' + extra,
        encoding="utf-8",
    )
    return path


def roundTrip(port: int, echo: OriginProcess, payload: bytes) -> None:
    sock, _ = openTunnel(port, echo.port)
    with sock:
        sock.sendall(payload)
        assert readExactly(sock, len(payload)) == payload


def refused(port: int) -> None:
    with dial(port) as sock:
        sock.sendall(connectRequest("denied.example", 443))
        response, _ = readResponseHead(sock)
        assert response.status == 403


def fileLines(path: Path, count: int) -> list[str]:
    """
    Wait until the file has C{count} lines (the writer's thread writes them
    soon after the event), and return them.
    """

    def enough() -> bool:
        return path.exists() and path.read_text().count("\n") >= count

    waitForPath(enough, 10, f"{count} lines in {path}")
    return path.read_text().splitlines()


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_squidFileAndReopen(
    runner: str, tmp_path: Path, origin: OriginFactory, running: list[Proxy]
) -> None:
    """
    Every refusal and tunnel is a line of squid's format in the file, and
    not an event of the proxy's log; after the file is renamed, SIGUSR1
    makes the next lines go to a new file under the old name.
    """
    echo = origin("echo")
    log = tmp_path / "access.log"
    config = writeConfig(
        tmp_path, f'access-log = "{log}"\naccess-log-format = "squid"\n'
    )
    proxy = Proxy(runner, config, tmp_path)
    running.append(proxy)
    roundTrip(proxy.port, echo, b"first tunnel")
    refused(proxy.port)
    # The tunnel's line comes when its upstream side is gone too: maybe
    # after the refusal's.
    matches = [SQUID.match(line) for line in fileLines(log, 2)]
    assert None not in matches, matches
    second, first = sorted(matches, key=lambda m: m["result"] if m else "")
    assert first is not None and second is not None
    assert first["result"] == "TCP_TUNNEL/200"
    assert int(first["bytes"]) == ESTABLISHED + len(b"first tunnel")
    assert first["url"] == f"127.0.0.1:{echo.port}"
    assert first["peer"] == "HIER_DIRECT/127.0.0.1"
    assert first["type"] == "-"
    assert (second["result"], second["url"]) == ("TCP_DENIED/403", "denied.example:443")
    assert (second["peer"], second["type"]) == ("HIER_NONE/-", "text/plain")
    # logrotate: rename, then SIGUSR1.
    log.rename(tmp_path / "access.log.1")
    proxy.process.process.send_signal(signal.SIGUSR1)
    proxy.waitForLine("access log .* re-opened")
    roundTrip(proxy.port, echo, b"second")
    [third] = fileLines(log, 1)
    assert SQUID.match(third) is not None
    assert len((tmp_path / "access.log.1").read_text().splitlines()) == 2
    assert not any("tunnel closed" in line for line in proxy.lines())


@pytest.mark.parametrize("runner", ["twistd", "command"])
def test_jsonToStandardOutput(
    runner: str, tmp_path: Path, origin: OriginFactory, running: list[Proxy]
) -> None:
    """
    C{--access-log -} writes one JSON object per line to standard output,
    without a record separator.
    """
    echo = origin("echo")
    config = writeConfig(tmp_path, 'access-log = "-"\naccess-log-format = "json"\n')
    proxy = Proxy(runner, config, tmp_path)
    running.append(proxy)
    roundTrip(proxy.port, echo, b"json")
    line = proxy.waitForLine('^{"time":')
    record = json.loads(line)
    assert (record["event"], record["bytesUp"], record["bytesDown"]) == (
        "tunnel_close",
        4,
        4,
    )
    assert "\x1e" not in line


def test_fullDisk(tmp_path: Path, origin: OriginFactory, running: list[Proxy]) -> None:
    """
    With the access log on a full disk (C{/dev/full}), tunnels work and the
    lost lines are reported once.
    """
    echo = origin("echo")
    config = writeConfig(tmp_path, 'access-log = "/dev/full"\n')
    proxy = Proxy("twistd", config, tmp_path)
    running.append(proxy)
    for n in range(3):
        roundTrip(proxy.port, echo, b"tunnel %d" % n)
    proxy.waitForLine("access log /dev/full: write failed")
    roundTrip(proxy.port, echo, b"still works")
    assert len([x for x in proxy.lines() if "write failed" in x]) == 1


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_logLevelWarn(
    runner: str, tmp_path: Path, origin: OriginFactory, running: list[Proxy]
) -> None:
    """
    C{--log-level warn} drops the proxy's info events (a reload's
    C{configuration reloaded}) but keeps its warnings and the access log.
    """
    config = writeConfig(tmp_path, 'log-level = "warn"\n')
    proxy = Proxy(runner, config, tmp_path)
    running.append(proxy)
    # A reload that warns (the listeners change only at a restart), and
    # would say "configuration reloaded" right after, in the same turn.
    config.write_text(config.read_text().replace("tcp:0:", "tcp:1:"), encoding="utf-8")
    proxy.process.process.send_signal(signal.SIGHUP)
    proxy.waitForLine("--listen changes take effect only after a restart")
    refused(proxy.port)
    proxy.waitForLine("refused 127.0.0.1:\\d+ - CONNECT denied.example:443: 403")
    assert not any("configuration reloaded" in line for line in proxy.lines())


@pytest.mark.parametrize("runner", ["twistd", "tac", "command"])
def test_logLevelDebug(
    runner: str, tmp_path: Path, origin: OriginFactory, running: list[Proxy]
) -> None:
    """
    C{--log-level debug} keeps debug events (C{tunnel opened}); the
    default, C{info}, does not.
    """
    echo = origin("echo")
    for level, expected in (("debug", True), ("info", False)):
        directory = tmp_path / level
        directory.mkdir()
        proxy = Proxy(
            runner, writeConfig(directory, f'log-level = "{level}"\n'), tmp_path
        )
        running.append(proxy)
        roundTrip(proxy.port, echo, b"level")
        proxy.waitForLine("tunnel closed")
        assert any("tunnel opened" in line for line in proxy.lines()) is expected
