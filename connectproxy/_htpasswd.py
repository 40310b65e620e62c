# -*- test-case-name: tests.test_htpasswd -*-
"""
Checking credentials against an Apache htpasswd file without blocking the
reactor, and explaining files that cannot be read.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pwd
from functools import partial
from typing import Final

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from ._credentials import ProxyCredentials, _asBytes, _hasControl
from ._errors import CheckerBusy
from ._htpasswdhashes import HtpasswdEntry, classify, slowest
from ._limiter import makeRoom
from ._verifyqueue import ThreadRunner, Verification, VerificationQueue

__all__ = ["CheckerBusy", "HtpasswdChecker", "unreadableFile"]


def _fileSignature(status: os.stat_result) -> tuple[int, int, int]:
    return (status.st_ino, status.st_size, status.st_mtime_ns)


_CACHE_LIMIT: Final = 10_000
_STAT_INTERVAL: Final = 1.0


@implementer(ICredentialsChecker)
class HtpasswdChecker:
    """
    Check L{IUsernamePassword} credentials against an Apache htpasswd file.

    bcrypt (C{$2y$}, C{$2a$}, C{$2b$}; the first 72 bytes of the password,
    as Apache does), Apache MD5 (C{$apr1$}), SHA-crypt (C{$5$}, C{$6$}) and
    unsalted SHA-1 (C{{SHA}}) entries are verified in a small thread pool of
    its own, behind a bounded L{VerificationQueue} shared fairly between
    clients (L{ProxyCredentials} name the client); plaintext entries only
    when C{allowPlaintext} is set. Other entries never match. Successes are
    cached briefly under a keyed hash, and the file is reloaded when it
    changes.

    Call L{bind} with the reactor before use and L{stop} at shutdown.

    @ivar path: The htpasswd file.
    @ivar allowPlaintext: Whether plaintext entries may match; set it, then
        call L{reload}, to change it.
    @ivar cacheTTL: Seconds a success is remembered (0 disables the cache).
    """

    credentialInterfaces = (IUsernamePassword,)
    _log = Logger()

    def __init__(
        self,
        path: str,
        allowPlaintext: bool = False,
        cacheTTL: float = 30.0,
        maxThreads: int = 2,
        clock: IReactorTime | None = None,
        *,
        runInThread: ThreadRunner | None = None,
        maxQueued: int = 256,
        maxQueuedPerClient: int | None = None,
    ) -> None:
        """
        Load the file.

        @param maxThreads: The most verifications that run at once.
        @param maxQueued: The most verifications waiting or running; beyond
            that a check fails at once with L{CheckerBusy} (a flood of
            logins from many addresses cannot queue unbounded work).
        @param maxQueuedPerClient: The most verifications of one client
            address waiting or running (beyond: L{CheckerBusy}); by default
            a sixteenth of C{maxQueued}, at least 1.
        @param clock: The time source of the cache and of the change checks;
            the bound reactor when C{None}.
        @param runInThread: Replaces the thread pool (for tests).
        @raise ValueError: If the file cannot be read.
        """
        self.path = path
        self.allowPlaintext = allowPlaintext
        self.cacheTTL = cacheTTL
        self._maxThreads = maxThreads
        self._clock = clock
        if maxQueuedPerClient is None:
            maxQueuedPerClient = max(1, maxQueued // 16)
        self._runInThread = self._runInPool if runInThread is None else runInThread
        self._queue = VerificationQueue(
            lambda verification: self._runInThread(verification),
            maxThreads,
            maxQueued,
            maxQueuedPerClient,
        )
        self._reactor: IReactorFromThreads | None = None
        self._pool: ThreadPool | None = None
        self._stopped = False
        self._secret = os.urandom(32)
        self._cache: dict[bytes, float] = {}
        self._entries: dict[bytes, HtpasswdEntry] = {}
        self._dummy: HtpasswdEntry | None = None
        self._generation = 0
        self._signature: tuple[int, int, int] | None = None
        self._lastStat: float | None = None
        try:
            self._load()
        except OSError as e:
            raise ValueError(
                f"cannot read htpasswd file {path}: {unreadableFile(e)}"
            ) from e

    def bind(self, reactor: IReactorFromThreads) -> None:
        """
        Use C{reactor} to deliver results from the thread pool (and, without
        a C{clock}, as the clock).
        """
        self._reactor = reactor

    def stop(self) -> None:
        """
        Stop the thread pool: verifications still queued are dropped (they
        fail with L{CheckerBusy}), and only those already running are
        waited for.  Later checks fail rather than start threads that would
        keep the process alive.
        """
        self._stopped = True
        self._queue.stop()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()

    def reload(self) -> bool:
        """
        Read the file again; if that fails, log why and keep the users
        loaded before.

        @return: Whether the file was read.
        """
        try:
            self._load()
        except OSError as e:
            self._log.error(
                "cannot read htpasswd file {path}, keeping the {count} users "
                "loaded before: {error}",
                path=self.path,
                error=unreadableFile(e),
                count=len(self._entries),
                event="auth_file_error",
            )
            return False
        return True

    # The interface says Deferred[bytes | tuple[()]] (the tuple is ANONYMOUS);
    # Deferred is invariant, and this one always fires with bytes.
    def requestAvatarId(  # type: ignore[override]
        self, credentials: IUsernamePassword
    ) -> Deferred[bytes]:
        """
        Check a user name and password.

        @param credentials: With L{ProxyCredentials}, the check counts
            towards the share of the client named there; other credentials
            share one.
        @return: A L{Deferred} that fires with the UTF-8 user name, or fails
            with L{UnauthorizedLogin}, or with L{CheckerBusy} when too many
            checks (or too many of this client) are queued already.
        """
        self._maybeReload()
        user, password = _asBytes(credentials.username), _asBytes(credentials.password)
        if b"\0" in user:
            return fail(UnauthorizedLogin())
        key = hmac.new(self._secret, user + b"\0" + password, hashlib.sha256).digest()
        if self._isCached(key):
            return succeed(user)
        entry = self._entries.get(user)
        target = entry if entry is not None and entry.scheme else self._dummy
        if target is None:
            return fail(UnauthorizedLogin())
        generation = self._generation

        def checked(matched: bool) -> bytes:
            if not matched or target is not entry:
                raise UnauthorizedLogin()
            if generation == self._generation:
                self._remember(key)
            return user

        if self._stopped:
            return fail(UnauthorizedLogin())
        client = credentials.client if isinstance(credentials, ProxyCredentials) else ""
        try:
            d = self._queue.submit(client, partial(self._verify, target, password))
        except CheckerBusy as e:
            self._log.warn(
                "password checks queued: {count} in all, {clientCount} from "
                "{client}; refused one: {reason}",
                count=self._queue.queued,
                clientCount=self._queue.clientQueued(client),
                client=client or "-",
                reason=e.reason,
                event="auth_overloaded",
            )
            return fail(e)
        return d.addErrback(self._verificationFailed).addCallback(checked)

    def _verify(self, entry: HtpasswdEntry, password: bytes) -> bool:
        """
        Run one verification, in a pool thread; skip it after L{stop}.
        """
        return not self._stopped and entry.verify(password)

    def _verificationFailed(self, reason: Failure) -> Failure:
        if reason.check(UnauthorizedLogin, CancelledError, CheckerBusy):
            # A cancelled check (the client left) is not a failed login, nor
            # is one dropped because the checker stops.
            return reason
        self._log.failure(
            "password verification failed unexpectedly",
            reason,
            LogLevel.error,
            event="auth_verify_error",
        )
        return Failure(UnauthorizedLogin())

    def _now(self) -> float:
        clock = self._clock
        if clock is None:
            clock = IReactorTime(self._threadReactor())
        return clock.seconds()

    def _threadReactor(self) -> IReactorFromThreads:
        if self._reactor is None:
            from twisted.internet import reactor as globalReactor

            return IReactorFromThreads(globalReactor)
        return self._reactor

    def _runInPool(self, verification: Verification) -> Deferred[bool]:
        if self._pool is None:
            self._pool = ThreadPool(0, self._maxThreads, "connectproxy-htpasswd")
            self._pool.start()
        return deferToThreadPool(self._threadReactor(), self._pool, verification)

    def _isCached(self, key: bytes) -> bool:
        expiry = self._cache.get(key)
        if expiry is None:
            return False
        if expiry > self._now():
            return True
        del self._cache[key]
        return False

    def _remember(self, key: bytes) -> None:
        if self.cacheTTL <= 0:
            return
        now = self._now()
        self._cache.pop(key, None)
        # Constant TTL: insertion order is expiry order, so the oldest is first.
        makeRoom(self._cache, lambda expiry: expiry <= now, _CACHE_LIMIT)
        self._cache[key] = now + self.cacheTTL

    def _maybeReload(self) -> None:
        now = self._now()
        if self._lastStat is not None and 0 <= now - self._lastStat < _STAT_INTERVAL:
            return
        self._lastStat = now
        try:
            signature: tuple[int, int, int] | None = _fileSignature(os.stat(self.path))
        except OSError:
            signature = None
        if signature != self._signature:
            self._signature = signature
            self.reload()

    def _load(self) -> None:
        signature, data = _readFile(self.path)
        entries = self._parse(data)
        self._entries = entries
        self._dummy = slowest(entries.values())
        self._signature = signature
        self._cache.clear()
        self._generation += 1
        self._log.info(
            "htpasswd file {path} loaded: {count} users",
            path=self.path,
            count=len(entries),
            event="auth_file_loaded",
        )

    def _parse(self, data: bytes) -> dict[bytes, HtpasswdEntry]:
        entries: dict[bytes, HtpasswdEntry] = {}
        weak: list[str] = []
        for number, rawLine in enumerate(data.split(b"\n"), 1):
            line = rawLine.rstrip(b"\r")
            if not line.strip() or line.lstrip().startswith(b"#"):
                continue
            try:
                user, colon, stored = line.decode("utf-8").partition(":")
            except UnicodeDecodeError:
                self._skipped(number, "not UTF-8")
                continue
            if not colon or not user or _hasControl(user):
                self._skipped(number, "not user:hash")
                continue
            key = user.encode("utf-8")
            if key in entries:
                self._skipped(number, "duplicate user (the first line wins)")
                continue
            scheme, problem = classify(stored, self.allowPlaintext)
            if problem:
                self._log.warn(
                    "htpasswd file {path}: user {user} can never log in: {reason}",
                    path=self.path,
                    user=user,
                    reason=problem,
                    event="auth_entry_unusable",
                )
            elif scheme == "sha1":
                weak.append(user)
            entries[key] = HtpasswdEntry(scheme, stored)
        if weak:
            self._log.warn(
                "htpasswd file {path}: {count} users have weak unsalted {{SHA}} "
                "hashes ({users}); re-create them with htpasswd -B",
                path=self.path,
                count=len(weak),
                users=", ".join(weak[:10]) + (", ..." if len(weak) > 10 else ""),
                event="auth_weak_hashes",
            )
        return entries

    def _skipped(self, lineNumber: int, reason: str) -> None:
        self._log.warn(
            "htpasswd file {path}: line {lineNumber} skipped: {reason}",
            path=self.path,
            lineNumber=lineNumber,
            reason=reason,
            event="auth_line_skipped",
        )


def _readFile(path: str) -> tuple[tuple[int, int, int], bytes]:
    """
    @return: The signature and the contents of the file at C{path}.
    @raise OSError: If it cannot be read.
    """
    with open(path, "rb") as f:
        signature = _fileSignature(os.fstat(f.fileno()))
        return signature, f.read()


def _serviceUser() -> str:
    """
    @return: The name of the user the process runs as (after C{twistd
        --uid}, the one it switched to), or C{uid N} for a user without one.
    """
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def unreadableFile(error: OSError) -> str:
    """
    Say why a file could not be read, and for a permission problem what to
    change: a file read again after C{twistd --uid} dropped privileges
    (on a change or on SIGHUP) must be readable by the service user.

    @return: A short phrase for a log line or an error message.
    """
    if isinstance(error, PermissionError):
        return (
            f"permission denied for user {_serviceUser()}; make it readable "
            "by the service user or use systemd LoadCredential="
        )
    return (error.strerror or str(error)).lower()
