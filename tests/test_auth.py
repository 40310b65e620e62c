# -*- test-case-name: tests.test_auth -*-
"""
Tests for L{connectproxy._auth}: Twisted's own checkers made to fit the
credentials the proxy passes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.cred import strcred

from connectproxy import _auth
from connectproxy._credentials import ProxyCredentials

# LaterRunner and sha1Hash are re-exported for test modules that still
# import them from here: they live in tests.test_htpasswd and
# tests.test_verifyqueue.
from tests.test_htpasswd import Setup, resultOf
from tests.test_htpasswd import sha1Hash as sha1Hash
from tests.test_verifyqueue import LaterRunner as LaterRunner

# Twisted's checkers, adapted


def test_adaptMemoryChecker() -> None:
    """
    The C{memory} checker, made from command-line text, is given UTF-8
    bytes, and then accepts L{ProxyCredentials}.
    """
    checker = _auth.adaptChecker(strcred.makeChecker("memory:jürgen:pässwort"))
    assert checker.users == {"jürgen".encode(): "pässwort".encode()}
    right = ProxyCredentials("jürgen".encode(), "pässwort".encode())
    assert resultOf(checker.requestAvatarId(right)) == "jürgen".encode()
    wrong = ProxyCredentials("jürgen".encode(), b"x")
    assert resultOf(checker.requestAvatarId(wrong)) is None


def test_adaptFileChecker(tmp_path: Path) -> None:
    """
    The C{file} checker's file is read once when it is made: a file that
    cannot be read is a L{ValueError} naming it.
    """
    path = tmp_path / "users"
    path.write_text("alice:pw\n")
    checker = strcred.makeChecker(f"file:{path}")
    assert _auth.adaptChecker(checker) is checker
    path.unlink()
    with pytest.raises(ValueError, match=f"cannot read password file {path}: no such"):
        _auth.adaptChecker(checker)


def test_adaptOtherChecker(tmp_path: Path) -> None:
    """
    Other checkers are left as they are.
    """
    setup = Setup(tmp_path, "")
    assert _auth.adaptChecker(setup.checker) is setup.checker
