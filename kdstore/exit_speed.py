"""Choosing an early-exit speed on held-out data: pure functions of arrays, no model, no store.

One forward pass over the dev texts gives every branch's uncertainty and answer and the full model's
answer; what any speed would do then follows without running the model again (a sample exits at the
first branch whose uncertainty is ``<= speed``, as the serving loop does). So a fine grid of speeds
costs one pass, and the speed can be chosen for a budget stated as the user states it: "the fastest
setting that loses at most 0.5 points of accuracy".

Dev sets are small (the reviews data has 1,000 rows, 0.1 point each) and the loss at a speed is a
difference of two accuracies on the same rows, so the rule asks for the loss *plus ``z`` standard
errors of that paired difference* to stay within the budget: a speed that changes many answers has
to show more than a lucky balance of gains and losses. The speeds are walked upwards and the walk
stops at the first one that fails (see ``pick_speed``).
"""

from __future__ import annotations

import math

import numpy as np

# the speeds tried: 0 to 0.99 by 0.01 (1.0 is left out: with entropy it exits everything at layer 1)
GRID = tuple(round(i / 100, 2) for i in range(100))


def _check(uncertainty: np.ndarray, branch_pred: np.ndarray, final_pred: np.ndarray, labels: np.ndarray | None = None) -> None:
    if uncertainty.ndim != 2:
        raise ValueError(f"uncertainty must be (n, branches), got shape {uncertainty.shape}")
    if branch_pred.shape != uncertainty.shape:
        raise ValueError(f"branch_pred has shape {branch_pred.shape}, uncertainty {uncertainty.shape}: they must match")
    if final_pred.shape != (uncertainty.shape[0],):
        raise ValueError(f"final_pred must be ({uncertainty.shape[0]},), got {final_pred.shape}")
    if labels is not None and labels.shape != final_pred.shape:
        raise ValueError(f"labels must be ({uncertainty.shape[0]},), got {labels.shape}")


def exit_layers(uncertainty: np.ndarray, speed: float) -> np.ndarray:
    """1-based exit layer per row: the first branch ``k`` with ``uncertainty[:, k-1] <= speed``, else
    ``branches + 1`` (the full model). ``speed <= 0`` exits nobody early, as in the serving loop."""
    uncertainty = np.asarray(uncertainty)
    if uncertainty.ndim != 2:
        raise ValueError(f"uncertainty must be (n, branches), got shape {uncertainty.shape}")
    n, branches = uncertainty.shape
    if speed <= 0 or branches == 0:
        return np.full(n, branches + 1, dtype=np.int64)
    below = uncertainty <= speed
    first = below.argmax(axis=1)
    return np.where(below.any(axis=1), first + 1, branches + 1).astype(np.int64)


def exit_predictions(branch_pred: np.ndarray, final_pred: np.ndarray, layers: np.ndarray) -> np.ndarray:
    """The answer each row gets when it leaves at ``layers`` (1-based; ``branches + 1``: the full model)."""
    branch_pred, final_pred, layers = np.asarray(branch_pred), np.asarray(final_pred), np.asarray(layers)
    if branch_pred.ndim != 2:
        raise ValueError(f"branch_pred must be (n, branches), got shape {branch_pred.shape}")
    n, branches = branch_pred.shape
    for name, a in (("final_pred", final_pred), ("layers", layers)):
        if a.shape != (n,):
            raise ValueError(f"{name} must be ({n},), got {a.shape}")
    if layers.dtype == bool or not np.issubdtype(layers.dtype, np.integer):
        raise ValueError(f"layers must hold integer exit layers, got dtype {layers.dtype}")
    if n and (layers.min() < 1 or layers.max() > branches + 1):  # (0 read the last branch's answer)
        raise ValueError(f"layers must be exit layers in 1..{branches + 1}, got {int(layers.min())}..{int(layers.max())}")
    out = final_pred.copy()
    early = layers <= branches
    out[early] = branch_pred[np.arange(n)[early], layers[early] - 1]
    return out


def exit_shares(layers: np.ndarray, num_layers: int) -> list[float]:
    """The share of rows that left at each layer, 1 to ``num_layers`` (the last: the full model), as
    FastBERT reports where its texts exit; all zeros for no rows."""
    layers = np.asarray(layers)
    if num_layers < 1:
        raise ValueError(f"num_layers must be at least 1, got {num_layers}")
    if layers.size and (layers.min() < 1 or layers.max() > num_layers):
        raise ValueError(f"exit layers must be in 1..{num_layers}, got {int(layers.min())}..{int(layers.max())}")
    counts = np.bincount(layers.astype(np.int64).ravel(), minlength=num_layers + 1)[1:]
    return (counts / max(layers.size, 1)).tolist()


def share_metrics(shares: list[float]) -> dict[str, float]:
    """``exit_shares`` as a stage's figures: ``exit_share[1]``, ``exit_share[2]``, ..."""
    return {f"exit_share[{k}]": v for k, v in enumerate(shares, 1)}


def stored_shares(metrics: dict) -> list[float]:
    """``exit_shares`` back from a stage's figures (``share_metrics``); ``[]`` where it has none."""
    found = {int(n[len("exit_share["):-1]): v for n, v in metrics.items() if n.startswith("exit_share[") and n.endswith("]")}
    return [found.get(k, 0.0) for k in range(1, max(found, default=0) + 1)]


def shares_line(shares: list[float]) -> str:
    """``1: 62%, 2: 21%, 4: 17%`` (the layers some row left at; ``<1%`` for a few)."""
    said = [f"{k}: {v:.0%}" if f"{v:.0%}" != "0%" else f"{k}: <1%" for k, v in enumerate(shares, 1) if v > 0]  # (0.5% rounds to 0%)
    return ", ".join(said) or "none"


def speed_curve(
    uncertainty: np.ndarray,
    branch_pred: np.ndarray,
    final_pred: np.ndarray,
    labels: np.ndarray,
    *,
    speeds=GRID,
) -> list[dict[str, float]]:
    """Per speed: ``accuracy``, ``loss_pt`` (points below the full model; negative is a gain),
    ``se_pt`` (standard error of that paired difference), ``changed`` (rows whose answer differs from
    the full model's) and ``layers`` (mean exit layer)."""
    uncertainty, branch_pred, final_pred, labels = map(np.asarray, (uncertainty, branch_pred, final_pred, labels))
    _check(uncertainty, branch_pred, final_pred, labels)
    n = len(labels)
    if n == 0:
        raise ValueError("no rows: the speed is chosen on labeled held-out samples")
    full_right = (final_pred == labels).astype(np.float64)
    rows = []
    for s in speeds:
        layers = exit_layers(uncertainty, s)
        pred = exit_predictions(branch_pred, final_pred, layers)
        diff = full_right - (pred == labels)
        se = float(diff.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
        rows.append({
            "speed": float(s),
            "accuracy": float((pred == labels).mean()),
            "loss_pt": 100.0 * float(diff.mean()),
            "se_pt": 100.0 * se,
            "changed": int((pred != final_pred).sum()),
            "layers": float(layers.mean()),
        })
    return rows


def pick_speed(
    uncertainty: np.ndarray,
    branch_pred: np.ndarray,
    final_pred: np.ndarray,
    labels: np.ndarray,
    *,
    max_loss: float,
    z: float = 1.0,
    speeds=GRID,
) -> dict[str, float]:
    """The row of ``speed_curve`` to serve at for a loss budget of ``max_loss`` points.

    Speeds are tried in increasing order (each exits every sample at the same layer or earlier than
    the one before) and the walk stops at the first speed whose ``loss_pt + z * se_pt`` exceeds
    ``max_loss``; of the speeds passed, the one with the fewest mean layers is kept (ties: the lower
    speed). Stopping at the first failure, rather than taking the cheapest of all the speeds that
    pass, keeps a high speed that passes by luck after lower ones failed from being chosen: with
    100 speeds tried, the best-looking one is otherwise picked for its noise. Speed 0 always passes.
    """
    if not (max_loss >= 0 and z >= 0):  # (NaN too: no loss is over a NaN budget, so every speed passed)
        raise ValueError(f"max_loss and z must be >= 0, got {max_loss} and {z}")
    if any(not 0.0 <= s <= 1.0 for s in speeds):
        raise ValueError(f"speeds must be in [0, 1], got {sorted(speeds)}")
    passed = []
    for r in speed_curve(uncertainty, branch_pred, final_pred, labels, speeds=sorted(set(speeds) | {0.0})):
        if r["speed"] > 0.0 and r["loss_pt"] + z * r["se_pt"] > max_loss:
            break
        passed.append(r)
    return min(passed, key=lambda r: (r["layers"], r["speed"]))


def coarse_budget(n: int, max_loss: float, *, z: float = 1.0, speed: float | None = None) -> str | None:
    """Why a speed chosen for ``max_loss`` points on ``n`` dev samples is not to be trusted, or ``None``.

    One answer weighs ``100 / n`` points, and one answer lost (of ``n``) has a standard error of
    ``100 / n`` points too, so ``pick_speed``'s rule counts it as ``(1 + z) * 100 / n``: where that is
    more than the budget, a single answer lost already breaks it, so the rule passes only speeds that
    change no dev answer (or gain as many as they lose), and a few samples that all agree (standard
    error 0) let every speed through. ``speed``: the one chosen; at 0 (every layer, which always
    passes) the warning says that no faster speed could pass, not that one passed by luck.
    """
    one_lost = (1.0 + z) * 100.0 / n if n >= 1 else 0.0
    if n < 1 or max_loss <= 0 or one_lost <= max_loss:
        return None
    why = ("so only a speed that changes no dev answer could pass, and speed 0 (every layer) is served"
           if speed is not None and speed <= 0 else "the speed passed because it lost no more dev answers than it gained, which says little")
    return (f"--max-loss {max_loss:g} chose the speed on {n} labeled dev samples, where one answer is {100.0 / n:.3g} points "
            f"and one answer lost counts {one_lost:.3g} with its standard error, more than the budget: {why}; "
            f"at least {math.ceil((1.0 + z) * 100.0 / max_loss)} dev samples resolve the budget")
