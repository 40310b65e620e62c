# -*- test-case-name: tests.test_outgoing -*-
"""
Tests for C{--outgoing-address}: L{connectproxy._outgoing.OutgoingAddresses},
the option, and upstream connections bound to it, on a memory reactor (the
public addresses here only ever reach the memory reactor).
"""

from __future__ import annotations

import errno
from typing import Any

import pytest
from twisted.internet.address import HostnameAddress, IPv4Address, IPv6Address
from twisted.internet.error import ConnectBindError, ConnectionRefusedError
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent
from twisted.python.failure import Failure
from twisted.python.usage import UsageError

from connectproxy import ConnectProxyFactory, DirectConnector, ProxySettings
from connectproxy._admission import Gatekeeper
from connectproxy._eyeballs import LocalConnectError, connectToFirst
from connectproxy._outgoing import OutgoingAddresses
from connectproxy._policy import AccessRules
from connectproxy.tap import Options
from connectproxy.testing import FakeClient, HalfCloseableStringTransport

V4 = "93.184.216.34"
V6 = "2606:2800:220:1:248:1893:25c8:1946"
TARGET = HostnameAddress(b"name.example", 443)


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


# The addresses.


def test_oneAddressPerFamily() -> None:
    """
    One IPv4 and one IPv6 address, in either order, each used for its own
    family; written in its normal form.
    """
    outgoing = OutgoingAddresses.fromStrings(["2001:DB8::0:10", "192.0.2.10"])
    assert outgoing == OutgoingAddresses("192.0.2.10", "2001:db8::10")
    assert outgoing.strings() == ["192.0.2.10", "2001:db8::10"]
    assert outgoing.sourceFor(IPv4Address("TCP", V4, 443)) == "192.0.2.10"
    assert outgoing.sourceFor(IPv6Address("TCP", V6, 443)) == "2001:db8::10"
    assert outgoing
    assert not OutgoingAddresses.fromStrings([])


@pytest.mark.parametrize(
    "values, message",
    [
        (["proxy.example.com"], "is not an IP address"),
        (["192.0.2.300"], "is not an IP address"),
        (["192.0.2.10", "192.0.2.11"], "both IPv4 addresses"),
        (["::1", "2001:db8::1"], "both IPv6 addresses"),
        (["0.0.0.0"], "unspecified address"),
        (["::"], "unspecified address"),
        (["224.0.0.1"], "multicast"),
        (["::ffff:192.0.2.10"], "give 192.0.2.10"),
    ],
)
def test_refusedAddresses(values: list[str], message: str) -> None:
    """
    A name, a second address of one family, the unspecified address, a
    multicast address and an IPv4-mapped address are refused, saying why.
    """
    with pytest.raises(ValueError, match=message):
        OutgoingAddresses.fromStrings(values)


def test_unbindable() -> None:
    """
    A loopback address can be bound; an address the machine does not have
    (TEST-NET-1) cannot, and the reason says why.
    """
    assert OutgoingAddresses.fromStrings(["127.0.0.7"]).unbindable() == []
    [(address, why)] = OutgoingAddresses.fromStrings(["192.0.2.1"]).unbindable()
    assert address == "192.0.2.1"
    assert why == "Cannot assign requested address"


# The option.


def test_optionRepeatable() -> None:
    """
    --outgoing-address is repeatable, once per family, and becomes the
    settings' outgoing addresses.
    """
    options = parse("--outgoing-address", "127.0.0.7", "--outgoing-address", "::1")
    assert options["outgoing-address"] == ["127.0.0.7", "::1"]
    assert options.settings().outgoingAddresses == OutgoingAddresses("127.0.0.7", "::1")
    assert parse().settings().outgoingAddresses == OutgoingAddresses()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["proxy.example.com"], "--outgoing-address: 'proxy.example.com' is not an IP"),
        (
            ["192.0.2.1", "--outgoing-address", "192.0.2.2"],
            "--outgoing-address: 192.0.2.1 and 192.0.2.2 are both IPv4 addresses",
        ),
    ],
)
def test_optionErrors(argv: list[str], message: str) -> None:
    """
    A bad value stops parsing with a message naming the option.
    """
    with pytest.raises(UsageError) as raised:
        parse("--outgoing-address", *argv)
    assert str(raised.value).startswith(message)


def test_configurationKey(tmp_path: Any) -> None:
    """
    The configuration file takes a list, checked the same way.
    """
    path = tmp_path / "proxy.toml"
    path.write_text('outgoing-address = ["127.0.0.7", "::1"]\n', encoding="utf-8")
    assert parse("--config", str(path))["outgoing-address"] == ["127.0.0.7", "::1"]
    path.write_text('outgoing-address = ["127.0.0.7", "127.0.0.8"]\n')
    with pytest.raises(UsageError, match="both IPv4 addresses"):
        parse("--config", str(path))


def test_checkConfigSaysWhetherBindable(capsys: pytest.CaptureFixture[str]) -> None:
    """
    --check-config prints a line per outgoing address, saying so when this
    machine cannot bind it now, and still exits 0.
    """
    with pytest.raises(SystemExit) as exited:
        parse(
            "--check-config",
            "--outgoing-address",
            "127.0.0.7",
            "--outgoing-address",
            "2001:db8::77",
        )
    assert exited.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert "outgoing address 127.0.0.7" in lines
    [v6] = [line for line in lines if "2001:db8::77" in line]
    assert v6.startswith(
        "outgoing address 2001:db8::77 -> cannot bind it now (Cannot assign"
    )
    assert v6.endswith("connects from it get 502 until this machine has it")


# Connecting from it.


class Race:
    """
    A L{connectToFirst} on a memory reactor with outgoing addresses.
    """

    def __init__(self, outgoing: OutgoingAddresses, *hosts: str) -> None:
        self.reactor = MemoryReactorClock()
        addresses = [
            IPv6Address("TCP", h, 443) if ":" in h else IPv4Address("TCP", h, 443)
            for h in hosts
        ]
        self.outcome: list[Any] = []
        connectToFirst(
            self.reactor, addresses, Protocol(), TARGET, outgoing=outgoing
        ).addBoth(self.outcome.append)

    def attempts(self) -> list[tuple[str, Any]]:
        """
        The host and bind address of each attempt started.
        """
        return [(host, bind) for host, _, _, _, bind in self.reactor.tcpClients]

    def fail(self, index: int, error: Exception) -> None:
        _, _, factory, _, _ = self.reactor.tcpClients[index]
        factory.clientConnectionFailed(self.reactor.connectors[index], Failure(error))

    def error(self) -> LocalConnectError:
        [failure] = self.outcome
        assert isinstance(failure, Failure)
        assert isinstance(failure.value, LocalConnectError), failure
        return failure.value


def test_eachFamilyFromItsAddress() -> None:
    """
    Each attempt is bound to the outgoing address of its family, port 0.
    """
    race = Race(OutgoingAddresses("192.0.2.10", "2001:db8::10"), V6, V4)
    race.fail(0, ConnectionRefusedError())
    assert race.attempts() == [(V6, ("2001:db8::10", 0)), (V4, ("192.0.2.10", 0))]


def test_noOutgoingAddressNoBinding() -> None:
    """
    Without outgoing addresses, the system chooses: no bind address.
    """
    race = Race(OutgoingAddresses(), V4)
    assert race.attempts() == [(V4, None)]


def test_familyWithoutAddressSkipped() -> None:
    """
    With an IPv4 outgoing address only, the target's IPv6 addresses are not
    tried.
    """
    race = Race(OutgoingAddresses("192.0.2.10"), V6, V4, "2001:db8::99")
    assert race.attempts() == [(V4, ("192.0.2.10", 0))]


@pytest.mark.parametrize(
    "outgoing, host, family",
    [
        (OutgoingAddresses("192.0.2.10"), V6, "IPv6"),
        (OutgoingAddresses(None, "2001:db8::10"), V4, "IPv4"),
    ],
)
def test_noAddressOfTheFamily(
    outgoing: OutgoingAddresses, host: str, family: str
) -> None:
    """
    A target with addresses of a family without an outgoing address only is
    refused at once with 502, naming the option, without an attempt.
    """
    race = Race(outgoing, host)
    assert race.attempts() == []
    error = race.error()
    assert (error.status, error.reason) == (
        502,
        f"the target has only {family} addresses and --outgoing-address gives "
        f"no {family} address",
    )


def test_cannotBind() -> None:
    """
    An attempt whose outgoing address cannot be bound fails with 502 and a
    reason naming the address and the option; the log gets the system's
    words.
    """
    race = Race(OutgoingAddresses("192.0.2.1"), V4)
    race.fail(
        0, ConnectBindError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
    )
    error = race.error()
    assert (error.status, error.reason) == (
        502,
        "cannot bind the outgoing address 192.0.2.1 (see --outgoing-address)",
    )
    assert str(error) == (
        "cannot bind the outgoing address 192.0.2.1 (see --outgoing-address): "
        "Cannot assign requested address"
    )


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE])
def test_outOfDescriptors(code: int) -> None:
    """
    An attempt that cannot make its socket for lack of descriptors fails
    with 503, with or without outgoing addresses.
    """
    for outgoing in (OutgoingAddresses(), OutgoingAddresses("192.0.2.10")):
        race = Race(outgoing, V4)
        race.fail(0, ConnectBindError(code, "Too many open files"))
        error = race.error()
        assert (error.status, error.reason) == (
            503,
            "the proxy is out of file descriptors; try again later",
        )


def test_otherBindErrorsUnchanged() -> None:
    """
    A bind error without an outgoing address (not the proxy's doing) stays
    what it was.
    """
    race = Race(OutgoingAddresses(), V4)
    race.fail(0, ConnectBindError(errno.EACCES, "Permission denied"))
    [failure] = race.outcome
    assert type(failure.value) is ConnectBindError


def test_refusalStillMostTelling() -> None:
    """
    A refusal from one address is still the answer when another address
    could not be bound.
    """
    race = Race(OutgoingAddresses("192.0.2.10", "2001:db8::10"), V6, V4)
    race.fail(0, ConnectBindError(errno.EADDRNOTAVAIL, "Cannot assign"))
    race.fail(1, ConnectionRefusedError())
    [failure] = race.outcome
    assert failure.check(ConnectionRefusedError)


# Through the proxy.


class Proxy:
    """
    A proxy on a memory reactor with its default connector (a
    L{DirectConnector}), tunnelling to any global address on port 443.
    """

    def __init__(self, outgoing: OutgoingAddresses) -> None:
        self.clock = MemoryReactorClock()
        self.factory = ConnectProxyFactory(
            self.clock,
            ProxySettings(outgoingAddresses=outgoing),
            gatekeeper=Gatekeeper(AccessRules.defaults()),
        )

    def request(self, host: str) -> FakeClient:
        peer = IPv4Address("TCP", "127.0.0.1", 40000)
        protocol = self.factory.buildProtocol(peer)
        transport = HalfCloseableStringTransport(peerAddress=peer)
        protocol.makeConnection(transport)
        client = FakeClient(protocol, transport)
        authority = f"[{host}]:443" if ":" in host else f"{host}:443"
        client.send(
            f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode()
        )
        return client


def test_proxyBindsUpstream() -> None:
    """
    The proxy's upstream connector binds each connection to the outgoing
    address of its family.
    """
    proxy = Proxy(OutgoingAddresses("127.0.0.7", "::1"))
    proxy.request(V4)
    proxy.request(V6)
    clients: list[Any] = proxy.clock.tcpClients
    binds = [(host, bind) for host, _, _, _, bind in clients]
    assert binds == [(V4, ("127.0.0.7", 0)), (V6, ("::1", 0))]


def test_proxyAnswers502CannotBind(logEvents: list[LogEvent]) -> None:
    """
    A connect whose outgoing address cannot be bound gets 502 with the
    reason naming the option, and one connect_failed line without a
    traceback.
    """
    proxy = Proxy(OutgoingAddresses("192.0.2.1"))
    client = proxy.request(V4)
    _, _, factory, _, _ = proxy.clock.tcpClients[0]
    error = ConnectBindError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
    factory.clientConnectionFailed(proxy.clock.connectors[0], Failure(error))
    response = client.transport.value()
    assert response.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert response.endswith(
        b"cannot bind the outgoing address 192.0.2.1 (see --outgoing-address)\n"
    )
    assert [e for e in logEvents if "log_failure" in e] == []
    [failed] = [e for e in logEvents if e.get("event") == "connect_failed"]
    assert failed["error"] == (
        "cannot bind the outgoing address 192.0.2.1 (see --outgoing-address): "
        "Cannot assign requested address"
    )


def test_proxyAnswers502NoFamily() -> None:
    """
    A target whose addresses are all of a family without an outgoing
    address gets 502 at once.
    """
    proxy = Proxy(OutgoingAddresses("127.0.0.7"))
    client = proxy.request(V6)
    assert proxy.clock.tcpClients == []
    assert client.transport.value().endswith(
        b"the target has only IPv6 addresses and --outgoing-address gives no "
        b"IPv6 address\n"
    )


def test_reloadReplacesOutgoing() -> None:
    """
    A reload's new settings reach the connector, for new connections.
    """
    proxy = Proxy(OutgoingAddresses("127.0.0.7"))
    connector = proxy.factory.connector
    assert isinstance(connector, DirectConnector)
    assert connector.outgoing == OutgoingAddresses("127.0.0.7")
    settings = ProxySettings(outgoingAddresses=OutgoingAddresses("127.0.0.8"))
    with pytest.warns(DeprecationWarning):
        proxy.factory.reconfigure(settings, proxy.factory.gatekeeper)
    # The connector is made again, whole, from the new settings.
    connector = proxy.factory.connector
    assert isinstance(connector, DirectConnector)
    assert connector.outgoing == OutgoingAddresses("127.0.0.8")
    proxy.request(V4)
    clients: list[Any] = proxy.clock.tcpClients
    [(_, _, _, _, bind)] = clients
    assert bind == ("127.0.0.8", 0)
