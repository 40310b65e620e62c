# -*- test-case-name: tests.test_limits -*-
"""
The tunables of a proxy: L{ProxySettings}.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass, field

from ._outgoing import OutgoingAddresses
from ._parser import MAX_HEADER_FIELDS

__all__ = ["ProxySettings", "defaultMaxConnections"]


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """
    The tunables of a proxy.

    @ivar requestTimeout: Seconds a client has to send a complete request
        head (408 after that).
    @ivar connectTimeout: Seconds for the whole upstream connect, name
        resolution and every attempt included (504 after that).
    @ivar idleTimeout: Seconds a tunnel may stay without traffic either way.
    @ivar halfCloseTimeout: Seconds a tunnel with one direction finished
        (one side sent its FIN) may stay without traffic; the shorter of this
        and C{idleTimeout} applies.
    @ivar abortTimeout: Seconds a graceful close may take before the
        connection is aborted.
    @ivar maxRequestLine: Longest request line accepted, in bytes (414).
    @ivar maxHeadSize: Largest request head accepted, in bytes (431).
    @ivar maxHeaderFields: Most header fields in a request head (431).
    @ivar maxConnections: Most client connections at once (503 beyond; 0
        for no limit).  By default, what the descriptor limit allows.
    @ivar maxConnectionsPerClient: Most connections at once from one client
        address (503 beyond; 0 for no limit).
    @ivar resolverThreads: Most name lookups at once, each in a thread of
        the proxy's own resolver pool.
    @ivar resolverPerClient: Most name lookups at once for one client
        address (0: no limit but L{resolverThreads}); more wait their turn,
        and get 503 if their connect deadline passes first.
    @ivar resolver: How names are resolved: C{"system"} (C{getaddrinfo} in
        the resolver pool's threads, nothing cached), C{"dns"} (a DNS
        client on the reactor, answers cached for their TTL) or C{"auto"}
        (C{"dns"} where it answers as the system resolver would, see
        L{chooseResolver <connectproxy._dnscache.chooseResolver>}).
    @ivar dnsCacheSize: The most DNS answers C{"dns"} keeps (one per name
        and record type; 0: none).
    @ivar outgoingAddresses: The local addresses upstream connections are
        made from (C{--outgoing-address}); empty: the system chooses.
    @ivar shutdownGrace: Seconds established tunnels may keep running once
        a shutdown began (C{SIGTERM}) before they are closed.
    @ivar upstreamKeepalive: Most idle upstream connections of forwarded
        requests kept open for reuse, in all (0: none are kept).
    @ivar upstreamIdleTimeout: Seconds an idle upstream connection is kept
        for reuse.
    @ivar logQuery: Whether the access log of forwarded and refused
        requests keeps the query string of their URLs (it may carry
        secrets; user information is never kept).
    @ivar relay: How tunnels relay bytes (C{--relay}): C{"auto"} and
        C{"splice"} with C{splice(2)} between plain TCP sockets where that
        applies and through Twisted's transports elsewhere, C{"transport"}
        always through the transports.
    """

    requestTimeout: float = 30.0
    connectTimeout: float = 10.0
    idleTimeout: float = 600.0
    halfCloseTimeout: float = 60.0
    abortTimeout: float = 15.0
    maxRequestLine: int = 8192
    maxHeadSize: int = 65536
    maxHeaderFields: int = MAX_HEADER_FIELDS
    maxConnections: int = field(default_factory=lambda: defaultMaxConnections())
    maxConnectionsPerClient: int = 0
    resolverThreads: int = 32
    resolverPerClient: int = 8
    resolver: str = "auto"
    dnsCacheSize: int = 4096
    outgoingAddresses: OutgoingAddresses = field(default_factory=OutgoingAddresses)
    shutdownGrace: float = 30.0
    upstreamKeepalive: int = 64
    upstreamIdleTimeout: float = 30.0
    logQuery: bool = False
    relay: str = "auto"


def defaultMaxConnections() -> int:
    """
    The default limit on client connections: what the process's descriptor
    limit allows with two descriptors per tunnel and some to spare.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 10000
    return max(16, (soft - 64) // 2)
