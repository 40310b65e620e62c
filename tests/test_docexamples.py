# -*- test-case-name: tests.test_docexamples -*-
"""
Every configuration example of C{docs/deployment.md} and
C{docs/operating.md} is run by a test, or says why not
(L{tests._docexamples}); and the helpers that find and rewrite the examples
do what they say.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests._docexamples import (
    DOCS,
    DOCUMENTS,
    EXAMPLES,
    UNEXERCISED,
    CodeBlock,
    Example,
    codeBlocks,
    rewrite,
)

RUNNER = Path(__file__).resolve().parent / "integration" / "test_docexamples.py"


def claimed(block: CodeBlock) -> list[str]:
    """
    @return: The names of the entries of L{EXAMPLES} and L{UNEXERCISED}
        that are C{block}.
    """
    names = [name for name, example in EXAMPLES.items() if example.matches(block)]
    return names + [
        f"unexercised: {reason}"
        for example, reason in UNEXERCISED.items()
        if example.matches(block)
    ]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_everyBlockAccountedFor(document: str) -> None:
    """
    Each block of the document is a shell block that runs as written
    (C{test_readme} runs it), or exactly one entry of L{EXAMPLES} or
    L{UNEXERCISED}: a new configuration example needs a test.
    """
    for block in codeBlocks(DOCS / document):
        names = claimed(block)
        if block.language == "sh" and block.notRun is None:
            assert names == [], f"{block.where()} runs as written: {names}"
        else:
            assert len(names) == 1, f"{block.where()} ({block.language}): {names}"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_exampleFoundAndRun(name: str) -> None:
    """
    Each example is one block of its document, the integration test uses
    it, and a shell example that cannot run as written says in its
    C{not-run} comment that this test runs it.
    """
    block = EXAMPLES[name].block()
    assert f'EXAMPLES["{name}"]' in RUNNER.read_text(encoding="utf-8")
    if block.language == "sh":
        assert block.notRun is not None
        assert "tests/integration/test_docexamples.py runs it" in block.notRun


@pytest.mark.parametrize("example", list(UNEXERCISED), ids=lambda e: e.contains)
def test_unexercisedFound(example: Example) -> None:
    """
    Each block no test runs is one block of its document.
    """
    example.block()


def test_exampleMissing() -> None:
    """
    An example that no block matches, or that several match, fails naming
    it.
    """
    with pytest.raises(AssertionError, match=r"0 blocks of docs/deployment\.md"):
        Example("deployment.md", "Parent proxies", "toml", "no such text").block()
    with pytest.raises(AssertionError, match=r"2 blocks of docs/deployment\.md"):
        Example("deployment.md", "Parent proxies", "toml", "upstream-proxy").block()


def test_indentedBlock(tmp_path: Path) -> None:
    """
    A block in a list item loses its indentation; the heading is the
    nearest one above; a C{not-run} comment belongs to the block right
    after it only.
    """
    path = tmp_path / "doc.md"
    path.write_text(
        "# Title\n\n## Section\n\n- item:\n\n  ```ini\n  [Service]\n"
        "  User=x\n  ```\n\n<!-- not-run: why -->\n```sh\nfalse\n```\n\n"
        "```sh\ntrue\n```\n",
        encoding="utf-8",
    )
    first, second, third = codeBlocks(path)
    assert (first.language, first.heading, first.text, first.notRun) == (
        "ini",
        "Section",
        "[Service]\nUser=x\n",
        None,
    )
    assert (second.line, second.notRun, second.text) == (13, "why", "false\n")
    assert third.notRun is None


def test_rewrite() -> None:
    """
    Every replacement applies in order; one whose text is missing fails
    naming it; a machine path left outside comments fails.
    """
    text = "# /etc/x.conf\npath /etc/x\nport 3128\n"
    assert rewrite(text, [("/etc/x\n", "/tmp/x\n"), ("3128", "4000")], "x") == (
        "# /etc/x.conf\npath /tmp/x\nport 4000\n"
    )
    with pytest.raises(AssertionError, match="no longer contains '8443'"):
        rewrite(text, [("/etc/x\n", "/tmp/x\n"), ("8443", "1")], "x")
    with pytest.raises(AssertionError, match="/etc/ is left in 'path /etc/x'"):
        rewrite(text, [("3128", "4000")], "x")
