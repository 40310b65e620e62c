# -*- test-case-name: tests.test_accesslog -*-
"""
Tests for the access-log file formats and observer
(L{connectproxy._accesslog}); the writer is tested in test_logwriter.py,
and a real process writing the file in tests/integration/test_accesslog.py.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogEvent
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from zope.interface.verify import verifyObject

from connectproxy._accesslog import (
    FORMATS,
    FileAccessLog,
    formatJSON,
    formatSquid,
    formatText,
    isoTime,
)
from connectproxy._observer import AccessLogObserver, RefusedRequest, TunnelRecord
from connectproxy._observercontext import ObserverContext
from connectproxy._responses import errorResponse
from connectproxy.interfaces import IProxyObserver
from connectproxy.plugins.accesslog import accesslog
from connectproxy.tap import Options, makeService
from connectproxy.testing import ProxyHarness
from tests.test_lifecycle import CONNECT, tunnel
from tests.test_observerplugins import countingPlugin  # noqa: F401

#: 2025-01-31T12:00:00.123Z
WHEN = 1738324800.123

TUNNEL = TunnelRecord(
    client="192.0.2.7:50312",
    host="example.com",
    port=443,
    upstream="93.184.215.14:443",
    bytesUp=517,
    bytesDown=4821,
    duration=1.0,
    reason="client closed",
    user="alice",
    admitTime=0.1,
    connectTime=0.104,
    relay="splice",
)

DENIED = RefusedRequest(
    client="192.0.2.7:50314",
    method="CONNECT",
    target="example.com:25",
    status=403,
    reason="port 25 is not allowed (see --allow-port)",
)


class Lines:
    """
    A line sink that keeps what it is given.
    """

    droppedLines = 0

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def write(self, line: bytes) -> None:
        self.lines.append(line)


def test_isoTime() -> None:
    """
    Times are ISO 8601 in UTC, to the nearest millisecond.
    """
    assert isoTime(WHEN) == "2025-01-31T12:00:00.123Z"
    assert isoTime(0.9996) == "1970-01-01T00:00:01.000Z"


# squid


def test_squidTunnel() -> None:
    """
    A tunnel is C{TCP_TUNNEL/200} with the bytes sent to the client (the
    200 and the tunnel's bytes down), the milliseconds from the request to
    the close, and C{HIER_DIRECT/} the address connected to.
    """
    assert formatSquid(TUNNEL, WHEN) == (
        "1738324800.123   1204 192.0.2.7 TCP_TUNNEL/200 4860 CONNECT "
        "example.com:443 alice HIER_DIRECT/93.184.215.14 -"
    )


def test_squidDenied() -> None:
    """
    A refusal by the rules is C{TCP_DENIED} with its status, the size of
    the error response, C{HIER_NONE/-} and the response's type.
    """
    size = len(errorResponse(403, DENIED.reason))
    assert formatSquid(DENIED, WHEN) == (
        f"1738324800.123      0 192.0.2.7 TCP_DENIED/403 {size} CONNECT "
        "example.com:25 - HIER_NONE/- text/plain"
    )


@pytest.mark.parametrize(
    "status, outcome, code",
    [
        (407, "auth_required", "TCP_DENIED/407"),
        (407, "auth_failed", "TCP_DENIED/407"),
        (429, "denied", "TCP_DENIED/429"),
        (502, "upstream_failed", "NONE_NONE/502"),
        (504, "timeout", "NONE_NONE/504"),
        (503, "overloaded", "NONE_NONE/503"),
        (400, "bad_request", "NONE_NONE/400"),
    ],
)
def test_squidResultCodes(status: int, outcome: str, code: str) -> None:
    """
    Refusals by access rules or authentication are C{TCP_DENIED}; any other
    error is C{NONE_NONE}, as squid 5 and later log them.
    """
    event = RefusedRequest(
        "192.0.2.7:1", "CONNECT", "a:443", status, "r", None, outcome
    )
    assert formatSquid(event, WHEN).split()[3] == code


def test_squidUnreadableRequest() -> None:
    """
    A request whose head could not be read has squid's placeholders for the
    method and the URL.
    """
    event = RefusedRequest("192.0.2.7:1", "", "", 400, "malformed request line")
    fields = formatSquid(event, WHEN).split()
    assert fields[5:7] == ["NONE", "error:invalid-request"]


def test_squidAddresses() -> None:
    """
    The client and the upstream are IP addresses, without ports or
    brackets; a client on a UNIX socket is C{-}.
    """
    event = TunnelRecord("[2001:db8::7]:50312", "h", 443, "[2001:db8::1]:443")
    fields = formatSquid(event, WHEN).split()
    assert (fields[2], fields[8]) == ("2001:db8::7", "HIER_DIRECT/2001:db8::1")
    unix = TunnelRecord("unix:/run/p.sock", "h", 443, "192.0.2.1:443")
    assert formatSquid(unix, WHEN).split()[2] == "-"


def test_squidUser() -> None:
    """
    The user name is percent-encoded, so it stays one field on one line.
    """
    event = RefusedRequest("192.0.2.7:1", "CONNECT", "a:443", 403, "no", "bob s\n%")
    assert formatSquid(event, WHEN).split()[7] == "bob%20s%0A%25"


@dataclass(frozen=True, slots=True)
class ParentTunnel(TunnelRecord):
    """
    A tunnel record that names the parent proxy the tunnel went through.
    """

    parent: str | None = None


def test_squidParent() -> None:
    """
    A tunnel whose record names a parent proxy is C{FIRSTUP_PARENT/} the
    address connected to (the parent's); C{parent} is in its JSON object.
    """
    event = ParentTunnel("192.0.2.7:1", "h", 443, "198.51.100.3:3128", parent="p")
    assert formatSquid(event, WHEN).split()[8] == "FIRSTUP_PARENT/198.51.100.3"
    assert json.loads(formatJSON(event, WHEN))["parent"] == "p"


def test_squidFieldCount() -> None:
    """
    Every line has squid's ten fields.
    """
    for event in (TUNNEL, DENIED):
        assert len(formatSquid(event, WHEN).split()) == 10


# text


def test_textTunnel() -> None:
    """
    A tunnel's text line says what the proxy's log says, after the time,
    the client and the user.
    """
    assert formatText(TUNNEL, WHEN) == (
        "2025-01-31T12:00:00.123Z tunnel 192.0.2.7:50312 alice -> example.com:443 "
        "via 93.184.215.14:443: 517 bytes up, 4821 bytes down, 1.000s, "
        "client closed"
    )


def test_textRefused() -> None:
    """
    A refusal's text line has the request, the status and the reason.
    """
    assert formatText(DENIED, WHEN) == (
        "2025-01-31T12:00:00.123Z refused 192.0.2.7:50314 - CONNECT "
        "example.com:25: 403 port 25 is not allowed (see --allow-port)"
    )


def test_textEscapes() -> None:
    """
    Nothing in a value can break the line.
    """
    event = RefusedRequest("192.0.2.7:1", "CONNECT", "a:443", 400, "bad\r\nX: y")
    line = formatText(event, WHEN)
    assert "\n" not in line and "\r" not in line
    assert line.endswith("bad\\r\\nX: y")


# json


def test_jsonTunnel() -> None:
    """
    A tunnel's JSON object has every documented field, in order.
    """
    record = json.loads(formatJSON(TUNNEL, WHEN))
    assert record == {
        "time": "2025-01-31T12:00:00.123Z",
        "event": "tunnel_close",
        "client": "192.0.2.7:50312",
        "user": "alice",
        "method": "CONNECT",
        "target": "example.com:443",
        "status": 200,
        "outcome": "ok",
        "reason": "client closed",
        "host": "example.com",
        "port": 443,
        "upstream": "93.184.215.14:443",
        "parent": None,
        "bytesUp": 517,
        "bytesDown": 4821,
        "duration": 1.0,
        "admitTime": 0.1,
        "connectTime": 0.104,
        "relay": "splice",
    }
    assert list(record)[:3] == ["time", "event", "client"]


def test_jsonRefused() -> None:
    """
    A refusal's JSON object has the fields every record has.
    """
    assert json.loads(formatJSON(DENIED, WHEN)) == {
        "time": "2025-01-31T12:00:00.123Z",
        "event": "request_refused",
        "client": "192.0.2.7:50314",
        "user": None,
        "method": "CONNECT",
        "target": "example.com:25",
        "status": 403,
        "outcome": "denied",
        "reason": "port 25 is not allowed (see --allow-port)",
    }


def test_jsonOneLine() -> None:
    """
    A JSON line is ASCII, without a record separator or a line break.
    """
    event = RefusedRequest("c", "CONNECT", "a:443", 403, "r\n\u2028\x1e", "é")
    line = formatJSON(event, WHEN)
    assert line.isascii() and line.isprintable()
    assert json.loads(line)["user"] == "é"


# The observer.


def test_formats() -> None:
    """
    C{--access-log-format} names text, json and squid.
    """
    assert sorted(FORMATS) == ["json", "squid", "text"]


def test_fileAccessLogProvides() -> None:
    """
    L{FileAccessLog} is an observer.
    """
    assert verifyObject(IProxyObserver, FileAccessLog(Lines(), formatText, Clock()))


def test_fileAccessLogLines() -> None:
    """
    One line per answered refusal and per closed tunnel, with the clock's
    time; no line for a tunnel opening, a connection, or a request that got
    no response.
    """
    clock = Clock()
    clock.advance(WHEN)
    lines = Lines()
    log = FileAccessLog(lines, formatSquid, clock)
    harness = ProxyHarness()
    harness.addObserver(log)
    client, attempt = tunnel(harness)
    refused = harness.connectClient()
    refused.send(CONNECT.replace(b"example.com:443", b"example.com:25"))
    abandoned = harness.connectClient()
    abandoned.send(CONNECT)
    abandoned.lose()
    attempt.protocol.dataReceived(b"12345")
    client.lose()
    attempt.loseUpstream()
    assert [line.split()[3] for line in lines.lines] == [
        b"TCP_DENIED/403",
        b"TCP_TUNNEL/200",
    ]
    assert all(line.startswith(b"1738324800.123 ") for line in lines.lines)
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines.lines)
    assert log.droppedLines == 0


def test_pluginGivesContextAccessLog() -> None:
    """
    The C{accesslog} plugin gives the context's file access log when there
    is one, and logs to the proxy's log otherwise.
    """
    harness = ProxyHarness()
    context = harness.observerContext()
    assert isinstance(accesslog.observerFromArgument("", context), AccessLogObserver)
    fileLog = FileAccessLog(Lines(), formatJSON, harness.clock)
    withFile = ObserverContext(
        harness.clock, harness.factory, harness.services, fileLog
    )
    assert accesslog.observerFromArgument("", withFile) is fileLog


# The options and the service.


@pytest.mark.usefixtures("countingPlugin")
def test_accessLogNeedsTheObserver() -> None:
    """
    C{--access-log} with observers that leave out C{accesslog} is refused:
    nothing would write the file.
    """
    options = Options()
    with pytest.raises(UsageError, match="--access-log needs the accesslog observer"):
        options.parseOptions(["--access-log", "-", "--observer", "counting:x"])


def test_makeServiceWritesTheFile(tmp_path: Path) -> None:
    """
    With C{--access-log}, the access log is a file in the format asked for,
    written by a service among the observers' (named C{accesslog}, whose
    writer counts dropped lines), and flushed when the proxy stops.
    """
    path = tmp_path / "access.log"
    options = Options()
    options.parseOptions(
        ["--access-log", str(path), "--access-log-format", "squid", "--listen", "tcp:0"]
    )
    reactor = MemoryReactorClock()
    service = makeService(options, reactor)
    writerService = service.getServiceNamed("observers").getServiceNamed("accesslog")
    assert writerService.writer.droppedLines == 0
    [listener] = [s for s in service if hasattr(s, "endpoint")]
    factory = listener.factory
    assert [type(o) for o in factory.observer.observers] == [FileAccessLog]
    service.startService()
    peer = IPv4Address("TCP", "127.0.0.1", 40000)
    protocol = factory.buildProtocol(peer)
    protocol.makeConnection(StringTransport(peerAddress=peer))
    protocol.dataReceived(CONNECT.replace(b"example.com:443", b"example.com:25"))
    protocol.connectionLost(Failure(ConnectionDone()))
    done = threading.Event()
    service.stopService().addCallback(lambda _: done.set())
    assert done.wait(10)
    [line] = path.read_text().splitlines()
    assert line.split()[2:4] == ["127.0.0.1", "TCP_DENIED/403"]


def test_reloadKeepsLogging(tmp_path: Path, logEvents: list[LogEvent]) -> None:
    """
    A reload keeps the access log and the log level of the start; a change
    of either is logged, as it takes a restart.
    """
    config = tmp_path / "proxy.toml"
    config.write_text('log-level = "info"\n')
    options = Options()
    options.parseOptions(["--config", str(config)])
    service = makeService(options, MemoryReactorClock())
    reloader = service.getServiceNamed("reload")
    assert reloader.reload()
    assert [e for e in logEvents if e.get("event") == "reload_logging_ignored"] == []
    config.write_text('access-log = "-"\n')
    assert reloader.reload()
    [ignored] = [e for e in logEvents if e.get("event") == "reload_logging_ignored"]
    assert ignored["log_level"].name == "warn"


def test_checkConfig(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """
    C{--check-config} says where the access log goes, and fails when the
    file could not be written.
    """
    path = tmp_path / "access.log"
    with pytest.raises(SystemExit) as exited:
        Options().parseOptions(["--access-log", str(path), "--check-config"])
    assert exited.value.code == 0
    assert f"access log -> {path} (text)\n" in capsys.readouterr().out
    missing = tmp_path / "missing" / "access.log"
    with pytest.raises(UsageError, match=r"--access-log .*: cannot write"):
        Options().parseOptions(["--access-log", str(missing), "--check-config"])
