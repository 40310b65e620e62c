"""
Read epytext, the docstring markup of connectproxy (and of Twisted, which
pydoctor renders), as reStructuredText, so that Sphinx's autodoc can render
the API reference.

This module only converts text and imports nothing from Sphinx, so that the
test suite can check it without the documentation dependencies;
L{cp_apidoc} connects it to autodoc.

What is converted:

  - inline markup: C{code}, L{target} and L{text <target>} (links), I{italic},
    B{bold}, U{url} and U{text <url>}, M{math}, E{lb} and E{rb}, X{term}
    and S{symbol};
  - fields: @param, @type, @keyword, @ivar, @cvar, @var, @return, @rtype,
    @raise (and their synonyms), and @note, @see, @warning as admonitions;
  - everything else is text: characters that mean something in
    reStructuredText (C{*}, C{`}, C{|}, C{_}, C{\\}) are escaped, so that a
    docstring saying C{*.example.com} does not start an emphasis.

Literal blocks (after a paragraph ending in C{::}) and doctest blocks
(C{>>>}) are kept as they are.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

__all__ = ["EpytextError", "convert"]

#: Finds what a name in a docstring (the target of an C{L{...}}, the
#: exception of an C{@raise}) stands for: its fully qualified name, or
#: C{None} when it names nothing that Python finds from the docstring's
#: scope (Sphinx then looks it up relative to the current module and class).
Qualifier = Callable[[str], "str | None"]


class EpytextError(ValueError):
    """
    A docstring is not valid epytext; the message says where and why.
    """


_FIELD = re.compile(
    r"^(?P<indent>[ \t]*)@(?P<tag>[A-Za-z]+)"
    r"(?:[ \t]+(?P<arg>[^:\s][^:]*?))?[ \t]*:(?P<rest>(?:[ \t].*)?)$"
)

#: Epytext field tags and the reStructuredText field each becomes.
FIELDS = {
    "param": "param",
    "parameter": "param",
    "arg": "param",
    "argument": "param",
    "type": "type",
    "keyword": "keyword",
    "kwarg": "keyword",
    "kwparam": "keyword",
    "ivar": "ivar",
    "cvar": "cvar",
    "var": "var",
    "raise": "raises",
    "raises": "raises",
    "except": "raises",
    "exception": "raises",
    "return": "returns",
    "returns": "returns",
    "rtype": "rtype",
    "returntype": "rtype",
}

#: Epytext fields that become admonitions.
ADMONITIONS = {
    "note": "note",
    "see": "seealso",
    "seealso": "seealso",
    "warning": "warning",
}

#: Fields whose argument is a name to link (an exception).
_LINKED_ARGUMENTS = frozenset({"raises"})

_INLINE_START = re.compile(r"([A-Z])\{")
_ESCAPES = {"lb": "{", "rb": "}", "lt": "<", "gt": ">"}
_SPECIAL = re.compile(r"([\\*`|_])")
_TEXT_AND_TARGET = re.compile(r"^(?P<text>.*?)\s*<(?P<target>[^<>]+)>\s*$", re.S)


def convert(lines: Sequence[str], qualify: Qualifier) -> list[str]:
    """
    Convert an epytext docstring to reStructuredText.

    @param lines: The docstring's lines, dedented (as autodoc gives them).
    @param qualify: Finds what names stand for: see L{Qualifier}.
    @return: The reStructuredText lines.
    @raise EpytextError: For an unknown field or unbalanced braces.
    """
    out: list[str] = []
    pending: list[str] = []
    fieldIndent: int | None = None
    index = 0

    def flush() -> None:
        if pending:
            out.extend(_inline("\n".join(pending), qualify).split("\n"))
            del pending[:]

    while index < len(lines):
        line = lines[index]
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if stripped.startswith(">>>"):
            flush()
            _blankBefore(out)
            while index < len(lines) and lines[index].strip():
                out.append(lines[index])
                index += 1
            continue
        field = _FIELD.match(line)
        if field is not None:
            flush()
            if fieldIndent is None:
                _blankBefore(out)
            fieldIndent = indent
            pending.append(_fieldLine(field, qualify))
            index += 1
            continue
        if fieldIndent is not None and stripped and indent <= fieldIndent:
            # Text after the fields, at their level: a new paragraph.
            flush()
            _blankBefore(out)
            fieldIndent = None
        if stripped.endswith("::") and not stripped.startswith(".."):
            # The paragraph ends with a literal block, kept as it is.
            pending.append(line)
            flush()
            index += 1
            while index < len(lines) and (
                not lines[index].strip()
                or len(lines[index]) - len(lines[index].lstrip()) > indent
            ):
                out.append(lines[index])
                index += 1
            continue
        if not stripped:
            flush()
            out.append(line)
        else:
            pending.append(line)
        index += 1
    flush()
    return out


def _blankBefore(out: list[str]) -> None:
    """
    End the paragraph before a block that reStructuredText needs to be
    separated by a blank line.
    """
    if out and out[-1].strip():
        out.append("")


# Fields are converted before inline markup, which then runs over the
# field's text: this placeholder keeps the field marker itself apart.
_KEEP = "\x00"


def _fieldLine(field: re.Match[str], qualify: Qualifier) -> str:
    tag = field.group("tag").lower()
    arg = field.group("arg")
    rest = field.group("rest")
    indent = field.group("indent")
    if tag in ADMONITIONS:
        if arg:
            raise EpytextError(f"@{tag} takes no argument: @{tag} {arg}:")
        return f"{indent}{_KEEP}.. {ADMONITIONS[tag]}::{_KEEP}{rest}"
    if tag not in FIELDS:
        raise EpytextError(f"unknown epytext field @{tag}")
    name = FIELDS[tag]
    if arg is None:
        return f"{indent}{_KEEP}:{name}:{_KEEP}{rest}"
    if name in _LINKED_ARGUMENTS:
        # Sphinx links the argument itself: give it the full name, shown
        # short.
        qualified = qualify(arg)
        if qualified is not None and qualified != arg:
            arg = "~" + qualified
    return f"{indent}{_KEEP}:{name} {arg}:{_KEEP}{rest}"


def _inline(text: str, qualify: Qualifier) -> str:
    """
    Convert the inline markup of a run of text lines (which may span lines)
    and escape the rest.
    """
    pieces = text.split(_KEEP)
    # Even pieces are text; odd ones are field markers, kept as they are.
    converted = []
    for number, piece in enumerate(pieces):
        converted.append(piece if number % 2 else _markup(piece, qualify))
    return "".join(converted)


def _markup(text: str, qualify: Qualifier) -> str:
    out: list[str] = []
    position = 0
    while True:
        match = _INLINE_START.search(text, position)
        if match is None:
            out.append(_escape(text[position:]))
            break
        out.append(_escape(text[position : match.start()]))
        end = _closingBrace(text, match.end())
        body = text[match.end() : end]
        rendered = _render(match.group(1), body, qualify)
        before = text[match.start() - 1] if match.start() else " "
        after = text[end + 1] if end + 1 < len(text) else " "
        if rendered.startswith(("`", "*", ":")) and (before.isalnum()):
            rendered = "\\ " + rendered
        if rendered.endswith(("`", "*", "__")) and (after.isalnum() or after == "\\"):
            rendered += "\\ "
        out.append(rendered)
        position = end + 1
    return "".join(out)


def _closingBrace(text: str, start: int) -> int:
    depth = 1
    for index in range(start, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    raise EpytextError(f"unbalanced braces in {text[start - 2 : start + 40]!r}")


def _plain(body: str) -> str:
    """
    The text of markup, without its own markup (reStructuredText does not
    nest inline markup).
    """
    return _INLINE_START.sub("", body).replace("}", "") if "{" in body else body


def _render(kind: str, body: str, qualify: Qualifier) -> str:
    flat = " ".join(body.split())
    if kind == "C" or kind == "M":
        if not flat:
            return ""
        # The body of an inline literal cannot contain its end-string.
        if "``" in flat:
            return ":code:`" + flat.replace("\\", "\\\\").replace("`", "\\`") + "`"
        return f"``{flat}``"
    if kind == "L":
        match = _TEXT_AND_TARGET.match(flat)
        text, target = (match["text"], match["target"]) if match else (flat, flat)
        target = target.strip()
        text = _plain(text) or target
        qualified = qualify(target) or target
        if text == qualified:
            return f":py:obj:`{qualified}`"
        return f":py:obj:`{text} <{qualified}>`"
    if kind == "I":
        return f"*{_escape(_plain(flat))}*" if flat else ""
    if kind == "B":
        return f"**{_escape(_plain(flat))}**" if flat else ""
    if kind == "U":
        match = _TEXT_AND_TARGET.match(flat)
        if match:
            return f"`{_escape(match['text'])} <{match['target']}>`__"
        return f"`{flat} <{flat}>`__"
    if kind == "E":
        if flat not in _ESCAPES:
            raise EpytextError(f"unknown escape E{{{flat}}}")
        return _escape(_ESCAPES[flat])
    if kind in ("X", "S"):
        return _escape(_plain(flat))
    if kind == "G":
        return ""
    raise EpytextError(f"unknown inline markup {kind}{{...}}")


def _escape(text: str) -> str:
    """
    Escape what reStructuredText would read as markup in plain text.
    """
    return _SPECIAL.sub(r"\\\1", text)
