"""Storing what a trained model says about the store's samples: logits, predictions, split metrics."""

from __future__ import annotations

import numpy as np

from .metrics import classification_metrics
from .probs import softmax
from .store import SampleSet, Store


def average_probs_as_logits(parts: list[np.ndarray]) -> np.ndarray:
    """Logits whose softmax is the mean of the parts' softmax (an ensemble's probabilities)."""
    mean = np.mean([softmax(p) for p in parts], axis=0)
    return np.log(np.clip(mean, 1e-12, None)).astype(np.float32)


def store_outputs(store: Store, stage_id: int, samples: SampleSet, logits: np.ndarray, names: list[str]) -> dict:
    """Write logits and predictions for ``samples`` and final metrics for each labeled split.

    Returns the metrics by split.
    """
    probs = softmax(logits)
    store.write_logits(stage_id, samples.ids, logits)
    store.write_predictions(stage_id, samples.ids, probs.argmax(1), probs.max(1))
    figures = {}
    for split in ("train", "dev", "test"):
        part = np.array([s == split for s in samples.splits], dtype=bool) & (samples.labels >= 0)
        if part.any():
            figures[split] = classification_metrics(
                samples.labels[part], logits[part].argmax(1), num_classes=len(names), class_names=names
            )
            store.add_metrics(stage_id, split, figures[split])
    return figures
