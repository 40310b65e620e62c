# -*- test-case-name: tests.test_workers -*-
"""
The process signals of the supervisor of C{--workers}
(L{Supervisor <connectproxy._workers.Supervisor>}): its handlers, which run
their action on the reactor and then whatever handled the signal before,
put back as they were when it stops; and the exit status it ends with once
it gives up on a worker.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["SignalHandlers", "exitWith", "reactorStopping"]


def reactorStopping(reactor: Any) -> bool:
    """
    Whether C{reactor} is running its shutdown (C{reactor.stop()} was
    called and the process is about to exit): the handlers a service put
    in place for SIGTERM and SIGINT then stay, since Twisted's own, put
    back, would answer one more signal by stopping the reactor again and
    log a critical C{ReactorNotRunning}.  A reactor without Twisted's
    C{_stopped} flag is never said to be stopping.

    @param reactor: The reactor.
    """
    return bool(getattr(reactor, "running", False)) and bool(
        getattr(reactor, "_stopped", False)
    )


class SignalHandlers:
    """
    The signal handlers the supervisor installed, with those they replaced,
    to put back.
    """

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}

    def forward(self, reactor: Any, number: int, action: Callable[[], None]) -> None:
        """
        Handle signal C{number} by running C{action} on C{reactor}, then
        whatever handled it before (C{twistd} rotates its log on SIGUSR1).
        """
        self._previous[number] = signal.signal(
            number, _handler(reactor, action, self._previous, number)
        )

    def replace(self, number: int, handler: Callable[[int, object], None]) -> None:
        """
        Handle signal C{number} with C{handler} alone, until L{restore}.
        """
        self._previous[number] = signal.signal(number, handler)

    def restore(self) -> None:
        """
        Put back the handlers that were replaced.
        """
        previous, self._previous = self._previous, {}
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)


def _handler(
    reactor: Any, action: Callable[[], None], previous: Mapping[int, Any], number: int
) -> Callable[[int, object], None]:
    """
    A signal handler that runs C{action} on the reactor, then whatever
    handled the signal before (C{twistd} rotates its log on SIGUSR1).
    """

    def handle(signum: int, frame: object) -> None:
        reactor.callFromThread(action)
        before = previous.get(number)
        if callable(before):
            before(signum, frame)

    return handle


def exitWith(status: int) -> None:
    """
    End the process with C{status}, once C{twistd} or C{twist} is done:
    they exit with 0 when the reactor stops.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)
