# -*- test-case-name: tests.test_logwriter -*-
"""
L{LineWriter}: writes log lines to a file (or standard output) without ever
making the reactor wait for the disk.

The reactor thread only appends each finished line to a bounded buffer in
memory; a thread of the writer's own takes what is there and writes it with
C{os.write} on a descriptor opened with C{O_APPEND}, in batches.  A slow
disk makes the buffer fill up, and a full disk makes writes fail: either
way lines are lost (and counted in L{LineWriter.droppedLines}), never a
tunnel, and nothing is raised into the proxy.  L{LineWriter.reopen} opens
the file again by its name (after logrotate renamed it), on the writer's
thread too.

L{LineWriterService} opens the file at start, runs the thread while the
service runs, re-opens the file on C{SIGUSR1} when the process owns its
signals, and writes what is left when it stops.
"""

from __future__ import annotations

import errno
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

__all__ = ["STDOUT", "LineWriter", "LineWriterService", "OpenFailed"]

#: The path that means standard output.
STDOUT = "-"

#: The largest number of bytes the buffer holds by default: lines arriving
#: while it is full are dropped.
BUFFER_BYTES = 4 * 1024 * 1024

#: The largest write, in bytes, to a file.
BATCH_BYTES = 64 * 1024

#: The largest write to standard output: a write of at most C{PIPE_BUF}
#: bytes to a pipe is never interleaved with another process's writes.
PIPE_BATCH_BYTES = 4096

#: Seconds L{LineWriter.stop} waits for the thread to write what is left.
FLUSH_TIMEOUT = 5.0

#: The mode of a file the writer creates (access logs name clients and
#: users), before the umask.
FILE_MODE = 0o640


def openForAppend(path: str) -> int:
    """
    Open C{path} for appending, creating it if it does not exist.

    @param path: The file.
    @return: The descriptor (close-on-exec).
    @raise OSError: When it cannot be opened.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOCTTY
    return os.open(path, flags, FILE_MODE)


class OpenFailed(SystemExit, Exception):
    """
    The log file could not be opened at start: the process exits with one
    line naming the file and the option, without a traceback (an
    L{Exception} too, so that C{twistd} in daemon mode passes it to the
    process that started it).

    @ivar path: The file.
    @ivar reason: Why it could not be opened.
    """

    def __init__(self, option: str, path: str, reason: str) -> None:
        super().__init__(f"cannot open {path}: {reason}")
        self.path = path
        self.reason = reason
        self.code = f"connectproxy: cannot open {path}: {reason} ({option} {path})"


class LineWriter:
    """
    Writes lines to a file on a thread of its own, through a bounded buffer,
    so that the reactor never waits for the disk.

    Counters are read on the reactor thread; they are exact once the
    writer has stopped, and at most one batch behind before that.

    @ivar path: The file (absolute), or L{STDOUT}.
    @ivar droppedLines: Lines lost: they arrived while the buffer was full,
        their write failed (a full disk, say), or they arrived after
        L{stop}.
    @ivar writtenLines: Lines written whole.
    """

    _log = Logger()

    def __init__(
        self,
        path: str,
        clock: IReactorTime,
        callFromThread: Callable[..., object],
        *,
        bufferBytes: int = BUFFER_BYTES,
        batchBytes: int | None = None,
        opener: Callable[[str], int] = openForAppend,
        write: Callable[[int, memoryview], int] = os.write,
    ) -> None:
        """
        @param path: The file, or L{STDOUT} (C{"-"}) for standard output.
        @param clock: Where the stop deadline comes from.
        @param callFromThread: Runs a function on the reactor thread (the
            reactor's C{callFromThread}); what the thread reports goes
            through it.
        @param bufferBytes: The most bytes held in memory; lines beyond are
            dropped.
        @param batchBytes: The largest single write; by default 64 KiB to a
            file and C{PIPE_BUF} (4096) to standard output.
        @param opener: Opens a path for appending and returns its
            descriptor.
        @param write: Writes bytes to a descriptor, like C{os.write}.
        """
        self.path = path if path == STDOUT else os.path.abspath(path)
        self._clock = clock
        self._callFromThread = callFromThread
        self._bufferBytes = bufferBytes
        if batchBytes is None:
            batchBytes = PIPE_BATCH_BYTES if path == STDOUT else BATCH_BYTES
        self._batchBytes = batchBytes
        self._opener = opener
        self._write = write
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: list[bytes] = []
        self._buffered = 0
        self._reopen = False
        self._stopping = False
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._done: Deferred[None] | None = None
        self.droppedLines = 0
        self.writtenLines = 0
        # Lines lost since writing last worked: reported when it starts
        # and when it ends.
        self._losing = 0
        # Whether the last write failed (the writer's thread only).
        self._failing = False

    # The reactor thread.

    def open(self) -> None:
        """
        Open the file (standard output needs no opening).

        @raise OSError: When it cannot be opened.
        """
        if self._fd is None:
            self._fd = 1 if self.path == STDOUT else self._opener(self.path)

    def write(self, line: bytes) -> None:
        """
        Queue one line (with its newline) to be written; drop it, counted,
        when the buffer is full.  Never blocks on the disk, never raises.

        @param line: The line's bytes.
        """
        size = len(line)
        with self._lock:
            if self._stopped:
                self.droppedLines += 1
                return
            if self._buffered + size > self._bufferBytes:
                self.droppedLines += 1
                self._losing += 1
                first = self._losing == 1
            else:
                self._pending.append(line)
                self._buffered += size
                self._wake.notify()
                return
        if first:
            self._log.warn(
                "access log {path}: lines are being dropped: the disk does not "
                "keep up ({buffered} bytes waiting)",
                event="access_log_dropping",
                path=self.path,
                buffered=self._buffered,
            )

    def reopen(self) -> None:
        """
        Open the file again by its name, on the writer's thread, before the
        next write (what logrotate's C{postrotate} asks for with
        C{SIGUSR1}); lines already written went to the old file.  If it
        cannot be opened, the old file stays in use.  Standard output is
        never re-opened.
        """
        if self.path == STDOUT:
            return
        with self._lock:
            self._reopen = True
            self._wake.notify()

    def start(self) -> None:
        """
        Start the writer's thread (the file must be open).
        """
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, name="connectproxy-access-log", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = FLUSH_TIMEOUT) -> Deferred[None]:
        """
        Write what is buffered, then stop the thread and close the file.
        Lines written after this are dropped.

        @param timeout: Seconds to wait for the thread at most (a disk that
            hangs must not hold up the shutdown); it is left to finish on
            its own after that.
        @return: A Deferred that fires (with C{None}) when the thread is
            done, or at the timeout.
        """
        if self._done is not None:
            return self._done
        done: Deferred[None] = Deferred()
        self._done = done
        with self._lock:
            self._stopping = True
            self._stopped = True
            self._wake.notify()
        if self._thread is None:
            # Never started: write what is there here.
            self.flush(final=True)
            done.callback(None)
            return done
        timer = self._clock.callLater(timeout, self._fire, done)
        done.addBoth(_cancelTimer, timer)
        return done

    def _fire(self, done: Deferred[None]) -> None:
        if not done.called:
            done.callback(None)

    # The writer's thread.

    def _run(self) -> None:
        while True:
            with self._lock:
                while not (self._pending or self._reopen or self._stopping):
                    self._wake.wait()
                stopping = self._stopping
            self.flush(final=stopping)
            if stopping:
                break
        done = self._done
        if done is not None:
            self._callFromThread(self._fire, done)

    def flush(self, final: bool = False) -> None:
        """
        Re-open the file if asked to, and write every line buffered now.
        The writer's thread calls it; call it directly only when the thread
        is not running.

        @param final: Close the file afterwards (and write everything
            buffered, however it arrived).
        """
        with self._lock:
            lines, self._pending = self._pending, []
            reopen, self._reopen = self._reopen, False
        if reopen:
            self._reopenNow()
        if lines:
            written = self._writeLines(lines)
            with self._lock:
                self._buffered -= sum(len(line) for line in lines)
                self.writtenLines += written
                lost = len(lines) - written
                self.droppedLines += lost
                if written and not lost and self._losing:
                    recovered, self._losing = self._losing, 0
                else:
                    recovered = 0
                    self._losing += lost
            if recovered:
                self._callFromThread(self._reportRecovered, recovered)
        if final:
            fd, self._fd = self._fd, None
            if fd is not None and fd != 1:
                _closeQuietly(fd)

    def _writeLines(self, lines: list[bytes]) -> int:
        """
        Write lines in batches of at most C{batchBytes} (a longer line
        alone), each batch whole or not at all as far as counting goes.

        @return: How many lines were written whole.
        """
        written = 0
        batch: list[bytes] = []
        size = 0
        for line in lines:
            if batch and size + len(line) > self._batchBytes:
                written += self._writeBatch(batch)
                batch, size = [], 0
            batch.append(line)
            size += len(line)
        if batch:
            written += self._writeBatch(batch)
        return written

    def _writeBatch(self, batch: list[bytes]) -> int:
        """
        Write one batch, resuming after short writes.

        @return: How many of its lines were written whole.
        """
        data = memoryview(b"".join(batch))
        fd = self._fd
        sent = 0
        try:
            if fd is None:
                raise OSError(errno.EBADF, "the access log is not open")
            while sent < len(data):
                sent += self._write(fd, data[sent:])
        except OSError as e:
            whole = 0
            total = 0
            for line in batch:
                total += len(line)
                if total > sent:
                    break
                whole += 1
            if not self._failing:
                self._failing = True
                self._callFromThread(self._reportFailure, e.strerror or str(e))
            return whole
        self._failing = False
        return len(batch)

    def _reopenNow(self) -> None:
        try:
            fd = self._opener(self.path)
        except OSError as e:
            self._callFromThread(self._reportReopen, e.strerror or str(e))
            return
        old, self._fd = self._fd, fd
        if old is not None and old != 1:
            _closeQuietly(old)
        self._callFromThread(self._reportReopen, None)

    # Reports, on the reactor thread.

    def _reportFailure(self, error: str) -> None:
        self._log.error(
            "access log {path}: write failed, lines are being dropped: {error}",
            event="access_log_write_failed",
            path=self.path,
            error=error,
        )

    def _reportRecovered(self, dropped: int) -> None:
        self._log.info(
            "access log {path}: writing again after {dropped} lines were dropped",
            event="access_log_recovered",
            path=self.path,
            dropped=dropped,
        )

    def _reportReopen(self, error: str | None) -> None:
        if error is None:
            self._log.info(
                "access log {path} re-opened",
                event="access_log_reopened",
                path=self.path,
            )
        else:
            self._log.error(
                "access log {path}: cannot re-open it, still writing to the "
                "old file: {error}",
                event="access_log_reopen_failed",
                path=self.path,
                error=error,
            )


def _closeQuietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _cancelTimer(result: object, timer: Any) -> object:
    if timer.active():
        timer.cancel()
    return result


class LineWriterService(Service):
    """
    Runs a L{LineWriter}: opens its file at start (before privileges are
    dropped, like C{twistd}'s own log file), runs its thread, re-opens the
    file on C{SIGUSR1} when told to handle signals, and writes what is
    left when stopped.

    The C{SIGUSR1} handler calls the one it replaced too, so that
    C{twistd --logfile} still rotates its own log on that signal.

    @ivar writer: The writer.
    """

    def __init__(
        self,
        writer: LineWriter,
        callFromThread: Callable[..., object],
        installSignal: bool,
        option: str = "--access-log",
    ) -> None:
        """
        @param writer: The writer.
        @param callFromThread: Runs a function on the reactor thread (from
            the signal handler).
        @param installSignal: Whether to handle C{SIGUSR1}.
        @param option: The option that named the file, for errors.
        """
        self.writer = writer
        self._callFromThread = callFromThread
        self._installSignal = installSignal
        self._option = option
        self._previous: Any = None
        self._installed = False

    def privilegedStartService(self) -> None:
        """
        Open the file.

        @raise OpenFailed: When it cannot be opened.
        """
        super().privilegedStartService()
        self._open()

    def startService(self) -> None:
        super().startService()
        self._open()
        self.writer.start()
        if self._installSignal and not self._installed:
            self._installed = True
            self._previous = signal.signal(signal.SIGUSR1, self._onSignal)

    def _open(self) -> None:
        try:
            self.writer.open()
        except OSError as e:
            raise OpenFailed(
                self._option, self.writer.path, e.strerror or str(e)
            ) from None

    def _onSignal(self, signum: int, frame: Any) -> None:
        self._callFromThread(self.writer.reopen)
        previous = self._previous
        if callable(previous):
            previous(signum, frame)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._installed:
            self._installed = False
            signal.signal(signal.SIGUSR1, self._previous or signal.SIG_DFL)
        return self.writer.stop()
