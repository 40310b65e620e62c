# -*- test-case-name: tests.test_tunnel -*-
"""
Names kept for one release after they were deprecated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IReactorTime

from ._deadlines import DeadlineSweeper
from ._parser import RequestHead, RequestHeadParser
from ._settings import ProxySettings
from ._target import Target, TargetForm
from ._tunnel import TransportRelay, TunnelTransport

__all__ = ["ConnectRequest", "ConnectRequestParser", "ProxyTunnel"]

#: The request-head parser's name before it parsed more than CONNECTs.
#: @deprecated: Use L{RequestHeadParser}.
ConnectRequestParser = RequestHeadParser


class _RequestHeadAlias(type):
    """
    The type of L{ConnectRequest}: calling it builds a L{RequestHead} from
    the fields C{ConnectRequest} had, and every L{RequestHead} is an
    instance of it, so code written for the old name keeps working.
    """

    def __call__(
        cls,
        method: str,
        target: str,
        version: tuple[int, int],
        headers: tuple[tuple[str, str], ...],
        host: str | None = None,
        port: int | None = None,
    ) -> RequestHead:
        destination = None
        if host is not None and port is not None:
            form = TargetForm.AUTHORITY if method == "CONNECT" else TargetForm.ABSOLUTE
            destination = Target(host, port, form)
        return RequestHead(method, target, version, headers, destination)

    def __instancecheck__(cls, instance: object) -> bool:
        return isinstance(instance, RequestHead)

    def __subclasscheck__(cls, subclass: type) -> bool:
        return subclass is cls or issubclass(subclass, RequestHead)


class _ConnectRequest(metaclass=_RequestHeadAlias):
    """
    A parsed request head, by the name it had when the proxy parsed only
    CONNECTs: C{ConnectRequest(method, target, version, headers, host=None,
    port=None)} builds a L{RequestHead} whose C{destination} is
    C{Target(host, port, ...)}, and a L{RequestHead} is an instance of it.

    @deprecated: Use L{RequestHead}; its C{host}, C{port} and C{authority}
        are those of its C{destination}, a L{Target}.
    """


if TYPE_CHECKING:
    # To a type checker the old name is the new one: code that annotates
    # with it keeps checking; building one with a host and a port does not
    # (it runs, with the deprecation warning).
    ConnectRequest = RequestHead
else:
    ConnectRequest = _ConnectRequest
    ConnectRequest.__name__ = ConnectRequest.__qualname__ = "ConnectRequest"


class ProxyTunnel(TransportRelay):
    """
    A L{TransportRelay} that keeps its own idle, half-close and abort
    deadlines, as a tunnel did before they moved to the proxy's shared
    L{DeadlineSweeper}.

    @deprecated: Tunnels are built and watched by L{ConnectProxyFactory
        <connectproxy.ConnectProxyFactory>}; read what they did from the
        C{TunnelRecord} an L{IProxyObserver
        <connectproxy.interfaces.IProxyObserver>} gets.
    """

    def __init__(
        self,
        client: TunnelTransport,
        upstream: TunnelTransport,
        clock: IReactorTime,
        idleTimeout: float,
        abortTimeout: float,
        onClosed: Callable[[ProxyTunnel], object],
        halfCloseTimeout: float | None = None,
    ) -> None:
        """
        @param client: The client's transport, paused.
        @param upstream: The upstream's transport, connected.
        @param clock: Where timers come from.
        @param idleTimeout: Seconds without traffic either way before the
            tunnel is closed.
        @param abortTimeout: Seconds a graceful close (or the flush before a
            reset) may take before the connections are aborted.
        @param onClosed: Called once, with the tunnel, when both sides are
            gone.
        @param halfCloseTimeout: Seconds without traffic before a tunnel
            with one direction finished is closed; the idle timeout when
            C{None}.  The shorter of the two applies.
        """
        super().__init__(client, upstream, clock, onClosed)
        self._deadlines = DeadlineSweeper(clock)
        self._deadlineSettings = ProxySettings(
            idleTimeout=idleTimeout,
            halfCloseTimeout=(
                idleTimeout if halfCloseTimeout is None else halfCloseTimeout
            ),
            abortTimeout=abortTimeout,
        )

    def start(self, earlyData: bytes = b"", clientFinished: bool = False) -> None:
        self._deadlines.watch(self, self._deadlineSettings)
        super().start(earlyData, clientFinished)

    def _finished(self) -> None:
        self._deadlines.forget(self)
        super()._finished()
