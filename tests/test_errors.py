# -*- test-case-name: tests.test_errors -*-
"""
Tests for L{connectproxy._errors}: one hierarchy for every refusal, still
importable where each type used to live.
"""

from __future__ import annotations

import pytest
from twisted.internet.defer import CancelledError

import connectproxy
from connectproxy import (
    _access,
    _admission,
    _auth,
    _errors,
    _parser,
    _resolver,
    _upstream,
)
from connectproxy._errors import (
    BadRequest,
    CheckerBusy,
    ForbiddenDestination,
    InvalidCredentials,
    LookupAbandoned,
    Refusal,
    RefusalError,
    Refused,
    ResolverBusy,
)


@pytest.mark.parametrize(
    ("module", "name"),
    [
        (_parser, "BadRequest"),
        (_admission, "Refused"),
        (_access, "Refusal"),
        (_upstream, "ForbiddenDestination"),
        (_resolver, "ResolverBusy"),
        (_resolver, "LookupAbandoned"),
        (_auth, "CheckerBusy"),
        (_auth, "InvalidCredentials"),
        (connectproxy, "ForbiddenDestination"),
        (connectproxy, "Refusal"),
        (connectproxy, "ResolverBusy"),
    ],
)
def test_oldImportPaths(module: object, name: str) -> None:
    """
    Each refusal type is still importable from the module it used to live
    in (and from C{connectproxy} when it was public), as the same object.
    """
    assert getattr(module, name) is getattr(_errors, name)
    assert name in vars(module)["__all__"]


@pytest.mark.parametrize(
    ("error", "status", "reason"),
    [
        (BadRequest(431, "request head too large"), 431, "request head too large"),
        (Refused(407, "proxy authentication required"), 407, None),
        (ForbiddenDestination("10.0.0.1 is private"), 403, "10.0.0.1 is private"),
        (ResolverBusy("too many lookups"), 503, "too many lookups"),
        (CheckerBusy(), 503, "too many logins are being checked"),
    ],
)
def test_refusalsCarryTheirAnswer(
    error: RefusalError, status: int, reason: str | None
) -> None:
    """
    Every L{RefusalError} says what the client is answered: a status and a
    short reason.
    """
    assert isinstance(error, RefusalError)
    assert error.status == status
    assert error.reason == (reason or "proxy authentication required")


def test_cancellationsStayCancellations() -> None:
    """
    The resolver pool's failures on cancellation are L{CancelledError}s, so
    code that expects a cancelled Deferred to fail with one still does.
    """
    assert isinstance(ResolverBusy("x"), CancelledError)
    assert isinstance(LookupAbandoned("x"), CancelledError)
    assert not isinstance(LookupAbandoned("x"), RefusalError)


def test_messagesUnchanged() -> None:
    """
    The exceptions' text (what a log line shows) is what it was.
    """
    assert str(BadRequest(400, "invalid port in target")) == (
        "400 invalid port in target"
    )
    assert str(ForbiddenDestination("why")) == "why"
    assert str(InvalidCredentials("not Basic credentials")) == ("not Basic credentials")
    assert Refused(403, "no", user="alice").args == (403, "no")


def test_refusalRecord() -> None:
    """
    A policy's L{Refusal} is a record, not an exception, and takes only
    error statuses.
    """
    assert not isinstance(Refusal(403, "no"), BaseException)
    with pytest.raises(ValueError, match="4xx or 5xx"):
        Refusal(302, "elsewhere")


def test_refusalStatusRange() -> None:
    """
    A refusal needs an error status.
    """
    assert Refusal(400, "x").status == 400 and Refusal(599, "x").status == 599
    for status in (200, 399, 600):
        with pytest.raises(ValueError, match="4xx or 5xx"):
            Refusal(status, "x")
