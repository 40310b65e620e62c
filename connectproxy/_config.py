# -*- test-case-name: tests.test_config -*-
"""
The configuration file: a TOML table whose keys are the long option names
(C{idle-timeout = 300}, C{allow-port = ["443", "8443"]}).  Options given on
the command line win over the file.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from twisted.python.usage import UsageError

__all__ = ["ConfigError", "applyConfig", "loadConfig"]


class ConfigError(UsageError):
    """
    The configuration file cannot be used; the message names the file and,
    where there is one, the key.
    """


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
    parameters: Mapping[str, Callable[[str], Any]],
    lists: Mapping[str, Callable[[str], None]],
    flags: Iterable[str],
    store: Callable[[str, Any], None],
) -> None:
    """
    Apply a configuration table to options.

    @param path: The file's name, for messages.
    @param table: What the file says.
    @param given: Options given on the command line, which the file does not
        override.
    @param parameters: Single-valued options and their coerce functions.
    @param lists: Repeatable options and the function adding one value.
    @param flags: Switches (booleans in the file).
    @param store: Sets a single-valued option or flag.
    @raise ConfigError: For an unknown key or a bad value, naming the key.
    """
    flags = set(flags)
    for key, value in table.items():
        if key in ("config",) or not (
            key in parameters or key in lists or key in flags
        ):
            raise ConfigError(f"{path}: unknown key {key!r}")
        if key in given:
            continue
        try:
            if key in parameters:
                if isinstance(value, bool) or not isinstance(value, str | int | float):
                    raise ValueError("must be a number or a string")
                store(key, parameters[key](str(value)))
            elif key in lists:
                values = [value] if isinstance(value, str | int) else value
                if not isinstance(values, list) or not all(
                    isinstance(v, str | int) and not isinstance(v, bool) for v in values
                ):
                    raise ValueError("must be a string or a list of strings")
                for v in values:
                    lists[key](str(v))
            else:
                if not isinstance(value, bool):
                    raise ValueError("must be true or false")
                store(key, value)
        except (ValueError, UsageError) as e:
            raise ConfigError(f"{path}: key {key!r}: {e}") from None
