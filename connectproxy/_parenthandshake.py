# -*- test-case-name: tests.test_parent,tests.test_parenttls -*-
"""
The connection to a parent proxy until it agrees to tunnel:
L{ParentHandshake} sends the C{CONNECT}, reads the answer and reports it
to its L{HandshakeReceiver}, then passes the tunnel's bytes on to the
tunnel's protocol; L{refusalFor} and L{lostBeforeAnswer} say what the
client is answered when the parent refuses or goes away first.  For plain
HTTP forwarding there is no C{CONNECT}: over TLS it reports the end of the
TLS handshake instead, and the connection's loss before it.
"""

from __future__ import annotations

from typing import Protocol as TypingProtocol
from typing import cast

from OpenSSL.SSL import Error as TLSError
from service_identity import VerificationError
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IHandshakeListener,
    IProtocol,
    ITransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import alsoProvides, implementer

from ._errors import ParentProxyError
from ._parenthead import MalformedResponse, ParentResponse, ParentResponseReader
from ._parenturl import ParentProxy
from ._tunnel import TunnelTransport

__all__ = ["HandshakeReceiver", "ParentHandshake", "lostBeforeAnswer", "refusalFor"]


class HandshakeReceiver(TypingProtocol):
    """
    What a L{ParentHandshake} reports to: the attempt it belongs to.  After
    the first of L{answered}, L{malformed} and L{lost} (or once the
    connection is handed over, or dropped) it reports nothing more.
    """

    def connectionMade(self, handshake: ParentHandshake) -> None:
        """
        The connection to the parent exists and the C{CONNECT} is on its
        way.
        """

    def handshakeCompleted(self, handshake: ParentHandshake) -> None:
        """
        Over TLS: the TLS handshake with the parent is done, its
        certificate verified.
        """

    def answered(self, response: ParentResponse, leftover: bytes) -> None:
        """
        The parent answered with C{response}; C{leftover} followed its head.
        """

    def malformed(self, error: MalformedResponse) -> None:
        """
        The parent's answer is not valid HTTP.
        """

    def lost(self, reason: Failure) -> None:
        """
        The connection ended before the parent answered.
        """


#: What the parent's status line may add to the log, at most, in characters.
_DETAIL_LENGTH = 120


def refusalFor(response: ParentResponse, parent: ParentProxy) -> ParentProxyError:
    """
    What the client is answered when the parent answers C{CONNECT} with
    anything but a 2xx: the parent's own 403, 502, 503 or 504, and 502 for
    everything else.  A 407 becomes 502 too: the credentials for the parent
    are the operator's, and the client cannot fix them.

    @param response: The parent's final response head.
    @param parent: The parent, for the log.
    """
    status = response.status
    detail = f"{status} {response.reason}".strip()[:_DETAIL_LENGTH]
    where = parent.address
    if status == 407 and parent.user is None:
        return ParentProxyError(
            502, "the parent proxy requires credentials", where, detail
        )
    if status == 407:
        return ParentProxyError(
            502, "the parent proxy refused the proxy's credentials", where, detail
        )
    if status == 403:
        return ParentProxyError(
            403, "the parent proxy denied the tunnel", where, detail
        )
    if status in (502, 503, 504):
        reason = f"the parent proxy could not open the tunnel ({status})"
        return ParentProxyError(status, reason, where, detail)
    return ParentProxyError(502, f"the parent proxy answered {status}", where, detail)


def lostBeforeAnswer(reason: Failure, parent: ParentProxy) -> ParentProxyError:
    """
    What the client is answered when the connection to the parent ends
    before its answer: a TLS failure, or a plain close.
    """
    where = parent.address
    if reason.check(VerificationError):
        return ParentProxyError(
            502,
            "the parent proxy's certificate does not match its name",
            where,
            reason.getErrorMessage()[:_DETAIL_LENGTH],
        )
    if reason.check(TLSError):
        return ParentProxyError(
            502,
            "the TLS handshake with the parent proxy failed",
            where,
            reason.getErrorMessage()[:_DETAIL_LENGTH],
        )
    return ParentProxyError(
        502, "the parent proxy closed the connection before answering", where
    )


@implementer(IHalfCloseableProtocol)
class ParentHandshake(Protocol):
    """
    The connection to the parent: it sends the C{CONNECT} (if it has one),
    reads the answer, and once the attempt hands the tunnel's protocol over
    (L{handOver}), passes everything on to it.

    It stays the transport's protocol for the connection's whole life, so
    the tunnel's bytes, FIN and loss pass through here: one call each.
    """

    def __init__(self, attempt: HandshakeReceiver, head: bytes) -> None:
        self._attempt = attempt
        self._head = head
        self._reader: ParentResponseReader | None = ParentResponseReader()
        self._tunnel: IProtocol | None = None
        # Whether the attempt still hears from this: until the answer, the
        # loss, the hand-over or the abort.
        self._waiting = True

    _transport: TunnelTransport | None = None

    def connectionMade(self) -> None:
        self._transport = cast(TunnelTransport, self.transport)
        # Over TLS the head waits in the TLS layer until the handshake is
        # done.
        if self._head:
            self._transport.write(self._head)
        else:
            self._reader = None
        self._attempt.connectionMade(self)

    def dataReceived(self, data: bytes) -> None:
        tunnel = self._tunnel
        if tunnel is not None:
            tunnel.dataReceived(data)
            return
        reader = self._reader
        if reader is None:
            return
        try:
            result = reader.feed(data)
        except MalformedResponse as e:
            self._stopWaiting()
            self._attempt.malformed(e)
            return
        if result is not None:
            self._stopWaiting()
            self._attempt.answered(*result)

    def listenForHandshake(self) -> None:
        """
        Under TLS: be told when the handshake is done (L{IHandshakeListener},
        provided by this instance only: Twisted's endpoint wrapper keeps
        only one of the interfaces it forwards, and a plain connection
        must keep L{IHalfCloseableProtocol}).
        """
        alsoProvides(self, IHandshakeListener)

    def handshakeCompleted(self) -> None:
        """
        The TLS handshake with the parent is done: tell the attempt, unless
        the connection was handed over or dropped already.
        """
        if self._waiting and self._tunnel is None:
            self._attempt.handshakeCompleted(self)

    def _stopWaiting(self) -> None:
        self._waiting = False
        self._reader = None

    def handOver(self, tunnel: IProtocol) -> None:
        """
        Connect the tunnel's protocol to this connection: from now on it
        gets everything.
        """
        self._stopWaiting()
        self._tunnel = tunnel
        tunnel.makeConnection(cast(ITransport, self._transport))

    def deliver(self, data: bytes) -> None:
        """
        Give the tunnel's protocol the bytes that followed the parent's
        answer, unless the connection has gone meanwhile.
        """
        if self._tunnel is not None and self.connected:
            self._tunnel.dataReceived(data)

    def abort(self) -> None:
        """
        Drop the connection to the parent at once.
        """
        self._stopWaiting()
        if self._transport is not None:
            self._transport.abortConnection()

    def readConnectionLost(self) -> None:
        tunnel = self._tunnel
        if tunnel is not None:
            halfCloseable = IHalfCloseableProtocol(tunnel, None)
            if halfCloseable is not None:
                halfCloseable.readConnectionLost()
            elif self._transport is not None:
                self._transport.loseConnection()
            return
        if self._waiting:
            self._stopWaiting()
            self._attempt.lost(Failure(ConnectionDone()))
            self.abort()

    def writeConnectionLost(self) -> None:
        halfCloseable = IHalfCloseableProtocol(self._tunnel, None)
        if halfCloseable is not None:
            halfCloseable.writeConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = False
        tunnel = self._tunnel
        if tunnel is not None:
            tunnel.connectionLost(reason)
            return
        if self._waiting:
            self._stopWaiting()
            self._attempt.lost(reason)
