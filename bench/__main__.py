# -*- test-case-name: tests.test_bench,tests.integration.test_bench -*-
"""
The benchmark's command line: C{python -m bench --help}, run from the
repository root. C{docs/performance.md} explains every option and row.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from bench.launch import DEFAULT_CONNECTPROXY_COMMAND, Origin, raiseDescriptorLimit
from bench.measure import MODES, BenchError
from bench.others import OTHERS, OTHERS_VENV, installOthers
from bench.report import formatTable
from bench.run import Run, machineFacts, progress, startupMemory
from tests.integration._processes import REPO_ROOT

KINDS = ("bulk", "setup", "names", "latency", "memory")
ROUTES = ["direct", "connectproxy", *(other.name for other in OTHERS)]
DEFAULT_JSON = REPO_ROOT / "bench" / "last-run.json"


def _variant(value: str) -> tuple[str, str]:
    """
    Parse C{NAME=OPTIONS}.
    """
    name, equals, options = value.partition("=")
    if not equals or not name.strip() or name.strip() in [*ROUTES[2:], "direct"]:
        raise argparse.ArgumentTypeError(
            f"expected NAME=OPTIONS with a new name, got {value!r}"
        )
    return name.strip(), options


def _list(choices: list[str] | None = None) -> Any:
    """
    Make a parser of comma-separated lists, checked against C{choices}.
    """

    def parse(value: str) -> list[str]:
        items = [item.strip() for item in value.split(",") if item.strip()]
        bad = [item for item in items if choices is not None and item not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {choices}, got {value!r}"
            )
        return items

    return parse


def _positiveInts(value: str) -> list[int]:
    """
    Parse a comma-separated list of positive integers.
    """
    try:
        numbers = [int(item) for item in value.split(",")]
    except ValueError:
        numbers = []
    if not numbers or min(numbers) < 1:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,32, got {value!r}")
    return numbers


def makeParser() -> argparse.ArgumentParser:
    """
    The argument parser, defaults chosen for a run of about two minutes.
    """
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark connectproxy side by side with a direct "
        "connection and other proxies, all on 127.0.0.1.",
    )
    add = p.add_argument
    add(
        "--proxies",
        type=_list(ROUTES),
        default=ROUTES,
        metavar="LIST",
        help=f"routes to measure, where installed (default all: {','.join(ROUTES)})",
    )
    add(
        "--variant",
        type=_variant,
        action="append",
        default=[],
        metavar="NAME=OPTS",
        help="a connectproxy variant with these extra options, repeatable "
        "(default one variant: connectproxy='')",
    )
    add(
        "--source",
        type=_variant,
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="one more connectproxy variant, run from the source tree in DIR "
        "(an earlier commit's, say: git worktree add DIR COMMIT), repeatable",
    )
    add(
        "--connectproxy-command",
        default=DEFAULT_CONNECTPROXY_COMMAND,
        metavar="CMD",
        help="the command before the options; {python} is this interpreter "
        "(default %(default)r)",
    )
    add(
        "--install-others",
        action="store_true",
        help=f"first install proxy.py and pproxy into {OTHERS_VENV.name}",
    )
    add(
        "--baseline",
        default="squid",
        help="ratios are to this route (default squid, else direct)",
    )
    add(
        "--only",
        type=_list(list(KINDS)),
        default=list(KINDS),
        metavar="LIST",
        help=f"measure only these ({','.join(KINDS)}; default all)",
    )
    add("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    add(
        "--megabytes",
        type=int,
        default=64,
        help="MiB per direction and bulk sample (default 64)",
    )
    add(
        "--modes",
        type=_list(list(MODES)),
        default=list(MODES),
        metavar="LIST",
        help="bulk directions (default upload,download,both)",
    )
    add("--cap", type=float, default=15.0, help="seconds at most per bulk sample")
    add(
        "--concurrency",
        type=_positiveInts,
        default=[1, 32],
        metavar="LIST",
        help="tunnel-setup concurrencies (default 1,32)",
    )
    add(
        "--rate-seconds",
        type=float,
        default=1.0,
        help="seconds per setup-rate sample (default 1)",
    )
    add(
        "--rate-tunnels",
        type=int,
        default=20000,
        help="tunnels at most per setup-rate sample",
    )
    add(
        "--dns-ttl",
        type=int,
        default=300,
        help="TTL of the DNS records of host-name targets (default 300 s)",
    )
    add("--pings", type=int, default=1000, help="round trips per latency sample")
    add(
        "--ping-seconds",
        type=float,
        default=1.0,
        help="seconds at most per latency sample",
    )
    add(
        "--idle-tunnels",
        type=int,
        default=1000,
        help="idle tunnels held at once (0 to skip; default 1000)",
    )
    add(
        "--memory-rounds",
        type=int,
        default=1,
        help="rounds of the idle and slow-reader tests (default 1)",
    )
    add(
        "--slow-tunnels",
        type=int,
        default=4,
        help="slow readers at once (0 to skip; default 4)",
    )
    add("--slow-seconds", type=float, default=2.0, help="seconds they read")
    add(
        "--slow-rate",
        type=int,
        default=256 * 1024,
        help="bytes per second each reads (default 262144)",
    )
    add(
        "--slow-offered",
        type=int,
        default=64,
        help="MiB the origin offers each slow reader (default 64)",
    )
    add(
        "--json-file",
        type=Path,
        default=DEFAULT_JSON,
        help="where to write the JSON report (default bench/last-run.json)",
    )
    return p


def parseArgs(argv: list[str] | None) -> argparse.Namespace:
    """
    Parse and check the command line.
    """
    parser = makeParser()
    args = parser.parse_args(argv)
    if not args.variant:
        args.variant = [("connectproxy", "")]
    for name, directory in args.source:
        if not (Path(directory) / "connectproxy" / "__init__.py").is_file():
            parser.error(f"--source {name}={directory}: no connectproxy source there")
    names = [name for name, _ in args.variant + args.source]
    if len(set(names)) != len(names):
        parser.error("--variant and --source names must differ")
    for name in ("rounds", "megabytes", "rate_tunnels", "pings"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("idle_tunnels", "memory_rounds", "slow_tunnels", "slow_rate"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must not be negative")
    for name in ("cap", "rate_seconds", "ping_seconds", "slow_seconds"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.slow_tunnels and args.slow_rate < 1:
        parser.error("--slow-rate must be at least 1")
    return args


def buildReport(run: Run, argv: list[str], extra: dict[str, Any]) -> dict[str, Any]:
    """
    Collect everything into one JSON-compatible dict; L{Run.proxyFacts} must
    have been called first so that its checks are in C{run.errors}.
    """
    args = run.args
    machine = extra["machine"]
    names = [route.name for route in run.routes]
    baseline = args.baseline if args.baseline in names else None
    if baseline is None and "direct" in names:
        baseline = "direct"
    counts = [run.idleCount(route) for route in run.routes if not route.direct]
    idle = max(counts, default=0) if args.idle_tunnels else 0
    summary = (
        f"{args.rounds} rounds, {args.megabytes} MiB per bulk sample, setup "
        f"{args.rate_seconds:g} s per sample, {args.pings} pings, "
        f"{idle} idle tunnels, "
        f"{args.slow_tunnels} slow readers; {machine['cpus']} CPUs, load "
        f"{machine['loadAverageAtStart'][0]:.2f} at start, "
        f"{machine['loadAverage'][0]:.2f} at the end"
    )
    variants = {name for name, _ in args.variant + args.source} | {"direct"}
    problems: list[str] = []
    warnings: list[str] = list(run.notes)
    for name, errors in run.errors.items():
        target = problems if name in variants else warnings
        target += [f"{name}: {error}" for error in errors]
    config = {
        key: value for key, value in vars(args).items() if key not in ("json_file",)
    }
    config["summary"] = summary
    config["descriptorLimit"] = run.limit
    return {
        "command": [sys.executable, "-m", "bench", *argv],
        "config": config,
        "machine": extra["machine"],
        "baseline": baseline,
        "proxies": extra["proxies"],
        "rows": {key: row.toJSON(baseline) for key, row in run.rows.items()},
        "idleTunnels": run.idle,
        "slowReaders": run.slow,
        "problems": problems,
        "warnings": warnings,
        "ok": not problems,
    }


def _exitOnSignal(signum: int, frame: FrameType | None) -> None:
    """
    Turn C{SIGTERM} and C{SIGHUP} into L{SystemExit} so that every process
    started is stopped on the way out.
    """
    raise SystemExit(128 + signum)


def runAll(args: argparse.Namespace, argv: list[str]) -> int:
    """
    Start everything, measure, stop everything, report.

    @return: The exit status: 0 unless connectproxy, the direct route or the
        bench itself had a problem.
    """
    run: Run | None = None
    loadAtStart = list(os.getloadavg())
    raiseDescriptorLimit()  # Before the origin starts: it inherits it.
    origin = Origin(4)
    stopped: dict[str, int] = {}
    try:
        run = Run(args, origin)
        run.start(args.proxies)
        if not run.routes:
            raise BenchError("no route could be measured")
        atStart = startupMemory(run)
        run.measure()
    finally:
        if run is not None:
            stopped = run.stopAll()
            run.stopDns()
        origin.stop()
    machine = machineFacts()
    machine["loadAverageAtStart"] = loadAtStart
    proxies = run.proxyFacts(stopped)
    for name, kib in atStart.items():
        proxies[name]["pssAtStartKiB"] = kib
    report = buildReport(run, argv, {"machine": machine, "proxies": proxies})
    sys.stdout.write(formatTable(report, list(run.rows.values())) + "\n")
    args.json_file.write_text(json.dumps(report, indent=1) + "\n")
    progress(f"JSON report written to {args.json_file}")
    if report["problems"]:
        for name, proxy in run.launched.items():
            if name in {variant for variant, _ in args.variant + args.source}:
                progress(proxy.describe()[-6000:])
    return 1 if report["problems"] else 0


def main(argv: list[str] | None = None) -> int:
    """
    Run the benchmark.

    @return: The process exit status.
    """
    argv = sys.argv[1:] if argv is None else argv
    args = parseArgs(argv)
    signal.signal(signal.SIGTERM, _exitOnSignal)
    signal.signal(signal.SIGHUP, _exitOnSignal)
    try:
        if args.install_others:
            installOthers()
        return runAll(args, argv)
    except (BenchError, subprocess.CalledProcessError) as e:
        progress(f"benchmark failed: {e}")
        return 1
    except KeyboardInterrupt:
        progress("interrupted; every process started was stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
