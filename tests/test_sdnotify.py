"""
Tests for L{connectproxy._sdnotify}: the C{sd_notify} client and the
service that says when the proxy is ready, reloading and stopping.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent

from connectproxy._sdnotify import (
    NotifyService,
    SystemdNotifier,
    monotonicMicroseconds,
    socketAddress,
)
from connectproxy.tap import Options, makeService


class RecordingNotifier(SystemdNotifier):
    """
    A notifier that records its messages instead of sending them.
    """

    def __init__(self) -> None:
        super().__init__("/nowhere", monotonic=lambda: 1234567)
        self.messages: list[tuple[str, ...]] = []

    def notify(self, *assignments: str) -> bool:
        self.messages.append(assignments)
        return True

    def states(self) -> list[str]:
        """
        The first assignment of every message.
        """
        return [message[0] for message in self.messages]


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    """
    A datagram socket bound to a path in a new directory, standing in for
    systemd's notification socket.
    """
    with tempfile.TemporaryDirectory(prefix="connectproxy-notify-") as directory:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(Path(directory) / "notify"))
        sock.settimeout(5)
        try:
            yield sock
        finally:
            sock.close()


@pytest.mark.parametrize(
    "value, address",
    [
        ("/run/systemd/notify", "/run/systemd/notify"),
        ("@abstract/name", "\0abstract/name"),
        ("@", None),
        ("vsock:2:1234", None),
        ("relative/path", None),
    ],
)
def test_socketAddress(value: str, address: str | None) -> None:
    """
    Paths and C{@} abstract names are understood; other kinds of socket are
    not.
    """
    assert socketAddress(value) == address


def test_sendsToPath(receiver: socket.socket) -> None:
    """
    A message is one datagram of newline-separated assignments.
    """
    notifier = SystemdNotifier.fromEnvironment(
        {"NOTIFY_SOCKET": receiver.getsockname()}
    )
    assert notifier.ready("listening on 127.0.0.1:3128")
    assert receiver.recv(4096) == b"READY=1\nSTATUS=listening on 127.0.0.1:3128"


def test_sendsToAbstractName() -> None:
    """
    C{@name} is a socket in the abstract namespace.
    """
    name = f"connectproxy-test-{os.getpid()}-{id(object())}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        notifier = SystemdNotifier.fromEnvironment({"NOTIFY_SOCKET": "@" + name})
        assert notifier.stopping()
        assert sock.recv(4096) == b"STOPPING=1\nSTATUS=stopping"


def test_reloadingSaysWhen(receiver: socket.socket) -> None:
    """
    C{RELOADING=1} comes with C{MONOTONIC_USEC}, as C{Type=notify-reload}
    requires.
    """
    notifier = SystemdNotifier(receiver.getsockname(), monotonic=lambda: 42)
    assert notifier.reloading()
    assert receiver.recv(4096) == (
        b"RELOADING=1\nMONOTONIC_USEC=42\nSTATUS=reloading the configuration"
    )


def test_monotonicMicroseconds() -> None:
    """
    The default clock is C{CLOCK_MONOTONIC} in microseconds.
    """
    before = monotonicMicroseconds()
    assert before > 0
    assert monotonicMicroseconds() >= before


def test_noSocket() -> None:
    """
    Without C{NOTIFY_SOCKET} nothing is sent.
    """
    notifier = SystemdNotifier.fromEnvironment({})
    assert notifier.address is None
    assert not notifier.ready("x")


def test_unsupportedSocket(logEvents: list[LogEvent]) -> None:
    """
    A socket this client cannot use is logged once, and ignored.
    """
    notifier = SystemdNotifier.fromEnvironment({"NOTIFY_SOCKET": "vsock:2:1"})
    assert not notifier.ready("x")
    [event] = [e for e in logEvents if e.get("event") == "sd_notify_unsupported"]
    assert event["socket"] == "vsock:2:1"


def test_sendFails(logEvents: list[LogEvent], tmp_path: Path) -> None:
    """
    A send that fails (nobody listens there) is logged, not raised.
    """
    notifier = SystemdNotifier(str(tmp_path / "missing"))
    assert not notifier.ready("x")
    [event] = [e for e in logEvents if e.get("event") == "sd_notify_failed"]
    assert event["state"] == "READY=1"


def test_processEnvironment(
    receiver: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    By default the process's environment names the socket.
    """
    monkeypatch.setenv("NOTIFY_SOCKET", receiver.getsockname())
    assert SystemdNotifier.fromEnvironment().address == receiver.getsockname()


class FakeListener:
    """
    Stands in for a L{connectproxy._service.ListenerService}.
    """

    def __init__(self) -> None:
        self._waitingForPort: Deferred[Any] | None = Deferred()


class FakePort:
    def __init__(self, port: int) -> None:
        self._address = IPv4Address("TCP", "127.0.0.1", port)

    def getHost(self) -> IPv4Address:
        return self._address


def test_readyOnceEveryListenerListens() -> None:
    """
    C{READY=1} is sent when the last listener listens, with their addresses
    in C{STATUS}; the listeners' own results are left alone.
    """
    notifier = RecordingNotifier()
    listeners = [FakeListener(), FakeListener()]
    service = NotifyService(notifier, listeners)  # type: ignore[arg-type]
    service.startService()
    first, second = (listener._waitingForPort for listener in listeners)
    assert first is not None and second is not None
    first.callback(FakePort(1))
    assert notifier.messages == []
    second.callback(FakePort(2))
    assert notifier.messages == [
        ("READY=1", "STATUS=listening on 127.0.0.1:1, 127.0.0.1:2")
    ]
    results: list[object] = []
    first.addCallback(results.append)
    assert isinstance(results[0], FakePort)


def test_notReadyWhenAListenerFails() -> None:
    """
    A listener that failed to listen (its Deferred fires with C{None} once
    the failure is logged) means the proxy never says it is ready.
    """
    notifier = RecordingNotifier()
    listeners = [FakeListener(), FakeListener()]
    service = NotifyService(notifier, listeners)  # type: ignore[arg-type]
    service.startService()
    for listener, result in zip(listeners, [FakePort(1), None], strict=True):
        assert listener._waitingForPort is not None
        listener._waitingForPort.callback(result)
    assert notifier.messages == []
    service.reloading()
    service.reloaded(True)
    assert notifier.messages == []


def test_notStartedListener() -> None:
    """
    A listener that has not started means not ready.
    """
    notifier = RecordingNotifier()
    listener = FakeListener()
    listener._waitingForPort = None
    service = NotifyService(notifier, [listener])  # type: ignore[list-item]
    service.startService()
    assert notifier.messages == []


def test_reloadAndStop() -> None:
    """
    A reload is framed by C{RELOADING=1} and C{READY=1} (whose status says
    when it failed); stopping sends C{STOPPING=1}.
    """
    notifier = RecordingNotifier()
    listener = FakeListener()
    service = NotifyService(notifier, [listener])  # type: ignore[list-item]
    service.startService()
    assert listener._waitingForPort is not None
    listener._waitingForPort.callback(FakePort(3128))
    service.reloading()
    service.reloaded(True)
    service.reloading()
    service.reloaded(False)
    service.stopService()
    assert notifier.messages[1:] == [
        ("RELOADING=1", "MONOTONIC_USEC=1234567", "STATUS=reloading the configuration"),
        ("READY=1", "STATUS=listening on 127.0.0.1:3128"),
        ("RELOADING=1", "MONOTONIC_USEC=1234567", "STATUS=reloading the configuration"),
        (
            "READY=1",
            "STATUS=listening on 127.0.0.1:3128; the last reload failed, see the log",
        ),
        ("STOPPING=1", "STATUS=stopping"),
    ]


def test_stopBeforeReady() -> None:
    """
    Stopping before the listeners listen still says so, and the late ports
    do not make it ready.
    """
    notifier = RecordingNotifier()
    listener = FakeListener()
    service = NotifyService(notifier, [listener])  # type: ignore[list-item]
    service.startService()
    service.stopService()
    assert listener._waitingForPort is not None
    listener._waitingForPort.callback(FakePort(1))
    assert notifier.states() == ["STOPPING=1"]


def test_makeService(receiver: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    C{makeService} tells systemd when it listens, around a reload and when
    it stops.
    """
    monkeypatch.setenv("NOTIFY_SOCKET", receiver.getsockname())
    options = Options()
    options.parseOptions(["--listen", "tcp:3128:interface=127.0.0.1"])
    service = makeService(options, MemoryReactorClock())
    service.startService()
    assert receiver.recv(4096) == b"READY=1\nSTATUS=listening on 0.0.0.0:3128"
    assert service.getServiceNamed("reload").reload()
    assert receiver.recv(4096).startswith(b"RELOADING=1\nMONOTONIC_USEC=")
    assert receiver.recv(4096) == b"READY=1\nSTATUS=listening on 0.0.0.0:3128"
    service.stopService()
    assert receiver.recv(4096) == b"STOPPING=1\nSTATUS=stopping"
