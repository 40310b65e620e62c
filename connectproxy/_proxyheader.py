# -*- test-case-name: tests.test_proxyprotocol -*-
"""
A sans-I/O parser for the PROXY protocol header that load balancers send
before the client's bytes (HAProxy's C{proxy-protocol.txt}, versions 1 and
2).

L{ProxyHeaderParser.feed} takes bytes as they arrive, in pieces of any size
(a header split across TCP segments is fine), and returns C{None} until the
header is complete, then the header and the bytes that followed it.
Anything that does not match the specification exactly raises
L{InvalidProxyHeader}, as the specification requires.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from twisted.internet.address import IPv4Address, IPv6Address

__all__ = [
    "V1_MAX_LENGTH",
    "V2_SIGNATURE",
    "InvalidProxyHeader",
    "ProxyHeader",
    "ProxyHeaderParser",
    "crc32c",
]

#: The longest version 1 line, CRLF included (section 2.1).
V1_MAX_LENGTH = 107

#: How every version 1 header starts.
V1_PREFIX = b"PROXY "

#: How every version 2 header starts (section 2.2).
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"

_V2_FIXED = len(V2_SIGNATURE) + 4
_LOCAL, _PROXY = 0, 1
_UNSPEC, _INET, _INET6, _UNIX = 0, 1, 2, 3
_STREAM, _DGRAM = 1, 2

#: Bytes of the address block, by address family.
_ADDRESS_SIZES = {_INET: 12, _INET6: 36, _UNIX: 216}

#: The version 2 family names of (address family, transport) pairs.
_V2_FAMILIES = {
    (_INET, _STREAM): "TCP4",
    (_INET6, _STREAM): "TCP6",
    (_INET, _DGRAM): "UDP4",
    (_INET6, _DGRAM): "UDP6",
    (_UNIX, _STREAM): "UNIX",
    (_UNIX, _DGRAM): "UNIX",
}

#: The type of the TLV that carries a CRC-32C of the header (section 2.2.3).
PP2_TYPE_CRC32C = 0x03


class InvalidProxyHeader(ValueError):
    """
    The bytes are not a valid PROXY protocol header.

    @ivar reason: What is wrong, in a short phrase.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """
    A parsed PROXY protocol header.

    @ivar version: 1 (text) or 2 (binary).
    @ivar command: C{"PROXY"} (a relayed connection) or C{"LOCAL"} (version
        2 only: the balancer's own connection, a health check).
    @ivar family: C{"TCP4"} or C{"TCP6"} when the addresses are given;
        otherwise C{"UNKNOWN"}, C{"UDP4"}, C{"UDP6"} or C{"UNIX"}.
    @ivar source: The client's address, or C{None} when the receiver must
        use the connection's own addresses (C{LOCAL}, C{UNKNOWN}, and every
        family other than TCP over IPv4 or IPv6).
    @ivar destination: The address the client connected to, or C{None}
        alike.
    @ivar tlvs: The version 2 type-length-value fields, in order, as
        C{(type, value)}.
    """

    version: int
    command: str
    family: str
    source: IPv4Address | IPv6Address | None = None
    destination: IPv4Address | IPv6Address | None = None
    tlvs: tuple[tuple[int, bytes], ...] = ()


class ProxyHeaderParser:
    """
    Parse one PROXY protocol header, version 1 or 2, fed incrementally.

    The first byte tells the versions apart: C{P} starts version 1, CR
    version 2; anything else is refused at once.  A version 1 line must end
    with CRLF within L{V1_MAX_LENGTH} bytes; a version 2 header is as long
    as its length field says (at most 16 + 65535 bytes).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> tuple[ProxyHeader, bytes] | None:
        """
        Parse more bytes.

        @param data: The next bytes from the connection (any number, none
            included).
        @return: C{None} while the header is incomplete; then the header
            and the bytes after it (the client's first bytes, possibly
            empty).  Do not feed the parser again after that.
        @raise InvalidProxyHeader: As soon as the bytes cannot be a valid
            header.
        """
        buffer = self._buffer
        buffer += data
        if not buffer:
            return None
        if buffer[0] == V2_SIGNATURE[0]:
            return self._feedV2()
        if buffer[0] == V1_PREFIX[0]:
            return self._feedV1()
        raise InvalidProxyHeader("the connection does not start with a PROXY header")

    def _feedV1(self) -> tuple[ProxyHeader, bytes] | None:
        buffer = self._buffer
        start = buffer[: len(V1_PREFIX)]
        if start != V1_PREFIX[: len(start)]:
            raise InvalidProxyHeader(
                "the connection does not start with a PROXY header"
            )
        end = buffer.find(b"\n")
        if end < 0:
            if len(buffer) >= V1_MAX_LENGTH:
                raise InvalidProxyHeader(
                    f"no CRLF within {V1_MAX_LENGTH} bytes of a version 1 header"
                )
            if b"\r" in buffer[:-1]:
                raise InvalidProxyHeader("a CR without LF in a version 1 header")
            return None
        if end + 1 > V1_MAX_LENGTH:
            raise InvalidProxyHeader(
                f"no CRLF within {V1_MAX_LENGTH} bytes of a version 1 header"
            )
        if buffer[end - 1] != 0x0D:
            raise InvalidProxyHeader("a LF without CR in a version 1 header")
        line = bytes(buffer[: end - 1])
        if b"\r" in line:
            raise InvalidProxyHeader("a CR without LF in a version 1 header")
        leftover = bytes(buffer[end + 1 :])
        del buffer[:]
        return _parseV1Line(line), leftover

    def _feedV2(self) -> tuple[ProxyHeader, bytes] | None:
        buffer = self._buffer
        start = buffer[: len(V2_SIGNATURE)]
        if start != V2_SIGNATURE[: len(start)]:
            raise InvalidProxyHeader(
                "the connection does not start with a PROXY header"
            )
        if len(buffer) < _V2_FIXED:
            return None
        versionCommand, familyTransport = buffer[12], buffer[13]
        if versionCommand >> 4 != 2:
            raise InvalidProxyHeader(f"unsupported version {versionCommand >> 4}")
        command = versionCommand & 0x0F
        if command not in (_LOCAL, _PROXY):
            raise InvalidProxyHeader(f"unknown command {command:#x}")
        family, transport = familyTransport >> 4, familyTransport & 0x0F
        if family > _UNIX or transport > _DGRAM:
            raise InvalidProxyHeader(
                f"unknown address family or transport {familyTransport:#04x}"
            )
        length = int.from_bytes(buffer[14:16], "big")
        if len(buffer) < _V2_FIXED + length:
            return None
        header = bytes(buffer[: _V2_FIXED + length])
        leftover = bytes(buffer[_V2_FIXED + length :])
        del buffer[:]
        if command == _LOCAL:
            # The address block, TLVs included, is to be ignored (2.2).
            return ProxyHeader(2, "LOCAL", "UNKNOWN"), leftover
        if family == _UNSPEC or transport == 0:
            # The block's layout is unknown: nothing in it can be read.
            return ProxyHeader(2, "PROXY", "UNKNOWN"), leftover
        return _parseV2Block(header, family, transport), leftover


def _parseV1Line(line: bytes) -> ProxyHeader:
    """
    Parse a version 1 line, without its CRLF.

    @raise InvalidProxyHeader: If it is not exactly as section 2.1 says.
    """
    if line == b"PROXY UNKNOWN" or line.startswith(b"PROXY UNKNOWN "):
        # The receiver must ignore the rest of the line.
        return ProxyHeader(1, "PROXY", "UNKNOWN")
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidProxyHeader("a version 1 header that is not ASCII") from None
    fields = text.split(" ")
    family = fields[1]
    if family not in ("TCP4", "TCP6"):
        raise InvalidProxyHeader(
            f"unknown protocol {family[:8]!r} in a version 1 header"
        )
    if len(fields) != 6:
        raise InvalidProxyHeader(
            "a version 1 header must be PROXY, the protocol, two addresses and "
            "two ports, separated by single spaces"
        )
    source = _v1Address(family, fields[2], fields[4])
    destination = _v1Address(family, fields[3], fields[5])
    return ProxyHeader(1, "PROXY", family, source, destination)


def _v1Address(family: str, host: str, port: str) -> IPv4Address | IPv6Address:
    """
    Parse an address and a port of a version 1 header: canonical IPv4 (no
    leading zeros) or IPv6 text, as the family says, and a decimal port
    from 0 to 65535 without leading zeros.
    """
    if not (0 < len(port) <= 5 and port.isdigit() and (port == "0" or port[0] != "0")):
        raise InvalidProxyHeader(f"invalid port {port[:8]!r} in a version 1 header")
    number = int(port)
    if number > 65535:
        raise InvalidProxyHeader(f"invalid port {port!r} in a version 1 header")
    try:
        if family == "TCP4":
            return IPv4Address("TCP", str(ipaddress.IPv4Address(host)), number)
        if "%" in host:
            raise ValueError("scoped")
        return IPv6Address("TCP", ipaddress.IPv6Address(host).compressed, number)
    except ValueError:
        raise InvalidProxyHeader(
            f"invalid {family} address {host[:45]!r} in a version 1 header"
        ) from None


def _parseV2Block(header: bytes, family: int, transport: int) -> ProxyHeader:
    """
    Parse the address block and TLVs of a version 2 C{PROXY} header with a
    known family and transport.

    @param header: The whole header.
    @raise InvalidProxyHeader: If the block is shorter than its family
        needs, a TLV runs past the end, or a CRC-32C does not match.
    """
    size = _ADDRESS_SIZES[family]
    block = header[_V2_FIXED:]
    if len(block) < size:
        raise InvalidProxyHeader(
            f"an address block of {len(block)} bytes; the family needs {size}"
        )
    tlvs = _parseTLVs(header, _V2_FIXED + size)
    name = _V2_FAMILIES[family, transport]
    if name not in ("TCP4", "TCP6"):
        # Not a TCP client: use the connection's own addresses (2.2 allows
        # falling back to UNSPEC for combinations a receiver does not use).
        return ProxyHeader(2, "PROXY", name, tlvs=tlvs)
    width = 4 if family == _INET else 16
    addresses = block[: 2 * width]
    sourcePort = int.from_bytes(block[2 * width : 2 * width + 2], "big")
    destinationPort = int.from_bytes(block[2 * width + 2 : 2 * width + 4], "big")
    source = _v2Address(addresses[:width], sourcePort)
    destination = _v2Address(addresses[width:], destinationPort)
    return ProxyHeader(2, "PROXY", name, source, destination, tlvs)


def _v2Address(packed: bytes, port: int) -> IPv4Address | IPv6Address:
    if len(packed) == 4:
        return IPv4Address("TCP", str(ipaddress.IPv4Address(packed)), port)
    return IPv6Address("TCP", ipaddress.IPv6Address(packed).compressed, port)


def _parseTLVs(header: bytes, offset: int) -> tuple[tuple[int, bytes], ...]:
    """
    Split the TLVs after the address block, and check a CRC-32C one.

    @param header: The whole header.
    @param offset: Where the TLVs start.
    @raise InvalidProxyHeader: If one runs past the end of the header, or
        the CRC-32C does not match.
    """
    tlvs = []
    while offset < len(header):
        if offset + 3 > len(header):
            raise InvalidProxyHeader("a truncated TLV")
        kind = header[offset]
        length = int.from_bytes(header[offset + 1 : offset + 3], "big")
        start, end = offset + 3, offset + 3 + length
        if end > len(header):
            raise InvalidProxyHeader(f"TLV {kind:#04x} runs past the end of the header")
        value = header[start:end]
        if kind == PP2_TYPE_CRC32C:
            if length != 4:
                raise InvalidProxyHeader("a CRC-32C TLV that is not 4 bytes long")
            blanked = header[:start] + b"\0\0\0\0" + header[end:]
            if crc32c(blanked) != int.from_bytes(value, "big"):
                raise InvalidProxyHeader("the header's CRC-32C does not match")
        tlvs.append((kind, value))
        offset = end
    return tuple(tlvs)


def _crc32cTable() -> tuple[int, ...]:
    table = []
    for index in range(256):
        crc = index
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32cTable()


def crc32c(data: bytes) -> int:
    """
    The CRC-32C (Castagnoli) of C{data}, as used by the PROXY protocol's
    C{PP2_TYPE_CRC32C} TLV (RFC 3720 appendix B.4).

    @return: The checksum, an unsigned 32-bit integer.
    """
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
