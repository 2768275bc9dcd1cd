"""Runs and their stages: the ``--run`` naming rule and a stage's life from running to succeeded/failed.

A stage that raises (Ctrl-C included) is marked failed with its error and its partial logits and
predictions are removed; a stage that already succeeded is never replaced without ``overwrite``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import shutil
import socket
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .errors import KdError
from .serving import sha256_file  # numpy-free, shared with the ONNX serving path
from .schema import STAGE_KINDS, LabelEdit, Run, Stage, utcnow
from .store import Store

DEFAULT_RUN = "default"
_RUN_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def resolve_run_id(value: str | None, today: dt.date | None = None) -> str:
    """``None``/empty → ``default``; ``${time}`` or ``time`` → today as ``YYYYMMDD``; else validated."""
    if value is None or value.strip() == "":
        return DEFAULT_RUN
    value = value.strip()
    if value in ("${time}", "time", "$time"):
        return (today or dt.date.today()).strftime("%Y%m%d")
    if not _RUN_RE.match(value):
        raise KdError(
            f"run id {value!r} is not valid: use 1-64 letters, digits, '-' or '_' (or '${{time}}')"
        )
    return value


@dataclass
class StageHandle:
    """What a running stage knows about itself; ``artifact_dir`` is created on first use."""

    store: Store
    id: int
    run: str
    name: str
    kind: str

    @property
    def artifact_dir(self) -> Path:
        path = self.store.artifact_root / self.run / self.name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def record_artifact(self, path: Path) -> str:
        """Record the stage's model (file or directory) with its sha256 and its size on disk."""
        digest = sha256_path(path)
        path = Path(path)
        size = path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        self.store.add_metrics(self.id, "all", {"size_mb": size / 2**20})
        with self.store.session() as s, s.begin():
            stage = s.get(Stage, self.id)
            stage.artifact_path = str(Path(path).resolve())
            stage.artifact_sha256 = digest
        return digest


def sha256_path(path: Path) -> str:
    """sha256 of a file, or of a directory as the sorted list of (relative path, file sha256)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode())
        h.update(b"\0")
        h.update(sha256_file(f).encode())
        h.update(b"\n")
    return h.hexdigest()


@contextmanager
def stage_scope(
    store: Store,
    *,
    run: str,
    kind: str,
    config: dict[str, Any],
    name: str | None = None,
    overwrite: bool = False,
) -> Iterator[StageHandle]:
    """Record a stage as running, yield it, then mark it succeeded or failed (with the error)."""
    if kind not in STAGE_KINDS:
        raise ValueError(f"unknown stage kind {kind!r}")
    name = name or kind
    stage_id = _begin(store, run=run, kind=kind, name=name, config=config, overwrite=overwrite)
    handle = StageHandle(store=store, id=stage_id, run=run, name=name, kind=kind)
    try:
        yield handle
    except BaseException as exc:
        store.clear_outputs(stage_id)
        _finish(store, stage_id, "failed", _describe(exc))
        raise
    _finish(store, stage_id, "succeeded", None)


def _begin(store: Store, *, run: str, kind: str, name: str, config: dict, overwrite: bool) -> int:
    old_artifact = None
    with store.write_session("runs", "stages") as s:
        run_row = s.scalars(select(Run).where(Run.uniqid == run)).first()
        if run_row is None:
            run_row = Run(uniqid=run)
            s.add(run_row)
            s.flush()
        old = s.scalars(
            select(Stage).where(Stage.run_id == run_row.id, Stage.name == name)
        ).first()
        if old is not None:
            if old.status in ("succeeded", "running") and not overwrite:
                verb = "succeeded" if old.status == "succeeded" else "is still running (or crashed)"
                raise KdError(
                    f"stage {name!r} of run {run!r} {verb} on {old.started_at:%Y-%m-%d %H:%M}: "
                    "pass --overwrite to replace it, or use another --run"
                )
            _refuse_live_edits(s, old, run)
            old_artifact = old.artifact_path
            s.delete(old)
            s.flush()
        stage = Stage(
            run_id=run_row.id,
            kind=kind,
            name=name,
            config=config,
            status="running",
            host=socket.gethostname(),
            started_at=utcnow(),
        )
        s.add(stage)
        s.flush()
        stage_id = stage.id
    if old_artifact:
        _remove_artifact(store, Path(old_artifact))
    return stage_id


def _refuse_live_edits(s: Session, old: Stage, run: str) -> None:
    """A stage whose label edits still stand is never replaced: deleting it would orphan them (their
    labels stay changed, and ``kd labels undo`` could no longer find them)."""
    live = s.scalar(
        select(func.count()).select_from(LabelEdit).where(LabelEdit.stage_id == old.id, LabelEdit.reverted_at.is_(None))
    )
    if live:
        raise KdError(
            f"stage {old.name!r} of run {run!r} has {live} label edits that are not undone: "
            f"run `kd labels undo --run {run} --stage {old.name}` first"
        )


def _remove_artifact(store: Store, path: Path) -> None:
    root = store.artifact_root.resolve()
    path = path.resolve()
    if root in path.parents and path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def _finish(store: Store, stage_id: int, status: str, error: str | None) -> None:
    with store.session() as s, s.begin():
        stage = s.get(Stage, stage_id)
        stage.status = status
        stage.error = error
        stage.ended_at = utcnow()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (KeyboardInterrupt)"
    if isinstance(exc, KdError):
        return str(exc)
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {tb[-1].filename}:{tb[-1].lineno}" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"
