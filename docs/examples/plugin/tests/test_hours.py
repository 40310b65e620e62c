# -*- test-case-name: tests.test_hours -*-
"""
Tests for the C{hours} policy, written the way a plugin's own tests can be:
with L{connectproxy.testing} and a fake clock, no sockets and no reactor.
"""

from __future__ import annotations

from datetime import datetime, time

import pytest
from connectproxy import Refusal
from connectproxy.interfaces import IAccessPolicy, IAccessPolicyFactory
from connectproxy.testing import accessRequest, checkPolicy
from twisted.plugin import IPlugin
from zope.interface.verify import verifyObject

from connectproxy_example_policy import HoursPolicy, HoursPolicyFactory, parseWindow


def at(hour: int, minute: int = 0) -> HoursPolicy:
    """
    An C{08:00-18:00} policy whose clock always says C{hour:minute}.
    """
    return HoursPolicy(
        time(8), time(18), lambda: datetime(2024, 5, 6, hour, minute, 30)
    )


def test_interfaces() -> None:
    """
    The factory is a plugin and a policy factory; its policies are policies.
    """
    factory = HoursPolicyFactory()
    assert verifyObject(IPlugin, factory)
    assert verifyObject(IAccessPolicyFactory, factory)
    assert verifyObject(IAccessPolicy, factory.policyFromArgument("08:00-18:00"))


def test_allowsInsideWindow() -> None:
    """
    A request inside the window goes on to the next check.
    """
    assert checkPolicy(at(12), accessRequest()) is None


def test_refusesOutsideWindow() -> None:
    """
    A request outside the window is refused with 403 and a reason saying when
    tunnels are allowed.
    """
    assert checkPolicy(at(20), accessRequest()) == Refusal(
        403, "tunnels are allowed only between 08:00 and 18:00"
    )


@pytest.mark.parametrize(
    "window, moment, isOpen",
    [
        ("08:00-18:00", time(8, 0), True),
        ("08:00-18:00", time(7, 59, 59), False),
        ("08:00-18:00", time(17, 59, 59), True),
        ("08:00-18:00", time(18, 0), False),
        ("22:00-06:00", time(23, 0), True),
        ("22:00-06:00", time(0, 0), True),
        ("22:00-06:00", time(5, 59), True),
        ("22:00-06:00", time(6, 0), False),
        ("22:00-06:00", time(12, 0), False),
        ("18:00-00:00", time(23, 59), True),
        ("18:00-00:00", time(0, 0), False),
        ("8:00-9:30", time(9, 29), True),
    ],
)
def test_window(window: str, moment: time, isOpen: bool) -> None:
    """
    The window includes its start, excludes its end, and may cross midnight.
    """
    policy = HoursPolicyFactory().policyFromArgument(window)
    assert isinstance(policy, HoursPolicy)
    assert policy.isOpenAt(moment) is isOpen


def test_parseWindow() -> None:
    """
    A window is two times of day separated by a dash.
    """
    assert parseWindow(" 08:00 - 18:30 ") == (time(8), time(18, 30))


@pytest.mark.parametrize(
    "argument, message",
    [
        ("", "needs a window"),
        ("08:00", "not a time window"),
        ("08:00-25:00", "not a time of day"),
        ("8am-6pm", "not a time of day"),
        ("09:00-09:00", "empty time window"),
    ],
)
def test_badArgument(argument: str, message: str) -> None:
    """
    A bad argument is a ValueError with a message for the operator.
    """
    with pytest.raises(ValueError, match=message):
        HoursPolicyFactory().policyFromArgument(argument)
