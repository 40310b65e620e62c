# -*- test-case-name: tests.test_descriptors -*-
"""
What a listener does when C{accept(2)} finds no descriptor: L{AcceptGuard}.

Twisted's C{tcp.Port}, on C{EMFILE}, keeps one process-wide spare
descriptor: it closes it to accept and close (with no response) every
waiting connection, logging a line for each, then opens it again.  When that
spare is gone (it could not be opened again), or the error is C{ENFILE},
C{ENOBUFS} or C{ENOMEM}, it logs a line and returns with the connections
still waiting: the listening socket stays readable and the reactor calls it
again at once, at full CPU, a log line each time.

L{AcceptGuard} answers those errors itself, below Twisted's accept loop: it
refuses the waiting connections with a 503 (through a spare descriptor of
its own, L{DescriptorReserve}), stops accepting on that listener for
L{ACCEPT_PAUSE} seconds, and L{ExhaustionReport} logs one
C{descriptors_exhausted} warning at most once a second, with a count.
"""

from __future__ import annotations

import errno
import os
import resource
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ._eyeballs import EXHAUSTED
from ._responses import errorResponse

__all__ = [
    "ACCEPT_PAUSE",
    "REFUSAL",
    "AcceptGuard",
    "DescriptorReserve",
    "ExhaustionReport",
]

#: Seconds a listener stops accepting after C{accept(2)} ran out of
#: descriptors; a new client waits at most this long for its 503 (or to be
#: served, once descriptors are free again).
ACCEPT_PAUSE = 0.1

#: Most waiting connections refused in one go.
MAX_REFUSALS = 256

#: Seconds between two C{descriptors_exhausted} warnings, at least.
REPORT_INTERVAL = 1.0

#: What a plain (not TLS) listener answers when it cannot serve a client
#: for lack of descriptors.
REFUSAL = errorResponse(503, "the proxy is out of file descriptors; try again later")

_Getter = Callable[[int], tuple[int, int]]


class DescriptorReserve:
    """
    One spare descriptor (on C{/dev/null}) kept open so that, with the
    descriptor table full, a connection can still be accepted to be
    refused.
    """

    def __init__(self, path: str = os.devnull) -> None:
        self._path = path
        self._fd: int | None = None

    def available(self) -> bool:
        """
        @return: Whether the spare descriptor is open.
        """
        return self._fd is not None

    def reserve(self) -> bool:
        """
        Open the spare descriptor unless it is open.

        @return: Whether it is open now.
        """
        if self._fd is None:
            try:
                self._fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return False
        return True

    def release(self) -> None:
        """
        Close the spare descriptor (if open), freeing its slot.
        """
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class ExhaustionReport:
    """
    Logs a C{descriptors_exhausted} warning at most once every
    L{REPORT_INTERVAL} seconds, with the count of connections refused since
    the previous one, and one C{descriptors_recovered} event when a
    listener accepts again a whole interval after the last exhaustion (so
    that a proxy hovering at its limit logs no more than the warnings).

    @ivar exhausted: Whether descriptors ran out and no recovery has been
        reported since.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        interval: float = REPORT_INTERVAL,
        getrlimit: _Getter = resource.getrlimit,
    ) -> None:
        self._clock = clock
        self._interval = interval
        self._getrlimit = getrlimit
        self._count = 0
        self._error = ""
        self._last: float | None = None
        self._lastExhausted = 0.0
        self._timer: IDelayedCall | None = None
        self.exhausted = False

    def refused(self, count: int, error: int) -> None:
        """
        A listener ran out of descriptors and refused C{count} waiting
        connections.

        @param count: How many connections it refused now (0 when it could
            not even do that: they wait).
        @param error: The C{errno} of C{accept(2)}.
        """
        now = self._clock.seconds()
        self.exhausted = True
        self._lastExhausted = now
        self._count += count
        self._error = errno.errorcode.get(error, str(error))
        if self._timer is not None:
            return
        if self._last is None or now - self._last >= self._interval:
            self._flush()
        else:
            self._timer = self._clock.callLater(
                self._last + self._interval - now, self._flush
            )

    def accepted(self) -> None:
        """
        A listener accepted a connection while L{exhausted}: once a whole
        interval passed since the last exhaustion, say that accepting works
        again.
        """
        if self._clock.seconds() - self._lastExhausted < self._interval:
            return
        self.stop()
        self.exhausted = False
        self._log.info(
            "file descriptors available again: accepting new connections",
            event="descriptors_recovered",
        )

    def stop(self) -> None:
        """
        Log what is still to be said, and stop the timer.
        """
        if self._timer is not None:
            self._timer.cancel()
            self._flush()

    def _flush(self) -> None:
        self._timer = None
        self._last = self._clock.seconds()
        count, self._count = self._count, 0
        self._log.warn(
            "out of file descriptors ({error}, limit {limit}): refused {count} "
            "new connections; listeners pause accepting for {pause} s at a "
            "time until descriptors are free",
            event="descriptors_exhausted",
            error=self._error,
            limit=self._getrlimit(resource.RLIMIT_NOFILE)[0],
            count=count,
            pause=ACCEPT_PAUSE,
        )


class _GuardedSocket:
    """
    Stands in for a listening port's socket: C{accept} hands descriptor
    exhaustion to the guard and tells Twisted's accept loop that nothing is
    waiting; everything else is the socket's own.
    """

    def __init__(self, sock: Any, guard: AcceptGuard) -> None:
        self._socket = sock
        self._guard = guard

    def accept(self) -> tuple[Any, Any]:
        try:
            pair: tuple[Any, Any] = self._socket.accept()
        except OSError as e:
            if e.errno not in EXHAUSTED:
                raise
            self._guard.exhausted(self._socket, e.errno)
            raise BlockingIOError(errno.EAGAIN, "out of file descriptors") from None
        if self._guard.report.exhausted:
            self._guard.report.accepted()
        return pair

    def __getattr__(self, name: str) -> Any:
        return getattr(self._socket, name)


class AcceptGuard:
    """
    Keeps one listening port from spinning or failing when C{accept(2)}
    runs out of descriptors (or socket memory): it refuses the waiting
    connections (a 503 on a plain listener, a close on TLS) through the
    spare descriptor, stops accepting for C{pause} seconds, and reports.

    @ivar report: Where exhaustion is reported (shared by the listeners).
    """

    def __init__(
        self,
        clock: IReactorTime,
        reserve: DescriptorReserve,
        report: ExhaustionReport,
        refusal: bytes | None = REFUSAL,
        pause: float = ACCEPT_PAUSE,
    ) -> None:
        """
        @param clock: Times the pause.
        @param reserve: The spare descriptor (shared by the listeners).
        @param report: Logs the exhaustion (shared by the listeners).
        @param refusal: What to send a refused client before closing, or
            C{None} to close at once (a TLS listener).
        @param pause: Seconds to stop accepting each time.
        """
        self._clock = clock
        self._reserve = reserve
        self.report = report
        self._refusal = refusal
        self._pause = pause
        self._port: Any = None
        self._timer: IDelayedCall | None = None

    def watch(self, port: Any) -> bool:
        """
        Guard C{port}'s accept loop: a Twisted C{tcp.Port} (or a subclass:
        UNIX, adopted from systemd), whose C{doRead} accepts from its
        C{socket} attribute.

        @param port: The listening port.
        @return: Whether it is guarded (C{False} for a port without a
            socket to accept from: another kind of port).
        """
        sock = getattr(port, "socket", None)
        if not callable(getattr(sock, "accept", None)):
            return False
        self._port = port
        port.socket = _GuardedSocket(sock, self)
        self._reserve.reserve()
        return True

    def stop(self) -> None:
        """
        Forget the port (it stops listening): no pending resume.
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._port = None

    def exhausted(self, sock: Any, error: int) -> None:
        """
        C{accept(2)} on C{sock} failed with C{error} for lack of resources:
        refuse who waits, pause, report.
        """
        refused = self._refuseWaiting(sock)
        self.report.refused(refused, error)
        port = self._port
        if port is not None and self._timer is None:
            port.stopReading()
            self._timer = self._clock.callLater(self._pause, self._resume)

    def _resume(self) -> None:
        self._timer = None
        port = self._port
        if port is not None and port.connected and not port.disconnecting:
            port.startReading()

    def _refuseWaiting(self, sock: Any) -> int:
        """
        Accept and refuse the connections waiting on C{sock}, with the spare
        descriptor's slot.  Nothing in here may open a descriptor (no log).

        @return: How many were refused.
        """
        reserve = self._reserve
        if not reserve.reserve():
            return 0
        reserve.release()
        refused = 0
        try:
            for _ in range(MAX_REFUSALS):
                try:
                    client, _ = sock.accept()
                except OSError:
                    break
                self._refuse(client)
                refused += 1
        finally:
            reserve.reserve()
        return refused

    def _refuse(self, client: Any) -> None:
        """
        Answer one client and close.  What it already sent is read first,
        so that the close is a FIN rather than a reset that could discard
        the answer before the client reads it.
        """
        try:
            client.setblocking(False)
            if self._refusal is not None:
                try:
                    client.recv(65536)
                except OSError:
                    pass
                client.send(self._refusal)
        except OSError:
            pass
        finally:
            client.close()
