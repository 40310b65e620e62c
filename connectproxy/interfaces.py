# -*- test-case-name: tests.test_interfaces -*-
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

    from ._observer import RefusedRequest, TunnelRecord
    from ._parser import ConnectRequest

__all__ = ["API_VERSION", "IProxyObserver", "IUpstreamConnector"]

#: The version of the plugin API described here.
API_VERSION = 1


class IUpstreamConnector(Interface):
    """
    Makes the upstream connection for an accepted CONNECT request.
    """

    def connectUpstream(
        request: ConnectRequest, protocol: IProtocol
    ) -> Deferred[IProtocol]:
        """
        Connect C{protocol} to the target of C{request}.

        @param request: The accepted request; C{request.host} and
            C{request.port} name the target.
        @param protocol: The protocol to connect; its C{makeConnection} is
            called once the connection exists.
        @return: A Deferred that fires with C{protocol} once connected, or
            fails (for example with L{twisted.internet.error.DNSLookupError}
            or L{twisted.internet.error.ConnectionRefusedError}).  Cancelling
            it abandons the attempt and must leave no connection behind.
        """


class IProxyObserver(Interface):
    """
    Told what the proxy does, for access logs and metrics.  Observers must
    return quickly and not raise; they run on the reactor thread.
    """

    def requestRefused(event: RefusedRequest) -> None:
        """
        A request was answered with an error status.
        """

    def tunnelOpened(event: TunnelRecord) -> None:
        """
        A tunnel was established (the 200 was sent).
        """

    def tunnelClosed(event: TunnelRecord) -> None:
        """
        A tunnel ended; C{event} carries its byte counts, duration and close
        reason.
        """


class IProxyObserverRecord(Interface):
    """
    Fields common to every record given to an L{IProxyObserver}.
    """

    client = Attribute("The client's address, as text.")
    status = Attribute("The HTTP status the request was answered with.")
