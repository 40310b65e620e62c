# -*- test-case-name: tests.integration.test_htpasswd_files -*-
"""
L{connectproxy._htpasswd.HtpasswdChecker} against files written by Apache's own
C{htpasswd} tool (Debian package C{apache2-utils}), verified in the checker's
real thread pool under the global reactor that pytest-twisted runs.

Without the tool these tests are skipped, except under C{CI}, where they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin

from connectproxy._htpasswd import HtpasswdChecker

pytestmark = pytest.mark.integration

USERS = [
    # (htpasswd flags, user, password, the hash prefix the flags give)
    (["-B", "-C", "4"], "bcrypt", "b-secret", "$2y$04$"),
    (["-m"], "md5", "m-secret", "$apr1$"),
    (["-2"], "sha256", "s2-secret", "$5$"),
    (["-5"], "sha512", "s5-secret", "$6$"),
    (["-s"], "sha1", "s1-secret", "{SHA}"),
    (["-p"], "plain", "plain secret!", "plain secret!"),
    (["-B", "-C", "4"], "jürgen", "pä:ss:wört", "$2y$04$"),
    (["-m"], "colons", "a:b:c:", "$apr1$"),
]


@pytest.fixture(scope="module")
def htpasswd() -> str:
    """
    The path of Apache's C{htpasswd} tool.
    """
    tool = shutil.which("htpasswd")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("htpasswd is missing: install the apache2-utils package")
        pytest.skip("htpasswd is missing: install the apache2-utils package")
    return tool


def runHtpasswd(tool: str, *arguments: str) -> None:
    subprocess.run([tool, *arguments], check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def htpasswdFile(htpasswd: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """
    An htpasswd file with one user for each of L{USERS}, written by the tool.
    """
    path = tmp_path_factory.mktemp("htpasswd") / "users"
    for index, (flags, user, password, _) in enumerate(USERS):
        create = ["-c"] if index == 0 else []
        runHtpasswd(htpasswd, *create, "-b", *flags, str(path), user, password)
    return path


@contextmanager
def runningChecker(path: Path, **kwargs: Any) -> Iterator[HtpasswdChecker]:
    """
    A checker on the global reactor, whose thread pool is stopped afterwards.
    """
    checker = HtpasswdChecker(str(path), **kwargs)
    try:
        yield checker
    finally:
        checker.stop()


@pytest.fixture
def checker(htpasswdFile: Path) -> Iterator[HtpasswdChecker]:
    """
    A checker that accepts plaintext entries, on the global reactor.
    """
    with runningChecker(htpasswdFile, allowPlaintext=True) as checker:
        yield checker


async def check(checker: HtpasswdChecker, user: str, password: str) -> bytes | None:
    """
    @return: The avatar ID, or C{None} for an L{UnauthorizedLogin}.
    """
    credentials = UsernamePassword(user.encode("utf-8"), password.encode("utf-8"))
    try:
        result: bytes = await checker.requestAvatarId(credentials)
    except UnauthorizedLogin:
        return None
    return result


def test_toolWroteEachFormat(htpasswdFile: Path) -> None:
    """
    Each flag gave the hash format these tests mean to cover.
    """
    lines = htpasswdFile.read_text(encoding="utf-8").splitlines()
    stored = dict(line.split(":", 1) for line in lines)
    for _, user, _, prefix in USERS:
        assert stored[user].startswith(prefix), user


@pytest.mark.parametrize(
    "user, password", [(user, password) for _, user, password, _ in USERS]
)
@pytest_twisted.ensureDeferred
async def test_rightPassword(
    checker: HtpasswdChecker, user: str, password: str
) -> None:
    """
    Each user logs in with the password given to C{htpasswd}.
    """
    assert await check(checker, user, password) == user.encode("utf-8")


@pytest.mark.parametrize(
    "user, password", [(user, password) for _, user, password, _ in USERS]
)
@pytest_twisted.ensureDeferred
async def test_wrongPassword(
    checker: HtpasswdChecker, user: str, password: str
) -> None:
    """
    Each user is refused with another password, or a truncated one.
    """
    assert await check(checker, user, password + "x") is None
    assert await check(checker, user, password[:-1]) is None


@pytest_twisted.ensureDeferred
async def test_unknownUser(checker: HtpasswdChecker) -> None:
    """
    A user who is not in the file is refused.
    """
    assert await check(checker, "nobody", "b-secret") is None


@pytest_twisted.ensureDeferred
async def test_plaintextRefusedByDefault(htpasswdFile: Path) -> None:
    """
    Without C{allowPlaintext}, the C{-p} user cannot log in; the others can.
    """
    with runningChecker(htpasswdFile) as checker:
        assert await check(checker, "plain", "plain secret!") is None
        assert await check(checker, "md5", "m-secret") == b"md5"


@pytest_twisted.ensureDeferred
async def test_toolChangesAreReloaded(
    htpasswd: str, htpasswdFile: Path, tmp_path: Path
) -> None:
    """
    Passwords changed and users deleted with the tool take effect on reload.
    """
    path = tmp_path / "users"
    shutil.copyfile(htpasswdFile, path)
    with runningChecker(path) as checker:
        assert await check(checker, "md5", "m-secret") == b"md5"
        runHtpasswd(htpasswd, "-b", "-B", "-C", "4", str(path), "md5", "changed")
        runHtpasswd(htpasswd, "-D", str(path), "sha1")
        assert checker.reload()
        assert await check(checker, "md5", "m-secret") is None
        assert await check(checker, "md5", "changed") == b"md5"
        assert await check(checker, "sha1", "s1-secret") is None


@pytest_twisted.ensureDeferred
async def test_bcryptPasswordOver72Bytes(htpasswd: str, tmp_path: Path) -> None:
    """
    A user given an 80-byte password with C{htpasswd -B} (which hashes its
    first 72 bytes, all bcrypt uses) logs in with that password, as with
    Apache, and not with one that differs within the first 72 bytes.
    """
    password = "p" * 40 + "q" * 40
    path = tmp_path / "users"
    runHtpasswd(htpasswd, "-c", "-b", "-B", "-C", "4", str(path), "long", password)
    assert path.read_text(encoding="utf-8").startswith("long:$2y$04$")
    with runningChecker(path) as checker:
        assert await check(checker, "long", password) == b"long"
        assert await check(checker, "long", "p" * 39 + "x" + "q" * 40) is None
