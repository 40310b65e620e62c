# -*- test-case-name: tests.test_bench,tests.integration.test_bench -*-
"""
The memory measurements: many idle tunnels held open at once (memory per
tunnel, and whether the proxy can hold that many), and a few tunnels whose
client reads slowly while the origin pushes (memory growth per tunnel, which
flow control keeps bounded).

The idle tunnels are opened by client processes (L{bench.holders}) of at
most L{PER_PROCESS} tunnels each, to hold origins spread over processes, so
that tens of thousands of tunnels fit under a per-process descriptor limit.

Memory is the proportional set size (PSS) of the proxy's whole process tree
from C{/proc/PID/smaps_rollup}, so that worker processes and shared pages are
counted once.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.launch import HolderProcess
from bench.measure import (
    BenchError,
    Route,
)
from bench.origin import BULK_HEADER, ECHO_SIZE
from bench.proc import descriptorCount, pssKiB

PidsOf = Callable[[], list[int]]
"""
Lists the process tree of the proxy under test, fresh at each call.
"""

PER_SOURCE = 16000
"""
Most tunnels from one loopback client address (of the 28,000 or so
ephemeral ports the kernel has for each address pair).
"""

PER_PROCESS = 10000
"""
Most sockets one client or origin process of the scale test holds (one per
tunnel): under the per-process descriptor limit with room to spare.
"""

SAMPLE_FRACTION = 0.01
"""
The share of the idle tunnels checked with an echo once all are open.
"""


def splitEvenly(total: int, most: int) -> list[int]:
    """
    Split C{total} into as few parts as hold at most C{most} each, their
    sizes differing by one at most.

    @param most: The largest part allowed, at least 1.
    @return: The sizes, largest first; empty when C{total} is 0 or less.
    @raise ValueError: If C{most} is less than 1.
    """
    if most < 1:
        raise ValueError(f"parts must hold at least 1, not {most}")
    if total <= 0:
        return []
    parts = math.ceil(total / most)
    base, extra = divmod(total, parts)
    return [base + 1 if index < extra else base for index in range(parts)]


def sourceAddresses(count: int) -> list[str]:
    """
    Choose the loopback client addresses for C{count} tunnels: at least two,
    and enough that no address needs more than L{PER_SOURCE} ports.

    @return: Addresses C{127.0.0.2} and up.
    """
    return [f"127.0.0.{2 + i}" for i in range(max(2, math.ceil(count / PER_SOURCE)))]


@dataclass(frozen=True)
class HolderShare:
    """
    The idle tunnels one client process (C{bench.holders}) opens and holds.

    @ivar count: How many.
    @ivar sources: The loopback addresses it connects from, in turn; no
        other process uses them.
    @ivar ports: The hold origins' ports it connects to, in turn.
    @ivar sample: How many of them it checks with an echo.
    """

    count: int
    sources: tuple[str, ...]
    ports: tuple[int, ...]
    sample: int


def planShares(
    count: int,
    holdPorts: Sequence[int],
    perProcess: int = PER_PROCESS,
    perSource: int = PER_SOURCE,
    fraction: float = SAMPLE_FRACTION,
) -> list[HolderShare]:
    """
    Split C{count} idle tunnels over client processes of at most
    C{perProcess} tunnels each, with loopback source addresses of their own
    (127.0.0.2 and up, at most C{perSource} tunnels each and at least two in
    all) and every hold port in turn, each starting one port further so that
    the origins' processes get the same share.

    @param fraction: The share of each process's tunnels it checks with an
        echo, at least one.
    @return: One share per client process; empty when C{count} is 0.
    @raise ValueError: If there is no hold port or a bound is below 1.
    """
    if not holdPorts:
        raise ValueError("no hold port to connect to")
    if perSource < 1:
        raise ValueError(f"a source address must take at least 1, not {perSource}")
    sizes = splitEvenly(count, perProcess)
    shares, nextAddress = [], 2
    for index, size in enumerate(sizes):
        addresses = max(1, math.ceil(size / perSource))
        if len(sizes) == 1:
            addresses = max(2, addresses)
        if nextAddress + addresses > 255:
            raise ValueError(f"{count} tunnels need more than 127.0.0.2-254")
        sources = tuple(f"127.0.0.{nextAddress + a}" for a in range(addresses))
        nextAddress += addresses
        shift = index % len(holdPorts)
        ports = tuple(holdPorts[shift:]) + tuple(holdPorts[:shift])
        sample = min(size, max(1, math.ceil(size * fraction)))
        shares.append(HolderShare(size, sources, ports, sample))
    return shares


@dataclass(frozen=True)
class IdleResult:
    """
    What L{idleTunnels} found.

    @ivar requested: Tunnels asked for.
    @ivar opened: Tunnels the proxy accepted with a 200.
    @ivar openSeconds: Wall time to open them, the client processes opening
        theirs one after the other, all at once.
    @ivar kibPerTunnel: PSS growth divided by C{opened}, in KiB.
    @ivar descriptorsPerTunnel: Growth of the proxy's open descriptors divided
        by C{opened} (2 for a proxy that holds just the two sockets).
    @ivar descriptorsLeft: Descriptors still open above the starting count
        after all tunnels closed and the wait ran out (0 when none leaked).
    @ivar error: Why opening or checking stopped early, if it did.
    @ivar clients: Client processes that held the tunnels.
    @ivar checked: Tunnels that echoed a message once all were open.
    @ivar pssBeforeKiB: The proxy's PSS before, in KiB.
    @ivar pssHeldKiB: The proxy's PSS with every tunnel open, in KiB.
    @ivar byProcess: For each process of the proxy (its workers, say): its
        PID and the growth of its descriptors and of its PSS (KiB) with
        every tunnel open, which shows how the tunnels spread.
    """

    requested: int
    opened: int
    openSeconds: float
    kibPerTunnel: float | None
    descriptorsPerTunnel: float | None
    descriptorsLeft: int
    error: str | None
    clients: int = 1
    checked: int = 0
    pssBeforeKiB: int = 0
    pssHeldKiB: int = 0
    byProcess: tuple[tuple[int, int, int], ...] = ()


def _waitForDescriptors(pids: PidsOf, ceiling: int, timeout: float) -> int:
    """
    Wait until the proxy holds at most C{ceiling} descriptors.

    @return: How many it holds above C{ceiling} at the end (0 or more).
    """
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        excess = descriptorCount(pids()) - ceiling
        if excess <= 0 or time.monotonic() >= deadline:
            return max(0, excess)
        pause.wait(0.05)


def _openSeconds(share: HolderShare) -> float:
    """
    How long a client process may take to open its share: 60 s, plus a
    rate of 20 tunnels a second at the least.
    """
    return 60.0 + share.count / 20


def idleTunnels(
    route: Route,
    holdPorts: list[int],
    count: int,
    pids: PidsOf,
    perProcess: int = PER_PROCESS,
) -> IdleResult:
    """
    Open C{count} tunnels to the hold origins from client processes of at
    most C{perProcess} tunnels each (L{planShares}), all at once, measure
    the proxy's memory and descriptors, check about 1% of the tunnels still
    echo, close them all and check the proxy lets go of their descriptors.

    @param holdPorts: The hold origins' ports, used in turn.
    @param count: Tunnels to open.
    @param pids: Lists the proxy's process tree.
    @raise BenchError: If a client process does not start or answer in
        time.
    """
    assert route.proxyPort is not None
    shares = planShares(count, holdPorts, perProcess)
    holders: list[HolderProcess] = []
    errors: list[str] = []
    opened = checked = growth = fdGrowth = 0
    byProcess: tuple[tuple[int, int, int], ...] = ()
    fdBefore = descriptorCount(pids())
    try:
        # Every client process runs before the first measurement: the
        # proxy shares the interpreter's pages with them, and its PSS (its
        # share of those pages) shrinks as more processes map them.
        for share in shares:
            holders.append(HolderProcess(route.proxyPort, share))
        for holder in holders:
            holder.waitFor("ready", 60.0)
        tree = pids()
        pssBefore = pssHeld = pssKiB(tree)
        fdBefore = descriptorCount(tree)
        before = {pid: (descriptorCount([pid]), pssKiB([pid])) for pid in tree}
        started = time.perf_counter()
        for holder in holders:
            holder.send("open")
        for holder, share in zip(holders, shares, strict=True):
            record = holder.waitFor("opened", _openSeconds(share))
            opened += int(record["opened"])
            if record["error"] is not None:
                errors.append(str(record["error"]))
        openSeconds = time.perf_counter() - started
        route.addOpened(opened)
        tree = pids()
        pssHeld = pssKiB(tree)
        growth, fdGrowth = pssHeld - pssBefore, descriptorCount(tree) - fdBefore
        byProcess = tuple(
            (pid, descriptorCount([pid]) - fds, pssKiB([pid]) - pss)
            for pid, (fds, pss) in before.items()
        )
        if not errors:
            for holder in holders:
                holder.send("check")
            for holder in holders:
                record = holder.waitFor("checked", 60.0)
                checked += int(record["checked"])
                if record["error"] is not None:
                    errors.append(f"check after opening {opened}: {record['error']}")
        route.addMoved(ECHO_SIZE * checked, ECHO_SIZE * checked)
    finally:
        for holder in holders:
            holder.close()
    left = _waitForDescriptors(pids, fdBefore + 2, 10.0 + count / 2000)
    error = None
    if errors:
        error = f"opened {opened} of {count}; " + "; ".join(errors[:3])
    return IdleResult(
        count,
        opened,
        openSeconds,
        growth / opened if opened else None,
        fdGrowth / opened if opened else None,
        left,
        error,
        len(shares),
        checked,
        pssBefore,
        pssHeld,
        byProcess,
    )


@dataclass(frozen=True)
class SlowResult:
    """
    What L{slowReaders} found.

    @ivar tunnels: Tunnels that read slowly at once.
    @ivar offered: Bytes the origin had to send on each.
    @ivar received: Bytes the clients read, all tunnels together.
    @ivar kibPerTunnel: PSS growth from before the tunnels opened to the end,
        divided by C{tunnels}, in KiB.
    @ivar lateKibPerTunnel: The part of that growth in the second half of
        the reading time: near 0 when memory stopped growing.
    """

    tunnels: int
    offered: int
    received: int
    kibPerTunnel: float
    lateKibPerTunnel: float


def _readSlowly(
    sockets: list[socket.socket], seconds: float, rate: int, onHalf: Callable[[], None]
) -> int:
    """
    Read from every socket at about C{rate} bytes per second each, in ticks
    of 50 ms, for C{seconds}.

    @param onHalf: Called once, half way.
    @return: Bytes read, all sockets together.
    @raise BenchError: If a tunnel closes before the time is up.
    """
    tick = 0.05
    perTick = max(1, int(rate * tick))
    pause = threading.Event()
    received = 0
    started = time.monotonic()
    halfDone = False
    while (elapsed := time.monotonic() - started) < seconds:
        if not halfDone and elapsed >= seconds / 2:
            onHalf()
            halfDone = True
        for sock in sockets:
            try:
                data = sock.recv(perTick, socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            if not data:
                raise BenchError("a slow reader's tunnel closed early")
            received += len(data)
        pause.wait(tick)
    if not halfDone:
        onHalf()
    return received


def slowReaders(
    route: Route,
    bulkPort: int,
    tunnels: int,
    seconds: float,
    rate: int,
    offered: int,
    pids: PidsOf,
) -> SlowResult:
    """
    Open C{tunnels} tunnels to the bulk origin, each asking for C{offered}
    bytes, and read them at C{rate} bytes per second each for C{seconds}
    while measuring the proxy's memory.

    @raise BenchError: If a tunnel fails.
    @raise OSError: If a connection fails.
    """
    pssBefore = pssKiB(pids())
    sockets: list[socket.socket] = []
    middle = [pssBefore]
    try:
        for _ in range(tunnels):
            sock = route.open(bulkPort, receiveBuffer=65536)
            sockets.append(sock)
            sock.sendall(BULK_HEADER.pack(0, offered))

        def sampleHalf() -> None:
            middle[0] = pssKiB(pids())

        received = _readSlowly(sockets, seconds, rate, sampleHalf)
        pssAfter = pssKiB(pids())
    finally:
        for sock in sockets:
            sock.close()
        route.addMoved(0, None)
    return SlowResult(
        tunnels,
        offered,
        received,
        (pssAfter - pssBefore) / tunnels,
        (pssAfter - middle[0]) / tunnels,
    )
