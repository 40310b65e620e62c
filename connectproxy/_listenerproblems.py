# -*- test-case-name: tests.test_listeners,tests.test_tlslisteners -*-
"""
Why a listener description cannot be used, in the operator's terms: which
field is wrong and what to write instead (L{explain}), which file of an
C{ssl:} listener does not load and why, why a TLS context cannot be made
(L{contextProblem}), and which of the variables systemd sets is missing
for a C{systemd:} listener (L{systemdProblem}).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from OpenSSL import SSL, crypto
from twisted.internet.ssl import Certificate, KeyPair
from twisted.python.filepath import FilePath

from ._descriptions import endpointKinds, splitDescription

__all__ = ["contextProblem", "explain", "startingEnvironment", "systemdProblem"]


def contextProblem(description: str, e: Exception) -> str:
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


def explain(description: str, e: Exception) -> str:
    """
    Say why a description does not parse, in the operator's terms: for an
    C{ssl:} listener whose files do not load, which file and why.
    """
    kinds = endpointKinds(description)
    if kinds and kinds[-1] == "ssl" and not isinstance(e, TypeError):
        problem = _sslFilesProblem(splitDescription(description)[1])
        if problem is not None:
            return f"{description!r}: {problem}"
    return f"{description!r} is not a valid listener: {_whyNot(description, e)}"


def _whyNot(description: str, e: Exception) -> str:
    kinds = endpointKinds(description)
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


def systemdProblem(description: str, environ: Mapping[str, str]) -> str:
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
