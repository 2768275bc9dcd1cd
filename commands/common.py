"""Options every command shares, and the one place library errors become click errors."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterable

import click
from rich.console import Console

from kdstore import config as kdconfig
from kdstore.errors import InterruptedAfterRecord, KdError, Terminated
from kdstore.names import check_stage_name, resolve_run_id

if TYPE_CHECKING:
    from kdstore.store import Store

# (SQLAlchemy and the store are imported where a store is opened: `kd predict --artifact` opens none, and they
# were most of its start-up time)


class _NeverRaised(Exception):
    pass


def _dbapi_error() -> type[Exception]:
    """SQLAlchemy's class of driver errors, where a store was opened (read as the error is matched);
    before that, a class nothing raises: `kd predict --artifact` imports no SQLAlchemy."""
    module = sys.modules.get("sqlalchemy.exc")
    return module.DBAPIError if module is not None else _NeverRaised


def _writing_output(exc: BaseException) -> bool:
    """Whether ``exc`` was raised writing the command's output (click's echo, rich's console)."""
    import traceback

    return any(frame.f_code.co_filename.endswith((os.path.join("click", "utils.py"), os.path.join("rich", "console.py")))
               for frame, _ in traceback.walk_tb(exc.__traceback__))


class KdGroup(click.Group):
    """A group whose commands' ``KdError`` s, database driver errors and file-system errors become
    one-line ``click.ClickException`` s.

    Under torchrun, only rank 0 prints an error the processes share (a wrong option, a stage that
    failed): the others exit non-zero without a word (``kdstore.distributed.prints_its_error``)."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not (standalone_mode and _other_rank()):
            return super().main(*args, standalone_mode=standalone_mode, **kwargs)
        try:
            done = super().main(*args, standalone_mode=False, **kwargs)
        except click.ClickException as exc:
            _rank_says(exc.format_message(), exc.show)
            sys.exit(exc.exit_code)
        except click.Abort:  # (Ctrl-C: click printed the blank line after ^C)
            # rank 0 says it: a Ctrl-C reaches every process, and torchrun passes it on as SIGINT, not the
            # SIGTERM ``prints_its_error`` waits for (10 s, then "Aborted!" under rank 0's error)
            sys.exit(1)
        sys.exit(done if isinstance(done, int) else 0)  # (an Exit's code, as from --help; a command's return is no code)

    def invoke(self, ctx: click.Context) -> Any:
        runs = sys.modules.get("kdstore.runs")
        succeeded_before = len(runs.SUCCEEDED) if runs is not None else 0  # (this command's stages come after: a test runs many in one process)
        try:
            return super().invoke(ctx)
        except KdError as exc:
            raise click.ClickException(str(exc) + file_note(ctx, str(exc))) from None
        except (Terminated, InterruptedAfterRecord) as exc:  # (the latter: a Ctrl-C once a stage had succeeded)
            raise click.ClickException(str(exc)) from None
        except click.UsageError as exc:  # ("Invalid value for --min-score: 2 is not a score", of a file's min-score)
            exc.message += file_note(ctx, exc.format_message())
            raise
        except click.ClickException as exc:  # ("no class '好'", of a file's label)
            note = file_note(ctx, exc.format_message())
            if not exc.message.endswith(note):  # (check_file_model names the file itself)
                exc.message += note
            raise
        except BrokenPipeError:
            raise
        except OSError as exc:  # a path kd was told to write or read (``--export``, ``--plot`` ...)
            where = f"{exc.filename}: " if exc.filename else ""
            if not where and _writing_output(exc):  # (`> out.json` on a full disk: "No space left on device" named nothing)
                where = "standard output: "
            runs = sys.modules.get("kdstore.runs")
            ours = runs.SUCCEEDED[succeeded_before if len(runs.SUCCEEDED) >= succeeded_before else 0:] if runs is not None else []
            stands = (f" (stage {ours[-1][1]!r} of run {ours[-1][0]!r} succeeded: its results stand (`kd report --run {ours[-1][0]}` "
                      "shows them))") if ours else ""  # (a script read the error as nothing done)
            raise click.ClickException(f"{where}{exc.strerror or exc}{stands}") from None
        except _dbapi_error() as exc:  # the driver's own errors (connection lost, constraint, lock timeout)
            first = (str(getattr(exc, "orig", exc)).strip().splitlines() or [type(exc).__name__])[0]
            where = f" in {OPENED[-1]}" if OPENED else ""  # (a full disk: which store's)
            if first == "database is locked":  # SQLite waited SQLITE_BUSY_TIMEOUT_MS for another writer
                first += (": another kd process has been writing to it for over 10 minutes (a large ingest, or a "
                          "teacher's logits): run this again once it ends (`kd runs` shows what is running)")
            elif first == "attempt to write a readonly database":  # (SQLite named no cause)
                first += (": this command writes, and the store was opened read-only (a read-only file or folder, "
                          "or mode=ro in a sqlite:///file:...?uri=true URL); nothing was changed")
            raise click.ClickException(f"database error{where}: {first}") from None
        except RuntimeError as exc:  # (torch.OutOfMemoryError is one)
            said = _out_of_memory(exc, self.get_command(ctx, ctx.invoked_subcommand) if ctx.invoked_subcommand else None)
            if said is None:
                raise
            raise click.ClickException(said) from None
        except UnicodeEncodeError as exc:
            import traceback

            shown = (getattr(sys.stdout, "encoding", None) or "", getattr(sys.stderr, "encoding", None) or "")
            if exc.encoding and _codec(exc.encoding) != "utf8" and _codec(exc.encoding) in map(_codec, shown):
                # output to a terminal or pipe whose encoding cannot show the text (PYTHONIOENCODING=ascii, a
                # latin-1 locale): one line, in ASCII so it can be shown, not rich's traceback; a long run (a
                # review kd predict answered) by its start: quoted whole, a 2-million-character text was a 12 MB line
                bad = exc.object[exc.start:exc.end]
                quoted = ascii(bad) if len(bad) <= 20 else f"{ascii(bad[:10])}... ({len(bad)} characters)"
                raise click.ClickException(f"this output's encoding ({exc.encoding}) cannot show "
                                           f"{quoted}: set PYTHONIOENCODING=utf-8 "
                                           "(or a UTF-8 locale) and run it again") from None
            drivers = ("sqlalchemy", "psycopg", "sqlite3")  # a value sent to the store, not output to a terminal that cannot show it
            if "surrogates not allowed" not in str(exc) or not any(
                    d in frame.f_code.co_filename for frame, _ in traceback.walk_tb(exc.__traceback__) for d in drivers):
                raise
            # a path or argument holding bytes of another encoding (a GBK folder name, --model, a sheet's path):
            # neither store takes such text (SQLite and PostgreSQL both refused it with a traceback)
            text = exc.object if isinstance(exc.object, str) else ""
            start = max(max(text.rfind(c, 0, exc.start) for c in '"\n') + 1, exc.start - 100)  # the value (a JSON config's string) holding it
            ends = [i for i in (text.find(c, exc.end) for c in '"\n') if i >= 0]
            bad = text[start:min(min(ends, default=len(text)), exc.end + 100)]
            raise click.ClickException(f"{bad!r}: not valid UTF-8 (a file name or argument in another encoding, such "
                                       "as GBK): the store takes UTF-8 text only; rename it, or give it in UTF-8") from None


def _out_of_memory(exc: RuntimeError, command: click.Command | None) -> str | None:
    """One line for PyTorch running out of memory (CUDA's ``OutOfMemoryError``, the CPU allocator's "can't
    allocate memory"), naming what it tried to allocate and the options of ``command`` that lower it: its
    traceback came, 40 lines of frames ending in a paragraph about allocator settings. ``None`` for any
    other error. The stage it ran in is already recorded failed, with PyTorch's message."""
    import re

    torch = sys.modules.get("torch")
    text = str(exc)
    cpu = re.search(r"can't allocate memory: you tried to allocate (\d+) bytes", text)
    if not (cpu or (torch is not None and isinstance(exc, getattr(torch, "OutOfMemoryError", ())))
            or "out of memory" in text.split(".", 1)[0].lower()):
        return None
    if cpu:
        size = int(cpu.group(1))
        what = f"the CPU: it tried to allocate {f'{size / 2**30:,.1f} GiB' if size >= 2**30 else f'{size / 2**20:,.1f} MiB'} more"
    else:
        tried = re.search(r"Tried to allocate ([\d.]+ \w+)", text)
        low = text.lower()
        device = "the GPU (CUDA)" if "cuda" in low else "the GPU (MPS)" if "mps" in low else "the device"
        what = device + (f": it tried to allocate {tried.group(1)} more" if tried else "")
    names = {o for p in command.params for o in p.opts} if command is not None and not isinstance(command, click.Group) else set()
    lower = [o for o in ("--batch-size", "--max-len") if o in names]
    advice = (f"lower {' or '.join(lower)}" + (" (--grad-accum N keeps the batch each update learns from)" if "--grad-accum" in names else "")
              if lower else "free memory, or run it on a machine with more")
    return f"out of memory on {what}: {advice}"


def _codec(name: str) -> str:
    """An encoding's canonical name without separators (``UTF-8``, ``utf_8``, ``U8`` -> ``utf8``)."""
    import codecs

    try:
        return codecs.lookup(name).name.replace("-", "").replace("_", "")
    except LookupError:
        return name.lower()


def _other_rank() -> bool:
    """Whether this process is a torchrun rank other than 0 (``WORLD_SIZE`` above 1)."""
    world, rank = os.environ.get("WORLD_SIZE", "1"), os.environ.get("RANK", "0")
    return world.isdigit() and int(world) > 1 and rank != "0"


def _rank_says(message: str, show: Callable[[], None]) -> None:
    """A rank other than 0 shows its error only when rank 0 does not (see ``prints_its_error``)."""
    from kdstore.distributed import prints_its_error  # (torch: only in a rank whose command failed)

    if prints_its_error(message):
        show()


def _apply_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    try:
        return _read_config(ctx, param, value)
    except KdError as exc:
        if value is None and isinstance(ctx.command, click.Group):
            # `kd runs` reads ./kd.toml (or $KD_CONFIG) for its own options before it knows of a subcommand, which
            # may name another file (`kd runs delete --config cfg.toml` failed on a broken ./kd.toml): the group
            # says the file's mistake when it runs alone (CONFIG_ERROR); a subcommand reads its own file
            ctx.meta[CONFIG_ERROR] = exc
            return value
        raise


CONFIG_ERROR = "kd.config_error"


def _read_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    path = kdconfig.config_path(value)
    if path is None:
        return value
    # a KdError here is one line naming the file (KdGroup prints it), not a usage message about --config
    data = kdconfig.load(path)
    command_path = ctx.command_path.split()[1:]
    sources: dict[str, str] = {}
    defaults = kdconfig.defaults_for(data, command_path, _option_names(ctx.command), tables=_command_tables(ctx),
                                     group_keys=lambda: _group_keys(ctx), where=str(path), sources=sources,  # (imports every command: only if asked)
                                     owners=lambda: _owners(ctx))
    written = defaults
    try:
        defaults = _typed(ctx, defaults, path, sources)
    except KdError as exc:  # a server URL's password, as the file has it, is no part of a message
        raise KdError(_hide_passwords(str(exc), defaults.get("db"))) from None
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    ctx.meta["kd.config"] = (ctx, path, sources, written)  # (shared with the group's context: file_note reads it)
    return value


def file_note(ctx: click.Context, message: str) -> str:
    """What to add to an error ``message``: where the config file gave each option its first clause
    names, when the value came from the file rather than the command line (``--epochs, --batch-size
    must be >= 1 ...`` + `` (kd.toml: [teach] epochs = 0)``); it named an option never typed, and no file."""
    given = ctx.meta.get("kd.config")
    if given is None:
        return ""
    command, path, sources, values = given
    head = message.split(": ", 1)[0]  # (the option judged, not one a fix suggests after the colon)

    def quoted(name: str, is_path: bool) -> bool:  # the value itself, quoted ("no run 'r1' in ...": a file's run, named by no option)
        value = command.params.get(name)
        if name == "db":  # ("no kd store at x.db"; a server URL as the message shows it, its password hidden)
            value = _hide_passwords(value, value) if isinstance(value, str) else value
        return any(isinstance(v, str) and v and (repr(v) in head or is_path and any(  # or a path as a path is named
            re.search(rf"(?<![\w./~-]){re.escape(w)}(?![\w./-])", head) for w in {v, os.path.normpath(v), os.path.abspath(v)}))
            for v in (value if isinstance(value, (list, tuple)) else [value]))  # ("x.txt: cannot read corpus", "no exported model at x")

    named = [f"{sources.get(p.name, p.name)} = {json.dumps(values[p.name], ensure_ascii=False, default=str)}"
             for p in command.command.params
             if p.name in values
             and command.get_parameter_source(p.name) == click.core.ParameterSource.DEFAULT_MAP
             and (any(re.search(rf"{re.escape(o)}(?![\w-])", head) for o in getattr(p, "opts", ()) if o.startswith("--"))
                  or quoted(p.name, isinstance(p.type, click.Path) or p.name == "db"))]
    # (a server URL's password is no part of a message)
    return _hide_passwords(f" ({path}: {'; '.join(named)})", values.get("db")) if named else ""


def check_file_model(store: Store, run: str, which: str) -> None:
    """Refuse a ``--model`` stage name that a config file gave and ``run`` lacks, naming the option and
    the file's key: a top-level ``model = "pretrain:r1"`` meant for kd teach reaches kd predict and kd
    export too, and "run 'r1' has no succeeded 'pretrain:r1' stage" alone left a user who typed no
    --model to guess where that name came from."""
    ctx = click.get_current_context()
    if which in ("student", "teacher") or ctx.get_parameter_source("which") != click.core.ParameterSource.DEFAULT_MAP:
        return
    if not store.run_exists(run):  # (the run's error, not the model's)
        return
    try:
        if which == "teach":  # (the teacher, as kd predict serves it: the parked one while kd teach --overwrite runs)
            from kdstore.predictor import model_stage

            model_stage(store, run, which)
        else:
            store.find_stage(run, which, kinds=("teach", "distill"))
    except KdError as exc:
        message = f"--model {which}: {exc}"
        raise click.ClickException(message + file_note(ctx, message)) from None


def _command_tables(ctx: click.Context) -> dict[str, set[str]]:
    """The command names of each group on ``ctx``'s path, keyed as ``defaults_for`` wants them."""
    chain = list(reversed(list(_parents(ctx))))  # the root first
    return {
        ".".join(c.info_name for c in chain[1:i + 1]): set(g.command.list_commands(g))
        for i, g in enumerate(chain) if isinstance(g.command, click.Group)
    }


def _group_keys(ctx: click.Context) -> dict[str, set[str]]:
    """The option keys some command below each group on ``ctx``'s path accepts, keyed as above."""
    chain = list(reversed(list(_parents(ctx))))
    owners = _owners(ctx)
    out = {}
    for i, g in enumerate(chain):
        if isinstance(g.command, click.Group):
            group = " ".join(c.info_name for c in chain[1:i + 1])  # ("": kd itself, every command below it)
            out[group.replace(" ", ".")] = {k for k, commands in owners.items()
                                            if not group or any(c == group or c.startswith(group + " ") for c in commands)}
    return out


def _owners(ctx: click.Context) -> dict[str, set[str]]:
    """Each option key (``_`` for ``-``) → the commands that take it (``"labels detect"``), over all of kd."""
    root = list(_parents(ctx))[-1]
    owners: dict[str, set[str]] = {}

    def walk(command: click.Command, parent: click.Context, path: list[str]) -> None:
        if path and (not isinstance(command, click.Group) or command.params):  # (`kd runs --json`; not kd's --version)
            for key in _option_names(command):
                owners.setdefault(key, set()).add(" ".join(path))
        if isinstance(command, click.Group):
            sub = click.Context(command, parent=parent, info_name=command.name)
            for n in command.list_commands(sub):
                walk(command.get_command(sub, n), sub, path + [n])

    walk(root.command, root, [])
    return owners


def _parents(ctx: click.Context):
    while ctx is not None:
        yield ctx
        ctx = ctx.parent


def _exponent_form(n: int) -> str:
    """``n`` as TOML's float with an exponent writes it: 1000 is ``1e3``, 3 is ``3e0``."""
    mantissa, exponent = n, 0
    while mantissa and mantissa % 10 == 0:
        mantissa, exponent = mantissa // 10, exponent + 1
    return f"{mantissa}e{exponent}"


def _hide_passwords(message: str, db: Any) -> str:
    """``message`` with the password of each server URL given as ``db`` (a string or an array) hidden."""
    for value in db if isinstance(db, list) else [db]:
        if isinstance(value, str) and "://" in value:
            from sqlalchemy.engine import make_url

            from kdstore.engine import display_url, hide_query_password

            try:
                shown = display_url(make_url(value.strip()))
            except Exception:  # not a URL SQLAlchemy reads: its user:password part, by hand
                shown = hide_query_password(re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", value))
            message = message.replace(repr(value), repr(shown)).replace(value, shown)
    return message


def _several_elsewhere(ctx: click.Context, key: str, shown: str) -> str:
    """Where a top-level key's array is meant for other commands (``split = ["train", "dev"]``, kd teach's):
    the tables to put it under, whose option takes several values; every command reads a top-level key,
    and "expected a single value" told a kd predict user nothing of where the key belongs."""
    if shown.startswith("["):  # (a command's own table: it is that command's value)
        return ""
    tables = []

    def walk(command: click.Command, path: list[str]) -> None:
        if isinstance(command, click.Group):
            for sub in command.list_commands(ctx):
                walk(command.get_command(ctx, sub), path + [sub])
        elif any(f"--{key}" in getattr(p, "opts", ()) and getattr(p, "multiple", False) for p in command.params):
            tables.append(f"[{'.'.join(path)}]")

    walk(ctx.find_root().command, [])
    return f" (a top-level key is every command's: put it under {' or '.join(tables)}, which take{'s' * (len(tables) == 1)} several)" if tables else ""


def _typed(ctx: click.Context, defaults: dict[str, Any], path, sources: dict[str, str] | None = None) -> dict[str, Any]:
    """Each config value converted as its option converts a command-line value (a single value for a
    repeatable option becomes a one-item list), so that a wrong type names the file, the table
    (``sources``: ``defaults_for``'s) and the key."""
    params = {p.name: p for p in ctx.command.params}
    out = {}
    for name, value in defaults.items():
        param = params[name]
        key = next((o[2:] for o in getattr(param, "opts", []) if o.startswith("--")), name.replace("_", "-"))
        shown = (sources or {}).get(name, key)  # "[distill] epochs": where the file has it (several tables may)
        written = value  # (as the file has it: `split = 1`, not the list it becomes)
        if getattr(param, "multiple", False) and not isinstance(value, list):
            value = [value]
        elif (isinstance(value, list) and not getattr(param, "multiple", False)
              and isinstance(param.type, click.types.StringParamType) and name in COMMA_SEPARATED):
            # a comma-separated option (augment = ["mask", "pos"], kernel_sizes = [2, 3, 4]) as a TOML array
            if not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
                raise KdError(f"{path}: {shown} = {written!r}: expected a string, or an array of strings or whole numbers")
            value = ",".join(str(v) for v in value)
        if isinstance(value, list) and not getattr(param, "multiple", False):  # (click crashed on it)
            raise KdError(f"{path}: {shown} = {written!r}: expected a single value, not an array{_several_elsewhere(ctx, key, shown)}")
        if isinstance(value, list) and any(isinstance(v, (list, dict)) for v in value):
            # an array or table inside the array: float() crashed on it (teacher-weight = [[1.0]]), and a
            # string option took its text (label = [["pos"]] was the class "['pos']")
            raise KdError(f"{path}: {shown} = {written!r}: expected a value or an array of values, not an array or table inside one")
        wholes = value if isinstance(value, list) else [value]
        when = next((v for v in wholes if isinstance(v, (dt.date, dt.time))), None)  # (a datetime is a date)
        if when is not None and not isinstance(param.type, click.types.StringParamType):  # int()/float() crashed on it
            raise KdError(f"{path}: {shown} = {when}: a TOML date or time is no value of --{key}")
        if isinstance(param.type, click.types.IntParamType) and any(isinstance(v, float) for v in wholes):
            whole = [v for v in wholes if isinstance(v, float)]
            if all(v.is_integer() and abs(v) < 2**53 for v in whole):  # (`epochs = 3.0` was "not a whole number")
                # (TOML reads 1e3 as the float 1000.0: "not 1000.0" named what was never written)
                raise KdError(f"{path}: {shown} = {written!r}: --{key} takes a whole number, written without a "
                              f"decimal point or exponent ({int(whole[0])}, not {whole[0]} or {_exponent_form(int(whole[0]))})")
            raise KdError(f"{path}: {shown} = {written!r}: not a whole number")  # click would cut 1.5 to 1
        # click takes these as they come: `header = 1` crashed in click's bool parsing, `classes = 3`
        # in kd's (a path of 3), `text-col = true` became the column "True" and `alpha = true` 1.0
        if isinstance(param.type, click.types.BoolParamType):
            if not all(isinstance(v, (bool, str)) for v in wholes):
                raise KdError(f"{path}: {shown} = {written!r}: expected true or false")
        elif any(isinstance(v, bool) for v in wholes):
            raise KdError(f"{path}: {shown} = {json.dumps(written)}: true/false is no value of --{key}")
        elif isinstance(param.type, click.Path) and not all(isinstance(v, str) for v in wholes):
            raise KdError(f"{path}: {shown} = {written!r}: expected a path (a string)")
        elif (isinstance(param.type, (click.types.StringParamType, click.Choice))
              and any(isinstance(v, float) for v in wholes)):
            raise KdError(f"{path}: {shown} = {written!r}: expected a string")
        if isinstance(param.type, click.Path):  # no shell reads a TOML file: "~/charts" is the home folder's, as for db
            value = [os.path.expanduser(v) for v in value] if isinstance(value, list) else os.path.expanduser(value)
        if name == "db" and isinstance(value, str) and not value.strip():  # (it was "--db is empty", naming no file)
            raise KdError(f"{path}: {shown} = {written!r}: empty: give the store's file path or a SQLAlchemy URL "
                          "(or leave it out for $KD_DB or ./kd.db)")
        try:
            cast = param.type_cast_value(ctx, value)
            if param.callback is not None:  # a value is checked where it is written (a run id, a --reason's NUL)
                param.callback(ctx, param, cast)
            if "--name" in getattr(param, "opts", ()) and cast is not None:  # a stage's name (as the stage checks it)
                check_stage_name(str(cast))
        except click.BadParameter as exc:
            raise KdError(f"{path}: {shown} = {written!r}: {exc.message}") from None
        except (KdError, click.ClickException) as exc:  # (an empty path: KdPath's one line)
            raise KdError(f"{path}: {shown} = {written!r}: {getattr(exc, 'message', exc)}") from None
        out[name] = value
    return out


# the options that take a comma-separated list (distill --augment, --kernel-sizes, --layer-map; labels detect --method):
# a TOML array is theirs joined; for any other string option (db = ["a.db", "b.db"]) it is an error, not
# one value "a.db,b.db" (ingest created that store)
COMMA_SEPARATED = {"augment", "kernel_sizes", "methods", "layer_map"}


def _option_names(command: click.Command) -> dict[str, str]:
    """Config key (option name, ``-`` as ``_``) → click parameter name, e.g. ``format`` → ``fmt``."""
    names: dict[str, str] = {}
    for p in command.params:
        if not p.name or p.name == "config_file" or isinstance(p, click.Argument):  # options only: a top-level
            continue  # `path = ...` made `kd predict` read that file instead of stdin
        names[p.name] = p.name
        for opt in getattr(p, "opts", []):
            if opt.startswith("--"):
                names[opt[2:].replace("-", "_")] = p.name
    return names


class FiniteFloat(click.ParamType):
    """A float option that refuses ``nan`` and ``inf`` (Python's ``float()`` takes them; a stage's
    config stored as JSON cannot hold them on PostgreSQL, and no kd option means them)."""

    name = "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            number = click.FLOAT.convert(value, param, ctx)
        except OverflowError:  # a TOML whole number past a float's range (`alpha = 1000...0`): a traceback
            number = math.inf
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number + 0.0  # (-0 read as 0: a stage's config showed "speed": -0.0)


FLOAT = FiniteFloat()

SQL_INT_MAX = 2**63 - 1  # a --limit/--top above what SQL can hold means no limit (not an OverflowError)


class KdPath(click.Path):
    """``click.Path`` with a leading ``~`` as the home folder: a quoted one (``--out '~/x'``, which no
    shell expands) wrote a folder called ``~`` in the working directory, as a config file's does not."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():  # (`--out "$DIR"` with DIR unset: the default, unseen)
            what = "a folder" if not self.file_okay else "a file name" if not self.dir_okay else "a path"
            if param is not None and param.param_type_name == "argument":
                raise click.ClickException(f"{param.human_readable_name} is empty: give {what}")
            name = next((o for o in getattr(param, "opts", ()) if o.startswith("--")), "the path")
            raise click.ClickException(f"{name} is empty: give {what}, or omit {name}")
        if (isinstance(value, str) and ctx is not None and param is not None and param.param_type_name == "option"
                and value in {o for p in ctx.command.params for o in getattr(p, "opts", ())}):
            # (`kd report --plot --db kd.db`: the folder taken was "--db", and the store's path was refused as a run id)
            what = "a folder" if not self.file_okay else "a file name" if not self.dir_okay else "a path"
            name = next((o for o in param.opts if o.startswith("--")), param.opts[0])
            raise click.UsageError(f"{name} takes {what}, and the next word is the option {value}: write {name} PATH", ctx)
        return super().convert(os.path.expanduser(value) if isinstance(value, str) else value, param, ctx)


def home_path(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Callback for a plain FILE|- argument: a leading ``~`` is the home folder (``-`` stays stdin)."""
    if isinstance(value, str) and not value.strip():  # (`kd ingest "$F"` with F unset: ": cannot read: Is a directory")
        raise click.ClickException("the file name is empty: give a file, or - for standard input")
    return os.path.expanduser(value) if isinstance(value, str) else value


def resolve_runs(_ctx: click.Context, _param: click.Parameter, value):
    """Callback for an option or argument naming other runs (one, several, or none): each through
    the ``--run`` rule, so ``${time}`` is today there too."""
    if value is None:
        return None
    try:
        if isinstance(value, str):
            return resolve_run_id(_given(value))
        return tuple(resolve_run_id(_given(v)) for v in value)
    except KdError as exc:
        raise click.BadParameter(str(exc)) from None


def _resolve_run(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str:
    try:
        return resolve_run_id(value if value is None else _given(value))
    except KdError as exc:
        raise click.BadParameter(str(exc)) from None


def _given(value: str) -> str:
    """A run id given empty (`--run "$RUN"` with RUN unset) is refused, as an empty --db or --name is:
    taken for the run named default, `kd teach --run "" --overwrite` replaced that run's teacher."""
    if not value.strip():
        raise KdError("run id is empty: name the run (leave the option out for the run named default; today's "
                      "date is '${time}' in single quotes: in double quotes the shell replaces an unset ${time} with nothing)")
    return value


def store_options(f: Callable) -> Callable:
    """``--db`` and ``--config`` (eager, so the config file's defaults reach every other option)."""
    f = click.option(
        "--db",
        envvar="KD_DB",
        metavar="PATH|URL",
        help="Store: a SQLite file (default kd.db) or a SQLAlchemy URL. Env: KD_DB.",
    )(f)
    f = click.option(
        "--config",
        "config_file",
        metavar="FILE",
        is_eager=True,
        expose_value=False,
        callback=_apply_config,
        help="TOML file of option defaults (default: ./kd.toml if present). Env: KD_CONFIG.",
    )(f)
    return f


def run_option(f: Callable | None = None, *, default: str = "Default: default.") -> Callable:
    """``--run``; ``@run_option(default=...)`` says otherwise what an untyped one means."""
    if f is None:
        return lambda g: run_option(g, default=default)
    return click.option(
        "--run",
        callback=_resolve_run,
        metavar="UNIQID",
        help="Run id: ASCII letters, digits, '-', '_' (not '-' first); '${time}' (or 'time') means today, the local date (YYYYMMDD). "
             + default,
    )(f)


def json_option(f: Callable) -> Callable:
    return click.option("--json/--no-json", "as_json", is_flag=True, help="Print JSON for scripts.")(f)


def overwrite_option(f: Callable) -> Callable:
    return click.option(
        "--overwrite", is_flag=True, help="Replace a stage of the same name that already succeeded."
    )(f)


def counted(count: int, noun: str) -> str:
    """``1 duplicate``, ``2 duplicates``: a count with its noun, plural unless it is one."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


OPENED: list[str] = []  # the stores this process opened, as an error names them


def open_store(db: str | None, *, create: bool = False, check: bool = True, writer: bool = False) -> Store:
    """``writer``: the command starts a stage, so the stages left running by a process of this
    machine that is gone are marked failed first (a replaced stage given its name back), before the
    command looks up the stage it builds on: a `kd teach --model pretrain:R` after a killed
    `kd pretrain --run R --overwrite` finds R's pretrain stage instead of refusing it each time."""
    import kdstore.engine
    from kdstore.engine import display_url
    from kdstore.store import Store

    # (a writer queued behind another process's long write waited up to 10 minutes with nothing said)
    kdstore.engine.lock_notice = lambda line: click.echo(f"note: {line}", err=True)
    store = Store.open(db, create=create, check=check)
    url = store.engine.url
    OPENED.append(url.database if url.get_backend_name() == "sqlite" else display_url(url))
    if (writer or create) and check and store.read_only:
        # (refused at its first write, after a training's warnings, as SQLite's "attempt to write a readonly database")
        raise KdError(f"{OPENED[-1]}: this command writes to the store, and {store.read_only}: nothing was changed; make it "
                      "writable, or copy the store with its kd-artifacts folder to a folder kd can write")
    if writer and os.environ.get("RANK", "0") == "0":  # (torchrun: rank 0 alone, as it alone starts the stage)
        from kdstore.runs import mark_crashed

        for line in mark_crashed(store):
            click.echo(f"note: {line}", err=True)
    elif writer and os.environ.get("GROUP_RANK", "0") == "0":  # the other ranks of rank 0's machine: their
        from kdstore.runs import wait_for_marking  # lookups see the stages as rank 0 will (read only)

        wait_for_marking(store)
    return store


JSON_PIECES = 100_000  # encoder pieces (keys, values, punctuation) written at a time
JSON_ITEMS = 1_000  # list items written at a time (print_json_items)


def print_json(data: Any) -> None:
    """``data`` as strict JSON: a float that is not finite becomes ``null`` (``NaN`` is no JSON)."""
    # written in pieces as it is encoded: one string of the whole document (and its UTF-8 copy) took
    # 1.7 GB instead of 0.7 GB for `kd samples --limit 0 --json` on 700k samples
    encoder = json.JSONEncoder(ensure_ascii=False, indent=2, default=str, allow_nan=False)
    part: list[str] = []
    for piece in encoder.iterencode(finite_json(data)):
        part.append(piece)
        if len(part) >= JSON_PIECES:
            click.echo("".join(part), nl=False)
            part.clear()
    click.echo("".join(part))


def print_json_items(items: Iterable[Any]) -> None:
    """A JSON array of ``items``, written as print_json writes a list, one item encoded at a time: a
    listing need not be held whole (`kd samples --limit 0 --json` on 300k samples held 560 MB, its items
    and their copy for encoding). An item's encoding has no raw line break of its own text (JSON
    escapes them), so indenting its lines is indenting the item."""
    encoder = json.JSONEncoder(ensure_ascii=False, indent=2, default=str, allow_nan=False)
    part: list[str] = []
    written = 0
    for item in items:
        part.append(("[\n  " if not written else ",\n  ") + encoder.encode(finite_json(item)).replace("\n", "\n  "))
        written += 1
        if len(part) >= JSON_ITEMS:
            click.echo("".join(part), nl=False)
            part.clear()
    click.echo("".join(part) + ("\n]" if written else "[]"))


def finite_json(data: Any) -> Any:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite_json(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_json(v) for v in data]
    return data


def binary_stdin():
    """stdin as bytes; a one-line error when kd was started with stdin closed (``<&-``)."""
    try:
        return click.get_binary_stream("stdin")
    except RuntimeError:  # click finds no sys.stdin
        raise click.ClickException("stdin is closed: give a FILE, or pipe the text in") from None


PIPED_WIDTH = 160  # a table written to a file or pipe: rich's 80 columns would squeeze the text column to a sliver


def console() -> Console:
    # (no stdout at all, as under `kd runs >&-`: rich writes nowhere, as it did before the width)
    piped = sys.stdout is not None and not sys.stdout.isatty() and "COLUMNS" not in os.environ
    # (emoji=False: rich turned a ``:name:`` in a text or a name into an emoji, printed even with markup=False: an
    # augmented text's source ``augment:mask:n1:...`` read ``augment😷n1:...``, a review's ``:thumbs_up:`` read 👍)
    return Console(file=sys.stdout, soft_wrap=True, width=PIPED_WIDTH if piped else None, emoji=False)


TABLE_ROWS = 1_000  # past this many rows a listing is plain columns: rich took minutes to lay out 300,000
CELL_BREAKS = str.maketrans({"\t": " ", "\n": " ", "\r": " "})
# the other control characters a text may hold (ESC of an ANSI colour code scraped with it, a C1 CSI), shown
# as symbols: sent as they are, the terminal ran them (recoloured or cleared what followed, moved the
# cursor) and the table's borders no longer lined up; rich drops a few (\b, \a) and passed the rest.
# (A \r, half of a Windows line end, is left to rich, which drops it, and to CELL_BREAKS.)
SHOWN_CONTROLS = str.maketrans({
    **{chr(c): chr(0x2400 + c) for c in range(0x20) if chr(c) not in "\t\n\r"}, "\x7f": "\u2421",
    **{chr(c): f"\\x{c:02x}" for c in range(0x80, 0xA0)},
})


def print_rows(columns: list[str], rows: list[list[str]], *, title: str | None = None) -> None:
    """``rows`` (cells as plain text, never read as rich markup) as a table, or, past ``TABLE_ROWS``
    rows, as tab-separated lines under a header line (tabs and line breaks in a cell as spaces); other
    control characters are shown as symbols (``␛`` for ESC), never sent to the terminal."""
    if len(rows) > TABLE_ROWS:
        click.echo("\t".join(columns))
        for start in range(0, len(rows), 10_000):
            click.echo("\n".join("\t".join(c.translate(CELL_BREAKS).translate(SHOWN_CONTROLS) for c in row) for row in rows[start:start + 10_000]))
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    # a cell other than the text's folds over lines rather than being cut to "…": in an 80-column terminal a
    # long class name ('体育赛事与运动员新闻报道') read "体育赛事 …", two classes of one prefix alike
    for row in rows:
        table.add_row(*(Text(c.translate(SHOWN_CONTROLS), overflow="ellipsis" if col == "text" else "fold")
                        for col, c in zip(columns, row)))
    console().print(table)


def err_console() -> Console:
    return Console(file=sys.stderr, soft_wrap=True, emoji=False)  # (a text's ``:name:`` as it is: see ``console``)
