# -*- test-case-name: tests.test_verifyqueue -*-
"""
A bounded, fair queue of password verifications in front of a few threads:
one client cannot fill it or hold every thread, and a check whose client
left (or whose deadline passed) is dropped before it runs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure

from ._errors import CheckerBusy

__all__ = ["CheckerBusy", "ThreadRunner", "Verification", "VerificationQueue"]

Verification = Callable[[], bool]
"""
A password verification, ready to run in a thread: C{True} for a match.
"""

ThreadRunner = Callable[[Verification], "Deferred[bool]"]
"""
Runs a L{Verification} away from the reactor thread and fires with its result.
"""


@dataclass(eq=False, slots=True)
class _Job:
    """
    One verification, waiting or running.

    @ivar client: Whose it is (its address).
    @ivar deferred: What the asker holds.
    @ivar running: Whether it was handed to a thread.
    """

    client: str
    verification: Verification = field(repr=False)
    deferred: Deferred[bool] = field(repr=False)
    running: bool = False


class VerificationQueue:
    """
    Runs verifications through a L{ThreadRunner}, at most C{maxThreads} at
    once, and holds the others in the reactor thread.

    At most C{maxQueued} verifications wait or run, and at most
    C{maxPerClient} of one client; beyond either, L{submit} raises
    L{CheckerBusy}.  Waiting verifications start client by client in turn,
    and one client runs at most C{maxThreads - 1} at once (when there are
    several threads), so a thread is always free for another client's
    check.  Cancelling a waiting verification drops it without running it;
    a running one keeps its place until it really ends, so that clients
    that leave cannot make room for more work than the threads do.

    Use it from the reactor thread only.
    """

    def __init__(
        self,
        runInThread: ThreadRunner,
        maxThreads: int,
        maxQueued: int,
        maxPerClient: int,
    ) -> None:
        """
        @param runInThread: Runs one verification in a thread.
        @param maxThreads: The most verifications running at once.
        @param maxQueued: The most verifications waiting or running.
        @param maxPerClient: The most verifications of one client waiting
            or running.
        """
        self._runInThread = runInThread
        self.maxThreads = maxThreads
        self.maxQueued = maxQueued
        self.maxPerClient = maxPerClient
        self._runningPerClient = max(1, maxThreads - 1)
        # Clients with waiting verifications, in turn order.
        self._waiting: dict[str, deque[_Job]] = {}
        self._perClient: dict[str, int] = {}
        self._running: dict[str, int] = {}
        self.queued = 0
        self.running = 0

    def submit(self, client: str, verification: Verification) -> Deferred[bool]:
        """
        Queue a verification.

        @param client: Whose it is: its address (C{""} for UNIX socket
            clients and for unknown ones).
        @return: A Deferred firing with its result; cancel it to drop it.
        @raise CheckerBusy: When the queue, or the client's share of it,
            is full.
        """
        if self.queued >= self.maxQueued:
            raise CheckerBusy()
        if self._perClient.get(client, 0) >= self.maxPerClient:
            raise CheckerBusy(
                "too many logins from this address are being checked at once; "
                "send fewer at a time"
            )
        job = _Job(client, verification, Deferred(lambda d: self._cancel(job)))
        self.queued += 1
        self._perClient[client] = self._perClient.get(client, 0) + 1
        self._waiting.setdefault(client, deque()).append(job)
        self._dispatch()
        return job.deferred

    def clientQueued(self, client: str) -> int:
        """
        @return: How many verifications of C{client} wait or run.
        """
        return self._perClient.get(client, 0)

    def stop(self) -> None:
        """
        Drop every waiting verification: each fails with L{CheckerBusy}.
        Running ones end as they will.
        """
        waiting, self._waiting = self._waiting, {}
        for jobs in waiting.values():
            for job in jobs:
                self._release(job)
                job.deferred.errback(CheckerBusy("the password checker is stopping"))

    def _cancel(self, job: _Job) -> None:
        if job.running:
            return
        jobs = self._waiting[job.client]
        jobs.remove(job)
        if not jobs:
            del self._waiting[job.client]
        self._release(job)

    def _release(self, job: _Job) -> None:
        self.queued -= 1
        count = self._perClient[job.client] - 1
        if count:
            self._perClient[job.client] = count
        else:
            del self._perClient[job.client]

    def _dispatch(self) -> None:
        while self.running < self.maxThreads:
            job = self._next()
            if job is None:
                return
            self._start(job)

    def _next(self) -> _Job | None:
        """
        Take the first waiting verification of the first client, in turn,
        that may run one more.
        """
        limit = self._runningPerClient
        client = next(
            (c for c in self._waiting if self._running.get(c, 0) < limit), None
        )
        if client is None:
            return None
        # Its turn is over: to the back of the line.
        jobs = self._waiting.pop(client)
        job = jobs.popleft()
        if jobs:
            self._waiting[client] = jobs
        return job

    def _start(self, job: _Job) -> None:
        job.running = True
        self.running += 1
        self._running[job.client] = self._running.get(job.client, 0) + 1
        try:
            d = self._runInThread(job.verification)
        except Exception:
            d = fail()
        d.addBoth(self._ended, job)

    def _ended(self, result: bool | Failure, job: _Job) -> None:
        self.running -= 1
        count = self._running[job.client] - 1
        if count:
            self._running[job.client] = count
        else:
            del self._running[job.client]
        self._release(job)
        if not job.deferred.called:
            if isinstance(result, Failure):
                job.deferred.errback(result)
            else:
                job.deferred.callback(result)
        # Otherwise the asker gave up: the result (or error) goes nowhere.
        self._dispatch()
