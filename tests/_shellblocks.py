# -*- test-case-name: tests.test_docs -*-
"""
The shell commands of the README and of C{docs/*.md}: find the C{```sh}
blocks and the markers before them, split them into commands, and say what
kind of command each is, so that tests can check them
(L{tests.test_docs}) and run them (L{tests.integration.test_readme}).

A block may be preceded, on the lines right before its fence, by HTML
comments (invisible once rendered) that tell the tests about it::

    <!-- not-run: why it cannot run on loopback -->
    <!-- fails: why its command exits with a non-zero status -->
    <!-- output: text its standard output contains -->
    <!-- log: text the proxy started last then has in its log -->

Every command runs as written from the repository root once the README's
first command has installed into C{.venv}, which is never activated: the
programs installed there are named C{.venv/bin/NAME}.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
"""
The root of the source tree, where the commands run from.
"""

README = REPO_ROOT / "README.md"
"""
The README, whose first command installs into C{.venv}.
"""

CI_SCRIPT = REPO_ROOT / ".ci" / "run"
"""
The CI script, which runs the README's test command.
"""

MARKERS = frozenset({"not-run", "fails", "output", "log"})
"""
The marker names a comment before a block may use.
"""

SHELL_LANGUAGES = frozenset({"sh", "bash", "shell"})
"""
Info strings of the fences whose blocks are shell commands.
"""

VENV_PROGRAMS = frozenset(
    {"twistd", "twist", "connectproxy", "python", "pip", "pytest", "ruff", "mypy"}
)
"""
Programs that exist only in the virtual environment, which is never
activated: a command must call them as C{.venv/bin/NAME}.
"""

_MARKER = re.compile(r"<!--\s*([a-z-]+):\s*(.*?)\s*-->\Z")
_FENCE = re.compile(r"```\s*([A-Za-z0-9_-]*)")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_OPERATORS = frozenset({"&&", "||", ";", "|", "&", ";;"})


@dataclass(frozen=True)
class ShellBlock:
    """
    One C{```sh} block of a Markdown file.

    @ivar path: The Markdown file.
    @ivar line: The line number of its opening fence.
    @ivar text: What is between the fences.
    @ivar markers: The markers before it: name to value, C{output} and
        C{log} possibly repeated.
    """

    path: Path
    line: int
    text: str
    markers: dict[str, list[str]] = field(default_factory=dict)

    def where(self) -> str:
        """
        @return: C{FILE:LINE}, relative to the repository, for messages.
        """
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}"

    def marker(self, name: str) -> str | None:
        """
        @param name: A marker name that may appear once.
        @return: Its value, or C{None} when it is absent.
        """
        values = self.markers.get(name, [])
        return values[0] if values else None

    @property
    def notRun(self) -> str | None:
        """
        Why the block cannot run on loopback, or C{None} if it runs.
        """
        return self.marker("not-run")

    def commands(self) -> list[str]:
        """
        @return: The block's commands, one per logical line (continuation
            lines joined), without blank and comment lines.
        """
        commands = []
        for logical in re.sub(r"\\\n", " ", self.text).splitlines():
            stripped = logical.strip()
            if stripped and not stripped.startswith("#"):
                commands.append(stripped)
        return commands


def shellBlocks(path: Path) -> list[ShellBlock]:
    """
    Find the shell blocks of a Markdown file, with their markers.

    @param path: The file.
    @return: Its shell blocks, in order.
    @raise ValueError: For an unknown marker, a marker repeated that may
        appear once, or markers not right before a shell block.
    """
    blocks = []
    pending: dict[str, list[str]] = {}
    pendingLine = 0
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        line = lines[index].strip()
        marker = _MARKER.match(line)
        fence = _FENCE.match(line)
        if marker is not None:
            name, value = marker.groups()
            if name not in MARKERS:
                raise ValueError(f"{path}:{index + 1}: unknown marker {name!r}")
            if name in pending and name not in ("output", "log"):
                raise ValueError(f"{path}:{index + 1}: marker {name!r} repeated")
            pending.setdefault(name, []).append(value)
            pendingLine = pendingLine or index + 1
            index += 1
            continue
        if pending and (fence is None or fence.group(1) not in SHELL_LANGUAGES):
            raise ValueError(f"{path}:{pendingLine}: markers not before a sh block")
        if fence is None:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith("```"):
            end += 1
        if fence.group(1) in SHELL_LANGUAGES:
            text = "\n".join(lines[index + 1 : end]) + "\n"
            blocks.append(ShellBlock(path, index + 1, text, pending))
        pending, pendingLine = {}, 0
        index = end + 1
    if pending:
        raise ValueError(f"{path}:{pendingLine}: markers not before a sh block")
    return blocks


def documents() -> list[Path]:
    """
    @return: The Markdown files whose commands must run: the README and
        C{docs/*.md}.
    """
    return [README, *sorted((REPO_ROOT / "docs").glob("*.md"))]


def programs(command: str) -> list[str]:
    """
    The programs a command line calls: the first word of each simple
    command, after any variable assignments.

    @param command: One logical command line.
    @return: The program names, as written.
    """
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    found = []
    expectProgram = True
    for token in lexer:
        if token in _OPERATORS:
            expectProgram = True
        elif expectProgram and not _ASSIGNMENT.match(token):
            found.append(token)
            expectProgram = False
    return found


def segments(command: str) -> list[str]:
    """
    Split a command line at its C{&&} operators.

    @param command: One logical command line.
    @return: The commands of the C{&&} list, in order.
    """
    return [part.strip() for part in re.split(r"\s&&\s", command)]


def splitAssignments(command: str) -> tuple[str, str]:
    """
    @param command: A simple command.
    @return: Its leading variable assignments (with a trailing space, or
        empty) and the rest.
    """
    match = re.match(r"((?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*)(.*)\Z", command, re.S)
    assert match is not None
    return match.group(1), match.group(2)


@dataclass(frozen=True)
class Install:
    """
    A command that creates C{.venv} or installs this checkout into it.
    """


@dataclass(frozen=True)
class Foreground:
    """
    A command that runs and exits by itself.
    """


@dataclass(frozen=True)
class Server:
    """
    A command that serves in the foreground until stopped.

    @ivar name: What it is, for messages (C{"proxy"}, C{"origin"}).
    @ivar ready: A regular expression its output matches once it serves.
    @ivar command: The command, with the listener the proxy listens on by
        default written out (C{--listen} or C{CONNECTPROXY_LISTEN}), so
        that its port can be told and changed like any other.
    @ivar port: The port it listens on, as written.
    """

    name: str
    ready: str
    command: str
    port: int


Kind = Install | Foreground | Server

DEFAULT_LISTEN = "tcp:3128:interface=127.0.0.1"
"""
Where the proxy listens when no listener is named.
"""

_PROXY_READY = r"connectproxy listening on "
_INSTALLS = (
    re.compile(r"python3 -m venv \.venv\Z"),
    re.compile(r"\.venv/bin/pip install (?:-q )?(?:\.|'\.\[[a-z,]+\]')\Z"),
)


def classify(command: str) -> Kind:
    """
    Say what kind of command a simple command is.

    @param command: One command of a C{&&} list.
    @return: What it is.
    @raise ValueError: For a command that would daemonize, which a test
        could not stop by the PID it started.
    """
    if any(pattern.match(command) for pattern in _INSTALLS):
        return Install()
    assignments, rest = splitAssignments(command)
    words = shlex.split(rest)
    if not words or "--help" in words or "--version" in words:
        return Foreground()
    program, arguments = words[0], words[1:]
    if program == ".venv/bin/python" and arguments[:2] == ["-m", "http.server"]:
        port = int(arguments[2]) if len(arguments) > 2 else 8000
        return Server("origin", r"Serving HTTP on ", command, port)
    if program == ".venv/bin/twistd":
        flags = [word for word in arguments if word.startswith("-")]
        if not any(
            flag in ("-n", "--nodaemon") or flag.startswith("-ny") for flag in flags
        ):
            raise ValueError(f"daemonizes, so a test cannot stop it: {command}")
        if any(word.endswith(".tac") for word in arguments):
            if "CONNECTPROXY_LISTEN=" not in assignments:
                assignments += f"CONNECTPROXY_LISTEN={DEFAULT_LISTEN} "
            return _proxy(assignments + rest)
    if program in (".venv/bin/twistd", ".venv/bin/twist", ".venv/bin/connectproxy"):
        if "--listen" not in words and "--config" not in words:
            rest += f" --listen {DEFAULT_LISTEN}"
        return _proxy(assignments + rest)
    return Foreground()


def _proxy(command: str) -> Server:
    """
    @param command: A command that runs the proxy in the foreground.
    @return: It as a L{Server}, with the port of its first listener.
    @raise ValueError: When that listener has no TCP port written out.
    """
    match = re.search(r"(?:--listen[ =]|CONNECTPROXY_LISTEN=)(?:tcp6?:)(\d+)", command)
    if match is None:
        raise ValueError(f"cannot tell which TCP port it listens on: {command}")
    return Server("proxy", _PROXY_READY, command, int(match.group(1)))
