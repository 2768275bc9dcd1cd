"""Turning logits into probabilities and the answer ``kd predict`` prints (numpy only, so the
ONNX serving path can use it without torch or the store)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def answers(probs: np.ndarray, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """One dict per row: label, confidence and per-class probabilities."""
    return [
        {
            "label": class_names[int(p.argmax())],
            "confidence": float(p.max()),
            "probs": {n: float(v) for n, v in zip(class_names, p)},
        }
        for p in probs
    ]
