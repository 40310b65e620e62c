# -*- test-case-name: tests.test_service -*-
"""
Tests for the services of L{connectproxy._service}: reloading the
configuration (L{ReloadService}, on SIGHUP), the listeners and what they
log (the warning about an open proxy, a listener that cannot listen).
"""

from __future__ import annotations

import signal
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.application.service import MultiService
from twisted.internet.abstract import isIPv6Address
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent, LogLevel, formatEvent
from zope.interface import implementer

from connectproxy import ConnectProxyFactory, DirectConnector
from connectproxy._assembly import reloader
from connectproxy._htpasswd import HtpasswdChecker
from connectproxy._service import ListenFailed, ReloadService
from connectproxy.plugins.hostlist import HostListPolicy
from connectproxy.tap import makeService
from connectproxy.testing import (
    FakeConnector,
    ProxyHarness,
    RecordingObserver,
    connectHead,
)
from tests._helpers import (
    currentChecker,
    listenerFactory,
    logsIn,
    named,
    parse,
    reloaderOf,
    sha1Entry,
    writeConfig,
)

PASSWORD = "correct horse"


# Reload


def test_reloadUsesNewConfiguration(tmp_path: Path, logEvents: list[LogEvent]) -> None:
    """
    After the file changes, reload() builds new rules and settings and hands
    them to the listeners' factory.
    """
    path = writeConfig(
        tmp_path,
        'allow-port = ["443"]\nallow-host = ["a.example"]\nidle-timeout = 60\n',
    )
    service = makeService(parse("--config", str(path)), MemoryReactorClock())
    factory = listenerFactory(service)
    before = factory.gatekeeper
    assert factory.settings.idleTimeout == 60.0
    writeConfig(
        tmp_path,
        'allow-port = ["8443"]\nallow-host = ["b.example"]\nidle-timeout = 5\n',
    )
    assert reloaderOf(service).reload() is True
    rules = factory.gatekeeper.rules
    assert factory.gatekeeper is not before
    assert rules.ports.allows(8443) and not rules.ports.allows(443)
    assert rules.hosts.check("b.example") and not rules.hosts.check("a.example")
    assert factory.settings.idleTimeout == 5.0
    assert len(named(logEvents, "reloaded")) == 1
    assert named(logEvents, "reload_failed") == []


def test_reloadRecreatesPolicies(tmp_path: Path) -> None:
    """
    Policies are made again from their arguments, so a changed host list
    file takes effect.
    """
    hosts = tmp_path / "hosts"
    hosts.write_text("a.example\n", encoding="utf-8")
    path = writeConfig(tmp_path, f'policy = ["hostlist:{hosts}"]\n')
    service = makeService(parse("--config", str(path)), MemoryReactorClock())
    factory = listenerFactory(service)
    [before] = factory.gatekeeper.policies
    hosts.write_text("b.example\n", encoding="utf-8")
    assert reloaderOf(service).reload()
    [after] = factory.gatekeeper.policies
    assert isinstance(after, HostListPolicy) and after is not before
    assert after.patterns == ["b.example"]


def test_tunnelSurvivesReload(tmp_path: Path) -> None:
    """
    A tunnel established before a reload keeps relaying, with its old idle
    timeout, while new requests get the new rules.
    """
    path = writeConfig(tmp_path, 'allow-port = ["443"]\nidle-timeout = 600\n')
    harness = ProxyHarness()
    load = reloader(
        parse("--config", str(path)),
        harness.clock,
        connector=harness.connector,
        observers=[harness.observer],
    )
    config = load()
    harness.factory.reconfigure(config)
    reloadService = ReloadService(load, harness.factory, config, harness.clock, False)
    client = harness.connectClient()
    client.send(connectHead())
    attempt = harness.connector.attempts[-1]
    upstream = attempt.succeed()
    assert client.transport.value().startswith(b"HTTP/1.1 200 ")

    writeConfig(tmp_path, 'allow-port = ["8443"]\nidle-timeout = 5\n')
    assert reloadService.reload()
    harness.clock.advance(60)
    client.send(b"ping")
    attempt.protocol.dataReceived(b"pong")
    assert upstream.value() == b"ping"
    assert client.transport.value().endswith(b"pong")
    assert not client.transport.disconnecting
    assert not upstream.disconnecting

    late = harness.connectClient()
    late.send(connectHead())
    assert late.transport.value().startswith(b"HTTP/1.1 403 ")
    assert len(harness.connector.attempts) == 1


@pytest.mark.parametrize(
    "text, message",
    [
        ("idle-timeout = 5\nallow-port = [\n", "not valid TOML"),
        ("idle-timeout = -1\n", "positive number of seconds"),
        ('allow-port = ["0"]\n', "key 'allow-port'"),
        ("no-such-key = 1\n", "unknown key"),
        ('policy = ["hostlist:/nonexistent/hosts"]\n', "cannot read host list"),
        (None, "cannot read"),
    ],
    ids=["toml", "timeout", "port", "key", "policy", "missing"],
)
def test_brokenReloadKeepsOld(
    tmp_path: Path, logEvents: list[LogEvent], text: str | None, message: str
) -> None:
    """
    A file that no longer loads makes reload() return False and log
    C{reload_failed}, and the old rules and settings stay in use.
    """
    path = writeConfig(tmp_path, 'allow-port = ["8443"]\nidle-timeout = 60\n')
    service = makeService(parse("--config", str(path)), MemoryReactorClock())
    factory = listenerFactory(service)
    gatekeeper, settings = factory.gatekeeper, factory.settings
    if text is None:
        path.unlink()
    else:
        path.write_text(text, encoding="utf-8")
    assert reloaderOf(service).reload() is False
    [event] = named(logEvents, "reload_failed")
    assert event["log_level"] is LogLevel.error
    assert message in event["error"]
    assert factory.gatekeeper is gatekeeper and factory.settings is settings
    assert factory.gatekeeper.rules.ports.allows(8443)
    assert named(logEvents, "reloaded") == []


def test_reloadAfterFailure(tmp_path: Path) -> None:
    """
    Once the file is fixed, the next reload succeeds.
    """
    path = writeConfig(tmp_path, "idle-timeout = 60\n")
    service = makeService(parse("--config", str(path)), MemoryReactorClock())
    reloader = reloaderOf(service)
    path.write_text("idle-timeout = [\n", encoding="utf-8")
    assert not reloader.reload()
    path.write_text("idle-timeout = 7\n", encoding="utf-8")
    assert reloader.reload()
    assert listenerFactory(service).settings.idleTimeout == 7.0


def test_reloadListenIgnored(tmp_path: Path, logEvents: list[LogEvent]) -> None:
    """
    A changed C{listen} is reported as needing a restart; the listeners stay
    and the rest of the file is applied.
    """
    reactor = MemoryReactorClock()
    path = writeConfig(tmp_path, 'listen = "tcp:3128:interface=127.0.0.1"\n')
    service = makeService(parse("--config", str(path)), reactor)
    service.startService()
    try:
        writeConfig(
            tmp_path, 'listen = "tcp:3129:interface=127.0.0.1"\nidle-timeout = 9\n'
        )
        assert reloaderOf(service).reload()
        [event] = named(logEvents, "reload_listen_ignored")
        assert event["log_level"] is LogLevel.warn
        assert [port for port, _, _, _ in reactor.tcpServers] == [3128]
        assert listenerFactory(service).settings.idleTimeout == 9.0
    finally:
        service.stopService()


def test_reloadSameListenQuiet(tmp_path: Path, logEvents: list[LogEvent]) -> None:
    """
    An unchanged C{listen} logs nothing about listeners.
    """
    path = writeConfig(tmp_path, 'listen = "tcp:3128:interface=127.0.0.1"\n')
    service = makeService(parse("--config", str(path)), MemoryReactorClock())
    assert reloaderOf(service).reload()
    assert named(logEvents, "reload_listen_ignored") == []


def test_reloadListenRevertedQuiet(tmp_path: Path, logEvents: list[LogEvent]) -> None:
    """
    Changing C{listen} and changing it back needs no restart, so the second
    reload does not ask for one.
    """
    original = 'listen = "tcp:3128:interface=127.0.0.1"\n'
    path = writeConfig(tmp_path, original)
    service = makeService(parse("--config", str(path)), MemoryReactorClock())
    reloader = reloaderOf(service)
    writeConfig(tmp_path, 'listen = "tcp:3129:interface=127.0.0.1"\n')
    assert reloader.reload()
    writeConfig(tmp_path, original)
    assert reloader.reload()
    assert len(named(logEvents, "reload_listen_ignored")) == 1


def test_reloadReadsChangedPasswordFile(tmp_path: Path) -> None:
    """
    A reload makes new checkers, which read the htpasswd file as it is now.
    """
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(sha1Entry("alice", PASSWORD), encoding="utf-8")
    path = writeConfig(tmp_path, f'auth = ["htpasswd:{htpasswd}"]\n')
    service = makeService(parse("--config", str(path)), MemoryReactorClock())
    factory = listenerFactory(service)
    old = currentChecker(factory)
    assert logsIn(old, "alice", PASSWORD)
    htpasswd.write_text(sha1Entry("bob", PASSWORD), encoding="utf-8")
    assert reloaderOf(service).reload()
    new = currentChecker(factory)
    assert new is not old
    assert logsIn(new, "bob", PASSWORD)
    assert not logsIn(new, "alice", PASSWORD)


def test_oldCheckersStoppedAfterDeadline(tmp_path: Path) -> None:
    """
    The checkers replaced by a reload are stopped once connect-timeout + 1
    seconds have passed (verifications in flight finish first); the new ones
    are stopped with the service.
    """
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(sha1Entry("alice", PASSWORD), encoding="utf-8")
    path = writeConfig(
        tmp_path, f'auth = ["htpasswd:{htpasswd}"]\nconnect-timeout = 10\n'
    )
    clock = MemoryReactorClock()
    service = makeService(parse("--config", str(path)), clock)
    stopped: list[str] = []

    def watch(checker: HtpasswdChecker, name: str) -> None:
        stop = checker.stop

        def recordingStop() -> None:
            stopped.append(name)
            stop()

        checker.stop = recordingStop  # type: ignore[method-assign]

    factory = listenerFactory(service)
    watch(currentChecker(factory), "old")
    writeConfig(tmp_path, f'auth = ["htpasswd:{htpasswd}"]\nconnect-timeout = 4\n')
    assert reloaderOf(service).reload()
    watch(currentChecker(factory), "new")
    clock.advance(4.9)
    assert stopped == []
    clock.advance(0.1)
    assert stopped == ["old"]
    service.startService()
    service.stopService()
    assert stopped == ["old", "new"]


def test_reloadKeepsFailedLogins(tmp_path: Path) -> None:
    """
    A reload keeps counting failed logins (an address blocked before is
    still blocked after), with the new limits.
    """
    path = writeConfig(tmp_path, "auth-max-failures = 2\nauth-block-time = 60\n")
    service = makeService(parse("--config", str(path)), MemoryReactorClock())
    factory = listenerFactory(service)
    limiter = factory.gatekeeper.limiter
    assert limiter is not None
    limiter.recordFailure("192.0.2.7")
    limiter.recordFailure("192.0.2.7")
    assert limiter.blockedFor("192.0.2.7") is not None
    writeConfig(
        tmp_path,
        "auth-max-failures = 5\nauth-max-failed-users = 9\nauth-block-time = 60\n",
    )
    assert reloaderOf(service).reload()
    assert factory.gatekeeper.limiter is limiter
    assert (limiter.maxFailures, limiter.maxUsers) == (5, 9)
    assert limiter.blockedFor("192.0.2.7") is not None


def test_reloadUpdatesAttemptTimeout(tmp_path: Path) -> None:
    """
    A reload that changes --connect-timeout changes the connector's
    per-attempt timeout too.
    """
    path = writeConfig(tmp_path, "connect-timeout = 5\n")
    service = makeService(parse("--config", str(path)), MemoryReactorClock())
    factory = listenerFactory(service)
    assert isinstance(factory.connector, DirectConnector)
    assert factory.connector.attemptTimeout == 5
    writeConfig(tmp_path, "connect-timeout = 20\n")
    assert reloaderOf(service).reload()
    assert factory.connector.attemptTimeout == 20


def test_reloadResizesResolverPool(tmp_path: Path) -> None:
    """
    A reload that changes --resolver-threads or --resolver-per-client
    resizes the running resolver pool (the same pool: lookups in flight are
    still counted).
    """
    path = writeConfig(tmp_path, "resolver-threads = 8\n")
    service = makeService(parse("--config", str(path)), MemoryReactorClock())
    factory = listenerFactory(service)
    pool = factory.resolverPool
    assert pool is not None
    assert (pool.threads, pool.perClient) == (8, 8)
    writeConfig(tmp_path, "resolver-threads = 40\nresolver-per-client = 3\n")
    assert reloaderOf(service).reload()
    assert factory.resolverPool is pool
    assert (pool.threads, pool.perClient) == (40, 3)


# SIGHUP


class ThreadCallReactor(MemoryReactorClock):
    """
    A L{MemoryReactorClock} that records C{callFromThread} calls.

    @ivar fromThread: The calls, as (function, args, kwargs).
    """

    def __init__(self) -> None:
        super().__init__()
        self.fromThread: list[tuple[Callable[..., Any], tuple[Any, ...], Any]] = []

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.fromThread.append((f, args, kwargs))


def previousHandler(signum: int, frame: object) -> None:
    """
    Stands in for whatever handled SIGHUP before the proxy started.
    """


@pytest.fixture
def sighup() -> Iterator[None]:
    """
    Put back whatever handled SIGHUP before the test.
    """
    if not hasattr(signal, "SIGHUP"):
        pytest.skip("no SIGHUP on this platform")
    before = signal.getsignal(signal.SIGHUP)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, before)


def reloadService(
    tmp_path: Path, reactor: MemoryReactorClock, installSignal: bool
) -> tuple[ReloadService, ConnectProxyFactory, Path]:
    """
    A reload service over a factory built by hand from a configuration file.
    """
    path = writeConfig(tmp_path, "idle-timeout = 60\n")
    load = reloader(
        parse("--config", str(path)),
        reactor,
        connector=FakeConnector(),
        observers=[RecordingObserver()],
    )
    config = load()
    factory = ConnectProxyFactory.fromConfig(reactor, config)
    service = ReloadService(load, factory, config, reactor, installSignal)
    return service, factory, path


@pytest.mark.usefixtures("sighup")
def test_sighupSchedulesReload(tmp_path: Path) -> None:
    """
    The service handles SIGHUP while it runs by scheduling reload() on the
    reactor thread, and puts the previous handler back when it stops.
    """
    reactor = ThreadCallReactor()
    reloader, factory, path = reloadService(tmp_path, reactor, True)
    signal.signal(signal.SIGHUP, previousHandler)

    reloader.startService()
    handler = signal.getsignal(signal.SIGHUP)
    assert handler == reloader._onSignal
    assert callable(handler)
    path.write_text("idle-timeout = 5\n", encoding="utf-8")
    handler(signal.SIGHUP, None)
    assert reactor.fromThread == [(reloader.reload, (), {})]
    assert factory.settings.idleTimeout == 60.0
    f, args, kwargs = reactor.fromThread[0]
    assert f(*args, **kwargs) is True
    assert factory.settings.idleTimeout == 5.0
    reloader.stopService()
    assert signal.getsignal(signal.SIGHUP) is previousHandler


@pytest.mark.usefixtures("sighup")
def test_sighupDefaultRestored(tmp_path: Path) -> None:
    """
    When nothing handled SIGHUP before, stopping restores the default action.
    """
    reloader, _, _ = reloadService(tmp_path, ThreadCallReactor(), True)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)

    reloader.startService()
    assert signal.getsignal(signal.SIGHUP) == reloader._onSignal
    reloader.stopService()
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL


@pytest.mark.usefixtures("sighup")
def test_noSignalWithInjectedReactor(tmp_path: Path) -> None:
    """
    Without installSignal (what makeService does with an explicit reactor)
    the SIGHUP handler is left alone.
    """
    signal.signal(signal.SIGHUP, previousHandler)
    service = makeService(parse(), ThreadCallReactor())
    service.startService()
    assert signal.getsignal(signal.SIGHUP) is previousHandler
    service.stopService()
    assert signal.getsignal(signal.SIGHUP) is previousHandler


# The open-proxy warning


@implementer(IListeningPort)
class FakePort:
    """
    A listening port that reports the address it was asked to listen on.
    """

    def __init__(self, address: IPv4Address | IPv6Address) -> None:
        self._address = address

    def startListening(self) -> None:
        pass

    def stopListening(self) -> None:
        pass

    def getHost(self) -> IPv4Address | IPv6Address:
        return self._address


class InterfaceReactor(MemoryReactorClock):
    """
    A L{MemoryReactorClock} whose TCP ports report the interface they listen
    on: L{MemoryReactorClock} itself reports 0.0.0.0 for every IPv4
    interface.
    """

    def listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ) -> FakePort:
        super().listenTCP(port, factory, backlog, interface)
        if isIPv6Address(interface):
            return FakePort(IPv6Address("TCP", interface, port))
        return FakePort(IPv4Address("TCP", interface or "0.0.0.0", port))


def listenEvents(logEvents: list[LogEvent], *argv: str) -> list[LogEvent]:
    """
    Start and stop the service for a command line and return the
    C{open_proxy} events it logged.
    """
    service = makeService(parse(*argv), InterfaceReactor())
    service.startService()
    service.stopService()
    assert named(logEvents, "listening"), "the listener did not start"
    return named(logEvents, "open_proxy")


def test_openProxyWarningWithoutClients(logEvents: list[LogEvent]) -> None:
    """
    Listening on every address without --auth or --allow-client logs a
    critical warning that only loopback clients are served.
    """
    [event] = listenEvents(logEvents, "--listen", "tcp:3128:interface=0.0.0.0")
    assert event["log_level"] is LogLevel.critical
    assert event["address"] == "0.0.0.0:3128"
    text = formatEvent(event)
    assert "without --allow-client" in text and "only loopback clients" in text


def test_openProxyWarningOnEveryIPv6Address(logEvents: list[LogEvent]) -> None:
    """
    A C{tcp6:} listener on every address (C{[::]}) without --auth or
    --allow-client gets the warning too, naming C{[::]:port}.
    """
    [event] = listenEvents(logEvents, "--listen", "tcp6:3128")
    assert event["log_level"] is LogLevel.critical
    assert event["address"] == "[::]:3128"


def test_openProxyWarningWithClients(logEvents: list[LogEvent]) -> None:
    """
    With --allow-client but no --auth the warning names the client networks
    that can tunnel.
    """
    [event] = listenEvents(
        logEvents,
        "--listen",
        "tcp:3128:interface=0.0.0.0",
        "--allow-client",
        "192.0.2.0/24",
        "--allow-client",
        "198.51.100.0/24",
    )
    assert event["log_level"] is LogLevel.critical
    assert event["clients"] == "192.0.2.0/24, 198.51.100.0/24"
    assert formatEvent(event).startswith("OPEN PROXY: listening on 0.0.0.0:3128")


@pytest.mark.parametrize(
    "listen",
    [
        "tcp:3128:interface=127.0.0.1",
        "tcp:3128:interface=127.0.0.2",
        "tcp6:3128:interface=\\:\\:1",
        "tcp6:3128:interface=\\:\\:ffff\\:127.0.0.1",
        "unix:/nonexistent/connectproxy.sock",
    ],
)
def test_noWarningOnLoopback(logEvents: list[LogEvent], listen: str) -> None:
    """
    Loopback and UNIX socket listeners are not open proxies.
    """
    assert listenEvents(logEvents, "--listen", listen) == []


def test_noWarningWithAuth(tmp_path: Path, logEvents: list[LogEvent]) -> None:
    """
    With --auth a public listener logs no warning.
    """
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(sha1Entry("alice", PASSWORD), encoding="utf-8")
    events = listenEvents(
        logEvents,
        "--listen",
        "tcp:3128:interface=0.0.0.0",
        "--allow-client",
        "0.0.0.0/0",
        "--auth",
        f"htpasswd:{htpasswd}",
    )
    assert events == []


def test_openProxyWarningOnReload(tmp_path: Path, logEvents: list[LogEvent]) -> None:
    """
    A reload that removes authentication from a public listener logs the
    open-proxy warning.
    """
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(sha1Entry("alice", PASSWORD), encoding="utf-8")
    clients = 'allow-client = ["192.0.2.0/24"]\n'
    path = writeConfig(tmp_path, f'auth = ["htpasswd:{htpasswd}"]\n{clients}')
    service = makeService(
        parse("--config", str(path), "--listen", "tcp:3128:interface=0.0.0.0"),
        InterfaceReactor(),
    )
    service.startService()
    try:
        assert named(logEvents, "open_proxy") == []
        writeConfig(tmp_path, clients)
        assert reloaderOf(service).reload()
        assert len(named(logEvents, "open_proxy")) == 1
    finally:
        service.stopService()


# A listener that cannot listen


def failingService(error: Exception, description: str) -> MultiService:
    """
    The service of C{--listen description} on a reactor whose listens all
    fail with C{error}.
    """

    class FailingReactor(MemoryReactorClock):
        def listenTCP(self, *args: Any, **kwargs: Any) -> Any:
            raise error

        def listenUNIX(self, *args: Any, **kwargs: Any) -> Any:
            raise error

    return makeService(parse("--listen", description), FailingReactor())


@pytest.mark.parametrize(
    "error, description, message",
    [
        (
            CannotListenError("127.0.0.1", 3128, OSError(98, "Address already in use")),
            "tcp:3128:interface=127.0.0.1",
            "cannot listen on 127.0.0.1:3128: Address already in use",
        ),
        (
            CannotListenError("::1", 3128, OSError(13, "Permission denied")),
            "tcp6:3128:interface=\\:\\:1",
            "cannot listen on [::1]:3128: Permission denied",
        ),
        (
            CannotListenError("", 80, OSError(13, "Permission denied")),
            "tcp:80",
            "cannot listen on *:80: Permission denied",
        ),
        (
            CannotListenError(
                None, "/run/p.sock", OSError(2, "No such file or directory")
            ),
            "unix:/run/p.sock",
            "cannot listen on unix:/run/p.sock: No such file or directory",
        ),
        (
            OSError(9, "Bad file descriptor"),
            "tcp:3128",
            "cannot listen on its socket: Bad file descriptor",
        ),
    ],
)
def test_cannotListen(error: Exception, description: str, message: str) -> None:
    """
    A listener that cannot listen stops the start with L{ListenFailed}: an
    exit with status 1 and one line naming the address, the reason and the
    listener, short enough for twistd to pass from its daemon whole.
    """
    service = failingService(error, description)
    with pytest.raises(ListenFailed) as raised:
        service.startService()
    failed = raised.value
    assert isinstance(failed, SystemExit) and isinstance(failed, Exception)
    assert str(failed) == message
    assert failed.code == f"connectproxy: {message} (--listen {description})"
    # What twistd writes to its status pipe: "1 " and the exception line, cut
    # at 100 bytes.
    line = traceback.format_exception_only(type(failed), failed)[-1].strip()
    assert len(f"1 {line}".encode()) <= 100


def test_listeningNamesDescription(logEvents: list[LogEvent]) -> None:
    """
    The C{listening} event names the description the listener came from.
    """
    service = makeService(
        parse("--listen", "tcp:0:interface=127.0.0.1"), InterfaceReactor()
    )
    service.startService()
    service.stopService()
    [event] = named(logEvents, "listening")
    assert event["description"] == "tcp:0:interface=127.0.0.1"
