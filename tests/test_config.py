# -*- test-case-name: tests.test_config -*-
"""
Tests for the configuration file (L{connectproxy._config}, C{--config}), its
reload on SIGHUP (L{connectproxy._service.ReloadService}), and the warning about
an open proxy that C{makeService} logs when it listens.
"""

from __future__ import annotations

import base64
import hashlib
import re
import signal
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.application.service import MultiService
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.abstract import isIPv6Address
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent, LogLevel, formatEvent
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from zope.interface import implementer

from connectproxy import ConnectProxyFactory, DirectConnector, ProxySettings
from connectproxy._assembly import reloader
from connectproxy._auth import HtpasswdChecker
from connectproxy._config import ConfigError
from connectproxy._outgoing import OutgoingAddresses
from connectproxy._service import ListenerService, ListenFailed, ReloadService
from connectproxy.plugins.hostlist import HostListPolicy
from connectproxy.tap import Options, buildConfig, makeService
from connectproxy.testing import FakeConnector, ProxyHarness, RecordingObserver

PASSWORD = "correct horse"
CONNECT = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"


def sha1Entry(user: str, password: str) -> str:
    """
    An htpasswd line for C{user} with an unsalted C{{SHA}} hash.
    """
    digest = base64.b64encode(hashlib.sha1(password.encode("utf-8")).digest())
    return f"{user}:{{SHA}}{digest.decode('ascii')}\n"


def writeConfig(directory: Path, text: str, name: str = "proxy.toml") -> Path:
    """
    Write a configuration file and return its path.
    """
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def parse(*argv: str) -> Options:
    """
    Parse a command line.
    """
    options = Options()
    options.parseOptions(list(argv))
    return options


def plainOptions(options: Options) -> dict[str, Any]:
    """
    The options without the credential checker objects that C{--auth} adds.
    """
    return {
        key: value
        for key, value in options.items()
        if key not in ("credCheckers", "credInterfaces")
    }


def named(events: list[LogEvent], name: str) -> list[LogEvent]:
    """
    The events whose C{event} field is C{name}.
    """
    return [event for event in events if event.get("event") == name]


def listenerFactory(service: MultiService) -> ConnectProxyFactory:
    """
    The proxy factory shared by the listeners of a L{makeService} service.
    """
    factories = {
        child.factory for child in service if isinstance(child, ListenerService)
    }
    [factory] = factories
    assert isinstance(factory, ConnectProxyFactory)
    return factory


def reloaderOf(service: MultiService) -> ReloadService:
    """
    The reload service of a L{makeService} service.
    """
    reloader = service.getServiceNamed("reload")
    assert isinstance(reloader, ReloadService)
    return reloader


class InlineRunner:
    """
    Runs password verifications at once, in place of an L{HtpasswdChecker}'s
    thread pool.
    """

    def __call__(self, verification: Callable[[], bool]) -> Deferred[bool]:
        return succeed(verification())


def logsIn(checker: HtpasswdChecker, user: str, password: str) -> bool:
    """
    Whether C{checker} accepts C{user} with C{password}.
    """
    checker._runInThread = InlineRunner()
    results: list[object] = []
    credentials = UsernamePassword(user.encode("utf-8"), password.encode("utf-8"))
    checker.requestAvatarId(credentials).addBoth(results.append)
    [result] = results
    if isinstance(result, Failure):
        result.trap(UnauthorizedLogin)
        return False
    return True


def currentChecker(factory: ConnectProxyFactory) -> HtpasswdChecker:
    """
    The htpasswd checker the factory's gatekeeper logs users in with.
    """
    portal = factory.gatekeeper.portal
    assert portal is not None
    checker = portal.checkers[IUsernamePassword]
    assert isinstance(checker, HtpasswdChecker)
    return checker


# Reading the file


def test_everyKindOfKey(tmp_path: Path) -> None:
    """
    Parameters, lists (also given as one string), flags, C{auth},
    C{policy} and C{observer} keys are all read from the file.
    """
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(sha1Entry("alice", PASSWORD), encoding="utf-8")
    hosts = tmp_path / "hosts"
    hosts.write_text("*.example.com\n", encoding="utf-8")
    path = writeConfig(
        tmp_path,
        f"""
listen = ["tcp:8080:interface=127.0.0.1", "tcp:8081:interface=127.0.0.1"]
connect-timeout = 2.5
idle-timeout = 60
half-close-timeout = 20
request-timeout = "5"
abort-timeout = 1
max-request-line = 1024
max-head-size = 4096
max-header-fields = 50
max-connections = 100
max-connections-per-client = 5
resolver-threads = 16
resolver-per-client = 2
upstream = "direct"
auth-realm = "Corp"
auth-cache-ttl = 0
auth-max-failures = 3
auth-max-failed-users = 7
auth-failure-window = 10.5
auth-block-time = 300
auth-allow-plaintext = true
allow-port = ["443", "8000-8080"]
allow-network = "10.0.0.0/8"
deny-network = ["10.9.0.0/16"]
allow-host = ["*.example.com", "example.org"]
deny-host = "bad.example.com"
allow-client = ["192.0.2.0/24"]
auth = ["htpasswd:{htpasswd}"]
policy = ["hostlist:{hosts}"]
outgoing-address = ["127.0.0.7", "::1"]
observer = "accesslog"
""",
    )
    options = parse("--config", str(path))
    assert plainOptions(options) == {
        "config": str(path),
        "listen": ["tcp:8080:interface=127.0.0.1", "tcp:8081:interface=127.0.0.1"],
        "connect-timeout": 2.5,
        "idle-timeout": 60.0,
        "half-close-timeout": 20.0,
        "request-timeout": 5.0,
        "abort-timeout": 1.0,
        "max-request-line": 1024,
        "max-head-size": 4096,
        "max-header-fields": 50,
        "max-connections": 100,
        "max-connections-per-client": 5,
        "resolver-threads": 16,
        "resolver-per-client": 2,
        "upstream": "direct",
        "auth-realm": "Corp",
        "auth-cache-ttl": 0.0,
        "auth-max-failures": 3,
        "auth-max-failed-users": 7,
        "auth-failure-window": 10.5,
        "auth-block-time": 300.0,
        "auth-allow-plaintext": True,
        "check-config": 0,
        "allow-port": ["443", "8000-8080"],
        "allow-network": ["10.0.0.0/8"],
        "deny-network": ["10.9.0.0/16"],
        "allow-host": ["*.example.com", "example.org"],
        "deny-host": ["bad.example.com"],
        "allow-client": ["192.0.2.0/24"],
        "trusted-proxy": [],
        "policy": [f"hostlist:{hosts}"],
        "outgoing-address": ["127.0.0.7", "::1"],
        "observer": ["accesslog"],
    }
    [checker] = options.checkers()
    assert isinstance(checker, HtpasswdChecker)
    assert (checker.path, checker.allowPlaintext) == (str(htpasswd), True)
    assert logsIn(checker, "alice", PASSWORD)
    assert not logsIn(checker, "alice", "wrong")
    [policy] = options.policies
    assert isinstance(policy, HostListPolicy)
    assert policy.path == str(hosts)
    rules = options.rules
    assert rules.ports.allows(8080) and not rules.ports.allows(8081)
    assert not rules.hosts.check("bad.example.com")
    assert buildConfig(options, MemoryReactorClock()).settings == ProxySettings(
        requestTimeout=5.0,
        connectTimeout=2.5,
        idleTimeout=60.0,
        halfCloseTimeout=20.0,
        abortTimeout=1.0,
        maxRequestLine=1024,
        maxHeadSize=4096,
        maxHeaderFields=50,
        maxConnections=100,
        maxConnectionsPerClient=5,
        resolverThreads=16,
        resolverPerClient=2,
        outgoingAddresses=OutgoingAddresses("127.0.0.7", "::1"),
    )


def test_portNumbersInLists(tmp_path: Path) -> None:
    """
    A list of ports may hold TOML integers as well as strings.
    """
    path = writeConfig(tmp_path, 'allow-port = [443, "8443"]\n')
    assert parse("--config", str(path))["allow-port"] == ["443", "8443"]


def test_emptyFileKeepsDefaults(tmp_path: Path) -> None:
    """
    An empty file changes nothing.
    """
    path = writeConfig(tmp_path, "")
    assert dict(parse("--config", str(path))) == {**dict(parse()), "config": str(path)}


@pytest.mark.parametrize(
    "argv",
    [["--idle-timeout", "5"], ["--idle-timeout=5"]],
    ids=["separate", "equals"],
)
def test_commandLineParameterWins(tmp_path: Path, argv: list[str]) -> None:
    """
    A parameter on the command line beats the file's, in either form.
    """
    path = writeConfig(tmp_path, "idle-timeout = 60\nconnect-timeout = 3\n")
    options = parse("--config", str(path), *argv)
    assert (options["idle-timeout"], options["connect-timeout"]) == (5.0, 3.0)


@pytest.mark.parametrize(
    "argv",
    [
        ["--allow-port", "8443"],
        ["--allow-port=8443"],
        ["--allow-port", "8443", "--config"],
    ],
    ids=["separate", "equals", "configLast"],
)
def test_commandLineListReplaces(tmp_path: Path, argv: list[str]) -> None:
    """
    Any value of a list option on the command line replaces the file's
    whole list, whether C{--config} comes before or after it.
    """
    path = writeConfig(tmp_path, 'allow-port = ["443", "8000-8080"]\n')
    if argv[-1] == "--config":
        options = parse(*argv, str(path))
    else:
        options = parse("--config", str(path), *argv)
    assert options["allow-port"] == ["8443"]
    assert not options.rules.ports.allows(443)


def test_commandLineFlagKept(tmp_path: Path) -> None:
    """
    A flag on the command line is not turned off by C{false} in the file.
    """
    path = writeConfig(tmp_path, "auth-allow-plaintext = false\n")
    options = parse("--config", str(path), "--auth-allow-plaintext")
    assert options["auth-allow-plaintext"]


def test_commandLineAuthReplaces(tmp_path: Path) -> None:
    """
    C{--auth} on the command line replaces the file's C{auth} list.
    """
    fromFile = tmp_path / "file.htpasswd"
    fromFile.write_text(sha1Entry("alice", PASSWORD), encoding="utf-8")
    fromCommandLine = tmp_path / "command.htpasswd"
    fromCommandLine.write_text(sha1Entry("bob", PASSWORD), encoding="utf-8")
    path = writeConfig(tmp_path, f'auth = "htpasswd:{fromFile}"\n')
    options = parse("--config", str(path), "--auth", f"htpasswd:{fromCommandLine}")
    assert [c.path for c in options.checkers()] == [str(fromCommandLine)]


def test_abbreviatedOptionWins(tmp_path: Path) -> None:
    """
    An abbreviated long option (which getopt accepts) beats the file too.
    """
    path = writeConfig(tmp_path, 'idle-timeout = 60\nallow-port = ["443"]\n')
    options = parse("--config", str(path), "--idle", "5", "--allow-p", "8443")
    assert (options["idle-timeout"], options["allow-port"]) == (5.0, ["8443"])


def test_valueLikeAnOptionIsAValue(tmp_path: Path) -> None:
    """
    A value that looks like another option's name does not count as giving
    that option.
    """
    path = writeConfig(tmp_path, "idle-timeout = 60\n")
    options = parse("--config", str(path), "--auth-realm", "--idle-timeout")
    assert (options["auth-realm"], options["idle-timeout"]) == ("--idle-timeout", 60.0)


# Errors


@pytest.mark.parametrize(
    "text, key, message",
    [
        ("no-such-key = 1\n", "no-such-key", "unknown key"),
        ('config = "other.toml"\n', "config", "unknown key"),
        ("check-config = true\n", "check-config", "unknown key"),
        ("idle-timeout = [1]\n", "idle-timeout", "must be a number"),
        ("idle-timeout = true\n", "idle-timeout", "not a boolean (true)"),
        ("idle-timeout = {seconds = 5}\n", "idle-timeout", "not a table"),
        ("auth-allow-plaintext = 1\n", "auth-allow-plaintext", "must be true or false"),
        ('auth-allow-plaintext = "yes"\n', "auth-allow-plaintext", "true or false"),
        ("allow-port = [true]\n", "allow-port", "or port numbers"),
        ("allow-port = 4.5\n", "allow-port", "not a float (4.5)"),
        ("[allow-host]\nname = 1\n", "allow-host", "must be a list of strings"),
        ('allow-host = [["a.example"]]\n', "allow-host", "not a list"),
        ("idle-timeout = -1\n", "idle-timeout", "positive number of seconds"),
        ('idle-timeout = "soon"\n', "idle-timeout", "not a number of seconds"),
        ("max-connections = 1.5\n", "max-connections", "not a whole number"),
        ('allow-port = ["0"]\n', "allow-port", "ports go from 1 to 65535"),
        ('allow-network = ["10.0.0.1/8"]\n', "allow-network", "not a network"),
        ('allow-host = "*"\n', "allow-host", "matches all"),
        ('listen = ["bogus:1"]\n', "listen", "not a valid listener"),
        ('policy = ["no-such-policy"]\n', "policy", "no policy plugin named"),
        ('auth = ["nosuchtype:x"]\n', "auth", "no checker type 'nosuchtype'"),
    ],
)
def test_badKey(tmp_path: Path, text: str, key: str, message: str) -> None:
    """
    An unknown key or a bad value is a ConfigError naming the file and the
    key.
    """
    path = writeConfig(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        parse("--config", str(path))
    assert isinstance(raised.value, UsageError)
    text = str(raised.value)
    assert str(path) in text
    assert repr(key) in text
    assert message in text


def test_invalidTOML(tmp_path: Path) -> None:
    """
    A file that is not TOML is a ConfigError naming the file and the line.
    """
    path = writeConfig(tmp_path, "idle-timeout = 60\nallow-port = 443 443\n")
    with pytest.raises(ConfigError, match="not valid TOML") as raised:
        parse("--config", str(path))
    assert str(path) in str(raised.value)
    assert "line 2" in str(raised.value)


def test_notUTF8(tmp_path: Path) -> None:
    """
    A file that is not UTF-8 is a ConfigError naming it.
    """
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'auth-realm = "Caf\xe9"\n')
    with pytest.raises(ConfigError, match="not valid TOML") as raised:
        parse("--config", str(path))
    assert str(path) in str(raised.value)


def test_missingFile(tmp_path: Path) -> None:
    """
    A file that cannot be read is a ConfigError naming it.
    """
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match="cannot read") as raised:
        parse("--config", str(path))
    assert str(path) in str(raised.value)


def test_fileValueFailsCommandLineChecks(tmp_path: Path) -> None:
    """
    Values from the file go through the same cross-checks as the command
    line's.
    """
    path = writeConfig(tmp_path, "max-request-line = 9000\nmax-head-size = 8000\n")
    with pytest.raises(UsageError, match="at least --max-request-line") as raised:
        parse("--config", str(path))
    assert str(path) in str(raised.value)


def test_crossCheckErrorNamesFile(tmp_path: Path) -> None:
    """
    A value from the file that postOptions refuses is reported with the
    file's name.
    """
    path = writeConfig(tmp_path, "auth-cache-ttl = -1\n")
    with pytest.raises(UsageError) as raised:
        parse("--config", str(path))
    assert str(path) in str(raised.value)


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
    client.send(CONNECT)
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
    late.send(CONNECT)
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


# Every wrong kind of value names the key and what it takes


@pytest.mark.parametrize(
    "text, message",
    [
        # A string where a list of several values belongs.
        (
            'allow-port = "443, 8443"\n',
            "key 'allow-port': invalid port range '443, 8443'",
        ),
        # A list where a string belongs.
        (
            'auth-realm = ["Corp"]\n',
            "key 'auth-realm': must be a string, like auth-realm = "
            '"connectproxy", not a list',
        ),
        # An integer where a string belongs.
        (
            "auth-realm = 5\n",
            "key 'auth-realm': must be a string, like auth-realm = "
            '"connectproxy", not an integer (5)',
        ),
        (
            "listen = 3128\n",
            "key 'listen': must be a list of strings, like listen = "
            '["tcp:3128:interface=127.0.0.1"], not an integer (3128)',
        ),
        (
            "auth = [5]\n",
            "key 'auth': must be a list of strings, like auth = "
            '["htpasswd:/etc/connectproxy/htpasswd"], not an integer (5)',
        ),
        # Nested tables.
        ("[listen]\ntcp = 3128\n", "key 'listen': must be a list of strings"),
        ("[idle-timeout]\nseconds = 5\n", "key 'idle-timeout': must be a number"),
        ("[auth-allow-plaintext]\n", "key 'auth-allow-plaintext': must be true"),
        ("listen = [{tcp = 3128}]\n", "not a table"),
        ("[proxy]\nlisten = []\n", "unknown key 'proxy'"),
        # Unknown keys, with the nearest known one.
        (
            "idle_timeout = 5\n",
            "unknown key 'idle_timeout' (did you mean 'idle-timeout'?)",
        ),
        ("allow-ports = [443]\n", "(did you mean 'allow-port'?)"),
        # Dates and booleans.
        ("auth-realm = 1979-05-27\n", "not a date or time (1979-05-27)"),
        ("max-connections = false\n", "not a boolean (false)"),
        # A listener with an unescaped IPv6 address.
        (
            "listen = ['tcp6:3128:interface=::1']\n",
            "key 'listen': --listen 'tcp6:3128:interface=::1' is not a valid "
            "listener: escape the colons of an IPv6 address with a backslash",
        ),
    ],
)
def test_wrongValueNamesKey(tmp_path: Path, text: str, message: str) -> None:
    """
    Each kind of wrong value is a ConfigError naming the file, the key and
    what it takes, never an internal error.
    """
    path = writeConfig(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        parse("--config", str(path))
    assert str(raised.value).startswith(f"{path}: ")
    assert message in str(raised.value)
    assert "TypeError" not in str(raised.value)


@pytest.mark.parametrize(
    "text, message",
    [
        (
            'auth = ["htpasswd:/nonexistent/htpasswd"]\n',
            "key 'auth': cannot read htpasswd file /nonexistent/htpasswd: no "
            "such file or directory",
        ),
        (
            'auth = ["nosuch:x"]\n',
            "key 'auth': no checker type 'nosuch' (known: file, htpasswd, memory; "
            "see --help-auth)",
        ),
        (
            'policy = ["hostlist:/nonexistent/hosts"]\n',
            "key 'policy': hostlist: cannot read host list /nonexistent/hosts: No "
            "such file or directory",
        ),
        (
            'policy = ["nosuch"]\n',
            "key 'policy': no policy plugin named 'nosuch' (installed: hostlist)",
        ),
        (
            'upstream = "nosuch"\n',
            "key 'upstream': ",
        ),
        (
            'log-format = "json"\n',
            "'log-format' is an option of the connectproxy and twist commands, "
            "not a configuration key: give it on the command line "
            "(connectproxy --log-format ...)",
        ),
        (
            'pidfile = "/run/connectproxy.pid"\n',
            "'pidfile' is an option of twistd, not a configuration key: give it "
            "on the command line, before the subcommand (twistd --pidfile ... "
            "connectproxy ...)",
        ),
        (
            'reactor = "epoll"\n',
            "'reactor' is an option of the connectproxy, twist and twistd "
            "commands, not a configuration key",
        ),
    ],
)
def test_fileErrorsNameTheKey(tmp_path: Path, text: str, message: str) -> None:
    """
    An error in a value from the file names the file and the key (not the
    command-line option, nor an "unexpected error"); a key that is an option
    of the command running the proxy says so.
    """
    path = writeConfig(tmp_path, text)
    with pytest.raises(UsageError) as raised:
        parse("--config", str(path))
    assert str(raised.value).startswith(f"{path}: {message}")
    assert "Unexpected error" not in str(raised.value)
    assert "did you mean" not in str(raised.value)


def test_severalValuesInOneString(tmp_path: Path) -> None:
    """
    Several values written as one string get a hint to write a list.
    """
    path = writeConfig(tmp_path, 'allow-client = "10.0.0.0/8, 192.0.2.0/24"\n')
    with pytest.raises(ConfigError) as raised:
        parse("--config", str(path))
    assert str(raised.value).endswith(
        '(several values go in a list: allow-client = ["10.0.0.0/8", "192.0.2.0/24"])'
    )


def test_oneStringIsAList(tmp_path: Path) -> None:
    """
    One value of a list may be written as a string, and numbers as strings.
    """
    path = writeConfig(
        tmp_path, 'allow-client = "10.0.0.0/8"\nmax-connections = "12"\n'
    )
    options = parse("--config", str(path))
    assert (options["allow-client"], options["max-connections"]) == (
        ["10.0.0.0/8"],
        12,
    )


# The sample configuration file

SAMPLE = (
    Path(__file__).resolve().parent.parent / "docs" / "examples" / "connectproxy.toml"
)


def sampleKeys() -> set[str]:
    """
    The keys the sample sets or shows commented out.
    """
    text = SAMPLE.read_text(encoding="utf-8")
    return set(re.findall(r"^#? ?([a-z][a-z-]*) = ", text, re.M))


def test_sampleLoadsToDefaults() -> None:
    """
    The sample file loads, and every value it sets is the default.
    """
    assert plainOptions(parse("--config", str(SAMPLE))) == {
        **plainOptions(parse()),
        "config": str(SAMPLE),
    }


def test_sampleCoversEveryKey() -> None:
    """
    The sample shows every key the file accepts, and no other: an option
    added to Options must be added to the sample.
    """
    assert sampleKeys() == set(Options().configKeys())


def test_sampleExplainsEveryKey() -> None:
    """
    Every key of the sample comes after a comment explaining it.
    """
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^[a-z][a-z-]* = ", line):
            before = [text for text in lines[:number] if text.strip()]
            assert before[-1].startswith("#"), line


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
