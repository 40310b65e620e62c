# -*- test-case-name: tests.integration.test_packaging -*-
"""
The built wheel, installed in a fresh virtual environment, ships the twistd
plugin (and nothing that would clobber Twisted's own packages).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.integration._processes import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "dropin.cache",
    ".*_cache",
    ".coverage*",
    ".hypothesis",
    "tests",
    "bench",
)
"""
What not to copy from the source tree into the build directory.
"""

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


def outsideEnvironment() -> dict[str, str]:
    """
    Make an environment like ours (pip's settings included) from which
    nothing points Python at the source tree or at our virtual environment.

    @return: The environment.
    """
    leaks = ("PYTHON", "VIRTUAL_ENV", "COVERAGE_", "PIP_REQUIRE_VIRTUALENV")
    return {
        name: value for name, value in os.environ.items() if not name.startswith(leaks)
    }


def run(argv: list[str], cwd: Path, timeout: float) -> str:
    """
    Run a command to completion and fail with its output if it fails.

    @param argv: The command line.
    @param cwd: The working directory.
    @param timeout: Seconds it may take.
    @return: Its stdout.
    """
    result = subprocess.run(
        argv,
        cwd=cwd,
        env=outsideEnvironment(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, (
        f"{' '.join(argv)} exited with {result.returncode}:\n"
        f"{result.stdout}\n{result.stderr}"
    )
    return result.stdout


def buildWheel(scratchDir: Path) -> Path:
    """
    Build the wheel from a copy of the source tree (so that the build leaves
    nothing behind in the tree).

    @param scratchDir: Where to copy, build and put the wheel.
    @return: The wheel.
    """
    source = scratchDir / "source"
    shutil.copytree(REPO_ROOT, source, ignore=_IGNORE)
    outdir = scratchDir / "wheels"
    if importlib.util.find_spec("build") is not None:
        argv = [sys.executable, "-m", "build", "--wheel", "--outdir", str(outdir)]
    else:
        argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(outdir)]
    run([*argv, str(source)], scratchDir, 300)
    [wheel] = outdir.glob("connectproxy-*.whl")
    return wheel


def test_wheelInstallsPlugin(scratchDir: Path) -> None:
    """
    The wheel ships the plugin module without Twisted's package files, and
    once installed in a fresh environment C{twistd} finds C{connectproxy}.
    """
    wheel = buildWheel(scratchDir)
    with zipfile.ZipFile(wheel) as archive:
        [record] = [n for n in archive.namelist() if n.endswith(".dist-info/RECORD")]
        paths = {
            line.split(",")[0] for line in archive.read(record).decode().splitlines()
        }
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
