"""What ``kd report`` and ``kd runs`` show, gathered from the store as plain dicts."""

from __future__ import annotations

import datetime as dt
import os
import shlex
from typing import Any

import numpy as np
from sqlalchemy import func, select

from .errors import KdError
from .folds import fold_count
from .labels import labels_state, learned_other_labels, stale_teacher_runs
from .metrics import confusion_matrix
from .outputs import labels_as_of, labels_time
from .resume import saved_point
from .runs import PARKED
from .names import SPLITS, model_source
from .schema import LabelEdit, LabelIssue, Prediction, Sample, Stage, iso_utc
from .store import MODEL_MEASURES, Store


def stage_summary(stage: Stage) -> dict[str, Any]:
    from .runs import found_gone, process_state

    duration = None
    if stage.ended_at is not None and not found_gone(stage):  # (one found gone: when it stopped is unknown)
        duration = round((stage.ended_at - stage.started_at).total_seconds(), 3)

    return {
        "name": stage.name,
        "kind": stage.kind,
        "status": stage.status,
        "process_gone": stage.status == "running" and process_state(stage) is False,
        "error": stage.error,
        "started_at": iso_utc(stage.started_at),
        "ended_at": iso_utc(stage.ended_at),
        "duration_s": duration,
        "host": stage.host,
        "run_by": stage.run_by,
        "artifact_path": stage.artifact_path,
        "artifact_sha256": stage.artifact_sha256,
        # (a model folder deleted or moved by hand, or on another machine's disk: a store on a server)
        "artifact_found": None if stage.artifact_path is None else os.path.isdir(stage.artifact_path),
    }


def runs_overview(store: Store) -> list[dict[str, Any]]:
    """Every run with its stages' summaries; a failed teacher or pre-training whose training state is saved
    has ``resumable``, where ``kd teach|pretrain --resume`` would go on from, and ``resume``, the command
    (:func:`resume_command`; both null for every other stage)."""
    out = []
    for run, stages in store.runs():
        summaries = [{**stage_summary(s), "resumable": None, "resume": None} for s in stages]
        for kind in ("pretrain", "teach"):
            failed = [(s.id, summary) for s, summary in zip(stages, summaries) if s.kind == kind and (summary["status"] == "failed" or summary["process_gone"])]
            if failed:  # (the latest failed one's: a new attempt discards an older one's state)
                latest = max(failed, key=lambda pair: pair[0])[1]
                latest["resumable"] = saved_point(store, run.uniqid, kind)
                if latest["resumable"]:  # (and the command that does it, for a script to run)
                    latest["resume"] = resume_command(run.uniqid, kind, [(s.kind, s.status) for s in stages])
        out.append({"run": run.uniqid, "created_at": iso_utc(run.created_at), "stages": summaries})
    return out


def resume_command(run: str, kind: str, stages: list[tuple[str, str]]) -> str:
    """The command that continues the saved state of ``run``'s stage of ``kind`` (teach, pretrain), given the run's
    stages' ``(kind, status)``: with ``--overwrite`` where a stage of that kind succeeded (standing, or parked
    while a replacement killed before any command marked it failed still holds its name)."""
    replaces = any(k == kind and status == "succeeded" for k, status in stages)
    return f"kd {kind} --run {run} --resume" + " --overwrite" * replaces


def run_report(store: Store, run: str, *, notes: bool = True) -> dict[str, Any]:
    """Every stage of ``run`` with its config, final metrics ``{split: {name: value}}`` and history.
    Read again where its stages changed while it read (`kd runs delete`, or a stage ending, in another
    process): a stage read before a deletion and its figures after showed it succeeded with none.
    ``notes=False`` leaves out each stage's ``notes`` (:func:`compare`, which says its own: they read the
    store's labels, every changed sample, once a run)."""
    for _ in range(REPORT_READ_TRIES):
        report, stages = _run_report(store, run)
        if [(s.id, s.name, s.status) for s in store.stages_of(run)] == [(s.id, s.name, s.status) for s in stages]:
            if notes:
                _add_notes(store, report["stages"])
            return report
    raise KdError(f"the stages of run {run!r} changed each time they were read (stages ending or deleted meanwhile): run this again")


REPORT_READ_TRIES = 5


def _add_notes(store: Store, stages: list[dict[str, Any]]) -> None:
    """Each stage's ``notes``, the warnings ``kd report --run`` prints beside its figures, for a script to read
    too (``--json`` had none of them): ``classes``, a model trained before the store added a class
    (:func:`other_classes`); ``size``, a student larger than its teacher (:func:`larger_than_teacher`);
    ``labels_changed``, a teacher that learned from labels edited since (``learned_other_labels``). Null
    (false for ``labels_changed``) where a stage has no such note."""
    now: dict[str, Any] | None = None
    for st in stages:
        done = st["status"] == "succeeded"
        stale = False
        if done and st["kind"] == "teach":
            now = labels_state(store) if now is None else now  # (read once, where a teacher asks)
            stale = learned_other_labels(st["config"] or {}, now)
        st["notes"] = {"classes": other_classes(store, st) if done and st["kind"] in ("teach", "distill", "predict") else None,
                       "size": larger_than_teacher(store, st) if done else None, "labels_changed": stale}


def _run_report(store: Store, run: str) -> tuple[dict[str, Any], list]:
    stages = store.stages_of(run)
    if not stages and not store.run_exists(run):
        raise store.no_run(run)
    edits = label_edit_counts(store, [s.id for s in stages])
    for stage in stages:  # a review's rejects (no edit of their own) undone by its undo or an `import --overwrite`
        undone_rejects = ((stage.config or {}).get("undone_rejects") or {}) if stage.kind == "clean" else {}
        if stage.id in edits or undone_rejects:
            counts = edits.setdefault(stage.id, {"edits": 0, "undone": 0, "undone_at": None})
            counts["rejects_undone"] = len(undone_rejects)
            counts["undone_at"] = max([t for t in (counts["undone_at"], *undone_rejects.values()) if t], default=None)
    out = []
    for stage in stages:
        final: dict[str, dict[str, float]] = {}
        history = []
        summary = stage_summary(stage)
        for m in store.metrics(stage.id, final=False):
            value = metric_value(m.name, m.value)
            if m.step is None and summary["process_gone"] and (m.split in SPLITS or (m.split == "all" and m.name in MODEL_MEASURES)):
                continue  # (killed: the next stage marks it failed and clears them, `Store.clear_outputs`; a reader, not yet)
            if m.step is None:
                final.setdefault(m.split, {})[m.name] = value
            else:
                history.append({"step": m.step, "split": m.split, "name": m.name, "value": value})
        # every stage has the same keys, null where its kind (or status) has no such thing: a script reads them alike
        entry = {**summary, "config": shown_config(stage.config), "metrics": final, "history": history,
                 "confusion": None, "issue_scores": None, "label_edits": None,
                 "sources": stage_sources(store, run, stage.kind, stage.config or {})}
        if stage.kind in MODEL_KINDS and stage.status == "succeeded":
            entry["confusion"] = {split: confusion(store, stage, split).tolist() for split in ("dev", "test") if split in final}
        if stage.kind == "detect" and stage.status == "succeeded":
            entry["issue_scores"] = issue_scores(store, stage.id)
        if stage.id in edits:  # its figures say what it changed; whether `kd labels undo` reverted it since, this
            entry["label_edits"] = edits[stage.id]
        out.append(entry)
    return {"run": run, "classes": store.class_names(), "stages": out}, stages


def shown_config(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stage's config as the report gives it: ``labels_read_at`` (stored naive, in UTC, to the
    microsecond: ``labels.read_labeled``) as ISO 8601 that says UTC, as every other time it gives
    (``...+00:00``): read as it was stored, a script took it for local time."""
    read_at = (config or {}).get("labels_read_at")
    if not isinstance(read_at, str):
        return config
    try:
        when = dt.datetime.fromisoformat(read_at)
    except ValueError:
        return config
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return {**config, "labels_read_at": when.astimezone(dt.timezone.utc).isoformat()}


def label_edit_counts(store: Store, stage_ids: list[int]) -> dict[int, dict[str, Any]]:
    """``{stage id: {"edits": n, "undone": k, "undone_at": ISO time of the last undo or None}}`` for
    the stages among ``stage_ids`` that edited labels."""
    if not stage_ids:
        return {}
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(LabelEdit.stage_id, func.count(), func.count(LabelEdit.reverted_at), func.max(LabelEdit.reverted_at))
            .where(LabelEdit.stage_id.in_(stage_ids)).group_by(LabelEdit.stage_id)
        ).all()
    return {int(i): {"edits": int(n), "undone": int(k), "undone_at": iso_utc(at)} for i, n, k, at in rows}


# figures that count something (samples, epochs, parameters, edits): stored as floats like every
# figure, given back as ints so that a script reads ``"n": 500``, not ``500.0``
COUNT_METRICS = frozenset({
    "n", "support", "flagged", "train_samples", "dev_samples", "samples", "truncated", "best_epoch", "best_step", "steps_per_epoch",
    "diverged_epoch", "processes", "augmented_added", "parameters", "flops_per_sample", "steps", "texts",
    "vocab_size", "split_texts", "folds", "in_sample", "relabel", "drop", "flag", "reject", "unchanged", "skipped_edited", "skipped_rejected", "skipped_set",
    "chosen_changed", "pool_samples", "augmented_samples", "pool_without_logits", "teacher_layer",
    "branch_parameters", "num_layers", "max_len", "flops", "flagged_of", "speed_threads", "estimated_issues",
    "latency_texts", "throughput_texts", "throughput_of",
})


def metric_value(name: str, value: float) -> float | int:
    """``value`` as an int when ``name`` counts something (``fold2/truncated``, ``support[pos]``)."""
    base = name.split("[", 1)[0].rsplit("/", 1)[-1]  # (the bracket first: a class name may hold a "/")
    base = base.split("@", 1)[0]  # (an early-exit figure at a speed: `flops@0.3` counts as `flops_per_sample` does)
    if base in COUNT_METRICS and float(value).is_integer():
        return int(value)
    return value


MODEL_KINDS = ("teach", "distill", "predict")
COMPARE_FIGURES = (
    ("test", "accuracy"), ("test", "macro_f1"), ("dev", "accuracy"), ("dev", "macro_f1"), ("all", "parameters"), ("all", "flops_per_sample"), ("all", "size_mb"),
    ("all", "latency_p50_ms"), ("all", "latency_p99_ms"), ("all", "throughput_samples_per_s"),
)


def confusion(store: Store, stage: Stage, split: str) -> np.ndarray:
    """Confusion matrix (rows: label, columns: prediction) of a stage on a split.

    The labels are the ones the stage's metrics were computed with: each sample's label as it was
    when the stage read the labels, else when it started (the label edits made before then, and not undone by then, replayed over
    the ingested label), so later edits do not change it; samples dropped by then are left out.
    """
    names = store.class_names()
    pairs = [(y, pred) for _, y, pred in judged(store, stage, split)]
    if not pairs:
        return np.zeros((len(names), len(names)), dtype=np.int64)
    y, p = np.array(pairs).T
    return confusion_matrix(y, p, num_classes=len(names))


def judged(store: Store, stage: Stage, split: str) -> list[tuple[int, int, int]]:
    """``(sample id, label, prediction)`` of the samples a stage's figures of ``split`` counted, in id order, the
    labels as :func:`confusion` reads them."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(Sample.id, Prediction.label_id)
            .join(Prediction, Prediction.sample_id == Sample.id)
            .where(Prediction.stage_id == stage.id, Sample.split == split)
        ).all()
    label, dropped = labels_as_of(store, labels_time(stage), split)  # (what store_split_metrics counted with)
    kept = sorted((sid, label[sid], pred) for sid, pred in rows if sid in label and sid not in dropped)
    # the samples the stage's figures counted: a teacher's --logits-only later adds predictions of
    # samples ingested since, and ids grow with every ingest, so they are the last ones
    counted = next((int(m.value) for m in store.metrics(stage.id) if m.split == split and m.name == "n"), None)
    if counted is not None and len(kept) > counted:
        kept = kept[:counted]
    return kept


def teacher_sources(store: Store, teacher_stages: list[dict[str, Any]], kind: str = "teach") -> list[str]:
    """The teach stages a stage learned from (its config's ``teacher_stages``) as ``RUN/NAME``, or,
    for one gone since, its run, id and start with ``replaced since`` (by ``kd teach --overwrite``: the
    run's teacher now is not the one it learned from) or ``deleted since`` (``kd runs delete``: the run
    has no teacher now). ``kind="detect"``: the detection a clean decided the issues of (its
    ``detect_stages``), replaced by ``kd labels detect --overwrite``."""
    with store.session() as s:  # (a ``student_vote_stages`` entry names its stage: ``stage``)
        found = [stage and stage.name for stage in (_recorded_stage(s, t) for t in teacher_stages)]
    out = []
    for t, name in zip(teacher_stages, found):
        if name is not None:
            out.append(f"{t.get('run')}/{name}")
        else:
            named = t.get("stage") or kind
            how = "replaced" if _holds(store, t.get("run"), named) else "deleted"
            out.append(f"{t.get('run')}/{named} (stage {t.get('stage_id')} of {t.get('started_at')}, {how} since)")
    return out


def _recorded_stage(s, entry: dict[str, Any]) -> Stage | None:
    """The stage a ``teacher_stages`` entry names, while it is still that stage: ``None`` when it is gone, or
    its id was taken again (SQLite reuses the newest row's id) by another stage started since."""
    stage = s.get(Stage, int(entry["stage_id"])) if entry.get("stage_id") is not None else None
    return None if stage is None or entry.get("started_at") not in (None, iso_utc(stage.started_at)) else stage


def trained_classes(store: Store, kind: str, config: dict[str, Any] | None) -> list[str] | None:
    """The classes a model stage learned: its config's, or a student's recorded before distill stages recorded
    their own, its (first) teacher's, which kd distill refuses unless they are the store's; None where unknown
    (that teacher replaced or deleted since)."""
    config = config or {}
    teachers = config.get("teacher_stages") or []
    if config.get("classes") is not None or kind != "distill" or not teachers:
        return config.get("classes")
    with store.session() as s:
        teacher = _recorded_stage(s, teachers[0])
        return None if teacher is None else (teacher.config or {}).get("classes")


def _holds(store: Store, run: str | None, name: str) -> bool:
    """Whether ``run`` holds a succeeded stage ``name`` (or of that kind) now: what replaced one gone since;
    none (``kd runs delete``, the run deleted) and it was deleted, not replaced."""
    return _held(store, run, name) is not None


def _held(store: Store, run: str | None, name: str) -> Stage | None:
    """``run``'s succeeded stage ``name`` (or of that kind) now, or the one waiting as ``NAME~parked-ID`` while
    an ``--overwrite`` replaces it (running, or killed with -9): still the run's; ``None`` where there is none."""
    try:
        return store.find_stage(run, name)
    except KdError:
        parked = [s for s in store.stages_of(run) if s.status == "succeeded" and s.name.startswith(f"{name}{PARKED}")]
        return parked[-1] if parked else None


def predicted_with(store: Store, run: str, config: dict[str, Any]) -> str | None:
    """A predict stage's model (its config's ``model_stage``) with ``replaced since`` when the run's stage
    of that name now holds another model than the one it predicted with (``kd teach --overwrite``,
    ``kd distill --overwrite``: its sha256 differs), ``deleted since`` when the run holds none (``kd runs
    delete``); ``None`` while it is still the same one (or the stage recorded no sha256)."""
    name, digest = config.get("model_stage"), config.get("model_sha256")
    if not name or not digest:
        return None
    how = _model_gone(store, run, name, digest)
    if how == "deleted":  # (nothing replaced it: "the model it replaced" named a replacement there is not)
        return f"{name} (deleted since: these figures are of a model no longer in the store, sha256 {digest[:12]})"
    return how and f"{name} (replaced since: these figures are of the model it replaced, sha256 {digest[:12]})"


def _model_gone(store: Store, run: str, name: str, digest: str) -> str | None:
    """``None`` while ``run``'s stage ``name`` (or of that kind) holds the model of sha256 ``digest``;
    ``"replaced"`` when it holds another (``--overwrite``), ``"deleted"`` when there is none (`kd runs delete`)."""
    now = _held(store, run, name)
    if now is None:  # (deleted since, or failed now)
        return "deleted"
    return None if now.artifact_sha256 == digest else "replaced"


def checkpoint_source(store: Store, config: dict[str, Any]) -> str | None:
    """A teacher's starting checkpoint when it was a kd stage's model (``--model pretrain:RUN`` or
    ``teach:RUN``) that is not there now: ``replaced since`` (``--overwrite``: the run's model now is
    another one than the teacher started from, its sha256 differs) or ``deleted since`` (``kd runs
    delete``); ``None`` while it is the same one, or for a hub name or folder of the user's own."""
    model, digest, source = str(config.get("model") or ""), config.get("model_sha256"), model_source(config)
    if source is None or not digest:
        return None
    how = _model_gone(store, source[1], source[0], digest)
    if how == "deleted":
        return f"{model} (deleted since: it started from a model no longer in the store, sha256 {digest[:12]})"
    return how and f"{model} (replaced since: it started from the model that one replaced, sha256 {digest[:12]})"


def label_sources(store: Store, config: dict[str, Any]) -> list[str]:
    """The clean stages whose edits a stage learned from (its config's ``labels_stages``) as
    ``RUN/NAME``, with ``replaced since`` for one whose name another stage holds now (`kd labels
    undo`, then `kd labels clean --overwrite`): the name alone would point at the new edits; and
    ``undone since`` for one whose edits `kd labels undo` reverted after the stage read them."""
    names, ids = config.get("labels_stages") or [], config.get("labels_stage_ids")
    if ids is None or len(ids) != len(names):  # (stages recorded before the ids were)
        return list(names)
    out = []
    with store.session() as s:
        undone = set(s.scalars(select(LabelEdit.stage_id).where(LabelEdit.stage_id.in_([int(i) for i in ids]),
                                                                LabelEdit.reverted_at.is_not(None)).distinct()))
        for name, stage_id in zip(names, ids):
            stage = s.get(Stage, int(stage_id))
            if stage is None or not name.endswith(f"/{stage.name}"):
                out.append(f"{name} (stage {stage_id}, replaced since)")
            else:
                out.append(f"{name} (undone since)" if int(stage_id) in undone else name)
    return out


def stage_sources(store: Store, run: str, kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """What a stage learned from or served, as the text report names it: ``teachers`` (``RUN/NAME``, or
    ``replaced since`` / ``deleted since`` for a teacher gone since), ``model`` (a predict stage's, ``None`` while the run
    still holds that model), ``checkpoint`` (a teacher's starting kd model, only where gone since),
    ``detection`` (a clean's), ``student_votes`` (a detection's ``--student-votes`` stages) and ``labels_from``
    (the clean stages whose edits it trained on, ``replaced since`` / ``undone since`` where so); ``None``
    where the stage has no such thing. The config alone names what a run's stage of that name is now, not
    what this stage used."""
    return {
        "teachers": teacher_sources(store, config["teacher_stages"]) if config.get("teacher_stages") else None,
        "model": predicted_with(store, run, config) if kind == "predict" else None,
        "checkpoint": checkpoint_source(store, config) if kind == "teach" else None,
        "detection": teacher_sources(store, config["detect_stages"], kind="detect") if config.get("detect_stages") else None,
        "student_votes": teacher_sources(store, config["student_vote_stages"], kind="distill")
        if config.get("student_vote_stages") else None,
        "labels_from": label_sources(store, config) or None,
    }


def issue_scores(store: Store, stage_id: int) -> list[float]:
    with store.engine.connect() as conn:
        return [float(v) for (v,) in conn.execute(select(LabelIssue.score).where(LabelIssue.stage_id == stage_id).order_by(LabelIssue.id))]


def trained_on_dev(stage: dict[str, Any], store: Store | None = None) -> str | None:
    """A note for a teacher that trained on dev (``kd teach --split train --split dev``): its dev
    figures are of rows it learned from, not held out as a student's are; ``None`` for any other stage,
    for one whose ``--where`` selected no dev row: dev judged its epochs (``dev_samples``), and for a
    ``--folds`` teacher: each dev row's logits come from the fold model that did not learn from it.
    With ``store``, an early-exit stage on such a teacher (still in the store) too: its layers and head are
    the teacher's (a ``--folds`` teacher's first fold model, which learned most dev rows)."""
    config = stage.get("config") or {}
    splits = config.get("splits") or []
    metrics = stage.get("metrics") or {}
    folds = fold_count(config)
    if stage["kind"] == "teach" and "dev" in splits and not folds and metrics.get("dev") and not (metrics.get("all") or {}).get("dev_samples"):
        return "trained on dev: its dev figures are not held out (its test figures are)"
    teachers = config.get("teacher_stages") or []
    if store is not None and stage["kind"] == "distill" and config.get("student") == "early-exit" and teachers and metrics.get("dev"):
        with store.session() as s:
            teacher = _recorded_stage(s, teachers[0])
            teacher_id, teacher_splits = (None, []) if teacher is None else (teacher.id, (teacher.config or {}).get("splits") or [])
        if teacher_id is not None and learned_dev(store, teacher_id, teacher_splits):
            return "its teacher trained on dev: its dev figures are not held out (its test figures are)"
    return None


def learned_dev(store: Store, teacher_id: int, splits: list[str]) -> bool:
    """Whether the teach stage ``teacher_id`` (trained on ``splits``) learned the dev rows: ``--split dev``
    with no dev row left to judge its epochs (``dev_samples``)."""
    return "dev" in splits and not any(m.split == "all" and m.name == "dev_samples" and m.value for m in store.metrics(teacher_id))


def other_classes(store: Store, stage: dict[str, Any]) -> str | None:
    """A note for a model stage trained before the store added a class (as ``kd report --run`` says it): its
    figures are over fewer classes than a model trained since; ``None`` otherwise, or where unknown."""
    return classes_added(trained_classes(store, stage["kind"], stage["config"]), store.class_names())


def classes_added(trained: list[str] | None, names: list[str]) -> str | None:
    """``"trained on pos, neg; the store has since added mid"`` where the store's classes ``names`` hold some
    that a model's ``trained`` do not (``None``: unknown); ``None`` otherwise."""
    added = [c for c in names if trained is not None and c not in trained]
    return f"trained on {', '.join(trained)}; the store has since added {', '.join(added)}" if added else None


def gone_teachers(stage: dict[str, Any]) -> str | None:
    """A note for a student whose teacher was replaced (``kd teach --overwrite``) or deleted since: the run's
    teacher beside it in ``kd report --compare`` is not the one it learned from (or there is none)."""
    gone = [t for t in stage["sources"]["teachers"] or [] if t.endswith(("replaced since)", "deleted since)"))]
    return f"learned from {', '.join(gone)}" if gone else None


def stale_teachers(stage: dict[str, Any]) -> str | None:
    """A note for a student whose teacher learned from other labels than it did (distilled after a clean, the
    teacher not retrained): its ``labels_digest`` is of its hard labels, while its soft targets follow the
    teacher's (``kd distill`` warned so as it ran)."""
    config = stage.get("config") or {}
    stale = stale_teacher_runs(config) if config.get("labels_digest") else []
    if not stale:
        return None
    digests = {t["run"]: t["labels_digest"] for t in config["teacher_stages"] if t["run"] in stale}
    return (f"its teacher{'s' if len(stale) > 1 else ''} {', '.join(r + '/teach' for r in stale)} learned from other labels "
            f"(labels_digest {', '.join(digests[r] for r in stale)})")


def larger_than_teacher(store: Store, stage: dict[str, Any]) -> str | None:
    """A note for a student with more parameters, or more FLOPs a text, than the (first) teacher it learned from,
    still in the store (a TextCNN's 128-wide table over a tiny teacher's vocabulary): a student is meant to be
    smaller and faster than the model it replaces; ``None`` otherwise, for an early-exit stage (the teacher
    itself) and where either figure is unknown."""
    config = stage.get("config") or {}
    teachers = config.get("teacher_stages") or []
    if stage["kind"] != "distill" or config.get("student") == "early-exit" or not teachers:
        return None
    with store.session() as s:
        teacher = _recorded_stage(s, teachers[0])
        teacher_id, name = (None, None) if teacher is None else (teacher.id, teacher.name)
    if teacher_id is None:
        return None
    theirs = {m.name: m.value for m in store.metrics(teacher_id) if m.split == "all"}
    mine = (stage.get("metrics") or {}).get("all") or {}
    over = [f"{mine[key]:,.0f} {what} against {theirs[key]:,.0f}" for key, what in (("parameters", "parameters"), ("flops_per_sample", "FLOPs a text"))
            if mine.get(key) and theirs.get(key) and mine[key] > theirs[key]]
    return f"larger than its teacher {teachers[0].get('run')}/{name}: {', '.join(over)}" if over else None


def chosen_rows(stage: dict) -> str | None:
    """``learned from the rows --where ... selects`` for a model that learned from some rows only (a teacher's
    ``--where`` or ``--label``, a student's ``--where``): beside others, its figures are of another training set."""
    config = stage.get("config") or {}
    chosen = [f"--where {config['where']!r}" if config.get("where") else "",
              f"--label {' --label '.join(map(shlex.quote, config['labels']))}" if config.get("labels") else ""]
    chosen = [c for c in chosen if c]
    return f"learned from the rows {' and '.join(chosen)} {'selects' if len(chosen) == 1 else 'select'}" if chosen else None


def parked_base(stage: dict) -> str | None:
    """``NAME`` of a stage parked as ``NAME~parked-ID`` by an ``--overwrite`` (no name a user gives holds a
    ``~``); None for any other."""
    from .runs import PARKED

    base, _, tail = stage["name"].rpartition(PARKED)
    return base if base and tail.isdigit() else None


def serving_parked(stages: list[dict]) -> set[str]:
    """The names of the parked stages among a run's ``stages`` that are the models served: succeeded, and
    no stage of the name their ``--overwrite`` is replacing has succeeded (it runs, or was killed)."""
    return {st["name"] for st in stages if parked_base(st) is not None and st["status"] == "succeeded"
            and not any(o["name"] == parked_base(st) and o["status"] == "succeeded" for o in stages)}


def parked_note(stage: dict) -> str:
    """What a parked model is, as ``kd predict`` says it of the name being replaced."""
    return (f"the one an --overwrite is replacing: it gets its name back if the replacement fails; "
            f"until then, `--model {stage['name']}` (kd predict, kd export) serves it")


# the figures `kd report --compare` names a leader of: (column, better is higher)
LEADING_FIGURES = (("test_macro_f1", True), ("test_accuracy", True), ("latency_p50_ms", False),
                   ("throughput_samples_per_s", True), ("parameters", False))


def leaders(rows: list[dict[str, Any]], test_sets: list[Any] | None = None) -> dict[str, list[int]]:
    """For each figure of ``LEADING_FIGURES``, the indices of the ``rows`` (as :func:`compare` gives them) that
    lead it, ties included. A figure is judged only where at least two rows hold it and they were measured
    alike: test figures on the same number of test samples (``test_n``) and, where ``test_sets`` gives each
    row's test samples and labels, on the same ones (a `kd labels set` corrected some between them), speed with
    the same torch threads (``speed_threads``); otherwise it has no leader (an empty list), not a winner of an
    unequal race."""
    out = {}
    for figure, higher in LEADING_FIGURES:
        held = [(i, r) for i, r in enumerate(rows) if r.get(figure) is not None]
        basis = "test_n" if figure.startswith("test_") else "speed_threads" if figure != "parameters" else None
        alike = {(r.get(basis), test_sets[i] if test_sets and basis == "test_n" else None) for i, r in held} if basis else set()
        if len(held) < 2 or len(alike) > 1:
            out[figure] = []
            continue
        best = (max if higher else min)(r[figure] for _, r in held)
        out[figure] = [i for i, r in held if r[figure] == best]
    return out


def compare(store: Store, runs: list[str]) -> list[dict[str, Any]]:
    """One row per model stage (teach, distill) of each run (a run named twice, once), with the
    model (``model``: a student's kind, a teacher's ``--model``), the figures that compare them, the test samples they were measured on (``test_n``) and the labels
    as they stood (``labels_digest``, of every label, test included: equal digests, equal labels; ``labels_fit_digest``,
    of the train and dev labels alone, which the model learned from), the test samples and labels its test figures
    are of (``test_digest``: two rows of other digests are not ranked against each other), the torch threads their speed was
    timed with (``speed_threads``); a teacher that trained on dev
    says so in its ``note`` (its ``dev_accuracy`` is of rows it learned from), and so does a model trained
    before the store added a class (``other_classes``), a student whose teacher was replaced or deleted
    since (``gone_teachers``), one whose teacher learned from other labels (``stale_teachers``), one that learned from the rows a --where or --label chose (``chosen_rows``), and one larger than its teacher
    (``larger_than_teacher``). A model stage that failed or is
    running gets a row with the same keys, its figures None and a ``note`` (status and error), and a run with no model
    stage one row that says so (``stage`` None), not silence. ``status`` is the stage's (``succeeded``, ``failed``,
    ``running``), for a script to pick the rows that hold figures without reading the note; ``leads`` names the
    figures in which the row is the best of those compared (see :func:`leaders`)."""
    def row(run: str, stage: dict | None, figures: dict, note: str | None) -> dict[str, Any]:
        """Every row with the same keys, whatever it says (a script reads them alike)."""
        config = (stage or {}).get("config") or {}
        return {"run": run, "stage": stage and stage["name"], "kind": stage and stage["kind"],
                # what the model is: a stage named with --name said only "distill"
                "model": config.get("student") if (stage or {}).get("kind") == "distill" else config.get("model"),
                "status": stage and stage["status"],
                **{f"{split}_{name}" if split != "all" else name: figures.get(split, {}).get(name) for split, name in COMPARE_FIGURES},
                "test_n": figures.get("test", {}).get("n"),
                "speed_threads": figures.get("all", {}).get("speed_threads"),  # (the latency and throughput's: two counts, two bases)
                # (every label, test included; the fit one of the train and dev labels alone, which a model learns from:
                # a test label fixed between two runs made their digests differ, read as "trained on other labels")
                "labels_digest": config.get("labels_digest"), "labels_fit_digest": config.get("labels_fit_digest"),
                "test_digest": None, "note": note}

    rows, test_sets = [], []
    for run in dict.fromkeys(runs):
        every = [st for st in run_report(store, run, notes=False)["stages"] if st["kind"] in ("teach", "distill")]
        recorded = {s.name: s for s in store.stages_of(run)}
        # (a replaced or failed attempt is history, not a model; a parked one is the model served while its
        # --overwrite runs, or was killed, and no stage of its name has succeeded)
        serving = serving_parked(every)
        stages = [st for st in every if "~" not in st["name"] or st["name"] in serving]
        # the teacher first, then its students as they were made (one retrained by --overwrite was listed among them)
        models = sorted((st for st in stages if st["status"] == "succeeded"), key=lambda st: st["kind"] != "teach")
        rows.extend(row(run, stage, stage["metrics"], "; ".join(filter(None, (trained_on_dev(stage, store), other_classes(store, stage),
                                                                              gone_teachers(stage), stale_teachers(stage), chosen_rows(stage),
                                                                              larger_than_teacher(store, stage),
                                                                              parked_note(stage) if stage["name"] in serving else None)))
                        or None) for stage in models)
        # the test samples and labels each model's test figures are of (one test_n, other labels: not one benchmark)
        test_sets.extend(tuple((sid, y) for sid, y, _ in judged(store, recorded[stage["name"]], "test")) if stage["name"] in recorded else None
                         for stage in models)
        unfinished = [st for st in stages if st["status"] != "succeeded"]
        for stage in unfinished:  # no figures, a note (status and error)
            error = " ".join((stage["error"] or "").split())
            status = stage["status"] + (" (process gone)" if stage["process_gone"] else "")  # as `kd runs` says it
            rows.append(row(run, stage, {}, status + (f": {error[:100]}{'...' if len(error) > 100 else ''}" if error else "")))
        if not models and not unfinished:
            rows.append(row(run, None, {}, "no succeeded model"))
        test_sets.extend([None] * (len(rows) - len(test_sets)))  # (the rows with no figures)
    led = leaders(rows, test_sets)
    for i, r in enumerate(rows):
        r["leads"] = [figure for figure, at in led.items() if i in at]
        # (the test samples and labels its test figures are of: a script tells "not ranked, other test sets" by it,
        # which `leads` empty alone did not say)
        r["test_digest"] = _test_digest(test_sets[i]) if test_sets[i] else None
    return rows


def _test_digest(test_set: tuple) -> str:
    """16 hex digits of sha256 over a model's judged test ``(sample id, label id)`` pairs."""
    import hashlib

    return hashlib.sha256(";".join(f"{sid}:{y}" for sid, y in sorted(test_set)).encode()).hexdigest()[:16]
