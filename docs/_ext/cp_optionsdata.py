"""
What the options reference (docs/options.md) says about each option of
C{twistd connectproxy}, read from L{connectproxy.tap.Options} itself: the
help text, the default, the kind of value, and whether it is a key of the
configuration file.

This module imports nothing from Sphinx, so that the test suite
(tests/test_docs.py) can check the page without the documentation
dependencies; L{cp_options} renders it.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from twisted.python import reflect

__all__ = ["OptionDoc", "documentedOptions", "options", "tomlExample"]

_DEFAULT_NOTE = re.compile(r"\s*\[default: [^\]]*\]\s*$")

#: The directive of docs/options.md that documents one option.
DIRECTIVE = "connectproxy-option"

_FENCE = re.compile(
    r"^(?P<fence>`{3,}|:{3,})\{" + re.escape(DIRECTIVE) + r"\}\s+(?P<synopsis>.+)$"
)


@dataclass(frozen=True)
class OptionDoc:
    """
    One option of the command line.

    @ivar name: The long name, without C{--}.
    @ivar takesValue: Whether it takes a value (C{--name VALUE}).
    @ivar help: Its help text, as C{--help} shows it (without the default).
    @ivar default: Its default value, or C{None} when it has none (or when
        it is a flag, or repeatable).
    @ivar valueDoc: What its value must be, when the option checks it.
    @ivar repeatable: Whether it may be given more than once.
    @ivar fileKey: How the configuration file gives it: C{"number"},
        C{"string"}, C{"list"} or C{"flag"}, or C{None} when it is not a key
        of the file (C{--config}, C{--help}...).
    """

    name: str
    takesValue: bool
    help: str
    default: Any
    valueDoc: str | None
    repeatable: bool
    fileKey: str | None


@cache
def options(optionsClass: Any = None) -> dict[str, OptionDoc]:
    """
    Every option of the command line, as C{--help} lists them.

    @param optionsClass: The L{usage.Options} subclass; by default
        L{connectproxy.tap.Options}.
    @return: The options by long name, in C{--help} order.
    """
    if optionsClass is None:
        from connectproxy.tap import Options

        optionsClass = Options
    instance = optionsClass()
    lists = set(getattr(instance, "_lists", ())) | {"auth"}
    notInFile = set(getattr(instance, "_notInFile", ("config",)))
    # usage.Options gathers the rows of every base class (the groups of
    # options mixed into connectproxy.tap.Options).
    rows: list[Any] = []
    reflect.accumulateClassList(optionsClass, "optParameters", rows)
    parameters = {row[0]: row for row in rows}
    flagRows: list[Any] = []
    reflect.accumulateClassList(optionsClass, "optFlags", flagRows)
    flags = {row[0] for row in flagRows}
    fileKeys: dict[str, str] = {}
    configKeys = getattr(instance, "configKeys", None)
    if configKeys is not None:
        fileKeys = {name: key.kind for name, key in configKeys().items()}
    else:
        for name, row in parameters.items():
            if name not in notInFile:
                coerce = row[4] if len(row) > 4 else str
                string = coerce is str or getattr(coerce, "string", False)
                fileKeys[name] = "string" if string else "number"
        fileKeys.update({name: "list" for name in lists})
        fileKeys.update({name: "flag" for name in flags if name not in notInFile})
    result = {}
    for long in sorted(instance.longOpt):
        name = long.rstrip("=")
        takesValue = long.endswith("=")
        row = parameters.get(name)
        coerce = row[4] if row is not None and len(row) > 4 else None
        valueDoc = getattr(coerce, "coerceDoc", None)
        default = instance.defaults.get(name) if row is not None else None
        result[name] = OptionDoc(
            name=name,
            takesValue=takesValue,
            help=_DEFAULT_NOTE.sub("", " ".join(instance.docs.get(name, "").split())),
            default=default,
            valueDoc=valueDoc,
            repeatable=name in lists,
            fileKey=fileKeys.get(name),
        )
    return result


def formatValue(value: Any) -> str:
    """
    A default value as the command line would take it (C{15.0} as C{15}).
    """
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def exampleArguments(example: str) -> list[tuple[str, str | None]]:
    """
    Split an example command line into options and their values.

    @param example: For example C{--allow-port 443 --allow-port 8443}.
    @return: C{(name, value)} pairs, C{value} C{None} for flags.
    @raise ValueError: For anything but long options and their values.
    """
    words = shlex.split(example)
    known = options()
    pairs: list[tuple[str, str | None]] = []
    index = 0
    while index < len(words):
        word = words[index]
        if not word.startswith("--"):
            raise ValueError(f"not an option: {word!r} in {example!r}")
        name, equals, value = word[2:].partition("=")
        if name not in known:
            raise ValueError(f"no option --{name} (in {example!r})")
        if known[name].takesValue and not equals:
            index += 1
            if index >= len(words):
                raise ValueError(f"--{name} needs a value in {example!r}")
            value = words[index]
        pairs.append((name, value if known[name].takesValue else None))
        index += 1
    return pairs


def tomlExample(example: str) -> str | None:
    """
    The configuration file lines that say what an example command line
    says.

    @param example: An example command line of options.
    @return: TOML lines, or C{None} when an option of the example is not a
        key of the file.
    """
    known = options()
    values: dict[str, list[str | None]] = {}
    for name, value in exampleArguments(example):
        if known[name].fileKey is None:
            return None
        values.setdefault(name, []).append(value)
    lines = []
    for name, given in values.items():
        kind = known[name].fileKey
        if kind == "flag":
            lines.append(f"{name} = true")
        elif kind == "list":
            lines.append(f"{name} = [{', '.join(json.dumps(v) for v in given)}]")
        elif kind == "number" and re.fullmatch(r"\d+(\.\d+)?", given[-1] or ""):
            lines.append(f"{name} = {given[-1]}")
        else:
            lines.append(f"{name} = {json.dumps(given[-1])}")
    return "\n".join(lines)


@dataclass(frozen=True)
class DocumentedOption:
    """
    One C{connectproxy-option} directive of docs/options.md.

    @ivar name: The option, without C{--}.
    @ivar synopsis: The directive's argument, for example
        C{--idle-timeout SECONDS}.
    @ivar fields: The directive's options (C{example}, C{default}...).
    @ivar line: The line of the directive, for messages.
    """

    name: str
    synopsis: str
    fields: dict[str, str]
    line: int


def documentedOptions(lines: Iterable[str]) -> list[DocumentedOption]:
    """
    Find the C{connectproxy-option} directives of a MyST page.

    @param lines: The page's lines.
    @return: The directives, in order.
    """
    found = []
    lines = list(lines)
    for number, line in enumerate(lines):
        match = _FENCE.match(line)
        if match is None:
            continue
        synopsis = match["synopsis"].strip()
        fields = {}
        for field in lines[number + 1 :]:
            option = re.match(r"^:([a-z-]+):\s*(.*)$", field)
            if option is None:
                break
            fields[option[1]] = option[2].strip()
        name = synopsis.split()[0].removeprefix("--")
        found.append(DocumentedOption(name, synopsis, fields, number + 1))
    return found
