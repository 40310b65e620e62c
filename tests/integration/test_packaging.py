# -*- test-case-name: tests.integration.test_packaging -*-
"""
The built wheel, installed in a fresh virtual environment, ships the twistd
plugin (and nothing that would clobber Twisted's own packages) and the
C{connectproxy} command.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.integration._processes import REPO_ROOT
from tests.integration._wheels import buildWheel, recordOf, run

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FIND_PLUGIN = """
import json
import connectproxy
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
names = sorted(plugin.tapname for plugin in getPlugins(IServiceMaker))
print(json.dumps({"names": names, "module": connectproxy.__file__}))
"""
"""
Run in the new environment: which twistd plugins it finds, and where
C{connectproxy} comes from.
"""


def test_wheelInstallsPlugin(scratchDir: Path) -> None:
    """
    The wheel ships the plugin module without Twisted's package files, and
    once installed in a fresh environment C{twistd} finds C{connectproxy}.
    """
    wheel = buildWheel(REPO_ROOT, scratchDir, "connectproxy")
    paths = set(recordOf(wheel))
    assert "twisted/plugins/connectproxy_plugin.py" in paths
    assert "twisted/__init__.py" not in paths
    assert "twisted/plugins/__init__.py" not in paths
    assert "connectproxy/tap.py" in paths
    venv = scratchDir / "venv"
    run([sys.executable, "-m", "venv", str(venv)], scratchDir, 120)
    python = str(venv / "bin" / "python")
    run([python, "-m", "pip", "install", "--no-input", str(wheel)], scratchDir, 300)
    found = json.loads(run([python, "-c", FIND_PLUGIN], scratchDir, 60))
    assert "connectproxy" in found["names"]
    assert Path(found["module"]).is_relative_to(venv)
    usage = run(
        [str(venv / "bin" / "twistd"), "connectproxy", "--help"], scratchDir, 60
    )
    assert "--listen" in usage
    version = run([str(venv / "bin" / "connectproxy"), "--version"], scratchDir, 60)
    assert version.startswith("connectproxy ")
