# -*- test-case-name: tests.test_pool -*-
"""
The pool of idle upstream connections of forwarded requests
(L{connectproxy._pool}), through a whole proxy: what is reused and what is
not, the idle timeout, the retry of a request whose pooled connection died,
and that no upstream connection is left open.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure

from connectproxy import ProxySettings
from connectproxy.testing import FakeClient, ProxyHarness
from tests._forwarding import Origin, connectOrigin, forwardingHarness, get

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def exchange(
    harness: ProxyHarness, client: FakeClient, url: str = "http://example.com/"
) -> Origin:
    """
    Forward one GET on a fresh upstream connection and answer it.
    """
    client.send(get(url))
    origin = connectOrigin(harness)
    origin.send(OK)
    return origin


def test_reusedForSameOrigin() -> None:
    """
    After a complete exchange the upstream connection is pooled, and the
    next request to the same origin, from any client, goes on it: no new
    connect, and the record says it was reused.
    """
    harness = forwardingHarness()
    first = harness.connectClient()
    origin = exchange(harness, first)
    assert len(harness.factory.upstreamPool) == 1
    assert not origin.transport.disconnecting
    second = harness.connectClient()
    second.send(get("http://example.com/again"))
    assert len(harness.connector.attempts) == 1
    assert len(harness.factory.upstreamPool) == 0
    assert b"GET /again HTTP/1.1\r\n" in origin.read()
    origin.send(OK)
    assert second.transport.value().endswith(b"ok")
    records = harness.observer.forwarded
    assert [r.reused for r in records] == [False, True]
    assert records[1].connectTime == 0


def test_notReusedForAnotherOrigin() -> None:
    """
    A pooled connection serves its own host and port only.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    exchange(harness, client)
    client.send(get("http://other.example/"))
    assert len(harness.connector.attempts) == 2
    client.send(b"")
    connectOrigin(harness).send(OK)
    client.send(get("http://example.com:8080/"))
    assert len(harness.connector.attempts) == 3


def test_notPooledAfterConnectionClose() -> None:
    """
    An origin that says Connection: close, an HTTP/1.0 origin, a response
    read until the close, and a disabled pool: the connection is closed,
    never pooled.
    """
    for response, settings in [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", None),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", None),
        (OK, ProxySettings(upstreamKeepalive=0)),
    ]:
        harness = forwardingHarness(settings)
        client = harness.connectClient()
        client.send(get())
        origin = connectOrigin(harness)
        origin.send(response)
        assert origin.transport.disconnecting, response
        assert len(harness.factory.upstreamPool) == 0


def test_notPooledAfterEarlyResponse() -> None:
    """
    A response complete before its request's body is: the connection is
    not pooled (the rest of the body would follow on it).
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get("http://example.com/", "Content-Length: 10", method="POST"))
    origin = connectOrigin(harness)
    origin.send(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
    assert origin.transport.disconnecting
    assert client.transport.disconnecting
    assert len(harness.factory.upstreamPool) == 0


def test_idleTimeout() -> None:
    """
    An idle pooled connection is closed after --upstream-idle-timeout, by
    one timer.
    """
    harness = forwardingHarness(ProxySettings(upstreamIdleTimeout=5))
    client = harness.connectClient()
    origin = exchange(harness, client)
    client.lose()
    harness.clock.advance(4.9)
    assert not origin.transport.disconnecting
    harness.clock.advance(0.1)
    assert origin.transport.disconnecting
    assert len(harness.factory.upstreamPool) == 0
    origin.lose()
    assert harness.clock.getDelayedCalls() == []


def test_limitClosesOldest() -> None:
    """
    A full pool makes room by closing its oldest connection.
    """
    harness = forwardingHarness(ProxySettings(upstreamKeepalive=1))
    client = harness.connectClient()
    first = exchange(harness, client, "http://a.example/")
    second = exchange(harness, client, "http://b.example/")
    assert first.transport.disconnecting
    assert not second.transport.disconnecting
    assert len(harness.factory.upstreamPool) == 1


def test_idleConnectionThatSpeaksDropped() -> None:
    """
    An idle connection that receives bytes is aborted, one that receives a
    FIN closed, one that is lost forgotten: none is reused.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    chatty = exchange(harness, client, "http://a.example/")
    finished = exchange(harness, client, "http://b.example/")
    lost = exchange(harness, client, "http://c.example/")
    assert len(harness.factory.upstreamPool) == 3
    chatty.send(b"HTTP/1.1 200 OK\r\n")
    assert chatty.transport.aborted
    finished.finish()
    assert finished.transport.disconnecting
    lost.lose(ConnectionLost())
    assert len(harness.factory.upstreamPool) == 0


def test_drainClosesIdle() -> None:
    """
    Draining closes the idle pooled connections.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    origin = exchange(harness, client)
    harness.factory.drain()
    assert origin.transport.disconnecting
    assert len(harness.factory.upstreamPool) == 0


def test_retryOnceWhenPooledConnectionDies() -> None:
    """
    A GET sent on a pooled connection that closes before any byte of the
    response is sent again, once, on a fresh connection.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    pooled = exchange(harness, client)
    client.send(get("http://example.com/retry"))
    pooled.finish()
    pooled.lose()
    assert len(harness.connector.attempts) == 2
    fresh = connectOrigin(harness)
    assert fresh.request().target == "/retry"
    fresh.send(OK)
    assert client.transport.value().count(b"HTTP/1.1 200 OK") == 2
    [_, record] = harness.observer.forwarded
    assert (record.status, record.reused) == (200, False)


def test_noSecondRetry() -> None:
    """
    The retry's own connection dying gets the client a 502.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    pooled = exchange(harness, client)
    client.send(get("http://example.com/retry"))
    pooled.lose()
    fresh = connectOrigin(harness)
    fresh.lose()
    assert b"HTTP/1.1 502 " in client.transport.value()
    assert len(harness.connector.attempts) == 2


def test_noRetryForPostOrAfterResponseBytes() -> None:
    """
    A POST is not retried, nor a request whose response had begun.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    pooled = exchange(harness, client)
    client.send(get("http://example.com/", "Content-Length: 1", method="POST") + b"x")
    pooled.lose()
    assert b"HTTP/1.1 502 " in client.transport.value()
    assert len(harness.connector.attempts) == 1
    harness = forwardingHarness()
    client = harness.connectClient()
    pooled = exchange(harness, client)
    client.send(get())
    pooled.send(b"HTTP/1.1 200")
    pooled.lose()
    assert len(harness.connector.attempts) == 1
    assert b"HTTP/1.1 502 " in client.transport.value()


def test_noRetryOnFreshConnection() -> None:
    """
    A fresh connection that dies before the response is not retried.
    """
    harness = forwardingHarness()
    client = harness.connectClient()
    client.send(get())
    connectOrigin(harness).lose()
    assert len(harness.connector.attempts) == 1
    assert b"HTTP/1.1 502 " in client.transport.value()


def test_everyUpstreamClosed() -> None:
    """
    After clients leave mid-response, exchanges finish, the pool times out
    and the proxy drains, every upstream transport has been closed.
    """
    harness = forwardingHarness(ProxySettings(upstreamIdleTimeout=5))
    origins = []
    for index in range(3):
        client = harness.connectClient()
        client.send(get(f"http://h{index}.example/"))
        origins.append(connectOrigin(harness))
    origins[0].send(OK)
    origins[1].send(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc")
    for protocol in list(harness.factory.connections):
        protocol.connectionLost(Failure(ConnectionLost()))
    harness.clock.advance(5)
    harness.factory.drain()
    assert all(o.transport.disconnecting for o in origins)


def test_retryHasItsOwnDeadline() -> None:
    """
    The retry's connect has the connect deadline of its own: an origin
    not connected in time gets the client a 504.
    """
    harness = forwardingHarness(ProxySettings(connectTimeout=3))
    client = harness.connectClient()
    pooled = exchange(harness, client)
    client.send(get("http://example.com/retry"))
    pooled.lose()
    assert len(harness.connector.attempts) == 2
    harness.clock.advance(3)
    assert harness.connector.attempts[-1].cancelled
    assert b"HTTP/1.1 504 " in client.transport.value()
