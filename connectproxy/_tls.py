# -*- test-case-name: tests.test_tls -*-
"""
The HTTPS-proxy listener (C{ssl:}, C{tls:} and C{haproxy:ssl:} strports):
what the proxy says it speaks in ALPN, the clean refusal of a client that
offers nothing it speaks, and the one log event per failed handshake.

Twisted installs an ALPN selection callback on every server TLS context.  It
asks the factory under the TLS wrapper, through
L{IProtocolNegotiationFactory}, which protocols it speaks, and fails the
handshake with an C{internal_error} alert when there is no overlap with the
client's offer, which is always the case when the factory names none.  So:

  - L{ConnectProxyFactory <connectproxy._factory.ConnectProxyFactory>} names
    L{ALPN_PROTOCOLS};
  - every L{WrappingFactory} (the PROXY-protocol wrapper of C{haproxy:}
    listeners among them) answers for the factory it wraps;
  - L{NegotiatingReactor <connectproxy._tlslisteners.NegotiatingReactor>}
    gives the contexts of C{ssl:} (and C{haproxy:ssl:}) listeners the
    selection callback of L{refuseUnsharedProtocols}, which refuses a
    client offering only protocols the proxy does not speak with a
    C{no_application_protocol} alert (RFC 7301 section 3.2) instead of an
    C{internal_error}.

The adapter for L{WrappingFactory} is registered for the whole process when
this module is imported; it only ever makes a wrapper name what the factory
it wraps names.  The contexts of C{tls:} listeners are made lazily, one per
server name, and are out of reach: there a client sharing no protocol still
gets Twisted's C{internal_error}.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from OpenSSL import SSL
from twisted.internet.interfaces import IProtocolNegotiationFactory
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory
from twisted.python.components import getAdapterFactory, registerAdapter
from twisted.python.failure import Failure

__all__ = [
    "ALPN_PROTOCOLS",
    "NoSharedProtocol",
    "describeHandshakeFailure",
    "handshakePending",
    "logHandshakeFailure",
    "logHandshakeTimeout",
    "refuseUnsharedProtocols",
    "spokenProtocols",
]

#: The ALPN protocol IDs (RFC 7301) a client may negotiate with the proxy,
#: in order of preference: the proxy speaks HTTP/1.1 (RFC 9112) and nothing
#: else.
ALPN_PROTOCOLS: Final[tuple[bytes, ...]] = (b"http/1.1",)


class NoSharedProtocol(SSL.Error):
    """
    The client's ALPN offer names no protocol the listener speaks; the
    handshake fails with a C{no_application_protocol} alert.

    Its C{args} are shaped like OpenSSL's error queue, as the TLS layer
    expects of every L{SSL.Error}.

    @ivar offered: The protocol IDs the client offered.
    @ivar spoken: The protocol IDs the listener speaks.
    """

    def __init__(self, offered: Sequence[bytes], spoken: Sequence[bytes]) -> None:
        super().__init__([("SSL routines", "", "no application protocol")])
        self.offered = tuple(offered)
        self.spoken = tuple(spoken)

    def __str__(self) -> str:
        offered, spoken = _names(self.offered), _names(self.spoken)
        return f"the client offered {offered} over ALPN; this proxy speaks {spoken}"


#: How many of a client's protocol IDs a log line names, and how many
#: characters of each: the client chooses them (up to 64 KiB).
_SHOWN_PROTOCOLS = 8
_SHOWN_LENGTH = 40


def _names(protocols: Sequence[bytes]) -> str:
    """
    Protocol IDs for a log line, C{h2, http/1.1}: control and non-ASCII
    bytes escaped, long IDs and long lists cut short.
    """
    shown = []
    for protocol in protocols[:_SHOWN_PROTOCOLS]:
        text = repr(protocol)[2:-1]
        if len(text) > _SHOWN_LENGTH:
            text = text[:_SHOWN_LENGTH] + "..."
        shown.append(text)
    if len(protocols) > _SHOWN_PROTOCOLS:
        shown.append(f"{len(protocols) - _SHOWN_PROTOCOLS} more")
    return ", ".join(shown) or "nothing"


def _wrappedNegotiation(wrapper: WrappingFactory) -> IProtocolNegotiationFactory | None:
    """
    A wrapping factory speaks what the factory it wraps speaks.

    @param wrapper: Any L{WrappingFactory}: the PROXY-protocol wrapper, the
        C{policies} wrappers, TLS itself.
    @return: The wrapped factory's negotiation, or C{None} (no adapter) when
        it names no protocols.
    """
    return IProtocolNegotiationFactory(wrapper.wrappedFactory, None)


if getAdapterFactory(WrappingFactory, IProtocolNegotiationFactory, None) is None:
    registerAdapter(_wrappedNegotiation, WrappingFactory, IProtocolNegotiationFactory)


def spokenProtocols(factory: object) -> Sequence[bytes]:
    """
    The ALPN protocol IDs a factory (or the factory a wrapper wraps) speaks.

    @param factory: A protocol factory.
    @return: Its protocol IDs in order of preference; empty when it names
        none.
    """
    negotiation = IProtocolNegotiationFactory(factory, None)
    if negotiation is None:
        return ()
    return negotiation.acceptableProtocols()


def _selector(factory: object) -> Callable[[SSL.Connection, list[bytes]], Any]:
    """
    Make an ALPN selection callback for a listener's TLS context.

    @param factory: The factory the TLS layer wraps.
    @return: The callback: it picks the factory's most preferred protocol
        that the client offers, lets a factory that names no protocols go on
        without ALPN, and otherwise raises L{NoSharedProtocol}, which OpenSSL
        turns into a C{no_application_protocol} alert and pyOpenSSL raises
        again from the handshake.
    """

    def select(connection: SSL.Connection, offered: list[bytes]) -> Any:
        spoken = spokenProtocols(factory)
        for protocol in spoken:
            if protocol in offered:
                return protocol
        if not spoken:
            return SSL.NO_OVERLAPPING_PROTOCOLS
        raise NoSharedProtocol(offered, spoken)

    return select


def refuseUnsharedProtocols(contextFactory: object, factory: object) -> bool:
    """
    Give the TLS context of a listener the ALPN selection of L{_selector}.

    It must run before the context makes its first connection: pyOpenSSL
    refuses changes to a context in use.

    @param contextFactory: The listener's context factory (for C{ssl:},
        a L{CertificateOptions <twisted.internet.ssl.CertificateOptions>},
        whose context is made once and shared by every connection).
    @param factory: The factory the TLS layer wraps.
    @return: Whether the context now has the selection; C{False} for a
        context factory without C{getContext} or a context already in use
        (where Twisted's selection stays, which answers a client that shares
        no protocol with an C{internal_error} alert).
    """
    getContext = getattr(contextFactory, "getContext", None)
    if getContext is None:
        return False
    context = getContext()
    if not isinstance(context, SSL.Context):
        return False
    try:
        context.set_alpn_select_callback(_selector(factory))
    except ValueError:
        return False
    return True


#: OpenSSL's reasons for a first record that is not TLS at all: an HTTP
#: request, or anything else that does not start like a TLS record.
_NOT_TLS = ("http request", "https proxy request", "wrong version number")


def _openSSLReasons(error: SSL.Error) -> list[str]:
    """
    The reason strings of an OpenSSL error queue, in order.
    """
    queue = error.args[0] if error.args else None
    if not isinstance(queue, list):
        return [str(error)]
    return [str(entry[-1]) for entry in queue if isinstance(entry, tuple) and entry]


def describeHandshakeFailure(error: SSL.Error) -> tuple[str, str]:
    """
    Say why a TLS handshake failed, for operators.

    @param error: What the TLS layer failed with.
    @return: A stable cause (C{plaintext}, C{certificate},
        C{no_shared_protocol} or C{tls_error}) and a short sentence.
    """
    if isinstance(error, NoSharedProtocol):
        return "no_shared_protocol", str(error)
    reasons = _openSSLReasons(error)
    text = "; ".join(reasons) or "unknown TLS error"
    if any(reason in _NOT_TLS for reason in reasons):
        return (
            "plaintext",
            f"the client did not speak TLS ({text}); point it at an "
            "https:// proxy URL, or at a plain listener",
        )
    if any("alert" in r and ("certificate" in r or " ca" in r) for r in reasons):
        return (
            "certificate",
            f"the client rejected the proxy's certificate ({text}); give "
            "clients the CA that signed it",
        )
    return "tls_error", text


#: Where L{logHandshakeFailure} logs (a function, so no class to hang it on).
_log = Logger(namespace="connectproxy.tls")


def handshakePending(transport: object) -> bool:
    """
    Whether a transport is TLS whose handshake has not finished: the
    client's C{Finished} message has not arrived (RFC 8446 section 4.4.4),
    so nothing can be sent to it yet.

    @param transport: A client's transport: TLS (an C{ssl:}, C{tls:}
        listener), or not.
    @return: C{False} for a transport that is not TLS.
    """
    getHandle = getattr(transport, "getHandle", None)
    handle = getHandle() if getHandle is not None else None
    if not isinstance(handle, SSL.Connection):
        return False
    return handle.get_peer_finished() is None


def logHandshakeTimeout(client: str, timeout: str) -> None:
    """
    Log a TLS handshake that did not finish in time, as one
    C{tls_handshake_failed} event with the cause C{timeout}.

    @param client: The client's address, as logged elsewhere.
    @param timeout: The deadline, as an operator wrote it (C{"30 seconds"}).
    """
    _log.info(
        "TLS handshake with {client} failed: {reason}",
        event="tls_handshake_failed",
        client=client,
        cause="timeout",
        reason=f"the handshake was not complete within {timeout} "
        "(see --request-timeout)",
    )


def logHandshakeFailure(client: str, reason: Failure) -> bool:
    """
    Log a TLS handshake that failed, as one C{tls_handshake_failed} event
    (no traceback) with the client's address, a stable C{cause} and a
    short C{reason}.

    @param client: The client's address, as logged elsewhere.
    @param reason: Why the connection was lost; only TLS errors are
        logged (a client that merely closes its connection is not).
    @return: Whether it was a TLS error and was logged.
    """
    if not reason.check(SSL.Error):
        return False
    error = reason.value
    assert isinstance(error, SSL.Error)
    cause, description = describeHandshakeFailure(error)
    _log.info(
        "TLS handshake with {client} failed: {reason}",
        event="tls_handshake_failed",
        client=client,
        cause=cause,
        reason=description,
    )
    return True
