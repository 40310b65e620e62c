"""
Tests for L{connectproxy._sharedports}: the supervisor binds the listening
sockets, the workers adopt them.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import _SystemdParser
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.systemd import ListenFDs
from zope.interface import implementer

from connectproxy._service import ListenFailed
from connectproxy._sharedports import (
    AdoptingReactor,
    SharedPort,
    bindListeners,
    socketFamily,
    unsharable,
)


class BoundPort:
    """
    A port a reactor bound: it can be taken off the reactor and closed.
    """

    def __init__(self, fileno: int, port: int) -> None:
        self._fileno = fileno
        self._port = port
        self.reading = True
        self.stopped = False

    def fileno(self) -> int:
        return self._fileno

    def stopReading(self) -> None:
        self.reading = False

    def stopListening(self) -> None:
        self.stopped = True

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", self._port)


class BindingReactor(MemoryReactorClock):
    """
    Records what was bound, and refuses one port.
    """

    def __init__(self, busy: int | None = None) -> None:
        super().__init__()
        self.busy = busy
        self.ports: list[BoundPort] = []
        self.listens: list[tuple[Any, ...]] = []

    def _bound(self, port: int) -> BoundPort:
        bound = BoundPort(30 + len(self.ports), port)
        self.ports.append(bound)
        return bound

    def listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ) -> Any:
        if port == self.busy:
            raise CannotListenError(interface, port, OSError(98, "Address in use"))
        self.listens.append(("tcp", port, backlog, interface))
        return self._bound(port)

    def listenUNIX(
        self,
        address: Any,
        factory: Any,
        backlog: int = 50,
        mode: int = 0o666,
        wantPID: int = 0,
    ) -> Any:
        self.listens.append(("unix", address, backlog, mode, wantPID))
        return self._bound(0)


def test_unsharable() -> None:
    """
    Built-in endpoint types can be shared, those of plugins not.
    """
    assert unsharable("tcp:3128") is None
    assert unsharable("haproxy:tls:/etc/tls:port=443") is None
    assert unsharable("systemd:domain=INET:index=0") is None
    problem = unsharable("onion:80")
    assert problem is not None and problem.startswith("'onion:80' is an endpoint")


def test_bindEveryKind(tmp_path: Path) -> None:
    """
    TCP, TLS (bound plain: TLS is the workers'), PROXY-protocol and UNIX
    listeners are bound as their descriptions say, and taken off the
    reactor so that the supervisor never accepts.
    """
    reactor = BindingReactor()
    shared = bindListeners(
        reactor,
        [
            "tcp:3128:interface=127.0.0.1:backlog=7",
            "haproxy:tcp6:3129:interface=\\:\\:1",
            f"unix:{tmp_path}/proxy.sock:mode=660:lockfile=1",
        ],
    )
    assert reactor.listens == [
        ("tcp", 3128, 7, "127.0.0.1"),
        ("tcp", 3129, 50, "::1"),
        ("unix", f"{tmp_path}/proxy.sock", 50, 0o660, True),
    ]
    assert [s.fileno for s in shared] == [30, 31, 32]
    assert all(not port.reading for port in reactor.ports)
    assert shared[0].address() == "127.0.0.1:3128"
    shared[0].close()
    assert reactor.ports[0].stopped


def test_bindSystemdSocket(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A socket from systemd is passed on as it is: not adopted, not closed.
    """
    monkeypatch.setattr(_SystemdParser, "_sddaemon", ListenFDs([3], ("proxy",)))
    reactor = BindingReactor()
    [shared] = bindListeners(reactor, ["systemd:domain=INET:name=proxy"])
    assert shared == SharedPort("systemd:domain=INET:name=proxy", 3)
    assert reactor.adoptedPorts == []
    assert shared.address() == "systemd socket (fd 3)"
    assert shared.close() is None


def test_bindFailure() -> None:
    """
    A listener that cannot bind stops the start with the usual message;
    those bound before it are closed.
    """
    reactor = BindingReactor(busy=3129)
    with pytest.raises(ListenFailed) as raised:
        bindListeners(reactor, ["tcp:3128", "tcp:3129:interface=127.0.0.1"])
    assert str(raised.value) == "cannot listen on 127.0.0.1:3129: Address in use"
    assert reactor.ports[0].stopped


def test_adoptTCP() -> None:
    """
    A worker's TCP listener adopts the inherited socket with its family,
    and closes the number it was inherited under.
    """
    fileno = socket.socket(socket.AF_INET6, socket.SOCK_STREAM).detach()
    reactor = MemoryReactorClock()
    adopting = AdoptingReactor(reactor, fileno)
    factory = Factory()
    adopting.listenTCP(3128, factory, 50, "::1")
    assert reactor.adoptedPorts == [(fileno, socket.AF_INET6, factory)]
    assert reactor.tcpServers == []
    with pytest.raises(OSError):
        os.fstat(fileno)


@implementer(IOpenSSLServerConnectionCreator)
class Creator:
    """
    Makes no TLS connection.
    """

    def serverConnectionForTLS(self, protocol: object) -> Any:
        raise NotImplementedError()


def test_adoptTLS() -> None:
    """
    An C{ssl:} listener adopts the socket with TLS layered on it.
    """
    fileno = socket.socket(socket.AF_INET, socket.SOCK_STREAM).detach()
    reactor = MemoryReactorClock()
    factory = Factory()
    AdoptingReactor(reactor, fileno).listenSSL(443, factory, Creator())
    [(_, family, tls)] = reactor.adoptedPorts
    assert family == socket.AF_INET
    assert isinstance(tls, TLSMemoryBIOFactory)
    assert tls.wrappedFactory is factory


def test_adoptUNIX(tmp_path: Path) -> None:
    """
    A UNIX listener adopts the socket with the permissions its description
    gives, and leaves the socket file to the supervisor when it stops.
    """
    path = str(tmp_path / "proxy.sock")
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(path)
    listening.listen(5)
    listening.setblocking(False)
    fileno = listening.detach()
    reactor = MemoryReactorClock()
    port = AdoptingReactor(reactor, fileno).listenUNIX(path, Factory(), mode=0o640)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
        assert port.getHost().name.decode() == path
        with pytest.raises(OSError):
            os.fstat(fileno)
    finally:
        port.stopListening()
        reactor.advance(0)
    assert os.path.exists(path)


def test_socketFamily() -> None:
    """
    The family of a socket is read from it; a descriptor that is not a
    socket raises.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        assert socketFamily(sock.fileno()) == socket.AF_UNIX
        sock.fileno()
    read, write = os.pipe()
    try:
        with pytest.raises(OSError):
            socketFamily(read)
    finally:
        os.close(read)
        os.close(write)
