# -*- test-case-name: tests.test_bench,tests.integration.test_bench -*-
"""
The measurements: blocking-socket clients that move bytes directly or
through a CONNECT tunnel, check them and time it.

Nothing here starts or stops a process; L{bench.launch} does.
"""

from __future__ import annotations

import math
import re
import socket
import threading
import time
import zlib
from dataclasses import dataclass
from functools import cache

from bench.origin import (
    BULK_HEADER,
    BULK_TRAILER,
    CHUNK,
    ECHO_SIZE,
    payloadChunk,
)

LOOPBACK = "127.0.0.1"
STALL_TIMEOUT = 10.0
MODES = {"upload": (1, 0), "download": (0, 1), "both": (1, 1)}
GIB = 1 << 30
_PAYLOAD = payloadChunk()
_MESSAGE = b"connectproxy-bench-ping".ljust(ECHO_SIZE, b".")
_STATUS_200 = re.compile(rb"HTTP/1\.[01] 200[ \r]")
_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux


class BenchError(Exception):
    """
    A connection, the origin or a proxy did not behave as expected.
    """


def readUntil(sock: socket.socket, marker: bytes, limit: int) -> bytes:
    """
    Read from C{sock} until C{marker} has arrived.

    @return: Everything read, which includes C{marker}.
    @raise BenchError: If the peer closes first or sends more than C{limit}
        bytes.
    """
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise BenchError(f"connection closed after {data!r}")
        data += chunk
        if len(data) > limit:
            raise BenchError(f"no {marker!r} in the first {limit} bytes: {data!r}")
    return data


def recvExactly(sock: socket.socket, count: int) -> bytes:
    """
    Read exactly C{count} bytes.

    @raise BenchError: If the peer closes first.
    """
    data = bytearray()
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise BenchError(f"connection closed after {len(data)} of {count} bytes")
        data += chunk
    return bytes(data)


class Route:
    """
    A way to reach an origin port: directly, or through a CONNECT proxy.

    @ivar name: C{"direct"} or the proxy's name.
    @ivar proxyPort: The proxy's port, or L{None} for direct connections.
    @ivar opened: How many tunnels the proxy has accepted with a 200.
    @ivar moved: Bytes sent up and down inside completed exchanges, to
        compare with the proxy's own count; L{None} once a transfer of
        unknown size made the total unknown.
    """

    def __init__(self, name: str, proxyPort: int | None) -> None:
        self.name = name
        self.proxyPort = proxyPort
        self.opened = 0
        self.moved: list[int] | None = [0, 0]
        self._lock = threading.Lock()

    @property
    def direct(self) -> bool:
        """
        Whether this route connects straight to the origin.
        """
        return self.proxyPort is None

    def addMoved(self, up: int, down: int | None) -> None:
        """
        Count bytes moved through one finished exchange; C{down} is L{None}
        when the exact count is unknown.
        """
        with self._lock:
            if self.moved is None or down is None:
                self.moved = None
            else:
                self.moved[0] += up
                self.moved[1] += down

    def addOpened(self, count: int) -> None:
        """
        Count tunnels that another process opened through this route.
        """
        with self._lock:
            self.opened += count

    def open(
        self,
        port: int,
        source: str | None = None,
        timeout: float = STALL_TIMEOUT,
        receiveBuffer: int | None = None,
        host: str = LOOPBACK,
    ) -> socket.socket:
        """
        Connect to origin C{port} on loopback.

        @param source: The local address to bind, for example C{127.0.0.2}.
        @param timeout: Seconds each socket operation may take.
        @param receiveBuffer: C{SO_RCVBUF} in bytes, set before connecting.
        @param host: The host of the C{CONNECT} target: a name that the
            proxy resolves to 127.0.0.1 rather than the address itself.
        @return: A connected socket with C{TCP_NODELAY}.
        @raise BenchError: If the proxy does not answer 200.
        @raise OSError: If the connection fails.
        """
        target = (LOOPBACK, port if self.proxyPort is None else self.proxyPort)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if receiveBuffer is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receiveBuffer)
            if source is not None:
                # Choose the port at connect time, per destination, so that
                # one source address is not limited to one range of ports.
                sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((source, 0))
            sock.settimeout(timeout)
            sock.connect(target)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.proxyPort is not None:
                self._connect(sock, host, port)
        except BaseException:
            sock.close()
            raise
        return sock

    def _connect(self, sock: socket.socket, host: str, port: int) -> None:
        """
        Send C{CONNECT} for C{host} and origin C{port} and read the proxy's
        200.
        """
        authority = f"{host}:{port}".encode("ascii")
        sock.sendall(
            b"CONNECT " + authority + b" HTTP/1.1\r\nHost: " + authority + b"\r\n\r\n"
        )
        head = readUntil(sock, b"\r\n\r\n", 65536)
        if not _STATUS_200.match(head):
            raise BenchError(f"CONNECT {authority!r} answered {head[:200]!r}")
        if not head.endswith(b"\r\n\r\n"):
            # The origins never speak first, so nothing may follow the 200.
            raise BenchError(f"unexpected bytes after the 200: {head!r}")
        with self._lock:
            self.opened += 1


@cache
def expectedCrc(size: int) -> int:
    """
    The CRC-32 of the first C{size} bytes of the bulk payload stream.
    """
    crc = 0
    full, rest = divmod(size, CHUNK)
    for _ in range(full):
        crc = zlib.crc32(_PAYLOAD, crc)
    return zlib.crc32(_PAYLOAD[:rest], crc)


@dataclass(frozen=True)
class BulkSample:
    """
    One bulk transfer.

    @ivar moved: Payload bytes moved in both directions.
    @ivar seconds: Wall time from the header to the origin's trailer.
    @ivar capped: Whether the time cap cut the transfer short, in which case
        neither count nor checksum could be verified.
    """

    moved: int
    seconds: float
    capped: bool


class _Sender:
    """
    The upload half of a bulk transfer, run in a thread.

    @ivar sent: Payload bytes sent so far.
    @ivar error: What stopped the upload before the deadline, if anything.
    """

    def __init__(self, sock: socket.socket, count: int, deadline: float) -> None:
        self._sock = sock
        self._count = count
        self._deadline = deadline
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        """
        Send the payload until done or past the deadline.
        """
        try:
            while self.sent < self._count and time.monotonic() < self._deadline:
                size = min(CHUNK, self._count - self.sent)
                self._sock.sendall(_PAYLOAD[:size])
                self.sent += size
        except OSError as e:
            if time.monotonic() < self._deadline:
                self.error = e  # Later errors come from the shutdown at the cap.


def _receiveBulk(sock: socket.socket, count: int, deadline: float) -> tuple[int, int]:
    """
    Receive C{count} payload bytes into one reused buffer, or stop at the
    deadline.

    @return: How many bytes arrived, and their CRC-32.
    @raise BenchError: If the peer closes early.
    """
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    received = crc = 0
    while received < count and time.monotonic() < deadline:
        size = sock.recv_into(buffer, min(CHUNK, count - received))
        if size == 0:
            raise BenchError(f"closed after {received} of {count} bytes downloaded")
        crc = zlib.crc32(view[:size], crc)
        received += size
    return received, crc


def _wakeSender(sock: socket.socket) -> None:
    """
    Shut C{sock} down so that an upload blocked in C{sendall} returns.
    """
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def bulkOnce(route: Route, port: int, mode: str, size: int, cap: float) -> BulkSample:
    """
    Run one bulk transfer against the bulk origin, checking byte counts and
    CRC-32 in both directions.

    @param mode: A key of L{MODES}.
    @param size: Bytes to move in each active direction.
    @param cap: Seconds after which the transfer is cut short.
    @raise BenchError: If bytes go missing or change, or the tunnel fails.
    """
    upload, download = (size * flag for flag in MODES[mode])
    with route.open(port) as sock:
        deadline = time.monotonic() + cap
        started = time.perf_counter()
        sock.sendall(BULK_HEADER.pack(upload, download))
        sender = _Sender(sock, upload, deadline)
        thread = threading.Thread(target=sender.run, daemon=True)
        thread.start()
        received = crc = 0
        try:
            received, crc = _receiveBulk(sock, download, deadline)
        finally:
            if received < download or time.monotonic() >= deadline:
                _wakeSender(sock)
            thread.join()
        if sender.error is not None:
            raise BenchError(f"upload failed after {sender.sent} bytes: {sender.error}")
        if sender.sent < upload or received < download:
            route.addMoved(0, None)
            return BulkSample(
                sender.sent + received, time.perf_counter() - started, True
            )
        counted, upCrc = BULK_TRAILER.unpack(recvExactly(sock, BULK_TRAILER.size))
        seconds = time.perf_counter() - started
        if counted != upload or upCrc != expectedCrc(upload):
            raise BenchError(f"origin received {counted} of {upload} bytes, bad CRC")
        if crc != expectedCrc(download):
            raise BenchError(f"the {download} bytes downloaded have a bad CRC")
        if sock.recv(1) != b"":
            raise BenchError("unexpected bytes after the origin's trailer")
        route.addMoved(BULK_HEADER.size + upload, download + BULK_TRAILER.size)
    return BulkSample(upload + download, seconds, False)


def exchangeOnce(route: Route, port: int, host: str = LOOPBACK) -> None:
    """
    Open a connection, send one message to the echo origin, read it back,
    close.

    @param host: The host of the C{CONNECT} target (see L{Route.open}).
    @raise BenchError: If the echo does not come back intact.
    """
    with route.open(port, host=host) as sock:
        sock.sendall(_MESSAGE)
        reply = recvExactly(sock, ECHO_SIZE)
    if reply != _MESSAGE:
        raise BenchError(f"echo came back as {reply!r}")
    route.addMoved(ECHO_SIZE, ECHO_SIZE)


@dataclass(frozen=True)
class RateSample:
    """
    One tunnel-rate loop.

    @ivar count: Completed exchanges.
    @ivar seconds: Wall time of the loop.
    """

    count: int
    seconds: float


def rateRun(
    route: Route,
    port: int,
    limit: int,
    seconds: float,
    concurrency: int,
    host: str = LOOPBACK,
) -> RateSample:
    """
    Run L{exchangeOnce} from C{concurrency} threads until C{limit} exchanges
    have completed or C{seconds} have passed.

    @param host: The host of the C{CONNECT} targets (see L{Route.open}).
    @raise BenchError: With the first failure, after all threads stopped.
    """
    lock = threading.Lock()
    claimed = [0, 0]  # started, completed
    errors: list[str] = []
    deadline = time.monotonic() + seconds

    def worker() -> None:
        while not errors and time.monotonic() < deadline:
            with lock:
                if claimed[0] >= limit:
                    return
                claimed[0] += 1
            try:
                exchangeOnce(route, port, host)
            except (OSError, BenchError) as e:
                errors.append(f"{type(e).__name__}: {e}")
                return
            with lock:
                claimed[1] += 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise BenchError(f"after {claimed[1]} exchanges: {errors[0]}")
    return RateSample(claimed[1], elapsed)


def pingRun(route: Route, port: int, count: int, seconds: float) -> list[float]:
    """
    Send L{ECHO_SIZE}-byte messages one at a time through one open
    connection to a hold origin and time each round trip.

    @param count: Round trips at most.
    @param seconds: Wall seconds at most.
    @return: The round-trip times in microseconds, at least one.
    @raise BenchError: If an echo comes back wrong.
    """
    times: list[float] = []
    with route.open(port) as sock:
        deadline = time.monotonic() + seconds
        while len(times) < count and (not times or time.monotonic() < deadline):
            started = time.perf_counter_ns()
            sock.sendall(_MESSAGE)
            reply = recvExactly(sock, ECHO_SIZE)
            times.append((time.perf_counter_ns() - started) / 1000)
            if reply != _MESSAGE:
                raise BenchError(f"echo came back as {reply!r}")
    route.addMoved(ECHO_SIZE * len(times), ECHO_SIZE * len(times))
    return times


def percentile(values: list[float], fraction: float) -> float:
    """
    The nearest-rank percentile of C{values}, for example C{0.99}.
    """
    ordered = sorted(values)
    index = max(0, min(len(ordered), math.ceil(fraction * len(ordered))) - 1)
    return ordered[index]
