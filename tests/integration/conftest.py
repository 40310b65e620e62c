# -*- test-case-name: tests.integration.test_clients -*-
"""
Fixtures of the integration tests: a throwaway PKI, origin servers and proxy
processes, each stopped (by the PID it was started with) when the test ends,
whether it passed or not.

No fixture here touches the reactor: the proxy runs in its own process.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration._pki import TLSFiles, makeTLSFiles
from tests.integration._processes import (
    LISTEN_ANY_PORT,
    ChildProcess,
    OriginFactory,
    OriginProcess,
    ProxyFactory,
    ProxyProcess,
    proxyCommand,
    stopAll,
)
from tests.integration._sockets import IPV4, LOCAL, Loopback


@pytest.fixture(scope="session")
def tlsCertificate() -> Iterator[TLSFiles]:
    """
    A CA and a server certificate for C{localhost} and C{127.0.0.1}, in a
    directory removed at the end of the session.
    """
    with tempfile.TemporaryDirectory(prefix="connectproxy-tls-") as directory:
        yield makeTLSFiles(Path(directory))


@pytest.fixture
def scratchDir() -> Iterator[Path]:
    """
    An empty directory, removed with everything in it when the test ends.
    """
    with tempfile.TemporaryDirectory(prefix="connectproxy-test-") as directory:
        yield Path(directory)


@pytest.fixture
def family(request: pytest.FixtureRequest) -> Loopback:
    """
    The address family a test runs on: L{IPV4}, or each of both for a test
    marked L{bothFamilies <tests.integration._sockets.bothFamilies>}.
    """
    chosen: Loopback = getattr(request, "param", IPV4)
    return chosen


@pytest.fixture
def origin(tlsCertificate: TLSFiles) -> Iterator[OriginFactory]:
    """
    Start origin servers: C{origin("echo")}, C{origin("https")},
    C{origin("bulk")}, C{origin("push", "--bytes", "N")}; on ::1 with
    C{host="::1"}.
    """
    started: list[OriginProcess] = []

    def start(mode: str, *arguments: str, host: str = LOCAL) -> OriginProcess:
        if mode == "https":
            tls = ["--cert", str(tlsCertificate.serverCert)]
            arguments = (*tls, "--key", str(tlsCertificate.serverKey), *arguments)
        process = OriginProcess(mode, arguments, host)
        started.append(process)
        return process

    yield start
    stopAll(started)


#: The relays (C{--relay}) a test that asks for the C{relay} fixture runs
#: with, once each.
RELAYS = ("transport", "splice")


@pytest.fixture(params=RELAYS)
def relay(request: pytest.FixtureRequest) -> str:
    """
    The relay (C{--relay}) of every proxy the test starts with the C{proxy}
    fixture: a test that asks for it, or a module marked
    C{pytest.mark.usefixtures("relay")}, runs once with each of L{RELAYS}.
    """
    chosen: str = request.param
    return chosen


@pytest.fixture
def proxy(request: pytest.FixtureRequest) -> Iterator[ProxyFactory]:
    """
    Start proxies from the source tree: C{proxy("--idle-timeout", "5")}
    listens on a free port of 127.0.0.1 with those extra options;
    C{listen=[...]} replaces the listeners; C{loopbackOrigins=False} keeps
    the default destination rules.  Stopping one fails the test if it
    logged an unhandled error.  In a test that uses the C{relay} fixture,
    each runs with that C{--relay}.
    """
    started: list[ProxyProcess] = []
    relayArgs: tuple[str, ...] = ()
    if "relay" in request.fixturenames:
        relayArgs = ("--relay", request.getfixturevalue("relay"))

    def start(
        *extraArgs: str,
        listen: Iterable[str] = (LISTEN_ANY_PORT,),
        loopbackOrigins: bool = True,
    ) -> ProxyProcess:
        listen = list(listen)
        process = ProxyProcess(
            proxyCommand((*relayArgs, *extraArgs), listen, loopbackOrigins),
            listeners=len(listen),
        )
        started.append(process)
        return process

    yield start
    stopAll(started)


@pytest.fixture
def processes() -> Iterator[list[ChildProcess[Any]]]:
    """
    A list a test appends the processes it starts to, each stopped (by PID)
    when the test ends.
    """
    started: list[ChildProcess[Any]] = []
    yield started
    stopAll(started)


@pytest.fixture
def strictProxy(processes: list[ChildProcess[Any]]) -> ProxyFactory:
    """
    Start proxies with the default destination rules (no loopback, port 443
    only) plus the options given.
    """

    def start(*extraArgs: str) -> ProxyProcess:
        started = ProxyProcess(proxyCommand(extraArgs, loopbackOrigins=False))
        processes.append(started)
        return started

    return start


@pytest.fixture(scope="module")
def echoOrigin() -> Iterator[OriginProcess]:
    """
    A plain TCP echo origin, shared by the tests of a module.
    """
    started = OriginProcess("echo", ())
    try:
        yield started
    finally:
        stopAll([started])
