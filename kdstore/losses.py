"""Distillation losses as pure functions of logits (no state, no I/O).

Conventions: ``student`` and ``teacher`` are ``(batch, classes)`` raw logits; ``labels`` holds class
ids with -1 where a sample has no gold label (unlabeled or augmented samples).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SOFT_LOSSES = ("kl", "soft_ce", "mse")


def kl_soft(student: torch.Tensor, teacher: torch.Tensor, *, temperature: float) -> torch.Tensor:
    """Per-sample KL(teacher_T || student_T) × T² (Hinton et al.), so gradients keep their scale."""
    t = temperature
    log_p_s = F.log_softmax(student / t, dim=-1)
    log_p_t = F.log_softmax(teacher / t, dim=-1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=-1) * (t * t)


def soft_cross_entropy(student: torch.Tensor, teacher: torch.Tensor, *, temperature: float) -> torch.Tensor:
    """Per-sample cross entropy of the student against the teacher's softened distribution, × T²."""
    t = temperature
    p_t = F.softmax(teacher / t, dim=-1)
    return -(p_t * F.log_softmax(student / t, dim=-1)).sum(dim=-1) * (t * t)


def logit_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error on raw logits (Tang et al. 2019)."""
    return ((student - teacher) ** 2).mean(dim=-1)


def soft_loss(student: torch.Tensor, teacher: torch.Tensor, *, kind: str, temperature: float) -> torch.Tensor:
    if kind == "kl":
        return kl_soft(student, teacher, temperature=temperature)
    if kind == "soft_ce":
        return soft_cross_entropy(student, teacher, temperature=temperature)
    if kind == "mse":
        return logit_mse(student, teacher)
    raise ValueError(f"unknown soft loss {kind!r}: choose from {', '.join(SOFT_LOSSES)}")


def distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha: float,
    temperature: float,
    kind: str = "kl",
) -> torch.Tensor:
    """Batch mean of ``alpha * soft + (1 - alpha) * hard`` for labeled samples and ``soft`` alone for
    unlabeled ones (label -1): a sample without a gold label learns from the teacher only.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    soft = soft_loss(student, teacher, kind=kind, temperature=temperature)
    labeled = labels >= 0
    hard = torch.zeros_like(soft)
    if labeled.any():
        hard[labeled] = F.cross_entropy(student[labeled], labels[labeled], reduction="none")
    per_sample = torch.where(labeled, alpha * soft + (1.0 - alpha) * hard, soft)
    return per_sample.mean()

