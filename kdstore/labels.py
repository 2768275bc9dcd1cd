"""Wrong labels in the store: detect them from out-of-fold teacher probabilities, review, clean, undo.

The scoring itself is the pure ``noise`` module; this module reads its inputs from the store and
writes its results back. Every label change is a ``label_edits`` row (old and new label and dropped
flag, reason, stage, time) made in one transaction with the change itself, and ``undo`` restores
exactly the state before one stage's edits. The original label of every sample
(``samples.orig_label_id``) is never touched.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import os
import re
import shlex
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Sequence

import numpy as np
from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.orm import aliased

from . import noise, tfidf
from .advice import reteach_command
from .errors import KdError, make_folder, write_whole
from .ingest import allow_long_csv_fields, label_key, lookalike_of
from .jsonl import RepeatedKey, dumps_line, has_surrogate, split_lines, unique_keys
from .probs import softmax
from .progress import progress
from .names import resolve_run_id
from .runs import FAILED, PARKED, StageHandle, _live_edits, _replaced, process_state
from .schema import LabelEdit, LabelIssue, Run, Sample, Stage, iso_utc, utcnow
from .store import ID_CHUNK, MAX_ID, Store, bulk_insert, chunks, class_id_hint
from .textfile import looks_big5, not_text
from .textkey import text_hash

ACTIONS = ("relabel", "drop", "flag")
UNDECIDED = ("open", "flagged")  # issues a clean or a review sheet may still decide (flagging leaves them for a person)
# "current": the sample's label now ("(dropped)" after it when dropped), for the reviewer; import reads only the ids and the decision
SHEET_COLUMNS = ("run", "issue_id", "sample_id", "text", "given", "current", "suggested", "score", "methods", "decision")
SHEET_JSONL = (".jsonl", ".ndjson", ".json")  # a sheet written and read as JSON lines (as kd ingest reads these names)


_OPTIONS = {"frac_noise": "--frac-noise", "filter_by": "--filter-by", "combine rule": "--combine",
            "detection method": "--method", "quality method": "--quality-method", "combine": "--combine"}
_OPTION_WORDS = re.compile(r"\b(?:" + "|".join(sorted(map(re.escape, _OPTIONS), key=len, reverse=True)) + r")\b")


@dataclass(frozen=True)
class DetectConfig:
    teacher_run: str | None = None  # default: the detect stage's own run
    methods: tuple[str, ...] = noise.DEFAULT_METHODS
    combine: str = noise.DEFAULT_COMBINE
    filter_by: str = "prune_by_noise_rate"
    frac_noise: float = 1.0
    quality_method: str = "self_confidence"
    student_votes: tuple[str, ...] = field(default_factory=tuple)  # distill stage names of the run
    tfidf_member: bool = False  # add out-of-fold TF-IDF + LR probabilities to the ensemble
    allow_in_sample: bool = False
    calibrate: bool = True  # temperature-scale each member to the given labels first (noise.detect)

    def validate(self) -> None:
        try:
            methods = noise.check_options(methods=self.methods, combine=self.combine, filter_by=self.filter_by,
                                          quality_method=self.quality_method, frac_noise=self.frac_noise)
        except KdError as exc:  # the pure core's keyword names, as `kd labels detect` spells its options
            raise KdError(_OPTION_WORDS.sub(lambda m: _OPTIONS[m.group(0)], str(exc))) from None
        if "ensemble" in methods and not (self.student_votes or self.tfidf_member):
            raise KdError("the ensemble method needs other models' votes: add --student-votes STAGE or --tfidf-member")


@dataclass(frozen=True)
class DetectInputs:
    """What ``detect`` scores, read and checked before its stage opens (a refusal changes nothing)."""

    teacher_run: str
    train: Any  # the labeled train samples (``Store.samples``)
    probs: np.ndarray  # the teacher's (out-of-fold) probabilities, in the samples' order
    votes: list[np.ndarray]  # the students' probabilities for --student-votes
    in_sample: int  # train samples the teacher saw (accepted only with allow_in_sample)
    used: dict[str, Any] = field(default_factory=dict)  # which teach and distill stages it read (``stages_used``), for the config
    in_sample_votes: list = field(default_factory=list)  # per --student-votes student, ``_in_sample_votes``: why it is in-sample (or None)
    folds: dict = field(default_factory=dict)  # sample id -> the fold that held it out, of a --folds teacher


def labels_version(store: Store) -> str:
    """Which clean stage the current labels come from (``run/stage``), or ``original``."""
    with store.session() as s:
        row = s.execute(
            select(Stage.name, Stage.run_id)
            .join(LabelEdit, LabelEdit.stage_id == Stage.id)
            .where(LabelEdit.reverted_at.is_(None), LabelEdit.action != "flag")
            .order_by(LabelEdit.id.desc())
            .limit(1)
        ).first()
        if row is None:
            return "original"
        run = s.get(Run, row.run_id)
        return f"{run.uniqid}/{row.name}"


def labels_state(store: Store) -> dict[str, Any]:
    """What a training stage records about the labels it learned from: ``labels_from`` (the latest
    clean stage in force, ``labels_version``), ``labels_stages`` (every clean stage with edits in
    force, oldest first) and ``labels_digest``, a hash of every labeled sample's label and dropped flag where
    they differ from the original: two stages with the same digest learned from the same labels. A pool or
    augmented text has no label: its drop is left out (a teacher was warned as trained on changed labels)."""
    digest, fit = hashlib.sha256(), hashlib.sha256()
    with store.session() as s:
        stages = s.execute(
            select(Run.uniqid, Stage.name, Stage.id).join(Stage, Stage.run_id == Run.id)
            .where(Stage.id.in_(select(LabelEdit.stage_id).where(LabelEdit.reverted_at.is_(None), LabelEdit.action != "flag")))
            .order_by(Stage.id)
        ).all()
        changed = s.execute(
            select(Sample.id, Sample.label_id, Sample.dropped, Sample.split)
            .where(Sample.orig_label_id.is_not(None) & ((Sample.label_id.is_distinct_from(Sample.orig_label_id)) | Sample.dropped))
            .order_by(Sample.id)
        )
        for sid, label, dropped, split in changed:
            digest.update(f"{sid}:{label}:{int(bool(dropped))};".encode())
            if split != "test":
                fit.update(f"{sid}:{label}:{int(bool(dropped))};".encode())
    # (the ids too: a clean stage replaced since, `kd labels clean --overwrite` after an undo, gives its name to another)
    return {"labels_from": labels_version(store), "labels_stages": [f"{r}/{n}" for r, n, _ in stages],
            "labels_stage_ids": [i for _, _, i in stages], "labels_digest": digest.hexdigest()[:16],
            "labels_fit_digest": fit.hexdigest()[:16]}


def learned_other_labels(recorded: dict[str, Any], now: dict[str, Any]) -> bool:
    """Whether a model that recorded ``recorded`` (``labels_state``'s keys, in its config) learned from other
    labels than ``now``: by ``labels_fit_digest``, of the train and dev labels, where both have it (a test
    label's edit changes no model, and "retrain it" had a teacher retrained to the same weights), else by
    ``labels_digest`` (a stage recorded before there was one); False where either is unknown."""
    for key in ("labels_fit_digest", "labels_digest"):
        if recorded.get(key) is not None and now.get(key) is not None:
            return recorded[key] != now[key]
    return False


def digests(config: dict[str, Any]) -> dict[str, Any]:
    """The labels digests of a stage's config, which the stages that read its outputs record with it."""
    return {k: config.get(k) for k in ("labels_digest", "labels_fit_digest") if k == "labels_digest" or config.get(k) is not None}


def stale_teacher_runs(config: dict[str, Any]) -> list[str]:
    """The runs of a stage config's ``teacher_stages`` whose teacher learned from other labels than the
    stage read (``learned_other_labels``: a clean, set, import or undo since), each once, in order."""
    return list(dict.fromkeys(t["run"] for t in config.get("teacher_stages") or [] if learned_other_labels(t, config)))


def read_labeled(store: Store, read: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    """``(read(), state)``: what ``read`` returns and the ``labels_state`` of the labels it read, with
    when it read them (``labels_read_at``, naive UTC ISO) and the newest sample id then (``newest_sample_read``:
    an ingest's samples have higher ids, so a sample above it came later and was not read). A label edit committed while it read (a clean or ``kd labels set`` in another process) makes it
    read again, so that a stage records the labels it learned from, not those of its start."""
    for _ in range(LABEL_READ_TRIES):
        # under the writer lock that label edits take: none is half-way, so every edit dated before
        # ``at`` (dated under that lock, see ``apply`` and ``undo``) is in ``before``, any later one not
        with store.write_transaction("label_edits"):
            at = utcnow()  # (the figures judge against the labels as of this moment: outputs.labels_time)
            before, took = labels_state(store), store.last_take_id()
        rows = read()
        newest = store.last_sample_id()  # (after the read: a sample ingested meanwhile counts as read, never the reverse)
        # (a `kd ingest --take-pool` meanwhile too: it changes no label state, yet a sample taken after ``at`` counts
        # as the pool text it was, unlearned, where this read may have learned its label)
        if labels_state(store) == before and store.last_take_id() == took:
            return rows, {**before, "labels_read_at": at.isoformat(), "newest_sample_read": newest}
    raise KdError("the labels changed each time they were read (label edits running meanwhile): run this again")


LABEL_READ_TRIES = 5


def record_labels_state(store: Store, stage_id: int, state: dict[str, Any]) -> None:
    """Put ``state`` (``read_labeled``'s) in the stage's config where the one taken as it started differs."""
    with store.write_session("stages") as s:
        stage = s.get(Stage, stage_id)
        if any((stage.config or {}).get(k) != v for k, v in state.items()):
            stage.config = {**(stage.config or {}), **state}


# detect --------------------------------------------------------------------------------------
def detect_inputs(store: Store, run: str, cfg: DetectConfig) -> DetectInputs:
    """Every check ``detect`` makes, and the probabilities it scores, without writing anything."""
    from .teacher import check_learned_every_class, learned_at_start, learned_classes, trained_on

    cfg.validate()
    names = store.class_names()
    teacher_run = cfg.teacher_run or run
    # (find_stage's own `kd teach --run R --model MODEL` makes a teacher without folds, which this refuses as in-sample)
    folds = f"`kd teach --run {shlex.quote(teacher_run)} --model MODEL --folds 5` makes the out-of-fold teacher a detection needs"
    try:
        teacher = store.find_stage(teacher_run, "teach", makes=folds)
    except KdError as exc:
        taught = [r.uniqid for r, stages in store.runs() if r.uniqid != run and any(
            st.kind == "teach" and st.status == "succeeded" and "~" not in st.name for st in stages)]
        message = str(exc)
        if cfg.teacher_run is None and not store.run_exists(teacher_run):
            message = f"{message}; {folds}"
        if cfg.teacher_run is not None or not taught:
            raise KdError(message) from None
        earlier = [st for st in store.stages_of(run) if st.kind == "detect" and st.status == "succeeded" and "~" not in st.name]
        read = ((earlier[-1].config or {}).get("teacher_stages") or [{}])[0].get("run") if earlier else None
        if read and read != run and read in taught:  # (`--overwrite` of a detection that read another run's teacher)
            raise KdError(f"{message}; its detection {earlier[-1].name!r} read the teacher of run {read!r}: "
                          f"`{redetect_command(run, earlier[-1], store)}` judges again as it did") from None
        # not another run's teacher taken silently: the one to use is named
        raise KdError(f"{message}; to detect with another run's teacher pass --teacher-run RUN "
                      f"(runs with a teacher: {', '.join(taught)})") from None
    if teacher.config.get("classes") not in (None, names):
        raise KdError(f"the classes changed since the teacher of run {teacher_run!r} ran: re-run {reteach_command(teacher_run, teacher.config)}")
    train = store.samples(splits=["train"], labeled=True)
    if len(set(train.labels.tolist())) < 2:
        raise KdError("the train labels have a single class: there is nothing to tell apart")
    check_learned_every_class(teacher, names, run=teacher_run, purpose="label-noise detection")
    learned = learned_classes(store, teacher)
    unlearned = [names[c] for c in np.unique(train.labels) if learned is not None and names[c] not in learned]
    if unlearned:  # (a class pinned by `kd ingest --classes` whose train samples came after the teacher ran)
        raise KdError(f"the teacher of run {teacher_run!r} learned no sample of class {', '.join(map(repr, unlearned))}, which the "
                      f"train labels now hold: its probabilities would flag every such label; re-run `kd teach` first"
                      + (f" (its --where {teacher.config['where']!r} selected no train sample of {'it' if len(unlearned) == 1 else 'them'})"
                         if teacher.config.get("where") else ""))
    if cfg.tfidf_member and tfidf_folds(train.labels) < 2:  # (each fold's model must see every class)
        counts = np.bincount(train.labels)
        small = min(np.unique(train.labels), key=lambda c: counts[c])
        raise KdError(f"--tfidf-member: class {names[small]!r} has 1 train sample: out-of-fold TF-IDF probabilities "
                      "need at least 2 of every class (leave --tfidf-member out)")
    # a sample without logits first (ingested after the teacher ran): scoring it is the fix, not --allow-in-sample
    probs = _probs(store, teacher.id, train.ids, missing=f"have no teacher logits: run `kd teach --run {teacher_run} --logits-only`",
                   source=f"the teacher of run {teacher_run!r} (a training that diverged?): re-run `kd teach --run {teacher_run} ... --overwrite`")
    folds = store.read_folds(teacher.id)
    # a --folds teacher gave every row it trained on a fold: a train sample without one came later (or
    # back from a drop) and was scored by K models none of which saw it. A teacher without folds
    # learned from what its query selects.
    seen = set() if folds else trained_on(store, teacher)
    # and every fold of one started from a teacher (`--model teach:RUN`, a fold model's folder) starts from the
    # labels that teacher learned: its "out-of-fold" logits echoed them
    started, source = learned_at_start(store, teacher)
    in_sample = [int(i) for i in train.ids if int(i) in seen or int(i) in started]
    if in_sample and not cfg.allow_in_sample and folds:
        raise KdError(
            f"{len(in_sample)} train samples have in-sample teacher probabilities: the teacher of run {teacher_run!r} started "
            f"from the teacher of run {source!r}, which learned their labels, so its folds are not blind to them. Run "
            f"`kd teach --run {shlex.quote(teacher_run)} --model MODEL --folds {teacher_folds(train.labels)} --overwrite` from a model that did not learn "
            "them (the base model, or pretrain:RUN), or pass --allow-in-sample"
        )
    if in_sample and not cfg.allow_in_sample:
        raise KdError(
            f"{len(in_sample)} train samples have in-sample teacher probabilities: confident learning needs "
            f"out-of-sample ones. Run {reteach_command(teacher_run, teacher.config, folds=teacher_folds(train.labels))}, or pass --allow-in-sample"
        )
    votes = [_student_votes(store, run, name, train.ids, allow_in_sample=cfg.allow_in_sample) for name in cfg.student_votes]
    named: dict[int, str] = {}  # one student given twice (STAGE and RUN:STAGE, or a repeated option) would vote twice
    for given, (_, (vote_run, stage), _) in zip(cfg.student_votes, votes):
        if stage.id in named:
            raise KdError(f"--student-votes {given!r}: distill stage {stage.name!r} of run {vote_run!r} is already a member "
                          f"(--student-votes {named[stage.id]!r}): give each student once")
        named[stage.id] = given
    return DetectInputs(teacher_run=teacher_run, train=train, probs=probs, votes=[v for v, _, _ in votes], in_sample=len(in_sample),
                        used=stages_used(teacher_run, teacher, [(r, st) for _, (r, st), _ in votes]),
                        in_sample_votes=[leak for _, _, leak in votes], folds=folds)


def stages_used(teacher_run: str, teacher: Stage, students: list[tuple[str, Stage]]) -> dict[str, Any]:
    """What a detect stage records of the stages it read (as distill records its teachers): the
    teach stage (``teacher_stages``: run, id, start, the labels it learned from) and the distill
    stages of ``--student-votes`` (``student_vote_stages``), so that one replaced later
    (``--overwrite``) is told from the one it read."""
    return {
        "teacher_stages": [{"run": teacher_run, "stage_id": teacher.id, "started_at": iso_utc(teacher.started_at),
                            **digests(teacher.config or {})}],
        "student_vote_stages": [{"run": r, "stage": st.name, "stage_id": st.id, "started_at": iso_utc(st.started_at),
                                 **digests(st.config or {})} for r, st in students],
    }


def detect(store: Store, stage: StageHandle, cfg: DetectConfig, inputs: DetectInputs | None = None) -> int:
    """Score the train labels against the teacher's probabilities; store one issue row per flag.
    ``inputs``: ``detect_inputs(store, stage.run, cfg)``, read before the stage opened."""
    if inputs is None:
        inputs = detect_inputs(store, stage.run, cfg)
    train, probs, votes = inputs.train, inputs.probs, list(inputs.votes)
    if cfg.tfidf_member:
        votes.append(tfidf.oof_probs(train.texts, train.labels, num_classes=len(store.class_names()), folds=tfidf_folds(train.labels)))
    # a class with no train sample (one seen in dev/test only, or whose samples were all dropped) has
    # no noise rate to estimate and no label to be confused with: the detection runs over the train
    # classes alone (each member's probabilities renormalized over them) and maps back to class ids
    present = np.unique(train.labels)
    judged = only_classes(probs, present)  # (what the detection judges: its agreement figure is of these)
    found = noise.detect(
        np.searchsorted(present, train.labels), judged, methods=cfg.methods, combine=cfg.combine,
        filter_by=cfg.filter_by, frac_noise=cfg.frac_noise, quality_method=cfg.quality_method,
        extra_votes=[only_classes(v, present) for v in votes] or None, calibrate=cfg.calibrate,
    )
    flagged = np.flatnonzero(found.flagged)
    rows = [
        (stage.id, int(train.ids[i]), int(train.labels[i]), int(present[found.suggested[i]]), float(found.score[i]), str(found.methods[i]), "open")
        for i in flagged[np.argsort(-found.score[flagged], kind="stable")]
    ]
    with store.writer() as conn:
        bulk_insert(conn, LabelIssue.__table__, ("stage_id", "sample_id", "given_label_id", "suggested_label_id", "score", "methods", "status"), rows)
    figures = {"flagged": len(rows), "train_samples": len(train), "in_sample": inputs.in_sample,
               # cleanlab's estimate of how many labels are wrong (the ranked cut's size before --frac-noise; --combine
               # union, intersection or majority flag by their own rule, and the flagged count is no estimate then)
               "estimated_issues": int(found.num_issues),
               # (over the train classes: a prediction of a class no train label holds is no disagreement the
               # detection can flag, and counted as one the warning took a teacher right on the rest for a weak one)
               "oof_accuracy": float(np.mean(present[judged.argmax(axis=1)] == train.labels)),
               "majority_rate": float(np.bincount(train.labels).max() / len(train))}
    figures.update({f"flagged[{m}]": int(mask.sum()) for m, mask in found.masks.items()})
    # each fold's own agreement (a fold whose model learned nothing floods its share of the labels with flags)
    figures.update(noise.fold_figures(present[judged.argmax(axis=1)] == train.labels, train.labels,
                                      [inputs.folds.get(int(i), -1) for i in train.ids]))
    names = store.class_names()  # each train class's labels and how many of them are flagged (a rare class's flags)
    figures.update({f"train_samples[{names[c]}]": int(np.sum(train.labels == c)) for c in present})
    figures.update({f"flagged_of[{names[c]}]": int(np.sum(train.labels[flagged] == c)) for c in present})
    if votes:  # each member's share of each class's labels it answers as that class: a warning names the members that miss one
        labels = np.searchsorted(present, train.labels)
        for j, member in enumerate([judged, *(only_classes(v, present) for v in votes)]):
            rates = noise.answer_rates(labels, member)
            figures.update({f"member{j}/answered[{names[c]}]": float(r) for c, r in zip(present, rates)})
    store.add_metrics(stage.id, "train", figures)
    return len(rows)


def single_sample_warnings(store: Store, cfg: DetectConfig, inputs: DetectInputs) -> list[str]:
    """A warning naming the train classes of a single sample, whose label confident learning leaves
    unjudged (``noise.single_sample_classes``): cleanlab said so itself in a raw ``UserWarning``
    that named a column of the detection (``class: 2``), not the class."""
    one = noise.single_sample_classes(inputs.train.labels, methods=cfg.methods, filter_by=cfg.filter_by)
    if not len(one):
        return []
    names = store.class_names()
    many = len(one) > 1  # ("class 'a', 'b' has a single train sample")
    them = 'them' if many else 'it'
    # (cleanlab alone: "only the other methods can flag it" named methods this detection did not run)
    alone = tuple(noise.METHOD_ALIASES.get(m, m) for m in cfg.methods) == ("cleanlab",)
    return [f"{'classes' if many else 'class'} {', '.join(repr(names[c]) for c in one)} {'have' if many else 'has'} a single train "
            f"sample{' each' if many else ''}: confident learning (cleanlab) needs two of a class to judge a label, "
            + (f"and --method cleanlab runs no other method: this detection cannot flag {them} (--method cleanlab,disagree can)"
               if alone else f"so only the other methods can flag {them}")]


def filter_by_warnings(cfg: DetectConfig) -> list[str]:
    """A warning where the --filter-by typed changes no flag: with --combine ranked or union beside the
    disagree method, whose flags hold every one of cleanlab's prune filters' (each drops a label the model
    agrees with), the flagged set is the same whichever of those filters; only the methods column says otherwise."""
    methods = tuple(noise.METHOD_ALIASES.get(m, m) for m in cfg.methods)
    if cfg.filter_by not in noise.DISAGREEING_FILTERS or cfg.filter_by == "prune_by_noise_rate" or cfg.combine not in ("ranked", "union") \
            or not {"cleanlab", "disagree"} <= set(methods):
        return []
    return [f"--filter-by {cfg.filter_by} changes no flag with --combine {cfg.combine} and the disagree method: every label "
            "cleanlab flags with it is a disagreement too (only the methods column changes); --combine intersection "
            "or majority, or --method cleanlab, applies it"]


def quality_method_warnings(cfg: DetectConfig, inputs: DetectInputs) -> list[str]:
    """A warning where --quality-method normalized_margin judges train labels of two classes: cleanlab's
    normalized margin, ``(p - (1 - p) + 1) / 2`` of a label's probability ``p``, is ``p`` itself, its
    self-confidence, so the detection scores and flags what the default does, to the digit."""
    if cfg.quality_method != "normalized_margin" or len(np.unique(inputs.train.labels)) != 2:
        return []
    return ["--quality-method normalized_margin scores labels of two classes as self_confidence (the default) does: "
            "a label's margin over the one other class, (p - (1 - p) + 1) / 2, is its probability p; the flags and scores "
            "are the same (confidence_weighted_entropy ranks them otherwise)"]


def in_sample_warnings(store: Store, run: str, cfg: DetectConfig, inputs: DetectInputs) -> list[str]:
    """A warning when ``--allow-in-sample`` let a teacher score train samples whose labels it learned
    (accepted without a word: its probabilities lean toward those labels, wrong ones included), and one
    for each ``--student-votes`` student it let in that learned them."""
    votes = [f"--allow-in-sample: {why}: its votes lean toward those labels, wrong ones included, so the ensemble flags fewer; "
             f"{command} distills {what} blind to them" for why, what, command in filter(None, inputs.in_sample_votes)]
    if not inputs.in_sample:
        return votes
    teacher_run = inputs.teacher_run
    share = (f"all {inputs.in_sample}" if inputs.in_sample == len(inputs.train.ids)
             else f"{inputs.in_sample} of {len(inputs.train.ids)}")
    return [f"--allow-in-sample: {share} train samples were scored by a teacher that learned their labels: its "
            "probabilities lean toward them, wrong ones included, so it flags fewer than an out-of-fold teacher would; "
            f"{reteach_command(teacher_run, store.find_stage(teacher_run, 'teach').config, folds=teacher_folds(inputs.train.labels))} gives one"] + votes


TFIDF_FOLDS = 5


def tfidf_folds(labels: np.ndarray) -> int:
    """How many folds the ``--tfidf-member`` models take: ``TFIDF_FOLDS``, fewer when a train class has
    fewer samples than that (stratified folds put each class in every fold)."""
    present = np.unique(labels)
    return min(TFIDF_FOLDS, int(np.bincount(labels)[present].min())) if len(present) else TFIDF_FOLDS


def teacher_folds(labels: np.ndarray) -> int:
    """The ``kd teach --folds`` a detection's advice names: 5, fewer when a train class has fewer samples
    (kd teach refuses more folds than its smallest class has samples; 2 at least, whose refusal explains one of 1)."""
    return max(2, tfidf_folds(labels))


def only_classes(probs: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """``(N, K)`` probabilities restricted to the columns ``classes`` and renormalized (a row with no
    mass on them becomes uniform); ``probs`` itself when ``classes`` are all its columns."""
    if len(classes) == probs.shape[1]:
        return probs
    kept = probs[:, classes]
    total = kept.sum(axis=1, keepdims=True)
    return np.divide(kept, total, out=np.full_like(kept, 1.0 / len(classes)), where=total > 0)


def detect_warnings(store: Store, run: str, *, changes: int | None = None, done: bool = False) -> list[str]:
    """Why the run's latest detection should not be trusted (``noise.reliability_warnings``), from
    the figures its detect stage stored; ``changes``: judge that many planned edits instead of the
    flagged count (``kd labels clean --min-score`` applies only some), ``done``: made, not planned."""
    stage = store.find_stage(run, "detect")
    m = {x.name: x.value for x in store.metrics(stage.id) if x.split == "train"}
    out = _replaced_teacher(store, run, stage) + _replaced_votes(store, run, stage)
    if not m.get("train_samples"):
        return out
    # (nor advised where detect refuses it: a train class of one sample, a rare news topic, has no out-of-fold TF-IDF opinion)
    single = min((v for k, v in m.items() if k.startswith("train_samples[") and v > 0), default=2) < 2
    overall = noise.reliability_warnings(
        flagged=int(m.get("flagged", 0) if changes is None else changes), samples=int(m["train_samples"]),
        accuracy=m.get("oof_accuracy"), majority=m.get("majority_rate"),  # absent in stores older than these figures
        tfidf_member=bool((stage.config or {}).get("tfidf_member")) or single, in_sample=bool(m.get("in_sample")), changes=changes is not None,
        done=done,
    )
    weak_folds = noise.fold_warnings_of(m)
    if overall and not weak_folds:  # (a teacher weak over all: each class's share would say it again)
        return out + overall
    # a rare class the teacher answers as another: its share of the flags is small, its own share of flagged labels not
    per_class = {k[len("train_samples["):-1]: int(v) for k, v in m.items() if k.startswith("train_samples[")}  # (not in older stores)
    read = ((stage.config or {}).get("teacher_stages") or [{}])[0]
    teacher = next((s for s in store.stages_of(read.get("run") or run) if s.id == read.get("stage_id")), None)
    balanced = teacher is not None and (teacher.config or {}).get("class_weight") == "balanced"
    if weak_folds:  # (its flags are of that fold's labels: a class's share of them says it again, less clearly)
        again = reteach_command(read.get("run") or run, (teacher.config or {}) if teacher is not None else {}, next_seed=True)
        # (beside a weak teacher's warnings: folds that learned nothing are the likely cause of them, and the seed its remedy)
        return out + overall + [f"{w}; review them rather than clean them, or re-run the teacher with another seed, {again}" for w in weak_folds]
    return out + noise.class_warnings({c: int(m.get(f"flagged_of[{c}]", 0)) for c in per_class}, per_class, balanced=balanced,
                                      members=_members(store, stage, m, balanced=balanced))


def _members(store: Store, stage: Stage, figures: dict[str, float], *,
             balanced: bool) -> list[tuple[str, dict[str, float], tuple[str, str]]] | None:
    """A detection's ensemble members as ``noise.class_warnings`` takes them: the teacher, each
    ``--student-votes`` student, the TF-IDF member, in the order its ``member{j}/answered[CLASS]`` figures
    number them, each with what would mend it (None for a teacher alone)."""
    config = stage.config or {}
    students = config.get("student_vote_stages") or []
    if not students and not config.get("tfidf_member"):
        return None
    who = [("the teacher", ("train a stronger teacher", "" if balanced else "`kd teach --class-weight balanced`"))]
    for read in students:
        run, name = str(read.get("run")), str(read.get("stage"))
        try:
            found = store.find_stage(run, name, succeeded=False)
        except KdError:
            found = None
        if found is None or found.id != read.get("stage_id"):  # (deleted or replaced since: not the options of the one that voted)
            who.append((f"student {name!r} of run {run!r}", ("distill stronger students", "")))
            continue
        student = found.config or {}
        again = (f"`kd distill --run {shlex.quote(run)} --student {student.get('student') or 'textcnn'} --folds {student.get('folds') or 5} "
                 f"--name {shlex.quote(name)} --class-weight balanced --overwrite` with the other options `kd report --run {shlex.quote(run)}` "
                 "lists for it")
        who.append((f"student {name!r} of run {run!r}", ("distill stronger students", "" if student.get("class_weight") == "balanced" else again)))
    if config.get("tfidf_member"):
        who.append(("the TF-IDF member", ("leave --tfidf-member out", "")))
    out = []
    for j, (name, remedy) in enumerate(who):
        prefix = f"member{j}/answered["
        out.append((name, {k[len(prefix):-1]: v for k, v in figures.items() if k.startswith(prefix)}, remedy))
    return out


def stale_warnings(store: Store, run: str) -> list[str]:
    """The warnings ``kd labels show`` and ``export`` give about the run's detection: its teacher or
    its student votes replaced since it ran (none where the run has no detection)."""
    try:
        stage = store.find_stage(run, "detect")
    except KdError:
        return []  # (the listing itself says there is no detection)
    return _replaced_teacher(store, run, stage) + _replaced_votes(store, run, stage)


def _replaced_teacher(store: Store, run: str, detect_stage: Stage) -> list[str]:
    """A warning when the teacher the detection read (``teacher_stages``) has been replaced since
    (``kd teach --overwrite``): its issues are the old teacher's."""
    read = ((detect_stage.config or {}).get("teacher_stages") or [{}])[0]
    teacher_run = read.get("run") or run
    try:
        now = store.find_stage(teacher_run, "teach")
    except KdError:
        return []
    if read.get("stage_id") is None or now.id == read["stage_id"]:
        return []
    redetect = f"`{redetect_command(run, detect_stage, store)}` judges with the new one"
    if _in_sample_teacher(store, now) and not (detect_stage.config or {}).get("allow_in_sample"):
        # (that detect would be refused: the new teacher learned the train labels it would judge)
        redetect = (f"the new one learned the train labels it would judge (no --folds), so a detection refuses it: "
                    f"{reteach_command(teacher_run, now.config, folds=teacher_folds(store.samples(splits=['train'], labeled=True).labels))}, then `{redetect_command(run, detect_stage, store)}`")
    return [f"the teacher of run {teacher_run!r} was replaced after this detection ran (kd teach --overwrite): its issues "
            f"are the old teacher's; {redetect}"]


def _in_sample_teacher(store: Store, teacher: Stage) -> bool:
    """Whether a teach stage without folds learned from train samples a detection would judge."""
    from .teacher import trained_on

    if store.read_folds(teacher.id):
        return False
    train = store.samples(splits=["train"], labeled=True).ids
    return bool(trained_on(store, teacher) & {int(i) for i in train})


def redetect_command(run: str, detect_stage: Stage, store: Store | None = None) -> str:
    """The ``kd labels detect --overwrite`` that judges again as ``detect_stage`` did: with its
    ``--teacher-run`` when that is another run (``--run`` alone would look for a teacher in ``run``)
    and its ``--student-votes``. With ``store``: where that ``--overwrite`` would be refused (a clean
    stage's edits of its issues stand), the detection in a new run that it names instead."""
    from .runs import check_stage_free

    config = detect_stage.config or {}
    teacher_run = ((config.get("teacher_stages") or [{}])[0].get("run") or config.get("teacher_run") or run)
    flags = " --allow-in-sample" if config.get("allow_in_sample") else ""  # (without it, refused as the detection was not)
    flags += _detect_options(config)  # (and judged as it was: its methods, filter, quality score, members)
    if store is not None:
        try:
            check_stage_free(store, run=run, kind="detect", name=detect_stage.name, overwrite=True)
        except KdError:  # (a stage of --run votes in another run as RUN:STAGE)
            votes = "".join(f" --student-votes {v if ':' in v else f'{run}:{v}'}" for v in config.get("student_votes") or ())
            return f"kd labels detect --run NEW --teacher-run {teacher_run}{votes}{flags}"
    votes = "".join(f" --student-votes {v}" for v in config.get("student_votes") or ())
    return f"kd labels detect --run {run}{f' --teacher-run {teacher_run}' if teacher_run != run else ''}{votes}{flags} --overwrite"


def _detect_options(config: dict) -> str:
    """The options of a detection (its stored config) that differ from ``kd labels detect``'s defaults,
    as command-line text: a redetect judges as the detection did."""
    default = DetectConfig()
    out = []
    methods = tuple(config.get("methods") or default.methods)
    if methods != tuple(default.methods):
        out.append(f"--method {','.join(methods)}")
    for key in ("combine", "filter_by", "frac_noise", "quality_method"):
        if key in config and config[key] != getattr(default, key):
            out.append(f"--{key.replace('_', '-')} {config[key]:g}" if isinstance(config[key], float) else f"--{key.replace('_', '-')} {config[key]}")
    if config.get("tfidf_member"):
        out.append("--tfidf-member")
    if config.get("calibrate") is False:
        out.append("--no-calibrate")
    return "".join(f" {o}" for o in out)


def _replaced_votes(store: Store, run: str, detect_stage: Stage) -> list[str]:
    """A warning for each ``--student-votes`` stage the detection read (``student_vote_stages``) that
    has been replaced since (``kd distill --overwrite``): its issues count the old student's votes."""
    out = []
    for read in (detect_stage.config or {}).get("student_vote_stages") or []:
        try:
            now = store.find_stage(read["run"], read["stage"])
        except (KdError, KeyError):
            continue
        if read.get("stage_id") is None or (now.id == read["stage_id"] and read.get("started_at") in (None, iso_utc(now.started_at))):
            continue
        out.append(f"distill stage {read['stage']!r} of run {read['run']!r} (--student-votes) was replaced after this detection ran "
                   f"(kd distill --overwrite): its issues count the old student's votes; `{redetect_command(run, detect_stage, store)}` "
                   "judges with the new one")
    return out


def _student_votes(store: Store, run: str, name: str, sample_ids: np.ndarray, *,
                   allow_in_sample: bool) -> tuple[np.ndarray, tuple[str, Stage], tuple[str, str, str] | None]:
    """A distill stage's probabilities for the samples, to join the ensemble: out-of-fold ones, from
    ``kd distill --folds K`` (a student that learned the labels it would judge only echoes them);
    ``(run, stage)``; and, for one ``allow_in_sample`` lets in, why it is in-sample (``_in_sample_votes``).
    ``name``: a stage of ``run``, or ``RUN:STAGE`` for another run's."""
    if not name.split(":", 1)[-1].strip():  # (`--student-votes "$STAGE"` or "r:$STAGE" with STAGE unset: "no '' stage")
        raise KdError(f"--student-votes {name!r}: the stage is empty: name a distill stage (STAGE of --run, or RUN:STAGE)")
    given = None
    if ":" in name:
        given, (run, name) = name, name.split(":", 1)
        if not run.strip():  # (`--student-votes "$RUN:votes"` with RUN unset: not the run named default, as for --run)
            raise KdError(f"--student-votes {given!r}: the run before ':' is empty: name it (RUN:STAGE), or give STAGE alone for --run's")
        run = resolve_run_id(run)  # RUN may be ${time}, as --run
    elif not store.run_exists(run):  # (a detection in a new run, of another run's students: "no run" named no fix)
        raise KdError(f"--student-votes {name!r}: a stage of --run {run!r}, which is not in the store yet: "
                      f"name another run's stage as RUN:STAGE")
    try:
        stage = store.find_stage(run, name)
    except KdError as exc:
        if given is None:  # (STAGE alone: the error names it, and so a config file's value)
            raise
        raise KdError(f"--student-votes {given!r}: {exc}") from None  # (it named the run alone: no option, no file)
    if stage.kind != "distill":
        raise KdError(f"--student-votes takes distill stages; {name!r} is a {stage.kind} stage")
    names = store.class_names()
    probs = _probs(  # probabilities beat hard votes
        store, stage.id, sample_ids,
        missing=f"have no logits from distill stage {name!r} of run {run!r} (ingested after it ran?): re-run it or leave it out of --student-votes",
        # class ids only grow: a student of fewer outputs ran before a class was added (its votes cannot be read against it)
        classes=len(names), changed=f"distill stage {name!r} of run {run!r} learned {{n}} classes, the store now has {len(names)} "
                                    f"({', '.join(names)}): re-run it or leave it out of --student-votes",
        source=f"distill stage {name!r} of run {run!r}: re-run it or leave it out of --student-votes",
    )
    leak = _in_sample_votes(store, run, stage, sample_ids)
    if leak and not allow_in_sample:
        why, what, command = leak
        raise KdError(f"{why}: its votes are in-sample. Distill {what} ({command}) and pass those (or pass --allow-in-sample)")
    return probs, (run, stage), leak


def _in_sample_votes(store: Store, run: str, stage: Stage, sample_ids: np.ndarray) -> tuple[str, str, str] | None:
    """Why the distill ``stage`` of ``run`` learned the train labels it would vote on, what to distill instead
    and the command that does (``None`` for out-of-fold students, ``kd distill --folds K``)."""
    name = stage.name
    folds = store.read_folds(stage.id)  # --folds students score each train sample blind to it
    # the advice names the teachers it learned from: another run's (--teacher-run) are named, ``run`` may have none
    # (of its kind: the default would distil TextCNNs; an early-exit stage has no --folds)
    config = stage.config or {}
    kind = config.get("student")
    teachers = f" --student {kind}" if kind in ("bigru", "bilstm", "transformer") else ""
    teachers += "".join(f" --teacher-run {t}" for t in config.get("teacher_runs") or ())
    teachers += "".join(f" --teacher-weight {w:g}" for w in config.get("teacher_weights") or ())
    if len(set(config.get("teacher_runs") or ())) > 1 and config.get("teacher_average", "probs") != "probs":  # (the target it learned)
        teachers += f" --teacher-average {config['teacher_average']}"
    if config.get("where"):  # (the rows it learned from: out-of-fold students of other rows are another student)
        teachers += f" --where {shlex.quote(config['where'])}"
    if folds and config.get("init_from_teacher"):  # (each fold started from the teacher's layers and head)
        return (f"distill stage {name!r} of run {run!r} is --folds students copied from the teacher, whose layers and head learned "
                f"the train labels they are to be blind to", "blind ones", f"`kd distill --run {run}{teachers} "
                f"--folds {len(set(folds.values()))} --no-init-from-teacher --name {name}-oof`")
    if kind == "early-exit":  # (its branches learned no label, its teacher's layers and head did; no --folds: other students vote)
        return (f"distill stage {name!r} of run {run!r} is an early exit on its teacher's layers and head, which learned the train "
                "labels (an early exit has no --folds)", "out-of-fold students of another kind",
                f"`kd distill --run {run}{teachers} --student textcnn --folds 5 --name votes`")
    if not folds:
        from .outputs import labels_time, taken_since

        # (a --where student learned the labels of the train rows it selects, not of every one; a pool text
        # `kd ingest --take-pool` took into train after it read its rows it learned from the teacher alone, as a pool text)
        selected = store.samples(splits=["train"], labeled=True, where=config.get("where")).ids
        learned = int(np.isin(sample_ids, np.setdiff1d(selected, np.array(sorted(taken_since(store, labels_time(stage))), dtype=np.int64))).sum())
        if not learned:
            return None
        of = "the" if learned == len(sample_ids) else f"{learned} of the"
        return (f"distill stage {name!r} of run {run!r} learned the labels of {of} {len(sample_ids)} train samples", "out-of-fold students",
                f"`kd distill --run {run}{teachers} --folds 5 --name {name}-oof`")
    return None


def _probs(store: Store, stage_id: int, sample_ids: np.ndarray, *, missing: str, classes: int | None = None,
           changed: str = "", source: str = "the stage") -> np.ndarray:
    """The stage's softmax probabilities for the train samples, in their order; refuses (``N train
    samples`` + ``missing``) when some have no logits from it, (``changed``, ``{n}`` its outputs)
    when its logits have other than ``classes`` outputs, and (naming ``source``) when some are NaN or
    infinite: refused before a detect stage opens, naming samples, not a row of the detection."""
    ids, logits = store.read_logits(stage_id, splits=["train"])
    if classes is not None and len(ids) and logits.shape[1] != classes:
        raise KdError(changed.format(n=logits.shape[1]))
    row = {int(i): k for k, i in enumerate(ids)}
    absent = [int(i) for i in sample_ids if int(i) not in row]
    if absent:
        raise KdError(f"{len(absent)} train samples {missing}")
    logits = logits[[row[int(i)] for i in sample_ids]]
    broken = [int(i) for i, ok in zip(sample_ids, np.isfinite(logits).all(axis=1)) if not ok]
    if broken:
        shown = ", ".join(map(str, broken[:10])) + (f" and {len(broken) - 10} more" if len(broken) > 10 else "")
        raise KdError(f"{len(broken)} train sample{'s' if len(broken) > 1 else ''} ({shown}) {'have' if len(broken) > 1 else 'has'} "
                      f"NaN or infinite logits from {source}")
    return softmax(logits)


# reading issues --------------------------------------------------------------------------------
def issue_count(store: Store, run: str, *, status: str | tuple[str, ...] | None = None) -> int:
    """How many label issues the run's detection holds (``status``: of one or several states), as
    ``issues`` would list them all."""
    stage = store.find_stage(run, "detect")
    query = select(func.count()).select_from(LabelIssue).where(LabelIssue.stage_id == stage.id)
    if status:
        query = query.where(LabelIssue.status.in_((status,) if isinstance(status, str) else status))
    with store.session() as s:
        return int(s.scalar(query) or 0)


def issue_statuses(store: Store, run: str) -> dict[str, int]:
    """``{status: n}`` of the run's detection's issues, in ``open, applied, rejected, flagged`` order (states held only)."""
    stage = store.find_stage(run, "detect")
    with store.session() as s:
        held = dict(s.execute(select(LabelIssue.status, func.count()).where(LabelIssue.stage_id == stage.id).group_by(LabelIssue.status)).all())
    order = ("open", "applied", "rejected", "flagged")
    return {k: int(held[k]) for k in (*order, *sorted(set(held) - set(order))) if held.get(k)}


def issues(store: Store, run: str, *, top: int | None = None, status: str | tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """The run's label issues, highest score first, with text, label names and whether the sample
    is dropped now (``status``: one or several)."""
    stage = store.find_stage(run, "detect")
    names = store.class_names()
    query = (
        select(LabelIssue, Sample.text, Sample.label_id, Sample.dropped)
        .join(Sample, Sample.id == LabelIssue.sample_id)
        .where(LabelIssue.stage_id == stage.id)
        .order_by(LabelIssue.score.desc(), LabelIssue.id)
    )
    if status:
        query = query.where(LabelIssue.status.in_((status,) if isinstance(status, str) else status))
    if top is not None:
        query = query.limit(top)
    with store.session() as s:
        rows = s.execute(query).all()
    return [
        {
            "issue_id": issue.id,
            "sample_id": issue.sample_id,
            "text": text,
            "given": names[issue.given_label_id],
            "current": None if current is None else names[current],
            "suggested": names[issue.suggested_label_id],
            "score": round(issue.score, 6),
            "methods": issue.methods,
            "status": issue.status,
            "dropped": bool(dropped),
        }
        for issue, text, current, dropped in rows
    ]


def export_sheet(store: Store, run: str, path: Path, *, overwrite: bool = False) -> int:
    """Write the undecided (open or flagged) issues as a review sheet (CSV, or JSONL by extension) with an empty decision.
    The CSV starts with a UTF-8 byte-order mark, so that spreadsheet programs read its Chinese text
    as UTF-8; each row names its run, so that ``import`` needs no ``--run``. An existing file (a
    sheet someone may be filling in) is replaced only with ``overwrite``."""
    rows = issues(store, run, status=UNDECIDED)
    for r in rows:
        r["current"] = sheet_current(r["current"], r["dropped"])
    items = [{"run": run} | {k: r[k] for k in SHEET_COLUMNS if k not in ("run", "decision")} | {"decision": ""} for r in rows]
    if str(path) in ("-", ""):  # (not a file called "-" in the working folder; "" is Path("."), the folder)
        raise KdError("kd labels export writes a file: give its name (review.csv, or review.jsonl)")
    if str(path).endswith(("/", os.sep)):  # (Path() drops the slash: "sheets/" wrote a file called sheets)
        raise KdError(f"{path} is a folder: give the sheet's file name ({path}review.csv, or review.jsonl)")
    path = Path(path)
    if path.suffix.lower() in (".xlsx", ".xls", ".xlsm", ".ods"):  # CSV text under a workbook's name: Excel refuses to open it
        raise KdError(f"{path}: kd labels export writes CSV or JSONL, not a workbook: name it {path.stem}.csv (Excel opens it)")
    if path.suffix.lower() == ".tsv":  # comma-separated text under a tab-separated name
        raise KdError(f"{path}: kd labels export writes CSV or JSONL: name it {path.stem}.csv or {path.stem}.jsonl")
    if path.exists() and not overwrite:
        raise KdError(f"{path} exists (a sheet someone may be filling in): pass --overwrite to replace it, or give another name")
    if path.suffix.lower() in SHEET_JSONL:
        text, encoding = "".join(dumps_line(i) + "\n" for i in items), "utf-8"
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=SHEET_COLUMNS)
        writer.writeheader()
        writer.writerows({**i, "text": _no_formula(i["text"])} for i in items)
        text, encoding = buf.getvalue(), "utf-8-sig"
    make_folder(path.parent, f"the review sheet {path}")
    write_whole(path, text, "the review sheet", encoding=encoding)  # cut short: no half sheet a rerun would refuse
    return len(items)


def kept_by_review_warnings(store: Store, run: str) -> list[str]:
    """A warning naming the samples of the run's undecided issues whose label a review kept (``kept_in_review``:
    an earlier sheet's reject, which ``clean`` honours): a sheet listed them as any other row, with no word of it;
    and one naming those whose label a person set by hand (``set_by_hand``), which ``clean`` honours too."""
    names = store.class_names()
    undecided = {i["sample_id"]: names.index(i["current"]) for i in issues(store, run, status=UNDECIDED)
                 if i["current"] is not None and not i["dropped"]}
    with store.session() as s:
        kept = sorted(kept_in_review(s, undecided))
        hand = sorted(set_by_hand(s, undecided, names) - set(kept))  # (`kd labels set`: clean leaves them alone too)
    out = []
    for which, how in ((kept, "kept by an earlier review (a reject, `kd labels history {}` shows it)"),
                       (hand, "set by hand (`kd labels set`, `kd labels history {}` shows it)")):
        if which:
            ids = ", ".join(map(str, which[:10])) + (f" and {len(which) - 10} more" if len(which) > 10 else "")
            one = len(which) == 1
            out.append(f"sample{'' if one else 's'} {ids} had {'its label' if one else 'their labels'} {how.format(which[0])}: "
                       f"`kd labels clean --run {run}` leaves {'it' if one else 'them'} alone, a decision in this sheet overrides it")
    return out


def sheet_current(label: str | None, dropped: bool) -> str:
    """A sheet's ``current`` cell: the sample's label now (its class name), ``(dropped)`` after it when dropped."""
    return f"{label or ''}{' (dropped)' if dropped else ''}"


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _no_formula(text: str) -> str:
    """A text a spreadsheet would run as a formula (``=HYPERLINK(...)``, ``+86 ...``, ``-5折``) with a
    ``'`` in front, as OWASP advises for CSV: shown as text, and read back as the sample's text."""
    return "'" + text if text.startswith(_FORMULA_START) else text


@dataclass(frozen=True)
class Sheet:
    run: str  # the run whose issues the decisions answer
    decisions: list["Decision"]


@dataclass(frozen=True)
class Decision:
    sample_id: int
    issue_id: int | None
    action: str  # relabel, drop or reject
    new_label: int | None
    note: str = ""  # a reviewer's comment (a sheet's ``comment`` column): recorded with the edit's reason


def read_sheet(store: Store, path: Path, run: str | None = None, *, replacing: str | None = None,
               default_run: str | None = None) -> Sheet:
    """Parse an edited review sheet; every row is checked before anything changes.

    ``decision``: empty (skip), ``accept`` (the suggested label), ``reject``, ``drop``, or a class name.
    A decided row's sample must have an open issue in the run's detection (``issue_id``, if given, must
    be that issue), at most one row per sample, and its ``text``, if given, must be the sample's (as
    ``kd ingest`` compares texts). The run is ``run``, else the one the sheet's ``run`` column names,
    else ``default_run`` (a config file's run), else ``default``; a sheet naming another run than ``run``, or two runs, is refused. ``replacing``:
    the clean stage this import replaces (``--overwrite``), whose decisions count as open.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KdError(f"{path}: cannot read: {exc.strerror or exc}") from None
    raw = _sheet_text(path, data)
    if path.suffix.lower() in SHEET_JSONL:
        rows, lines = [], split_lines(raw)
        json_lines = "kd reads JSON Lines: one object a line"
        for n, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    item = json.loads(line, object_pairs_hook=unique_keys)
                except json.JSONDecodeError as exc:  # (a sheet saved as a JSON array, or pretty-printed as `jq .` prints it)
                    hint = (f" ({json_lines}, not a JSON array)" if line.lstrip().startswith("[") else
                            f" (the object goes on past its line: {json_lines}, as `jq -c` writes them)"
                            if line.lstrip().startswith("{") and exc.pos >= len(line.rstrip()) and any(r.strip() for r in lines[n:]) else "")
                    raise KdError(f"{path}: line {n}: not valid JSON ({exc.msg}){hint}") from None
                except RepeatedKey as exc:  # json.loads keeps the last: a decision before an empty one was dropped unseen
                    raise KdError(f"{path}: line {n}: field {exc.key!r}: the object names this key twice: keep one") from None
                if not isinstance(item, dict):
                    hint = f" ({json_lines}, not a JSON array)" if isinstance(item, list) and any(isinstance(i, dict) for i in item) else ""
                    raise KdError(f"{path}: line {n}: not a JSON object of the sheet's fields ({', '.join(SHEET_COLUMNS)}){hint}")
                named: dict = {}  # the sheet's keys in any case, as a CSV header's ("Decision" was ignored)
                for k, v in item.items():
                    if _column_name(k) in named:
                        raise KdError(f"{path}: line {n}: field {k!r}: the object names the sheet's {_column_name(k)!r} twice: keep one")
                    named[_column_name(k)] = v
                    if has_surrogate(k) or has_surrogate(v):  # ("\\ud83d" alone parses: the edits' write failed on it, a stage left failed)
                        raise KdError(f"{path}: line {n}: field {k!r}: contains a lone surrogate escape "
                                      "(\\ud800-\\udfff without its pair, e.g. an emoji cut in half): not valid Unicode")
                rows.append((n, named))
        lines_up = [], []  # (a JSON object's fields are named)
    else:
        allow_long_csv_fields()
        # an unclosed quote is an error, not a swallowed row; each row is numbered by the line it starts on
        # (a text or a note with line breaks spans several)
        reader = csv.reader(io.StringIO(raw, newline=""), delimiter=_sheet_delimiter(raw), strict=True)
        records, start = [], 1
        try:
            for fields in reader:
                if fields:  # (a blank line)
                    records.append((start, fields))
                start = reader.line_num + 1
        except csv.Error as exc:
            raise KdError(f"{path}: line {start}: not valid CSV ({exc})") from None
        # the sheet's own columns in any case and spacing (`Decision`, ` sample_id`), others as they are
        fieldnames = [_column_name(c) for c in records[0][1]] if records else []
        header_line = records[0][0] if records else 1  # (blank lines before the header)
        rows = [(n, dict(zip(fieldnames, fields))) for n, fields in records[1:]]
        missing = {"sample_id", "decision"} - set(fieldnames)
        if missing:
            raise KdError(f"{path}: line {header_line}: missing column(s) {', '.join(sorted(missing))}")
        twice = next((c for c in SHEET_COLUMNS if fieldnames.count(c) > 1), None)
        if twice:  # csv reads the last of them: the decisions in the first would be dropped unseen
            raise KdError(f"{path}: line {header_line}: field {twice!r}: the column appears twice: keep one")
        lines_up = records[1:], fieldnames  # (checked below, against the class names)
    names = store.class_names()
    # a first column without a header holding distinct whole numbers is an index (pandas' ``to_csv``), not decisions
    first = [fields[0].strip() for _, fields in lines_up[0] if fields]
    index = bool(lines_up[1]) and not lines_up[1][0].strip() and all(v.isascii() and v.isdigit() for v in first) \
        and len(set(first)) == len(first)
    for n, fields in lines_up[0]:
        _check_row_width(path, n, fields, lines_up[1], names, index=index)
    if not rows:  # (an export of a run with no undecided issue: "empty on every row ... was the sheet saved?" was odd)
        raise KdError(f"{path}: no row of decisions: nothing to import (`kd labels export` of a run with no undecided issue?)")
    if not any(_cell(r, "decision") for _, r in rows):  # (an empty clean stage would take the name the real import needs)
        raise KdError(f"{path}: field 'decision': empty on every row (give accept, reject, drop or a class): nothing to import (was the sheet saved?)")
    given = run
    run = _sheet_run(path, rows, run, default_run)
    try:
        stage = store.find_stage(run, "detect")  # the issues a sheet of this run can decide
    except KdError as exc:
        named = next((line for line, r in rows if _cell(r, "run")), None)  # the sheet's first row naming the run
        if given is None and named is not None:  # (a sheet of another store, or a run Excel reformatted: 3-1 read as a date)
            raise KdError(f"{path}: line {named}: field 'run': {exc}") from None
        unnamed = given is None  # (the run column deleted or left empty)
        raise KdError(f"{path}: {exc}" + (f" (the sheet names no run, so it was taken for {run!r}: pass --run)" if unnamed else "")) from None
    with store.engine.connect() as conn:
        existing = {int(i) for (i,) in conn.execute(select(Sample.id))}
        found = conn.execute(
            select(LabelIssue.id, LabelIssue.sample_id, LabelIssue.given_label_id, LabelIssue.suggested_label_id, LabelIssue.status,
                   LabelIssue.decided_stage_id, Stage.name, Sample.text,
                   Sample.label_id, Sample.dropped)
            .join(Sample, Sample.id == LabelIssue.sample_id)
            .outerjoin(Stage, Stage.id == LabelIssue.decided_stage_id)
            .where(LabelIssue.stage_id == stage.id)
        ).all()
        # the samples whose label changed since the detection (made or undone): their exported ``current`` may be stale
        changed = {int(i) for (i,) in conn.execute(
            select(LabelEdit.sample_id).distinct().join(LabelIssue, LabelIssue.sample_id == LabelEdit.sample_id)
            .where(LabelIssue.stage_id == stage.id,
                   or_(LabelEdit.created_at >= stage.started_at, LabelEdit.reverted_at >= stage.started_at)))}
    issue_of_sample = {r.sample_id: r for r in found}
    decisions, first_line = [], {}
    for line, r in rows:
        decision = _cell(r, "decision")
        if not decision:
            _check_skipped(path, line, r, issue_of_sample, names, replacing, changed)
            continue
        sample_id = _sheet_id(path, line, r, "sample_id")
        if sample_id is None:
            raise KdError(f"{path}: line {line}: field 'sample_id': empty")
        if sample_id not in existing:
            raise KdError(f"{path}: line {line}: field 'sample_id': no sample {sample_id} in the store")
        issue = issue_of_sample.get(sample_id)
        if issue is None:
            raise KdError(
                f"{path}: line {line}: field 'sample_id': sample {sample_id} has no issue detected in run {run!r}: "
                "a review sheet decides the issues `kd labels export` listed"
            )
        issue_id = _sheet_id(path, line, r, "issue_id")
        if issue_id is not None and issue_id != issue.id:
            with store.engine.connect() as conn:  # (ids only grow: one older than the issue now, gone, went with a replaced detection)
                gone = issue_id < issue.id and conn.scalar(select(LabelIssue.id).where(LabelIssue.id == issue_id)) is None
            if gone:  # (a sheet exported before `kd labels detect --overwrite`)
                raise KdError(f"{path}: line {line}: field 'issue_id': issue {issue_id} is of a detection of run {run!r} replaced or deleted since "
                              f"(`kd labels detect --overwrite`, `kd runs delete`): `kd labels export --run {run}` writes a fresh sheet of its issues")
            raise KdError(f"{path}: line {line}: field 'issue_id': {issue_id} is not an issue of sample {sample_id} detected in run {run!r}")
        if sample_id in first_line:
            raise KdError(f"{path}: line {line}: field 'sample_id': sample {sample_id} is decided twice (first on line {first_line[sample_id]})")
        first_line[sample_id] = line
        if issue.status not in UNDECIDED and not (replacing is not None and issue.name == replacing):
            remedy = (f"`kd labels undo --run {run} --stage {issue.name}` reopens it" if issue.name
                      else f"its deciding stage is gone; `kd labels detect --run {run} --overwrite` starts afresh")
            # (its config read here, on the error's path: one per issue row copied a clean's config 10,000 times)
            decider = next((st for st in store.stages_of(run) if st.id == issue.decided_stage_id), None) if issue.name else None
            if decider is not None and (decider.config or {}).get("sheet"):  # (a sheet's own stage: edited further, it is imported again in its place)
                named = "" if issue.name == "review" else f" --name {shlex.quote(issue.name)}"
                with store.session() as s:  # (its edits standing, --overwrite is refused until the undo)
                    then = ", then" if _live_edits(s, decider) else ","
                remedy += f"{then} `kd labels import --run {shlex.quote(run)} {shlex.quote(str(path))}{named} --overwrite` replaces that stage with this sheet's decisions"
            raise KdError(
                f"{path}: line {line}: field 'decision': issue {issue.id} (sample {sample_id}) was already "
                f"{issue.status}{f' by stage {issue.name!r}' if issue.name else ''} (a stale sheet?): {remedy}, "
                "or leave the row's decision empty"
            )
        text = _cell(r, "text")
        if text and text_hash(text) != text_hash(issue.text) and not (
                text.startswith("'") and text_hash(text[1:]) == text_hash(issue.text)):  # (see _no_formula)
            lost = "?" in text and len(text) == len(issue.text) and all(
                a == b or a == "?" for a, b in zip(text, issue.text))  # ('好评' saved as '??' where the text is)
            cut = len(text) == EXCEL_CELL_CHARS and issue.text.lstrip().startswith(text.strip())
            raise KdError(
                f"{path}: line {line}: field 'text': not the text of sample {sample_id} in this store "
                + (f"(the first {EXCEL_CELL_CHARS:,} of its {len(issue.text):,} characters: Excel keeps no more in a cell, "
                   "and saved it cut; leave the text cell empty)" if cut else
                   "(its characters were saved as '?': a program that could not write them, as Excel on a non-Chinese "
                   f"Windows saves plain CSV; {SAVE_UTF8}, or leave the text cell empty)" if lost else
                   "(a sheet of another store, or a text a spreadsheet reformatted as a number or a date? "
                   "an empty text cell skips this check)")
            )
        try:
            action, label = read_decision(decision, names, SHEET_WORDS)
        except KdError as exc:
            raise KdError(f"{path}: line {line}: field 'decision': {exc}") from None
        shown, now = _cell(r, "current"), sheet_current(None if issue.label_id is None else names[issue.label_id], issue.dropped)
        if action == "reject" and shown and shown != now:  # (a reject keeps the label as it is now, not the one the sheet shows)
            raise KdError(
                f"{path}: line {line}: field 'current': sample {sample_id} is {now!r} now, not {shown!r} (its label changed since "
                f"the sheet was exported): a reject would keep {now!r}; write the class to keep, or export a fresh sheet"
            )
        if action == "accept":
            suggested = _cell(r, "suggested")
            if suggested and suggested not in names:
                raise KdError(f"{path}: line {line}: field 'suggested': unknown label {suggested!r}")
            action, label = "relabel", names.index(suggested) if suggested else issue.suggested_label_id
        if action == "relabel" and label == issue.label_id and not issue.dropped:
            # the label it has now, written (or accepted) to keep it: a reject, on record as one (in ``history``, and
            # ``kept_in_review``: as "unchanged" it left no trace, and a new detection's clean relabeled it); the class
            # named stays with it: an accept of the suggestion it already had is told as one (``accepted``), not a reject
            action = "reject"
        decisions.append(Decision(sample_id, issue.id, action, label, _note(r)))
    return Sheet(run, decisions)


SHEET_WORDS = ("accept", "reject", "drop")  # what a sheet's decision says besides a class name
CLASS_PREFIX, WORD_PREFIX = "label:", "decision:"


def _prefixed(value: str) -> tuple[str, str]:
    """A decision's text up to its first colon, in half width (``label：`` is ``label:``), and the rest."""
    at = min((i for i in (value.find(":"), value.find("："), value.find("﹕")) if i >= 0), default=-1)
    return (unicodedata.normalize("NFKC", value[:at + 1]), value[at + 1:]) if at >= 0 else ("", value)


def read_decision(value: str, names: Sequence[str], words: Sequence[str]) -> tuple[str, int | None]:
    """``(action, class id)`` of a sheet's decision or ``kd labels set``'s value: one of ``words``
    (any case; ``(word, None)``) or a class name (``("relabel", id)``). A class named like a word
    (``reject`` in a moderation task) makes that word ambiguous: ``label:reject`` names the class,
    ``decision:reject`` the decision, and the bare word is refused rather than guessed."""
    listed = ", ".join(words)
    # (the prefixes as a Chinese input method types them too: `label：pos`, a full-width colon)
    prefix, rest = _prefixed(value)
    if prefix.lower() == CLASS_PREFIX and value not in names:
        rest = rest if rest in names else rest.strip()  # (`label: reject`, spaced as `decision: drop` is read)
        if rest not in names:
            raise KdError(f"{value!r}: no class {rest!r} ({', '.join(names)})")
        return "relabel", names.index(rest)
    if prefix.lower() == WORD_PREFIX and value not in names:
        word = unicodedata.normalize("NFKC", rest).strip().lower()
        if word not in words:
            raise KdError(f"{value!r}: {word!r} is not a decision ({listed})")
        return word, None
    low = unicodedata.normalize("NFKC", value).lower()  # (ＤＲＯＰ: typed with a Chinese input method's full width)
    if low in words:
        twins = [n for n in names if n.casefold() == low]
        if twins:
            raise KdError(f"{value!r} is a decision and also the class {twins[0]!r}: write {CLASS_PREFIX}{twins[0]} for the class, "
                          f"{WORD_PREFIX}{low} for the decision")
        return low, None
    if value in names:
        return "relabel", names.index(value)
    twins = [n for n in names if label_key(n) == label_key(value)]  # ('ｎｅｇ', typed in full width, looks like 'neg')
    twin = f"; {value!r}{lookalike_of(twins[0])}" if len(twins) == 1 else ""
    classes = ", ".join(names) if names else "the store has none: no labeled sample was ingested"  # (not "a class ()")
    raise KdError(f"{value!r} is not {listed} or a class ({classes}){class_id_hint(value.strip(), list(names))}{twin}")


SAVE_UTF8 = 'save it as UTF-8 (Excel: Save As "CSV UTF-8")'
EXCEL_CELL_CHARS = 32_767  # the most characters an Excel cell holds: a longer review's text is cut to them as the sheet is saved


def _sheet_text(path: Path, data: bytes) -> str:
    """A review sheet's bytes as text (UTF-8, a byte-order mark dropped); another encoding (Excel on
    Chinese Windows saves CSV as GBK) or a workbook is a one-line error naming the line (and field)."""
    if data.startswith(b"PK\x03\x04"):
        raise KdError(f"{path}: line 1: an Excel workbook (or other zip file), not a CSV or JSONL sheet: {SAVE_UTF8}")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise KdError(f"{path}: line 1: the sheet is UTF-16 encoded: {SAVE_UTF8}")
    kind = not_text(data, str(path))  # (a gzip or a PNG was "not UTF-8 (byte 0x8b: GBK/GB18030, as Excel saves ...?)")
    if kind:
        raise KdError(f"{path}: {kind}")
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        at = bom + exc.start  # (the decoder counts from past the byte-order mark: 3 bytes short, another field was named)
        line_start = data.rfind(b"\n", 0, at) + 1
        line = data.count(b"\n", 0, at) + 1
        where = ""
        if line > 1 and path.suffix.lower() not in SHEET_JSONL:  # the header names the column
            first = data[:data.find(b"\n")].decode("utf-8-sig", "replace").strip("\r")
            delimiter = _sheet_delimiter(first)  # (a semicolon sheet's header is one comma-separated field)
            header = next(csv.reader([first], delimiter=delimiter), [])
            column = len(next(csv.reader([data[line_start:at].decode("utf-8", "replace") + "x"], delimiter=delimiter))) - 1
            where = f" field {header[column]!r}:" if column < len(header) else ""
        guess = ("Big5, as Excel saves CSV in Taiwan and Hong Kong" if looks_big5(data[bom:])
                 else "GBK/GB18030, as Excel saves CSV on Chinese Windows")
        raise KdError(f"{path}: line {line}:{where} not UTF-8 (byte 0x{data[at]:02x}: {guess}?): {SAVE_UTF8}") from None


def _sheet_delimiter(text: str) -> str:
    """The CSV sheet's delimiter: ``,`` as kd writes it, or the ``;`` that Excel saves "CSV" with where
    the decimal mark is a comma (most of Europe), or a tab (a spreadsheet's "tab-delimited text"),
    when the header names the sheet's columns only with that one."""
    start = re.match(r"[\r\n]*", text).end()  # (blank lines before the header)
    header = text[start:start + 65536].split("\n", 1)[0].split("\r", 1)[0]  # (old Mac line ends: \r alone)
    for delimiter in (",", ";", "\t"):
        names = {_column_name(c) for c in next(csv.reader([header], delimiter=delimiter), [])}
        if {"sample_id", "decision"} <= names:
            return delimiter
    return ","


def _check_row_width(path: Path, line: int, fields: list[str], fieldnames: list[str], names: Sequence[str], *,
                     index: bool = False) -> None:
    """A CSV sheet row whose cells do not line up with the header: its decision would be read as
    empty and the row skipped unseen. Refused, where the row has no decision: a decision (a word or a
    class name) under no column (past the header, or under a header cell left empty: typed one column
    off; a note there is left alone), or a ``sample_id`` that is no id (a cell left out, the others
    moved left: ``r,1,drop``). (A row merely shorter than the header, its empty last cells left out,
    is read as it is.) ``index``: the first column, without a header, is a table's index (pandas' ``to_csv``)."""
    at = fieldnames.index("decision")
    if at < len(fields) and fields[at].strip():
        return
    for i, value in enumerate(fields):
        if value.strip() and (i >= len(fieldnames) or not fieldnames[i].strip()) and not (index and i == 0):
            try:
                read_decision(value.strip(), names, SHEET_WORDS)
            except KdError:
                continue  # (a note)
            raise KdError(f"{path}: line {line}: field 'decision': empty, while column {i + 1} ({value.strip()!r}) is under no "
                          f"header (a decision typed one column off?): move it to the decision column, or name its column")
    sample = fields[fieldnames.index("sample_id")].strip() if fieldnames.index("sample_id") < len(fields) else ""
    if sample and not (sample.isascii() and sample.isdigit()):
        # (a row as wide as the header: "10 fields, the header 10: a cell left out?" of an id Excel wrote as 1.23E+05)
        why = (f"its cells are not under their columns ({len(fields)} fields, the header {len(fieldnames)}: a cell left out?)"
               if len(fields) != len(fieldnames) else "a spreadsheet wrote the id as a number (1.23E+05), or a cell moved?")
        raise KdError(f"{path}: line {line}: field 'sample_id': not an id (a whole number): {sample[:40]!r}, and the row has no "
                      f"decision: {why}")


NOTE_COLUMNS = ("comment", "comments", "note", "notes", "备注")  # a reviewer's words on a row, kept with its edit


def _note(row: dict) -> str:
    """A sheet row's reviewer comment (a ``NOTE_COLUMNS`` column, in any case), one line."""
    found = next((v for k, v in row.items() if isinstance(k, str) and _folded(k) in NOTE_COLUMNS
                  and v is not None and str(v).strip()), None)
    return "" if found is None else " ".join(str(found).split()).replace("\x00", "")


def _column_name(name: str) -> str:
    """A sheet header's cell as the column it names: one of ``SHEET_COLUMNS`` in any case and
    spacing (``Decision``, `` sample_id``; a second byte-order mark, left by a sheet read as plain
    UTF-8 and saved again with one), any other as it is."""
    return _folded(name) if _folded(name) in SHEET_COLUMNS else name


def _folded(name: str) -> str:
    """A sheet header's cell without its spacing, byte-order mark or case."""
    return name.strip().lstrip("\ufeff").strip().lower()


def _sheet_run(path: Path, rows: list[tuple[int, dict]], given: str | None, default_run: str | None = None) -> str:
    """The run a sheet's decisions answer: ``given``, else the sheet's ``run`` column, else ``default_run``
    (a config file's run), else ``default``."""
    from .names import DEFAULT_RUN

    named = [(line, _cell(r, "run")) for line, r in rows]
    named = [(line, v) for line, v in named if v]
    for line, value in named:
        if given is not None and value != given:
            raise KdError(f"{path}: line {line}: field 'run': the row is of run {value!r}, not --run {given!r}")
        if value != named[0][1]:
            raise KdError(f"{path}: line {line}: field 'run': {value!r}, where line {named[0][0]} says {named[0][1]!r}: one run per sheet")
    return given if given is not None else named[0][1] if named else default_run or DEFAULT_RUN


def _check_skipped(path: Path, line: int, row: dict, issue_of_sample: dict, names: list[str], replacing: str | None = None,
                   changed: frozenset[int] | set[int] = frozenset()) -> None:
    """Refuse an undecided row whose ``suggested``, ``given`` or ``current`` cell a reviewer retyped to another
    class: the row, its decision empty, was skipped without a word, the relabel it meant never made. (Not where
    its issue is decided: a row an earlier import of the sheet decided, emptied as the stale-sheet error says;
    nor a ``current`` cell of a sample in ``changed``, relabeled since its detection: the export's, stale.)"""
    suggested, given, current = _cell(row, "suggested"), _cell(row, "given"), _cell(row, "current")
    try:
        issue = issue_of_sample.get(_sheet_id(path, line, row, "sample_id")) if suggested or given or current else None
    except KdError:  # (an undecided JSONL row's id that is no id: left alone, as it was)
        return
    if issue is not None and issue.status not in UNDECIDED and not (replacing is not None and issue.name == replacing):
        return
    skipped = "and the decision is empty, so the row would be skipped: write the class in decision, or leave the row as exported"
    if issue is not None and given and issue.given_label_id is not None and given != names[issue.given_label_id]:
        raise KdError(f"{path}: line {line}: field 'given': {given!r}, where sample {issue.sample_id} was given "
                      f"{names[issue.given_label_id]!r}, {skipped}")
    now = None if issue is None else sheet_current(None if issue.label_id is None else names[issue.label_id], issue.dropped)
    if current and now is not None and current != now and issue.sample_id not in changed:
        raise KdError(f"{path}: line {line}: field 'current': {current!r}, where sample {issue.sample_id} is {now!r}, {skipped}")
    if suggested and issue is not None and issue.suggested_label_id is not None and suggested != names[issue.suggested_label_id]:
        raise KdError(f"{path}: line {line}: field 'suggested': {suggested!r}, where kd suggested "
                      f"{names[issue.suggested_label_id]!r}, and the decision is empty, so the row would be skipped: "
                      f"write accept (or the class) in decision, or leave the row as exported")


def _cell(row: dict, name: str) -> str:
    """A sheet row's field as stripped text; "" when absent or null (a JSONL 0 is the class "0", not empty)."""
    value = row.get(name)
    return "" if value is None else str(value).strip()


def _sheet_id(path: Path, line: int, row: dict, name: str) -> int | None:
    """A sheet row's id field as an int; None when it is empty."""
    value = row.get(name)
    text = _cell(row, name)
    if not text:
        return None
    if isinstance(value, bool) or not (text.isascii() and text.isdigit()):
        raise KdError(f"{path}: line {line}: field {name!r}: not an id (a whole number): {value!r}")
    return int(text)


def parse_edits(store: Store, pairs: Sequence[str]) -> list[Decision]:
    """``SAMPLE_ID=LABEL`` or ``SAMPLE_ID=drop`` pairs (``kd labels set``) as decisions, every pair
    checked before anything changes: a known sample, a class name, each sample once."""
    names = store.class_names()
    decisions, seen = [], set()
    for pair in pairs:
        split = split_pair(pair)
        if split is None:
            raise KdError(f"{pair!r}: give SAMPLE_ID=LABEL or SAMPLE_ID=drop (e.g. 42=pos)")
        sample_id, value = split
        if sample_id in seen:
            raise KdError(f"{pair!r}: sample {sample_id} is given twice")
        seen.add(sample_id)
        try:
            action, label = read_decision(value, names, ("drop",))
        except KdError as exc:
            raise KdError(f"{pair!r}: {exc}") from None
        decisions.append(Decision(sample_id, None, action, label))
    with store.session() as s:
        rows = {i: r.label_id for i, r in _rows_by_id(s, Sample, seen).items()}
    for d in decisions:
        if d.sample_id not in rows:
            raise KdError(f"no sample {d.sample_id} in the store")
        if rows[d.sample_id] is None and d.action == "relabel":
            raise KdError(f"sample {d.sample_id} is unlabeled: kd labels set can drop it ({d.sample_id}=drop), not label it "
                          "(a pool text, or one `kd distill --augment` made, takes a label as it moves into train: `kd ingest FILE --take-pool` of a labeled copy of it)")  # ("edits labeled samples" hid the drop it takes)
    return decisions


def split_pair(pair: str) -> tuple[int, str] | None:
    """A ``kd labels set`` pair's sample id and value (``42=pos``; ``４２＝pos`` as a Chinese input method
    types the id and the sign, in full width), or None where it is no such pair."""
    at = min((i for i in (pair.find("="), pair.find("＝")) if i >= 0), default=-1)
    if at < 0:
        return None
    sample, value = unicodedata.normalize("NFKC", pair[:at]).strip(), pair[at + 1:].strip()
    if not (sample.isascii() and sample.isdigit()) or not value:
        return None
    return int(sample), value


def set_by_hand(s, labels: dict[int, int], names: Sequence[str]) -> set[int]:
    """The samples among ``labels`` (sample id: its label now) whose label a person gave or confirmed with
    ``kd labels set`` (any run): a pair naming the label it has now, in a set not undone. A confirmation
    (the label it had) records no edit, only the pair in its stage's config; ``clean`` leaves both alone."""
    out: set[int] = set()
    for stage_id, _, _, named in set_stages(s, set(labels)):
        if s.scalar(select(LabelEdit.id).where(LabelEdit.stage_id == stage_id, LabelEdit.reverted_at.is_not(None)).limit(1)):
            continue  # (the set undone: every edit of a stage is reverted at once)
        for sample_id, value in named.items():
            try:
                action, label = read_decision(value, names, ("drop",))
            except KdError:
                continue
            if action == "relabel" and label == labels[sample_id]:
                out.add(sample_id)
    return out


def set_stages(s, within: set[int], *, after: int | None = None) -> list[tuple[int, str, str, dict[int, str]]]:
    """The succeeded ``kd labels set`` stages (any run; only those later than stage ``after``, where given),
    each as ``(stage id, name, run, {sample id: value})`` of its pairs naming a sample in ``within``."""
    query = select(Stage.id, Stage.name, Stage.config, Run.uniqid).join(Run, Run.id == Stage.run_id).where(
        Stage.kind == "clean", Stage.status == "succeeded")
    out = []
    for stage_id, name, config, run in s.execute(query.where(Stage.id > after) if after is not None else query).all():
        pairs = (config or {}).get("edits")  # (a `kd labels set` stage's SAMPLE_ID=LABEL pairs)
        if not isinstance(pairs, list):
            continue
        named = {split[0]: split[1] for split in map(split_pair, map(str, pairs)) if split is not None and split[0] in within}
        if named:
            out.append((stage_id, name, run, named))
    return sorted(out)


# clean, undo, history ----------------------------------------------------------------------
def plan_clean(store: Store, run: str, *, action: str, min_score: float) -> list[Decision]:
    """The decisions ``kd labels clean`` hands to :func:`apply` (with ``skip_edited``): one for each
    of the run's undecided (open or flagged) issues scoring at least ``min_score``."""
    return clean_plan(store, run, action=action, min_score=min_score)[0]


def preview_clean(store: Store, run: str, *, action: str, min_score: float) -> list[dict[str, Any]]:
    """``plan_clean`` for a person to judge (``--dry-run``); see :func:`clean_plan`."""
    return clean_plan(store, run, action=action, min_score=min_score)[1]


def clean_plan(store: Store, run: str, *, action: str, min_score: float) -> tuple[list[Decision], list[dict[str, Any]]]:
    """``(decisions, preview)`` read once: the preview has each issue the decisions decide, with the
    sample's text, its current label, the new one, the issue's score and ``effect``: ``change``,
    ``unchanged`` (a relabel to the label it has, a flag of a flagged issue), ``edited``: its label
    or dropped flag changed since detection (by hand, or by another run's clean), so clean leaves it
    to a person, ``rejected``: a review kept its label (:func:`kept_in_review`), or ``set``: a person
    gave or confirmed it with ``kd labels set`` (:func:`set_by_hand`)."""
    planned = _planned(store, run, action=action, min_score=min_score)
    preview = [
        {"sample_id": d.sample_id, "issue_id": d.issue_id, "action": d.action, "current": i["current"],
         "new": i["suggested"] if d.action == "relabel" else None, "score": i["score"], "text": i["text"],
         "dropped": i["dropped"], "effect": state}
        for d, i, state in planned
    ]
    return [d for d, _, _ in planned], preview


def _planned(store: Store, run: str, *, action: str, min_score: float) -> list[tuple[Decision, dict[str, Any], str]]:
    if action not in ACTIONS:
        raise KdError(f"--action must be one of {', '.join(ACTIONS)}")
    names = store.class_names()
    out = []
    undecided = [i for i in issues(store, run, status=UNDECIDED) if i["score"] >= min_score]
    with store.session() as s:
        current = {i["sample_id"]: names.index(i["current"]) for i in undecided if i["current"] is not None}
        kept, hand = kept_in_review(s, current), set_by_hand(s, current, names)
    for i in undecided:
        # an issue whose suggestion is its given label (a low-confidence flag, an ensemble that still sides with
        # the label) has nothing to relabel to: flagged for a person (relabel "applied" it unchanged, and it left
        # every later review sheet)
        act = "flag" if action == "relabel" and i["suggested"] == i["given"] else action
        d = Decision(i["sample_id"], i["issue_id"], act, names.index(i["suggested"]) if act == "relabel" else None)
        if act != "flag" and (i["current"] != i["given"] or i["dropped"]):  # (a flag changes no label)
            state = "edited"
        elif act != "flag" and i["sample_id"] in kept:
            state = "rejected"
        elif act != "flag" and i["sample_id"] in hand:
            state = "set"
        elif (act == "relabel" and i["current"] == i["suggested"]) or (act == "flag" and i["status"] == "flagged"):
            state = "unchanged"
        else:
            state = "change"
        out.append((d, i, state))
    return out


def kept_in_review(s, labels: dict[int, int]) -> set[int]:
    """The samples among ``labels`` (sample id: its label now) whose label a person kept: an issue of
    any detection, any run, says it is wrong and a review sheet rejected that (``reject``, still
    standing: an undo of the review reopens it) while the sample had the label it has now."""
    out: set[int] = set()
    for chunk in chunks(sorted(labels), ID_CHUNK):
        rows = s.execute(select(LabelIssue.id, LabelIssue.sample_id, LabelIssue.given_label_id, Stage.config)
                         .outerjoin(Stage, Stage.id == LabelIssue.decided_stage_id)
                         .where(LabelIssue.sample_id.in_(chunk), LabelIssue.status == "rejected")).all()
        # a sample relabeled since its detection kept the label it had then, not the one the issue judged
        # (``apply`` records it in the rejecting stage's config: ``kept_labels``)
        out.update(sid for issue_id, sid, given, config in rows
                   if labels[sid] == ((config or {}).get("kept_labels") or {}).get(str(issue_id), given))
    return out


def apply(store: Store, stage_id: int, decisions: Sequence[Decision], *, reason: str, skip_edited: bool = False) -> dict[str, int]:
    """Apply decisions in one transaction, one ``label_edits`` row per change; returns counts.

    ``skip_edited`` (``kd labels clean``): an issue whose sample's label or dropped flag changed
    since detection (a person's edit, another run's clean) is left undecided and counted as
    ``skipped_edited``: an automatic rule does not override it (a person's sheet or ``kd labels set`` may);
    nor one whose label a person kept in an earlier review (:func:`kept_in_review`, a new detection flagging
    it again), counted as ``skipped_rejected``; nor one a person set or confirmed with ``kd labels set``
    (:func:`set_by_hand`), counted as ``skipped_set``. The rows are written set-based, ``EDIT_CHUNK`` decisions
    at a time (a bar from ``BAR_FROM`` of them), all in the one transaction."""
    counts = {"relabel": 0, "drop": 0, "flag": 0, "reject": 0, "unchanged": 0,
              **({"skipped_edited": 0, "skipped_rejected": 0, "skipped_set": 0} if skip_edited else {})}
    # stages too, and before the label tables, as every writer of stages takes them (``runs``: starting a stage,
    # ending an --overwrite): the stage's config is written below (``redecided``), and taken then, with the label
    # tables held, PostgreSQL found a deadlock with an --overwrite starting or ending meanwhile (one of them failed)
    names = store.class_names() if skip_edited else []
    with store.write_session("samples", "stages", "label_edits", "label_issues") as s, \
            progress(disable=len(decisions) < BAR_FROM) as bar:
        now = utcnow()  # dated under the writer lock: a stage reading labels meanwhile (``read_labeled``) has it or not by this date
        # read under the writer lock: a clean or an import that ran meanwhile has decided its issues
        stage = s.get(Stage, stage_id) if stage_id is not None else None
        replaces = f"{stage.name}{PARKED}" if stage is not None else None  # the stage an --overwrite replaces: its decisions are redone
        # (their columns, not ORM rows: the decisions change them here, and each chunk's changes are written set-based)
        samples = _rows_by_id(s, Sample, [d.sample_id for d in decisions], Sample.label_id, Sample.dropped)
        issues = _rows_by_id(s, LabelIssue, [d.issue_id for d in decisions if d.issue_id is not None], LabelIssue.stage_id,
                             LabelIssue.given_label_id, LabelIssue.suggested_label_id, LabelIssue.status, LabelIssue.decided_stage_id)
        deciders = dict(s.execute(select(Stage.id, Stage.name).where(
            Stage.id.in_({i.decided_stage_id for i in issues.values() if i.decided_stage_id is not None} or {-1}))).all())
        # a detection an --overwrite is replacing (parked while the new one runs): its issues go when the
        # new one succeeds, and the edits deciding them would stand with no issue (detect --overwrite
        # refuses a detection whose decided issues' edits stand, but it checked before these existed)
        parked = s.execute(select(Stage.name, Run.uniqid).join(Run, Run.id == Stage.run_id).where(
            Stage.id.in_({i.stage_id for i in issues.values()} or {-1}), Stage.name.contains(PARKED, autoescape=True))).first()
        if parked is not None:
            raise KdError(f"the detection of run {parked.uniqid!r} is being replaced (`kd labels detect --overwrite` is running): "
                          "no label was changed; run this again once it has ended, against the new detection")
        redecided: dict[str, list] = {}  # issue id: [status, deciding stage] before this stage re-decided it
        kept_labels: dict[str, int] = {}  # issue id: the label its reject kept, where not the issue's given one (``kept_in_review``)
        notes: dict[str, str] = {}  # issue id: a reject's reviewer comment (a reject records no edit to carry it)
        accepted: dict[str, bool] = {}  # issue id: a "reject" that named (accepted) the suggestion the sample already had
        current = {sid: row.label_id for sid, row in samples.items() if row.label_id is not None}
        kept = kept_in_review(s, current) if skip_edited else set()
        hand = set_by_hand(s, current, names) if skip_edited else set()
        task = bar.add_task("label edits", total=len(decisions), unit="decision")
        edits: list[dict[str, Any]] = []  # the chunk's changes, written at its end (an error after them: the transaction rolls back)
        changed: dict[int, Any] = {}
        decided: dict[int, Any] = {}
        for n, d in enumerate(decisions, start=1):
            sample = samples.get(d.sample_id)
            if sample is None:
                raise KdError(f"no sample {d.sample_id} in the store: no label was changed")
            issue = issues.get(d.issue_id) if d.issue_id is not None else None
            if d.issue_id is not None and issue is None:
                raise KdError(f"issue {d.issue_id} is gone (a detection replaced meanwhile?): no label was changed")
            if issue is not None and issue.status not in UNDECIDED and not (replaces and deciders.get(issue.decided_stage_id, "").startswith(replaces)):
                by = deciders.get(issue.decided_stage_id)
                raise KdError(f"issue {issue.id} (sample {d.sample_id}) was {issue.status} meanwhile"
                              f"{f' by stage {by!r}' if by else ''}: no label was changed")
            if skip_edited and d.action != "flag" and issue is not None and (sample.label_id != issue.given_label_id or sample.dropped):
                counts["skipped_edited"] += 1  # (read under the writer lock: an edit made since the plan counts too)
            elif skip_edited and d.action != "flag" and issue is not None and d.sample_id in kept:
                counts["skipped_rejected"] += 1  # a person kept this label (a review's reject): no rule overrides it
            elif skip_edited and d.action != "flag" and issue is not None and d.sample_id in hand:
                counts["skipped_set"] += 1  # a person set or confirmed it (`kd labels set`), before the detection or since
            elif d.action == "flag" and issue is not None and issue.status == "flagged":
                counts["unchanged"] += 1  # flagged already: the first flag stands (and its undo)
            else:
                if d.action == "reject":
                    counts["reject"] += 1
                    if issue is not None and d.note:
                        notes[str(issue.id)] = d.note
                    if issue is not None and d.new_label is not None and d.new_label == issue.suggested_label_id:
                        accepted[str(issue.id)] = True
                    if issue is not None and sample.label_id != issue.given_label_id:  # (edited since detection: the label kept is this one)
                        kept_labels[str(issue.id)] = sample.label_id
                elif (d.action == "relabel" and (sample.label_id == d.new_label and not sample.dropped)) or (d.action == "drop" and sample.dropped):
                    counts["unchanged"] += 1  # (a drop of a dropped sample: no edit, which undo would revert to dropped anyway)
                else:
                    old, was_dropped = sample.label_id, sample.dropped
                    if d.action == "relabel":
                        sample.label_id, sample.dropped = d.new_label, False
                    elif d.action == "drop":
                        sample.dropped = True
                    edits.append(dict(
                        sample_id=d.sample_id, stage_id=stage_id, action=d.action, old_label_id=old,
                        new_label_id=sample.label_id if d.action != "drop" else None, old_dropped=was_dropped,
                        new_dropped=sample.dropped, reason=f"{reason}: {d.note}" if d.note else reason, created_at=now, reverted_at=None,
                    ))
                    changed[d.sample_id] = sample
                    counts[d.action] += 1
                if issue is not None:
                    if replaces and deciders.get(issue.decided_stage_id, "").startswith(replaces):
                        # the decision of the stage it replaces, put back should this one fail (``discard_failed``)
                        redecided[str(issue.id)] = [issue.status, issue.decided_stage_id]
                    issue.status = {"reject": "rejected", "flag": "flagged"}.get(d.action, "applied")
                    issue.decided_stage_id = stage_id
                    decided[issue.id] = issue
            if n % EDIT_CHUNK == 0 or n == len(decisions):
                _write_decisions(s, edits, changed, decided)
                edits, changed, decided = [], {}, {}
                bar.update(task, completed=n)
        if stage is not None:  # (in the edits' transaction)
            for key, more in (("redecided", redecided), ("kept_labels", kept_labels), ("notes", notes), ("accepted", accepted)):
                _add_to_config(stage, key, more)
    return counts


EDIT_CHUNK = 2_000  # decisions (or edits undone) written a time: ids in one IN list, well under SQLite's and PostgreSQL's limits
BAR_FROM = 5_000  # decisions or edits: fewer are written in a second or two, with no bar


def _write_decisions(s, edits: list[dict[str, Any]], samples: dict[int, Any], issues: dict[int, Any]) -> None:
    """One chunk of ``apply``: its ``label_edits`` rows (in order: their ids follow the decisions), and
    the labels and dropped flags of ``samples`` and the decisions of ``issues`` as they are now, one
    UPDATE per value and chunk of ids."""
    if edits:
        s.execute(insert(LabelEdit.__table__), edits)
    _write_samples(s, samples)
    _update_by_id(s, LabelIssue.__table__, {i: {"status": r.status, "decided_stage_id": r.decided_stage_id} for i, r in issues.items()})


def _write_samples(s, samples: dict[int, Any]) -> None:
    """The labels and dropped flags of ``samples`` (``_rows_by_id``'s, changed in place) as they are now."""
    _update_by_id(s, Sample.__table__, {i: {"label_id": r.label_id, "dropped": bool(r.dropped)} for i, r in samples.items()})


def _update_by_id(s, table, values: dict[int, dict[str, Any]], *, size: int | None = None) -> None:
    """``UPDATE table SET ... WHERE id IN (...)``: the rows ``values`` gives (id: its new columns)
    grouped by the values they take, in chunks of ``size`` ids (``EDIT_CHUNK``)."""
    groups: dict[tuple, list[int]] = {}
    for i, row in values.items():
        groups.setdefault(tuple(row.items()), []).append(i)
    for row, ids in groups.items():
        for chunk in chunks(sorted(ids), size or EDIT_CHUNK):
            s.execute(update(table).where(table.c.id.in_(chunk)).values(dict(row)))


def _rows_by_id(s, model, ids, *columns) -> dict[int, Any]:
    """``{id: row}`` of ``model`` for ``ids``, read in chunks: the ORM rows (they stay in the session),
    or, given ``columns``, plain records of the id and those columns alone, which a caller may change
    and write back set-based (``_update_by_id``)."""
    out: dict[int, Any] = {}
    query = select(model.id, *columns) if columns else select(model)
    for chunk in chunks(sorted({int(i) for i in ids if 0 < int(i) <= MAX_ID}), ID_CHUNK):  # others name no row
        part = query.where(model.id.in_(chunk))
        out.update((r.id, SimpleNamespace(**r._mapping)) if columns else (r.id, r)
                   for r in (s.execute(part) if columns else s.scalars(part)))
    return out


def undo(store: Store, run: str, stage_name: str | None = None) -> dict[str, Any]:
    """Revert the edits of the run's latest clean stage (or ``stage_name``) and reopen the issues it
    decided (rejections included); refuses when a later edit touched the same samples, naming them.
    Returns ``{"stage": the stage undone, "reverted": edits reverted, "flags": how many of them were
    flags (``--action flag``: no label changed), "reopened": issues reopened}``,
    the stages that trained on or judged its labels, and ``set_since``: the later ``kd labels set``
    pairs that confirmed a label it made (no edit recorded) and that the undo reverted."""
    stages = [s for s in store.stages_of(run) if s.kind == "clean" and (stage_name is None or s.name == stage_name)]
    if not stages:
        if not store.run_exists(run):
            raise store.no_run(run)
        cleans = [s.name for s in store.stages_of(run) if s.kind == "clean" and "~" not in s.name]  # (not replaced or failed attempts)
        if stage_name is not None and cleans:  # (not "no clean stage": it has some, none of that name)
            raise KdError(f"run {run!r} has no clean stage {stage_name!r} (its clean stages: {', '.join(cleans)})")
        raise KdError(f"run {run!r} has no clean stage to undo")
    names = store.class_names()
    # (stages too, in apply's order: the stage undone records the rejects it reopens, ``undone_rejects``)
    with store.write_session("samples", "stages", "label_edits", "label_issues") as s:
        for stage in reversed(stages):
            edits = _standing_edits(s, stage)
            decided = s.scalar(select(func.count()).select_from(LabelIssue).where(LabelIssue.decided_stage_id == stage.id))
            if edits or decided:
                break
        else:
            which = f"clean stage {stage_name!r}" if stage_name is not None else "clean stage(s)"
            raise KdError(f"the {which} of run {run!r} {'has' if stage_name is not None else 'have'} nothing left to undo")
        if stage.status == "running" and process_state(stage) is True:  # its edits so far; it would then end succeeded
            raise KdError(f"clean stage {stage.name!r} of run {run!r} is still running (process {stage.process.split(':')[0]} "
                          f"on {stage.host}): undo it once it has ended")
        later = _later_touches(s, stage, edits)
        if later:
            touched = sorted({r.sample_id for r in later})
            shown = ", ".join(str(i) for i in touched[:20]) + (f" and {len(touched) - 20} more" if len(touched) > 20 else "")
            by = sorted({f"{r.uniqid}/{r.name}" if r.name else "a deleted stage" for r in later})
            raise KdError(
                f"later edits or decisions touched samples {shown} after stage {stage.name!r}: undo those first "
                f"(stage{'s' if len(by) > 1 else ''} {', '.join(by)})"
            )
        confirmed = _set_since(s, stage, edits, names)
        # (only what the set said holds now: one an earlier undo reverted was named by that undo, and this
        # undo does not revert it)
        held = _rows_by_id(s, Sample, {c["sample_id"] for c in confirmed}, Sample.label_id, Sample.dropped)
        confirmed = [c for c in confirmed if _holds(held[c["sample_id"]], c["action"], c["label_id"])]
        _record_undone_rejects(s, stage.id)
        with progress(disable=len(edits) < BAR_FROM) as bar:
            task = bar.add_task("label edits undone", total=len(edits), unit="edit")
            reopened = _revert(s, stage, edits, on_chunk=lambda n: bar.advance(task, n))
        # a stage of test labels alone (a fixed test set): no model learned or was chosen on them, nor a detection judged them
        learned = any(row.split != "test" for row in _rows_by_id(s, Sample, {e.sample_id for e in edits if e.action != "flag"}, Sample.split).values())
        samples = _rows_by_id(s, Sample, {c["sample_id"] for c in confirmed}, Sample.label_id, Sample.dropped)
        # (what the set said no longer holds: the undo put back the label from before the stage); a sample
        # set alike twice once, the latest set: the command the warning gives names each sample once
        undone = list({c["sample_id"]: c for c in confirmed
                       if not _holds(samples[c["sample_id"]], c["action"], c["label_id"])}.values())
    return {"stage": stage.name, "reverted": len(edits), "flags": sum(e.action == "flag" for e in edits), "reopened": reopened,
            "trained_on_it": stages_trained_on(store, stage.id) if learned else [],
            "detected_on_it": stages_trained_on(store, stage.id, kinds=("detect",)) if learned else [],
            "set_since": [{"sample_id": c["sample_id"], "stage": c["stage"], "set": c["set"]} for c in undone]}


def _record_undone_rejects(s, stage_id: int, also: Sequence[int] = ()) -> None:
    """Put the issues ``stage_id`` rejected, which its undo reopens, in its config (``undone_rejects``:
    issue id to when): a reject records no edit, so once reopened it was gone from ``kd labels history``,
    where the undone relabels of the same review stayed, marked reverted. ``also``: issues it rejected that
    another stage decided since (an ``--overwrite`` replacing it). What each issue was is kept with it
    (``undone_issues``): a detection replaced or deleted since takes its issues along."""
    def issues(condition) -> list[Any]:
        return s.execute(
            select(LabelIssue.id, LabelIssue.sample_id, LabelIssue.given_label_id, LabelIssue.suggested_label_id, LabelIssue.score,
                   Stage.name, Run.uniqid)
            .join(Stage, Stage.id == LabelIssue.stage_id).join(Run, Run.id == Stage.run_id).where(condition)
        ).all()

    rows = issues((LabelIssue.decided_stage_id == stage_id) & (LabelIssue.status == "rejected"))
    seen = {r.id for r in rows}  # (``also``: in blocks of ids, tens of thousands were past PostgreSQL's 65,535 parameters)
    rows += [r for chunk in chunks(sorted(set(also) - seen), ID_CHUNK) for r in issues(LabelIssue.id.in_(chunk))]
    at = iso_utc(utcnow())
    stage = s.get(Stage, stage_id)
    _add_to_config(stage, "undone_rejects", {str(r.id): at for r in rows})
    _add_to_config(stage, "undone_issues", {str(r.id): {"sample_id": r.sample_id, "given_label_id": r.given_label_id,
                                                        "suggested_label_id": r.suggested_label_id, "score": r.score,
                                                        "detection": r.name, "run": r.uniqid} for r in rows})


def _add_to_config(stage: Stage, key: str, more: dict) -> None:
    """Merge ``more`` into the dict at ``key`` of ``stage``'s config (a new config object, which the ORM
    sees as a change); nothing where ``more`` is empty."""
    if more:
        stage.config = {**(stage.config or {}), key: {**(stage.config or {}).get(key, {}), **more}}


def _set_since(s, stage: Stage, edits: list[Any], names: Sequence[str]) -> list[dict[str, Any]]:
    """The ``kd labels set`` pairs of later stages (``RUN/NAME``) that named a sample whose label or
    dropped flag ``stage``'s standing ``edits`` changed and found it as that edit left it: such a set
    records no edit ("unchanged"), so no later edit stops an undo from reverting what a person
    confirmed by hand; the undo says so (``set_since``)."""
    touched = {e.sample_id for e in edits if e.action != "flag"}
    if not touched:
        return []
    out = []
    for stage_id, name, run, named in set_stages(s, touched, after=stage.id):
        edited = {i for chunk in chunks(sorted(named), ID_CHUNK)
                  for i in s.scalars(select(LabelEdit.sample_id).where(LabelEdit.stage_id == stage_id, LabelEdit.sample_id.in_(chunk)))}
        for sample_id, value in named.items():
            if sample_id in edited:  # (an edit of its own: a later touch, or reverted by undoing that stage)
                continue
            try:
                action, label = read_decision(value, names, ("drop",))
            except KdError:
                continue
            out.append({"sample_id": sample_id, "stage": f"{run}/{name}", "set": value, "action": action, "label_id": label})
    return out


def _holds(sample: Sample, action: str, label: int | None) -> bool:
    """Whether the sample is as a ``kd labels set`` decision (``drop``, or ``relabel`` to ``label``) leaves it."""
    return bool(sample.dropped) if action == "drop" else (sample.label_id == label and not sample.dropped)


def undoable(store: Store, stage_id: int) -> bool:
    """Whether ``kd labels undo`` has something to revert of the clean stage ``stage_id``: an edit not
    reverted, or an issue it decided (a `kd labels set` that changed nothing has neither)."""
    with store.engine.connect() as conn:
        edits = conn.scalar(select(func.count()).select_from(LabelEdit).where(LabelEdit.stage_id == stage_id, LabelEdit.reverted_at.is_(None)))
        decided = conn.scalar(select(func.count()).select_from(LabelIssue).where(LabelIssue.decided_stage_id == stage_id))
    return bool(edits or decided)


def _standing_edits(s, stage: Stage) -> list[Any]:
    """The stage's edits not reverted, newest first: rows of what an undo reads of them (id,
    sample_id, action, old_label_id, old_dropped)."""
    return list(s.execute(
        select(LabelEdit.id, LabelEdit.sample_id, LabelEdit.action, LabelEdit.old_label_id, LabelEdit.old_dropped)
        .where(LabelEdit.stage_id == stage.id, LabelEdit.reverted_at.is_(None)).order_by(LabelEdit.id.desc())
    ).all())


def _later_touches(s, stage: Stage, edits: list[Any]) -> list[Any]:
    """``(sample_id, stage name, run)`` of the later edits and decisions that touched the samples whose
    label or dropped flag ``stage``'s standing ``edits`` changed: reverting those would undo them too."""
    if not edits:
        return []
    # reverting a flag restores nothing, so a later edit of a flagged sample is no conflict (and the
    # flag's recorded dropped flag is not put back)
    mine = select(LabelEdit.sample_id).where(LabelEdit.stage_id == stage.id, LabelEdit.reverted_at.is_(None),
                                             LabelEdit.action != "flag")
    later = s.execute(
        select(LabelEdit.sample_id, Stage.name, Run.uniqid)
        .outerjoin(Stage, Stage.id == LabelEdit.stage_id).outerjoin(Run, Run.id == Stage.run_id)
        .where(
            LabelEdit.sample_id.in_(mine), LabelEdit.id > min(e.id for e in edits),
            LabelEdit.stage_id.is_distinct_from(stage.id), LabelEdit.reverted_at.is_(None),  # NULL: a deleted stage
            LabelEdit.action != "flag",  # a flag changes no label: undoing under it is no conflict
        )
    ).all()
    # a later stage that judged these labels as they stand (left unchanged, rejected an issue)
    return later + s.execute(
        select(LabelIssue.sample_id, Stage.name, Run.uniqid)
        .join(Stage, Stage.id == LabelIssue.decided_stage_id).join(Run, Run.id == Stage.run_id)
        .where(LabelIssue.sample_id.in_(mine), LabelIssue.decided_stage_id > stage.id,
               LabelIssue.status.in_(("applied", "rejected")))
    ).all()


def reverts_cleanly(s, stage: Stage) -> bool:
    """Whether :func:`discard_failed` would revert every standing edit of clean stage ``stage``."""
    return not _later_touches(s, stage, _standing_edits(s, stage))


def _revert(s, stage: Stage, edits: list[Any], *, kept: set[int] = frozenset(), restore: bool = False,
            on_chunk: Callable[[int], None] | None = None) -> int:
    """Put back what ``stage``'s standing ``edits`` (newest first, ``_standing_edits``) changed, mark them reverted and
    reopen the issues it decided; returns how many issues were reopened. ``kept``: samples whose
    issues stay decided (their edits stand). ``restore``: an issue it re-decided (``--overwrite``)
    goes back to the decision of the stage it was replacing, where that stage is still on record.
    Written set-based, ``EDIT_CHUNK`` edits at a time (``on_chunk(n)`` after each), in the caller's transaction."""
    touched = {e.sample_id for e in edits}
    if restore:
        for issue_id, (status, by) in ((stage.config or {}).get("redecided") or {}).items():
            issue = s.get(LabelIssue, int(issue_id))
            if issue is not None and issue.decided_stage_id == stage.id and issue.sample_id not in kept and s.get(Stage, by) is not None:
                issue.status, issue.decided_stage_id = status, by
    now = utcnow()
    samples = _rows_by_id(s, Sample, touched, Sample.label_id, Sample.dropped)
    for part in chunks(edits, EDIT_CHUNK):
        changed = {}
        for e in part:  # newest first, so a sample edited twice in one stage ends at its first old state
            if e.action == "flag":  # (its old_dropped is the flag the sample had then: a later drop or its undo stands)
                continue
            sample = changed[e.sample_id] = samples[e.sample_id]
            if e.action == "relabel":
                sample.label_id = e.old_label_id
            if e.old_dropped is not None:
                sample.dropped = e.old_dropped
            elif e.action == "drop":  # an edit made before kd recorded the dropped flag
                sample.dropped = False
        _write_samples(s, changed)
        s.execute(update(LabelEdit.__table__).where(LabelEdit.__table__.c.id.in_([e.id for e in part])).values(reverted_at=now))
        if on_chunk is not None:
            on_chunk(len(part))
    if kept:  # (in chunks: an IN list of every id is "too many SQL variables")
        ids = [i for i, sample in s.execute(select(LabelIssue.id, LabelIssue.sample_id).where(LabelIssue.decided_stage_id == stage.id))
               if sample not in kept]
        reopened = sum(reopen(s, LabelIssue.id.in_(chunk), undoing=stage.id) for chunk in chunks(ids, ID_CHUNK))
    else:
        reopened = reopen(s, LabelIssue.decided_stage_id == stage.id, undoing=stage.id)
    # issues decided before kd recorded the deciding stage: those of the same samples in this run (not by
    # a `kd labels set` stage, its config holding its edits: it decides no issue, and came after 0005)
    if touched and "edits" not in (stage.config or {}):
        reopened += s.execute(
            update(LabelIssue).where(
                LabelIssue.decided_stage_id.is_(None), LabelIssue.sample_id.in_(select(LabelEdit.sample_id).where(LabelEdit.stage_id == stage.id)),
                LabelIssue.status.in_(("applied", "flagged")),
                LabelIssue.stage_id.in_(select(Stage.id).where(Stage.run_id == stage.run_id)),
            ).values(status="open")
        ).rowcount
    return reopened


def discard_failed(store: Store, stage_id: int) -> str | None:
    """What a failed stage did to labels is taken back, so that a failed stage changed nothing: a clean
    stage's edits committed before it failed (its metrics or its end not recorded: an error, Ctrl-C,
    a killed process) are reverted and the issues it decided reopened, as ``kd labels undo`` does; a
    detect stage's issues that nothing decided go. Returns None, or why its edits stand (a later edit
    touched the same samples: reverting would undo that one too)."""
    with store.session() as s:
        kind = s.scalar(select(Stage.kind).where(Stage.id == stage_id))
    if kind == "detect":
        with store.write_session("label_issues") as s:
            s.execute(delete(LabelIssue).where(LabelIssue.stage_id == stage_id, LabelIssue.decided_stage_id.is_(None)))
        return None
    if kind != "clean":
        return None
    with store.write_session("samples", "label_edits", "label_issues") as s:
        stage = s.get(Stage, stage_id)
        edits = _standing_edits(s, stage)
        later = _later_touches(s, stage, edits)
        kept = {r.sample_id for r in later}  # reverting these would undo the later edit too: they stand
        _revert(s, stage, [e for e in edits if e.sample_id not in kept], kept=kept, restore=True)
        if not later:
            return None
        standing = [e for e in edits if e.sample_id in kept]
        run = s.get(Run, stage.run_id).uniqid
        # the name it keeps once it has failed: an --overwrite's gives its name back to the stage it was
        # replacing (`--stage NAME` would undo that one) and becomes NAME~failed-ID
        name = f"{stage.name}{FAILED}{stage.id}" if _replaced(s, run, stage.name)[0] else stage.name
        shown = ", ".join(str(i) for i in sorted(kept)[:20]) + (f" and {len(kept) - 20} more" if len(kept) > 20 else "")
        by = sorted({f"{r.uniqid}/{r.name}" if r.name else "a deleted stage" for r in later})
        undo_first = "; ".join(f"`kd labels undo --run {b.split('/', 1)[0]} --stage {b.split('/', 1)[1]}`" for b in by if "/" in b)
        return (f"its {len(standing)} label edit{'' if len(standing) == 1 else 's'} of sample{'s' if len(kept) > 1 else ''} {shown} stand{'s' if len(standing) == 1 else ''} (later edits or "
                f"decisions touched them: stage{'s' if len(by) > 1 else ''} {', '.join(by)}): "
                f"{undo_first + ', then ' if undo_first else ''}`kd labels undo --run {run} --stage {name}`")


def stages_trained_on(store: Store, clean_stage_id: int, *, kinds: tuple[str, ...] = ("teach", "distill")) -> list[str]:
    """The teach and distill stages (``RUN/NAME``; or the stages of ``kinds``: detect, for the
    detections that judged them) whose labels had the edits of clean stage ``clean_stage_id`` in force
    (their ``labels_stage_ids``): an undo leaves them trained on labels that are no longer the store's.
    A stage still running (a distill started after the clean) read them too, recorded as it started."""
    with store.session() as s:
        rows = s.execute(select(Run.uniqid, Stage).join(Run, Run.id == Stage.run_id)
                         .where(Stage.kind.in_(kinds), Stage.status.in_(("succeeded", "running"))).order_by(Stage.id)).all()
    return [f"{run}/{st.name}" for run, st in rows if clean_stage_id in ((st.config or {}).get("labels_stage_ids") or ())
            and (st.status == "succeeded" or process_state(st) is not False)]  # (not one a killed process left running)


def rejudge_warning(store: Store, detections: list[str]) -> str:
    """The warning for the detect stages (``RUN/NAME``, ``undo``'s ``detected_on_it``) that judged the
    labels an undo reverted: their issues of the samples it put back read as edited since detection."""
    commands = []
    for item in detections:
        run, _, name = item.partition("/")
        commands.append(redetect_command(run, store.find_stage(run, name), store))
    return (f"{', '.join(detections)} judged the labels this undo reverted: `kd labels clean` leaves "
            f"{'its' if len(detections) == 1 else 'their'} issues of the samples it put back alone (edited since "
            f"detection); `{'`, `'.join(commands)}` judge{'s' if len(commands) == 1 else ''} the labels as they are now")


def reopen(s, which, *, undoing: int | None = None) -> int:
    """Make the issues ``which`` selects undecided again; returns how many. One whose sample a
    standing flag of its run made since its detection still marks (the flag stage decided it before
    a relabel re-decided it) goes back to ``flagged`` by that stage, the others to ``open``. ``undoing``: the stage whose
    own flags are being reverted (they do not count)."""
    rows = s.execute(select(LabelIssue.id, LabelIssue.stage_id, LabelIssue.sample_id).where(which)).all()
    if not rows:
        return 0
    run_of = dict(s.execute(select(Stage.id, Stage.run_id).where(Stage.id.in_({r.stage_id for r in rows}))).all())
    flags = []
    for chunk in chunks(sorted({r.sample_id for r in rows}), ID_CHUNK):  # one IN list of 33k ids: "too many SQL variables"
        flags += s.execute(
            select(LabelEdit.sample_id, LabelEdit.stage_id, Stage.run_id).join(Stage, Stage.id == LabelEdit.stage_id)
            .where(LabelEdit.action == "flag", LabelEdit.reverted_at.is_(None), LabelEdit.stage_id.is_distinct_from(undoing),
                   LabelEdit.sample_id.in_(chunk))
            .order_by(LabelEdit.id)
        ).all()  # (each sample's flags in one chunk, in order)
    flagged_by: dict[tuple[int, int], list[int]] = {}  # the standing flags of each sample in each run, oldest first
    for sample, stage, run in flags:
        flagged_by.setdefault((sample, run), []).append(stage)
    decided = {}
    for issue in rows:
        # the latest flag made since the issue's detection: one of an earlier detection of the run
        # (replaced by `kd labels detect --overwrite`) flagged another issue, not this one
        by = next((st for st in reversed(flagged_by.get((issue.sample_id, run_of.get(issue.stage_id)), ())) if st > issue.stage_id), None)
        decided[issue.id] = {"status": "flagged", "decided_stage_id": by} if by is not None else {"status": "open", "decided_stage_id": None}
    _update_by_id(s, LabelIssue.__table__, decided, size=min(EDIT_CHUNK, ID_CHUNK))
    return len(rows)


def history(store: Store, sample_id: int) -> dict[str, Any]:
    names = store.class_names()
    with store.session() as s:
        sample = s.get(Sample, sample_id) if 0 < sample_id <= MAX_ID else None
        if sample is None:
            raise KdError(f"no sample {sample_id} in the store")
        rows = s.execute(
            select(LabelEdit, Stage.name, Run.uniqid, Stage.run_by).outerjoin(Stage, Stage.id == LabelEdit.stage_id)
            .outerjoin(Run, Run.id == Stage.run_id)
            .where(LabelEdit.sample_id == sample_id).order_by(LabelEdit.id)
        ).all()
        # a review sheet's reject records no edit (the label stays): the issue it decided says so, and an
        # undone one the config of the stage that made it (``undone_rejects``)
        by = aliased(Stage)
        found = s.execute(
            select(LabelIssue.id, LabelIssue.given_label_id, LabelIssue.suggested_label_id, LabelIssue.score, LabelIssue.status,
                   Stage.name.label("detection"), Run.uniqid, by.id.label("by_id"), by.name, by.config, by.run_by,
                   func.coalesce(by.ended_at, by.started_at).label("at"))
            .join(Stage, Stage.id == LabelIssue.stage_id).join(Run, Run.id == Stage.run_id)
            .outerjoin(by, by.id == LabelIssue.decided_stage_id)
            .where(LabelIssue.sample_id == sample_id).order_by(LabelIssue.id)
        ).all()
        rejected = [(r, r.by_id, r.name, r.config, r.run_by, r.at, None) for r in found if r.status == "rejected"]
        mine = {str(r.id): r for r in found}
        for st in s.execute(select(Stage.id, Stage.name, Stage.config, Stage.run_by, func.coalesce(Stage.ended_at, Stage.started_at).label("at"))
                            .where(Stage.kind == "clean").order_by(Stage.id)):
            kept = (st.config or {}).get("undone_issues") or {}  # (what the issue was: its detection may be gone since)
            for issue_id, undone_at in ((st.config or {}).get("undone_rejects") or {}).items():
                was = kept.get(issue_id)
                if was is not None and was.get("sample_id") == sample_id:
                    rejected.append((SimpleNamespace(id=int(issue_id), given_label_id=was["given_label_id"], suggested_label_id=was["suggested_label_id"],
                                                     score=was["score"], detection=was["detection"], uniqid=was["run"]),
                                     st.id, st.name, st.config, st.run_by, st.at, undone_at))
                elif was is None and issue_id in mine:  # (recorded before ``undone_issues``)
                    rejected.append((mine[issue_id], st.id, st.name, st.config, st.run_by, st.at, undone_at))
        # a `kd labels set` pair that found the sample as it set it records no edit: its stage's config has it
        # (a person's confirmation, which `kd labels clean` honours: ``set_by_hand``)
        confirmed = []
        for stage_id, stage_name, run, named in set_stages(s, {sample_id}):
            if s.scalar(select(LabelEdit.id).where(LabelEdit.stage_id == stage_id, LabelEdit.sample_id == sample_id).limit(1)) is None:
                st = s.get(Stage, stage_id)
                # (a set undone since: every edit of a stage is reverted at once, and clean no longer honours it)
                undone = s.scalar(select(func.max(LabelEdit.reverted_at)).where(LabelEdit.stage_id == stage_id))
                confirmed.append({"run": run, "stage": stage_name, "stage_id": stage_id, "set": named[sample_id],
                                  "reason": (st.config or {}).get("reason"), "at": iso_utc(st.ended_at or st.started_at), "by": st.run_by,
                                  "reverted_at": iso_utc(undone)})

    def name(i):
        return None if i is None else names[i]

    return {
        "sample_id": sample_id,
        "text": sample.text,
        "original": name(sample.orig_label_id),
        "current": name(sample.label_id),
        "dropped": sample.dropped,
        "edits": [
            {
                "id": e.id, "run": run, "stage": stage, "stage_id": e.stage_id, "action": e.action, "old": name(e.old_label_id), "new": name(e.new_label_id),
                "old_dropped": e.old_dropped, "new_dropped": e.new_dropped,
                "reason": reason, "at": iso_utc(e.created_at), "by": who,
                "reverted_at": iso_utc(e.reverted_at),
            }
            for (e, stage, run, _), (who, reason) in ((row, _taken_by(row[0], row[3])) for row in rows)
        ],
        "rejected": [r for _, r in sorted((  # (the label kept: the one the sample had then, ``kept_labels`` where edited since detection)
            ((iso_utc(at) or "", stage_id or 0, r.id), {
                "issue_id": r.id, "run": r.uniqid, "detection": r.detection, "stage": stage, "stage_id": stage_id, "suggested": name(r.suggested_label_id),
                "kept": name(((config or {}).get("kept_labels") or {}).get(str(r.id), r.given_label_id)), "score": round(r.score, 6),
                "reason": _reject_reason(config or {}, r.id),
                "accepted": bool(((config or {}).get("accepted") or {}).get(str(r.id))),  # (the suggestion it had, accepted)
                "at": iso_utc(at), "by": who, "reverted_at": undone_at,
            })
            for r, stage_id, stage, config, who, at, undone_at in rejected
        ), key=lambda t: t[0])],
        "confirmed": confirmed,
    }


def _taken_by(edit: Any, who: str | None) -> tuple[str | None, str | None]:
    """``(by, reason)`` of a history edit: a take (of no stage, so no stage's ``run_by``) records who took it
    at the end of its reason, ``kd ingest --take-pool: FILE:LINE, by USER``, which ``by`` gets as a stage's edit does."""
    if edit.action == "take" and who is None and edit.reason and ", by " in edit.reason:
        reason, by = edit.reason.rsplit(", by ", 1)
        return by, reason
    return who, edit.reason


def _reject_reason(config: dict, issue_id: int) -> str | None:
    """Why a review's reject was made: its sheet, and the reviewer's comment on the row."""
    note = (config.get("notes") or {}).get(str(issue_id))
    sheet = f"review sheet {config['sheet']}" if config.get("sheet") else None
    return f"{sheet}: {note}" if sheet and note else sheet or note


def config_dict(cfg: DetectConfig) -> dict:
    d = asdict(cfg)
    d["methods"], d["student_votes"] = list(cfg.methods), list(cfg.student_votes)
    return d
