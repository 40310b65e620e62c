# -*- test-case-name: tests.test_bench -*-
"""
Profile connectproxy's tunnel setup and echo paths: run it under
C{cProfile} with the benchmark's own command line, drive it with the
benchmark's setup-rate clients (c=1 and c=32) and one echo-latency loop,
stop it by PID, and print the top of the profile sorted by C{tottime} and
by C{cumtime}.

Run it from the repository root::

    .venv/bin/python -m bench.profile --seconds 3 --output bench/profiles/NAME.txt

The profile covers the whole process, start-up included (a few hundred
milliseconds, far less than the load).
"""

from __future__ import annotations

import argparse
import io
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

from bench.launch import ConnectproxyVariant, Origin
from bench.measure import Route, percentile, pingRun, rateRun
from tests.integration._processes import REPO_ROOT


def profileText(path: Path, lines: int, header: str) -> str:
    """
    The top C{lines} functions of the profile in C{path}, by C{tottime}
    and by C{cumtime}, with directory names stripped.
    """
    out = io.StringIO()
    out.write(header)
    for key, restriction in (
        ("tottime", ()),
        ("cumtime", ()),
        ("cumtime", ("connectproxy",)),
    ):
        stats = pstats.Stats(str(path), stream=out)
        if restriction:
            out.write("\n   Only connectproxy's own functions:\n")
        else:
            stats.strip_dirs()
        stats.sort_stats(key).print_stats(*restriction, lines)
    # Drop pstats' own header lines naming the temporary file.
    text = "\n".join(
        line.replace(str(REPO_ROOT) + os.sep, "")
        for line in out.getvalue().splitlines()
        if str(path) not in line
    )
    return text.rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """
    Profile one run.

    @return: The process exit status.
    """
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="per setup-rate sample"
    )
    parser.add_argument(
        "--echo-seconds", type=float, default=0.0, help="echo loop (0: none)"
    )
    parser.add_argument("--lines", type=int, default=30, help="functions shown")
    parser.add_argument("--options", default="", help="extra connectproxy options")
    parser.add_argument("--output", type=Path, help="also write the text here")
    parser.add_argument("--raw", type=Path, help="also keep the pstats data here")
    args = parser.parse_args(argv)
    origin = Origin(1)
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        data = Path(tmp) / "connectproxy.prof"
        prefix = (
            "{python} -m bench.profiled "
            + str(data)
            + " --log-format json --log-file - connectproxy"
        )
        proxy = ConnectproxyVariant("connectproxy", prefix, args.options)
        figures = []
        try:
            route = Route("connectproxy", proxy.port)
            for concurrency in (1, 32) if args.seconds > 0 else ():
                sample = rateRun(
                    route, origin.echoPort, 10**6, args.seconds, concurrency
                )
                figures.append(
                    f"setup c={concurrency}: {sample.count} tunnels, "
                    f"{sample.count / sample.seconds:.0f}/s under the profiler"
                )
            if args.echo_seconds > 0:
                times = pingRun(route, origin.holdPorts[0], 10**6, args.echo_seconds)
                figures.append(
                    f"echo: {len(times)} pings, p50 "
                    f"{percentile(times, 0.5):.0f} us under the profiler"
                )
            proxy.tally.waitForCount("tunnel_close", route.opened, 10.0)
        finally:
            proxy.stop()
            origin.stop()
        deadline = time.monotonic() + 10
        while not data.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        header = (
            f"python -m bench.profile {' '.join(argv or sys.argv[1:])}\n"
            + "".join(line + "\n" for line in figures)
            + "\n"
        )
        text = profileText(data, args.lines, header)
        if args.raw is not None:
            args.raw.write_bytes(data.read_bytes())
    sys.stdout.write(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
