# -*- test-case-name: tests.test_tap -*-
"""
Tests for the command line (L{connectproxy.tap}) and the twistd plugin.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from twisted.application.service import IServiceMaker
from twisted.copyright import version as twistedVersion
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.python.usage import UsageError

from connectproxy import ConnectProxyFactory, ProxySettings, __version__, _optionvalues
from connectproxy._dnscache import chooseResolver
from connectproxy._observer import TunnelRecord
from connectproxy._outgoing import OutgoingAddresses
from connectproxy._service import ListenerService
from connectproxy.tap import DEFAULT_LISTEN, Options, buildConfig, makeService

ROOT = Path(__file__).resolve().parent.parent

DEFAULTS = {
    "listen": [DEFAULT_LISTEN],
    "config": None,
    "connect-timeout": 10.0,
    "idle-timeout": 600.0,
    "half-close-timeout": 60.0,
    "request-timeout": 30.0,
    "abort-timeout": 15.0,
    "upstream-keepalive": 64,
    "upstream-idle-timeout": 30.0,
    "log-query": 0,
    "shutdown-grace": 30.0,
    "relay": "auto",
    "access-log": None,
    "access-log-format": "text",
    "log-level": "info",
    "max-request-line": 8192,
    "max-head-size": 65536,
    "max-header-fields": 256,
    "max-connections": None,
    "max-connections-per-client": 0,
    "resolver-threads": 32,
    "resolver-per-client": 8,
    "workers": 1,
    "resolver": "auto",
    "dns-cache-size": 4096,
    "upstream": "direct",
    "upstream-proxy": None,
    "upstream-ca": None,
    "auth-allow-plaintext": 0,
    "check-config": 0,
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
    "outgoing-address": [],
    "observer": ["accesslog"],
    "upstream-route": [],
    "metrics": [],
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
    assert buildConfig(options, MemoryReactorClock()).settings == ProxySettings()


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
        "--half-close-timeout",
        "20",
        "--request-timeout",
        "5",
        "--abort-timeout",
        "1",
        "--upstream-keepalive",
        "8",
        "--upstream-idle-timeout",
        "5",
        "--log-query",
        "--shutdown-grace",
        "5",
        "--relay",
        "transport",
        "--access-log",
        "/var/log/connectproxy/access.log",
        "--access-log-format",
        "squid",
        "--log-level",
        "warn",
        "--max-request-line",
        "1024",
        "--max-head-size",
        "4096",
        "--max-header-fields",
        "50",
        "--max-connections",
        "100",
        "--max-connections-per-client",
        "5",
        "--resolver-threads",
        "64",
        "--resolver-per-client",
        "0",
        "--workers",
        "3",
        "--resolver",
        "system",
        "--dns-cache-size",
        "0",
        "--upstream",
        "direct",
        "--upstream-proxy",
        "http://alice:pw@parent.example:3128",
        "--upstream-route",
        "*.lan=direct",
        "--upstream-route",
        "partner.example=https://gw.partner.example:3129",
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
        "--outgoing-address",
        "127.0.0.7",
        "--observer",
        "accesslog",
        "--observer",
        "accesslog",
        "--metrics",
        "tcp:9108:interface=127.0.0.1",
        "--metrics",
        "unix:/run/connectproxy/metrics.sock",
    )
    assert dict(options) == {
        "listen": ["tcp:8080:interface=127.0.0.1", "tcp6:8080:interface=\\:\\:1"],
        "config": None,
        "connect-timeout": 2.5,
        "idle-timeout": 60.0,
        "half-close-timeout": 20.0,
        "request-timeout": 5.0,
        "abort-timeout": 1.0,
        "upstream-keepalive": 8,
        "upstream-idle-timeout": 5.0,
        "log-query": 1,
        "shutdown-grace": 5.0,
        "relay": "transport",
        "access-log": "/var/log/connectproxy/access.log",
        "access-log-format": "squid",
        "log-level": "warn",
        "max-request-line": 1024,
        "max-head-size": 4096,
        "max-header-fields": 50,
        "max-connections": 100,
        "max-connections-per-client": 5,
        "resolver-threads": 64,
        "resolver-per-client": 0,
        "workers": 3,
        "resolver": "system",
        "dns-cache-size": 0,
        "upstream": "direct",
        "upstream-proxy": "http://alice:pw@parent.example:3128",
        "upstream-ca": None,
        "auth-allow-plaintext": 1,
        "check-config": 0,
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
        "outgoing-address": ["127.0.0.7"],
        "observer": ["accesslog", "accesslog"],
        "upstream-route": [
            "*.lan=direct",
            "partner.example=https://gw.partner.example:3129",
        ],
        "metrics": [
            "tcp:9108:interface=127.0.0.1",
            "unix:/run/connectproxy/metrics.sock",
        ],
    }
    rules = options.rules
    assert rules.ports.allows(8080) and not rules.ports.allows(8081)
    assert rules.hosts.check("a.example.com") and not rules.hosts.check(
        "bad.example.com"
    )
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
        resolverThreads=64,
        resolverPerClient=0,
        resolver="system",
        dnsCacheSize=0,
        outgoingAddresses=OutgoingAddresses("127.0.0.7"),
        shutdownGrace=5.0,
        upstreamKeepalive=8,
        upstreamIdleTimeout=5.0,
        logQuery=True,
        relay="transport",
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
        (["--max-header-fields", "0"], "must be at least 1"),
        (["--max-header-fields", "many"], "not a whole number"),
        (["--half-close-timeout", "0"], "positive number of seconds"),
        (["--max-request-line", "9000", "--max-head-size", "8000"], "at least"),
        (["--listen", "bogus:1234"], "not a valid listener: unknown type 'bogus'"),
        (["--listen", "tls:3129"], "would listen on [::]:443, not on port 3129"),
        (["--listen", "tcp6:3128:interface=::1"], "escape the colons"),
        (
            ["--listen", "tcp:3128", "--listen", "tcp:port=3128:interface=0.0.0.0"],
            "'tcp:3128' and 'tcp:port=3128:interface=0.0.0.0' both listen on "
            "0.0.0.0:3128",
        ),
        (
            ["--listen", "tcp:3128", "--listen", "tcp:3128:interface=127.0.0.1"],
            "--listen 'tcp:3128' and 'tcp:3128:interface=127.0.0.1' overlap: "
            "0.0.0.0:3128 and 127.0.0.1:3128 both take port 3128 of 127.0.0.1 "
            "(a listener on every address serves that one too: keep one of "
            "them)",
        ),
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
        (["--resolver-threads", "0"], "must be at least 1"),
        (["--resolver-per-client", "-1"], "must not be negative"),
        (["--resolver", "nscd"], "is not one of auto, dns, system"),
        (["--dns-cache-size", "-1"], "must not be negative"),
        (["--auth-cache-ttl", "-5"], "must not be negative"),
        (["--policy", "no-such-policy"], "no policy plugin named"),
        (["--policy", "hostlist"], "needs a file"),
        (["--policy", "hostlist:/nonexistent/hosts"], "cannot read"),
        (
            ["--auth", "nosuchtype:x"],
            "--auth: no checker type 'nosuchtype' (known: file, htpasswd, memory; "
            "see --help-auth)",
        ),
        (["--listen", "tcp:notaport"], "not a valid listener"),
        (["--upstream-proxy", "socks5://p:1080"], "--upstream-proxy: unknown scheme"),
        (["--upstream-proxy", "http://p"], "--upstream-proxy: the URL needs a port"),
        (["--upstream-route", "*.lan"], "--upstream-route: expected PATTERN=URL"),
        (["--upstream-route", "*=direct"], "--upstream-route: invalid host pattern"),
        (
            ["--upstream-route", "a=direct", "--upstream-route", "a.=direct"],
            "--upstream-route: a is routed twice",
        ),
        (
            ["--upstream-proxy", "https://p:1", "--upstream-ca", "/nonexistent"],
            "--upstream-ca: cannot read /nonexistent",
        ),
        (["--no-such-option"], "no-such-option"),
        (["--shutdown-grace", "-1"], "--shutdown-grace: '-1' must not be negative"),
        (["--relay", "fast"], "--relay: 'fast' is not one of auto, splice, transport"),
        (["--log-level", "loud"], "--log-level: 'loud' is not one of debug, info"),
        (["--access-log", ""], "--access-log: '' is not a file name"),
        (["--access-log-format", "clf"], "'clf' is not one of text, json, squid"),
        (
            ["--access-log-format", "squid"],
            "--access-log-format squid needs --access-log FILE",
        ),
        (
            ["--access-log", "-", "--observer", "accesslog:x"],
            "accesslog takes no argument",
        ),
        (["--workers", "0"], "--workers: '0' must be from 1 to 256"),
        (["--workers", "many"], "--workers: 'many' is not a whole number or auto"),
    ],
)
def test_badValues(argv: list[str], message: str) -> None:
    """
    Bad values are refused with a message that names the problem.
    """
    with pytest.raises(UsageError) as raised:
        parse(*argv)
    assert message in str(raised.value)


def test_relaySpliceUnavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Where C{splice(2)} does not exist, C{--relay splice} refuses to start,
    saying why and what to use instead; C{auto} and C{transport} start.
    """
    monkeypatch.setattr(
        _optionvalues, "spliceUnavailableReason", lambda: "splice(2) is Linux only"
    )
    with pytest.raises(UsageError) as raised:
        parse("--relay", "splice")
    assert str(raised.value) == (
        "--relay: splice is not available: splice(2) is Linux only; use auto "
        "or transport"
    )
    assert parse("--relay", "auto")["relay"] == "auto"
    assert parse("--relay", "transport")["relay"] == "transport"


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--allow-port", "443", "8443"],
            "unexpected argument '8443' after --allow-port 443: an option takes "
            "one value; repeat the option for each (--allow-port 443 "
            "--allow-port 8443)",
        ),
        (
            ["--allow-p=443", "8443", "--check-config"],
            "unexpected argument '8443' after --allow-port 443: an option takes "
            "one value; repeat the option for each (--allow-port 443 "
            "--allow-port 8443)",
        ),
        (
            ["--check-config", "tcp:3128"],
            "unexpected argument 'tcp:3128' after --check-config, which takes no value",
        ),
        (["tcp:3128"], "unexpected argument 'tcp:3128': the proxy takes options only"),
    ],
)
def test_unexpectedArgument(argv: list[str], message: str) -> None:
    """
    An argument that is not an option says which one, and what to write
    instead when it follows an option's value.
    """
    with pytest.raises(UsageError) as raised:
        parse(*argv)
    assert str(raised.value) == message


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


def listenerFactory(service: Any) -> ConnectProxyFactory:
    """
    The proxy factory of a L{makeService} service's listeners.
    """
    [factory] = {
        child.factory for child in service if isinstance(child, ListenerService)
    }
    assert isinstance(factory, ConnectProxyFactory)
    return factory


@pytest.mark.parametrize("runner", ["twistd", "twist", None])
def test_tunnelOpensUnderEveryRunner(
    logEvents: list[LogEvent], runner: str | None
) -> None:
    """
    Under twistd, twist and embedded alike, the access log reports tunnels
    that open (a debug event) and close; --log-level (info by default,
    under twistd too) decides whether the debug one is shown, so each
    tunnel is one line at the default level
    (tests/integration/test_accesslog.py runs each).
    """
    from twisted.application.twist._options import TwistOptions
    from twisted.scripts._twistd_unix import ServerOptions

    listen = ["connectproxy", "--listen", "tcp:0:interface=127.0.0.1"]
    if runner == "twistd":
        top: Any = ServerOptions()
        top.parseOptions(["--pidfile=", *listen])
        options = top.subOptions
    elif runner == "twist":
        top = TwistOptions()
        top.parseOptions(listen)
        options = top.subOptions
    else:
        options = parse(*listen[1:])
    factory = listenerFactory(makeService(options, MemoryReactorClock()))
    record = TunnelRecord("127.0.0.1:5", "example.com", 443, "192.0.2.1:443")
    factory.observer.tunnelOpened(record)
    factory.observer.tunnelClosed(record)
    events = [e["event"] for e in logEvents if "event" in e]
    # --resolver auto says what it chose when the proxy starts.
    assert events == ["resolver_chosen", "tunnel_open", "tunnel_close"]


def test_pluginDiscovered() -> None:
    """
    twisted.plugin finds the connectproxy service maker.
    """
    makers = {m.tapname: m for m in getPlugins(IServiceMaker)}
    maker = makers["connectproxy"]
    assert isinstance(maker.options(), Options)


def test_pluginImportLight() -> None:
    """
    Importing the plugin module imports neither the reactor, OpenSSL,
    prometheus_client nor connectproxy itself.
    """
    code = (
        "import sys; import twisted.plugins.connectproxy_plugin; "
        "bad = [m for m in ('twisted.internet.reactor', 'OpenSSL', 'connectproxy',"
        " 'prometheus_client')"
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


# --version, --check-config and errors under twistd / twist


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """
    --version prints connectproxy's version, then Twisted's, and exits 0.
    """
    with pytest.raises(SystemExit) as raised:
        parse("--version")
    assert raised.value.code == 0
    assert capsys.readouterr().out == (
        f"connectproxy {__version__}\nTwisted {twistedVersion}\n"
    )


def checkConfig(capsys: pytest.CaptureFixture[str], *argv: str) -> list[str]:
    """
    Run --check-config with more options; return the lines it printed.
    """
    with pytest.raises(SystemExit) as raised:
        parse("--check-config", *argv)
    assert raised.value.code == 0
    return capsys.readouterr().out.splitlines()


def _autoLine() -> str:
    """
    The C{--check-config} line of C{--resolver auto} on this machine.
    """
    chosen, why = chooseResolver()
    return f"resolver: auto -> {chosen} ({why})"


def test_checkConfigResolver(capsys: pytest.CaptureFixture[str]) -> None:
    """
    --check-config prints the resolver: what C{auto} chooses here and why,
    or the one given.
    """
    assert _autoLine() in checkConfig(capsys)
    assert "resolver: system" in checkConfig(capsys, "--resolver", "system")
    assert "resolver: dns" in checkConfig(capsys, "--resolver", "dns")


def test_checkConfigListeners(capsys: pytest.CaptureFixture[str]) -> None:
    """
    --check-config prints one line per listener, saying where it would
    listen, then that the configuration is usable, and exits 0.
    """
    lines = checkConfig(
        capsys,
        "--listen",
        "tcp:3128:interface=127.0.0.1",
        "--listen",
        "unix:/nonexistent/proxy.sock",
        "--listen",
        "haproxy:tcp6:3129:interface=\\:\\:1",
    )
    assert lines == [
        "listen tcp:3128:interface=127.0.0.1 -> 127.0.0.1:3128 (plain HTTP)",
        "listen unix:/nonexistent/proxy.sock -> unix:/nonexistent/proxy.sock "
        "(plain HTTP)",
        "listen haproxy:tcp6:3129:interface=\\:\\:1 -> [::1]:3129 "
        "(PROXY protocol, then plain HTTP)",
        _autoLine(),
        f"connectproxy {__version__}: configuration OK",
    ]


def test_checkConfigIPv6(capsys: pytest.CaptureFixture[str]) -> None:
    """
    --check-config writes IPv6 listeners as C{[v6]:port}: C{tcp6:} without
    an interface listens on C{[::]}; IPv6 client and destination networks
    are accepted.
    """
    lines = checkConfig(
        capsys,
        *("--listen", "tcp6:3128", "--listen", "tcp6:3129:interface=\\:\\:1"),
        *("--allow-client", "2001:db8::/32", "--allow-network", "2001:db8:1::/48"),
        *("--trusted-proxy", "fd00::/8", "--deny-network", "::ffff:10.0.0.0/104"),
    )
    assert lines == [
        "listen tcp6:3128 -> [::]:3128 (plain HTTP)",
        "listen tcp6:3129:interface=\\:\\:1 -> [::1]:3129 (plain HTTP)",
        _autoLine(),
        f"connectproxy {__version__}: configuration OK",
    ]


def test_checkConfigDefaults(capsys: pytest.CaptureFixture[str]) -> None:
    """
    Without --listen, --check-config shows the default listener.
    """
    assert checkConfig(capsys)[0] == (
        f"listen {DEFAULT_LISTEN} -> 127.0.0.1:3128 (plain HTTP)"
    )


def test_checkConfigFile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """
    --check-config reads the configuration file and names it.
    """
    config = tmp_path / "proxy.toml"
    config.write_text('listen = ["tcp:8080:interface=127.0.0.1"]\n')
    lines = checkConfig(capsys, "--config", str(config))
    assert lines == [
        "listen tcp:8080:interface=127.0.0.1 -> 127.0.0.1:8080 (plain HTTP)",
        _autoLine(),
        f"connectproxy {__version__}: configuration OK ({config})",
    ]


def test_checkConfigSystemdOutsideSystemd(capsys: pytest.CaptureFixture[str]) -> None:
    """
    A systemd: listener checked outside systemd is reported as not checked
    (its socket only exists under systemd), without failing the check.
    """
    lines = checkConfig(capsys, "--listen", "systemd:domain=INET:index=0")
    assert lines[0] == (
        "listen systemd:domain=INET:index=0 -> a socket from systemd (not "
        "checked here: LISTEN_FDS is not set: systemd passed no socket (start "
        "the proxy from a service with a matching .socket unit))"
    )


def test_systemdWithoutSocket() -> None:
    """
    Outside --check-config a systemd: listener without its socket is a usage
    error naming the variable that is missing.
    """
    with pytest.raises(UsageError) as raised:
        parse("--listen", "systemd:domain=INET:index=0")
    assert str(raised.value).startswith(
        "--listen 'systemd:domain=INET:index=0' is not a valid listener: "
        "LISTEN_FDS is not set"
    )


def test_checkConfigErrors() -> None:
    """
    With --check-config an error is still a UsageError (exit status 1 from
    the command line), before anything is printed.
    """
    with pytest.raises(UsageError, match="would listen on \\[::\\]:443"):
        parse("--check-config", "--listen", "tls:3129")


def test_listenPlans() -> None:
    """
    After parsing, the options hold where each listener would listen.
    """
    options = parse("--listen", "tcp:3128:interface=127.0.0.1", "--listen", "tcp:0")
    assert [plan.where for plan in options.plans] == ["127.0.0.1:3128", "0.0.0.0:0"]


class Parent(usage.Options):
    """
    Stands in for twistd's or twist's options, which make connectproxy's
    their subcommand's.
    """

    subCommands = [["connectproxy", None, Options, "the proxy"]]


@pytest.mark.parametrize(
    "argv0, command",
    [
        ("/usr/bin/twistd", "twistd connectproxy"),
        ("/usr/local/bin/twist", "twist connectproxy"),
        ("/srv/venv/bin/connectproxy", "connectproxy"),
        ("/srv/venv/lib/twisted/__main__.py", "python -m twisted connectproxy"),
        ("/srv/venv/lib/connectproxy/__main__.py", "python -m connectproxy"),
    ],
)
def test_subcommandErrorIsShort(
    monkeypatch: pytest.MonkeyPatch, argv0: str, command: str
) -> None:
    """
    Under twistd or twist (a parent), a bad option exits with the error and
    where to get help, instead of the usage text they would print first.
    """
    monkeypatch.setattr(sys, "argv", [argv0])
    with pytest.raises(SystemExit) as raised:
        Parent().parseOptions(["connectproxy", "--idle-timeout", "soon"])
    assert raised.value.code == (
        f"{command}: error: --idle-timeout: 'soon' is not a number of seconds\n"
        f"See '{command} --help' for the options."
    )


def test_configKeysMatchOptions() -> None:
    """
    The keys of the configuration file are the long option names, except
    --config, --check-config and those that print help or the version.
    """
    options = Options()
    names = {name.rstrip("=") for name in options.longOpt}
    notKeys = {"config", "check-config", "version", "help"}
    helps = {name for name in names if name.startswith("help-")}
    assert set(options.configKeys()) == names - notKeys - helps


def test_workersAutoFollowsAffinity(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    C{--workers auto} starts one worker per CPU the process may run on (its
    affinity: C{taskset}, a cpuset, systemd's C{CPUAffinity=}), not one per
    CPU of the machine, and at most 256.
    """
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {2, 5}, raising=False)
    assert parse("--workers", "auto")["workers"] == 2
    monkeypatch.setattr(
        os, "sched_getaffinity", lambda pid: set(range(300)), raising=False
    )
    assert parse("--workers", "auto")["workers"] == 256


def test_workersAutoWithoutAffinity(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Where the system does not say the process's CPU affinity,
    C{--workers auto} starts one worker per CPU of the machine (one when
    even that is unknown).
    """
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert parse("--workers", "auto")["workers"] == 3
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert parse("--workers", "auto")["workers"] == 1
