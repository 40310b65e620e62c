# -*- test-case-name: tests.test_plugins -*-
"""
Tests for access policy plugins: discovery and C{--policy}, the shipped
C{hostlist} policy, the helpers L{connectproxy.testing} offers plugin
authors, how the proxy runs policies, and the examples of docs/plugins.md.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet.defer import Deferred, fail
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent
from twisted.plugin import IPlugin
from twisted.python.usage import UsageError
from zope.interface import implementer
from zope.interface.verify import verifyObject

from connectproxy import (
    AccessRequest,
    AccessRules,
    Gatekeeper,
    HostRules,
    ProxySettings,
    Refusal,
    userPortal,
)
from connectproxy._assembly import policyFactories
from connectproxy.interfaces import API_VERSION, IAccessPolicy, IAccessPolicyFactory
from connectproxy.plugins import hostlist as hostlistModule
from connectproxy.plugins.hostlist import HostListPolicy, HostListPolicyFactory
from connectproxy.tap import Options, buildConfig
from connectproxy.testing import (
    ProxyHarness,
    accessRequest,
    checkPolicy,
    connectHead,
)

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "plugins.md"


def parse(*argv: str) -> Options:
    """
    Parse a command line.
    """
    options = Options()
    options.parseOptions(list(argv))
    return options


def hostList(directory: Path, text: str) -> HostListPolicy:
    """
    A host list policy over a file holding C{text}.
    """
    path = directory / "hosts"
    path.write_text(text, encoding="utf-8")
    return HostListPolicy(str(path))


@implementer(IAccessPolicy)
class Answer:
    """
    A policy that gives one answer (or raises it, if it is an exception)
    and remembers who asked.

    @ivar asked: Every request asked about.
    """

    def __init__(self, answer: Any) -> None:
        self._answer = answer
        self.asked: list[AccessRequest] = []

    def checkAccess(self, access: AccessRequest) -> Any:
        self.asked.append(access)
        if isinstance(self._answer, Exception):
            raise self._answer
        return self._answer


def harnessWith(*policies: Any, settings: ProxySettings | None = None) -> ProxyHarness:
    """
    A proxy with the default rules and C{policies}.
    """
    return ProxyHarness(settings, Gatekeeper(AccessRules.defaults(), policies))


# Discovery and the command line


def test_apiVersion() -> None:
    """
    The plugin API is at version 2 (connectors receive an UpstreamRequest).
    """
    assert API_VERSION == 2


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


# The hostlist policy


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
        assert answer == Refusal(403, f"host {host} is not in the allowed list")


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
            403, f"host {host} is not in the allowed list"
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
    harness = harnessWith(hostList(tmp_path, "allowed.example\n"))
    refused = harness.connectClient()
    refused.send(connectHead("denied.example:443"))
    response = refused.transport.value()
    assert response.startswith(b"HTTP/1.1 403 ")
    assert response.endswith(b"host denied.example is not in the allowed list\n")
    assert harness.connector.attempts == []
    [event] = harness.observer.refused
    assert (event.status, event.target) == (403, "denied.example:443")

    allowed = harness.connectClient()
    allowed.send(connectHead("Allowed.Example:443"))
    [attempt] = harness.connector.attempts
    assert attempt.request.host == "allowed.example"
    attempt.succeed()
    assert allowed.transport.value().startswith(b"HTTP/1.1 200 ")


# connectproxy.testing


def test_refusalStatusRange() -> None:
    """
    A refusal needs an error status.
    """
    assert Refusal(400, "x").status == 400 and Refusal(599, "x").status == 599
    for status in (200, 399, 600):
        with pytest.raises(ValueError, match="4xx or 5xx"):
            Refusal(status, "x")


# How the proxy runs policies


def test_policiesAfterBuiltInRules() -> None:
    """
    A request the port or host rules refuse never reaches the policies.
    """
    policy = Answer(None)
    rules = AccessRules.defaults()
    rules = AccessRules(
        ports=rules.ports,
        networks=rules.networks,
        hosts=HostRules.fromStrings(deny=["bad.example"]),
        clients=rules.clients,
    )
    harness = ProxyHarness(None, Gatekeeper(rules, [policy]))
    for authority, reason in [
        ("example.com:80", b"port 80 is not allowed (see --allow-port)"),
        ("bad.example:443", b"host bad.example is denied by --deny-host bad.example"),
    ]:
        client = harness.connectClient()
        client.send(connectHead(authority))
        assert client.transport.value().startswith(b"HTTP/1.1 403 ")
        assert client.transport.value().endswith(b": " + reason + b"\n")
    assert policy.asked == []


def test_policiesInOrderFirstRefusalWins() -> None:
    """
    Policies are asked in order; the first refusal is the answer and the
    policies after it are not asked.
    """
    first, second, third = Answer(None), Answer(Refusal(451, "blocked")), Answer(None)
    harness = harnessWith(first, second, third)
    client = harness.connectClient()
    client.send(connectHead("example.com:443"))
    assert client.transport.value().startswith(b"HTTP/1.1 451 ")
    assert client.transport.value().endswith(b": blocked\n")
    assert (len(first.asked), len(second.asked), third.asked) == (1, 1, [])
    assert harness.connector.attempts == []


def test_policySeesNormalisedRequest() -> None:
    """
    The policy gets the normalised host, the client's address and the
    request as sent.
    """
    policy = Answer(None)
    harness = harnessWith(policy)
    client = harness.connectClient()
    client.send(connectHead("WWW.Example.COM.:443", "User-Agent: test"))
    [access] = policy.asked
    assert (access.host, access.port, access.user) == ("www.example.com", 443, None)
    assert access.clientHost == "127.0.0.1"
    assert access.request.target == "WWW.Example.COM.:443"
    assert access.request.getHeader("user-agent") == "test"
    assert len(harness.connector.attempts) == 1


def test_policySeesUser() -> None:
    """
    Behind authentication, a policy sees the user; without credentials it is
    not asked at all.
    """
    policy = Answer(None)
    checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
    gatekeeper = Gatekeeper(AccessRules.defaults(), [policy], userPortal([checker]))
    harness = ProxyHarness(None, gatekeeper)
    anonymous = harness.connectClient()
    anonymous.send(connectHead("example.com:443", "Connection: close"))
    assert anonymous.transport.value().startswith(b"HTTP/1.1 407 ")
    assert policy.asked == []
    credentials = base64.b64encode(b"alice:secret").decode("ascii")
    client = harness.connectClient()
    client.send(
        connectHead("example.com:443", f"Proxy-Authorization: Basic {credentials}")
    )
    assert [access.user for access in policy.asked] == ["alice"]


@pytest.mark.parametrize(
    "answer",
    [RuntimeError("bug"), fail(RuntimeError("bug"))],
    ids=["raises", "fails"],
)
def test_brokenPolicy(logEvents: list[LogEvent], answer: Any) -> None:
    """
    A policy that raises or fails refuses with 500, and the failure is
    logged.
    """
    harness = harnessWith(Answer(answer))
    client = harness.connectClient()
    client.send(connectHead("example.com:443"))
    assert client.transport.value().startswith(b"HTTP/1.1 500 ")
    assert client.transport.value().endswith(b"an access policy failed\n")
    [failure] = [e["log_failure"] for e in logEvents if "log_failure" in e]
    assert failure.check(RuntimeError)


def test_slowPolicyTimesOut() -> None:
    """
    A policy that has not answered by the connect timeout has its Deferred
    cancelled, and the client gets 503.
    """
    cancelled: list[Deferred[Any]] = []
    pending: Deferred[Any] = Deferred(cancelled.append)
    harness = harnessWith(Answer(pending), settings=ProxySettings(connectTimeout=3))
    client = harness.connectClient()
    client.send(connectHead("example.com:443"))
    harness.clock.advance(2.9)
    assert client.transport.value() == b"" and cancelled == []
    harness.clock.advance(0.1)
    assert client.transport.value().startswith(b"HTTP/1.1 503 ")
    assert client.transport.value().endswith(
        b": timed out checking access after 3 seconds (see --connect-timeout)\n"
    )
    assert cancelled == [pending]
    assert harness.connector.attempts == []


def test_lateAnswerUsesTheRestOfTheDeadline() -> None:
    """
    The time a policy takes counts against the same deadline as the
    upstream connect.
    """
    pending: Deferred[Any] = Deferred()
    harness = harnessWith(Answer(pending), settings=ProxySettings(connectTimeout=3))
    client = harness.connectClient()
    client.send(connectHead("example.com:443"))
    harness.clock.advance(2)
    pending.callback(None)
    [attempt] = harness.connector.attempts
    harness.clock.advance(1)
    assert attempt.cancelled
    assert client.transport.value().startswith(b"HTTP/1.1 504 ")


def test_clientGoneCancelsPolicy() -> None:
    """
    A client that leaves while a policy is thinking cancels its Deferred.
    """
    cancelled: list[Deferred[Any]] = []
    pending: Deferred[Any] = Deferred(cancelled.append)
    harness = harnessWith(Answer(pending))
    client = harness.connectClient()
    client.send(connectHead("example.com:443"))
    client.lose()
    assert cancelled == [pending]
    assert harness.connector.attempts == []


def test_answerNeitherNoneNorRefusal(logEvents: list[LogEvent]) -> None:
    """
    A policy answering something other than None or a Refusal (here False)
    breaks its contract and is treated like a failed policy (500), not as
    an approval.
    """
    harness = harnessWith(Answer(False))
    client = harness.connectClient()
    client.send(connectHead("example.com:443"))
    assert harness.connector.attempts == []
    assert client.transport.value().startswith(b"HTTP/1.1 500 ")


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
