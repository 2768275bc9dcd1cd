"""The names kd checks before it opens a store: run ids (``--run``, ``${time}``), stage names and the
splits. Light on purpose (no SQLAlchemy): ``kd predict --artifact`` reads ``--run`` and opens no store."""

from __future__ import annotations

import datetime as dt
import re

from .errors import KdError

SPLITS = ("train", "dev", "test", "unlabeled")
DEFAULT_RUN = "default"
_RUN_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def resolve_run_id(value: str | None, today: dt.date | None = None) -> str:
    """``None``/empty → ``default``; ``${time}`` or ``time`` → today (the local date, as each call
    reads the clock) as ``YYYYMMDD``; else validated."""
    if value is None or value.strip() == "":
        return DEFAULT_RUN
    value = value.strip()
    if value in ("${time}", "time", "$time"):
        return (today or dt.date.today()).strftime("%Y%m%d")
    if value.startswith("-"):
        raise KdError(_option_taken("run id", value))
    if not _RUN_RE.fullmatch(value):
        raise KdError(
            f"run id {value!r} is not valid: use 1-64 ASCII letters, digits, '-' or '_' (or '${{time}}')"
        )
    return value


def model_source(config: dict | None) -> tuple[str, str] | None:
    """``(kind, run)`` of a teacher that started from a kd stage's model (its config's ``model``:
    ``pretrain:RUN`` or ``teach:RUN``, recorded as the run it named that day); ``None`` for a hub name
    or a folder of the user's own, and for a ``${time}`` recorded before runs were (it is another day's
    run now)."""
    kind, _, run = str((config or {}).get("model") or "").partition(":")
    run = run.strip()
    if kind not in ("pretrain", "teach") or not run or "${" in run:
        return None
    return kind, run


def _option_taken(what: str, value: str) -> str:
    """Why a run id or stage name starting with ``-`` is refused: it is the next option, taken as the
    value of ``--run $RUN`` (``--name $NAME``) when the shell dropped an unset or empty variable;
    ``kd labels set --run $RUN --json 1=neg`` edited a run named ``--json`` and printed no JSON."""
    option, var = ("--run", "RUN") if what == "run id" else ("--name", "NAME")
    today = " (today's date: '${time}', in single quotes)" if what == "run id" else ""
    return (f"{what} {value!r} starts with '-': the next option taken as its value (`{option} ${var}` with {var} unset "
            f"or empty?); name it with a letter, digit or '_' first{today}")


_STAGE_RE = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9_.+-]{0,63}$")


def check_stage_name(name: str) -> None:
    """A stage name is also a folder name (its artifacts) and a suffix away from the names kd gives
    the stages it keeps while replacing them (``~parked-ID``, ``~failed-ID``); kd's own names are
    ``predict-`` plus one, and ``@SPLIT`` after it for a split's predictions."""
    if name.startswith("-"):
        raise KdError(_option_taken("stage name", name))
    core = re.sub(r"@(train|dev|test|unlabeled)$", "", name.removeprefix("predict-")) if name.startswith("predict-") else name
    if not _STAGE_RE.fullmatch(core):  # (match let "x\n" through: `$` matches before a final newline)
        raise KdError(f"stage name {name!r} is not valid: use 1-64 ASCII letters, digits, '-', '_', '+' or '.' (not first)")
