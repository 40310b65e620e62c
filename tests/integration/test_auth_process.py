# -*- test-case-name: tests.integration.test_auth_process -*-
"""
Authentication of a proxy process, seen from loopback clients: real clients
(curl, requests) and raw sockets logging in against an htpasswd file of
every hash format, the 407 challenge and retries, the failed-login limiter,
every checker C{--help-auth} offers, the ones it must not offer, duplicated
C{Proxy-Authorization} fields and password spraying.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from connectproxy.testing import connectHead
from tests.integration._modes import onlyOneProcess
from tests.integration._pki import TLSFiles
from tests.integration._processes import (
    OriginProcess,
    ProxyFactory,
    ProxyProcess,
    cleanEnvironment,
    proxyCommand,
    stopAll,
)
from tests.integration._sockets import LOCAL
from tests.integration.test_access import (
    OTHER_LOOPBACK,
    Client,
    basic,
    laterEvents,
    refusal,
    startProxies,
    tunnel,
)

pytestmark = pytest.mark.integration

REALM = 'loopback "tests"'
"""
The realm of the authenticating proxies, with quotes that must be escaped.
"""

CHALLENGE = 'Basic realm="loopback \\"tests\\"", charset="UTF-8"'
"""
The C{Proxy-Authenticate} value that L{REALM} gives.
"""

USERS = {
    # user: (htpasswd flags, password)
    "bcrypt-user": (("-B", "-C", "4"), "b-secret"),
    "apr1-user": (("-m",), "m-secret"),
    "sha-user": (("-s",), "s-secret"),
    "colons": (("-m",), "a:b:c:"),
    "jürgen": (("-B", "-C", "4"), "pä:ss:wört"),
}
"""
The users of the password file, one per hash format, and two with a colon
in the password (one of them with a name that is not ASCII).
"""

CLIENT_TIMEOUT = 30
"""
Seconds any client process may run.
"""

COMMAND_TIMEOUT = 60
"""
Seconds a proxy command that must not start may take to give up.
"""


def checkerArgument(kind: str, directory: Path) -> str:
    """
    An C{--auth} argument of this kind for C{alice}, password C{s3cret}.
    """
    if kind == "memory":
        return "memory:alice:s3cret"
    path = directory / "users"
    if kind == "file":
        path.write_text("alice:s3cret\n")
    else:
        # {SHA}: quick to verify, and written without the tool.
        digest = base64.b64encode(hashlib.sha1(b"s3cret").digest()).decode()
        path.write_text(f"alice:{{SHA}}{digest}\n")
    return f"{kind}:{path}"


@pytest.mark.parametrize("kind", ["memory", "file", "htpasswd"])
def test_offeredCheckersWork(
    proxy: ProxyFactory, echoOrigin: OriginProcess, scratchDir: Path, kind: str
) -> None:
    """
    Each checker C{--help-auth} offers admits the right password and
    challenges a wrong one.
    """
    running = proxy("--auth", checkerArgument(kind, scratchDir))
    target = f"{LOCAL}:{echoOrigin.port}"
    with Client(running.port) as client:
        client.send(connectHead(target, basic("alice", "wrong")))
        assert client.response()[0].status == 407
    with tunnel(running.port, connectHead(target, basic("alice", "s3cret"))) as client:
        client.echo(b"logged in with " + kind.encode())


def runCommand(*arguments: str) -> subprocess.CompletedProcess[str]:
    """
    Run the proxy command with these options, expecting it not to start.
    """
    return subprocess.run(
        proxyCommand(arguments),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def test_helpAuthOffersWorkingCheckers() -> None:
    """
    C{--help-auth} lists htpasswd, memory and file, not unix.
    """
    result = runCommand("--help-auth")
    assert result.returncode == 0, result.stderr
    kinds = {line.split()[0] for line in result.stdout.splitlines()[5:] if line.strip()}
    assert {"htpasswd", "memory", "file"} <= kinds
    assert "unix" not in kinds


def test_unixCheckerRefused() -> None:
    """
    C{--auth unix} stops the command before it listens, saying why.
    """
    result = runCommand("--auth", "unix")
    assert result.returncode != 0
    assert "--auth unix does not work in connectproxy" in result.stdout + result.stderr


def test_twoProxyAuthorizationFields(
    proxy: ProxyFactory, echoOrigin: OriginProcess
) -> None:
    """
    A CONNECT with two C{Proxy-Authorization} fields gets 400.
    """
    running = proxy("--auth", "memory:alice:s3cret:bob:hunter2")
    target = f"{LOCAL}:{echoOrigin.port}"
    head = connectHead(target, basic("bob", "hunter2"), basic("alice", "s3cret"))
    response, body = refusal(running.port, head)
    assert response.status == 400
    assert body == "400 Bad Request: more than one Proxy-Authorization header field\n"


@onlyOneProcess(
    "counts failed logins (--auth-max-failed-users), which are per "
    "worker (docs/operating.md, Limits are per worker)"
)
def test_sprayingBlocksTheAddress(
    proxy: ProxyFactory, echoOrigin: OriginProcess
) -> None:
    """
    Failed logins with three different user names from one address, with
    C{--auth-max-failed-users 3}, refuse the whole address with 429, even
    for a user that never failed; another address still logs in.
    """
    running = proxy(
        *("--auth", "memory:alice:s3cret", "--auth-max-failed-users", "3"),
        *("--auth-block-time", "30"),
    )
    target = f"{LOCAL}:{echoOrigin.port}"
    with Client(running.port) as client:
        for user in ["carol", "dave", "erin"]:
            client.send(connectHead(target, basic(user, "guess")))
            assert client.response()[0].status == 407
    good = connectHead(target, basic("alice", "s3cret"))
    response, body = refusal(running.port, good)
    assert response.status == 429
    assert 1 <= int(response.headers["retry-after"]) <= 30
    assert "different user names" in body
    blocked = running.waitForNamed("auth_blocked")
    assert (blocked["scope"], blocked["client"]) == ("client", LOCAL)
    with tunnel(running.port, good, source=OTHER_LOOPBACK) as client:
        client.echo(b"another address is not blocked")


# Authentication.


@pytest.fixture(scope="module")
def htpasswdTool() -> str:
    """
    The path of Apache's C{htpasswd} tool; the tests that need it are skipped
    without it, except under C{CI}.
    """
    tool = shutil.which("htpasswd")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("htpasswd is missing: install the apache2-utils package")
        pytest.skip("htpasswd is missing: install the apache2-utils package")
    return tool


def addUser(tool: str, path: Path, user: str) -> None:
    """
    Add one of L{USERS} to an htpasswd file with the real tool.
    """
    flags, password = USERS[user]
    create = [] if path.exists() else ["-c"]
    argv = [tool, *create, "-b", *flags, str(path), user, password]
    subprocess.run(argv, check=True, capture_output=True, timeout=CLIENT_TIMEOUT)


@pytest.fixture(scope="module")
def usersFile(htpasswdTool: str) -> Iterator[Path]:
    """
    An htpasswd file with every one of L{USERS}.
    """
    with tempfile.TemporaryDirectory(prefix="connectproxy-users-") as directory:
        path = Path(directory) / "users"
        for user in USERS:
            addUser(htpasswdTool, path, user)
        yield path


@pytest.fixture(scope="module")
def authProxy(usersFile: Path, workerArgs: tuple[str, ...]) -> Iterator[ProxyProcess]:
    """
    A proxy that requires a password from the users file, reaches loopback
    origins, counts no failed logins (the limiter has its own tests) and
    takes header lines of up to 16 KiB.
    """
    yield from startProxies(
        *("--auth", f"htpasswd:{usersFile}", "--auth-realm", REALM),
        *("--auth-max-failures", "0", "--auth-max-failed-users", "0"),
        *("--max-request-line", "16384"),
        workerArgs=workerArgs,
    )


@pytest.fixture(scope="module")
def httpsOrigin(tlsCertificate: TLSFiles) -> Iterator[OriginProcess]:
    """
    A TLS origin that answers C{GET}s, shared by the tests of this module.
    """
    tls = ("--cert", str(tlsCertificate.serverCert), "--key")
    started = OriginProcess("https", (*tls, str(tlsCertificate.serverKey)))
    try:
        yield started
    finally:
        stopAll([started])


def expectedBody(path: str) -> str:
    """
    The body the C{https} origin answers with.
    """
    return f"hello from the origin\npath={path}\n"


@dataclass(frozen=True)
class CurlResult:
    """
    What curl did.

    @ivar returncode: Its exit status.
    @ivar body: The response body it wrote.
    @ivar connectStatus: The proxy's answer to its CONNECT, as text.
    @ivar stderr: Its error output.
    """

    returncode: int
    body: str
    connectStatus: str
    stderr: str


def curl(proxyPort: int, url: str, ca: TLSFiles, *extra: str) -> CurlResult:
    """
    Fetch a URL with curl through the proxy, with no configuration file and
    no proxy setting from the environment.

    @param extra: More arguments, such as C{--proxy-user}.
    """
    tool = shutil.which("curl")
    if tool is None:
        pytest.skip("curl is not installed")
    argv = [tool, "-q", "-sS", "-p", "-x", f"http://{LOCAL}:{proxyPort}"]
    argv += ["--noproxy", "", "--cacert", str(ca.caCert), "--max-time", "20"]
    argv += ["--write-out", "\n%{http_connect}", *extra, url]
    result = subprocess.run(
        argv,
        capture_output=True,
        env=cleanEnvironment(),
        timeout=CLIENT_TIMEOUT,
        check=False,
    )
    body, _, status = result.stdout.decode("utf-8").rpartition("\n")
    return CurlResult(
        result.returncode, body, status, result.stderr.decode("utf-8", "replace")
    )


@pytest.mark.parametrize("user", list(USERS))
def test_curlWithPassword(
    authProxy: ProxyProcess,
    httpsOrigin: OriginProcess,
    tlsCertificate: TLSFiles,
    user: str,
) -> None:
    """
    curl logs in with each hash format, a colon in the password and a UTF-8
    user name, and the user is named in the tunnel's C{tunnel_close}.
    """
    path = "/curl/" + quote(user)
    url = f"https://localhost:{httpsOrigin.port}{path}"
    proxyUser = f"{user}:{USERS[user][1]}"
    waitForLater = laterEvents(authProxy)
    result = curl(authProxy.port, url, tlsCertificate, "--proxy-user", proxyUser)
    assert (result.returncode, result.stderr) == (0, ""), result
    assert (result.connectStatus, result.body) == ("200", expectedBody(path))
    event = waitForLater("tunnel_close", port=httpsOrigin.port)
    assert (event["user"], event["host"]) == (user, "localhost")


@pytest.mark.parametrize("credentials", [None, "bcrypt-user:wrong", "nobody:b-secret"])
def test_curlRefused(
    authProxy: ProxyProcess,
    httpsOrigin: OriginProcess,
    tlsCertificate: TLSFiles,
    credentials: str | None,
) -> None:
    """
    curl without credentials, with a wrong password or an unknown user gets
    407 to its CONNECT and fails.
    """
    extra = [] if credentials is None else ["--proxy-user", credentials]
    url = f"https://localhost:{httpsOrigin.port}/refused"
    result = curl(authProxy.port, url, tlsCertificate, *extra)
    assert result.returncode != 0
    assert (result.connectStatus, result.body) == ("407", ""), result
    assert "407" in result.stderr


def requestsGet(proxyURL: str, url: str, ca: TLSFiles) -> requests.Response:
    """
    Fetch a URL with requests through a proxy, ignoring the environment.
    """
    with requests.Session() as session:
        session.trust_env = False
        session.proxies = {"https": proxyURL}
        session.verify = str(ca.caCert)
        return session.get(url, timeout=20)


@pytest.mark.parametrize("user", ["apr1-user", "colons"])
def test_requestsWithPassword(
    authProxy: ProxyProcess,
    httpsOrigin: OriginProcess,
    tlsCertificate: TLSFiles,
    user: str,
) -> None:
    """
    requests logs in with credentials percent-encoded in the proxy URL, a
    colon in the password included.
    """
    # requests encodes credentials as ISO-8859-1, not UTF-8, so a user name
    # that is not ASCII cannot log in with it; curl covers that case above.
    password = quote(USERS[user][1], safe="")
    proxyURL = f"http://{user}:{password}@{LOCAL}:{authProxy.port}"
    url = f"https://localhost:{httpsOrigin.port}/requests"
    response = requestsGet(proxyURL, url, tlsCertificate)
    assert (response.status_code, response.text) == (200, expectedBody("/requests"))


def test_requestsWrongPassword(
    authProxy: ProxyProcess, httpsOrigin: OriginProcess, tlsCertificate: TLSFiles
) -> None:
    """
    requests with a wrong password raises a C{ProxyError} that names 407.
    """
    proxyURL = f"http://apr1-user:wrong@{LOCAL}:{authProxy.port}"
    url = f"https://localhost:{httpsOrigin.port}/refused"
    with pytest.raises(requests.exceptions.ProxyError, match="407"):
        requestsGet(proxyURL, url, tlsCertificate)


def test_challengeThenRetryOnSameConnection(
    authProxy: ProxyProcess, echoOrigin: OriginProcess
) -> None:
    """
    A CONNECT without credentials gets a 407 challenge that keeps the
    connection open; the retry on it with credentials gets a working tunnel.
    """
    target = f"{LOCAL}:{echoOrigin.port}"
    with Client(authProxy.port) as client:
        address = "{}:{}".format(*client.sock.getsockname())
        client.send(connectHead(target))
        response, body = client.response()
        assert response.status == 407
        assert response.headers["proxy-authenticate"] == CHALLENGE
        assert "connection" not in response.headers
        assert (
            body
            == b"407 Proxy Authentication Required: proxy authentication required\n"
        )
        client.send(connectHead(target, basic("sha-user", "s-secret")))
        response, body = client.response()
        assert (response.status, body) == (200, b"")
        client.echo(b"after the challenge")
    event = authProxy.waitForNamed("tunnel_close", client=address)
    assert (event["user"], event["bytesUp"], event["bytesDown"]) == ("sha-user", 19, 19)


def test_pipelinedRetry(authProxy: ProxyProcess, echoOrigin: OriginProcess) -> None:
    """
    A request without credentials, the retry with credentials and the first
    tunnel bytes, sent at once, get the 407, the 200 and the echo in order.
    """
    target = f"{LOCAL}:{echoOrigin.port}"
    payload = b"pipelined behind two heads"
    with Client(authProxy.port) as client:
        client.send(
            connectHead(target)
            + connectHead(target, basic("bcrypt-user", "b-secret"))
            + payload
        )
        assert client.response()[0].status == 407
        assert client.response()[0].status == 200
        assert client.exactly(len(payload)) == payload


def test_http10ChallengeCloses(authProxy: ProxyProcess) -> None:
    """
    An HTTP/1.0 CONNECT without keep-alive gets its 407 with
    C{Connection: close}, and the connection closes.
    """
    head = connectHead(f"{LOCAL}:443", version="1.0")
    response, _ = refusal(authProxy.port, head)
    assert response.status == 407
    assert response.headers["proxy-authenticate"] == CHALLENGE
    assert response.headers["connection"] == "close"


MALFORMED = {
    "not base64": "Basic !!!not-base64!!!",
    "no colon": "Basic " + base64.b64encode(b"bcrypt-user").decode(),
    "other scheme": "Bearer x",
    "scheme alone": "Basic",
    "empty user": "Basic " + base64.b64encode(b":b-secret").decode(),
    "unpadded": "Basic " + base64.b64encode(b"bcrypt-user:b-secret").decode()[:-2],
    "not UTF-8": "Basic " + base64.b64encode(b"\xff\xfe:\xc3\x28").decode(),
    "ISO-8859-1 field": "Basic \xe9t\xe9",
    "10 KB of base64": "Basic " + base64.b64encode(bytes(range(256)) * 30).decode(),
    "10 KB of text": "Basic " + "garbage " * 1250,
}
"""
C{Proxy-Authorization} values that are not well-formed Basic credentials.
"""


@pytest.mark.parametrize("value", MALFORMED.values(), ids=list(MALFORMED))
def test_malformedCredentials(
    authProxy: ProxyProcess, echoOrigin: OriginProcess, value: str
) -> None:
    """
    Malformed credentials get a 407 challenge, and good ones on the same
    connection still get a tunnel.
    """
    target = f"{LOCAL}:{echoOrigin.port}"
    with Client(authProxy.port) as client:
        client.send(connectHead(target, f"Proxy-Authorization: {value}"))
        response, _ = client.response()
        assert response.status == 407
        assert response.headers["proxy-authenticate"] == CHALLENGE
        client.send(connectHead(target, basic("apr1-user", "m-secret")))
        assert client.response()[0].status == 200
        client.echo(b"still healthy")


@onlyOneProcess(
    "counts failed logins (--auth-max-failures), which are per "
    "worker (docs/operating.md, Limits are per worker)"
)
def test_failedLoginsBlockClient(
    proxy: ProxyFactory, usersFile: Path, echoOrigin: OriginProcess
) -> None:
    """
    After three wrong passwords for a user name, that user name gets 429
    with Retry-After from that address, even with the right password, while
    another user from the same address (behind the same NAT) and the same
    user from another address still log in.
    """
    # The block outlasts the test, which does not wait it out: the protocol
    # tests cover its end on a fake clock.
    running = proxy(
        *("--auth", f"htpasswd:{usersFile}", "--auth-max-failures", "3"),
        *("--auth-failure-window", "60", "--auth-block-time", "30"),
    )
    target = f"{LOCAL}:{echoOrigin.port}"
    good = connectHead(target, basic("apr1-user", "m-secret"))
    with Client(running.port) as client:
        for _ in range(3):
            client.send(connectHead(target, basic("apr1-user", "wrong")))
            assert client.response()[0].status == 407
        client.send(good)
        response, body = client.response()
        assert client.toEnd() == b""
    for blocked in [response, refusal(running.port, good)[0]]:
        assert blocked.status == 429
        assert 1 <= int(blocked.headers["retry-after"]) <= 30
        assert blocked.headers["connection"] == "close"
    assert body == (
        b"429 Too Many Requests: too many failed logins for this user; "
        b"try again later\n"
    )
    # Logged after the failures, so all of them are in by then.
    running.waitForNamed("request_refused", status=429)
    failures = [e for e in running.events if e.get("event") == "auth_failed"]
    assert [(e["user"], e["client"], e["reason"]) for e in failures] == [
        ("apr1-user", LOCAL, "wrong user name or password")
    ] * 3
    with tunnel(running.port, good, source=OTHER_LOOPBACK) as client:
        client.echo(b"another address is not blocked")
    other = connectHead(target, basic("bcrypt-user", "b-secret"))
    with tunnel(running.port, other) as client:
        client.echo(b"another user behind the same address is not blocked")


@onlyOneProcess(
    "counts failed logins (--auth-max-failures), which are per "
    "worker (docs/operating.md, Limits are per worker)"
)
def test_successDoesNotForgiveGuessing(
    proxy: ProxyFactory, usersFile: Path, echoOrigin: OriginProcess
) -> None:
    """
    Three wrong passwords for a user name within the window block that user
    name even when the client logs in successfully (to its own account)
    between them; its own account still works.
    """
    running = proxy(
        *("--auth", f"htpasswd:{usersFile}", "--auth-max-failures", "3"),
        *("--auth-failure-window", "60", "--auth-block-time", "30"),
    )
    target = f"{LOCAL}:{echoOrigin.port}"
    guess = connectHead(target, basic("bcrypt-user", "guess"))
    own = connectHead(target, basic("apr1-user", "m-secret"))
    with Client(running.port) as client:
        for request in [guess, guess, own]:
            client.send(request)
            response, _ = client.response()
        assert response.status == 200
    with Client(running.port) as client:
        client.send(guess)
        assert client.response()[0].status == 407
        client.send(guess)
        assert client.response()[0].status == 429
    with tunnel(running.port, own) as client:
        client.echo(b"still my own account")


@pytest.mark.parametrize(
    "port", [pytest.param(443, id="network rule"), pytest.param(9, id="port rule")]
)
def test_refusalAfterLoginNamesUser(
    strictProxy: ProxyFactory, usersFile: Path, port: int
) -> None:
    """
    A request refused after a successful login is logged with the user name.
    """
    running = strictProxy("--auth", f"htpasswd:{usersFile}")
    target = f"{LOCAL}:{port}"
    head = connectHead(target, basic("apr1-user", "m-secret"))
    assert refusal(running.port, head)[0].status == 403
    event = running.waitForNamed("request_refused", target=target)
    assert event["user"] == "apr1-user"
