# -*- test-case-name: tests.integration.test_packaging -*-
"""
Building wheels from source trees and running commands in fresh virtual
environments, for the packaging tests.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

IGNORE = shutil.ignore_patterns(
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
What not to copy from a source tree into its build directory.
"""


def outsideEnvironment() -> dict[str, str]:
    """
    An environment like ours (pip's settings included) from which nothing
    points Python at the source tree or at our virtual environment.
    """
    leaks = ("PYTHON", "VIRTUAL_ENV", "COVERAGE_", "PIP_REQUIRE_VIRTUALENV")
    return {
        name: value for name, value in os.environ.items() if not name.startswith(leaks)
    }


def run(argv: list[str], cwd: Path, timeout: float) -> str:
    """
    Run a command to completion, fail with its output if it fails, and
    return its stdout.
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


def buildWheel(source: Path, scratchDir: Path, name: str) -> Path:
    """
    Build a wheel from a copy of a source tree, so that the build leaves
    nothing behind in the tree, and return it.
    """
    copy = scratchDir / f"source-{name}"
    shutil.copytree(source, copy, ignore=IGNORE)
    outdir = scratchDir / "wheels"
    if importlib.util.find_spec("build") is not None:
        argv = [sys.executable, "-m", "build", "--wheel", "--outdir", str(outdir)]
    else:
        argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(outdir)]
    run([*argv, str(copy)], scratchDir, 300)
    [wheel] = outdir.glob(f"{name.replace('-', '_')}-*.whl")
    return wheel


def recordOf(wheel: Path) -> list[str]:
    """
    The paths a wheel's RECORD lists.
    """
    with zipfile.ZipFile(wheel) as archive:
        [record] = [n for n in archive.namelist() if n.endswith(".dist-info/RECORD")]
        lines = archive.read(record).decode("utf-8").splitlines()
    return [line.split(",")[0] for line in lines]
