# -*- test-case-name: tests.test_plugins,tests.test_connectorplugins -*-
"""
The extension points of connectproxy.

Each is a C{zope.interface} interface; implementations say
C{@implementer(...)} and can be checked with
L{zope.interface.verify.verifyObject}.  These interfaces are the stable,
versioned plugin API: L{API_VERSION} changes when one of them does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IProtocol

    from ._access import AccessRequest, Refusal
    from ._connector import ConnectorContext, UpstreamRequest
    from ._observer import (
        ConnectionRecord,
        ForwardedRequest,
        RefusedRequest,
        TunnelRecord,
    )
    from ._observercontext import ObserverContext

__all__ = [
    "API_VERSION",
    "IAccessPolicy",
    "IAccessPolicyFactory",
    "IExchangeRecord",
    "IForwardingObserver",
    "IProxyObserver",
    "IProxyObserverFactory",
    "IUpstreamConnector",
    "IUpstreamConnectorFactory",
]

#: The version of the plugin API described here.  Version 2: connectors
#: receive an L{UpstreamRequest} (version 1 connectors, which read only
#: C{host} and C{port}, work unchanged), and connector plugins
#: (L{IUpstreamConnectorFactory}) are chosen with C{--upstream}; observers
#: are told of connections too (version 1 observers work unchanged, with a
#: deprecation warning), every refusal has an C{outcome}, tunnel records
#: have timings, and observer plugins (L{IProxyObserverFactory}) are chosen
#: with C{--observer}.  Version 3: plain C{http://} requests are forwarded,
#: and observers that also provide L{IForwardingObserver} are told of each
#: (C{requestForwarded}); observers without it work unchanged.
API_VERSION = 3


class IUpstreamConnector(Interface):
    """
    Makes the upstream connection for an accepted request: a CONNECT's
    tunnel, or the connection a plain C{http://} request is forwarded on
    (C{target.request.destination.form} is C{"absolute"} then, and the
    proxy sends the request on the connection itself).

    Plain HTTP through a parent proxy (new in version 3): a connector may
    also have two optional methods, C{forwardVia(target)}, returning the
    L{connectproxy.ParentProxy} that plain HTTP requests for C{target} go
    to (or C{None} to connect to the target itself), and
    C{connectForwarding(target, protocol)}, which connects C{protocol} to
    that parent (no C{CONNECT}: the proxy sends the request in absolute
    form, with the parent's credentials) and answers as
    C{connectUpstream} does.  L{connectproxy.ParentProxyConnector} and
    L{connectproxy.RoutingConnector} have both.  A connector without
    C{forwardVia} has plain HTTP requests connected with
    C{connectUpstream}, to the target's host and port, as direct
    connections are.
    """

    def connectUpstream(
        target: UpstreamRequest, protocol: IProtocol
    ) -> Deferred[IProtocol]:
        """
        Connect C{protocol} to C{target.host} and C{target.port}.

        The proxy answers the client according to how the Deferred fails:
        L{connectproxy.ForbiddenDestination} with 403 and its reason;
        L{connectproxy.ParentProxyError} with its own status and reason;
        L{twisted.internet.error.DNSLookupError},
        L{twisted.internet.error.ConnectionRefusedError} and other
        L{twisted.internet.error.ConnectError}s with 502; anything else
        with 502 and its traceback in the log (C{connector_error}).  When
        its deadline passes it cancels the Deferred and answers 504.

        @param target: The normalised target, the authenticated user, the
            client and the parsed request.
        @param protocol: The protocol to connect; its C{makeConnection} is
            called once the connection exists.
        @return: A Deferred that fires with C{protocol} once connected, or
            fails.  Cancelling it abandons the attempt and must leave no
            connection behind.
        """


class IProxyObserver(Interface):
    """
    Told what the proxy does, for access logs and metrics.  Observers must
    return quickly and not raise; they run on the reactor thread.

    For each client connection, in this order: L{connectionOpened}; then
    for each request on it, L{requestRefused} or L{tunnelOpened} (and, once
    the tunnel is gone, L{tunnelClosed}); then L{connectionClosed}.  Nothing
    is reported per chunk of relayed bytes: the byte counts of open tunnels
    can be read at any time from
    L{ConnectProxyFactory.openTunnelStats
    <connectproxy.ConnectProxyFactory.openTunnelStats>}.
    """

    def connectionOpened(event: ConnectionRecord) -> None:
        """
        A client connection was accepted: every one, those about to be
        refused over a limit or shed included.  Behind a PROXY-protocol
        listener, once the header has named the client (a connection whose
        header is missing or invalid is never reported).  New in version 2.
        """

    def connectionClosed(event: ConnectionRecord) -> None:
        """
        A client connection is gone, and its tunnel if it had one;
        C{event} carries its duration and how many requests it sent.  New
        in version 2.
        """

    def requestRefused(event: RefusedRequest) -> None:
        """
        A request did not become a tunnel: it was answered with an error
        status, or (status 0) the client went away while it was checked or
        connected, or the connection was shed.  C{event.outcome} says which
        (L{connectproxy.Outcome}).
        """

    def tunnelOpened(event: TunnelRecord) -> None:
        """
        A tunnel was established (the 200 was sent); C{event} carries how
        long admission and the upstream connect took.
        """

    def tunnelClosed(event: TunnelRecord) -> None:
        """
        A tunnel ended; C{event} carries its byte counts, duration and close
        reason.
        """


class IForwardingObserver(IProxyObserver):
    """
    An observer that is also told of each plain C{http://} request the
    proxy forwarded.  New in version 3: the method is optional, and an
    observer without it (every version 2 observer) is simply not told of
    forwarded requests; declare this interface when you implement it.
    Refusals of forwarded requests go to C{requestRefused}
    as every refusal does.
    """

    def requestForwarded(event: ForwardedRequest) -> None:
        """
        A forwarded request's exchange is over: the response was relayed
        whole (C{event.outcome} C{"ok"}), or the exchange was cut short (a
        client that left, an origin that broke off).  C{event} carries the
        method, the URL (without its query string unless C{--log-query}),
        the status, the bytes each way, the duration and the upstream
        address.
        """


class IProxyObserverRecord(Interface):
    """
    Fields common to every record of a request given to an
    L{IProxyObserver}.
    """

    client = Attribute("The client's address, as text.")
    status = Attribute("The HTTP status the request was answered with.")


class IExchangeRecord(IProxyObserverRecord):
    """
    One request and what came of it: what L{connectproxy.RefusedRequest}
    and L{connectproxy.TunnelRecord} have in common, and what a record of a
    forwarded request will have.
    """

    method = Attribute("The request method, or '' when the head was unreadable.")
    target = Attribute(
        "The request-target as the client sent it: an authority (host:port) "
        "for CONNECT, a URL for a forwarded request; '' when unreadable."
    )
    outcome = Attribute(
        "What came of the request: a connectproxy.Outcome, a string from a "
        "small fixed set ('ok', 'denied', ...)."
    )
    user = Attribute("The authenticated user name, or None.")


class IAccessPolicy(Interface):
    """
    Decides whether a client (and its user, if authenticated) may tunnel to
    a target.  Policies run after authentication and after the built-in
    rules, in the order they were given; the first refusal wins.
    """

    def checkAccess(
        access: AccessRequest,
    ) -> Refusal | Deferred[Refusal | None] | None:
        """
        @param access: Who asks for what.
        @return: C{None} to let the request go on to the next policy, or a
            L{connectproxy.Refusal} (its status and reason are sent to the
            client), or a Deferred firing with either.  A policy that raises
            or fails refuses with 500.
        """


class IAccessPolicyFactory(Interface):
    """
    A plugin that makes L{IAccessPolicy} providers from the command line:
    C{--policy NAME[:ARGUMENT]}.  Plugins are found with
    L{twisted.plugin.getPlugins} in the L{connectproxy.plugins} package;
    the plugin object must also provide L{twisted.plugin.IPlugin}.
    """

    name = Attribute("The name operators choose it by, for example 'hostlist'.")
    description = Attribute("One sentence for --help-policies.")

    def policyFromArgument(argument: str) -> IAccessPolicy:
        """
        @param argument: What followed C{NAME:} on the command line (C{""}
            when nothing did).
        @return: The policy.
        @raise ValueError: With a message for the operator when the argument
            is not valid; the command stops before listening.
        """


class IUpstreamConnectorFactory(Interface):
    """
    A plugin that makes the L{IUpstreamConnector} from the command line:
    C{--upstream NAME[:ARGUMENT]} (C{direct} when not given).  Plugins are
    found with L{twisted.plugin.getPlugins} in the L{connectproxy.plugins}
    package; the plugin object must also provide L{twisted.plugin.IPlugin}.
    """

    name = Attribute("The name operators choose it by, for example 'direct'.")
    description = Attribute("One sentence for --help-upstreams.")

    def connectorFromArgument(
        argument: str, context: ConnectorContext
    ) -> IUpstreamConnector:
        """
        Make the connector.  Called when the command line is checked (with
        a context whose reactor does nothing), when the proxy starts, and
        at every reload, which replaces the connector for new requests; so
        hold nothing that needs closing.

        @param argument: What followed C{NAME:} on the command line (C{""}
            when nothing did).
        @param context: The reactor, settings, destination network rules
            and resolver pool to build with.
        @return: The connector.
        @raise ValueError: With a message for the operator when the argument
            is not valid; the command stops before listening (a reload is
            refused and the old configuration kept).
        """


class IProxyObserverFactory(Interface):
    """
    A plugin that makes an L{IProxyObserver} from the command line:
    C{--observer NAME[:ARGUMENT]}, repeatable (C{accesslog} when not given).
    Plugins are found with L{twisted.plugin.getPlugins} in the
    L{connectproxy.plugins} package; the plugin object must also provide
    L{twisted.plugin.IPlugin}.  New in version 2.
    """

    name = Attribute("The name operators choose it by, for example 'accesslog'.")
    description = Attribute("One sentence for --help-observers.")

    def observerFromArgument(argument: str, context: ObserverContext) -> IProxyObserver:
        """
        Make the observer.  Called when the command line is checked, and
        again when a reload checks it (with a context whose reactor does
        nothing and whose services never start: the observer is dropped),
        and once when the proxy starts.  The observer made then lasts as
        long as the process: a reload does not make it again, and one that
        changes C{--observer} leaves the observers as they are (and logs
        C{reload_observer_ignored}).

        @param argument: What followed C{NAME:} on the command line (C{""}
            when nothing did).
        @param context: The reactor, the proxy's factory (its open
            connections and tunnels, for gauges) and where to add the
            services the observer needs running (a metrics listener):
            C{service.setServiceParent(context.services)}.  They start
            with the proxy and stop, in reverse order, when it stops.
        @return: The observer.
        @raise ValueError: With a message for the operator when the argument
            is not valid; the command stops before listening.
        """
