# -*- test-case-name: tests.test_target -*-
"""
Tests for L{connectproxy._target}: the L{Target} of a request, parsed from
the authority form of a CONNECT and from the absolute form of other methods,
with plain strings and no transport.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectproxy import Target, TargetForm
from connectproxy._errors import BadRequest
from connectproxy._target import parseAuthority

_PROPERTY = settings(max_examples=200, deadline=None)

ORIGIN_FORM = (
    "this is a proxy: send the full URL (http://host/path), or CONNECT for a tunnel"
)


def _refusal(text: str) -> tuple[int, str]:
    """Parse C{text} as an absolute-form target; return the refusal."""
    with pytest.raises(BadRequest) as info:
        Target.fromAbsoluteForm(text)
    return info.value.status, info.value.reason


# The authority form.


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("example.com:443", "example.com", 443),
        ("Example.COM.:8443", "example.com", 8443),
        ("192.0.2.1:443", "192.0.2.1", 443),
        ("[2001:DB8::1]:443", "2001:db8::1", 443),
    ],
)
def test_authorityForm(text: str, host: str, port: int) -> None:
    """
    C{fromAuthorityForm} parses C{host:port} as C{parseAuthority} does, as
    a target of the authority form without a path.
    """
    target = Target.fromAuthorityForm(text)
    assert target == Target(host, port, TargetForm.AUTHORITY)
    assert (target.host, target.port) == parseAuthority(text)
    assert target.path == ""


@pytest.mark.parametrize(
    ("target", "authority"),
    [
        (Target("example.com", 443, TargetForm.AUTHORITY), "example.com:443"),
        (Target("::1", 8080, TargetForm.ABSOLUTE, "/"), "[::1]:8080"),
    ],
)
def test_authorityProperty(target: Target, authority: str) -> None:
    """C{authority} formats host and port, bracketing IPv6 addresses."""
    assert target.authority == authority


def test_formsAreStrings() -> None:
    """The forms compare equal to their names, for logs and metrics."""
    assert [str(form) for form in TargetForm] == ["authority", "absolute"]
    assert TargetForm("absolute") is TargetForm.ABSOLUTE


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("example.com", "CONNECT target needs a port"),
        (":443", "CONNECT target needs a host"),
        ("[::1]", "CONNECT target needs a port"),
        ("http://example.com/", "invalid port in target"),
    ],
)
def test_authorityFormRefusals(text: str, reason: str) -> None:
    """The authority form keeps the CONNECT rules and reasons."""
    with pytest.raises(BadRequest) as info:
        Target.fromAuthorityForm(text)
    assert (info.value.status, info.value.reason) == (400, reason)


# The absolute form.


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://example.com/", Target("example.com", 80, TargetForm.ABSOLUTE, "/")),
        (
            "http://Example.COM:8080/a/b?c=d&e",
            Target("example.com", 8080, TargetForm.ABSOLUTE, "/a/b?c=d&e"),
        ),
        ("http://example.com", Target("example.com", 80, TargetForm.ABSOLUTE, "/")),
        (
            "http://example.com?q=1",
            Target("example.com", 80, TargetForm.ABSOLUTE, "/?q=1"),
        ),
        ("HTTP://example.com/", Target("example.com", 80, TargetForm.ABSOLUTE, "/")),
        ("http://example.com:/", Target("example.com", 80, TargetForm.ABSOLUTE, "/")),
        ("http://[::1]:8080/x", Target("::1", 8080, TargetForm.ABSOLUTE, "/x")),
        ("http://[::1]/", Target("::1", 80, TargetForm.ABSOLUTE, "/")),
        ("http://192.0.2.1/", Target("192.0.2.1", 80, TargetForm.ABSOLUTE, "/")),
        ("http://a.example./", Target("a.example", 80, TargetForm.ABSOLUTE, "/")),
    ],
)
def test_absoluteForm(text: str, expected: Target) -> None:
    """
    C{fromAbsoluteForm} parses an C{http} URI: the host normalised as for
    a CONNECT, port 80 when it names none, and the path and query to ask
    the origin for (C{/} when the URI has no path).
    """
    assert Target.fromAbsoluteForm(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("https://example.com/", "use CONNECT for https:// URLs"),
        ("HTTPS://example.com/", "use CONNECT for https:// URLs"),
        ("/index.html", ORIGIN_FORM),
        ("*", ORIGIN_FORM),
        ("example.com:80", "absolute-form target must be an http:// URI"),
        ("http:example.com/", "absolute-form target must be an http:// URI"),
        ("http:///path", "absolute-form target needs a host"),
        ("http://:80/", "absolute-form target needs a host"),
        ("http://user@example.com/", "user information is not allowed in target"),
        ("http://u:p@example.com/", "user information is not allowed in target"),
        ("http://example.com/#top", "fragments are not allowed in target"),
        ("http://[::1/", "unterminated IPv6 literal in target"),
        ("http://[::1]x/", "invalid IPv6 literal in target"),
        ("http://[fe80::1%25eth0]/", "zone identifiers are not allowed in target"),
        ("http://::1/", "IPv6 addresses must be in brackets"),
        ("http://example.com:99999/", "port out of range in target"),
        ("http://example.com:0/", "port out of range in target"),
        ("http://example.com:x/", "invalid port in target"),
        ("http://1234/", "invalid IPv4 address in target"),
        ("http://0x7f.1/", "invalid IPv4 address in target"),
        ("http://bad_name-.example/", "invalid host name in target"),
        ("http://exa mple.com/", "malformed request target"),
        ("", "malformed request target"),
    ],
)
def test_absoluteFormRefusals(text: str, reason: str) -> None:
    """
    What is not an C{http} URI with a valid host and port gets 400 and a
    reason naming what is wrong; the host rules are those of a CONNECT.
    """
    assert _refusal(text) == (400, reason)


_NAMES = st.lists(
    st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10).filter(
        lambda label: label[0].isalpha()
    ),
    min_size=1,
    max_size=4,
).map(".".join)
_HOSTS = _NAMES | st.ip_addresses().map(str)
_PATHS = st.text(
    "abcdefghijklmnopqrstuvwxyz0123456789/-._~%!$&'()*+,;=:@?", max_size=30
)


@_PROPERTY
@given(host=_HOSTS, port=st.integers(1, 65535), path=_PATHS)
def test_absoluteRoundTrip(host: str, port: int, path: str) -> None:
    """
    An absolute-form URI made from a target's authority and path parses
    back to the same target.
    """
    target = Target(host, port, TargetForm.ABSOLUTE, "/" + path)
    assert Target.fromAbsoluteForm(f"http://{target.authority}{target.path}") == (
        target
    )
