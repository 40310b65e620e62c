# -*- test-case-name: tests.test_server -*-
"""
The responses the proxy writes to its clients: the CONNECT success line and
short plain-text error responses.
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus

__all__ = ["CONNECTION_ESTABLISHED", "errorResponse", "formatSeconds"]

#: The answer to a CONNECT once the upstream connection exists: no body, so
#: no Content-Length, Transfer-Encoding or Connection header (RFC 9110
#: section 9.3.6).
CONNECTION_ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"


def errorResponse(
    status: int,
    reason: str,
    *,
    close: bool = True,
    headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """
    Build a complete error response with a short plain-text body.

    @param status: The status code.
    @param reason: One short sentence for the body, for a person to read.
    @param close: Whether to announce C{Connection: close}.
    @param headers: Extra header fields, for example C{Allow}.
    @return: The bytes to write.
    """
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    body = f"{status} {phrase}: {reason}\n".encode()
    lines = [
        f"HTTP/1.1 {status} {phrase}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
    ]
    lines.extend(f"{name}: {value}" for name, value in headers)
    if close:
        lines.append("Connection: close")
    head = "\r\n".join(lines) + "\r\n\r\n"
    return head.encode("utf-8") + body


def formatSeconds(seconds: float) -> str:
    """
    Say a duration for a person, as error reasons quote a timeout.

    @param seconds: The duration, in seconds.
    @return: For example C{"30 seconds"}, C{"1 second"}, C{"0.5 seconds"}.
    """
    return f"{seconds:g} second" + ("" if seconds == 1 else "s")
