# -*- test-case-name: tests.test_descriptors -*-
"""
Tests for L{connectproxy._limits} and L{connectproxy._acceptguard}: raising
the descriptor limit (with fake C{getrlimit}/C{setrlimit}: never in the
test's own process), and the accept guard, driven through Twisted's own
C{tcp.Port.doRead} over a scripted listening socket on a memory reactor.
"""

from __future__ import annotations

import errno
import os
import resource
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet import tcp
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent

from connectproxy import ConnectProxyFactory, ProxySettings, _limits
from connectproxy._acceptguard import (
    REFUSAL,
    AcceptGuard,
    DescriptorReserve,
    ExhaustionReport,
)
from connectproxy._limits import (
    DescriptorLimitService,
    LimitChange,
    descriptorCeiling,
    raiseDescriptorLimit,
)
from connectproxy._service import ListenerService
from connectproxy.tap import Options, makeService

NOFILE = resource.RLIMIT_NOFILE
#: The listeners' pause in these tests: exact in binary, so that the clock's
#: sums land on it.
PAUSE = 0.125
INFINITY = resource.RLIM_INFINITY


class FakeLimits:
    """
    A process's descriptor limits, for L{raiseDescriptorLimit}.
    """

    def __init__(self, soft: int, hard: int, refuseAbove: int | None = None) -> None:
        self.limits = (soft, hard)
        self.refuseAbove = refuseAbove
        self.calls: list[tuple[int, int]] = []

    def getrlimit(self, kind: int) -> tuple[int, int]:
        assert kind == NOFILE
        return self.limits

    def setrlimit(self, kind: int, limits: tuple[int, int]) -> None:
        assert kind == NOFILE
        self.calls.append(limits)
        if self.refuseAbove is not None and limits[0] > self.refuseAbove:
            raise ValueError("not allowed to raise maximum limit")
        self.limits = limits


def raiseWith(fake: FakeLimits, ceiling: int | None = None) -> LimitChange:
    return raiseDescriptorLimit(ceiling, fake.getrlimit, fake.setrlimit)


# Raising the limit.


def test_raisesSoftToHard() -> None:
    """
    The soft limit is raised to the hard limit, which stays as it is.
    """
    fake = FakeLimits(1024, 524288)
    assert raiseWith(fake) == LimitChange(1024, 524288, 524288)
    assert fake.calls == [(524288, 524288)]


def test_neverLowers() -> None:
    """
    A soft limit already at the hard limit (or infinite) is left alone.
    """
    for soft, hard in [(4096, 4096), (INFINITY, INFINITY)]:
        fake = FakeLimits(soft, hard)
        assert raiseWith(fake) == LimitChange(soft, soft, hard)
        assert fake.calls == []


def test_ceiling() -> None:
    """
    A ceiling (the select reactor's 1024) caps the raise.
    """
    fake = FakeLimits(256, 65536)
    assert raiseWith(fake, 1024).after == 1024
    fake = FakeLimits(2048, 65536)
    assert raiseWith(fake, 1024) == LimitChange(2048, 2048, 65536)


def test_infiniteHardLimit() -> None:
    """
    With an infinite hard limit, a large finite figure is tried, then
    macOS's OPEN_MAX when the system refuses it.
    """
    fake = FakeLimits(256, INFINITY, refuseAbove=10240)
    assert raiseWith(fake) == LimitChange(256, 10240, INFINITY)
    assert fake.calls == [(1 << 20, INFINITY), (10240, INFINITY)]


def test_raiseRefused() -> None:
    """
    A refusal (a sandbox forbidding setrlimit) is reported, not raised.
    """
    fake = FakeLimits(256, 4096, refuseAbove=256)
    assert raiseWith(fake) == LimitChange(
        256, 256, 4096, "not allowed to raise maximum limit"
    )


def test_reserve() -> None:
    """
    The reserve holds one descriptor until released, and can take it again.
    """
    reserve = DescriptorReserve()
    assert not reserve.available()
    assert reserve.reserve() and reserve.available()
    assert reserve.reserve()
    reserve.release()
    assert not reserve.available()
    reserve.release()
    assert not DescriptorReserve("/nonexistent/file").reserve()


# The service.


@pytest.fixture
def fakeRaise(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int | None]]:
    """
    Replace L{raiseDescriptorLimit} in the service with one that records its
    ceiling and pretends to raise 64 to 4096; the automatic connection limit
    becomes (4096 - 64) / 2.
    """
    calls: list[int | None] = []

    def fake(ceiling: int | None = None) -> LimitChange:
        calls.append(ceiling)
        return LimitChange(64, 4096, 4096)

    monkeypatch.setattr(_limits, "raiseDescriptorLimit", fake)
    monkeypatch.setattr(_limits, "defaultMaxConnections", lambda: 2016)
    yield calls


def limitService(
    factory: ConnectProxyFactory, raiseLimit: bool, automatic: bool
) -> DescriptorLimitService:
    clock = MemoryReactorClock()
    return DescriptorLimitService(
        factory,
        DescriptorReserve(),
        ExhaustionReport(clock),
        raiseLimit=raiseLimit,
        automaticMaxConnections=automatic,
        ceiling=None,
    )


def test_serviceRaisesOnceAndFollows(
    fakeRaise: list[int | None], logEvents: list[LogEvent]
) -> None:
    """
    Started in both of twistd's passes, the service raises the limit once,
    the automatic --max-connections follows it, and one event says both.
    """
    factory = ConnectProxyFactory(
        MemoryReactorClock(), ProxySettings(maxConnections=16)
    )
    service = limitService(factory, raiseLimit=True, automatic=True)
    service.privilegedStartService()
    service.startService()
    assert fakeRaise == [None]
    assert factory.settings.maxConnections == 2016
    [event] = [e for e in logEvents if e.get("event") == "descriptor_limit"]
    assert (event["limit"], event["before"], event["hard"]) == (4096, 64, 4096)
    assert event["maxConnections"] == 2016
    service.stopService()


def test_serviceKeepsGivenLimit(fakeRaise: list[int | None]) -> None:
    """
    A --max-connections given by the operator is kept.
    """
    factory = ConnectProxyFactory(
        MemoryReactorClock(), ProxySettings(maxConnections=16)
    )
    limitService(factory, raiseLimit=True, automatic=False).startService()
    assert fakeRaise == [None]
    assert factory.settings.maxConnections == 16


def test_serviceRaisesOnlyWhenAsked(fakeRaise: list[int | None]) -> None:
    """
    A service told not to raise (a caller's own reactor) leaves the limit
    and the settings alone.
    """
    factory = ConnectProxyFactory(
        MemoryReactorClock(), ProxySettings(maxConnections=16)
    )
    limitService(factory, raiseLimit=False, automatic=True).startService()
    assert fakeRaise == []
    assert factory.settings.maxConnections == 16


def test_makeServiceNeverRaisesInCallersProcess(
    fakeRaise: list[int | None],
) -> None:
    """
    makeService with a reactor (a test, an embedding program) never raises
    the limit; every listener gets a guard, which closes (without a
    response) on TLS listeners.
    """
    options = Options()
    options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1"])
    service = makeService(options, MemoryReactorClock())
    service.startService()
    assert fakeRaise == []
    listeners = [s for s in service if isinstance(s, ListenerService)]
    guards = [listener.acceptGuard for listener in listeners]
    assert len(guards) == 1 and isinstance(guards[0], AcceptGuard)
    assert guards[0]._refusal == REFUSAL
    service.stopService()


# The guard, under Twisted's accept loop.


class FakeClient:
    """
    An accepted connection: what the guard read, sent and closed.
    """

    def __init__(self, early: bytes = b"CONNECT a:443 HTTP/1.1\r\n\r\n") -> None:
        self.early = early
        self.sent = b""
        self.closed = False
        self.blocking = True

    def setblocking(self, flag: bool) -> None:
        self.blocking = flag

    def recv(self, size: int) -> bytes:
        assert not self.blocking
        early, self.early = self.early, b""
        if not early:
            raise BlockingIOError(errno.EAGAIN, "no data")
        return early

    def send(self, data: bytes) -> int:
        assert not self.blocking
        self.sent += data
        return len(data)

    def close(self) -> None:
        self.closed = True


class FakeListener:
    """
    A listening socket whose accept() fails with C{error} while C{full},
    and otherwise hands out the clients waiting, one per call.
    """

    def __init__(self, reserve: FakeReserve, error: int = errno.EMFILE) -> None:
        self.reserve = reserve
        self.error = error
        self.full = True
        self.waiting: list[FakeClient] = []
        self.calls = 0

    def accept(self) -> tuple[FakeClient, tuple[str, int]]:
        self.calls += 1
        # Only the reserve's slot, while it is free, can be had.
        if self.full and not self.reserve.slotFree:
            raise OSError(self.error, os.strerror(self.error))
        if not self.waiting:
            raise BlockingIOError(errno.EAGAIN, "nothing waiting")
        return self.waiting.pop(0), ("127.0.0.1", 50000)

    def fileno(self) -> int:
        return 99


class FakeReserve(DescriptorReserve):
    """
    A spare descriptor that opens unless C{unavailable}; while released,
    its slot is free for one accept at a time.
    """

    def __init__(self) -> None:
        self.open = False
        self.slotFree = False
        self.unavailable = False
        self.releases = 0

    def available(self) -> bool:
        return self.open

    def reserve(self) -> bool:
        if not self.unavailable:
            self.open = True
            self.slotFree = False
        return self.open

    def release(self) -> None:
        if self.open:
            self.releases += 1
            self.slotFree = True
        self.open = False


class RecordingFactory(Factory):
    """
    Records the addresses it is asked to build protocols for.
    """

    def __init__(self) -> None:
        self.built: list[Any] = []

    def buildProtocol(self, addr: Any) -> Protocol:
        self.built.append(addr)
        return Protocol()


class Listener:
    """
    A Twisted C{tcp.Port} on a memory reactor, listening (as far as the
    reactor knows) on a L{FakeListener} watched by an L{AcceptGuard}.
    """

    def __init__(self, refusal: bytes | None = REFUSAL, error: int = errno.EMFILE):
        self.clock = MemoryReactorClock()
        factory = RecordingFactory()
        self.built = factory.built
        self.port = tcp.Port(0, factory, reactor=self.clock)
        self.reserve = FakeReserve()
        self.socket = FakeListener(self.reserve, error)
        self.port.socket = self.socket
        self.port.connected = True
        self.port.numberAccepts = 100
        self.port.startReading()
        self.report = ExhaustionReport(self.clock, getrlimit=lambda kind: (64, 64))
        self.guard = AcceptGuard(
            self.clock, self.reserve, self.report, refusal, pause=PAUSE
        )
        assert self.guard.watch(self.port)

    def reading(self) -> bool:
        return self.port in self.clock.getReaders()

    def arrive(self, count: int) -> list[FakeClient]:
        clients = [FakeClient() for _ in range(count)]
        self.socket.waiting.extend(clients)
        return clients


def exhaustedEvents(events: list[LogEvent]) -> list[LogEvent]:
    return [e for e in events if e.get("event") == "descriptors_exhausted"]


def test_watchNeedsASocket() -> None:
    """
    A port without a socket to accept from (a memory reactor's) is not
    guarded.
    """
    clock = MemoryReactorClock()
    guard = AcceptGuard(clock, FakeReserve(), ExhaustionReport(clock))
    assert not guard.watch(object())


def test_exhaustionRefusesWaitingAndPauses(
    logEvents: list[LogEvent], capsys: pytest.CaptureFixture[str]
) -> None:
    """
    When accept() fails with EMFILE, the clients waiting get a 503 (what
    they sent read first) and are closed, through the spare descriptor's
    slot; the port stops reading for the pause, then reads again; one
    warning says how many, and Twisted logs nothing.
    """
    listener = Listener()
    clients = listener.arrive(3)
    listener.port.doRead()
    assert [(c.sent, c.closed, c.early) for c in clients] == [(REFUSAL, True, b"")] * 3
    assert REFUSAL.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert REFUSAL.endswith(b"the proxy is out of file descriptors; try again later\n")
    assert listener.reserve.releases == 1 and listener.reserve.open
    assert listener.built == []
    assert not listener.reading()
    listener.clock.advance(PAUSE)
    assert listener.reading()
    [event] = exhaustedEvents(logEvents)
    assert (event["count"], event["error"], event["limit"]) == (3, "EMFILE", 64)
    assert [e for e in logEvents if e is not event] == []
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("error", [errno.ENFILE, errno.ENOBUFS, errno.ENOMEM])
def test_otherExhaustionErrors(error: int, logEvents: list[LogEvent]) -> None:
    """
    The system's table being full, or socket memory running out, is
    handled the same way.
    """
    listener = Listener(error=error)
    clients = listener.arrive(1)
    listener.port.doRead()
    assert clients[0].closed and not listener.reading()
    [event] = exhaustedEvents(logEvents)
    assert event["error"] == errno.errorcode[error]


def test_tlsListenerClosesWithoutResponse() -> None:
    """
    A TLS listener cannot answer before a handshake: it closes the clients
    without reading or sending.
    """
    listener = Listener(refusal=None)
    [client] = listener.arrive(1)
    listener.port.doRead()
    assert (client.sent, client.closed) == (b"", True)


def test_noSpareNoSpin(logEvents: list[LogEvent]) -> None:
    """
    Without a spare descriptor (it could not be opened again), the clients
    wait, and the port still stops reading for each pause instead of being
    called in a loop: over a second of persistent exhaustion accept() is
    tried about once per pause, and one warning comes per second.
    """
    listener = Listener()
    listener.reserve.unavailable = True
    listener.reserve.open = False
    clients = listener.arrive(2)
    for _ in range(int(1 / PAUSE)):
        if listener.reading():
            listener.port.doRead()
        listener.clock.advance(PAUSE / 2)
        assert not listener.reading()
        listener.clock.advance(PAUSE / 2)
    listener.clock.advance(0.01)
    assert listener.socket.calls == int(1 / PAUSE)
    assert [c.closed for c in clients] == [False, False]
    assert [e["count"] for e in exhaustedEvents(logEvents)] == [0, 0]


def test_recovers(logEvents: list[LogEvent]) -> None:
    """
    Once descriptors are free, the next accept serves the client; one event
    says accepting works again, once a second has passed without running
    out (not at each accept between two exhaustions).
    """
    listener = Listener()
    listener.arrive(1)
    listener.port.doRead()
    listener.clock.advance(PAUSE)
    listener.socket.full = False
    guarded = listener.port.socket
    accepted = FakeClient()
    listener.socket.waiting.append(accepted)
    assert guarded.accept()[0] is accepted
    listener.clock.advance(1 - PAUSE)
    for _ in range(2):
        listener.socket.waiting.append(FakeClient())
        guarded.accept()
    events = [e.get("event") for e in logEvents]
    assert events == ["descriptors_exhausted", "descriptors_recovered"]


def test_hoveringAtTheLimit(logEvents: list[LogEvent]) -> None:
    """
    Accepts succeeding between exhaustions a few times a second give one
    warning a second, with every refusal counted, and no recovery events.
    """
    clock = MemoryReactorClock()
    report = ExhaustionReport(clock, getrlimit=lambda kind: (64, 64))
    for _ in range(20):
        report.refused(1, errno.EMFILE)
        clock.advance(0.125)
        report.accepted()
        clock.advance(0.125)
    assert {e.get("event") for e in logEvents} == {"descriptors_exhausted"}
    assert [e["count"] for e in logEvents] == [1, 3, 4, 4, 4, 4]
    assert report.exhausted


def test_otherErrorsPassThrough() -> None:
    """
    Errors that are not exhaustion are Twisted's to handle.
    """
    listener = Listener(error=errno.ECONNABORTED)
    listener.arrive(1)
    with pytest.raises(OSError) as raised:
        listener.port.socket.accept()
    assert raised.value.errno == errno.ECONNABORTED
    assert listener.reading()


def test_reportAtMostOncePerInterval(logEvents: list[LogEvent]) -> None:
    """
    Exhaustion reported many times within a second gives one warning at
    once, then one at the end of the second with the count since; stopping
    logs what is left.
    """
    clock = MemoryReactorClock()
    report = ExhaustionReport(clock, getrlimit=lambda kind: (64, 64))
    report.refused(5, errno.EMFILE)
    clock.advance(0.3)
    report.refused(7, errno.EMFILE)
    clock.advance(0.3)
    report.refused(1, errno.EMFILE)
    assert [e["count"] for e in exhaustedEvents(logEvents)] == [5]
    clock.advance(0.4)
    assert [e["count"] for e in exhaustedEvents(logEvents)] == [5, 8]
    assert clock.getDelayedCalls() == []
    report.refused(2, errno.EMFILE)
    clock.advance(0.5)
    report.refused(4, errno.EMFILE)
    report.stop()
    assert [e["count"] for e in exhaustedEvents(logEvents)] == [5, 8, 6]
    assert clock.getDelayedCalls() == []


def test_stopForgetsThePort() -> None:
    """
    A listener stopping during a pause is not resumed.
    """
    listener = Listener()
    listener.arrive(1)
    listener.port.doRead()
    listener.guard.stop()
    assert listener.clock.getDelayedCalls() == []
    listener.port.connected = False
    listener.guard._resume()
    assert not listener.reading()


def test_descriptorCeilingOfSelect() -> None:
    """
    Under the select reactor the limit is raised to 1024 at most, the
    descriptors C{select()} can watch; other reactors have no ceiling.
    """
    from twisted.internet.selectreactor import SelectReactor

    # Not started: only its type matters, and it opens no descriptor.
    select = SelectReactor.__new__(SelectReactor)
    assert descriptorCeiling(select) == 1024
    assert descriptorCeiling(MemoryReactorClock()) is None
