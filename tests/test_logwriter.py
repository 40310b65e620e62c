# -*- test-case-name: tests.test_logwriter -*-
"""
Tests for L{connectproxy._logwriter}: the bounded buffer, batches, write
failures (a full disk), re-opening, the writer's thread and the service
that runs it.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import LogEvent

from connectproxy._logwriter import (
    FILE_MODE,
    STDOUT,
    LineWriter,
    LineWriterService,
    OpenFailed,
)

#: How long a test waits for the writer's thread at most.
WAIT = 10.0


def callNow(f: Callable[..., object], *args: Any) -> None:
    f(*args)


def writer(path: Path | str, **kwargs: Any) -> LineWriter:
    """
    A writer whose reports run at once, on a memory clock.
    """
    return LineWriter(str(path), Clock(), callNow, **kwargs)


def eventNames(events: list[LogEvent]) -> list[str]:
    return [e["event"] for e in events if str(e.get("event", "")).startswith("access")]


class Recording:
    """
    A C{write} function that records each call, and may fail or write
    little at a time.

    @ivar calls: The bytes of each call.
    @ivar failWith: An errno to fail with, or C{None}.
    @ivar most: The most bytes one call writes.
    """

    def __init__(self) -> None:
        self.calls: list[bytes] = []
        self.failWith: int | None = None
        self.most = 1 << 30

    def __call__(self, fd: int, data: Any) -> int:
        if self.failWith is not None:
            raise OSError(self.failWith, os.strerror(self.failWith))
        chunk = bytes(data[: self.most])
        self.calls.append(chunk)
        return len(chunk)

    def written(self) -> bytes:
        return b"".join(self.calls)


def fakeOpen(path: str) -> int:
    return 99


def test_writesLinesInOrder(tmp_path: Path) -> None:
    """
    Lines are appended to the file in the order given, with the writer's
    file mode when it creates the file.
    """
    path = tmp_path / "access.log"
    path.write_bytes(b"before\n")
    w = writer(path)
    w.open()
    for n in range(3):
        w.write(b"line %d\n" % n)
    w.flush(final=True)
    assert path.read_bytes() == b"before\nline 0\nline 1\nline 2\n"
    assert (w.writtenLines, w.droppedLines) == (3, 0)
    created = tmp_path / "new.log"
    w = writer(created)
    w.open()
    w.flush(final=True)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(created.stat().st_mode) == FILE_MODE & ~umask


def test_relativePath(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A relative path is made absolute when the writer is made, so that a
    re-open after a change of directory finds the same file.
    """
    monkeypatch.chdir(tmp_path)
    assert writer("access.log").path == str(tmp_path / "access.log")


def test_bufferBound(logEvents: list[LogEvent]) -> None:
    """
    Lines that do not fit in the buffer are dropped and counted, with one
    warning per episode; once lines are written again, the episode's end
    is logged with its count.
    """
    write = Recording()
    w = writer("x", bufferBytes=10, opener=fakeOpen, write=write)
    w.open()
    for _ in range(4):
        w.write(b"abcd")
    assert w.droppedLines == 2
    assert eventNames(logEvents) == ["access_log_dropping"]
    w.flush()
    assert write.written() == b"abcdabcd"
    assert eventNames(logEvents) == ["access_log_dropping", "access_log_recovered"]
    assert logEvents[-1]["dropped"] == 2
    w.write(b"abcd")
    w.flush()
    assert (w.writtenLines, w.droppedLines) == (3, 2)


def test_fullDisk(logEvents: list[LogEvent]) -> None:
    """
    Lines whose write fails (a full disk) are dropped and counted, with one
    error logged however many writes fail, and nothing raised.
    """
    write = Recording()
    write.failWith = errno.ENOSPC
    w = writer("x", opener=fakeOpen, write=write)
    w.open()
    for _ in range(3):
        w.write(b"line\n")
        w.flush()
    assert (w.writtenLines, w.droppedLines) == (0, 3)
    assert eventNames(logEvents) == ["access_log_write_failed"]
    assert logEvents[-1]["error"] == os.strerror(errno.ENOSPC)
    write.failWith = None
    w.write(b"line\n")
    w.flush()
    assert eventNames(logEvents)[-1] == "access_log_recovered"
    assert logEvents[-1]["dropped"] == 3


def test_devFull() -> None:
    """
    Writing to C{/dev/full} (a real C{ENOSPC}) drops the lines, counted.
    """
    w = writer("/dev/full")
    w.open()
    w.write(b"line\n")
    w.flush(final=True)
    assert w.droppedLines == 1


def test_shortWrites() -> None:
    """
    A write that takes only part of the bytes is resumed until all are
    written.
    """
    write = Recording()
    write.most = 3
    w = writer("x", opener=fakeOpen, write=write)
    w.open()
    w.write(b"hello\n")
    w.write(b"world\n")
    w.flush()
    assert write.written() == b"hello\nworld\n"
    assert w.writtenLines == 2


def test_failureAfterPart() -> None:
    """
    When a batch fails after part of it was written, the lines written
    whole count as written, the rest as dropped.
    """
    calls: list[bytes] = []

    def write(fd: int, data: Any) -> int:
        if calls:
            raise OSError(errno.ENOSPC, "No space left on device")
        calls.append(bytes(data[:7]))
        return 7

    w = writer("x", opener=fakeOpen, write=write)
    w.open()
    for line in (b"aaa\n", b"bbb\n", b"ccc\n"):
        w.write(line)
    w.flush()
    assert (w.writtenLines, w.droppedLines) == (1, 2)


def test_batches() -> None:
    """
    Lines are written in batches of at most C{batchBytes}; a longer line
    goes alone.
    """
    write = Recording()
    w = writer("x", batchBytes=10, opener=fakeOpen, write=write)
    w.open()
    for line in (b"abcd", b"efgh", b"ijkl", b"0123456789ABC", b"mn"):
        w.write(line)
    w.flush()
    assert write.calls == [b"abcdefgh", b"ijkl", b"0123456789ABC", b"mn"]


def test_standardOutput() -> None:
    """
    C{-} writes to descriptor 1 in batches no larger than C{PIPE_BUF}, is
    never re-opened and never closed.
    """
    fds = []

    def write(fd: int, data: Any) -> int:
        fds.append((fd, len(data)))
        return len(data)

    w = writer(STDOUT, write=write)
    assert w.path == STDOUT
    w.open()
    for _ in range(3):
        w.write(b"x" * 2000 + b"\n")
    w.reopen()
    w.flush(final=True)
    assert fds == [(1, 4002), (1, 2001)]
    os.fstat(1)


def test_reopen(tmp_path: Path, logEvents: list[LogEvent]) -> None:
    """
    After the file was renamed (rotated), L{LineWriter.reopen} makes later
    lines go to a new file under the old name.
    """
    path = tmp_path / "access.log"
    w = writer(path)
    w.open()
    w.write(b"first\n")
    w.flush()
    path.rename(tmp_path / "access.log.1")
    w.write(b"second\n")
    w.reopen()
    w.flush(final=True)
    assert (tmp_path / "access.log.1").read_bytes() == b"first\n"
    assert path.read_bytes() == b"second\n"
    assert eventNames(logEvents) == ["access_log_reopened"]


def test_reopenFails(tmp_path: Path, logEvents: list[LogEvent]) -> None:
    """
    When the file cannot be opened again, the old one stays in use and the
    error is logged.
    """
    path = tmp_path / "access.log"
    opened: list[str] = []

    def opener(name: str) -> int:
        if opened:
            raise OSError(errno.EACCES, "Permission denied")
        opened.append(name)
        return os.open(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    w = writer(path, opener=opener)
    w.open()
    w.reopen()
    w.write(b"still here\n")
    w.flush(final=True)
    assert path.read_bytes() == b"still here\n"
    assert eventNames(logEvents) == ["access_log_reopen_failed"]
    assert logEvents[-1]["error"] == "Permission denied"


# The thread.


class Gate:
    """
    A C{write} function that blocks until opened: a disk that hangs.
    """

    def __init__(self) -> None:
        self.open = threading.Event()
        self.entered = threading.Event()
        self.data: list[bytes] = []

    def __call__(self, fd: int, data: Any) -> int:
        self.entered.set()
        assert self.open.wait(WAIT)
        self.data.append(bytes(data))
        return len(data)


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    try:
        yield g
    finally:
        g.open.set()


def stopped(w: LineWriter, clock: Clock | None = None) -> threading.Event:
    """
    Stop C{w}; the event is set when its Deferred fires.
    """
    done = threading.Event()
    w.stop().addCallback(lambda _: done.set())
    return done


def test_threadWrites(tmp_path: Path) -> None:
    """
    The writer's thread writes the lines; stopping writes what is left and
    closes the file.
    """
    path = tmp_path / "access.log"
    w = writer(path)
    w.open()
    w.start()
    for n in range(100):
        w.write(b"%d\n" % n)
    assert stopped(w).wait(WAIT)
    assert path.read_bytes() == b"".join(b"%d\n" % n for n in range(100))
    assert (w.writtenLines, w.droppedLines) == (100, 0)
    w.write(b"late\n")
    assert w.droppedLines == 1


def test_slowDiskNeverBlocks(gate: Gate) -> None:
    """
    While the disk hangs, writing lines returns at once; what does not fit
    in the buffer is dropped and counted, and the rest is written once the
    disk answers.
    """
    w = writer("x", bufferBytes=100, opener=fakeOpen, write=gate)
    w.open()
    w.start()
    w.write(b"a" * 10)
    assert gate.entered.wait(WAIT)
    # The thread is stuck in its write: the reactor thread is not.
    for _ in range(20):
        w.write(b"b" * 10)
    assert w.droppedLines == 11
    gate.open.set()
    assert stopped(w).wait(WAIT)
    assert b"".join(gate.data) == b"a" * 10 + b"b" * 90
    assert (w.writtenLines, w.droppedLines) == (10, 11)


def test_stopDoesNotWaitForAHungDisk(gate: Gate) -> None:
    """
    Stopping waits for the thread at most the timeout given.
    """
    clock = Clock()
    w = LineWriter("x", clock, callNow, opener=fakeOpen, write=gate)
    w.open()
    w.start()
    w.write(b"line\n")
    assert gate.entered.wait(WAIT)
    fired: list[object] = []
    w.stop(timeout=5).addCallback(fired.append)
    clock.advance(5)
    assert fired == [None]
    assert w.stop() is w.stop()


def test_stopWithoutThread(tmp_path: Path) -> None:
    """
    A writer whose thread never started writes what it has when stopped.
    """
    path = tmp_path / "access.log"
    w = writer(path)
    w.open()
    w.write(b"line\n")
    fired: list[object] = []
    w.stop().addCallback(fired.append)
    assert fired == [None]
    assert path.read_bytes() == b"line\n"


# The service.


@pytest.fixture
def savedUSR1() -> Iterator[None]:
    saved = signal.getsignal(signal.SIGUSR1)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, saved)


def test_serviceOpensAtStart(tmp_path: Path) -> None:
    """
    The service opens the file before privileges are dropped, writes while
    running, and flushes when stopped.
    """
    path = tmp_path / "access.log"
    w = writer(path)
    service = LineWriterService(w, callNow, installSignal=False)
    service.privilegedStartService()
    assert path.exists()
    service.startService()
    w.write(b"line\n")
    done = threading.Event()
    service.stopService().addCallback(lambda _: done.set())
    assert done.wait(WAIT)
    assert path.read_bytes() == b"line\n"


def test_serviceCannotOpen(tmp_path: Path) -> None:
    """
    A file that cannot be opened stops the start with one line naming it
    and the option.
    """
    path = tmp_path / "missing" / "access.log"
    service = LineWriterService(writer(path), callNow, installSignal=False)
    with pytest.raises(OpenFailed) as raised:
        service.privilegedStartService()
    assert isinstance(raised.value, SystemExit)
    assert str(raised.value) == f"cannot open {path}: No such file or directory"
    assert raised.value.code == (
        f"connectproxy: cannot open {path}: No such file or directory "
        f"(--access-log {path})"
    )


def test_sigusr1Reopens(tmp_path: Path, savedUSR1: None) -> None:
    """
    With signals, C{SIGUSR1} re-opens the file and then calls the handler
    it replaced (C{twistd}'s log rotation); the old handler is put back
    when the service stops.
    """
    called: list[int] = []

    def previous(signum: int, frame: object) -> None:
        called.append(signum)

    signal.signal(signal.SIGUSR1, previous)
    reopened: list[bool] = []
    w = writer(tmp_path / "access.log")
    w.reopen = lambda: reopened.append(True)  # type: ignore[method-assign]
    service = LineWriterService(w, callNow, installSignal=True)
    service.startService()
    handler = signal.getsignal(signal.SIGUSR1)
    assert callable(handler) and handler is not previous
    handler(signal.SIGUSR1, None)
    assert (reopened, called) == ([True], [signal.SIGUSR1])
    service.stopService()
    assert signal.getsignal(signal.SIGUSR1) is previous


def test_noSignalWithout(tmp_path: Path, savedUSR1: None) -> None:
    """
    Without signals, C{SIGUSR1} is left alone.
    """
    before = signal.getsignal(signal.SIGUSR1)
    service = LineWriterService(
        writer(tmp_path / "access.log"), callNow, installSignal=False
    )
    service.startService()
    assert signal.getsignal(signal.SIGUSR1) == before
    service.stopService()
