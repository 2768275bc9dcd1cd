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
    if explicit is not None and not explicit.strip():  # (`--config "$CFG"` with CFG unset: not ./kd.toml, or no file, unseen)
        raise KdError("--config is empty: give the TOML file (or leave --config out for $KD_CONFIG or ./kd.toml)")
    if explicit:  # expanded as --db, KD_DB and KD_ARTIFACTS are: a quoted "~/kd.toml" is the home folder's
        return Path(explicit).expanduser()
    env = os.environ.get("KD_CONFIG")
    if env and not env.strip():  # (as KD_DB: an empty one is unset, a blank one a mistake)
        raise KdError("KD_CONFIG is blank: set it to the TOML file, or unset it for ./kd.toml")
    if env:
        return Path(env).expanduser()
    local = Path(DEFAULT_CONFIG)
    return local if local.is_file() else None


def load(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise KdError(f"{path}: config file not found") from None
    except OSError as exc:  # a folder, no permission: "conf: Is a directory" named no config file
        raise KdError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")  # a BOM (an editor on Windows) is dropped, as ingest drops it
    except UnicodeDecodeError as exc:  # (a traceback, from read_text)
        if data[:2] in (b"\xff\xfe", b"\xfe\xff"):  # (Windows PowerShell's `>` and Notepad's "Unicode": "line 1 ... byte 0xff")
            raise KdError(f"{path}: saved as UTF-16 (its byte order mark); save the file as UTF-8") from None
        line = data.count(b"\n", 0, exc.start) + 1
        raise KdError(f"{path}: line {line}: not valid UTF-8 (byte 0x{data[exc.start]:02x}); "
                      "save the file as UTF-8") from None
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KdError(f"{path}: not valid TOML: {exc}") from None
    _refuse_command_line_only(config, path)
    return config


# typed for the one command meant: in a file they would apply to every run
COMMAND_LINE_ONLY = {
    "overwrite": "replaces what a stage, an export or a sheet holds",
    "yes": "deletes without asking",  # (kd runs delete: `yes = true` deleted every later run asked for, unasked)
    "resume": "continues the saved state of a teacher or pre-training that failed",  # (`resume = true`: every teach a resume)
}


def _refuse_command_line_only(table: dict[str, Any], path: Path, scope: str = "top level") -> None:
    for key, value in table.items():
        if key.replace("-", "_") in COMMAND_LINE_ONLY:
            raise KdError(f"{path}: {scope} {key!r}: --{key.replace('_', '-')} {COMMAND_LINE_ONLY[key.replace('-', '_')]}, "
                          "so kd takes it on the command line only (in a file it would apply to every run)")
        if isinstance(value, dict):
            _refuse_command_line_only(value, path, f"[{key}]" if scope == "top level" else f"{scope[:-1]}.{key}]")


def defaults_for(
    config: dict[str, Any], command_path: list[str], options: dict[str, str] | set[str], *,
    tables: dict[str, set[str]] | None = None, group_keys=None,
    where: str = "config", sources: dict[str, str] | None = None, owners=None,
) -> dict[str, Any]:
    """The defaults ``config`` gives the command at ``command_path`` (e.g. ``['labels', 'detect']``).

    ``options`` maps each accepted key (with ``_`` for ``-``) to the parameter it sets. Plain keys at
    the top level, and in the table of each group on the path (``[labels]``), apply to every command
    below that has such an option; a key in the command's own table that is not one of its options
    is an error (a typo would otherwise be ignored). ``tables``: the command names each group on the
    path has (``{"": {...kd's commands}, "labels": {...}}``): a table named after no command is an
    error too. ``group_keys``: the keys some command below each group accepts (``{"": ..., "labels":
    ...}``), or a function giving them, called only for a key the command itself does not take: a
    plain key in a group's table that no command below it takes is an error as well.
    ``where`` (the file) starts every message. ``sources``, if given, is filled with where each
    parameter's value was written (``"[distill] epochs"``, or ``"epochs"`` at the top level), for
    the messages that judge the values later. ``owners``: a function giving the commands (``"labels
    detect"``) that take a key, called only to say where a key the command does not take belongs.
    """
    if not isinstance(options, dict):
        options = {o: o for o in options}
    out: dict[str, Any] = {}
    table: Any = config
    for depth in range(len(command_path) + 1):
        group = ".".join(command_path[:depth])
        if tables is not None and group in tables:
            # `[[teach]]` (TOML's array of tables): `kd export` passed over `[[export]]` in silence, others named an option
            arrays = [k for k, v in table.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
            if arrays and arrays[0] in tables[group]:
                name = ".".join(command_path[:depth] + [arrays[0]])
                raise KdError(f"{where}: [[{name}]] is an array of tables (double brackets): write [{name}], once")
            unknown = [k for k, v in table.items() if (isinstance(v, dict) or k in arrays) and k not in tables[group]]
            if (unknown and group_keys is not None and unknown[0].replace("-", "_") in _keys(group_keys).get(group, ())
                    and not _misspelt_table(unknown[0], table[unknown[0]], command_path[:depth], tables[group], owners)):
                # `limit = {n = 1}`, `teacher-weight = [{w = 1.0}]`: an option's value, not a table of a command
                shown = f"[{group}] {unknown[0]}" if group else unknown[0]
                value = table[unknown[0]]
                raise KdError(f"{where}: {shown} = {value!r}: " + (
                    f"a table is no value of --{unknown[0].replace('_', '-')}" if isinstance(value, dict)
                    else "expected a value or an array of values, not an array or table inside one"))
            if unknown:
                brackets = ("[[", "]]") if unknown[0] in arrays else ("[", "]")
                raise KdError(f"{where}: {brackets[0]}{'.'.join(command_path[:depth] + [unknown[0]])}{brackets[1]} is not a kd command "
                              f"(tables are named after commands: {', '.join(sorted(tables[group]))})"
                              f"{_close(unknown[0].replace('-', '_'), tables[group]) or _nested(unknown[0], command_path[:depth], owners)}")
        own = depth == len(command_path)
        has_commands = own and tables is not None and group in tables  # (`kd runs`: a group that runs on its own too)
        given: dict[str, str] = {}  # parameter -> the key of this table that set it
        for key, value in table.items():
            if isinstance(value, dict) and own and not has_commands:  # (it was skipped: a command's options are plain keys)
                if key.replace("-", "_") in options:
                    raise KdError(f"{where}: [{group}] {key} = {value!r}: a table is no value of --{key}")
                raise KdError(f"{where}: [{group}.{key}] is not a kd command (`kd {' '.join(command_path)}` has no subcommands)")
            if isinstance(value, dict):
                continue
            name = key.replace("-", "_")
            if name in options:
                if (options[name] in given and not own and given[options[name]].replace("-", "_") != name
                        and options[name] in (name, given[options[name]].replace("-", "_"))):
                    # a shared table's `limit` (kd samples') and `top` (kd labels clean's): two options elsewhere, one
                    # here (kd labels show's --top/--limit): its own name is taken (refused, show could not run at all)
                    if name != options[name]:
                        continue
                elif options[name] in given:  # max-len and max_len (or format and fmt): one was silently dropped
                    scope = f"[{group}]" if group else "top level"
                    raise KdError(f"{where}: {scope} {given[options[name]]!r} and {key!r} are the same option: keep one")
                given[options[name]] = key
                out[options[name]] = value
                if sources is not None:
                    sources[options[name]] = f"[{group}] {key}" if group else key
            elif own and depth > 0 and not has_commands:
                hint = _close(name, options) or _owned(name, owners)
                raise KdError(f"{where}: [{group}] {key!r} is not an option of `kd {' '.join(command_path)}`{hint}")
            elif (not own or has_commands) and group_keys is not None and name not in (group_keys := _keys(group_keys)).get(group, {name}):
                scope = f"[{group}]" if group else "top level"
                below = f"`kd {group.replace('.', ' ')}`" if group else "kd"
                hint = (f" (`kd {' '.join(command_path[:depth] + [key])}` is a command: its options go under "
                        f"[{'.'.join(command_path[:depth] + [key])}])" if tables is not None and key in tables.get(group, ())
                        else _close(name, group_keys[group]) or _owned(name, owners))
                raise KdError(f"{where}: {scope} {key!r} is not an option of any command of {below}{hint}")
        if own:
            break
        table = table.get(command_path[depth])
        if not isinstance(table, dict):
            break
    return out


def _close(name: str, keys) -> str:
    """`` (did you mean 'limit'?)`` for a key ``name`` close to one of ``keys`` (``_`` for ``-``), else ``""``."""
    import difflib

    close = difflib.get_close_matches(name.lower(), sorted(keys), n=1)
    return f" (did you mean {close[0].replace('_', '-')!r}?)" if close else ""


def _misspelt_table(key: str, value: Any, path: list[str], commands, owners) -> bool:
    """Whether ``key = value``, ``key`` an option's name, is rather a command's table misspelt into it:
    ``[label.detect]`` (a table inside), or ``[label]`` holding keys of the close command (``[labels]``'s)."""
    if not isinstance(value, dict):
        return False
    if any(isinstance(v, dict) for v in value.values()):
        return True
    import difflib

    close = difflib.get_close_matches(key.replace("-", "_").lower(), sorted(commands), n=1)
    if not close or not value or owners is None:
        return False
    command, taken = " ".join(path + [close[0]]), owners()
    return all(any(c == command or c.startswith(command + " ") for c in taken.get(k.replace("-", "_"), ())) for k in value)


def _nested(name: str, path: list[str], owners) -> str:
    """`` (`kd labels detect` is a command of `kd labels`: its options go under [labels.detect])`` for a
    table named after a command of a group below ``path`` (``[detect]``), else ``""``."""
    if owners is None:
        return ""
    commands = sorted({c for cs in owners().values() for c in cs
                       if len(c.split()) > len(path) + 1 and c.split()[:len(path)] == path and c.split()[-1] == name.lower()})
    if not commands:
        return ""
    words = commands[0].split()
    return f" (`kd {commands[0]}` is a command of `kd {' '.join(words[:-1])}`: its options go under [{'.'.join(words)}])"


def _owned(name: str, owners) -> str:
    """`` (an option of `kd distill`: put it under [distill])`` for a key another command takes, else ``""``."""
    commands = sorted(owners().get(name, ())) if owners is not None else []
    if not commands:
        return ""
    tables = " or ".join(f"[{c.replace(' ', '.')}]" for c in commands[:3])
    return (f" (an option of {', '.join(f'`kd {c}`' for c in commands[:3])}{', ...' if len(commands) > 3 else ''}: "
            f"put it under {tables}{', ...' if len(commands) > 3 else ''})")


def _keys(group_keys) -> dict[str, set[str]]:
    return group_keys() if callable(group_keys) else group_keys
