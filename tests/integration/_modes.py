# -*- test-case-name: tests.integration.test_clients -*-
"""
The process modes every integration test that starts a proxy from the
source tree runs in: one process, and C{--workers 2} (a supervisor that
binds the listeners and two worker processes that serve them).

A test that builds the proxy's command line itself asks for the
C{workerArgs} fixture and passes it to L{withWorkers}; the C{proxy} and
C{strictProxy} fixtures do so for every test that uses them.  A test that by
nature observes exactly one process is marked with L{onlyOneProcess}, which
says why: it then runs in one process only (it is not generated for the
workers mode, rather than generated and skipped).
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

PROCESS_MODES: dict[str, tuple[str, ...]] = {
    "one": (),
    "workers2": ("--workers", "2"),
}
"""
The test id of each process mode, and the options that select it.
"""

ONE_PROCESS = "onlyOneProcess"
"""
The name of the marker L{onlyOneProcess} sets.
"""


def onlyOneProcess(reason: str) -> pytest.MarkDecorator:
    """
    Run a test in one process only.

    @param reason: Why the test does not apply to C{--workers} (what it
        measures of exactly one process), naming where the per-worker
        behaviour is documented or tested.
    @return: The marker.
    @raise ValueError: Without a reason.
    """
    if not reason.strip():
        raise ValueError("say why the test runs in one process only")
    return pytest.mark.onlyOneProcess(reason)


def withWorkers(workerArgs: Iterable[str], extraArgs: Iterable[str]) -> list[str]:
    """
    Add the options of the test's process mode to a proxy's options, unless
    the test chose C{--workers} itself.

    @param workerArgs: The options of the mode (the C{workerArgs} fixture).
    @param extraArgs: The test's own options.
    @return: The options to start the proxy with.
    """
    extra = list(extraArgs)
    if any(arg == "--workers" or arg.startswith("--workers=") for arg in extra):
        return extra
    return [*workerArgs, *extra]
