"""
Helpers shared by the test modules: constants, credential checkers and
access policies that the tests drive by hand, harnesses built with them,
and what the tests of services made by C{makeService} need.

What plugin authors may want too is in L{connectproxy.testing} instead
(L{ProxyHarness}, L{FakeClient.response}, L{connectHead}, ...).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from twisted.application.service import MultiService
from twisted.cred.checkers import (
    ICredentialsChecker,
    InMemoryUsernamePasswordDatabaseDontUse,
)
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.logger import LogEvent
from twisted.python.failure import Failure
from zope.interface import implementer

from connectproxy import AccessRequest, ConnectProxyFactory, ProxySettings, Refusal
from connectproxy._admission import Gatekeeper, userPortal
from connectproxy._htpasswd import HtpasswdChecker
from connectproxy._limiter import FailureLimiter
from connectproxy._rules import AccessRules
from connectproxy._service import ListenerService, ReloadService
from connectproxy.interfaces import IAccessPolicy
from connectproxy.tap import Options
from connectproxy.testing import ProxyHarness

#: The proxy's answer to a CONNECT once the upstream connected.
ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"
#: A client address outside the default client rules.
FOREIGN = IPv4Address("TCP", "192.0.2.10", 5000)
#: Credentials the harnesses of L{authHarness} accept.
GOOD = b"alice:secret"


def basic(credentials: bytes, scheme: str = "Basic") -> str:
    """
    A C{Proxy-Authorization} field carrying C{credentials} in base64.
    """
    token = base64.b64encode(credentials).decode("ascii")
    return f"Proxy-Authorization: {scheme} {token}"


def failuresLogged(events: list[LogEvent]) -> list[LogEvent]:
    """
    The events among C{events} that carry a failure.
    """
    return [event for event in events if "log_failure" in event]


@implementer(ICredentialsChecker)
class CountingChecker:
    """
    An in-memory, synchronous checker that keeps the user names it was
    asked about.

    @ivar asked: The user names (bytes) of every check, in order.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, users: dict[bytes, bytes]) -> None:
        self._database = InMemoryUsernamePasswordDatabaseDontUse()
        for name, password in users.items():
            self._database.addUser(name, password)
        self.asked: list[bytes] = []

    def requestAvatarId(self, credentials: Any) -> Deferred[bytes | tuple[()]]:
        self.asked.append(credentials.username)
        result: Deferred[bytes | tuple[()]] = self._database.requestAvatarId(
            credentials
        )
        return result


@implementer(ICredentialsChecker)
class PendingChecker:
    """
    A checker whose answers the test gives by firing the Deferreds in
    C{pending}.

    @ivar cancelled: How many checks were cancelled.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self) -> None:
        self.pending: list[Deferred[bytes | tuple[()]]] = []
        self.cancelled = 0

    def requestAvatarId(self, credentials: Any) -> Deferred[bytes | tuple[()]]:
        d: Deferred[bytes | tuple[()]] = Deferred(self._cancel)
        self.pending.append(d)
        return d

    def _cancel(self, d: Deferred[bytes | tuple[()]]) -> None:
        self.cancelled += 1


@implementer(ICredentialsChecker)
class RaisingChecker:
    """
    A broken checker: it raises something other than L{UnauthorizedLogin}.
    """

    credentialInterfaces = (IUsernamePassword,)

    def requestAvatarId(self, credentials: Any) -> Deferred[bytes | tuple[()]]:
        raise RuntimeError("checker bug")


@implementer(IAccessPolicy)
class StaticPolicy:
    """
    A policy that gives every request the same answer at once: C{answer}
    itself (C{None}, a L{Refusal}, a L{Deferred}, or anything a broken
    policy might return), or raised when it is an exception.

    @ivar seen: Every request it was asked about.
    """

    def __init__(self, answer: Any = None) -> None:
        self.answer = answer
        self.seen: list[AccessRequest] = []

    def checkAccess(self, access: AccessRequest) -> Any:
        self.seen.append(access)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@implementer(IAccessPolicy)
class LaterPolicy:
    """
    A policy that answers with a Deferred the test fires.

    @ivar pending: The Deferreds handed out, in order.
    @ivar cancelled: How many of them were cancelled.
    """

    def __init__(self) -> None:
        self.seen: list[AccessRequest] = []
        self.pending: list[Deferred[Refusal | None]] = []
        self.cancelled = 0

    def checkAccess(
        self, access: AccessRequest
    ) -> Refusal | Deferred[Refusal | None] | None:
        self.seen.append(access)
        d: Deferred[Refusal | None] = Deferred(self._cancel)
        self.pending.append(d)
        return d

    def _cancel(self, d: Deferred[Refusal | None]) -> None:
        self.cancelled += 1


@implementer(IAccessPolicy)
class RaisingPolicy:
    """
    A broken policy.
    """

    def checkAccess(
        self, access: AccessRequest
    ) -> Refusal | Deferred[Refusal | None] | None:
        raise RuntimeError("policy bug")


def makeHarness(
    rules: AccessRules | None = None,
    policies: Sequence[IAccessPolicy] = (),
    checker: object = None,
    realm: str = "connectproxy",
    maxFailures: int = 3,
    blockFor: float = 60.0,
    settings: ProxySettings | None = None,
) -> ProxyHarness:
    """
    A harness whose gatekeeper has C{rules} (the defaults when C{None}),
    C{policies} and, when a C{checker} is given, authentication with a
    failure limiter on the harness clock.
    """
    harness = ProxyHarness(settings)
    harness.factory.gatekeeper = Gatekeeper(
        rules if rules is not None else AccessRules.defaults(),
        policies,
        None if checker is None else userPortal([checker]),
        realm,
        FailureLimiter(harness.clock, maxFailures, blockFor=blockFor),
    )
    return harness


def authHarness(**kwargs: Any) -> tuple[ProxyHarness, CountingChecker]:
    """
    A harness requiring authentication, with users C{alice} (password
    C{secret}) and C{zoë} (password C{pässword}).
    """
    checker = CountingChecker(
        {b"alice": b"secret", "zoë".encode(): "pässword".encode()}
    )
    return makeHarness(checker=checker, **kwargs), checker


def rulesWith(**changes: Any) -> AccessRules:
    """
    The default rules with some parts replaced.
    """
    return dataclasses.replace(AccessRules.defaults(), **changes)


def succeeded(d: Deferred[Any]) -> Any:
    """
    The result of a Deferred that has fired successfully.
    """
    outcome: list[Any] = []
    d.addBoth(outcome.append)
    [result] = outcome
    assert not isinstance(result, Failure), result
    return result


def failed(d: Deferred[Any]) -> BaseException:
    """
    The exception of a Deferred that has failed.
    """
    outcome: list[Any] = []
    d.addBoth(outcome.append)
    [result] = outcome
    assert isinstance(result, Failure), result
    assert result.value is not None
    return result.value


# Services made by makeService, and their configuration.


def sha1Entry(user: str, password: str) -> str:
    """
    An htpasswd line for C{user} with an unsalted C{{SHA}} hash.
    """
    digest = base64.b64encode(hashlib.sha1(password.encode("utf-8")).digest())
    return f"{user}:{{SHA}}{digest.decode('ascii')}\n"


def writeConfig(directory: Path, text: str, name: str = "proxy.toml") -> Path:
    """
    Write a configuration file and return its path.
    """
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def parse(*argv: str) -> Options:
    """
    Parse a command line.
    """
    options = Options()
    options.parseOptions(list(argv))
    return options


def named(events: list[LogEvent], name: str) -> list[LogEvent]:
    """
    The events whose C{event} field is C{name}.
    """
    return [event for event in events if event.get("event") == name]


def listenerFactory(service: MultiService) -> ConnectProxyFactory:
    """
    The proxy factory shared by the listeners of a L{makeService} service.
    """
    factories = {
        child.factory for child in service if isinstance(child, ListenerService)
    }
    [factory] = factories
    assert isinstance(factory, ConnectProxyFactory)
    return factory


def reloaderOf(service: MultiService) -> ReloadService:
    """
    The reload service of a L{makeService} service.
    """
    reloader = service.getServiceNamed("reload")
    assert isinstance(reloader, ReloadService)
    return reloader


class InlineRunner:
    """
    Runs password verifications at once, in place of an L{HtpasswdChecker}'s
    thread pool.
    """

    def __call__(self, verification: Callable[[], bool]) -> Deferred[bool]:
        return succeed(verification())


def logsIn(checker: HtpasswdChecker, user: str, password: str) -> bool:
    """
    Whether C{checker} accepts C{user} with C{password}.
    """
    checker._runInThread = InlineRunner()
    results: list[object] = []
    credentials = UsernamePassword(user.encode("utf-8"), password.encode("utf-8"))
    checker.requestAvatarId(credentials).addBoth(results.append)
    [result] = results
    if isinstance(result, Failure):
        result.trap(UnauthorizedLogin)
        return False
    return True


def currentChecker(factory: ConnectProxyFactory) -> HtpasswdChecker:
    """
    The htpasswd checker the factory's gatekeeper logs users in with.
    """
    portal = factory.gatekeeper.portal
    assert portal is not None
    checker = portal.checkers[IUsernamePassword]
    assert isinstance(checker, HtpasswdChecker)
    return checker
