# -*- test-case-name: tests.integration.test_forwarding -*-
"""
A small HTTP/1.1 origin server that the forwarding tests reach through the
proxy with plain C{http://} URLs.

Run it as a script; it needs nothing but the standard library (so it never
shares a parser, a reactor or a bug with the proxy under test)::

    python _httporigin.py --mode http [--host 127.0.0.1] [--directory DIR]

It listens on a port of the kernel's choosing and prints that port as the
first line of its standard output.  Every later line reports one event, at
once, so that a test can wait for a line instead of sleeping.  C{PEER} is
the port of the connection's client (the proxy's outgoing port): two
requests with the same C{PEER} came over one connection.

  - C{connection PEER}: a connection was accepted.
  - C{request PEER METHOD TARGET}: a request head was read.
  - C{upload PEER LENGTH SHA256 FRAMING}: a request body was read to its
    end, C{FRAMING} being C{chunked}, C{length} or C{none}.
  - C{download PEER LENGTH SHA256}: a generated body was sent.
  - C{blocked PEER SENT}: sending a generated body made no progress for
    L{STALL} seconds (the peer reads nothing), after C{SENT} bytes of it.
  - C{holding PEER}: a request to C{/hold} waits for C{/release}.
  - C{dropped PEER METHOD TARGET}: a request was read and its connection
    closed without an answer (after C{/once/}).
  - C{upgraded PEER} and C{echo-eof PEER}: a connection switched
    protocols, and later its client finished sending.
  - C{closed PEER}: the connection is closed.
  - C{error PEER TYPE: MESSAGE}: a connection failed.

Resources, by path (the query is ignored):

  - C{/hello/...} (C{GET}, C{HEAD}): a short text that names the target.
  - C{/once/...}: as C{/hello/}, but the next request on the same
    connection is read and the connection closed without an answer, as
    when a server closes an idle connection just as a request arrives.
  - C{/echo-head}: the request head as JSON (method, target, version, and
    the header fields in order).
  - C{/sha256} (C{POST}, C{PUT}): reads the body in small pieces, never
    all of it at once, and answers with its SHA-256 and length as JSON.
    C{Expect: 100-continue} gets a C{100 Continue} first.
  - C{/json} (C{POST}): the JSON body, echoed as C{{"received": ...}}.
  - C{/hold} (C{POST}, C{PUT}): as C{/sha256}, but reads nothing of the
    body until a request to C{/release} (on any connection) came.
  - C{/release}: lets every C{/hold} request read its body.
  - C{/download/N}: N random bytes, with C{Content-Length}.
  - C{/chunked/N}: N random bytes, chunked.
  - C{/close-delimited/N}: N random bytes, neither chunked nor with a
    length: the end of the connection ends the body.
  - C{/status/CODE}: a response with that status (C{204} and C{304}
    without a body, others with a short one).
  - C{/upgrade}: with C{Connection: upgrade} and C{Upgrade: echo},
    answers C{101}, writes C{hello after 101} in the same write, then
    echoes every byte until the client's end of input, half-closes and
    closes.  Without those fields: C{426}.
  - Anything else: with C{--directory}, a file of that directory for
    C{GET} and C{HEAD} (as a package repository); otherwise, or for a
    missing file, C{404}.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import select
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

BLOCK_SIZE = 1 << 16
"""
The most the origin reads or writes of a body at once.
"""

STALL = 1.0
"""
Seconds without progress after which sending a generated body is reported
as blocked.
"""

RELEASED = threading.Event()
"""
Set by a request to C{/release}: C{/hold} requests may read their bodies.
"""

MAX_LINE = 65536
"""
The longest request line or header line the origin accepts.
"""

REASONS = {
    100: "Continue",
    101: "Switching Protocols",
    200: "OK",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    426: "Upgrade Required",
}
"""
Reason phrases of the statuses the origin sends.
"""


def say(line: str) -> None:
    """
    Report one line on standard output, at once.

    @param line: The line, without its newline.
    """
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@dataclass
class Request:
    """
    A request head.

    @ivar method: The method.
    @ivar target: The request-target as sent.
    @ivar version: C{HTTP/1.1} or C{HTTP/1.0}.
    @ivar headers: The header fields in order, as sent.
    """

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        """
        @param name: A field name, in any case.
        @return: The values of that field joined with commas, or L{None}.
        """
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        return ", ".join(values) if values else None

    def tokens(self, name: str) -> set[str]:
        """
        @param name: A field name of a comma-separated list of tokens.
        @return: Its tokens, lowercased.
        """
        value = self.header(name) or ""
        return {token.strip().lower() for token in value.split(",") if token.strip()}

    @property
    def path(self) -> str:
        """
        The path of the target, without its query.
        """
        return urlsplit(self.target).path

    @property
    def keepAlive(self) -> bool:
        """
        Whether the client lets the connection stay open after this request.
        """
        connection = self.tokens("connection")
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection


def readLine(rfile: io.BufferedReader) -> bytes:
    """
    Read one CRLF-terminated line.

    @param rfile: The connection's buffered input.
    @return: The line without its CRLF; C{b""} for an empty line.
    @raise EOFError: At end of input.
    @raise ValueError: For a line that is too long or not CRLF-terminated.
    """
    line = rfile.readline(MAX_LINE + 1)
    if not line:
        raise EOFError("end of input")
    if len(line) > MAX_LINE or not line.endswith(b"\r\n"):
        raise ValueError(f"bad line {line[:80]!r}")
    return line[:-2]


def readRequest(rfile: io.BufferedReader) -> Request | None:
    """
    Read one request head.

    @param rfile: The connection's buffered input.
    @return: The request, or L{None} at a clean end of input before it.
    @raise ValueError: For a malformed head.
    """
    try:
        first = readLine(rfile)
    except EOFError:
        return None
    method, target, version = first.decode("ascii").split(" ")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise ValueError(f"bad version {version!r}")
    headers = []
    while True:
        line = readLine(rfile).decode("latin-1")
        if not line:
            break
        name, colon, value = line.partition(":")
        if not colon or name != name.strip():
            raise ValueError(f"bad header line {line!r}")
        headers.append((name, value.strip()))
    return Request(method, target, version, headers)


def bodyFraming(request: Request) -> str:
    """
    @param request: A request head.
    @return: How its body is framed: C{chunked}, C{length} or C{none}.
    @raise ValueError: For framing this origin does not take.
    """
    codings = request.header("transfer-encoding")
    if codings is not None:
        if codings.strip().lower() != "chunked":
            raise ValueError(f"unsupported transfer coding {codings!r}")
        if request.header("content-length") is not None:
            raise ValueError("both Content-Length and Transfer-Encoding")
        return "chunked"
    if request.header("content-length") is not None:
        return "length"
    return "none"


def readBody(rfile: io.BufferedReader, request: Request) -> Iterator[bytes]:
    """
    Read a request body in pieces of at most L{BLOCK_SIZE} bytes.

    @param rfile: The connection's buffered input.
    @param request: The request head.
    @return: The pieces; the body's trailer fields are read and dropped.
    @raise ValueError: For bad framing.
    @raise EOFError: If the input ends within the body.
    """
    framing = bodyFraming(request)
    if framing == "length":
        yield from _readExactly(rfile, int(request.header("content-length") or ""))
    elif framing == "chunked":
        while True:
            size = int(readLine(rfile).split(b";")[0].strip(), 16)
            if size == 0:
                while readLine(rfile):
                    pass
                return
            yield from _readExactly(rfile, size)
            if readLine(rfile):
                raise ValueError("chunk data longer than its size")


def _readExactly(rfile: io.BufferedReader, size: int) -> Iterator[bytes]:
    """
    @param rfile: The connection's buffered input.
    @param size: How many bytes to read.
    @return: The bytes, in pieces of at most L{BLOCK_SIZE}.
    @raise EOFError: If the input ends first.
    """
    remaining = size
    while remaining > 0:
        data = rfile.read(min(remaining, BLOCK_SIZE))
        if not data:
            raise EOFError(f"end of input {remaining} bytes before the body's end")
        remaining -= len(data)
        yield data


def randomBlocks(size: int) -> Iterator[bytes]:
    """
    @param size: How many bytes.
    @return: That many random bytes, in blocks of at most L{BLOCK_SIZE}.
    """
    source = random.Random()
    while size > 0:
        block = source.randbytes(min(size, BLOCK_SIZE))
        size -= len(block)
        yield block


class Exchange:
    """
    Serves the requests of one connection, one after the other.

    @ivar conn: The connection.
    @ivar rfile: Its buffered input.
    @ivar peer: Its client's port, as reported.
    @ivar directory: Where files are served from, if anywhere.
    """

    def __init__(self, conn: socket.socket, directory: Path | None) -> None:
        self.conn = conn
        self.rfile: io.BufferedReader = conn.makefile("rb")
        self.peer = conn.getpeername()[1]
        self.directory = directory
        self.dropNext = False

    def serve(self) -> None:
        """
        Answer requests until the client closes, asks to close, or switches
        protocols.
        """
        say(f"connection {self.peer}")
        while True:
            request = readRequest(self.rfile)
            if request is None:
                break
            if self.dropNext:
                say(f"dropped {self.peer} {request.method} {request.target}")
                break
            say(f"request {self.peer} {request.method} {request.target}")
            if not self.answer(request) or not request.keepAlive:
                break

    def send(
        self,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes = b"",
        close: bool = False,
    ) -> None:
        """
        Send a response head, and a body if given.

        @param status: The status code.
        @param headers: Header fields besides C{Connection}.
        @param body: The whole body.
        @param close: Whether to announce C{Connection: close}.
        """
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Other')}"]
        lines += [f"{name}: {value}" for name, value in headers]
        if close:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.conn.sendall(head + body)

    def sendText(self, request: Request, status: int, text: str) -> None:
        """
        Send a complete response with a text body (none for C{HEAD}).

        @param request: The request answered.
        @param status: The status code.
        @param text: The body.
        """
        body = text.encode("utf-8")
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("X-Origin", "connectproxy-tests"),
        ]
        shown = b"" if request.method == "HEAD" else body
        self.send(status, headers, shown, close=not request.keepAlive)

    def answer(self, request: Request) -> bool:
        """
        Answer one request.

        @param request: Its head; the body is still to be read.
        @return: Whether the connection may carry another request.
        """
        path = request.path
        if path == "/sha256":
            return self.answerUpload(request)
        if path == "/hold":
            say(f"holding {self.peer}")
            if not RELEASED.wait(60):
                raise EOFError("/release never came")
            return self.answerUpload(request)
        if path == "/json":
            received = json.loads(b"".join(readBody(self.rfile, request)))
            body = json.dumps({"received": received}).encode("utf-8")
            headers = [("Content-Type", "application/json")]
            headers.append(("Content-Length", str(len(body))))
            self.send(200, headers, body, close=not request.keepAlive)
            return True
        for _ in readBody(self.rfile, request):
            pass
        if path == "/echo-head":
            head = {
                "method": request.method,
                "target": request.target,
                "version": request.version,
                "headers": request.headers,
            }
            body = json.dumps(head).encode("utf-8")
            headers = [("Content-Type", "application/json")]
            headers.append(("Content-Length", str(len(body))))
            self.send(200, headers, body, close=not request.keepAlive)
            return True
        if path == "/upgrade":
            return self.answerUpgrade(request)
        if path == "/release":
            RELEASED.set()
            self.sendText(request, 200, "released\n")
            return True
        for prefix in ("/download/", "/chunked/", "/close-delimited/"):
            if path.startswith(prefix):
                return self.answerGenerated(request, prefix, int(path[len(prefix) :]))
        if path.startswith("/status/"):
            status = int(path[len("/status/") :])
            if status in (204, 304):
                self.send(status, [("X-Origin", "connectproxy-tests")])
            else:
                self.sendText(request, status, f"status {status}\n")
            return True
        if path.startswith("/once/"):
            self.dropNext = True
        if path.startswith(("/hello/", "/once/")):
            text = f"hello from the origin\npath={request.target}\n"
            self.sendText(request, 200, text)
            return True
        return self.answerFile(request)

    def answerUpload(self, request: Request) -> bool:
        """
        Hash a request body piece by piece and answer with the digest.

        @param request: A C{POST} or C{PUT} to C{/sha256}.
        @return: Whether the connection may carry another request.
        """
        framing = bodyFraming(request)
        expect = request.header("expect")
        if expect is not None and expect.lower() == "100-continue":
            self.send(100, [])
        digest = hashlib.sha256()
        length = 0
        for piece in readBody(self.rfile, request):
            digest.update(piece)
            length += len(piece)
        say(f"upload {self.peer} {length} {digest.hexdigest()} {framing}")
        result = {"sha256": digest.hexdigest(), "length": length, "framing": framing}
        body = json.dumps(result).encode("utf-8")
        headers = [("Content-Type", "application/json")]
        headers.append(("Content-Length", str(len(body))))
        self.send(200, headers, body, close=not request.keepAlive)
        return True

    def answerGenerated(self, request: Request, kind: str, size: int) -> bool:
        """
        Send C{size} random bytes, framed as C{kind} says.

        @param request: The request.
        @param kind: C{/download/}, C{/chunked/} or C{/close-delimited/}.
        @param size: How many bytes.
        @return: Whether the connection may carry another request.
        """
        headers = [("Content-Type", "application/octet-stream")]
        close = not request.keepAlive
        if kind == "/download/":
            headers.append(("Content-Length", str(size)))
        elif kind == "/chunked/":
            headers.append(("Transfer-Encoding", "chunked"))
        else:
            close = True
        self.send(200, headers, close=close)
        digest = hashlib.sha256()
        if request.method != "HEAD":
            sent = 0
            for block in randomBlocks(size):
                digest.update(block)
                if kind == "/chunked/":
                    block = b"%x\r\n%s\r\n" % (len(block), block)
                sent = self.sendWatched(block, sent)
            if kind == "/chunked/":
                self.conn.sendall(b"0\r\n\r\n")
        say(f"download {self.peer} {size} {digest.hexdigest()}")
        return not close

    def sendWatched(self, data: bytes, sent: int) -> int:
        """
        Send all of C{data}, reporting each time the peer takes nothing for
        L{STALL} seconds.

        @param data: The bytes.
        @param sent: How many bytes of the body were sent before.
        @return: How many are sent now.
        """
        view = memoryview(data)
        reported = False
        while view:
            _, writable, _ = select.select([], [self.conn], [], STALL)
            if not writable:
                if not reported:
                    say(f"blocked {self.peer} {sent}")
                    reported = True
                continue
            count = self.conn.send(view)
            view = view[count:]
            sent += count
        return sent

    def answerUpgrade(self, request: Request) -> bool:
        """
        Switch to the C{echo} protocol when asked to.

        @param request: A request to C{/upgrade}.
        @return: C{False}: after an upgrade the connection carries no more
            HTTP.
        """
        if "upgrade" not in request.tokens("connection") or request.tokens(
            "upgrade"
        ) != {"echo"}:
            self.sendText(request, 426, "send Connection: upgrade, Upgrade: echo\n")
            return True
        self.send(101, [("Connection", "Upgrade"), ("Upgrade", "echo")])
        self.conn.sendall(b"hello after 101\n")
        say(f"upgraded {self.peer}")
        while True:
            data = self.rfile.read1(BLOCK_SIZE)
            if not data:
                break
            self.conn.sendall(data)
        say(f"echo-eof {self.peer}")
        self.conn.shutdown(socket.SHUT_WR)
        return False

    def answerFile(self, request: Request) -> bool:
        """
        Serve a file of the directory.

        @param request: A request for anything else.
        @return: Whether the connection may carry another request.
        """
        if request.method not in ("GET", "HEAD"):
            self.sendText(request, 405, "method not allowed\n")
            return True
        if self.directory is None:
            self.sendText(request, 404, "not found\n")
            return True
        root = self.directory.resolve()
        candidate = (root / unquote(request.path).lstrip("/")).resolve()
        if not candidate.is_file() or root not in candidate.parents:
            self.sendText(request, 404, "not found\n")
            return True
        data = candidate.read_bytes()
        headers = [
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", str(len(data))),
        ]
        shown = b"" if request.method == "HEAD" else data
        self.send(200, headers, shown, close=not request.keepAlive)
        return True


def handle(conn: socket.socket, directory: Path | None) -> None:
    """
    Serve one connection; never let an error escape the thread.

    @param conn: The accepted connection.
    @param directory: Where files are served from, if anywhere.
    """
    conn.settimeout(60)
    peer = conn.getpeername()[1]
    try:
        with conn:
            exchange = Exchange(conn, directory)
            with exchange.rfile:
                exchange.serve()
    except (OSError, ValueError, EOFError) as e:
        say(f"error {peer} {type(e).__name__}: {e}")
    say(f"closed {peer}")


def main(argv: list[str]) -> None:
    """
    Listen, print the port, serve each connection in its own thread until
    killed.

    @param argv: The command line, without the program name.
    """
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["http"], default="http")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--directory", type=Path)
    options = parser.parse_args(argv)
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((options.host, options.port))
    listener.listen(64)
    say(str(listener.getsockname()[1]))
    while True:
        conn, _ = listener.accept()
        threading.Thread(
            target=handle, args=(conn, options.directory), daemon=True
        ).start()


if __name__ == "__main__":
    main(sys.argv[1:])
