# -*- test-case-name: tests.test_tap -*-
"""
Tests for the command line (L{connectproxy.tap}) and the twistd plugin.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent
from twisted.plugin import getPlugins
from twisted.python.usage import UsageError

from connectproxy import ConnectProxyFactory, ProxySettings
from connectproxy._settings import defaultMaxConnections
from connectproxy.tap import DEFAULT_LISTEN, Options, makeService

ROOT = Path(__file__).resolve().parent.parent

DEFAULTS = {
    "listen": [DEFAULT_LISTEN],
    "config": None,
    "connect-timeout": 10.0,
    "idle-timeout": 600.0,
    "request-timeout": 30.0,
    "abort-timeout": 15.0,
    "max-request-line": 8192,
    "max-head-size": 65536,
    "max-connections": defaultMaxConnections(),
    "max-connections-per-client": 0,
    "auth-allow-plaintext": 0,
    "auth-realm": "connectproxy",
    "auth-cache-ttl": 30.0,
    "auth-max-failures": 10,
    "auth-max-failed-users": 20,
    "auth-failure-window": 60.0,
    "auth-block-time": 60.0,
    "allow-port": ["443"],
    "allow-network": [],
    "deny-network": [],
    "allow-host": [],
    "deny-host": [],
    "allow-client": [],
    "trusted-proxy": [],
    "policy": [],
}


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def test_defaults() -> None:
    """
    With no arguments every option has its safe default.
    """
    options = parse()
    assert dict(options) == DEFAULTS
    assert options.settings() == ProxySettings()


def test_allOptions() -> None:
    """
    Every option is parsed and coerced; --listen repeats.
    """
    options = parse(
        "--listen",
        "tcp:8080:interface=127.0.0.1",
        "--listen",
        "tcp6:8080:interface=\\:\\:1",
        "--connect-timeout",
        "2.5",
        "--idle-timeout",
        "60",
        "--request-timeout",
        "5",
        "--abort-timeout",
        "1",
        "--max-request-line",
        "1024",
        "--max-head-size",
        "4096",
        "--max-connections",
        "100",
        "--max-connections-per-client",
        "5",
        "--auth-realm",
        "Corp",
        "--auth-cache-ttl",
        "0",
        "--auth-max-failures",
        "3",
        "--auth-max-failed-users",
        "7",
        "--auth-failure-window",
        "10",
        "--auth-block-time",
        "300",
        "--auth-allow-plaintext",
        "--allow-port",
        "443",
        "--allow-port",
        "8000-8080",
        "--allow-network",
        "10.0.0.0/8",
        "--deny-network",
        "10.9.0.0/16",
        "--allow-host",
        "*.example.com",
        "--deny-host",
        "bad.example.com",
        "--allow-client",
        "192.0.2.0/24",
        "--trusted-proxy",
        "198.51.100.0/24",
    )
    assert dict(options) == {
        "listen": ["tcp:8080:interface=127.0.0.1", "tcp6:8080:interface=\\:\\:1"],
        "config": None,
        "connect-timeout": 2.5,
        "idle-timeout": 60.0,
        "request-timeout": 5.0,
        "abort-timeout": 1.0,
        "max-request-line": 1024,
        "max-head-size": 4096,
        "max-connections": 100,
        "max-connections-per-client": 5,
        "auth-allow-plaintext": 1,
        "auth-realm": "Corp",
        "auth-cache-ttl": 0.0,
        "auth-max-failures": 3,
        "auth-max-failed-users": 7,
        "auth-failure-window": 10.0,
        "auth-block-time": 300.0,
        "allow-port": ["443", "8000-8080"],
        "allow-network": ["10.0.0.0/8"],
        "deny-network": ["10.9.0.0/16"],
        "allow-host": ["*.example.com"],
        "deny-host": ["bad.example.com"],
        "allow-client": ["192.0.2.0/24"],
        "trusted-proxy": ["198.51.100.0/24"],
        "policy": [],
    }
    rules = options.rules
    assert rules.ports.allows(8080) and not rules.ports.allows(8081)
    assert rules.hosts.check("a.example.com") and not rules.hosts.check(
        "bad.example.com"
    )
    assert options.settings() == ProxySettings(
        requestTimeout=5.0,
        connectTimeout=2.5,
        idleTimeout=60.0,
        abortTimeout=1.0,
        maxRequestLine=1024,
        maxHeadSize=4096,
        maxConnections=100,
        maxConnectionsPerClient=5,
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--connect-timeout", "-1"], "positive number of seconds"),
        (["--connect-timeout", "0"], "positive number of seconds"),
        (["--idle-timeout", "soon"], "not a number of seconds"),
        (["--request-timeout", "inf"], "positive number of seconds"),
        (["--abort-timeout", "nan"], "positive number of seconds"),
        (["--max-request-line", "12"], "at least 64 bytes"),
        (["--max-head-size", "big"], "not a whole number"),
        (["--max-request-line", "9000", "--max-head-size", "8000"], "at least"),
        (["--listen", "bogus:1234"], "not a valid listener"),
        (["--allow-port", "0"], "--allow-port"),
        (["--allow-port", "80-70"], "--allow-port"),
        (["--allow-client", "300.0.0.0/8"], "--allow-client"),
        (["--trusted-proxy", "nonsense"], "--trusted-proxy"),
        (["--auth-realm", "x\r\nSet-Cookie: a=1"], "printable ASCII"),
        (["--auth-realm", ""], "printable ASCII"),
        (["--deny-network", "nonsense"], "--deny-network"),
        (["--allow-client", "300.0.0.0/8"], "--allow-client"),
        (["--allow-host", "*"], "--allow-host"),
        (["--deny-host", "a.*.example"], "--deny-host"),
        (["--max-connections", "-1"], "must not be negative"),
        (["--auth-cache-ttl", "-5"], "must not be negative"),
        (["--policy", "no-such-policy"], "no policy plugin named"),
        (["--policy", "hostlist"], "needs a file"),
        (["--policy", "hostlist:/nonexistent/hosts"], "cannot read"),
        (["--auth", "nosuchtype:x"], "not recognized"),
        (["--listen", "tcp:notaport"], "not a valid listener"),
        (["--no-such-option"], "no-such-option"),
    ],
)
def test_badValues(argv: list[str], message: str) -> None:
    """
    Bad values are refused with a message that names the problem.
    """
    with pytest.raises(UsageError) as raised:
        parse(*argv)
    assert message in str(raised.value)


def test_helpExplainsOptions() -> None:
    """
    --help describes every option.
    """
    text = str(Options())
    for name in DEFAULTS:
        assert f"--{name}" in text


def test_makeServiceListens(logEvents: list[LogEvent]) -> None:
    """
    makeService listens on every --listen with one shared factory, logs
    where, and stops cleanly.
    """
    reactor = MemoryReactorClock()
    options = parse("--listen", "tcp:0:interface=127.0.0.1", "--listen", "tcp:3129")
    service = makeService(options, reactor)
    service.startService()
    assert [(port, iface) for port, _, _, iface in reactor.tcpServers] == [
        (0, "127.0.0.1"),
        (3129, ""),
    ]
    factories = {factory for _, factory, _, _ in reactor.tcpServers}
    assert len(factories) == 1
    [factory] = factories
    assert isinstance(factory, ConnectProxyFactory)
    assert factory.reactor is reactor
    assert [e["event"] for e in logEvents if e.get("event") == "listening"] == [
        "listening",
        "listening",
    ]
    d = service.stopService()
    assert d is not None


def test_pluginDiscovered() -> None:
    """
    twisted.plugin finds the connectproxy service maker.
    """
    makers = {m.tapname: m for m in getPlugins(IServiceMaker)}
    maker = makers["connectproxy"]
    assert isinstance(maker.options(), Options)


def test_pluginImportLight() -> None:
    """
    Importing the plugin module imports neither the reactor nor OpenSSL nor
    connectproxy itself.
    """
    code = (
        "import sys; import twisted.plugins.connectproxy_plugin; "
        "bad = [m for m in ('twisted.internet.reactor', 'OpenSSL', 'connectproxy')"
        " if m in sys.modules]; print(bad)"
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


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--max-request-line", "10"], "--max-request-line: '10' is too small"),
        (["--idle-timeout", "soon"], "--idle-timeout: 'soon' is not a number"),
        (["--auth", "htpasswd:/nonexistent/file"], "--auth: cannot read htpasswd"),
    ],
)
def test_errorsNameTheOption(argv: list[str], message: str) -> None:
    """
    A bad value's message starts with the option it was given to.
    """
    with pytest.raises(UsageError) as raised:
        parse(*argv)
    assert str(raised.value).startswith(message)


def test_authCacheTTLReachesChecker(tmp_path: Path) -> None:
    """
    --auth-cache-ttl is the htpasswd checker's cache lifetime.
    """
    path = tmp_path / "htpasswd"
    path.write_text("alice:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=\n")
    options = parse("--auth", f"htpasswd:{path}", "--auth-cache-ttl", "0")
    [checker] = options.checkers()
    assert checker.cacheTTL == 0


def test_helpIsOneParagraphPerOption() -> None:
    """
    Option help from handler docstrings is one paragraph, without the
    docstring's indentation.
    """
    for name in ("opt_listen", "opt_allow_host", "opt_trusted_proxy", "opt_policy"):
        doc = getattr(Options, name).__doc__
        assert doc and "  " not in doc and "\n" not in doc
