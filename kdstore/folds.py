"""Stratified K-fold assignment, a pure function of the labels and a seed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import KdError


def stratified_folds(labels: np.ndarray, k: int, *, seed: int, class_names: Sequence[str] | None = None) -> np.ndarray:
    """A fold id in ``0..k-1`` per sample; every class is spread over the folds as evenly as possible.
    ``class_names`` (by class id) name the classes an error reports.

    Each class's samples are shuffled and dealt round-robin, starting where the previous class
    stopped, so fold sizes differ by at most one overall.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise KdError(f"labels must be a 1-D array of class ids, got shape {labels.shape}")
    if labels.size and not (labels.dtype != bool and np.issubdtype(labels.dtype, np.integer)):
        # a float NaN equals no class and would leave its fold unset (whatever was in memory)
        if not (np.issubdtype(labels.dtype, np.floating) and np.isfinite(labels).all() and (labels == np.round(labels)).all()):
            raise KdError(f"labels must be integer class ids, got dtype {labels.dtype}")
        labels = labels.astype(np.int64)
    if k < 2:
        raise KdError(f"--folds must be at least 2, got {k}")
    classes, counts = np.unique(labels, return_counts=True)
    if (labels < 0).any():
        raise KdError("every sample needs a label to be assigned a stratified fold")
    small = [(int(c), int(n)) for c, n in zip(classes, counts) if n < k]
    if small:
        which = ", ".join(f"{class_names[c]!r} ({n})" if class_names is not None else f"id {c} ({n})" for c, n in small)
        fewest = min(n for _, n in small)
        # (a class of one sample fits no number of folds: "use fewer folds" was advice that cannot be followed)
        # (nor "--folds 2 or fewer" where 2 is the only number: --folds 1 is refused)
        advice = (f"use --folds {fewest} or fewer" if fewest > 2 else "use --folds 2" if fewest == 2 else
                  "no number of folds splits a class of 1 sample: add train samples of it, or relabel or drop it (`kd labels set`)")
        raise KdError(f"--folds {k}: every class needs at least {k} train samples, and {which} {'has' if len(small) == 1 else 'have'} fewer: {advice}")
    rng = np.random.default_rng(seed)
    folds = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for c in classes:
        idx = rng.permutation(np.flatnonzero(labels == c))
        folds[idx] = (np.arange(len(idx)) + offset) % k
        offset = (offset + len(idx)) % k
    return folds


def fold_count(config: dict | None) -> int:
    """K of a stage trained with ``--folds K`` (teachers for out-of-fold probabilities, students for
    votes), from its stored config; 0 for one trained once."""
    return int((config or {}).get("folds") or 0)
