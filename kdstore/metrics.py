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
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"class_names has {len(class_names)} names for num_classes={num_classes}: give one per class")
    names = class_names or [str(i) for i in range(num_classes)]
    for i, name in enumerate(names):
        out[f"precision[{name}]"] = float(precision[i])
        out[f"recall[{name}]"] = float(recall[i])
        out[f"f1[{name}]"] = float(f1[i])
        out[f"support[{name}]"] = float(support[i])
    return out


def mean_log_loss(y_true, logits) -> float:
    """Mean cross entropy of ``logits`` (one row of raw scores per sample) against the class ids
    ``y_true``: what breaks a tie of two epochs' dev macro-F1 (a small dev set is all right early,
    at near-uniform probabilities, and stays so while the model grows confident)."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2:
        raise ValueError(f"logits must be 2-D (samples x classes), got shape {logits.shape}")
    y = _class_ids("y_true", y_true)
    if y.ndim != 1:  # (a column of labels broadcast against the rows: the mean of an (N, N) matrix)
        raise ValueError(f"y_true must be a 1-D array of class ids, got shape {y.shape}")
    if len(y) != len(logits):
        raise ValueError(f"y_true has {len(y)} labels for {len(logits)} rows of logits")
    if len(y) == 0:
        return 0.0
    if y.min() < 0 or y.max() >= logits.shape[1]:
        raise ValueError(f"y_true holds class ids outside 0..{logits.shape[1] - 1}")
    top = logits.max(axis=1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return float((log_z - logits[np.arange(len(y)), y]).mean())


def _class_ids(name: str, y) -> np.ndarray:
    """``y`` as int64 class ids; floats only when every value is a whole number (an empty list is
    float to numpy), never truncated, and no strings."""
    a = np.asarray(y)
    if a.dtype == bool or np.issubdtype(a.dtype, np.integer):
        return a.astype(np.int64)
    if np.issubdtype(a.dtype, np.floating) and (a.size == 0 or (np.isfinite(a).all() and (a == np.round(a)).all())):
        return a.astype(np.int64)
    # the first value that is no whole number: inf equals its own rounding, so finiteness is asked too
    # (an infinite id was an IndexError building this message)
    bad = np.flatnonzero(~(np.isfinite(a) & (a == np.round(a)))) if np.issubdtype(a.dtype, np.floating) and a.ndim == 1 else []
    raise ValueError(f"{name} must hold integer class ids, got dtype {a.dtype}"
                     + (f" with non-integer values such as {a[bad[0]]}" if len(bad) else ""))


def _check(y_true, y_pred, num_classes):
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    y_true, y_pred = _class_ids("y_true", y_true), _class_ids("y_pred", y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must be equal 1-D shapes")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name} has class ids outside 0..{num_classes - 1}")
    return y_true, y_pred


MIN_SHARE_OF_ROOM = 0.1  # a model must close this share of the way from the majority rate to 100 %


def below_room(accuracy: float, majority: float, *, share_of_room: float = MIN_SHARE_OF_ROOM) -> bool:
    """Whether ``accuracy`` closes less than ``share_of_room`` of the way from ``majority`` (the
    share of the most frequent class) to 1: 5 points on a balanced binary task, 0.5 on a 95 % one."""
    return accuracy - majority < share_of_room * (1.0 - majority) - 1e-9


def chance_macro_f1(support) -> float | None:
    """The macro-F1 a model that learned nothing reaches on a split of ``support`` (class name -> count):
    the better of always answering the most frequent class (F1 2s / (1 + s) for its share s, 0 for the
    others) and answering at random in the classes' shares (F1 p for a class of share p: 1 / K over K
    classes). Answering each class alike at random does no better: its F1, 2p (1/K) / (p + 1/K), is at
    most the mean of p and 1/K, which averages 1/K over the classes. ``None`` for no samples."""
    counts = [float(v) for v in support.values() if v]
    total = sum(counts)
    if total <= 0:
        return None
    share, k = max(counts) / total, len(counts)
    return max(2 * share / (1 + share) / k, 1 / k)


def versus_majority(accuracy: float, majority: float) -> str:
    """How ``accuracy`` compares with always answering the most frequent class, in words a warning ends on."""
    return "hardly more than" if accuracy > majority + 1e-9 else "no more than" if accuracy >= majority - 1e-9 else "less than"


def hardly_beats_majority(accuracy: float, support, *, share_of_room: float = MIN_SHARE_OF_ROOM) -> tuple[str, float] | None:
    """``(class, share)`` of the most frequent class in ``support`` (class name -> count) when
    ``accuracy`` closes less than ``share_of_room`` of the way from always answering that class to
    100 % (the test ``kd labels detect`` puts to a teacher's folds); ``None`` when it does better or
    there is nothing to judge. A model that fails it has learned next to nothing."""
    counts = {k: float(v) for k, v in support.items() if v}
    total = sum(counts.values())
    if total <= 0 or accuracy is None:
        return None
    name, count = max(counts.items(), key=lambda kv: kv[1])
    share = count / total
    return (name, share) if below_room(accuracy, share, share_of_room=share_of_room) else None


def missed_classes(figures: dict[str, float], *, min_support: int = 3) -> list[tuple[str, int]]:
    """``(class, support)`` of each class with at least ``min_support`` samples in a split's figures
    (``classification_metrics``'s) of which the model got none right (recall 0), most samples first: a
    rare class a model never answers hides behind a fair accuracy (5 classes, one of 4 %: a macro-F1
    of 0.50 said nothing of which class)."""
    support = class_support(figures)
    missed = [(name, int(n)) for name, n in support.items()
              if n >= min_support and figures.get(f"recall[{name}]", 1.0) == 0.0]
    return sorted(missed, key=lambda kv: -kv[1])


def class_support(figures: dict[str, float]) -> dict[str, float]:
    """``{class: count}`` from a split's ``support[CLASS]`` figures (``classification_metrics``'s)."""
    return {k[len("support["):-1]: v for k, v in figures.items() if k.startswith("support[") and k.endswith("]")}
