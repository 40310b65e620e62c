# -*- test-case-name: tests.test_admission,tests.test_authentication -*-
"""
Who may tunnel where: the checks a CONNECT passes between its head and its
upstream connect.

In order: the client's address (at its first bytes), authentication
(C{Proxy-Authorization: Basic} through a C{twisted.cred} portal), the
destination port and host rules, then the plugin policies.  The destination
network rules are applied to resolved addresses by the connector.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Sequence
from typing import Any

from twisted.cred.error import LoginFailed
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    fail,
    inlineCallbacks,
    maybeDeferred,
    succeed,
)
from twisted.internet.interfaces import IAddress
from twisted.logger import Logger
from zope.interface import Interface, implementer

from ._access import AccessRequest
from ._address import clientHostPort
from ._connector import UpstreamRequest
from ._credentials import ProxyCredentials, parseBasicCredentials
from ._errors import CheckerBusy, InvalidCredentials, Refusal, Refused
from ._hostnames import normalizeHost
from ._limiter import FailureLimiter
from ._networks import parseAddress
from ._observer import Outcome, outcomeForStatus
from ._parser import RequestHead
from ._rules import AccessRules
from ._target import TargetForm
from .interfaces import IAccessPolicy

__all__ = ["Gatekeeper", "IProxyUser", "Refused", "clientHostPort"]


class IProxyUser(Interface):
    """
    The avatar interface of proxy users: the portal's realm answers with
    the user name.
    """


@implementer(IRealm)
class _UserNameRealm:
    """
    A realm whose avatars are just the user names: UTF-8 bytes, or text
    from checkers that answer with text.
    """

    def requestAvatar(
        self, avatarId: bytes | str | tuple[()], mind: object, *interfaces: Any
    ) -> tuple[Any, str, Any]:
        if isinstance(avatarId, bytes):
            avatarId = avatarId.decode("utf-8", "replace")
        if not isinstance(avatarId, str):
            raise TypeError(f"a checker answered {avatarId!r}, not a user name")
        return IProxyUser, avatarId, lambda: None


def userPortal(checkers: Iterable[Any]) -> Portal:
    """
    A portal over C{checkers} whose avatars are user names.
    """
    return Portal(_UserNameRealm(), list(checkers))


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Gatekeeper:
    """
    Applies the access checks for one configuration.  A reload builds a new
    one; connections already past it are not affected.

    @ivar rules: The built-in rules.
    @ivar policies: The plugin policies, in order.
    @ivar portal: The portal checking credentials, or C{None} when no
        authentication is required.
    @ivar realm: The realm named in C{Proxy-Authenticate}.
    @ivar limiter: Slows down clients that fail to log in repeatedly.
    """

    _log = Logger()

    def __init__(
        self,
        rules: AccessRules,
        policies: Sequence[IAccessPolicy] = (),
        portal: Portal | None = None,
        realm: str = "connectproxy",
        limiter: FailureLimiter | None = None,
    ) -> None:
        self.rules = rules
        self.policies = list(policies)
        self.portal = portal
        self.realm = realm
        self.limiter = limiter
        if not realm or not all(" " <= c <= "~" for c in realm):
            raise ValueError(f"the realm {realm!r} must be printable ASCII")
        self._challenge = (
            ("Proxy-Authenticate", f'Basic realm={_quote(realm)}, charset="UTF-8"'),
        )

    def checkClient(
        self, address: object, socketAddress: object = None
    ) -> Refused | None:
        """
        Whether a client may use the proxy at all.  UNIX socket clients
        always may: file permissions guard those sockets.

        @param address: The client's address: the transport's peer, or the
            one a PROXY-protocol header named.
        @param socketAddress: The load balancer's address when C{address}
            is the one its PROXY-protocol header named, else C{None}.  Such
            a client must be in the operator's networks, whatever it claims
            (the balancer's own address included): loopback is not implied.
        @return: C{None}, or why it may not.
        """
        host, _ = clientHostPort(address)
        if not host:
            return None
        client = parseAddress(host)
        balancer, _ = clientHostPort(socketAddress)
        if balancer:
            reason = self.rules.clients.explainProxied(client, parseAddress(balancer))
        else:
            reason = self.rules.clients.explain(client)
        return None if reason is None else Refused(403, reason)

    @property
    def immediate(self) -> bool:
        """
        Whether L{admitNow} can decide: no authentication and no plugin
        policies, whose answers may take time.
        """
        return self.portal is None and not self.policies

    def admit(
        self, client: IAddress | None, request: RequestHead
    ) -> Deferred[UpstreamRequest]:
        """
        Authenticate and authorise a request for a destination.

        @param client: The client's address (behind a PROXY-protocol
            listener, the one the header claims).
        @param request: The request head; it must have a destination (a
            CONNECT's authority, or an absolute-form target).
        @return: A Deferred firing with what the upstream connector is to
            connect: the normalised target the host rules and policies saw,
            the user name (C{None} when no authentication is configured),
            the client and the request; or failing with L{Refused}.
        """
        if self.immediate:
            try:
                return succeed(self.admitNow(client, request))
            except Exception:
                return fail()
        return self._admit(client, request)

    def admitNow(
        self, client: IAddress | None, request: RequestHead
    ) -> UpstreamRequest:
        """
        Authorise a request for a destination at once, when the gatekeeper
        is L{immediate}: the same checks as L{admit}, without a Deferred.

        @param client: As for L{admit}.
        @param request: As for L{admit}.
        @return: What the upstream connector is to connect, the user
            C{None}.
        @raise Refused: When the rules refuse it.
        """
        assert self.immediate, "authentication or policies need admit()"
        return self._checkDestination(client, request, None)[1]

    def _checkDestination(
        self, client: IAddress | None, request: RequestHead, user: str | None
    ) -> tuple[AccessRequest, UpstreamRequest]:
        """
        The port and host rules.

        @return: What the policies check, and what the connector connects.
        @raise Refused: When the rules refuse the destination.
        """
        destination = request.destination
        assert destination is not None
        port = destination.port
        forwarded = destination.form is TargetForm.ABSOLUTE
        if not self.rules.ports.allows(port, forwarded):
            raise Refused(
                403,
                f"port {port} is not allowed (see --allow-port)",
                user=user,
            )
        try:
            host = normalizeHost(destination.host)
        except ValueError:
            raise Refused(400, "invalid host name in target", user=user) from None
        denial = self.rules.hosts.explain(host)
        if denial is not None:
            raise Refused(403, f"host {denial}", user=user)
        clientHost, clientPort = clientHostPort(client)
        access = AccessRequest(clientHost, clientPort, user, host, port, request)
        return access, UpstreamRequest(host, port, user, client, request)

    @inlineCallbacks
    def _admit(
        self, client: IAddress | None, request: RequestHead
    ) -> Generator[Deferred[Any], Any, UpstreamRequest]:
        """
        L{admit}, with authentication or policies to wait for.
        """
        clientHost, _ = clientHostPort(client)
        user: str | None = None
        if self.portal is not None:
            user = yield self._authenticate(clientHost, request)
        access, target = self._checkDestination(client, request, user)
        for policy in self.policies:
            try:
                refusal = yield maybeDeferred(policy.checkAccess, access)
            except CancelledError:
                # The client left or the deadline passed: not the policy's fault.
                raise
            except Exception:
                self._log.failure(
                    "access policy {policy!r} failed",
                    policy=policy,
                    event="policy_error",
                )
                raise Refused(500, "an access policy failed", user=user) from None
            if isinstance(refusal, Refusal):
                # A policy's 4xx is a denial, whatever its status.
                outcome = (
                    Outcome.DENIED
                    if refusal.status < 500
                    else outcomeForStatus(refusal.status)
                )
                raise Refused(
                    refusal.status, refusal.reason, user=user, outcome=outcome
                )
            if refusal is not None:
                # Fail closed on an answer the interface does not allow.
                self._log.error(
                    "access policy {policy!r} answered {answer!r}, not None "
                    "or a Refusal",
                    policy=policy,
                    answer=refusal,
                    event="policy_error",
                )
                raise Refused(500, "an access policy failed", user=user)
        return target

    @inlineCallbacks
    def _authenticate(
        self, clientHost: str, request: RequestHead
    ) -> Generator[Deferred[Any], Any, str]:
        """
        Check the request's Basic credentials.

        @return: A Deferred firing with the user name, or failing with
            L{Refused}: 407 (keep-alive) for missing or wrong credentials,
            429 for a user name (or, after failures with many user names, a
            whole address) that failed too often lately from this address,
            503 when the checker is too busy.
        """
        assert self.portal is not None
        limiter = self.limiter
        if limiter is not None:
            self._refuseIfBlocked(limiter.clientBlockedFor(clientHost), True)
        value = request.getHeader("proxy-authorization")
        if value is None:
            raise Refused(407, "proxy authentication required", self._challenge, True)
        try:
            userName, password = parseBasicCredentials(value)
        except InvalidCredentials as e:
            # Counted as failures of a user name of their own.
            if limiter is not None:
                self._refuseIfBlocked(limiter.blockedFor(clientHost, ""), False)
            self._failed(clientHost, None, e.reason)
            raise Refused(
                407,
                "invalid credentials",
                self._challenge,
                True,
                outcome=Outcome.AUTH_FAILED,
            ) from None
        if limiter is not None:
            self._refuseIfBlocked(limiter.blockedFor(clientHost, userName), False)
        credentials = ProxyCredentials(
            userName.encode("utf-8"), password.encode("utf-8"), clientHost
        )
        if limiter is not None:
            limiter.attemptStarted(clientHost, userName)
        try:
            _, avatar, _ = yield self.portal.login(credentials, None, IProxyUser)
        except LoginFailed:
            self._failed(clientHost, userName, "wrong user name or password")
            raise Refused(
                407,
                "invalid credentials",
                self._challenge,
                True,
                outcome=Outcome.AUTH_FAILED,
            ) from None
        except CheckerBusy as e:
            raise Refused(503, e.reason, [("Retry-After", "1")]) from None
        finally:
            if limiter is not None:
                limiter.attemptEnded(clientHost, userName)
        # A success does not clear the failures of other user names, nor its
        # own: one valid password must not make guessing passwords free.
        assert isinstance(avatar, str)
        return avatar

    def _refuseIfBlocked(self, blocked: float | None, wholeClient: bool) -> None:
        """
        @param blocked: Seconds until the client may try again, or C{None}.
        @param wholeClient: Whether the whole address is blocked, rather
            than one user name from it.
        @raise Refused: 429 with C{Retry-After}, when C{blocked}.
        """
        if blocked is None:
            return
        reason = (
            "too many failed logins with different user names from this "
            "address; try again later"
            if wholeClient
            else "too many failed logins for this user; try again later"
        )
        raise Refused(429, reason, [("Retry-After", str(max(1, int(blocked + 0.999))))])

    def _failed(self, clientHost: str, userName: str | None, reason: str) -> None:
        self._log.info(
            "login failed for {user!r} from {client}: {reason}",
            event="auth_failed",
            client=clientHost,
            user=userName,
            reason=reason,
        )
        if self.limiter is None:
            return
        blocked = self.limiter.recordFailure(clientHost, userName or "")
        if blocked == "client":
            self._log.warn(
                "{client} refused for {seconds} s: failed logins with "
                "{count} different user names",
                event="auth_blocked",
                scope=blocked,
                client=clientHost,
                user=None,
                seconds=self.limiter.blockFor,
                count=self.limiter.maxUsers,
            )
        elif blocked == "user":
            self._log.warn(
                "{what} refused from {client} for {seconds} s: {count} failed logins",
                event="auth_blocked",
                scope=blocked,
                what="malformed credentials"
                if userName is None
                else f"user {userName!r}",
                client=clientHost,
                user=userName,
                seconds=self.limiter.blockFor,
                count=self.limiter.maxFailures,
            )
