# -*- test-case-name: tests.test_docs -*-
"""
The test examples in docs/embedding.md run and pass (docs/plugins.md's are
run by tests/test_plugins.py), the shell commands of the README and
docs/*.md are written so that they run (tests/integration/test_readme.py
runs them), and the documentation site has what it takes from the code and
no broken links.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import shlex
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from connectproxy import tap
from tests._shellblocks import (
    CI_SCRIPT,
    README,
    REPO_ROOT,
    VENV_PROGRAMS,
    Foreground,
    Install,
    Kind,
    Server,
    ShellBlock,
    classify,
    documents,
    programs,
    segments,
    shellBlocks,
)
from tests.integration._pki import makeTLSFiles

EMBEDDING = Path(__file__).resolve().parent.parent / "docs" / "embedding.md"


def testBlocks() -> list[str]:
    """
    The Python examples of docs/embedding.md that define tests (the others
    start a reactor).
    """
    text = EMBEDDING.read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```$", text, re.S | re.M)
    return [block for block in blocks if re.search(r"^def test_", block, re.M)]


def test_embeddingHasTestExamples() -> None:
    """
    docs/embedding.md shows at least one test.
    """
    assert testBlocks()


@pytest.mark.parametrize("block", testBlocks())
def test_embeddingExample(block: str) -> None:
    """
    Each test shown in docs/embedding.md passes.
    """
    namespace: dict[str, Any] = {"__name__": "docs_embedding"}
    exec(compile(block, str(EMBEDDING), "exec"), namespace)
    for name, value in list(namespace.items()):
        if name.startswith("test_"):
            value()


# The shell commands of the README and docs/*.md: tests/integration/
# test_readme.py runs them; these checks need no process.


def _allBlocks() -> list[ShellBlock]:
    return [block for path in documents() for block in shellBlocks(path)]


def _ids(block: ShellBlock) -> str:
    return block.where()


def _readmeTestCommand() -> str:
    """
    The README's command that runs the test suite.
    """
    [command] = [
        command
        for block in shellBlocks(README)
        for command in block.commands()
        if ".venv/bin/python -m pytest" in command
    ]
    return command


def test_readmeStartsWithInstall() -> None:
    """
    The README's first command installs into C{.venv}, which every later
    command relies on, and runs the proxy.
    """
    first = shellBlocks(README)[0]
    assert first.notRun is None
    [command] = first.commands()
    kinds = [classify(part) for part in segments(command)]
    assert kinds[:2] == [Install(), Install()]
    assert isinstance(kinds[2], Server) and kinds[2].name == "proxy"


@pytest.mark.parametrize("block", _allBlocks(), ids=_ids)
def test_venvProgramsByPath(block: ShellBlock) -> None:
    """
    Programs that only the virtual environment has are called as
    C{.venv/bin/NAME} (it is never activated), and C{python3} only creates
    it; this holds for blocks that do not run here too.
    """
    for command in block.commands():
        for program in programs(command):
            assert program not in VENV_PROGRAMS, (
                f"{block.where()}: call {program} as .venv/bin/{program}: {command}"
            )
            if program == "python3":
                assert "python3 -m venv " in command, (
                    f"{block.where()}: use .venv/bin/python: {command}"
                )


#: Commands that would change the machine a runnable block runs on.
_CHANGES_MACHINE = re.compile(
    r"(^|[;&|]\s*)(sudo|systemctl|useradd|groupadd|apt-get)\b"
    r"|(^|[;&|]\s*)(chown|chmod|chgrp|install|cp|mv|rm|ln|mkdir|tee|touch)\b"
    r"[^;&|]*\s/(etc|usr|var|opt|run|lib|srv|root|home)(/|\s|$)"
)


@pytest.mark.parametrize("block", _allBlocks(), ids=_ids)
def test_blockRunsOrSaysWhyNot(block: ShellBlock) -> None:
    """
    A block either runs on loopback, every command of it of a kind the
    README test knows how to run, or says why not; a block that does not
    run has no expectations about running.
    """
    if block.notRun is not None:
        assert block.notRun.strip(), f"{block.where()}: not-run needs a reason"
        assert set(block.markers) == {"not-run"}, block.where()
        return
    for command in block.commands():
        # The README test runs the block on this machine: nothing in it may
        # change the machine outside the test's own directory.
        assert not _CHANGES_MACHINE.search(command), (
            f"{block.where()}: changes the machine, mark it not-run: {command}"
        )
    kinds = [
        classify(part) for command in block.commands() for part in segments(command)
    ]
    assert kinds, f"{block.where()}: an empty block"
    if block.marker("fails") is not None:
        assert kinds == [Foreground()], (
            f"{block.where()}: a failing block is one command that exits"
        )
    if "output" in block.markers:
        assert Foreground() in kinds, f"{block.where()}: no command prints"


def test_pluginCacheCommandsIsolated() -> None:
    """
    Every documented command that regenerates Twisted's plugin cache runs
    Python isolated (C{-I}): run from a checkout (as the documents' commands
    are), it would otherwise import the checkout's C{connectproxy/plugins}
    and C{twisted/plugins} and write their caches there, not the installed
    ones.
    """
    paths = [*documents(), REPO_ROOT / "docs" / "examples" / "plugin" / "README.md"]
    found = []
    for block in (block for path in paths for block in shellBlocks(path)):
        for command in block.commands():
            if "getPlugins(" not in command:
                continue
            words = shlex.split(command)
            python = next(i for i, w in enumerate(words) if w.endswith("python"))
            assert words[python + 1] == "-I", f"{block.where()}: {command}"
            found.append(command)
    assert len(found) >= 4


def test_ciRunsTheReadmeTestCommand() -> None:
    """
    C{.ci/run} runs the README's test command exactly as written.
    """
    command = _readmeTestCommand()
    assert command.startswith("python3 -m venv .venv && ")
    assert command in CI_SCRIPT.read_text(encoding="utf-8")


def test_coverageGateOnWholeSuiteOnly() -> None:
    """
    The 90% coverage gate is in the README's test command (the whole
    suite), not in pytest's default options, so a run of one file does not
    fail on it.
    """
    assert _readmeTestCommand().endswith(" --cov-fail-under=90")
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text("utf-8"))
    options = pyproject["tool"]["pytest"]["ini_options"]["addopts"]
    assert "--cov=connectproxy" in options
    assert "--cov-fail-under" not in options


# The parsing and classifying themselves.


def test_markersAndContinuations(tmp_path: Path) -> None:
    """
    Markers right before a shell block belong to it; continuation lines make
    one command; comments, blank lines and other languages' blocks are left
    out.
    """
    path = tmp_path / "doc.md"
    path.write_text(
        "Intro\n\n"
        "```python\nprint('not shell')\n```\n\n"
        "<!-- fails: refused -->\n"
        "<!-- log: one -->\n"
        "<!-- log: two -->\n"
        "```sh\n"
        "# a comment\n"
        "curl -p \\\n    -x http://127.0.0.1:3128 http://127.0.0.1:8443/\n"
        "\n"
        "echo done\n"
        "```\n"
        "```bash\ntrue\n```\n",
        encoding="utf-8",
    )
    first, second = shellBlocks(path)
    assert (first.line, second.line) == (10, 17)
    assert first.markers == {"fails": ["refused"], "log": ["one", "two"]}
    assert first.marker("fails") == "refused"
    assert first.notRun is None
    assert first.commands() == [
        "curl -p      -x http://127.0.0.1:3128 http://127.0.0.1:8443/",
        "echo done",
    ]
    assert (second.markers, second.commands()) == ({}, ["true"])


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("<!-- not-ran: typo -->\n```sh\ntrue\n```\n", "unknown marker 'not-ran'"),
        ("<!-- not-run: why -->\n\n```sh\ntrue\n```\n", "markers not before"),
        ("<!-- not-run: why -->\n```python\npass\n```\n", "markers not before"),
        ("<!-- fails: a -->\n<!-- fails: b -->\n```sh\nfalse\n```\n", "repeated"),
        ("text\n<!-- not-run: why -->\n", "markers not before"),
    ],
)
def test_misplacedMarkers(tmp_path: Path, text: str, complaint: str) -> None:
    """
    An unknown, repeated or stray marker is an error, so that no block
    goes unchecked because of a typo.
    """
    path = tmp_path / "doc.md"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=complaint):
        shellBlocks(path)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("A=1 B='x y' .venv/bin/twistd -n x | grep y && cd z; python a", None),
        ("curl -x http://h:1 http://o/ || true", ["curl", "true"]),
    ],
)
def test_programs(command: str, expected: list[str] | None) -> None:
    """
    The programs of a command line are the first words of its simple
    commands, after assignments.
    """
    if expected is None:
        expected = [".venv/bin/twistd", "grep", "cd", "python"]
    assert programs(command) == expected


@pytest.mark.parametrize(
    ("command", "kind"),
    [
        ("python3 -m venv .venv", Install()),
        (".venv/bin/pip install .", Install()),
        (".venv/bin/pip install '.[test]'", Install()),
        (".venv/bin/pip install requests", Foreground()),
        ("curl -p -x http://127.0.0.1:3128 http://127.0.0.1:8443/", Foreground()),
        (".venv/bin/twistd connectproxy --help", Foreground()),
        (
            ".venv/bin/python -m http.server 8443 --bind 127.0.0.1",
            Server(
                "origin",
                "Serving HTTP on ",
                ".venv/bin/python -m http.server 8443 --bind 127.0.0.1",
                8443,
            ),
        ),
        (
            ".venv/bin/twistd -n --pidfile= connectproxy --allow-port 8443",
            Server(
                "proxy",
                "connectproxy listening on ",
                ".venv/bin/twistd -n --pidfile= connectproxy --allow-port 8443 "
                "--listen tcp:3128:interface=127.0.0.1",
                3128,
            ),
        ),
        (
            ".venv/bin/twist --log-format json connectproxy --listen tcp:3129",
            Server(
                "proxy",
                "connectproxy listening on ",
                ".venv/bin/twist --log-format json connectproxy --listen tcp:3129",
                3129,
            ),
        ),
        (
            "X=1 .venv/bin/twistd -ny docs/examples/connectproxy.tac --pidfile=",
            Server(
                "proxy",
                "connectproxy listening on ",
                "X=1 CONNECTPROXY_LISTEN=tcp:3128:interface=127.0.0.1 "
                ".venv/bin/twistd -ny docs/examples/connectproxy.tac --pidfile=",
                3128,
            ),
        ),
    ],
)
def test_classify(command: str, kind: Kind) -> None:
    """
    Installs, servers (with the default listener written out) and commands
    that exit are told apart.
    """
    assert classify(command) == kind


@pytest.mark.parametrize(
    ("command", "complaint"),
    [
        (".venv/bin/twistd --pidfile=p connectproxy", "daemonizes"),
        (".venv/bin/twist connectproxy --listen unix:/s", "cannot tell"),
    ],
)
def test_classifyRefuses(command: str, complaint: str) -> None:
    """
    A daemonizing command, or a server whose port cannot be told, cannot be
    run by the README test.
    """
    with pytest.raises(ValueError, match=complaint):
        classify(command)


# The documentation site (docs/conf.py): what it takes from the code is
# checked here too, without Sphinx, so that the test suite catches a missing
# option or refusal reason and a broken link.

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"


def _extension(name: str) -> Any:
    """
    Import a module of docs/_ext (not a package) by path.
    """
    spec = importlib.util.spec_from_file_location(name, DOCS / "_ext" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


optionsData = _extension("cp_optionsdata")
epytext = _extension("cp_epytext")

OPTIONS_PAGE = DOCS / "options.md"


def _documented() -> list[Any]:
    return list(
        optionsData.documentedOptions(
            OPTIONS_PAGE.read_text(encoding="utf-8").splitlines()
        )
    )


def test_optionsReferenceHasEveryOption() -> None:
    """
    Every option C{--help} lists has an entry in docs/options.md, once, with
    an example, and every entry is an option.
    """
    helpText = str(tap.Options())
    inHelp = set(re.findall(r"^\s+(?:-\w, )?--([a-z][a-z-]*)", helpText, re.M))
    assert "idle-timeout" in inHelp
    documented = [entry.name for entry in _documented()]
    assert sorted(inHelp - set(documented)) == [], "missing from docs/options.md"
    assert sorted(set(documented) - inHelp) == [], "not options"
    assert len(documented) == len(set(documented)), "documented twice"
    for entry in _documented():
        assert entry.fields.get("example"), f"--{entry.name} has no :example:"


def _caCertificate(directory: Path) -> str:
    """
    A CA certificate (PEM), made for the test.
    """
    return makeTLSFiles(directory).caCert.read_text(encoding="ascii")


_FILES: dict[str, str | Callable[[Path], str] | None] = {
    "htpasswd": None,  # written by the test: a bcrypt entry
    "hosts": "example.com\n*.example.org\n",
    "proxy.toml": "idle-timeout = 300\n",
    "parent-ca.pem": _caCertificate,
}


def _withFiles(text: str, tmp_path: Path) -> str:
    """
    Point the example paths under /etc/connectproxy at files made for the
    test.
    """

    def replace(match: re.Match[str]) -> str:
        name = match[1]
        assert name in _FILES, f"add a test file for {match[0]} in _FILES"
        path = tmp_path / name
        content = _FILES[name]
        if content is None:
            content = "alice:" + bcrypt.hashpw(b"secret", bcrypt.gensalt(4)).decode()
        elif callable(content):
            made = tmp_path / f"{name}.d"
            made.mkdir(exist_ok=True)
            content = content(made)
        path.write_text(content + "\n", encoding="utf-8")
        return str(path)

    return re.sub(r"/etc/connectproxy/([\w.-]+)", replace, text)


@pytest.mark.parametrize("entry", _documented(), ids=lambda entry: entry.name)
def test_optionExampleWorks(entry: Any, tmp_path: Path) -> None:
    """
    The example of each option is accepted on the command line, and the
    configuration file lines the page shows for it give the same values.
    """
    known = optionsData.options()
    option = known[entry.name]
    arguments = shlex.split(_withFiles(entry.fields["example"], tmp_path))
    if option.fileKey is None and entry.name != "config":
        # --help and its kin print and exit.
        with pytest.raises(SystemExit) as exited:
            tap.Options().parseOptions(arguments)
        assert exited.value.code in (0, None)
        return
    fromCommandLine = tap.Options()
    fromCommandLine.parseOptions(arguments)
    toml = entry.fields.get("toml") or optionsData.tomlExample(entry.fields["example"])
    if option.fileKey is None:
        assert toml is None
        return
    assert toml, f"--{entry.name} has no configuration file example"
    config = tmp_path / "example.toml"
    config.write_text(_withFiles(toml, tmp_path) + "\n", encoding="utf-8")
    fromFile = tap.Options()
    fromFile.parseOptions(["--config", str(config)])
    for name, _ in optionsData.exampleArguments(entry.fields["example"]):
        if name == "auth":
            # Kept as checkers, not as a value.
            assert len(fromFile.checkers()) == len(fromCommandLine.checkers()) == 1
        else:
            assert fromFile[name] == fromCommandLine[name], name


def test_tomlExampleKinds() -> None:
    """
    Switches become booleans, repeatable options lists, numbers stay
    numbers and other values become strings.
    """
    assert optionsData.tomlExample("--auth-allow-plaintext") == (
        "auth-allow-plaintext = true"
    )
    assert optionsData.tomlExample("--allow-port 443 --allow-port 8000-8080") == (
        'allow-port = ["443", "8000-8080"]'
    )
    assert optionsData.tomlExample("--idle-timeout 2.5") == "idle-timeout = 2.5"
    assert optionsData.tomlExample("--auth-realm 'A B'") == 'auth-realm = "A B"'
    assert optionsData.tomlExample("--help") is None
    with pytest.raises(ValueError, match="no option --nope"):
        optionsData.tomlExample("--nope 1")


def _refusals() -> list[tuple[int, tuple[str, str], str]]:
    """
    Every status and reason the code answers clients with, where both are
    written out: C{BadRequest(400, "...")}, C{Refused(...)},
    C{Refusal(...)}, C{ParentProxyError(...)}, C{_refuse(...)},
    C{errorResponse(...)} and functions
    returning C{(status, "reason")}.

    @return: C{(status, (pattern, reason), where)}, the pattern matching
        the reason with anything in place of its f-string fields.
    """

    def pattern(node: ast.expr) -> tuple[str, str] | None:
        """
        The pattern of a reason, and the reason as the code writes it.
        """
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return re.escape(node.value), node.value
        if isinstance(node, ast.JoinedStr):
            parts = []
            for value in node.values:
                if isinstance(value, ast.Constant):
                    parts.append(re.escape(str(value.value)))
                else:
                    parts.append(".+")
            return "".join(parts), ast.unparse(node)
        return None

    found = []
    names = {
        "BadRequest",
        "Refused",
        "Refusal",
        "refuse",
        "_refuse",
        "errorResponse",
        "ParentProxyError",
    }
    for path in sorted((REPO / "connectproxy").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            pair: list[ast.expr] = []
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else None
                name = func.id if isinstance(func, ast.Name) else name
                if name in names and len(node.args) >= 2:
                    pair = node.args[:2]
            elif isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple):
                pair = node.value.elts[:2] if len(node.value.elts) == 2 else []
            if not pair:
                continue
            status, reason = pair
            text = pattern(reason)
            if (
                isinstance(status, ast.Constant)
                and isinstance(status.value, int)
                and 400 <= status.value < 600
                and text is not None
            ):
                where = f"{path.relative_to(REPO)}:{status.lineno}"
                found.append((status.value, text, where))
    return found


def test_troubleshootingHasEveryReason() -> None:
    """
    docs/troubleshooting.md lists every reason the code sends, under its
    status.
    """
    text = (DOCS / "troubleshooting.md").read_text(encoding="utf-8")
    sections = dict(
        (int(status), body)
        for status, body in re.findall(
            r"^## (\d{3}) [^\n]*\n(.*?)(?=^## |\Z)", text, re.M | re.S
        )
    )
    refusals = _refusals()
    assert len(refusals) > 40
    missing = []
    for status, (reason, written), where in refusals:
        spans = re.findall(r"`([^`]+)`", sections.get(status, ""))
        if not any(re.fullmatch(reason, span) for span in spans):
            missing.append(f"{status} {written} ({where})")
    assert not missing, (
        "docs/troubleshooting.md does not list these reasons under their "
        "status (write f-string fields in capitals, like `port PORT is not "
        "allowed`):\n" + "\n".join(missing)
    )


_SKIP_LINK = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|#|$)")


def _markdownFiles() -> list[Path]:
    files = [REPO / "README.md", REPO / "CHANGELOG.md"]
    files += sorted((REPO / "bench").glob("*.md"))
    files += sorted(path for path in DOCS.rglob("*.md") if "_build" not in path.parts)
    return [path for path in files if path.exists()]


def _prose(path: Path) -> str:
    """
    A Markdown file without its fenced code blocks and code spans, where
    link syntax is not a link.
    """
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"^(```+|~~~+).*?^\1\s*$", "", text, flags=re.M | re.S)
    return re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", text, flags=re.S)


def githubSlug(heading: str) -> str:
    """
    The anchor GitHub (and MyST's C{myst_heading_anchors}) gives a heading.
    """
    text = re.sub(r"`", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"^(```+|~~~+).*?^\1\s*$", "", text, flags=re.M | re.S)
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", text, re.M):
        slug = githubSlug(heading)
        number = 0
        unique = slug
        while unique in anchors:
            number += 1
            unique = f"{slug}-{number}"
        anchors.add(unique)
    return anchors


def test_githubSlug() -> None:
    """
    Headings become anchors as on GitHub.
    """
    assert githubSlug("Running it") == "running-it"
    assert (
        githubSlug("`IUpstreamConnector`: how the proxy reaches the target")
        == "iupstreamconnector-how-the-proxy-reaches-the-target"
    )
    assert githubSlug("TLS between clients and the proxy (HTTPS proxy)") == (
        "tls-between-clients-and-the-proxy-https-proxy"
    )


@pytest.mark.parametrize(
    "path", _markdownFiles(), ids=lambda path: str(path.relative_to(REPO))
)
def test_relativeLinksResolve(path: Path) -> None:
    """
    Every relative link of a Markdown file points at a file or directory
    that exists and, with a C{#fragment}, at a heading of that file.
    """
    broken = []
    for target in re.findall(
        r"\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)", _prose(path)
    ):
        address, _, fragment = target.partition("#")
        if _SKIP_LINK.match(target) and not target.startswith("#"):
            continue
        linked = (path.parent / address).resolve() if address else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif fragment and fragment not in _anchors(linked):
            broken.append(f"{target}: no heading #{fragment} in {linked.name}")
    assert broken == [], f"{path.relative_to(REPO)}: broken links"


def _convert(text: str) -> str:
    names = {"Options": "connectproxy.tap.Options", "E": "connectproxy.E"}
    return "\n".join(epytext.convert(text.splitlines(), names.get))


def test_epytextInlineMarkup() -> None:
    """
    Code, links, emphasis and escapes become reStructuredText; text that
    reStructuredText would read as markup is escaped.
    """
    assert _convert("Use C{x = {1: 2}} with L{Options}.") == (
        "Use ``x = {1: 2}`` with :py:obj:`Options <connectproxy.tap.Options>`."
    )
    assert _convert("See L{the options <Options>}, I{not} B{this}.") == (
        "See :py:obj:`the options <connectproxy.tap.Options>`, *not* **this**."
    )
    assert _convert("L{Missing.name}") == ":py:obj:`Missing.name`"
    assert _convert("*.example.com and __init__ E{lb}x") == (
        r"\*.example.com and \_\_init\_\_ {x"
    )
    assert _convert("C{None}s") == r"``None``\ s"


def test_epytextFields() -> None:
    """
    Fields become Sphinx's info fields, separated from the text before
    them; exceptions get their full name.
    """
    text = "Do it.\n@param x: The C{x}.\n    More.\n@raise E: When.\n@return: Y."
    assert _convert(text).splitlines() == [
        "Do it.",
        "",
        ":param x: The ``x``.",
        "    More.",
        ":raises ~connectproxy.E: When.",
        ":returns: Y.",
    ]


def test_epytextLiteralBlocksKept() -> None:
    """
    Literal and doctest blocks are not converted.
    """
    text = "Example::\n\n    C{x} *y*\n\nAfter.\n\n>>> f(C{1})\n"
    assert _convert(text).splitlines() == [
        "Example::",
        "",
        "    C{x} *y*",
        "",
        "After.",
        "",
        ">>> f(C{1})",
    ]


def test_epytextErrors() -> None:
    """
    Unknown fields and unbalanced braces are errors, not silent text.
    """
    with pytest.raises(epytext.EpytextError, match="@frobnicate"):
        _convert("@frobnicate: x")
    with pytest.raises(epytext.EpytextError, match="unbalanced"):
        _convert("C{x")
