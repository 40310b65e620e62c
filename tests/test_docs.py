# -*- test-case-name: tests.test_docs -*-
"""
The test examples in docs/embedding.md run and pass (docs/plugins.md's are
run by tests/test_plugins.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

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
