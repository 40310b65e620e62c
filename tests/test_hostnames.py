# -*- test-case-name: tests.test_hostnames -*-
"""
Tests for L{connectproxy._hostnames.HostPatternTable}: the most specific
matching host pattern wins.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectproxy import HostPatternTable
from connectproxy._hostnames import normalizePattern

_PROPERTY = settings(max_examples=300, deadline=None)


def test_exactBeatsWildcard() -> None:
    """
    An exact name beats a wildcard that also matches it, whatever the
    order they were given in.
    """
    for entries in (
        [("*.example.com", "wild"), ("www.example.com", "exact")],
        [("www.example.com", "exact"), ("*.example.com", "wild")],
    ):
        table = HostPatternTable(entries)
        assert table.match("www.example.com") == ("www.example.com", "exact")
        assert table.match("mail.example.com") == ("*.example.com", "wild")


def test_longerSuffixBeatsShorter() -> None:
    """
    Of two wildcards that match a name, the one with the longer suffix
    wins.
    """
    table = HostPatternTable(
        [("*.com", 1), ("*.example.com", 2), ("*.eu.example.com", 3)]
    )
    assert table.match("a.b.eu.example.com") == ("*.eu.example.com", 3)
    assert table.match("eu.example.com") == ("*.example.com", 2)
    assert table.match("example.com") == ("*.com", 1)
    assert table.match("com") is None
    assert table.match("example.org") is None


def test_wildcardStrictlyBelow() -> None:
    """
    A wildcard matches names below its suffix at any depth, not the suffix
    itself, and not a name that merely ends with the same characters.
    """
    table = HostPatternTable([("*.example.com", True)])
    assert table.match("a.b.c.example.com") is not None
    assert table.match("example.com") is None
    assert table.match("badexample.com") is None


@pytest.mark.parametrize(
    ("pattern", "host"),
    [
        ("Example.COM.", "example.com"),
        ("example.com", "EXAMPLE.com."),
        ("bücher.example", "xn--bcher-kva.example"),
        ("*.xn--bcher-kva.example", "www.Bücher.example"),
        ("2001:DB8::0:1", "2001:db8::1"),
        ("192.0.2.1", "::ffff:192.0.2.1"),
    ],
)
def test_comparedNormalised(pattern: str, host: str) -> None:
    """
    Patterns and names are compared in their normal form: case, one
    trailing dot, Unicode or A-labels and address spellings do not matter.
    """
    [(normal, _)] = HostPatternTable([(pattern, None)])
    assert HostPatternTable([(pattern, "v")]).match(host) == (normal, "v")


def test_wildcardsNeverMatchAddresses() -> None:
    """
    An IP address matches only an exact address pattern (a wildcard of an
    address is not a valid pattern, see L{test_invalidPatterns}).
    """
    table = HostPatternTable([("*.example", "wild"), ("192.0.2.1", "exact")])
    assert table.match("192.0.2.1") == ("192.0.2.1", "exact")
    assert table.match("192.0.3.1") is None


def test_lastValueWins() -> None:
    """
    The same pattern given twice, in any spelling, keeps its last value;
    iteration gives each pattern once, in the order first given.
    """
    table = HostPatternTable([("a.example", 1), ("*.b.example", 2), ("A.Example.", 3)])
    assert table.match("a.example") == ("a.example", 3)
    assert list(table) == [("a.example", 3), ("*.b.example", 2)]
    assert len(table) == 2


@pytest.mark.parametrize("pattern", ["", "*", "a.*.example", "*.192.0.2.1", "a b"])
def test_invalidPatterns(pattern: str) -> None:
    """
    An invalid pattern is refused when the table is made, naming it.
    """
    with pytest.raises(ValueError, match="invalid host pattern"):
        HostPatternTable([(pattern, None)])


def test_invalidHost() -> None:
    """
    Looking up something that is not a host name raises L{ValueError}.
    """
    with pytest.raises(ValueError, match="invalid host name"):
        HostPatternTable([("example.com", None)]).match("a..example")


_labels = st.sampled_from(["a", "b", "c", "xn--bcher-kva"])
_names = st.lists(_labels, min_size=1, max_size=4).map(".".join)
_patterns = st.tuples(st.booleans(), _names).map(
    lambda wild: ("*." if wild[0] else "") + wild[1]
)


def _reference(entries: list[tuple[str, int]], host: str) -> tuple[str, int] | None:
    """
    The most specific matching pattern, by brute force: an exact match
    counts as infinitely specific, a wildcard as many labels as its suffix.
    """
    table = {normalizePattern(pattern): value for pattern, value in entries}
    best: tuple[float, str, int] | None = None
    for pattern, value in table.items():
        if pattern.startswith("*."):
            suffix = pattern[2:]
            if not host.endswith("." + suffix):
                continue
            specificity: float = suffix.count(".") + 1
        elif pattern == host:
            specificity = math.inf
        else:
            continue
        assert best is None or specificity != best[0]
        if best is None or specificity > best[0]:
            best = (specificity, pattern, value)
    return None if best is None else (best[1], best[2])


@_PROPERTY
@given(st.lists(st.tuples(_patterns, st.integers(0, 9)), max_size=8), _names)
def test_mostSpecificWins(entries: list[tuple[str, int]], host: str) -> None:
    """
    The table finds what a brute-force search for the most specific
    matching pattern finds, and spelling the name differently changes
    nothing.
    """
    table = HostPatternTable(entries)
    expected = _reference(entries, host)
    assert table.match(host) == expected
    assert table.match(host.upper() + ".") == expected


@pytest.mark.parametrize("pattern", ["[::1]", "[0:0::1]", "::1"])
def test_bracketedIPv6(pattern: str) -> None:
    """
    An IPv6 address may be written in brackets, as URLs write it
    (C{--upstream-route '[::1]=...'}): it is the same pattern as without.
    """
    assert normalizePattern(pattern) == "::1"


@pytest.mark.parametrize("pattern", ["[example.com]", "*.[::1]", "[::1"])
def test_bracketsOnlyAroundIPv6(pattern: str) -> None:
    """
    Brackets are accepted only around a whole IPv6 address.
    """
    with pytest.raises(ValueError, match="invalid host pattern"):
        normalizePattern(pattern)
