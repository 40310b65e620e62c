# -*- test-case-name: tests.test_hours -*-
"""
An example third-party access policy for connectproxy: tunnels only during
a daily time window, in the proxy's local time.

    twistd connectproxy --policy hours:08:00-18:00

The window includes its start and excludes its end; one whose end comes
before its start crosses midnight (C{22:00-06:00}).  Requests outside it
get 403.  The plugin module C{connectproxy/plugins/example_hours.py} only
registers L{HoursPolicyFactory}; everything else lives here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, time

from connectproxy import AccessRequest, Refusal
from connectproxy.interfaces import IAccessPolicy, IAccessPolicyFactory
from twisted.plugin import IPlugin
from zope.interface import implementer

__all__ = ["HoursPolicy", "HoursPolicyFactory", "parseWindow"]


def _parseTime(text: str) -> time:
    """
    @param text: A time of day as C{HH:MM}, 24-hour clock.
    @raise ValueError: When it is not one.
    """
    try:
        return datetime.strptime(text.strip(), "%H:%M").time()
    except ValueError:
        raise ValueError(f"{text!r} is not a time of day like 08:00") from None


def parseWindow(text: str) -> tuple[time, time]:
    """
    Parse a window such as C{08:00-18:00}.

    @return: Its start and end.
    @raise ValueError: With a message for the operator, when C{text} is not
        two times separated by C{-}, or both are the same.
    """
    start, dash, end = text.partition("-")
    if not dash:
        raise ValueError(f"{text!r} is not a time window like 08:00-18:00")
    window = _parseTime(start), _parseTime(end)
    if window[0] == window[1]:
        raise ValueError(f"{text!r} is an empty time window")
    return window


@implementer(IAccessPolicy)
class HoursPolicy:
    """
    Refuses (403) every request made outside a daily time window.

    @ivar start: When the window opens.
    @ivar end: When it closes.
    """

    def __init__(
        self, start: time, end: time, now: Callable[[], datetime] = datetime.now
    ) -> None:
        """
        @param now: Tells the local date and time; tests pass a fake.
        """
        self.start = start
        self.end = end
        self._now = now

    def isOpenAt(self, moment: time) -> bool:
        """
        @return: Whether C{moment} falls inside the window.
        """
        if self.start < self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end

    def checkAccess(self, access: AccessRequest) -> Refusal | None:
        if self.isOpenAt(self._now().time()):
            return None
        return Refusal(
            403,
            f"tunnels are allowed only between {self.start:%H:%M} and {self.end:%H:%M}",
        )


@implementer(IPlugin, IAccessPolicyFactory)
class HoursPolicyFactory:
    """
    Makes an L{HoursPolicy} from C{--policy hours:HH:MM-HH:MM}.
    """

    name = "hours"
    description = (
        "Tunnel only during a daily time window, in local time: "
        "--policy hours:08:00-18:00 (22:00-06:00 crosses midnight)."
    )

    def policyFromArgument(self, argument: str) -> IAccessPolicy:
        if not argument:
            raise ValueError("hours needs a window: --policy hours:08:00-18:00")
        start, end = parseWindow(argument)
        return HoursPolicy(start, end)
