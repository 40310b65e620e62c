# -*- test-case-name: tests.test_refuser -*-
"""
Tests for L{connectproxy._refuser.Refuser}: an error response, a linger on
plain TCP, and a two-stage close, on a fake transport and a fake clock.
"""

from __future__ import annotations

import pytest
from twisted.internet.testing import MemoryReactorClock

from connectproxy import _refuser
from connectproxy._refuser import LINGER_BYTES, LINGER_SECONDS, Refuser
from connectproxy.testing import HalfCloseableStringTransport

ABORT = 15.0


def makeRefuser(
    plainTCP: bool, monkeypatch: pytest.MonkeyPatch
) -> tuple[Refuser, HalfCloseableStringTransport, MemoryReactorClock, list[str]]:
    """
    A refuser of a fresh transport (plain TCP, which can half-close, or
    not), with a clock and a list its close callback appends to.
    """
    monkeypatch.setattr(_refuser, "canHalfClose", lambda transport: plainTCP)
    transport = HalfCloseableStringTransport()
    clock = MemoryReactorClock()
    closes: list[str] = []
    refuser = Refuser(transport, clock, ABORT, lambda: closes.append("closing"))
    return refuser, transport, clock, closes


def test_refuseWithoutHalfCloseClosesAtOnce(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Where the transport cannot half-close, the response is followed by a
    graceful close at once, and an abort after the abort timeout.
    """
    refuser, transport, clock, closes = makeRefuser(False, monkeypatch)
    refuser.refuse(403, "no", [("X-Why", "test")])
    value = transport.value()
    assert value.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert b"\r\nX-Why: test\r\n" in value
    assert b"\r\nConnection: close\r\n" in value
    assert (refuser.refused, refuser.closing, closes) == (True, True, ["closing"])
    assert transport.disconnecting and not transport.writeClosed
    clock.advance(ABORT)
    assert transport.aborted


def test_lingerOnPlainTCP(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    On plain TCP the response is followed by a FIN; what the client sends
    is discarded until the linger time, then the connection closes.
    """
    refuser, transport, clock, closes = makeRefuser(True, monkeypatch)
    refuser.refuse(400, "bad")
    assert transport.writeClosed and not transport.disconnecting
    refuser.discard(b"x" * 100)
    clock.advance(LINGER_SECONDS)
    assert transport.disconnecting
    assert closes == ["closing"]


def test_lingerEndsOverByteLimit(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A client that sends more than the linger byte limit is closed; what it
    sends after that is ignored.
    """
    refuser, transport, _, closes = makeRefuser(True, monkeypatch)
    refuser.refuse(400, "bad")
    refuser.discard(b"x" * LINGER_BYTES)
    assert not transport.disconnecting
    refuser.discard(b"x")
    assert transport.disconnecting
    refuser.discard(b"x" * LINGER_BYTES)
    assert closes == ["closing"]


def test_clientFinishedClosesAtOnce(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A client that has sent its FIN gets no linger, even on plain TCP.
    """
    refuser, transport, _, _ = makeRefuser(True, monkeypatch)
    refuser.refuse(400, "bad", clientFinished=True)
    assert transport.disconnecting and not transport.writeClosed


def test_closeTwice(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Closing again neither calls back again nor delays the abort.
    """
    refuser, transport, clock, closes = makeRefuser(False, monkeypatch)
    refuser.close()
    clock.advance(ABORT - 1)
    refuser.close()
    clock.advance(1)
    assert transport.aborted
    assert closes == ["closing"]
    assert not refuser.refused


def test_stopCancelsTimers(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Once the connection is gone no timer is left, lingering or closing.
    """
    refuser, transport, clock, _ = makeRefuser(True, monkeypatch)
    refuser.refuse(400, "bad")
    refuser.stop()
    assert clock.getDelayedCalls() == []
    refuser, transport, clock, _ = makeRefuser(True, monkeypatch)
    refuser.close()
    refuser.stop()
    assert clock.getDelayedCalls() == []
    assert not transport.aborted
