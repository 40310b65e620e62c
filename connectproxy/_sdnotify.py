# -*- test-case-name: tests.test_sdnotify -*-
"""
Tell systemd how the proxy is doing (C{sd_notify(3)}), for units with
C{Type=notify} or C{Type=notify-reload}: C{READY=1} once every listener
listens, C{RELOADING=1} and C{READY=1} around a reload, C{STOPPING=1} at
shutdown.

The protocol is one datagram per message to the C{AF_UNIX} socket named in
C{$NOTIFY_SOCKET} (a path, or C{@name} in the abstract namespace), holding
newline-separated C{KEY=VALUE} assignments.  Without C{$NOTIFY_SOCKET}
nothing is sent.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

from ._address import formatAddress

if TYPE_CHECKING:
    from ._service import ListenerService

__all__ = ["RELOAD_FAILED", "NotifyService", "PipeNotifier", "SystemdNotifier"]

#: What the status says after a reload that did not load.
RELOAD_FAILED = "; the last reload failed, see the log"


def monotonicMicroseconds() -> int:
    """
    C{CLOCK_MONOTONIC} in microseconds, the clock systemd compares
    C{MONOTONIC_USEC} with (not a timer: the reactor's clock is not it).
    """
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def socketAddress(value: str) -> str | None:
    """
    The C{AF_UNIX} address C{$NOTIFY_SOCKET} names.

    @param value: The variable's value.
    @return: The address (C{@name} becomes the abstract C{"\\0name"}), or
        C{None} for a kind of socket this client does not speak (such as
        C{vsock:}).
    """
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    return None


class SystemdNotifier:
    """
    An C{sd_notify} client: sends state changes to systemd's notification
    socket.

    @ivar address: The socket's C{AF_UNIX} address, or C{None} when there
        is nowhere to send (then every call does nothing).
    """

    _log = Logger()

    def __init__(
        self,
        address: str | None,
        monotonic: Callable[[], int] = monotonicMicroseconds,
    ) -> None:
        """
        @param address: The C{AF_UNIX} address of systemd's notification
            socket, or C{None}.
        @param monotonic: Returns C{CLOCK_MONOTONIC} in microseconds.
        """
        self.address = address
        self._monotonic = monotonic

    @classmethod
    def fromEnvironment(
        cls, environ: Mapping[str, str] | None = None
    ) -> SystemdNotifier:
        """
        A notifier for the socket C{$NOTIFY_SOCKET} names (none when unset).

        @param environ: The environment; the process's when C{None}.
        """
        value = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
        address = socketAddress(value) if value else None
        if value and address is None:
            cls._log.warn(
                "cannot notify systemd through NOTIFY_SOCKET={socket!r}: only "
                "paths and @abstract names are supported",
                event="sd_notify_unsupported",
                socket=value,
            )
        return cls(address)

    def notify(self, *assignments: str) -> bool:
        """
        Send one message.

        @param assignments: C{KEY=VALUE} strings, without newlines.
        @return: Whether it was sent (C{False} when there is nowhere to send
            or the send failed, which is logged).
        """
        if self.address is None:
            return False
        message = "\n".join(assignments).encode("utf-8")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.sendto(message, self.address)
        except OSError as e:
            self._log.warn(
                "could not notify systemd ({state}): {error}",
                event="sd_notify_failed",
                state=assignments[0] if assignments else "",
                error=str(e),
            )
            return False
        return True

    def ready(self, status: str) -> bool:
        """
        Say that the proxy is ready (at start, and after a reload).

        @param status: A line for C{systemctl status}.
        """
        return self.notify("READY=1", _status(status))

    def reloading(self) -> bool:
        """
        Say that a reload has started, with the time systemd 253+ needs for
        C{Type=notify-reload}.
        """
        return self.notify(
            "RELOADING=1",
            f"MONOTONIC_USEC={self._monotonic()}",
            _status("reloading the configuration"),
        )

    def stopping(self) -> bool:
        """
        Say that the proxy is shutting down.
        """
        return self.notify("STOPPING=1", _status("stopping"))


class PipeNotifier(SystemdNotifier):
    """
    The notifications of a worker process of C{--workers}: the same
    messages, written to a pipe its supervisor reads (each followed by a
    NUL byte) instead of sent to systemd, which only the supervisor tells.
    """

    def __init__(self, fileno: int) -> None:
        """
        @param fileno: The pipe's descriptor; made non-blocking, so that a
            supervisor that stopped reading cannot hold up the worker.
        """
        super().__init__(None)
        self.fileno = fileno
        os.set_blocking(fileno, False)

    def notify(self, *assignments: str) -> bool:
        """
        Write one message.

        @return: Whether it was written (a failure is logged).
        """
        message = "\n".join(assignments).encode("utf-8") + b"\0"
        try:
            os.write(self.fileno, message)
        except OSError as e:
            self._log.warn(
                "could not tell the supervisor ({state}): {error}",
                event="sd_notify_failed",
                state=assignments[0] if assignments else "",
                error=str(e),
            )
            return False
        return True


def _status(text: str) -> str:
    return "STATUS=" + " ".join(text.split())


class NotifyService(Service):
    """
    Sends C{READY=1} once every listener listens, C{STOPPING=1} when
    stopped, and, told by the reload service, C{RELOADING=1} and C{READY=1}
    around a reload.

    Add it to the parent after the listeners: it is started after them (and
    stopped before them).
    """

    _log = Logger()

    def __init__(
        self, notifier: SystemdNotifier, listeners: Sequence[ListenerService]
    ) -> None:
        """
        @param notifier: Where to send the notifications.
        @param listeners: The listeners to wait for.
        """
        self.notifier = notifier
        self.listeners = listeners
        self.isReady = False
        self._status = ""

    def startService(self) -> None:
        super().startService()
        waits: list[Deferred[Any]] = []
        for listener in self.listeners:
            waiting = listener._waitingForPort
            if waiting is None:
                return
            passed: Deferred[Any] = Deferred()
            waiting.addBoth(_forward, passed)
            waits.append(passed)
        gatherResults(waits).addCallback(self._listening)

    def _listening(self, ports: list[Any]) -> None:
        if not self.running or any(port is None for port in ports):
            # A listener failed (and said why): never ready.
            return
        self.isReady = True
        addresses = ", ".join(formatAddress(port.getHost()) for port in ports)
        self._status = f"listening on {addresses}" if addresses else "running"
        self.notifier.ready(self._status)

    def reloading(self) -> None:
        """
        A reload starts.
        """
        if self.isReady:
            self.notifier.reloading()

    def reloaded(self, succeeded: bool) -> None:
        """
        A reload ended.

        @param succeeded: Whether the new configuration is in use.
        """
        if self.isReady:
            status = self._status
            if not succeeded:
                status += RELOAD_FAILED
            self.notifier.ready(status)

    def stopService(self) -> None:
        self.isReady = False
        if self.running:
            self.notifier.stopping()
        super().stopService()


def _forward(result: object, passed: Deferred[Any]) -> object:
    """
    Fire C{passed} with a copy of a listener's result (its port, or C{None}
    when it failed) and leave the listener's own chain as it was.
    """
    passed.callback(None if not hasattr(result, "getHost") else result)
    return result
