# -*- test-case-name: tests.test_shutdown -*-
"""
Tests for the draining shutdown (L{connectproxy._shutdown}): the steps of a
L{Drain} on a memory clock, the second signal, and the order in which
L{ProxyService} stops its services.  tests/integration/test_shutdown.py
drains a real process.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from twisted.application.service import Service
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent
from twisted.python.failure import Failure

from connectproxy import ProxySettings
from connectproxy._shutdown import FINAL_WAIT, Drain, ProxyService, ShutdownService
from connectproxy.tap import Options, makeService
from connectproxy.testing import FakeClient, HalfCloseableStringTransport, ProxyHarness
from tests.test_lifecycle import CONNECT, SHUTTING_DOWN, fired, tunnel

GRACE = 30.0
ABORT = 15.0


def harness(grace: float = GRACE) -> ProxyHarness:
    """
    A proxy whose shutdown grace and abort timeout are L{GRACE} and
    L{ABORT} unless told otherwise.
    """
    return ProxyHarness(ProxySettings(shutdownGrace=grace, abortTimeout=ABORT))


def drainOf(h: ProxyHarness) -> Drain:
    settings = h.factory.settings
    return Drain(h.factory, h.clock, settings.shutdownGrace, settings.abortTimeout)


def names(events: list[LogEvent]) -> list[str]:
    return [e["event"] for e in events if str(e.get("event", "")).startswith("shut")]


def loseBoth(client: FakeClient, attempt: Any) -> None:
    """
    The client's and the upstream's connections are gone, cleanly (what a
    graceful close ends with).
    """
    client.lose()
    attempt.loseUpstream()


def test_idleAtOnce(logEvents: list[LogEvent]) -> None:
    """
    With no connection open, the drain is over as soon as it starts, and the
    factory no longer admits requests.
    """
    h = harness()
    done = drainOf(h).start()
    assert fired(done)
    assert h.factory.draining
    assert names(logEvents) == ["shutdown_draining", "shutdown_drained"]


def test_tunnelsRunDuringGrace() -> None:
    """
    During the grace period tunnels keep relaying both ways, a request on a
    connection already open gets 503, and a tunnel that ends on its own
    ends the drain with its own close reason.
    """
    h = harness()
    client, attempt = tunnel(h)
    waiting = h.connectClient()
    done = drainOf(h).start()
    h.clock.advance(GRACE - 1)
    client.send(b"up")
    assert attempt.transport.value() == b"up"
    attempt.protocol.dataReceived(b"down")
    assert client.transport.value().endswith(b"down")
    waiting.send(CONNECT)
    assert waiting.transport.value().endswith(SHUTTING_DOWN)
    waiting.lose()
    assert not fired(done)
    loseBoth(client, attempt)
    assert fired(done)
    assert [r.reason for r in h.observer.closed] == ["client closed"]
    # Nothing is left to fire later.
    assert h.clock.getDelayedCalls() == []


def test_graceOverClosesWithShutdown(logEvents: list[LogEvent]) -> None:
    """
    At the end of the grace period every tunnel left is closed gracefully,
    with the close reason C{shutdown}, and the drain ends once they are
    gone.
    """
    h = harness()
    first, firstAttempt = tunnel(h)
    second, secondAttempt = tunnel(h)
    done = drainOf(h).start()
    h.clock.advance(GRACE)
    for client, attempt in ((first, firstAttempt), (second, secondAttempt)):
        assert client.transport.disconnecting
        assert attempt.transport.disconnecting
        assert not client.transport.aborted
    assert not fired(done)
    loseBoth(first, firstAttempt)
    loseBoth(second, secondAttempt)
    assert fired(done)
    assert [r.reason for r in h.observer.closed] == ["shutdown", "shutdown"]
    assert names(logEvents) == [
        "shutdown_draining",
        "shutdown_closing",
        "shutdown_drained",
    ]


def test_graceOverAnswersRequests() -> None:
    """
    A request still being connected at the end of the grace period gets 503
    and its connect is cancelled.
    """
    h = harness(grace=5)
    client = h.connectClient()
    client.send(CONNECT)
    done = drainOf(h).start()
    h.clock.advance(5)
    assert client.transport.value().endswith(SHUTTING_DOWN)
    assert h.connector.attempts[0].cancelled
    client.lose()
    assert fired(done)


def test_abortAfterAbortTimeout(logEvents: list[LogEvent]) -> None:
    """
    Tunnels that have not closed within the abort timeout after the grace
    period (a client that reads nothing) are aborted on both sides, and
    keep C{shutdown} as their close reason.
    """
    h = harness()
    client, attempt = tunnel(h)
    done = drainOf(h).start()
    h.clock.advance(GRACE)
    h.clock.advance(ABORT)
    assert client.transport.aborted
    assert attempt.transport.aborted
    client.lose()
    attempt.loseUpstream()
    assert fired(done)
    assert [r.reason for r in h.observer.closed] == ["shutdown"]
    assert "shutdown_aborting" in names(logEvents)


def test_giveUp(logEvents: list[LogEvent]) -> None:
    """
    Connections that are not gone even after being aborted do not hold up
    the shutdown for more than L{FINAL_WAIT} seconds.
    """
    h = harness()
    tunnel(h)
    done = drainOf(h).start()
    h.clock.advance(GRACE)
    h.clock.advance(ABORT)
    assert not fired(done)
    h.clock.advance(FINAL_WAIT)
    assert fired(done)
    assert names(logEvents)[-2:] == ["shutdown_incomplete", "shutdown_drained"]


def test_zeroGrace() -> None:
    """
    With no grace period the tunnels are closed as the drain starts.
    """
    h = harness(grace=0)
    client, attempt = tunnel(h)
    done = drainOf(h).start()
    assert client.transport.disconnecting
    loseBoth(client, attempt)
    assert fired(done)
    assert h.observer.closed[0].reason == "shutdown"


def test_now(logEvents: list[LogEvent]) -> None:
    """
    L{Drain.now} (a second signal) closes every connection at once, with
    the close reason C{shutdown}, and aborts those still open
    L{FINAL_WAIT} seconds later.
    """
    h = harness()
    client, attempt = tunnel(h)
    waiting = h.connectClient()
    drain = drainOf(h)
    done = drain.start()
    h.clock.advance(1)
    drain.now()
    assert client.transport.disconnecting and attempt.transport.disconnecting
    assert waiting.transport.value().endswith(SHUTTING_DOWN)
    assert not client.transport.aborted
    h.clock.advance(FINAL_WAIT)
    assert client.transport.aborted and attempt.transport.aborted
    assert waiting.transport.aborted
    loseBoth(client, attempt)
    waiting.lose()
    assert fired(done)
    assert h.observer.closed[0].reason == "shutdown"
    assert "shutdown_forced" in names(logEvents)
    assert h.clock.getDelayedCalls() == []


def test_nowBeforeStartAndAfterEnd() -> None:
    """
    L{Drain.now} does nothing before the drain started or once it is over.
    """
    h = harness()
    drain = drainOf(h)
    drain.now()
    assert not h.factory.draining
    assert fired(drain.start())
    drain.now()
    assert h.clock.getDelayedCalls() == []


def test_startTwice() -> None:
    """
    Starting a drain again returns the same Deferred.
    """
    h = harness()
    tunnel(h)
    drain = drainOf(h)
    assert drain.start() is drain.start()


# The service.


class SignalReactor(MemoryReactorClock):
    """
    A memory reactor whose C{callFromThread} calls at once.
    """

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        f(*args, **kw)


@pytest.fixture
def savedSignals() -> Iterator[None]:
    """
    Put back the SIGTERM and SIGINT handlers the test found.
    """
    saved = {n: signal.getsignal(n) for n in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)


def test_serviceDrainsWithCurrentSettings() -> None:
    """
    L{ShutdownService} drains when stopped, with the grace period of the
    factory's settings at that moment (a reload may have changed them).
    """
    h = harness()
    client, attempt = tunnel(h)
    service = ShutdownService(h.factory, h.clock, installSignals=False)
    service.startService()
    h.factory.settings = ProxySettings(shutdownGrace=5, abortTimeout=ABORT)
    done = service.stopService()
    assert service.drain is not None and service.drain.grace == 5
    h.clock.advance(5)
    assert client.transport.disconnecting
    loseBoth(client, attempt)
    assert fired(done)


def test_secondSignal(savedSignals: None) -> None:
    """
    While draining, SIGTERM and SIGINT end the drain at once; their handlers
    are put back when it is over.
    """
    h = harness()
    reactor = SignalReactor()
    h.factory.reactor = reactor
    client, attempt = tunnel(h)
    before = {n: signal.getsignal(n) for n in (signal.SIGTERM, signal.SIGINT)}
    service = ShutdownService(h.factory, reactor, installSignals=True)
    service.startService()
    done = service.stopService()
    handler = signal.getsignal(signal.SIGTERM)
    assert handler == signal.getsignal(signal.SIGINT)
    assert handler not in (before[signal.SIGTERM], before[signal.SIGINT])
    assert callable(handler)
    handler(signal.SIGTERM, None)
    assert client.transport.disconnecting
    loseBoth(client, attempt)
    assert fired(done)
    assert {n: signal.getsignal(n) for n in before} == before


def test_handlersStayWhileTheReactorStops(savedSignals: None) -> None:
    """
    When the drain ends during the reactor's shutdown (the process exits
    next), its handlers stay: Twisted's, put back, would answer one more
    SIGTERM by stopping the stopping reactor again, a critical
    C{ReactorNotRunning}.  One more signal then does nothing.
    """
    h = harness()
    reactor = SignalReactor()
    h.factory.reactor = reactor
    before = signal.getsignal(signal.SIGTERM)
    service = ShutdownService(h.factory, reactor, installSignals=True)
    service.startService()
    reactor.running = True
    reactor._stopped = True  # type: ignore[attr-defined]
    done = service.stopService()
    assert fired(done)
    handler = signal.getsignal(signal.SIGTERM)
    assert handler != before and callable(handler)
    handler(signal.SIGTERM, None)


def test_noSignalsWhenNotOwned(savedSignals: None) -> None:
    """
    A service that does not own the process's signals leaves them alone.
    """
    h = harness()
    tunnel(h)
    before = signal.getsignal(signal.SIGTERM)
    service = ShutdownService(h.factory, h.clock, installSignals=False)
    service.startService()
    service.stopService()
    assert signal.getsignal(signal.SIGTERM) == before


class Recorder(Service):
    """
    A service that notes when it is stopped, and whose stop can be made to
    wait.
    """

    def __init__(self, name: str, log: list[str], wait: Deferred[None] | None = None):
        self.setName(name)
        self._log = log
        self._wait = wait

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._log.append(str(self.name))
        return self._wait if self._wait is not None else succeed(None)


def test_proxyServiceOrder() -> None:
    """
    L{ProxyService} stops the services after its barrier first, then, once
    they have stopped, the barrier, and the ones before it only once the
    barrier's stop is done; its own stop is done after all of them.
    """
    log: list[str] = []
    listenerDone: Deferred[None] = Deferred()
    barrierDone: Deferred[None] = Deferred()
    parent = ProxyService()
    for name in ("descriptors", "observers"):
        Recorder(name, log).setServiceParent(parent)
    barrier = Recorder("shutdown", log, barrierDone)
    barrier.setServiceParent(parent)
    parent.barrier = barrier
    Recorder("listener", log, listenerDone).setServiceParent(parent)
    Recorder("notify", log).setServiceParent(parent)
    parent.startService()
    stopped = parent.stopService()
    assert log == ["notify", "listener"]
    listenerDone.callback(None)
    assert log == ["notify", "listener", "shutdown"]
    assert not fired(stopped)
    barrierDone.callback(None)
    assert log[3:] == ["observers", "descriptors"]
    assert fired(stopped)
    assert not parent.running


def test_proxyServiceWithoutBarrier() -> None:
    """
    Without a barrier, L{ProxyService} stops like a L{MultiService}.
    """
    log: list[str] = []
    parent = ProxyService()
    for name in ("a", "b"):
        Recorder(name, log).setServiceParent(parent)
    parent.startService()
    assert fired(parent.stopService())
    assert log == ["b", "a"]


def test_makeServiceDrains() -> None:
    """
    The service of C{makeService} stops its listeners first, then drains
    (the factory refuses new requests), and stops the rest once the drain
    is over.
    """
    reactor = MemoryReactorClock()
    options = Options()
    options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1"])
    service = makeService(options, reactor)
    shutdown = service.getServiceNamed("shutdown")
    assert isinstance(service, ProxyService) and service.barrier is shutdown
    service.startService()
    [listener] = [s for s in service if hasattr(s, "endpoint")]
    factory = listener.factory
    peer = IPv4Address("TCP", "127.0.0.1", 40000)
    protocol = factory.buildProtocol(peer)
    transport = HalfCloseableStringTransport(peerAddress=peer)
    protocol.makeConnection(transport)
    stopped = service.stopService()
    assert factory.draining
    assert not listener.running
    assert service.getServiceNamed("reload").running
    assert not fired(stopped)
    protocol.connectionLost(Failure(ConnectionDone()))
    assert fired(stopped)
    assert not service.getServiceNamed("reload").running
