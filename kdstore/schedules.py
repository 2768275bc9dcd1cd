"""Schedules for learning rates, loss weights and temperatures, as pure functions of progress in [0, 1]."""

from __future__ import annotations


def linear(start: float, end: float, progress: float) -> float:
    """A value moving linearly from ``start`` to ``end`` as ``progress`` goes from 0 to 1."""
    progress = min(max(progress, 0.0), 1.0)
    return start + (end - start) * progress


def warmup_linear_decay(progress: float, *, warmup: float) -> float:
    """Learning-rate factor: 0 → 1 over the first ``warmup`` fraction, then 1 → 0 linearly."""
    progress = min(max(progress, 0.0), 1.0)
    if warmup > 0 and progress < warmup:
        return progress / warmup
    return max(0.0, (1.0 - progress) / max(1e-12, 1.0 - warmup))
