# -*- test-case-name: tests.test_workerlog -*-
"""
A worker's output, into the supervisor's log.

Every event a worker logs names it: fields C{worker} and C{worker_pid},
and both after C{log_system}, which the text format shows in brackets
(L{workerFields}).  Where it can, a worker writes its events to the
supervisor's own log file in the supervisor's format itself (see
L{LogRoute <connectproxy._workers.LogRoute>}).  Otherwise it logs JSON
events (Twisted's C{jsonFileLogObserver} records, RFC 7464) to a pipe its
supervisor reads: L{WorkerOutput} turns each record back into the event it
was (as L{eventFromJSON} does) and emits it into the supervisor's log,
where it is written in the supervisor's format (text or JSON, to its file)
like the supervisor's own events, with its fields and time unchanged.
Lines of the worker's standard error become C{worker_stderr} events.
"""

from __future__ import annotations

import json
import time
from typing import Any, cast

from twisted.logger import (
    ILogObserver,
    InvalidLogLevelError,
    LogEvent,
    Logger,
    LogLevel,
    eventFromJSON,
    globalLogPublisher,
)

__all__ = ["MAX_LINE", "WorkerOutput", "workerFields"]

#: The longest line kept whole, in bytes: a longer one is cut there.
MAX_LINE = 1 << 20

_RS = b"\x1e"


class _Lines:
    """
    Splits bytes into lines, keeping the last, incomplete one.
    """

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[bytes]:
        """
        Add bytes.

        @return: The lines they complete, without their newlines.
        """
        data = self._pending + data
        lines = data.split(b"\n")
        self._pending = lines.pop()
        if len(self._pending) > MAX_LINE:
            lines.append(self._pending)
            self._pending = b""
        return lines

    def rest(self) -> list[bytes]:
        """
        The incomplete last line, once the output ended.
        """
        pending, self._pending = self._pending, b""
        return [pending] if pending else []


def _addWorker(event: dict[str, Any], suffix: str, worker: int, pid: int) -> None:
    """
    Name a worker in an event: fields C{worker} and C{worker_pid}, and both
    after C{log_system} (the bracketed part of a text line).
    """
    system = event.get("log_system")
    if not isinstance(system, str):
        level = getattr(event.get("log_level"), "name", "-")
        system = f"{event.get('log_namespace', '-')}#{level}"
    event["log_system"] = system + suffix
    event["worker"] = worker
    event["worker_pid"] = pid


def workerFields(observer: ILogObserver, worker: int, pid: int) -> ILogObserver:
    """
    Wrap a worker's log observer so that every event it writes names the
    worker, as the supervisor names those it writes for workers.

    @param observer: The observer that writes the log.
    @param worker: The worker's number.
    @param pid: Its process ID.
    """
    suffix = f" worker={worker} pid={pid}"

    def observe(event: LogEvent) -> None:
        if "worker_pid" not in event:
            event = dict(event)
            _addWorker(event, suffix, worker, pid)
        observer(event)

    return cast(ILogObserver, observe)


def _parse(text: str) -> dict[str, Any] | None:
    """
    The event a JSON log record holds, as L{eventFromJSON} reads it: plain
    JSON, with the level made a L{LogLevel} again (and a failure a
    L{Failure <twisted.python.failure.Failure>}, which takes the slower
    L{eventFromJSON}).

    @return: The event, or C{None} for a line that is not a record.
    """
    try:
        if text.count(_CLASS) > 1:
            event = eventFromJSON(text)
        else:
            event = json.loads(text)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    level = event.get("log_level")
    if isinstance(level, dict):
        try:
            event["log_level"] = LogLevel.levelWithName(str(level.get("name")))
        except InvalidLogLevelError:
            return None
    elif not isinstance(level, type(LogLevel.info)):
        return None
    return event


#: How a JSON record marks an object C{eventFromJSON} revives: its level,
#: and (rarely) a failure.
_CLASS = '"__class_uuid__"'


class WorkerOutput:
    """
    One worker's log records and standard error, emitted as events of the
    supervisor's log.

    @ivar worker: The worker's number.
    @ivar pid: Its process ID.
    """

    _log = Logger()

    def __init__(self, worker: int, pid: int) -> None:
        """
        @param worker: The worker's number.
        @param pid: Its process ID.
        """
        self.worker = worker
        self.pid = pid
        self._records = _Lines()
        self._errors = _Lines()
        self._suffix = f" worker={worker} pid={pid}"

    def logReceived(self, data: bytes) -> None:
        """
        Bytes of the worker's log arrived.
        """
        for line in self._records.feed(data):
            self._record(line)

    def stderrReceived(self, data: bytes) -> None:
        """
        Bytes of the worker's standard error arrived.
        """
        for line in self._errors.feed(data):
            self._stderr(line)

    def ended(self) -> None:
        """
        The worker's output ended: emit what was left of it.
        """
        for line in self._records.rest():
            self._record(line)
        for line in self._errors.rest():
            self._stderr(line)

    def _record(self, line: bytes) -> None:
        text = line.lstrip(_RS).strip()
        if not text:
            return
        event = _parse(text.decode("utf-8", "replace"))
        if event is None:
            # Not a record (something else wrote to the pipe): keep it as
            # a line.
            self._stderr(line.lstrip(_RS))
            return
        if "worker_pid" not in event:
            _addWorker(event, self._suffix, self.worker, self.pid)
        if not isinstance(event.get("log_time"), int | float):
            event["log_time"] = time.time()
        globalLogPublisher(event)

    def _stderr(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip("\r")
        if not text.strip():
            return
        self._log.emit(
            LogLevel.error,
            "{text}",
            event="worker_stderr",
            text=text,
            worker=self.worker,
            worker_pid=self.pid,
            log_system=f"stderr{self._suffix}",
        )
