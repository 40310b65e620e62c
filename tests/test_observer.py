# -*- test-case-name: tests.test_observer -*-
"""
Tests for what observers are told: the records and their outcomes, the
connection events, the timings of a tunnel, the access log and the fan-out
to several observers (with observers written for plugin API version 1).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet.address import IPv4Address
from twisted.internet.error import (
    ConnectionLost,
    ConnectionRefusedError,
    DNSLookupError,
)
from twisted.logger import LogEvent, eventAsJSON, eventFromJSON, formatEvent
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from connectproxy import (
    AccessLogObserver,
    AccessRules,
    ConnectionRecord,
    ConnectProxyFactory,
    ForbiddenDestination,
    Gatekeeper,
    Outcome,
    ProxySettings,
    Refusal,
    RefusedRequest,
    ResolverBusy,
    TunnelRecord,
    userPortal,
)
from connectproxy._errors import CheckerBusy
from connectproxy._observer import ObserverFanOut, outcomeForStatus
from connectproxy._proxyprotocol import ProxyHeaderFactory
from connectproxy.interfaces import IExchangeRecord, IProxyObserver
from connectproxy.testing import (
    FakeClient,
    HalfCloseableStringTransport,
    ProxyHarness,
    RecordingObserver,
)
from tests.test_admission import (
    FOREIGN,
    GOOD,
    LaterPolicy,
    PendingChecker,
    RaisingPolicy,
    StaticPolicy,
    basic,
    connectHead,
    makeHarness,
    rulesWith,
)

CONNECT = connectHead()
ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"


def kinds(observer: RecordingObserver) -> list[str]:
    """
    The names of the reports C{observer} got, in order.
    """
    return [name for name, _ in observer.events]


# The records.


def test_outcomeValues() -> None:
    """
    The outcomes are a small fixed set of strings.
    """
    assert [str(o) for o in Outcome] == [
        "ok",
        "bad_request",
        "auth_required",
        "auth_failed",
        "denied",
        "upstream_failed",
        "timeout",
        "overloaded",
        "error",
        "shed",
        "abandoned",
    ]
    assert Outcome("denied") is Outcome.DENIED
    assert str(Outcome.DENIED) == "denied"


def test_requestResult() -> None:
    """
    Each outcome maps to the result of an answered request as the request
    metrics count it, or to C{None} for requests that were not answered.
    """
    results = {str(o): o.requestResult for o in Outcome}
    assert results == {
        "ok": "ok",
        "bad_request": "bad_request",
        "auth_required": "auth_required",
        "auth_failed": "auth_required",
        "denied": "denied",
        "upstream_failed": "upstream_failed",
        "timeout": "timeout",
        "overloaded": "overloaded",
        "error": "error",
        "shed": None,
        "abandoned": None,
    }


@pytest.mark.parametrize(
    "status, outcome",
    [
        (400, "bad_request"),
        (404, "bad_request"),
        (405, "bad_request"),
        (414, "bad_request"),
        (431, "bad_request"),
        (501, "bad_request"),
        (505, "bad_request"),
        (403, "denied"),
        (429, "denied"),
        (451, "denied"),
        (407, "auth_required"),
        (408, "timeout"),
        (504, "timeout"),
        (502, "upstream_failed"),
        (503, "overloaded"),
        (500, "error"),
        (599, "error"),
        (0, "error"),
    ],
)
def test_outcomeForStatus(status: int, outcome: str) -> None:
    """
    A refusal that does not say its outcome gets the usual one for its
    status.
    """
    assert outcomeForStatus(status) == outcome
    assert RefusedRequest("c", "CONNECT", "a:1", status, "r").outcome == outcome


def test_refusedRequestVersion1Fields() -> None:
    """
    A L{RefusedRequest} is still made with the fields of version 1, in
    their order; an explicit outcome wins over the status, and must be one
    of the set.
    """
    record = RefusedRequest("127.0.0.1:1", "CONNECT", "a:443", 407, "r", "alice")
    assert (record.user, record.outcome) == ("alice", Outcome.AUTH_REQUIRED)
    assert isinstance(record.outcome, Outcome)
    failed = RefusedRequest("c", "CONNECT", "a:1", 407, "r", outcome="auth_failed")
    assert failed.outcome is Outcome.AUTH_FAILED
    with pytest.raises(ValueError):
        RefusedRequest("c", "CONNECT", "a:1", 403, "r", outcome="nope")


def test_tunnelRecordExchangeFields() -> None:
    """
    A L{TunnelRecord} has the fields of every request record: method,
    target (the authority by default, IPv6 hosts bracketed), outcome.
    """
    record = TunnelRecord("c", "2001:db8::1", 443, "u")
    assert (record.method, record.target, record.outcome) == (
        "CONNECT",
        "[2001:db8::1]:443",
        "ok",
    )
    assert TunnelRecord("c", "h", 1, "u", target="H:1").target == "H:1"
    assert (record.admitTime, record.connectTime) == (0.0, 0.0)


def test_recordsProvideExchangeRecord() -> None:
    """
    Both request records provide L{IExchangeRecord}.
    """
    assert verifyObject(IExchangeRecord, RefusedRequest("c", "", "", 400, "r"))
    assert verifyObject(IExchangeRecord, TunnelRecord("c", "h", 443, "u"))


# Connection events.


def test_connectionEventsAroundTunnel() -> None:
    """
    A connection that tunnels is reported opened, then its tunnel opened
    and closed, then the connection closed, with its duration and number
    of requests.
    """
    harness = ProxyHarness()
    client = harness.connectClient()
    [opened] = harness.observer.connectionsOpened
    assert opened == ConnectionRecord("127.0.0.1:40000")
    harness.clock.advance(1)
    client.send(CONNECT)
    attempt = harness.connector.attempts[0]
    attempt.succeed()
    harness.clock.advance(2)
    attempt.loseUpstream()
    client.lose()
    assert kinds(harness.observer) == [
        "connectionOpened",
        "tunnelOpened",
        "tunnelClosed",
        "connectionClosed",
    ]
    [closed] = harness.observer.connectionsClosed
    assert closed == ConnectionRecord("127.0.0.1:40000", 3.0, 1)


def test_connectionClosedAfterItsTunnel() -> None:
    """
    When the client's connection goes first, the connection is reported
    closed only once the tunnel is, when the upstream's is gone too.
    """
    harness = ProxyHarness()
    client = harness.connectClient()
    client.send(CONNECT)
    attempt = harness.connector.attempts[0]
    attempt.succeed()
    client.lose()
    assert harness.observer.connectionsClosed == []
    assert harness.observer.closed == []
    harness.clock.advance(0.5)
    attempt.loseUpstream()
    assert kinds(harness.observer)[-2:] == ["tunnelClosed", "connectionClosed"]
    assert harness.observer.connectionsClosed[0].duration == 0.5


def test_connectionWithoutRequest() -> None:
    """
    A connection that sends nothing is reported opened and closed, with no
    request.
    """
    harness = ProxyHarness()
    client = harness.connectClient()
    harness.clock.advance(4)
    client.lose()
    assert kinds(harness.observer) == ["connectionOpened", "connectionClosed"]
    assert harness.observer.connectionsClosed[0] == ConnectionRecord(
        "127.0.0.1:40000", 4.0, 0
    )


def test_requestsCounted() -> None:
    """
    A connection that retries after a 407 on the same connection is one
    connection with two requests.
    """
    checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
    harness = makeHarness(checker=checker)
    client = harness.connectClient()
    client.send(CONNECT)
    client.send(connectHead("example.com:443", basic(GOOD)))
    harness.connector.attempts[0].succeed()
    client.lose()
    harness.connector.attempts[0].loseUpstream()
    assert kinds(harness.observer) == [
        "connectionOpened",
        "requestRefused",
        "tunnelOpened",
        "tunnelClosed",
        "connectionClosed",
    ]
    assert harness.observer.connectionsClosed[0].requests == 2


def test_refusedConnectionReported() -> None:
    """
    A connection refused over a limit is a connection too: opened, refused
    (C{overloaded}) and closed.
    """
    harness = ProxyHarness(ProxySettings(maxConnections=1))
    harness.connectClient()
    refused = harness.connectClient(IPv4Address("TCP", "127.0.0.1", 41000))
    refused.lose()
    assert kinds(harness.observer) == [
        "connectionOpened",
        "connectionOpened",
        "requestRefused",
        "connectionClosed",
    ]
    [record] = harness.observer.refused
    assert (record.status, record.outcome) == (503, "overloaded")
    assert harness.observer.connectionsClosed[0].client == "127.0.0.1:41000"


def test_shedConnectionReported() -> None:
    """
    A connection shed far over the limit is reported opened, refused as
    C{shed} with no status, and closed once its transport is gone.
    """
    harness = ProxyHarness(ProxySettings(maxConnections=0))
    for _ in range(17):
        harness.connectClient()
    harness.factory.settings = ProxySettings(maxConnections=1)
    peer = IPv4Address("TCP", "127.0.0.1", 50000)
    shed = harness.factory.buildProtocol(peer)
    transport = HalfCloseableStringTransport(peerAddress=peer)
    shed.makeConnection(transport)
    assert transport.aborted and transport.value() == b""
    assert kinds(harness.observer)[-2:] == ["connectionOpened", "requestRefused"]
    [record] = harness.observer.refused
    assert (record.client, record.status, record.outcome) == (
        "127.0.0.1:50000",
        0,
        "shed",
    )
    harness.clock.advance(0.25)
    shed.connectionLost(Failure(ConnectionLost()))
    assert harness.observer.connectionsClosed == [
        ConnectionRecord("127.0.0.1:50000", 0.25)
    ]


def test_proxyProtocolConnectionReportedWithClient() -> None:
    """
    Behind a PROXY-protocol listener a connection is reported once the
    header names the client, with that client; one whose header is invalid
    is never reported.
    """
    harness = makeHarness(rules=rulesWith(clients=_clients("203.0.113.0/24")))
    balancer = IPv4Address("TCP", "127.0.0.1", 45000)
    factory = ProxyHeaderFactory(harness.factory)
    wrapper = factory.buildProtocol(balancer)
    transport = HalfCloseableStringTransport(peerAddress=balancer)
    wrapper.makeConnection(transport)
    assert harness.observer.events == []
    wrapper.dataReceived(b"PROXY TCP4 203.0.113.5 192.0.2.1 56324 3128\r\n")
    assert harness.observer.connectionsOpened == [ConnectionRecord("203.0.113.5:56324")]
    wrapper.connectionLost(Failure(ConnectionLost()))
    assert harness.observer.connectionsClosed[0].client == "203.0.113.5:56324"
    invalid = factory.buildProtocol(balancer)
    invalid.makeConnection(HalfCloseableStringTransport(peerAddress=balancer))
    invalid.dataReceived(CONNECT)
    invalid.connectionLost(Failure(ConnectionLost()))
    assert len(harness.observer.connectionsOpened) == 1


def _clients(network: str) -> Any:
    from connectproxy import ClientRules

    return ClientRules.fromStrings(allow=[network])


# Outcomes, one scenario each.


def _harnessWithChecker(checker: Any) -> ProxyHarness:
    return ProxyHarness(
        gatekeeper=Gatekeeper(AccessRules.defaults(), portal=userPortal([checker]))
    )


def _send(harness: ProxyHarness, data: bytes, peer: Any = None) -> FakeClient:
    client = harness.connectClient(peer)
    client.send(data)
    return client


def _malformed(harness: ProxyHarness) -> None:
    _send(harness, b"CONNECT\r\n\r\n")


def _notConnect(harness: ProxyHarness) -> None:
    _send(harness, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")


def _headTimeout(harness: ProxyHarness) -> None:
    harness.connectClient()
    harness.clock.advance(harness.factory.settings.requestTimeout)


def _noCredentials(harness: ProxyHarness) -> None:
    harness.factory.gatekeeper = _harnessWithChecker(
        InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
    ).factory.gatekeeper
    _send(harness, connectHead(version="1.0"))


def _wrongCredentials(harness: ProxyHarness) -> None:
    harness.factory.gatekeeper = _harnessWithChecker(
        InMemoryUsernamePasswordDatabaseDontUse(alice=b"other")
    ).factory.gatekeeper
    _send(harness, connectHead("example.com:443", basic(GOOD), version="1.0"))


def _malformedCredentials(harness: ProxyHarness) -> None:
    harness.factory.gatekeeper = _harnessWithChecker(
        InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
    ).factory.gatekeeper
    _send(harness, connectHead("example.com:443", "Proxy-Authorization: Basic !"))


def _checkerBusy(harness: ProxyHarness) -> None:
    checker = PendingChecker()
    harness.factory.gatekeeper = _harnessWithChecker(checker).factory.gatekeeper
    _send(harness, connectHead("example.com:443", basic(GOOD)))
    checker.pending[0].errback(CheckerBusy())


def _foreignClient(harness: ProxyHarness) -> None:
    _send(harness, CONNECT, FOREIGN)


def _port(harness: ProxyHarness) -> None:
    _send(harness, connectHead("example.com:25"))


def _host(harness: ProxyHarness) -> None:
    harness.factory.gatekeeper = Gatekeeper(rulesWith(hosts=_denyHost()))
    _send(harness, CONNECT)


def _denyHost() -> Any:
    from connectproxy import HostRules

    return HostRules.fromStrings(deny=["example.com"])


def _invalidHost(harness: ProxyHarness) -> None:
    _send(harness, connectHead("exa mple.com:443"))


def _policy(status: int) -> Callable[[ProxyHarness], None]:
    def scenario(harness: ProxyHarness) -> None:
        policy = StaticPolicy(Refusal(status, "no"))
        harness.factory.gatekeeper = Gatekeeper(AccessRules.defaults(), [policy])
        _send(harness, CONNECT)

    return scenario


def _brokenPolicy(harness: ProxyHarness) -> None:
    harness.factory.gatekeeper = Gatekeeper(AccessRules.defaults(), [RaisingPolicy()])
    _send(harness, CONNECT)


def _slowPolicy(harness: ProxyHarness) -> None:
    harness.factory.gatekeeper = Gatekeeper(AccessRules.defaults(), [LaterPolicy()])
    _send(harness, CONNECT)
    harness.clock.advance(harness.factory.settings.connectTimeout)


def _connectFails(error: BaseException) -> Callable[[ProxyHarness], None]:
    def scenario(harness: ProxyHarness) -> None:
        _send(harness, CONNECT)
        harness.connector.attempts[0].fail(error)

    return scenario


def _connectTimeout(harness: ProxyHarness) -> None:
    _send(harness, CONNECT)
    harness.clock.advance(harness.factory.settings.connectTimeout)


def _connectorBug(harness: ProxyHarness) -> None:
    _send(harness, CONNECT)
    harness.connector.attempts[0].fail(ZeroDivisionError())


def _connectorBrokeContract(harness: ProxyHarness) -> None:
    _send(harness, CONNECT)
    harness.connector.attempts[0].deferred.callback(None)  # type: ignore[arg-type]


def _overLimit(harness: ProxyHarness) -> None:
    harness.factory.settings = ProxySettings(maxConnections=1)
    harness.connectClient()
    harness.connectClient()


def _draining(harness: ProxyHarness) -> None:
    harness.factory.drain()
    _send(harness, CONNECT)


def _abandoned(harness: ProxyHarness) -> None:
    _send(harness, CONNECT).lose(ConnectionLost())


@pytest.mark.parametrize(
    "scenario, status, outcome",
    [
        (_malformed, 400, "bad_request"),
        (_notConnect, 400, "bad_request"),
        (_invalidHost, 400, "bad_request"),
        (_headTimeout, 408, "timeout"),
        (_noCredentials, 407, "auth_required"),
        (_wrongCredentials, 407, "auth_failed"),
        (_malformedCredentials, 407, "auth_failed"),
        (_checkerBusy, 503, "overloaded"),
        (_foreignClient, 403, "denied"),
        (_port, 403, "denied"),
        (_host, 403, "denied"),
        (_policy(403), 403, "denied"),
        (_policy(404), 404, "denied"),
        (_policy(503), 503, "overloaded"),
        (_brokenPolicy, 500, "error"),
        (_slowPolicy, 503, "timeout"),
        (_connectFails(DNSLookupError()), 502, "upstream_failed"),
        (_connectFails(ConnectionRefusedError()), 502, "upstream_failed"),
        (_connectFails(ForbiddenDestination("no")), 403, "denied"),
        (_connectFails(ResolverBusy("busy")), 503, "overloaded"),
        (_connectTimeout, 504, "timeout"),
        (_connectorBug, 502, "error"),
        (_connectorBrokeContract, 500, "error"),
        (_overLimit, 503, "overloaded"),
        (_draining, 503, "overloaded"),
        (_abandoned, 0, "abandoned"),
    ],
    ids=lambda value: getattr(value, "__name__", None),
)
def test_outcomes(
    scenario: Callable[[ProxyHarness], None],
    status: int,
    outcome: str,
    logEvents: list[LogEvent],
) -> None:
    """
    Every way a request is refused reaches the observers once, with its
    status and outcome.
    """
    harness = ProxyHarness()
    scenario(harness)
    [refused] = harness.observer.refused
    assert (refused.status, refused.outcome) == (status, outcome)


def test_authFailedThenRequired() -> None:
    """
    On one connection, a retry with wrong credentials after a challenge is
    an C{auth_failed}, the first request an C{auth_required}.
    """
    harness = _harnessWithChecker(
        InMemoryUsernamePasswordDatabaseDontUse(alice=b"other")
    )
    client = harness.connectClient()
    client.send(CONNECT)
    client.send(connectHead("example.com:443", basic(GOOD)))
    assert [r.outcome for r in harness.observer.refused] == [
        "auth_required",
        "auth_failed",
    ]


# Timings.


def test_admitAndConnectTimes() -> None:
    """
    A tunnel's record says how long its access checks and its upstream
    connect took, by the proxy's clock, when it opens and when it closes.
    """
    policy = LaterPolicy()
    harness = ProxyHarness(gatekeeper=Gatekeeper(AccessRules.defaults(), [policy]))
    client = harness.connectClient()
    harness.clock.advance(7)
    client.send(CONNECT)
    harness.clock.advance(1.5)
    policy.pending[0].callback(None)
    harness.clock.advance(2.25)
    attempt = harness.connector.attempts[0]
    attempt.succeed()
    [opened] = harness.observer.opened
    assert (opened.admitTime, opened.connectTime) == (1.5, 2.25)
    attempt.loseUpstream()
    client.lose()
    [closed] = harness.observer.closed
    assert (closed.admitTime, closed.connectTime) == (1.5, 2.25)
    assert (closed.method, closed.target) == ("CONNECT", "example.com:443")


def test_timesOfTheRetriedRequest() -> None:
    """
    After a 407, the times are those of the request that became the
    tunnel.
    """
    checker = PendingChecker()
    harness = _harnessWithChecker(checker)
    client = harness.connectClient()
    client.send(CONNECT)
    harness.clock.advance(10)
    client.send(connectHead("example.com:443", basic(GOOD)))
    harness.clock.advance(0.5)
    checker.pending[0].callback(b"alice")
    harness.connector.attempts[0].succeed()
    [opened] = harness.observer.opened
    assert (opened.admitTime, opened.connectTime, opened.user) == (0.5, 0.0, "alice")


# The access log.


def _named(events: list[LogEvent], name: str) -> list[LogEvent]:
    return [e for e in events if e.get("event") == name]


def test_accessLogOutcomeAndTimes(logEvents: list[LogEvent]) -> None:
    """
    The access log's C{request_refused} events carry the outcome, and its
    tunnel events the admission and connect times.
    """
    harness = ProxyHarness()
    harness.factory.observer = ObserverFanOut([AccessLogObserver()])
    _send(harness, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    client = _send(harness, CONNECT)
    harness.clock.advance(3)
    attempt = harness.connector.attempts[0]
    attempt.succeed()
    attempt.loseUpstream()
    client.lose()
    [refused] = _named(logEvents, "request_refused")
    assert (refused["status"], refused["outcome"]) == (400, "bad_request")
    assert type(refused["outcome"]) is str
    [opened] = _named(logEvents, "tunnel_open")
    [closed] = _named(logEvents, "tunnel_close")
    for event in (opened, closed):
        assert (event["admitTime"], event["connectTime"]) == (0.0, 3.0)


def test_accessLogLeavesOutUnanswered(logEvents: list[LogEvent]) -> None:
    """
    Abandoned and shed requests are not C{request_refused} events: the
    proxy logs them as C{connect_abandoned} and C{connections_shed}.
    """
    harness = ProxyHarness(ProxySettings(maxConnections=0))
    harness.factory.observer = ObserverFanOut([AccessLogObserver()])
    _abandoned(harness)
    for _ in range(17):
        harness.connectClient()
    harness.factory.settings = ProxySettings(maxConnections=1)
    peer = IPv4Address("TCP", "127.0.0.1", 50000)
    shed = harness.factory.buildProtocol(peer)
    shed.makeConnection(HalfCloseableStringTransport(peerAddress=peer))
    assert _named(logEvents, "request_refused") == []
    assert len(_named(logEvents, "connect_abandoned")) == 1
    assert len(_named(logEvents, "connections_shed")) == 1


@pytest.mark.parametrize(
    "host, destination",
    [
        ("2001:db8::1", "[2001:db8::1]:443"),
        ("::ffff:7f00:1", "[::ffff:7f00:1]:443"),
        ("192.0.2.1", "192.0.2.1:443"),
        ("example.com", "example.com:443"),
    ],
)
def test_accessLogTextBracketsIPv6(
    logEvents: list[LogEvent], host: str, destination: str
) -> None:
    """
    The text of the tunnel lines writes an IPv6 destination in brackets
    (C{[v6]:port}, as for the client and the upstream); the C{host} field
    stays the bare address.
    """
    observer = AccessLogObserver(logOpens=True)
    record = TunnelRecord("[::1]:5", host, 443, "[2001:db8::1]:443")
    observer.tunnelOpened(record)
    observer.tunnelClosed(record)
    opened, closed = logEvents
    assert formatEvent(opened) == (
        f"tunnel opened [::1]:5 - -> {destination} via [2001:db8::1]:443"
    )
    assert formatEvent(closed).startswith(
        f"tunnel closed [::1]:5 - -> {destination} via [2001:db8::1]:443: "
    )
    assert (opened["host"], closed["host"]) == (host, host)


def test_accessLogTextWhole(logEvents: list[LogEvent]) -> None:
    """
    The access log's lines are formatted once, when the event is made: the
    text is whole (a reason with braces in it is not a format of its own),
    every field is in the event with its value, and an event read back from
    C{twist}'s JSON log renders the same text.
    """
    observer = AccessLogObserver()
    record = TunnelRecord(
        "127.0.0.1:5",
        "example.com",
        443,
        "192.0.2.1:443",
        bytesUp=10,
        bytesDown=2000,
        duration=1.23456,
        reason="upstream {closed}",
        user="alice",
        admitTime=0.25,
    )
    observer.tunnelClosed(record)
    observer.requestRefused(
        RefusedRequest("127.0.0.1:6", "CONNECT", "a:1", 403, "port {1}", "bob")
    )
    closed, refused = logEvents
    closedText = (
        "tunnel closed 127.0.0.1:5 alice -> example.com:443 via 192.0.2.1:443: "
        "10 bytes up, 2000 bytes down, 1.235s, upstream {closed}"
    )
    refusedText = "refused 127.0.0.1:6 bob CONNECT a:1: 403 port {1}"
    assert formatEvent(closed) == closedText
    assert formatEvent(refused) == refusedText
    assert {key: closed[key] for key in ("bytesDown", "duration", "user")} == {
        "bytesDown": 2000,
        "duration": 1.23456,
        "user": "alice",
    }
    assert (refused["status"], refused["reason"]) == (403, "port {1}")
    for event, text in ((closed, closedText), (refused, refusedText)):
        assert formatEvent(eventFromJSON(eventAsJSON(event))) == text


# Observers of plugin API version 1, and the fan-out.


class Version1Observer:
    """
    An observer written for plugin API version 1: no connection events.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []

    def requestRefused(self, event: RefusedRequest) -> None:
        self.calls.append("requestRefused")

    def tunnelOpened(self, event: TunnelRecord) -> None:
        self.calls.append("tunnelOpened")

    def tunnelClosed(self, event: TunnelRecord) -> None:
        self.calls.append("tunnelClosed")


def test_version1ObserverWarnedAndServed() -> None:
    """
    A version 1 observer given to the factory gets a deprecation warning
    naming the code that gave it, and still every report it has a method
    for.
    """
    harness = ProxyHarness()
    old = Version1Observer()
    with pytest.warns(DeprecationWarning) as caught:
        factory = ConnectProxyFactory(
            harness.clock,
            connector=harness.connector,
            observers=[old],  # type: ignore[list-item]
        )
    [warning] = caught
    assert warning.filename == __file__
    assert str(warning.message) == (
        f"{old!r} lacks connectionOpened and connectionClosed: observers "
        "written for plugin API version 1 were deprecated in connectproxy "
        "0.1.0; please implement every method of "
        "connectproxy.interfaces.IProxyObserver"
    )
    harness.factory = factory
    client = _send(harness, CONNECT)
    harness.connector.attempts[0].succeed()
    _send(harness, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    client.lose()
    harness.connector.attempts[0].loseUpstream()
    assert old.calls == ["tunnelOpened", "requestRefused", "tunnelClosed"]


def test_version1ObserverInFanOut() -> None:
    """
    A fan-out made directly warns about a version 1 observer, naming the
    code that made it.
    """
    with pytest.warns(DeprecationWarning) as caught:
        ObserverFanOut([Version1Observer()])  # type: ignore[list-item]
    assert caught[0].filename == __file__


def test_currentObserversNotWarned() -> None:
    """
    Observers with every method raise no warning.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ObserverFanOut([RecordingObserver(), AccessLogObserver()])


def test_observerFailingInConnectionEvent(logEvents: list[LogEvent]) -> None:
    """
    An observer that raises in a connection event is logged, and the
    others and the proxy carry on.
    """

    @implementer(IProxyObserver)
    class Broken(RecordingObserver):
        def connectionOpened(self, event: ConnectionRecord) -> None:
            raise RuntimeError("observer bug")

    recorder = RecordingObserver()
    harness = ProxyHarness()
    harness.factory.observer = ObserverFanOut([Broken(), recorder])
    client = _send(harness, CONNECT)
    harness.connector.attempts[0].succeed()
    assert client.transport.value() == ESTABLISHED
    assert kinds(recorder) == ["connectionOpened", "tunnelOpened"]
    [failure] = _named(logEvents, "observer_error")
    assert failure["method"] == "connectionOpened"


def test_observersProvideInterface() -> None:
    """
    The shipped observers provide every method of L{IProxyObserver}.
    """
    for observer in (AccessLogObserver(), ObserverFanOut([]), RecordingObserver()):
        assert verifyObject(IProxyObserver, observer)
