"""
Sphinx extension: the changes not yet released, as towncrier will write
them into CHANGELOG.md at the next release: C{```{towncrier-draft}}.

It runs C{towncrier build --draft} (which writes nothing) on the news
fragments of connectproxy/newsfragments at build time, so the page is never
out of date.  A failure of towncrier (a fragment it cannot read, say) is a
build warning, so an error with C{-W}.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

_log = logging.getLogger(__name__)


def draft(root: Path, version: str) -> str:
    """
    The release notes towncrier would write for the news fragments now.

    @param root: The directory of pyproject.toml.
    @param version: The version to name in the title.
    @return: Markdown.
    @raise subprocess.CalledProcessError: When towncrier fails.
    """
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "towncrier",
            "build",
            "--draft",
            "--version",
            version,
            "--date",
            "unreleased",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


class TowncrierDraft(SphinxDirective):
    """
    Insert the draft of the next release notes.
    """

    def run(self) -> list[nodes.Node]:
        root = Path(self.env.app.confdir).parent
        pyproject = root / "pyproject.toml"
        self.env.note_dependency(str(pyproject))
        fragments = root / "connectproxy" / "newsfragments"
        for fragment in fragments.iterdir():
            self.env.note_dependency(str(fragment))
        try:
            text = draft(root, self.config.release)
        except subprocess.CalledProcessError as e:
            _log.warning(
                "towncrier build --draft failed: %s",
                (e.stderr or e.stdout or str(e)).strip(),
                location=self.get_location(),
            )
            return []
        container = nodes.section()
        self.state.nested_parse(
            StringList(text.splitlines(), source="towncrier build --draft"),
            self.content_offset,
            container,
            match_titles=True,
        )
        return list(container.children)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("towncrier-draft", TowncrierDraft)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
