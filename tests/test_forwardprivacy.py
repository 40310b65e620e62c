# -*- test-case-name: tests.test_forwardprivacy -*-
"""
What the logs and the observers' records show of a forwarded request's URL:
never the user information of a URL, and its query only with
C{--log-query}, whether the request was forwarded or refused (400, 403,
407, 502, 504), in every access-log format.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import cast

import pytest
from twisted.internet.error import ConnectionRefusedError
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher

from connectproxy import ForbiddenDestination, ProxySettings
from connectproxy._accesslog import formatJSON, formatSquid, formatText
from connectproxy._observer import AccessLogObserver, ForwardedRequest, RefusedRequest
from connectproxy._rules import ClientRules, PortRules
from connectproxy._target import loggedTarget
from connectproxy.testing import FakeClient, ProxyHarness
from tests._forwarding import connectOrigin, forwardingHarness, get
from tests._helpers import authHarness, makeHarness, rulesWith

SECRET_QUERY = "http://example.com/path?token=hunter2"
USERINFO = "http://bob:hunter2@example.com/path?token=hunter2"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


@pytest.mark.parametrize(
    ("target", "logQuery", "expected"),
    [
        (SECRET_QUERY, False, "http://example.com/path"),
        (SECRET_QUERY, True, SECRET_QUERY),
        (USERINFO, False, "http://example.com/path"),
        (USERINFO, True, "http://example.com/path?token=hunter2"),
        ("http://bob:pw@example.com", False, "http://example.com"),
        ("http://bob@example.com?x=1", False, "http://example.com"),
        ("http://a@b@example.com:8080/x#frag", False, "http://example.com:8080/x"),
        ("HTTPS://bob:pw@example.com/?q", True, "HTTPS://example.com/?q"),
        ("bob:pw@example.com:443", False, "example.com:443"),
        ("example.com:443", False, "example.com:443"),
        ("/local?token=x", False, "/local"),
        ("/local/a@b?token=x", True, "/local/a@b?token=x"),
        ("http://example.com/a@b?x", False, "http://example.com/a@b"),
        ("*", False, "*"),
        ("", False, ""),
    ],
)
def test_loggedTarget(target: str, logQuery: bool, expected: str) -> None:
    """
    L{loggedTarget} drops the user information always, the query and the
    fragment unless asked to keep the query; an C{@} in the path is not
    user information.
    """
    assert loggedTarget(target, logQuery) == expected


def _bad400(harness: ProxyHarness, client: FakeClient, url: str) -> None:
    # Both Content-Length and Transfer-Encoding: refused before admission.
    client.send(
        get(url, "Content-Length: 3", "Transfer-Encoding: chunked", method="POST")
    )


def _badHead(harness: ProxyHarness, client: FakeClient, url: str) -> None:
    # A header line without a colon: the head is not parsed.
    client.send(f"GET {url} HTTP/1.1\r\nHost: x\r\nbroken\r\n\r\n".encode())


def _forbidden(harness: ProxyHarness, client: FakeClient, url: str) -> None:
    client.send(get(url))
    harness.connector.attempts[-1].fail(ForbiddenDestination("loopback"))


def _unreachable(harness: ProxyHarness, client: FakeClient, url: str) -> None:
    client.send(get(url))
    harness.connector.attempts[-1].fail(ConnectionRefusedError())


def _timedOut(harness: ProxyHarness, client: FakeClient, url: str) -> None:
    client.send(get(url))
    harness.clock.advance(harness.factory.settings.connectTimeout + 1)


_Refusal = Callable[[ProxyHarness, FakeClient, str], None]

_PATHS: list[tuple[str, int, _Refusal]] = [
    ("framing", 400, _bad400),
    ("head", 400, _badHead),
    ("forbidden", 403, _forbidden),
    ("unreachable", 502, _unreachable),
    ("timeout", 504, _timedOut),
]


def _formats(record: RefusedRequest | ForwardedRequest) -> list[str]:
    """
    Every line the access logs make of C{record}.
    """
    lines = [formatText(record, 0), formatJSON(record, 0), formatSquid(record, 0)]
    events: list[LogEvent] = []
    observer = AccessLogObserver()
    collect = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(collect)
    try:
        if isinstance(record, RefusedRequest):
            observer.requestRefused(record)
        else:
            observer.requestForwarded(record)
    finally:
        globalLogPublisher.removeObserver(collect)
    lines.extend(formatEvent(e) + json.dumps(e, default=str) for e in events)
    assert len(lines) == 4
    return lines


@pytest.mark.parametrize("logQuery", [False, True])
@pytest.mark.parametrize(("name", "status", "refusal"), _PATHS)
def test_refusedWithoutSecrets(
    name: str, status: int, refusal: _Refusal, logQuery: bool
) -> None:
    """
    A refused forwarded request is recorded, and logged in every format,
    without the user information of its URL, and without its query unless
    C{--log-query}.
    """
    harness = forwardingHarness(ProxySettings(connectTimeout=3, logQuery=logQuery))
    client = harness.connectClient()
    url = SECRET_QUERY if name in ("forbidden", "unreachable", "timeout") else USERINFO
    refusal(harness, client, url)
    assert client.transport.value().startswith(b"HTTP/1.1 %d " % status)
    [refused] = harness.observer.refused
    expected = "http://example.com/path" + ("?token=hunter2" if logQuery else "")
    assert refused.target == expected
    for line in _formats(refused):
        assert "bob" not in line
        assert ("hunter2" in line) is logQuery, line


def test_userinfoRefusedWithoutSecrets() -> None:
    """
    A URL with user information is refused (400), and its credentials are
    in no record, even with C{--log-query}.
    """
    harness = forwardingHarness(ProxySettings(logQuery=True))
    client = harness.connectClient()
    client.send(get("http://bob:hunter2@example.com/"))
    assert client.transport.value().startswith(b"HTTP/1.1 400 ")
    [refused] = harness.observer.refused
    assert refused.target == "http://example.com/"


@pytest.mark.parametrize("logQuery", [False, True])
def test_challengeWithoutSecrets(logQuery: bool) -> None:
    """
    A 407 to a forwarded request records its URL without the query unless
    C{--log-query}.
    """
    harness, _ = authHarness(
        rules=rulesWith(ports=PortRules.fromStrings(["80"])),
        settings=ProxySettings(logQuery=logQuery),
    )
    client = harness.connectClient()
    client.send(get(SECRET_QUERY))
    assert client.transport.value().startswith(b"HTTP/1.1 407 ")
    [refused] = harness.observer.refused
    for line in [refused.target, *_formats(refused)]:
        assert ("hunter2" in line) is logQuery, line


def test_refusedClientWithoutSecrets() -> None:
    """
    A client the rules refuse (403) is recorded with the URL of its request
    line, without user information or query.
    """
    clients = dataclasses.replace(ClientRules.fromStrings(), networks=())
    rules = rulesWith(clients=clients)
    harness = makeHarness(rules=rules)
    client = harness.connectClient()
    client.send(get(USERINFO))
    assert client.transport.value().startswith(b"HTTP/1.1 403 ")
    [refused] = harness.observer.refused
    assert refused.target == "http://example.com/path"


@pytest.mark.parametrize("logQuery", [False, True])
def test_forwardedWithoutSecrets(logQuery: bool) -> None:
    """
    A forwarded request is recorded and logged without its query unless
    C{--log-query}.
    """
    harness = forwardingHarness(ProxySettings(logQuery=logQuery))
    client = harness.connectClient()
    client.send(get(SECRET_QUERY))
    origin = connectOrigin(harness)
    # The origin gets the query, of course.
    assert origin.request().target == "/path?token=hunter2"
    origin.send(OK)
    [record] = harness.observer.forwarded
    for line in [record.target, *_formats(record)]:
        assert ("hunter2" in line) is logQuery, line
