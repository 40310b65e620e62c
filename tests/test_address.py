# -*- test-case-name: tests.test_address -*-
"""
Tests for L{connectproxy._address}: client and peer addresses as logs show
them and as the access checks and limits count them.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

from connectproxy import _address, _admission, _observer
from connectproxy._address import clientHostPort, formatAddress


def test_clientAddressFormats() -> None:
    """
    IPv6 and UNIX client addresses are logged readably.
    """
    assert formatAddress(IPv6Address("TCP", "::1", 5)) == "[::1]:5"
    assert formatAddress(IPv4Address("TCP", "10.0.0.1", 5)) == "10.0.0.1:5"
    assert formatAddress(UNIXAddress(b"/run/p.sock")) == "unix:/run/p.sock"
    assert formatAddress(UNIXAddress(None)) == "unix:"
    assert formatAddress("other") == "other"


def test_clientHostPort() -> None:
    """
    IP clients have a host and port; others have neither.
    """
    assert clientHostPort(IPv4Address("TCP", "10.0.0.1", 5)) == ("10.0.0.1", 5)
    assert clientHostPort(IPv6Address("TCP", "::1", 6)) == ("::1", 6)
    assert clientHostPort(UNIXAddress(b"/s")) == ("", 0)
    assert clientHostPort(None) == ("", 0)


def test_oldImportPaths() -> None:
    """
    The helpers are still importable from the modules they came from.
    """
    assert _observer.formatAddress is _address.formatAddress
    assert _admission.clientHostPort is _address.clientHostPort
