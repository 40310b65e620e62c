# -*- test-case-name: tests.test_command -*-
"""
The C{connectproxy} command and C{python -m connectproxy}: the same service
as C{twist connectproxy}, run by C{twist}'s own machinery, taking the
proxy's options and C{twist}'s logging and reactor options in any order.

Also how every entry point (C{twistd}, C{twist}, C{connectproxy}) reports a
command-line error: the error alone, and where to get help, instead of the
whole usage text.
"""

from __future__ import annotations

import getopt
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.application.reactors import getReactorTypes
from twisted.application.service import IServiceMaker, ServiceMaker
from twisted.application.twist._options import TwistOptions
from twisted.application.twist._twist import Twist
from twisted.logger import LogLevel
from twisted.python.usage import UsageError

__all__ = ["commandName", "errorText", "main"]

#: The options of C{twist} itself that the C{connectproxy} command passes
#: on to it; each takes a value.  C{--log-level} is the proxy's own (the
#: same under every runner), so C{twist} is told to keep every level.
RUNNER_OPTIONS = ("log-file", "log-format", "reactor")

_serviceMaker = ServiceMaker(
    "connectproxy",
    "connectproxy.tap",
    "An HTTP CONNECT forward proxy: tunnels TCP for HTTP clients.",
    "connectproxy",
)


def commandName(argv0: str | None = None) -> str:
    """
    How the operator started the proxy, for messages: C{connectproxy},
    C{python -m connectproxy}, C{twist connectproxy}, C{twistd connectproxy}.

    @param argv0: The program's path; C{sys.argv[0]} by default.
    """
    if argv0 is None:
        argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "connectproxy"
    name = os.path.basename(argv0)
    if name == "__main__.py":
        package = os.path.basename(os.path.dirname(os.path.abspath(argv0)))
        name = f"python -m {package}"
    if name.endswith("connectproxy"):
        return name
    return f"{name} connectproxy"


def errorText(error: BaseException, argv0: str | None = None) -> str:
    """
    The text for a command-line or configuration error: the error, then how
    to get help.

    @param error: The error (usually a L{UsageError}).
    @param argv0: The program's path; C{sys.argv[0]} by default.
    """
    command = commandName(argv0)
    return f"{command}: error: {error}\nSee '{command} --help' for the options."


class _TwistOptions(TwistOptions):
    """
    C{twist}'s options, with connectproxy as the only plugin (no plugin
    discovery, so the command works however the package was installed).
    """

    @property
    def plugins(self) -> Mapping[str, IServiceMaker]:
        return {"connectproxy": _serviceMaker}


class _Twist(Twist):
    """
    C{twist}, with a short message for an error in its own options.
    """

    @staticmethod
    def options(argv: Sequence[str]) -> TwistOptions:
        options = _TwistOptions()
        try:
            options.parseOptions(argv[1:])
        except UsageError as e:
            message = str(e)
            if message.startswith("Unknown reactor: "):
                known = ", ".join(r.shortName for r in getReactorTypes())
                name = message.removeprefix("Unknown reactor: ")
                message = f"--reactor: no reactor named {name!r} (known: {known})"
            raise SystemExit(errorText(UsageError(message))) from None
        return options


def _commandOptions() -> Any:
    """
    The options of the C{connectproxy} command, for its help and to tell
    its own options from C{twist}'s.
    """
    from .tap import Options

    class CommandOptions(Options):
        """
        The proxy's options and C{twist}'s log file, log format and
        reactor options.
        """

        # usage.Options gathers optParameters from every base class too.
        optParameters = [
            [
                "log-file",
                None,
                "-",
                "Log to this file ('-' for standard output, '+' for standard error).",
            ],
            [
                "log-format",
                None,
                None,
                "Log format: text or json. [default: text on a terminal, "
                "json otherwise]",
            ],
            ["reactor", None, "default", "The reactor to use (see twist --help)."],
        ]

        def getSynopsis(self) -> str:
            return f"Usage: {commandName()} [options]"

    return CommandOptions()


def splitArguments(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """
    Tell C{twist}'s options from the proxy's, in any order.

    @param argv: The arguments after the program name.
    @return: C{twist}'s arguments and the proxy's, each option with its
        value, full names (abbreviations expanded).
    @raise UsageError: For an option neither knows, or one missing its
        value.
    """
    table = _commandOptions()
    try:
        pairs, rest = getopt.getopt(list(argv), table.shortOpt, table.longOpt)
    except getopt.GetoptError as e:
        raise UsageError(str(e)) from None
    runner: list[str] = []
    proxy: list[str] = []
    for option, value in pairs:
        name = option.removeprefix("--")
        _checkRunnerValue(name, value)
        takesValue = f"{name}=" in table.longOpt
        argument = f"{option}={value}" if takesValue else option
        (runner if name in RUNNER_OPTIONS else proxy).append(argument)
    return runner, proxy + rest


#: The values C{twist} takes for its options that take one of a few, as
#: (what the value is, the values in order).
_RUNNER_VALUES = {
    "log-format": ("a log format", ("text", "json")),
    "log-level": (
        "a log level",
        tuple(level.name for level in LogLevel.iterconstants()),
    ),
}


def _checkRunnerValue(name: str, value: str) -> None:
    """
    Refuse a value C{twist} would refuse, with a message naming the option
    (C{twist}'s own names only the value).

    @raise UsageError: For a value the option does not take.
    """
    known = _RUNNER_VALUES.get(name)
    if known is None:
        return
    what, values = known
    # twist reads log formats in any case, log levels as written.
    if (value.lower() if name == "log-format" else value) not in values:
        choices = ", ".join(values[:-1]) + " or " + values[-1]
        raise UsageError(f"--{name}: {value!r} is not {what} ({choices})")


def main(argv: Sequence[str] | None = None) -> None:
    """
    Run the proxy: C{connectproxy [options]}.

    @param argv: The arguments after the program name; C{sys.argv[1:]} by
        default.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        runner, proxy = splitArguments(arguments)
    except UsageError as e:
        raise SystemExit(errorText(e)) from None
    if "--help" in proxy:
        sys.stdout.write(f"{_commandOptions()}\n")
        raise SystemExit(0)
    program = sys.argv[0] if sys.argv else "connectproxy"
    _Twist.main([program, "--log-level=debug", *runner, "connectproxy", *proxy])
