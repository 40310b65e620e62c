# -*- test-case-name: tests.test_bench -*-
"""
What connectproxy's own work costs per tunnel, without sockets: the whole
setup path (accept, parse, admission, connect through the default
L{DirectConnector}, 200, relay, one echo each way, close, the access-log
event through a JSON log observer) on a L{MemoryReactorClock}, timed in
CPU seconds of this process.

The benchmark's setup rows measure the proxy with real sockets, next to
other proxies; on a machine shared with other work their figures move by
10-20% from one run to the next.  This figure leaves out the reactor's
socket work (the same for every version of connectproxy) and takes the
fastest of several repetitions, so a change of a few per cent in
connectproxy's own path shows.  Run it from the repository root::

    .venv/bin/python -m bench.pathcost [--tunnels 5000] [--repeat 7]

It prints microseconds of CPU per tunnel, the fastest repetition and the
median, and how many Python function calls a tunnel takes (counted by
C{cProfile}: the same from one run to the next, however busy the machine).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import statistics
import sys
import time

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    jsonFileLogObserver,
)
from twisted.python.failure import Failure

from connectproxy import (
    AccessLogObserver,
    ConnectProxyFactory,
    DirectConnector,
    Gatekeeper,
    ProxySettings,
)
from connectproxy._loglevel import LogLevelService
from connectproxy._networks import NetworkRules
from connectproxy._rules import AccessRules, ClientRules, HostRules, PortRules
from connectproxy.testing import HalfCloseableStringTransport

_HEAD = b"CONNECT 127.0.0.1:4444 HTTP/1.1\r\nHost: 127.0.0.1:4444\r\n\r\n"
_MESSAGE = b"connectproxy-bench-ping".ljust(32, b".")


def _logToNowhere() -> None:
    """
    Log as C{twist --log-format json} with C{--log-level info} does, into
    C{/dev/null}: Twisted's level filter in front of its JSON file
    observer, and the proxy's own in front of both (L{LogLevelService}).
    """
    sink = open(os.devnull, "w")
    observer = FilteringLogObserver(
        jsonFileLogObserver(sink), [LogLevelFilterPredicate(LogLevel.info)]
    )
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    levels = LogLevelService("info", None)
    levels.running = True
    levels.install()


def _factory(clock: MemoryReactorClock) -> ConnectProxyFactory:
    """
    A proxy as the benchmark runs it: loopback targets on any port.
    """
    networks = NetworkRules.fromStrings(allow=["127.0.0.0/8", "::1/128"])
    rules = AccessRules(
        PortRules.fromStrings(["1-65535"]),
        networks,
        HostRules.fromStrings(),
        ClientRules.fromStrings(),
    )
    connector = DirectConnector(clock, 30.0, networks)
    return ConnectProxyFactory(
        clock, ProxySettings(), connector, [AccessLogObserver()], Gatekeeper(rules)
    )


def tunnels(count: int) -> float:
    """
    Set up, use and close C{count} tunnels.

    @return: CPU seconds per tunnel.
    """
    clock = MemoryReactorClock()
    factory = _factory(clock)
    done = Failure(ConnectionDone())
    gc.collect()
    started = time.process_time()
    for index in range(count):
        peer = IPv4Address("TCP", "127.0.0.1", 20000 + index % 40000)
        client = factory.buildProtocol(peer)
        assert client is not None
        clientTransport = HalfCloseableStringTransport(peerAddress=peer)
        client.makeConnection(clientTransport)
        client.dataReceived(_HEAD)
        host, port, upstreamFactory, _, _ = clock.tcpClients.pop()
        address = IPv4Address("TCP", host, port)
        upstream = upstreamFactory.buildProtocol(address)
        assert upstream is not None
        upstream.makeConnection(HalfCloseableStringTransport(peerAddress=address))
        client.dataReceived(_MESSAGE)
        upstream.dataReceived(_MESSAGE)
        upstream.connectionLost(done)
        client.connectionLost(done)
        if index % 256 == 0:
            clock.advance(0.001)
    elapsed = time.process_time() - started
    assert not factory.connections, "a tunnel did not close"
    return elapsed / count


def callsPerTunnel(count: int) -> float:
    """
    How many Python function calls (C functions included) one tunnel
    takes, counted by C{cProfile} over C{count} tunnels.
    """
    profiler = cProfile.Profile()
    profiler.runcall(tunnels, count)
    stats = pstats.Stats(profiler)
    return float(stats.total_calls) / count  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    """
    Measure and print.

    @return: The process exit status.
    """
    parser = argparse.ArgumentParser(prog="python -m bench.pathcost")
    parser.add_argument("--tunnels", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    _logToNowhere()
    tunnels(500)  # Warm up.
    samples = [tunnels(args.tunnels) * 1e6 for _ in range(args.repeat)]
    sys.stdout.write(
        f"connectproxy's own work per tunnel: {min(samples):.1f} us CPU "
        f"(fastest of {args.repeat}; median {statistics.median(samples):.1f}); "
        f"{callsPerTunnel(args.tunnels):.0f} function calls\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
