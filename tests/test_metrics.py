# -*- test-case-name: tests.test_metrics -*-
"""
Tests for L{connectproxy._metrics}: what the metrics observer counts, with
exact figures after known traffic through a whole proxy on a memory
reactor, its bounded labels, the bytes of open tunnels at scrape time, and
the label of every close reason the proxy gives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from zope.interface.verify import verifyObject

from connectproxy import Outcome, ProxySettings, RefusedRequest, TunnelRecord
from connectproxy._forward import FORWARDED_METHODS
from connectproxy._metrics import (
    CLOSE_REASONS,
    CONNECT_BUCKETS,
    DURATION_BUCKETS,
    REQUEST_RESULTS,
    STATUS_CLASSES,
    MetricsObserver,
    closeReasonLabel,
    isKnownCloseReason,
    metricsRegistry,
)
from connectproxy._version import __version__
from connectproxy.interfaces import IProxyObserver
from connectproxy.testing import ConnectAttempt, FakeClient, ProxyHarness, connectHead
from tests._helpers import (
    GOOD,
    RaisingPolicy,
    authHarness,
    basic,
    makeHarness,
)

CONNECT = connectHead()
ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"


class Metrics:
    """
    A proxy harness with a metrics observer and its registry.
    """

    def __init__(self, harness: ProxyHarness | None = None) -> None:
        self.harness = ProxyHarness() if harness is None else harness
        self.observer = MetricsObserver(self.harness.factory)
        self.harness.addObserver(self.observer)
        self.registry = metricsRegistry(self.observer)

    def value(self, name: str, **labels: str) -> float:
        """
        The value of one sample, which must exist.
        """
        value = self.registry.get_sample_value(name, labels)
        assert value is not None, (name, labels)
        return value

    def requests(self) -> dict[str, float]:
        """
        C{connectproxy_requests_total} by result.
        """
        return {
            result: self.value("connectproxy_requests_total", result=result)
            for result in REQUEST_RESULTS
        }

    def bytes(self) -> tuple[float, float]:
        """
        C{connectproxy_tunnel_bytes_total}, up and down.
        """
        name = "connectproxy_tunnel_bytes_total"
        return self.value(name, direction="up"), self.value(name, direction="down")

    def closes(self) -> dict[str, float]:
        """
        C{connectproxy_tunnel_closes_total} by reason.
        """
        return {
            reason: self.value("connectproxy_tunnel_closes_total", reason=reason)
            for reason in CLOSE_REASONS
        }

    def tunnel(self, target: str = "example.com:443") -> tuple[FakeClient, Any]:
        """
        Open a tunnel: its client and its upstream's connect attempt.
        """
        client = self.harness.connectClient()
        client.send(connectHead(target))
        attempt = self.harness.connector.attempts[-1]
        attempt.succeed()
        assert client.transport.value() == ESTABLISHED
        return client, attempt


def counts(**nonZero: float) -> dict[str, float]:
    """
    C{connectproxy_requests_total} by result: zero but for C{nonZero}.
    """
    return {result: float(nonZero.get(result, 0)) for result in REQUEST_RESULTS}


def closeCounts(**nonZero: float) -> dict[str, float]:
    """
    C{connectproxy_tunnel_closes_total} by reason: zero but for C{nonZero}.
    """
    return {reason: float(nonZero.get(reason, 0)) for reason in CLOSE_REASONS}


def finish(client: FakeClient, attempt: ConnectAttempt) -> None:
    """
    Both sides of a tunnel that is closing are gone.
    """
    client.lose()
    attempt.loseUpstream()


# The observer and its metrics


def test_providesObserver() -> None:
    """
    L{MetricsObserver} is an L{IProxyObserver}.
    """
    assert verifyObject(IProxyObserver, MetricsObserver(ProxyHarness().factory))


def test_ownRegistry() -> None:
    """
    The metrics are in a registry of their own, never in
    C{prometheus_client}'s global one; two proxies in one process each have
    theirs.
    """
    from prometheus_client import REGISTRY

    first, second = Metrics(), Metrics()
    assert isinstance(first.registry, CollectorRegistry)
    assert first.registry is not REGISTRY and first.registry is not second.registry
    assert REGISTRY.get_sample_value("connectproxy_tunnels_active") is None


def test_everyMetricBeforeTraffic() -> None:
    """
    Before any traffic every metric is there, each label value of the
    counters with 0, so that rates and alerts work from the first scrape.
    """
    metrics = Metrics()
    assert metrics.requests() == counts()
    assert metrics.closes() == closeCounts()
    assert metrics.bytes() == (0, 0)
    assert metrics.value("connectproxy_info", version=__version__) == 1
    for name in (
        "connectproxy_tunnels_active",
        "connectproxy_auth_failures_total",
        "connectproxy_connections_shed_total",
        "connectproxy_access_log_dropped_lines_total",
        "connectproxy_connections_total",
        "connectproxy_connections_active",
        "connectproxy_upstream_connect_seconds_count",
        "connectproxy_upstream_connect_seconds_sum",
        "connectproxy_tunnel_duration_seconds_count",
        "connectproxy_tunnel_duration_seconds_sum",
    ):
        assert metrics.value(name) == 0, name
    maxConnections = metrics.harness.factory.settings.maxConnections
    assert metrics.value("connectproxy_max_connections") == maxConnections
    assert metrics.value("process_open_fds") > 0


def test_accessLogDroppedLines() -> None:
    """
    The lines the access-log file lost are read at scrape time.
    """
    metrics = Metrics()
    lost = [0]
    metrics.observer.accessLogDropped = lambda: lost[0]
    assert metrics.value("connectproxy_access_log_dropped_lines_total") == 0
    lost[0] = 7
    assert metrics.value("connectproxy_access_log_dropped_lines_total") == 7


def test_requestResults() -> None:
    """
    C{connectproxy_requests_total} counts each answered request once, by
    the result of its outcome: tunnels (ok), malformed and non-CONNECT heads,
    refused ports, upstream failures, connect deadlines and a broken policy.
    """
    metrics = Metrics(makeHarness(policies=[]))
    harness = metrics.harness
    for _ in range(3):
        metrics.tunnel()
    harness.connectClient().send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    harness.connectClient().send(b"NOT HTTP\r\n\r\n")
    harness.connectClient().send(connectHead("example.com:25"))
    harness.connectClient().send(CONNECT)
    harness.connector.attempts[-1].fail(ConnectionRefusedError())
    harness.connectClient().send(CONNECT)
    harness.clock.advance(harness.factory.settings.connectTimeout)
    assert metrics.requests() == counts(
        ok=3, bad_request=2, denied=1, upstream_failed=1, timeout=1
    )
    assert metrics.value("connectproxy_tunnels_active") == 3
    assert metrics.value("connectproxy_connections_total") == 8
    assert metrics.value("connectproxy_connections_active") == 8


def test_errorResult() -> None:
    """
    A request a broken policy refused counts as C{error}.
    """
    metrics = Metrics(makeHarness(policies=[RaisingPolicy()]))
    metrics.harness.connectClient().send(CONNECT)
    assert metrics.requests() == counts(error=1)


def test_authentication() -> None:
    """
    A request without credentials and one with wrong credentials both count
    as C{auth_required} (both are 407 challenges); only the wrong ones count
    in C{connectproxy_auth_failures_total}.  No user name becomes a label.
    """
    harness, _ = authHarness()
    metrics = Metrics(harness)
    harness.connectClient().send(CONNECT)
    for _ in range(2):
        wrong = connectHead("example.com:443", basic(b"mallory:guess"))
        harness.connectClient().send(wrong)
    harness.connectClient().send(connectHead("example.com:443", basic(GOOD)))
    harness.connector.attempts[-1].succeed()
    assert metrics.requests() == counts(ok=1, auth_required=3)
    assert metrics.value("connectproxy_auth_failures_total") == 2
    assert "mallory" not in exposition(metrics.registry)
    assert "alice" not in exposition(metrics.registry)


def test_overloadedAndShed() -> None:
    """
    Connections over C{--max-connections} answered 503 count as
    C{overloaded}; those shed without a response are not answered requests
    and count in C{connectproxy_connections_shed_total} only.
    """
    metrics = Metrics(ProxyHarness(ProxySettings(maxConnections=1)))
    harness = metrics.harness
    harness.connectClient()
    # Refusals linger until their client reads the response: 16 of them on
    # top of the limit and further connections are shed.
    for _ in range(16):
        harness.connectClient()
    for _ in range(2):
        harness.connectClient()
    assert metrics.requests() == counts(overloaded=16)
    assert metrics.value("connectproxy_connections_shed_total") == 2
    assert metrics.value("connectproxy_connections_total") == 19
    assert metrics.value("connectproxy_max_connections") == 1


def test_abandonedNotCounted() -> None:
    """
    A client that goes away while its target is connected was not answered:
    no result counts it.
    """
    metrics = Metrics()
    client = metrics.harness.connectClient()
    client.send(CONNECT)
    client.lose()
    assert metrics.harness.observer.refused[0].outcome == Outcome.ABANDONED
    assert metrics.requests() == counts()
    assert metrics.value("connectproxy_connections_active") == 0


def test_bytesOfOpenAndClosedTunnels() -> None:
    """
    The byte counters are the bytes of the closed tunnels plus, at scrape
    time, those the open tunnels have relayed so far; a tunnel's bytes are
    counted once, whether it is open, closing, or closed.
    """
    metrics = Metrics()
    sent = [(100, 1000), (2, 20), (7, 0)]
    tunnels = []
    for up, down in sent:
        client, attempt = metrics.tunnel()
        client.send(b"u" * up)
        attempt.protocol.dataReceived(b"d" * down)
        tunnels.append((client, attempt))
    assert metrics.bytes() == (109, 1020)
    assert metrics.value("connectproxy_tunnels_active") == 3
    first, firstAttempt = tunnels[0]
    first.send(b"u" * 5)
    assert metrics.bytes() == (114, 1020)
    first.lose()
    # Closing, its upstream not gone yet: still open, counted once.
    assert metrics.bytes() == (114, 1020)
    assert metrics.value("connectproxy_tunnels_active") == 3
    firstAttempt.loseUpstream()
    assert metrics.bytes() == (114, 1020)
    assert metrics.value("connectproxy_tunnels_active") == 2
    for client, attempt in tunnels[1:]:
        finish(client, attempt)
    assert metrics.bytes() == (114, 1020)
    assert metrics.value("connectproxy_tunnels_active") == 0
    assert metrics.closes() == closeCounts(client_closed=3)
    assert metrics.value("connectproxy_tunnel_duration_seconds_count") == 3


def test_bytesNeverGoBack() -> None:
    """
    Scraped after every event of many tunnels' lives, the byte counters
    never decrease.
    """
    metrics = Metrics()
    seen = [metrics.bytes()]

    def scrape() -> None:
        now = metrics.bytes()
        assert now[0] >= seen[-1][0] and now[1] >= seen[-1][1], (seen[-1], now)
        seen.append(now)

    open = []
    for n in range(1, 6):
        client, attempt = metrics.tunnel()
        open.append((client, attempt))
        client.send(b"x" * n)
        scrape()
        attempt.protocol.dataReceived(b"y" * 2 * n)
        scrape()
    for client, attempt in open:
        if len(open) % 2:
            attempt.loseUpstream()
            scrape()
            client.lose()
        else:
            client.lose()
            scrape()
            attempt.loseUpstream()
        scrape()
    assert seen[-1] == (15, 30)


def test_timings() -> None:
    """
    The upstream connect time of every tunnel established, and the duration
    of every tunnel closed, are counted in their histograms, by the proxy's
    clock; a bucket holds the values up to and including its bound.
    """
    metrics = Metrics()
    harness = metrics.harness
    for wait in (0.05, 2.0):
        client = harness.connectClient()
        client.send(CONNECT)
        harness.clock.advance(wait)
        harness.connector.attempts[-1].succeed()
    name = "connectproxy_upstream_connect_seconds"
    assert metrics.value(name + "_count") == 2
    assert metrics.value(name + "_sum") == pytest.approx(2.05)
    assert metrics.value(name + "_bucket", le="0.025") == 0
    assert metrics.value(name + "_bucket", le="0.05") == 1
    assert metrics.value(name + "_bucket", le="1.0") == 1
    assert metrics.value(name + "_bucket", le="2.5") == 2
    assert metrics.value(name + "_bucket", le="+Inf") == 2
    harness.clock.advance(90)
    for protocol in list(harness.factory.connections):
        protocol.connectionLost()
    for attempt in harness.connector.attempts:
        attempt.loseUpstream()
    name = "connectproxy_tunnel_duration_seconds"
    assert metrics.value(name + "_count") == 2
    # Opened at 0.05 and 2.05 seconds, both closed at 92.05.
    assert metrics.value(name + "_sum") == pytest.approx(92.0 + 90.0)
    assert metrics.value(name + "_bucket", le="60.0") == 0
    assert metrics.value(name + "_bucket", le="300.0") == 2


def test_bucketBounds() -> None:
    """
    The histograms have increasing bounds, and +Inf last.
    """
    for bounds in (CONNECT_BUCKETS, DURATION_BUCKETS):
        assert list(bounds) == sorted(set(bounds))
    metrics = Metrics()
    les = [
        sample.labels["le"]
        for family in metrics.registry.collect()
        if family.name == "connectproxy_tunnel_duration_seconds"
        for sample in family.samples
        if sample.name.endswith("_bucket")
    ]
    assert les[-1] == "+Inf" and len(les) == len(DURATION_BUCKETS) + 1


def test_eventsAlone() -> None:
    """
    The observer counts the records it is given, with no proxy behind them
    but one to read open tunnels from: what a plugin or an embedding that
    reports its own events gets.
    """
    harness = ProxyHarness()
    observer = MetricsObserver(harness.factory)
    observer.requestRefused(RefusedRequest("c", "CONNECT", "h:1", 403, "no"))
    observer.requestRefused(
        RefusedRequest("c", "CONNECT", "h:1", 407, "bad", outcome="auth_failed")
    )
    observer.tunnelOpened(TunnelRecord("c", "h", 1, "u", connectTime=0.2))
    observer.tunnelClosed(
        TunnelRecord("c", "h", 1, "u", bytesUp=3, bytesDown=4, reason="idle timeout")
    )
    assert observer.requests == dict(counts(ok=1, denied=1, auth_required=1))
    assert observer.closes == dict(closeCounts(idle_timeout=1))
    assert observer.bytesRelayed() == (3, 4)
    assert observer.authFailures == 1


# Labels stay bounded


ALLOWED_LABELS = {
    "result": set(REQUEST_RESULTS),
    "reason": set(CLOSE_REASONS),
    "direction": {"up", "down"},
    "version": {__version__},
    "method": set(FORWARDED_METHODS),
    "status": set(STATUS_CLASSES),
}


def exposition(registry: CollectorRegistry) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode("utf-8")


def test_labelsBounded() -> None:
    """
    After traffic from many clients to many hosts, with users, every label
    of the proxy's metrics is one of a fixed set: no host, client address
    or user name.
    """
    harness, _ = authHarness()
    metrics = Metrics(harness)
    for n in range(20):
        client = harness.connectClient(IPv4Address("TCP", "127.0.0.1", 50000 + n))
        client.send(connectHead(f"host{n}.example.com:443", basic(GOOD)))
        attempt = harness.connector.attempts[-1]
        attempt.succeed()
        client.send(b"data")
        finish(client, attempt)
    harness.connectClient().send(connectHead("x.example:443", basic(b"mallory:no")))
    samples = 0
    for family in metrics.registry.collect():
        if not family.name.startswith("connectproxy_"):
            continue
        for sample in family.samples:
            samples += 1
            for label, value in sample.labels.items():
                if label == "le":
                    float(value)
                    continue
                assert value in ALLOWED_LABELS[label], (sample.name, label, value)
    assert samples < 80
    text = exposition(metrics.registry)
    for secret in ("host1", "example", "127.0.0.1", "alice", "mallory", "5000"):
        assert secret not in text


# Close reasons


def closeReasonPaths() -> Iterator[tuple[str, str, Callable[[Metrics], None]]]:
    """
    Every way the proxy closes a tunnel, with the label it should get: an
    id, the label, and what closes the tunnel of a harness.
    """

    def clientFIN(metrics: Metrics) -> None:
        client, attempt = metrics.tunnel()
        client.protocol.readConnectionLost()
        finish(client, attempt)

    def clientHalfCloseThenUpstream(metrics: Metrics) -> None:
        client, attempt = metrics.tunnel()
        client.protocol.tunnel.halfClose = lambda transport: True
        client.protocol.readConnectionLost()
        attempt.protocol.readConnectionLost()
        finish(client, attempt)

    def clientClosed(metrics: Metrics) -> None:
        finish(*metrics.tunnel())

    def upstreamFIN(metrics: Metrics) -> None:
        client, attempt = metrics.tunnel()
        attempt.protocol.readConnectionLost()
        attempt.loseUpstream()
        client.lose()

    def upstreamClosed(metrics: Metrics) -> None:
        client, attempt = metrics.tunnel()
        attempt.loseUpstream()
        client.lose()

    def clientReset(metrics: Metrics) -> None:
        client, attempt = metrics.tunnel()
        client.lose(ConnectionLost())
        attempt.loseUpstream()

    def upstreamReset(metrics: Metrics) -> None:
        client, attempt = metrics.tunnel()
        attempt.loseUpstream(ConnectionLost())
        client.lose()

    def idle(metrics: Metrics) -> None:
        client, attempt = metrics.tunnel()
        metrics.harness.clock.advance(metrics.harness.factory.settings.idleTimeout)
        finish(client, attempt)

    def halfCloseIdle(metrics: Metrics) -> None:
        client, attempt = metrics.tunnel()
        client.protocol.tunnel.halfClose = lambda transport: True
        client.protocol.readConnectionLost()
        settings = metrics.harness.factory.settings
        metrics.harness.clock.advance(settings.halfCloseTimeout)
        finish(client, attempt)

    def shutdown(metrics: Metrics) -> None:
        client, attempt = metrics.tunnel()
        metrics.harness.factory.closeAll()
        finish(client, attempt)

    yield "client FIN", "client_closed", clientFIN
    yield "client half-close", "client_closed", clientHalfCloseThenUpstream
    yield "client closed", "client_closed", clientClosed
    yield "upstream FIN", "upstream_closed", upstreamFIN
    yield "upstream closed", "upstream_closed", upstreamClosed
    yield "client reset", "error", clientReset
    yield "upstream reset", "error", upstreamReset
    yield "idle timeout", "idle_timeout", idle
    yield "half-close timeout", "idle_timeout", halfCloseIdle
    yield "shutdown", "shutdown", shutdown


@pytest.mark.parametrize(
    "label, close",
    [pytest.param(label, close, id=name) for name, label, close in closeReasonPaths()],
)
def test_closeReasonLabel(label: str, close: Callable[[Metrics], None]) -> None:
    """
    The close reason of each way a tunnel ends is one the metrics know (not
    an unknown one counted as an error), and gets its label.
    """
    metrics = Metrics()
    close(metrics)
    [record] = metrics.harness.observer.closed
    assert isKnownCloseReason(record.reason), record.reason
    assert closeReasonLabel(record.reason) == label
    assert metrics.closes() == closeCounts(**{label: 1})


def test_everyLabelHasAPath() -> None:
    """
    Each close reason label is produced by some way of closing a tunnel.
    """
    assert {label for _, label, _ in closeReasonPaths()} == set(CLOSE_REASONS)


@pytest.mark.parametrize(
    "reason, label",
    [
        ("shutdown: drain deadline passed", "shutdown"),
        ("client connection lost: Connection was aborted", "error"),
        ("something new", "error"),
        (None, "error"),
    ],
)
def test_otherReasons(reason: str | None, label: str) -> None:
    """
    A shutdown with a detail is a shutdown; a reason the metrics do not
    know, or none, is an error (and not a known reason).
    """
    assert closeReasonLabel(reason) == label
    assert isKnownCloseReason(reason) == (label == "shutdown" or "lost:" in str(reason))
