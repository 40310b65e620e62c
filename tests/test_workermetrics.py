"""
Tests for L{connectproxy._workermetrics}: the supervisor's C{/metrics},
the workers' metrics added up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.parser import (
    text_string_to_metric_families as prometheusFamilies,
)
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent

from connectproxy import ProxySettings
from connectproxy._admin import AdminSite, HealthResource, adminRoot
from connectproxy._metrics import MetricsObserver, metricsRegistry
from connectproxy._relay import TunnelStats
from connectproxy._workermetrics import (
    SCRAPE_TIMEOUT,
    WorkerMetrics,
    WorkersMetricsResource,
    combine,
)
from tests.test_admin import request


def values(
    families: list[Metric],
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """
    Every sample, by name and labels.
    """
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families
        for s in family.samples
    }


def labelled(name: str, label: str, counts: dict[str, float]) -> Metric:
    family = CounterMetricFamily(name, "doc", labels=[label])
    for value, count in counts.items():
        family.add_metric([value], count)
    return family


def test_combineSums() -> None:
    """
    Counters and gauges are summed sample by sample, labels kept apart.
    """
    one = [
        labelled("requests", "result", {"ok": 3, "denied": 1}),
        GaugeMetricFamily("open", "doc", value=2),
    ]
    two = [
        labelled("requests", "result", {"ok": 4, "timeout": 2}),
        GaugeMetricFamily("open", "doc", value=5),
    ]
    assert values(combine([one, two])) == {
        ("requests_total", (("result", "ok"),)): 7,
        ("requests_total", (("result", "denied"),)): 1,
        ("requests_total", (("result", "timeout"),)): 2,
        ("open", ()): 7,
    }


def test_combineSpecialFamilies() -> None:
    """
    The start time is the earliest, the descriptor limit and info metrics
    the largest; C{_created} samples are left out.
    """
    sources = [
        [
            GaugeMetricFamily("process_start_time_seconds", "doc", value=200),
            GaugeMetricFamily("process_max_fds", "doc", value=1024),
            InfoMetricFamily("connectproxy", "doc", value={"version": "1"}),
            CounterMetricFamily("c", "doc", value=1, created=50),
        ],
        [
            GaugeMetricFamily("process_start_time_seconds", "doc", value=100),
            GaugeMetricFamily("process_max_fds", "doc", value=4096),
            InfoMetricFamily("connectproxy", "doc", value={"version": "1"}),
            CounterMetricFamily("c", "doc", value=2, created=60),
        ],
    ]
    assert values(combine(sources)) == {
        ("process_start_time_seconds", ()): 100,
        ("process_max_fds", ()): 4096,
        ("connectproxy_info", (("version", "1"),)): 1,
        ("c_total", ()): 3,
    }


class Proxy:
    """
    What a worker's metrics read of its proxy.
    """

    settings = ProxySettings(maxConnections=100)

    def openTunnelStats(self) -> list[TunnelStats]:
        return []


def workerText(ok: int, tunnels: int) -> str:
    """
    A worker's metrics, as it serves them to its supervisor.
    """
    observer = MetricsObserver(Proxy())
    observer.requests["ok"] = ok
    observer.tunnelsOpen = tunnels
    return str(generate_latest(metricsRegistry(observer)).decode("utf-8"))


@dataclass
class FakeWorkers:
    """
    What the metrics read of the supervisor.
    """

    ready: list[tuple[int, int]] = field(default_factory=list)
    restarts: int = 0
    draining: bool = False
    stopping: list[tuple[int, int]] = field(default_factory=list)

    @property
    def isListening(self) -> bool:
        return bool(self.ready)

    def readyWorkers(self) -> list[tuple[int, int]]:
        return list(self.ready)

    def servingWorkers(self) -> list[tuple[int, int]]:
        return sorted(self.ready + self.stopping)

    def workerPids(self) -> dict[int, int]:
        return dict(self.servingWorkers())

    def metricsSocket(self, worker: int) -> str | None:
        return f"/private/m{worker}"


class Fetcher:
    """
    Answers scrapes with what a test sets.
    """

    def __init__(self) -> None:
        self.texts: dict[int, str] = {}
        self.paths: list[str] = []
        self.hang: set[int] = set()

    def __call__(self, worker: int, path: str) -> Deferred[str]:
        self.paths.append(path)
        if worker in self.hang:
            return Deferred()
        if worker not in self.texts:
            return fail(ConnectionRefusedError("refused"))
        return succeed(self.texts[worker])


def ownMetrics() -> list[Metric]:
    return [CounterMetricFamily("process_cpu_seconds", "doc", value=1.5)]


def setup() -> tuple[WorkerMetrics, FakeWorkers, Fetcher, MemoryReactorClock]:
    reactor = MemoryReactorClock()
    workers = FakeWorkers([(1, 101), (2, 102)], restarts=3)
    fetcher = Fetcher()
    metrics = WorkerMetrics(reactor, workers, fetcher, ownMetrics)
    return metrics, workers, fetcher, reactor


def collected(
    metrics: WorkerMetrics,
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    results: list[list[Metric]] = []
    metrics.collect().addCallback(results.append)
    [families] = results
    return values(families)


def test_workersAddedUp() -> None:
    """
    A scrape reads every worker that listens, from its socket, and adds
    them up with the supervisor's own metrics and its own families.
    """
    metrics, _, fetcher, _ = setup()
    fetcher.texts = {1: workerText(3, 1), 2: workerText(4, 2)}
    found = collected(metrics)
    assert fetcher.paths == ["/private/m1", "/private/m2"]
    assert found[("connectproxy_requests_total", (("result", "ok"),))] == 7
    assert found[("connectproxy_tunnels_active", ())] == 3
    assert found[("connectproxy_max_connections", ())] == 200
    assert found[("connectproxy_info", (("version", found_version(found)),))] == 1
    workerCPU = [
        values(list(text_string_to_metric_families(fetcher.texts[n])))[
            ("process_cpu_seconds_total", ())
        ]
        for n in (1, 2)
    ]
    assert found[("process_cpu_seconds_total", ())] == pytest.approx(
        1.5 + sum(workerCPU)
    )
    assert found[("connectproxy_workers", ())] == 2
    assert found[("connectproxy_worker_restarts_total", ())] == 3


def found_version(found: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> str:
    [version] = [
        dict(labels)["version"] for name, labels in found if name == "connectproxy_info"
    ]
    return version


def test_drainingWorkersScraped() -> None:
    """
    A worker that drains (it no longer listens) is still read: its open
    tunnels are still counted, though it no longer counts as a worker
    listening.
    """
    metrics, workers, fetcher, _ = setup()
    workers.ready, workers.stopping = [(2, 102)], [(1, 101)]
    fetcher.texts = {1: workerText(3, 1), 2: workerText(4, 2)}
    found = collected(metrics)
    assert fetcher.paths == ["/private/m1", "/private/m2"]
    assert found[("connectproxy_tunnels_active", ())] == 3
    assert found[("connectproxy_workers", ())] == 1


def test_deadWorkerCountersKept() -> None:
    """
    The counters of a worker whose process ended stay in the sums (as last
    scraped); its gauges go.
    """
    metrics, workers, fetcher, _ = setup()
    fetcher.texts = {1: workerText(3, 1), 2: workerText(4, 2)}
    collected(metrics)
    workers.ready = [(1, 101), (2, 202)]
    fetcher.texts[2] = workerText(1, 0)
    found = collected(metrics)
    assert found[("connectproxy_requests_total", (("result", "ok"),))] == 8
    assert found[("connectproxy_tunnels_active", ())] == 1


def test_failedScrapeUsesLast(logEvents: list[LogEvent]) -> None:
    """
    A worker that does not answer counts with what it said last; the
    failure is logged.
    """
    metrics, _, fetcher, reactor = setup()
    fetcher.texts = {1: workerText(3, 1), 2: workerText(4, 2)}
    collected(metrics)
    fetcher.texts[2] = "not metrics {"
    fetcher.hang = {1}
    results: list[list[Metric]] = []
    metrics.collect().addCallback(results.append)
    assert results == []
    reactor.advance(SCRAPE_TIMEOUT)
    [families] = results
    found = values(families)
    assert found[("connectproxy_requests_total", (("result", "ok"),))] == 7
    failed = [e for e in logEvents if e.get("event") == "worker_scrape_failed"]
    assert sorted(e["worker"] for e in failed) == [1, 2]


def test_resource() -> None:
    """
    C{/metrics} of the supervisor answers once every worker has, in the
    format asked for; C{/healthz} reads the supervisor.
    """
    metrics, workers, fetcher, reactor = setup()
    fetcher.texts = {1: workerText(3, 1), 2: workerText(4, 2)}
    health = HealthResource(workers, [workers])
    site = AdminSite(adminRoot(WorkersMetricsResource(metrics), health), reactor)
    answer = request(site, "GET", "/metrics")
    assert answer.status == 200
    assert answer.headers["cache-control"] == "no-store"
    found = values(list(prometheusFamilies(answer.text())))
    assert found[("connectproxy_requests_total", (("result", "ok"),))] == 7
    openMetrics = request(
        site, "GET", "/metrics", "Accept: application/openmetrics-text"
    )
    assert openMetrics.headers["content-type"].startswith(
        "application/openmetrics-text"
    )
    families = {
        f.name: f.type for f in text_string_to_metric_families(openMetrics.text())
    }
    assert families["connectproxy"] == "info"
    assert families["connectproxy_upstream_connect_seconds"] == "histogram"
    assert request(site, "GET", "/healthz").status == 200
    workers.draining = True
    assert request(site, "GET", "/healthz").body == b"draining\n"
    workers.draining = False
    workers.ready = []
    assert request(site, "GET", "/healthz").body == b"not listening\n"


def test_scrapeIsQuiet(logEvents: list[LogEvent]) -> None:
    """
    A worker's metrics are fetched over its UNIX socket, and the client's
    factory starting and stopping (once per worker per scrape) logs
    nothing.
    """
    reactor = MemoryReactorClock()
    metrics = WorkerMetrics(reactor, FakeWorkers([(1, 101)]), own=ownMetrics)
    metrics.collect()
    [(path, factory, timeout, _)] = reactor.unixClients
    assert path == "/private/m1"
    assert timeout == SCRAPE_TIMEOUT
    factory.doStart()
    factory.doStop()
    assert logEvents == []
