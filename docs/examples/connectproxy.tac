# -*- test-case-name: tests.integration.test_deploy -*-
"""
Run connectproxy from a .tac file:

    twistd -ny docs/examples/connectproxy.tac --pidfile=

It builds the same service as `twistd connectproxy`, from the same options,
written here in Python.  Two environment variables configure it:

- CONNECTPROXY_CONFIG names a TOML configuration file (the keys are the long
  option names: listen, allow-client, auth, allow-port, idle-timeout, ...);
  SIGHUP re-reads it.
- CONNECTPROXY_LISTEN, when set, is the listener (a strports description)
  and wins over the file's `listen`.

With neither, the proxy has the safe defaults: it listens on 127.0.0.1:3128
only, serves loopback clients and tunnels to port 443 of public addresses
(and forwards http:// URLs on ports 80 and 443).
"""

import os

from twisted.application.service import Application

from connectproxy.tap import Options, makeService

arguments = []
if "CONNECTPROXY_CONFIG" in os.environ:
    arguments += ["--config", os.environ["CONNECTPROXY_CONFIG"]]
if "CONNECTPROXY_LISTEN" in os.environ:
    arguments += ["--listen", os.environ["CONNECTPROXY_LISTEN"]]

options = Options()
options.parseOptions(arguments)

application = Application("connectproxy")
makeService(options).setServiceParent(application)
