# -*- test-case-name: tests.test_observerplugins -*-
"""
The C{accesslog} observer, the default C{--observer}: one log event per
refused request (C{request_refused}) and per closed tunnel
(C{tunnel_close}).

    twistd connectproxy --observer accesslog --observer OTHER
"""

from __future__ import annotations

from connectproxy._observer import AccessLogObserverFactory

accesslog = AccessLogObserverFactory()
