# -*- test-case-name: tests.test_workermetrics -*-
"""
The metrics of C{--workers}: the supervisor serves C{--metrics} (and
C{/healthz}) itself, and answers each scrape with the metrics of every
worker added up.

Each worker serves its own metrics, over HTTP, on a UNIX socket in the
supervisor's private directory; at each scrape of C{/metrics} the
supervisor fetches them from every worker that listens (in OpenMetrics,
which keeps every metric's type) and adds them up (L{combine}): counters,
gauges and histogram buckets are summed over the workers, and so are the
process metrics (CPU time, memory, descriptors) with the supervisor's own;
C{process_start_time_seconds} is the earliest and the C{connectproxy} info
metric is the same in all.  The counters of a worker that died are kept
(as of the last scrape before it died) so that the sums never go back.

C{prometheus_client}'s multiprocess mode was not used: it adds up only its
own metric objects, written to files as they change, while the proxy's
metrics (L{connectproxy._metrics}) are computed at scrape time (the bytes
of tunnels still open) and the process metrics are read at scrape time too.

This module imports C{prometheus_client}: only C{--metrics} imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from ._admin import AdminListenerService, AdminSite, HealthResource, _Leaf, adminRoot
from ._admin import _noStore as noStore

__all__ = [
    "SCRAPE_TIMEOUT",
    "WorkerMetrics",
    "WorkersMetricsResource",
    "addWorkerMetrics",
    "combine",
]

#: Seconds a worker has to answer a scrape; then its last answer is used.
SCRAPE_TIMEOUT = 5.0

_OPENMETRICS = b"application/openmetrics-text; version=1.0.0; charset=utf-8"

#: Families whose value is the same kind of thing in every process, so
#: that their sum means nothing: the earliest or the largest is kept.
_EARLIEST = frozenset({"process_start_time_seconds"})
_LARGEST = frozenset({"process_max_fds"})

#: Types whose samples only grow: kept from workers that died.
_GROWING = frozenset({"counter", "histogram", "summary"})


def _merge(family: Metric) -> Callable[[float, float], float]:
    if family.name in _EARLIEST:
        return min
    if family.name in _LARGEST or family.type in ("info", "stateset"):
        return max
    return _add


def _add(a: float, b: float) -> float:
    return a + b


def combine(sources: Iterable[Iterable[Metric]]) -> list[Metric]:
    """
    Add up the metrics of several processes: each sample (a name and its
    labels) is summed over the processes that have it, except for the
    families whose sum means nothing (the process start time: the earliest;
    the descriptor limit and info metrics: the largest).  C{_created}
    samples are left out.

    @param sources: The metric families of each process.
    @return: The families added up, in the order they were first seen.
    """
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for source in sources:
        for family in source:
            if family.name not in families:
                families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
                values[family.name] = {}
            merge = _merge(family)
            samples = values[family.name]
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                key = (sample.name, tuple(sorted(sample.labels.items())))
                before = samples.get(key)
                samples[key] = (
                    sample.value if before is None else merge(before, sample.value)
                )
    combined = []
    for name, family in families.items():
        for (sampleName, labels), value in values[name].items():
            family.add_sample(sampleName, dict(labels), value)
        combined.append(family)
    return combined


def growing(families: Iterable[Metric]) -> list[Metric]:
    """
    The families whose samples only grow (counters, histograms, summaries).
    """
    return [family for family in families if family.type in _GROWING]


class _Workers(Protocol):
    """
    What the metrics read of the L{Supervisor
    <connectproxy._workers.Supervisor>}.
    """

    restarts: int

    @property
    def draining(self) -> bool: ...

    @property
    def isListening(self) -> bool: ...

    def readyWorkers(self) -> list[tuple[int, int]]: ...

    def servingWorkers(self) -> list[tuple[int, int]]: ...

    def workerPids(self) -> dict[int, int]: ...

    def metricsSocket(self, worker: int) -> str | None: ...


@implementer(IAgentEndpointFactory)
class _UNIXEndpoints:
    """
    Connects every request of an L{Agent} to one UNIX socket.
    """

    def __init__(self, reactor: Any, path: str) -> None:
        self._reactor = reactor
        self._path = path

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        return _QuietEndpoint(
            UNIXClientEndpoint(self._reactor, self._path, timeout=SCRAPE_TIMEOUT)
        )


@implementer(IStreamClientEndpoint)
class _QuietEndpoint:
    """
    Connects with a factory that does not log its starting and stopping:
    the agent's factory would log two lines at info per worker per scrape.
    """

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self._endpoint = endpoint

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        if isinstance(protocolFactory, Factory):
            protocolFactory.noisy = False
        return self._endpoint.connect(protocolFactory)


class WorkerMetrics:
    """
    The metrics of every worker added up, with the supervisor's own, at
    each scrape.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        workers: _Workers,
        fetch: Callable[[int, str], Deferred[str]] | None = None,
        own: Callable[[], Iterable[Metric]] | None = None,
    ) -> None:
        """
        @param reactor: Where connections and timeouts come from.
        @param workers: The supervisor.
        @param fetch: Fetches the OpenMetrics text of a worker from its
            socket (worker number, path); over HTTP by default.
        @param own: The supervisor's own process metrics.
        """
        self._reactor = reactor
        self._workers = workers
        self._fetch = fetch if fetch is not None else self._fetchHTTP
        self._own = own if own is not None else ProcessCollector(registry=None).collect
        self._latest: dict[int, tuple[int, list[Metric]]] = {}
        self._retired: list[Metric] = []

    def collect(self) -> Deferred[list[Metric]]:
        """
        Scrape every worker that serves (listens, or drains its tunnels)
        and add it all up.

        @return: Fires with the metric families.
        """
        self._retire()
        scrapes = []
        for worker, pid in self._workers.servingWorkers():
            path = self._workers.metricsSocket(worker)
            if path is None:
                continue
            scrape = self._fetch(worker, path).addTimeout(SCRAPE_TIMEOUT, self._reactor)
            scrape.addCallbacks(
                self._scraped,
                self._failed,
                callbackArgs=(worker, pid),
                errbackArgs=(worker, pid),
            )
            scrapes.append(scrape)
        done: Deferred[Any] = gatherResults(scrapes)
        return done.addCallback(lambda _: self.families())

    def families(self) -> list[Metric]:
        """
        The metrics as last scraped, added up.
        """
        sources: list[Iterable[Metric]] = [
            self._own(),
            self._supervisorFamilies(),
            self._retired,
        ]
        sources.extend(families for _, families in self._latest.values())
        return combine(sources)

    def _supervisorFamilies(self) -> list[Metric]:
        return [
            GaugeMetricFamily(
                "connectproxy_workers",
                "Worker processes (--workers) listening now.",
                value=len(self._workers.readyWorkers()),
            ),
            CounterMetricFamily(
                "connectproxy_worker_restarts",
                "Worker processes started again after one exited.",
                value=self._workers.restarts,
            ),
        ]

    def _retire(self) -> None:
        """
        Keep the counters of the workers whose process has ended.
        """
        alive = self._workers.workerPids()
        for worker, (pid, families) in list(self._latest.items()):
            if alive.get(worker) != pid:
                del self._latest[worker]
                self._retired = combine([self._retired, growing(families)])

    def _scraped(self, text: str, worker: int, pid: int) -> None:
        try:
            families = list(text_string_to_metric_families(text))
        except (ValueError, IndexError, KeyError) as e:
            self._failed(Failure(e), worker, pid)
            return
        self._latest[worker] = (pid, families)

    def _failed(self, reason: Failure, worker: int, pid: int) -> None:
        self._log.warn(
            "could not read the metrics of worker {worker} (pid {worker_pid}): "
            "{error}; its last ones are used",
            event="worker_scrape_failed",
            worker=worker,
            worker_pid=pid,
            error=reason.getErrorMessage(),
        )

    def _fetchHTTP(self, worker: int, path: str) -> Deferred[str]:
        agent = Agent.usingEndpointFactory(
            self._reactor,
            _UNIXEndpoints(self._reactor, path),
            HTTPConnectionPool(self._reactor, persistent=False),
        )
        headers = Headers({b"Accept": [_OPENMETRICS]})
        response = agent.request(b"GET", b"http://worker/metrics", headers)
        text: Deferred[str] = response.addCallback(_body)
        return text


def _body(response: Any) -> Deferred[str]:
    if response.code != 200:
        raise ValueError(f"HTTP status {response.code}")
    body: Deferred[bytes] = readBody(response)
    text: Deferred[str] = body.addCallback(lambda data: data.decode("utf-8"))
    return text


class _Fixed:
    """
    A collector of metric families computed beforehand.
    """

    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


class WorkersMetricsResource(_Leaf):
    """
    C{GET /metrics} of the supervisor: the workers' metrics added up, in
    the format the scraper asks for (as L{MetricsResource
    <connectproxy._admin.MetricsResource>}).
    """

    def __init__(self, metrics: WorkerMetrics) -> None:
        super().__init__()
        self._metrics = metrics

    def render_GET(self, request: Request) -> Any:
        accept = request.getHeader(b"Accept")
        encode, contentType = choose_encoder(accept.decode("latin-1") if accept else "")
        done = self._metrics.collect()

        def answer(families: list[Metric]) -> None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(_Fixed(families))
            noStore(request, contentType.encode("ascii"))
            request.setHeader(b"Vary", b"Accept, Accept-Encoding")
            body = encode(registry)
            if not request.finished and not request._disconnected:
                request.write(body)
                request.finish()

        done.addCallback(answer)
        done.addErrback(self._failed, request)
        return NOT_DONE_YET

    def _failed(self, reason: Failure, request: Request) -> None:
        Logger().failure("metrics failed", reason, event="metrics_failed")
        if not request.finished and not request._disconnected:
            request.setResponseCode(500)
            noStore(request, b"text/plain; charset=utf-8")
            request.write(b"500 Internal Server Error\n")
            request.finish()


def addWorkerMetrics(
    descriptions: Iterable[str], reactor: Any, workers: _Workers, services: Any
) -> WorkerMetrics:
    """
    The supervisor's metrics listeners, one per C{--metrics} description,
    added to C{services}.

    @param descriptions: The strports descriptions of C{--metrics}.
    @param reactor: The reactor.
    @param workers: The supervisor.
    @param services: Where to add the listeners.
    """
    metrics = WorkerMetrics(reactor, workers)
    health = HealthResource(workers, [workers])
    site = AdminSite(adminRoot(WorkersMetricsResource(metrics), health), reactor)
    for description in descriptions:
        AdminListenerService(reactor, description, site).setServiceParent(services)
    return metrics
