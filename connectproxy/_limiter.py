# -*- test-case-name: tests.test_limiter -*-
"""
Failed-login limiting: refuse a user name from a client address that keeps
failing to log in as it, and refuse a whole address that fails with many
different user names (password spraying), in bounded memory.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar

from twisted.internet.interfaces import IReactorTime

__all__ = ["FailureLimiter", "makeRoom"]

_V = TypeVar("_V")

_DIGEST_SIZE: Final = 16

Blocked = Literal["user", "client"]
"""
What a failed login blocked: the user name from that address, or the
whole address.
"""


def makeRoom(table: dict[Any, _V], expired: Callable[[_V], bool], limit: int) -> None:
    """
    Drop the oldest items of C{table} while they are expired or there is no
    room for one more.

    @param table: A table whose insertion order is its expiry order.
    @param limit: The most items C{table} may hold after one is added.
    """
    while table:
        oldest = next(iter(table))
        if len(table) < limit and not expired(table[oldest]):
            return
        del table[oldest]


@dataclass(slots=True)
class _Failures:
    """
    The failed logins of one user name from one address.

    @ivar last: When the last one happened (seconds).
    @ivar times: When those that count towards a block happened, oldest
        first (cleared when they cause one).
    """

    last: float
    times: list[float] = field(default_factory=list)


class FailureLimiter:
    """
    Count failed logins per client address and user name.

    After C{maxFailures} failures of one user name from one address within
    C{window} seconds, that user name is refused from that address for
    C{blockFor} seconds; other users behind the same address (a NAT, a CI
    runner, a load balancer) still log in.  After failures with
    C{maxUsers} different user names from one address within C{window}
    seconds (password spraying), the whole address is refused for
    C{blockFor} seconds.

    Checks under way count too (L{attemptStarted}): guesses sent in
    parallel cannot outrun either limit.

    Memory is bounded: user names are kept as 16-byte keyed digests, at
    most C{maxKeys} (address, user name) failure records and C{maxKeys}
    blocks are remembered, the oldest going first.

    @ivar maxFailures: Failures per address and user name before a block;
        0 turns this limit off.
    @ivar window: Seconds over which failures count.
    @ivar blockFor: Seconds a block lasts.
    @ivar maxUsers: Different user names failing from one address before
        the whole address is blocked; 0 turns this limit off.
    @ivar maxKeys: The most failure records, and the most blocks, kept.
    """

    def __init__(
        self,
        clock: IReactorTime,
        maxFailures: int = 10,
        window: float = 60.0,
        blockFor: float = 60.0,
        maxKeys: int = 100_000,
        maxUsers: int = 20,
    ) -> None:
        self._clock = clock
        self.maxFailures = maxFailures
        self.window = window
        self.blockFor = blockFor
        self.maxKeys = maxKeys
        self.maxUsers = maxUsers
        self._secret = os.urandom(32)
        # Ordered by last failure (outer and inner), which is expiry order.
        self._clients: dict[str, dict[bytes, _Failures]] = {}
        self._records = 0
        # (address, user digest) or (address, None) for the whole address;
        # ordered by start, which is expiry order.
        self._blockedUntil: dict[tuple[str, bytes | None], float] = {}
        # Checks under way per address and user digest.
        self._pending: dict[str, dict[bytes, int]] = {}

    def reconfigured(self, new: FailureLimiter) -> FailureLimiter:
        """
        Carry this limiter over to a new configuration (a reload): take the
        limits of C{new} (C{maxFailures}, C{window}, C{blockFor},
        C{maxUsers}, C{maxKeys}) and keep what this one has counted and
        blocked, and the checks under way, so that a reload lifts no block.

        @param new: The limiter the new configuration would use.
        @return: This limiter, to use in place of C{new}.
        """
        self.maxFailures = new.maxFailures
        self.window = new.window
        self.blockFor = new.blockFor
        self.maxUsers = new.maxUsers
        self.maxKeys = new.maxKeys
        return self

    def _digest(self, user: str) -> bytes:
        return hashlib.blake2b(
            user.encode("utf-8", "surrogatepass"),
            digest_size=_DIGEST_SIZE,
            key=self._secret,
        ).digest()

    def clientBlockedFor(self, client: str) -> float | None:
        """
        @param client: The client's address.
        @return: The seconds until the whole address is unblocked, or
            C{None} if it is not blocked.
        """
        return self._blockRemaining((client, None))

    def blockedFor(self, client: str, user: str = "") -> float | None:
        """
        Whether C{user} may try to log in from C{client} now.

        @param client: The client's address.
        @param user: The user name tried; C{""} for credentials without one
            (malformed ones).
        @return: The seconds until it may, or C{None} if it may now (1 when
            checks under way must end first).
        """
        remaining = self._blockRemaining((client, None))
        if remaining is None:
            digest = self._digest(user)
            remaining = self._blockRemaining((client, digest))
            if remaining is None and self._mustWait(client, digest):
                remaining = 1.0
        return remaining

    def _mustWait(self, client: str, digest: bytes) -> bool:
        """
        Whether as many checks are under way as failures are still allowed,
        for this user name or (for a new user name) for this address.
        """
        pending = self._pending.get(client)
        if not pending:
            return False
        horizon = self._clock.seconds() - self.window
        recent = {
            d: record
            for d, record in self._clients.get(client, {}).items()
            if record.last > horizon
        }
        mine = pending.get(digest, 0)
        if mine and self.maxFailures > 0:
            record = recent.get(digest)
            failures = 0 if record is None else sum(t > horizon for t in record.times)
            if mine + failures >= self.maxFailures:
                return True
        if self.maxUsers <= 0 or mine or digest in recent:
            return False
        newUsers = sum(1 for d in pending if d not in recent)
        return len(recent) + newUsers >= self.maxUsers

    def _blockRemaining(self, key: tuple[str, bytes | None]) -> float | None:
        until = self._blockedUntil.get(key)
        if until is None:
            return None
        remaining = until - self._clock.seconds()
        if remaining > 0:
            return remaining
        del self._blockedUntil[key]
        return None

    def _recentFailures(self, client: str, user: str = "") -> int:
        """
        @return: How many failures of C{user} from C{client} count now.
        """
        record = self._clients.get(client, {}).get(self._digest(user))
        if record is None:
            return 0
        horizon = self._clock.seconds() - self.window
        return sum(1 for when in record.times if when > horizon)

    def attemptStarted(self, client: str, user: str = "") -> None:
        """
        A check of C{user} from C{client} is under way; call L{attemptEnded}
        when it ends, however it ends.
        """
        pending = self._pending.setdefault(client, {})
        digest = self._digest(user)
        pending[digest] = pending.get(digest, 0) + 1

    def attemptEnded(self, client: str, user: str = "") -> None:
        """
        A check started with L{attemptStarted} ended.
        """
        pending = self._pending.get(client)
        if pending is None:
            return
        digest = self._digest(user)
        count = pending.get(digest, 0) - 1
        if count > 0:
            pending[digest] = count
        else:
            pending.pop(digest, None)
            if not pending:
                del self._pending[client]

    def recordFailure(self, client: str, user: str = "") -> Blocked | None:
        """
        Count a failed login of C{user} from C{client}, and block the user
        name from that address, or the whole address, if that was one too
        many.

        @return: What this failure blocked, if anything.
        """
        if self.maxFailures <= 0 and self.maxUsers <= 0:
            return None
        digest = self._digest(user)
        if (
            self._blockRemaining((client, None)) is not None
            or self._blockRemaining((client, digest)) is not None
        ):
            # Failures of checks that were under way do not extend a block.
            return None
        now = self._clock.seconds()
        horizon = now - self.window
        users = self._clients.pop(client, {})
        self._forget(users, lambda record: record.last <= horizon)
        record = users.pop(digest, None)
        if record is None:
            self._makeRoomForRecord(users, horizon)
            record = _Failures(now)
            self._records += 1
        record.last = now
        if self.maxFailures > 0:
            recent = [t for t in record.times if t > horizon]
            del recent[: max(0, len(recent) + 1 - self.maxFailures)]
            record.times = [*recent, now]
        users[digest] = record
        self._clients[client] = users
        if 0 < self.maxUsers <= len(users):
            self._forget(users, lambda record: True)
            del self._clients[client]
            self._block((client, None), now)
            return "client"
        if 0 < self.maxFailures <= len(record.times):
            record.times.clear()
            self._block((client, digest), now)
            return "user"
        return None

    def _forget(
        self, users: dict[bytes, _Failures], expired: Callable[[_Failures], bool]
    ) -> None:
        """
        Drop the oldest records of C{users} while they are C{expired}.
        """
        while users:
            oldest = next(iter(users))
            if not expired(users[oldest]):
                return
            del users[oldest]
            self._records -= 1

    def _makeRoomForRecord(self, own: dict[bytes, _Failures], horizon: float) -> None:
        """
        Make room for one more failure record: drop other addresses whose
        failures all left the window, then, while there is no room, the
        oldest records of the address that failed least recently, and
        finally the oldest of C{own} (the records of the address now
        failing, out of the table meanwhile).
        """
        while self._clients:
            oldest = next(iter(self._clients))
            users = self._clients[oldest]
            newest = next(reversed(users.values()))
            if newest.last > horizon and self._records < self.maxKeys:
                break
            if newest.last <= horizon:
                self._forget(users, lambda record: True)
            else:
                self._dropOldest(users)
            if not users:
                del self._clients[oldest]
        while own and self._records >= self.maxKeys:
            self._dropOldest(own)

    def _dropOldest(self, users: dict[bytes, _Failures]) -> None:
        del users[next(iter(users))]
        self._records -= 1

    def _block(self, key: tuple[str, bytes | None], now: float) -> None:
        makeRoom(self._blockedUntil, lambda until: until <= now, self.maxKeys)
        self._blockedUntil[key] = now + self.blockFor
