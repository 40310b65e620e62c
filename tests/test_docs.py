# -*- test-case-name: tests.test_docs -*-
"""
The test examples in docs/embedding.md run and pass (docs/plugins.md's are
run by tests/test_plugins.py), and the shell commands of the README and
docs/*.md are written so that they run (tests/integration/test_readme.py
runs them).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests._shellblocks import (
    CI_SCRIPT,
    README,
    REPO_ROOT,
    VENV_PROGRAMS,
    Foreground,
    Install,
    Kind,
    Server,
    ShellBlock,
    classify,
    documents,
    programs,
    segments,
    shellBlocks,
)

EMBEDDING = Path(__file__).resolve().parent.parent / "docs" / "embedding.md"


def testBlocks() -> list[str]:
    """
    The Python examples of docs/embedding.md that define tests (the others
    start a reactor).
    """
    text = EMBEDDING.read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```$", text, re.S | re.M)
    return [block for block in blocks if re.search(r"^def test_", block, re.M)]


def test_embeddingHasTestExamples() -> None:
    """
    docs/embedding.md shows at least one test.
    """
    assert testBlocks()


@pytest.mark.parametrize("block", testBlocks())
def test_embeddingExample(block: str) -> None:
    """
    Each test shown in docs/embedding.md passes.
    """
    namespace: dict[str, Any] = {"__name__": "docs_embedding"}
    exec(compile(block, str(EMBEDDING), "exec"), namespace)
    for name, value in list(namespace.items()):
        if name.startswith("test_"):
            value()


# The shell commands of the README and docs/*.md: tests/integration/
# test_readme.py runs them; these checks need no process.


def _allBlocks() -> list[ShellBlock]:
    return [block for path in documents() for block in shellBlocks(path)]


def _ids(block: ShellBlock) -> str:
    return block.where()


def _readmeTestCommand() -> str:
    """
    The README's command that runs the test suite.
    """
    [command] = [
        command
        for block in shellBlocks(README)
        for command in block.commands()
        if ".venv/bin/python -m pytest" in command
    ]
    return command


def test_readmeStartsWithInstall() -> None:
    """
    The README's first command installs into C{.venv}, which every later
    command relies on, and runs the proxy.
    """
    first = shellBlocks(README)[0]
    assert first.notRun is None
    [command] = first.commands()
    kinds = [classify(part) for part in segments(command)]
    assert kinds[:2] == [Install(), Install()]
    assert isinstance(kinds[2], Server) and kinds[2].name == "proxy"


@pytest.mark.parametrize("block", _allBlocks(), ids=_ids)
def test_venvProgramsByPath(block: ShellBlock) -> None:
    """
    Programs that only the virtual environment has are called as
    C{.venv/bin/NAME} (it is never activated), and C{python3} only creates
    it; this holds for blocks that do not run here too.
    """
    for command in block.commands():
        for program in programs(command):
            assert program not in VENV_PROGRAMS, (
                f"{block.where()}: call {program} as .venv/bin/{program}: {command}"
            )
            if program == "python3":
                assert "python3 -m venv " in command, (
                    f"{block.where()}: use .venv/bin/python: {command}"
                )


@pytest.mark.parametrize("block", _allBlocks(), ids=_ids)
def test_blockRunsOrSaysWhyNot(block: ShellBlock) -> None:
    """
    A block either runs on loopback, every command of it of a kind the
    README test knows how to run, or says why not; a block that does not
    run has no expectations about running.
    """
    if block.notRun is not None:
        assert block.notRun.strip(), f"{block.where()}: not-run needs a reason"
        assert set(block.markers) == {"not-run"}, block.where()
        return
    kinds = [
        classify(part) for command in block.commands() for part in segments(command)
    ]
    assert kinds, f"{block.where()}: an empty block"
    if block.marker("fails") is not None:
        assert kinds == [Foreground()], (
            f"{block.where()}: a failing block is one command that exits"
        )
    if "output" in block.markers:
        assert Foreground() in kinds, f"{block.where()}: no command prints"


def test_ciRunsTheReadmeTestCommand() -> None:
    """
    C{.ci/run} runs the README's test command exactly as written.
    """
    command = _readmeTestCommand()
    assert command.startswith("python3 -m venv .venv && ")
    assert command in CI_SCRIPT.read_text(encoding="utf-8")


def test_coverageGateOnWholeSuiteOnly() -> None:
    """
    The 90% coverage gate is in the README's test command (the whole
    suite), not in pytest's default options, so a run of one file does not
    fail on it.
    """
    assert _readmeTestCommand().endswith(" --cov-fail-under=90")
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text("utf-8"))
    options = pyproject["tool"]["pytest"]["ini_options"]["addopts"]
    assert "--cov=connectproxy" in options
    assert "--cov-fail-under" not in options


# The parsing and classifying themselves.


def test_markersAndContinuations(tmp_path: Path) -> None:
    """
    Markers right before a shell block belong to it; continuation lines make
    one command; comments, blank lines and other languages' blocks are left
    out.
    """
    path = tmp_path / "doc.md"
    path.write_text(
        "Intro\n\n"
        "```python\nprint('not shell')\n```\n\n"
        "<!-- fails: refused -->\n"
        "<!-- log: one -->\n"
        "<!-- log: two -->\n"
        "```sh\n"
        "# a comment\n"
        "curl -p \\\n    -x http://127.0.0.1:3128 http://127.0.0.1:8443/\n"
        "\n"
        "echo done\n"
        "```\n"
        "```bash\ntrue\n```\n",
        encoding="utf-8",
    )
    first, second = shellBlocks(path)
    assert (first.line, second.line) == (10, 17)
    assert first.markers == {"fails": ["refused"], "log": ["one", "two"]}
    assert first.marker("fails") == "refused"
    assert first.notRun is None
    assert first.commands() == [
        "curl -p      -x http://127.0.0.1:3128 http://127.0.0.1:8443/",
        "echo done",
    ]
    assert (second.markers, second.commands()) == ({}, ["true"])


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("<!-- not-ran: typo -->\n```sh\ntrue\n```\n", "unknown marker 'not-ran'"),
        ("<!-- not-run: why -->\n\n```sh\ntrue\n```\n", "markers not before"),
        ("<!-- not-run: why -->\n```python\npass\n```\n", "markers not before"),
        ("<!-- fails: a -->\n<!-- fails: b -->\n```sh\nfalse\n```\n", "repeated"),
        ("text\n<!-- not-run: why -->\n", "markers not before"),
    ],
)
def test_misplacedMarkers(tmp_path: Path, text: str, complaint: str) -> None:
    """
    An unknown, repeated or stray marker is an error, so that no block
    goes unchecked because of a typo.
    """
    path = tmp_path / "doc.md"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=complaint):
        shellBlocks(path)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("A=1 B='x y' .venv/bin/twistd -n x | grep y && cd z; python a", None),
        ("curl -x http://h:1 http://o/ || true", ["curl", "true"]),
    ],
)
def test_programs(command: str, expected: list[str] | None) -> None:
    """
    The programs of a command line are the first words of its simple
    commands, after assignments.
    """
    if expected is None:
        expected = [".venv/bin/twistd", "grep", "cd", "python"]
    assert programs(command) == expected


@pytest.mark.parametrize(
    ("command", "kind"),
    [
        ("python3 -m venv .venv", Install()),
        (".venv/bin/pip install .", Install()),
        (".venv/bin/pip install '.[test]'", Install()),
        (".venv/bin/pip install requests", Foreground()),
        ("curl -p -x http://127.0.0.1:3128 http://127.0.0.1:8443/", Foreground()),
        (".venv/bin/twistd connectproxy --help", Foreground()),
        (
            ".venv/bin/python -m http.server 8443 --bind 127.0.0.1",
            Server(
                "origin",
                "Serving HTTP on ",
                ".venv/bin/python -m http.server 8443 --bind 127.0.0.1",
                8443,
            ),
        ),
        (
            ".venv/bin/twistd -n --pidfile= connectproxy --allow-port 8443",
            Server(
                "proxy",
                "connectproxy listening on ",
                ".venv/bin/twistd -n --pidfile= connectproxy --allow-port 8443 "
                "--listen tcp:3128:interface=127.0.0.1",
                3128,
            ),
        ),
        (
            ".venv/bin/twist --log-format json connectproxy --listen tcp:3129",
            Server(
                "proxy",
                "connectproxy listening on ",
                ".venv/bin/twist --log-format json connectproxy --listen tcp:3129",
                3129,
            ),
        ),
        (
            "X=1 .venv/bin/twistd -ny docs/examples/connectproxy.tac --pidfile=",
            Server(
                "proxy",
                "connectproxy listening on ",
                "X=1 CONNECTPROXY_LISTEN=tcp:3128:interface=127.0.0.1 "
                ".venv/bin/twistd -ny docs/examples/connectproxy.tac --pidfile=",
                3128,
            ),
        ),
    ],
)
def test_classify(command: str, kind: Kind) -> None:
    """
    Installs, servers (with the default listener written out) and commands
    that exit are told apart.
    """
    assert classify(command) == kind


@pytest.mark.parametrize(
    ("command", "complaint"),
    [
        (".venv/bin/twistd --pidfile=p connectproxy", "daemonizes"),
        (".venv/bin/twist connectproxy --listen unix:/s", "cannot tell"),
    ],
)
def test_classifyRefuses(command: str, complaint: str) -> None:
    """
    A daemonizing command, or a server whose port cannot be told, cannot be
    run by the README test.
    """
    with pytest.raises(ValueError, match=complaint):
        classify(command)
