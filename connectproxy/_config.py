# -*- test-case-name: tests.test_config -*-
"""
The configuration file: a TOML table whose keys are the long option names
(C{idle-timeout = 300}, C{allow-port = ["443", "8443"]}).  Options given on
the command line win over the file.

Every key has a kind (L{ConfigKey}): a wrong TOML type, an unknown key or a
table where a value belongs is a L{ConfigError} naming the file, the key and
what the key takes.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any, Literal

from twisted.python.usage import UsageError

__all__ = ["ConfigError", "ConfigKey", "applyConfig", "loadConfig"]


class ConfigError(UsageError):
    """
    The configuration file cannot be used; the message names the file and,
    where there is one, the key.
    """


@dataclass(frozen=True, slots=True)
class ConfigKey:
    """
    What one key of the file takes and how it is applied.

    @ivar kind: C{"number"} (a TOML integer or float, or a string holding
        one), C{"string"}, C{"list"} (a list of strings, or one string) or
        C{"flag"} (C{true} or C{false}).
    @ivar apply: For C{number} and C{string}, the coerce function of the
        option, whose result is stored; for C{list}, the function adding one
        value; unused for C{flag}.
    @ivar integers: Whether a list may hold TOML integers too (ports).
    @ivar example: A value to show in the message for a wrong type.
    """

    kind: Literal["number", "string", "list", "flag"]
    apply: Callable[[str], Any] = str
    integers: bool = False
    example: str = ""


_EXPECTED = {
    "number": "a number",
    "string": "a string",
    "list": "a list of strings",
    "flag": "true or false",
}


def loadConfig(path: str) -> dict[str, Any]:
    """
    Read a configuration file.

    @raise ConfigError: When it cannot be read or is not valid TOML.
    """
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None


def applyConfig(
    path: str,
    table: Mapping[str, Any],
    given: set[str],
    keys: Mapping[str, ConfigKey],
    store: Callable[[str, Any], None],
) -> None:
    """
    Apply a configuration table to options.

    @param path: The file's name, for messages.
    @param table: What the file says.
    @param given: Options given on the command line, which the file does not
        override.
    @param keys: Every key the file may have, with its kind.
    @param store: Sets a single-valued option or flag.
    @raise ConfigError: For an unknown key or a bad value, naming the key
        and what it takes.
    """
    for key, value in table.items():
        if key not in keys:
            raise ConfigError(f"{path}: {_unknownKey(key, keys)}")
        if key in given:
            continue
        spec = keys[key]
        try:
            _apply(key, value, spec, store)
        except (ValueError, UsageError) as e:
            # The option's handler may name the option: the key is named.
            message = str(e).removeprefix(f"--{key}: ")
            raise ConfigError(f"{path}: key {key!r}: {message}") from None


def _apply(
    key: str, value: object, spec: ConfigKey, store: Callable[[str, Any], None]
) -> None:
    """
    Check one value's TOML type against its key's kind, then apply it.

    @raise ValueError: For a wrong type, saying what the key takes.
    """
    if spec.kind == "flag":
        if not isinstance(value, bool):
            raise _wrongType(value, spec)
        store(key, value)
    elif spec.kind == "list":
        values = [value] if not isinstance(value, list) else value
        for item in values:
            if not (
                isinstance(item, str)
                or (spec.integers and isinstance(item, int) and _isInteger(item))
            ):
                raise _wrongType(item if isinstance(value, list) else value, spec)
        try:
            for item in values:
                spec.apply(str(item))
        except (ValueError, UsageError) as e:
            parts = value.replace(",", " ").split() if isinstance(value, str) else []
            if len(parts) > 1:
                items = ", ".join(f'"{part}"' for part in parts)
                raise ValueError(
                    f"{e} (several values go in a list: {key} = [{items}])"
                ) from None
            raise
    else:
        if isinstance(value, str) or (
            spec.kind == "number"
            and isinstance(value, int | float)
            and _isNumber(value)
        ):
            store(key, spec.apply(str(value)))
        else:
            raise _wrongType(value, spec)


def _isInteger(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _isNumber(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _wrongType(value: object, spec: ConfigKey) -> ValueError:
    """
    The error for a value of the wrong TOML type.
    """
    expected = _EXPECTED[spec.kind]
    if spec.kind == "list":
        expected = "a list of strings" + (" or port numbers" if spec.integers else "")
    example = f", like {spec.example}" if spec.example else ""
    return ValueError(f"must be {expected}{example}, not {_tomlType(value)}")


def _tomlType(value: object) -> str:
    """
    The TOML name of a value's type, with an article.
    """
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a float ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime | date | time):
        return f"a date or time ({value.isoformat()})"
    return type(value).__name__  # pragma: no cover - tomllib makes no other


#: Options of the commands that run the proxy, which a configuration file
#: cannot give: C{twist}'s (the C{connectproxy} command passes them on), and
#: C{twistd}'s own, given before its subcommand.
_RUNNER_KEYS = {
    **dict.fromkeys(("log-file", "log-format", "log-level"), "twist"),
    "reactor": "both",
    **dict.fromkeys(
        (
            "logfile",
            "logger",
            "pidfile",
            "nodaemon",
            "uid",
            "gid",
            "umask",
            "rundir",
            "chroot",
            "syslog",
            "prefix",
            "euid",
            "profile",
            "profiler",
        ),
        "twistd",
    ),
}


def _unknownKey(key: str, keys: Mapping[str, ConfigKey]) -> str:
    """
    Why a key is not known: an option of the command that runs the proxy,
    or no option at all (naming the closest known key, if one is close).
    """
    runner = _RUNNER_KEYS.get(key.replace("_", "-").lower())
    if runner == "twistd":
        return (
            f"{key!r} is an option of twistd, not a configuration key: give "
            f"it on the command line, before the subcommand (twistd --{key} "
            "... connectproxy ...)"
        )
    if runner is not None:
        commands = (
            "connectproxy, twist and twistd"
            if runner == "both"
            else ("connectproxy and twist")
        )
        return (
            f"{key!r} is an option of the {commands} commands, not a "
            f"configuration key: give it on the command line (connectproxy "
            f"--{key} ...)"
        )
    return f"unknown key {key!r}{_suggest(key, keys)}"


def _suggest(key: str, keys: Mapping[str, ConfigKey]) -> str:
    """
    A hint naming the known key closest to an unknown one, if any is close.
    """
    close = difflib.get_close_matches(
        key.replace("_", "-").lower(), list(keys), 1, cutoff=0.75
    )
    return f" (did you mean {close[0]!r}?)" if close else ""
