# -*- test-case-name: tests.integration.test_relays -*-
"""
The relay contract, on real loopback TCP connections in this process
(pytest-twisted's reactor): what every relay must do, whatever way it moves
the bytes.  Each test runs once per relay factory in L{RELAYS}; a new relay
joins the list and must pass all of them.

Each side of a tunnel is a connected pair of loopback sockets: the test's
peer (the client, or the origin) on one end, and on the other the protocol
the relay takes over, as the proxy hands it over after its C{200}.  The
deadlines are kept by a L{DeadlineSweeper}, as the proxy's factory keeps
them.  Every wait is bounded.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
import termios
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from zope.interface import implementer

from connectproxy import ProxySettings
from connectproxy._deadlines import DeadlineSweeper
from connectproxy._pipes import PIPES, Pipe, PipePool
from connectproxy._relay import _Relay, _RelayEnd, _RelayFactory
from connectproxy._splice import SpliceRelay, spliceRelay
from connectproxy._tunnel import _UpstreamProtocol, transportRelay

pytestmark = pytest.mark.integration


def _noPipe() -> Pipe:
    raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))


def spliceWithoutPipes(
    client: _RelayEnd,
    upstream: _RelayEnd,
    clock: IReactorTime,
    settings: ProxySettings,
    onClosed: Callable[[_Relay], object],
) -> _Relay:
    """
    The splice relay where no pipe can be made (the process is out of
    descriptors): it copies through memory instead, and must keep every
    promise all the same.
    """
    pool = PipePool(make=_noPipe)
    return spliceRelay(client, upstream, clock, settings, onClosed, pool)


#: Every relay implementation; each must pass every test here.
RELAYS = [
    pytest.param(transportRelay, id="transport"),
    pytest.param(spliceRelay, id="splice"),
    pytest.param(spliceWithoutPipes, id="splice-without-pipes"),
]

#: The state of a TCP connection that was reset (Linux C{TCP_INFO}).
TCP_CLOSE = 7

#: Seconds any one wait may take before the test fails.
DEADLINE = 20.0

#: Deadlines long enough not to interfere, short enough to end a hung test.
SETTINGS = ProxySettings(idleTimeout=60, halfCloseTimeout=60, abortTimeout=5)

#: The send and receive buffer of every socket (the kernel doubles it), so
#: that what the kernel can hold, and so what a slow reader may leave in
#: flight, is small and known.
SOCKET_BUFFER = 65536


def reactor() -> Any:
    from twisted.internet import reactor as globalReactor

    return globalReactor


def withDeadline(d: Deferred[Any]) -> Deferred[Any]:
    """
    Fail C{d} instead of hanging the run if the event never comes.
    """
    return d.addTimeout(DEADLINE, reactor())


@pytest_twisted.inlineCallbacks
def waitUntil(
    predicate: Callable[[], object], timeout: float = DEADLINE
) -> Generator[Deferred[Any], Any, None]:
    """
    Wait for state that no Deferred announces, checking every few
    milliseconds, and fail after C{timeout} seconds.
    """
    end = reactor().seconds() + timeout
    while not predicate():
        if reactor().seconds() > end:
            raise AssertionError(f"gave up waiting after {timeout}s")
        yield deferLater(reactor(), 0.005, lambda: None)


def pattern(size: int, seed: int) -> bytes:
    """
    C{size} bytes that differ from one position to the next, so that a
    lost, repeated or reordered chunk shows.
    """
    block = bytes((seed + i * 7) % 251 for i in range(65536 + 251))
    out = bytearray()
    while len(out) < size:
        out += block[len(out) % 251 : len(out) % 251 + 65536]
    return bytes(out[:size])


def smallBuffers(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)


@implementer(IHalfCloseableProtocol)
class Peer(Protocol):
    """
    The test's end of one side: the client, or the origin.

    A peer that gets a FIN closes its connection, as most programs do;
    one told to keep it open (L{keepOpen}) goes on writing, and closes once
    it has sent its own FIN too.

    @ivar received: Everything that arrived.
    @ivar eof: Fires when a FIN arrived.
    @ivar gone: Fires when the connection is gone.
    @ivar reason: Why it is gone, once it is.
    """

    keepOpen = False

    def __init__(self) -> None:
        self.received = bytearray()
        self.eof: Deferred[None] = Deferred()
        self.gone: Deferred[None] = Deferred()
        self.reason: Failure | None = None
        self._finished = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def readConnectionLost(self) -> None:
        self.eof.callback(None)
        if self._finished or not self.keepOpen:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.reason = reason
        self.gone.callback(None)

    def send(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def finish(self) -> None:
        """
        Send a FIN (after what is buffered).
        """
        self._finished = True
        if self.eof.called:
            self.transport.loseConnection()  # type: ignore[union-attr]
        else:
            self.transport.loseWriteConnection()  # type: ignore[union-attr]

    def unacknowledged(self) -> int:
        """
        Bytes this peer's kernel sent that the other end has not
        acknowledged (C{SIOCOUTQ}).
        """
        sock = self.transport.getHandle()  # type: ignore[union-attr]
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4)
        count: int = struct.unpack("i", raw)[0]
        return count

    def tcpState(self) -> int:
        """
        The state of this peer's TCP connection (C{TCP_INFO}): L{TCP_CLOSE}
        once a reset arrived, whether the peer reads or not.
        """
        sock = self.transport.getHandle()  # type: ignore[union-attr]
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
        return int(info[0])

    def reset(self) -> None:
        """
        Close with a reset (C{SO_LINGER} 0), not a FIN.
        """
        sock = self.transport.getHandle()  # type: ignore[union-attr]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abortConnection()  # type: ignore[union-attr]


@implementer(IPushProducer)
class Sender:
    """
    Streams C{data} to a transport as fast as it takes it: a streaming
    producer, paused whenever the transport's buffer is full.

    @ivar sent: Bytes handed to the transport so far.
    @ivar paused: Whether the transport has paused the sender now.
    @ivar done: Fires once everything was handed over.
    """

    def __init__(self, transport: Any, data: bytes) -> None:
        self._transport = transport
        self._data = data
        self.sent = 0
        self.paused = False
        self.done: Deferred[None] = Deferred()
        self._call: Any = None
        transport.registerProducer(self, True)
        self._schedule()

    def _schedule(self) -> None:
        self._call = reactor().callLater(0, self._step)

    def _step(self) -> None:
        self._call = None
        while not self.paused and self.sent < len(self._data):
            chunk = self._data[self.sent : self.sent + 65536]
            self.sent += len(chunk)
            self._transport.write(chunk)
        if self.sent == len(self._data) and not self.done.called:
            self._transport.unregisterProducer()
            self.done.callback(None)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        if self._call is None and not self.done.called:
            self._schedule()

    def stopProducing(self) -> None:
        self.paused = True
        if self._call is not None:
            self._call.cancel()
            self._call = None


class _End(_UpstreamProtocol):
    """
    The relay's end of one side, announced when connected.

    @ivar sawFin: Whether the peer's FIN arrived before a relay took the
        end over.
    @ivar gone: Whether its connection is gone.
    """

    sawFin = False
    gone = False

    def __init__(self, ends: DeferredQueue[_End]) -> None:
        self._ends = ends

    def connectionMade(self) -> None:
        self._ends.put(self)

    def readConnectionLost(self) -> None:
        if self._readClosed is None:
            self.sawFin = True
        super().readConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.gone = True
        super().connectionLost(reason)


@dataclass
class Tunnel:
    """
    A started relay between the test's client and origin.

    @ivar closed: Fires with the relay when it reports both sides gone.
    """

    client: Peer
    origin: Peer
    relay: _Relay
    closed: Deferred[_Relay] = field(repr=False)
    ends: tuple[_End, _End] = field(repr=False)


class Relays:
    """
    Opens tunnels through one relay implementation, and cleans up after
    them.
    """

    def __init__(self, relayFactory: _RelayFactory) -> None:
        self.relayFactory = relayFactory
        self.sweeper = DeadlineSweeper(reactor())
        self._ends: DeferredQueue[_End] = DeferredQueue()
        factory = Factory.forProtocol(lambda: _End(self._ends))
        self.port = reactor().listenTCP(0, factory, interface="127.0.0.1")
        # Sockets accepted from now on inherit these.
        smallBuffers(self.port.socket)
        self._transports: list[Any] = []
        self._relays: list[_Relay] = []

    @pytest_twisted.inlineCallbacks
    def pair(self) -> Generator[Deferred[Any], Any, tuple[Peer, _End]]:
        """
        Connect a peer to a new end of the relay's.
        """
        peer = Peer()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            smallBuffers(sock)
            sock.connect(("127.0.0.1", self.port.getHost().port))
            reactor().adoptStreamConnection(
                sock.fileno(), socket.AF_INET, Factory.forProtocol(lambda: peer)
            )
        end = yield withDeadline(self._ends.get())
        self._transports += [peer.transport, end.transport]
        return peer, end

    @pytest_twisted.inlineCallbacks
    def open(
        self,
        settings: ProxySettings = SETTINGS,
        early: bytes = b"",
        clientFinished: bool = False,
        keepOpen: bool = False,
        written: bytes = b"",
    ) -> Generator[Deferred[Any], Any, Tunnel]:
        """
        Open a tunnel and start its relay, as the proxy does after its
        C{200}: the client's end paused (unless the client already sent its
        FIN, which is then sent and seen first), the deadlines watched.

        @param keepOpen: Whether the peers keep writing after a FIN.
        @param written: Written to the client before the relay starts, as
            the proxy writes its C{200}.
        """
        client, clientEnd = yield self.pair()
        origin, upstreamEnd = yield self.pair()
        client.keepOpen = origin.keepOpen = keepOpen
        if clientFinished:
            client.finish()
            yield waitUntil(lambda: clientEnd.sawFin)
        else:
            clientEnd.transport.pauseProducing()
        if written:
            clientEnd.transport.write(written)
        closed: Deferred[_Relay] = Deferred()

        def onClosed(relay: _Relay) -> None:
            self.sweeper.forget(relay)
            closed.callback(relay)

        relay = self.relayFactory(clientEnd, upstreamEnd, reactor(), settings, onClosed)
        self._relays.append(relay)
        self.sweeper.watch(relay, settings)
        relay.start(early, clientFinished)
        return Tunnel(client, origin, relay, closed, (clientEnd, upstreamEnd))

    def cleanUp(self) -> None:
        for relay in self._relays:
            self.sweeper.forget(relay)
        for transport in self._transports:
            if transport.connected:
                transport.abortConnection()


@pytest.fixture(params=RELAYS)
def relays(request: pytest.FixtureRequest) -> Generator[Relays, None, None]:
    relays = Relays(request.param)
    yield relays
    relays.cleanUp()
    pytest_twisted.blockon(relays.port.stopListening())


@pytest_twisted.inlineCallbacks
def closedCleanly(tunnel: Tunnel) -> Generator[Deferred[Any], Any, None]:
    """
    Wait until the relay reported both sides gone, each peer having seen a
    clean close (a FIN, never a reset), and no deadline is left.
    """
    for peer in (tunnel.client, tunnel.origin):
        yield withDeadline(peer.gone)
        assert peer.reason is not None and peer.reason.check(ConnectionDone)
    relay = yield withDeadline(tunnel.closed)
    assert relay is tunnel.relay
    assert relay.stats.closedAt is not None


@pytest_twisted.inlineCallbacks
def test_earlyDataFirst(relays: Relays) -> Generator[Deferred[Any], Any, None]:
    """
    The early data reaches the origin first and whole, then what the client
    sends; the origin's answer reaches the client; a clean close on one side
    closes the other cleanly, and the counts include the early data.
    """
    tunnel = yield relays.open(early=b"early ")
    tunnel.client.send(b"and late")
    yield waitUntil(lambda: len(tunnel.origin.received) == 14)
    assert tunnel.origin.received == b"early and late"
    tunnel.origin.send(b"answer")
    yield waitUntil(lambda: len(tunnel.client.received) == 6)
    assert tunnel.client.received == b"answer"
    tunnel.client.transport.loseConnection()
    yield closedCleanly(tunnel)
    stats = tunnel.relay.stats
    assert (stats.bytesUp, stats.bytesDown) == (14, 6)
    assert stats.closeReason == "client closed"
    assert len(relays.sweeper) == 0 and relays.sweeper.interval is None


@pytest_twisted.inlineCallbacks
def test_writtenBeforeFirst(relays: Relays) -> Generator[Deferred[Any], Any, None]:
    """
    What the client's transport still holds when the relay starts (a
    client slow to read the C{200} and what came with it) reaches the
    client before anything relayed, and is not counted as relayed.
    """
    written = pattern(4 << 20, 8)
    tunnel = yield relays.open(written=written)
    tunnel.origin.send(b"after")
    tunnel.client.send(b"up")
    yield waitUntil(lambda: tunnel.origin.received == b"up")
    yield waitUntil(lambda: len(tunnel.client.received) == len(written) + 5)
    assert tunnel.client.received == written + b"after"
    stats = tunnel.relay.stats
    assert (stats.bytesUp, stats.bytesDown) == (2, 5)
    tunnel.client.transport.loseConnection()
    yield closedCleanly(tunnel)


@pytest.mark.parametrize("first", ["client", "origin"])
@pytest_twisted.inlineCallbacks
def test_halfClose(relays: Relays, first: str) -> Generator[Deferred[Any], Any, None]:
    """
    A FIN from either side reaches the other as a FIN after the bytes before
    it, while the other direction keeps flowing; the second FIN ends the
    tunnel cleanly, with the first side as the reason.
    """
    tunnel = yield relays.open(keepOpen=True)
    sender, answerer = (
        (tunnel.client, tunnel.origin)
        if first == "client"
        else (tunnel.origin, tunnel.client)
    )
    sender.send(b"question")
    sender.finish()
    yield withDeadline(answerer.eof)
    assert answerer.received == b"question"
    assert not sender.gone.called
    answerer.send(b"the answer")
    yield waitUntil(lambda: len(sender.received) == 10)
    assert sender.received == b"the answer"
    answerer.finish()
    yield withDeadline(sender.eof)
    yield closedCleanly(tunnel)
    expected = "client closed" if first == "client" else "upstream closed"
    assert tunnel.relay.stats.closeReason == expected


@pytest_twisted.inlineCallbacks
def test_finWithEarlyData(relays: Relays) -> Generator[Deferred[Any], Any, None]:
    """
    A client that sent its FIN before the relay existed: the origin gets the
    early data and then the FIN, and its answer still reaches the client.
    """
    tunnel = yield relays.open(
        early=b"request-body", clientFinished=True, keepOpen=True
    )
    yield withDeadline(tunnel.origin.eof)
    assert tunnel.origin.received == b"request-body"
    tunnel.origin.send(b"reply")
    tunnel.origin.finish()
    yield withDeadline(tunnel.client.eof)
    assert tunnel.client.received == b"reply"
    yield closedCleanly(tunnel)
    stats = tunnel.relay.stats
    assert (stats.bytesUp, stats.bytesDown, stats.closeReason) == (
        12,
        5,
        "client closed",
    )


@pytest_twisted.inlineCallbacks
def test_bothWaysCounted(relays: Relays) -> Generator[Deferred[Any], Any, None]:
    """
    Several MiB each way at the same time arrive intact and in order, and
    the counts are exact.
    """
    tunnel = yield relays.open(keepOpen=True)
    up, down = pattern(3 << 20, 1), pattern(5 << 20, 2)
    senders = [
        Sender(tunnel.client.transport, up),
        Sender(tunnel.origin.transport, down),
    ]
    yield withDeadline(senders[0].done)
    tunnel.client.finish()
    yield withDeadline(senders[1].done)
    tunnel.origin.finish()
    yield withDeadline(tunnel.origin.eof)
    yield withDeadline(tunnel.client.eof)
    assert tunnel.origin.received == up
    assert tunnel.client.received == down
    yield closedCleanly(tunnel)
    stats = tunnel.relay.stats
    assert (stats.bytesUp, stats.bytesDown) == (len(up), len(down))


@pytest_twisted.inlineCallbacks
def stalled(sender: Sender) -> Generator[Deferred[Any], Any, None]:
    """
    Wait until C{sender} is paused and hands nothing more over: whoever
    reads its bytes stopped, all the way back to it.
    """
    progress = [-1]

    def still() -> bool:
        # Paused, and nothing more handed over since the last look.
        result = sender.paused and sender.sent == progress[0]
        progress[0] = sender.sent
        return result

    yield waitUntil(lambda: sender.sent > 0)
    end = reactor().seconds() + DEADLINE
    while not still():
        assert reactor().seconds() < end, "the sender never stalled"
        yield deferLater(reactor(), 0.2, lambda: None)


@pytest_twisted.inlineCallbacks
def test_slowReaderBoundsMemory(relays: Relays) -> Generator[Deferred[Any], Any, None]:
    """
    A client that reads nothing stops the origin: the relay stops reading
    from it instead of buffering, so what is in flight stays within the
    sockets' small buffers (the origin's sender is paused, far short of
    what it has to send); once the client reads, everything arrives.
    """
    total = 32 << 20
    bound = 4 << 20
    tunnel = yield relays.open()
    tunnel.client.transport.pauseProducing()
    data = pattern(total, 3)
    sender = Sender(tunnel.origin.transport, data)
    yield stalled(sender)
    assert sender.sent <= bound, sender.sent
    tunnel.client.transport.resumeProducing()
    yield withDeadline(sender.done)
    yield waitUntil(lambda: len(tunnel.client.received) == total)
    assert tunnel.client.received == data
    assert tunnel.relay.stats.bytesDown == total
    tunnel.origin.transport.loseConnection()
    yield closedCleanly(tunnel)


@pytest_twisted.inlineCallbacks
def test_idleDeadline(relays: Relays) -> Generator[Deferred[Any], Any, None]:
    """
    A tunnel where nothing moves for the idle timeout is closed cleanly on
    both sides with that reason: not before the timeout after the last
    byte, and not much after it.
    """
    idle = 0.5
    settings = ProxySettings(idleTimeout=idle, halfCloseTimeout=60, abortTimeout=5)
    tunnel = yield relays.open(settings=settings)
    tunnel.client.send(b"x")
    yield waitUntil(lambda: tunnel.origin.received == b"x")
    lastByte = reactor().seconds()
    yield closedCleanly(tunnel)
    elapsed = reactor().seconds() - lastByte
    assert tunnel.relay.stats.closeReason == "idle timeout"
    assert idle <= elapsed < idle * 9 / 8 + 2.0, elapsed
    assert relays.sweeper.interval is None


@pytest.mark.parametrize("side", ["client", "origin"])
@pytest_twisted.inlineCallbacks
def test_resetPassedOn(
    relays: Relays, side: str
) -> Generator[Deferred[Any], Any, None]:
    """
    A side that sends 128 KiB and resets while the other side is not
    reading: once that side reads, it gets every byte, then a reset (not a
    clean end of input that would make the transfer look complete); the
    close reason says which side was lost.
    """
    tunnel = yield relays.open()
    resetter, survivor = (
        (tunnel.client, tunnel.origin)
        if side == "client"
        else (tunnel.origin, tunnel.client)
    )
    stats = tunnel.relay.stats

    def relayed() -> int:
        return int(stats.bytesUp if side == "client" else stats.bytesDown)

    survivor.transport.pauseProducing()
    data = pattern(128 << 10, 4)
    Sender(resetter.transport, data)
    # The relay has every byte, and the resetter's kernel has nothing left
    # to send: the reset destroys nothing on its own connection, while
    # what the survivor has not read is still on its way through the
    # relay's side.
    yield waitUntil(lambda: relayed() == len(data))
    yield waitUntil(lambda: resetter.unacknowledged() == 0)
    resetter.reset()
    yield waitUntil(lambda: stats.closingAt is not None)
    survivor.transport.resumeProducing()
    yield withDeadline(survivor.gone)
    assert survivor.reason is not None
    assert not survivor.reason.check(ConnectionDone), survivor.reason
    assert survivor.received == data
    yield withDeadline(tunnel.closed)
    lost = "client" if side == "client" else "upstream"
    assert stats.closeReason is not None
    assert stats.closeReason.startswith(f"{lost} connection lost"), stats.closeReason


@pytest.mark.parametrize("side", ["client", "origin"])
@pytest_twisted.inlineCallbacks
def test_cleanCloseClosesOther(
    relays: Relays, side: str
) -> Generator[Deferred[Any], Any, None]:
    """
    Either side closing cleanly closes the other cleanly (a FIN, never a
    reset), with that side as the reason.
    """
    tunnel = yield relays.open()
    closer = tunnel.client if side == "client" else tunnel.origin
    closer.transport.loseConnection()
    yield closedCleanly(tunnel)
    expected = "client closed" if side == "client" else "upstream closed"
    assert tunnel.relay.stats.closeReason == expected


@pytest_twisted.inlineCallbacks
def test_statsRecord(relays: Relays) -> Generator[Deferred[Any], Any, None]:
    """
    The stats record has the upstream's address as connected, the counts,
    and its times in order: opened, the first FIN passed on, closing,
    closed.
    """
    before = reactor().seconds()
    tunnel = yield relays.open(early=b"hello", keepOpen=True)
    stats = tunnel.relay.stats
    assert stats.upstreamAddress == tunnel.ends[1].transport.getPeer()
    assert before <= stats.openedAt <= reactor().seconds()
    assert stats.halfClosedAt is stats.closingAt is stats.closedAt is None
    assert stats.closeReason is None
    tunnel.origin.send(b"12345")
    tunnel.client.finish()
    yield withDeadline(tunnel.origin.eof)
    assert stats.halfClosedAt is not None and stats.closingAt is None
    yield waitUntil(lambda: len(tunnel.client.received) == 5)
    tunnel.origin.finish()
    yield closedCleanly(tunnel)
    assert stats.closingAt is not None and stats.closedAt is not None
    assert stats.openedAt <= stats.halfClosedAt <= stats.closingAt <= stats.closedAt
    assert (stats.bytesUp, stats.bytesDown) == (5, 5)
    assert stats.closeReason == "client closed"


@pytest_twisted.inlineCallbacks
def test_closeThenAbort(relays: Relays) -> Generator[Deferred[Any], Any, None]:
    """
    A close that cannot finish (the client reads nothing while the origin's
    bytes wait for it) is aborted after the abort timeout, and the client
    sees a reset; closing again changes neither the reason nor the time
    the close began.
    """
    abortTimeout = 0.5
    settings = ProxySettings(
        idleTimeout=60, halfCloseTimeout=60, abortTimeout=abortTimeout
    )
    tunnel = yield relays.open(settings=settings)
    tunnel.client.transport.pauseProducing()
    yield stalled(Sender(tunnel.origin.transport, pattern(16 << 20, 5)))
    stats = tunnel.relay.stats
    tunnel.relay.close("first")
    closingAt = stats.closingAt
    assert closingAt is not None
    tunnel.relay.close("second")
    assert (stats.closeReason, stats.closingAt) == ("first", closingAt)
    yield withDeadline(tunnel.closed)
    assert stats.closedAt is not None
    assert stats.closedAt - closingAt >= abortTimeout
    tunnel.client.transport.resumeProducing()
    yield withDeadline(tunnel.client.gone)
    assert tunnel.client.reason is not None
    assert not tunnel.client.reason.check(ConnectionDone), tunnel.client.reason
    assert stats.closeReason == "first"


@pytest_twisted.inlineCallbacks
def test_halfCloseDeadline(relays: Relays) -> Generator[Deferred[Any], Any, None]:
    """
    Once one direction has finished, the (shorter) half-close deadline
    applies, counted from the FIN: the tunnel closes with that reason.
    """
    halfClose = 0.5
    settings = ProxySettings(idleTimeout=60, halfCloseTimeout=halfClose)
    tunnel = yield relays.open(settings=settings, keepOpen=True)
    tunnel.client.send(b"question")
    tunnel.client.finish()
    yield withDeadline(tunnel.origin.eof)
    yield withDeadline(tunnel.closed)
    stats = tunnel.relay.stats
    assert stats.closeReason == "half-close timeout"
    assert stats.halfClosedAt is not None and stats.closingAt is not None
    assert stats.closingAt - stats.halfClosedAt >= halfClose
    yield withDeadline(tunnel.client.gone)
    assert tunnel.client.reason is not None
    assert tunnel.client.reason.check(ConnectionDone)


@pytest_twisted.inlineCallbacks
def test_trafficDefersIdleDeadline(
    relays: Relays,
) -> Generator[Deferred[Any], Any, None]:
    """
    Traffic either way pushes the idle deadline back: a tunnel busy for
    longer than the idle timeout stays open, and closes once idle.
    """
    idle = 1.0
    settings = ProxySettings(idleTimeout=idle, halfCloseTimeout=60)
    tunnel = yield relays.open(settings=settings)
    for i in range(16):
        (tunnel.client if i % 2 else tunnel.origin).send(b"x")
        yield deferLater(reactor(), idle / 10, lambda: None)
    stats = tunnel.relay.stats
    assert stats.closingAt is None
    yield closedCleanly(tunnel)
    assert stats.closeReason == "idle timeout"
    assert (stats.bytesUp, stats.bytesDown) == (8, 8)


@pytest_twisted.inlineCallbacks
def test_resetAfterFinPassedOn(relays: Relays) -> Generator[Deferred[Any], Any, None]:
    """
    A client that sent its FIN (passed on) and then resets: once the
    origin's answer finds it gone, the origin gets a reset (which it sees
    even though it no longer reads: its connection is closed, not waiting
    for its FIN), and the reset is the close reason, not the FIN.
    """
    tunnel = yield relays.open(keepOpen=True)
    tunnel.client.send(b"question")
    tunnel.client.finish()
    yield withDeadline(tunnel.origin.eof)
    tunnel.client.reset()
    yield withDeadline(tunnel.client.gone)
    tunnel.origin.send(b"answer")
    yield withDeadline(tunnel.closed)
    yield waitUntil(lambda: tunnel.origin.tcpState() == TCP_CLOSE)
    reason = tunnel.relay.stats.closeReason
    assert reason is not None and reason.startswith("client connection lost"), reason


@pytest_twisted.inlineCallbacks
def test_resetWhileClosing(relays: Relays) -> Generator[Deferred[Any], Any, None]:
    """
    A side lost with an error while a graceful close waits for both peers
    to read turns the survivor's close into a reset: once it reads, it gets
    every byte relayed to it, then a reset.  The reason stays the close's.
    """
    settings = ProxySettings(idleTimeout=60, halfCloseTimeout=60, abortTimeout=20)
    tunnel = yield relays.open(settings=settings)
    tunnel.client.transport.pauseProducing()
    tunnel.origin.transport.pauseProducing()
    up = pattern(16 << 20, 6)
    senders = [
        Sender(tunnel.client.transport, up),
        Sender(tunnel.origin.transport, pattern(16 << 20, 7)),
    ]
    for sender in senders:
        yield stalled(sender)
    stats = tunnel.relay.stats
    tunnel.relay.close("idle timeout")
    tunnel.client.reset()
    yield withDeadline(tunnel.client.gone)
    yield waitUntil(lambda: tunnel.ends[0].gone)
    tunnel.origin.transport.resumeProducing()
    yield withDeadline(tunnel.origin.gone)
    assert tunnel.origin.reason is not None
    assert not tunnel.origin.reason.check(ConnectionDone), tunnel.origin.reason
    assert tunnel.origin.received == up[: stats.bytesUp]
    yield withDeadline(tunnel.closed)
    assert stats.closeReason == "idle timeout"
    assert stats.halfClosedAt is None


def openDescriptors() -> int:
    """
    How many descriptors this process holds.
    """
    return len(os.listdir("/proc/self/fd"))


@pytest_twisted.inlineCallbacks
def test_noDescriptorLeak(relays: Relays) -> Generator[Deferred[Any], Any, None]:
    """
    Tunnels that end every way (FINs after bulk both ways with a slow
    reader, a reset, an abort) leave nothing open: once they are gone, and
    the pipes kept for the next tunnels are closed, the process holds the
    descriptors it held before, and no pipe is in use.
    """
    PIPES.close()
    before = openDescriptors()
    tunnels = []
    for index in range(8):
        tunnel = yield relays.open(keepOpen=True)
        tunnels.append(tunnel)
        senders = [
            Sender(tunnel.client.transport, pattern(1 << 20, index)),
            Sender(tunnel.origin.transport, pattern(1 << 20, index + 1)),
        ]
        if index % 2:
            tunnel.client.transport.pauseProducing()
            yield stalled(senders[1])
            tunnel.client.transport.resumeProducing()
        for sender in senders:
            yield withDeadline(sender.done)
        tunnel.client.finish()
        tunnel.origin.finish()
    reset = yield relays.open()
    tunnels.append(reset)
    reset.origin.send(b"before the reset")
    yield waitUntil(lambda: reset.client.received == b"before the reset")
    reset.origin.reset()
    aborted = yield relays.open()
    tunnels.append(aborted)
    aborted.origin.send(b"before the abort")
    yield waitUntil(lambda: aborted.client.received == b"before the abort")
    aborted.relay.abort()
    for tunnel in tunnels:
        yield withDeadline(tunnel.closed)
        for peer in (tunnel.client, tunnel.origin):
            yield withDeadline(peer.gone)
    assert PIPES.inUse == 0
    PIPES.close()
    assert PIPES.open == 0
    yield waitUntil(lambda: openDescriptors() <= before)
    assert openDescriptors() == before


# The splice relay's own.


@pytest.fixture
def splicing() -> Generator[Relays, None, None]:
    relays = Relays(spliceRelay)
    yield relays
    relays.cleanUp()
    pytest_twisted.blockon(relays.port.stopListening())


@pytest_twisted.inlineCallbacks
def test_staleEventsIgnored(splicing: Relays) -> Generator[Deferred[Any], Any, None]:
    """
    A readiness event the reactor reports for a side after the relay
    stopped reading or writing it (an event of the same poll, handled after
    another descriptor's) moves nothing: that side's peer may be gone.
    """
    tunnel = yield splicing.open()
    relay = tunnel.relay
    assert isinstance(relay, SpliceRelay)
    tunnel.client.send(b"first")
    yield waitUntil(lambda: tunnel.origin.received == b"first")
    side = relay.client
    side.stopReading()
    tunnel.client.send(b"late")

    def waiting() -> bytes:
        try:
            return side.sock.recv(4, socket.MSG_PEEK)
        except BlockingIOError:
            return b""

    yield waitUntil(lambda: waiting() == b"late")
    side.doRead()
    side.doWrite()
    assert relay.stats.bytesUp == 5
    side.startReading()
    yield waitUntil(lambda: tunnel.origin.received == b"firstlate")
    tunnel.client.transport.loseConnection()
    yield closedCleanly(tunnel)
