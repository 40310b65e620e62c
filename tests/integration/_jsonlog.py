# -*- test-case-name: tests.integration.test_workers -*-
"""
A log observer factory for C{twistd --logger}: JSON events (RFC 7464) on
standard output, what C{twist --log-format json --log-file -} writes, so
that the tests read a C{twistd -n} proxy's log as they read a C{twist} one.
"""

from __future__ import annotations

import sys

from twisted.logger import ILogObserver, jsonFileLogObserver


def stdoutJSON() -> ILogObserver:
    """
    Write every event to standard output as a JSON text sequence.
    """
    return jsonFileLogObserver(sys.stdout)
