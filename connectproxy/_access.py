# -*- test-case-name: tests.test_admission -*-
"""
The records that access policies receive and return.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._errors import Refusal
from ._parser import RequestHead

__all__ = ["AccessRequest", "Refusal"]


@dataclass(frozen=True, slots=True)
class AccessRequest:
    """
    Who asks to tunnel where.

    @ivar clientHost: The client's IP address as text (C{""} for a UNIX
        socket client).
    @ivar clientPort: The client's port (0 for a UNIX socket client).
    @ivar user: The authenticated user name, or C{None}.
    @ivar host: The target host: a lower-cased name without trailing dot, or
        an IP address.
    @ivar port: The target port.
    @ivar request: The whole parsed request head (its header fields, for
        example).
    """

    clientHost: str
    clientPort: int
    user: str | None
    host: str
    port: int
    request: RequestHead
