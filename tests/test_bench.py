# -*- test-case-name: tests.test_bench -*-
"""
The benchmark's pure parts: statistics, the report, the command line, the
payload's checksum and the collectors that keep a bounded part of a child's
output. Its smoke run is in tests/integration/test_bench.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import zlib

import pytest
from twisted.names import dns

from bench import dnsserver, pathcost
from bench.__main__ import parseArgs
from bench.holders import PING, checkTunnels, spread
from bench.launch import TallyCollector, _BoundedText, workerCount
from bench.measure import BenchError, Route, expectedCrc, percentile
from bench.memory import HolderShare, planShares, sourceAddresses, splitEvenly
from bench.origin import CHUNK, _receiveBulk, payloadChunk
from bench.proc import cpuSeconds, descriptorCount, processTree, pssKiB
from bench.report import Row, formatRow
from bench.run import makeRows
from connectproxy._optionvalues import usableCPUs
from tests._helpers import succeeded


def test_percentileNearestRank() -> None:
    """
    percentile picks the nearest-rank value, clamped to the samples.
    """
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([3.0, 1.0, 2.0], 0.0) == 1.0


def test_rowMedianRatioAndJSON() -> None:
    """
    A row reports median, min, max and the ratio of medians to the baseline.
    """
    row = Row("upload", "bulk upload", "MB/s", True)
    for value in (1.0, 3.0, 2.0):
        row.add("connectproxy", value)
    row.add("squid", 4.0)
    assert row.median("connectproxy") == 2.0
    assert row.ratio("connectproxy", "squid") == 0.5
    assert row.ratio("connectproxy", None) is None
    assert row.ratio("connectproxy", "tinyproxy") is None
    result = row.toJSON("squid")["results"]["connectproxy"]
    assert result == {
        "median": 2.0,
        "min": 1.0,
        "max": 3.0,
        "samples": [1.0, 3.0, 2.0],
        "ratio": 0.5,
    }
    lines = formatRow(row, ["connectproxy", "squid", "direct"], "squid")
    assert lines[0] == "bulk upload (MB/s, higher is better)"
    assert "0.50 x squid" in lines[1]
    assert len(lines) == 3


def test_variantOption() -> None:
    """
    --variant takes NAME=OPTIONS; the default is one plain connectproxy.
    """
    args = parseArgs([])
    assert args.variant == [("connectproxy", "")]
    args = parseArgs(["--variant", "splice=--relay=splice --workers=2"])
    assert args.variant == [("splice", "--relay=splice --workers=2")]


def test_onlyOption() -> None:
    """
    --only picks the kinds of measurement, and the report has the rows of
    those only; by default every kind is measured.
    """
    assert parseArgs([]).only == ["bulk", "setup", "names", "latency", "memory"]
    args = parseArgs(["--only", "setup,latency", "--concurrency", "1"])
    assert args.only == ["setup", "latency"]
    assert list(makeRows(args)) == [
        "setupRateC1",
        "setupCpuC1",
        "latencyP50",
        "latencyP99",
    ]


@pytest.mark.parametrize(
    "argv",
    [
        ["--only", "setup,nosuchkind"],
        ["--variant", "no-equals-sign"],
        ["--variant", "squid=--x"],
        ["--variant", "a=", "--variant", "a=--x"],
        ["--proxies", "direct,nosuchproxy"],
        ["--concurrency", "0"],
        ["--rounds", "0"],
        ["--slow-seconds", "0"],
    ],
)
def test_badOptions(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """
    Impossible options exit with status 2 and a message.
    """
    with pytest.raises(SystemExit) as raised:
        parseArgs(argv)
    assert raised.value.code == 2
    assert capsys.readouterr().err


def test_sourceAddresses() -> None:
    """
    At least two loopback client addresses, and one per 16,000 tunnels.
    """
    assert sourceAddresses(10) == ["127.0.0.2", "127.0.0.3"]
    assert len(sourceAddresses(50000)) == 4


def test_splitEvenly() -> None:
    """
    splitEvenly makes as few parts as the bound allows, their sizes
    differing by one at most, and nothing for no tunnel.
    """
    assert splitEvenly(50000, 10000) == [10000] * 5
    assert splitEvenly(50001, 10000) == [8334] * 3 + [8333] * 3
    assert splitEvenly(9872, 10000) == [9872]
    assert splitEvenly(7, 3) == [3, 2, 2]
    assert splitEvenly(0, 10) == []
    for total, most in [(50000, 9744), (12345, 1000), (1, 1)]:
        parts = splitEvenly(total, most)
        assert sum(parts) == total
        assert max(parts) <= most and max(parts) - min(parts) <= 1
        assert len(parts) == -(-total // most)
    with pytest.raises(ValueError):
        splitEvenly(10, 0)


def test_planSharesScale() -> None:
    """
    50,000 tunnels go to five client processes of 10,000, each with a
    source address of its own and every hold port, each starting one port
    further, and each checking 1% of its tunnels.
    """
    ports = [1001, 1002, 1003, 1004, 2001, 2002, 2003, 2004]
    shares = planShares(50000, ports)
    assert [share.count for share in shares] == [10000] * 5
    assert [share.sources for share in shares] == [
        (f"127.0.0.{n}",) for n in range(2, 7)
    ]
    assert shares[0].ports == tuple(ports)
    assert shares[1].ports == (1002, 1003, 1004, 2001, 2002, 2003, 2004, 1001)
    assert all(sorted(share.ports) == ports for share in shares)
    assert sum(share.sample for share in shares) == 500


def test_planSharesSmall() -> None:
    """
    One client process for a few tunnels, with two source addresses and
    at least one tunnel checked; no process for none.
    """
    assert planShares(20, [5000]) == [
        HolderShare(20, ("127.0.0.2", "127.0.0.3"), (5000,), 1)
    ]
    assert planShares(0, [5000]) == []


def test_planSharesBounds() -> None:
    """
    No process takes more than its bound, no source address more than its
    own, and the addresses of the processes differ.
    """
    shares = planShares(50000, [1, 2, 3], perProcess=19744, perSource=16000)
    assert [share.count for share in shares] == [16667, 16667, 16666]
    assert all(len(share.sources) == 2 for share in shares)
    addresses = [a for share in shares for a in share.sources]
    assert len(set(addresses)) == len(addresses) == 6
    with pytest.raises(ValueError):
        planShares(10, [])
    with pytest.raises(ValueError):
        planShares(10_000_000, [1], perSource=100)


def test_spread() -> None:
    """
    spread picks indexes evenly, first and last included, none twice.
    """
    assert spread(100, 1) == [0]
    assert spread(100, 2) == [0, 99]
    assert spread(101, 5) == [0, 25, 50, 75, 100]
    assert spread(3, 10) == [0, 1, 2]
    assert spread(0, 5) == spread(10, 0) == []
    picked = spread(10000, 100)
    assert len(picked) == 100 and picked == sorted(set(picked))


def test_checkTunnelsEchoes() -> None:
    """
    checkTunnels sends the check message through the chosen sockets and
    reads it back; a wrong echo fails.
    """
    pairs = [socket.socketpair() for _ in range(4)]
    try:
        for _, far in pairs:
            far.settimeout(5.0)
        ours = [near for near, _ in pairs]
        for near in ours:
            near.settimeout(5.0)

        def echoChosen() -> None:
            for _, far in pairs[::3]:
                far.sendall(far.recv(len(PING)))

        echo = threading.Thread(target=echoChosen)
        echo.start()
        assert checkTunnels(ours, 2) == 2
        echo.join()
        pairs[0][1].sendall(b"x" * len(PING))
        with pytest.raises(BenchError, match="wrong bytes"):
            checkTunnels(ours, 1)
    finally:
        for near, far in pairs:
            near.close()
            far.close()


def test_payloadChecksum() -> None:
    """
    The origin's CRC of what it received equals expectedCrc of the count,
    for sizes that end inside a chunk; the payload has no short period.
    """
    payload = payloadChunk()
    assert len(payload) == CHUNK
    assert bytes(payload[:4096]) != bytes(payload[4096:8192])
    size = CHUNK * 2 + 1000
    left, right = socket.socketpair()
    with left, right:
        data = (bytes(payload) * 3)[:size]
        sender = threading.Thread(target=left.sendall, args=(data,))
        sender.start()
        received, crc = _receiveBulk(right, size)
        sender.join()
    assert received == size
    assert crc == expectedCrc(size) == zlib.crc32(data)


def test_routeCountsMovedBytes() -> None:
    """
    A route sums bytes moved until an exchange of unknown size.
    """
    route = Route("proxy", 3128)
    route.addMoved(10, 20)
    route.addMoved(1, 2)
    assert route.moved == [11, 22]
    route.addMoved(5, None)
    route.addMoved(1, 1)
    assert route.moved is None


def test_boundedText() -> None:
    """
    Only the first 8 KiB and the last 16 KiB or so of the output are kept.
    """
    text = _BoundedText()
    for index in range(5000):
        text.add(f"line {index}\n".encode())
    kept = text.text()
    assert kept.startswith("line 0\n")
    assert "\n...\n" in kept
    assert kept.endswith("line 4999\n")
    assert len(kept) < 30000


def test_tallyCollectorCounts() -> None:
    """
    The tally counts events and bytes and keeps only the events worth
    waiting for or reporting.
    """
    events = [
        {"event": "listening", "port": 1234},
        {"event": "tunnel_open"},
        {"event": "tunnel_close", "bytesUp": 3, "bytesDown": 4},
        {"event": "tunnel_close", "bytesUp": 5, "bytesDown": 6},
        {"log_level": {"name": "critical"}, "log_failure": "boom"},
    ]
    raw = b"".join(b"\x1e" + json.dumps(e).encode() + b"\n" for e in events)
    readFd, writeFd = os.pipe()
    os.write(writeFd, raw + b"not json\n")
    os.close(writeFd)
    with os.fdopen(readFd, "rb") as pipe:
        tally = TallyCollector(pipe, "test")
        tally.join(10)
    assert tally.counts["tunnel_close"] == 2
    assert tally.waitForCount("tunnel_close", 2, 0) == 2
    assert tally.bytesLogged == [8, 10]
    assert len(tally.errorEvents) == 1
    kept = [e.get("event", e.get("_text")) for e in tally.records]
    assert kept == ["listening", None, "not json"]
    assert "tunnel_open" in tally.text()


def test_procReaders() -> None:
    """
    The /proc readers see this process.
    """
    pids = processTree(os.getpid())
    assert pids[0] == os.getpid()
    assert cpuSeconds(pids) > 0
    assert pssKiB(pids) > 0
    assert descriptorCount(pids) >= 3
    assert processTree(2**22 + 1) == []


def test_workerCount() -> None:
    """
    A variant's options say how many worker processes to wait for.
    """
    assert workerCount([]) == 1
    assert workerCount(["--workers", "2"]) == 2
    assert workerCount(["--workers=3", "--idle-timeout", "5"]) == 3
    assert workerCount(["--workers", "auto"]) == min(usableCPUs(), 256)


def test_procReadersSumChildren() -> None:
    """
    The readers see the children of a process (the workers of a
    supervisor) with it.
    """
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
    )
    try:
        pids = processTree(os.getpid())
        assert child.pid in pids
        assert pssKiB(pids) > pssKiB([os.getpid()])
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)


def test_pathCostRuns() -> None:
    """
    bench.pathcost sets up, uses and closes tunnels on a memory reactor,
    every one of them closed, and reports a CPU time per tunnel.
    """
    assert pathcost.tunnels(20) > 0


def test_dnsZoneAnswers() -> None:
    """
    The bench's DNS zone answers every name in it with 127.0.0.1 and the
    TTL it was given, and has no AAAA records: an empty answer with the
    zone's SOA, for negative caching.
    """
    zone = dnsserver._Zone("bench.test", 60)
    answers, _, _ = succeeded(zone.lookupAddress("origin.bench.test"))
    [record] = answers
    assert (record.payload.dottedQuad(), record.ttl) == ("127.0.0.1", 60)
    answers, authority, _ = succeeded(zone.lookupIPV6Address("origin.bench.test"))
    assert answers == []
    assert [r.type for r in authority] == [dns.SOA]
