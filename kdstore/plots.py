"""PNG charts of a run for ``kd report --plot DIR``: confusion matrices, the early-exit speed/accuracy
curve, and the histogram of label-quality scores. Needs matplotlib (``pip install 'kd[plot]'``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .errors import KdError, make_folder

_SPEED = re.compile(r"^accuracy@([0-9.]+(?:e-?[0-9]+)?)$")  # (a tiny speed is stored as 1e-05)


# fonts that draw Chinese, the first one installed is used (matplotlib's default draws none of it)
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei",
             "SimHei", "Microsoft YaHei", "PingFang SC", "Heiti SC", "Noto Sans CJK JP", "AR PL UMing CN")


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise KdError("--plot needs matplotlib: pip install 'kd[plot]' (or pip install matplotlib)") from None
    import warnings

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    found = [f for f in CJK_FONTS if f in installed]
    if found:
        plt.rcParams["font.sans-serif"] = [found[0], *plt.rcParams["font.sans-serif"]]
        plt.rcParams["font.family"] = "sans-serif"
    # without one, Chinese class names show as boxes: one line says so (write_plots), not a warning a glyph
    warnings.filterwarnings("ignore", message="Glyph .* missing from")
    return plt


def _label(name: str) -> str:
    """A class name as matplotlib should print it: "$" is literal, not the start of mathtext."""
    return str(name).replace("$", r"\$")


def write_plots(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """Every chart the run's report supports, as PNG files in ``out_dir``; returns their paths."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator
    named = any(stage.get("confusion") for stage in report["stages"])  # (only the confusion charts print class names)
    if named and any(not str(n).isascii() for n in report["classes"]) and plt.rcParams["font.sans-serif"][0] not in CJK_FONTS:
        import sys

        print("note: no font that draws Chinese is installed (e.g. fonts-noto-cjk): class names in the charts "
              "show as boxes", file=sys.stderr)
    made = [p for p in (out_dir, *out_dir.parents) if not p.exists()]  # (left out again when nothing is charted)
    make_folder(out_dir, f"the charts to {out_dir}")  # (first: a file in the way is said before any drawing)
    written = []
    names = report["classes"]
    for stage in report["stages"]:
        for split, matrix in (stage.get("confusion") or {}).items():
            title = f"{stage['name']} — {split}"
            cell, font, counts = confusion_layout(len(names))
            # room for the class names beside and below the matrix beyond the 0.6 inch a short one takes: long
            # Chinese names squeezed the matrix out of the figure, tight_layout leaving it no room
            room = max(0.0, names_inches(names, font, plt) - 0.6)
            # wide enough for its title (about 0.11 inch a character at the title's size): a few classes made
            # a figure narrower than the stage's name, its title cut at the edge ("distill-textcnn — tes")
            width = max(1.2 + cell * len(names) + room, 0.6 + 0.11 * len(title))
            fig, ax = plt.subplots(figsize=(width, 1.0 + cell * len(names) + 0.71 * room))  # (the x names run at 45°)
            image = ax.imshow(matrix, cmap="Blues")
            if not counts:  # (the cells' counts read off the colour instead)
                fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02)
            ax.set_xticks(range(len(names)), [_label(n) for n in names], rotation=45, ha="right", fontsize=font)
            ax.set_yticks(range(len(names)), [_label(n) for n in names], fontsize=font)
            ax.set_xlabel("predicted")
            ax.set_ylabel("label")
            for i, row in enumerate(matrix if counts else []):
                for j, v in enumerate(row):
                    ax.text(j, i, str(v), ha="center", va="center")
            ax.set_title(title)
            written.append(_save(fig, out_dir / f"{report['run']}-{stage['name']}-confusion-{split}.png", plt))
        curves = learning_curves(stage.get("history") or [], stage.get("metrics"))
        if any(len(points) > 1 for points in curves.values()):  # (one epoch is a point, not a curve)
            fig, ax = plt.subplots(figsize=(5.5, 3.5))
            for key in ("train loss", "train masked-LM loss", "dev loss"):
                if curves.get(key):
                    # a student's train loss is its distillation objective (soft targets and labels mixed), not
                    # the dev loss's cross-entropy on labels: their gap is no overfitting
                    label = "train loss (distillation)" if key == "train loss" and stage.get("kind") == "distill" else key
                    if key == "train masked-LM loss" and (stage.get("config") or {}).get("objective") == "electra":
                        label += " (ELECTRA's generator)"  # (the encoder saved is the discriminator, as kd pretrain says)
                    ax.plot(*zip(*curves[key]), marker="o", label=label)
            baseline = stage["metrics"].get("train", {}).get("frequency_loss") if curves.get("train masked-LM loss") else None
            if baseline:  # the loss of knowing no context: a curve not below it has learned none yet
                ax.axhline(baseline, color="grey", linestyle="--", linewidth=1, label="no context (character frequencies)")
            # (kd distill --eval-every: scored every N steps; kd pretrain's loss, every 50)
            by_step = bool((stage.get("config") or {}).get("eval_every")) or stage.get("kind") == "pretrain"
            ax.set_xlabel("training step" if by_step else "epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # (epoch 1.25 is no epoch)
            ax.set_ylabel("loss")
            if curves.get("dev macro-F1"):
                right = ax.twinx()
                right.plot(*zip(*curves["dev macro-F1"]), marker="s", color="tab:green", label="dev macro-F1")
                right.set_ylabel("dev macro-F1")
                right.legend(loc="upper right", fontsize=8)
            if ax.get_lines():
                ax.legend(loc="upper left" if curves.get("dev macro-F1") else "best", fontsize=8)  # (the F1 legend holds the upper right)
            best = stage["metrics"].get("all", {}).get("best_step" if by_step else "best_epoch")
            if best:
                ax.axvline(best, color="grey", linestyle=":", linewidth=1)  # the epoch (or step) kept
            # (its figures up to the failure, or so far: one `kill -9` left running has no more to come)
            status = (" (running, process gone)" if stage.get("process_gone") else
                      f" ({stage['status']})" if stage.get("status") in ("failed", "running") else "")
            ax.set_title(f"{stage['name']}: learning curve" + status)
            written.append(_save(fig, out_dir / f"{report['run']}-{stage['name']}-learning-curve.png", plt))
        for split in ("test", "dev"):
            m = stage["metrics"].get(split, {})
            tags = [k.group(1) for k in map(_SPEED.match, m) if k]
            # one unit for every point: FLOPs where each speed has them (FastBERT's), else layers run
            steady = next((f for f in ("flops", "layers") if all(m.get(f"{f}@{t}") for t in ("0", *tags))), None)
            points = sorted((float(k.group(1)), v, *_exit_speedups(m, k.group(1), steady)) for k, v in ((_SPEED.match(n), v) for n, v in m.items()) if k)
            if points:
                fig, ax = plt.subplots(figsize=(5, 3.5))
                by_layers = all(p[2] is not None for p in points)  # steady; the wall clock is where it is not on record
                xs = [(p[2] if by_layers else p[3]) or 1.0 for p in points]
                ax.plot(xs, [100 * p[1] for p in points], marker="o")
                ax.set_xlabel("FLOPs at speed 0 / FLOPs at the speed" if by_layers and steady == "flops" else
                              "layers at speed 0 / mean layers run" if by_layers else "wall-clock speedup over speed 0 (every layer)")
                ax.set_ylabel(f"{split} accuracy (%)")
                ax.set_title(f"{stage['name']}: early exit")
                _label_points(fig, ax, _exit_labels(xs, points, by_layers))
                written.append(_save(fig, out_dir / f"{report['run']}-{stage['name']}-early-exit-{split}.png", plt))
                break
        if stage.get("issue_scores"):
            fig, ax = plt.subplots(figsize=(5, 3.5))
            ax.hist(stage["issue_scores"], bins=20, range=(0, 1))
            ax.set_xlabel("score (higher: more likely wrong)")
            ax.set_ylabel("flagged samples")
            ax.set_title(f"{stage['name']}: label-quality scores")
            written.append(_save(fig, out_dir / f"{report['run']}-{stage['name']}-label-scores.png", plt))
    if not written:  # a run with nothing to chart left an empty folder behind ("no charts written to ...")
        for folder in made:
            try:
                folder.rmdir()
            except OSError:
                break
    return written


COUNTED_CELLS_UP_TO = 40  # classes: a count in each cell of a larger matrix is not legible
MAX_SIDE_INCHES = 40.0  # a confusion chart's matrix at most (4,400 pixels a side at 110 dpi)


def confusion_layout(classes: int) -> tuple[float, float | None, bool]:
    """A confusion chart's cell side in inches, its class names' font size (``None``: matplotlib's
    default) and whether each cell shows its count: 0.6 inch cells with counts up to
    ``COUNTED_CELLS_UP_TO`` classes; beyond, no counts, the matrix as large as at that many (at least
    0.1 inch a class), and never over ``MAX_SIDE_INCHES``, the names' font shrunk to fit their
    cells (100 classes took half a minute to draw 10,000 counts; 1,000 classes made a 66,000-pixel
    square of a million)."""
    if classes <= COUNTED_CELLS_UP_TO:
        return 0.6, None, True
    side = min(max(0.6 * COUNTED_CELLS_UP_TO, 0.1 * classes), MAX_SIDE_INCHES)
    cell = side / classes
    return cell, min(10.0, round(cell * 72 * 0.8, 1)), False


def names_inches(names: list[str], font: float | None, plt) -> float:
    """The length in inches of the longest of ``names`` drawn at ``font`` points (``None``: matplotlib's
    default, 10) in the font the charts use (a box where it has no glyph), measured on the few longest
    by :func:`name_ems`."""
    longest = sorted(names, key=name_ems)[-5:]
    if not longest:
        return 0.0
    fig = plt.figure()
    try:
        renderer = fig.canvas.get_renderer()
        return max(fig.text(0, 0, _label(n), fontsize=font or 10.0).get_window_extent(renderer).width for n in longest) / fig.dpi
    finally:
        plt.close(fig)


def name_ems(name: str) -> float:
    """About how many ems ``name`` takes: a wide character (Chinese) 1, any other 0.6."""
    import unicodedata

    return sum(1.0 if unicodedata.east_asian_width(c) in "WF" else 0.6 for c in str(name))


def learning_curves(history: list[dict[str, Any]], metrics: dict[str, dict[str, float]] | None = None) -> dict[str, list[tuple[float, float]]]:
    """A training stage's per-epoch figures (``run_report``'s ``history``) as curves of ``(epoch,
    value)``: ``train loss``, ``dev loss`` and ``dev macro-F1``, each present where recorded (a
    pre-training's ``train masked-LM loss``, by step, ending at its final figure in ``metrics``, the stage's,
    recorded at its last step: a run stopped between two 50th steps ended its curve up to 49 steps early).
    A folds teacher's figures, named ``fold-K/...``, are each fold's own and are left out."""
    wanted = {("train", "loss"): "train loss", ("dev", "loss"): "dev loss", ("dev", "macro_f1"): "dev macro-F1",
              ("train", "mlm_loss"): "train masked-LM loss"}  # (kd pretrain's, every 50 steps)
    curves: dict[str, list[tuple[float, float]]] = {}
    for h in history:
        key = wanted.get((h["split"], h["name"]))
        if key is not None and h["value"] is not None:
            curves.setdefault(key, []).append((float(h["step"]), float(h["value"])))
    final = (metrics or {}).get("train", {})
    if final.get("mlm_loss") is not None and final.get("steps") and float(final["steps"]) not in dict(curves.get("train masked-LM loss", [])):
        curves.setdefault("train masked-LM loss", []).append((float(final["steps"]), float(final["mlm_loss"])))
    return {k: sorted(v) for k, v in curves.items()}


def _exit_labels(xs: list[float], points: list[tuple], by_layers: bool) -> dict[tuple[float, float], str]:
    """One label per point of the early-exit chart, ``{(x, accuracy): label}``: speeds that land on the
    same point (no text exits earlier at 0.1 than at 0, common with many classes, whose normalized
    entropy stays high) share one label, ``speed 0, 0.1``; each drawn apart wrote over the others."""
    groups: dict[tuple[float, float], list[tuple[float, float | None]]] = {}
    for x, (speed, acc, _, wall) in zip(xs, points):
        # within 1% of a point of the same accuracy is that point: in FLOPs, a speed where no text exits
        # costs its branches on top of speed 0's (0.998 of it), its label printed over speed 0's
        at = next((g for g in groups if g[1] == acc and abs(g[0] - x) <= 0.01 * max(abs(g[0]), abs(x))), (x, acc))
        groups.setdefault(at, []).append((speed, wall))
    labels = {}
    for at, group in groups.items():
        walls = [w for _, w in group if w] if by_layers else []
        span = dict.fromkeys(f"{w:.1f}" for w in (min(walls), max(walls))) if walls else {}
        wall = f" ({'-'.join(span)}× wall)" if walls else ""
        labels[at] = "speed " + ", ".join(f"{s:g}" for s, _ in group) + wall
    return labels


LABEL_POINTS = 8  # the early-exit chart's labels: font size (points)
LABEL_OFFSETS = ((4, 4), (4, -12), (4, 16), (4, -24), (4, 28), (4, -36))  # from the point, in points: the first that overlaps no other label


def place_labels(at: list[tuple[float, float]], sizes: list[tuple[float, float]], *,
                 bounds: tuple[float, float, float, float] | None = None,
                 offsets: tuple[tuple[float, float], ...] = LABEL_OFFSETS) -> list[tuple[float, float]]:
    """Each label's offset from its point (``at``, and ``sizes`` of the labels, in one unit, y up): the
    first of ``offsets``, right of the point, then left of it (``(-4 - width, dy)``), where its box overlaps
    no label placed before it and lies within ``bounds`` (``x0, y0, x1, y1``: the axes), else the first
    within bounds, else the first. Speeds a little apart (0.2 and 0.3, an exit or two between them) had
    their labels printed over one another, and the last speed's ran off the chart."""
    placed: list[tuple[float, float, float, float]] = []
    chosen = []
    for (x, y), (w, h) in zip(at, sizes):
        tries = list(offsets) + [(-dx - w, dy) for dx, dy in offsets]
        boxes = [(x + dx, y + dy, x + dx + w, y + dy + h) for dx, dy in tries]
        inside = [b for b in boxes if bounds is None or (bounds[0] <= b[0] and b[2] <= bounds[2] and bounds[1] <= b[1] and b[3] <= bounds[3])]
        free = next((b for b in inside if not any(b[0] < p[2] and p[0] < b[2] and b[1] < p[3] and p[1] < b[3] for p in placed)),
                    (inside or boxes)[0])
        placed.append(free)
        chosen.append(tries[boxes.index(free)])
    return chosen


def _label_points(fig, ax, labels: dict[tuple[float, float], str]) -> None:
    """Draw the early-exit chart's ``labels`` (``{(x, accuracy): text}``) where they overlap no other,
    within the axes, measured once they are laid out (``place_labels``)."""
    fig.tight_layout()
    renderer = fig.canvas.get_renderer()
    scale = fig.dpi / 72.0  # points to the pixels the renderer measures in
    items = sorted(labels.items())
    at = [tuple(p / scale for p in ax.transData.transform((x, 100 * acc))) for (x, acc), _ in items]
    sizes = []
    for _, text in items:
        probe = ax.text(0, 0, text, fontsize=LABEL_POINTS)
        box = probe.get_window_extent(renderer=renderer)
        probe.remove()
        sizes.append((box.width / scale, box.height / scale))
    frame = ax.get_window_extent(renderer=renderer)
    bounds = (frame.x0 / scale, frame.y0 / scale, frame.x1 / scale, frame.y1 / scale)
    for ((x, acc), text), offset in zip(items, place_labels(at, sizes, bounds=bounds)):
        ax.annotate(text, (x, 100 * acc), textcoords="offset points", xytext=offset, fontsize=LABEL_POINTS)


def _exit_speedups(metrics: dict[str, float], speed: str, steady: str | None = "layers") -> tuple[float | None, float | None]:
    """An early-exit speed's steady speedup in ``steady`` (``flops``: FastBERT's, those at speed 0
    over those at it, the branches' cost counted; ``layers``: those run at speed 0 over the mean run
    at it; either is what the wall clock approaches on an idle machine, without its noise) and on
    the wall clock, each None where not recorded."""
    full, run = (metrics.get(f"{steady}@0"), metrics.get(f"{steady}@{speed}")) if steady else (None, None)
    return (full / run if full and run else None), metrics.get(f"speedup@{speed}")


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
