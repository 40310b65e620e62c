# -*- test-case-name: tests.test_tap -*-
"""
The values of the command-line options: coerce functions for
C{optParameters} (and checks for the handlers of repeatable options) that
say what was expected when a value is wrong.  Each has a C{coerceDoc}
for C{--help}; one with C{string = True} takes only a string in the
configuration file, never a number.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Callable
from typing import TypeVar

from ._accesslog import FORMATS
from ._assembly import connectorFactories
from ._parenturl import ParentProxy
from ._relaychoice import RELAY_MODES, spliceUnavailableReason
from ._routing import parseRoute

__all__ = [
    "accessLogFormat",
    "accessLogPath",
    "byteCount",
    "checkNetwork",
    "coercer",
    "connectorChoice",
    "count",
    "fieldCount",
    "nonNegativeFloat",
    "parentProxyURL",
    "positiveCount",
    "positiveFloat",
    "realm",
    "relayMode",
    "resolverChoice",
    "upstreamRoute",
    "workerCount",
]

_T = TypeVar("_T", int, float)


def coercer(
    convert: Callable[[str], _T],
    unit: str,
    allowed: Callable[[_T], bool],
    requirement: str,
    doc: str,
) -> Callable[[str], _T]:
    """
    Make a coerce function for C{optParameters} that converts a value and
    checks it, with messages that say what was expected.
    """

    def coerce(text: str) -> _T:
        try:
            value = convert(text)
        except ValueError:
            raise ValueError(f"{text!r} is not {unit}") from None
        if not allowed(value):
            raise ValueError(f"{text!r} {requirement}")
        return value

    coerce.coerceDoc = doc  # type: ignore[attr-defined]
    return coerce


positiveFloat = coercer(
    float,
    "a number of seconds",
    lambda v: 0 < v < math.inf,
    "must be a positive number of seconds",
    "Seconds, a positive number.",
)
nonNegativeFloat = coercer(
    float,
    "a number of seconds",
    lambda v: 0 <= v < math.inf,
    "must not be negative",
    "Seconds, 0 or more.",
)
byteCount = coercer(
    int,
    "a whole number of bytes",
    lambda v: v >= 64,
    "is too small: at least 64 bytes",
    "Bytes, a whole number, at least 64.",
)
fieldCount = coercer(
    int,
    "a whole number",
    lambda v: v >= 1,
    "must be at least 1",
    "A whole number, at least 1.",
)
count = coercer(
    int,
    "a whole number",
    lambda v: v >= 0,
    "must not be negative",
    "A whole number; 0 means no limit.",
)
positiveCount = coercer(
    int,
    "a whole number",
    lambda v: v >= 1,
    "must be at least 1",
    "A whole number, at least 1.",
)


def realm(text: str) -> str:
    """
    A realm for C{Proxy-Authenticate}: printable ASCII, not empty.
    """
    if not text or not all(" " <= c <= "~" for c in text):
        raise ValueError(f"{text!r} must be printable ASCII, not empty")
    return text


realm.coerceDoc = "Printable ASCII."  # type: ignore[attr-defined]
#: A string in the configuration file, never a number.
realm.string = True  # type: ignore[attr-defined]


def checkNetwork(text: str) -> str:
    """
    A network in CIDR notation, host bits clear (C{10.0.0.0/8}).
    """
    try:
        ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        raise ValueError(f"{text!r} is not a network ({e})") from None
    return text


def connectorChoice(description: str) -> str:
    """
    C{NAME} or C{NAME:ARGUMENT} of an installed connector plugin.
    """
    name = description.partition(":")[0]
    installed = connectorFactories()
    if name not in installed:
        raise ValueError(
            f"no connector plugin named {name!r} "
            f"(installed: {', '.join(sorted(installed)) or 'none'})"
        )
    return description


connectorChoice.coerceDoc = "NAME or NAME:ARGUMENT."  # type: ignore[attr-defined]


def parentProxyURL(text: str) -> str:
    """
    A parent proxy's URL, C{http://[USER:PASSWORD@]HOST:PORT} or
    C{https://...}; the error never repeats it (it may hold a password).
    """
    ParentProxy.fromURL(text)
    return text


parentProxyURL.coerceDoc = (  # type: ignore[attr-defined]
    "http://HOST:PORT or https://HOST:PORT, with USER:PASSWORD@ before the "
    "host for Basic credentials (percent-encoded)."
)
#: A string in the configuration file, never a number.
parentProxyURL.string = True  # type: ignore[attr-defined]


def upstreamRoute(text: str) -> str:
    """
    C{PATTERN=URL} or C{PATTERN=direct}, the pattern as for C{--allow-host}.
    """
    parseRoute(text)
    return text


def accessLogPath(text: str) -> str:
    """
    The file of C{--access-log}: a path, or C{-} for standard output.
    """
    if not text or "\0" in text:
        raise ValueError(f"{text!r} is not a file name (or - for standard output)")
    return text


accessLogPath.coerceDoc = "A file, or - for standard output."  # type: ignore[attr-defined]
#: A string in the configuration file, never a number.
accessLogPath.string = True  # type: ignore[attr-defined]


def accessLogFormat(text: str) -> str:
    """
    A format of C{--access-log-format}: a name in L{FORMATS
    <connectproxy._accesslog.FORMATS>}.
    """
    if text not in FORMATS:
        raise ValueError(f"{text!r} is not one of {', '.join(FORMATS)}")
    return text


accessLogFormat.coerceDoc = "text, json or squid."  # type: ignore[attr-defined]
#: A string in the configuration file, never a number.
accessLogFormat.string = True  # type: ignore[attr-defined]


def relayMode(text: str) -> str:
    """
    A mode of C{--relay}: one of L{RELAY_MODES
    <connectproxy._relaychoice.RELAY_MODES>}; C{splice} only where
    C{splice(2)} exists (C{auto} falls back to the transports there).
    """
    if text not in RELAY_MODES:
        raise ValueError(f"{text!r} is not one of {', '.join(RELAY_MODES)}")
    if text == "splice":
        missing = spliceUnavailableReason()
        if missing is not None:
            raise ValueError(
                f"splice is not available: {missing}; use auto or transport"
            )
    return text


relayMode.coerceDoc = "auto, splice or transport."  # type: ignore[attr-defined]
#: A string in the configuration file, never a number.
relayMode.string = True  # type: ignore[attr-defined]


#: The most worker processes C{--workers} takes.
MAX_WORKERS = 256


def usableCPUs() -> int:
    """
    How many CPUs this process may run on: those of its CPU affinity
    (C{taskset}, a cgroup's cpuset, systemd's C{CPUAffinity=}) where the
    system tells it (C{os.sched_getaffinity}), else every CPU of the
    machine (C{os.cpu_count()}); at least 1.
    """
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is not None:
        try:
            return max(1, len(getaffinity(0)))
        except OSError:
            pass
    return os.cpu_count() or 1


def workerCount(text: str) -> int:
    """
    A C{--workers} value: a number of worker processes, or C{auto} for one
    per CPU this process may run on (L{usableCPUs}), at most
    L{MAX_WORKERS}.

    @raise ValueError: For anything else, or a number out of range.
    """
    if text.strip().lower() == "auto":
        return min(usableCPUs(), MAX_WORKERS)
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number or auto") from None
    if not 1 <= value <= MAX_WORKERS:
        raise ValueError(f"{text!r} must be from 1 to {MAX_WORKERS}")
    return value


workerCount.coerceDoc = (  # type: ignore[attr-defined]
    f"A whole number from 1 to {MAX_WORKERS}, or auto (one per CPU it may run on)."
)


#: The values of C{--resolver}.
RESOLVERS = ("auto", "dns", "system")


def resolverChoice(text: str) -> str:
    """
    A C{--resolver} value: one of L{RESOLVERS}.

    @raise ValueError: For another.
    """
    if text not in RESOLVERS:
        raise ValueError(f"{text!r} is not one of {', '.join(RESOLVERS)}")
    return text


resolverChoice.coerceDoc = "auto, dns or system."  # type: ignore[attr-defined]
#: A string in the configuration file, never a number.
resolverChoice.string = True  # type: ignore[attr-defined]
