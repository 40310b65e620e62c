# -*- test-case-name: tests.test_bench,tests.integration.test_bench -*-
"""
A naive Twisted CONNECT relay: the reference point the benchmark compares
connectproxy with, to show what connectproxy's own work costs or saves.

It is what a first attempt looks like: read the request head, connect with
C{reactor.connectTCP}, answer C{200}, then C{transport.write} every chunk to
the other side. No flow control (a slow reader makes it buffer without
limit), no limits, no access rules, no logging per tunnel, no timeouts: do
not use it for anything but the benchmark.

Run as C{python -m bench.naive --port PORT}; it listens on 127.0.0.1 and
prints C{listening PORT} when ready.
"""

from __future__ import annotations

import argparse
import sys

from twisted.internet import protocol
from twisted.internet.interfaces import IListeningPort, IReactorTCP, ITransport
from twisted.python.failure import Failure

_MAX_HEAD = 65536


class _Upstream(protocol.Protocol):
    """
    The relay's connection to the target: everything it reads goes to the
    client.

    @ivar client: The client side.
    """

    def __init__(self, client: _Client) -> None:
        self.client = client
        self.out: ITransport | None = None

    def connectionMade(self) -> None:
        """
        Answer the client and send what it sent after its request head.
        """
        self.out = self.transport
        self.client.upstreamReady(self)

    def dataReceived(self, data: bytes) -> None:
        """
        Pass bytes to the client.
        """
        self.client.out.write(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        """
        Close the client side too.
        """
        self.client.out.loseConnection()


class _Client(protocol.Protocol):
    """
    The relay's connection from a client.

    @ivar out: Its transport.
    """

    out: ITransport

    def __init__(self, reactor: IReactorTCP) -> None:
        self._reactor = reactor
        self._head = b""
        self._upstream: ITransport | None = None
        self._connecting = False

    def connectionMade(self) -> None:
        """
        Keep the transport, typed.
        """
        assert self.transport is not None
        self.out = self.transport

    def dataReceived(self, data: bytes) -> None:
        """
        Collect the request head, then relay.
        """
        if self._upstream is not None:
            self._upstream.write(data)
            return
        self._head += data
        if b"\r\n\r\n" not in self._head:
            if len(self._head) > _MAX_HEAD:
                self.out.loseConnection()
            return
        if self._connecting:
            return  # The rest waits in _head.
        requestLine = self._head.split(b"\r\n", 1)[0].split()
        if len(requestLine) != 3 or requestLine[0] != b"CONNECT":
            self.out.write(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            self.out.loseConnection()
            return
        host, _, port = requestLine[1].decode("ascii", "replace").rpartition(":")
        factory = protocol.ClientFactory()
        factory.protocol = lambda: _Upstream(self)
        factory.clientConnectionFailed = self._failed  # type: ignore[method-assign]
        self._connecting = True
        self._reactor.connectTCP(host.strip("[]"), int(port), factory)

    def _failed(self, connector: object, reason: Failure) -> None:
        """
        Answer 502 when the target cannot be reached.
        """
        self.out.write(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
        self.out.loseConnection()

    def upstreamReady(self, upstream: _Upstream) -> None:
        """
        Answer 200 and start relaying.
        """
        assert upstream.out is not None
        self._upstream = upstream.out
        self.out.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        rest = self._head.split(b"\r\n\r\n", 1)[1]
        self._head = b""
        if rest:
            self._upstream.write(rest)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        """
        Close the upstream side too.
        """
        if self._upstream is not None:
            self._upstream.loseConnection()


def main(argv: list[str] | None = None) -> int:
    """
    Listen on 127.0.0.1 and relay until stopped by a signal.

    @return: The process exit status.
    """
    parser = argparse.ArgumentParser(description="naive Twisted CONNECT relay")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    from twisted.internet import reactor

    tcp: IReactorTCP = reactor
    factory = protocol.ServerFactory()
    factory.protocol = lambda: _Client(tcp)
    port: IListeningPort = tcp.listenTCP(
        args.port, factory, backlog=4096, interface="127.0.0.1"
    )
    sys.stdout.write(f"listening {port.getHost().port}\n")  # type: ignore[attr-defined]
    sys.stdout.flush()
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
