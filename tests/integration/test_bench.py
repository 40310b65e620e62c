# -*- test-case-name: tests.integration.test_bench -*-
"""
A smoke run of the benchmark (C{python -m bench}) with tiny sizes against
connectproxy, a direct connection and, where installed, squid: it exits 0
and writes a JSON report with every row. CI does not run the benchmark
itself; docs/performance.md says how.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.launch import namespaceRefusal
from tests.integration._output import LineCollector
from tests.integration._processes import REPO_ROOT, ChildProcess, sourceEnvironment

pytestmark = pytest.mark.integration

ROWS = {
    "upload",
    "download",
    "both",
    "cpuPerGiB",
    "setupRateC1",
    "setupRateC4",
    "setupCpuC1",
    "setupCpuC4",
    "latencyP50",
    "latencyP99",
    "idleMemory",
    "idleHeld",
    "idleOpenRate",
    "slowReaderGrowth",
}

#: The rows of host-name targets, measured where the proxies' resolvers can
#: be pointed at the bench's own DNS server (root, unshare).
NAME_ROWS = {"namesRateC1", "namesRateC4", "namesCpuC1", "namesCpuC4", "dnsQueries"}

TINY = [
    "--rounds", "1", "--megabytes", "1", "--concurrency", "1,4",
    "--rate-seconds", "0.2", "--pings", "20", "--ping-seconds", "0.2",
    "--idle-tunnels", "20", "--slow-tunnels", "1", "--slow-seconds", "0.3",
    "--slow-offered", "4",
]  # fmt: skip


def squidInstalled() -> bool:
    """
    Whether squid is on this machine.
    """
    return bool(shutil.which("squid") or shutil.which("squid", path="/usr/sbin"))


def test_benchSmokeRun(scratchDir: Path, processes: list[ChildProcess[Any]]) -> None:
    """
    A tiny run exits 0 within 60 s and writes a JSON report in which every
    row has a figure for every route, checked byte counts and no problem.
    """
    routes = ["direct", "connectproxy"] + (["squid"] if squidInstalled() else [])
    report = scratchDir / "report.json"
    argv = [sys.executable, "-m", "bench", "--proxies", ",".join(routes), *TINY]
    argv += ["--json-file", str(report)]
    bench = ChildProcess(argv, LineCollector, sourceEnvironment(), REPO_ROOT)
    processes.append(bench)
    status = bench.process.wait(60)
    assert status == 0, bench.describe()
    result = json.loads(report.read_text())
    assert {"command", "config", "machine", "baseline", "proxies", "rows"} <= set(
        result
    )
    assert result["ok"] is True and result["problems"] == [], result["problems"]
    assert list(result["proxies"]) == routes
    assert result["baseline"] == ("squid" if "squid" in routes else "direct")
    names = namespaceRefusal() is None
    assert set(result["rows"]) == ROWS | NAME_ROWS
    proxies = routes[1:]
    for key, row in result["rows"].items():
        measured = set(row["results"])
        if key in NAME_ROWS:
            # connectproxy and squid resolve with the bench's DNS server.
            expected = proxies if names else []
        elif key.startswith(("cpu", "idle", "slow", "setupCpu")):
            expected = proxies
        else:
            expected = routes
        assert measured == set(expected), (key, measured)
        for figures in row["results"].values():
            assert figures["min"] <= figures["median"] <= figures["max"]
    connectproxy = result["proxies"]["connectproxy"]
    assert connectproxy["events"]["tunnel_close"] == connectproxy["tunnelsOpened"]
    assert any("matches" in check for check in connectproxy["checks"])
    idle = result["idleTunnels"]["connectproxy"][0]
    assert (idle["opened"], idle["descriptorsLeft"], idle["error"]) == (20, 0, None)
    assert (idle["clients"], idle["checked"], idle["descriptorsPerTunnel"]) == (1, 1, 2)
    assert "bulk upload (MB/s, higher is better)" in bench.output.text()
