# -*- test-case-name: tests.test_bench,tests.integration.test_bench -*-
"""
The benchmark's DNS server, run as a separate process: an authoritative
C{twisted.names} server for one zone on UDP port 53 of one or more loopback
addresses, so that each proxy measured with host-name targets has its own
server address and its queries can be counted.

C{python -m bench} starts it as::

    python -m bench.dnsserver --zone bench.test --ttl 300 127.53.0.1 127.53.0.2

Every name in the zone (C{origin.bench.test}, C{x.origin.bench.test}, ...)
has one A record, 127.0.0.1, with the given TTL, and no AAAA record (an
empty answer with the zone's SOA, whose minimum is the TTL too, for
negative caching).  It prints one JSON line when it listens,
C{{"ready": true}}, and on C{SIGTERM} or C{SIGINT} one more with the
queries each address received, C{{"queries": {"127.53.0.1": N, ...}}},
then exits.  Port 53 needs root.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from twisted.internet import reactor
from twisted.names import authority, dns, server


class _Zone(authority.FileAuthority):
    """
    One zone, every name in it an A record for 127.0.0.1.
    """

    def __init__(self, zone: str, ttl: int) -> None:
        self._zone = zone.encode("ascii")
        self._ttl = ttl
        super().__init__(zone)

    def loadFile(self, filename: Any) -> None:
        soa = dns.Record_SOA(
            mname=b"ns." + self._zone,
            rname=b"bench." + self._zone,
            serial=1,
            refresh=self._ttl,
            retry=self._ttl,
            expire=self._ttl,
            minimum=self._ttl,
            ttl=self._ttl,
        )
        self.soa = (self._zone, soa)  # type: ignore[assignment]
        self.records = {self._zone: [soa]}  # type: ignore[assignment]

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any = None) -> Any:
        lowered = name.lower()
        records = self.records
        assert records is not None
        if lowered.endswith(b"." + self._zone) and lowered not in records:
            records[lowered] = [dns.Record_A("127.0.0.1", ttl=self._ttl)]
        return super()._lookup(name, cls, type, timeout)


class _CountingFactory(server.DNSServerFactory):
    """
    Counts the queries that came to each address.
    """

    def __init__(self, zone: _Zone) -> None:
        super().__init__(authorities=[zone])
        self.queries: dict[str, int] = {}

    def countFor(self, address: str) -> Any:
        """
        The datagram protocol for C{address}, counting what comes to it.
        """
        self.queries[address] = 0
        factory = self

        class Counting(dns.DNSDatagramProtocol):
            def datagramReceived(self, data: bytes, addr: Any) -> None:
                factory.queries[address] += 1
                super().datagramReceived(data, addr)

        return Counting(self)


def main(argv: list[str] | None = None) -> int:
    """
    Serve until C{SIGTERM}.

    @return: The process exit status.
    """
    parser = argparse.ArgumentParser(prog="python -m bench.dnsserver")
    parser.add_argument("--zone", default="bench.test")
    parser.add_argument("--ttl", type=int, default=300)
    parser.add_argument("--port", type=int, default=53)
    parser.add_argument("addresses", nargs="+")
    args = parser.parse_args(argv)
    factory = _CountingFactory(_Zone(args.zone, args.ttl))
    factory.noisy = False
    for address in args.addresses:
        protocol = factory.countFor(address)
        reactor.listenUDP(args.port, protocol, interface=address)  # type: ignore[attr-defined]

    def report() -> None:
        sys.stdout.write(json.dumps({"queries": factory.queries}) + "\n")
        sys.stdout.flush()

    reactor.addSystemEventTrigger("before", "shutdown", report)
    reactor.callWhenRunning(
        lambda: (sys.stdout.write('{"ready": true}\n'), sys.stdout.flush())
    )
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
