"""
The C{twistd connectproxy} / C{twist connectproxy} plugin.

Every C{twistd --help} on the machine imports this module, so it stays
import-light: the options and the service are looked up lazily in
L{connectproxy.tap}.
"""

from twisted.application.service import ServiceMaker

connectproxy = ServiceMaker(
    "connectproxy",
    "connectproxy.tap",
    "An HTTP CONNECT forward proxy: tunnels TCP for HTTP clients.",
    "connectproxy",
)
