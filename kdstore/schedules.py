"""Schedules for learning rates, loss weights and temperatures, as pure functions of progress in [0, 1]."""

from __future__ import annotations

from .errors import KdError

MAX_LR = 1.0  # Adam moves each weight by about the learning rate a step: above 1, nothing is learned


def check_lr(lr: float) -> None:
    """Refuse a learning rate that is not positive, or above ``MAX_LR`` (``--lr 1e38`` was torch's
    "value cannot be converted to type float without overflow" traceback in the first step)."""
    if not lr > 0:
        raise KdError(f"--lr must be positive, got {lr:g}")
    if lr > MAX_LR:
        raise KdError(f"--lr {lr:g} is above {MAX_LR:g}: Adam moves each weight by about the learning rate a step "
                      "(fine-tuning a pre-trained model wants 1e-5 to 1e-4, a small or new model up to 1e-3)")


# no training needs more; a typo of many digits overflowed a float (the progress bar's ETA, a step's
# share of --steps): a traceback, the stage failed with "OverflowError ... at rich/progress.py"
MAX_EPOCHS = 100_000
MAX_STEPS = 1_000_000_000


def check_epochs(epochs: int) -> None:
    """Refuse ``--epochs`` above ``MAX_EPOCHS`` (its floor is each command's own check)."""
    _at_most("--epochs", epochs, MAX_EPOCHS)


def check_steps(steps: int) -> None:
    """Refuse ``--steps`` above ``MAX_STEPS``."""
    _at_most("--steps", steps, MAX_STEPS)


def _at_most(option: str, value: int, ceiling: int) -> None:
    if value > ceiling:
        digits = str(value)
        shown = digits if len(digits) <= 15 else f"a number of {len(digits)} digits"
        raise KdError(f"{option} must be at most {ceiling:,}, got {shown}")


def linear(start: float, end: float, progress: float) -> float:
    """A value moving linearly from ``start`` to ``end`` as ``progress`` goes from 0 to 1."""
    progress = min(max(progress, 0.0), 1.0)
    return start + (end - start) * progress


def over_steps(start: float, end: float | None, step: int, total: int) -> float:
    """A weight or temperature scheduled over ``total`` steps: ``start`` at the first step (0),
    ``end`` at the last (``total - 1``), linear between; constant ``start`` when ``end`` is None."""
    return start if end is None else linear(start, end, step / max(total - 1, 1))


def warmup_linear_decay(progress: float, *, warmup: float) -> float:
    """Learning-rate factor: 0 → 1 over the first ``warmup`` fraction, then 1 → 0 linearly."""
    if not 0.0 <= warmup <= 1.0:  # above 1 the factor never reaches 1; below 0 it starts below 1
        raise ValueError(f"warmup must be a fraction of training in [0, 1], got {warmup}")
    progress = min(max(progress, 0.0), 1.0)
    if warmup > 0 and progress < warmup:
        return progress / warmup
    return max(0.0, (1.0 - progress) / max(1e-12, 1.0 - warmup))


def warmup_linear_decay_step(step: int, total: int, *, warmup: float) -> float:
    """``warmup_linear_decay`` for optimizer step ``step`` (0-based) of ``total``, taken at the middle
    of the step: no step trains at a factor of 0 (taken at its start, the first step did, and a
    training of one step, ``--epochs 1`` on fewer texts than a batch, left the model as it was)."""
    return warmup_linear_decay((step + 0.5) / max(total, 1), warmup=warmup)


LR_SCHEDULES = ("constant", "linear")


def lr_factor_step(step: int, total: int, *, schedule: str, warmup: float) -> float:
    """Learning-rate factor of optimizer step ``step`` (0-based) of ``total``: up linearly over the
    first ``warmup`` fraction of training, then ``constant`` at 1 or ``linear``ly down to 0 at the
    end (``warmup_linear_decay_step``, as ``kd teach`` trains)."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(LR_SCHEDULES)}, got {schedule!r}")
    if schedule == "linear":
        return warmup_linear_decay_step(step, total, warmup=warmup)
    if not 0.0 <= warmup <= 1.0:
        raise ValueError(f"warmup must be a fraction of training in [0, 1], got {warmup}")
    progress = min(max((step + 0.5) / max(total, 1), 0.0), 1.0)
    return min(1.0, progress / warmup) if warmup > 0 else 1.0


def layer_depths(names: list[str]) -> list[int]:
    """Depth of each parameter of a transformer by name: 0 for the embeddings and the encoder's parts
    outside its layers (DeBERTa-v2's shared relative-position table and its LayerNorm, MPNet's relative
    bias, ALBERT's embedding projection: trained at the head's rate, or one part of a table at another's),
    ``i + 1`` for encoder layer ``i`` (``...layer.i.``, ``...layers.i.``, ``...h.i.``, ``...blocks.i.`` or
    ``...albert_layers.i.``, ALBERT's group g counted after the groups below it), and one above the deepest layer for everything else (pooler,
    classification head, a pre-LayerNorm encoder's final norm)."""
    import re

    found = [re.search(r"\.(?:layers?|h|blocks|albert_layers)\.(\d+)\.", "." + n) for n in names]
    index = [int(m.group(1)) if m else None for m in found]
    # ALBERT's num_hidden_groups > 1: group g's inner layers (albert_layers.i, numbered from 0 in each group) run after
    # those of the groups below it
    groups = [re.search(r"\.albert_layer_groups\.(\d+)\.albert_layers\.(\d+)\.", "." + n) for n in names]
    inner = max((int(g.group(2)) for g in groups if g), default=-1) + 1
    index = [int(g.group(1)) * inner + int(g.group(2)) if g else i for g, i in zip(groups, index)]
    top = max((i for i in index if i is not None), default=-1) + 2
    embedding = re.compile(r"embed|(?:^|\.)(?:wte|wpe|encoder)\.")
    # (a LayerNorm of the encoder's own is DeBERTa-v2's table's where it has one, else a pre-LayerNorm encoder's final
    # norm after its last layer: MegatronBERT's encoder.ln, XLM-RoBERTa-XL's encoder.LayerNorm, at the head's rate)
    final = None if any("encoder.rel_embeddings." in n for n in names) else re.compile(r"(?:^|\.)encoder\.(?:ln|LayerNorm)\.")
    return [top if final and final.search(n) and not m else 0 if embedding.search(n) and not m else i + 1 if m else top
            for n, m, i in zip(names, found, index)]


def layer_decay_scales(names: list[str], decay: float) -> list[float]:
    """Learning-rate factor per parameter for layer-wise decay: 1 for the head, ``decay`` for the
    last encoder layer, ``decay**2`` for the one below it, ..., ``decay**(L + 1)`` for the embeddings
    (ELECTRA's fine-tuning recipe: the lower layers keep more of what pre-training taught them)."""
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"layer decay must be in (0, 1], got {decay}")
    depths = layer_depths(names)
    top = max(depths, default=0)
    if decay < 1.0 and top < 2:
        raise ValueError("layer decay needs numbered encoder layers (e.g. encoder.layer.0.), and no parameter name has one")
    return [decay ** (top - d) for d in depths]
