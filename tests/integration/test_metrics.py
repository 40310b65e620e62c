# -*- test-case-name: tests.integration.test_metrics -*-
"""
The proxy run with C{--metrics}, scraped with a real HTTP client after known
traffic through real sockets: exact figures for tunnels, refusals and
bytes (those of an open tunnel included), OpenMetrics on request, and
C{/healthz}.
"""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openMetricsFamilies,
)
from prometheus_client.parser import text_string_to_metric_families

from connectproxy import __version__
from tests.integration._modes import withWorkers
from tests.integration._processes import (
    REPO_ROOT,
    OriginFactory,
    ProxyFactory,
    ProxyProcess,
    proxyCommand,
    sourceEnvironment,
)
from tests.integration._sockets import (
    LOCAL,
    closedPort,
    connectRequest,
    dial,
    openTunnel,
    readExactly,
    readResponseHead,
    readToEnd,
)

pytestmark = pytest.mark.integration

METRICS = "tcp:0:interface=127.0.0.1"

RESULTS = (
    "ok",
    "bad_request",
    "auth_required",
    "denied",
    "upstream_failed",
    "timeout",
    "overloaded",
    "error",
)


@pytest.fixture
def session() -> Iterator[requests.Session]:
    """
    An HTTP client that ignores proxy settings of the environment.
    """
    with requests.Session() as client:
        client.trust_env = False
        yield client


class Scraper:
    """
    Scrapes one proxy's metrics listener.
    """

    def __init__(self, proxy: ProxyProcess, session: requests.Session) -> None:
        # With --workers, the supervisor's (each worker's is private).
        event = proxy.waitForEvent(
            lambda e: e.get("event") == "metrics_listening" and "worker" not in e
        )
        assert event["address"] == f"127.0.0.1:{event['port']}"
        self.url = f"http://127.0.0.1:{event['port']}"
        self.session = session

    def get(self, path: str, **headers: str) -> requests.Response:
        return self.session.get(self.url + path, headers=headers, timeout=10)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """
        Every sample of the proxy's own metrics, by name and labels.
        """
        response = self.get("/metrics")
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text)
            if family.name.startswith("connectproxy")
            for sample in family.samples
        }


def requestCounts(found: dict[Any, float]) -> dict[str, float]:
    return {
        r: found[("connectproxy_requests_total", (("result", r),))] for r in RESULTS
    }


def byteCounts(found: dict[Any, float]) -> tuple[float, float]:
    name = "connectproxy_tunnel_bytes_total"
    return found[(name, (("direction", "up"),))], found[
        (name, (("direction", "down"),))
    ]


def echoThrough(sock: socket.socket, rest: bytes, size: int) -> None:
    """
    Send C{size} bytes through a tunnel to the echo origin and read them
    back.
    """
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    sock.sendall(payload)
    assert rest + readExactly(sock, size - len(rest)) == payload


def refuse(proxyPort: int, head: bytes) -> int:
    """
    Send a request the proxy refuses; return the status.
    """
    with dial(proxyPort) as sock:
        sock.sendall(head)
        response, _ = readResponseHead(sock)
        readToEnd(sock)
    return response.status


def test_scrapeAfterKnownTraffic(
    origin: OriginFactory, proxy: ProxyFactory, session: requests.Session
) -> None:
    """
    After N tunnels with known bytes and K refusals, the metrics say exactly
    that; the bytes of a tunnel still open are counted while it is open, and
    once (not twice) after it closed.
    """
    echo = origin("echo")
    running = proxy("--metrics", METRICS, "--deny-host", "denied.example")
    scraper = Scraper(running, session)
    health = scraper.get("/healthz")
    assert (health.status_code, health.text) == (200, "ok\n")
    before = scraper.metrics()
    assert requestCounts(before) == dict.fromkeys(RESULTS, 0.0)
    assert byteCounts(before) == (0, 0)
    # N = 3 closed tunnels.
    sizes = [1, 1000, 70000]
    for size in sizes:
        sock, rest = openTunnel(running.port, echo.port)
        client = f"127.0.0.1:{sock.getsockname()[1]}"
        with sock:
            echoThrough(sock, rest, size)
        running.waitForNamed("tunnel_close", client=client)
    # K = 4 refusals.
    statuses = [
        refuse(running.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        refuse(running.port, b"BREW /pot HTTP/1.1\r\nHost: a\r\n\r\n"),
        refuse(running.port, connectRequest("denied.example", 443)),
        refuse(running.port, connectRequest(LOCAL, closedPort())),
    ]
    assert statuses == [400, 501, 403, 502]
    # A tunnel still open.
    sock, rest = openTunnel(running.port, echo.port)
    openClient = f"127.0.0.1:{sock.getsockname()[1]}"
    echoThrough(sock, rest, 5000)
    found = scraper.metrics()
    total = sum(sizes) + 5000
    assert requestCounts(found) == {
        **dict.fromkeys(RESULTS, 0.0),
        "ok": 4.0,
        "bad_request": 2.0,
        "denied": 1.0,
        "upstream_failed": 1.0,
    }
    assert byteCounts(found) == (total, total)
    assert found[("connectproxy_tunnels_active", ())] == 1
    assert found[("connectproxy_tunnel_duration_seconds_count", ())] == 3
    assert found[("connectproxy_upstream_connect_seconds_count", ())] == 4
    closes = "connectproxy_tunnel_closes_total"
    assert found[(closes, (("reason", "client_closed"),))] == 3
    assert found[("connectproxy_info", (("version", __version__),))] == 1
    sock.close()
    running.waitForNamed("tunnel_close", client=openClient)
    after = scraper.metrics()
    assert byteCounts(after) == (total, total)
    assert after[("connectproxy_tunnels_active", ())] == 0
    assert after[(closes, (("reason", "client_closed"),))] == 4
    assert after[("connectproxy_tunnel_duration_seconds_count", ())] == 4
    assert after[("connectproxy_connections_total", ())] == 8
    assert scraper.get("/healthz").status_code == 200


def test_openMetricsAndProcess(proxy: ProxyFactory, session: requests.Session) -> None:
    """
    A scraper that asks for OpenMetrics gets it, with the process metrics;
    the proxy's ports never answer metrics.
    """
    running = proxy("--metrics", METRICS)
    scraper = Scraper(running, session)
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    response = scraper.get("/metrics", Accept=accept)
    assert response.headers["Content-Type"].startswith(
        "application/openmetrics-text; version=1.0.0"
    )
    names = {family.name for family in openMetricsFamilies(response.text)}
    # OpenMetrics names an info family without its _info suffix.
    assert {"connectproxy_requests", "connectproxy", "process_cpu_seconds"} <= names
    assert (
        refuse(running.port, b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") == 400
    )


def test_metricsPortInUse(scratchDir: Any, workerArgs: tuple[str, ...]) -> None:
    """
    A metrics port already in use stops the proxy (with C{--workers}, the
    supervisor, which serves the metrics) with status 1 and one line naming
    C{--metrics}, without a traceback.
    """
    with socket.socket() as holder:
        holder.bind((LOCAL, 0))
        holder.listen()
        busy = holder.getsockname()[1]
        description = f"tcp:{busy}:interface=127.0.0.1"
        argv = proxyCommand(withWorkers(workerArgs, ["--metrics", description]))
        argv[argv.index("json")] = "text"
        result = subprocess.run(
            argv,
            env=sourceEnvironment(),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert output.rstrip().endswith(
        f"connectproxy: cannot listen on 127.0.0.1:{busy}: Address already in use "
        f"(--metrics {description})"
    )
    assert "Traceback" not in output


def test_healthzWhileDraining(
    proxy: ProxyFactory, origin: OriginFactory, session: requests.Session
) -> None:
    """
    After SIGTERM, while an open tunnel may still finish, C{/healthz} of a
    running proxy answers 503 C{draining} (a load balancer stops sending
    it clients), and the metrics are still served.
    """
    echo = origin("echo")
    p = proxy("--metrics", METRICS, "--shutdown-grace", "30")
    scraper = Scraper(p, session)
    assert scraper.get("/healthz").status_code == 200
    sock, _ = openTunnel(p.port, echo.port)
    with sock:
        p.process.send_signal(signal.SIGTERM)
        p.waitForDraining()
        health = scraper.get("/healthz")
        assert (health.status_code, health.text) == (503, "draining\n")
        assert scraper.metrics()[("connectproxy_tunnels_active", ())] == 1
        sock.sendall(b"still")
        assert readExactly(sock, 5) == b"still"
        p.process.send_signal(signal.SIGINT)
        p.waitForNamed("shutdown_forced")
