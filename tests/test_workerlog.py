"""
Tests for L{connectproxy._workerlog}: a worker's output into the
supervisor's log.
"""

from __future__ import annotations

from twisted.logger import (
    LogEvent,
    LogLevel,
    eventAsJSON,
    formatEventAsClassicLogText,
)
from twisted.python.failure import Failure

from connectproxy._workerlog import MAX_LINE, WorkerOutput, workerFields


def record(**fields: object) -> bytes:
    """
    A record as a worker's JSON log writes it.
    """
    event = {
        "log_format": "hello {who}",
        "log_level": LogLevel.warn,
        "log_namespace": "connectproxy.example",
        "log_time": 1000.0,
        **fields,
    }
    return ("\x1e" + eventAsJSON(event) + "\n").encode("utf-8")


def relayed(events: list[LogEvent]) -> list[LogEvent]:
    return [e for e in events if "worker_pid" in e]


def test_recordRelayedWithWorker(logEvents: list[LogEvent]) -> None:
    """
    A record becomes an event of the supervisor's log with its fields, its
    level and time, and the worker's number and process ID, which the text
    format shows with the namespace.
    """
    output = WorkerOutput(2, 4242)
    output.logReceived(record(who="world", event="greeting"))
    [event] = relayed(logEvents)
    assert event["event"] == "greeting"
    assert event["who"] == "world"
    assert event["log_level"] == LogLevel.warn
    assert event["log_time"] == 1000.0
    assert (event["worker"], event["worker_pid"]) == (2, 4242)
    text = formatEventAsClassicLogText(event)
    assert text is not None
    assert "[connectproxy.example#warn worker=2 pid=4242] hello world" in text


def test_recordsInPieces(logEvents: list[LogEvent]) -> None:
    """
    Records split across reads, or several in one read, are each emitted
    once whole.
    """
    output = WorkerOutput(1, 1)
    data = record(who="a") + record(who="b") + record(who="c")
    for index in range(0, len(data), 7):
        output.logReceived(data[index : index + 7])
    assert [e["who"] for e in relayed(logEvents)] == ["a", "b", "c"]


def test_systemKept(logEvents: list[LogEvent]) -> None:
    """
    A record that names its system (a legacy log message) keeps it, with
    the worker after it.
    """
    output = WorkerOutput(1, 9)
    output.logReceived(record(log_system="-", who="x"))
    [event] = relayed(logEvents)
    assert event["log_system"] == "- worker=1 pid=9"


def test_notARecord(logEvents: list[LogEvent]) -> None:
    """
    A line of the log pipe that is not a record is kept as a line.
    """
    output = WorkerOutput(1, 9)
    output.logReceived(b"plain text\n\x1e{broken\n\x1e[1, 2]\n")
    lines = [e["text"] for e in logEvents if e.get("event") == "worker_stderr"]
    assert lines == ["plain text", "{broken", "[1, 2]"]


def test_stderrLines(logEvents: list[LogEvent]) -> None:
    """
    Standard error is emitted a line at a time, blank lines left out, at
    the error level.
    """
    output = WorkerOutput(3, 30)
    output.stderrReceived(b"one\r\n\ntw")
    output.stderrReceived(b"o\nthr")
    output.ended()
    events = [e for e in logEvents if e.get("event") == "worker_stderr"]
    assert [e["text"] for e in events] == ["one", "two", "thr"]
    assert events[0]["log_level"] == LogLevel.error
    assert events[0]["log_system"] == "stderr worker=3 pid=30"
    assert str(formatEventAsClassicLogText(events[0])).endswith(
        "[stderr worker=3 pid=30] one\n"
    )


def test_endedFlushesRecord(logEvents: list[LogEvent]) -> None:
    """
    A record without its newline is emitted when the output ends.
    """
    output = WorkerOutput(1, 1)
    output.logReceived(record(who="last").rstrip(b"\n"))
    assert relayed(logEvents) == []
    output.ended()
    assert [e["who"] for e in relayed(logEvents)] == ["last"]


def test_longLineCut(logEvents: list[LogEvent]) -> None:
    """
    A line longer than L{MAX_LINE} is not kept whole in memory.
    """
    output = WorkerOutput(1, 1)
    output.stderrReceived(b"x" * (MAX_LINE + 1))
    [event] = [e for e in logEvents if e.get("event") == "worker_stderr"]
    assert len(event["text"]) == MAX_LINE + 1
    output.stderrReceived(b"y\n")
    assert logEvents[-1]["text"] == "y"


def test_failureRevived(logEvents: list[LogEvent]) -> None:
    """
    A record with a failure keeps it: the text format shows the traceback.
    """
    failure = Failure(ZeroDivisionError("division by zero"))
    output = WorkerOutput(1, 5)
    output.logReceived(record(who="boom", log_failure=failure))
    [event] = relayed(logEvents)
    assert isinstance(event["log_failure"], Failure)
    text = formatEventAsClassicLogText(event)
    assert text is not None and "ZeroDivisionError" in text


def test_unknownLevel(logEvents: list[LogEvent]) -> None:
    """
    A record with a level that does not exist is kept as a line.
    """
    output = WorkerOutput(1, 5)
    line = record(who="x").replace(b'"name": "warn"', b'"name": "loud"')
    output.logReceived(line)
    assert [e for e in logEvents if "who" in e] == []
    [kept] = [e for e in logEvents if e.get("event") == "worker_stderr"]
    assert '"loud"' in kept["text"]


def test_workerFields() -> None:
    """
    A worker's own observer names the worker in every event it writes,
    leaving the original event alone, and an event that names it already
    as it is.
    """
    written: list[LogEvent] = []
    observe = workerFields(written.append, 2, 77)  # type: ignore[arg-type]
    event = {"log_level": LogLevel.info, "log_namespace": "x", "log_format": "hi"}
    observe(event)
    assert written[0]["worker"] == 2 and written[0]["worker_pid"] == 77
    assert written[0]["log_system"] == "x#info worker=2 pid=77"
    assert "worker" not in event
    named = {**event, "worker": 1, "worker_pid": 5}
    observe(named)
    assert written[1] is named
