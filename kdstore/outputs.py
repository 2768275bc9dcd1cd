"""Storing what a trained model says about the store's samples: logits, predictions, split metrics."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from itertools import repeat
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import exists, select

from . import vectors
from .errors import KdError
from .metrics import classification_metrics
from .probs import softmax
from .progress import progress
from .schema import LabelEdit, Logit, Prediction, Sample, Stage
from .store import ID_CHUNK, SampleSet, Store, bulk_insert, chunks

if TYPE_CHECKING:
    from .distributed import Dist


def average_probs_as_logits(parts: list[np.ndarray], weights: np.ndarray | None = None) -> np.ndarray:
    """Logits whose softmax is the mean of the parts' softmax (an ensemble's probabilities), weighted
    by ``weights`` (normalized; None: equal)."""
    if parts and not len(parts[0]):  # no sample (a --folds teacher of a store whose samples are all train: no others)
        return np.zeros(np.shape(parts[0]), dtype=np.float32)  # (np.average of none divides by zero)
    mean = np.average([softmax(p) for p in parts], axis=0, weights=weights)
    return np.log(np.clip(mean, 1e-12, None)).astype(np.float32)


class OutOfFold:
    """The scores of K fold models put together: each fold's held-out samples get that fold's model's
    logits (out-of-fold), every other sample of ``everything`` the K models' average probability.
    Each rank scores its shard of each part (``dist``)."""

    def __init__(self, everything: SampleSet, held_out: SampleSet, folds: np.ndarray, dist: "Dist"):
        ids = {int(i) for i in held_out.ids}
        others = everything.subset(np.array([int(i) not in ids for i in everything.ids], dtype=bool))
        self.others = others.subset(dist.shard(len(others)))
        self.held_out, self.folds, self.dist = held_out, folds, dist
        self._ids: list[np.ndarray] = []
        self._logits: list[np.ndarray] = []
        self._others: list[np.ndarray] = []

    def texts(self, k: int) -> list[str]:
        """What fold ``k``'s model scores on this rank: its held-out samples, then the others."""
        self._held = self.held_out.subset(self.folds == k)
        self._held = self._held.subset(self.dist.shard(len(self._held)))
        return self._held.texts + self.others.texts

    def add(self, logits: np.ndarray) -> None:
        """Fold ``k``'s logits for ``texts(k)``, in that order."""
        n = len(self._held)
        self._ids.append(self._held.ids)
        self._logits.append(logits[:n])
        self._others.append(logits[n:])

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(sample ids, logits)`` of this rank's share of every sample."""
        ids = np.concatenate(self._ids + [self.others.ids])
        return ids, np.concatenate(self._logits + [average_probs_as_logits(self._others)])


def store_outputs(store: Store, stage_id: int, samples: SampleSet, logits: np.ndarray, names: list[str]) -> dict:
    """Write logits and predictions for ``samples`` and final metrics for each labeled split.

    Returns the metrics by split.
    """
    write_scores(store, stage_id, samples.ids, logits)
    return store_split_metrics(store, stage_id, samples, logits, names)


def write_scores(store: Store, stage_id: int, sample_ids: np.ndarray, logits: np.ndarray, *, missing_only: bool = False) -> int:
    """Logits and the predictions they make for ``sample_ids``, in one transaction: a sample has
    both or neither, so "has logits" can mean "is scored". Returns the rows written.

    ``missing_only``: under the writer lock, leave out the samples that have logits by now (two
    processes scoring what a teacher lacks, e.g. two distills with ``--augment``, score the same
    samples alike; the second writes what the first did not)."""
    if len(sample_ids) != len(logits):
        raise ValueError(f"{len(sample_ids)} sample ids but {len(logits)} logit rows")
    if len(sample_ids) == 0:
        return 0
    logits = np.asarray(logits)
    sample_ids = np.asarray(sample_ids)
    # stages too (before logits, as every writer that deletes a stage takes them): `kd teach --logits-only` is no
    # stage, so `kd runs delete` or the end of a `kd teach --overwrite` took its teacher meanwhile, and the insert
    # failed as "database error: FOREIGN KEY constraint failed"
    with (store.write_transaction("stages", "logits", "predictions") if missing_only else store.writer()) as conn:
        if missing_only:
            check_teacher_kept(conn.execute(select(Stage.name).where(Stage.id == int(stage_id))).scalar())
            have: list[int] = []
            for part in chunks(sorted(int(i) for i in sample_ids), ID_CHUNK):
                have += conn.execute(select(Logit.sample_id).where(Logit.stage_id == int(stage_id), Logit.sample_id.in_(part))).scalars().all()
            keep = ~np.isin(sample_ids, np.asarray(have, dtype=np.int64))
            sample_ids, logits = sample_ids[keep], logits[keep]
            if len(sample_ids) == 0:
                return 0
        probs = softmax(logits)
        ids = sample_ids.tolist()
        stage = repeat(int(stage_id))
        # a large store's scores take seconds to write (400k samples: 3-8 s), said by a bar (a row of one drawing already)
        with progress(disable=len(ids) < SCORES_BAR_ROWS) as bar:
            task = bar.add_task("storing scores", total=2 * len(ids), unit="rows")
            step = lambda n: bar.advance(task, n)  # noqa: E731
            bulk_insert(conn, Logit.__table__, ("stage_id", "sample_id", "vector"), list(zip(stage, ids, vectors.encode_rows(logits))),
                        on_chunk=step)
            bulk_insert(
                conn, Prediction.__table__, ("stage_id", "sample_id", "label_id", "confidence"),
                list(zip(repeat(int(stage_id)), ids, probs.argmax(1).tolist(), probs.max(1).astype(float).tolist())),
                on_chunk=step,
            )
    return len(ids)


def check_teacher_kept(name: str | None) -> None:
    """Refuse scores for the teacher stage now named ``name`` (None: gone) unless it still stands under its name."""
    if name is None or "~parked-" in name:
        raise KdError("the run's teacher was deleted meanwhile (`kd runs delete`, or the end of a `kd teach --overwrite` "
                      "that replaced it): its scores were not stored" if name is None else
                      "the run's teacher is being replaced (`kd teach --overwrite` is running): its scores were not "
                      "stored; score with the new one once it has ended")


SCORES_BAR_ROWS = 50_000  # samples whose scores write_scores shows a bar for (fewer: well under a second)


def store_split_metrics(store: Store, stage_id: int, samples: SampleSet, logits: np.ndarray, names: list[str]) -> dict:
    """Final metrics of ``logits`` (rows of ``samples``) for each labeled split, over the labels as
    they were when the stage read them (:func:`labels_time`), dropped samples left out (as in ``kd
    report``'s confusion matrices: a label edit made while the stage ran changes neither); returns
    them by split."""
    labels, counted = _judged_labels(store, stage_id, samples.ids)
    figures = {}
    for split in ("train", "dev", "test"):
        part = np.array([s == split for s in samples.splits], dtype=bool) & counted
        if part.any():
            figures[split] = classification_metrics(
                labels[part], logits[part].argmax(1), num_classes=len(names), class_names=names
            )
            store.add_metrics(stage_id, split, figures[split])
    return figures


def as_judged(store: Store, stage_id: int, samples: SampleSet) -> SampleSet:
    """The rows of ``samples`` the stage's figures count, with the labels they judge against
    (:func:`labels_time`, as ``store_split_metrics``): a row unlabeled or dropped by then is left out."""
    labels, counted = _judged_labels(store, stage_id, samples.ids)
    return replace(samples, labels=labels).subset(counted)


def _judged_labels(store: Store, stage_id: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, counted)`` of ``ids`` as of the stage's :func:`labels_time`: -1 for no label then,
    and whether each row counts (labeled and not dropped then)."""
    with store.session() as s:
        when = labels_time(s.get(Stage, int(stage_id)))
    label, dropped = labels_as_of(store, when)
    labels = np.array([label.get(int(i), -1) for i in ids], dtype=np.int64)
    return labels, (labels >= 0) & ~np.isin(ids, np.array(sorted(dropped), dtype=np.int64))


def labels_time(stage: Stage) -> dt.datetime:
    """When the stage read the labels it learned from (``labels_read_at``, recorded by
    ``labels.read_labeled``), else when it started: the moment its figures judge against."""
    read_at = (stage.config or {}).get("labels_read_at")
    return dt.datetime.fromisoformat(read_at) if read_at else stage.started_at


def labels_as_of(store: Store, when, split: str | None = None) -> tuple[dict[int, int], set[int]]:
    """``({sample id: label id}, dropped sample ids)`` as they were at ``when``: the label edits made
    by then, and not undone by then, replayed over the ingested labels (of ``split``, or of every
    sample); samples without a label are left out of the dict."""
    samples = select(Sample.id, Sample.orig_label_id)
    edits = (
        select(LabelEdit.sample_id, LabelEdit.action, LabelEdit.new_label_id)
        .where(LabelEdit.created_at <= when)
        .where(LabelEdit.reverted_at.is_(None) | (LabelEdit.reverted_at > when))
        .order_by(LabelEdit.id)
    )
    if split is not None:
        samples = samples.where(Sample.split == split)
        edits = edits.join(Sample, Sample.id == LabelEdit.sample_id).where(Sample.split == split)
    with store.engine.connect() as conn:
        label = {int(sid): orig for sid, orig in conn.execute(samples)}
        rows = conn.execute(edits).all()
    # a pool text `kd ingest --take-pool` took into train later was unlabeled then (its original label is the take's)
    for sid in taken_since(store, when):
        label.pop(sid, None)
    dropped: set[int] = set()
    for sid, action, new in rows:
        if action == "relabel":
            label[sid] = new
            dropped.discard(sid)
        elif action == "drop":
            dropped.add(sid)
    return {sid: int(y) for sid, y in label.items() if y is not None}, dropped


def taken_since(store: Store, when) -> set[int]:
    """Ids of the pool texts `kd ingest --take-pool` took into train after ``when``: unlabeled then."""
    with store.engine.connect() as conn:
        return {int(i) for i in conn.execute(
            select(LabelEdit.sample_id).where(LabelEdit.action == "take", LabelEdit.created_at > when)).scalars()}


def unscored(store: Store, stage_id: int, sample_ids: np.ndarray | None = None) -> np.ndarray:
    """The samples (of ``sample_ids``, or of the whole store) that have no logits from the stage, in id order."""
    query = (
        select(Sample.id)
        .where(~exists().where(Logit.stage_id == stage_id, Logit.sample_id == Sample.id))
        .order_by(Sample.id)
    )
    with store.engine.connect() as conn:
        missing = np.array(conn.execute(query).scalars().all(), dtype=np.int64)
    return missing if sample_ids is None else np.intersect1d(missing, np.asarray(sample_ids, dtype=np.int64))


def write_sharded_scores(
    store: Store, stage_id: int, dist: "Dist", everything: SampleSet, ids: np.ndarray, logits: np.ndarray, *, model: str
) -> np.ndarray | None:
    """Each rank writes the scores of its shard (``ids``, ``logits``) and every rank learns whether one
    failed. On rank 0, after checking that every sample of ``everything`` has its logits, returns the
    logits of all of them in ``everything``'s order; ``None`` on the other ranks.

    The ranks meet first: a rank 0 that failed on its own (saving the model) never arrives, so no
    other rank writes rows into a stage rank 0 has already failed and cleared."""
    dist.barrier()
    dist.all_succeed(lambda: write_scores(store, stage_id, ids, logits))
    ids, logits = dist.gather_rows(ids, logits)
    if not dist.is_main:
        return None
    missing = unscored(store, stage_id, everything.ids)
    if len(missing) or not np.array_equal(ids, everything.ids):
        raise KdError(f"{len(missing)} of {len(everything)} samples have no {model} logits: a shard of the scoring did not finish")
    return logits
