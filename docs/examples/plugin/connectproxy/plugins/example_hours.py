# -*- test-case-name: tests.test_hours -*-
"""
Registers the C{hours} access policy with connectproxy.

Every C{--policy} lookup and C{--help-policies} imports this module, so it
stays tiny: the policy itself is in L{connectproxy_example_policy}.  There is
no C{__init__.py} next to it, on purpose: see README.md.
"""

from __future__ import annotations

from connectproxy_example_policy import HoursPolicyFactory

hours = HoursPolicyFactory()
