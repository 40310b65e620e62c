# -*- test-case-name: tests.test_parenturl -*-
"""
Tests for L{connectproxy._parenturl}: parent proxy URLs, the CONNECT head
sent to a parent, and the C{--upstream-ca} file.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from connectproxy._parenturl import (
    ParentProxy,
    connectHead,
    formatAuthority,
    loadTrustRoot,
)
from tests.integration._pki import makeTLSFiles


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://parent.example:3128", ("http", "parent.example", 3128, None, "")),
        ("HTTP://Parent.Example.:3128/", ("http", "parent.example", 3128, None, "")),
        ("https://192.0.2.1:3129", ("https", "192.0.2.1", 3129, None, "")),
        ("https://[2001:DB8::1]:443", ("https", "2001:db8::1", 443, None, "")),
        ("http://b\xfccher.example:1", ("http", "xn--bcher-kva.example", 1, None, "")),
        ("http://alice@p:1", ("http", "p", 1, "alice", "")),
        ("http://alice:@p:1", ("http", "p", 1, "alice", "")),
        ("http://alice:s3cret@p:1", ("http", "p", 1, "alice", "s3cret")),
        ("http://a%40b:p%3Aw%2F%25@p:1", ("http", "p", 1, "a@b", "p:w/%")),
        ("http://al%C3%AFce:p@ss@p:1", ("http", "p", 1, "al\xefce", "p@ss")),
        ("http://alice:pass:word@p:1", ("http", "p", 1, "alice", "pass:word")),
    ],
)
def test_parse(url: str, expected: tuple[object, ...]) -> None:
    """
    Scheme and host are normalised, credentials percent-decoded (UTF-8).
    """
    parent = ParentProxy.fromURL(url)
    assert (
        parent.scheme,
        parent.host,
        parent.port,
        parent.user,
        parent.password,
    ) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("socks5://p:1080", "unknown scheme 'socks5': a parent proxy URL starts"),
        ("parent.example:3128", "expected http://HOST:PORT or https://HOST:PORT"),
        ("http://p", "the URL needs a port: http://p:3128"),
        ("https://[::1]", r"the URL needs a port: https://\[::1\]:3128"),
        ("http://p:0", "the port must be a number from 1 to 65535"),
        ("http://p:65536", "the port must be a number from 1 to 65535"),
        ("http://p:http", "the port must be a number from 1 to 65535"),
        ("http://:3128", "the URL needs a host"),
        ("http://[p]:3128", "the URL's host is not valid"),
        ("http://bad_host!:3128", "the URL's host is not valid"),
        ("http://[fe80::1%25eth0]:3128", "zone identifiers are not allowed"),
        ("http://p:3128/path", "no path, query or fragment"),
        ("http://p:3128?q", "no path, query or fragment"),
        ("http://p:3128#f", "no path, query or fragment"),
        ("http://p :3128", "must not contain spaces or control characters"),
        ("http://p:3128\n", "must not contain spaces or control characters"),
        ("http://a%2:b@p:1", "a % that does not start a %XX escape"),
        ("http://a:%ff@p:1", "not UTF-8 once percent-decoded"),
        ("http://:pw@p:1", "the credentials need a user name"),
        ("http://@p:1", "the credentials need a user name"),
        ("http://a%3Ab:pw@p:1", "a user name cannot contain a colon"),
        ("http://a:p%0Aw@p:1", "must not contain control characters"),
    ],
)
def test_refused(url: str, message: str) -> None:
    """
    A URL that is not a usable parent is refused, saying why.
    """
    with pytest.raises(ValueError, match=message):
        ParentProxy.fromURL(url)


@pytest.mark.parametrize(
    "url",
    [
        "socks5://alice:hunter2@p:1080",
        "http://alice:hunter2@p",
        "http://alice:hunter2@p:0",
        "http://alice:hunter2@p:1/x",
        "http://alice%3A:hunter2@p:1",
        "http://alice:hunter2%@p:1",
        "http://alice:hunter2@[::1:1",
    ],
)
def test_messagesNeverShowThePassword(url: str) -> None:
    """
    No error message repeats the URL's password.
    """
    with pytest.raises(ValueError) as raised:
        ParentProxy.fromURL(url)
    assert "hunter2" not in str(raised.value)


def test_credentialsHidden() -> None:
    """
    The repr and the address never show the credentials.
    """
    parent = ParentProxy.fromURL("https://alice:hunter2@[2001:db8::1]:3129")
    assert "hunter2" not in repr(parent)
    assert "alice" not in repr(parent)
    assert parent.address == str(parent) == "https://[2001:db8::1]:3129"
    assert parent.tls
    assert not ParentProxy.fromURL("http://p:1").tls


def test_authorization() -> None:
    """
    Basic credentials, UTF-8 (RFC 7617); none without a user.
    """
    parent = ParentProxy.fromURL("http://al%C3%AFce:pass:word@p:1")
    assert parent.authorization == b"Basic " + base64.b64encode(
        "al\xefce:pass:word".encode()
    )
    assert ParentProxy.fromURL("http://alice@p:1").authorization == (
        b"Basic " + base64.b64encode(b"alice:")
    )
    assert ParentProxy.fromURL("http://p:1").authorization is None


def test_connectHead() -> None:
    """
    Authority form, the same authority in Host, credentials when given.
    """
    assert connectHead("example.com", 443, None) == (
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
    )
    assert connectHead("2001:db8::1", 8443, b"Basic YTpi") == (
        b"CONNECT [2001:db8::1]:8443 HTTP/1.1\r\nHost: [2001:db8::1]:8443\r\n"
        b"Proxy-Authorization: Basic YTpi\r\n\r\n"
    )
    assert formatAuthority("192.0.2.1", 1) == "192.0.2.1:1"


def test_loadTrustRoot(tmp_path: Path) -> None:
    """
    A PEM file of one or more CA certificates loads.
    """
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = makeTLSFiles(tmp_path / "one")
    two = makeTLSFiles(tmp_path / "two")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(one.caCert.read_bytes() + b"\n" + two.caCert.read_bytes())
    assert loadTrustRoot(str(one.caCert)) is not None
    assert loadTrustRoot(str(bundle)) is not None


def test_loadTrustRootErrors(tmp_path: Path) -> None:
    """
    A missing file, a file without certificates and a broken certificate
    are refused, naming the file.
    """
    missing = tmp_path / "missing.pem"
    with pytest.raises(ValueError, match=f"cannot read {missing}: No such file"):
        loadTrustRoot(str(missing))
    empty = tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")
    with pytest.raises(ValueError, match=f"{empty} holds no PEM certificate"):
        loadTrustRoot(str(empty))
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(ValueError, match=f"{broken} holds a certificate that is not"):
        loadTrustRoot(str(broken))
