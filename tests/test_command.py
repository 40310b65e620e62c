# -*- test-case-name: tests.test_command -*-
"""
Tests for the C{connectproxy} command (L{connectproxy._command}): its
options, help, version, and errors.  Subprocess tests of every entry point
are in tests/integration/test_commands.py.
"""

from __future__ import annotations

import sys

import pytest
from twisted.python.usage import UsageError

from connectproxy import __version__
from connectproxy._command import commandName, errorText, main, splitArguments


@pytest.fixture(autouse=True)
def argv0(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Run as the installed C{connectproxy} script.
    """
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/connectproxy"])


@pytest.mark.parametrize(
    "argv, runner, proxy",
    [
        ([], [], []),
        (
            ["--log-format", "text", "--idle-timeout", "5"],
            ["--log-format=text"],
            ["--idle-timeout=5"],
        ),
        (
            ["--listen=tcp:0", "--log-file", "-", "--auth-allow-plaintext"],
            ["--log-file=-"],
            ["--listen=tcp:0", "--auth-allow-plaintext"],
        ),
        (
            ["--idle", "5", "--log-l", "debug", "--reactor", "poll"],
            ["--reactor=poll"],
            ["--idle-timeout=5", "--log-level=debug"],
        ),
        (
            ["--auth-realm", "--log-format"],
            [],
            ["--auth-realm=--log-format"],
        ),
        (["--check-config", "--version"], [], ["--check-config", "--version"]),
    ],
)
def test_splitArguments(argv: list[str], runner: list[str], proxy: list[str]) -> None:
    """
    The runner's logging and reactor options are told from the proxy's, in
    any order, abbreviated or not, and a value that looks like an option is
    a value.
    """
    assert splitArguments(argv) == (runner, proxy)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--no-such-option"], "option --no-such-option not recognized"),
        (["--log"], "option --log not a unique prefix"),
        (["--idle-timeout"], "option --idle-timeout requires argument"),
    ],
)
def test_splitArgumentsErrors(argv: list[str], message: str) -> None:
    """
    An option that neither knows, or that misses its value, is a usage
    error naming it.
    """
    with pytest.raises(UsageError, match=message):
        splitArguments(argv)


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    """
    --help shows the proxy's options and the runner's, and exits 0.
    """
    with pytest.raises(SystemExit) as raised:
        main(["--listen", "tcp:0", "--help"])
    assert raised.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: connectproxy [options]\n")
    for option in ("--listen", "--check-config", "--log-format", "--log-file"):
        assert option in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """
    --version prints connectproxy's version first.
    """
    with pytest.raises(SystemExit) as raised:
        main(["--version"])
    assert raised.value.code == 0
    assert capsys.readouterr().out.startswith(f"connectproxy {__version__}\n")


def test_checkConfig(capsys: pytest.CaptureFixture[str]) -> None:
    """
    --check-config prints where the proxy would listen and exits 0.
    """
    with pytest.raises(SystemExit) as raised:
        main(["--log-format", "text", "--check-config", "--listen", "tcp:0"])
    assert raised.value.code == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        "listen tcp:0 -> 0.0.0.0:0 (plain HTTP)"
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--bogus"], "connectproxy: error: option --bogus not recognized"),
        (["--idle-timeout", "x"], "connectproxy: error: --idle-timeout: 'x' is not"),
        (
            ["--log-format", "xml"],
            "connectproxy: error: --log-format: 'xml' is not a log format "
            "(text or json)",
        ),
        (
            ["--log-level=loud"],
            "connectproxy: error: --log-level: 'loud' is not a log level "
            "(debug, info, warn, error or critical)",
        ),
        (
            ["--reactor", "nosuch"],
            "connectproxy: error: --reactor: no reactor named 'nosuch' (known: ",
        ),
        (["--check-config", "--listen", "tls:3129"], "would listen on [::]:443"),
        (
            ["extra"],
            "connectproxy: error: unexpected argument 'extra': the proxy takes "
            "options only",
        ),
        (
            ["--log-format", "text", "--allow-port", "443", "8443", "--check-config"],
            "connectproxy: error: unexpected argument '8443' after --allow-port "
            "443: an option takes one value; repeat the option for each "
            "(--allow-port 443 --allow-port 8443)",
        ),
    ],
)
def test_errors(argv: list[str], message: str) -> None:
    """
    A bad option exits with the error and where to get help, nothing else.
    """
    with pytest.raises(SystemExit) as raised:
        main(argv)
    text = raised.value.code
    assert isinstance(text, str)
    first, second = text.splitlines()
    assert message in first
    assert second == "See 'connectproxy --help' for the options."


@pytest.mark.parametrize(
    "argv0, name",
    [
        ("connectproxy", "connectproxy"),
        ("/opt/cp/bin/twist", "twist connectproxy"),
        ("twistd", "twistd connectproxy"),
        ("/x/site-packages/connectproxy/__main__.py", "python -m connectproxy"),
        ("/x/site-packages/twisted/__main__.py", "python -m twisted connectproxy"),
    ],
)
def test_commandName(argv0: str, name: str) -> None:
    """
    Messages name the command the way the operator typed it.
    """
    assert commandName(argv0) == name


def test_errorText() -> None:
    """
    The error text is the error, then where to get help.
    """
    assert errorText(UsageError("--x: bad"), "twistd") == (
        "twistd connectproxy: error: --x: bad\n"
        "See 'twistd connectproxy --help' for the options."
    )
