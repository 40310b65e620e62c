# -*- test-case-name: tests.test_observerplugins -*-
"""
What an observer plugin makes its observer from (L{ObserverContext}), and
making the observers C{--observer} names (L{makeObservers}).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from twisted.application.service import IServiceCollection, MultiService

from ._factory import ConnectProxyFactory
from ._settings import ProxySettings
from .interfaces import IProxyObserver, IProxyObserverFactory

__all__ = ["ObserverContext", "idleContext", "makeObservers"]


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
    @ivar accessLog: What the C{accesslog} plugin gives: the access log of
        C{--access-log}, written to a file; C{None} to log to the proxy's
        log.
    """

    reactor: Any
    factory: ConnectProxyFactory
    services: IServiceCollection
    accessLog: IProxyObserver | None = None


def makeObservers(
    descriptions: Iterable[str],
    context: ObserverContext,
    installed: Mapping[str, IProxyObserverFactory],
) -> list[IProxyObserver]:
    """
    Make the observers C{--observer} options name, in order.

    @param descriptions: C{NAME} or C{NAME:ARGUMENT} each, with names that
        are installed.
    @param context: What the observers are made from.
    @param installed: The observer plugins, by name.
    @raise ValueError: Naming the option and the plugin, when a plugin
        refuses its argument.
    """
    observers = []
    for description in descriptions:
        name, _, argument = description.partition(":")
        try:
            observers.append(installed[name].observerFromArgument(argument, context))
        except ValueError as e:
            raise ValueError(f"--observer {name}: {e}") from None
    return observers


def idleContext(settings: ProxySettings) -> ObserverContext:
    """
    A context for checking observer arguments before anything runs: a
    reactor that does nothing, a factory on it, services never started.
    """
    # Only command-line checks get here: keep the testing module out of the
    # import of the package.
    from twisted.internet.testing import MemoryReactor

    reactor = MemoryReactor()
    # A check: no resolver to choose (and log the choice of) yet.
    settings = replace(settings, resolver="system")
    factory = ConnectProxyFactory(reactor, settings, observers=[])
    return ObserverContext(reactor, factory, MultiService())
