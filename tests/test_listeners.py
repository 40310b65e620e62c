# -*- test-case-name: tests.test_listeners -*-
"""
Tests for L{connectproxy._listeners}: where a C{--listen} description would
listen, found without binding, and the descriptions it refuses.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import _SystemdParser
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorCore,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.plugin import IPlugin
from twisted.python.systemd import ListenFDs
from zope.interface import implementer

from connectproxy._listenerproblems import startingEnvironment
from connectproxy._listeners import (
    ListenerError,
    ListenerPlan,
    SystemdSocketMissing,
    dualStackSockets,
    overlap,
    planListener,
    splitDescription,
)
from tests.integration._pki import TLSFiles, makeTLSFiles


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """
    A CA and a server certificate with its key, in separate PEM files.
    """
    return makeTLSFiles(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tlsDirectory(tmp_path_factory: pytest.TempPathFactory, pki: TLSFiles) -> Path:
    """
    A directory for C{tls:} listeners: one PEM file with the server's
    certificate and key.
    """
    directory = tmp_path_factory.mktemp("tls")
    pem = pki.serverCert.read_bytes() + pki.serverKey.read_bytes()
    (directory / "localhost.pem").write_bytes(pem)
    return directory


@pytest.mark.parametrize(
    "description, where, tls, proxyProtocol",
    [
        ("tcp:3128:interface=127.0.0.1", "127.0.0.1:3128", False, False),
        ("tcp:3128", "0.0.0.0:3128", False, False),
        ("tcp:port=3128:interface=127.0.0.1", "127.0.0.1:3128", False, False),
        ("tcp:0:interface=127.0.0.1", "127.0.0.1:0", False, False),
        ("tcp6:3128:interface=\\:\\:1", "[::1]:3128", False, False),
        ("tcp6:3128", "[::]:3128", False, False),
        (
            "unix:/run/connectproxy.sock:mode=660",
            "unix:/run/connectproxy.sock",
            False,
            False,
        ),
        ("haproxy:tcp:3128:interface=127.0.0.1", "127.0.0.1:3128", False, True),
    ],
)
def test_plans(description: str, where: str, tls: bool, proxyProtocol: bool) -> None:
    """
    A description's plan says where it would listen and what clients speak
    there.
    """
    plan = planListener(description)
    assert (plan.where, plan.tls, plan.proxyProtocol) == (where, tls, proxyProtocol)
    assert plan.describe().startswith(f"listen {description} -> {where} (")


def test_sslPlan(pki: TLSFiles) -> None:
    """
    An C{ssl:} listener with a certificate and its key listens where it says,
    with TLS.
    """
    description = (
        f"ssl:3129:privateKey={pki.serverKey}:certKey={pki.serverCert}"
        ":interface=127.0.0.1"
    )
    plan = planListener(description)
    assert (plan.where, plan.tls) == ("127.0.0.1:3129", True)
    assert plan.describe().endswith("-> 127.0.0.1:3129 (TLS)")


def test_haproxySslPlan(pki: TLSFiles) -> None:
    """
    The PROXY protocol in front of TLS says both.
    """
    plan = planListener(
        f"haproxy:ssl:3129:privateKey={pki.serverKey}:certKey={pki.serverCert}"
    )
    assert plan.describe().endswith("(PROXY protocol, then TLS)")


def test_tlsPlan(tlsDirectory: Path) -> None:
    """
    A C{tls:} listener with a directory of certificates and its port as
    C{port=} listens on that port of every IPv6 (and IPv4) address.
    """
    plan = planListener(f"tls:{tlsDirectory}:port=3129")
    assert (plan.where, plan.tls) == ("[::]:3129", True)


@pytest.mark.parametrize(
    "description, message",
    [
        (
            "tls:3129",
            "'tls:3129' would listen on [::]:443, not on port 3129 (tls: takes "
            "a directory of PEM certificates and keys first",
        ),
        ("unix:3128", "would listen on unix:3128, not on port 3128"),
        (
            "tcp6:3128:interface=::1",
            "escape the colons of an IPv6 address with a backslash",
        ),
        (
            "tcp:3128:interface=fe80::1",
            "escape the colons of an IPv6 address with a backslash",
        ),
        ("bogus:1", "unknown type 'bogus'"),
        ("", "unknown type ''"),
        ("tcp:3128:colour=blue", "tcp: listeners take no colour="),
        ("tcp:3128:interface=127.0.0.1:colour=blue", "take no colour="),
        ("tcp:notaport", "'notaport' is not a whole number"),
        ("tcp:3128:backlog=many", "'many' is not a whole number"),
        ("ssl:3129:privateKey=/nonexistent/key.pem", "/nonexistent/key.pem"),
        ("tls:/nonexistent/tls:port=3129", "'/nonexistent/tls' is not a directory"),
    ],
)
def test_refused(description: str, message: str) -> None:
    """
    A description that would not listen where it says, or at all, is refused
    with a message that names it and says what to change.
    """
    with pytest.raises(ListenerError) as raised:
        planListener(description)
    text = str(raised.value)
    assert text.startswith(repr(description))
    assert message in text
    assert "Error(" not in text and "_parse" not in text


def test_defaultCertificateFile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    C{ssl:} without C{privateKey=} reads server.pem in the working directory,
    and the message says so.
    """
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ListenerError, match=r"server\.pem"):
        planListener("ssl:3129")


def test_mismatchedKey(tmp_path: Path, pki: TLSFiles) -> None:
    """
    An C{ssl:} listener whose key does not belong to its certificate is
    refused before it listens.
    """
    other = makeTLSFiles(tmp_path)
    with pytest.raises(ListenerError, match="do not match"):
        planListener(f"ssl:3129:privateKey={other.serverKey}:certKey={pki.serverCert}")


def test_tlsDirectoryWithoutKeys(tmp_path: Path, pki: TLSFiles) -> None:
    """
    A C{tls:} directory holding certificates but no matching key is refused.
    """
    (tmp_path / "cert.pem").write_bytes(pki.serverCert.read_bytes())
    with pytest.raises(ListenerError, match="has its private key"):
        planListener(f"tls:{tmp_path}:port=3129")


def test_tlsDirectoryUnreadable(tmp_path: Path) -> None:
    """
    A C{tls:} directory with a PEM file that does not parse is refused.
    """
    (tmp_path / "broken.pem").write_text(
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"
    )
    with pytest.raises(ListenerError, match="cannot load the PEM files"):
        planListener(f"tls:{tmp_path}:port=3129")


def test_splitDescription() -> None:
    """
    Descriptions split on unescaped colons, with C{key=value} fields as
    keywords.
    """
    assert splitDescription("tcp6:3128:interface=\\:\\:1:backlog=5") == (
        ["tcp6", "3128"],
        {"interface": "::1", "backlog": "5"},
    )
    assert splitDescription("unix:/a\\=b") == (["unix", "/a=b"], {})


# systemd


@pytest.fixture
def inherited() -> Iterator[list[int]]:
    """
    Make Twisted's C{systemd:} parser see two inherited IPv4 sockets, named
    C{proxy} and C{admin}; their descriptors, in that order.
    """
    before = _SystemdParser._sddaemon
    with socket.socket() as proxy, socket.socket() as admin:
        filenos = [proxy.fileno(), admin.fileno()]
        _SystemdParser._sddaemon = ListenFDs(filenos, ("proxy", "admin"))
        try:
            yield filenos
        finally:
            _SystemdParser._sddaemon = before


@pytest.mark.parametrize(
    "description, position",
    [("systemd:domain=INET:index=1", 1), ("systemd:domain=INET:name=proxy", 0)],
)
def test_systemdPlan(inherited: list[int], description: str, position: int) -> None:
    """
    A C{systemd:} listener adopts the socket its index or name picks.
    """
    fileno = inherited[position]
    plan = planListener(description)
    assert plan == ListenerPlan(description, fileno=fileno)
    assert plan.describe() == (
        f"listen {description} -> systemd socket (fd {fileno}) (plain HTTP)"
    )


@pytest.fixture
def inheritedSocket() -> Iterator[Callable[[socket.AddressFamily], int]]:
    """
    Make Twisted's C{systemd:} parser see one inherited socket, named
    C{proxy}, of the family a test asks for: C{inheritedSocket(AF_INET6)}
    returns its descriptor.  The sockets are closed when the test ends.
    """
    before = _SystemdParser._sddaemon
    sockets: list[socket.socket] = []

    def inherit(family: socket.AddressFamily) -> int:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sockets.append(sock)
        _SystemdParser._sddaemon = ListenFDs([sock.fileno()], ("proxy",))
        return sock.fileno()

    try:
        yield inherit
    finally:
        _SystemdParser._sddaemon = before
        for sock in sockets:
            sock.close()


@pytest.mark.parametrize(
    "family, domain",
    [
        (socket.AF_INET, "INET"),
        (socket.AF_INET6, "INET6"),
        (socket.AF_UNIX, "UNIX"),
    ],
    ids=["INET", "INET6", "UNIX"],
)
def test_systemdSocketOfItsDomain(
    inheritedSocket: Callable[[socket.AddressFamily], int],
    family: socket.AddressFamily,
    domain: str,
) -> None:
    """
    A C{systemd:} listener whose C{domain=} is the family of the socket
    systemd passed adopts it.
    """
    fileno = inheritedSocket(family)
    description = f"systemd:domain={domain}:name=proxy"
    assert planListener(description) == ListenerPlan(description, fileno=fileno)


@pytest.mark.parametrize(
    "family, domain, message",
    [
        (
            socket.AF_INET6,
            "INET",
            "systemd passed an IPv6 socket ([::]:0), not the IPv4 one "
            "domain=INET asks for: write domain=INET6",
        ),
        (
            socket.AF_INET,
            "INET6",
            "systemd passed an IPv4 socket (0.0.0.0:0), not the IPv6 one "
            "domain=INET6 asks for: write domain=INET",
        ),
        (
            socket.AF_UNIX,
            "INET",
            "systemd passed a UNIX socket (unix:(unnamed)), not the IPv4 one "
            "domain=INET asks for: write domain=UNIX",
        ),
    ],
    ids=["INET6-as-INET", "INET-as-INET6", "UNIX-as-INET"],
)
def test_systemdSocketOfAnotherDomain(
    inheritedSocket: Callable[[socket.AddressFamily], int],
    family: socket.AddressFamily,
    domain: str,
    message: str,
) -> None:
    """
    A C{systemd:} listener whose C{domain=} is not the family of the socket
    systemd passed (an IPv6 socket from C{ListenStream=3128} under
    C{domain=INET}) is refused, naming the domain to write: Twisted would
    adopt it and read every client address wrong.
    """
    inheritedSocket(family)
    description = f"systemd:domain={domain}:name=proxy"
    with pytest.raises(ListenerError) as raised:
        planListener(description)
    assert not isinstance(raised.value, SystemdSocketMissing)
    assert str(raised.value) == f"{description!r} is not a valid listener: {message}"


def test_systemdSocketOfAFamilyNotAdopted(
    inheritedSocket: Callable[[socket.AddressFamily], int],
) -> None:
    """
    A C{domain=} that names a family Twisted does not adopt, given an IPv6
    socket, is refused naming both.
    """
    inheritedSocket(socket.AF_INET6)
    description = "systemd:domain=PACKET:name=proxy"
    with pytest.raises(ListenerError) as raised:
        planListener(description)
    assert str(raised.value).endswith(
        "systemd passed an IPv6 socket ([::]:0), not the PACKET one "
        "domain=PACKET asks for: write domain=INET6"
    )


@pytest.mark.parametrize("closed", [False, True], ids=["pipe", "closed"])
def test_systemdDescriptorNotASocket(closed: bool) -> None:
    """
    A descriptor that is not an open socket is not judged here: Twisted
    fails to adopt it when the proxy listens, with its own message.
    """
    before = _SystemdParser._sddaemon
    reading, writing = os.pipe()
    os.close(writing)
    if closed:
        os.close(reading)
    try:
        _SystemdParser._sddaemon = ListenFDs([reading], ("proxy",))
        description = "systemd:domain=INET:name=proxy"
        assert planListener(description) == ListenerPlan(description, fileno=reading)
    finally:
        _SystemdParser._sddaemon = before
        if not closed:
            os.fstat(reading)  # Left open.
            os.close(reading)


def test_systemdAbstractSocketOfAnotherDomain(
    inheritedSocket: Callable[[socket.AddressFamily], int],
) -> None:
    """
    A UNIX socket bound to an abstract name is named C{unix:@NAME}.
    """
    fileno = inheritedSocket(socket.AF_UNIX)
    with socket.socket(fileno=os.dup(fileno)) as sock:
        sock.bind("\0connectproxy-test-abstract-" + str(os.getpid()))
    with pytest.raises(ListenerError, match="unix:@connectproxy-test-abstract-"):
        planListener("systemd:domain=INET6:name=proxy")


PID = str(os.getpid())


@pytest.mark.parametrize(
    "description, environ, message",
    [
        ("systemd:domain=INET:index=0", {}, "LISTEN_FDS is not set"),
        (
            "systemd:domain=INET:index=0",
            {"LISTEN_FDS": "1", "LISTEN_PID": "1"},
            "LISTEN_PID (1) is not this process",
        ),
        (
            "systemd:domain=INET:index=0",
            {"LISTEN_FDS": "1", "LISTEN_PID": PID},
            "LISTEN_FDS=1 but LISTEN_FDNAMES is not set",
        ),
        (
            "systemd:domain=INET:index=0",
            {"LISTEN_FDS": "2", "LISTEN_PID": PID, "LISTEN_FDNAMES": "proxy"},
            "LISTEN_FDS=2 but LISTEN_FDNAMES names 1 socket(s) (proxy)",
        ),
        (
            "systemd:domain=INET:index=1",
            {"LISTEN_FDS": "1", "LISTEN_PID": PID, "LISTEN_FDNAMES": "proxy"},
            "index=1 is out of range: systemd passed 1 socket(s)",
        ),
        (
            "systemd:domain=INET:name=admin",
            {"LISTEN_FDS": "1", "LISTEN_PID": PID, "LISTEN_FDNAMES": "proxy"},
            "no socket named 'admin': systemd passed proxy",
        ),
    ],
)
def test_systemdSocketMissing(
    description: str, environ: dict[str, str], message: str
) -> None:
    """
    A C{systemd:} listener without its socket says which variable is
    missing or disagrees, instead of Twisted's C{IndexError}.
    """
    with pytest.raises(SystemdSocketMissing) as raised:
        planListener(description, environ)
    assert message in raised.value.reason
    assert str(raised.value) == (
        f"{description!r} is not a valid listener: {raised.value.reason}"
    )


def test_startingEnvironment(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    The starting environment keeps variables removed from C{os.environ}
    since (as Twisted removes C{LISTEN_FDS}).
    """
    name = next(iter(os.environ))
    value = os.environ[name]
    monkeypatch.delenv(name)
    assert startingEnvironment()[name] == value


@implementer(IPlugin, IStreamServerEndpointStringParser)
class CarefulParser:
    """
    An endpoint type from a plugin, whose endpoints must never be asked to
    listen by the checks (they might launch or connect to something).
    """

    prefix = "careful"

    def parseStreamServer(
        self, reactor: IReactorCore, *args: object, **kwargs: object
    ) -> IStreamServerEndpoint:
        return CarefulEndpoint()


@implementer(IStreamServerEndpoint)
class CarefulEndpoint:
    """
    An endpoint that fails the test if it is asked to listen.
    """

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        raise AssertionError("the checks listened on a plugin's endpoint")


def test_pluginEndpointNotListened(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A description of an endpoint type from a plugin parses, but is never
    asked to listen: its address is known once it really listens.
    """
    monkeypatch.setattr(endpoints, "getPlugins", lambda interface: [CarefulParser()])
    plan = planListener("careful:somewhere")
    assert plan.describe() == (
        "listen careful:somewhere -> an address known once it listens (plain HTTP)"
    )


def test_unknownSSLMethod(pki: TLSFiles) -> None:
    """
    An C{sslmethod=} that OpenSSL does not have is named as such, not as a
    certificate problem.
    """
    files = f"privateKey={pki.serverKey}:certKey={pki.serverCert}"
    with pytest.raises(ListenerError, match="sslmethod=TLSv9_METHOD is not a method"):
        planListener(f"ssl:3129:{files}:sslmethod=TLSv9_METHOD")


def test_combinedFileNamed(tmp_path: Path) -> None:
    """
    With C{privateKey=} only, the message says C{certKey=} defaults to it.
    """
    combined = tmp_path / "combined.pem"
    with pytest.raises(ListenerError) as raised:
        planListener(f"ssl:3129:privateKey={combined}")
    assert f"cannot read privateKey={combined} (certKey= defaults to it)" in str(
        raised.value
    )


def test_contextProblemWithoutDHParameters() -> None:
    """
    A TLS context that cannot be made for another reason than its DH
    parameters is reported in OpenSSL's words.
    """
    from OpenSSL import SSL

    from connectproxy._listenerproblems import contextProblem

    error = SSL.Error([("SSL routines", "", "no cipher match")])
    assert contextProblem("ssl:3129", error) == (
        "cannot make a TLS context: OpenSSL: no cipher match"
    )


@pytest.mark.parametrize(
    "first, second, dualStack, clash",
    [
        ("tcp:3128", "tcp:3128:interface=127.0.0.1", False, True),
        ("tcp:3128:interface=127.0.0.1", "tcp:3128", False, True),
        ("tcp:3128:interface=127.0.0.1", "tcp:3128:interface=127.0.0.2", False, False),
        ("tcp:3128", "tcp:3129", False, False),
        ("tcp6:3128", "tcp6:3128:interface=\\:\\:1", False, True),
        ("tcp6:3128", "tcp:3128:interface=127.0.0.1", True, True),
        ("tcp6:3128", "tcp:3128:interface=127.0.0.1", False, False),
        ("tcp6:3128", "tcp:3128", True, True),
        ("tcp6:3128:interface=\\:\\:1", "tcp:3128", True, False),
        (
            "tcp6:3128:interface=\\:\\:ffff\\:127.0.0.1",
            "tcp:3128:interface=127.0.0.1",
            False,
            True,
        ),
        ("tcp:0", "tcp:0:interface=127.0.0.1", False, False),
        ("unix:/run/a.sock", "tcp:3128", True, False),
    ],
)
def test_overlap(first: str, second: str, dualStack: bool, clash: bool) -> None:
    """
    Two listeners overlap when they take the same port and one of them
    listens on every address of the other's family (on every IPv4 address
    too, for C{[::]} where the system makes IPv6 sockets dual-stack).
    """
    a, b = planListener(first), planListener(second)
    explanation = overlap(a, b, dualStack=dualStack)
    assert (explanation is not None) is clash
    if explanation is not None:
        assert explanation.startswith(f"{a.where} and {b.where} both take port ")


def test_dualStackDefault(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """
    Whether C{[::]} takes IPv4 too is read from the system where it says
    (Linux: C{net.ipv6.bindv6only}); elsewhere it is not assumed.
    """
    setting = tmp_path / "bindv6only"
    setting.write_text("0\n")
    assert dualStackSockets(str(setting)) is True
    setting.write_text("1\n")
    assert dualStackSockets(str(setting)) is False
    assert dualStackSockets(str(tmp_path / "missing")) is False
