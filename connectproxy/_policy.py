# -*- test-case-name: tests.test_rules -*-
"""
The names of the built-in access rules, at the private path they had
before they were split: the port, host and client rules are in
L{connectproxy._rules}, the destination network rules in
L{connectproxy._networks}.
"""

from __future__ import annotations

from ._hostnames import normalizeHost
from ._networks import NetworkRules
from ._rules import (
    DEFAULT_PORTS,
    AccessRules,
    ClientRules,
    HostRules,
    PortRules,
    parsePortRange,
)

__all__ = [
    "DEFAULT_PORTS",
    "AccessRules",
    "ClientRules",
    "HostRules",
    "NetworkRules",
    "PortRules",
    "normalizeHost",
    "parsePortRange",
]
