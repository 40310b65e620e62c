# -*- test-case-name: tests.integration.test_readme -*-
"""
Every shell command of the README and of C{docs/*.md} runs as written, in
order, from the repository root once the README's first command has
installed into C{.venv}: the README's promise to someone on a fresh
machine.

The blocks are those of L{tests._shellblocks}; a block marked C{not-run}
says in the Markdown why it cannot run on loopback, and is left out.  The
commands run with bash in a directory that stands for the repository root
(every top-level entry of the checkout linked into it) with a C{PATH}
that lacks the virtual environment, as the README never activates it.
What the test changes, and why:

 - C{.venv} there is the virtual environment running this test, and the
   README's install commands (C{python3 -m venv .venv}, C{.venv/bin/pip
   install ...}) are not run again.  This environment was made by the
   README's own test command from this checkout (C{.ci/run} runs exactly
   that command in a fresh copy), so it holds everything they install;
   reinstalling would take a minute, need the package index, and replace
   the code under test while it runs.  C{test_packaging} installs the
   built wheel in a fresh environment.  The commands import connectproxy
   from the checkout (C{PYTHONPATH}), as the other integration tests do,
   so that they run the code under test even where the environment holds
   an older install of it.
 - The ports the commands use (3128, 3129, 8443) become free ports chosen
   here, in the commands and in the expected text alike: the usual ones
   may be taken on the machine that runs the tests (by a squid, or by
   another run of this test).  So that the proxy's port can be changed,
   a proxy started without a listener gets its default one,
   C{tcp:3128:interface=127.0.0.1}, written out.
 - A command that serves in the foreground (the proxy, the origin) is
   started in the background, and the test waits for the line that says
   it serves; one started on a port another one holds replaces it, as the
   reader stops the first (Ctrl-C) before starting the second.  All are
   stopped, by PID, at the end.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._shellblocks import (
    REPO_ROOT,
    Foreground,
    Install,
    Server,
    ShellBlock,
    classify,
    documents,
    segments,
    shellBlocks,
    splitAssignments,
)
from tests.integration._output import LineCollector
from tests.integration._processes import ChildProcess, cleanEnvironment
from tests.integration._sockets import closedPort

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PORTS = (3128, 3129, 8443)
"""
The ports the commands use, each replaced by a free one.
"""

COMMAND_TIMEOUT = 60.0
"""
Seconds a command that exits by itself may take.
"""

READY_TIMEOUT = 20.0
"""
Seconds a server may take to say it serves.
"""

LOG_TIMEOUT = 10.0
"""
Seconds for an expected line to appear in a server's log.
"""


def runnableDocuments() -> list[Path]:
    """
    @return: The documents with at least one block that runs.
    """
    return [
        path
        for path in documents()
        if any(block.notRun is None for block in shellBlocks(path))
    ]


class Reader:
    """
    Someone running a document's commands in order, each server in a
    terminal of its own.

    @ivar root: The directory standing for the repository root.
    @ivar env: The environment of every command.
    @ivar ports: Each port of L{PORTS} and the free port used instead.
    @ivar servers: The servers running, by the port they listen on.
    @ivar started: Every server started, in order.
    """

    def __init__(self, root: Path) -> None:
        """
        @param root: An empty directory to stand for the repository root.
        """
        self.root = root
        venv = Path(sys.prefix)
        if not (venv / "bin" / "twistd").exists() or sys.prefix == sys.base_prefix:
            raise AssertionError(
                "run the tests from the virtual environment the README's test "
                f"command makes; {venv} has no bin/twistd"
            )
        for entry in REPO_ROOT.iterdir():
            if entry.name != ".venv":
                (root / entry.name).symlink_to(entry)
        (root / ".venv").symlink_to(venv)
        self.env = cleanEnvironment(
            PATH=_pathWithout(venv / "bin"), PYTHONPATH=str(root)
        )
        self.ports: dict[int, int] = {}
        for port in PORTS:
            free = closedPort()
            while free in self.ports.values() or free in PORTS:
                free = closedPort()
            self.ports[port] = free
        self.servers: dict[int, ChildProcess[str]] = {}
        self.started: list[tuple[Server, ChildProcess[str]]] = []

    def substitute(self, text: str) -> str:
        """
        @param text: A command or an expected text.
        @return: It with every port of L{PORTS} replaced by its free port.
        """
        for port, free in self.ports.items():
            text = re.sub(rf"(?<![0-9]){port}(?![0-9])", str(free), text)
        return text

    def runBlock(self, block: ShellBlock) -> None:
        """
        Run a block's commands in order and check what its markers expect.

        @param block: A block without a C{not-run} marker.
        @raise AssertionError: When a command fails (or, with C{fails},
            succeeds), or an expected text does not appear.
        """
        output = []
        for command in block.commands():
            for part in segments(command):
                kind = classify(part)
                if isinstance(kind, Install):
                    continue
                if isinstance(kind, Server):
                    self.startServer(block, kind)
                    continue
                assert isinstance(kind, Foreground)
                status, text = self.runCommand(block, part)
                expectFailure = block.marker("fails") is not None
                assert (status != 0) is expectFailure, (
                    f"{block.where()}: {part!r} exited with {status}"
                    f"{' (expected a failure)' if expectFailure else ''}:\n{text}"
                    + self.serverLogs()
                )
                output.append(text)
        for expected in block.markers.get("output", []):
            expected = self.substitute(expected)
            assert any(expected in text for text in output), (
                f"{block.where()}: {expected!r} is not in the output:\n"
                + "\n".join(output)
            )
        for expected in block.markers.get("log", []):
            self.waitForLog(block, self.substitute(expected))

    def runCommand(self, block: ShellBlock, command: str) -> tuple[int, str]:
        """
        Run a command that exits by itself, in a process group of its own
        that is killed if it outlives L{COMMAND_TIMEOUT}.

        @param block: Where it comes from, for messages.
        @param command: The command as written.
        @return: Its exit status and its output (stdout and stderr).
        """
        process = subprocess.Popen(
            ["bash", "-c", "set -o pipefail\n" + self.substitute(command)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.root,
            env=self.env,
            start_new_session=True,
        )
        try:
            out, _ = process.communicate(timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, _ = process.communicate()
            raise AssertionError(
                f"{block.where()}: {command!r} still ran after {COMMAND_TIMEOUT}s:"
                f"\n{out.decode('utf-8', 'replace')}"
            ) from None
        return process.returncode, out.decode("utf-8", "replace")

    def startServer(self, block: ShellBlock, server: Server) -> None:
        """
        Start a server in the background, replacing the one on its port,
        and wait until it says it serves.

        @param block: Where it comes from, for messages.
        @param server: The server command.
        """
        port = self.ports.get(server.port, server.port)
        previous = self.servers.pop(port, None)
        if previous is not None:
            self.stopServer(previous)
        assignments, rest = splitAssignments(self.substitute(server.command))
        # exec: the PID started is the server's, and stopping it stops it.
        process = ChildProcess(
            ["bash", "-c", f"{assignments}exec {rest}"],
            LineCollector,
            self.env,
            self.root,
        )
        self.servers[port] = process
        self.started.append((server, process))
        process.output.waitFor(
            lambda line: re.search(server.ready, line) is not None,
            READY_TIMEOUT,
            f"{block.where()}: the {server.name} of {server.command!r} to serve",
        )

    def waitForLog(self, block: ShellBlock, expected: str) -> None:
        """
        Wait for a line of the proxy started last to contain C{expected}.

        @param block: Where the expectation comes from, for messages.
        @param expected: The text.
        """
        proxies = [
            process for server, process in self.started if server.name == "proxy"
        ]
        assert proxies, f"{block.where()}: no proxy runs to log {expected!r}"
        proxies[-1].output.waitFor(
            lambda line: expected in line,
            LOG_TIMEOUT,
            f"{block.where()}: {expected!r} in the proxy's log",
        )

    def serverLogs(self) -> str:
        """
        @return: What the servers still running printed, for failure
            messages.
        """
        return "".join(
            f"\n--- {port} ---\n{process.describe()}"
            for port, process in self.servers.items()
        )

    def stopServer(self, process: ChildProcess[str]) -> None:
        """
        Stop a server, which must still have been running and must not have
        printed a traceback.

        @param process: The server.
        """
        running = process.process.poll() is None
        process.stop()
        assert running, f"a server exited by itself:\n{process.describe()}"
        assert "Traceback" not in process.output.text(), process.describe()

    def stopAll(self) -> None:
        """
        Stop every server still running, even when stopping one fails.
        """
        errors = []
        for process in self.servers.values():
            try:
                self.stopServer(process)
            except AssertionError as e:
                errors.append(str(e))
        self.servers.clear()
        assert not errors, "\n".join(errors)


def _pathWithout(directory: Path) -> str:
    """
    @param directory: A directory of programs.
    @return: C{PATH} without it, as on a machine where it was never
        activated.
    """
    entries = os.environ.get("PATH", os.defpath).split(os.pathsep)
    return os.pathsep.join(
        entry
        for entry in entries
        if entry and Path(entry).resolve() != directory.resolve()
    )


@pytest.fixture
def reader() -> Iterator[Reader]:
    """
    A reader in a directory of its own, whose servers are stopped when the
    test ends.
    """
    with tempfile.TemporaryDirectory(prefix="connectproxy-readme-") as directory:
        reading = Reader(Path(directory))
        try:
            yield reading
        finally:
            reading.stopAll()


@pytest.mark.parametrize(
    "document", runnableDocuments(), ids=lambda path: str(path.relative_to(REPO_ROOT))
)
def test_commandsRun(reader: Reader, document: Path) -> None:
    """
    The document's commands run as written, in order, and do what its
    markers say (exit with an error, print a text, log a text).
    """
    blocks = [block for block in shellBlocks(document) if block.notRun is None]
    for block in blocks:
        reader.runBlock(block)


def test_readmeRuns() -> None:
    """
    The README has commands that run, among them the local recipe: an
    origin on loopback, the proxy opened for exactly it, and curl through
    it.
    """
    assert (REPO_ROOT / "README.md") in runnableDocuments()
    kinds = [
        classify(part)
        for block in shellBlocks(REPO_ROOT / "README.md")
        if block.notRun is None
        for command in block.commands()
        for part in segments(command)
    ]
    names = [kind.name for kind in kinds if isinstance(kind, Server)]
    assert "origin" in names and "proxy" in names
    assert Foreground() in kinds
