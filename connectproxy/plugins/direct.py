# -*- test-case-name: tests.test_connectorplugins -*-
"""
The C{direct} upstream connector, the default C{--upstream}: connect
straight to the target, to the addresses the destination network rules
allow.

    twistd connectproxy --upstream direct
"""

from __future__ import annotations

from connectproxy._upstream import DirectConnectorFactory

direct = DirectConnectorFactory()
