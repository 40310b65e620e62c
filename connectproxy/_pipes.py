# -*- test-case-name: tests.test_pipes -*-
"""
L{PipePool}: the pipes that splice relays move bytes through, shared by
every splice relay of a process (L{PIPES}).

A pipe is taken for each C{splice} out of a socket and given back as soon
as it is empty again, which is at once unless the other socket cannot take
everything: so an idle tunnel holds no pipe, only its two sockets, and
pipes are held only by the directions that wait for a slow reader, plus a
few kept empty for the next.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable

from twisted.logger import Logger

__all__ = ["PIPES", "PIPE_SIZE", "Pipe", "PipePool", "makePipe"]

#: The size asked for each pipe (C{F_SETPIPE_SZ}), in bytes: the most one
#: C{splice} moves, and so the most one direction holds for a slow reader
#: (kernel memory).  The kernel keeps its default (64 KiB) where this is
#: refused (above C{fs.pipe-max-size}, or an unprivileged user's
#: C{fs.pipe-user-pages-soft}).
PIPE_SIZE = 256 << 10

#: Empty pipes kept for the next tunnels that need one.
_KEEP = 16

#: A pipe: its read and its write descriptor.
Pipe = tuple[int, int]


def makePipe() -> Pipe:
    """
    A new pipe, both ends non-blocking and closed on C{exec}.

    @raise OSError: When it cannot be made (C{EMFILE}, C{ENFILE}).
    """
    return os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)


class PipePool:
    """
    Empty pipes for splicing, shared by every splice relay of a process.

    A pipe is taken for each C{splice} out of a socket and given back as
    soon as it is empty again, which is at once unless the other socket
    cannot take everything: so pipes are held only by the directions that
    wait for a slow reader, plus those kept for the next (at most
    L{keep}).

    @ivar size: The size asked for each new pipe, in bytes; 0 for the
        kernel's default.
    @ivar keep: How many empty pipes are kept open.
    @ivar open: How many pipes are open now (in use and kept).
    @ivar free: The empty pipes kept.
    """

    _log = Logger()

    def __init__(
        self,
        size: int = PIPE_SIZE,
        keep: int = _KEEP,
        make: Callable[[], Pipe] = makePipe,
    ) -> None:
        """
        @param size: The size asked for each new pipe, in bytes.
        @param keep: How many empty pipes are kept open.
        @param make: Makes a pipe (L{makePipe}).
        """
        self.size = size
        self.keep = keep
        self._make = make
        self.open = 0
        self.free: list[Pipe] = []
        self._failing = False

    @property
    def inUse(self) -> int:
        """
        How many pipes relays hold now.
        """
        return self.open - len(self.free)

    def take(self) -> Pipe | None:
        """
        An empty pipe, kept or new.

        @return: Its read and write descriptors (both non-blocking), or
            C{None} when no pipe can be made (the process or the system is
            out of descriptors): one C{splice_pipe_failed} event is logged
            until a pipe can be made again.
        """
        if self.free:
            return self.free.pop()
        try:
            pipe = self._make()
        except OSError as e:
            if not self._failing:
                self._failing = True
                self._log.warn(
                    "cannot make a pipe for splicing ({error}): tunnels copy "
                    "through the proxy until pipes can be made again",
                    event="splice_pipe_failed",
                    error=e.strerror,
                )
            return None
        self._failing = False
        self.open += 1
        if self.size:
            try:
                fcntl.fcntl(pipe[1], fcntl.F_SETPIPE_SZ, self.size)
            except OSError:
                # Over the system's limits (fs.pipe-max-size, the user's
                # pipe pages): the default size works too.
                pass
        return pipe

    def give(self, pipe: Pipe) -> None:
        """
        Give back a pipe that is empty: it is kept, or closed when enough
        are kept.
        """
        if len(self.free) < self.keep:
            self.free.append(pipe)
        else:
            self.discard(pipe)

    def discard(self, pipe: Pipe) -> None:
        """
        Close a pipe (one that may hold bytes nobody will read).
        """
        self.open -= 1
        os.close(pipe[0])
        os.close(pipe[1])

    def close(self) -> None:
        """
        Close the pipes kept; pipes in use are given back later as usual.
        """
        while self.free:
            self.discard(self.free.pop())


#: The pipes of this process's splice relays.
PIPES = PipePool()
