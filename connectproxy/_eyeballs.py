# -*- test-case-name: tests.test_eyeballs -*-
"""
Happy Eyeballs (RFC 8305) over addresses already resolved and vetted:
L{connectToFirst}.

Twisted's L{HostnameEndpoint} waits its whole attempt delay before the next
address even when the previous attempt was refused at once, so every
refusing address costs 0.3 s.  Here the next attempt starts as soon as one
fails (RFC 8305 section 5), and the stagger applies only while an attempt is
still pending.

With L{OutgoingAddresses}, each attempt is made from the outgoing address of
its family, and addresses of a family without one are not tried.  A connect
that fails on the proxy's side (the outgoing address cannot be bound, or the
process is out of descriptors) fails with L{LocalConnectError}, which says
what the client gets.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import Any, cast

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import (
    ConnectBindError,
    ConnectError,
    ConnectingCancelledError,
    ConnectionRefusedError,
    NoProtocol,
    TCPTimedOutError,
    TimeoutError,
)
from twisted.internet.interfaces import (
    IAddress,
    IConnector,
    IDelayedCall,
    ILoggingContext,
    IProtocol,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import ClientFactory, Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._outgoing import OutgoingAddresses

__all__ = ["ATTEMPT_DELAY", "LocalConnectError", "connectToFirst", "interleave"]

#: Seconds between the starts of two connection attempts while the earlier
#: one is still pending (RFC 8305 section 8 recommends 250 ms).
ATTEMPT_DELAY = 0.25

Address = IPv4Address | IPv6Address

#: What C{socket(2)} (or C{bind(2)}) fails with when the process or the
#: system has no descriptor or socket memory to spare.
EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class LocalConnectError(ConnectError):
    """
    An upstream connect that failed on the proxy's own side, before a
    packet left: the client gets C{status} with C{reason}.

    @ivar status: 502 when the configuration is the cause (the outgoing
        address cannot be bound, or the target has no address of its
        family), 503 when the process is out of descriptors.
    @ivar reason: One short sentence for the client, naming the option to
        look at.
    @ivar detail: What the system said, for the log (may be empty).
    """

    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(string=reason)
        self.status = status
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


def _localError(failure: Failure, source: str | None) -> Failure:
    """
    Say what a connect that failed before leaving the proxy means: the
    outgoing address C{source} cannot be bound, or the descriptors ran out.
    Other failures are returned as they are.
    """
    error = failure.value
    if not isinstance(error, ConnectBindError):
        return failure
    detail = str(error.args[0]) if error.args and error.args[0] else ""
    if error.osError in EXHAUSTED:
        reason = "the proxy is out of file descriptors; try again later"
        return Failure(LocalConnectError(503, reason, detail))
    if source is not None:
        reason = f"cannot bind the outgoing address {source} (see --outgoing-address)"
        return Failure(LocalConnectError(502, reason, detail))
    return failure


def interleave(addresses: Sequence[Address]) -> list[Address]:
    """
    Order addresses as RFC 8305 section 4 says: alternate the address
    families, starting with the family of the first address, keeping the
    resolver's order within each family.
    """
    first = type(addresses[0]) if addresses else IPv6Address
    preferred = [a for a in addresses if type(a) is first]
    other = [a for a in addresses if type(a) is not first]
    ordered: list[Address] = []
    for index in range(max(len(preferred), len(other))):
        ordered.extend(preferred[index : index + 1])
        ordered.extend(other[index : index + 1])
    return ordered


class _OnceFactory(Factory):
    """
    Hands its protocol to the first connection only; a later one (an attempt
    that connected in the same instant) gets none and is closed.
    """

    noisy = False

    def __init__(self, protocol: IProtocol) -> None:
        self._protocol: IProtocol | None = protocol

    def buildProtocol(self, addr: IAddress) -> IProtocol | None:  # type: ignore[override]
        protocol, self._protocol = self._protocol, None
        return protocol


def _rank(failure: Failure) -> int:
    """
    How much a failed attempt tells the client, lowest first: a refusal,
    then other connect errors, then timeouts, then anything unexpected.
    """
    if failure.check(ConnectionRefusedError):
        return 0
    if failure.check(TimeoutError, TCPTimedOutError):
        return 2
    if failure.check(ConnectError):
        return 1
    return 3


class _Race:
    """
    Connection attempts to the addresses in order, each started when the
    previous one failed or after the attempt delay, whichever comes first;
    the first to connect wins and the others are cancelled.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        clock: IReactorTime,
        addresses: Sequence[Address],
        protocol: IProtocol,
        attemptTimeout: float | None,
        attemptDelay: float,
        target: IAddress,
        outgoing: OutgoingAddresses,
    ) -> None:
        self._reactor = reactor
        self._outgoing = outgoing
        self._clock = clock
        self._addresses = list(addresses)
        self._factory = _OnceFactory(protocol)
        self._attemptTimeout = attemptTimeout
        self._attemptDelay = attemptDelay
        self._target = target
        self._next = 0
        self._pending: list[Deferred[IProtocol]] = []
        self._failures: list[Failure] = []
        self._timer: IDelayedCall | None = None
        self._starting = False
        self._startAgain = False
        self._done = False
        self.deferred: Deferred[IProtocol] = Deferred(self._cancel)

    def start(self) -> Deferred[IProtocol]:
        self._startNext()
        return self.deferred

    def _startNext(self) -> None:
        """
        Start the next attempt now.  An attempt that fails at once asks for
        the next one from inside this call: the loop here starts it, so
        that many such failures do not nest calls.
        """
        self._startAgain = True
        if self._starting:
            return
        self._starting = True
        try:
            while self._startAgain and not self._done:
                self._startAgain = False
                self._startOne()
        finally:
            self._starting = False

    def _startOne(self) -> None:
        self._cancelTimer()
        if self._next == len(self._addresses):
            if not self._pending:
                self._lost()
            return
        address = self._addresses[self._next]
        self._next += 1
        if self._next < len(self._addresses):
            self._timer = self._clock.callLater(self._attemptDelay, self._startNext)
        source = self._outgoing.sourceFor(address)
        d = _connectAttempt(
            self._reactor, address, self._factory, self._attemptTimeout, source
        )
        self._pending.append(d)
        d.addCallbacks(
            self._connected,
            self._failed,
            callbackArgs=(d,),
            errbackArgs=(d, source),
        )

    def _connected(self, protocol: IProtocol, attempt: Deferred[IProtocol]) -> None:
        self._pending.remove(attempt)
        self._stopAll()
        self.deferred.callback(protocol)

    def _failed(
        self, failure: Failure, attempt: Deferred[IProtocol], source: str | None
    ) -> None:
        self._pending.remove(attempt)
        if self._done:
            return
        self._failures.append(_localError(failure, source))
        self._startNext()

    def _lost(self) -> None:
        """
        Every attempt failed: fail with the most telling reason, and log the
        unexpected failures that are not it.
        """
        best = min(self._failures, key=_rank)
        for failure in self._failures:
            if failure is not best and _rank(failure) == 3:
                self._log.failure(
                    "a connection attempt failed unexpectedly",
                    failure,
                    event="connector_error",
                )
        self._done = True
        self.deferred.errback(best)

    def _cancel(self, d: Deferred[IProtocol]) -> None:
        self._stopAll()
        d.errback(ConnectingCancelledError(self._target))

    def _stopAll(self) -> None:
        self._done = True
        self._cancelTimer()
        for attempt in list(self._pending):
            attempt.cancel()

    def _cancelTimer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None


def connectToFirst(
    reactor: Any,
    addresses: Sequence[Address],
    protocol: IProtocol,
    target: IAddress,
    attemptTimeout: float | None = 30.0,
    attemptDelay: float = ATTEMPT_DELAY,
    clock: IReactorTime | None = None,
    outgoing: OutgoingAddresses | None = None,
) -> Deferred[IProtocol]:
    """
    Connect C{protocol} to the first of C{addresses} that accepts, trying
    them in the order of L{interleave} (RFC 8305 section 4): the next
    attempt starts as soon as the previous one fails, or after
    C{attemptDelay} seconds while it is still pending (section 5).

    With outgoing addresses, each attempt is bound to the one of its family
    (port 0: the system picks the port), and addresses of a family without
    one are skipped.

    @param reactor: Makes the TCP connections (L{IReactorTCP}).
    @param addresses: Where to connect (their ports included); at least one.
    @param protocol: The protocol of the connection that wins; it is
        connected once.
    @param target: Named in the L{ConnectingCancelledError} of a cancel.
    @param attemptTimeout: Seconds one attempt may take, or C{None} for no
        per-attempt timer (when the caller keeps a deadline over the whole
        connect that is no longer: the proxy's C{--connect-timeout}).
    @param attemptDelay: Seconds before the next attempt starts while the
        previous one is pending.
    @param clock: Times the attempt delay; C{reactor} when C{None}.
    @param outgoing: The local addresses to connect from; the system
        chooses when C{None} or empty.
    @return: A Deferred firing with C{protocol}, once connected.  When every
        attempt fails it fails with the most telling reason: a refusal,
        then another L{ConnectError}, then a timeout.  A failure on the
        proxy's side is a L{LocalConnectError}: the outgoing address cannot
        be bound (502), the descriptors ran out (503), or (at once) no
        address has the family of an outgoing address (502).  Cancelling it
        cancels every attempt in flight and fails it with
        L{ConnectingCancelledError}.
    @raise ValueError: When C{addresses} is empty.
    """
    if not addresses:
        raise ValueError("no addresses to connect to")
    if outgoing is None:
        outgoing = OutgoingAddresses()
    usable = list(addresses)
    if outgoing:
        usable = [a for a in addresses if outgoing.sourceFor(a) is not None]
        if not usable:
            return fail(LocalConnectError(502, outgoing.missingFamily(addresses)))
    if len(usable) == 1:
        return _connectOne(
            reactor, usable[0], protocol, target, attemptTimeout, outgoing
        )
    race = _Race(
        reactor,
        reactor if clock is None else clock,
        interleave(usable),
        protocol,
        attemptTimeout,
        attemptDelay,
        target,
        outgoing,
    )
    return race.start()


class _Attempt(ClientFactory):
    """
    One connection attempt, made with the reactor's C{connectTCP} (what a
    TCP client endpoint does), minus the endpoint's wrapper protocol: that
    wrapper stays between the transport and the protocol for the life of
    the connection (one more call per chunk received) and copies the
    protocol's interface declarations when it is built.  Here the
    transport is given the real protocol as it connects, and the attempt's
    Deferred fires once that protocol's C{connectionMade} has run, as an
    endpoint's does.

    @ivar deferred: Fires with the protocol once connected, or fails with
        the reason the attempt failed (L{ConnectingCancelledError} when it
        is cancelled).
    """

    noisy = False

    def __init__(self, factory: Factory, address: Address) -> None:
        self._factory = factory
        self._address = address
        self._protocol: IProtocol | None = None
        self.connector: IConnector | None = None
        self.deferred: Deferred[IProtocol] = Deferred(self._cancel)

    def buildProtocol(self, addr: IAddress) -> _Handover | None:  # type: ignore[override]
        protocol = self._factory.buildProtocol(addr)
        if protocol is None:
            # Another attempt of the race won in the same instant.
            if not self.deferred.called:
                self.deferred.errback(NoProtocol())
            return None
        self._protocol = protocol
        return _Handover(self)

    def connected(self, transport: ITransport) -> None:
        """
        The connection is made: it belongs to the protocol from now on.
        """
        protocol = self._protocol
        assert protocol is not None
        cast(Any, transport).protocol = protocol
        protocol.makeConnection(transport)
        if not self.deferred.called:
            self.deferred.callback(protocol)

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        if not self.deferred.called:
            self.deferred.errback(reason)

    def _cancel(self, deferred: Deferred[IProtocol]) -> None:
        deferred.errback(ConnectingCancelledError(self._address))
        if self.connector is not None:
            self.connector.stopConnecting()


@implementer(ILoggingContext)
class _Handover:
    """
    What the transport of an L{_Attempt} is built with: it hands the
    transport to the real protocol as soon as it is connected, and a real
    transport never calls it again.  Anything else asked of it (by a test
    that drives the protocol C{buildProtocol} returned, on a memory
    reactor) is the protocol's.
    """

    __slots__ = ("_attempt",)

    def __init__(self, attempt: _Attempt) -> None:
        self._attempt = attempt

    def makeConnection(self, transport: ITransport) -> None:
        self._attempt.connected(transport)

    def logPrefix(self) -> str:
        """
        The protocol's log prefix, which the transport keeps for its log
        lines.
        """
        protocol = self._attempt._protocol
        if ILoggingContext.providedBy(protocol):
            return str(cast(ILoggingContext, protocol).logPrefix())
        return type(protocol).__name__

    def __getattr__(self, name: str) -> Any:
        return getattr(self._attempt._protocol, name)


def _connectAttempt(
    reactor: Any,
    address: Address,
    factory: Factory,
    timeout: float | None,
    source: str | None,
) -> Deferred[IProtocol]:
    """
    Start one attempt: connect the protocol C{factory} builds to
    C{address}, from C{source} when given, with no timer of its own when
    C{timeout} is C{None} (the reactor's C{connectTCP} starts none then).

    @return: L{_Attempt.deferred}.
    """
    attempt = _Attempt(factory, address)
    bind = None if source is None else (source, 0)
    try:
        attempt.connector = reactor.connectTCP(
            address.host, address.port, attempt, timeout, bind
        )
    except Exception:
        if not attempt.deferred.called:
            attempt.deferred.errback()
    return attempt.deferred


def _connectOne(
    reactor: Any,
    address: Address,
    protocol: IProtocol,
    target: IAddress,
    attemptTimeout: float | None,
    outgoing: OutgoingAddresses,
) -> Deferred[IProtocol]:
    """
    L{connectToFirst} for a single address (an IP-literal target): one
    attempt, with the same results as a race of one, without the race.
    """
    source = outgoing.sourceFor(address)
    attempt = _connectAttempt(
        reactor, address, _OnceFactory(protocol), attemptTimeout, source
    )

    def cancel(result: Deferred[IProtocol]) -> None:
        result.errback(ConnectingCancelledError(target))
        attempt.cancel()

    def failed(failure: Failure) -> None:
        if not result.called:
            result.errback(_localError(failure, source))

    result: Deferred[IProtocol] = Deferred(cancel)
    attempt.addCallbacks(result.callback, failed)
    return result
