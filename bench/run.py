# -*- test-case-name: tests.test_bench,tests.integration.test_bench -*-
"""
One benchmark run: start the origin and the proxies, take every sample with
the routes interleaved (the order rotates every round, so that drift in the
machine's load hits every proxy alike), check the proxies' own counts,
stop everything and build the report.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from bench.launch import (
    ConnectproxyVariant,
    DnsServer,
    Launched,
    Origin,
    namespaceRefusal,
    raiseDescriptorLimit,
)
from bench.measure import (
    GIB,
    BenchError,
    Route,
    bulkOnce,
    exchangeOnce,
    percentile,
    pingRun,
    rateRun,
)
from bench.memory import PER_PROCESS, idleTunnels, slowReaders, splitEvenly
from bench.others import OTHERS
from bench.proc import cpuSeconds, pssKiB
from bench.report import Row

_MAX_ERRORS = 3


def progress(message: str) -> None:
    """
    Write one progress line to stderr.
    """
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def makeRows(args: argparse.Namespace) -> dict[str, Row]:
    """
    The rows this run measures, in the order of the report.
    """
    only = args.only
    rows = []
    if "bulk" in only:
        rows += [Row(mode, f"bulk {mode}", "MB/s", True) for mode in args.modes]
        rows.append(Row("cpuPerGiB", "proxy CPU per GiB moved", "CPU s/GiB", False))
    if "setup" in only:
        rows += [
            Row(f"setupRateC{c}", f"tunnel setup rate, c={c}", "tunnels/s", True)
            for c in args.concurrency
        ]
        rows += [
            Row(
                f"setupCpuC{c}",
                f"proxy CPU per tunnel set up, c={c}",
                "CPU us",
                False,
            )
            for c in args.concurrency
        ]
    if "names" in only:
        for c in args.concurrency:
            rows += [
                Row(
                    f"namesRateC{c}",
                    f"tunnel setup rate, host-name target, c={c}",
                    "tunnels/s",
                    True,
                ),
                Row(
                    f"namesCpuC{c}",
                    f"proxy CPU per tunnel set up, host-name target, c={c}",
                    "CPU us",
                    False,
                ),
            ]
        rows.append(
            Row("dnsQueries", "DNS queries per host-name tunnel", "queries", False)
        )
    if "latency" in only:
        rows += [
            Row("latencyP50", "echo latency p50", "us", False),
            Row("latencyP99", "echo latency p99", "us", False),
        ]
    if "memory" in only:
        rows += [
            Row("idleMemory", "memory per idle tunnel (PSS)", "KiB", False),
            Row("idleHeld", "idle tunnels held at once", "tunnels", True),
            Row("idleOpenRate", "idle tunnels opened one by one", "tunnels/s", True),
            Row("slowReaderGrowth", "slow-reader memory growth", "KiB/tunnel", False),
        ]
    return {row.key: row for row in rows}


class Run:
    """
    The state of one run.

    @ivar routes: Every route measured, C{direct} first.
    @ivar launched: The running proxies by route name.
    @ivar rows: The figures.
    @ivar errors: Route name to what went wrong with it.
    @ivar idle: Route name to the idle-tunnel results.
    @ivar slow: Route name to the slow-reader results.
    @ivar checks: Route name to the checks of its log against the bench.
    @ivar notes: Things the reader of the report should know.
    """

    def __init__(self, args: argparse.Namespace, origin: Origin) -> None:
        self.args = args
        self.origin = origin
        self.routes: list[Route] = []
        self.launched: dict[str, Launched] = {}
        self.rows = makeRows(args)
        self.errors: dict[str, list[str]] = {}
        self.idle: dict[str, list[dict[str, Any]]] = {}
        self.slow: dict[str, list[dict[str, Any]]] = {}
        self.checks: dict[str, list[str]] = {}
        self.notes: list[str] = []
        self.limit = raiseDescriptorLimit()
        self.holdOrigins: list[Origin] = []
        self._cpu: dict[str, list[float]] = {}
        # The DNS server for host-name targets, its address for each route
        # that resolves with it, and the host-name tunnels each opened.
        self.dns: DnsServer | None = None
        self.nameservers: dict[str, str] = {}
        self.namedTunnels: dict[str, int] = {}

    def fail(self, route: str, message: str) -> None:
        """
        Note a failure of C{route}.
        """
        progress(f"  {route}: {message}")
        self.errors.setdefault(route, []).append(message)

    def usable(self, route: Route) -> bool:
        """
        Whether C{route} is still worth measuring: its proxy runs and it has
        not failed too often.
        """
        if len(self.errors.get(route.name, [])) >= _MAX_ERRORS:
            return False
        proxy = self.launched.get(route.name)
        if proxy is not None and not proxy.alive():
            self.fail(route.name, "the proxy process has exited")
            self.errors[route.name] += ["(stopped measuring)"] * _MAX_ERRORS
            return False
        return True

    def start(self, wanted: list[str]) -> None:
        """
        Start every wanted proxy that is installed, and check each route end
        to end.
        """
        if "direct" in wanted:
            self.routes.append(Route("direct", None))
        nameservers = self._startDns(wanted)
        if "connectproxy" in wanted:
            command = self.args.connectproxy_command
            for name, options in self.args.variant:
                self._launch(
                    name,
                    partial(
                        ConnectproxyVariant,
                        name,
                        command,
                        options,
                        nameserver=nameservers.get(name),
                    ),
                )
            for name, directory in self.args.source:
                self._launch(
                    name,
                    partial(
                        ConnectproxyVariant,
                        name,
                        command,
                        "",
                        Path(directory),
                        nameservers.get(name),
                    ),
                )
        for other in OTHERS:
            if other.name not in wanted:
                continue
            exe = other.find()
            if exe is None:
                progress(f"{other.name}: not installed, left out")
                continue
            nameserver = nameservers.get(other.name)
            self._launch(other.name, partial(other.start, exe, self.limit, nameserver))
        self.nameservers = {
            route.name: nameservers[route.name]
            for route in self.routes
            if route.name in nameservers
        }
        for route in list(self.routes):
            self._warmUp(route)

    def _startDns(self, wanted: list[str]) -> dict[str, str]:
        """
        Start the DNS server for the host-name rows, when they are asked
        for and can be measured here: one address for each connectproxy
        variant (each runs in a mount namespace whose resolver asks it) and
        for each other proxy that can be told to ask it (squid).

        @return: Route name to its DNS server's address.
        """
        if "names" not in self.args.only:
            return {}
        refusal = namespaceRefusal()
        if refusal is not None:
            self.notes.append(f"host-name targets not measured: {refusal}")
            progress(self.notes[-1])
            return {}
        names = []
        if "connectproxy" in wanted:
            names += [name for name, _ in self.args.variant + self.args.source]
        names += [o.name for o in OTHERS if o.resolvesWith and o.name in wanted]
        if not names:
            return {}
        try:
            self.dns = DnsServer(len(names), self.args.dns_ttl)
        except (BenchError, OSError) as e:
            self.notes.append(f"host-name targets not measured: {e}")
            progress(self.notes[-1])
            return {}
        progress(
            f"DNS server: pid {self.dns.child.pid}, zone {self.dns.zone}, "
            f"TTL {self.args.dns_ttl} s"
        )
        return dict(zip(names, self.dns.addresses, strict=True))

    def stopDns(self) -> None:
        """
        Stop the DNS server, and turn its query counts into the DNS queries
        per host-name tunnel of each route.
        """
        if self.dns is None:
            return
        self.dns.stop()
        for name, address in self.nameservers.items():
            tunnels = self.namedTunnels.get(name, 0)
            queries = self.dns.queries.get(address)
            if tunnels and queries is not None:
                self.rows["dnsQueries"].add(name, queries / tunnels)

    def _launch(self, name: str, start: Callable[[], Launched]) -> None:
        """
        Start one proxy and add its route; note the failure if it does not
        start.
        """
        try:
            proxy = start()
        except (BenchError, OSError) as e:
            self.fail(name, f"did not start: {e}")
            return
        self.launched[name] = proxy
        self.routes.append(Route(name, proxy.port))
        progress(f"{name}: pid {proxy.pid}, port {proxy.port}, {proxy.version}")

    def _warmUp(self, route: Route) -> None:
        """
        Check that C{route} works end to end; leave it out if not.
        """
        try:
            exchangeOnce(route, self.origin.echoPort)
            for mode in self.args.modes:
                bulkOnce(route, self.origin.bulkPort, mode, 1 << 20, 30.0)
            pingRun(route, self.origin.holdPorts[0], 10, 5.0)
        except (OSError, BenchError) as e:
            self.fail(route.name, f"warm-up failed: {type(e).__name__}: {e}")
            self.routes.remove(route)

    def order(self, roundIndex: int, proxiesOnly: bool = False) -> list[Route]:
        """
        The routes in this round's order: rotated by one every round.
        """
        routes = [r for r in self.routes if not (proxiesOnly and r.direct)]
        if not routes:
            return []
        shift = roundIndex % len(routes)
        return [r for r in routes[shift:] + routes[:shift] if self.usable(r)]

    def _sample(self, route: Route, what: str, sample: Callable[[], None]) -> None:
        """
        Take one sample, noting a failure instead of raising it.
        """
        try:
            sample()
        except (OSError, BenchError) as e:
            self.fail(route.name, f"{what}: {type(e).__name__}: {e}")

    def bulk(self, route: Route, mode: str) -> None:
        """
        One bulk sample; the proxy's CPU time during it and the bytes moved
        add to this round's CPU-per-GiB figure (L{cpuPerGiB}).
        """
        proxy = self.launched.get(route.name)
        before = cpuSeconds(proxy.pids()) if proxy else 0.0
        size = self.args.megabytes << 20
        sample = bulkOnce(route, self.origin.bulkPort, mode, size, self.args.cap)
        self.rows[mode].add(route.name, sample.moved / sample.seconds / 1e6)
        if proxy is not None:
            used = self._cpu.setdefault(route.name, [0.0, 0])
            used[0] += cpuSeconds(proxy.pids()) - before
            used[1] += sample.moved
        capped = " (time cap reached)" if sample.capped else ""
        progress(
            f"  {mode:<8} {route.name:<16} "
            f"{sample.moved / sample.seconds / 1e6:9.1f} MB/s{capped}"
        )

    def rate(self, route: Route, concurrency: int) -> None:
        """
        One tunnel-setup-rate sample at C{concurrency}.
        """
        args = self.args
        proxy = self.launched.get(route.name)
        before = cpuSeconds(proxy.pids()) if proxy else 0.0
        sample = rateRun(
            route,
            self.origin.echoPort,
            args.rate_tunnels,
            args.rate_seconds,
            concurrency,
        )
        figure = sample.count / sample.seconds
        self.rows[f"setupRateC{concurrency}"].add(route.name, figure)
        cpu = ""
        if proxy is not None and sample.count:
            perTunnel = (cpuSeconds(proxy.pids()) - before) / sample.count * 1e6
            self.rows[f"setupCpuC{concurrency}"].add(route.name, perTunnel)
            cpu = f", {perTunnel:7.1f} CPU us each"
        progress(f"  c={concurrency:<6} {route.name:<16} {figure:9.1f} tunnels/s{cpu}")

    def rateNames(self, route: Route, concurrency: int) -> None:
        """
        One tunnel-setup-rate sample at C{concurrency} with a host-name
        target, which the proxy resolves with the benchmark's DNS server.
        """
        args = self.args
        assert self.dns is not None
        proxy = self.launched[route.name]
        before = cpuSeconds(proxy.pids())
        sample = rateRun(
            route,
            self.origin.echoPort,
            args.rate_tunnels,
            args.rate_seconds,
            concurrency,
            f"origin.{self.dns.zone}",
        )
        figure = sample.count / sample.seconds
        self.rows[f"namesRateC{concurrency}"].add(route.name, figure)
        self.namedTunnels[route.name] = (
            self.namedTunnels.get(route.name, 0) + sample.count
        )
        perTunnel = 0.0
        if sample.count:
            perTunnel = (cpuSeconds(proxy.pids()) - before) / sample.count * 1e6
            self.rows[f"namesCpuC{concurrency}"].add(route.name, perTunnel)
        progress(
            f"  names c={concurrency:<4} {route.name:<14} {figure:9.1f} tunnels/s, "
            f"{perTunnel:7.1f} CPU us each"
        )

    def latency(self, route: Route) -> None:
        """
        One echo-latency sample: p50 and p99 of many round trips.
        """
        times = pingRun(
            route, self.origin.holdPorts[0], self.args.pings, self.args.ping_seconds
        )
        self.rows["latencyP50"].add(route.name, percentile(times, 0.5))
        self.rows["latencyP99"].add(route.name, percentile(times, 0.99))
        progress(
            f"  latency  {route.name:<16} p50 {percentile(times, 0.5):7.1f} us, "
            f"p99 {percentile(times, 0.99):7.1f} us ({len(times)} pings)"
        )

    def cpuPerGiB(self) -> None:
        """
        Turn this round's CPU time and bytes into one CPU-per-GiB sample per
        proxy: one sample per round rather than per transfer, because
        C{/proc/PID/stat} counts in clock ticks (10 ms).
        """
        for name, (seconds, moved) in self._cpu.items():
            if moved:
                self.rows["cpuPerGiB"].add(name, seconds / (moved / GIB))
        self._cpu.clear()

    def idleCount(self, route: Route) -> int:
        """
        The idle-tunnel count for C{route}, lowered to what the descriptor
        limit allows: the proxy holds two descriptors per tunnel in one of
        its processes (each worker of C{--workers} has a limit of its own).
        """
        proxy = self.launched.get(route.name)
        processes = proxy.processes if proxy is not None else 1
        most = processes * max(1, (self.limit - 256) // 2)
        return min(int(self.args.idle_tunnels), most)

    def perProcess(self) -> int:
        """
        The most sockets one client or origin process of the idle-tunnel
        test holds.
        """
        return max(1, min(PER_PROCESS, self.limit - 256))

    def startHoldOrigins(self, count: int) -> None:
        """
        Start enough more origin processes that none holds more than
        L{perProcess} of C{count} idle tunnels.
        """
        needed = len(splitEvenly(count, self.perProcess()))
        while len(self.holdOrigins) + 1 < needed:
            self.holdOrigins.append(Origin(len(self.origin.holdPorts)))
        if self.holdOrigins:
            progress(
                f"hold origins: pids {self.origin.child.pid}, "
                + ", ".join(str(o.child.pid) for o in self.holdOrigins)
            )

    def stopHoldOrigins(self) -> None:
        """
        Stop the origin processes of L{startHoldOrigins} by PID.
        """
        for origin in self.holdOrigins:
            origin.stop()
        self.holdOrigins.clear()

    def idleTest(self, route: Route) -> None:
        """
        The idle-tunnel measurement for one proxy.
        """
        proxy = self.launched[route.name]
        ports = list(self.origin.holdPorts)
        for origin in self.holdOrigins:
            ports += origin.holdPorts
        result = idleTunnels(
            route, ports, self.idleCount(route), proxy.pids, self.perProcess()
        )
        self.idle.setdefault(route.name, []).append(asdict(result))
        progress(
            f"  idle     {route.name:<16} {result.opened} of {result.requested}"
            f" tunnels ({result.clients} client processes, {result.checked}"
            f" echoed), {result.kibPerTunnel or 0:.2f} KiB each,"
            f" {result.openSeconds:.1f} s to open"
        )
        if result.error is not None:
            self.fail(route.name, f"idle tunnels: {result.error}")
        elif result.kibPerTunnel is not None:
            self.rows["idleMemory"].add(route.name, result.kibPerTunnel)
            self.rows["idleHeld"].add(route.name, result.opened)
            self.rows["idleOpenRate"].add(
                route.name, result.opened / result.openSeconds
            )
        if result.descriptorsLeft:
            self.fail(
                route.name,
                f"{result.descriptorsLeft} descriptors still open after the "
                "idle tunnels closed",
            )

    def slowTest(self, route: Route) -> None:
        """
        The slow-reader measurement for one proxy.
        """
        args = self.args
        slow = slowReaders(
            route,
            self.origin.bulkPort,
            args.slow_tunnels,
            args.slow_seconds,
            args.slow_rate,
            args.slow_offered << 20,
            self.launched[route.name].pids,
        )
        self.slow.setdefault(route.name, []).append(asdict(slow))
        self.rows["slowReaderGrowth"].add(route.name, slow.kibPerTunnel)
        progress(
            f"  slow     {route.name:<16} {slow.kibPerTunnel:9.1f} KiB/tunnel"
            f" (last half {slow.lateKibPerTunnel:.1f})"
        )

    def measure(self) -> None:
        """
        Take every sample, rounds outside, routes inside: the idle tunnels
        first (so that no earlier test has grown the proxies' heaps), the
        throughput rounds, a check of connectproxy's byte counts, and the
        slow readers last (whose byte counts nobody can check).
        """
        args = self.args
        memory = "memory" in args.only
        idleRounds = args.memory_rounds if memory and args.idle_tunnels else 0
        if idleRounds:
            self.noteIdleCounts()
            counts = [self.idleCount(route) for route in self.order(0, True)]
            self.startHoldOrigins(max(counts, default=0))
        try:
            for index in range(idleRounds):
                progress(f"idle-tunnel round {index + 1} of {args.memory_rounds}")
                for route in self.order(index, proxiesOnly=True):
                    self._sample(route, "idle tunnels", partial(self.idleTest, route))
        finally:
            self.stopHoldOrigins()
        for index in range(args.rounds):
            progress(f"round {index + 1} of {args.rounds}")
            self.measureRound(index)
        self.checkBytes()
        for index in range(args.memory_rounds if memory and args.slow_tunnels else 0):
            progress(f"slow-reader round {index + 1} of {args.memory_rounds}")
            for route in self.order(index, proxiesOnly=True):
                self._sample(route, "slow readers", partial(self.slowTest, route))
        self.waitForCloses()

    def noteIdleCounts(self) -> None:
        """
        Note each route whose idle-tunnel count the descriptor limit
        lowers.
        """
        for route in self.order(0, proxiesOnly=True):
            count = self.idleCount(route)
            if count >= self.args.idle_tunnels:
                continue
            proxy = self.launched[route.name]
            processes = (
                f"{proxy.processes} worker processes"
                if proxy.processes > 1
                else "one process"
            )
            self.notes.append(
                f"idle tunnels of {route.name} lowered from "
                f"{self.args.idle_tunnels} to {count}: it serves them in "
                f"{processes}, each with a descriptor limit of {self.limit} "
                "and two per tunnel (more --workers, or a higher hard limit, "
                "go further)"
            )
            progress(self.notes[-1])

    def measureRound(self, index: int) -> None:
        """
        One round of the throughput, setup and latency samples that
        C{--only} asks for, every route in turn.
        """
        args = self.args
        for mode in args.modes if "bulk" in args.only else ():
            for route in self.order(index):
                self._sample(route, mode, partial(self.bulk, route, mode))
        self.cpuPerGiB()
        for c in args.concurrency if "setup" in args.only else ():
            for route in self.order(index):
                self._sample(route, f"c={c}", partial(self.rate, route, c))
        for c in args.concurrency if self.nameservers else ():
            for route in self.order(index):
                if route.name in self.nameservers:
                    self._sample(
                        route, f"names c={c}", partial(self.rateNames, route, c)
                    )
        for route in self.order(index) if "latency" in args.only else ():
            self._sample(route, "latency", partial(self.latency, route))

    def proxyFacts(self, stopped: dict[str, int]) -> dict[str, dict[str, Any]]:
        """
        Everything the report says about each route, with the checks of
        connectproxy's own log against what the bench did.
        """
        facts: dict[str, dict[str, Any]] = {}
        for route in self.routes:
            proxy = self.launched.get(route.name)
            if proxy is None:
                facts[route.name] = {"kind": "direct", "version": "-"}
                facts[route.name]["exitStatus"] = None
                continue
            entry = proxy.facts()
            entry["exitStatus"] = stopped.get(route.name)
            entry["tunnelsOpened"] = route.opened
            entry["bytesMoved"] = route.moved
            if isinstance(proxy, ConnectproxyVariant):
                entry.update(self._logChecks(route, proxy))
            facts[route.name] = entry
        return facts

    def checkBytes(self) -> None:
        """
        Compare the bytes connectproxy logged in its C{tunnel_close} events
        with those the bench moved through it, once every tunnel so far has
        closed.
        """
        self.waitForCloses()
        for route in self.routes:
            proxy = self.launched.get(route.name)
            if not isinstance(proxy, ConnectproxyVariant) or route.moved is None:
                continue
            logged, moved = proxy.tally.bytesLogged, route.moved
            same = "matches" if moved == logged else "DIFFERS from"
            check = (
                f"logged bytes ({logged[0]} up, {logged[1]} down) {same} the "
                f"bench's ({moved[0]} up, {moved[1]} down)"
            )
            self.checks.setdefault(route.name, []).append(check)
            if moved != logged:
                self.fail(route.name, check)

    def _logChecks(self, route: Route, proxy: ConnectproxyVariant) -> dict[str, Any]:
        """
        Compare the number of connectproxy's C{tunnel_close} events with the
        tunnels the bench opened, and report its error events; failures go
        to L{errors}.
        """
        tally = proxy.tally
        closes = tally.counts["tunnel_close"]
        checks = self.checks.setdefault(route.name, [])
        checks.append(f"{closes} tunnel_close events for {route.opened} tunnels")
        if closes != route.opened:
            self.fail(route.name, checks[-1])
        for event in tally.errorEvents:
            self.fail(route.name, f"error event: {str(event)[:500]}")
        for event in proxy.failures():
            self.fail(route.name, f"unhandled error: {str(event)[:2000]}")
        return {
            "events": dict(tally.counts),
            "bytesLogged": list(tally.bytesLogged),
            "checks": checks,
        }

    def waitForCloses(self) -> None:
        """
        Give connectproxy a moment to log the close of the last tunnels.
        """
        for route in self.routes:
            proxy = self.launched.get(route.name)
            if isinstance(proxy, ConnectproxyVariant):
                proxy.tally.waitForCount("tunnel_close", route.opened, 10.0)

    def stopAll(self) -> dict[str, int]:
        """
        Stop every proxy by PID.

        @return: Their exit statuses.
        """
        statuses = {}
        for name, proxy in self.launched.items():
            try:
                statuses[name] = proxy.stop()
            except (OSError, AssertionError) as e:
                self.fail(name, f"stopping it failed: {e}")
        return statuses


def machineFacts() -> dict[str, Any]:
    """
    The machine and its load, for reading the figures.
    """
    return {
        "cpus": os.cpu_count(),
        "loadAverage": list(os.getloadavg()),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def startupMemory(run: Run) -> dict[str, int]:
    """
    Each proxy's PSS right after it started, in KiB.
    """
    return {name: pssKiB(proxy.pids()) for name, proxy in run.launched.items()}
