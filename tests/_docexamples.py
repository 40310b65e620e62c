# -*- test-case-name: tests.test_docexamples -*-
"""
The configuration examples of C{docs/deployment.md} and
C{docs/operating.md} (an C{haproxy.cfg}, a C{squid.conf}, systemd units,
a logrotate file, TOML files, the commands that use them), where each one
is, and which test runs it: L{EXAMPLES}.  A block of those documents that
no test runs is in L{UNEXERCISED}, with the reason;
L{tests.test_docexamples} checks that every block is in one or the other,
and L{tests.integration.test_docexamples} runs the examples.

Blocks are found by their section, their fence's language and a text they
contain, so that a block moved to another section, or rewritten so that
the text is gone, fails loudly instead of being skipped.  L{rewrite}
changes an example for loopback and a temporary directory with a table of
replacements, each of which must apply.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests._shellblocks import REPO_ROOT, ShellBlock

DOCS = REPO_ROOT / "docs"
"""
The documentation directory.
"""

DOCUMENTS = ("deployment.md", "operating.md")
"""
The documents whose configuration examples must run.
"""

_FENCE = re.compile(r"(\s*)(`{3,})\s*([A-Za-z0-9_{}-]*)")
_HEADING = re.compile(r"#{1,6}\s+(.*?)\s*\Z")
_NOT_RUN = re.compile(r"<!--\s*not-run:\s*(.*?)\s*-->\Z")


@dataclass(frozen=True)
class CodeBlock:
    """
    One fenced block of a Markdown file.

    @ivar path: The file.
    @ivar line: The line number of its opening fence.
    @ivar language: The fence's info string (C{""} for none).
    @ivar heading: The text of the nearest heading above it.
    @ivar text: What is between the fences, without the fence's
        indentation.
    @ivar notRun: The reason of the C{not-run} marker right before it, or
        C{None}.
    """

    path: Path
    line: int
    language: str
    heading: str
    text: str
    notRun: str | None

    def where(self) -> str:
        """
        @return: C{FILE:LINE}, relative to the repository, for messages.
        """
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}"

    def shell(self) -> ShellBlock:
        """
        @return: The block as a shell block, to split into commands.
        """
        return ShellBlock(self.path, self.line, self.text)


def codeBlocks(path: Path) -> list[CodeBlock]:
    """
    Find every fenced block of a Markdown file, indented ones (in a list
    item) included.

    @param path: The file.
    @return: Its blocks, in order.
    @raise ValueError: For a fence that is never closed.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    heading = ""
    notRun = None
    index = 0
    while index < len(lines):
        line = lines[index]
        fence = _FENCE.fullmatch(line)
        if fence is None:
            stripped = line.strip()
            found = _HEADING.fullmatch(stripped)
            if found is not None and not line.startswith(" "):
                heading = found.group(1)
            marker = _NOT_RUN.fullmatch(stripped)
            if marker is not None:
                notRun = marker.group(1)
            elif stripped:
                notRun = None
            index += 1
            continue
        indent, ticks, language = fence.groups()
        end = index + 1
        while end < len(lines) and lines[end].strip() != ticks:
            end += 1
        if end == len(lines):
            raise ValueError(f"{path}:{index + 1}: fence never closed")
        body = [
            text[len(indent) :] if text.startswith(indent) else text.lstrip()
            for text in lines[index + 1 : end]
        ]
        text = "\n".join(body) + "\n"
        blocks.append(CodeBlock(path, index + 1, language, heading, text, notRun))
        notRun = None
        index = end + 1
    return blocks


@dataclass(frozen=True)
class Example:
    """
    Where an example is: the one block of a document, under a heading, with
    a fence language, that contains a text.

    @ivar document: The file name, in C{docs/}.
    @ivar heading: The nearest heading above the block.
    @ivar language: The fence's info string.
    @ivar contains: A text only that block (of that section and language)
        contains.
    """

    document: str
    heading: str
    language: str
    contains: str

    def block(self) -> CodeBlock:
        """
        @return: The block.
        @raise AssertionError: Unless exactly one block matches: the
            documentation moved or changed the example, and the test that
            runs it must follow.
        """
        found = [
            block for block in codeBlocks(DOCS / self.document) if self.matches(block)
        ]
        assert len(found) == 1, (
            f"{len(found)} blocks of docs/{self.document} match {self}: "
            "update tests/_docexamples.py along with the documentation"
        )
        return found[0]

    def matches(self, block: CodeBlock) -> bool:
        """
        @param block: A block of any document.
        @return: Whether it is this example.
        """
        return (
            block.path == DOCS / self.document
            and block.heading == self.heading
            and block.language == self.language
            and self.contains in block.text
        )


#: Things that must not be left in an example after it is rewritten for a
#: test: paths of the machine's own configuration and installation.
MACHINE_PATHS = ("/etc/", "/opt/", "/var/", "/run/")


def rewrite(text: str, replacements: Sequence[tuple[str, str]], where: str) -> str:
    """
    Rewrite an example for the test: each C{(old, new)} pair replaces every
    occurrence of C{old}, in order.

    @param text: The example.
    @param replacements: The table.
    @param where: Names the example in messages.
    @return: The rewritten text.
    @raise AssertionError: When an C{old} text does not occur (the example
        changed: the table must follow), or when a path of the machine's
        own configuration (L{MACHINE_PATHS}) is left outside comments
        (lines that start with C{#}).
    """
    for old, new in replacements:
        assert old in text, (
            f"{where}: the example no longer contains {old!r}, which the test "
            f"rewrites to {new!r}:\n{text}"
        )
        text = text.replace(old, new)
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for path in MACHINE_PATHS:
            assert path not in line, f"{where}: {path} is left in {line!r}"
    return text


def _deployment(heading: str, language: str, contains: str) -> Example:
    return Example("deployment.md", heading, language, contains)


def _operating(heading: str, language: str, contains: str) -> Example:
    return Example("operating.md", heading, language, contains)


BALANCER = "Behind a load balancer with the PROXY protocol"
HTTPS = "HTTPS-proxy listener"
PARENTS = "Parent proxies"
LOGS = "Keeping logs bounded"
WORKERS = "Several processes"

EXAMPLES: dict[str, Example] = {
    "balancer command": _deployment(BALANCER, "sh", "--listen haproxy:tcp:3128"),
    "haproxy.cfg": _deployment(BALANCER, "text", "frontend proxy"),
    "haproxy.cfg /healthz": _deployment(BALANCER, "text", "option httpchk"),
    "https listener command": _deployment(HTTPS, "sh", "--listen ssl:3129"),
    "https curl": _deployment(HTTPS, "sh", "curl -p -x https://"),
    "certbot hook": _deployment(HTTPS, "sh", "RENEWED_LINEAGE"),
    "squid.conf": _deployment(PARENTS, "text", "http_port 10.0.0.2:3128"),
    "parent toml": _deployment(PARENTS, "toml", "upstream-route"),
    "parent command": _deployment(PARENTS, "sh", "--config /etc/connectproxy/"),
    "https parent toml": _deployment(PARENTS, "toml", "upstream-ca"),
    "workers command": _deployment(WORKERS, "sh", "--workers auto"),
    "check-config transcript": _operating(
        "Checking a configuration", "console", "--check-config"
    ),
    "usage error transcript": _operating(
        "When it cannot start", "console", "--idle-timeout soon"
    ),
    "listen failure transcript": _operating(
        "When it cannot start", "console", "cannot listen on"
    ),
    "journald unit": _operating(LOGS, "ini", "ExecStartPre="),
    "logrotate": _operating(LOGS, "", "/etc/logrotate.d/connectproxy"),
}
"""
The examples L{tests.integration.test_docexamples} runs, by name.
"""

UNEXERCISED: dict[Example, str] = {
    _deployment(
        "Under systemd", "sh", "systemctl enable"
    ): "installs under /opt and /etc and needs systemd as PID 1; the unit "
    "files it installs pass systemd-analyze verify (test_systemd) and their "
    "ExecStart= and ExecReload= run under socket activation "
    "(test_docexamples)",
    _operating(
        "Logs", "text", "tunnel closed 192.0.2.7"
    ): "sample log lines, not a configuration",
}
"""
The blocks of L{DOCUMENTS} that are neither run by C{test_readme} (shell
blocks without C{not-run}) nor examples of L{EXAMPLES}, and why.
"""
