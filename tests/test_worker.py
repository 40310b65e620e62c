"""
Tests for L{connectproxy._worker}: the worker side of C{--workers}.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
from twisted.internet.endpoints import _SystemdParser
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent
from twisted.python.systemd import ListenFDs

from connectproxy import _worker
from connectproxy._assembly import ProxyConfig
from connectproxy._sdnotify import PipeNotifier
from connectproxy._worker import (
    MARKER,
    ParentWatch,
    WorkerMarker,
    _adoptSystemdSockets,
    main,
)
from connectproxy.tap import Options, makeService


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """
    A pipe, closed after the test (each end that is still open).
    """
    read, write = os.pipe()
    try:
        yield read, write
    finally:
        for fd in (read, write):
            try:
                os.close(fd)
            except OSError:
                pass


def test_markerRefused() -> None:
    """
    A marker that a supervisor did not write is refused, naming the
    variable.
    """
    for text in (
        "nonsense",
        "{}",
        '{"worker": 0, "listen": [], "notify": 5, "metrics": null, "parent": 0}',
        '{"worker": 1, "listen": [["tcp:0", -1]], "notify": 5, "metrics": null, '
        '"parent": 0}',
        '{"worker": 1, "listen": [], "notify": true, "metrics": null, "parent": 0}',
        '{"worker": 1, "listen": [], "notify": 5, "metrics": 3, "parent": 0}',
    ):
        with pytest.raises(ValueError, match=MARKER):
            WorkerMarker.decode(text)


def test_metricsListen() -> None:
    """
    A worker serves its metrics on its private socket, only with
    C{--metrics}.
    """
    marker = WorkerMarker(1, (), 5, "/tmp/x:y/m1")
    assert marker.metricsListen([]) == []
    assert marker.metricsListen(["tcp:9108"]) == [
        "unix:/tmp/x\\:y/m1:mode=600:lockfile=0"
    ]
    assert WorkerMarker(1, (), 5).metricsListen(["tcp:9108"]) == []


def test_configureListen() -> None:
    """
    A worker listens with the descriptions its supervisor bound.
    """
    marker = WorkerMarker(1, (("tcp:3128", 5), ("systemd:index=0", None)), 6)
    config = marker.configure(ProxyConfig(listen=("tcp:9999",)))
    assert config.listen == ("tcp:3128", "systemd:index=0")
    assert marker.adopted == [5, None]


def test_mainWithoutMarker(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    The worker module refuses to run without its supervisor.
    """
    monkeypatch.delenv(MARKER, raising=False)
    with pytest.raises(SystemExit, match="start connectproxy"):
        main([])


def test_mainBadMarker(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A broken marker stops the worker with a message.
    """
    monkeypatch.setenv(MARKER, "{")
    with pytest.raises(SystemExit, match=MARKER):
        main([])
    assert MARKER not in os.environ


def test_systemdSocketsAdopted(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A worker takes over the sockets systemd passed its supervisor: Twisted's
    C{systemd:} endpoints find them under this process's ID.
    """
    monkeypatch.setattr(_SystemdParser, "_sddaemon", ListenFDs([], ()))
    monkeypatch.setenv("LISTEN_FDS", "2")
    monkeypatch.setenv("LISTEN_FDNAMES", "proxy:other")
    monkeypatch.setenv("LISTEN_PID", "1")
    _adoptSystemdSockets()
    named = _SystemdParser._sddaemon.inheritedNamedDescriptors()
    assert named == {"proxy": 3, "other": 4}


def test_pipeNotifier(pipe: tuple[int, int]) -> None:
    """
    A worker's notifications are written to its pipe, each ended by a NUL.
    """
    read, write = pipe
    notifier = PipeNotifier(write)
    assert notifier.ready("listening")
    assert notifier.stopping()
    assert (
        os.read(read, 100)
        == b"READY=1\nSTATUS=listening\0STOPPING=1\nSTATUS=stopping\0"
    )


def test_pipeNotifierFailure(pipe: tuple[int, int], logEvents: list[LogEvent]) -> None:
    """
    A notification that cannot be written is logged, not raised.
    """
    read, write = pipe
    notifier = PipeNotifier(write)
    os.close(read)
    assert not notifier.ready("listening")
    [event] = [e for e in logEvents if e.get("event") == "sd_notify_failed"]
    assert event["state"] == "READY=1"


def test_parentWatch(pipe: tuple[int, int], logEvents: list[LogEvent]) -> None:
    """
    The worker stops when the supervisor's end of its pipe closes, and
    says so once.
    """
    read, write = pipe
    reactor = MemoryReactorClock()
    reactor.running = True
    watch = ParentWatch(reactor, 2, read)
    watch.startService()
    [reader] = reactor.readers
    os.write(write, b"x")
    reader.doRead()
    reader.doRead()
    assert not reactor.hasStopped
    os.close(write)
    reader.doRead()
    assert reactor.hasStopped
    assert reactor.readers == set()
    reader.connectionLost(None)
    gone = [e for e in logEvents if e.get("event") == "supervisor_gone"]
    assert [e["worker"] for e in gone] == [2]
    watch.stopService()


def test_parentWatchStops(pipe: tuple[int, int]) -> None:
    """
    Stopping the watch stops watching.
    """
    reactor = MemoryReactorClock()
    watch = ParentWatch(reactor, 1, pipe[0])
    watch.startService()
    watch.stopService()
    assert reactor.readers == set()


def test_workerService(pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    """
    In a worker, makeService listens on the inherited socket, tells the
    supervisor (not systemd) once it listens, and watches the supervisor.
    """
    read, write = pipe
    parentRead, parentWrite = os.pipe()
    inherited = socket.socket(socket.AF_INET, socket.SOCK_STREAM).detach()
    description = "tcp:3128:interface=127.0.0.1"
    marker = WorkerMarker(1, ((description, inherited),), write, parent=parentRead)
    monkeypatch.setattr(_worker, "_current", marker)
    monkeypatch.setenv("NOTIFY_SOCKET", "/nowhere/at/all")
    options = Options()
    options.parseOptions(["--listen", "tcp:9999:interface=127.0.0.1"])
    reactor = MemoryReactorClock()
    reactor.running = True
    service = makeService(options, reactor)
    try:
        service.startService()
        [(fileno, family, _)] = reactor.adoptedPorts
        assert (fileno, family) == (inherited, socket.AF_INET)
        assert reactor.tcpServers == []
        assert os.read(read, 100).startswith(b"READY=1\nSTATUS=listening on ")
        assert len(reactor.readers) == 1
    finally:
        service.stopService()
        reactor.advance(60)
        os.close(parentRead)
        os.close(parentWrite)
    with pytest.raises(OSError):
        os.fstat(inherited)


def test_usageErrorNamesCommand(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """
    A worker that cannot start for an error in the proxy's options (a
    configuration file changed since the supervisor started) names the
    C{connectproxy} command in its message, not the worker's module.
    """
    monkeypatch.setattr("sys.argv", ["/somewhere/connectproxy/_worker.py"])
    with pytest.raises(SystemExit) as raised:
        _worker._run(1, ["connectproxy", "--max-connections", "many"])
    message = str(raised.value.code) + capsys.readouterr().err
    assert message.startswith("connectproxy: error: --max-connections: ")
    assert "See 'connectproxy --help' for the options." in message
    assert "_worker" not in message
