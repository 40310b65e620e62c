# -*- test-case-name: tests.test_bench,tests.integration.test_bench -*-
"""
Readers of C{/proc} (Linux) for the CPU time, memory and descriptors of a
process and all its descendants, so that a proxy with worker processes or
helpers is measured whole.
"""

from __future__ import annotations

import os


def processTree(pid: int) -> list[int]:
    """
    List C{pid} and all its descendants (worker processes, helpers).

    @return: The process IDs, C{pid} first; empty if C{pid} is gone.
    """
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    if not os.path.exists(f"/proc/{pid}"):
        return []
    tree, queue = [], [pid]
    while queue:
        current = queue.pop()
        tree.append(current)
        queue.extend(children.get(current, []))
    return tree


def cpuSeconds(pids: list[int]) -> float:
    """
    User plus system CPU seconds of C{pids}, from C{/proc/PID/stat}.
    """
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def pssKiB(pids: list[int]) -> int:
    """
    The proportional set size of C{pids} summed, from
    C{/proc/PID/smaps_rollup}, in KiB.
    """
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as rollup:
                for line in rollup:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def descriptorCount(pids: list[int]) -> int:
    """
    How many file descriptors C{pids} hold open together.
    """
    total = 0
    for pid in pids:
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
    return total
