# -*- test-case-name: tests.integration.test_clients -*-
"""
Read a child process's output in a thread, so that its pipe never fills, and
let a test wait (with a deadline) for the line or log event it expects.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import IO, Any, Generic, TypeVar

_T = TypeVar("_T")

Event = dict[str, Any]
"""
One log event, as parsed from the proxy's JSON log.
"""


class OutputCollector(Generic[_T]):
    """
    Drain a child's output pipe in a thread, so that it never fills, and
    keep what was read as parsed records that a test can wait for.

    @ivar records: Every record so far, in order.
    @ivar raw: Every byte read so far.
    """

    def __init__(self, pipe: IO[bytes], name: str) -> None:
        """
        Start draining.

        @param pipe: The child's stdout.
        @param name: Names the thread.
        """
        self.records: list[_T] = []
        self.raw = bytearray()
        self._pipe = pipe
        self._condition = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._drain, name=name, daemon=True)
        self._thread.start()

    def split(self, buffer: bytes) -> tuple[list[_T], bytes]:
        """
        Take the complete records off the front of C{buffer}.

        @param buffer: Bytes read and not parsed yet.
        @return: The records and the bytes left over.
        """
        raise NotImplementedError()

    def keep(self, chunk: bytes, records: list[_T]) -> None:
        """
        Store what was just read; called with the lock held.  Everything is
        kept: a long-running child (the benchmark's) overrides this to keep
        less.

        @param chunk: The bytes read.
        @param records: The complete records parsed from them.
        """
        self.raw += chunk
        self.records.extend(records)

    def _drain(self) -> None:
        """
        Read until end of input, parsing and publishing records.
        """
        buffer = b""
        fd = self._pipe.fileno()
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buffer += chunk
            records, buffer = self.split(buffer)
            with self._condition:
                self.keep(chunk, records)
                self._condition.notify_all()
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def waitFor(self, predicate: Callable[[_T], bool], timeout: float, what: str) -> _T:
        """
        Wait for the first record (old or new) that satisfies C{predicate}.

        @param predicate: Says whether a record is the one.
        @param timeout: Seconds to wait at most.
        @param what: Says what was awaited, for the failure message.
        @return: The record.
        @raise AssertionError: At the deadline, or if the output ended first.
        """
        deadline = time.monotonic() + timeout
        seen = 0
        with self._condition:
            while True:
                for record in self.records[seen:]:
                    if predicate(record):
                        return record
                seen = len(self.records)
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    state = "output ended" if self._closed else f"{timeout}s passed"
                    raise AssertionError(
                        f"{state} before {what}; output so far:\n{self.text()}"
                    )
                self._condition.wait(remaining)

    def text(self) -> str:
        """
        Everything read so far, for failure messages.

        @return: The output decoded, the record separators made visible.
        """
        return bytes(self.raw).decode("utf-8", "replace").replace("\x1e", "")

    def join(self, timeout: float) -> None:
        """
        Wait for the drain thread to see end of input.

        @param timeout: Seconds to wait at most.
        """
        self._thread.join(timeout)


class LineCollector(OutputCollector[str]):
    """
    Collect text lines.
    """

    def split(self, buffer: bytes) -> tuple[list[str], bytes]:
        """
        Take the complete lines off the front of C{buffer}.

        @param buffer: Bytes read and not parsed yet.
        @return: The lines (without newlines) and the bytes left over.
        """
        *lines, rest = buffer.split(b"\n")
        return [line.decode("utf-8", "replace") for line in lines], rest


class EventCollector(OutputCollector[Event]):
    """
    Collect the events of a JSON text sequence (RFC 7464): each is 0x1E, a
    JSON object, and a newline.  Anything else (a traceback printed before
    logging started) is kept as C{{"_text": ...}}.
    """

    def split(self, buffer: bytes) -> tuple[list[Event], bytes]:
        """
        Take the complete events off the front of C{buffer}.

        @param buffer: Bytes read and not parsed yet.
        @return: The events and the bytes left over.
        """
        *complete, rest = buffer.split(b"\n")
        events: list[Event] = []
        for line in complete:
            text = line.decode("utf-8", "replace").lstrip("\x1e")
            try:
                event = json.loads(text)
            except ValueError:
                event = {"_text": text}
            if not isinstance(event, dict):
                event = {"_text": text}
            events.append(event)
        return events, rest
