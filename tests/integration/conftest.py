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

from tests.integration._modes import ONE_PROCESS, PROCESS_MODES, withWorkers
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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{ONE_PROCESS}(reason): run a proxy test in one process only, not also"
        " with --workers 2 (see tests/integration/_modes.py)",
    )


@pytest.hookimpl(trylast=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """
    Run every test that starts a proxy with the C{proxy} or C{strictProxy}
    fixture, or asks for C{workerArgs}, once in each of L{PROCESS_MODES},
    or only in the first (C{one}) when it is marked L{onlyOneProcess
    <tests.integration._modes.onlyOneProcess>}; the ids follow the relay's:
    C{test_x[splice-workers2]}.
    """
    if "processMode" not in metafunc.fixturenames:
        return
    modes = list(PROCESS_MODES)
    marker = metafunc.definition.get_closest_marker(ONE_PROCESS)
    if marker is not None:
        if not (marker.args and str(marker.args[0]).strip()):
            raise pytest.UsageError(f"{metafunc.definition.nodeid}: say why")
        # Parametrized all the same, with the one mode only: a module's
        # shared proxies (module-scoped, built from workerArgs) are then
        # rebuilt when the mode changes, as for the other tests.
        modes = ["one"]
    metafunc.parametrize("processMode", modes, scope="module")


@pytest.fixture(scope="module")
def processMode() -> str:
    """
    The process mode (a key of L{PROCESS_MODES}) of the proxies a test
    starts: every test that asks for it is parametrized with the modes it
    runs in (L{pytest_generate_tests}), and this default is not used.
    Module-scoped, so that a module's shared proxies run in both modes
    too.
    """
    return "one"


@pytest.fixture(scope="module")
def workerArgs(processMode: str) -> tuple[str, ...]:
    """
    The options of the test's process mode, for a test that builds the
    proxy's command line itself (pass them to L{withWorkers
    <tests.integration._modes.withWorkers>}).
    """
    return PROCESS_MODES[processMode]


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
def proxy(
    request: pytest.FixtureRequest, workerArgs: tuple[str, ...]
) -> Iterator[ProxyFactory]:
    """
    Start proxies from the source tree: C{proxy("--idle-timeout", "5")}
    listens on a free port of 127.0.0.1 with those extra options;
    C{listen=[...]} replaces the listeners; C{loopbackOrigins=False} keeps
    the default destination rules.  Stopping one fails the test if it
    logged an unhandled error.  In a test that uses the C{relay} fixture,
    each runs with that C{--relay}; each runs in the test's process mode
    (C{workerArgs}), unless the test passes C{--workers} itself.
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
            proxyCommand(
                withWorkers(workerArgs, (*relayArgs, *extraArgs)),
                listen,
                loopbackOrigins,
            ),
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
def strictProxy(
    processes: list[ChildProcess[Any]], workerArgs: tuple[str, ...]
) -> ProxyFactory:
    """
    Start proxies with the default destination rules (no loopback, port 443
    only) plus the options given, in the test's process mode.
    """

    def start(*extraArgs: str) -> ProxyProcess:
        command = proxyCommand(
            withWorkers(workerArgs, extraArgs), loopbackOrigins=False
        )
        started = ProxyProcess(command)
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
