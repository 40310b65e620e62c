# -*- test-case-name: tests.test_listeners -*-
"""
What a C{--listen} description means before anything listens: L{planListener}
parses it, listens with it on an inert reactor to see the address it would
really use, and refuses a description whose address differs from the one
written in it (C{tls:3129} would listen on port 443) or whose certificate
files are unusable.  L{ListenerPlan.describe} is the line
C{--check-config} prints for it.  For a TLS listener the plan holds the TLS
configuration loaded from those files, which is what a reload (SIGHUP) puts
in use (L{connectproxy._tls.reloadCertificates}).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import cast

from OpenSSL import SSL, crypto
from twisted.internet.endpoints import AdoptedStreamServerEndpoint
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, KeyPair
from twisted.internet.testing import MemoryReactor
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from ._adopted import adoptedSocketProblem
from ._descriptions import splitDescription
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
        if not set(_kinds(description)) <= _BUILT_IN:
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
        if "systemd" not in _kinds(description):
            raise ListenerError(_explain(description, e)) from None
        raise SystemdSocketMissing(
            description,
            _systemdProblem(
                description, startingEnvironment() if environ is None else environ
            ),
        ) from None
    except Exception as e:
        raise ListenerError(_explain(description, e)) from None
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
    kinds = _kinds(description)
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
    kinds = _kinds(description)
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


def _kinds(description: str) -> list[str]:
    """
    The endpoint types of a description, outermost first: C{["haproxy",
    "tcp"]} for C{haproxy:tcp:3128}.
    """
    args, _ = splitDescription(description)
    kinds = [args[0].lower()] if args else []
    if kinds == ["haproxy"] and len(args) > 1:
        kinds.append(args[1].lower())
    return kinds


def _written(description: str) -> tuple[str | None, str | None]:
    """
    The port and interface written in a description: C{port=} or a first
    field made of digits, and C{interface=}.
    """
    args, kwargs = splitDescription(description)
    positional = args[len(_kinds(description)) :]
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
        kind = _kinds(plan.description)[-1]
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
                f"{plan.description!r}: {_contextProblem(plan.description, e)}"
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


def _contextProblem(description: str, e: Exception) -> str:
    """
    Why the TLS context of an C{ssl:} listener cannot be made.
    """
    _, kwargs = splitDescription(description)
    if "dhParameters" in kwargs:
        return f"cannot load dhParameters={kwargs['dhParameters']}: {_reason(e)}"
    return f"cannot make a TLS context: {_reason(e)}"


def _sslFilesProblem(kwargs: Mapping[str, str]) -> str | None:
    """
    Which file of an C{ssl:} listener Twisted could not load, and why.

    Twisted reads the certificate from C{certKey=} and the key from
    C{certKey=} followed by C{privateKey=} (C{server.pem} for both by
    default), pairs them up, then reads C{extraCertChain=}; this reads them
    the same way, one at a time, to name the one that failed.

    @param kwargs: The description's keywords.
    @return: A sentence naming the option and its file, or C{None} when
        each file loads on its own.
    """
    keyName = kwargs.get("privateKey", "server.pem")
    certName = kwargs.get("certKey", keyName)
    given = {"certKey": certName, "privateKey": keyName}
    contents = {}
    for option, name in given.items():
        try:
            contents[option] = FilePath(name).getContent()
        except OSError as e:
            return f"cannot read {_option(option, kwargs, name)}: {_reason(e, False)}"
    certPEM, keyPEM = contents["certKey"], contents["privateKey"]
    try:
        certificate = Certificate.loadPEM(certPEM)
    except Exception as e:
        where = _option("certKey", kwargs, certName)
        return f"{where} holds no PEM certificate ({_reason(e)})"
    try:
        key = KeyPair.load(certPEM + b"\n" + keyPEM, crypto.FILETYPE_PEM)
    except Exception as e:
        where = _option("privateKey", kwargs, keyName)
        return f"{where} holds no PEM private key ({_reason(e)})"
    if certificate.getPublicKey().keyHash() != key.keyHash():
        return (
            f"the certificate in {_option('certKey', kwargs, certName)} and "
            f"the private key in {_option('privateKey', kwargs, keyName)} "
            "do not match"
        )
    chain = kwargs.get("extraCertChain")
    if chain is not None:
        try:
            pem = FilePath(chain).getContent()
        except OSError as e:
            return f"cannot read extraCertChain={chain}: {_reason(e, False)}"
        if b"-----BEGIN CERTIFICATE-----" not in pem:
            return f"extraCertChain={chain} holds no PEM certificate"
    return None


def _option(option: str, kwargs: Mapping[str, str], name: str) -> str:
    """
    An C{ssl:} file as the description names it: C{certKey=cert.pem}, or
    C{server.pem (the default privateKey=)} when it does not.
    """
    if option in kwargs:
        return f"{option}={name}"
    if option == "certKey":
        if "privateKey" in kwargs:
            return f"privateKey={name} (certKey= defaults to it)"
        return f"{name} (the default privateKey= and certKey=)"
    return f"{name} (the default privateKey=)"


def _reason(e: BaseException, withFile: bool = True) -> str:
    """
    An exception as a short reason: the OS error's text (and file name),
    OpenSSL's reasons, or the exception's own text.

    @param withFile: Whether to name the file of an OS error.
    """
    if isinstance(e, OSError) and e.strerror:
        name = f" {e.filename!r}" if e.filename and withFile else ""
        return f"{e.strerror}{name}".rstrip()
    if isinstance(e, SSL.Error | crypto.Error) and e.args:
        queue = e.args[0]
        if isinstance(queue, list) and queue:
            reasons = [str(entry[-1]) for entry in queue if isinstance(entry, tuple)]
            return "OpenSSL: " + "; ".join(r for r in reasons if r)
    text = str(e) or type(e).__name__
    return text


_ARGUMENT_ERROR = re.compile(
    r"(?:got multiple values for argument|got an unexpected keyword argument)"
    r" '(\w+)'"
)


_NOT_AN_INTEGER = re.compile(r"invalid literal for int\(\) with base 10: ('.*')")


def _explain(description: str, e: Exception) -> str:
    """
    Say why a description does not parse, in the operator's terms: for an
    C{ssl:} listener whose files do not load, which file and why.
    """
    kinds = _kinds(description)
    if kinds and kinds[-1] == "ssl" and not isinstance(e, TypeError):
        problem = _sslFilesProblem(splitDescription(description)[1])
        if problem is not None:
            return f"{description!r}: {problem}"
    return f"{description!r} is not a valid listener: {_whyNot(description, e)}"


def _whyNot(description: str, e: Exception) -> str:
    kinds = _kinds(description)
    kind = kinds[-1] if kinds else ""
    if "Unknown endpoint type" in str(e):
        return (
            f"unknown type {kind!r} (known: tcp, tcp6, ssl, tls, unix, "
            "systemd, haproxy)"
        )
    if isinstance(e, TypeError):
        match = _ARGUMENT_ERROR.search(str(e))
        _, kwargs = splitDescription(description)
        if re.search(r"interface=[0-9a-fA-F]*:", description.replace("\\:", "")):
            return (
                "escape the colons of an IPv6 address with a backslash, as in "
                "tcp6:3128:interface=\\:\\:1"
            )
        if match and match.group(1) in kwargs:
            return f"{kind}: listeners take no {match.group(1)}="
        return f"wrong fields for a {kind}: listener"
    notAnInteger = _NOT_AN_INTEGER.search(str(e))
    if notAnInteger:
        return f"{notAnInteger.group(1)} is not a whole number (a port, a backlog)"
    if not isinstance(e, OSError | ValueError):
        args, kwargs = splitDescription(description)
        if kind == "tls" and len(args) > len(kinds):
            return f"cannot load the PEM files of {args[len(kinds)]!r}: {_reason(e)}"
        if kind == "ssl" and isinstance(e, AttributeError) and "sslmethod" in kwargs:
            return (
                f"sslmethod={kwargs['sslmethod']} is not a method of OpenSSL.SSL "
                "(leave it out: the default negotiates the best TLS version)"
            )
        if kind == "ssl":
            key = kwargs.get("privateKey", "server.pem")
            files = f"privateKey={key}, certKey={kwargs.get('certKey', key)}"
            return f"cannot load the certificate or key ({files}): {_reason(e)}"
    return _reason(e)


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


def startingEnvironment() -> Mapping[str, str]:
    """
    The environment the process started with: on Linux from
    C{/proc/self/environ}, which still holds the C{LISTEN_FDS} and
    C{LISTEN_PID} that Twisted removes from C{os.environ} when it reads them;
    elsewhere C{os.environ}.
    """
    try:
        with open("/proc/self/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return os.environ
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {
        k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, _, v in pairs
    }


def _systemdProblem(description: str, environ: Mapping[str, str]) -> str:
    """
    Why a C{systemd:} listener has no socket: which of the variables systemd
    sets (C{LISTEN_FDS}, C{LISTEN_PID}, C{LISTEN_FDNAMES}) is missing or
    disagrees, or which C{index=} or C{name=} matches none.
    """
    _, kwargs = splitDescription(description)
    count = environ.get("LISTEN_FDS")
    if count is None:
        return (
            "LISTEN_FDS is not set: systemd passed no socket (start the proxy "
            "from a service with a matching .socket unit)"
        )
    pid = environ.get("LISTEN_PID")
    if pid != str(os.getpid()):
        return (
            f"LISTEN_PID ({pid}) is not this process ({os.getpid()}): start "
            "the proxy directly from ExecStart, without a wrapper that forks"
        )
    names = [n for n in environ.get("LISTEN_FDNAMES", "").split(":") if n]
    if not names:
        return (
            f"LISTEN_FDS={count} but LISTEN_FDNAMES is not set: Twisted needs "
            "both (systemd 227 or later sets both; set FileDescriptorName= "
            "in the .socket unit to choose the names)"
        )
    if not count.isdigit() or int(count) != len(names):
        return (
            f"LISTEN_FDS={count} but LISTEN_FDNAMES names {len(names)} "
            f"socket(s) ({':'.join(names)})"
        )
    if "name" in kwargs:
        return (
            f"no socket named {kwargs['name']!r}: systemd passed "
            f"{':'.join(names)} (LISTEN_FDNAMES)"
        )
    return (
        f"index={kwargs.get('index')} is out of range: systemd passed "
        f"{len(names)} socket(s), counted from 0 (LISTEN_FDNAMES="
        f"{':'.join(names)})"
    )
