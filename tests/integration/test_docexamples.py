# -*- test-case-name: tests.integration.test_docexamples -*-
"""
The configuration examples of C{docs/deployment.md} and C{docs/operating.md}
run for real, on loopback, so that they cannot rot: each is taken from the
Markdown (L{tests._docexamples.EXAMPLES} says where), rewritten by a table
of replacements (every replacement must apply, and no path of the machine's
own configuration may be left), and given to the program it configures:
the C{haproxy.cfg} to HAProxy in front of two proxies started with the
documented command, the C{squid.conf} to squid as the parent of a proxy
started with the documented TOML file, the TLS listener's command to the
proxy with C{curl} through it, the certbot hook to C{sh} against that
proxy, the systemd units' commands to the proxy as systemd would run them
(socket activation, credentials, C{$MAINPID}) after C{systemd-analyze
verify}, the logrotate file to C{logrotate} against a proxy writing its
log, and the transcripts to the commands they show.

The replacements share a few conventions: the documented hosts become
loopback addresses (C{10.0.0.5} and C{10.0.0.6} the proxies C{127.0.0.5}
and C{127.0.0.6}, C{10.0.0.2} the parent C{127.0.0.2}), the documented
ports free ones, files under C{/etc} files in the test's directory, and
C{.venv/bin/} or C{/opt/connectproxy/bin/} the environment running the
tests.  What a test adds (loopback origins allowed, an HAProxy stats socket
to read its health checks) is a replacement too, named as an addition.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from connectproxy import __version__
from tests._docexamples import DOCS, EXAMPLES, CodeBlock, rewrite
from tests.integration._output import LineCollector
from tests.integration._pki import TLSFiles, renewTLSFiles
from tests.integration._processes import (
    BIN_DIR,
    LOOPBACK_ORIGINS,
    REPO_ROOT,
    ChildProcess,
    OriginFactory,
    OriginProcess,
    ProxyProcess,
    cleanEnvironment,
    sourceEnvironment,
    waitForPath,
)
from tests.integration._sockets import (
    LOCAL,
    closedPort,
    connectRequest,
    readExactly,
    readResponseHead,
    readToEnd,
)
from tests.integration._squid import (
    SquidProcess,
    giveToSquid,
    housekeeping,
    htpasswdFile,
    squidExecutable,
    writeConfigLines,
)
from tests.integration.test_certificates import pythonSees, serial
from tests.integration.test_systemd import ACTIVATE, UNITS, message, unitKeys

pytestmark = pytest.mark.integration

HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
LOGROTATE = shutil.which("logrotate") or shutil.which("logrotate", path="/usr/sbin")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")

needsHAProxy = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")
needsSquid = pytest.mark.skipif(
    squidExecutable() is None, reason="squid is not installed"
)
needsLogrotate = pytest.mark.skipif(
    LOGROTATE is None, reason="logrotate is not installed"
)

#: The user and password of the proxies' htpasswd files.
USER, PASSWORD = "alice", "correct horse"

#: The documented proxies (10.0.0.5, 10.0.0.6) and the client (in
#: 192.0.2.0/24), on loopback.
PROXY1, PROXY2, CLIENT = "127.0.0.5", "127.0.0.6", "127.0.0.7"

#: The documented parent (10.0.0.2), on loopback.
PARENT = "127.0.0.2"

#: The programs of the environment running the tests, for the documented
#: C{.venv/bin/twist}.
TWIST = str(BIN_DIR / "twist")

#: The test reads the proxy's JSON log rather than the text one.
JSON_LOG = ("--log-format text", "--log-format json")


def commandOf(block: CodeBlock, replacements: Sequence[tuple[str, str]]) -> list[str]:
    """
    The one command of a shell example, rewritten and split into words.

    @param block: A shell block with exactly one command.
    @param replacements: The rewriting table (L{rewrite}).
    @return: The command line.
    """
    commands = block.shell().commands()
    assert len(commands) == 1, f"{block.where()}: one command expected: {commands}"
    return shlex.split(rewrite(commands[0], replacements, block.where()))


def proxyAuthorization(user: str = USER, password: str = PASSWORD) -> str:
    """
    A C{Proxy-Authorization} field line with Basic credentials.
    """
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Proxy-Authorization: Basic {token}"


def connectWithPassword(host: str, port: int) -> bytes:
    """
    A CONNECT request head with L{USER}'s credentials.
    """
    authority = f"{host}:{port}"
    return (
        f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
        f"{proxyAuthorization()}\r\n\r\n"
    ).encode("ascii")


def tunnel(
    port: int,
    target: OriginProcess,
    source: str = LOCAL,
    host: str = LOCAL,
    proxyHost: str = LOCAL,
) -> socket.socket:
    """
    Open a tunnel with L{USER}'s credentials to an echo origin, from a
    loopback address, and check that it echoes.

    @param port: The proxy's (or the balancer's) port.
    @param target: The echo origin.
    @param source: The address to connect from.
    @param host: The target as the request names it.
    @param proxyHost: The proxy's (or the balancer's) address.
    @return: The client's socket, the tunnel open.
    """
    sock = socket.socket()
    sock.settimeout(20)
    try:
        sock.bind((source, 0))
        sock.connect((proxyHost, port))
        sock.sendall(connectWithPassword(host, target.port))
        response, rest = readResponseHead(sock)
        assert (response.status, rest) == (200, b""), response.raw
        sock.sendall(b"documented")
        assert readExactly(sock, 10) == b"documented"
    except BaseException:
        sock.close()
        raise
    return sock


def refusal(proxy: ProxyProcess, host: str, targetPort: int) -> tuple[int, bytes]:
    """
    Ask a proxy for a tunnel with L{USER}'s credentials, expecting a
    refusal.

    @return: The status and the body.
    """
    assert proxy.host is not None
    with socket.create_connection((proxy.host, proxy.port), timeout=20) as sock:
        sock.sendall(connectWithPassword(host, targetPort))
        response, rest = readResponseHead(sock)
        return response.status, rest + readToEnd(sock)


def run(argv: Sequence[str], **extra: Any) -> subprocess.CompletedProcess[str]:
    """
    Run a command that exits by itself within 30 seconds.

    @return: Its result, stdout and stderr as text.
    """
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        stdin=subprocess.DEVNULL,
        **extra,
    )


def curl(*arguments: str) -> str:
    """
    Run curl, which must succeed.

    @return: What it printed on stdout.
    """
    result = run(["curl", "-sS", "--max-time", "20", *arguments])
    assert result.returncode == 0, result.stderr
    return result.stdout


def distinctPorts(host: str, count: int) -> list[int]:
    """
    Ports on C{host} that nothing listens on now, all different.
    """
    probes = [socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)]
    try:
        probes += [socket.socket(probes[0].family) for _ in range(count - 1)]
        for probe in probes:
            probe.bind((host, 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def passwordFile(scratchDir: Path, name: str = "htpasswd") -> Path:
    """
    An htpasswd file with L{USER} (bcrypt), readable by squid's user too.
    """
    return htpasswdFile(scratchDir / name, {USER: PASSWORD, "proxyuser": "secret"})


def start(
    processes: list[ChildProcess[Any]], argv: list[str], cwd: Path
) -> ProxyProcess:
    """
    Start a proxy from a documented command line, stopped by PID at the end.
    """
    running = ProxyProcess(argv, cwd=cwd)
    processes.append(running)
    return running


# Behind a load balancer: HAProxy in front of two proxies.


def balancerProxies(
    processes: list[ChildProcess[Any]],
    scratchDir: Path,
    port: int,
    metrics: Callable[[str], list[str]] = lambda address: [],
) -> tuple[ProxyProcess, ProxyProcess]:
    """
    Start the documented proxy behind a balancer twice, on 127.0.0.5 and
    127.0.0.6 with one port, serving the client 127.0.0.7 with L{USER}'s
    password.

    @param port: The port, free on both addresses.
    @param metrics: Makes more options (a metrics listener) for a proxy's
        address.
    @return: The two proxies.
    """
    block = EXAMPLES["balancer command"].block()
    users = passwordFile(scratchDir)
    started = []
    for address in [PROXY1, PROXY2]:
        argv = commandOf(
            block,
            [
                (".venv/bin/twist", TWIST),
                JSON_LOG,
                ("tcp:3128:interface=10.0.0.5", f"tcp:{port}:interface={address}"),
                # Loopback, where HAProxy connects from, is trusted anyway.
                ("10.0.0.2/32", f"{PARENT}/32"),
                ("192.0.2.0/24", f"{CLIENT}/32"),
                ("/etc/connectproxy/htpasswd", str(users)),
            ],
        )
        # Addition: the test's origins are on loopback, on any port.
        argv += [*LOOPBACK_ORIGINS, *metrics(address)]
        started.append(start(processes, argv, scratchDir))
    return started[0], started[1]


def haproxyDescriptors(config: str) -> list[tuple[str, str]]:
    """
    HAProxy needs two descriptors per connection (and a few more): for
    C{maxconn N} it raises its own limit to about C{2 N}, and refuses to
    start where it cannot (a container without C{CAP_SYS_RESOURCE} whose
    hard limit is lower).  There, and only there, C{maxconn} is lowered to
    what the limit allows.

    @param config: HAProxy's configuration.
    @return: The replacement, or none.
    """
    match = re.search(r"^ +maxconn (\d+)$", config, re.M)
    assert match is not None, config
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY or hard >= 2 * int(match.group(1)) + 100:
        return []
    return [(match.group(0), f"    maxconn {(hard - 100) // 2}")]


def startHAProxy(
    processes: list[ChildProcess[Any]],
    scratchDir: Path,
    config: str,
    replacements: list[tuple[str, str]],
    where: str,
) -> tuple[int, Path]:
    """
    Run HAProxy with a documented configuration, its C{bind :3128} replaced
    by a socket the test binds on 127.0.0.1 and passes to it, and a stats
    socket added (to read its health checks).

    @param config: The configuration.
    @param replacements: More of the rewriting table.
    @param where: Names the example in messages.
    @return: The port it listens on, and its stats socket.
    """
    assert HAPROXY is not None
    stats = scratchDir / "haproxy.sock"
    with socket.socket() as front:
        front.bind((LOCAL, 0))
        front.listen(16)
        table = [
            *haproxyDescriptors(config),
            ("bind :3128", f"bind fd@{front.fileno()}"),
            # Addition: where the test reads the health checks' results.
            ("global\n", f"global\n    stats socket {stats}\n"),
            *replacements,
        ]
        path = scratchDir / "haproxy.cfg"
        path.write_text(rewrite(config, table, where), encoding="ascii")
        checked = run([HAPROXY, "-c", "-f", str(path)], pass_fds=[front.fileno()])
        assert checked.returncode == 0, checked.stdout + checked.stderr
        balancer = ChildProcess(
            [HAPROXY, "-db", "-f", str(path)],
            LineCollector,
            cleanEnvironment(),
            scratchDir,
            passFds=[front.fileno()],
        )
        processes.append(balancer)
        return int(front.getsockname()[1]), stats


def serverChecks(stats: Path) -> dict[str, tuple[str, str]]:
    """
    The result of the last health check of each server of the
    C{connectproxies} backend, from HAProxy's stats socket.

    @return: Each server's C{check_status} (C{L4OK}, C{L7OK}, ...) and
        C{check_code} (the HTTP status of an HTTP check), or nothing while
        HAProxy does not answer yet.
    """
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(stats))
            sock.sendall(b"show stat\n")
            text = readToEnd(sock).decode("utf-8")
    except OSError:
        return {}
    rows = csv.DictReader(text.removeprefix("# ").splitlines())
    return {
        row["svname"]: (row["check_status"].removeprefix("* "), row["check_code"])
        for row in rows
        if row["pxname"] == "connectproxies"
        and row["svname"] not in ("FRONTEND", "BACKEND")
    }


def waitForChecks(stats: Path, expected: tuple[str, str]) -> None:
    """
    Wait until both servers' last health check had the expected result.
    """
    wanted = {"proxy1": expected, "proxy2": expected}
    try:
        waitForPath(lambda: serverChecks(stats) == wanted, 10, "HAProxy's checks")
    except AssertionError:
        raise AssertionError(f"checks: {serverChecks(stats)}, not {wanted}") from None


def throughBalancer(
    front: int,
    proxies: tuple[ProxyProcess, ProxyProcess],
    echo: OriginProcess,
    https: OriginProcess,
    ca: TLSFiles,
) -> None:
    """
    With a tunnel open through the balancer from 127.0.0.7, curl through it
    from there too: C{balance leastconn} sends each to another proxy, and
    each proxy logs the client 127.0.0.7 (from the PROXY header) and the
    user.
    """
    with tunnel(front, echo, CLIENT):
        body = curl(
            *("-p", "-x", f"http://{LOCAL}:{front}"),
            *("--proxy-user", f"{USER}:{PASSWORD}", "--interface", CLIENT),
            *("--cacert", str(ca.caCert), f"https://{LOCAL}:{https.port}/balanced"),
        )
        assert body.endswith("path=/balanced\n")
    ports = set()
    for running in proxies:
        event = running.waitForNamed("tunnel_close")
        assert event["client"].startswith(f"{CLIENT}:")
        assert event["user"] == USER
        ports.add(event["port"])
    assert ports == {echo.port, https.port}


def eventsAfterStart(running: ProxyProcess) -> set[str]:
    """
    What a proxy logged once it listened (and its metrics listener too),
    but for Twisted's "Starting reactor" line: the names of the events.
    """
    events = running.events
    started = ("listening", "metrics_listening")
    listening = [i for i, e in enumerate(events) if e.get("event") in started]
    return {
        str(e.get("event"))
        for e in events[listening[-1] + 1 :]
        if e.get("log_format") != "Starting reactor..."
    }


@needsHAProxy
def test_haproxyExample(
    processes: list[ChildProcess[Any]],
    scratchDir: Path,
    origin: OriginFactory,
    tlsCertificate: TLSFiles,
) -> None:
    """
    The documented C{haproxy.cfg} runs in front of two proxies started with
    the documented command: its TCP checks (with the PROXY header) pass and
    leave nothing in the proxies' logs, and clients get through it to
    either proxy, which logs the client behind the balancer.
    """
    echo, https = origin("echo"), origin("https")
    port = closedPort(PROXY1)
    proxies = balancerProxies(processes, scratchDir, port)
    block = EXAMPLES["haproxy.cfg"].block()
    front, stats = startHAProxy(
        processes,
        scratchDir,
        block.text,
        [
            ("10.0.0.5:3128", f"{PROXY1}:{port}"),
            ("10.0.0.6:3128", f"{PROXY2}:{port}"),
        ],
        block.where(),
    )
    waitForChecks(stats, ("L4OK", ""))
    throughBalancer(front, proxies, echo, https, tlsCertificate)
    for running in proxies:
        assert eventsAfterStart(running) == {"tunnel_close"}


@needsHAProxy
def test_haproxyHealthzExample(
    processes: list[ChildProcess[Any]],
    scratchDir: Path,
    origin: OriginFactory,
    tlsCertificate: TLSFiles,
) -> None:
    """
    The documented backend that checks C{/healthz}, in place of the first
    configuration's, with the proxies' C{--metrics} listener as the
    guide suggests: HAProxy's HTTP checks get 200 from C{/healthz} (no
    PROXY header goes to the check port), and clients get through.
    """
    echo, https = origin("echo"), origin("https")
    section = (DOCS / "deployment.md").read_text(encoding="utf-8")
    suggested = "--metrics tcp:9108:interface=10.0.0.5"
    assert f"(say `{suggested}`)" in section
    port, metricsPort = distinctPorts(PROXY1, 2)

    def metrics(address: str) -> list[str]:
        option = rewrite(
            suggested,
            [("9108", str(metricsPort)), ("10.0.0.5", address)],
            "the --metrics option the guide suggests",
        )
        return option.split()

    proxies = balancerProxies(processes, scratchDir, port, metrics)
    base = EXAMPLES["haproxy.cfg"].block()
    backend = EXAMPLES["haproxy.cfg /healthz"].block()
    # The second block replaces the first one's backend section, which is
    # the last.
    head, found, _ = re.split(r"^(backend connectproxies\n)", base.text, flags=re.M)
    assert backend.text.startswith(found), backend.where()
    front, stats = startHAProxy(
        processes,
        scratchDir,
        head + backend.text,
        [
            ("10.0.0.5:3128", f"{PROXY1}:{port}"),
            ("10.0.0.6:3128", f"{PROXY2}:{port}"),
            ("check port 9108", f"check port {metricsPort}"),
        ],
        backend.where(),
    )
    waitForChecks(stats, ("L7OK", "200"))
    throughBalancer(front, proxies, echo, https, tlsCertificate)
    for running in proxies:
        assert eventsAfterStart(running) == {"tunnel_close"}


# The HTTPS-proxy listener, a client, a certbot hook, and a proxy that uses
# it as its parent.


def certbotLineage(directory: Path, files: TLSFiles) -> Path:
    """
    Lay out a certificate as certbot does (C{cert.pem}, C{chain.pem},
    C{privkey.pem}), the CA standing for the intermediate.

    @return: The directory.
    """
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(files.serverCert, directory / "cert.pem")
    shutil.copyfile(files.caCert, directory / "chain.pem")
    shutil.copyfile(files.serverKey, directory / "privkey.pem")
    return directory


def httpsListener(
    processes: list[ChildProcess[Any]], scratchDir: Path, files: TLSFiles
) -> tuple[ProxyProcess, Path]:
    """
    Start the documented HTTPS-proxy listener on 127.0.0.1, its files in
    the test's directory.

    @return: The proxy and its certificate directory.
    """
    tls = certbotLineage(scratchDir / "tls", files)
    users = passwordFile(scratchDir)
    port = closedPort()
    argv = commandOf(
        EXAMPLES["https listener command"].block(),
        [
            (".venv/bin/twist", TWIST),
            JSON_LOG,
            # Loopback only, rather than every address.
            ("ssl:3129:", f"ssl:{port}:interface={LOCAL}:"),
            ("/etc/connectproxy/tls", str(tls)),
            ("/etc/connectproxy/htpasswd", str(users)),
        ],
    )
    # Addition: the test's origins are on loopback, on any port.
    return start(processes, argv + list(LOOPBACK_ORIGINS), scratchDir), tls


def test_httpsListenerExample(
    processes: list[ChildProcess[Any]],
    scratchDir: Path,
    origin: OriginFactory,
    tlsCertificate: TLSFiles,
) -> None:
    """
    The documented HTTPS-proxy listener, with a certbot-style certificate,
    chain and key, serves the documented curl command (given the private
    CA with C{--proxy-cacert}, as the guide says).
    """
    https = origin("https")
    running, _ = httpsListener(processes, scratchDir, tlsCertificate)
    section = (DOCS / "deployment.md").read_text(encoding="utf-8")
    assert "(`--proxy-cacert ca.pem`)" in section
    argv = commandOf(
        EXAMPLES["https curl"].block(),
        [
            ("proxy.example:3129", f"localhost:{running.port}"),
            # curl would ask for the password on its terminal.
            ("--proxy-user alice", f"--proxy-user '{USER}:{PASSWORD}'"),
            ("https://example.com/", f"https://localhost:{https.port}/documented"),
            # Additions: the proxy's private CA, as the guide says, and
            # the origin's (the same here).
            (
                "curl ",
                f"curl -sS --proxy-cacert {tlsCertificate.caCert} "
                f"--cacert {tlsCertificate.caCert} ",
            ),
        ],
    )
    result = run(argv)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("path=/documented\n")
    event = running.waitForNamed("tunnel_close")
    assert (event["user"], event["port"]) == (USER, https.port)


def test_certbotHookExample(
    processes: list[ChildProcess[Any]],
    scratchDir: Path,
    tlsCertificate: TLSFiles,
) -> None:
    """
    The documented certbot deploy hook installs a renewed certificate,
    chain and key where the documented HTTPS-proxy listener reads them
    (the key readable by its owner and group only) and reloads it: the
    proxy logs the new serial number and serves the new certificate.
    """
    running, tls = httpsListener(processes, scratchDir, tlsCertificate)
    assert pythonSees(running.port, tlsCertificate) == serial(tlsCertificate)
    renewed = renewTLSFiles(tlsCertificate, scratchDir / "renewed")
    lineage = certbotLineage(scratchDir / "live", renewed)
    block = EXAMPLES["certbot hook"].block()
    hook = scratchDir / "hook"
    hook.write_text(
        rewrite(
            block.text,
            [
                ("dir=/etc/connectproxy/tls", f"dir={tls}"),
                # The connectproxy group does not exist here.
                ("-o root -g connectproxy", f"-o {os.getuid()} -g {os.getgid()}"),
                # Outside systemd, the guide says, send the signal.
                ("systemctl reload connectproxy", f"kill -HUP {running.pid}"),
            ],
            block.where(),
        ),
        encoding="utf-8",
    )
    hook.chmod(0o755)
    result = run(
        [str(hook)], env=cleanEnvironment(RENEWED_LINEAGE=str(lineage)), cwd=scratchDir
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rotated = running.waitForNamed("tls_certificate_reloaded")
    assert rotated["serial"] == format(serial(renewed), "x")
    assert pythonSees(running.port, tlsCertificate) == serial(renewed)
    assert (tls / "privkey.pem").stat().st_mode & 0o777 == 0o640
    assert sorted(path.name for path in tls.iterdir()) == [
        "cert.pem",
        "chain.pem",
        "privkey.pem",
    ]


def test_httpsParentExample(
    processes: list[ChildProcess[Any]],
    scratchDir: Path,
    origin: OriginFactory,
    tlsCertificate: TLSFiles,
) -> None:
    """
    The documented TOML lines for a parent reached over TLS with a private
    CA make a proxy tunnel through the documented HTTPS-proxy listener,
    with the parent's credentials.
    """
    echo = origin("echo")
    parent, _ = httpsListener(processes, scratchDir, tlsCertificate)
    block = EXAMPLES["https parent toml"].block()
    config = scratchDir / "partner.toml"
    listen = f'listen = ["tcp:0:interface={LOCAL}"]\n'
    config.write_text(
        # Addition: where the proxy listens.
        listen
        + rewrite(
            block.text,
            [
                ("gw.partner.example:3129", f"localhost:{parent.port}"),
                ("/etc/connectproxy/partner-ca.pem", str(tlsCertificate.caCert)),
            ],
            block.where(),
        ),
        encoding="utf-8",
    )
    argv = [TWIST, "--log-format", "json", "connectproxy", "--config", str(config)]
    running = start(processes, argv + list(LOOPBACK_ORIGINS), scratchDir)
    with tunnel(running.port, echo):
        pass
    assert running.waitForNamed("tunnel_close")["upstream"].endswith(f":{parent.port}")
    event = parent.waitForNamed("tunnel_close")
    assert (event["user"], event["port"]) == ("proxyuser", echo.port)


# squid as the parent.


@needsSquid
def test_squidParentExample(
    processes: list[ChildProcess[Any]],
    scratchDir: Path,
    origin: OriginFactory,
) -> None:
    """
    The documented C{squid.conf} runs squid as the parent (Basic
    authentication with its own helper, CONNECT to the TLS port only,
    clients from the proxy's address only) of a proxy run by the
    documented command with the documented TOML file, which C{--check-config}
    accepts first: tunnels go through squid as C{proxyuser}, from the
    proxy's address; squid refuses another port (403); the routed name
    goes directly.
    """
    echo, other = origin("echo"), origin("echo")
    scratchDir.chmod(0o711)
    squidDir = scratchDir / "squid"
    squidDir.mkdir()
    giveToSquid(squidDir)
    squidPasswords = htpasswdFile(squidDir / "passwords", {"proxyuser": "secret"})
    squidPort = closedPort(PARENT)
    block = EXAMPLES["squid.conf"].block()
    lines = rewrite(
        block.text,
        [
            ("10.0.0.2:3128", f"{PARENT}:{squidPort}"),
            ("/etc/squid/passwords", str(squidPasswords)),
            ("src 10.0.0.5/32", f"src {PROXY1}/32"),
            # The TLS port is the test origin's.
            ("port 443", f"port {echo.port}"),
        ],
        block.where(),
    ).splitlines()
    # Additions: squid's files in the test's directory, and no DNS.
    lines += [*housekeeping(squidDir), "dns_nameservers 127.0.0.1"]
    config = writeConfigLines(squidDir, lines)
    parent = SquidProcess(squidDir, host=PARENT, config=config, port=squidPort)
    processes.append(parent)

    users = passwordFile(scratchDir)
    block = EXAMPLES["parent toml"].block()
    toml = scratchDir / "connectproxy.toml"
    toml.write_text(
        rewrite(
            block.text,
            [
                ("tcp:3128:interface=10.0.0.5", f"tcp:0:interface={PROXY1}"),
                ('"10.0.0.0/16"', '"127.0.0.0/8"'),
                ("/etc/connectproxy/htpasswd", str(users)),
                ("10.0.0.2:3128", f"{PARENT}:{squidPort}"),
                ("*.intranet.example=direct", "localhost=direct"),
                ('allow-network = ["10.20.0.0/16"]', 'allow-network = ["127.0.0.0/8"]'),
            ],
            block.where(),
        )
        # Additions: the proxy's host has the one address 10.0.0.5 (squid
        # lets only it in); the test's origins are on any port.
        + f'outgoing-address = ["{PROXY1}"]\nallow-port = ["1-65535"]\n',
        encoding="utf-8",
    )
    argv = commandOf(
        EXAMPLES["parent command"].block(),
        [
            (".venv/bin/twist", TWIST),
            JSON_LOG,
            ("/etc/connectproxy/connectproxy.toml", str(toml)),
        ],
    )
    checked = run([*argv, "--check-config"], env=sourceEnvironment(), cwd=scratchDir)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "configuration OK" in checked.stdout
    running = start(processes, argv, scratchDir)
    assert running.host == PROXY1

    with tunnel(running.port, echo, proxyHost=PROXY1):
        pass
    event = running.waitForNamed("tunnel_close")
    assert (event["user"], event["upstream"]) == (USER, f"{PARENT}:{squidPort}")
    waitForPath(
        lambda: (
            re.search(
                rf" {re.escape(PROXY1)} TCP_TUNNEL/200 .* CONNECT "
                rf"{re.escape(LOCAL)}:{echo.port} proxyuser ",
                parent.accessLog(),
            )
            is not None
        ),
        10,
        "squid's log of the tunnel from the proxy's address as proxyuser",
    )
    assert refusal(running, LOCAL, other.port) == (
        403,
        b"403 Forbidden: the parent proxy denied the tunnel\n",
    )
    with tunnel(running.port, echo, host="localhost", proxyHost=PROXY1):
        pass
    event = running.waitForNamed("tunnel_close", host="localhost")
    assert event["upstream"] == f"{LOCAL}:{echo.port}"


# Several processes: the documented command with --workers.


def test_workersExample(
    processes: list[ChildProcess[Any]],
    scratchDir: Path,
    origin: OriginFactory,
) -> None:
    """
    The documented command with C{--workers} runs a supervisor and its
    workers on one port: both listen, each names itself in the log, and a
    client of the allowed network tunnels with a password.
    """
    echo = origin("echo")
    users = passwordFile(scratchDir)
    argv = commandOf(
        EXAMPLES["workers command"].block(),
        [
            (".venv/bin/twist", TWIST),
            JSON_LOG,
            ("--listen tcp:3128 ", f"--listen tcp:0:interface={PROXY1} "),
            ("10.0.0.0/8", f"{CLIENT}/32"),
            ("/etc/connectproxy/htpasswd", str(users)),
            # Two workers, however many CPUs this machine has.
            ("--workers auto", "--workers 2"),
        ],
    )
    # Addition: the test's origins are on loopback, on any port.
    running = start(processes, [*argv, *LOOPBACK_ORIGINS], scratchDir)
    ready = running.waitForNamed("workers_ready", 30)
    assert ready["workers"] == 2
    assert ready["addresses"] == f"{PROXY1}:{running.port}"
    with tunnel(running.port, echo, source=CLIENT, proxyHost=PROXY1):
        pass
    event = running.waitForNamed("tunnel_close")
    assert event["user"] == USER and event["worker"] in (1, 2)


# systemd: the shipped units, and the unit of the logging section.


@pytest.fixture
def notifySocket(scratchDir: Path) -> Iterator[socket.socket]:
    """
    systemd's notification socket: a datagram socket bound to a path.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(scratchDir / "notify"))
        sock.settimeout(20)
        yield sock


def execLine(
    value: str, replacements: Sequence[tuple[str, str]], where: str
) -> list[str]:
    """
    An C{Exec...=} value of a unit, rewritten and split as systemd splits
    it (its quoting is the shell's for these lines).
    """
    return shlex.split(rewrite(value, replacements, where))


def reloadCommands(lines: Sequence[str], mainPID: int) -> list[list[str]]:
    """
    The C{ExecReload=} commands of a unit, C{$MAINPID} expanded as systemd
    expands it; one of them must signal the main process.
    """
    commands = [shlex.split(line.replace("$MAINPID", str(mainPID))) for line in lines]
    assert any("$MAINPID" in line for line in lines), lines
    return commands


def test_shippedUnitsRun(
    processes: list[ChildProcess[Any]],
    scratchDir: Path,
    notifySocket: socket.socket,
    origin: OriginFactory,
) -> None:
    """
    The shipped C{.service} unit's C{ExecStart=} runs as systemd runs it
    with the shipped C{.socket} unit: the socket of C{ListenStream=} passed
    by name (C{FileDescriptorName=}), C{%d} the credentials directory
    holding the C{LoadCredential=} file; it says C{READY=1} (C{Type=notify}),
    tunnels with the password, reloads on C{ExecReload=} (C{$MAINPID}) and
    says C{STOPPING=1} on C{SIGTERM}.  (C{test_systemd} runs
    C{systemd-analyze verify} on both units.)
    """
    echo = origin("echo")
    service = unitKeys((UNITS / "connectproxy.service").read_text(encoding="utf-8"))
    socketUnit = unitKeys((UNITS / "connectproxy.socket").read_text(encoding="utf-8"))
    credentials = scratchDir / "credentials"
    credentials.mkdir()
    name, _, source = service["Service"]["LoadCredential"][0].partition(":")
    assert source == "/etc/connectproxy/htpasswd"
    shutil.copyfile(passwordFile(scratchDir), credentials / name)
    (listen,) = socketUnit["Socket"]["ListenStream"]
    host, _, _ = listen.rpartition(":")
    with socket.socket() as activation:
        activation.bind((host, 0))
        activation.listen(int(socketUnit["Socket"]["Backlog"][0]))
        port = activation.getsockname()[1]
        argv = execLine(
            service["Service"]["ExecStart"][0],
            [
                ("/opt/connectproxy/bin/twist", TWIST),
                ("%d", str(credentials)),
            ],
            "connectproxy.service ExecStart=",
        )
        env = sourceEnvironment(
            LISTEN_FDS="1",
            LISTEN_FDNAMES=socketUnit["Socket"]["FileDescriptorName"][0],
            NOTIFY_SOCKET=notifySocket.getsockname(),
            CREDENTIALS_DIRECTORY=str(credentials),
        )
        fd = activation.fileno()
        # Addition: the test's origin is on loopback, on any port.
        argv = [sys.executable, "-c", ACTIVATE, str(fd), *argv, *LOOPBACK_ORIGINS]
        proxy = ChildProcess(argv, LineCollector, env, scratchDir, passFds=[fd])
        processes.append(proxy)
    assert service["Service"]["Type"] == ["notify"]
    assert message(notifySocket)["READY"] == "1"
    with tunnel(port, echo):
        pass
    proxy.output.waitFor(
        lambda line: f"{USER} -> {LOCAL}:{echo.port}" in line, 10, "the tunnel's line"
    )
    for reload in reloadCommands(service["Service"]["ExecReload"], proxy.pid):
        result = run(reload)
        assert result.returncode == 0, result.stderr
    assert message(notifySocket)["RELOADING"] == "1"
    assert message(notifySocket)["READY"] == "1"
    proxy.process.send_signal(signal.SIGTERM)
    assert message(notifySocket)["STOPPING"] == "1"
    assert proxy.stop() in (0, -signal.SIGTERM), proxy.describe()


def test_journaldUnitExample(
    processes: list[ChildProcess[Any]],
    scratchDir: Path,
    origin: OriginFactory,
) -> None:
    """
    The unit of "Keeping logs bounded" passes C{systemd-analyze verify}
    (where it exists), and its commands run with the shipped example
    configuration file as C{/etc/connectproxy/connectproxy.toml}:
    C{ExecStartPre=} checks it, C{ExecStart=} serves with a text log, and
    C{ExecReload=} checks it again and reloads the proxy.
    """
    echo = origin("echo")
    block = EXAMPLES["journald unit"].block()
    config = scratchDir / "connectproxy.toml"
    port = closedPort()
    example = (REPO_ROOT / "docs" / "examples" / "connectproxy.toml").read_text(
        encoding="utf-8"
    )
    config.write_text(
        rewrite(
            example,
            [
                ("tcp:3128:", f"tcp:{port}:"),
                # The test's origin is on loopback, on any port.
                ('# allow-port = ["443"]', 'allow-port = ["1-65535"]'),
                ("allow-network = []", 'allow-network = ["127.0.0.0/8"]'),
            ],
            "docs/examples/connectproxy.toml",
        ),
        encoding="utf-8",
    )
    unit = rewrite(
        block.text,
        [
            ("/opt/connectproxy/bin/connectproxy", str(BIN_DIR / "connectproxy")),
            ("/etc/connectproxy/connectproxy.toml", str(config)),
        ],
        block.where(),
    )
    (scratchDir / "connectproxy.service").write_text(unit, encoding="utf-8")
    if SYSTEMD_ANALYZE is not None:
        verified = run(
            [SYSTEMD_ANALYZE, "verify", "connectproxy.service"], cwd=scratchDir
        )
        assert (verified.returncode, verified.stdout + verified.stderr) == (0, "")
    keys = unitKeys(unit)["Service"]
    assert (keys["Restart"], keys["User"]) == (["on-failure"], ["connectproxy"])
    env = sourceEnvironment()
    (pre,) = keys["ExecStartPre"]
    checked = run(shlex.split(pre), env=env, cwd=scratchDir)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"-> {LOCAL}:{port} (plain HTTP)" in checked.stdout
    (execStart,) = keys["ExecStart"]
    proxy = ChildProcess(shlex.split(execStart), LineCollector, env, scratchDir)
    processes.append(proxy)
    proxy.output.waitFor(
        lambda line: f"connectproxy listening on {LOCAL}:{port}" in line,
        20,
        "the proxy to listen",
    )
    with socket.create_connection((LOCAL, port), timeout=20) as sock:
        sock.sendall(connectRequest(LOCAL, echo.port))
        response, _ = readResponseHead(sock)
        assert response.status == 200
    proxy.output.waitFor(
        lambda line: "] tunnel closed " in line, 10, "the tunnel's line"
    )
    for argv in reloadCommands(keys["ExecReload"], proxy.pid):
        result = run(argv, env=env, cwd=scratchDir)
        assert result.returncode == 0, result.stdout + result.stderr
    proxy.output.waitFor(
        lambda line: "configuration reloaded" in line, 10, "the reload's line"
    )


# logrotate.


@needsLogrotate
def test_logrotateExample(
    processes: list[ChildProcess[Any]], scratchDir: Path, origin: OriginFactory
) -> None:
    """
    The documented logrotate file, for a proxy writing its log with
    C{--log-file}: C{logrotate --debug} accepts it, and a forced rotation
    (C{copytruncate}) keeps the old lines in C{connectproxy.log.1} while
    the proxy goes on writing at the start of the emptied file (it appends:
    no hole of NUL bytes).
    """
    assert LOGROTATE is not None
    echo = origin("echo")
    logs = scratchDir / "log"
    logs.mkdir()
    logFile = logs / "connectproxy.log"
    block = EXAMPLES["logrotate"].block()
    config = scratchDir / "logrotate.conf"
    config.write_text(
        rewrite(
            block.text,
            [
                ("/var/log/connectproxy/", f"{logs}/"),
            ],
            block.where(),
        ),
        encoding="utf-8",
    )
    config.chmod(0o644)
    state = scratchDir / "logrotate.state"
    argv = [str(BIN_DIR / "connectproxy"), "--log-format", "text"]
    argv += ["--log-file", str(logFile), "--listen", f"tcp:0:interface={LOCAL}"]
    proxy = ChildProcess(
        [*argv, *LOOPBACK_ORIGINS], LineCollector, sourceEnvironment(), scratchDir
    )
    processes.append(proxy)

    def logged(text: str) -> Callable[[], bool]:
        return lambda: logFile.exists() and text in logFile.read_text()

    waitForPath(logged("connectproxy listening on"), 20, "the listening line")
    match = re.search(r"listening on 127\.0\.0\.1:(\d+)", logFile.read_text())
    assert match is not None
    port = int(match.group(1))

    dry = run([LOGROTATE, "--debug", "--state", str(state), str(config)])
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"considering log {logFile}" in dry.stderr + dry.stdout
    assert "error" not in (dry.stderr + dry.stdout).lower()

    rotated = run([LOGROTATE, "--force", "--state", str(state), str(config)])
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    old = logs / "connectproxy.log.1"
    assert "connectproxy listening on" in old.read_text()
    assert logFile.stat().st_size == 0
    with socket.create_connection((LOCAL, port), timeout=20) as sock:
        sock.sendall(connectRequest(LOCAL, echo.port))
        response, _ = readResponseHead(sock)
        assert response.status == 200
    waitForPath(logged("tunnel closed "), 10, "the tunnel's line in the new file")
    content = logFile.read_bytes()
    assert b"\0" not in content
    assert b"] tunnel closed " in content.splitlines()[0], content[:200]


# The transcripts.


def test_usageErrorTranscript(scratchDir: Path) -> None:
    """
    The transcript of a bad option shows what C{connectproxy} prints, and
    its exit status is 1.
    """
    block = EXAMPLES["usage error transcript"].block()
    command, *expected = block.text.splitlines()
    assert command.startswith("$ connectproxy ")
    argv = [str(BIN_DIR / "connectproxy"), *shlex.split(command[2:])[1:]]
    result = run(argv, env=sourceEnvironment(), cwd=scratchDir)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.splitlines() == expected


def test_listenFailureTranscript(scratchDir: Path) -> None:
    """
    The line shown for a listener whose port is in use is what
    C{connectproxy} prints then, with the port of the test.
    """
    block = EXAMPLES["listen failure transcript"].block()
    (expected,) = block.text.splitlines()
    with socket.socket() as taken:
        taken.bind((LOCAL, 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        listen = f"tcp:{port}:interface={LOCAL}"
        argv = [str(BIN_DIR / "connectproxy"), "--log-format", "text"]
        result = run(
            [*argv, "--listen", listen], env=sourceEnvironment(), cwd=scratchDir
        )
    assert result.returncode == 1
    line = rewrite(expected, [("3128", str(port))], block.where())
    assert line in (result.stdout + result.stderr).splitlines()


def test_checkConfigTranscript(scratchDir: Path, tlsCertificate: TLSFiles) -> None:
    """
    The C{--check-config} transcript is what C{connectproxy} prints for a
    configuration file with the listeners and the outgoing address it
    shows (a certificate directory of the test's, free ports, an outgoing
    address this machine has).
    """
    tls = scratchDir / "tls"
    tls.mkdir()
    shutil.copyfile(tlsCertificate.serverCert, tls / "server.pem")
    shutil.copyfile(tlsCertificate.serverKey, tls / "server.key.pem")
    plain, secure = distinctPorts("::", 2)
    config = scratchDir / "connectproxy.toml"
    block = EXAMPLES["check-config transcript"].block()
    lines = rewrite(
        block.text,
        [
            ("/etc/connectproxy/connectproxy.toml", str(config)),
            ("/etc/connectproxy/tls", str(tls)),
            ("3128", str(plain)),
            ("3129", str(secure)),
            # An address this machine has.
            ("192.0.2.10", "127.0.0.10"),
            ("connectproxy 0.1.0", f"connectproxy {__version__}"),
            # What --resolver auto chooses depends on the machine (below).
            (
                "resolver: auto -> dns (/etc/nsswitch.conf has hosts: files dns, "
                "and /etc/resolv.conf sets no ndots above 1)",
                "resolver: auto -> (as this machine allows)",
            ),
        ],
        block.where(),
    ).splitlines()
    listens = [line.split()[1] for line in lines[1:] if line.startswith("listen ")]
    outgoing = [line.split()[2] for line in lines[1:] if line.startswith("outgoing ")]
    config.write_text(
        f"listen = {json.dumps(listens)}\noutgoing-address = {json.dumps(outgoing)}\n",
        encoding="utf-8",
    )
    assert lines[0].startswith("$ connectproxy ")
    argv = [str(BIN_DIR / "connectproxy"), *shlex.split(lines[0][2:])[1:]]
    result = run(argv, env=sourceEnvironment(), cwd=scratchDir)
    assert result.returncode == 0, result.stderr
    printed = result.stdout.splitlines()
    # Which resolver --resolver auto chooses depends on this machine's
    # /etc/nsswitch.conf and /etc/resolv.conf: the line is there, and the
    # transcript shows one of its forms.
    [chosen] = [line for line in printed if line.startswith("resolver: ")]
    [shown] = [line for line in lines[1:] if line.startswith("resolver: ")]
    assert chosen.startswith("resolver: auto -> "), chosen
    assert shown.startswith("resolver: auto -> "), shown
    assert printed.index(chosen) == lines[1:].index(shown)
    assert [line for line in printed if line != chosen] == [
        line for line in lines[1:] if line != shown
    ]
