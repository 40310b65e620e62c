# -*- test-case-name: tests.integration.test_clients -*-
"""
A small origin server that the integration tests reach through the proxy.

Run it as a script (it needs nothing but the standard library, so it never
shares a reactor or a bug with the code under test)::

    python _origin.py --mode echo

It listens on 127.0.0.1 (or the address of C{--host}, C{::1} say) on a
port of the kernel's choosing and prints that port as the first line of its
standard output.  Everything else it has to
say (one line per event, flushed at once) follows on later lines, so a test
can wait for a line instead of sleeping.

Modes:

  - C{https}: TLS (C{--cert}, C{--key}); answers every HTTP/1.1 C{GET} with
    C{200} and a short body that echoes the request path, keeps the
    connection alive unless the client asked for C{Connection: close}.
  - C{echo}: plain TCP echo; on end of input it finishes echoing, then
    half-closes and closes.
  - C{bulk}: plain TCP; reads a L{BULK_HEADER_SIZE}-byte ASCII decimal count
    N, then at the same time sends the first N bytes of L{blockStream}
    (seed C{"down"}) and reads whatever the client sends until end of input.
    When both are done it writes a trailer (see L{formatTrailer}) with the
    SHA-256 and length of each direction as it saw them, prints the same
    facts on stdout with its own verdict on the upload (C{upload=ok} when
    it is the first N bytes of the C{"up"} stream) and closes.
  - C{push}: plain TCP; sends C{--bytes} bytes as fast as the peer accepts
    them.  Whenever a send made no progress for C{--stall} seconds it prints
    C{blocked SENT}, and at the end C{done SENT}.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import select
import socket
import ssl
import sys
import threading
from collections.abc import Iterator

BLOCK_SIZE = 1 << 20
"""
The size of one block of L{blockStream}.
"""

BULK_HEADER_SIZE = 16
"""
The size of the request header of C{bulk} mode: N in ASCII decimal, padded
with leading zeros.
"""

TRAILER_SIZE = 2 * (5 + 64 + 1 + 16 + 1)
"""
The size of the trailer that C{bulk} mode writes after its N bytes.
"""


def blockStream(seed: str, size: int) -> Iterator[bytes]:
    """
    Produce C{size} deterministic, incompressible bytes in blocks.

    Block I is C{random.Random(seed:I).randbytes(BLOCK_SIZE)}: cheap to make,
    the same in every process that runs the same Python, and not all zeros.

    @param seed: Names the stream; different seeds give different bytes.
    @param size: How many bytes in total.
    @return: The blocks, the last one cut short to fit C{size}.
    """
    index = 0
    remaining = size
    while remaining > 0:
        block = random.Random(f"{seed}:{index}").randbytes(BLOCK_SIZE)
        yield block[:remaining]
        remaining -= min(remaining, BLOCK_SIZE)
        index += 1


def streamDigest(seed: str, size: int) -> str:
    """
    Compute the SHA-256 of the first C{size} bytes of a L{blockStream}.

    @param seed: The stream's seed.
    @param size: How many bytes.
    @return: The hex digest.
    """
    digest = hashlib.sha256()
    for block in blockStream(seed, size):
        digest.update(block)
    return digest.hexdigest()


def formatTrailer(
    receivedDigest: str, receivedCount: int, sentDigest: str, sentCount: int
) -> bytes:
    """
    Format the trailer of C{bulk} mode.

    @param receivedDigest: Hex SHA-256 of what the origin received.
    @param receivedCount: How many bytes the origin received.
    @param sentDigest: Hex SHA-256 of what the origin sent before the trailer.
    @param sentCount: How many bytes the origin sent before the trailer.
    @return: Exactly L{TRAILER_SIZE} bytes.
    """
    trailer = (
        f"RECV {receivedDigest} {receivedCount:016d}\n"
        f"SENT {sentDigest} {sentCount:016d}\n"
    ).encode("ascii")
    assert len(trailer) == TRAILER_SIZE
    return trailer


def parseTrailer(trailer: bytes) -> dict[str, tuple[str, int]]:
    """
    Parse a trailer made by L{formatTrailer}.

    @param trailer: The bytes that followed the N bytes of the stream.
    @return: C{{"RECV": (digest, count), "SENT": (digest, count)}}.
    @raise ValueError: If C{trailer} is not a trailer.
    """
    result: dict[str, tuple[str, int]] = {}
    for line in trailer.decode("ascii").splitlines():
        name, digest, count = line.split(" ")
        result[name] = (digest, int(count))
    if sorted(result) != ["RECV", "SENT"]:
        raise ValueError(f"not a bulk trailer: {trailer!r}")
    return result


def say(line: str) -> None:
    """
    Report one line on standard output, at once.

    @param line: The line, without its newline.
    """
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def recvExactly(conn: socket.socket, size: int) -> bytes:
    """
    Read exactly C{size} bytes.

    @param conn: The socket to read.
    @param size: How many bytes.
    @return: The bytes.
    @raise EOFError: If the peer closed first.
    """
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise EOFError(f"end of input after {len(data)} of {size} bytes")
        data += chunk
    return data


def serveEcho(conn: socket.socket, options: argparse.Namespace) -> None:
    """
    Echo everything back; on end of input, half-close, then close.

    @param conn: The accepted connection.
    @param options: The command line (unused).
    """
    while True:
        data = conn.recv(65536)
        if not data:
            break
        conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)
    say("echo eof")


def _bulkReceive(conn: socket.socket, result: dict[str, object]) -> None:
    """
    Read and hash until end of input.

    @param conn: The connection, after the header.
    @param result: Gets C{digest} and C{count}.
    """
    digest = hashlib.sha256()
    count = 0
    try:
        while True:
            data = conn.recv(262144)
            if not data:
                break
            digest.update(data)
            count += len(data)
    except OSError as e:
        result["error"] = e
    result["digest"] = digest.hexdigest()
    result["count"] = count


def serveBulk(conn: socket.socket, options: argparse.Namespace) -> None:
    """
    Send N bytes and receive until end of input at the same time, then
    report both digests in a trailer and on stdout.

    @param conn: The accepted connection.
    @param options: The command line (unused).
    """
    size = int(recvExactly(conn, BULK_HEADER_SIZE).decode("ascii"))
    received: dict[str, object] = {}
    receiver = threading.Thread(target=_bulkReceive, args=(conn, received))
    receiver.start()
    sent = hashlib.sha256()
    sentCount = 0
    for block in blockStream("down", size):
        conn.sendall(block)
        sent.update(block)
        sentCount += len(block)
    receiver.join()
    error = received.get("error")
    if isinstance(error, OSError):
        raise error
    receivedDigest = str(received["digest"])
    receivedCount = int(str(received["count"]))
    conn.sendall(
        formatTrailer(receivedDigest, receivedCount, sent.hexdigest(), sentCount)
    )
    verdict = "ok" if receivedDigest == streamDigest("up", size) else "bad"
    say(
        f"bulk recv={receivedDigest} {receivedCount} "
        f"sent={sent.hexdigest()} {sentCount} upload={verdict}"
    )
    conn.shutdown(socket.SHUT_WR)


def servePush(conn: socket.socket, options: argparse.Namespace) -> None:
    """
    Send C{options.bytes} bytes as fast as the peer takes them, reporting
    each time the peer stops taking them for C{options.stall} seconds.

    @param conn: The accepted connection.
    @param options: The command line: C{bytes}, C{stall}.
    """
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    conn.setblocking(False)
    chunk = bytes(range(256)) * 256
    total = 0
    reported = -1
    while total < options.bytes:
        _, writable, _ = select.select([], [conn], [], options.stall)
        if not writable:
            if reported != total:
                say(f"blocked {total}")
                reported = total
            continue
        try:
            total += conn.send(chunk[: options.bytes - total])
        except BlockingIOError:
            continue
    conn.setblocking(True)
    say(f"done {total}")
    conn.shutdown(socket.SHUT_WR)


def _readHead(conn: ssl.SSLSocket, buffer: bytes) -> tuple[bytes, bytes] | None:
    """
    Read one HTTP request head.

    @param conn: The TLS connection.
    @param buffer: Bytes already read after the previous request.
    @return: C{(head, rest)}, or L{None} on a clean end of input.
    """
    while b"\r\n\r\n" not in buffer:
        data = conn.recv(65536)
        if not data:
            return None
        buffer += data
        if len(buffer) > 65536:
            raise ValueError("request head too large")
    head, _, rest = buffer.partition(b"\r\n\r\n")
    return head, rest


def serveHTTPS(conn: socket.socket, options: argparse.Namespace) -> None:
    """
    Speak HTTP/1.1 over TLS: C{200} with the request path in the body.

    @param conn: The accepted connection.
    @param options: The command line: C{context}, the server's TLS context.
    """
    with options.context.wrap_socket(conn, server_side=True) as tls:
        _serveRequests(tls)
        tls.unwrap().close()


def _serveRequests(tls: ssl.SSLSocket) -> None:
    """
    Answer HTTP/1.1 requests on one TLS connection until the client closes
    it or asks to.

    @param tls: The TLS connection.
    """
    buffer = b""
    while True:
        request = _readHead(tls, buffer)
        if request is None:
            break
        head, buffer = request
        lines = head.decode("latin-1").split("\r\n")
        method, path, version = lines[0].split(" ")
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:])
        }
        say(f"https {method} {path}")
        status = "200 OK" if method == "GET" else "405 Method Not Allowed"
        body = f"hello from the origin\npath={path}\n".encode()
        close = (
            headers.get("connection", "").lower() == "close" or version != "HTTP/1.1"
        )
        tls.sendall(
            (
                f"HTTP/1.1 {status}\r\n"
                "Content-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\n"
                f"Connection: {'close' if close else 'keep-alive'}\r\n"
                "\r\n"
            ).encode("ascii")
            + body
        )
        if close:
            break


def handle(conn: socket.socket, options: argparse.Namespace) -> None:
    """
    Serve one connection in the chosen mode; never let an error escape the
    thread (a client that goes away is not news).

    @param conn: The accepted connection.
    @param options: The command line.
    """
    serve = {
        "echo": serveEcho,
        "bulk": serveBulk,
        "push": servePush,
        "https": serveHTTPS,
    }[options.mode]
    conn.settimeout(60)
    try:
        with conn:
            serve(conn, options)
    except (OSError, ValueError, EOFError) as e:
        say(f"error {type(e).__name__}: {e}")


def main(argv: list[str]) -> None:
    """
    Listen, print the port, serve each connection in its own thread until
    killed.

    @param argv: The command line, without the program name.
    """
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["echo", "bulk", "push", "https"])
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--bytes", type=int, default=512 << 20)
    parser.add_argument("--stall", type=float, default=1.0)
    parser.add_argument("--host", default="127.0.0.1")
    options = parser.parse_args(argv)
    if options.mode == "https":
        options.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        options.context.load_cert_chain(options.cert, options.key)
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((options.host, 0))
    listener.listen(64)
    say(str(listener.getsockname()[1]))
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn, options), daemon=True).start()


if __name__ == "__main__":
    main(sys.argv[1:])
