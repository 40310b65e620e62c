# -*- test-case-name: tests.test_metrics -*-
"""
Prometheus metrics: L{MetricsObserver} is an observer that counts what the
proxy reports (requests, tunnels, connections) in plain integers, and a
C{prometheus_client} collector that turns them into metric families at
scrape time, adding the bytes of the tunnels still open.

It is an observer like any other (L{connectproxy.interfaces.IProxyObserver}):
told once per event, never per chunk of relayed bytes.  Every label value
comes from a small fixed set: no host name, client address or user name is
ever a label.

This module imports C{prometheus_client}: only C{--metrics} imports it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString
from zope.interface import implementer

from ._forward import FORWARDED_METHODS
from ._observer import (
    ConnectionRecord,
    ForwardedRequest,
    Outcome,
    RefusedRequest,
    TunnelRecord,
)
from ._relay import TunnelStats
from ._settings import ProxySettings
from ._version import __version__
from .interfaces import IForwardingObserver

__all__ = [
    "CLOSE_REASONS",
    "CONNECT_BUCKETS",
    "DURATION_BUCKETS",
    "REQUEST_RESULTS",
    "STATUS_CLASSES",
    "MetricsObserver",
    "closeReasonLabel",
    "metricsRegistry",
]

#: The values of the C{result} label of C{connectproxy_requests_total}: what
#: came of an answered request (L{Outcome.requestResult}), in a fixed order.
REQUEST_RESULTS: tuple[str, ...] = tuple(
    dict.fromkeys(o.requestResult for o in Outcome if o.requestResult is not None)
)

#: The values of the C{reason} label of C{connectproxy_tunnel_closes_total}.
CLOSE_REASONS = (
    "client_closed",
    "upstream_closed",
    "idle_timeout",
    "error",
    "shutdown",
)

#: The close reasons relays and deadlines give, and their label.
_REASON_LABELS = {
    "client closed": "client_closed",
    "upstream closed": "upstream_closed",
    "idle timeout": "idle_timeout",
    "half-close timeout": "idle_timeout",
    "shutdown": "shutdown",
}

#: Beginnings of close reasons that carry a detail (an error message).
_REASON_PREFIXES = (
    ("client connection lost:", "error"),
    ("upstream connection lost:", "error"),
    ("shutdown", "shutdown"),
)

#: Upper bounds, in seconds, of the buckets of
#: C{connectproxy_upstream_connect_seconds}: a connect on a LAN takes
#: milliseconds, one across the world a few hundred, and the connect
#: deadline (C{--connect-timeout}) is 10 seconds by default.
CONNECT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: Upper bounds, in seconds, of the buckets of
#: C{connectproxy_tunnel_duration_seconds}: from a refused TLS handshake to
#: a connection held open all day.
DURATION_BUCKETS = (
    0.1,
    1.0,
    10.0,
    60.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    4 * 3600.0,
    24 * 3600.0,
)


def closeReasonLabel(reason: str | None) -> str:
    """
    The C{reason} label of a tunnel's close reason: a free-text reason as
    relays and deadlines give it (C{"client closed"}, C{"idle timeout"},
    C{"upstream connection lost: ..."}) mapped to one of L{CLOSE_REASONS}.

    @param reason: The C{reason} of a closed tunnel's L{TunnelRecord}.
    @return: C{"client_closed"} and C{"upstream_closed"} for a clean end
        from either side, C{"idle_timeout"} for the idle and half-close
        deadlines, C{"shutdown"} for tunnels the proxy closed as it stopped,
        and C{"error"} for a side lost with an error (a reset), and for a
        reason it does not know.
    """
    if reason is None:
        return "error"
    label = _REASON_LABELS.get(reason)
    if label is not None:
        return label
    for prefix, label in _REASON_PREFIXES:
        if reason.startswith(prefix):
            return label
    return "error"


def isKnownCloseReason(reason: str | None) -> bool:
    """
    Whether L{closeReasonLabel} knows C{reason}, rather than calling it an
    error because it does not.
    """
    return reason is not None and (
        reason in _REASON_LABELS
        or any(reason.startswith(prefix) for prefix, _ in _REASON_PREFIXES)
    )


class _Buckets:
    """
    The counts of a histogram: how many observations fell in each bucket,
    and their sum.
    """

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = tuple(bounds)
        # One count per bucket, the last for values above every bound.
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        # Bucket "le" holds the values less than or equal to its bound.
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        """
        The histogram as a metric family, with cumulative bucket counts.
        """
        buckets = []
        total = 0
        bounds = (*self._bounds, float("inf"))
        for bound, count in zip(bounds, self._counts, strict=True):
            total += count
            buckets.append((floatToGoString(bound), float(total)))
        return HistogramMetricFamily(
            name, documentation, buckets=buckets, sum_value=self._sum
        )


class _OpenTunnels(Protocol):
    """
    What the metrics read of the proxy at scrape time: its
    L{ConnectProxyFactory <connectproxy.ConnectProxyFactory>}.
    """

    settings: ProxySettings

    def openTunnelStats(self) -> list[TunnelStats]: ...


#: The values of the C{status} label of
#: C{connectproxy_forwarded_requests_total}: the response's status class, or
#: C{none} when no response reached the client.
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "none")


def statusClass(status: int) -> str:
    """
    The C{status} label of a forwarded request's status (one of
    L{STATUS_CLASSES}).
    """
    if 100 <= status < 600:
        return f"{status // 100}xx"
    return "none"


@implementer(IForwardingObserver)
class MetricsObserver:
    """
    Counts what the proxy reports, for Prometheus: an L{IProxyObserver}
    and a C{prometheus_client} collector (L{collect}).

    Counters move when a connection opens or closes, a request is refused,
    or a tunnel opens or closes; the byte counters are completed at scrape
    time with the current counts of the tunnels still open, so that a long
    tunnel's traffic shows while it lasts.  A tunnel's counts are among the
    open tunnels' from its 200 until its close is reported, and among the
    closed tunnels' from then on, so the byte counters never go back.

    @ivar requests: Answered requests, by result (L{REQUEST_RESULTS}).
    @ivar closes: Closed tunnels, by reason label (L{CLOSE_REASONS}).
    """

    def __init__(self, proxy: _OpenTunnels) -> None:
        """
        @param proxy: The proxy's factory: the open tunnels' byte counts and
            the connection limit are read from it at scrape time.
        """
        self._proxy = proxy
        self.requests = dict.fromkeys(REQUEST_RESULTS, 0)
        self.closes = dict.fromkeys(CLOSE_REASONS, 0)
        self.authFailures = 0
        self.shed = 0
        self.connections = 0
        self.connectionsOpen = 0
        self.tunnelsOpen = 0
        self._closedUp = 0
        self._closedDown = 0
        #: Forwarded requests by method and status class, those seen so far
        #: (at most L{FORWARDED_METHODS} times L{STATUS_CLASSES}).
        self.forwarded: dict[tuple[str, str], int] = {}
        self.forwardedUp = 0
        self.forwardedDown = 0
        self._connectTimes = _Buckets(CONNECT_BUCKETS)
        self._durations = _Buckets(DURATION_BUCKETS)
        #: Reads how many lines the C{--access-log} file lost (a full or
        #: slow disk); C{None} without one.
        self.accessLogDropped: Callable[[], int] | None = None

    # IProxyObserver

    def connectionOpened(self, event: ConnectionRecord) -> None:
        self.connections += 1
        self.connectionsOpen += 1

    def connectionClosed(self, event: ConnectionRecord) -> None:
        self.connectionsOpen -= 1

    def requestRefused(self, event: RefusedRequest) -> None:
        outcome = Outcome(event.outcome)
        if outcome is Outcome.AUTH_FAILED:
            self.authFailures += 1
        elif outcome is Outcome.SHED:
            self.shed += 1
        result = outcome.requestResult
        if result is not None:
            self.requests[result] += 1

    def tunnelOpened(self, event: TunnelRecord) -> None:
        self.requests[Outcome.OK.value] += 1
        self.tunnelsOpen += 1
        self._connectTimes.observe(event.connectTime)

    def tunnelClosed(self, event: TunnelRecord) -> None:
        self.tunnelsOpen -= 1
        self._closedUp += event.bytesUp
        self._closedDown += event.bytesDown
        self.closes[closeReasonLabel(event.reason)] += 1
        self._durations.observe(event.duration)

    def requestForwarded(self, event: ForwardedRequest) -> None:
        if event.method in FORWARDED_METHODS:
            key = (event.method, statusClass(event.status))
            self.forwarded[key] = self.forwarded.get(key, 0) + 1
        self.forwardedUp += event.bytesUp
        self.forwardedDown += event.bytesDown

    # The collector

    def bytesRelayed(self) -> tuple[int, int]:
        """
        Bytes relayed so far, closed and open tunnels together.

        @return: C{(up, down)}: from clients to upstreams, and back.
        """
        up, down = self._closedUp, self._closedDown
        for stats in self._proxy.openTunnelStats():
            up += stats.bytesUp
            down += stats.bytesDown
        return up, down

    def collect(self) -> Iterator[Metric]:
        """
        The metrics as they are now (a scrape).
        """
        yield InfoMetricFamily(
            "connectproxy", "The running connectproxy.", value={"version": __version__}
        )
        yield _labelled(
            CounterMetricFamily,
            "connectproxy_requests",
            "Requests answered, by result (tunnels established: ok).",
            "result",
            self.requests.items(),
        )
        yield GaugeMetricFamily(
            "connectproxy_tunnels_active", "Tunnels open now.", value=self.tunnelsOpen
        )
        up, down = self.bytesRelayed()
        yield _labelled(
            CounterMetricFamily,
            "connectproxy_tunnel_bytes",
            "Bytes relayed through tunnels, open ones included: up from "
            "clients to upstreams, down back to clients.",
            "direction",
            [("up", up), ("down", down)],
        )
        forwarded = CounterMetricFamily(
            "connectproxy_forwarded_requests",
            "Plain http:// requests forwarded, by method and status class "
            "(none: no response reached the client).",
            labels=["method", "status"],
        )
        for (method, status), count in sorted(self.forwarded.items()):
            forwarded.add_metric([method, status], count)
        yield forwarded
        yield _labelled(
            CounterMetricFamily,
            "connectproxy_forwarded_bytes",
            "Bytes of forwarded requests: up to upstreams (heads and bodies), "
            "down to clients.",
            "direction",
            [("up", self.forwardedUp), ("down", self.forwardedDown)],
        )
        yield self._connectTimes.family(
            "connectproxy_upstream_connect_seconds",
            "Seconds from the end of the access checks to the upstream "
            "connection of each tunnel established (name resolution and "
            "every address tried).",
        )
        yield self._durations.family(
            "connectproxy_tunnel_duration_seconds",
            "Seconds from the 200 to the close, of each tunnel closed.",
        )
        yield _labelled(
            CounterMetricFamily,
            "connectproxy_tunnel_closes",
            "Tunnels closed, by what closed them.",
            "reason",
            self.closes.items(),
        )
        yield CounterMetricFamily(
            "connectproxy_auth_failures",
            "Requests with wrong or malformed credentials (answered 407).",
            value=self.authFailures,
        )
        dropped = self.accessLogDropped
        yield CounterMetricFamily(
            "connectproxy_access_log_dropped_lines",
            "Lines the --access-log file lost because the disk was full or "
            "too slow (the tunnels are not affected).",
            value=0 if dropped is None else dropped(),
        )
        yield CounterMetricFamily(
            "connectproxy_connections_shed",
            "Connections closed at once, without a response, far over "
            "--max-connections.",
            value=self.shed,
        )
        yield CounterMetricFamily(
            "connectproxy_connections",
            "Client connections accepted (refused and shed ones included).",
            value=self.connections,
        )
        yield GaugeMetricFamily(
            "connectproxy_connections_active",
            "Client connections open now.",
            value=self.connectionsOpen,
        )
        yield GaugeMetricFamily(
            "connectproxy_max_connections",
            "The most client connections served at once (--max-connections; "
            "0: no limit).",
            value=self._proxy.settings.maxConnections,
        )

    def describe(self) -> Iterable[Metric]:
        """
        The metric families L{collect} yields, so that a registry refuses
        another collector with the same names.
        """
        return list(self.collect())


def _labelled(
    kind: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    documentation: str,
    label: str,
    values: Iterable[tuple[str, int]],
) -> Metric:
    """
    A metric family with one label, and a value for each of its values.
    """
    family = kind(name, documentation, labels=[label])
    for labelValue, value in values:
        family.add_metric([labelValue], value)
    return family


def metricsRegistry(observer: MetricsObserver) -> CollectorRegistry:
    """
    A registry of the proxy's own (never C{prometheus_client}'s global
    one): the metrics of C{observer} and those of the process (CPU time,
    memory, open descriptors and their limit, start time).

    @param observer: The proxy's metrics.
    """
    registry = CollectorRegistry()
    registry.register(observer)
    ProcessCollector(registry=registry)
    return registry
