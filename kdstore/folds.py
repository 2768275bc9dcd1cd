"""Stratified K-fold assignment, a pure function of the labels and a seed."""

from __future__ import annotations

import numpy as np

from .errors import KdError


def stratified_folds(labels: np.ndarray, k: int, *, seed: int) -> np.ndarray:
    """A fold id in ``0..k-1`` per sample; every class is spread over the folds as evenly as possible.

    Each class's samples are shuffled and dealt round-robin, starting where the previous class
    stopped, so fold sizes differ by at most one overall.
    """
    labels = np.asarray(labels)
    if k < 2:
        raise KdError(f"--folds must be at least 2, got {k}")
    classes, counts = np.unique(labels, return_counts=True)
    if (labels < 0).any():
        raise KdError("every sample needs a label to be assigned a stratified fold")
    small = [int(c) for c, n in zip(classes, counts) if n < k]
    if small:
        raise KdError(f"--folds {k}: class id(s) {small} have fewer than {k} train samples")
    rng = np.random.default_rng(seed)
    folds = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for c in classes:
        idx = rng.permutation(np.flatnonzero(labels == c))
        folds[idx] = (np.arange(len(idx)) + offset) % k
        offset = (offset + len(idx)) % k
    return folds
