# -*- test-case-name: tests.integration.test_forwarding -*-
"""
Helpers of the plain HTTP forwarding tests: the HTTP origin of
L{HTTP_ORIGIN_SCRIPT}, curl with nothing but the options given, raw
absolute-form requests and their responses, and the proxy's memory.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration._processes import (
    HTTP_ORIGIN_SCRIPT,
    OriginProcess,
    ProxyProcess,
    cleanEnvironment,
    statusBytes,
)
from tests.integration._sockets import LOCAL, Response, dial

CLIENT_TIMEOUT = 120
"""
Seconds any client process may run (the 64 MiB transfers included).
"""

FORWARDED = "request_forwarded"
"""
The C{event} of the proxy's access-log event for a forwarded request.
"""


def startHTTPOrigin(*arguments: str, host: str = LOCAL) -> OriginProcess:
    """
    Start the HTTP origin of L{HTTP_ORIGIN_SCRIPT}; the caller stops it.

    @param arguments: More command-line arguments (C{--directory DIR}).
    @param host: The loopback address to listen on.
    @return: The running origin.
    """
    return OriginProcess("http", arguments, host, script=HTTP_ORIGIN_SCRIPT)


def curlProgram() -> str:
    """
    @return: The path of curl.
    @raise pytest.skip.Exception: When curl is not installed.
    """
    program = shutil.which("curl")
    if program is None:
        pytest.skip("curl is not installed")
    return program


def curl(
    proxyPort: int,
    *arguments: str,
    stdin: Path | None = None,
    fromEnvironment: bool = False,
) -> subprocess.CompletedProcess[bytes]:
    """
    Run curl through the proxy as an C{http_proxy}, with no configuration
    file and no other proxy setting.

    @param proxyPort: The proxy's port on 127.0.0.1.
    @param arguments: curl's other arguments, the URLs among them.
    @param stdin: A file to give curl as its standard input.
    @param fromEnvironment: Whether to name the proxy in the C{http_proxy}
        environment variable, as operators do, instead of with C{-x}.
    @return: The finished curl (its output as bytes).
    """
    proxyURL = f"http://{LOCAL}:{proxyPort}"
    argv = [curlProgram(), "-q", "-sS", "--noproxy", "", "--max-time", "90"]
    if fromEnvironment:
        env = cleanEnvironment(http_proxy=proxyURL)
    else:
        env = cleanEnvironment()
        argv += ["-x", proxyURL]
    argv += arguments
    with open(stdin or "/dev/null", "rb") as source:
        return subprocess.run(
            argv,
            stdin=source,
            capture_output=True,
            env=env,
            timeout=CLIENT_TIMEOUT,
            check=False,
        )


def originLines(origin: OriginProcess, kind: str) -> list[list[str]]:
    """
    @param origin: An HTTP origin.
    @param kind: The first word of its lines (C{connection}, C{request}).
    @return: The words of every line of that kind so far.
    """
    return [
        line.split(" ")
        for line in list(origin.output.records)
        if line.startswith(kind + " ")
    ]


def peakResidentBytes(*pids: int) -> int:
    """
    Read the largest resident set size processes (a proxy's
    L{servingPids <tests.integration._processes.ProxyProcess.servingPids>},
    say) have had so far, added up.

    @param pids: The processes.
    @return: Their C{VmHWM} in bytes, added up.
    """
    return statusBytes("VmHWM", *pids)


def forwardedEvents(proxy: ProxyProcess) -> list[dict[str, object]]:
    """
    @param proxy: A proxy.
    @return: Its access-log events for forwarded requests so far.
    """
    return [e for e in list(proxy.events) if e.get("event") == FORWARDED]


@dataclass(frozen=True)
class FullResponse:
    """
    A response read whole from a raw socket.

    @ivar head: Its head.
    @ivar body: Its body, de-chunked.
    """

    head: Response
    body: bytes


class RawClient:
    """
    A client that writes request heads by hand and reads responses with
    C{Content-Length} or chunked bodies, keeping what follows each.

    @ivar sock: The connection to the proxy.
    @ivar buffer: Bytes read and not consumed yet.
    """

    def __init__(
        self, proxyPort: int, timeout: float = 10.0, buffers: int | None = None
    ) -> None:
        """
        @param proxyPort: The proxy's port on 127.0.0.1.
        @param timeout: The socket's timeout for every later operation.
        @param buffers: The size of the socket's kernel buffers, each way,
            if not the system's default (small ones make the client's flow
            control show at once).
        """
        if buffers is None:
            self.sock = dial(proxyPort, timeout)
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffers)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffers)
            self.sock.settimeout(timeout)
            self.sock.connect((LOCAL, proxyPort))
        self.buffer = b""

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        """
        @param data: Bytes to write.
        """
        self.sock.sendall(data)

    def _more(self, what: str) -> None:
        """
        Read once more into L{buffer}.

        @param what: What is awaited, for the message.
        @raise AssertionError: At end of input.
        """
        chunk = self.sock.recv(65536)
        assert chunk, f"end of input while reading {what}: {self.buffer[:200]!r}"
        self.buffer += chunk

    def _take(self, size: int, what: str) -> bytes:
        """
        @param size: How many bytes.
        @param what: What is awaited, for the message.
        @return: The next C{size} bytes.
        """
        while len(self.buffer) < size:
            self._more(what)
        taken, self.buffer = self.buffer[:size], self.buffer[size:]
        return taken

    def exactly(self, size: int) -> bytes:
        """
        @param size: How many bytes.
        @return: The next C{size} bytes, after what was read already.
        """
        return self._take(size, f"{size} bytes")

    def _line(self, what: str) -> bytes:
        """
        @param what: What is awaited, for the message.
        @return: The next CRLF-terminated line, without its CRLF.
        """
        while b"\r\n" not in self.buffer:
            self._more(what)
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def head(self) -> Response:
        """
        @return: The next response head.
        """
        while b"\r\n\r\n" not in self.buffer:
            self._more("a response head")
        end = self.buffer.index(b"\r\n\r\n") + 4
        head, self.buffer = self.buffer[:end], self.buffer[end:]
        lines = head[:-4].decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return Response(int(lines[0].split(" ")[1]), lines[0], headers, head)

    def response(self, method: str = "GET") -> FullResponse:
        """
        Read the next final response whole (1xx responses are skipped).

        @param method: The method of the request it answers (C{HEAD} has
            no body).
        @return: The response.
        """
        head = self.head()
        while 100 <= head.status < 200 and head.status != 101:
            head = self.head()
        if method == "HEAD" or head.status in (101, 204, 304):
            return FullResponse(head, b"")
        if "chunked" in head.headers.get("transfer-encoding", ""):
            body = b""
            while True:
                size = int(self._line("a chunk size").split(b";")[0], 16)
                if size == 0:
                    while self._line("the trailer"):
                        pass
                    return FullResponse(head, body)
                body += self._take(size, "a chunk")
                assert self._line("a chunk's end") == b""
        length = head.headers.get("content-length")
        if length is not None:
            return FullResponse(head, self._take(int(length), "a body"))
        body = self.buffer
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                self.buffer = b""
                return FullResponse(head, body)
            body += chunk

    def atEnd(self) -> bool:
        """
        @return: Whether the proxy closed the connection with nothing more
            to read.
        """
        if self.buffer:
            return False
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


def requestHead(
    method: str,
    target: str,
    host: str,
    headers: Sequence[tuple[str, str]] = (),
    version: str = "HTTP/1.1",
) -> bytes:
    """
    Format a request head.

    @param method: The method.
    @param target: The request-target, as sent.
    @param host: The C{Host} field's value.
    @param headers: Other fields.
    @param version: The HTTP version.
    @return: The head.
    """
    lines = [f"{method} {target} {version}", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def errorBody(response: FullResponse) -> str:
    """
    Check that a response is one of the proxy's short error responses and
    return its body.

    @param response: The response.
    @return: The body: one line, C{STATUS PHRASE: REASON}.
    """
    text = response.body.decode("utf-8")
    assert response.head.headers.get("content-type", "").startswith("text/plain")
    assert text.endswith("\n") and text.count("\n") == 1, text
    assert text.startswith(f"{response.head.status} "), text
    return text
