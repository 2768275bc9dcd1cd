"""``kd.toml``: defaults for any command-line option, like the seed tool's config file.

Top-level keys apply to every command that has such an option; a ``[teach]`` table (or
``[labels.detect]`` for a nested command) applies to that command alone. Options given on the
command line always win.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import KdError

DEFAULT_CONFIG = "kd.toml"


def config_path(explicit: str | None) -> Path | None:
    """``--config`` wins, then ``$KD_CONFIG``, then ``kd.toml`` in the working directory if present."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("KD_CONFIG")
    if env:
        return Path(env)
    local = Path(DEFAULT_CONFIG)
    return local if local.is_file() else None


def load(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KdError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise KdError(f"{path}: not valid TOML: {exc}") from None


def defaults_for(
    config: dict[str, Any], command_path: list[str], options: dict[str, str] | set[str]
) -> dict[str, Any]:
    """The defaults ``config`` gives the command at ``command_path`` (e.g. ``['labels', 'detect']``).

    ``options`` maps each accepted key (with ``_`` for ``-``) to the parameter it sets. A key in the command's own table that is not one of its options is an
    error (a typo would otherwise be ignored); unknown top-level keys are ignored since they may be
    meant for other commands.
    """
    if not isinstance(options, dict):
        options = {o: o for o in options}
    out: dict[str, Any] = {}
    for key, value in config.items():
        if not isinstance(value, dict) and key.replace("-", "_") in options:
            out[options[key.replace("-", "_")]] = value
    table: Any = config
    for part in command_path:
        table = table.get(part) if isinstance(table, dict) else None
    if isinstance(table, dict):
        for key, value in table.items():
            if isinstance(value, dict):
                continue
            name = key.replace("-", "_")
            if name not in options:
                raise KdError(
                    f"config [{'.'.join(command_path)}]: {key!r} is not an option of "
                    f"`kd {' '.join(command_path)}`"
                )
            out[options[name]] = value
    return out
