# -*- test-case-name: tests.test_forward -*-
"""
Forwarded requests the proxy answers itself: a TRACE or OPTIONS whose
C{Max-Forwards} is 0 (RFC 9110 section 7.6.2), the proxy being its final
recipient (L{answerHere}); and the URL of a forwarded request as the access
log shows it (L{loggedURL}).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from ._connector import UpstreamRequest
from ._exchange import clientKeepsAlive
from ._handler import _Admitted, _Front
from ._messages import Framing, localAnswer
from ._observer import ForwardedRequest
from ._parser import RequestHead
from ._target import loggedTarget
from ._tunnel import TunnelTransport

__all__ = ["answerHere", "loggedURL"]


def loggedURL(front: _Front, request: RequestHead) -> str:
    """
    The request's URL as the access log shows it: without its query string
    unless C{--log-query}, never with user information
    (L{loggedTarget}).
    """
    return loggedTarget(request.target, front.settings.logQuery)


def answerHere(
    front: _Front,
    admission: _Admitted,
    target: UpstreamRequest,
    framing: Framing,
    methods: Sequence[str],
) -> None:
    """
    Answer a TRACE or OPTIONS whose C{Max-Forwards} is 0 (TRACE with the
    request head, OPTIONS with the methods served in C{Allow}), report it,
    and read the next request, or close the connection.

    @param front: The front of the client's connection, in
        L{Phase.CONNECTING <connectproxy._handler.Phase.CONNECTING>}.
    @param admission: The request's admission.
    @param target: The admitted request.
    @param framing: How its body is delimited: the connection goes on only
        without one (the body is not read).
    @param methods: The methods served.
    """
    request = target.request
    keepAlive = clientKeepsAlive(request) and framing.empty
    response = localAnswer(request, methods, keepAlive)
    early, _ = front.forward(_ignore, _ignoreFIN)
    cast(TunnelTransport, front.transport).write(response)
    front.report(
        ForwardedRequest(
            client=front.client,
            method=request.method,
            target=loggedURL(front, request),
            host=target.host,
            port=target.port,
            upstream="",
            status=200,
            bytesDown=len(response),
            duration=front.clock.seconds() - admission.headAt,
            reason="answered by the proxy (Max-Forwards: 0)",
            user=target.user,
            admitTime=admission.admittedAt - admission.headAt,
        )
    )
    if keepAlive:
        front.requestDone(early)
    else:
        front.finish()


def _ignore(data: bytes) -> None:
    pass


def _ignoreFIN() -> None:
    pass
