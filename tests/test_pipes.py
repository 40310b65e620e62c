# -*- test-case-name: tests.test_pipes -*-
"""
Tests for L{connectproxy._pipes.PipePool}: the pipes splice relays move
bytes through (real pipes, which are no network I/O).
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator

import pytest
from twisted.logger import LogEvent

from connectproxy._pipes import PIPE_SIZE, Pipe, PipePool, makePipe


@pytest.fixture
def pool() -> Iterator[PipePool]:
    """
    A pool keeping two pipes, closed when the test ends.
    """
    made = PipePool(keep=2)
    yield made
    made.close()


def isOpen(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_newPipe(pool: PipePool) -> None:
    """
    A new pipe is non-blocking at both ends, closed on exec, and of
    L{PIPE_SIZE}.
    """
    pipe = pool.take()
    assert pipe is not None
    for fd in pipe:
        assert not os.get_blocking(fd)
        assert not os.get_inheritable(fd)
    assert fcntl.fcntl(pipe[1], fcntl.F_GETPIPE_SZ) == PIPE_SIZE
    assert (pool.open, pool.inUse) == (1, 1)
    pool.give(pipe)


def test_keptAndReused(pool: PipePool) -> None:
    """
    Pipes given back are kept, up to C{keep}, and handed out again; more
    are closed.
    """
    pipes = [pool.take() for _ in range(3)]
    assert None not in pipes
    for pipe in pipes:
        assert pipe is not None
        pool.give(pipe)
    assert (pool.open, len(pool.free), pool.inUse) == (2, 2, 0)
    assert pipes[2] is not None and not isOpen(pipes[2][0])
    assert pool.take() in pipes[:2]
    assert pool.inUse == 1


def test_discardAndClose(pool: PipePool) -> None:
    """
    A discarded pipe (one that may hold bytes) is closed, both ends;
    closing the pool closes the kept ones.
    """
    first, second = pool.take(), pool.take()
    assert first is not None and second is not None
    pool.discard(first)
    assert not isOpen(first[0]) and not isOpen(first[1])
    pool.give(second)
    pool.close()
    assert not isOpen(second[0]) and not isOpen(second[1])
    assert (pool.open, pool.free) == (0, [])


def test_sizeRefused() -> None:
    """
    A size the kernel refuses leaves the pipe at its default size.
    """
    pool = PipePool(size=(1 << 31) - 1)
    pipe = pool.take()
    assert pipe is not None
    assert fcntl.fcntl(pipe[1], fcntl.F_GETPIPE_SZ) < pool.size
    pool.discard(pipe)


def test_outOfDescriptors(logEvents: list[LogEvent]) -> None:
    """
    When no pipe can be made the pool says so (C{None}) and logs one
    C{splice_pipe_failed} event until a pipe can be made again.
    """
    failing = [True]

    def make() -> Pipe:
        if failing[0]:
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return makePipe()

    pool = PipePool(make=make)
    assert pool.take() is None
    assert pool.take() is None
    failures = [e for e in logEvents if e.get("event") == "splice_pipe_failed"]
    assert len(failures) == 1
    assert failures[0]["error"] == os.strerror(errno.EMFILE)
    failing[0] = False
    pipe = pool.take()
    assert pipe is not None
    pool.discard(pipe)
    failing[0] = True
    assert pool.take() is None
    failures = [e for e in logEvents if e.get("event") == "splice_pipe_failed"]
    assert len(failures) == 2
    assert pool.open == 0
