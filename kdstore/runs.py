"""Runs and their stages: the ``--run`` naming rule and a stage's life from running to succeeded/failed.

A stage that raises (Ctrl-C included) is marked failed with its error and its partial logits and
predictions are removed; a stage that already succeeded is never replaced without ``overwrite``, and
with it only once the replacement succeeds: until then the old stage is parked (renamed
``NAME~parked-ID``, its artifact folder moved alongside), and a replacement that fails gives the
name back to it, keeping its own record as ``NAME~failed-ID``. A replaced clean stage whose
(undone) label edits (or undone review rejects) are on record stays as ``NAME~replaced-ID``, so the audit trail names it.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .errors import InterruptedAfterRecord, KdError, Terminated
from .serving import sha256_file  # numpy-free, shared with the ONNX serving path
from .names import check_stage_name
from .schema import STAGE_KINDS, LabelEdit, LabelIssue, Run, Stage, utcnow
from .store import Store, recorded_folder

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
        with self.store.write_session("stages") as s:  # a read then a write: under the writer lock (SQLite would not wait)
            stage = s.get(Stage, self.id)
            stage.artifact_path = str(Path(path).resolve())
            stage.artifact_sha256 = digest
        return digest


def check_unchanged(stage: Stage) -> None:
    """Refuse a model whose files are not those its stage recorded (their sha256): a file replaced,
    edited or added in its folder by hand was served under the stage's name, beside figures (``kd
    report``) and logits that are another model's."""
    recorded = stage.artifact_sha256
    if recorded and not Path(stage.artifact_path).exists():  # (gone: the loader's missing_model names where, not a sha256 of no file)
        return
    now = recorded and sha256_path(Path(stage.artifact_path))
    if recorded and now != recorded:
        raise KdError(f"the model of stage {stage.name!r} in {stage.artifact_path} is not the one the run recorded: its files' "
                      f"sha256 is {now[:12]}, the recorded {recorded[:12]} (changed by hand since?), so the run's figures and "
                      f"logits are not of it: put the recorded files back, or retrain the stage with --overwrite")


# what a file browser leaves in a folder it showed (macOS Finder, Windows Explorer): no part of a model
BROWSER_FILES = (".DS_Store", "Thumbs.db", "desktop.ini")


def sha256_path(path: Path) -> str:
    """sha256 of a file, or of a directory as the sorted list of (relative path, file sha256), the
    files a file browser leaves (``BROWSER_FILES``, macOS's ``._NAME``) left out."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and p.name not in BROWSER_FILES and not p.name.startswith("._")):
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
    numbered: bool = False,
    bare_first: bool = False,
) -> Iterator[StageHandle]:
    """Record a stage as running, yield it, then mark it succeeded or failed (with the error).

    ``numbered``: the stage is named ``NAME-N``, the first N no stage of the run has, chosen under
    the writer lock (two processes starting at once take two numbers; ``handle.name`` says which);
    with ``bare_first``, ``NAME`` itself while no stage has it, then ``NAME-2``, ``NAME-3``, ..."""
    if kind not in STAGE_KINDS:
        raise ValueError(f"unknown stage kind {kind!r}")
    name = kind if name is None else name  # an empty --name is refused, not taken as the default
    _check_name_for(kind, name, numbered=numbered)
    mark_crashed(store)
    started: list[tuple[int, str]] = []  # the stage's id and name once flushed: a Ctrl-C just after its commit
    try:  # (before this function's own try) ends it failed too, not `running` until a later stage finds the process gone
        stage_id, name = _begin(store, run=run, kind=kind, name=name, config=config, overwrite=overwrite, numbered=numbered,
                                bare_first=bare_first, started=started)
        handle = StageHandle(store=store, id=stage_id, run=run, name=name, kind=kind)
        guard = SignalGuard()
    except BaseException as exc:
        if started and _running_here(store, started[0][0]):
            _fail(store, started[0][0], run=run, name=started[0][1], error=_describe(exc))
        raise
    try:
        try:
            if kind in ("pretrain", "teach", "distill") and not _writable_folder(handle):
                # found now, not after hours of training when the model is saved
                raise KdError(f"{handle.artifact_dir}: cannot write the stage's model there (KD_ARTIFACTS sets the folder)")
            yield handle
        except BaseException as exc:
            guard.hold()  # from here on a kill or a second Ctrl-C waits: the failure's record is not cut short
            gave_back = False
            try:
                try:
                    gave_back = _fail(store, stage_id, run=run, name=name, error=_describe(exc))
                except Exception:
                    # a full disk: the record could not be written while the stage's partial files took the space
                    # (a half-saved model); they are this attempt's while it is recorded running here: freed, then again
                    if not _free_partial_files(store, stage_id, run=run, name=name):
                        raise
                    gave_back = _fail(store, stage_id, run=run, name=name, error=_describe(exc))
                if gave_back:  # (the command warned, before it ran, of what it replaces)
                    print(f"note: nothing was replaced: stage {name!r} of run {run!r} stays as it was", file=sys.stderr)
            except Exception as cleanup:  # (a folder that cannot be removed): the stage's own error is the one to tell
                # (the store itself gone, a server stopped: the record may still say running, with no word of what follows)
                print(f"warning: stage {name!r} failed, and so did its cleanup: {_describe(cleanup)} (should `kd runs` still show it "
                      f"running (process gone), the next stage started in run {run!r} records it failed)", file=sys.stderr)
            if type(exc) in (KeyboardInterrupt, Terminated):  # (click's bare "Aborted!" said nothing of the stage, nor
                what = f"the replacement of stage {name!r}" if gave_back else f"stage {name!r}"  # a kill's one line)
                said = f"{_describe(exc)}: {what} of run {run!r} is recorded failed; run the command again to start it over"
                raise (InterruptedAfterRecord if type(exc) is KeyboardInterrupt else Terminated)(said) from None
            raise
        guard.hold()
        _finish(store, stage_id, "succeeded", None)
        SUCCEEDED.append((run, name))  # (an error after this, its output unwritable, says the stage stands)
        _drop_replaced(store, run=run, name=name)
    finally:  # (a signal held while the success was recorded: raised saying so, not as if nothing was done)
        guard.close(after=f"stage {name!r} of run {run!r} succeeded: its results stand (`kd report --run {run}` shows them)")


def _free_partial_files(store: Store, stage_id: int, *, run: str, name: str) -> bool:
    """Remove the partial artifacts of stage ``stage_id``, still recorded running in this process (so its
    folder is its own: a replaced stage's is parked under another name), before its failure is recorded
    again; True when there were some."""
    folder = store.artifact_root / run / name
    try:
        if not folder.exists() or not _running_here(store, stage_id):
            return False
        shutil.rmtree(folder)
    except Exception:  # noqa: BLE001 - the first cleanup error is the one told
        return False
    return True


def _writable_folder(handle: StageHandle) -> bool:
    """Whether the stage's artifact folder can be made (``artifact_dir`` makes it) and written: a
    read-only ``KD_ARTIFACTS``, or one under a file, is the one-line error, not an OSError recorded
    with where in pathlib it was raised."""
    folder = handle.store.artifact_root / handle.run / handle.name
    try:
        return os.access(handle.artifact_dir, os.W_OK)
    except OSError as exc:
        raise KdError(f"{folder}: cannot write the stage's model there: {exc.strerror or exc} "
                      "(KD_ARTIFACTS sets the folder)") from None


def _running_here(store: Store, stage_id: int) -> bool:
    """Whether stage ``stage_id`` is recorded (committed) as running in this very process."""
    with store.session() as s:
        stage = s.get(Stage, stage_id)
        return stage is not None and stage.status == "running" and stage.process == this_process()


def _fail(store: Store, stage_id: int, *, run: str, name: str, error: str) -> bool:
    """End a stage failed: its logits, predictions and folds removed, the error recorded, and the
    stage it was replacing (if any) given back its name and folder; its own partial artifacts go.
    True when it gave one back."""
    store.clear_outputs(stage_id)
    note = _discard_label_work(store, stage_id)  # before its end is recorded: a kill here leaves it to mark_crashed
    _finish(store, stage_id, "failed", error if note is None else f"{error}; {note}")
    return _give_back(store, run=run, name=name, failed_id=stage_id)


def _discard_label_work(store: Store, stage_id: int) -> str | None:
    """A failed clean's standing edits reverted, a failed detection's undecided issues gone
    (:func:`kdstore.labels.discard_failed`; imported here, as ``labels`` builds on this module)."""
    from .labels import discard_failed

    return discard_failed(store, stage_id)


def _check_name_for(kind: str, name: str, *, numbered: bool = False) -> None:
    """A stage name a ``kind`` stage may take: well formed, and not another kind's own name."""
    check_stage_name(f"{name}-1" if numbered else name)
    # in any case: a clean named `Teach` shared the teacher's folder on macOS and Windows, and `kd teach` (which has
    # no --name) was then refused as differing from it only in case
    if name.lower() in STAGE_KINDS and name != kind:  # ``find_stage`` looks a name up before a kind
        raise KdError(f"the stage name {name!r} is kept for {name.lower()} stages: choose another --name")
    if kind != "predict" and name.lower().startswith("predict-"):  # (a clean or student named `predict-teach@dev` took kd predict
        # --store's name, with an '@' no user name may hold, and `kd predict --store` was told to choose a --name it has not)
        raise KdError(f"the stage name {name!r}: names starting with 'predict-' are kept for `kd predict --store` stages "
                      "(predict-STAGE): choose another --name")
    if name.lower().startswith("export-"):  # (RUN/export-teach-onnx, a student's folder, is where `kd export --model teach` writes)
        raise KdError(f"the stage name {name!r}: names starting with 'export-' are kept for the folders `kd export` writes "
                      "beside the stages' (RUN/export-STAGE-FORMAT): choose another --name")


SUCCEEDED: list[tuple[str, str]] = []  # (run, stage) of each stage this process recorded succeeded
HOLD = {"on": False, "held": None}  # set while a stage's end is recorded: handlers kd did not install (torchrun's) look here


class SignalGuard:
    """While a stage runs, ``kill`` (SIGTERM) and a closed terminal (SIGHUP) raise as Ctrl-C does,
    so the stage ends failed instead of staying "running" with partial outputs. While kd records how
    the stage ended (``hold``), those and a second Ctrl-C are held back and raised once the record
    is complete. A handler already installed (torchrun's ranks, see ``distributed``) is left alone;
    so is a thread other than the main one."""

    KILLS = (signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.bookkeeping, self.held = False, None
        self.main = threading.current_thread() is threading.main_thread()
        self.saved: dict[int, Any] = {}
        if self.main:
            for sig in self.KILLS:
                if signal.getsignal(sig) is signal.SIG_DFL:
                    self.saved[sig] = signal.signal(sig, self._handle)

    def hold(self) -> None:
        self.bookkeeping = True
        HOLD["on"] = True  # (a SIGTERM handler of torchrun's ranks, see ``distributed``, defers to it too)
        # a second Ctrl-C waits too; a process that ignores SIGINT (started with &) keeps ignoring it
        if self.main and signal.SIGINT not in self.saved and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self.saved[signal.SIGINT] = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.bookkeeping:
            self.held = self.held or signum
            return
        raise Terminated(f"terminated ({signal.Signals(signum).name})")  # not an Exception: no `except Exception` swallows it

    def close(self, after: str = "the stage was recorded") -> None:
        """``after``: what stands when a signal held while the end was recorded is raised (the success of a stage)."""
        for sig, previous in reversed(self.saved.items()):
            signal.signal(sig, previous)
        self.saved.clear()
        if self.bookkeeping:
            HOLD["on"] = False
            self.held = self.held or HOLD["held"]
            HOLD["held"] = None
        held, self.held = self.held, None  # raised once
        if held and sys.exc_info()[1] is None:  # one that came while the success was recorded
            if held == signal.SIGINT:
                raise InterruptedAfterRecord(f"interrupted (KeyboardInterrupt) after {after}")
            raise KdError(f"terminated ({signal.Signals(held).name}) after {after}")


PARKED, FAILED = "~parked-", "~failed-"  # suffixes no stage a user names carries (see module docstring)
REPLACED = "~replaced-"  # a replaced stage whose (undone) label edits stay on record under its name


def _begin(store: Store, *, run: str, kind: str, name: str, config: dict, overwrite: bool, numbered: bool = False,
           bare_first: bool = False, started: list[tuple[int, str]] | None = None) -> tuple[int, str]:
    with _folder_moves() as moved:  # (Ctrl-C included): the old stage is still recorded under its name, with its folder there
        stage_id, name, old_artifact = _begin_locked(store, run=run, kind=kind, name=name, config=config, overwrite=overwrite,
                                                     numbered=numbered, bare_first=bare_first, moved=moved,
                                                     started=[] if started is None else started)
    if old_artifact:
        _remove_artifact(store, Path(old_artifact))
    return stage_id, name


@contextlib.contextmanager
def _folder_moves() -> Iterator[list[tuple[Path, Path]]]:
    """The ``(from, to)`` folder renames made inside a transaction, put back if it does not commit
    (an error, Ctrl-C); the caller empties the list once it has committed, and the moves stand."""
    moved: list[tuple[Path, Path]] = []
    try:
        yield moved
    except BaseException:
        for src, dst in reversed(moved):
            if dst.exists() and not src.exists():
                dst.rename(src)
        raise


NAMED_KINDS = ("distill", "clean")  # the stages whose command takes --name


def _begin_locked(store: Store, *, run: str, kind: str, name: str, config: dict, overwrite: bool, numbered: bool,
                  bare_first: bool, moved: list[tuple[Path, Path]], started: list[tuple[int, str]]) -> tuple[int, str, str | None]:
    old_artifact = None
    # --overwrite reads the old stage's label edits (``_refuse_live_edits``): on PostgreSQL under their
    # writer lock too, so that a clean deciding its issues meanwhile has committed (and is seen) or waits
    with store.write_session("runs", "stages", *(("label_edits", "label_issues") if overwrite else ())) as s:
        run_row = s.scalars(select(Run).where(Run.uniqid == run)).first()
        if run_row is None:
            _refuse_case_twin(s, run, None, name)
            run_row = Run(uniqid=run)
            s.add(run_row)
            s.flush()
        if numbered:  # read under the writer lock: a stage another process just named is taken
            taken = {n.lower() for n in s.scalars(select(Stage.name).where(Stage.run_id == run_row.id))}
            candidates = [f"{name}-{n}" for n in range(1, len(taken) + 2)]
            if bare_first:
                candidates[0] = name
            name = next(c for c in candidates if c.lower() not in taken)
        old = s.scalars(
            select(Stage).where(Stage.run_id == run_row.id, Stage.name == name)
        ).first()
        if old is not None:
            _refuse_replacing(s, old, run=run, kind=kind, name=name, overwrite=overwrite, teachers=config.get("teacher_runs"))
            if old.status == "succeeded":  # kept until the replacement succeeds
                _park(store, s, old, run, moved)
                _refuse_foreign_files(store, run, name)  # (parked from its own folder elsewhere: what is here is not its)
            else:  # its folder goes with it, recorded or not: the new stage starts from an empty one
                if old.status == "failed":  # its own files went when it failed: what is there now is not its
                    _refuse_foreign_files(store, run, name)
                old_artifact = old.artifact_path or str(store.artifact_root / run / name)
                if old.status == "failed" and _any_edits(s, old):
                    # its (undone) label edits stay on record under its name, as a failed replacement's do
                    old.name, old.artifact_path = f"{name}{FAILED}{old.id}", None
                else:
                    s.delete(old)
            s.flush()
        else:
            _refuse_case_twin(s, run, run_row.id, name)
            _refuse_foreign_files(store, run, name)
        stage = Stage(
            run_id=run_row.id,
            kind=kind,
            name=name,
            config=config,
            status="running",
            host=socket.gethostname(),
            process=this_process(),
            run_by=current_user(),
            started_at=utcnow(),
        )
        s.add(stage)
        s.flush()
        stage_id = stage.id
        started.append((stage_id, name))
    moved.clear()  # committed: the moves stand (a Ctrl-C from here on must not undo them)
    return stage_id, name, old_artifact


def _refuse_replacing(s: Session, old: Stage, *, run: str, kind: str, name: str, overwrite: bool, edits_go: bool = False,
                      teachers: list[str] | None = None) -> None:
    """Why the stage ``old`` of that name may not be replaced by a new ``kind`` stage (with ``overwrite`` or not).
    ``edits_go``: its standing edits are reverted before (a crashed clean's, by :func:`mark_crashed`).
    ``teachers``: a distill stage's --teacher-run (none: ``run``'s own teacher), named in the advice."""
    if old.kind != kind:  # --overwrite replaces a stage's own kind only, never a teacher by a clean
        raise KdError(
            f"stage {name!r} of run {run!r} is a {old.kind} stage, not a {kind} stage: choose another --name"
        )
    if old.status == "running" and process_state(old) is True:  # (one whose process is gone: failed by mark_crashed)
        raise KdError(
            f"stage {name!r} of run {run!r} is running (process {old.process.split(':')[0]} on {old.host}, since "
            f"{old.started_at:%Y-%m-%d %H:%M} UTC): wait for it, or stop it, then run this again"
        )
    if old.status in ("succeeded", "running") and not overwrite:
        if old.kind == "detect":  # (a clean decided its issues: --overwrite, the advice below, would be refused too)
            _refuse_live_edits(s, old, run, edits_go=edits_go)
        verb = "succeeded" if old.status == "succeeded" else (
            f"is marked running by {running_by(old)}, which kd cannot check from here {unchecked_why(old)},")
        live = _live_edits(s, old) if kind == "clean" else 0
        undone = kind == "clean" and not live and old.status == "succeeded" and s.scalar(
            select(func.count()).select_from(LabelEdit).where(LabelEdit.stage_id == old.id))  # (the refusal read as if they stood)
        # (a flag clean's are flags, which change no label, as _edits_not_undone names them)
        edits = f"{'flag' if live and _live_edits(s, old, flags=True) == live else 'edit'}{'s stand' if live != 1 else ' stands'}"
        advice = (f"name this one with --name (its {live} {edits}; --overwrite would need "
                  f"`kd labels undo --run {run} --stage {name}` first)" if live
                  # (another --run holds no teacher, detection or model of this one's: a detection, a clean and
                  # kd predict --store read their own run's; a student takes this run's teacher by --teacher-run)
                  # (its --teacher-run where given: `--teacher-run RUN` sent a student of another run's teacher to one holding none)
                  else ("pass --overwrite to replace it, --name to keep both, or another --run with "
                        + " ".join(f"--teacher-run {t}" for t in dict.fromkeys(teachers or [run]))) if kind == "distill"
                  else "pass --overwrite to replace it, or --name to keep both" if kind in NAMED_KINDS
                  else "pass --overwrite to replace it" if kind in ("detect", "predict")
                  else "pass --overwrite to replace it, or use another --run")
        since = "kd labels undo reverted its edits since: " if undone else ""
        raise KdError(f"stage {name!r} of run {run!r} {verb} on {old.started_at:%Y-%m-%d %H:%M} UTC: {since}{advice}")
    if old.status == "succeeded":  # its folder is moved away now, its logits go when the replacement succeeds
        from .deletion import _refuse_readers  # (deletion builds on this module)

        _refuse_readers(s, {old.id}, run, [old], replacing=True)
    _refuse_live_edits(s, old, run, edits_go=edits_go)
    for attempt in _replaced(s, run, name)[1]:  # a failed attempt's edits that stand (committed before it failed)
        _refuse_live_edits(s, attempt, run)


def check_stage_free(store: Store, *, run: str, kind: str, name: str, overwrite: bool = False,
                     teachers: list[str] | None = None) -> None:
    """What starting the stage (``stage_scope``) would refuse about its name, checked without writing
    anything: a dry run says what the real run would (a stage of that name that succeeded, one whose
    edits stand). A stage left running by a process that is gone counts as failed, as the real run marks it.
    ``teachers``: a distill stage's --teacher-run, as its config's ``teacher_runs`` gives them to ``stage_scope``."""
    _check_name_for(kind, name)
    with store.session() as s:
        old = s.scalars(select(Stage).join(Run, Run.id == Stage.run_id).where(Run.uniqid == run, Stage.name == name)).first()
        if old is not None:
            edits_go = False
            if _crashed(old):  # judged as the failed stage mark_crashed makes it (its kind still refuses)
                from .labels import reverts_cleanly  # (labels builds on this module)

                edits_go = old.kind == "clean" and reverts_cleanly(s, old)  # its edits reverted first, as mark_crashed does
                s.expunge(old)
                old.status = "failed"  # (detached: nothing written)
            _refuse_replacing(s, old, run=run, kind=kind, name=name, overwrite=overwrite, edits_go=edits_go, teachers=teachers)
        else:
            _refuse_case_twin(s, run, s.scalars(select(Run.id).where(Run.uniqid == run)).first(), name)


def _refuse_case_twin(s: Session, run: str, run_id: int | None, name: str) -> None:
    """Refuse a new run (``run_id`` None), or a new stage ``name`` of run ``run_id``, whose name differs
    from one the store has only in case: on a case-insensitive file system (macOS, Windows)
    ``Demo/teach`` and ``demo/teach`` are one folder, and the second stage wrote its model into the
    first's (and, failing, removed it). Compared here, not by the database's lower(): a PostgreSQL
    database of a Turkish locale lowers ``I`` to ``ı`` (``Issues`` and ``issues`` were let through)."""
    if run_id is None:
        what, given, holder = "run", run, "the store has run"
        names = s.scalars(select(Run.uniqid))
    else:
        what, given, holder = "stage", name, f"run {run!r} has stage"
        names = s.scalars(select(Stage.name).where(Stage.run_id == run_id))
    twin = next((n for n in names if n.lower() == given.lower()), None)
    if twin is not None:
        raise KdError(f"{what} {given!r}: {holder} {twin!r}, the same name but for case, and both would use one "
                      f"model folder on a case-insensitive file system (macOS, Windows): name it {twin!r} or another name")


def _refuse_foreign_files(store: Store, run: str, name: str) -> None:
    """A new stage's folder must be empty: files there belong to no stage of this store (a deleted
    store's, or another store's that shares ``KD_ARTIFACTS``). Written into, they would be hashed and
    counted with the new model (stale ``fold-K`` folders, tokenizer files); and a failure would
    delete them with the stage's own partial files."""
    folder = store.artifact_root / run / name
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise KdError(
            f"{folder} already holds files no stage of this store made (a deleted store's, another store's sharing "
            "the folder through KD_ARTIFACTS or a server database of the same name and host, a model an --overwrite with "
            "KD_ARTIFACTS unset or changed left there, or a failed attempt's that could not be removed): move or delete them, "
            "or use another --run"
        )


def current_user() -> str | None:
    """Who runs this kd, as a stage records it: ``KD_USER`` (a reviewer's name where many share one
    login, or a service account), else the process's login name; ``None`` where neither is known (a
    container's uid with no name)."""
    named = " ".join(os.environ.get("KD_USER", "").split())  # (one line: a line break split kd labels history's)
    if named:
        try:
            named.encode("utf-8")
        except UnicodeEncodeError:  # (exported in a GBK terminal: the store's error named no KD_USER)
            raise KdError(f"KD_USER is not valid UTF-8 ({ascii(named)}): set it in UTF-8 (a terminal in another "
                          "encoding, such as GBK, wrote its bytes)") from None
        return named[:200]  # (an environment variable holds no NUL)
    try:
        return getpass.getuser()[:200] or None
    except (KeyError, OSError):  # (no LOGNAME/USER and no passwd entry for the uid)
        return None


def this_process() -> str:
    """``PID:START:MACHINE``: this process, its start time as Linux counts it (``/proc/PID/stat``, so a
    reused pid is not taken for it) and the process table it is in (the boot id and the pid
    namespace: a stage of another container or boot with this host name is not judged by this
    table); ``?`` where there is no /proc."""
    return f"{os.getpid()}:{_start_time(os.getpid()) or '?'}:{_machine() or '?'}"


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[19]  # field 22, after the command name in parentheses


def _zombie(pid: int) -> bool:
    """Whether process ``pid`` has exited and waits for its parent to reap it (state ``Z``): a rank
    killed outright stays one until torchrun notices, and its stage is as good as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] == "Z"


def _machine() -> str | None:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
        return f"{boot}/{os.readlink('/proc/self/ns/pid').strip('pid:[]')}"
    except OSError:
        return None


def running_by(stage: Stage) -> str:
    """Who marked ``stage`` running, for a message: ``process 4242 on gpu-box-7``, or the kd before store
    revision 0007 that recorded no process (nothing kd can check)."""
    if not stage.process:
        return f"a kd from before store revision 0007 on {stage.host}"
    return f"process {stage.process.split(':')[0]} on {stage.host}"


def unchecked_why(stage: Stage) -> str:
    """Why kd cannot tell whether ``stage``'s process still runs (``process_state`` None), in brackets."""
    if not stage.process:
        return "(such a kd recorded no process: if none runs it now, it has ended)"
    return "(another machine or container, or before a reboot)"


def process_state(stage: Stage) -> bool | None:
    """Whether the process that runs ``stage`` is alive: True, False (gone: killed), or None when
    this process cannot tell: another host, or this host name on another machine, container or boot
    (a reboot and a cloned machine look alike from here), no /proc, a process hidden from this user.
    Only a certain False lets kd mark the stage failed; only a certain True refuses --overwrite."""
    return process_alive(stage.host, stage.process)


def process_alive(host: str | None, process: str | None) -> bool | None:
    """:func:`process_state` for a ``host`` and a ``process`` tag (:func:`this_process`) kept anywhere."""
    if not process or host != socket.gethostname():
        return None
    pid, start, machine = (process.split(":") + ["?", "?"])[:3]
    if int(pid) == os.getpid() and start == (_start_time(os.getpid()) or "?"):
        return True  # this very process
    if machine == "?" or machine != _machine():
        return None
    seen = _start_time(int(pid))
    if seen is not None:
        return seen == start and not _zombie(int(pid))  # a zombie has exited: only its parent has yet to reap it
    try:  # not in /proc: gone, or hidden from this user (hidepid)
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return None
    return None


def _crashed(stage: Stage) -> bool:
    return stage.status == "running" and process_state(stage) is False


def _crashed_here(store: Store) -> dict[int, str]:
    """``{stage id: process}`` of the stages left running by a process of this machine that is gone."""
    with store.session() as s:
        rows = s.scalars(select(Stage).where(Stage.status == "running", Stage.host == socket.gethostname())).all()
        return {r.id: r.process for r in rows if _crashed(r)}


def mark_crashed(store: Store) -> list[str]:
    """Mark failed every stage left 'running' by a process of this machine that is gone, so that its
    name can be used again; returns a line for each, saying so (and, of a clean, that its label edits
    were reverted). Called by writers only (a stage starting): readers never take the writer lock,
    ``kd runs`` shows such a stage as ``running (process gone)``."""
    gone = _crashed_here(store)
    for stage_id, run, name in _unfinished(store):  # a failure's end cut short: its outputs and the old stage's name
        store.clear_outputs(stage_id)
        _give_back(store, run=run, name=name, failed_id=stage_id)
    for run, name in _unswept(store):  # a success's end cut short: the stages it replaced, still parked
        _drop_replaced(store, run=run, name=name)
    if not gone:
        return []
    notes = {stage_id: _discard_label_work(store, stage_id) for stage_id in gone}  # before the mark: a kill between retries it
    marked, said = [], []
    with store.write_session("stages") as s:
        for stage, run in s.execute(
            select(Stage, Run.uniqid).join(Run, Run.id == Stage.run_id).where(Stage.id.in_(list(gone)), Stage.status == "running")
        ):
            if stage.process == gone[stage.id]:
                note = notes.get(stage.id)
                stage.status, stage.error, stage.ended_at = "failed", _gone(stage) + (f"; {note}" if note else ""), utcnow()
                marked.append((stage.id, run, stage.name))
                # (a killed clean's edits were reverted in silence: `kd samples --tsv` taken before showed them)
                undone = {"clean": "its label edits reverted and its issues reopened", "detect": "its issues removed"}.get(stage.kind)
                said.append(f"stage {run}/{stage.name} was left running by process {stage.process.split(':')[0]}, which is gone: "
                            "recorded failed" + (f", {undone}" if undone and not note else f"; {note}" if note else ""))
    for stage_id, run, name in marked:  # as if it had failed in its own process: outputs gone, a replaced stage back
        store.clear_outputs(stage_id)
        _give_back(store, run=run, name=name, failed_id=stage_id)
    return said


def wait_for_marking(store: Store, *, timeout: float = 120.0, poll: float = 0.5) -> bool:
    """Read only: wait until no stage of this machine awaits :func:`mark_crashed` (one left running by
    a process that is gone, or a failure's end cut short); False when ``timeout`` passed first. For the
    torchrun ranks other than 0, which look up the stages they build on while rank 0 marks them:
    a lookup before the marking found no teacher (a killed ``--overwrite``'s stage still parked)."""
    deadline = time.monotonic() + timeout
    while True:
        if not _crashed_here(store) and not _unfinished(store):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)


CRASHED = "crashed: process "  # how the error of a stage mark_crashed ended begins


def _gone(stage: Stage) -> str:
    return f"{CRASHED}{stage.process.split(':')[0]} is gone"


def found_gone(stage: Stage) -> bool:
    """Whether ``mark_crashed`` ended ``stage`` (its process gone: ``kill -9``, the OOM killer): its
    ``ended_at`` is when that was found, as the next stage started (maybe days later), not when it stopped."""
    return stage.status == "failed" and (stage.error or "").startswith(CRASHED)


def _refuse_live_edits(s: Session, old: Stage, run: str, *, edits_go: bool = False) -> None:
    """A stage whose label edits still stand is never replaced: deleting it would orphan them (their
    labels stay changed, and ``kd labels undo`` could no longer find them). Nor is a detect stage
    whose issues a clean stage decided with edits that stand: its issues would go, and undoing the
    clean would restore labels that no issue lists any more."""
    live = 0 if edits_go else _live_edits(s, old)
    if live:
        raise KdError(
            f"stage {old.name!r} of run {run!r} has {_edits_not_undone(live, _live_edits(s, old, flags=True))}: "
            f"run `kd labels undo --run {run} --stage {old.name}` first"
        )
    if old.kind != "detect":
        return
    deciders = s.scalars(
        select(Stage).where(Stage.id.in_(
            select(LabelIssue.decided_stage_id).where(LabelIssue.stage_id == old.id, LabelIssue.decided_stage_id.is_not(None))
        )).order_by(Stage.id)
    ).all()
    config = old.config or {}  # the teacher it read: another run's with --teacher-run (``run`` may have none)
    teacher_run = (config.get("teacher_stages") or [{}])[0].get("run") or config.get("teacher_run") or run
    # decisions that changed no label (a reviewer's rejections, a label kept as it stood) are on record only in
    # these issues: replaced, they went unseen, and a clean of the new detection relabeled what a person had kept
    blocking = []  # (stage, its run, edits that stand, of them flags, issues decided with no label changed)
    for clean in deciders:
        live = _live_edits(s, clean)
        kept = 0 if live else s.scalar(select(func.count()).select_from(LabelIssue).where(
            LabelIssue.stage_id == old.id, LabelIssue.decided_stage_id == clean.id))
        if live or kept:
            blocking.append((clean, s.get(Run, clean.run_id).uniqid, live, _live_edits(s, clean, flags=True) if live else 0, kept))
    if not blocking:
        return
    # every stage to undo named at once, the latest first as undo takes them (one at a time, each retry named the next)
    (clean, owner, live, flags, kept), *others = blocking[::-1]
    also = f" (then stage{'s' if len(others) > 1 else ''} {', '.join(repr(o[0].name) for o in others)} likewise)" if others else ""
    if live:
        raise KdError(
            f"the issues of stage {old.name!r} of run {run!r} were decided by stage {clean.name!r}, whose "
            f"{live} {'flag' if flags == live else 'label edit'}{'s stand' if live != 1 else ' stands'}: run `kd labels undo --run {owner} --stage {clean.name}` first{also}, "
            f"or detect again in another run (`kd labels detect --run NEW --teacher-run {teacher_run}`)"
        )
    raise KdError(
        f"the issues of stage {old.name!r} of run {run!r} were decided by stage {clean.name!r} ({kept} "
        f"rejected or kept as labeled, no label changed), which a new detection would forget: run `kd labels undo "
        f"--run {owner} --stage {clean.name}` first{also}, or detect again in another run "
        f"(`kd labels detect --run NEW --teacher-run {teacher_run}`)"
    )


def stage_folder(store: Store, run: str, st: Stage) -> Path:
    """The stage's ``RUN/STAGE`` folder: the one of its recorded path where that lies in this store's own
    ``kd-artifacts/STORE`` (``Store.owns``) and is there, else the one under this store's artifact root,
    as ``kd predict`` finds the model there: a server store's used from another working directory, or
    a stage made before KD_ARTIFACTS was set. (Not a folder of another store's, a copied store's
    original's, nor one KD_ARTIFACTS named: two stores may record it.)"""
    here = store.artifact_root / run / st.name
    # its own recorded folder first, as Store._located serves it: one under KD_ARTIFACTS, there too, is a
    # model an --overwrite left (parked and deleted in its place, the stage's own model stayed and was served)
    folder = recorded_folder(run, st)
    if folder is not None and store.owns(folder) is False and not here.is_dir():  # (as Store._located serves it: a
        home = store.home_root / run / st.name  # store moved or copied with its kd-artifacts/STORE, KD_ARTIFACTS set)
        return home if home.is_dir() else here
    return folder if folder is not None and store.owns(folder) and folder.is_dir() else here


def _park(store: Store, s: Session, old: Stage, run: str, moved: list[tuple[Path, Path]]) -> None:
    """Rename a stage being replaced to ``NAME~parked-ID`` and move its artifact folder alongside, so
    that the replacement starts from an empty folder and a failure can restore both. A server store's
    stage made from another working directory is parked in its folder there (``stage_folder``)."""
    folder = stage_folder(store, run, old)
    parked = folder.with_name(f"{old.name}{PARKED}{old.id}")
    if folder.exists():
        if parked.exists():
            shutil.rmtree(parked)
        folder.rename(parked)
        moved.append((folder, parked))
        recorded = recorded_folder(run, old)
        if recorded is not None and store.owns(recorded) is False:  # (recorded in the folder of the store it was moved
            # or copied from: the model parked is the one served here, which a failure gives back and a success removes)
            old.artifact_path = str(folder / Path(old.artifact_path).relative_to(recorded))
        old.artifact_path = _moved(old.artifact_path, folder, parked)
    old.name = parked.name


def _moved(path: str | None, src: Path, dst: Path) -> str | None:
    """``path`` (an artifact path) with the folder ``src`` it lies in renamed ``dst``."""
    if not path:
        return path
    try:
        return str(dst.resolve() / Path(path).relative_to(src.resolve()))
    except ValueError:  # outside the stage's folder (not where kd puts artifacts): left where it is
        return path


def _replaced(s: Session, run: str, name: str) -> tuple[list[Stage], list[Stage]]:
    """The run's parked stages for ``name`` (oldest first) and its failed replacement attempts."""
    rows = s.scalars(
        select(Stage).join(Run, Run.id == Stage.run_id).where(Run.uniqid == run, Stage.name.startswith(name + "~", autoescape=True))
        .order_by(Stage.id)
    ).all()
    parked = [r for r in rows if r.name == f"{name}{PARKED}{r.id}"]
    return parked, [r for r in rows if r.name.startswith(name + FAILED)]


def _give_back(store: Store, *, run: str, name: str, failed_id: int) -> bool:
    """A stage failed: its partial artifacts are removed. If it was replacing one, it keeps its
    record as ``NAME~failed-ID`` and the stage it was to replace gets its name and folder back
    (True)."""
    with _folder_moves() as moved:  # not recorded: the parked stage's folder stays where its record says
        with store.write_session("stages") as s:
            parked, _ = _replaced(s, run, name)
            failed = s.get(Stage, failed_id)
            if failed is None:  # replaced meanwhile by a new attempt of the same name, which owns the folder now
                return False
            if failed.name != name:  # given back already (by another process finishing what this one began)
                return False
            failed.artifact_path, failed.artifact_sha256 = None, None
            folder = store.artifact_root / run / name
            if folder.exists():  # the failed stage's partial artifacts (a model, some folds)
                shutil.rmtree(folder)
            with contextlib.suppress(OSError):  # the run's folder too, when this stage's was all it held
                folder.parent.rmdir()
                # and kd-artifacts/STORE, made by it: a store moved without its models, whose stages fail on that,
                # had `mv OLD NEW` (as the error says) nest them in an empty kd-artifacts/NEW, unfound
                remove_empty_store_folder(store)
            if not parked:  # nothing was replaced: the failed stage keeps its own name
                return False
            back = parked[-1]
            failed.name = f"{name}{FAILED}{failed_id}"
            s.flush()
            source = stage_folder(store, run, back)  # parked where it lay: a server store's from another folder there
            home = source.with_name(name)
            if source.exists() and home != folder and home.exists():
                shutil.rmtree(home)  # the failed stage's partial artifacts, made from there (it was empty once parked)
            if source.exists():
                source.rename(home)
                moved.append((source, home))
                back.artifact_path = _moved(back.artifact_path, source, home)
            back.name = name
        moved.clear()  # committed: the folder stays where the record now says
    return True


def remove_empty_store_folder(store: Store) -> None:
    """Remove ``kd-artifacts/STORE`` and ``kd-artifacts``, the folders kd made for the store's models, where
    nothing is left in them (not a ``KD_ARTIFACTS`` folder: the user named it)."""
    if not os.environ.get("KD_ARTIFACTS"):
        with contextlib.suppress(OSError):
            store.artifact_root.rmdir()
            store.artifact_root.parent.rmdir()


def _unfinished(store: Store) -> list[tuple[int, str, str]]:
    """``(stage id, run, name)`` of each failed stage whose end was cut short before it gave the
    stage it was replacing back (``kill -9`` or Ctrl-C between the two, in its process or in
    :func:`mark_crashed`'s): it still holds the name while the old stage waits as ``NAME~parked-ID``."""
    with store.session() as s:
        return [(holder.id, run, base) for holder, run, base in _parked_holders(s, "failed")]


def _unswept(store: Store) -> list[tuple[str, str]]:
    """``(run, name)`` of each stage that succeeded as a replacement while the stage it replaced still
    waits as ``NAME~parked-ID``: its process was killed (``kill -9``) between recording the success
    and deleting the old stage, which stayed parked for good, its folder (a model) kept beside the new one."""
    with store.session() as s:
        # only once its process is certainly gone: a live one deletes them itself, a moment after the success
        gone = [(run, base) for holder, run, base in _parked_holders(s, "succeeded") if process_state(holder) is False]
    return list(dict.fromkeys(gone))


def _parked_holders(s: Session, status: str) -> list[tuple[Stage, str, str]]:
    """``(stage, run, name)`` of each stage of ``status`` holding the name ``NAME`` of a stage parked
    as ``NAME~parked-ID`` in its run (the ID its own: a user's name holding the suffix is no parked stage)."""
    out = []
    for stage_id, parked_name, run_id in s.execute(
            select(Stage.id, Stage.name, Stage.run_id).where(Stage.name.contains(PARKED, autoescape=True))).all():
        base, _, tail = parked_name.rpartition(PARKED)
        if tail != str(stage_id):
            continue
        row = s.execute(select(Stage, Run.uniqid).join(Run, Run.id == Stage.run_id)
                        .where(Stage.run_id == run_id, Stage.name == base, Stage.status == status)).first()
        if row is not None:
            out.append((row[0], row[1], base))
    return out


def _drop_replaced(store: Store, *, run: str, name: str) -> None:
    """The replacement succeeded: delete the stages it replaced (with their outputs and artifacts)
    and the records of earlier failed attempts."""
    # label_edits too, before label_issues as every label edit locks them: deleting a stage sets its
    # edits' stage to NULL, which on PostgreSQL waited for a `kd labels set` holding label_edits and
    # waiting for label_issues (a deadlock, the replacement's end failing with the old stage kept)
    with store.write_session("stages", "label_edits", "label_issues") as s:
        parked, failed = _replaced(s, run, name)
        folders = [stage_folder(store, run, p) for p in parked]  # (a server store's from another folder: there)
        gone = parked + [f for f in failed if not _live_edits(s, f)]  # edits that stand keep their stage
        # issues a replaced review decided (rejections: its edits were undone before it could be
        # replaced) and the replacement did not decide again are open again, not orphaned
        from .labels import _record_undone_rejects, reopen  # (labels imports this module)

        # a replaced review's rejects (no edit to undo first) are undone by the replacement: on record as such, as an
        # undo records them, those the replacement decided again too (its ``redecided``)
        new = s.scalars(select(Stage).join(Run, Run.id == Stage.run_id).where(Run.uniqid == run, Stage.name == name)).first()
        redecided = ((new.config or {}).get("redecided") or {}) if new is not None else {}
        for row in parked:
            if row.kind == "clean":
                _record_undone_rejects(s, row.id, also=[int(i) for i, (status, by) in redecided.items() if status == "rejected" and by == row.id])
        reopen(s, LabelIssue.decided_stage_id.in_([g.id for g in gone] or [-1]))
        for row in gone:
            if _any_edits(s, row) or (row.config or {}).get("undone_rejects"):
                # the audit trail keeps naming the stage that made (and undid) these edits: not "a deleted stage"
                # (and its undone rejects, which only its config records)
                if row in parked:
                    row.name = f"{name}{REPLACED}{row.id}"  # (a failed attempt keeps its NAME~failed-ID)
                row.artifact_path = None
            else:
                s.delete(row)
    for folder in folders:
        if folder.exists():
            shutil.rmtree(folder)
        if folder.parent != store.artifact_root / run:  # that other folder's run folder, when this was all it held
            with contextlib.suppress(OSError):
                folder.parent.rmdir()


def _any_edits(s: Session, stage: Stage) -> bool:
    return s.scalar(select(LabelEdit.id).where(LabelEdit.stage_id == stage.id).limit(1)) is not None


def _live_edits(s: Session, stage: Stage, *, flags: bool = False) -> int:
    """The stage's label edits not undone (``flags``: those of them that are flags, which change no label)."""
    query = select(func.count()).select_from(LabelEdit).where(LabelEdit.stage_id == stage.id, LabelEdit.reverted_at.is_(None))
    return s.scalar(query.where(LabelEdit.action == "flag") if flags else query)


def _remove_artifact(store: Store, path: Path) -> None:
    root = store.artifact_root.resolve()
    path = path.resolve()
    if root in path.parents and path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def _finish(store: Store, stage_id: int, status: str, error: str | None) -> None:
    with store.write_session("stages") as s:  # a read then a write: under the writer lock (SQLite would not wait)
        stage = s.get(Stage, stage_id)
        if stage is None:  # deleted meanwhile: `--overwrite` in another process, of a stage it could not check
            if status == "failed":
                return  # nothing of it to record: its own error says why it failed
            raise KdError("the stage was replaced meanwhile by another process (--overwrite of a stage marked running "
                          "elsewhere): this one's results are not recorded; `kd runs` shows the stage that replaced it")
        stage.status = status
        # another torchrun rank's error, noted first, is the cause; unless it is this process's own error too
        if not (status == "failed" and stage.error) or _met_by_every_rank(stage.error, error):
            stage.error = error
        stage.ended_at = utcnow()


NOTED_BY_RANK = re.compile(r"rank [1-9]\d*: ")  # a torchrun rank's error noted on the stage (kdstore.distributed)


def _met_by_every_rank(noted: str, error: str | None) -> bool:
    """Whether another rank's note (``rank 1: cannot load model ...``) is the very error this process
    (rank 0) ends the stage with: one every rank met (a --model that does not exist, rows the ranks
    read differently, a budget that ran out), which the stage records as rank 0 prints it, not as
    rank 1's alone (the rank that noted it first)."""
    found = NOTED_BY_RANK.match(noted)
    cause = noted[found.end():] if found else ""
    return bool(cause) and error is not None and error.startswith(cause)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (KeyboardInterrupt)"
    if isinstance(exc, (KdError, Terminated)):
        return str(exc)
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError):  # the driver's first line, not SQLAlchemy's statement, parameters and help link
        first = (str(getattr(exc, "orig", None) or "").strip().splitlines() or [""])[0]
        return f"database error: {first or type(exc).__name__}"
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {tb[-1].filename}:{tb[-1].lineno}" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _edits_not_undone(n: int, flags: int = 0) -> str:
    """``n`` edits not undone, ``flags`` of them flags: a flag clean's are named as flags, not label edits."""
    return f"{n} {'flag' if flags == n else 'label edit'}{'s that are' if n != 1 else ' that is'} not undone"
