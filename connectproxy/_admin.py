# -*- test-case-name: tests.test_admin -*-
"""
The metrics listener (C{--metrics}): a small HTTP server, apart from the
proxy's own listeners, with C{GET /metrics} (Prometheus text format, or
OpenMetrics when the scraper asks for it) and C{GET /healthz} (200 while the
proxy accepts requests, 503 while it drains or when none of its listeners
listens).

L{addMetrics} builds the whole of it for C{makeService}: the
L{MetricsObserver <connectproxy._metrics.MetricsObserver>}, its registry,
the site, and one listener per description, added to the services the
observers need running.

This module imports C{prometheus_client}: only C{--metrics} imports it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger, LogLevel
from twisted.web import http
from twisted.web.resource import EncodingResourceWrapper, Resource
from twisted.web.server import GzipEncoderFactory, Request, Site

from ._metrics import MetricsObserver, metricsRegistry
from ._observer import formatAddress
from ._observercontext import ObserverContext
from ._service import ListenFailed, _listenFailure
from ._version import __version__

__all__ = [
    "AdminListenerService",
    "AdminSite",
    "HealthResource",
    "MetricsResource",
    "MetricsServer",
    "addMetrics",
    "adminRoot",
]

#: Seconds a connection to the metrics listener may stay idle.
ADMIN_TIMEOUT = 60.0

_TEXT = b"text/plain; charset=utf-8"


def _noStore(request: Request, contentType: bytes) -> None:
    """
    Headers of every answer of the metrics listener: its type, and never
    to be kept by a cache in between (each answer is the state of now).
    """
    request.setHeader(b"Content-Type", contentType)
    request.setHeader(b"Cache-Control", b"no-store")


class _Leaf(Resource):
    """
    A resource with no children that answers C{GET} and C{HEAD} only: any
    other method gets 405 with C{Allow}, in plain text, and a path below it
    404.
    """

    isLeaf = True

    def render(self, request: Request) -> bytes:
        if any(request.postpath or ()):
            return _NotFound().render_GET(request)
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"Allow", b"GET, HEAD")
            _noStore(request, _TEXT)
            return b"405 Method Not Allowed: use GET\n"
        return self.render_GET(request)

    def render_GET(self, request: Request) -> bytes:
        raise NotImplementedError()


class _NotFound(_Leaf):
    """
    404, in plain text.
    """

    def render_GET(self, request: Request) -> bytes:
        request.setResponseCode(404)
        _noStore(request, _TEXT)
        return b"404 Not Found: try /metrics or /healthz\n"


class _Root(Resource):
    """
    The root of the metrics listener: its children, and 404 for anything
    else.
    """

    def getChild(self, path: bytes, request: Request) -> Resource:
        return _NotFound()


class MetricsResource(_Leaf):
    """
    C{GET /metrics}: the metrics of a registry, in the format the scraper
    asks for in its C{Accept} header: OpenMetrics 1.0 for
    C{application/openmetrics-text}, otherwise the Prometheus text format.

    The metrics are collected while the response is made, on the reactor
    thread, where the proxy's counters live: a scrape sees them as they
    are between two events, never halfway through one.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        """
        @param registry: Whose metrics to expose.
        """
        super().__init__()
        self._registry = registry

    def render_GET(self, request: Request) -> bytes:
        accept = request.getHeader(b"Accept")
        encode, contentType = choose_encoder(accept.decode("latin-1") if accept else "")
        _noStore(request, contentType.encode("ascii"))
        request.setHeader(b"Vary", b"Accept, Accept-Encoding")
        return encode(self._registry)


class _Draining(Protocol):
    """
    What the health check reads of the proxy: its L{ConnectProxyFactory
    <connectproxy.ConnectProxyFactory>}, or the supervisor of C{--workers}.
    """

    @property
    def draining(self) -> bool:
        """
        Whether it is shutting down.
        """


class _Listener(Protocol):
    """
    What the health check reads of a proxy listener
    (L{ListenerService <connectproxy._service.ListenerService>}).
    """

    @property
    def isListening(self) -> bool:
        """
        Whether its port listens now.
        """


class HealthResource(_Leaf):
    """
    C{GET /healthz}: whether the proxy accepts requests now, for load
    balancers and orchestrators: 200 and C{ok}, or 503 and why not
    (C{draining}: the proxy is shutting down; C{not listening}: none of
    its listeners listens, before they start or once they stopped).

    @ivar listeners: The proxy's listeners, given once they exist.
    """

    def __init__(self, proxy: _Draining, listeners: Sequence[_Listener] = ()) -> None:
        """
        @param proxy: The proxy's factory (or the supervisor of
            C{--workers}), whose C{draining} is read.
        @param listeners: The proxy's listeners.
        """
        super().__init__()
        self._proxy = proxy
        self.listeners = listeners

    def problem(self) -> str | None:
        """
        Why the proxy does not accept requests now, or C{None} when it does.
        """
        if self._proxy.draining:
            return "draining"
        if not any(listener.isListening for listener in self.listeners):
            return "not listening"
        return None

    def render_GET(self, request: Request) -> bytes:
        _noStore(request, _TEXT)
        problem = self.problem()
        if problem is None:
            return b"ok\n"
        request.setResponseCode(503)
        return problem.encode("ascii") + b"\n"


class _Index(_Leaf):
    """
    C{GET /}: what the metrics listener serves.
    """

    def render_GET(self, request: Request) -> bytes:
        _noStore(request, _TEXT)
        return (
            f"connectproxy {__version__}\n/metrics: Prometheus metrics\n"
            "/healthz: 200 while the proxy accepts requests, else 503\n"
        ).encode("ascii")


class AdminSite(Site):
    """
    The site of the metrics listener: no access log (a scrape every few
    seconds would fill the log), no timer of its own, idle connections
    closed after L{ADMIN_TIMEOUT}.
    """

    noisy = False

    def __init__(self, root: Resource, reactor: Any) -> None:
        """
        @param root: The root resource.
        @param reactor: The clock of the idle timeout.
        """
        super().__init__(root, timeout=ADMIN_TIMEOUT, reactor=reactor)

    def startFactory(self) -> None:
        # The base class starts a timer that keeps the access log's date.
        pass

    def stopFactory(self) -> None:
        pass

    def log(self, request: http.Request) -> None:
        pass


def adminRoot(metrics: Resource, health: HealthResource) -> Resource:
    """
    The resources of the metrics listener: C{/metrics} (gzip-compressed for
    a scraper that accepts it), C{/healthz} and an index at C{/}; anything
    else is 404.
    """

    root = _Root()
    root.putChild(b"", _Index())
    root.putChild(b"metrics", EncodingResourceWrapper(metrics, [GzipEncoderFactory()]))
    root.putChild(b"healthz", health)
    return root


class AdminListenerService(StreamServerEndpointService):
    """
    One metrics listener: it says where it listens once it does
    (C{metrics_listening}, useful with port 0), and stops the process with
    a clear message when it cannot listen.

    @ivar description: The C{--metrics} description it was made from.
    """

    _log = Logger()

    def __init__(
        self, reactor: Any, description: str, site: Site, announce: bool = True
    ) -> None:
        """
        @param reactor: The reactor to listen with.
        @param description: A strports description.
        @param site: What answers there.
        @param announce: Whether C{metrics_listening} is an C{info} event
            (C{debug} for the private socket a worker of C{--workers}
            serves its supervisor on).
        """
        super().__init__(serverFromString(reactor, description), site)
        self.description = description
        self._raiseSynchronously = True
        self._announce = announce

    def privilegedStartService(self) -> None:
        """
        Listen.

        @raise ListenFailed: When the listener cannot listen.
        """
        try:
            super().privilegedStartService()
        except Exception as e:
            where, reason = _listenFailure(e)
            raise ListenFailed(
                self.description, where, reason, option="--metrics"
            ) from None
        if self._waitingForPort is not None:
            self._waitingForPort.addCallback(self._listening)

    def _listening(self, port: IListeningPort) -> IListeningPort:
        address = port.getHost()
        self._log.emit(
            LogLevel.info if self._announce else LogLevel.debug,
            "metrics listening on {address} (/metrics, /healthz)",
            event="metrics_listening",
            address=formatAddress(address),
            host=getattr(address, "host", None),
            port=getattr(address, "port", None),
            description=self.description,
        )
        return port


@dataclass(frozen=True, slots=True)
class MetricsServer:
    """
    What L{addMetrics} made.

    @ivar observer: The metrics, to be told of what the proxy does.
    @ivar registry: The registry C{/metrics} exposes.
    @ivar health: C{/healthz}; give it the proxy's listeners
        (C{health.listeners = ...}) once they exist.
    @ivar listeners: The metrics listeners.
    """

    observer: MetricsObserver
    registry: CollectorRegistry
    health: HealthResource
    listeners: tuple[AdminListenerService, ...]


def addMetrics(
    descriptions: Iterable[str], context: ObserverContext, announce: bool = True
) -> MetricsServer:
    """
    Make the metrics of the proxy of C{context} and one metrics listener per
    description, added to C{context.services} (they start before the proxy's
    listeners and stop after them).

    @param descriptions: The strports descriptions of C{--metrics}.
    @param context: The proxy's reactor, factory and the services of its
        observers.
    @param announce: Whether the listeners say where they listen at the
        C{info} level (see L{AdminListenerService}).
    """
    observer = MetricsObserver(context.factory)
    registry = metricsRegistry(observer)
    health = HealthResource(context.factory)
    site = AdminSite(adminRoot(MetricsResource(registry), health), context.reactor)
    listeners = []
    for description in descriptions:
        listener = AdminListenerService(context.reactor, description, site, announce)
        listener.setServiceParent(context.services)
        listeners.append(listener)
    return MetricsServer(observer, registry, health, tuple(listeners))
