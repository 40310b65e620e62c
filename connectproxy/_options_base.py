# -*- test-case-name: tests.test_tap,tests.test_config -*-
"""
What the groups of command-line options share: L{OptionGroup}, the base of
each concern's options (listeners, access, upstream, limits, observers),
which L{connectproxy.tap.Options} mixes into one.

C{usage.Options} gathers C{optParameters} and C{optFlags} from every base
class and finds C{opt_*} handlers on all of them, so each group declares
its own rows and handlers; the groups add C{optLists}, their repeatable
options, gathered the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.python import reflect, usage

from ._listeners import ListenerPlan
from ._rules import AccessRules
from .interfaces import IAccessPolicy

__all__ = ["OptionGroup", "gathered", "lastOption"]


def gathered(optionsClass: type[Any], attribute: str) -> list[list[Any]]:
    """
    The rows of C{attribute} (C{optParameters}, C{optFlags} or C{optLists})
    of C{optionsClass} and of every base class, as C{usage.Options} gathers
    them: bases first.

    @param optionsClass: A C{usage.Options} subclass.
    @param attribute: The name of the class attribute holding rows.
    @return: The rows, in order.
    """
    rows: list[list[Any]] = []
    reflect.accumulateClassList(optionsClass, attribute, rows)
    return rows


class OptionGroup(usage.Options):
    """
    The options of one concern, mixed into L{connectproxy.tap.Options}.

    A group may declare C{optParameters}, C{optFlags}, C{opt_*} handlers,
    and C{optLists}: its repeatable options, each C{[name, example]}, whose
    value is a list of strings (the example is a value shown in messages
    about the configuration file).  Checks that need every option parsed
    are methods the options' C{postOptions} calls.

    @ivar argv: The arguments parsed.
    @ivar given: The long names of the options the command line gave.
    @ivar rules: The built-in access rules, after C{postOptions}.
    @ivar policies: The plugin policies, after C{postOptions}.
    @ivar plans: Where each listener would listen, after parsing.
    """

    argv: list[str]
    given: set[str]
    rules: AccessRules
    policies: list[IAccessPolicy]
    plans: list[ListenerPlan]

    def checkers(self) -> list[Any]:
        """
        The credential checkers from C{--auth}.
        """
        return list(self.get("credCheckers", []))

    def _append(self, name: str, value: str) -> None:
        self[name].append(value)

    def _fromFile(self, *names: str) -> str:
        """
        Where values that failed a cross-check came from, when some came
        from the configuration file.
        """
        if self["config"] is not None and not self.given.issuperset(names):
            return f" (check {self['config']})"
        return ""

    def _source(self, name: str) -> str:
        """
        Where an option's value came from, for a message about it:
        C{--name}, or C{FILE: key 'name':} when the configuration file gave
        it.
        """
        if self["config"] is not None and name not in self.given:
            return f"{self['config']}: key {name!r}:"
        return f"--{name}"


def lastOption(
    argv: Sequence[str], longOpt: Sequence[str]
) -> tuple[str | None, str | None]:
    """
    The last option in C{argv}, as C{getopt} read it, and its value.

    @param argv: Arguments, ending with an option (and its value).
    @param longOpt: The long options, C{name=} for those taking a value.
    @return: The option's full name (C{None} when the last argument is not
        an option), and its value (C{None} for a flag).
    """

    def resolve(given: str) -> tuple[str, bool] | None:
        names = [o for o in longOpt if o.rstrip("=") == given]
        names = names or [o for o in longOpt if o.startswith(given)]
        if len(names) != 1:
            return None
        return names[0].rstrip("="), names[0].endswith("=")

    if argv and argv[-1].startswith("--"):
        given, equals, value = argv[-1][2:].partition("=")
        found = resolve(given)
        if found is not None:
            return found[0], (value if equals else None)
    if len(argv) >= 2 and argv[-2].startswith("--") and "=" not in argv[-2]:
        found = resolve(argv[-2][2:])
        if found is not None and found[1]:
            return found[0], argv[-1]
    return None, None
