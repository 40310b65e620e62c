# -*- test-case-name: tests.integration.test_resolution -*-
"""
Name resolution in a real proxy process whose DNS server never answers, or
is the benchmark's (C{bench/dnsserver.py}), which answers and counts.

The proxy runs in a mount namespace of its own (C{unshare --mount}, Linux,
as root) where C{/etc/resolv.conf} names a DNS server that this test runs
on a loopback address, and C{/etc/hosts} holds the names that must
resolve.  The machine's own resolver configuration is never touched, and no
query leaves the loopback interface.  Where that is not permitted the tests
are skipped.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration._modes import onlyOneProcess
from tests.integration._processes import (
    ChildProcess,
    OriginFactory,
    ProxyProcess,
    proxyCommand,
)
from tests.integration._sockets import (
    LOCAL,
    connectRequest,
    readExactly,
    readResponseHead,
    readToEnd,
)

pytestmark = pytest.mark.integration

WAIT = 20.0

#: Runs a command with the files given first bind-mounted over
#: /etc/resolv.conf and /etc/hosts, in a private mount namespace.
NAMESPACE = (
    'mount --bind "$1" /etc/resolv.conf && mount --bind "$2" /etc/hosts '
    '&& shift 2 && exec "$@"'
)


def _namespaceRefusal() -> str | None:
    """
    Why the proxy cannot run in a mount namespace with its own resolver
    files here, or C{None} when it can.
    """
    if not sys.platform.startswith("linux"):
        return "mount namespaces are Linux only"
    if os.geteuid() != 0:
        return "bind-mounting /etc/resolv.conf needs root"
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    with tempfile.NamedTemporaryFile("w", prefix="connectproxy-probe-") as probe:
        try:
            command = ["unshare", "--mount", "sh", "-c", NAMESPACE, "sh"]
            result = subprocess.run(
                [*command, probe.name, probe.name, "true"],
                capture_output=True,
                timeout=WAIT,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"unshare failed: {e}"
    if result.returncode != 0:
        return f"unshare --mount is not permitted: {result.stderr!r}"
    return None


class SilentDNS:
    """
    A DNS server on UDP port 53 of a loopback address that reads every
    query and never answers, like a black-holed resolver.

    @ivar address: The loopback address it listens on.
    """

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        last: OSError | None = None
        for last4 in range(53, 253, 50):
            self.address = f"127.53.{os.getpid() % 250}.{last4}"
            try:
                self._socket.bind((self.address, 53))
                break
            except OSError as e:
                last = e
        else:
            self._socket.close()
            raise OSError(f"no loopback address for a DNS server: {last}")
        self._names: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            query = self._socket.recv(4096)
            if not query:
                return
            with self._changed:
                self._names.append(_questionName(query))
                self._changed.notify_all()

    def names(self) -> set[str]:
        """
        The names asked for so far.
        """
        with self._changed:
            return set(self._names)

    def waitForNames(self, count: int, suffix: str) -> set[str]:
        """
        Wait until C{count} different names ending in C{suffix} were asked
        for.

        @return: Those names.
        @raise AssertionError: At the deadline.
        """

        def asked() -> set[str]:
            return {n for n in self._names if n.endswith(suffix)}

        with self._changed:
            assert self._changed.wait_for(lambda: len(asked()) >= count, WAIT), (
                f"only {asked()} were asked for"
            )
            return asked()

    def close(self) -> None:
        """
        Stop reading (an empty datagram wakes the reader and stops it) and
        close.
        """
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as waker:
            waker.sendto(b"", (self.address, 53))
        self._reader.join(WAIT)
        self._socket.close()


def _questionName(query: bytes) -> str:
    """
    The name in the question of a DNS query (RFC 1035 section 4.1.2).
    """
    labels = []
    offset = 12
    while offset < len(query) and query[offset]:
        length = query[offset]
        labels.append(
            query[offset + 1 : offset + 1 + length].decode("ascii", "replace")
        )
        offset += 1 + length
    return ".".join(labels).lower()


@pytest.fixture
def silentDNS() -> Iterator[SilentDNS]:
    refusal = _namespaceRefusal()
    if refusal is not None:
        pytest.skip(refusal)
    try:
        server = SilentDNS()
    except OSError as e:
        pytest.skip(str(e))
    yield server
    server.close()


def startProxy(
    dns: SilentDNS,
    directory: Path,
    processes: list[ChildProcess[Any]],
    *options: str,
) -> ProxyProcess:
    """
    Start the proxy in its own mount namespace, where names not in its
    hosts file (only C{origin.test}, besides C{localhost}) go to C{dns},
    and every lookup that does waits 30 seconds for an answer.
    """
    resolvConf = directory / "resolv.conf"
    resolvConf.write_text(f"nameserver {dns.address}\noptions timeout:30 attempts:1\n")
    hosts = directory / "hosts"
    hosts.write_text("127.0.0.1 localhost\n127.0.0.1 origin.test\n")
    argv = ["unshare", "--mount", "sh", "-c", NAMESPACE, "sh"]
    argv += [str(resolvConf), str(hosts), *proxyCommand(options)]
    proxy = ProxyProcess(argv)
    processes.append(proxy)
    return proxy


def request(proxyPort: int, target: str, source: str = LOCAL) -> socket.socket:
    """
    Open a connection from C{source} (a loopback address) and send a
    CONNECT for C{target}.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(WAIT)
    sock.bind((source, 0))
    sock.connect((LOCAL, proxyPort))
    sock.sendall(connectRequest(target, None))
    return sock


@onlyOneProcess(
    "counts the 503s of --resolver-per-client and --resolver-threads, which"
    " are per worker (docs/operating.md, Limits are per worker)"
)
@pytest.mark.parametrize("resolver", ["system", "dns"])
def test_hangingNamesOfOneClientDoNotStarveOthers(
    silentDNS: SilentDNS,
    origin: OriginFactory,
    scratchDir: Path,
    processes: list[ChildProcess[Any]],
    resolver: str,
) -> None:
    """
    One client asking for names whose DNS server never answers takes only
    its share of the resolver threads: another client's name is resolved
    and tunnelled while those lookups hang.  At the deadline the hanging
    requests get 504 and the ones still waiting for their client's share
    503 naming the option.  With C{system} the waiting ones never reached
    the DNS server (the two threads stay stuck); with C{dns} the slots of
    the abandoned lookups are free at once, so a waiting lookup may start
    just before its own deadline (then 504), and right after the deadline
    the same client's next name is asked for at once.  The proxy then
    stops promptly although lookups are still stuck.
    """
    echo = origin("echo")
    proxy = startProxy(
        silentDNS,
        scratchDir,
        processes,
        "--resolver",
        resolver,
        "--resolver-threads",
        "4",
        "--resolver-per-client",
        "2",
        "--connect-timeout",
        "4",
    )
    hanging = [request(proxy.port, f"hang{i}.test:443") for i in range(6)]
    try:
        silentDNS.waitForNames(2, ".test")
        other = request(proxy.port, f"origin.test:{echo.port}", source="127.0.0.2")
        with other:
            response, rest = readResponseHead(other)
            assert response.status == 200, response.raw
            readable, _, _ = select.select(hanging, [], [], 0)
            assert readable == [], "a hanging request was answered first"
            other.sendall(b"ping")
            assert rest + readExactly(other, 4 - len(rest)) == b"ping"
        replies = sorted(readToEnd(sock) for sock in hanging)
    finally:
        for sock in hanging:
            sock.close()
    statuses = [reply[9:12] for reply in replies]
    for reply in replies:
        if reply[9:12] == b"503":
            assert b"--resolver-per-client" in reply, reply
        else:
            assert b"timed out resolving" in reply, reply
    asked = {name for name in silentDNS.names() if name.startswith("hang")}
    if resolver == "system":
        assert statuses == [b"503"] * 4 + [b"504"] * 2
        assert len(asked) == 2, asked
    else:
        assert statuses.count(b"504") >= 2 and set(statuses) <= {b"503", b"504"}
        assert len(asked) == statuses.count(b"504"), asked
        # Both of the client's slots are free: its next names are asked
        # for at once.
        later = [request(proxy.port, f"later{i}.test:443") for i in range(2)]
        try:
            silentDNS.waitForNames(len(asked) + 2, ".test")
        finally:
            for sock in later:
                sock.close()
    status = proxy.stop()
    assert status in (0, -signal.SIGTERM), proxy.describe()


@pytest.fixture
def answeringDNS() -> Iterator[Any]:
    """
    The benchmark's DNS server (C{bench/dnsserver.py}) on port 53 of a
    loopback address: every name under C{bench.test} is 127.0.0.1 (TTL
    300 s), with no AAAA record; it counts the queries it gets.
    """
    refusal = _namespaceRefusal()
    if refusal is not None:
        pytest.skip(refusal)
    from bench.launch import DnsServer
    from bench.measure import BenchError

    try:
        server = DnsServer(1, 300)
    except (BenchError, OSError) as e:
        pytest.skip(f"no DNS server on a loopback port 53: {e}")
    try:
        yield server
    finally:
        server.stop()


def _tunnelTo(proxyPort: int, target: str) -> None:
    """
    Open a tunnel to C{target} (an echo origin), check it echoes, close it.
    """
    with request(proxyPort, target) as sock:
        response, rest = readResponseHead(sock)
        assert response.status == 200, response.raw
        sock.sendall(b"ping")
        assert rest + readExactly(sock, 4 - len(rest)) == b"ping"


@onlyOneProcess(
    "counts DNS queries, and each worker keeps its own answer cache"
    " (docs/operating.md, Limits are per worker)"
)
@pytest.mark.parametrize("resolver, queries", [("dns", 2), ("system", 6)])
def test_answersCachedForTheirTTL(
    answeringDNS: Any,
    origin: OriginFactory,
    scratchDir: Path,
    processes: list[ChildProcess[Any]],
    resolver: str,
    queries: int,
) -> None:
    """
    With C{--resolver dns} (the default) three tunnels to one name cost one
    A and one AAAA query, their answers kept for their TTL (the missing
    AAAA for the SOA's negative TTL); with C{--resolver system} every
    tunnel asks both again.  Lookups log nothing of their own.
    """
    echo = origin("echo")
    address = answeringDNS.addresses[0]
    resolvConf = scratchDir / "resolv.conf"
    resolvConf.write_text(f"nameserver {address}\noptions timeout:5 attempts:1\n")
    hosts = scratchDir / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    argv = ["unshare", "--mount", "sh", "-c", NAMESPACE, "sh"]
    argv += [str(resolvConf), str(hosts)]
    argv += proxyCommand(["--resolver", resolver])
    proxy = ProxyProcess(argv)
    processes.append(proxy)
    for _ in range(3):
        _tunnelTo(proxy.port, f"origin.bench.test:{echo.port}")
    proxy.stop()
    answeringDNS.stop()
    assert answeringDNS.queries == {address: queries}
    # The DNS client's queries log nothing of their own.
    output = proxy.output.text()
    for noise in ("DNSDatagramProtocol", "UDP Port", "protocol", "reparsing"):
        assert noise not in output, output
