"""
Tests for the PROXY protocol: the sans-I/O header parser
(L{connectproxy._proxyheader}) and the listener that reads the header and
hands the connection to the proxy (L{connectproxy._proxyprotocol}).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import struct
from collections.abc import Iterator
from typing import Any, cast

import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IAddress, IProtocolNegotiationFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent
from zope.interface.verify import verifyObject

from connectproxy import ProxySettings
from connectproxy._admission import Gatekeeper
from connectproxy._front import ConnectProxyProtocol
from connectproxy._proxyheader import (
    V2_SIGNATURE,
    InvalidProxyHeader,
    ProxyHeader,
    ProxyHeaderParser,
    crc32c,
)
from connectproxy._proxyprotocol import (
    UNTRUSTED_REASON,
    ProxyHeaderFactory,
    ProxyHeaderProtocol,
    ProxyProtocolEndpoint,
    clientAddress,
    serverEndpoint,
)
from connectproxy._rules import AccessRules, ClientRules
from connectproxy.tap import Options, makeService
from connectproxy.testing import (
    HalfCloseableStringTransport,
    ProxyHarness,
    connectHead,
)

#: A request head, as the payload after a PROXY header.
CONNECT = connectHead()

BALANCER = IPv4Address("TCP", "127.0.0.1", 45000)

V1_TCP4 = b"PROXY TCP4 203.0.113.5 192.0.2.10 56324 3128\r\n"


def parseAll(*chunks: bytes) -> tuple[ProxyHeader, bytes]:
    """
    Feed C{chunks} one after another and return the result, which must come
    with the last one.
    """
    parser = ProxyHeaderParser()
    for chunk in chunks[:-1]:
        assert parser.feed(chunk) is None
    result = parser.feed(chunks[-1])
    assert result is not None
    return result


def v2(
    command: int = 1,
    familyTransport: int = 0x11,
    block: bytes | None = None,
    tlvs: bytes = b"",
    version: int = 2,
) -> bytes:
    """
    A version 2 header: by default TCP over IPv4 from 203.0.113.5:56324 to
    192.0.2.10:3128.
    """
    if block is None:
        block = (
            ipaddress.IPv4Address("203.0.113.5").packed
            + ipaddress.IPv4Address("192.0.2.10").packed
            + struct.pack("!HH", 56324, 3128)
        )
    body = block + tlvs
    return (
        V2_SIGNATURE
        + bytes([version << 4 | command, familyTransport])
        + struct.pack("!H", len(body))
        + body
    )


def tlv(kind: int, value: bytes) -> bytes:
    """
    One TLV.
    """
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def withCRC(header: bytes) -> bytes:
    """
    Append a correct CRC-32C TLV to a version 2 header.
    """
    length = struct.unpack("!H", header[14:16])[0] + 7
    blank = header[:14] + struct.pack("!H", length) + header[16:] + tlv(3, bytes(4))
    return blank[:-4] + struct.pack("!I", crc32c(blank))


# The parser.


def test_v1TCP4() -> None:
    """
    A version 1 TCP4 line gives the client's and the destination's
    addresses, and the bytes after it are left over.
    """
    header, leftover = parseAll(V1_TCP4 + CONNECT)
    assert header == ProxyHeader(
        1,
        "PROXY",
        "TCP4",
        IPv4Address("TCP", "203.0.113.5", 56324),
        IPv4Address("TCP", "192.0.2.10", 3128),
    )
    assert leftover == CONNECT


def test_v1TCP6() -> None:
    """
    A version 1 TCP6 line gives IPv6 addresses in compressed form.
    """
    line = b"PROXY TCP6 2001:DB8:0:0:0:0:0:5 ::1 65535 0\r\n"
    header, leftover = parseAll(line)
    assert header.source == IPv6Address("TCP", "2001:db8::5", 65535)
    assert header.destination == IPv6Address("TCP", "::1", 0)
    assert leftover == b""


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY UNKNOWN\r\n",
        b"PROXY UNKNOWN ffff:f::f ffff:f::f 65535 65535\r\n",
        b"PROXY UNKNOWN whatever \xff follows\r\n",
    ],
)
def test_v1Unknown(line: bytes) -> None:
    """
    C{UNKNOWN} gives no address, whatever follows it on the line.
    """
    header, leftover = parseAll(line + b"x")
    assert (header.family, header.source, header.destination) == ("UNKNOWN", None, None)
    assert leftover == b"x"


def test_longestV1Line() -> None:
    """
    A line of exactly 107 bytes (CRLF included) is accepted.
    """
    address = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    line = f"PROXY UNKNOWN {address} {address} 65535 65535\r\n".encode()
    assert len(line) == 107
    assert parseAll(line)[0].family == "UNKNOWN"


def splits(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    for index in range(len(data) + 1):
        yield data[:index], data[index:]


@pytest.mark.parametrize(
    "header",
    [V1_TCP4, v2(), v2(tlvs=tlv(1, b"h2") + tlv(0x20, b"\x01" + bytes(8)))],
    ids=["v1", "v2", "v2-tlvs"],
)
def test_splitAnywhere(header: bytes) -> None:
    """
    A header split in two at any byte, or fed one byte at a time, parses
    the same as in one piece, and the client's bytes are left over.
    """
    expected = parseAll(header + CONNECT)
    for first, second in splits(header + CONNECT):
        parser = ProxyHeaderParser()
        result = parser.feed(first)
        if result is None:
            result = parser.feed(second)
            assert result is not None
            assert result[0] == expected[0]
            assert result[1] == CONNECT
        else:
            assert len(first) >= len(header)
            assert result == (expected[0], first[len(header) :])
    parser = ProxyHeaderParser()
    bytewise = [parser.feed(header[i : i + 1]) for i in range(len(header))]
    assert bytewise[:-1] == [None] * (len(header) - 1)
    assert bytewise[-1] == (expected[0], b"")


def test_v2TCP4() -> None:
    """
    A version 2 PROXY header for TCP over IPv4 gives both addresses.
    """
    header, leftover = parseAll(v2() + b"rest")
    assert header == ProxyHeader(
        2,
        "PROXY",
        "TCP4",
        IPv4Address("TCP", "203.0.113.5", 56324),
        IPv4Address("TCP", "192.0.2.10", 3128),
    )
    assert leftover == b"rest"


def test_v2TCP6() -> None:
    """
    A version 2 header for TCP over IPv6 gives IPv6 addresses.
    """
    block = (
        ipaddress.IPv6Address("2001:db8::5").packed
        + ipaddress.IPv6Address("::1").packed
        + struct.pack("!HH", 1, 2)
    )
    header, _ = parseAll(v2(familyTransport=0x21, block=block))
    assert header.source == IPv6Address("TCP", "2001:db8::5", 1)
    assert header.destination == IPv6Address("TCP", "::1", 2)


def test_v2TLVs() -> None:
    """
    TLVs after the address block are returned in order, a correct CRC-32C
    among them.
    """
    header, _ = parseAll(withCRC(v2(tlvs=tlv(1, b"h2") + tlv(4, b""))))
    kinds = [kind for kind, _ in header.tlvs]
    assert kinds == [1, 4, 3]
    assert header.tlvs[0] == (1, b"h2")
    assert header.source == IPv4Address("TCP", "203.0.113.5", 56324)


@pytest.mark.parametrize(
    "header, family",
    [
        (v2(command=0), "UNKNOWN"),
        (v2(command=0, familyTransport=0x00, block=b""), "UNKNOWN"),
        (v2(command=0, block=b"\xff" * 3), "UNKNOWN"),
        (v2(familyTransport=0x00, block=b"anything"), "UNKNOWN"),
        (v2(familyTransport=0x10), "UNKNOWN"),
        (v2(familyTransport=0x12), "UDP4"),
        (v2(familyTransport=0x31, block=b"/a".ljust(108, b"\0") * 2), "UNIX"),
    ],
    ids=[
        "local",
        "local-unspec",
        "local-short",
        "unspec",
        "inet-unspec",
        "udp",
        "unix",
    ],
)
def test_v2WithoutClientAddress(header: bytes, family: str) -> None:
    """
    LOCAL (whatever its block), UNSPEC and families other than TCP give no
    client address: the connection's own addresses are to be used.
    """
    parsed, leftover = parseAll(header + b"x")
    assert (parsed.family, parsed.source, parsed.destination) == (family, None, None)
    assert parsed.command == ("LOCAL" if header[12] & 0x0F == 0 else "PROXY")
    assert leftover == b"x"


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"CONNECT example.com:443 HTTP/1.1\r\n", "does not start with a PROXY"),
        (b"PROXX", "does not start with a PROXY"),
        (b"PROXY\r\n", "does not start with a PROXY"),
        (b"\r\n\r\n\x00\r\nQUIT\r", "does not start with a PROXY"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "LF without CR"),
        (b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n", "CR without LF"),
        (b"PROXY TCP4 1.2.3.4\rx", "CR without LF"),
        (b"PROXY UNKNOWN " + b"x" * 93, "no CRLF within 107"),
        (b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n", "no CRLF within 107"),
        (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "unknown protocol"),
        (b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "unknown protocol"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "single spaces"),
        (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "single spaces"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "single spaces"),
        (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "invalid TCP4 address"),
        (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "invalid TCP4 address"),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "invalid TCP6 address"),
        (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "invalid TCP6 address"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "invalid port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", "invalid port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "invalid port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "invalid port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n", "invalid port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.\xc3\xa9 1 2\r\n", "not ASCII"),
        (v2(version=1), "unsupported version 1"),
        (v2(command=2), "unknown command"),
        (v2(familyTransport=0x41), "unknown address family"),
        (v2(familyTransport=0x13), "unknown address family"),
        (v2(block=bytes(11)), "the family needs 12"),
        (v2(familyTransport=0x21), "the family needs 36"),
        (v2(tlvs=b"\x01\x00"), "truncated TLV"),
        (v2(tlvs=tlv(1, b"abc")[:-1]), "runs past the end"),
        (v2(tlvs=tlv(3, bytes(4))), "CRC-32C does not match"),
        (v2(tlvs=tlv(3, bytes(3))), "not 4 bytes"),
    ],
)
def test_invalid(data: bytes, reason: str) -> None:
    """
    Anything that is not exactly a header is refused, naming what is
    wrong, as soon as the bytes show it.
    """
    parser = ProxyHeaderParser()
    with pytest.raises(InvalidProxyHeader) as caught:
        parser.feed(data)
    assert reason in caught.value.reason


def test_invalidAtFirstByte() -> None:
    """
    A connection whose first byte cannot start a header is refused at
    once, before more arrives.
    """
    with pytest.raises(InvalidProxyHeader):
        ProxyHeaderParser().feed(b"C")


def test_incompleteIsNotInvalid() -> None:
    """
    Every proper prefix of a valid header needs more bytes.
    """
    for header in (V1_TCP4, v2(tlvs=tlv(1, b"h2"))):
        for index in range(len(header)):
            assert ProxyHeaderParser().feed(header[:index]) is None


def test_crc32c() -> None:
    """
    The CRC-32C of the standard check string is 0xE3069283.
    """
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0


# The listener.


def rulesHarness(
    settings: ProxySettings | None = None,
    allow: tuple[str, ...] = ("203.0.113.0/24",),
    trusted: tuple[str, ...] = (),
) -> ProxyHarness:
    """
    A harness whose client rules allow C{allow} behind C{trusted} balancers
    (and loopback ones).
    """
    clients = ClientRules.fromStrings(allow=allow, trustedProxies=trusted)
    rules = dataclasses.replace(AccessRules.defaults(), clients=clients)
    return ProxyHarness(settings, Gatekeeper(rules))


def connectThrough(
    harness: ProxyHarness, balancer: IAddress = BALANCER
) -> tuple[ProxyHeaderProtocol, HalfCloseableStringTransport]:
    """
    Open a connection from a load balancer to a PROXY-protocol listener of
    C{harness}'s proxy.
    """
    protocol = ProxyHeaderFactory(harness.factory).buildProtocol(balancer)
    transport = HalfCloseableStringTransport(peerAddress=balancer)
    protocol.makeConnection(transport)
    return protocol, transport


def test_tunnelForReportedClient() -> None:
    """
    After the header the proxy serves the client it names: the client
    rules, the connection limits and the access log see that address, and
    the proxy's protocol runs directly on the connection's transport.
    """
    harness = rulesHarness()
    wrapper, transport = connectThrough(harness)
    wrapper.dataReceived(V1_TCP4 + CONNECT)
    [attempt] = harness.connector.attempts
    attempt.succeed()
    assert transport.value().startswith(b"HTTP/1.1 200 ")
    inner = wrapper.wrappedProtocol
    assert isinstance(inner, ConnectProxyProtocol)
    assert inner.transport is transport
    assert inner.clientHost == "203.0.113.5"
    assert harness.observer.opened[0].client == "203.0.113.5:56324"
    # Later bytes go to the proxy's protocol without passing through the
    # wrapper's own code, and on through the tunnel.
    assert wrapper.dataReceived.__self__ is inner
    wrapper.dataReceived(b"after the 200")
    assert attempt.transport.value() == b"after the 200"


@pytest.mark.parametrize(
    "header", [V1_TCP4, withCRC(v2(tlvs=tlv(1, b"h2")))], ids=["v1", "v2-tlvs"]
)
def test_splitHeaderAtEveryByte(header: bytes) -> None:
    """
    A header and request split in two at any byte are served alike.
    """
    data = header + CONNECT
    for first, second in splits(data):
        harness = rulesHarness()
        wrapper, _ = connectThrough(harness)
        wrapper.dataReceived(first)
        wrapper.dataReceived(second)
        [attempt] = harness.connector.attempts
        assert attempt.request.host == "example.com"
        assert harness.factory.connections
        [protocol] = harness.factory.connections
        assert protocol.clientHost == "203.0.113.5"


def test_headerDeadline(logEvents: list[LogEvent]) -> None:
    """
    A header not complete within the request timeout closes the connection
    with one log event; the proxy never sees it.
    """
    harness = rulesHarness(ProxySettings(requestTimeout=7))
    wrapper, transport = connectThrough(harness)
    wrapper.dataReceived(V1_TCP4[:20])
    harness.clock.advance(6.9)
    assert not transport.aborted
    harness.clock.advance(0.1)
    assert transport.aborted
    assert transport.value() == b""
    events = [e for e in logEvents if e.get("event") == "proxy_header_timeout"]
    assert [(e["source"], e["timeout"]) for e in events] == [("127.0.0.1:45000", 7)]
    assert not harness.factory.connections
    wrapper.connectionLost()
    assert harness.clock.getDelayedCalls() == []


def test_deadlineStopsWithHeader() -> None:
    """
    Once the header is read its deadline is gone: the request head has
    its own.
    """
    harness = rulesHarness(ProxySettings(requestTimeout=7))
    wrapper, transport = connectThrough(harness)
    harness.clock.advance(5)
    wrapper.dataReceived(V1_TCP4)
    harness.clock.advance(5)
    assert not transport.aborted
    harness.clock.advance(2)
    assert transport.value().startswith(b"HTTP/1.1 408 ")


def test_invalidHeaderAborts(logEvents: list[LogEvent]) -> None:
    """
    A connection that does not start with a PROXY header is aborted at
    once, with one log event saying why, and no response.
    """
    harness = rulesHarness()
    wrapper, transport = connectThrough(harness)
    wrapper.dataReceived(CONNECT)
    assert transport.aborted
    assert transport.value() == b""
    wrapper.dataReceived(b"more")
    [event] = [e for e in logEvents if e.get("event") == "proxy_header_invalid"]
    assert event["source"] == "127.0.0.1:45000"
    assert "does not start with a PROXY header" in event["reason"]
    assert harness.clock.getDelayedCalls() == []
    assert not harness.factory.connections


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"PROXY TCP4 999.1.1.1 127.0.0.1 5555 P\r\n", "invalid TCP4 address"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "separated by single spaces"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", "invalid port"),
        (b"PROXY " + b"x" * 200, "no CRLF within 107 bytes"),
        (b"\r\n\r\n\x00\r\nQUIT\n\x51", "unsupported version"),
        (b"\x16\x03\x01\x02\x00", "does not start with a PROXY header"),
        (b"", "does not start with a PROXY header"),
    ],
    ids=["v1-address", "v1-fields", "v1-port", "v1-long", "v2", "tls", "http"],
)
def test_invalidHeaderOneEvent(
    logEvents: list[LogEvent], data: bytes, reason: str
) -> None:
    """
    Each invalid header, whatever is wrong with it, aborts the connection
    with exactly one log event, C{proxy_header_invalid} with the reason,
    and no traceback.
    """
    harness = rulesHarness()
    wrapper, transport = connectThrough(harness)
    wrapper.dataReceived(data + CONNECT)
    wrapper.connectionLost()
    assert transport.aborted and transport.value() == b""
    [event] = logEvents
    assert event["event"] == "proxy_header_invalid"
    assert reason in event["reason"]
    assert "log_failure" not in event


def test_untrustedSource(logEvents: list[LogEvent]) -> None:
    """
    A source outside C{--trusted-proxy} gets 403 at once, without its
    header being read, and one refusal is logged, naming it.
    """
    harness = rulesHarness()
    untrusted = IPv4Address("TCP", "198.51.100.9", 5000)
    wrapper, transport = connectThrough(harness, untrusted)
    assert transport.value().startswith(b"HTTP/1.1 403 ")
    assert UNTRUSTED_REASON.encode() in transport.value()
    wrapper.dataReceived(V1_TCP4 + CONNECT)
    assert harness.connector.attempts == []
    [refused] = harness.observer.refused
    assert (refused.client, refused.status) == ("198.51.100.9:5000", 403)
    assert [e.get("event") for e in logEvents if "event" in e] == []


def test_trustedSource() -> None:
    """
    A source in a C{--trusted-proxy} network is believed.
    """
    harness = rulesHarness(trusted=("198.51.100.0/24",))
    wrapper, _ = connectThrough(harness, IPv4Address("TCP", "198.51.100.9", 5000))
    wrapper.dataReceived(V1_TCP4 + CONNECT)
    assert len(harness.connector.attempts) == 1


def test_unixSourceTrusted() -> None:
    """
    A UNIX socket's peers are trusted: its file's permissions guard it.
    """
    harness = rulesHarness()
    wrapper, _ = connectThrough(harness, UNIXAddress(None))
    wrapper.dataReceived(V1_TCP4 + CONNECT)
    assert len(harness.connector.attempts) == 1


def test_claimedClientStillChecked() -> None:
    """
    Behind a trusted balancer the reported client must still pass the
    client rules (loopback is not implied).
    """
    harness = rulesHarness(allow=())
    wrapper, transport = connectThrough(harness)
    wrapper.dataReceived(V1_TCP4 + CONNECT)
    assert transport.value().startswith(b"HTTP/1.1 403 ")
    assert harness.observer.refused[0].client == "203.0.113.5:56324"


@pytest.mark.parametrize(
    "header",
    [
        b"PROXY TCP4 127.0.0.1 127.0.0.1 45000 3128\r\n",
        b"PROXY TCP4 127.0.0.1 127.0.0.1 5555 3128\r\n",
        b"PROXY TCP6 ::1 ::1 5555 3128\r\n",
        b"PROXY TCP6 ::ffff:127.0.0.1 ::1 5555 3128\r\n",
    ],
    ids=["same-address-and-port", "same-address", "ipv6", "ipv4-mapped"],
)
def test_claimedLoopbackNotImplied(header: bytes) -> None:
    """
    A header claiming a loopback client, even the balancer's own address
    (and port), is a client behind a balancer: it must be in
    C{--allow-client}, loopback is not implied.
    """
    harness = rulesHarness(allow=("192.0.2.0/24",))
    wrapper, transport = connectThrough(harness)
    wrapper.dataReceived(header + CONNECT)
    assert transport.value().startswith(b"HTTP/1.1 403 ")
    assert b"is not allowed behind a load balancer" in transport.value()
    assert harness.connector.attempts == []
    inner = wrapper.wrappedProtocol
    assert isinstance(inner, ConnectProxyProtocol)
    assert inner.balancerAddress == BALANCER


@pytest.mark.parametrize(
    "claimed, served",
    [(b"127.0.0.1", False), (b"192.0.2.7", True)],
)
def test_twistedWrapperClaimsChecked(claimed: bytes, served: bool) -> None:
    """
    Under Twisted's own PROXY-protocol wrapper (embedding code listening
    with Twisted's C{haproxy:} endpoint), a client its header named is
    judged as a client behind a balancer too, even when it claims the
    balancer's own address.
    """
    from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory

    harness = rulesHarness(allow=("192.0.2.0/24",))
    wrapper = HAProxyWrappingFactory(harness.factory).buildProtocol(BALANCER)
    transport = HalfCloseableStringTransport(peerAddress=BALANCER)
    wrapper.makeConnection(transport)
    wrapper.dataReceived(
        b"PROXY TCP4 " + claimed + b" 127.0.0.1 5555 3128\r\n" + CONNECT
    )
    assert bool(harness.connector.attempts) is served
    if not served:
        assert transport.value().startswith(b"HTTP/1.1 403 ")


@pytest.mark.parametrize(
    "header",
    [b"PROXY UNKNOWN\r\n", v2(command=0), v2(familyTransport=0x31, block=bytes(216))],
    ids=["unknown", "local", "unix"],
)
def test_socketAddressWithoutClient(header: bytes) -> None:
    """
    LOCAL, UNKNOWN and non-TCP headers leave the socket's peer (the
    balancer) as the client: a loopback balancer is served as a loopback
    client.
    """
    harness = rulesHarness(allow=())
    wrapper, _ = connectThrough(harness)
    wrapper.dataReceived(header + CONNECT)
    [attempt] = harness.connector.attempts
    attempt.succeed()
    assert harness.observer.opened[0].client == "127.0.0.1:45000"


def test_perClientLimitCountsReportedClients() -> None:
    """
    C{maxConnectionsPerClient} counts each client behind the balancer, not
    the balancer: over the limit a client gets the usual 503.
    """
    harness = rulesHarness(ProxySettings(maxConnectionsPerClient=1))

    def connect(client: str, port: int) -> HalfCloseableStringTransport:
        wrapper, transport = connectThrough(harness)
        line = f"PROXY TCP4 {client} 192.0.2.10 {port} 3128\r\n"
        wrapper.dataReceived(line.encode())
        return transport

    assert connect("203.0.113.5", 1).value() == b""
    over = connect("203.0.113.5", 2).value()
    assert over.startswith(b"HTTP/1.1 503 ")
    assert over.endswith(
        b"this client has too many connections (see --max-connections-per-client)\n"
    )
    assert connect("203.0.113.6", 1).value() == b""
    assert harness.observer.refused[0].client == "203.0.113.5:2"
    assert sorted(p.clientHost for p in harness.factory.connections) == [
        "203.0.113.5",
        "203.0.113.6",
    ]


def test_connectionLostReachesProxy() -> None:
    """
    The end of the connection reaches the proxy's protocol: it is no longer
    counted.
    """
    harness = rulesHarness()
    wrapper, _ = connectThrough(harness)
    wrapper.dataReceived(V1_TCP4)
    assert len(harness.factory.connections) == 1
    wrapper.connectionLost()
    assert not harness.factory.connections
    assert wrapper.wrappedProtocol is None
    assert harness.clock.getDelayedCalls() == []


def test_halfCloseReachesProxy() -> None:
    """
    A FIN after the header reaches the proxy's protocol as a half-close
    (the proxy runs on the plain transport, so it can pass it on).
    """
    harness = rulesHarness()
    wrapper, transport = connectThrough(harness)
    wrapper.dataReceived(V1_TCP4 + CONNECT + b"early")
    wrapper.readConnectionLost()
    assert not transport.disconnecting
    [attempt] = harness.connector.attempts
    upstream = attempt.succeed()
    assert upstream.value() == b"early"
    assert upstream.writeClosed is False  # not a real TCP transport
    wrapper.writeConnectionLost()


def test_finBeforeHeader(logEvents: list[LogEvent]) -> None:
    """
    A FIN before the header ends closes the connection quietly (a health
    check that only connects does that).
    """
    harness = rulesHarness()
    wrapper, transport = connectThrough(harness)
    wrapper.dataReceived(V1_TCP4[:10])
    wrapper.readConnectionLost()
    wrapper.writeConnectionLost()
    assert transport.disconnecting
    assert harness.clock.getDelayedCalls() == []
    assert [e for e in logEvents if "event" in e] == []


class _NotHalfCloseable(Protocol):
    pass


def test_finToProtocolWithoutHalfClose() -> None:
    """
    A protocol that cannot take a half-close gets a full close.
    """
    harness = rulesHarness()
    wrapper, transport = connectThrough(harness)
    wrapper._attach(_NotHalfCloseable())
    wrapper.readConnectionLost()
    assert transport.disconnecting


def test_factoryBuildsNothing() -> None:
    """
    If the proxy's factory builds no protocol, the connection is closed.
    """
    harness = rulesHarness()
    wrapper, transport = connectThrough(harness)
    wrapper._attach(None)
    assert transport.disconnecting


def test_clientAddress() -> None:
    """
    The client is the header's source; an IPv4-mapped IPv6 source is its
    IPv4 address; without a source it is the socket's peer.
    """
    mapped = IPv6Address("TCP", "::ffff:203.0.113.5", 7)
    header = ProxyHeader(2, "PROXY", "TCP6", mapped, mapped)
    assert clientAddress(header, BALANCER) == IPv4Address("TCP", "203.0.113.5", 7)
    plain = IPv6Address("TCP", "2001:db8::1", 7)
    header = ProxyHeader(2, "PROXY", "TCP6", plain, plain)
    assert clientAddress(header, BALANCER) == plain
    assert clientAddress(ProxyHeader(2, "LOCAL", "UNKNOWN"), BALANCER) is BALANCER


# Endpoints and the command line.


def test_serverEndpoint() -> None:
    """
    C{haproxy:} descriptions (any case) give connectproxy's PROXY-protocol
    endpoint around the rest of the description; others are Twisted's.
    """
    reactor = MemoryReactorClock()
    for description in ("haproxy:tcp:0:interface=127.0.0.1", "HAProxy:tcp:0"):
        endpoint = serverEndpoint(reactor, description)
        assert isinstance(endpoint, ProxyProtocolEndpoint)
        assert isinstance(endpoint.wrapped, TCP4ServerEndpoint)
    assert isinstance(serverEndpoint(reactor, "tcp:0"), TCP4ServerEndpoint)
    with pytest.raises(ValueError):
        serverEndpoint(reactor, "haproxy:nonsense:0")


def test_listen() -> None:
    """
    Listening wraps the proxy's factory in a L{ProxyHeaderFactory}, which
    starts and stops it.
    """
    reactor = MemoryReactorClock()
    harness = rulesHarness()
    serverEndpoint(reactor, "haproxy:tcp:0").listen(harness.factory)
    [(_, factory, _, _)] = reactor.tcpServers
    assert isinstance(factory, ProxyHeaderFactory)
    assert factory.wrappedFactory is harness.factory
    assert factory.logPrefix() == "ConnectProxyFactory (PROXY)"
    factory.doStart()
    assert harness.factory.numPorts == 1
    factory.doStop()
    assert harness.factory.numPorts == 0


def test_alpnPassedThrough() -> None:
    """
    The wrapping factory offers ALPN protocols exactly when the factory it
    wraps does (a TLS listener under it asks for them).
    """
    harness = rulesHarness()
    factory = ProxyHeaderFactory(harness.factory)
    verifyObject(IProtocolNegotiationFactory, factory)
    assert factory.acceptableProtocols() == [b"http/1.1"]
    silent = ProxyHeaderFactory(cast(Any, Factory()))
    assert not IProtocolNegotiationFactory.providedBy(silent)


def test_makeServiceUsesOwnEndpoint() -> None:
    """
    C{--listen haproxy:...} listens through connectproxy's PROXY-protocol
    endpoint.
    """
    options = Options()
    options.parseOptions(["--listen", "haproxy:tcp:0:interface=127.0.0.1"])
    service = makeService(options, MemoryReactorClock())
    listeners = [s for s in service if hasattr(s, "endpoint")]
    assert [type(s.endpoint) for s in listeners] == [ProxyProtocolEndpoint]
