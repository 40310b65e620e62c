# -*- test-case-name: tests.test_admin -*-
"""
Tests for the metrics listener (L{connectproxy._admin}): C{/metrics} and
C{/healthz} answered by the real site over a memory transport, the
C{--metrics} option, and how C{makeService} wires the metrics and their
listeners into the proxy.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openMetricsFamilies,
)
from prometheus_client.parser import text_string_to_metric_families
from twisted.application.service import IService, MultiService
from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogEvent
from twisted.python.usage import UsageError
from twisted.web.server import Site

from connectproxy import __version__
from connectproxy._admin import (
    ADMIN_TIMEOUT,
    AdminListenerService,
    AdminSite,
    HealthResource,
    MetricsResource,
    addMetrics,
    adminRoot,
)
from connectproxy._metrics import MetricsObserver, metricsRegistry
from connectproxy._service import ListenerService, ListenFailed, proxyListeners
from connectproxy.tap import Options, makeService
from connectproxy.testing import ProxyHarness, connectHead
from tests._helpers import writeConfig
from tests.test_listeners import inherited  # noqa: F401 (a fixture)
from tests.test_service import InterfaceReactor

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Answer:
    """
    An HTTP response read from a transport.
    """

    status: int
    headers: dict[str, str]
    body: bytes

    def text(self) -> str:
        return self.body.decode("utf-8")


def request(
    site: Site, method: str, path: str, *fields: str, version: str = "1.0"
) -> Answer:
    """
    Send one request to C{site} over a memory transport and read the
    response (HTTP/1.0: its body runs to the end of the connection).
    """
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    assert protocol is not None
    transport = StringTransport()
    protocol.makeConnection(transport)
    head = "\r\n".join([f"{method} {path} HTTP/{version}", "Host: metrics", *fields])
    protocol.dataReceived((head + "\r\n\r\n").encode("latin-1"))
    raw = transport.value()
    head, _, body = raw.partition(b"\r\n\r\n")
    statusLine, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(": ")
        headers[name.lower()] = value
    return Answer(int(statusLine.split(" ")[1]), headers, body)


@dataclass
class FakeListener:
    """
    What the health check reads of a proxy listener.
    """

    isListening: bool = True


class Admin:
    """
    A proxy harness with its metrics and the metrics listener's site.
    """

    def __init__(self, listeners: list[Any] | None = None) -> None:
        self.harness = ProxyHarness()
        self.observer = MetricsObserver(self.harness.factory)
        self.harness.addObserver(self.observer)
        self.registry = metricsRegistry(self.observer)
        self.health = HealthResource(
            self.harness.factory, [FakeListener()] if listeners is None else listeners
        )
        root = adminRoot(MetricsResource(self.registry), self.health)
        self.site = AdminSite(root, self.harness.clock)

    def get(self, path: str, *fields: str) -> Answer:
        return request(self.site, "GET", path, *fields)

    def traffic(self) -> None:
        """
        Two tunnels (one closed, one open) with known bytes, and two
        refusals.
        """
        harness = self.harness
        for up, down in ((10, 200), (3, 40)):
            client = harness.connectClient()
            client.send(connectHead())
            attempt = harness.connector.attempts[-1]
            attempt.succeed()
            client.send(b"u" * up)
            attempt.protocol.dataReceived(b"d" * down)
        client.lose()
        attempt.loseUpstream()
        harness.connectClient().send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        harness.connectClient().send(connectHead("example.com:25"))


def samples(families: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """
    Every sample of the proxy's own metrics, by name and labels.
    """
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families
        if family.name.startswith("connectproxy")
        for sample in family.samples
    }


# /metrics


def test_metricsText() -> None:
    """
    C{GET /metrics} answers the Prometheus text format, never to be cached,
    with the exact figures of the traffic so far, the bytes of the open
    tunnel included.
    """
    admin = Admin()
    admin.traffic()
    answer = admin.get("/metrics")
    assert answer.status == 200
    assert answer.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert answer.headers["cache-control"] == "no-store"
    found = samples(text_string_to_metric_families(answer.text()))
    expected = {
        ("connectproxy_info", (("version", __version__),)): 1.0,
        ("connectproxy_requests_total", (("result", "ok"),)): 2.0,
        ("connectproxy_requests_total", (("result", "bad_request"),)): 1.0,
        ("connectproxy_requests_total", (("result", "denied"),)): 1.0,
        ("connectproxy_tunnels_active", ()): 1.0,
        ("connectproxy_tunnel_bytes_total", (("direction", "up"),)): 13.0,
        ("connectproxy_tunnel_bytes_total", (("direction", "down"),)): 240.0,
        ("connectproxy_tunnel_closes_total", (("reason", "client_closed"),)): 1.0,
        ("connectproxy_tunnel_duration_seconds_count", ()): 1.0,
        ("connectproxy_upstream_connect_seconds_count", ()): 2.0,
        ("connectproxy_connections_total", ()): 4.0,
        ("connectproxy_connections_active", ()): 3.0,
    }
    assert {key: found[key] for key in expected} == expected
    others = {key: value for key, value in found.items() if key not in expected}
    nonZero = {
        key
        for key, value in others.items()
        if value
        and not key[0].endswith(("_bucket", "_sum"))
        and key[0] != "connectproxy_max_connections"
    }
    assert nonZero == set()
    assert "process_cpu_seconds_total" in answer.text()


def test_metricsOpenMetrics() -> None:
    """
    A scraper that asks for OpenMetrics gets it, with the same figures and
    its C{# EOF} end.
    """
    admin = Admin()
    admin.traffic()
    accept = "Accept: application/openmetrics-text; version=1.0.0, text/plain;q=0.5"
    answer = admin.get("/metrics", accept)
    assert answer.status == 200
    assert answer.headers["content-type"].startswith(
        "application/openmetrics-text; version=1.0.0"
    )
    assert answer.text().endswith("# EOF\n")
    found = samples(openMetricsFamilies(answer.text()))
    assert found[("connectproxy_requests_total", (("result", "ok"),))] == 2.0
    assert found[("connectproxy_tunnel_bytes_total", (("direction", "down"),))] == 240
    assert found[("connectproxy_info", (("version", __version__),))] == 1.0
    assert admin.get("/metrics").headers["vary"] == "Accept, Accept-Encoding"


def test_metricsCompressed() -> None:
    """
    A scraper that accepts gzip gets the metrics compressed.
    """
    admin = Admin()
    admin.traffic()
    answer = admin.get("/metrics", "Accept-Encoding: gzip")
    assert answer.headers["content-encoding"] == "gzip"
    text = gzip.decompress(answer.body).decode("utf-8")
    plain = admin.get("/metrics").text()
    own = [line for line in text.splitlines() if line.startswith("connectproxy")]
    assert own == [line for line in plain.splitlines() if line.startswith("connect")]


def test_metricsMethods() -> None:
    """
    C{HEAD /metrics} answers the head alone; other methods get 405.
    """
    admin = Admin()
    head = request(admin.site, "HEAD", "/metrics")
    assert (head.status, head.body) == (200, b"")
    post = request(admin.site, "POST", "/metrics")
    assert (post.status, post.headers["allow"]) == (405, "GET, HEAD")


def test_otherPaths() -> None:
    """
    C{/} says what is served; anything else is 404.
    """
    admin = Admin()
    index = admin.get("/")
    assert index.status == 200
    assert index.text().startswith(f"connectproxy {__version__}\n")
    assert "/metrics" in index.text() and "/healthz" in index.text()
    assert admin.get("/favicon.ico").status == 404
    assert admin.get("/metrics/more").status == 404
    assert admin.get("/metrics/").status == 200
    assert admin.get("/healthz/x").status == 404
    assert admin.get("/connect").status == 404


def test_siteQuiet(logEvents: list[LogEvent]) -> None:
    """
    The site logs nothing per request and starts no timer of its own; idle
    connections to it are closed after L{ADMIN_TIMEOUT}.
    """
    admin = Admin()
    admin.site.doStart()
    for _ in range(3):
        admin.get("/metrics")
    admin.site.doStop()
    assert admin.harness.clock.getDelayedCalls() == []
    assert [
        e for e in logEvents if "log_namespace" in e and "web" in e["log_namespace"]
    ] == []
    assert admin.site.timeOut == ADMIN_TIMEOUT


# /healthz


def test_healthy() -> None:
    """
    While the proxy accepts requests, C{/healthz} answers 200 and C{ok}.
    """
    answer = Admin().get("/healthz")
    assert (answer.status, answer.body) == (200, b"ok\n")
    assert answer.headers["content-type"] == "text/plain; charset=utf-8"
    assert answer.headers["cache-control"] == "no-store"


def test_unhealthyWhileDraining() -> None:
    """
    Once the proxy drains, C{/healthz} answers 503 and C{draining}.
    """
    admin = Admin()
    admin.harness.factory.drain()
    answer = admin.get("/healthz")
    assert (answer.status, answer.body) == (503, b"draining\n")


@pytest.mark.parametrize(
    "listeners, status",
    [
        ([], 503),
        ([FakeListener(False)], 503),
        ([FakeListener(False), FakeListener(True)], 200),
    ],
)
def test_listenersListening(listeners: list[FakeListener], status: int) -> None:
    """
    C{/healthz} answers 503 and C{not listening} when no proxy listener
    listens, and 200 as long as one does.
    """
    answer = Admin(listeners).get("/healthz")
    assert answer.status == status
    if status == 503:
        assert answer.body == b"not listening\n"


def test_healthHead() -> None:
    """
    C{HEAD /healthz} answers the status without a body.
    """
    admin = Admin()
    admin.harness.factory.drain()
    answer = request(admin.site, "HEAD", "/healthz")
    assert (answer.status, answer.body) == (503, b"")


# The metrics listener


def test_listenerLogsAddress(logEvents: list[LogEvent]) -> None:
    """
    A metrics listener says where it listens once it does
    (C{metrics_listening}), with its description.
    """
    reactor = InterfaceReactor()
    site = Admin().site
    listener = AdminListenerService(reactor, "tcp:9108:interface=127.0.0.1", site)
    listener.privilegedStartService()
    listener.startService()
    [event] = [e for e in logEvents if e.get("event") == "metrics_listening"]
    assert (event["address"], event["host"], event["port"]) == (
        "127.0.0.1:9108",
        "127.0.0.1",
        9108,
    )
    assert event["description"] == "tcp:9108:interface=127.0.0.1"
    [(port, factory, _, interface)] = reactor.tcpServers
    assert (port, factory, interface) == (9108, site, "127.0.0.1")
    listener.stopService()


def test_listenerCannotListen() -> None:
    """
    A metrics listener that cannot listen stops the start with
    L{ListenFailed}, naming C{--metrics} and its description.
    """

    class FailingReactor(MemoryReactorClock):
        def listenTCP(self, *args: Any, **kwargs: Any) -> Any:
            raise CannotListenError("127.0.0.1", 9108, OSError(98, "Address in use"))

    description = "tcp:9108:interface=127.0.0.1"
    listener = AdminListenerService(FailingReactor(), description, Admin().site)
    with pytest.raises(ListenFailed) as raised:
        listener.privilegedStartService()
    assert str(raised.value) == "cannot listen on 127.0.0.1:9108: Address in use"
    assert raised.value.code == (
        "connectproxy: cannot listen on 127.0.0.1:9108: Address in use "
        f"(--metrics {description})"
    )


def test_addMetrics() -> None:
    """
    L{addMetrics} makes the metrics of the proxy of an observer context and
    one metrics listener per description, added to the context's services
    and sharing one site.
    """
    harness = ProxyHarness()
    context = harness.observerContext()
    server = addMetrics(["tcp:9108:interface=127.0.0.1", "unix:/run/m.sock"], context)
    assert list(harness.services) == list(server.listeners)
    first, second = server.listeners
    assert first.factory is second.factory
    assert server.registry.get_sample_value("connectproxy_tunnels_active") == 0
    assert server.health.listeners == ()


# --metrics


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def test_optionRepeats() -> None:
    """
    C{--metrics} repeats; none by default.
    """
    assert parse()["metrics"] == []
    options = parse("--metrics", "tcp:9108", "--metrics", "unix:/run/m.sock")
    assert options["metrics"] == ["tcp:9108", "unix:/run/m.sock"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--metrics", "nope:9108"], "--metrics 'nope:9108' is not a valid listener"),
        (
            ["--metrics", "tcp:3128:interface=127.0.0.1"],
            "--metrics 'tcp:3128:interface=127.0.0.1' and --listen "
            "'tcp:3128:interface=127.0.0.1' both listen on 127.0.0.1:3128: give "
            "the metrics a port of their own",
        ),
        (
            ["--metrics", "tcp:9108", "--metrics", "tcp:9108:interface=0.0.0.0"],
            "--metrics 'tcp:9108:interface=0.0.0.0' and --metrics 'tcp:9108' "
            "both listen on 0.0.0.0:9108",
        ),
        # Every address of the family takes the loopback one too.
        (
            [
                "--listen",
                "tcp:19200",
                "--metrics",
                "tcp:19200:interface=127.0.0.1",
            ],
            "--metrics 'tcp:19200:interface=127.0.0.1' and --listen 'tcp:19200' "
            "overlap: ",
        ),
        (
            ["--metrics", "tcp:19210", "--metrics", "tcp:19210:interface=127.0.0.1"],
            "--metrics 'tcp:19210:interface=127.0.0.1' and --metrics 'tcp:19210' "
            "overlap: ",
        ),
    ],
)
def test_optionErrors(argv: list[str], message: str) -> None:
    """
    A description that does not parse, or that listens where a proxy
    listener or another metrics listener does, is refused before anything
    listens.
    """
    with pytest.raises(UsageError) as raised:
        parse(*argv)
    assert str(raised.value).startswith(message)


def test_optionPortZeroTwice() -> None:
    """
    Port 0 asks for a free port each time: it never collides.
    """
    description = "tcp:0:interface=127.0.0.1"
    options = parse("--listen", description, "--metrics", description)
    assert options["metrics"] == [description]


def test_optionFromFile(tmp_path: Path) -> None:
    """
    The configuration file's C{metrics} key is a list, and an address
    collision through it names the file.
    """
    path = writeConfig(tmp_path, 'metrics = ["tcp:3128:interface=127.0.0.1"]\n')
    with pytest.raises(UsageError, match=r"\(check .*proxy\.toml\)$"):
        parse("--config", str(path))
    path.write_text('metrics = "tcp:9108:interface=127.0.0.1"\n')
    assert parse("--config", str(path))["metrics"] == ["tcp:9108:interface=127.0.0.1"]


def test_checkConfig(capsys: pytest.CaptureFixture[str]) -> None:
    """
    C{--check-config} says where each metrics listener would listen.
    """
    with pytest.raises(SystemExit):
        parse(
            "--check-config",
            "--metrics",
            "tcp:9108:interface=127.0.0.1",
            "--metrics",
            "unix:/run/m.sock",
        )
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:3] == [
        "metrics tcp:9108:interface=127.0.0.1 -> 127.0.0.1:9108 "
        "(http: /metrics, /healthz)",
        "metrics unix:/run/m.sock -> unix:/run/m.sock (http: /metrics, /healthz)",
    ]


def test_systemdSocketMissing(capsys: pytest.CaptureFixture[str]) -> None:
    """
    A C{systemd:} metrics listener without its socket is refused, naming
    C{--metrics}; C{--check-config} only notes it.
    """
    description = "systemd:domain=INET:index=0"
    with pytest.raises(UsageError, match=r"^--metrics 'systemd:domain"):
        parse("--metrics", description)
    with pytest.raises(SystemExit):
        parse("--check-config", "--metrics", description)
    line = capsys.readouterr().out.splitlines()[1]
    assert line.startswith(f"metrics {description} -> a socket from systemd")


# makeService


def metricsService(*argv: str) -> tuple[MultiService, Any]:
    """
    The proxy's service with C{--metrics}, on a memory reactor, and the
    site of its metrics listener.
    """
    options = parse(
        "--listen",
        "tcp:3128:interface=127.0.0.1",
        "--metrics",
        "tcp:9108:interface=127.0.0.1",
        *argv,
    )
    service = makeService(options, InterfaceReactor())
    observers = service.getServiceNamed("observers")
    [listener] = list(observers)
    assert isinstance(listener, AdminListenerService)
    return service, listener.factory


def proxyFactory(service: IService) -> Any:
    [listener] = proxyListeners(service)
    return listener.factory


def test_makeServiceWiresMetrics() -> None:
    """
    With C{--metrics}, the metrics are told what the proxy does, besides
    the access log, and the metrics listener is among the services of the
    observers: it starts before the proxy's listeners and stops after them.
    """
    service, site = metricsService()
    factory = proxyFactory(service)
    kinds = [type(o).__name__ for o in factory.observer.observers]
    assert kinds == ["AccessLogObserver", "MetricsObserver"]
    names = [s.name for s in service]
    assert names.index("observers") < names.index("reload")
    assert request(site, "GET", "/healthz").status == 503
    service.privilegedStartService()
    service.startService()
    assert request(site, "GET", "/healthz").body == b"ok\n"
    factory.drain()
    assert request(site, "GET", "/healthz").body == b"draining\n"
    factory.draining = False
    service.stopService()
    # Stopping drains first (and the listeners are gone): 503 either way.
    stopped = request(site, "GET", "/healthz")
    assert stopped.status == 503
    assert stopped.body in (b"draining\n", b"not listening\n")


def test_makeServiceCountsTraffic() -> None:
    """
    The metrics C{makeService} wires count the traffic of the proxy's
    factory.
    """
    service, site = metricsService()
    factory = proxyFactory(service)
    peer = IPv4Address("TCP", "127.0.0.1", 40000)
    protocol = factory.buildProtocol(peer)
    protocol.makeConnection(StringTransport(peerAddress=peer))
    protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    text = request(site, "GET", "/metrics").text()
    assert 'connectproxy_requests_total{result="bad_request"} 1.0' in text


def test_makeServiceWithObservers() -> None:
    """
    Observers given to C{makeService} are told alongside the metrics.
    """
    from connectproxy.testing import RecordingObserver

    recording = RecordingObserver()
    options = parse("--metrics", "tcp:9108:interface=127.0.0.1")
    service = makeService(options, InterfaceReactor(), observers=[recording])
    kinds = [type(o).__name__ for o in proxyFactory(service).observer.observers]
    assert kinds == ["RecordingObserver", "MetricsObserver"]


def test_reloadKeepsMetrics(tmp_path: Path, logEvents: list[LogEvent]) -> None:
    """
    A reload keeps the metrics (their counts go on), and a change of
    C{--metrics} in the file is ignored until a restart, with a warning.
    """
    path = writeConfig(tmp_path, 'metrics = ["tcp:9108:interface=127.0.0.1"]\n')
    options = parse("--config", str(path))
    service = makeService(options, InterfaceReactor())
    factory = proxyFactory(service)
    [metrics] = [
        o for o in factory.observer.observers if type(o).__name__ == "MetricsObserver"
    ]
    path.write_text('metrics = ["tcp:9109:interface=127.0.0.1"]\n')
    assert service.getServiceNamed("reload").reload()
    assert metrics in factory.observer.observers
    assert [e for e in logEvents if e.get("event") == "reload_metrics_ignored"]


def test_noMetricsNoListener() -> None:
    """
    Without C{--metrics} there is no metrics listener and no metrics
    observer.
    """
    service = makeService(parse(), InterfaceReactor())
    assert list(service.getServiceNamed("observers")) == []
    kinds = [type(o).__name__ for o in proxyFactory(service).observer.observers]
    assert kinds == ["AccessLogObserver"]


def test_proxyListeners() -> None:
    """
    L{proxyListeners} finds the proxy's listeners anywhere in its service
    tree, and nothing else.
    """
    service = makeService(
        parse("--listen", "tcp:3128", "--listen", "tcp:3129"), InterfaceReactor()
    )
    listeners = proxyListeners(service)
    assert [listener.description for listener in listeners] == ["tcp:3128", "tcp:3129"]
    assert all(isinstance(listener, ListenerService) for listener in listeners)
    outer = MultiService()
    service.setServiceParent(outer)
    assert proxyListeners(outer) == listeners


def test_listenerListening() -> None:
    """
    A proxy listener says it listens from the moment its port does until it
    stops.
    """
    service = makeService(parse(), InterfaceReactor())
    [listener] = proxyListeners(service)
    assert not listener.isListening
    service.privilegedStartService()
    service.startService()
    assert listener.isListening
    service.stopService()
    assert not listener.isListening


def test_prometheusClientImportedLazily() -> None:
    """
    Neither the twistd plugin, nor the command line parsed and the proxy's
    service built without C{--metrics}, import C{prometheus_client}.
    """
    code = (
        "import sys; import twisted.plugins.connectproxy_plugin\n"
        "from twisted.internet.testing import MemoryReactorClock\n"
        "from connectproxy.tap import Options, makeService\n"
        "options = Options(); options.parseOptions([])\n"
        "makeService(options, MemoryReactorClock())\n"
        "print([m for m in sys.modules if m.startswith('prometheus_client')])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "[]"


def test_systemdSocketShared(inherited: list[int]) -> None:  # noqa: F811
    """
    A metrics listener on the systemd socket a proxy listener takes is
    refused; one on a socket of its own is not.
    """
    proxyFd, adminFd = inherited
    proxySocket = "systemd:domain=INET:name=proxy"
    shared = rf"both listen on systemd socket \(fd {proxyFd}\)"
    with pytest.raises(UsageError, match=shared):
        parse("--listen", proxySocket, "--metrics", "systemd:domain=INET:index=0")
    options = parse(
        "--listen", proxySocket, "--metrics", "systemd:domain=INET:name=admin"
    )
    assert [plan.fileno for plan in options.metricsPlans] == [adminFd]


def test_pluginEndpointsNeverCollide() -> None:
    """
    Listeners whose address is known only once they listen (an endpoint
    type of a plugin) are not compared.
    """
    from connectproxy._listeners import ListenerPlan
    from connectproxy.tap import _fixedAddress

    assert not _fixedAddress(ListenerPlan("plugin:x"))
    assert not _fixedAddress(ListenerPlan("tcp:0", host="", port=0))
    assert _fixedAddress(ListenerPlan("unix:/p", path="/p"))


def test_withoutPrometheusClient(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Without C{prometheus_client} installed, C{--metrics} is refused before
    anything listens, saying what to install; the proxy runs without it.
    """
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(UsageError, match=r"^--metrics needs the prometheus_client"):
        parse("--metrics", "tcp:9108:interface=127.0.0.1")
    assert parse()["metrics"] == []


def test_makeServiceCountsDroppedAccessLogLines(tmp_path: Path) -> None:
    """
    With C{--access-log} and C{--metrics}, the metrics read how many lines
    the access-log file lost.
    """
    options = parse(
        "--listen",
        "tcp:3128:interface=127.0.0.1",
        "--metrics",
        "tcp:9108:interface=127.0.0.1",
        "--access-log",
        str(tmp_path / "access.log"),
    )
    service = makeService(options, InterfaceReactor())
    factory = proxyFactory(service)
    [metrics] = [
        o for o in factory.observer.observers if type(o).__name__ == "MetricsObserver"
    ]
    writer = service.getServiceNamed("observers").getServiceNamed("accesslog").writer
    assert metrics.accessLogDropped is not None
    assert metrics.accessLogDropped() == 0
    writer.droppedLines = 3
    assert metrics.accessLogDropped() == 3
