"""Classification metrics as pure functions of label arrays (class ids 0..K-1)."""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, *, num_classes: int) -> np.ndarray:
    """``m[i, j]`` = number of samples of true class ``i`` predicted as ``j``."""
    y_true, y_pred = _check(y_true, y_pred, num_classes)
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(m, (y_true, y_pred), 1)
    return m


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, *, num_classes: int, class_names: list[str] | None = None
) -> dict[str, float]:
    """Accuracy, macro and micro precision/recall/F1, and per-class ``precision[name]``,
    ``recall[name]``, ``f1[name]`` and ``support[name]``.

    With one label per sample, micro precision, recall and F1 all equal accuracy (every wrong
    prediction is one false positive and one false negative); they are reported all the same.

    A class absent from both ``y_true`` and ``y_pred`` is left out of the macro averages, so a dev
    set that lacks a rare class is not scored as if the model failed on it.
    """
    m = confusion_matrix(y_true, y_pred, num_classes=num_classes)
    tp = np.diag(m).astype(float)
    support, predicted = m.sum(axis=1).astype(float), m.sum(axis=0).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    present = (support + predicted) > 0
    total = m.sum()
    micro = float(tp.sum() / total) if total else 0.0
    out = {
        "accuracy": micro,
        "macro_precision": float(precision[present].mean()) if present.any() else 0.0,
        "macro_recall": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "micro_precision": micro,
        "micro_recall": micro,
        "micro_f1": micro,
        "n": float(total),
    }
    names = class_names or [str(i) for i in range(num_classes)]
    for i, name in enumerate(names):
        out[f"precision[{name}]"] = float(precision[i])
        out[f"recall[{name}]"] = float(recall[i])
        out[f"f1[{name}]"] = float(f1[i])
        out[f"support[{name}]"] = float(support[i])
    return out


def _check(y_true, y_pred, num_classes):
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must be equal 1-D shapes")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name} has class ids outside 0..{num_classes - 1}")
    return y_true, y_pred
