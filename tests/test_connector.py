# -*- test-case-name: tests.test_connector -*-
"""
Tests for L{connectproxy.UpstreamRequest}, what an upstream connector
receives: the normalised target the access checks saw, the user, the
client and the request; and connectors written for plugin API version 1.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import pytest
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocol
from zope.interface import implementer

from connectproxy import (
    AccessRequest,
    AccessRules,
    ClientRules,
    Gatekeeper,
    UpstreamRequest,
    userPortal,
)
from connectproxy.interfaces import IAccessPolicy, IUpstreamConnector
from connectproxy.testing import (
    FakeConnector,
    HalfCloseableStringTransport,
    ProxyHarness,
    connectHead,
    upstreamRequest,
)
from tests._helpers import ESTABLISHED


@implementer(IAccessPolicy)
class Seen:
    """
    A policy that allows everything and keeps what it was asked.
    """

    def __init__(self) -> None:
        self.asked: list[AccessRequest] = []

    def checkAccess(self, access: AccessRequest) -> None:
        self.asked.append(access)


@pytest.mark.parametrize(
    ("authority", "host"),
    [
        ("WWW.Example.COM.:443", "www.example.com"),
        ("[::FFFF:192.0.2.1]:443", "192.0.2.1"),
        ("[2001:DB8::0:1]:443", "2001:db8::1"),
    ],
)
def test_targetAsPoliciesSawIt(authority: str, host: str) -> None:
    """
    The connector gets the target host normalised exactly as the host
    rules and policies saw it, not the raw parsed form.
    """
    policy = Seen()
    harness = ProxyHarness(gatekeeper=Gatekeeper(AccessRules.defaults(), [policy]))
    client = harness.connectClient()
    client.send(connectHead(authority))
    [attempt] = harness.connector.attempts
    [access] = policy.asked
    assert (attempt.target.host, attempt.target.port) == (host, 443)
    assert (access.host, access.port) == (host, 443)
    assert attempt.target.request is attempt.request is access.request


def test_targetCarriesUserAndClient() -> None:
    """
    The connector learns who asked: the authenticated user and the
    client's address, with the parsed request.
    """
    checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
    gatekeeper = Gatekeeper(AccessRules.defaults(), portal=userPortal([checker]))
    harness = ProxyHarness(gatekeeper=gatekeeper)
    peer = IPv6Address("TCP", "::1", 40123)
    client = harness.connectClient(peer)
    client.send(
        connectHead("example.com:443", "Proxy-Authorization: Basic YWxpY2U6c2VjcmV0")
    )
    [attempt] = harness.connector.attempts
    target = attempt.target
    assert (target.user, target.client, target.clientHost) == ("alice", peer, "::1")
    assert target.request.getHeader("proxy-authorization") is not None
    attempt.succeed()
    assert client.transport.value() == ESTABLISHED


def test_targetClientIsTheClaimedOne() -> None:
    """
    Behind a PROXY-protocol listener, the client is the one the header
    claims, not the load balancer: that is whose share of the resolver
    pool a lookup uses.
    """
    rules = AccessRules.defaults()
    rules = dataclasses.replace(
        rules, clients=ClientRules.fromStrings(allow=["198.51.100.0/24"])
    )
    harness = ProxyHarness(gatekeeper=Gatekeeper(rules))
    claimed = IPv4Address("TCP", "198.51.100.7", 5000)
    client = harness.connectClient(claimed)
    client.transport.transport = HalfCloseableStringTransport(  # type: ignore[attr-defined]
        peerAddress=IPv4Address("TCP", "127.0.0.1", 6000)
    )
    client.send(connectHead("example.com:443"))
    [attempt] = harness.connector.attempts
    assert (attempt.target.client, attempt.target.clientHost) == (
        claimed,
        "198.51.100.7",
    )


@implementer(IUpstreamConnector)
class Version1Connector:
    """
    A connector written for plugin API version 1: it names its argument
    C{request} and reads C{host} and C{port} (and, here, C{authority} and
    C{getHeader}) on it.
    """

    def __init__(self, readsMore: bool = False) -> None:
        self.inner = FakeConnector()
        self.readsMore = readsMore
        self.seen: list[Any] = []

    def connectUpstream(self, request: Any, protocol: IProtocol) -> Deferred[IProtocol]:
        self.seen.append((request.host, request.port))
        if self.readsMore:
            self.seen.append((request.authority, request.getHeader("host")))
        return self.inner.connectUpstream(request, protocol)


def test_version1ConnectorWorksUnchanged() -> None:
    """
    A version-1 connector that reads C{request.host} and C{request.port}
    works unchanged, without a warning.
    """
    harness = ProxyHarness()
    connector = Version1Connector()
    harness.factory.connector = connector
    client = harness.connectClient()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        client.send(connectHead("Example.com:443"))
    assert connector.seen == [("example.com", 443)]
    connector.inner.attempts[0].succeed()
    assert client.transport.value() == ESTABLISHED


def test_version1ConnectorReadingMore() -> None:
    """
    A version-1 connector that reads what else the parsed request had
    still gets it, with a deprecation warning that names its own code and
    the replacement.
    """
    harness = ProxyHarness()
    connector = Version1Connector(readsMore=True)
    harness.factory.connector = connector
    client = harness.connectClient()
    with pytest.warns(DeprecationWarning) as caught:
        client.send(connectHead("example.com:443"))
    assert connector.seen == [
        ("example.com", 443),
        ("example.com:443", "example.com:443"),
    ]
    messages = [str(w.message) for w in caught]
    assert messages == [
        "connectproxy.UpstreamRequest.authority was deprecated in connectproxy "
        "0.1.0; please use UpstreamRequest.request.authority instead",
        "connectproxy.UpstreamRequest.getHeader was deprecated in connectproxy "
        "0.1.0; please use UpstreamRequest.request.getHeader instead",
    ]
    assert {w.filename for w in caught} == {__file__}
    connector.inner.attempts[0].succeed()
    assert client.transport.value() == ESTABLISHED


def test_otherAttributesMissing() -> None:
    """
    Names that neither the record nor the parsed request has raise
    L{AttributeError} at once, without a warning.
    """
    target = upstreamRequest()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttributeError, match="'UpstreamRequest' object has no"):
            target.clientPort  # noqa: B018
        assert not hasattr(target, "__deepcopy__")


def test_recordIsFrozen() -> None:
    """
    The record cannot be changed by a connector, nor given new attributes.
    """
    target = upstreamRequest()
    with pytest.raises(dataclasses.FrozenInstanceError):
        target.host = "elsewhere.example"  # type: ignore[misc]
    assert not hasattr(target, "__dict__")


@pytest.mark.parametrize(
    ("client", "host"),
    [
        (IPv4Address("TCP", "192.0.2.1", 1), "192.0.2.1"),
        (IPv6Address("TCP", "2001:db8::1", 1), "2001:db8::1"),
        (UNIXAddress(b"/run/proxy.sock"), ""),
        (None, ""),
    ],
)
def test_clientHost(client: Any, host: str) -> None:
    """
    C{clientHost} is the client's IP address as text, C{""} for a client
    without one.
    """
    target = UpstreamRequest(
        "example.com", 443, None, client, upstreamRequest().request
    )
    assert target.clientHost == host
