# -*- test-case-name: tests.test_verifyqueue -*-
"""
Tests for L{connectproxy._verifyqueue}: the bounded queue of password
checks in front of the htpasswd checker's threads, shared fairly between
clients, that drops checks whose client left or whose checker stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.cred.credentials import UsernamePassword
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import LogEvent
from twisted.python.failure import Failure

from connectproxy._credentials import (
    ProxyCredentials,
)
from connectproxy._htpasswd import CheckerBusy, HtpasswdChecker
from tests.test_htpasswd import eventsNamed, resultOf, sha1Hash


class LaterRunner:
    """
    Starts verifications and leaves them running until the test finishes
    them with L{finish}.

    @ivar started: The verifications started, with their Deferreds, in order.
    """

    def __init__(self) -> None:
        self.started: list[tuple[Callable[[], bool], Deferred[bool]]] = []

    def __call__(self, verification: Callable[[], bool]) -> Deferred[bool]:
        self.started.append((verification, Deferred()))
        return self.started[-1][1]

    def finish(self, index: int = 0) -> None:
        """
        Run the C{index}th verification started and deliver its result.
        """
        verification, d = self.started[index]
        d.callback(verification())


def queuedChecker(
    tmp_path: Path,
    runner: Callable[[Callable[[], bool]], Deferred[bool]],
    **kwargs: Any,
) -> HtpasswdChecker:
    """
    A checker of C{alice} (password C{pw}) without a cache, whose
    verifications go to C{runner}.
    """
    path = tmp_path / "htpasswd"
    path.write_text(f"alice:{sha1Hash('pw')}\n")
    return HtpasswdChecker(
        str(path), clock=Clock(), cacheTTL=0, runInThread=runner, **kwargs
    )


def ask(checker: HtpasswdChecker, client: str, password: str = "pw") -> Deferred[bytes]:
    """
    Ask C{checker} about C{alice} on behalf of the client at C{client}.
    """
    credentials = ProxyCredentials(b"alice", password.encode(), client)
    return checker.requestAvatarId(credentials)


def busyReason(d: Deferred[Any]) -> str:
    """
    The reason of the L{CheckerBusy} C{d} failed with.
    """
    failures: list[Failure] = []
    d.addErrback(failures.append)
    [failure] = failures
    assert isinstance(failure.value, CheckerBusy)
    return failure.value.reason


def test_queueBounded(tmp_path: Path, logEvents: list[LogEvent]) -> None:
    """
    Beyond C{maxQueued} verifications waiting or running, a check fails at
    once with L{CheckerBusy}, logged, without queueing more work.
    """
    runner = LaterRunner()
    checker = queuedChecker(tmp_path, runner, maxQueued=3, maxQueuedPerClient=3)
    pending = [ask(checker, f"10.0.0.{n}") for n in range(3)]
    assert busyReason(ask(checker, "10.0.0.9")) == "too many logins are being checked"
    assert len(runner.started) == 2
    [warning] = eventsNamed(logEvents, "auth_overloaded")
    assert (warning["count"], warning["client"]) == (3, "10.0.0.9")
    runner.finish(0)
    assert resultOf(pending[0]) == b"alice"
    assert len(runner.started) == 3
    ask(checker, "10.0.0.9")
    assert len(runner.started) == 3


def test_clientShareBounded(tmp_path: Path, logEvents: list[LogEvent]) -> None:
    """
    One client cannot fill the queue: beyond C{maxQueuedPerClient} of its
    checks waiting or running, its next one gets L{CheckerBusy} with a
    reason that says what to change, while other clients are still served.
    """
    runner = LaterRunner()
    checker = queuedChecker(tmp_path, runner, maxQueued=100, maxQueuedPerClient=2)
    ask(checker, "10.0.0.1")
    ask(checker, "10.0.0.1")
    reason = busyReason(ask(checker, "10.0.0.1"))
    assert reason == (
        "too many logins from this address are being checked at once; "
        "send fewer at a time"
    )
    [warning] = eventsNamed(logEvents, "auth_overloaded")
    assert (warning["clientCount"], warning["client"]) == (2, "10.0.0.1")
    other = ask(checker, "10.0.0.2")
    assert runner.started[-1][0]() is True
    runner.started[-1][1].callback(True)
    assert resultOf(other) == b"alice"


def test_defaultClientShare(tmp_path: Path) -> None:
    """
    By default one client may have a sixteenth of the queue.
    """
    runner = LaterRunner()
    checker = queuedChecker(tmp_path, runner, maxQueued=64)
    for _ in range(4):
        ask(checker, "10.0.0.1")
    assert busyReason(ask(checker, "10.0.0.1")).startswith("too many logins from")


def test_busyClientLeavesAThreadFree(tmp_path: Path) -> None:
    """
    A client that fills its share with slow verifications runs at most all
    but one of the threads at once: another client's check starts at once,
    ahead of the waiting ones.
    """
    runner = LaterRunner()
    checker = queuedChecker(
        tmp_path, runner, maxThreads=3, maxQueued=100, maxQueuedPerClient=5
    )
    for _ in range(5):
        ask(checker, "10.0.0.1")
    assert len(runner.started) == 2
    other = ask(checker, "10.0.0.2")
    assert len(runner.started) == 3
    runner.finish(2)
    assert resultOf(other) == b"alice"
    assert len(runner.started) == 3
    runner.finish(0)
    assert len(runner.started) == 4


def test_clientsTakeTurns(tmp_path: Path) -> None:
    """
    Waiting checks start client by client in turn, not in arrival order.
    """
    runner = LaterRunner()
    checker = queuedChecker(
        tmp_path, runner, maxThreads=1, maxQueued=100, maxQueuedPerClient=10
    )
    order: list[str] = []

    def done(avatarId: bytes, client: str) -> None:
        order.append(client)

    for client in ["a", "a", "a", "b", "c"]:
        ask(checker, client).addCallback(done, client)
    for index in range(5):
        runner.finish(index)
    assert order == ["a", "a", "b", "c", "a"]


@pytest.mark.parametrize("running", [False, True])
def test_cancelledCheck(tmp_path: Path, running: bool) -> None:
    """
    A check whose asker gave up (the client left, its deadline passed) is
    dropped without running if it was waiting, and frees its place at
    once; a running one keeps its place until it really ends.
    """
    runner = LaterRunner()
    checker = queuedChecker(
        tmp_path, runner, maxThreads=1, maxQueued=2, maxQueuedPerClient=2
    )
    first = ask(checker, "10.0.0.1")
    second = ask(checker, "10.0.0.2")
    (first if running else second).cancel()
    for d in [first, second]:
        d.addErrback(lambda f: f.trap(CancelledError))
    third = ask(checker, "10.0.0.3")
    if running:
        assert busyReason(third) == "too many logins are being checked"
        runner.finish(0)
        assert len(runner.started) == 2
        runner.finish(1)
        assert resultOf(second) == b"alice"
    else:
        runner.finish(0)
        assert resultOf(first) == b"alice"
        assert len(runner.started) == 2
        runner.finish(1)
        assert resultOf(third) == b"alice"
        assert len(runner.started) == 2


def test_cancelledCheckAmongOthers(tmp_path: Path) -> None:
    """
    Dropping one waiting check of a client leaves its other waiting checks
    in place.
    """
    runner = LaterRunner()
    checker = queuedChecker(tmp_path, runner, maxThreads=1, maxQueuedPerClient=3)
    ask(checker, "10.0.0.1")
    dropped = ask(checker, "10.0.0.1")
    kept = ask(checker, "10.0.0.1")
    dropped.cancel()
    dropped.addErrback(lambda f: f.trap(CancelledError))
    runner.finish(0)
    runner.finish(1)
    assert resultOf(kept) == b"alice"
    assert len(runner.started) == 2


def test_runnerErrorIsUnauthorized(tmp_path: Path, logEvents: list[LogEvent]) -> None:
    """
    A runner that raises instead of failing its Deferred fails that check,
    logged, and the queue goes on.
    """
    calls: list[int] = []

    def broken(verification: Callable[[], bool]) -> Deferred[bool]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("no thread")
        return succeed(verification())

    checker = queuedChecker(tmp_path, broken)
    assert resultOf(ask(checker, "10.0.0.1")) is None
    [error] = eventsNamed(logEvents, "auth_verify_error")
    assert error["log_failure"].check(RuntimeError)
    assert resultOf(ask(checker, "10.0.0.1")) == b"alice"


def test_stopDropsWaitingChecks(tmp_path: Path) -> None:
    """
    Checks still waiting when the checker stops fail with L{CheckerBusy}
    (the client may retry elsewhere; it is not a failed login).
    """
    runner = LaterRunner()
    checker = queuedChecker(tmp_path, runner, maxThreads=1)
    ask(checker, "10.0.0.1")
    waiting = ask(checker, "10.0.0.2")
    checker.stop()
    assert busyReason(waiting) == "the password checker is stopping"
    assert len(runner.started) == 1


def test_stopSkipsQueuedWork(tmp_path: Path) -> None:
    """
    Verifications still queued when the checker stops are skipped: they
    fail without checking the password.
    """
    jobs: list[Callable[[], bool]] = []

    def later(verification: Callable[[], bool]) -> Deferred[bool]:
        jobs.append(verification)
        return Deferred()

    path = tmp_path / "htpasswd"
    path.write_text(f"alice:{sha1Hash('pw')}\n")
    checker = HtpasswdChecker(str(path), clock=Clock(), runInThread=later)
    checker.requestAvatarId(UsernamePassword(b"alice", b"pw"))
    checker.stop()
    assert jobs[0]() is False
