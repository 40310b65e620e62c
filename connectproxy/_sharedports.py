# -*- test-case-name: tests.test_sharedports -*-
"""
The listening sockets the worker processes of C{--workers} share.

The supervisor binds every C{--listen} description itself
(L{bindListeners}), before it drops privileges, and never accepts on the
sockets: it passes them to its workers, which inherit them.  A C{systemd:}
listener's socket is passed on as systemd gave it.  A worker listens with
the same description on the socket it inherited (L{AdoptingReactor}), so
that TLS, the PROXY protocol and the rest are layered on it as in a single
process, and every worker accepts from the same queue: a connection waiting
there is served by whichever worker is free, and none is lost when a worker
dies.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from twisted.internet import tcp, unix
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import AdoptedStreamServerEndpoint
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import directlyProvides, providedBy

from ._address import formatAddress
from ._descriptions import endpointKinds
from ._listeners import _BUILT_IN, _innermost
from ._proxyprotocol import serverEndpoint

__all__ = [
    "AdoptingReactor",
    "SharedPort",
    "bindListeners",
    "unsharable",
    "workersProblem",
]


def unsharable(description: str) -> str | None:
    """
    Say why worker processes cannot share a listener.

    @param description: A C{--listen} description.
    @return: A sentence for the message of C{--workers}, or C{None} when it
        can be shared (C{tcp:}, C{tcp6:}, C{ssl:}, C{tls:}, C{unix:},
        C{systemd:}, under C{haproxy:} or not).
    """
    kinds = endpointKinds(description)
    if set(kinds) <= _BUILT_IN:
        return None
    return (
        f"{description!r} is an endpoint of a plugin, whose socket the "
        "worker processes cannot share (tcp:, tcp6:, ssl:, tls:, unix:, "
        "systemd: and haproxy: listeners can)"
    )


def workersProblem(workers: int, descriptions: Sequence[str]) -> str | None:
    """
    Say why the proxy cannot run C{workers} worker processes.

    @param workers: The number C{--workers} gave.
    @param descriptions: The C{--listen} descriptions.
    @return: A sentence, or C{None} when it can (always with one worker:
        then there is no supervisor).
    """
    if workers <= 1:
        return None
    if os.name != "posix":
        return "worker processes need a POSIX system"
    for description in descriptions:
        problem = unsharable(description)
        if problem is not None:
            return problem
    return None


@dataclass(frozen=True, slots=True)
class SharedPort:
    """
    One listening socket of the supervisor, passed to every worker.

    @ivar description: The C{--listen} description.
    @ivar fileno: The socket's descriptor in the supervisor.
    @ivar port: The port the supervisor bound, which never accepts; C{None}
        for a socket systemd passed, which the supervisor leaves as it is.
    """

    description: str
    fileno: int
    port: IListeningPort | None = None

    def address(self) -> str:
        """
        Where the socket listens, as the log writes it.
        """
        if self.port is not None:
            return formatAddress(self.port.getHost())
        return f"systemd socket (fd {self.fileno})"

    def close(self) -> Deferred[None] | None:
        """
        Close the supervisor's socket (a socket from systemd stays open):
        once every worker has closed its own, clients are refused.
        """
        if self.port is None:
            return None
        return self.port.stopListening()


class SharedListener(Factory):
    """
    The factory of a port the supervisor holds for its workers: it never
    accepts.
    """

    noisy = False


class _BindingReactor:
    """
    The reactor the supervisor binds a listener's socket with: C{listenTCP},
    C{listenSSL} and C{listenUNIX} bind and listen with the real reactor,
    and the port is taken off the reactor at once, so that it never
    accepts.  TLS is the workers' business: C{listenSSL} binds a plain
    socket.

    @ivar bound: The port bound, once bound.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.bound: IListeningPort | None = None
        directlyProvides(self, providedBy(reactor))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reactor, name)

    def _keep(self, port: Any) -> Any:
        port.stopReading()
        self.bound = port
        return port

    def listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ) -> Any:
        return self._keep(
            self.reactor.listenTCP(port, SharedListener(), backlog, interface)
        )

    def listenSSL(
        self,
        port: int,
        factory: Any,
        contextFactory: Any,
        backlog: int = 50,
        interface: str = "",
    ) -> Any:
        return self.listenTCP(port, factory, backlog, interface)

    def listenUNIX(
        self,
        address: str,
        factory: Any,
        backlog: int = 50,
        mode: int = 0o666,
        wantPID: int = 0,
    ) -> Any:
        return self._keep(
            self.reactor.listenUNIX(address, SharedListener(), backlog, mode, wantPID)
        )


def bindListeners(reactor: Any, descriptions: Sequence[str]) -> list[SharedPort]:
    """
    Bind the socket of every listener, for worker processes to share.

    @param reactor: The reactor to bind with.
    @param descriptions: The C{--listen} descriptions, in order.
    @return: One L{SharedPort} per description, in order.
    @raise ListenFailed: When a listener cannot listen (the sockets already
        bound are closed first).
    """
    shared: list[SharedPort] = []
    try:
        for description in descriptions:
            shared.append(_bindOne(reactor, description))
    except BaseException:
        for done in shared:
            done.close()
        raise
    return shared


def _bindOne(reactor: Any, description: str) -> SharedPort:
    binding = _BindingReactor(reactor)
    inner = _innermost(serverEndpoint(binding, description))
    if isinstance(inner, AdoptedStreamServerEndpoint):
        # Listening would adopt it and close the number it came with.
        return SharedPort(description, inner.fileno)
    failures: list[Failure] = []
    endpoint = cast(IStreamServerEndpoint, inner)
    endpoint.listen(SharedListener()).addErrback(failures.append)
    if failures:
        # Imported here: the service module listens through this one.
        from ._service import ListenFailed, _listenFailure

        where, reason = _listenFailure(cast(BaseException, failures[0].value))
        raise ListenFailed(description, where, reason)
    port = binding.bound
    assert port is not None
    return SharedPort(description, port.fileno(), port)  # type: ignore[attr-defined]


def socketFamily(fileno: int) -> int:
    """
    The address family of a socket.

    @param fileno: Its descriptor (left open).
    @raise OSError: When it is not an open socket.
    """
    duplicate = os.dup(fileno)
    try:
        sock = socket.socket(fileno=duplicate)
    except OSError:
        os.close(duplicate)
        raise
    with sock:
        return int(sock.family)


class _SharedUNIXPort(unix.Port):
    """
    A UNIX socket a worker inherited: it takes the permissions its
    description gives, as the supervisor's did, and leaves the socket file
    alone when it stops, since the supervisor owns it.
    """

    def connectionLost(self, reason: Failure) -> None:
        tcp.Port.connectionLost(self, reason)


class AdoptingReactor:
    """
    The reactor a worker listens with on a socket it inherited: the
    C{listenTCP}, C{listenSSL} and C{listenUNIX} of the listener's
    description adopt the socket instead of binding one (C{listenSSL}
    layers TLS on it as the reactor's own does); everything else goes to
    the real reactor.

    @ivar fileno: The inherited descriptor; closed once adopted (the port
        holds a copy).
    """

    def __init__(self, reactor: Any, fileno: int) -> None:
        """
        @param reactor: The real reactor; this one provides the same
            interfaces.
        @param fileno: The inherited listening socket.
        """
        self.reactor = reactor
        self.fileno = fileno
        directlyProvides(self, providedBy(reactor))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reactor, name)

    def listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ) -> Any:
        adopted = self.reactor.adoptStreamPort(
            self.fileno, socketFamily(self.fileno), factory
        )
        os.close(self.fileno)
        return adopted

    def listenSSL(
        self,
        port: int,
        factory: Any,
        contextFactory: Any,
        backlog: int = 50,
        interface: str = "",
    ) -> Any:
        return self.listenTCP(
            port, TLSMemoryBIOFactory(contextFactory, False, factory), backlog
        )

    def listenUNIX(
        self,
        address: str,
        factory: Any,
        backlog: int = 50,
        mode: int = 0o666,
        wantPID: int = 0,
    ) -> Any:
        port = _SharedUNIXPort._fromListeningDescriptor(
            self.reactor, self.fileno, factory
        )
        port.mode = mode
        port.startListening()
        os.close(self.fileno)
        return port
