"""
Helpers of the protocol tests of plain HTTP forwarding: a proxy on a memory
reactor with a fake connector, a client whose responses are read with
C{h11}, and the origin's side of each upstream connection.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import h11
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from connectproxy import ProxySettings
from connectproxy._admission import Gatekeeper
from connectproxy._front import ConnectProxyProtocol
from connectproxy._handler import Phase
from connectproxy._parser import RequestHead, RequestHeadParser
from connectproxy._rules import AccessRules, PortRules
from connectproxy.testing import (
    ConnectAttempt,
    FakeClient,
    HalfCloseableStringTransport,
    ProxyHarness,
)


def forwardingHarness(
    settings: ProxySettings | None = None, gatekeeper: Gatekeeper | None = None
) -> ProxyHarness:
    """
    A proxy that allows ports 80 and 8080 for forwarded requests.
    """
    if gatekeeper is None:
        rules = replace(
            AccessRules.defaults(), ports=PortRules.fromStrings(["80", "443", "8080"])
        )
        gatekeeper = Gatekeeper(rules)
    return ProxyHarness(settings, gatekeeper)


def get(
    url: str = "http://example.com/index.html",
    *fields: str,
    method: str = "GET",
    version: str = "1.1",
    host: str | None = "example.com",
) -> bytes:
    """
    An absolute-form request head.
    """
    lines = [f"{method} {url} HTTP/{version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines.extend(fields)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("iso-8859-1")


@dataclass
class Origin:
    """
    The origin's side of one upstream connection made through a
    L{ConnectAttempt}: it reads the request with C{h11}, and the test
    answers with raw bytes.
    """

    attempt: ConnectAttempt
    transport: HalfCloseableStringTransport
    _read: int = 0
    _parser: RequestHeadParser = field(default_factory=RequestHeadParser)
    head: RequestHead | None = None
    received: bytes = b""

    def read(self) -> bytes:
        """
        Everything the proxy wrote to the origin so far.
        """
        return bytes(self.transport.value())

    def request(self) -> RequestHead:
        """
        The request head the proxy sent, parsed (strictly).
        """
        if self.head is None:
            parsed = self._parser.feed(self.transport.value())
            assert parsed is not None, self.transport.value()
            self.head, self.received = parsed
        return self.head

    def body(self) -> bytes:
        """
        What followed the request head.
        """
        self.request()
        head = self.transport.value().index(b"\r\n\r\n") + 4
        return bytes(self.transport.value()[head:])

    def send(self, data: bytes) -> None:
        """
        Deliver bytes from the origin to the proxy.
        """
        self.attempt.protocol.dataReceived(data)

    def finish(self) -> None:
        """
        The origin's FIN.
        """
        self.attempt.protocol.readConnectionLost()  # type: ignore[attr-defined]

    def lose(self, reason: BaseException | None = None) -> None:
        """
        The origin's connection is gone.
        """
        self.attempt.protocol.connectionLost(Failure(reason or ConnectionDone()))


def connectOrigin(harness: ProxyHarness, index: int = -1) -> Origin:
    """
    Let the proxy's connect attempt C{index} succeed.
    """
    attempt = harness.connector.attempts[index]
    transport = attempt.succeed()
    return Origin(attempt, transport)


class ResponseReader:
    """
    Reads what the proxy wrote to a client as HTTP/1.1 responses, with
    C{h11}: strict about the framing.
    """

    def __init__(self, client: FakeClient, methods: list[str]) -> None:
        self._client = client
        self._methods = list(methods)
        self._read = 0
        self._connection = h11.Connection(h11.CLIENT)
        self.events: list[Any] = []
        self._sendNext()

    def _sendNext(self) -> None:
        method = self._methods.pop(0)
        self._connection.send(
            h11.Request(method=method, target="/", headers=[("Host", "x")])
        )
        self._connection.send(h11.EndOfMessage())

    def poll(self) -> list[Any]:
        """
        Read what arrived since the last call.

        @return: The new events (C{h11} events).
        """
        data = self._client.transport.value()[self._read :]
        self._read += len(data)
        if data:
            self._connection.receive_data(data)
        if self._client.transport.disconnecting and not data:
            self._connection.receive_data(b"")
        found = []
        while True:
            event = self._connection.next_event()
            if event is h11.NEED_DATA:
                break
            if event is h11.PAUSED:
                if self._connection.our_state is h11.DONE and self._methods:
                    self._connection.start_next_cycle()
                    self._sendNext()
                    continue
                break
            found.append(event)
            if isinstance(event, h11.ConnectionClosed):
                break
        self.events += found
        return found


def responseOf(
    client: FakeClient, method: str = "GET"
) -> tuple[h11.Response, bytes, list[Any]]:
    """
    The one response the proxy wrote to C{client}, read with C{h11}.

    @return: The response head, its body, and every event.
    """
    reader = ResponseReader(client, [method])
    events = reader.poll()
    heads = [e for e in events if isinstance(e, h11.Response)]
    assert len(heads) == 1, (events, client.transport.value())
    assert any(isinstance(e, h11.EndOfMessage) for e in events), events
    body = b"".join(e.data for e in events if isinstance(e, h11.Data))
    return heads[0], body, events


def header(event: Any, name: str) -> list[str]:
    """
    The values of the fields called C{name} of an C{h11} head.
    """
    return [v.decode("latin-1") for n, v in event.headers if n == name.lower().encode()]


def phaseOf(client: FakeClient) -> Phase:
    """
    The phase of the front of C{client}'s connection.
    """
    protocol = client.protocol
    assert isinstance(protocol, ConnectProxyProtocol)
    return protocol.phase
