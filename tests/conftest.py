"""
Fixtures shared by the unit and protocol tests.

Nothing here imports the global reactor: pytest-twisted installs it for the
integration tests, and the other tests never need it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import pytest
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher


@pytest.fixture
def logEvents() -> Iterator[list[LogEvent]]:
    """
    Every log event emitted while the test runs.
    """
    events: list[LogEvent] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(observer)


@pytest.fixture(autouse=True)
def _accessLogShowsDebug() -> Iterator[None]:
    """
    A log-level filter left running by a test (it tells the access log
    whether debug events are kept) does not change what later tests log.
    """
    yield
    from connectproxy._observer import AccessLogObserver

    AccessLogObserver.debugShown = True
