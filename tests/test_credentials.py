# -*- test-case-name: tests.test_credentials -*-
"""
Tests for L{connectproxy._credentials}: parsing C{Proxy-Authorization:
Basic} credentials, and the credentials the proxy passes to checkers.
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.cred.credentials import IUsernamePassword
from zope.interface.verify import verifyObject

from connectproxy._credentials import (
    InvalidCredentials,
    ProxyCredentials,
    parseBasicCredentials,
)

_PROPERTY = settings(max_examples=300, deadline=None)


def basic(raw: bytes) -> str:
    """
    A C{Basic} header value carrying C{raw}.
    """
    return "Basic " + base64.b64encode(raw).decode("ascii")


# parseBasicCredentials


@pytest.mark.parametrize(
    "value, expected",
    [
        (basic(b"user:pass"), ("user", "pass")),
        ("BASIC " + basic(b"user:pass")[6:], ("user", "pass")),
        ("basic " + basic(b"user:pass")[6:], ("user", "pass")),
        ("bAsIc " + basic(b"user:pass")[6:], ("user", "pass")),
        ("Basic    " + basic(b"user:pass")[6:], ("user", "pass")),
        (" " + basic(b"user:pass") + " \t", ("user", "pass")),
        (basic(b"user:pa:ss:"), ("user", "pa:ss:")),
        (basic(b"user:"), ("user", "")),
        (basic("jürgen:pässwörd".encode()), ("jürgen", "pässwörd")),
    ],
)
def test_parseBasicAccepts(value: str, expected: tuple[str, str]) -> None:
    """
    Well-formed Basic credentials give the user-id and the password.
    """
    assert parseBasicCredentials(value) == expected


@pytest.mark.parametrize(
    "value, reason",
    [
        ("", "not Basic credentials"),
        ("Basic", "no credentials after Basic"),
        ("Basic   ", "no credentials after Basic"),
        ("dXNlcjpwYXNz", "not Basic credentials"),
        ("Bearer dXNlcjpwYXNz", "not Basic credentials"),
        ("Basicx dXNlcjpwYXNz", "not Basic credentials"),
        ("Basic\tdXNlcjpwYXNz", "not Basic credentials"),
        ("Digest username=user", "not Basic credentials"),
        ("Basic dXNlcjpwYXNz extra", "credentials are not base64"),
        ("Basic dXNlcjpwYXNz!", "credentials are not base64"),
        ("Basic !!!!", "credentials are not base64"),
        ("Basic dXNlcjpwYXNzé", "credentials are not base64"),
        ("Basic dXNlcjpwYXM", "credentials are not base64"),
        ("Basic dXNl=cjpwYXNz", "credentials are not base64"),
        ("Basic dXNlcjpwYXNz=", "credentials are not canonical base64"),
        ("Basic dXNlcjpwYR==", "credentials are not canonical base64"),
        (basic(b"userpass"), "no colon in the credentials"),
        (basic(b":pass"), "empty user-id"),
        (basic(b"\xff:pass"), "credentials are not UTF-8"),
        (basic(b"user:\xc3"), "credentials are not UTF-8"),
        (basic(b"us\x01er:pass"), "control character in the user-id"),
        (basic(b"user\x7f:pass"), "control character in the user-id"),
        (basic("user\x85:pass".encode()), "control character in the user-id"),
    ],
)
def test_parseBasicRejects(value: str, reason: str) -> None:
    """
    Malformed credentials raise L{InvalidCredentials} with a short reason.
    """
    with pytest.raises(InvalidCredentials) as info:
        parseBasicCredentials(value)
    assert info.value.reason == reason
    assert str(info.value) == reason


@_PROPERTY
@given(st.one_of(st.text(), st.binary().map(basic), st.text().map("Basic ".__add__)))
def test_parseBasicRaisesOnlyInvalidCredentials(value: str) -> None:
    """
    Arbitrary text either parses or raises L{InvalidCredentials}, nothing else.
    """
    try:
        user, _ = parseBasicCredentials(value)
    except InvalidCredentials as e:
        assert e.reason
    else:
        assert user and ":" not in user


@_PROPERTY
@given(
    st.text(
        st.characters(blacklist_categories=["Cc", "Cs"], blacklist_characters=":"),
        min_size=1,
    ),
    st.text(st.characters(blacklist_categories=["Cs"])),
)
def test_parseBasicRoundTrips(user: str, password: str) -> None:
    """
    Any valid user-id and any password survive encoding and parsing.
    """
    value = basic(f"{user}:{password}".encode())
    assert parseBasicCredentials(value) == (user, password)


# ProxyCredentials


def test_proxyCredentialsProvideInterface() -> None:
    """
    L{ProxyCredentials} provide L{IUsernamePassword}, carry the client's
    address, and never show the password.
    """
    credentials = ProxyCredentials(b"alice", b"hunter2", "192.0.2.7")
    assert verifyObject(IUsernamePassword, credentials)
    assert credentials.client == "192.0.2.7"
    assert "hunter2" not in repr(credentials)


@pytest.mark.parametrize(
    "stored, matches",
    [(b"hunter2", True), ("hunter2", True), (b"hunter3", False), ("", False)],
)
def test_proxyCredentialsCheckPassword(stored: bytes | str, matches: bool) -> None:
    """
    C{checkPassword} compares with a stored password in bytes or text.
    """
    credentials = ProxyCredentials(b"alice", b"hunter2")
    assert credentials.checkPassword(stored) is matches
