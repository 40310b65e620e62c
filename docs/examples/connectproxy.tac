# -*- test-case-name: tests.integration.test_deploy -*-
"""
Run connectproxy from a .tac file:

    twistd -ny docs/examples/connectproxy.tac

The same options as on the command line, written in Python.  Set
CONNECTPROXY_LISTEN to choose the listener (a strports description); by
default the proxy listens on 127.0.0.1:3128 only.  Set CONNECTPROXY_CONFIG
to read a TOML configuration file as well (rules, authentication, limits);
SIGHUP re-reads it.
"""

import os

from twisted.application.service import Application

from connectproxy.tap import Options, makeService

arguments = [
    "--listen",
    os.environ.get("CONNECTPROXY_LISTEN", "tcp:3128:interface=127.0.0.1"),
    "--connect-timeout",
    "10",
    "--idle-timeout",
    "600",
]
if "CONNECTPROXY_CONFIG" in os.environ:
    arguments += ["--config", os.environ["CONNECTPROXY_CONFIG"]]

options = Options()
options.parseOptions(arguments)

application = Application("connectproxy")
makeService(options).setServiceParent(application)
