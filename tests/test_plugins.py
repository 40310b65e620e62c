# -*- test-case-name: tests.test_plugins -*-
"""
Tests for access policy plugins: discovery and C{--policy}, and the
examples of docs/plugins.md.  The shipped C{hostlist} policy is tested in
tests/test_hostlist.py, how the proxy runs policies in
tests/test_admission.py, and the helpers L{connectproxy.testing} offers
plugin authors in tests/test_testing.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.python.usage import UsageError

from connectproxy._assembly import policyFactories
from connectproxy.interfaces import API_VERSION
from connectproxy.plugins.hostlist import HostListPolicy, HostListPolicyFactory
from connectproxy.tap import Options, buildConfig

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "plugins.md"


def parse(*argv: str) -> Options:
    """
    Parse a command line.
    """
    options = Options()
    options.parseOptions(list(argv))
    return options


# Discovery and the command line


def test_apiVersion() -> None:
    """
    The plugin API is at version 2 (connectors receive an UpstreamRequest).
    """
    assert API_VERSION == 3


def test_hostlistDiscovered() -> None:
    """
    policyFactories() finds the shipped C{hostlist} plugin by its name.
    """
    factory = policyFactories()["hostlist"]
    assert isinstance(factory, HostListPolicyFactory)
    assert factory.name == "hostlist"


def test_policyOption(tmp_path: Path) -> None:
    """
    C{--policy hostlist:FILE} builds a HostListPolicy over that file;
    repeated policies keep their order.
    """
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_text("a.example\n", encoding="utf-8")
    second.write_text("*.b.example\n", encoding="utf-8")
    options = parse("--policy", f"hostlist:{first}", "--policy", f"hostlist:{second}")
    assert options["policy"] == [f"hostlist:{first}", f"hostlist:{second}"]
    policies = options.policies
    assert all(isinstance(p, HostListPolicy) for p in policies)
    assert [(p.path, p.patterns) for p in policies] == [  # type: ignore[attr-defined]
        (str(first), ["a.example"]),
        (str(second), ["*.b.example"]),
    ]
    assert buildConfig(options, MemoryReactorClock()).gatekeeper.policies == policies


def test_policyArgumentKeepsColons(tmp_path: Path) -> None:
    """
    Everything after the first colon is the argument, colons included.
    """
    directory = tmp_path / "a:b"
    directory.mkdir()
    path = directory / "hosts"
    path.write_text("a.example\n", encoding="utf-8")
    [policy] = parse("--policy", f"hostlist:{path}").policies
    assert isinstance(policy, HostListPolicy) and policy.path == str(path)


def test_unknownPolicyNamesInstalled() -> None:
    """
    An unknown policy name is a usage error that lists the installed ones.
    """
    with pytest.raises(UsageError, match=r"installed: .*hostlist"):
        parse("--policy", "no-such-policy:x")


def test_badPolicyArgument(tmp_path: Path) -> None:
    """
    A ValueError from the factory becomes a usage error naming the policy.
    """
    path = tmp_path / "hosts"
    path.write_text("a.*.example\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"^--policy hostlist: .*line 1"):
        parse("--policy", f"hostlist:{path}")


def test_helpPolicies(capsys: pytest.CaptureFixture[str]) -> None:
    """
    C{--help-policies} prints each installed policy with its description and
    exits 0.
    """
    with pytest.raises(SystemExit) as raised:
        parse("--help-policies")
    assert raised.value.code == 0
    out = capsys.readouterr().out
    assert f"hostlist: {HostListPolicyFactory.description}\n" in out


# The examples of docs/plugins.md


def docsCode() -> str:
    """
    The Python examples of docs/plugins.md, in order, as one program.
    """
    text = DOCS.read_text(encoding="utf-8")
    return "\n\n".join(re.findall(r"^```python\n(.*?)^```$", text, re.S | re.M))


DOCS_TESTS = re.findall(r"^def (test_\w+)\(", docsCode(), re.M)


def test_docsHaveTests() -> None:
    """
    docs/plugins.md shows tests, which the next test runs.
    """
    assert len(DOCS_TESTS) >= 4


@pytest.mark.parametrize("name", DOCS_TESTS)
def test_docsExample(name: str) -> None:
    """
    Each test in the examples of docs/plugins.md passes.
    """
    namespace: dict[str, Any] = {"__name__": "docs_plugins"}
    exec(compile(docsCode(), str(DOCS), "exec"), namespace)
    namespace[name]()
