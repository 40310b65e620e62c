# -*- test-case-name: tests.test_bench,tests.integration.test_bench -*-
"""
The memory measurements: many idle tunnels held open at once (memory per
tunnel, and whether the proxy can hold that many), and a few tunnels whose
client reads slowly while the origin pushes (memory growth per tunnel, which
flow control keeps bounded).

Memory is the proportional set size (PSS) of the proxy's whole process tree
from C{/proc/PID/smaps_rollup}, so that worker processes and shared pages are
counted once.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.measure import (
    BenchError,
    Route,
    recvExactly,
)
from bench.origin import BULK_HEADER, ECHO_SIZE
from bench.proc import descriptorCount, pssKiB

PidsOf = Callable[[], list[int]]
"""
Lists the process tree of the proxy under test, fresh at each call.
"""

_CHECKED = 8
_PING = b"idle-tunnel-check".ljust(ECHO_SIZE, b".")
_PER_SOURCE = 16000


def sourceAddresses(count: int) -> list[str]:
    """
    Choose the loopback client addresses for C{count} tunnels: at least two,
    and enough that no address needs more than 16,000 ports.

    @return: Addresses C{127.0.0.2} and up.
    """
    return [f"127.0.0.{2 + i}" for i in range(max(2, math.ceil(count / _PER_SOURCE)))]


@dataclass(frozen=True)
class IdleResult:
    """
    What L{idleTunnels} found.

    @ivar requested: Tunnels asked for.
    @ivar opened: Tunnels the proxy accepted with a 200.
    @ivar openSeconds: Wall time to open them one after the other.
    @ivar kibPerTunnel: PSS growth divided by C{opened}, in KiB.
    @ivar descriptorsPerTunnel: Growth of the proxy's open descriptors divided
        by C{opened} (2 for a proxy that holds just the two sockets).
    @ivar descriptorsLeft: Descriptors still open above the starting count
        after all tunnels closed and the wait ran out (0 when none leaked).
    @ivar error: Why opening or checking stopped early, if it did.
    """

    requested: int
    opened: int
    openSeconds: float
    kibPerTunnel: float | None
    descriptorsPerTunnel: float | None
    descriptorsLeft: int
    error: str | None


def _checkSome(sockets: list[socket.socket]) -> int:
    """
    Send a message through a few of the tunnels, evenly spread, and read
    the echo.

    @return: How many were checked.
    @raise BenchError: If an echo does not come back intact.
    @raise OSError: If a tunnel is gone.
    """
    step = max(1, len(sockets) // _CHECKED)
    chosen = sockets[::step][:_CHECKED]
    for sock in chosen:
        sock.sendall(_PING)
        if recvExactly(sock, ECHO_SIZE) != _PING:
            raise BenchError("an idle tunnel echoed the wrong bytes")
    return len(chosen)


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


def idleTunnels(
    route: Route, holdPorts: list[int], count: int, pids: PidsOf
) -> IdleResult:
    """
    Open C{count} tunnels to the hold origins from several loopback source
    addresses, measure the proxy's memory, check a few tunnels still work,
    close them all and check the proxy lets go of their descriptors.

    @param holdPorts: The hold origin's ports, used in turn.
    @param count: Tunnels to open.
    @param pids: Lists the proxy's process tree.
    """
    tree = pids()
    pssBefore, fdBefore = pssKiB(tree), descriptorCount(tree)
    sources = sourceAddresses(count)
    sockets: list[socket.socket] = []
    error = None
    started = time.perf_counter()
    try:
        for index in range(count):
            port = holdPorts[index % len(holdPorts)]
            sockets.append(route.open(port, sources[index % len(sources)], 30.0))
    except (OSError, BenchError) as e:
        error = f"opened {len(sockets)} of {count}: {type(e).__name__}: {e}"
    openSeconds = time.perf_counter() - started
    try:
        opened = len(sockets)
        tree = pids()
        growth = pssKiB(tree) - pssBefore
        fdGrowth = descriptorCount(tree) - fdBefore
        checked = 0
        if error is None and sockets:
            try:
                checked = _checkSome(sockets)
            except (OSError, BenchError) as e:
                error = f"check after opening {opened}: {type(e).__name__}: {e}"
        route.addMoved(ECHO_SIZE * checked, ECHO_SIZE * checked)
    finally:
        for sock in sockets:
            sock.close()
    left = _waitForDescriptors(pids, fdBefore + 2, 10.0 + count / 2000)
    return IdleResult(
        count,
        opened,
        openSeconds,
        growth / opened if opened else None,
        fdGrowth / opened if opened else None,
        left,
        error,
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
