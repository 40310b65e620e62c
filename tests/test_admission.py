# -*- test-case-name: tests.test_admission -*-
"""
Protocol and unit tests for the access checks of L{connectproxy._admission}:
client addresses (also behind a PROXY-protocol listener), port and host
rules, plugin policies with their order and deadlines, and the gatekeeper
on its own.  Authentication through the proxy is tested in
tests/test_authentication.py, reloading the checks in tests/test_assembly.py.

Everything runs on a L{MemoryReactorClock} with fake transports, a fake
upstream connector and synchronous (or hand-fired) credential checkers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.cred.checkers import (
    ICredentialsChecker,
    InMemoryUsernamePasswordDatabaseDontUse,
)
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionLost
from twisted.logger import LogEvent
from zope.interface.verify import verifyObject

from connectproxy import (
    ProxySettings,
    Refusal,
    UpstreamRequest,
)
from connectproxy._admission import Gatekeeper, Refused, userPortal
from connectproxy._htpasswd import HtpasswdChecker
from connectproxy._rules import AccessRules, ClientRules, HostRules, PortRules
from connectproxy._upstream import ForbiddenDestination
from connectproxy.interfaces import IAccessPolicy
from connectproxy.testing import (
    FakeClient,
    HalfCloseableStringTransport,
    ProxyHarness,
    Response,
    accessRequest,
    checkPolicy,
    connectHead,
)
from tests._helpers import (
    ESTABLISHED,
    FOREIGN,
    GOOD,
    CountingChecker,
    LaterPolicy,
    PendingChecker,
    RaisingChecker,
    RaisingPolicy,
    StaticPolicy,
    authHarness,
    basic,
    failed,
    failuresLogged,
    makeHarness,
    rulesWith,
    succeeded,
)

# Other test modules import these helpers from here; they live in
# tests._helpers and connectproxy.testing.
__all__ = [
    "FOREIGN",
    "GOOD",
    "LaterPolicy",
    "PendingChecker",
    "RaisingPolicy",
    "StaticPolicy",
    "basic",
    "connectHead",
    "makeHarness",
    "onlyResponse",
    "responses",
    "rulesWith",
]


def responses(client: FakeClient) -> list[Response]:
    """
    Every response the proxy wrote to C{client}: L{FakeClient.responses}.
    """
    return client.responses()


def onlyResponse(client: FakeClient) -> Response:
    """
    The one response the proxy wrote to C{client}: L{FakeClient.response}.
    """
    return client.response()


# Client rules.


@pytest.mark.parametrize(
    "data, method, target",
    [
        (connectHead(), "CONNECT", "example.com:443"),
        (b"CONNECT example.com:443 HTTP/1.1\r\n", "CONNECT", "example.com:443"),
        (b"CONNECT exa", "", ""),
        (b"\x16\x03\x01\x02\x00", "", ""),
    ],
    ids=["complete", "request-line", "incomplete", "tls"],
)
def test_foreignClientRefusedAtFirstBytes(
    data: bytes, method: str, target: str
) -> None:
    """
    A client outside the allowed networks gets 403 at its first bytes,
    whatever they are, with one refusal record and no upstream attempt; the
    record names the method and target when the first bytes hold a whole
    request line.
    """
    harness = ProxyHarness()
    client = harness.connectClient(FOREIGN)
    client.send(data)
    response = client.response()
    assert response.status == 403
    assert response.body == (
        b"403 Forbidden: client 192.0.2.10 is not allowed (see --allow-client)\n"
    )
    assert response.header("Connection") == "close"
    assert client.transport.disconnecting
    assert harness.connector.attempts == []
    [refused] = harness.observer.refused
    assert (refused.client, refused.status) == ("192.0.2.10:5000", 403)
    assert refused.reason == "client 192.0.2.10 is not allowed (see --allow-client)"
    assert (refused.method, refused.target) == (method, target)


def test_foreignClientNotAnsweredBeforeItSends() -> None:
    """
    Nothing is written to a foreign client before it sends something (only
    then is its real address known behind a PROXY-protocol listener).
    """
    harness = ProxyHarness()
    client = harness.connectClient(FOREIGN)
    assert client.transport.value() == b""
    assert harness.observer.refused == []


@pytest.mark.parametrize(
    "peer",
    [
        IPv4Address("TCP", "127.0.0.1", 40000),
        IPv4Address("TCP", "127.200.1.2", 40000),
        IPv6Address("TCP", "::1", 40000),
        IPv6Address("TCP", "::ffff:127.0.0.1", 40000),
    ],
    ids=str,
)
def test_loopbackClientsAllowed(peer: object) -> None:
    """
    Loopback clients, IPv4 and IPv6 (also IPv4-mapped), may use the proxy
    by default.
    """
    harness = ProxyHarness()
    client = harness.connectClient(peer)
    client.send(connectHead())
    assert len(harness.connector.attempts) == 1
    assert client.transport.value() == b""


@pytest.mark.parametrize(
    "host, allowed",
    [
        ("10.1.2.3", True),
        ("11.0.0.1", False),
        ("198.51.100.7", True),
        ("198.51.100.8", False),
        ("2001:db8::5", True),
        ("2001:db9::5", False),
        ("::ffff:10.9.9.9", True),
        ("127.0.0.1", True),
    ],
)
def test_allowedClientNetworks(host: str, allowed: bool) -> None:
    """
    Networks added to the client rules (as C{--allow-client} does) are
    allowed besides loopback; other addresses are still refused.
    """
    clients = ClientRules.fromStrings(
        allow=["10.0.0.0/8", "198.51.100.7", "2001:db8::/32"]
    )
    harness = makeHarness(rulesWith(clients=clients))
    kind = IPv6Address if ":" in host else IPv4Address
    client = harness.connectClient(kind("TCP", host, 5000))
    client.send(connectHead())
    assert len(harness.connector.attempts) == (1 if allowed else 0)
    assert client.transport.disconnecting is not allowed


def test_unixClientAllowed() -> None:
    """
    A client on a UNIX socket is allowed (file permissions guard it), and
    its tunnel record names the socket.
    """
    harness = ProxyHarness()
    client = harness.connectClient(UNIXAddress(b"/run/connectproxy.sock"))
    client.send(connectHead())
    harness.connector.attempts[0].succeed()
    assert client.transport.value() == ESTABLISHED
    [record] = harness.observer.opened
    assert record.client == "unix:/run/connectproxy.sock"


# Port and host rules.


@pytest.mark.parametrize("port", [80, 22, 8443, 442, 444])
def test_defaultPortOnly443(port: int) -> None:
    """
    By default only port 443 is allowed; others get 403 naming the port and
    the option that allows it.
    """
    harness = ProxyHarness()
    client = harness.connectClient()
    client.send(connectHead(f"example.com:{port}"))
    response = client.response()
    reason = f"port {port} is not allowed (see --allow-port)"
    assert response.status == 403
    assert response.body == f"403 Forbidden: {reason}\n".encode()
    assert response.header("Connection") == "close"
    assert harness.connector.attempts == []
    assert harness.observer.refused[0].reason == reason


@pytest.mark.parametrize(
    "port, allowed",
    [
        (443, True),
        (8000, True),
        (8042, True),
        (8080, True),
        (7999, False),
        (8081, False),
        (80, False),
        (65535, True),
    ],
)
def test_portRanges(port: int, allowed: bool) -> None:
    """
    Ports and inclusive port ranges are allowed as configured.
    """
    ports = PortRules.fromStrings(["443", "8000-8080", "65535"])
    harness = makeHarness(rulesWith(ports=ports))
    client = harness.connectClient()
    client.send(connectHead(f"example.com:{port}"))
    assert len(harness.connector.attempts) == (1 if allowed else 0)
    assert (client.transport.value() == b"") is allowed


@pytest.mark.parametrize(
    "target, reason",
    [
        ("evil.example:443", "host evil.example is denied by --deny-host evil.example"),
        (
            "EVIL.Example.:443",
            "host evil.example is denied by --deny-host evil.example",
        ),
        (
            "a.bad.example:443",
            "host a.bad.example is denied by --deny-host *.bad.example",
        ),
        (
            "x.y.bad.example:443",
            "host x.y.bad.example is denied by --deny-host *.bad.example",
        ),
        (
            "[2001:DB8:0::7]:443",
            "host 2001:db8::7 is denied by --deny-host 2001:db8::7",
        ),
        ("bad.example:443", None),
        ("good.example:443", None),
    ],
)
def test_hostDenyPatterns(target: str, reason: str | None) -> None:
    """
    Denied names (after normalisation) get 403 naming the host and the
    pattern that denies it; others go on.
    """
    hosts = HostRules.fromStrings(deny=["evil.example", "*.bad.example", "2001:db8::7"])
    harness = makeHarness(rulesWith(hosts=hosts))
    client = harness.connectClient()
    client.send(connectHead(target))
    if reason is None:
        assert len(harness.connector.attempts) == 1
        return
    response = client.response()
    assert response.status == 403
    assert response.body == f"403 Forbidden: {reason}\n".encode()
    assert harness.observer.refused[0].reason == reason
    assert harness.connector.attempts == []


@pytest.mark.parametrize(
    "host, allowed",
    [
        ("a.corp.example", True),
        ("corp.example", False),
        ("api.example", True),
        ("other.example", False),
        ("x.api.example", False),
        ("198.51.100.1", False),
    ],
)
def test_hostAllowPatterns(host: str, allowed: bool) -> None:
    """
    With allow patterns, only matching names may be tunnelled to; the
    others get 403 naming the option to add.
    """
    hosts = HostRules.fromStrings(allow=["*.corp.example", "api.example"])
    harness = makeHarness(rulesWith(hosts=hosts))
    client = harness.connectClient()
    client.send(connectHead(f"{host}:443"))
    assert len(harness.connector.attempts) == (1 if allowed else 0)
    if not allowed:
        response = client.response()
        assert response.status == 403
        assert response.body == (
            f"403 Forbidden: host {host} matches no --allow-host pattern\n".encode()
        )


def test_mappedAddressDeniedLikeIPv4() -> None:
    """
    A host rule denying an IPv4 address also denies the same address
    written as an IPv4-mapped IPv6 literal.
    """
    hosts = HostRules.fromStrings(deny=["93.184.216.34"])
    harness = makeHarness(rulesWith(hosts=hosts))
    client = harness.connectClient()
    client.send(connectHead("[::ffff:93.184.216.34]:443"))
    assert harness.connector.attempts == []
    response = client.response()
    assert response.status == 403
    assert response.body == (
        b"403 Forbidden: host 93.184.216.34 is denied by --deny-host 93.184.216.34\n"
    )


@pytest.mark.parametrize("host", ["xn--zz", "xn--a.example", "xn--ls8h.la"])
def test_unnormalisableHostIs400(host: str) -> None:
    """
    A target the parser accepts but that is not a valid host name gets 400.
    """
    harness = ProxyHarness()
    client = harness.connectClient()
    client.send(connectHead(f"{host}:443"))
    response = client.response()
    assert response.status == 400
    assert b"invalid host name in target" in response.body
    assert harness.connector.attempts == []


# Plugin policies.


def test_policyAllows() -> None:
    """
    A policy answering C{None} lets the request go on.
    """
    policy = StaticPolicy()
    harness = makeHarness(policies=[policy])
    client = harness.connectClient()
    client.send(connectHead())
    assert len(policy.seen) == 1
    harness.connector.attempts[0].succeed()
    assert client.transport.value() == ESTABLISHED


def test_policyRefuses() -> None:
    """
    A policy's refusal is answered with its status and reason, and closes
    the connection.
    """
    harness = makeHarness(policies=[StaticPolicy(Refusal(451, "blocked by court"))])
    client = harness.connectClient()
    client.send(connectHead())
    response = client.response()
    assert response.status == 451
    assert response.body == b"451 Unavailable For Legal Reasons: blocked by court\n"
    assert response.header("Connection") == "close"
    assert client.transport.disconnecting
    assert harness.connector.attempts == []
    [refused] = harness.observer.refused
    assert (refused.status, refused.reason) == (451, "blocked by court")
    assert refused.target == "example.com:443"


@pytest.mark.parametrize("refuse", [False, True])
def test_policyAnswersLater(refuse: bool) -> None:
    """
    A policy may answer with a Deferred that fires later, either way.
    """
    policy = LaterPolicy()
    harness = makeHarness(policies=[policy])
    client = harness.connectClient()
    client.send(connectHead())
    harness.clock.advance(5)
    assert client.transport.value() == b""
    assert harness.connector.attempts == []
    policy.pending[0].callback(Refusal(403, "not today") if refuse else None)
    if refuse:
        assert client.response().status == 403
        assert harness.connector.attempts == []
    else:
        harness.connector.attempts[0].succeed()
        assert client.transport.value() == ESTABLISHED


@pytest.mark.parametrize("later", [False, True])
def test_firstRefusalWins(later: bool) -> None:
    """
    Policies are asked in order; the first refusal, at once or later, is
    answered with its status and reason, and the policies after it are not
    asked.
    """
    second: StaticPolicy | LaterPolicy
    second = LaterPolicy() if later else StaticPolicy(Refusal(429, "quota used up"))
    first, third = StaticPolicy(), StaticPolicy()
    harness = makeHarness(policies=[first, second, third])
    client = harness.connectClient()
    client.send(connectHead())
    assert (len(first.seen), len(second.seen)) == (1, 1)
    if isinstance(second, LaterPolicy):
        assert third.seen == []
        second.pending[0].callback(Refusal(429, "quota used up"))
    response = client.response()
    assert response.status == 429
    assert response.body == b"429 Too Many Requests: quota used up\n"
    assert third.seen == []
    assert harness.connector.attempts == []


@pytest.mark.parametrize("how", ["raises", "fails at once", "fails later"])
def test_brokenPolicyIs500(how: str, logEvents: list[LogEvent]) -> None:
    """
    A policy that raises, or whose Deferred fails (at once or later), gives
    a logged 500.
    """
    policy: IAccessPolicy
    if how == "raises":
        policy = RaisingPolicy()
    elif how == "fails at once":
        policy = StaticPolicy(fail(RuntimeError("policy bug")))
    else:
        policy = LaterPolicy()
    harness = makeHarness(policies=[policy])
    client = harness.connectClient()
    client.send(connectHead())
    if isinstance(policy, LaterPolicy):
        policy.pending[0].errback(RuntimeError("policy bug"))
    response = client.response()
    assert response.status == 500
    assert response.body == b"500 Internal Server Error: an access policy failed\n"
    [failure] = failuresLogged(logEvents)
    assert failure["log_failure"].check(RuntimeError)
    assert harness.connector.attempts == []


def test_pendingPolicyTimesOut() -> None:
    """
    A policy that has not answered by the connect deadline is cancelled and
    the client gets 503.
    """
    policy = LaterPolicy()
    harness = makeHarness(policies=[policy])
    client = harness.connectClient()
    client.send(connectHead())
    harness.clock.advance(9.9)
    assert client.transport.value() == b""
    harness.clock.advance(0.1)
    assert policy.cancelled == 1
    response = client.response()
    assert response.status == 503
    assert response.body == (
        b"503 Service Unavailable: timed out checking access after 10 seconds "
        b"(see --connect-timeout)\n"
    )
    assert harness.connector.attempts == []
    assert harness.observer.refused[0].status == 503


def test_clientLeavesDuringPolicyCheck() -> None:
    """
    A client that leaves while a policy has not answered cancels it;
    nothing is written or left scheduled, and the request is reported as
    abandoned.
    """
    policy = LaterPolicy()
    harness = makeHarness(policies=[policy])
    client = harness.connectClient()
    client.send(connectHead())
    client.lose(ConnectionLost())
    assert policy.cancelled == 1
    assert client.transport.value() == b""
    assert [(r.status, r.outcome) for r in harness.observer.refused] == [
        (0, "abandoned")
    ]
    assert harness.clock.getDelayedCalls() == []
    assert harness.connector.attempts == []


@pytest.mark.parametrize("how", ["client left", "deadline"])
def test_cancelledPolicyCheckNotAnError(how: str, logEvents: list[LogEvent]) -> None:
    """
    Cancelling a policy check (client gone, deadline) logs no failure.
    """
    policy = LaterPolicy()
    harness = makeHarness(policies=[policy])
    client = harness.connectClient()
    client.send(connectHead())
    if how == "deadline":
        harness.clock.advance(10)
    else:
        client.lose(ConnectionLost())
    assert policy.cancelled == 1
    assert failuresLogged(logEvents) == []


def test_policyReceivesAccessRequest() -> None:
    """
    Policies receive the client's address, the user, the normalised host and
    the port, with the whole request.
    """
    policy = StaticPolicy()
    checker = CountingChecker({b"alice": b"secret"})
    rules = rulesWith(ports=PortRules.fromStrings(["8443"]))
    harness = makeHarness(rules, [policy], checker)
    client = harness.connectClient(IPv6Address("TCP", "::1", 51000))
    client.send(connectHead("Example.COM.:8443", basic(GOOD), "X-Team: blue"))
    [access] = policy.seen
    assert (access.clientHost, access.clientPort) == ("::1", 51000)
    assert access.user == "alice"
    assert (access.host, access.port) == ("example.com", 8443)
    assert access.request.target == "Example.COM.:8443"
    assert access.request.getHeader("x-team") == "blue"
    assert len(harness.connector.attempts) == 1


def test_lateAnswerUsesTheRestOfTheDeadline() -> None:
    """
    The time a policy takes counts against the same deadline as the
    upstream connect.
    """
    policy = LaterPolicy()
    harness = makeHarness(policies=[policy], settings=ProxySettings(connectTimeout=3))
    client = harness.connectClient()
    client.send(connectHead())
    harness.clock.advance(2)
    policy.pending[0].callback(None)
    [attempt] = harness.connector.attempts
    harness.clock.advance(1)
    assert attempt.cancelled
    assert client.response().status == 504


def test_answerNeitherNoneNorRefusal(logEvents: list[LogEvent]) -> None:
    """
    A policy answering something other than None or a Refusal (here False)
    breaks its contract and is treated like a failed policy (500), not as
    an approval.
    """
    harness = makeHarness(policies=[StaticPolicy(False)])
    client = harness.connectClient()
    client.send(connectHead())
    assert harness.connector.attempts == []
    assert client.response().status == 500


def test_policySeesUser() -> None:
    """
    Behind authentication, a policy sees the user; without credentials it is
    not asked at all.
    """
    policy = StaticPolicy()
    checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
    harness = makeHarness(policies=[policy], checker=checker)
    anonymous = harness.connectClient()
    anonymous.send(connectHead("example.com:443", "Connection: close"))
    assert anonymous.response().status == 407
    assert policy.seen == []
    client = harness.connectClient()
    client.send(connectHead("example.com:443", basic(GOOD)))
    assert [access.user for access in policy.seen] == ["alice"]


def test_policyUnauthenticatedUnixClient() -> None:
    """
    Without authentication the user is C{None}, and a UNIX client has no
    address.
    """
    policy = StaticPolicy()
    harness = makeHarness(policies=[policy])
    client = harness.connectClient(UNIXAddress(b"/run/p.sock"))
    client.send(connectHead())
    [access] = policy.seen
    assert (access.clientHost, access.clientPort, access.user) == ("", 0, None)


# Order of the checks.


def test_authBeforePortAndHost() -> None:
    """
    An unauthenticated client is challenged before the port, host and policy
    checks, so it learns nothing about them.
    """
    policy = StaticPolicy(Refusal(403, "never"))
    rules = rulesWith(hosts=HostRules.fromStrings(deny=["evil.example"]))
    harness, _ = authHarness(rules=rules, policies=[policy])
    client = harness.connectClient()
    client.send(connectHead("evil.example:80"))
    client.send(connectHead("evil.example:80", basic(b"alice:wrong")))
    assert [r.status for r in client.responses()] == [407, 407]
    client.send(connectHead("evil.example:80", basic(GOOD)))
    assert [r.status for r in client.responses()] == [407, 407, 403]
    assert b"port 80" in client.responses()[-1].body
    assert policy.seen == []


def test_policiesAfterBuiltInRules() -> None:
    """
    A request the port or host rules refuse never reaches the policies.
    """
    policy = StaticPolicy()
    rules = rulesWith(hosts=HostRules.fromStrings(deny=["bad.example"]))
    harness = makeHarness(rules, [policy])
    for authority, reason in [
        ("example.com:80", b"port 80 is not allowed (see --allow-port)"),
        ("bad.example:443", b"host bad.example is denied by --deny-host bad.example"),
    ]:
        client = harness.connectClient()
        client.send(connectHead(authority))
        response = client.response()
        assert response.status == 403
        assert response.body == b"403 Forbidden: " + reason + b"\n"
    assert policy.seen == []


def test_refusalOfAuthenticatedUserNamesUser() -> None:
    """
    A refusal after a successful login is reported with the user name.
    """
    harness, _ = authHarness()
    client = harness.connectClient()
    client.send(connectHead("example.com:80", basic(GOOD)))
    [refused] = harness.observer.refused
    assert refused.status == 403
    assert refused.user == "alice"


# The connector's destination rules.


def test_forbiddenDestinationIs403() -> None:
    """
    A connector refusing the resolved destination gives 403 with its
    reason, as it is.
    """
    harness = ProxyHarness()
    client = harness.connectClient()
    client.send(connectHead("internal.example:443"))
    reason = "internal.example resolves to 10.0.0.5, which is a private address"
    harness.connector.attempts[0].fail(ForbiddenDestination(reason))
    response = client.response()
    assert response.status == 403
    expected = f"403 Forbidden: {reason}\n"
    assert response.body == expected.encode()
    assert client.transport.disconnecting
    assert harness.observer.refused[0].status == 403


# The gatekeeper on its own.


@pytest.mark.parametrize(
    "address, shown",
    [
        (IPv4Address("TCP", "127.0.0.1", 1), None),
        (IPv6Address("TCP", "::1", 1), None),
        (IPv6Address("TCP", "::ffff:127.0.0.9", 1), None),
        (UNIXAddress(b"/run/p.sock"), None),
        (UNIXAddress(None), None),
        (IPv4Address("TCP", "192.0.2.1", 1), "192.0.2.1"),
        (IPv6Address("TCP", "2001:db8::1", 1), "2001:db8::1"),
        (IPv6Address("TCP", "::ffff:192.0.2.1", 1), "192.0.2.1"),
    ],
    ids=str,
)
def test_checkClient(address: object, shown: str | None) -> None:
    """
    With the default rules, loopback and UNIX clients are allowed, others
    refused with 403 naming the client (IPv4-mapped as IPv4) and the option
    that allows it.
    """
    refused = Gatekeeper(AccessRules.defaults()).checkClient(address)
    if shown is None:
        assert refused is None
    else:
        assert refused is not None
        assert (refused.status, refused.keepAlive) == (403, False)
        assert refused.reason == f"client {shown} is not allowed (see --allow-client)"


def test_admitWithoutAuthentication() -> None:
    """
    Without a portal, C{admit} fires with the connector's target, without a
    user, for an allowed request, and hands policies the request as
    L{accessRequest} builds it.
    """
    policy = StaticPolicy()
    gatekeeper = Gatekeeper(AccessRules.defaults(), [policy])
    expected = accessRequest("example.com", 443, clientPort=40000)
    client = IPv4Address("TCP", "127.0.0.1", 40000)
    target = succeeded(gatekeeper.admit(client, expected.request))
    assert target == UpstreamRequest("example.com", 443, None, client, expected.request)
    assert policy.seen == [expected]


@pytest.mark.parametrize(
    "port, host, status",
    [(80, "example.com", 403), (443, "evil.example", 403), (443, "xn--zz", 400)],
)
def test_admitRefuses(port: int, host: str, status: int) -> None:
    """
    C{admit} fails with L{Refused}, not keep-alive, for a refused port or
    host and for an invalid host.
    """
    rules = rulesWith(hosts=HostRules.fromStrings(deny=["evil.example"]))
    request = accessRequest(host, port).request
    error = failed(Gatekeeper(rules).admit(FOREIGN, request))
    assert isinstance(error, Refused)
    assert (error.status, error.keepAlive, error.headers) == (status, False, ())


@pytest.mark.parametrize(
    "port, host, status",
    [(80, "example.com", 403), (443, "evil.example", 403), (443, "xn--zz", 400)],
)
def test_admitNowRefuses(port: int, host: str, status: int) -> None:
    """
    Without authentication and policies the gatekeeper is immediate:
    C{admitNow} raises the L{Refused} that C{admit} fails with, and answers
    an allowed request with the same target, at once.
    """
    rules = rulesWith(hosts=HostRules.fromStrings(deny=["evil.example"]))
    gatekeeper = Gatekeeper(rules)
    assert gatekeeper.immediate
    with pytest.raises(Refused) as raised:
        gatekeeper.admitNow(FOREIGN, accessRequest(host, port).request)
    assert (raised.value.status, raised.value.keepAlive) == (status, False)
    request = accessRequest("Example.COM.", 443).request
    target = gatekeeper.admitNow(FOREIGN, request)
    assert target == succeeded(gatekeeper.admit(FOREIGN, request))
    assert target == UpstreamRequest("example.com", 443, None, FOREIGN, request)


def test_notImmediateWithAuthenticationOrPolicies() -> None:
    """
    A gatekeeper with authentication or a policy is not immediate: its
    checks may take time, and only C{admit} makes them.
    """
    checker = CountingChecker({b"alice": b"secret"})
    rules = AccessRules.defaults()
    assert not Gatekeeper(rules, portal=userPortal([checker])).immediate
    assert not Gatekeeper(rules, [StaticPolicy()]).immediate


def test_admitAuthenticates() -> None:
    """
    With a portal, C{admit} challenges a request without credentials and
    fires with a target carrying the user name for good ones.
    """
    checker = CountingChecker({b"alice": b"secret"})
    gatekeeper = Gatekeeper(
        AccessRules.defaults(), portal=userPortal([checker]), realm="r"
    )
    error = failed(gatekeeper.admit(FOREIGN, accessRequest().request))
    assert isinstance(error, Refused)
    assert (error.status, error.keepAlive) == (407, True)
    assert list(error.headers) == [
        ("Proxy-Authenticate", 'Basic realm="r", charset="UTF-8"')
    ]
    field = ("proxy-authorization", basic(GOOD).split(": ", 1)[1])
    request = accessRequest(headers=(field,)).request
    target = succeeded(gatekeeper.admit(FOREIGN, request))
    assert (target.user, target.client) == ("alice", FOREIGN)


def test_admitWithoutLimiter() -> None:
    """
    Without a limiter, failed logins are challenged again and again.
    """
    checker = CountingChecker({b"alice": b"secret"})
    gatekeeper = Gatekeeper(AccessRules.defaults(), portal=userPortal([checker]))
    field = ("proxy-authorization", basic(b"alice:wrong").split(": ", 1)[1])
    request = accessRequest(headers=(field,)).request
    for _ in range(20):
        error = failed(gatekeeper.admit(FOREIGN, request))
        assert isinstance(error, Refused) and error.status == 407
    assert len(checker.asked) == 20


def test_checkPolicyWithTestPolicies() -> None:
    """
    The test policies answer as L{checkPolicy} expects.
    """
    assert checkPolicy(StaticPolicy(), accessRequest()) is None
    refusal = Refusal(451, "no")
    assert checkPolicy(StaticPolicy(refusal), accessRequest(user="a")) == refusal
    with pytest.raises(AssertionError):
        checkPolicy(LaterPolicy(), accessRequest())
    with pytest.raises(RuntimeError):
        checkPolicy(RaisingPolicy(), accessRequest())


def test_refusedDefaults() -> None:
    """
    A L{Refused} has no extra headers and closes the connection unless told
    otherwise.
    """
    refused = Refused(403, "no")
    assert (refused.status, refused.reason) == (403, "no")
    assert (tuple(refused.headers), refused.keepAlive) == ((), False)
    assert refused.args == (403, "no")


def test_interfacesProvided() -> None:
    """
    The realm of L{userPortal} and the test checkers and policies provide
    their interfaces.
    """
    assert verifyObject(IRealm, userPortal([]).realm)
    assert verifyObject(ICredentialsChecker, CountingChecker({}))
    assert verifyObject(ICredentialsChecker, PendingChecker())
    assert verifyObject(ICredentialsChecker, RaisingChecker())
    assert verifyObject(IAccessPolicy, StaticPolicy())
    assert verifyObject(IAccessPolicy, LaterPolicy())
    assert verifyObject(IAccessPolicy, RaisingPolicy())


# Clients behind a PROXY-protocol listener.


def proxiedClient(harness: ProxyHarness, claimed: str, balancer: str) -> FakeClient:
    """
    A client a PROXY header from C{balancer} named as C{claimed}: built as
    connectproxy's PROXY-protocol reader builds it, on the connection from
    the balancer.
    """
    balancerAddress = IPv4Address("TCP", balancer, 6000)
    protocol = harness.factory.buildProxiedProtocol(
        IPv4Address("TCP", claimed, 5000), balancerAddress
    )
    transport = HalfCloseableStringTransport(peerAddress=balancerAddress)
    protocol.makeConnection(transport)
    return FakeClient(protocol, transport)


def test_forgedProxyHeaderClaimingLoopbackRefused() -> None:
    """
    A PROXY header from an untrusted peer is not believed: claiming to be
    127.0.0.1 gets 403.
    """
    harness = makeHarness()
    client = proxiedClient(harness, "127.0.0.1", "203.0.113.9")
    client.send(connectHead())
    response = client.response()
    assert response.status == 403
    assert response.body == (
        b"403 Forbidden: load balancer 203.0.113.9 is not a trusted proxy "
        b"(see --trusted-proxy)\n"
    )
    assert harness.connector.attempts == []


def test_proxiedLoopbackNotImplicit() -> None:
    """
    Even from a trusted balancer, a claimed loopback client is not allowed
    by default, not even the balancer's own address: only the operator's
    --allow-client networks are.
    """
    harness = makeHarness()
    for claimed in ("127.0.0.1", "127.0.0.5"):
        client = proxiedClient(harness, claimed, "127.0.0.1")
        client.send(connectHead())
        response = client.response()
        assert response.status == 403
        expected = (
            f"403 Forbidden: client {claimed} is not allowed behind a load "
            "balancer (see --allow-client)\n"
        )
        assert response.body == expected.encode()
    assert harness.connector.attempts == []


@pytest.mark.parametrize(
    "balancer, trusted, served",
    [
        ("127.0.0.1", [], True),
        ("10.1.2.3", [], False),
        ("10.1.2.3", ["10.0.0.0/8"], True),
    ],
)
def test_trustedBalancers(balancer: str, trusted: list[str], served: bool) -> None:
    """
    A client in an --allow-client network is served through a balancer on
    loopback or in a --trusted-proxy network, and refused through others.
    """
    clients = ClientRules.fromStrings(allow=["198.51.100.0/24"], trustedProxies=trusted)
    harness = makeHarness(rules=rulesWith(clients=clients))
    client = proxiedClient(harness, "198.51.100.7", balancer)
    client.send(connectHead())
    assert (harness.connector.attempts != []) is served


def test_parallelGuessesCountTowardsLimit() -> None:
    """
    Checks under way count towards the failed-login limit: one address
    sending guesses in parallel gets no more of them checked at once than
    failures it has left, and the rest get 429.
    """
    checker = PendingChecker()
    harness = makeHarness(checker=checker, maxFailures=3)
    clients = [harness.connectClient() for _ in range(20)]
    for client in clients:
        client.send(connectHead("example.com:443", basic(b"alice:guess")))
    assert len(checker.pending) == 3
    statuses = [client.response().status for client in clients[3:]]
    assert statuses == [429] * 17
    for d in checker.pending:
        d.errback(UnauthorizedLogin())
    client = harness.connectClient()
    client.send(connectHead("example.com:443", basic(GOOD)))
    assert client.response().status == 429
    assert len(checker.pending) == 3


def test_busyCheckerIs503NotAFailure(tmp_path: Path) -> None:
    """
    When the password checks queue is full the client gets 503 with
    Retry-After, and it does not count as a failed login.
    """
    path = tmp_path / "htpasswd"
    path.write_text("alice:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=\n")
    checker = HtpasswdChecker(
        str(path), runInThread=lambda verification: Deferred(), maxQueued=1
    )
    harness = makeHarness(checker=checker, maxFailures=5)
    checker._clock = harness.clock
    harness.connectClient().send(connectHead("example.com:443", basic(GOOD)))
    client = harness.connectClient()
    client.send(connectHead("example.com:443", basic(GOOD)))
    response = client.response()
    assert (response.status, response.header("Retry-After")) == (503, "1")
    assert harness.factory.gatekeeper.limiter is not None
    assert harness.factory.gatekeeper.limiter._recentFailures("127.0.0.1", "alice") == 0
