# -*- test-case-name: tests.integration.test_forwarding -*-
"""
Plain HTTP through a real proxy process: curl, requests, httpx and raw
sockets send absolute-form C{http://} requests (what they send for an
C{http_proxy}) to an HTTP/1.1 origin on loopback, which reports what it
received.  Bodies of 64 MiB go both ways with their SHA-256 checked at the
other end and the proxy's memory bounded; keep-alive, pipelining, the
upstream pool, an C{Upgrade} and the error responses are seen from outside.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import select
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from tests.integration._forwarding import (
    FORWARDED,
    RawClient,
    curl,
    errorBody,
    forwardedEvents,
    originLines,
    peakResidentBytes,
    requestHead,
    startHTTPOrigin,
)
from tests.integration._modes import onlyOneProcess
from tests.integration._processes import (
    ChildProcess,
    OriginFactory,
    OriginProcess,
    ProxyFactory,
    ProxyProcess,
    residentBytes,
)
from tests.integration._sockets import LOCAL, closedPort, readToEnd
from tests.integration._squid import (
    BASIC_AUTH_HELPER,
    SquidProcess,
    htpasswdFile,
    squidExecutable,
)

pytestmark = pytest.mark.integration

BIG = 64 << 20
"""
The size of the large bodies, each way.
"""

FLOW_SIZE = 128 << 20
"""
The size of the bodies of the flow-control tests, each way.
"""

SAMPLE_EVERY = 4 << 20
"""
Bytes moved between two samples of the proxy's memory.
"""

MEMORY_MARGIN = 32 << 20
"""
How far the proxy's peak resident memory may grow while a L{BIG} body goes
through it: less than the body, so that a proxy that held it whole fails.
"""


@pytest.fixture
def httpOrigin(processes: list[ChildProcess[Any]]) -> OriginProcess:
    """
    The HTTP/1.1 origin, on 127.0.0.1.
    """
    started = startHTTPOrigin()
    processes.append(started)
    return started


@pytest.fixture
def forwarder(strictProxy: ProxyFactory, httpOrigin: OriginProcess) -> ProxyProcess:
    """
    A proxy opened for exactly the origin: its port, and loopback.
    """
    return strictProxy(
        "--allow-network", "127.0.0.0/8", "--allow-port", str(httpOrigin.port)
    )


def originURL(origin: OriginProcess, path: str) -> str:
    """
    @param origin: The HTTP origin.
    @param path: A path, with its query if any.
    @return: The C{http://} URL of that path on the origin.
    """
    return f"http://{LOCAL}:{origin.port}{path}"


def randomFile(path: Path, size: int) -> str:
    """
    Write C{size} random bytes to a file, a MiB at a time.

    @param path: The file.
    @param size: How many bytes.
    @return: The hex SHA-256 of what was written.
    """
    digest = hashlib.sha256()
    with path.open("wb") as output:
        remaining = size
        while remaining > 0:
            block = os.urandom(min(remaining, 1 << 20))
            digest.update(block)
            output.write(block)
            remaining -= len(block)
    return digest.hexdigest()


def fileDigest(path: Path) -> str:
    """
    @param path: A file.
    @return: The hex SHA-256 of its content, read a MiB at a time.
    """
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def test_curlGet(forwarder: ProxyProcess, httpOrigin: OriginProcess) -> None:
    """
    curl gets a page through the proxy; the proxy logs one access-log event
    with the URL without its query string.
    """
    url = originURL(httpOrigin, "/hello/get?secret=1")
    result = curl(forwarder.port, "-i", url)
    assert (result.returncode, result.stderr) == (0, b""), result.stderr
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
    assert b"\r\nX-Origin: connectproxy-tests" in head
    assert body == b"hello from the origin\npath=/hello/get?secret=1\n"
    event = forwarder.waitForNamed(FORWARDED, method="GET", status=200)
    assert event["target"] == originURL(httpOrigin, "/hello/get")
    assert event["upstream"] == f"{LOCAL}:{httpOrigin.port}"
    assert event["outcome"] == "ok"
    assert event["bytesDown"] >= len(body)
    assert len(forwardedEvents(forwarder)) == 1


def test_curlFromEnvironment(
    forwarder: ProxyProcess, httpOrigin: OriginProcess
) -> None:
    """
    curl with the proxy in C{http_proxy}, as operators set it for every
    program, gets the page through the proxy.
    """
    url = originURL(httpOrigin, "/hello/environment")
    result = curl(forwarder.port, url, fromEnvironment=True)
    assert (result.returncode, result.stderr) == (0, b""), result.stderr
    assert result.stdout == b"hello from the origin\npath=/hello/environment\n"
    forwarder.waitForNamed(FORWARDED, target=url)


def test_curlHead(forwarder: ProxyProcess, httpOrigin: OriginProcess) -> None:
    """
    curl's C{HEAD} gets the origin's header fields, a C{Content-Length}
    among them, and no body (curl would wait for it and time out).
    """
    result = curl(
        forwarder.port, "-I", "--max-time", "10", originURL(httpOrigin, "/hello/h")
    )
    assert (result.returncode, result.stderr) == (0, b""), result.stderr
    head = result.stdout.decode("latin-1")
    assert head.startswith("HTTP/1.1 200 OK\r\n"), head
    assert head.endswith("\r\n\r\n"), head
    length = len("hello from the origin\npath=/hello/h\n")
    assert f"\r\nContent-Length: {length}\r\n" in head, head
    assert "\r\nX-Origin: connectproxy-tests\r\n" in head, head
    forwarder.waitForNamed(FORWARDED, method="HEAD", status=200)


def test_http10Client(forwarder: ProxyProcess, httpOrigin: OriginProcess) -> None:
    """
    An HTTP/1.0 client without C{Host} gets the page, a response that ends
    with the origin's connection whole, and its connection closed after
    each response; the origin gets C{Host} from the URL.
    """
    authority = f"{LOCAL}:{httpOrigin.port}"
    for path, expected in [("/echo-head", None), ("/close-delimited/70000", 70000)]:
        with RawClient(forwarder.port) as client:
            client.send(f"GET http://{authority}{path} HTTP/1.0\r\n\r\n".encode())
            answer = client.response()
            assert answer.head.status == 200, answer.head.raw
            if expected is None:
                seen = json.loads(answer.body)
                assert [v for n, v in seen["headers"] if n.lower() == "host"] == [
                    authority
                ]
            else:
                assert len(answer.body) == expected
            assert client.atEnd()


def test_messageRewritten(forwarder: ProxyProcess, httpOrigin: OriginProcess) -> None:
    """
    The origin gets the request in origin-form, with C{Host} naming the
    target, a C{Via} of the proxy, and none of the hop-by-hop fields: those
    named in C{Connection}, C{Keep-Alive}, C{Proxy-Connection}, C{TE}.
    """
    result = curl(
        forwarder.port,
        *("-H", "Connection: X-Hop, keep-alive"),
        *("-H", "X-Hop: for the proxy only"),
        *("-H", "Keep-Alive: timeout=5"),
        *("-H", "Proxy-Connection: keep-alive"),
        *("-H", "TE: trailers"),
        *("-H", "X-End-To-End: kept"),
        originURL(httpOrigin, "/echo-head?q=1"),
    )
    assert (result.returncode, result.stderr) == (0, b""), result.stderr
    seen = json.loads(result.stdout)
    assert (seen["method"], seen["target"]) == ("GET", "/echo-head?q=1")
    headers = [(name.lower(), value) for name, value in seen["headers"]]
    names = [name for name, _ in headers]
    assert headers.count(("host", f"{LOCAL}:{httpOrigin.port}")) == 1
    assert names.count("host") == 1
    assert ("x-end-to-end", "kept") in headers
    for hop in ("x-hop", "keep-alive", "proxy-connection", "te", "connection"):
        assert hop not in names, headers
    via = [value for name, value in headers if name == "via"]
    assert len(via) == 1 and via[0].startswith("1.1 "), headers


def test_maxForwards(forwarder: ProxyProcess, httpOrigin: OriginProcess) -> None:
    """
    A C{TRACE} with C{Max-Forwards: 0} is answered by the proxy itself (the
    request as C{message/http}, without its cookies), and an C{OPTIONS}
    with C{Max-Forwards: 1} reaches the origin with C{Max-Forwards: 0}.
    """
    authority = f"{LOCAL}:{httpOrigin.port}"
    url = f"http://{authority}/echo-head"
    with RawClient(forwarder.port) as client:
        trace = [("Max-Forwards", "0"), ("Cookie", "secret=1")]
        client.send(requestHead("TRACE", url, authority, trace))
        answer = client.response()
        assert answer.head.status == 200, answer.head.raw
        assert answer.head.headers["content-type"].startswith("message/http")
        assert answer.body.startswith(f"TRACE {url} HTTP/1.1\r\n".encode())
        assert b"secret" not in answer.body, answer.body
        client.send(requestHead("OPTIONS", url, authority, [("Max-Forwards", "1")]))
        answer = client.response()
        assert answer.head.status == 200, answer.head.raw
        seen = json.loads(answer.body)
    assert seen["method"] == "OPTIONS"
    forwards = [v for n, v in seen["headers"] if n.lower() == "max-forwards"]
    assert forwards == ["0"], seen
    assert [line[2] for line in originLines(httpOrigin, "request")] == ["OPTIONS"]


def test_curlPostLargeBody(
    forwarder: ProxyProcess, httpOrigin: OriginProcess, tmp_path: Path
) -> None:
    """
    A 64 MiB C{POST} reaches the origin whole (its SHA-256 computed there,
    piece by piece): the origin's C{100 Continue} reaches curl, and the
    proxy's memory grows by less than the body.
    """
    upload = tmp_path / "upload.bin"
    expected = randomFile(upload, BIG)
    baseline = peakResidentBytes(*forwarder.servingPids)
    result = curl(
        forwarder.port,
        "-v",
        *("--data-binary", f"@{upload}"),
        *("-H", "Content-Type: application/octet-stream"),
        originURL(httpOrigin, "/sha256"),
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer == {"sha256": expected, "length": BIG, "framing": "length"}
    assert b"< HTTP/1.1 100 Continue" in result.stderr, result.stderr
    httpOrigin.waitForLine(rf"upload \d+ {BIG} {expected} length$")
    event = forwarder.waitForNamed(FORWARDED, method="POST", status=200)
    assert event["bytesUp"] >= BIG
    peak = peakResidentBytes(*forwarder.servingPids)
    assert peak < baseline + MEMORY_MARGIN, (baseline, peak)


@pytest.mark.parametrize("how", ["header", "stdin"])
def test_curlChunkedUpload(
    forwarder: ProxyProcess, httpOrigin: OriginProcess, tmp_path: Path, how: str
) -> None:
    """
    A chunked upload of unknown length, from a file with
    C{Transfer-Encoding: chunked} or from curl's standard input with
    C{-T -}, reaches the origin whole, still chunked.
    """
    upload = tmp_path / "upload.bin"
    size = (5 << 20) + 12345
    expected = randomFile(upload, size)
    url = originURL(httpOrigin, "/sha256")
    if how == "header":
        result = curl(
            forwarder.port,
            *("-H", "Transfer-Encoding: chunked"),
            *("--data-binary", f"@{upload}", url),
        )
        method = "POST"
    else:
        result = curl(forwarder.port, "-T", "-", url, stdin=upload)
        method = "PUT"
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer == {"sha256": expected, "length": size, "framing": "chunked"}
    forwarder.waitForNamed(FORWARDED, method=method, status=200)


def test_curlLargeDownload(
    forwarder: ProxyProcess, httpOrigin: OriginProcess, tmp_path: Path
) -> None:
    """
    A 64 MiB response reaches curl whole (the SHA-256 the origin sent is
    the one curl wrote), and the proxy's memory grows by less than it.
    """
    download = tmp_path / "download.bin"
    baseline = peakResidentBytes(*forwarder.servingPids)
    result = curl(
        forwarder.port, "-o", str(download), originURL(httpOrigin, f"/download/{BIG}")
    )
    assert (result.returncode, result.stderr) == (0, b""), result.stderr
    sent = httpOrigin.waitForLine(rf"download \d+ {BIG} ([0-9a-f]{{64}})$")
    assert download.stat().st_size == BIG
    assert fileDigest(download) == sent.group(1)
    event = forwarder.waitForNamed(FORWARDED, method="GET", status=200)
    assert event["bytesDown"] >= BIG
    peak = peakResidentBytes(*forwarder.servingPids)
    assert peak < baseline + MEMORY_MARGIN, (baseline, peak)


@pytest.mark.parametrize("framing", ["chunked", "close-delimited"])
def test_curlFramedDownloads(
    forwarder: ProxyProcess, httpOrigin: OriginProcess, tmp_path: Path, framing: str
) -> None:
    """
    A chunked response and one that ends with the origin's connection (no
    length, no chunks) reach curl whole.
    """
    download = tmp_path / "download.bin"
    size = (3 << 20) + 777
    url = originURL(httpOrigin, f"/{framing}/{size}")
    result = curl(forwarder.port, "-o", str(download), url)
    assert (result.returncode, result.stderr) == (0, b""), result.stderr
    sent = httpOrigin.waitForLine(rf"download \d+ {size} ([0-9a-f]{{64}})$")
    assert download.stat().st_size == size
    assert fileDigest(download) == sent.group(1)


def test_slowReaderDownload(forwarder: ProxyProcess, httpOrigin: OriginProcess) -> None:
    """
    While a client reads nothing of a 128 MiB response, the origin gets
    blocked after a small part of it and the proxy's memory stays within
    32 MiB of what it was; when the client reads, in small pieces, all of
    it arrives, intact, and the memory stays bounded all along.
    """
    baseline = residentBytes(*forwarder.servingPids)
    authority = f"{LOCAL}:{httpOrigin.port}"
    target = f"http://{authority}/download/{FLOW_SIZE}"
    with RawClient(forwarder.port, timeout=30, buffers=65536) as client:
        client.send(requestHead("GET", target, authority))
        blocked = httpOrigin.waitForLine(r"blocked \d+ (\d+)$", timeout=30)
        assert int(blocked.group(1)) < MEMORY_MARGIN, blocked.group(0)
        largest = residentBytes(*forwarder.servingPids)
        head = client.head()
        assert head.status == 200, head.raw
        digest = hashlib.sha256(client.buffer)
        received = len(client.buffer)
        nextSample = received + SAMPLE_EVERY
        while received < FLOW_SIZE:
            chunk = client.sock.recv(16384)
            assert chunk, f"end of input after {received} bytes"
            digest.update(chunk)
            received += len(chunk)
            if received >= nextSample:
                largest = max(largest, residentBytes(*forwarder.servingPids))
                nextSample += SAMPLE_EVERY
    assert received == FLOW_SIZE
    sent = httpOrigin.waitForLine(rf"download \d+ {FLOW_SIZE} ([0-9a-f]{{64}})$")
    assert digest.hexdigest() == sent.group(1)
    assert largest < baseline + MEMORY_MARGIN, (baseline, largest)


def pushUntilBlocked(
    sock: socket.socket, blocks: Iterator[bytes], digest: Any
) -> tuple[int, memoryview]:
    """
    Send blocks without blocking until the peer takes nothing for a second.

    @param sock: A non-blocking socket.
    @param blocks: The blocks to send; each one taken is added to
        C{digest}.
    @param digest: A SHA-256 object.
    @return: How many bytes were sent, and the rest of the block being
        sent.
    @raise AssertionError: When the peer took L{MEMORY_MARGIN} bytes
        without blocking.
    """
    sent = 0
    pending = memoryview(b"")
    while True:
        if not pending:
            block = next(blocks)
            digest.update(block)
            pending = memoryview(block)
        _, writable, _ = select.select([], [sock], [], 1.0)
        if not writable:
            return sent, pending
        try:
            count = sock.send(pending)
        except BlockingIOError:
            continue
        pending = pending[count:]
        sent += count
        assert sent < MEMORY_MARGIN, "the proxy took a body the origin does not read"


def test_slowOriginUpload(forwarder: ProxyProcess, httpOrigin: OriginProcess) -> None:
    """
    While the origin reads nothing of a 128 MiB request body, the client
    gets blocked after a small part of it and the proxy's memory stays
    bounded; once the origin reads, all of it arrives, intact.
    """
    baseline = residentBytes(*forwarder.servingPids)
    authority = f"{LOCAL}:{httpOrigin.port}"
    fields = [("Content-Length", str(FLOW_SIZE))]
    head = requestHead("POST", f"http://{authority}/hold", authority, fields)
    source = random.Random("upload")
    blocks = (source.randbytes(1 << 20) for _ in range(FLOW_SIZE >> 20))
    digest = hashlib.sha256()
    with RawClient(forwarder.port, timeout=30, buffers=65536) as client:
        client.send(head)
        httpOrigin.waitForLine(r"holding \d+$")
        client.sock.setblocking(False)
        sent, pending = pushUntilBlocked(client.sock, blocks, digest)
        largest = residentBytes(*forwarder.servingPids)
        with RawClient(httpOrigin.port) as release:
            release.send(requestHead("GET", "/release", authority))
            assert release.response().head.status == 200
        client.sock.settimeout(30)
        client.send(bytes(pending))
        sent += len(pending)
        nextSample = sent + SAMPLE_EVERY
        for block in blocks:
            digest.update(block)
            client.send(block)
            sent += len(block)
            if sent >= nextSample:
                largest = max(largest, residentBytes(*forwarder.servingPids))
                nextSample += SAMPLE_EVERY
        answer = client.response()
    assert sent == FLOW_SIZE
    assert answer.head.status == 200, answer.head.raw
    assert json.loads(answer.body) == {
        "sha256": digest.hexdigest(),
        "length": FLOW_SIZE,
        "framing": "length",
    }
    assert largest < baseline + MEMORY_MARGIN, (baseline, largest)


def test_curlResponsesWithoutBody(
    forwarder: ProxyProcess, httpOrigin: OriginProcess
) -> None:
    """
    C{204} and C{304} responses, which have no body, reach curl, and the
    client connection carries the next request.
    """
    result = curl(
        forwarder.port,
        "-v",
        originURL(httpOrigin, "/status/204"),
        originURL(httpOrigin, "/status/304"),
        originURL(httpOrigin, "/hello/after"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello from the origin\npath=/hello/after\n"
    stderr = result.stderr.decode("utf-8", "replace")
    assert "< HTTP/1.1 204 No Content" in stderr, stderr
    assert "< HTTP/1.1 304 Not Modified" in stderr, stderr
    assert stderr.count("Re-using existing connection") == 2, stderr


def test_curlProxyUser(strictProxy: ProxyFactory, httpOrigin: OriginProcess) -> None:
    """
    Behind C{--auth}, a request without credentials gets 407; curl with
    C{--proxy-anyauth --proxy-user} gets the 407, retries with Basic
    credentials on the same connection and gets the page; the origin never
    sees the C{Proxy-Authorization} field.
    """
    running = strictProxy(
        *("--allow-network", "127.0.0.0/8", "--allow-port", str(httpOrigin.port)),
        *("--auth", "memory:alice:s3cret"),
    )
    url = originURL(httpOrigin, "/echo-head")
    refused = curl(running.port, "-i", url)
    assert refused.returncode == 0, refused.stderr
    assert refused.stdout.startswith(b"HTTP/1.1 407 "), refused.stdout
    assert b"\r\nProxy-Authenticate: Basic " in refused.stdout
    assert originLines(httpOrigin, "request") == []

    result = curl(
        running.port, "-v", "--proxy-anyauth", "--proxy-user", "alice:s3cret", url
    )
    assert result.returncode == 0, result.stderr
    stderr = result.stderr.decode("utf-8", "replace")
    assert "< HTTP/1.1 407 " in stderr, stderr
    assert "< HTTP/1.1 200 OK" in stderr, stderr
    assert stderr.index("< HTTP/1.1 407 ") < stderr.index("< HTTP/1.1 200 OK")
    assert "Re-using existing connection" in stderr, stderr
    seen = json.loads(result.stdout)
    names = [name.lower() for name, _ in seen["headers"]]
    assert "proxy-authorization" not in names, seen
    event = running.waitForNamed(FORWARDED, status=200)
    assert event["user"] == "alice"


def test_curlKeepAlive(forwarder: ProxyProcess, httpOrigin: OriginProcess) -> None:
    """
    Two URLs in one curl invocation go over one client connection: curl
    reuses it, and the proxy logs both requests from one client address.
    """
    result = curl(
        forwarder.port,
        "-v",
        originURL(httpOrigin, "/hello/one"),
        originURL(httpOrigin, "/hello/two"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        b"hello from the origin\npath=/hello/one\n"
        b"hello from the origin\npath=/hello/two\n"
    )
    stderr = result.stderr.decode("utf-8", "replace")
    assert "Re-using existing connection" in stderr, stderr
    first, second = [
        forwarder.waitForNamed(FORWARDED, target=originURL(httpOrigin, path))
        for path in ("/hello/one", "/hello/two")
    ]
    assert first["client"] == second["client"]


@onlyOneProcess(
    "the second client connection reuses the first one's upstream connection"
    " only if it lands on the same worker: the pool is per worker"
    " (docs/operating.md, Limits are per worker)"
)
def test_upstreamPooled(forwarder: ProxyProcess, httpOrigin: OriginProcess) -> None:
    """
    Two requests from two client connections, one after the other, reach
    the origin over one upstream connection: the first one's, kept idle in
    the pool.
    """
    for path in ("/hello/first", "/hello/second"):
        result = curl(forwarder.port, originURL(httpOrigin, path))
        assert (result.returncode, result.stderr) == (0, b""), result.stderr
        forwarder.waitForNamed(FORWARDED, target=originURL(httpOrigin, path))
    requests = originLines(httpOrigin, "request")
    assert [line[3] for line in requests] == ["/hello/first", "/hello/second"]
    assert requests[0][1] == requests[1][1], httpOrigin.output.text()
    assert len(originLines(httpOrigin, "connection")) == 1
    events = forwardedEvents(forwarder)
    assert events[0]["client"] != events[1]["client"]


def test_poolIdleTimeout(strictProxy: ProxyFactory, httpOrigin: OriginProcess) -> None:
    """
    An idle pooled connection is closed after C{--upstream-idle-timeout}.
    """
    running = strictProxy(
        *("--allow-network", "127.0.0.0/8", "--allow-port", str(httpOrigin.port)),
        *("--upstream-idle-timeout", "1"),
    )
    result = curl(running.port, originURL(httpOrigin, "/hello/idle"))
    assert (result.returncode, result.stderr) == (0, b""), result.stderr
    [[_, peer]] = originLines(httpOrigin, "connection")
    httpOrigin.waitForLine(rf"closed {peer}$", timeout=10)


def test_poolDisabled(strictProxy: ProxyFactory, httpOrigin: OriginProcess) -> None:
    """
    With C{--upstream-keepalive 0} every request gets a connection of its
    own, closed after its response.
    """
    running = strictProxy(
        *("--allow-network", "127.0.0.0/8", "--allow-port", str(httpOrigin.port)),
        *("--upstream-keepalive", "0"),
    )
    for path in ("/hello/first", "/hello/second"):
        result = curl(running.port, originURL(httpOrigin, path))
        assert (result.returncode, result.stderr) == (0, b""), result.stderr
        [peer] = [line[1] for line in originLines(httpOrigin, "request")][-1:]
        httpOrigin.waitForLine(rf"closed {peer}$", timeout=10)
    assert len(originLines(httpOrigin, "connection")) == 2


def poolDroppingNext(proxy: ProxyProcess, origin: OriginProcess) -> str:
    """
    Leave an idle pooled connection to the origin that the origin will
    close, without answering, when the next request arrives on it.

    @param proxy: The proxy.
    @param origin: The HTTP origin.
    @return: Its client port, as the origin names it.
    """
    url = originURL(origin, "/once/x")
    result = curl(proxy.port, url)
    assert (result.returncode, result.stderr) == (0, b""), result.stderr
    proxy.waitForNamed(FORWARDED, target=url)
    [*_, (_, peer, _, _)] = originLines(origin, "request")
    return peer


@onlyOneProcess(
    "the retried request must land on the worker that pooled the "
    "dropped connection: the pool is per worker (docs/operating.md, "
    "Limits are per worker)"
)
def test_retryIdempotent(forwarder: ProxyProcess, httpOrigin: OriginProcess) -> None:
    """
    When the origin closes a pooled connection as a C{GET} arrives on it,
    without answering, the request is sent once more on a fresh connection
    and the client gets the page.
    """
    pooled = poolDroppingNext(forwarder, httpOrigin)
    result = curl(forwarder.port, "-i", originURL(httpOrigin, "/hello/again"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"HTTP/1.1 200 OK\r\n"), result.stdout
    assert result.stdout.endswith(b"path=/hello/again\n"), result.stdout
    httpOrigin.waitForLine(rf"dropped {pooled} GET /hello/again$")
    [*_, (_, peer, method, path)] = originLines(httpOrigin, "request")
    assert (method, path) == ("GET", "/hello/again")
    assert peer != pooled


@onlyOneProcess(
    "the POST must land on the worker that pooled the dropped connection:"
    " the pool is per worker (docs/operating.md, Limits are per worker)"
)
def test_noRetryWithBody(forwarder: ProxyProcess, httpOrigin: OriginProcess) -> None:
    """
    When the origin closes a pooled connection as a C{POST} arrives on it,
    the request (not idempotent, and with a body) is not sent again: the
    client gets 502.
    """
    pooled = poolDroppingNext(forwarder, httpOrigin)
    url = originURL(httpOrigin, "/json")
    result = curl(forwarder.port, "-i", "--data-binary", "[1, 2]", url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), result.stdout
    httpOrigin.waitForLine(rf"dropped {pooled} POST /json$")
    assert originLines(httpOrigin, "request")[-1][2:] == ["GET", "/once/x"]


def test_pipelinedThenConnect(
    proxy: ProxyFactory, httpOrigin: OriginProcess, origin: OriginFactory
) -> None:
    """
    Three requests written at once are answered in order on the client
    connection, and a CONNECT after them on the same connection opens a
    working tunnel.
    """
    running = proxy()
    echo = origin("echo")
    authority = f"{LOCAL}:{httpOrigin.port}"
    paths = ["/hello/p1", "/status/204", "/hello/p3"]
    heads = [
        requestHead("GET", f"http://{authority}{path}", authority) for path in paths
    ]
    with RawClient(running.port) as client:
        client.send(b"".join(heads))
        answers = [client.response() for _ in paths]
        assert [answer.head.status for answer in answers] == [200, 204, 200]
        assert answers[0].body == b"hello from the origin\npath=/hello/p1\n"
        assert answers[2].body == b"hello from the origin\npath=/hello/p3\n"
        target = f"{LOCAL}:{echo.port}"
        client.send(requestHead("CONNECT", target, target))
        head = client.head()
        assert head.raw == b"HTTP/1.1 200 Connection established\r\n\r\n", head.raw
        client.send(b"through the tunnel")
        assert client.exactly(len(b"through the tunnel")) == b"through the tunnel"
    running.waitForNamed("tunnel_close", port=echo.port)


def test_requests(forwarder: ProxyProcess, httpOrigin: OriginProcess) -> None:
    """
    python-requests with C{proxies={"http": ...}} gets a page and posts
    JSON.
    """
    proxies = {"http": f"http://{LOCAL}:{forwarder.port}"}
    with requests.Session() as session:
        session.trust_env = False
        response = session.get(
            originURL(httpOrigin, "/hello/requests"), proxies=proxies, timeout=20
        )
        assert response.status_code == 200
        assert response.text == "hello from the origin\npath=/hello/requests\n"
        payload: dict[str, Any] = {
            "name": "proxy",
            "numbers": [1, 2],
            "nested": {"a": None},
        }
        response = session.post(
            originURL(httpOrigin, "/json"), json=payload, proxies=proxies, timeout=20
        )
        assert response.status_code == 200
        assert response.json() == {"received": payload}


def test_requestsSession(forwarder: ProxyProcess, httpOrigin: OriginProcess) -> None:
    """
    A requests Session sends several requests over one client connection.
    """
    paths = [f"/hello/session-{index}" for index in range(5)]
    with requests.Session() as session:
        session.trust_env = False
        session.proxies = {"http": f"http://{LOCAL}:{forwarder.port}"}
        for path in paths:
            response = session.get(originURL(httpOrigin, path), timeout=20)
            assert response.status_code == 200
            assert response.text == f"hello from the origin\npath={path}\n"
    events = [
        forwarder.waitForNamed(FORWARDED, target=originURL(httpOrigin, path))
        for path in paths
    ]
    assert len({event["client"] for event in events}) == 1, events


def test_httpx(forwarder: ProxyProcess, httpOrigin: OriginProcess) -> None:
    """
    httpx with C{proxy=} gets a page and uploads a body.
    """
    body = os.urandom(300000)
    with httpx.Client(
        proxy=f"http://{LOCAL}:{forwarder.port}", trust_env=False, timeout=20
    ) as client:
        response = client.get(originURL(httpOrigin, "/hello/httpx"))
        assert (response.status_code, response.text) == (
            200,
            "hello from the origin\npath=/hello/httpx\n",
        )
        response = client.post(originURL(httpOrigin, "/sha256"), content=body)
        assert response.status_code == 200
        assert response.json() == {
            "sha256": hashlib.sha256(body).hexdigest(),
            "length": len(body),
            "framing": "length",
        }


def test_upgrade(forwarder: ProxyProcess, httpOrigin: OriginProcess) -> None:
    """
    A request with C{Connection: upgrade} and C{Upgrade} that the origin
    answers with C{101} becomes a tunnel: the bytes the origin wrote with
    its C{101} arrive, the bytes the client wrote right after its request
    reach the origin (which echoes them), then whatever the client sends is
    echoed, and the client's end of input reaches the origin.  The exchange
    is logged once the tunnel is closed, with status 101 and its bytes.
    """
    authority = f"{LOCAL}:{httpOrigin.port}"
    target = f"http://{authority}/upgrade"
    head = requestHead(
        "GET", target, authority, [("Connection", "Upgrade"), ("Upgrade", "echo")]
    )
    early = b"sent before the 101"
    with RawClient(forwarder.port) as client:
        client.send(head + early)
        response = client.head()
        assert response.status == 101, response.raw
        assert response.headers.get("upgrade") == "echo", response.raw
        assert "upgrade" in response.headers.get("connection", "").lower()
        greeting = b"hello after 101\n"
        assert client.exactly(len(greeting) + len(early)) == greeting + early
        payload = os.urandom(1 << 20)
        client.send(payload)
        assert client.exactly(len(payload)) == payload
        client.sock.shutdown(socket.SHUT_WR)
        httpOrigin.waitForLine(r"echo-eof \d+$")
        assert readToEnd(client.sock) == b""
    event = forwarder.waitForNamed(FORWARDED, target=target)
    assert (event["status"], event["outcome"]) == (101, "ok")
    assert event["bytesUp"] > len(payload) and event["bytesDown"] > len(payload)


@pytest.mark.skipif(squidExecutable() is None, reason="squid is not installed")
def test_throughParentProxy(
    strictProxy: ProxyFactory,
    httpOrigin: OriginProcess,
    scratchDir: Path,
    processes: list[ChildProcess[Any]],
) -> None:
    """
    Through a parent proxy (a real squid that wants credentials of its
    own), a forwarded request reaches the origin with the parent's
    credentials, never the client's (squid lets it through), both proxies
    in its C{Via}; the log names squid as the upstream.
    """
    scratchDir.chmod(0o711)
    passwords = htpasswdFile(scratchDir / "squid-passwords", {"proxyuser": "p@ss:word"})
    directory = scratchDir / "squid"
    directory.mkdir()
    parent = SquidProcess(
        directory,
        [
            f"auth_param basic program {BASIC_AUTH_HELPER} {passwords}",
            "auth_param basic realm parent",
            "acl clients src 127.0.0.0/8",
            "acl users proxy_auth REQUIRED",
            "http_access allow clients users",
            "http_access deny all",
        ],
        extra=["dns_nameservers 127.0.0.1"],
    )
    processes.append(parent)
    running = strictProxy(
        *("--allow-network", "127.0.0.0/8", "--allow-port", str(httpOrigin.port)),
        *("--auth", "memory:alice:s3cret"),
        "--upstream-proxy",
        f"http://proxyuser:p%40ss%3Aword@127.0.0.1:{parent.port}",
    )
    url = originURL(httpOrigin, "/echo-head")
    result = curl(running.port, "--proxy-user", "alice:s3cret", url)
    assert (result.returncode, result.stderr) == (0, b""), result.stderr
    seen = json.loads(result.stdout)
    via = ", ".join(v for n, v in seen["headers"] if n.lower() == "via")
    assert "connectproxy" in via and "squid" in via, seen
    event = running.waitForNamed(FORWARDED, target=url)
    assert (event["status"], event["user"]) == (200, "alice")
    assert event["upstream"] == f"127.0.0.1:{parent.port}"
    assert event["parent"], event
    assert "p@ss:word" not in repr(running.events)


def test_originDown(proxy: ProxyFactory) -> None:
    """
    A request to a port where nothing listens gets 502 with a short body.
    """
    running = proxy()
    authority = f"{LOCAL}:{closedPort()}"
    with RawClient(running.port) as client:
        client.send(requestHead("GET", f"http://{authority}/x", authority))
        response = client.response()
        assert response.head.status == 502, response.head.raw
        assert errorBody(response).startswith("502 Bad Gateway: ")
    event = running.waitForNamed("request_refused", status=502)
    assert (event["method"], event["target"]) == ("GET", f"http://{authority}/x")


def test_httpsURLRefused(forwarder: ProxyProcess, httpOrigin: OriginProcess) -> None:
    """
    An absolute-form C{https://} request gets 400 saying to use CONNECT, and
    nothing reaches the origin.
    """
    authority = f"{LOCAL}:{httpOrigin.port}"
    with RawClient(forwarder.port) as client:
        client.send(requestHead("GET", f"https://{authority}/x", authority))
        response = client.response()
        assert response.head.status == 400, response.head.raw
        body = errorBody(response)
        assert body.startswith("400 Bad Request: ") and "CONNECT" in body, body
        assert client.atEnd()
    assert originLines(httpOrigin, "connection") == []


def test_originFormRefused(forwarder: ProxyProcess) -> None:
    """
    An origin-form request (C{GET /path}, as to a web server) gets 400 with
    a short body.
    """
    with RawClient(forwarder.port) as client:
        client.send(requestHead("GET", "/index.html", f"{LOCAL}:{forwarder.port}"))
        response = client.response()
        assert response.head.status == 400, response.head.raw
        assert errorBody(response).startswith("400 Bad Request: ")
        assert client.atEnd()


def test_deniedHost(strictProxy: ProxyFactory, httpOrigin: OriginProcess) -> None:
    """
    A host denied by C{--deny-host} gets 403 with the reason, before any
    connection to the origin.
    """
    running = strictProxy(
        *("--allow-network", "127.0.0.0/8", "--allow-port", str(httpOrigin.port)),
        *("--deny-host", "localhost"),
    )
    authority = f"localhost:{httpOrigin.port}"
    with RawClient(running.port) as client:
        client.send(requestHead("GET", f"http://{authority}/hello/x", authority))
        response = client.response()
        assert response.head.status == 403, response.head.raw
        assert errorBody(response) == (
            "403 Forbidden: host localhost is denied by --deny-host localhost\n"
        )
    assert originLines(httpOrigin, "connection") == []


@pytest.fixture
def port80Origin(processes: list[ChildProcess[Any]]) -> Iterator[OriginProcess]:
    """
    The HTTP origin on port 80 of a loopback address that has it free;
    the test is skipped where this process may not bind port 80.
    """
    for last in range(80, 100):
        host = f"127.0.0.{last}"
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            probe.bind((host, 80))
        except PermissionError:
            pytest.skip("binding port 80 needs root or CAP_NET_BIND_SERVICE")
        except OSError:
            continue
        finally:
            probe.close()
        started = startHTTPOrigin("--port", "80", host=host)
        processes.append(started)
        yield started
        return
    pytest.fail("port 80 is taken on 127.0.0.80 to 127.0.0.99")


def test_port80ByDefault(
    strictProxy: ProxyFactory, port80Origin: OriginProcess
) -> None:
    """
    With the default port rules, a forwarded request reaches port 80 (a
    URL without a port) and C{Host} names no port, while a CONNECT to port
    80 is still refused.
    """
    running = strictProxy("--allow-network", "127.0.0.0/8")
    host = port80Origin.host
    with RawClient(running.port) as client:
        client.send(requestHead("GET", f"http://{host}/echo-head", host))
        response = client.response()
        assert response.head.status == 200, response.head.raw
        seen = json.loads(response.body)
        assert [v for n, v in seen["headers"] if n.lower() == "host"] == [host]
    with RawClient(running.port) as client:
        client.send(requestHead("CONNECT", f"{host}:80", f"{host}:80"))
        response = client.response()
        assert response.head.status == 403, response.head.raw
        assert errorBody(response) == (
            "403 Forbidden: port 80 is not allowed (see --allow-port)\n"
        )
