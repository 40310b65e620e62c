# -*- test-case-name: tests.test_bench,tests.integration.test_bench -*-
"""
One client process of the idle-tunnel scale test: it opens its share of
the tunnels and holds them, so that no process of the benchmark needs more
descriptors than the per-process limit allows.

C{bench.memory} starts it as C{python -m bench.holders JOB}, where C{JOB} is
a JSON object: C{proxyPort}, C{count}, C{sources} (the loopback addresses
it connects from, in turn), C{ports} (the hold origins' ports, in turn),
C{sample} (how many of its tunnels it checks) and C{timeout} (seconds each
socket operation may take). It writes one JSON line per step to stdout and
reads one command per line on stdin:

  - at start it writes C{{"ready": N}};
  - C{open}: it opens its tunnels one after the other, then writes
    C{{"opened": N, "seconds": S, "error": null or "why"}};
  - C{check}: it sends a message through C{sample} of its tunnels, evenly
    spread, reads each echo and writes
    C{{"checked": N, "error": null or "why"}};
  - C{close}, or the end of its input: it closes every tunnel, writes
    C{{"closed": N}} and exits.

It stops early, and closes its tunnels, at the first tunnel that fails.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from typing import Any

from bench.measure import BenchError, Route, recvExactly
from bench.origin import ECHO_SIZE

PING = b"idle-tunnel-check".ljust(ECHO_SIZE, b".")


def spread(count: int, sample: int) -> list[int]:
    """
    Choose C{sample} indexes out of C{count}, evenly spread, the first and
    the last included when there are at least two.

    @return: The indexes in increasing order, none repeated.
    """
    sample = min(max(0, sample), count)
    if sample <= 0:
        return []
    if sample == 1:
        return [0]
    return sorted({round(i * (count - 1) / (sample - 1)) for i in range(sample)})


def checkTunnels(sockets: list[socket.socket], sample: int) -> int:
    """
    Send L{PING} through C{sample} of C{sockets}, evenly spread, and read
    each echo.

    @return: How many were checked.
    @raise BenchError: If an echo does not come back intact.
    @raise OSError: If a tunnel is gone.
    """
    chosen = spread(len(sockets), sample)
    for index in chosen:
        sockets[index].sendall(PING)
        if recvExactly(sockets[index], ECHO_SIZE) != PING:
            raise BenchError("an idle tunnel echoed the wrong bytes")
    return len(chosen)


def _say(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    """
    Run one share of the idle tunnels as described in the module
    docstring.

    @return: The process exit status: 0, or 2 for a bad job.
    """
    args = sys.argv[1:] if argv is None else argv
    try:
        job = json.loads(args[0])
        route = Route("holder", int(job["proxyPort"]))
        count, sample = int(job["count"]), int(job["sample"])
        sources, ports = list(job["sources"]), [int(p) for p in job["ports"]]
        timeout = float(job["timeout"])
    except (IndexError, ValueError, KeyError, TypeError) as e:
        sys.stderr.write(f"usage: python -m bench.holders JOB (JSON): {e}\n")
        return 2
    sockets: list[socket.socket] = []
    error = None
    _say({"ready": count})
    if sys.stdin.readline().strip() != "open":
        _say({"closed": 0})
        return 0
    started = time.perf_counter()
    try:
        try:
            for index in range(count):
                source = sources[index % len(sources)]
                port = ports[index % len(ports)]
                sockets.append(route.open(port, source, timeout))
        except (OSError, BenchError) as e:
            error = f"opened {len(sockets)} of {count}: {type(e).__name__}: {e}"
        seconds = time.perf_counter() - started
        _say({"opened": len(sockets), "seconds": seconds, "error": error})
        for line in sys.stdin:
            if line.strip() != "check":
                break
            checked, error = 0, None
            try:
                checked = checkTunnels(sockets, sample)
            except (OSError, BenchError) as e:
                error = f"{type(e).__name__}: {e}"
            _say({"checked": checked, "error": error})
    finally:
        for sock in sockets:
            sock.close()
    _say({"closed": len(sockets)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
