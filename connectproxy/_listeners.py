# -*- test-case-name: tests.test_listeners -*-
"""
What a C{--listen} description means before anything listens: L{planListener}
parses it, listens with it on an inert reactor to see the address it would
really use, and refuses a description whose address differs from the one
written in it (C{tls:3129} would listen on port 443) or whose certificate
files are unusable.  L{ListenerPlan.describe} is the line
C{--check-config} prints for it.  For a TLS listener the plan holds the TLS
configuration loaded from those files, which is what a reload (SIGHUP) puts
in use (L{connectproxy._tls.reloadCertificates}).  L{overlap} tells
whether two listeners would take the same address.  Why a description
cannot be used is put in the operator's terms by
L{connectproxy._listenerproblems}.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import cast

from twisted.internet.endpoints import AdoptedStreamServerEndpoint
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor
from twisted.python.failure import Failure

from ._adopted import adoptedSocketProblem
from ._descriptions import endpointKinds, splitDescription
from ._listenerproblems import (
    contextProblem,
    explain,
    startingEnvironment,
    systemdProblem,
)
from ._pemdirectory import (
    DirectoryCertificates,
    PEMDirectoryEndpoint,
    PEMDirectoryError,
)
from ._proxyprotocol import serverEndpoint

__all__ = [
    "ListenerError",
    "ListenerPlan",
    "SystemdSocketMissing",
    "dualStackSockets",
    "overlap",
    "planListener",
    "splitDescription",
]


class ListenerError(ValueError):
    """
    A listener description that cannot be used; the message names it, says
    why and what to write instead.
    """


class SystemdSocketMissing(ListenerError):
    """
    A C{systemd:} listener whose socket systemd did not pass (or not to this
    process).

    @ivar reason: What is missing, without the description.
    """

    def __init__(self, description: str, reason: str) -> None:
        super().__init__(f"{description!r} is not a valid listener: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ListenerPlan:
    """
    Where a listener description would listen.

    @ivar description: The description, as written.
    @ivar host: The interface for a TCP listener (C{""} for every IPv4
        address), else C{None}.
    @ivar port: The TCP port, else C{None}.
    @ivar path: The UNIX socket path, else C{None}.
    @ivar fileno: The descriptor adopted from systemd, else C{None}.
    @ivar tls: Whether clients speak TLS to the proxy.
    @ivar proxyProtocol: Whether a PROXY protocol header comes first.
    @ivar tlsConfiguration: For an C{ssl:} listener, the
        L{CertificateOptions <twisted.internet.ssl.CertificateOptions>}
        Twisted made from its files (its context made, so that every file
        was read); for a C{tls:} listener, Twisted's connection creator for
        its directory; otherwise C{None}.
    """

    description: str
    host: str | None = None
    port: int | None = None
    path: str | None = None
    fileno: int | None = None
    tls: bool = False
    proxyProtocol: bool = False
    tlsConfiguration: object | None = field(default=None, compare=False, repr=False)

    @property
    def where(self) -> str:
        """
        The address, as the C{listening} log event writes it: C{host:port},
        C{[v6]:port}, C{unix:path} or C{systemd socket (fd N)}; for an
        endpoint type of a plugin, only that it is known once it listens.
        """
        if self.port is not None:
            host = self.host or "0.0.0.0"
            if ":" in host:
                return f"[{host}]:{self.port}"
            return f"{host}:{self.port}"
        if self.path is not None:
            return f"unix:{self.path}"
        if self.fileno is not None:
            return f"systemd socket (fd {self.fileno})"
        return "an address known once it listens"

    def describe(self) -> str:
        """
        One line for C{--check-config}: the description, where it listens
        and what clients speak there.
        """
        speaks = "TLS" if self.tls else "plain HTTP"
        if self.proxyProtocol:
            speaks = "PROXY protocol, then " + speaks
        return f"listen {self.description} -> {self.where} ({speaks})"


def planListener(
    description: str, environ: Mapping[str, str] | None = None
) -> ListenerPlan:
    """
    Parse a listener description and find where it would listen, without
    binding anything.

    @param description: A strports description, as given to C{--listen}.
    @param environ: The environment the process started with, for the
        variables systemd sets; by default L{startingEnvironment}.
    @raise ListenerError: When the description does not parse, names files
        that cannot be used, or would listen elsewhere than it says.
    """
    reactor = MemoryReactor()
    try:
        endpoint = serverEndpoint(reactor, description)
        adopted = _innermost(endpoint)
        if isinstance(adopted, AdoptedStreamServerEndpoint):
            problem = adoptedSocketProblem(adopted.fileno, adopted.addressFamily)
            if problem is not None:
                raise ListenerError(
                    f"{description!r} is not a valid listener: {problem}"
                )
            # Listening would close the inherited descriptor.
            return _planAdopted(description, adopted.fileno)
        if not set(endpointKinds(description)) <= _BUILT_IN:
            # A plugin's endpoint may do anything when it listens, even on
            # an inert reactor.
            return ListenerPlan(description)
        failures: list[Failure] = []
        # The innermost endpoint only: a tls: directory is read below, once
        # the address is known to be the one written.
        listening = cast(IStreamServerEndpoint, _innermost(endpoint))
        listening.listen(Factory.forProtocol(Protocol)).addErrback(failures.append)
        if failures:
            failures[0].raiseException()
    except ListenerError:
        raise
    except (IndexError, KeyError) as e:
        if "systemd" not in endpointKinds(description):
            raise ListenerError(explain(description, e)) from None
        raise SystemdSocketMissing(
            description,
            systemdProblem(
                description, startingEnvironment() if environ is None else environ
            ),
        ) from None
    except Exception as e:
        raise ListenerError(explain(description, e)) from None
    plan = _planFromReactor(description, reactor)
    _checkWritten(plan)
    return replace(plan, tlsConfiguration=_tlsConfiguration(plan, endpoint, reactor))


#: The endpoint types that Twisted itself provides, whose C{listen} on an
#: inert reactor only records where they would listen.
_BUILT_IN = {"tcp", "tcp6", "ssl", "tls", "unix", "systemd", "haproxy"}


def _innermost(endpoint: object) -> object:
    """
    The endpoint at the bottom of a chain of wrappers (C{haproxy:}, C{tls:}).
    """
    while True:
        inner = _wrappedBy(endpoint)
        if inner is None:
            return endpoint
        endpoint = inner


def _wrappedBy(endpoint: object) -> object | None:
    """
    The endpoint a wrapper endpoint listens on, or C{None}.
    """
    for name in ("wrapped", "_wrappedEndpoint", "endpoint"):
        inner: object | None = getattr(endpoint, name, None)
        if inner is not None:
            return inner
    return None


def _planAdopted(description: str, fileno: int) -> ListenerPlan:
    """
    The plan of a listener on a socket passed by systemd.
    """
    kinds = endpointKinds(description)
    return ListenerPlan(
        description,
        fileno=fileno,
        tls="tls" in kinds or "ssl" in kinds,
        proxyProtocol="haproxy" in kinds,
    )


def _planFromReactor(description: str, reactor: MemoryReactor) -> ListenerPlan:
    """
    Read where a listener would listen from what it asked the inert reactor.
    """
    kinds = endpointKinds(description)
    proxyProtocol = "haproxy" in kinds
    if reactor.sslServers:
        [(port, _, _, _, interface)] = reactor.sslServers
        return ListenerPlan(
            description,
            host=interface,
            port=port,
            tls=True,
            proxyProtocol=proxyProtocol,
        )
    tls = "tls" in kinds or "ssl" in kinds
    if reactor.tcpServers:
        [(port, _, _, interface)] = reactor.tcpServers
        return ListenerPlan(
            description,
            host=interface,
            port=port,
            tls=tls,
            proxyProtocol=proxyProtocol,
        )
    if reactor.unixServers:
        [(path, *_)] = reactor.unixServers
        return ListenerPlan(
            description, path=path, tls=tls, proxyProtocol=proxyProtocol
        )
    raise ListenerError(f"{description!r} is not a valid listener: it never listens")


def _written(description: str) -> tuple[str | None, str | None]:
    """
    The port and interface written in a description: C{port=} or a first
    field made of digits, and C{interface=}.
    """
    args, kwargs = splitDescription(description)
    positional = args[len(endpointKinds(description)) :]
    port = kwargs.get("port")
    if port is None and positional and positional[0].isdigit():
        port = positional[0]
    return port, kwargs.get("interface")


_HINTS = {
    "tls": "tls: takes a directory of PEM certificates and keys first, then "
    "the port: tls:/etc/connectproxy/tls:port={port}",
    "unix": "unix: takes the path of a socket file",
}


def _checkWritten(plan: ListenerPlan) -> None:
    """
    Refuse a plan whose port or interface differs from the one written in
    its description.
    """
    port, interface = _written(plan.description)
    if port is not None and (not port.isdigit() or int(port) != plan.port):
        kind = endpointKinds(plan.description)[-1]
        hint = _HINTS.get(kind, "").format(port=port)
        raise ListenerError(
            f"{plan.description!r} would listen on {plan.where}, not on "
            f"port {port}" + (f" ({hint})" if hint else "")
        )
    if interface is not None and not _sameHost(interface, plan.host):
        raise ListenerError(
            f"{plan.description!r} would listen on {plan.where}, not on "
            f"interface {interface}"
        )


def _sameHost(written: str, actual: str | None) -> bool:
    if actual is None:
        return False
    try:
        return ipaddress.ip_address(written.strip("[]")) == ipaddress.ip_address(actual)
    except ValueError:
        return written == actual


def _tlsConfiguration(
    plan: ListenerPlan, endpoint: object, reactor: MemoryReactor
) -> object | None:
    """
    The TLS configuration a listener made from its files: for C{ssl:} the
    options it listened with, their context made (which reads the
    C{dhParameters=} file, the one file Twisted leaves until the first
    connection); for C{tls:} the certificates of its directory
    (L{DirectoryCertificates}), read here.

    @raise ListenerError: When the context cannot be made or the directory
        cannot be used, naming the file.
    """
    if reactor.sslServers:
        [(_, _, options, _, _)] = reactor.sslServers
        try:
            options.getContext()
        except Exception as e:
            raise ListenerError(
                f"{plan.description!r}: {contextProblem(plan.description, e)}"
            ) from None
        loaded: object = options
        return loaded
    while endpoint is not None:
        if isinstance(endpoint, PEMDirectoryEndpoint):
            try:
                return DirectoryCertificates.fromDirectory(endpoint.directory)
            except PEMDirectoryError as e:
                raise ListenerError(f"{plan.description!r}: {e}") from None
        endpoint = _wrappedBy(endpoint)
    return None


def dualStackSockets(setting: str = "/proc/sys/net/ipv6/bindv6only") -> bool:
    """
    Whether an IPv6 socket listening on C{[::]} takes IPv4 connections too,
    as Linux makes it by default (C{net.ipv6.bindv6only = 0}).

    @param setting: The file holding the system's setting.
    @return: C{False} where the setting cannot be read (not Linux): there
        it is not assumed.
    """
    try:
        with open(setting) as f:
            return f.read().strip() == "0"
    except OSError:
        return False


def _boundAddress(
    host: str | None,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | str:
    """
    The address a TCP listener binds, as an IP address (C{""} is every IPv4
    address, an IPv4-mapped IPv6 address the IPv4 one), or the text of a
    host name.
    """
    text = (host or "0.0.0.0").partition("%")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return text
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def overlap(
    a: ListenerPlan, b: ListenerPlan, dualStack: bool | None = None
) -> str | None:
    """
    Whether two TCP listeners on different addresses would take the same
    port of some address, so that the second could not listen: one listens
    on every address of the other's family (C{0.0.0.0}, C{[::]}; C{[::]}
    takes every IPv4 address too where IPv6 sockets are dual-stack).

    @param dualStack: Whether IPv6 sockets on C{[::]} take IPv4 too; by
        default as the system says (L{dualStackSockets}).
    @return: What they share, for a message; C{None} when they can both
        listen (or are on the same address, which is a plain duplicate).
    """
    if a.port is None or a.port != b.port or a.port == 0 or a.where == b.where:
        return None
    if dualStack is None:
        dualStack = dualStackSockets()
    first, second = _boundAddress(a.host), _boundAddress(b.host)
    if isinstance(first, str) or isinstance(second, str):
        return None

    def covers(
        wide: ipaddress.IPv4Address | ipaddress.IPv6Address,
        narrow: ipaddress.IPv4Address | ipaddress.IPv6Address,
    ) -> bool:
        if not wide.is_unspecified:
            return False
        return wide.version == narrow.version or (
            wide.version == 6 and dualStack is True
        )

    if first == second:
        # An IPv4-mapped address and the IPv4 one.
        shared = first
    elif covers(first, second):
        shared = second
    elif covers(second, first):
        shared = first
    else:
        return None
    what = (
        f"every IPv{shared.version} address" if shared.is_unspecified else str(shared)
    )
    return (
        f"{a.where} and {b.where} both take port {a.port} of {what} (a "
        "listener on every address serves that one too: keep one of them)"
    )
