"""
Sphinx configuration of the connectproxy documentation.

Build it (from the repository root, after C{pip install '.[docs]'}) with::

    .venv/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html

Warnings are errors, references are checked (nitpicky), and so is every
link between pages and to their headings.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent

# Document the source tree, not whatever copy is installed, and load the
# extensions of docs/_ext.
sys.path[:0] = [str(ROOT), str(DOCS / "_ext")]

from connectproxy import __version__  # noqa: E402

project = "connectproxy"
author = "the connectproxy developers"
copyright = "the connectproxy developers"
version = release = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "cp_apidoc",
    "cp_options",
    "cp_changelog",
]

root_doc = "index"
source_suffix = {".md": "markdown"}
exclude_patterns = [
    "_build",
    # The example plugin is a package of its own: only its README is a page.
    "examples/plugin/[!R]*",
    "examples/plugin/**/*",
]

# Every reference must resolve; links to other pages and to headings are
# checked by MyST (myst.xref_missing), whose warnings are errors too.
nitpicky = True
myst_heading_anchors = 3
myst_enable_extensions = ["deflist"]

# The API reference (docs/api.md): epytext docstrings, see docs/_ext.
cp_api_modules = [
    "connectproxy",
    "connectproxy.interfaces",
    "connectproxy.tap",
    "connectproxy.testing",
]
autodoc_member_order = "bysource"
toc_object_entries_show_parents = "hide"
autodoc_typehints_format = "short"
autoclass_content = "both"
autodoc_inherit_docstrings = False

html_theme = "alabaster"
html_title = f"connectproxy {release}"
html_theme_options = {
    "description": "An HTTP CONNECT forward proxy on Twisted",
    "page_width": "1160px",
    "sidebar_width": "260px",
}
html_show_sourcelink = False
