# -*- test-case-name: tests.test_config -*-
"""
Tests for the configuration file (L{connectproxy._config}, C{--config}):
its keys, how the command line overrides it, the errors that name the key,
and the sample file.  Its reload on SIGHUP is tested in tests/test_service.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.python.usage import UsageError

from connectproxy import ProxySettings
from connectproxy._config import ConfigError
from connectproxy._htpasswd import HtpasswdChecker
from connectproxy._optionvalues import usableCPUs
from connectproxy._outgoing import OutgoingAddresses
from connectproxy.plugins.hostlist import HostListPolicy
from connectproxy.tap import Options, buildConfig
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

# Other test modules import these helpers from here; they live in
# tests._helpers.
__all__ = [
    "currentChecker",
    "listenerFactory",
    "logsIn",
    "named",
    "parse",
    "reloaderOf",
    "sha1Entry",
    "writeConfig",
]

PASSWORD = "correct horse"


def plainOptions(options: Options) -> dict[str, Any]:
    """
    The options without the credential checker objects that C{--auth} adds.
    """
    return {
        key: value
        for key, value in options.items()
        if key not in ("credCheckers", "credInterfaces")
    }


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
upstream-keepalive = 0
upstream-idle-timeout = 2.5
log-query = true
shutdown-grace = 0
relay = "splice"
access-log = "-"
access-log-format = "json"
log-level = "debug"
max-request-line = 1024
max-head-size = 4096
max-header-fields = 50
max-connections = 100
max-connections-per-client = 5
resolver-threads = 16
resolver-per-client = 2
workers = "auto"
resolver = "system"
dns-cache-size = 100
upstream = "direct"
upstream-proxy = "http://alice:pw@parent.example:3128"
upstream-route = "*.lan=direct"
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
metrics = "tcp:9108:interface=127.0.0.1"
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
        "upstream-keepalive": 0,
        "upstream-idle-timeout": 2.5,
        "log-query": True,
        "shutdown-grace": 0.0,
        "relay": "splice",
        "access-log": "-",
        "access-log-format": "json",
        "log-level": "debug",
        "max-request-line": 1024,
        "max-head-size": 4096,
        "max-header-fields": 50,
        "max-connections": 100,
        "max-connections-per-client": 5,
        "resolver-threads": 16,
        "resolver-per-client": 2,
        "workers": usableCPUs(),
        "resolver": "system",
        "dns-cache-size": 100,
        "upstream": "direct",
        "upstream-proxy": "http://alice:pw@parent.example:3128",
        "upstream-ca": None,
        "upstream-route": ["*.lan=direct"],
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
        "metrics": ["tcp:9108:interface=127.0.0.1"],
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
        resolver="system",
        dnsCacheSize=100,
        outgoingAddresses=OutgoingAddresses("127.0.0.7", "::1"),
        shutdownGrace=0.0,
        upstreamKeepalive=0,
        upstreamIdleTimeout=2.5,
        logQuery=True,
        relay="splice",
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


def test_sampleKeepsDefaultRules() -> None:
    """
    The sample file leaves the access rules as they are without it: port
    80 stays allowed to forwarded C{http://} requests, and refused to
    CONNECT.
    """
    rules = parse("--config", str(SAMPLE)).rules
    assert rules == parse().rules
    assert rules.ports.allows(80, forwarded=True)
    assert not rules.ports.allows(80)


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
