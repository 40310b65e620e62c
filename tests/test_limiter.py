# -*- test-case-name: tests.test_limiter -*-
"""
Tests for L{connectproxy._limiter}: failed logins counted per client
address and user name, whole addresses blocked for password spraying, and
the memory bounds, on a L{Clock}.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from connectproxy._limiter import FailureLimiter, makeRoom

NAT = "192.0.2.1"


def limiter(clock: Clock | None = None, **kwargs: float) -> FailureLimiter:
    """
    A limiter on C{clock} (a new one by default) with these settings.
    """
    return FailureLimiter(clock or Clock(), **kwargs)  # type: ignore[arg-type]


def test_userBlockedAfterMaxFailures() -> None:
    """
    The C{maxFailures}th failure of one user name from one address within
    the window blocks that user name from that address for C{blockFor}
    seconds; the failure before does not.
    """
    clock = Clock()
    limits = limiter(clock, maxFailures=3, window=60, blockFor=30)
    assert limits.recordFailure(NAT, "alice") is None
    assert limits.recordFailure(NAT, "alice") is None
    assert limits.blockedFor(NAT, "alice") is None
    assert limits.recordFailure(NAT, "alice") == "user"
    assert limits.blockedFor(NAT, "alice") == 30
    clock.advance(10)
    assert limits.blockedFor(NAT, "alice") == 20


def test_otherUsersBehindTheAddressNotBlocked() -> None:
    """
    A user name blocked from an address blocks neither other user names
    from it (users behind one NAT) nor the same user name from elsewhere.
    """
    limits = limiter(maxFailures=10)
    for _ in range(10):
        limits.recordFailure("127.0.0.1", "alice")
    assert limits.blockedFor("127.0.0.1", "alice") is not None
    assert limits.blockedFor("127.0.0.1", "bob") is None
    assert limits.clientBlockedFor("127.0.0.1") is None
    assert limits.blockedFor("127.0.0.2", "alice") is None


def test_userUnblocksAndStartsOver() -> None:
    """
    After C{blockFor} seconds the user name is free with a fresh count, and
    failures while blocked do not extend the block.
    """
    clock = Clock()
    limits = limiter(clock, maxFailures=2, window=60, blockFor=30)
    limits.recordFailure(NAT, "alice")
    limits.recordFailure(NAT, "alice")
    clock.advance(29)
    assert limits.recordFailure(NAT, "alice") is None
    clock.advance(1)
    assert limits.blockedFor(NAT, "alice") is None
    limits.recordFailure(NAT, "alice")
    assert limits.blockedFor(NAT, "alice") is None


def test_slidingWindow() -> None:
    """
    Only failures within the last C{window} seconds count.
    """
    clock = Clock()
    limits = limiter(clock, maxFailures=3, window=60, blockFor=30)
    limits.recordFailure(NAT, "alice")
    clock.advance(30)
    limits.recordFailure(NAT, "alice")
    clock.advance(30)
    limits.recordFailure(NAT, "alice")
    assert limits.blockedFor(NAT, "alice") is None
    clock.advance(1)
    limits.recordFailure(NAT, "alice")
    assert limits.blockedFor(NAT, "alice") == 30


def test_sprayingBlocksTheAddress() -> None:
    """
    Failures with C{maxUsers} different user names from one address block
    the whole address, for every user name, and no other address.
    """
    clock = Clock()
    limits = limiter(clock, maxFailures=10, maxUsers=3, blockFor=45)
    assert limits.recordFailure(NAT, "u1") is None
    assert limits.recordFailure(NAT, "u2") is None
    assert limits.clientBlockedFor(NAT) is None
    assert limits.recordFailure(NAT, "u3") == "client"
    assert limits.clientBlockedFor(NAT) == 45
    assert limits.blockedFor(NAT, "someone-else") == 45
    assert limits.blockedFor("192.0.2.2", "u1") is None
    clock.advance(45)
    assert limits.clientBlockedFor(NAT) is None
    assert limits.recordFailure(NAT, "u4") is None


def test_sprayingCountsDifferentNamesOnly() -> None:
    """
    Repeated failures of one user name count as one name towards the
    spraying limit.
    """
    limits = limiter(maxFailures=100, maxUsers=2)
    for _ in range(20):
        limits.recordFailure(NAT, "alice")
    assert limits.clientBlockedFor(NAT) is None
    assert limits.recordFailure(NAT, "bob") == "client"


def test_sprayingWindow() -> None:
    """
    User names whose last failure left the window no longer count.
    """
    clock = Clock()
    limits = limiter(clock, maxUsers=3, window=60)
    limits.recordFailure(NAT, "u1")
    clock.advance(30)
    limits.recordFailure(NAT, "u2")
    clock.advance(31)
    limits.recordFailure(NAT, "u3")
    assert limits.clientBlockedFor(NAT) is None
    limits.recordFailure(NAT, "u4")
    assert limits.clientBlockedFor(NAT) is not None


@pytest.mark.parametrize(
    "maxFailures, maxUsers, blocked",
    [(0, 0, None), (0, 3, "client"), (3, 0, "user")],
)
def test_eachLimitTurnsOff(
    maxFailures: int, maxUsers: int, blocked: str | None
) -> None:
    """
    Each limit is off at 0; with both off nothing is remembered.
    """
    limits = limiter(maxFailures=maxFailures, maxUsers=maxUsers)
    outcomes = [limits.recordFailure(NAT, "alice") for _ in range(5)]
    outcomes += [limits.recordFailure(NAT, f"u{n}") for n in range(5)]
    assert [o for o in outcomes if o is not None][:1] == ([blocked] if blocked else [])
    if blocked is None:
        assert limits._clients == {}


def test_recentFailures() -> None:
    """
    C{_recentFailures} counts the failures of a user name that count now.
    """
    clock = Clock()
    limits = limiter(clock, maxFailures=5, window=60)
    assert limits._recentFailures(NAT, "alice") == 0
    limits.recordFailure(NAT, "alice")
    clock.advance(30)
    limits.recordFailure(NAT, "alice")
    assert limits._recentFailures(NAT, "alice") == 2
    clock.advance(31)
    assert limits._recentFailures(NAT, "alice") == 1


def test_parallelGuessesOfOneUserWait() -> None:
    """
    Checks of a user name under way count towards its limit: no more run at
    once than failures it has left, and they end however they end.
    """
    limits = limiter(maxFailures=3, maxUsers=0)
    limits.recordFailure(NAT, "alice")
    limits.attemptStarted(NAT, "alice")
    assert limits.blockedFor(NAT, "alice") is None
    limits.attemptStarted(NAT, "alice")
    assert limits.blockedFor(NAT, "alice") == 1
    assert limits.blockedFor(NAT, "bob") is None
    limits.attemptEnded(NAT, "alice")
    assert limits.blockedFor(NAT, "alice") is None
    limits.attemptEnded(NAT, "alice")
    limits.attemptEnded(NAT, "alice")
    assert limits._pending == {}


def test_parallelSprayingWaits() -> None:
    """
    Checks under way for new user names count towards the spraying limit;
    user names already failing or under way are not held back by it.
    """
    limits = limiter(maxFailures=10, maxUsers=3)
    limits.recordFailure(NAT, "u1")
    limits.attemptStarted(NAT, "u2")
    assert limits.blockedFor(NAT, "u3") is None
    limits.attemptStarted(NAT, "u3")
    assert limits.blockedFor(NAT, "u4") == 1
    assert limits.blockedFor(NAT, "u1") is None
    assert limits.blockedFor(NAT, "u2") is None
    assert limits.blockedFor("192.0.2.2", "u4") is None
    limits.attemptEnded(NAT, "u3")
    assert limits.blockedFor(NAT, "u4") is None


def test_userNamesKeptAsDigests() -> None:
    """
    User names are remembered as 16-byte keyed digests, whatever their
    length: the tables never hold what clients sent.
    """
    limits = limiter(maxFailures=10)
    name = "x" * 8000
    limits.recordFailure(NAT, name)
    limits.attemptStarted(NAT, name)
    [digest] = limits._clients[NAT]
    assert len(digest) == 16
    assert list(limits._pending[NAT]) == [digest]
    assert limiter(maxFailures=10)._digest(name) != digest


def test_recordsBounded() -> None:
    """
    At most C{maxKeys} (address, user name) records are kept, across
    addresses; the addresses that failed least recently lose theirs first.
    """
    limits = limiter(maxFailures=5, maxUsers=0, maxKeys=3)
    for n in range(10):
        limits.recordFailure(f"10.0.0.{n}", "alice")
        assert limits._records <= 3
    assert list(limits._clients) == ["10.0.0.7", "10.0.0.8", "10.0.0.9"]
    for n in range(10):
        limits.recordFailure("10.0.1.1", f"u{n}")
        assert limits._records <= 3
    assert list(limits._clients) == ["10.0.1.1"]
    assert len(limits._clients["10.0.1.1"]) == 3
    assert limits._records == 3


def test_blocksBounded() -> None:
    """
    At most C{maxKeys} blocks are kept; the oldest go first.
    """
    limits = limiter(maxFailures=1, maxUsers=0, maxKeys=3)
    for n in range(10):
        limits.recordFailure(NAT, f"u{n}")
        assert len(limits._blockedUntil) <= 3
    assert limits.blockedFor(NAT, "u9") is not None
    assert limits.blockedFor(NAT, "u0") is None


def test_expiredAddressesPurged() -> None:
    """
    Addresses whose failures all left the window are forgotten when a new
    record needs room.
    """
    clock = Clock()
    limits = limiter(clock, maxFailures=5, window=60)
    limits.recordFailure("10.0.0.1", "a")
    limits.recordFailure("10.0.0.2", "b")
    clock.advance(60)
    limits.recordFailure("10.0.0.3", "c")
    assert list(limits._clients) == ["10.0.0.3"]
    assert limits._records == 1


def test_reconfiguredKeepsCounts() -> None:
    """
    A limiter carried over to a new configuration takes its limits and keeps
    its counts, blocks and checks under way: a block stays, a count goes on
    towards the new limit.
    """
    clock = Clock()
    old = limiter(clock, maxFailures=2, window=60, blockFor=30, maxUsers=5)
    old.recordFailure(NAT, "alice")
    old.recordFailure(NAT, "alice")
    old.recordFailure(NAT, "bob")
    old.attemptStarted(NAT, "carol")
    new = limiter(clock, maxFailures=3, window=90, blockFor=10, maxUsers=4)
    new.maxKeys = 7
    carried = old.reconfigured(new)
    assert carried is old
    assert (carried.maxFailures, carried.window, carried.blockFor) == (3, 90, 10)
    assert (carried.maxUsers, carried.maxKeys) == (4, 7)
    assert carried.blockedFor(NAT, "alice") == 30
    assert carried.recordFailure(NAT, "bob") is None
    assert carried.recordFailure(NAT, "bob") == "user"
    assert carried.blockedFor(NAT, "bob") == 10
    carried.attemptEnded(NAT, "carol")
    assert carried._pending == {}


def test_makeRoom() -> None:
    """
    L{makeRoom} drops expired items first, then the oldest while full.
    """
    table = {"a": 1, "b": 5, "c": 6}
    makeRoom(table, lambda value: value < 2, 10)
    assert table == {"b": 5, "c": 6}
    makeRoom(table, lambda value: False, 2)
    assert table == {"c": 6}
