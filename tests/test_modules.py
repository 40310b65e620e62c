# -*- test-case-name: tests.test_modules -*-
"""
The house rules every module follows: it names, in its first line, the test
modules that test it (C{# -*- test-case-name: tests.test_x -*-}), and those
test modules exist.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEADER = re.compile(r"# -\*- test-case-name: ([\w.,]+) -\*-\n")
SOURCES = sorted(
    [*ROOT.glob("connectproxy/**/*.py"), *ROOT.glob("twisted/plugins/*.py")]
)
#: Modules with nothing of their own to test.
UNTESTED = {
    "connectproxy/_version.py",
    "connectproxy/plugins/__init__.py",
    "twisted/plugins/connectproxy_plugin.py",
}


@pytest.mark.parametrize(
    "path", SOURCES, ids=[str(p.relative_to(ROOT)) for p in SOURCES]
)
def test_testCaseNames(path: Path) -> None:
    """
    The module's first line names its test modules, and each exists.
    """
    name = str(path.relative_to(ROOT))
    match = HEADER.match(path.read_text(encoding="utf-8"))
    if name in UNTESTED:
        assert match is None
        return
    assert match is not None, f"{name} does not name its test modules"
    for module in match.group(1).split(","):
        testFile = ROOT / (module.replace(".", "/") + ".py")
        assert testFile.is_file(), f"{name} names {module}, which does not exist"
