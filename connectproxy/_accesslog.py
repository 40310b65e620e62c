# -*- test-case-name: tests.test_accesslog -*-
"""
The access log written to a file (C{--access-log PATH}): one line per
refused request and per closed tunnel, in one of three formats
(C{--access-log-format}):

  - C{text}: one line a person reads, like the proxy's own log messages;
  - C{json}: one JSON object per line, with stable field names;
  - C{squid}: squid's native C{access.log} layout (C{logformat squid}), so
    that tools written for squid's logs read it.

L{FileAccessLog} is the observer; it formats each record on the reactor
thread and hands the line to a L{LineWriter
<connectproxy._logwriter.LineWriter>}, which never blocks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import quote

from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from ._observer import (
    ConnectionRecord,
    ForwardedRequest,
    Outcome,
    RefusedRequest,
    TunnelRecord,
)
from ._responses import CONNECTION_ESTABLISHED, errorResponse
from .interfaces import IForwardingObserver

__all__ = [
    "FORMATS",
    "FileAccessLog",
    "LineSink",
    "formatJSON",
    "formatSquid",
    "formatText",
    "isoTime",
]


class LineSink(Protocol):
    """
    Where L{FileAccessLog} puts its lines: a L{LineWriter
    <connectproxy._logwriter.LineWriter>}.
    """

    droppedLines: int

    def write(self, line: bytes) -> None: ...


#: What the access log has a line for.
Record = RefusedRequest | TunnelRecord | ForwardedRequest

#: A format: the line (without its newline) for a record, logged at a time
#: (seconds since the epoch).
Formatter = Callable[[Record, float], str]


def _printable(text: str) -> str:
    """
    C{text} with characters that are not printable (line breaks, control
    characters) written as escapes, so that a value cannot start a line of
    its own.
    """
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
        for c in text
    )


def _user(user: str | None) -> str:
    """
    A user name as one field: percent-encoded as squid does (spaces, C{%},
    control and non-ASCII characters), or C{-} when there is none.
    """
    if not user:
        return "-"
    return quote(user, safe="!$&'()*+,;=:@")


def _milliseconds(when: float) -> tuple[int, int]:
    """
    A time as whole seconds and milliseconds, to the nearest millisecond.
    """
    seconds, millis = divmod(round(when * 1000), 1000)
    return int(seconds), int(millis)


def isoTime(when: float) -> str:
    """
    A time as ISO 8601 in UTC with milliseconds: C{2025-01-31T12:00:00.123Z}.

    @param when: Seconds since the epoch.
    """
    seconds, millis = _milliseconds(when)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def formatText(event: Record, when: float) -> str:
    """
    The C{text} line of a record: the time (UTC), C{tunnel}, C{forwarded}
    or C{refused},
    the client and the user (C{-} for none), then what the proxy's own log
    says of it (docs/operations.md has examples).

    @param event: The record.
    @param when: When it is logged, in seconds since the epoch.
    """
    if isinstance(event, TunnelRecord):
        line = (
            f"{isoTime(when)} tunnel {event.client} {_user(event.user)} -> "
            f"{event.target} via {event.upstream}: {event.bytesUp} bytes up, "
            f"{event.bytesDown} bytes down, {event.duration:.3f}s, {event.reason}"
        )
    elif isinstance(event, ForwardedRequest):
        line = (
            f"{isoTime(when)} forwarded {event.client} {_user(event.user)} "
            f"{event.method} {event.target}: {event.status} via "
            f"{event.upstream or '-'}, {event.bytesUp} bytes up, "
            f"{event.bytesDown} bytes down, {event.duration:.3f}s, {event.reason}"
        )
    else:
        line = (
            f"{isoTime(when)} refused {event.client} {_user(event.user)} "
            f"{event.method or '-'} {event.target or '-'}: {event.status} "
            f"{event.reason}"
        )
    return _printable(line)


def formatJSON(event: Record, when: float) -> str:
    """
    The C{json} line of a record: one JSON object (ASCII, no separator
    character before it), with these fields, always all of them, in this
    order:

      - every record: C{time} (ISO 8601, UTC, milliseconds), C{event}
        (C{"tunnel_close"} or C{"request_refused"}), C{client}, C{user}
        (C{null} for none), C{method}, C{target}, C{status}, C{outcome},
        C{reason};
      - tunnels also: C{host}, C{port}, C{upstream}, C{parent} (the parent
        proxy, C{null} when connected directly), C{bytesUp}, C{bytesDown},
        C{duration}, C{admitTime}, C{connectTime} (seconds), then C{relay}
        (C{"transport"} or C{"splice"});
      - forwarded requests (C{event} C{"request_forwarded"}) the same as
        tunnels but C{relay}, then C{reused} (whether a pooled upstream
        connection carried it).

    @param event: The record.
    @param when: When it is logged, in seconds since the epoch.
    """
    record: dict[str, Any] = {
        "time": isoTime(when),
        "event": "request_refused",
        "client": event.client,
        "user": event.user,
        "method": event.method,
        "target": event.target,
        "status": event.status,
        "outcome": str(event.outcome),
        "reason": event.reason,
    }
    if isinstance(event, TunnelRecord | ForwardedRequest):
        record["event"] = (
            "tunnel_close" if isinstance(event, TunnelRecord) else "request_forwarded"
        )
        record.update(
            host=event.host,
            port=event.port,
            upstream=event.upstream,
            parent=_parent(event),
            bytesUp=event.bytesUp,
            bytesDown=event.bytesDown,
            duration=round(event.duration, 6),
            admitTime=round(event.admitTime, 6),
            connectTime=round(event.connectTime, 6),
        )
    if isinstance(event, TunnelRecord):
        record["relay"] = event.relay
    if isinstance(event, ForwardedRequest):
        record["reused"] = event.reused
    return json.dumps(record, separators=(",", ":"))


def _parent(event: TunnelRecord | ForwardedRequest) -> str | None:
    """
    The parent proxy a tunnel went through, if its record says so.
    """
    parent = getattr(event, "parent", None)
    return str(parent) if parent else None


def _host(address: str) -> str:
    """
    The IP address of an address as the proxy writes it (C{host:port},
    C{[v6]:port}), or C{-} for one without (a UNIX socket).
    """
    if address.startswith("["):
        return address[1:].partition("]")[0] or "-"
    host, colon, port = address.rpartition(":")
    if colon and host and port.isdigit() and ":" not in host:
        return host
    return "-"


#: The squid result codes of refusals, by outcome: squid's own for access
#: denials, C{NONE_NONE} (squid 5 and later) for requests it could not serve.
_DENIED = {Outcome.DENIED, Outcome.AUTH_REQUIRED, Outcome.AUTH_FAILED}


def formatSquid(event: Record, when: float) -> str:
    """
    The C{squid} line of a record, squid's native layout
    (C{%ts.%03tu %6tr %>a %Ss/%03>Hs %<st %rm %ru %[un %Sh/%<a %mt};
    docs/operations.md has examples).

    The time is when the line is logged; the elapsed milliseconds of a
    tunnel run from its complete request head to its close (0 for a
    refusal); the client is its IP address; the result is C{TCP_TUNNEL}
    for a tunnel, C{TCP_DENIED} for a refusal by the access rules or
    authentication (403, 407, 429), C{NONE_NONE} for any other error; the
    bytes are those sent to the client (the 200 and the tunnel's bytes
    down, or the error response); the URL is the request-target
    (C{host:port}); the user is percent-encoded; the hierarchy is
    C{HIER_DIRECT/ip} (C{FIRSTUP_PARENT/ip} through a parent proxy) or
    C{HIER_NONE/-}; the type is C{-} for a tunnel and C{text/plain} for an
    error response.  A forwarded request is C{TCP_MISS} with its status,
    its bytes down, its method and URL (the proxy has no cache), and the
    type C{-}.

    @param event: The record.
    @param when: When it is logged, in seconds since the epoch.
    """
    seconds, millis = _milliseconds(when)
    stamp = f"{seconds:9d}.{millis:03d}"
    if isinstance(event, TunnelRecord):
        elapsed = event.admitTime + event.connectTime + event.duration
        code = "TCP_TUNNEL"
        size = len(CONNECTION_ESTABLISHED) + event.bytesDown
        hierarchy = "FIRSTUP_PARENT" if _parent(event) else "HIER_DIRECT"
        peer = f"{hierarchy}/{_host(event.upstream)}"
        kind = "-"
    elif isinstance(event, ForwardedRequest):
        elapsed = event.duration
        code = "TCP_MISS"
        size = event.bytesDown
        hierarchy = "FIRSTUP_PARENT" if event.parent else "HIER_DIRECT"
        peer = f"{hierarchy}/{_host(event.upstream)}"
        kind = "-"
    else:
        elapsed = 0.0
        code = "TCP_DENIED" if event.outcome in _DENIED else "NONE_NONE"
        size = len(errorResponse(event.status, event.reason))
        peer = "HIER_NONE/-"
        kind = "text/plain"
    line = (
        f"{stamp} {round(elapsed * 1000):6d} {_host(event.client)} "
        f"{code}/{event.status:03d} {size} {event.method or 'NONE'} "
        f"{event.target or 'error:invalid-request'} {_user(event.user)} "
        f"{peer} {kind}"
    )
    return _printable(line)


#: The formats C{--access-log-format} names.
FORMATS: dict[str, Formatter] = {
    "text": formatText,
    "json": formatJSON,
    "squid": formatSquid,
}


@implementer(IForwardingObserver)
class FileAccessLog:
    """
    The access log as lines in a file: one per refused request that was
    answered (as the C{accesslog} observer logs them) and one per closed
    tunnel, in a format of L{FORMATS}.

    Each line is formatted on the reactor thread and handed to a writer
    that never blocks; lines it cannot write are counted, never raised.

    @ivar writer: Where the lines go; C{writer.droppedLines} counts the
        lost ones.
    """

    def __init__(
        self, writer: LineSink, formatter: Formatter, clock: IReactorTime
    ) -> None:
        """
        @param writer: Where the lines go.
        @param formatter: Makes a record's line (a value of L{FORMATS}).
        @param clock: Says when a line is logged (C{seconds()}, since the
            epoch).
        """
        self.writer = writer
        self._format = formatter
        self._clock = clock

    @property
    def droppedLines(self) -> int:
        """
        Lines lost so far: the writer's buffer was full, or the write
        failed (a full disk).
        """
        return self.writer.droppedLines

    def _write(self, event: Record) -> None:
        line = self._format(event, self._clock.seconds()) + "\n"
        self.writer.write(line.encode("utf-8", "backslashreplace"))

    def connectionOpened(self, event: ConnectionRecord) -> None:
        pass

    def connectionClosed(self, event: ConnectionRecord) -> None:
        pass

    def requestRefused(self, event: RefusedRequest) -> None:
        if event.status:
            self._write(event)

    def tunnelOpened(self, event: TunnelRecord) -> None:
        pass

    def tunnelClosed(self, event: TunnelRecord) -> None:
        self._write(event)

    def requestForwarded(self, event: ForwardedRequest) -> None:
        self._write(event)
