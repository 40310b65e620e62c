# -*- test-case-name: tests.test_listeners -*-
"""
Listener descriptions (strports strings) split into their fields, the way
Twisted splits them.
"""

from __future__ import annotations

__all__ = ["endpointKinds", "splitDescription"]


def splitDescription(description: str) -> tuple[list[str], dict[str, str]]:
    """
    Split a strports description the way Twisted does: fields separated by
    unescaped colons, C{key=value} fields as keywords, C{\\} escaping the
    next character.

    @return: The positional fields (the type first) and the keywords.
    """
    fields: list[list[str]] = [[""]]
    escaped = False
    for char in description:
        if escaped:
            fields[-1][-1] += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            fields.append([""])
        elif char == "=" and len(fields[-1]) == 1:
            fields[-1].append("")
        else:
            fields[-1][-1] += char
    args = [field[0] for field in fields if len(field) == 1]
    kwargs = {field[0]: field[1] for field in fields if len(field) == 2}
    return args, kwargs


def endpointKinds(description: str) -> list[str]:
    """
    The endpoint types of a description, outermost first: C{["haproxy",
    "tcp"]} for C{haproxy:tcp:3128}.
    """
    args, _ = splitDescription(description)
    kinds = [args[0].lower()] if args else []
    if kinds == ["haproxy"] and len(args) > 1:
        kinds.append(args[1].lower())
    return kinds
