# -*- test-case-name: tests.test_bench -*-
"""
Run C{twist} under C{cProfile}: C{python -m bench.profiled FILE TWIST-ARGS...}
writes the profile to C{FILE} when the reactor shuts down (C{twist} ends a
run stopped by C{SIGTERM} by re-raising the signal, so that C{python -m
cProfile} never gets to write its file). L{bench.profile} starts it.
"""

from __future__ import annotations

import cProfile
import sys


def main(argv: list[str]) -> None:
    """
    Profile C{twist} with the arguments after the file name.
    """
    path, twistArgs = argv[0], argv[1:]
    profiler = cProfile.Profile()
    from twisted.internet import reactor

    def dump() -> None:
        profiler.disable()
        profiler.dump_stats(path)

    reactor.addSystemEventTrigger("after", "shutdown", dump)
    from twisted.application.twist._twist import Twist

    profiler.enable()
    Twist.main(["twist", *twistArgs])


if __name__ == "__main__":
    main(sys.argv[1:])
