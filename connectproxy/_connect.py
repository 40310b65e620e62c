# -*- test-case-name: tests.test_server -*-
"""
CONNECT (RFC 9110 section 9.3.6): L{ConnectHandler} connects an admitted
request's target upstream through the factory's connector, answers C{200}
and hands the connection to a relay, with the early data and the client's
FIN.  The front of the connection
(L{ConnectProxyProtocol <connectproxy._front.ConnectProxyProtocol>}) has
read the head and admitted it, and keeps the deadline over admission and
connect together.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import (
    ConnectError,
    ConnectingCancelledError,
    ConnectionRefusedError,
    DNSLookupError,
)
from twisted.internet.interfaces import IProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._address import formatAddress
from ._connector import UpstreamRequest
from ._dnscache import DNSServerFailure
from ._errors import (
    ForbiddenDestination,
    LookupAbandoned,
    ParentProxyError,
    ResolverBusy,
)
from ._eyeballs import LocalConnectError
from ._handler import Phase, _Admitted, _Front
from ._observer import Outcome, TunnelRecord
from ._relay import _Relay
from ._responses import CONNECTION_ESTABLISHED, formatSeconds
from ._tunnel import TunnelTransport, _UpstreamProtocol

__all__ = ["ConnectHandler"]


def _connectErrorStatus(
    failure: Failure, timedOut: bool, connectTimeout: float
) -> tuple[int, str, str]:
    """
    The status, reason and outcome (C{""}: the usual one for the status)
    for a failed upstream connect.

    @param failure: Why the connector failed.
    @param timedOut: Whether the connect deadline passed (the failure is
        then the cancellation that caused).
    @param connectTimeout: The connect deadline, in seconds, for the reason.
    """
    deadline = f"after {formatSeconds(connectTimeout)} (see --connect-timeout)"
    if failure.check(ResolverBusy):
        assert isinstance(failure.value, ResolverBusy)
        return 503, failure.value.reason, ""
    if failure.check(LookupAbandoned):
        return 504, f"timed out resolving the target host {deadline}", ""
    if timedOut or failure.check(ConnectingCancelledError):
        return 504, f"timed out connecting to the target {deadline}", ""
    if failure.check(ForbiddenDestination):
        assert isinstance(failure.value, ForbiddenDestination)
        return 403, failure.value.reason, ""
    if failure.check(LocalConnectError):
        assert isinstance(failure.value, LocalConnectError)
        return failure.value.status, failure.value.reason, ""
    if failure.check(ParentProxyError):
        assert isinstance(failure.value, ParentProxyError)
        outcome = (
            Outcome.DENIED if failure.value.status == 403 else Outcome.UPSTREAM_FAILED
        )
        return failure.value.status, failure.value.reason, outcome
    if failure.check(DNSServerFailure):
        return 502, DNSServerFailure.REASON, ""
    if failure.check(DNSLookupError):
        return 502, "could not resolve the target host", ""
    if failure.check(ConnectionRefusedError):
        return 502, "the target refused the connection", ""
    if failure.check(ConnectError):
        return 502, "could not connect to the target", ""
    # Not a way a connect fails: a bug in the connector.
    return 502, "could not connect to the target", Outcome.ERROR


def _expectedConnectFailure(failure: Failure, timedOut: bool) -> bool:
    """
    Whether a failed upstream connect is one of the ways a connect fails
    (logged in one line), rather than a bug (logged with its traceback).
    """
    return timedOut or bool(
        failure.check(
            ConnectError,
            DNSLookupError,
            ForbiddenDestination,
            ConnectingCancelledError,
            ParentProxyError,
        )
    )


def connectRefusal(
    log: Logger, failure: Failure, timedOut: bool, front: _Front, target: str
) -> tuple[int, str, str]:
    """
    What a failed upstream connect is answered, for a tunnel or a forwarded
    request alike, logged on C{log}: an unexpected failure with its
    traceback (C{connector_error}), an unreachable target or a parent's
    refusal as C{connect_failed}.

    @param failure: Why the connect failed.
    @param timedOut: Whether the connect deadline passed.
    @param front: The front of the client's connection (its client and
        settings).
    @param target: The request's target, for the log.
    @return: The status, the reason and the outcome.
    """
    status, reason, outcome = _connectErrorStatus(
        failure, timedOut, front.settings.connectTimeout
    )
    if not _expectedConnectFailure(failure, timedOut):
        log.failure(
            "upstream connector failed connecting {client} to {target}",
            failure,
            event="connector_error",
            client=front.client,
            target=target,
        )
    elif status == 502 or failure.check(ParentProxyError):
        log.info(
            "connect to {target} failed: {error}",
            event="connect_failed",
            client=front.client,
            target=target,
            error=failure.getErrorMessage(),
        )
    return status, reason, outcome


class ConnectHandler:
    """
    The handler of one admitted CONNECT: connect upstream, answer C{200},
    hand the connection over to a relay, and report the tunnel.

    @ivar tunnel: The tunnel's relay, once established.
    """

    _log = Logger()

    abandoned = "the client went away while the target was connected"
    tunnel: _Relay | None = None

    def __init__(self, front: _Front, admission: _Admitted) -> None:
        """
        @param front: The front of the client's connection, in
            L{Phase.CONNECTING}.
        @param admission: The admission of the request.
        """
        self._front = front
        self._admission = admission
        self._target: UpstreamRequest | None = None
        self._upstream: _UpstreamProtocol | None = None
        self._pending: Deferred[Any] | None = None
        self._connectedAt = 0.0

    def start(self, target: UpstreamRequest) -> None:
        """
        Ask the factory's connector to connect a fresh upstream protocol to
        C{target}.
        """
        self._target = target
        self._upstream = _UpstreamProtocol()
        d = maybeDeferred(
            self._front.factory.connector.connectUpstream, target, self._upstream
        )
        self._pending = d
        d.addCallbacks(self._connected, self._failed).addErrback(self._broken)

    def cancel(self) -> None:
        """
        Cancel the upstream connect, if it is in flight.
        """
        if self._pending is not None:
            self._pending.cancel()

    def close(self, reason: str) -> None:
        """
        Close the tunnel gracefully, if there is one.
        """
        if self.tunnel is not None:
            self.tunnel.close(reason)

    @property
    def done(self) -> bool:
        """
        Whether there is no tunnel, or both its sides are gone.
        """
        tunnel = self.tunnel
        return tunnel is None or tunnel.stats.closedAt is not None

    def _failed(self, failure: Failure) -> None:
        self._pending = None
        front = self._front
        if front.phase is not Phase.CONNECTING:
            # The client left, or the proxy is closing every connection.
            return
        target = self._target.request.authority if self._target else ""
        status, reason, outcome = connectRefusal(
            self._log, failure, self._admission.timedOut, front, target
        )
        front.refuse(status, reason, outcome=outcome)

    def _broken(self, failure: Failure) -> None:
        """
        Connecting or handing over failed unexpectedly (a bug, here or in a
        connector that broke its contract): leave no upstream connection
        behind, and let the front answer.
        """
        self._pending = None
        upstream = self._upstream.transport if self._upstream is not None else None
        if self.tunnel is None and upstream is not None:
            cast(TunnelTransport, upstream).abortConnection()
        self._front.requestFailed(failure)

    def _connected(self, upstream: IProtocol) -> None:
        self._pending = None
        front = self._front
        clock = front.clock
        self._connectedAt = clock.seconds()
        assert isinstance(upstream, _UpstreamProtocol)
        early, clientFinished = front.handOver(CONNECTION_ESTABLISHED)
        # The relay installs its receivers here and on the upstream
        # protocol: from now on the client's bytes go straight to it.
        factory = front.factory
        settings = front.settings
        tunnel = factory.relayFactory(
            front, upstream, clock, settings, self._tunnelClosed
        )
        self.tunnel = tunnel
        factory.relays.add(tunnel)
        # The factory's sweeper keeps the tunnel's deadlines, from the
        # settings in force now (a reload does not change them).
        factory.deadlines.watch(tunnel, settings)
        tunnel.start(early, clientFinished)
        factory.tunnelOpened(self._record(tunnel))

    def _tunnelClosed(self, tunnel: _Relay) -> None:
        factory = self._front.factory
        factory.deadlines.forget(tunnel)
        factory.relays.discard(tunnel)
        factory.tunnelClosed(self._record(tunnel))
        self._front.exchangeEnded()

    def _record(self, tunnel: _Relay) -> TunnelRecord:
        """
        The observers' record of the tunnel, as it is now.
        """
        admission = self._admission
        assert self._target is not None
        request = self._target.request
        destination = request.destination
        assert destination is not None
        stats = tunnel.stats
        end = stats.closedAt
        return TunnelRecord(
            client=self._front.client,
            host=destination.host,
            port=destination.port,
            upstream=formatAddress(stats.upstreamAddress),
            bytesUp=stats.bytesUp,
            bytesDown=stats.bytesDown,
            duration=0.0 if end is None else end - stats.openedAt,
            reason=stats.closeReason,
            user=self._target.user,
            target=request.target,
            admitTime=admission.admittedAt - admission.headAt,
            connectTime=self._connectedAt - admission.admittedAt,
            relay=stats.relay,
        )
