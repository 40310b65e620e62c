# -*- test-case-name: tests.integration.test_deploy -*-
"""
Run connectproxy from a .tac file:

    twistd -ny docs/examples/connectproxy.tac

The same options as on the command line, written in Python.  Set
CONNECTPROXY_LISTEN to choose the listener (a strports description); by
default the proxy listens on 127.0.0.1:3128 only.
"""

import os

from twisted.application.service import Application

from connectproxy.tap import Options, makeService

options = Options()
options.parseOptions(
    [
        "--listen",
        os.environ.get("CONNECTPROXY_LISTEN", "tcp:3128:interface=127.0.0.1"),
        "--connect-timeout",
        "10",
        "--idle-timeout",
        "600",
    ]
)

application = Application("connectproxy")
makeService(options).setServiceParent(application)
