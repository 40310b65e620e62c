"""
Sphinx extension: the options reference, docs/options.md.

Each option is documented by a directive that takes what the code says
(help text, default, kind of value, configuration key) from
L{connectproxy.tap.Options} and what only a person can write (an example,
the synopsis, more explanation) from the page::

    ```{connectproxy-option} --idle-timeout SECONDS
    :example: --idle-timeout 300

    More text, in Markdown.
    ```

Options: C{:example:} (required), C{:default:} (replaces the default the
code has, for a default that depends on the machine or needs words) and
C{:toml:} (replaces the configuration file lines made from the example).

The build warns (an error with C{-W}) when an option of C{--help} has no
directive, when a directive names no option, and when an option is
documented twice.
"""

from __future__ import annotations

import re
from typing import Any

import cp_optionsdata
from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

_log = logging.getLogger(__name__)

_SPECIAL = re.compile(r"([\\`*_\[\]<>{}|#])")
_OPTION = re.compile(r"(?<![\w-])--([a-z][a-z-]*[a-z])")


def escape(text: str) -> str:
    """
    Escape what Markdown would read as markup in plain text.
    """
    return _SPECIAL.sub(r"\\\1", text)


def linkOptions(text: str, known: dict[str, Any]) -> str:
    """
    Escape plain text and link the options it names.
    """
    out = []
    position = 0
    for match in _OPTION.finditer(text):
        if match[1] not in known:
            continue
        out.append(escape(text[position : match.start()]))
        out.append(f"{{option}}`--{match[1]}`")
        position = match.end()
    out.append(escape(text[position:]))
    return "".join(out)


class ConnectProxyOption(SphinxDirective):
    """
    Document one option: C{```{connectproxy-option} --name VALUE}.
    """

    required_arguments = 1
    final_argument_whitespace = True
    has_content = True
    option_spec = {
        "example": directives.unchanged_required,
        "default": directives.unchanged_required,
        "toml": directives.unchanged_required,
    }

    def run(self) -> list[nodes.Node]:
        synopsis = self.arguments[0]
        name = synopsis.split()[0].removeprefix("--")
        known = cp_optionsdata.options()
        option = known.get(name)
        if option is None:
            _log.warning(
                "options reference: no option --%s in connectproxy.tap.Options",
                name,
                location=self.get_location(),
            )
            return []
        if option.takesValue != (len(synopsis.split()) > 1):
            _log.warning(
                "options reference: --%s %s a value: write %r",
                name,
                "takes" if option.takesValue else "takes no",
                f"--{name} VALUE" if option.takesValue else f"--{name}",
                location=self.get_location(),
            )
        documented = self.env.cp_options_documented  # type: ignore[attr-defined]
        if name in documented:
            _log.warning(
                "options reference: --%s is documented twice",
                name,
                location=self.get_location(),
            )
        documented[name] = self.env.docname
        example = self.options.get("example")
        if example is None:
            _log.warning(
                "options reference: --%s has no :example:",
                name,
                location=self.get_location(),
            )
            example = ""
        lines = self._markdown(synopsis, option, example, known)
        container = nodes.container()
        self.state.nested_parse(
            StringList(lines, source=self.get_source_info()[0]),
            self.content_offset,
            container,
        )
        return list(container.children)

    def _markdown(
        self,
        synopsis: str,
        option: cp_optionsdata.OptionDoc,
        example: str,
        known: dict[str, Any],
    ) -> list[str]:
        lines = [f"````{{option}} {synopsis}", linkOptions(option.help, known), ""]
        if self.content:
            lines += [*self.content, ""]
        if option.valueDoc:
            lines += ["Value", f": {linkOptions(option.valueDoc, known)}", ""]
        if "default" in self.options:
            default = self.options["default"]
        elif option.default is not None:
            default = f"`{cp_optionsdata.formatValue(option.default)}`"
        elif option.fileKey == "flag":
            default = "off"
        else:
            default = "none"
        if option.fileKey is not None or option.takesValue:
            lines += ["Default", f": {default}", ""]
        if option.repeatable:
            lines += ["Repeatable", ": yes: give it once for each value", ""]
        if example:
            lines += ["Example", f": `{example}`", ""]
        if option.fileKey is None:
            lines += ["In the configuration file", ": not a key of the file", ""]
        else:
            toml = self.options.get("toml")
            if toml is None and example:
                try:
                    toml = cp_optionsdata.tomlExample(example)
                except ValueError as e:
                    _log.warning(
                        "options reference: %s", e, location=self.get_location()
                    )
            if toml:
                lines += ["In the configuration file", ": ```toml"]
                lines += [f"  {line}" for line in toml.split("\n")]
                lines += ["  ```", ""]
        lines.append("````")
        return lines


def _initialize(app: Sphinx, env: BuildEnvironment, docnames: list[str]) -> None:
    if not hasattr(env, "cp_options_documented"):
        env.cp_options_documented = {}  # type: ignore[attr-defined]
    for name, docname in list(env.cp_options_documented.items()):  # type: ignore[attr-defined]
        if docname in docnames:
            del env.cp_options_documented[name]  # type: ignore[attr-defined]


def _purge(app: Sphinx, env: BuildEnvironment, docname: str) -> None:
    documented = getattr(env, "cp_options_documented", {})
    for name in [name for name, doc in documented.items() if doc == docname]:
        del documented[name]


def _merge(
    app: Sphinx, env: BuildEnvironment, docnames: set[str], other: BuildEnvironment
) -> None:
    env.cp_options_documented.update(other.cp_options_documented)  # type: ignore[attr-defined]


def _checkAllDocumented(app: Sphinx, env: BuildEnvironment) -> None:
    documented = getattr(env, "cp_options_documented", {})
    for name in cp_optionsdata.options():
        if name not in documented:
            _log.warning(
                "options reference: --%s (in --help) is not documented: add a "
                "%s directive for it to docs/options.md",
                name,
                cp_optionsdata.DIRECTIVE,
            )


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive(cp_optionsdata.DIRECTIVE, ConnectProxyOption)
    app.connect("env-before-read-docs", _initialize)
    app.connect("env-purge-doc", _purge)
    app.connect("env-merge-info", _merge)
    app.connect("env-check-consistency", _checkAllDocumented)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
