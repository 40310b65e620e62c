# -*- test-case-name: tests.test_tap,tests.test_config -*-
"""
The options that bound what one connection, and all of them, may take: the
deadlines (seconds) and the limits on request heads (bytes, fields) and on
connections; and how a tunnel moves its bytes (C{--relay}).
"""

from __future__ import annotations

from typing import Any

from twisted.python import usage

from ._options_base import OptionGroup
from ._optionvalues import (
    byteCount,
    count,
    fieldCount,
    nonNegativeFloat,
    positiveFloat,
    relayMode,
)
from ._settings import ProxySettings

__all__ = ["LimitOptions"]

_defaults = ProxySettings()


class LimitOptions(OptionGroup):
    """
    The C{--*-timeout} options, C{--shutdown-grace}, C{--relay} and the
    C{--max-*} options.
    """

    optParameters: list[list[Any]] = [
        [
            "connect-timeout",
            None,
            _defaults.connectTimeout,
            "Seconds allowed for everything between the request head and the "
            "200: access checks, name resolution and every address tried; the "
            "client then gets 504 (503 while access is still being checked).",
            positiveFloat,
        ],
        [
            "idle-timeout",
            None,
            _defaults.idleTimeout,
            "Seconds a tunnel may go without a byte in either direction "
            "before it is closed.",
            positiveFloat,
        ],
        [
            "half-close-timeout",
            None,
            _defaults.halfCloseTimeout,
            "Seconds a tunnel with one direction finished (one side sent its "
            "FIN) may go without a byte before it is closed; the shorter of "
            "this and --idle-timeout applies.",
            positiveFloat,
        ],
        [
            "request-timeout",
            None,
            _defaults.requestTimeout,
            "Seconds a client has to send its complete request head; the "
            "client then gets 408 (slow clients cannot hold connections).",
            positiveFloat,
        ],
        [
            "abort-timeout",
            None,
            _defaults.abortTimeout,
            "Seconds a graceful close may take before the connection is aborted.",
            positiveFloat,
        ],
        [
            "shutdown-grace",
            None,
            _defaults.shutdownGrace,
            "Seconds established tunnels may keep running after SIGTERM, "
            "once the listeners are closed; then they are closed (reason "
            "shutdown). A second SIGTERM or SIGINT closes them at once. 0 "
            "closes them at once.",
            nonNegativeFloat,
        ],
        [
            "relay",
            None,
            _defaults.relay,
            "How tunnels move bytes: splice (splice(2) between plain TCP "
            "sockets, Linux; the bytes stay in the kernel), transport (through "
            "Twisted's transports), or auto (splice where it applies, the "
            "transports elsewhere: TLS, https:// parents, UNIX sockets). "
            "splice refuses to start where splice(2) does not exist.",
            relayMode,
        ],
        [
            "max-request-line",
            None,
            _defaults.maxRequestLine,
            "Longest request line accepted, in bytes; longer gets 414.",
            byteCount,
        ],
        [
            "max-head-size",
            None,
            _defaults.maxHeadSize,
            "Largest request head (request line and header fields) accepted, "
            "in bytes; larger gets 431.",
            byteCount,
        ],
        [
            "max-header-fields",
            None,
            _defaults.maxHeaderFields,
            "Most header fields in a request head; more gets 431.",
            fieldCount,
        ],
        [
            "max-connections",
            None,
            None,
            "Most client connections at once; more get 503 (0: no limit). The "
            "default is what the descriptor limit allows, (limit - 64) / 2, "
            "after the proxy raised it to the hard limit at start.",
            count,
        ],
        [
            "max-connections-per-client",
            None,
            _defaults.maxConnectionsPerClient,
            "Most connections at once from one client address; more get 503.",
            count,
        ],
    ]

    def _checkLimits(self) -> None:
        """
        Refuse limits that contradict each other.
        """
        if self["max-head-size"] < self["max-request-line"]:
            raise usage.UsageError(
                "--max-head-size must be at least --max-request-line"
                + self._fromFile("max-head-size", "max-request-line")
            )
