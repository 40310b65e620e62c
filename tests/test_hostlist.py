# -*- test-case-name: tests.test_hostlist -*-
"""
Tests for the shipped C{hostlist} access policy
(L{connectproxy.plugins.hostlist}): the file it reads, the names it
allows, and the policy in a running proxy.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from twisted.plugin import IPlugin
from zope.interface.verify import verifyObject

from connectproxy import AccessRules, Gatekeeper, HostRules, Refusal
from connectproxy.interfaces import IAccessPolicy, IAccessPolicyFactory
from connectproxy.plugins import hostlist as hostlistModule
from connectproxy.plugins.hostlist import HostListPolicy, HostListPolicyFactory
from connectproxy.testing import (
    ProxyHarness,
    accessRequest,
    checkPolicy,
    connectHead,
)


def hostList(directory: Path, text: str) -> HostListPolicy:
    """
    A host list policy over a file holding C{text}.
    """
    path = directory / "hosts"
    path.write_text(text, encoding="utf-8")
    return HostListPolicy(str(path))


def test_hostlistInterfaces(tmp_path: Path) -> None:
    """
    The plugin object is a plugin and a policy factory, and its policies
    are policies.
    """
    factory = hostlistModule.hostlist
    assert verifyObject(IPlugin, factory)
    assert verifyObject(IAccessPolicyFactory, factory)
    path = tmp_path / "hosts"
    path.write_text("example.com\n", encoding="utf-8")
    assert verifyObject(IAccessPolicy, factory.policyFromArgument(str(path)))


@pytest.mark.parametrize(
    "text, host, allowed",
    [
        ("example.com\n", "example.com", True),
        ("example.com\n", "www.example.com", False),
        ("example.com\n", "example.org", False),
        ("*.example.com\n", "a.example.com", True),
        ("*.example.com\n", "a.b.example.com", True),
        ("*.example.com\n", "example.com", False),
        ("# hosts\n\n   \n  example.com  \n# end\n", "example.com", True),
        ("example.com\r\nexample.org\r\n", "example.org", True),
        ("Example.COM.\n", "example.com", True),
        ("example.com\n", "EXAMPLE.com.", True),
        ("bücher.example\n", "xn--bcher-kva.example", True),
        ("xn--bcher-kva.example\n", "BÜCHER.example", True),
        ("*.bücher.example\n", "www.xn--bcher-kva.example", True),
        ("192.0.2.1\n", "192.0.2.1", True),
        ("*.example.com\n", "192.0.2.1", False),
        ("2001:db8::1\n", "2001:0db8:0::1", True),
    ],
)
def test_hostlistMatches(tmp_path: Path, text: str, host: str, allowed: bool) -> None:
    """
    Exact names and C{*.suffix} patterns match whatever the case, trailing
    dot or Unicode spelling; comments and blank lines are ignored.
    """
    answer = checkPolicy(hostList(tmp_path, text), accessRequest(host=host))
    if allowed:
        assert answer is None
    else:
        assert answer == Refusal(
            403,
            f"host {host} is not in the allowed list "
            f"(see --policy hostlist:{tmp_path / 'hosts'})",
        )


def test_hostlistPatterns(tmp_path: Path) -> None:
    """
    The policy keeps the patterns it read, without comments or blank lines.
    """
    policy = hostList(tmp_path, "# web\nexample.com\n\n  *.example.org \n")
    assert policy.patterns == ["example.com", "*.example.org"]
    assert policy.rules == HostRules.fromStrings(allow=policy.patterns)


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing allowed yet\n"])
def test_emptyHostlistAllowsNothing(tmp_path: Path, text: str) -> None:
    """
    A list with no patterns allows no host at all.
    """
    policy = hostList(tmp_path, text)
    assert policy.patterns == [] and policy.rules is None
    for host in ("example.com", "192.0.2.1", "localhost"):
        assert checkPolicy(policy, accessRequest(host=host)) == Refusal(
            403,
            f"host {host} is not in the allowed list "
            f"(see --policy hostlist:{policy.path})",
        )


@pytest.mark.parametrize(
    "pattern", ["a.*.example", "*", "has space.example", "-bad-.example", "*.1.2.3.4"]
)
def test_hostlistBadPattern(tmp_path: Path, pattern: str) -> None:
    """
    An invalid pattern is a ValueError naming the file and the line.
    """
    path = tmp_path / "hosts"
    path.write_text(f"# hosts\nexample.com\n\n{pattern}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}, line 4: "):
        HostListPolicy(str(path))


def test_hostlistUnreadable(tmp_path: Path) -> None:
    """
    A missing file, a directory or a file that is not UTF-8 is a ValueError
    saying the list cannot be read.
    """
    latin1 = tmp_path / "latin1"
    latin1.write_bytes(b"b\xfccher.example\n")
    for path in (tmp_path / "absent", tmp_path, latin1):
        with pytest.raises(ValueError, match=f"cannot read host list {path}"):
            HostListPolicy(str(path))


def test_hostlistNeedsFile() -> None:
    """
    C{--policy hostlist} without a file is refused.
    """
    with pytest.raises(ValueError, match="needs a file"):
        HostListPolicyFactory().policyFromArgument("")


def test_hostlistInProxy(tmp_path: Path) -> None:
    """
    In a proxy, the host list refuses an unlisted host with 403 before any
    upstream connect, and lets a listed one through to the connector.
    """
    policy = hostList(tmp_path, "allowed.example\n")
    harness = ProxyHarness(None, Gatekeeper(AccessRules.defaults(), [policy]))
    refused = harness.connectClient()
    refused.send(connectHead("denied.example:443"))
    response = refused.response()
    assert response.status == 403
    assert response.body.endswith(
        b"host denied.example is not in the allowed list "
        + f"(see --policy hostlist:{policy.path})\n".encode()
    )
    assert harness.connector.attempts == []
    [event] = harness.observer.refused
    assert (event.status, event.target) == (403, "denied.example:443")

    allowed = harness.connectClient()
    allowed.send(connectHead("Allowed.Example:443"))
    [attempt] = harness.connector.attempts
    assert attempt.request.host == "allowed.example"
    attempt.succeed()
    assert allowed.response().status == 200


def test_hostlistImportsPublicNamesOnly() -> None:
    """
    The plugin, an example for third-party plugins, imports nothing private
    of connectproxy.
    """
    tree = ast.parse(Path(hostlistModule.__file__).read_text(encoding="utf-8"))
    imported = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import"
            imported += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
    ours = [name for name in imported if name.startswith("connectproxy.")]
    assert ours
    assert [n for n in ours if any(p.startswith("_") for p in n.split("."))] == []
