# -*- test-case-name: tests.test_observerplugins -*-
"""
What an observer plugin makes its observer from: L{ObserverContext}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.application.service import IServiceCollection

from ._factory import ConnectProxyFactory

__all__ = ["ObserverContext"]


@dataclass(frozen=True, slots=True)
class ObserverContext:
    """
    What an observer plugin makes its observer from
    (L{connectproxy.interfaces.IProxyObserverFactory}).

    @ivar reactor: The proxy's reactor: take time from it
        (L{twisted.internet.interfaces.IReactorTime}); a memory reactor when
        the command line is only being checked.
    @ivar factory: The proxy's L{ConnectProxyFactory
        <connectproxy.ConnectProxyFactory>}, to read what is open now:
        C{connections}, C{openTunnels}, C{openTunnelStats()}, C{draining}.
    @ivar services: Where to add the services the observer needs running
        (a listener for metrics, say), with
        C{service.setServiceParent(context.services)}.
    """

    reactor: Any
    factory: ConnectProxyFactory
    services: IServiceCollection
