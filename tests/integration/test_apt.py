# -*- test-case-name: tests.integration.test_apt -*-
"""
apt-get through the proxy (C{Acquire::http::Proxy}) from a package
repository on loopback: the test builds a package with C{dpkg-deb}, indexes
it with C{dpkg-scanpackages} into a flat repository, serves it with the
HTTP origin, then runs C{apt-get update} and C{apt-get download} with a
configuration, sources list, lists, cache and state of their own, so that
the machine's apt state is left as it was.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration._forwarding import (
    FORWARDED,
    forwardedEvents,
    originLines,
    startHTTPOrigin,
)
from tests.integration._processes import (
    ChildProcess,
    OriginProcess,
    ProxyFactory,
    cleanEnvironment,
)
from tests.integration._sockets import LOCAL

pytestmark = pytest.mark.integration

PACKAGE = "connectproxy-test-hello"
"""
The name of the package the test builds.
"""

APT_TIMEOUT = 60
"""
Seconds an apt-get run may take.
"""

SYSTEM_LISTS = Path("/var/lib/apt/lists")
"""
The machine's package lists, which the test must not touch.
"""


def program(name: str, package: str, skip: bool) -> str:
    """
    Find a program the test needs.

    @param name: The program.
    @param package: The Debian package that installs it.
    @param skip: Whether the test is skipped without it (except under
        C{CI}), or fails.
    @return: Its path.
    """
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if found is None:
        message = f"{name} is missing: install the {package} package"
        if skip and not os.environ.get("CI"):
            pytest.skip(message)
        pytest.fail(message + " (bash .ci/run does)")
    return found


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """
    Run a command that must succeed.

    @param argv: The command line.
    @param cwd: Its working directory.
    @param env: Its environment (by default a clean one).
    @return: Its output (stdout and stderr).
    """
    result = subprocess.run(
        argv,
        cwd=cwd,
        env=env if env is not None else cleanEnvironment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=APT_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"{argv} exited with {result.returncode}:\n" + (
        result.stdout
    )
    return result.stdout


@dataclass(frozen=True)
class Repository:
    """
    A flat package repository with one package.

    @ivar directory: The repository's directory (served at the root).
    @ivar deb: The package file in it.
    """

    directory: Path
    deb: Path


def buildRepository(work: Path) -> Repository:
    """
    Build a package with one file, and a flat repository holding it with
    its gzipped C{Packages} index.

    @param work: An empty directory to build in.
    @return: The repository.
    """
    dpkgDeb = program("dpkg-deb", "dpkg", skip=True)
    scan = program("dpkg-scanpackages", "dpkg-dev", skip=False)
    tree = work / "package"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {PACKAGE}\n"
        "Version: 1.0\n"
        "Architecture: all\n"
        "Maintainer: connectproxy tests <tests@localhost>\n"
        "Description: a package built by the connectproxy tests\n"
        " It holds one text file.\n"
    )
    share = tree / "usr" / "share" / PACKAGE
    share.mkdir(parents=True)
    (share / "hello.txt").write_text("hello through the proxy\n")
    directory = work / "repository"
    directory.mkdir()
    deb = directory / f"{PACKAGE}_1.0_all.deb"
    run([dpkgDeb, "--root-owner-group", "--build", str(tree), str(deb)], work)
    index = subprocess.run(
        [scan, "--multiversion", ".", "/dev/null"],
        cwd=directory,
        env=cleanEnvironment(),
        capture_output=True,
        timeout=APT_TIMEOUT,
        check=True,
    ).stdout
    assert f"Package: {PACKAGE}\n".encode() in index, index
    (directory / "Packages.gz").write_bytes(gzip.compress(index))
    return Repository(directory, deb)


class Apt:
    """
    apt-get with a configuration, sources list, lists, cache and state of
    its own under one directory.

    @ivar root: That directory.
    @ivar proxyPort: The proxy's port on 127.0.0.1.
    """

    def __init__(self, root: Path, repositoryURL: str, proxyPort: int) -> None:
        """
        @param root: An empty directory.
        @param repositoryURL: The flat repository's URL.
        @param proxyPort: The proxy's port.
        """
        self.root = root
        self.proxyPort = proxyPort
        for directory in [
            "etc/apt.conf.d",
            "etc/preferences.d",
            "etc/sources.list.d",
            "etc/trusted.gpg.d",
            "state/lists/partial",
            "cache/archives/partial",
            "log",
            "download",
        ]:
            (root / directory).mkdir(parents=True)
        (root / "state" / "status").write_text("")
        (root / "etc" / "sources.list").write_text(
            f"deb [trusted=yes] {repositoryURL} ./\n"
        )
        # The configuration parts are read before any -o option applies, so
        # only a file named by APT_CONFIG keeps the machine's apt.conf.d
        # (and its hooks) out.
        (root / "apt.conf").write_text(
            f'Dir::Etc::Parts "{root}/etc/apt.conf.d";\nDir::Etc::main "/dev/null";\n'
        )

    def options(self) -> list[str]:
        """
        @return: The C{-o} options of every run: the proxy, and every
            directory and file apt reads or writes, under L{root}.
        """
        root = self.root
        settings = {
            "Acquire::http::Proxy": f"http://{LOCAL}:{self.proxyPort}/",
            "Acquire::http::Timeout": "20",
            "Dir::Etc": f"{root}/etc",
            "Dir::Etc::SourceList": f"{root}/etc/sources.list",
            "Dir::Etc::SourceParts": f"{root}/etc/sources.list.d",
            "Dir::Etc::Preferences": f"{root}/etc/preferences",
            "Dir::Etc::PreferencesParts": f"{root}/etc/preferences.d",
            "Dir::Etc::Trusted": f"{root}/etc/trusted.gpg",
            "Dir::Etc::TrustedParts": f"{root}/etc/trusted.gpg.d",
            "Dir::State": f"{root}/state",
            "Dir::State::Lists": f"{root}/state/lists",
            "Dir::State::status": f"{root}/state/status",
            "Dir::Cache": f"{root}/cache",
            "Dir::Log": f"{root}/log",
            "APT::Sandbox::User": "root",
            "Debug::NoLocking": "1",
        }
        options = []
        for name, value in settings.items():
            options += ["-o", f"{name}={value}"]
        return options

    def run(self, *arguments: str) -> str:
        """
        Run apt-get in the download directory.

        @param arguments: Its command and arguments.
        @return: Its output.
        """
        aptGet = program("apt-get", "apt", skip=True)
        env = cleanEnvironment(APT_CONFIG=str(self.root / "apt.conf"))
        return run(
            [aptGet, "-q", *self.options(), *arguments], self.root / "download", env
        )


def listsState() -> list[tuple[str, int]]:
    """
    @return: The machine's package lists: each entry's name and
        modification time, and the directory's own.
    """
    if not SYSTEM_LISTS.exists():
        return []
    state = [(".", SYSTEM_LISTS.stat().st_mtime_ns)]
    for entry in sorted(SYSTEM_LISTS.iterdir()):
        state.append((entry.name, entry.lstat().st_mtime_ns))
    return state


@pytest.fixture
def repositoryOrigin(
    scratchDir: Path, processes: list[ChildProcess[Any]]
) -> Iterator[tuple[Repository, OriginProcess]]:
    """
    The repository, served at the root of an HTTP origin on 127.0.0.1.
    """
    program("apt-get", "apt", skip=True)
    repository = buildRepository(scratchDir / "build")
    started = startHTTPOrigin("--directory", str(repository.directory))
    processes.append(started)
    yield repository, started


def test_aptThroughProxy(
    strictProxy: ProxyFactory,
    repositoryOrigin: tuple[Repository, OriginProcess],
    scratchDir: Path,
) -> None:
    """
    C{apt-get update} fetches the repository's index through the proxy and
    C{apt-get download} the package, byte for byte; the proxy logs each
    request the origin received; the machine's package lists are
    untouched.
    """
    repository, origin = repositoryOrigin
    running = strictProxy(
        *("--allow-network", "127.0.0.0/8", "--allow-port", str(origin.port))
    )
    before = listsState()
    base = f"http://{LOCAL}:{origin.port}/"
    apt = Apt(scratchDir / "apt", base, running.port)

    output = apt.run("update", "--error-on=any")
    assert "Get:" in output and "Packages" in output, output
    lists = list((apt.root / "state" / "lists").glob("*Packages"))
    assert len(lists) == 1, output
    assert f"Package: {PACKAGE}\n" in lists[0].read_text()

    output = apt.run("download", PACKAGE)
    downloaded = apt.root / "download" / repository.deb.name
    assert downloaded.read_bytes() == repository.deb.read_bytes(), output

    assert listsState() == before
    debURL = base + "./" + repository.deb.name
    event = running.waitForNamed(FORWARDED, target=debURL)
    assert (event["method"], event["status"], event["outcome"]) == ("GET", 200, "ok")
    indexEvent = running.waitForNamed(FORWARDED, target=base + "./Packages.gz")
    assert indexEvent["status"] == 200
    seen = sorted(line[3] for line in originLines(origin, "request"))
    logged = sorted(
        str(e["target"])[len(base) - 1 :]
        for e in forwardedEvents(running)
        if str(e["target"]).startswith(base)
    )
    assert logged == seen, (logged, seen)
