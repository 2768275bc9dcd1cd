"""The figures ``kd report`` shows, as pure functions: classification metrics by hand. (``kd report``
itself on teacher and early-exit stages is tested in ``test_early_exit.py``, on its store.)"""

from __future__ import annotations

import numpy as np
import pytest

from kdstore.metrics import classification_metrics, confusion_matrix


def test_metrics_by_hand():
    # labels a a a b b c, predicted a a b b c c; class d appears in neither
    y_true, y_pred = np.array([0, 0, 0, 1, 1, 2]), np.array([0, 0, 1, 1, 2, 2])
    m = classification_metrics(y_true, y_pred, num_classes=4, class_names=["a", "b", "c", "d"])
    assert confusion_matrix(y_true, y_pred, num_classes=4).tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    # per class: precision tp/predicted, recall tp/support, F1 their harmonic mean
    assert [m[f"precision[{c}]"] for c in "abc"] == pytest.approx([1, 1 / 2, 1 / 2])
    assert [m[f"recall[{c}]"] for c in "abc"] == pytest.approx([2 / 3, 1 / 2, 1])
    assert [m[f"f1[{c}]"] for c in "abc"] == pytest.approx([4 / 5, 1 / 2, 2 / 3])
    assert [m[f"support[{c}]"] for c in "abcd"] == [3, 2, 1, 0]
    # macro: the mean over the classes present (d is left out); micro: pooled counts, 4 right of 6
    assert m["macro_precision"] == pytest.approx(2 / 3)
    assert m["macro_recall"] == pytest.approx(13 / 18)
    assert m["macro_f1"] == pytest.approx(59 / 90)
    assert m["accuracy"] == m["micro_precision"] == m["micro_recall"] == m["micro_f1"] == pytest.approx(2 / 3)
    assert m["n"] == 6
    empty = classification_metrics(np.array([], dtype=int), np.array([], dtype=int), num_classes=2)
    assert empty["micro_precision"] == empty["micro_recall"] == empty["accuracy"] == 0.0


def test_charts_take_any_class_name(tmp_path, capsys):
    """A "$" in a class name is no mathtext (it stopped every chart), and Chinese names without a
    font to draw them are said once, not warned about glyph by glyph."""
    from kdstore.plots import write_plots

    report = {"run": "r", "classes": ["$_$", "类别甲"], "stages": [{"name": "teach", "metrics": {}, "confusion": {"dev": [[1, 2], [3, 4]]}}]}
    written = write_plots(report, tmp_path)
    assert [p.name for p in written] == ["r-teach-confusion-dev.png"] and written[0].read_bytes()[:4] == b"\x89PNG"
    assert "Glyph" not in capsys.readouterr().err


def test_report_lists_per_class_figures_in_class_order():
    from commands.runs import _metric_order

    names = ["support[体育]", "f1[财经]", "accuracy", "f1[体育]", "n", "loss", "support[财经]", "f1[时政]"]
    classes = ["时政", "体育", "财经"]  # pinned by --classes: not alphabetical
    assert sorted(names, key=lambda n: _metric_order(n, classes)) == [
        "accuracy", "n", "f1[时政]", "f1[体育]", "f1[财经]", "loss", "support[体育]", "support[财经]"]
    speeds = ["accuracy@0.8", "accuracy@1e-05", "accuracy@0.1", "layers@0.5", "accuracy@x"]  # by speed, not by name
    assert sorted(speeds, key=_metric_order) == ["accuracy@1e-05", "accuracy@0.1", "accuracy@0.8", "accuracy@x", "layers@0.5"]


def test_layer_figures_keep_layer_order_where_class_names_are_digits():
    """Star ratings or 0/1 labels ingested as classes '2', '1': ``exit_share[2]`` was taken for class
    '2''s figure and listed first, ``exit_share[1]`` second, then 3..12; a layer's figure is by its layer."""
    from commands.runs import _metric_order

    classes = ["2", "1"]
    names = [f"exit_share[{k}]" for k in (12, 3, 1, 10, 2)] + ["teacher_layer[1]", "teacher_layer[0]", "f1[1]", "f1[2]"]
    assert sorted(names, key=lambda n: _metric_order(n, classes)) == [
        "exit_share[1]", "exit_share[2]", "exit_share[3]", "exit_share[10]", "exit_share[12]", "f1[2]", "f1[1]",
        "teacher_layer[0]", "teacher_layer[1]"]


def test_counted_figures_read_back_as_ints_and_rates_stay_floats():
    from kdstore.report import metric_value

    assert [type(metric_value(n, 12.0)) for n in ("n", "support[体育]", "fold2/truncated", "flagged[cleanlab]", "parameters", "pool_samples", "teacher_layer[0]")] == [int] * 7
    assert metric_value("fold2/truncated", 12.0) == 12
    assert [type(metric_value(n, 1.0)) for n in ("accuracy", "f1[体育]", "samples_per_s", "layers@0.5")] == [float] * 4
    assert metric_value("n", 2.5) == 2.5  # a count that is not whole (never written) is given back as it is
    # a class name with a "/" (体育/运动): the fold prefix is cut before the bracket, not inside it
    assert type(metric_value("support[体育/运动]", 12.0)) is int and type(metric_value("fold1/support[a/b]", 3.0)) is int
    assert type(metric_value("f1[a/n]", 1.0)) is float
    # an early-exit stage's counts too (its "layers" is a mean over the texts: a float)
    assert [type(metric_value(n, 32.0)) for n in ("branch_parameters", "num_layers", "max_len", "layers")] == [int] * 3 + [float]


def test_a_confusion_charts_title_fits_its_figure_with_few_classes(tmp_path, monkeypatch):
    """Two classes made a figure narrower than the title: "distill-textcnn — test" was cut at the edge."""
    from kdstore import plots

    seen = []

    def save(fig, path, plt):
        fig.canvas.draw()
        title = fig.axes[0].title.get_window_extent(fig.canvas.get_renderer())
        seen.append((title.x0 >= 0 and title.x1 <= fig.bbox.width, fig.axes[0].get_title()))
        return original(fig, path, plt)

    original = plots._save
    monkeypatch.setattr(plots, "_save", save)
    report = {"run": "r", "classes": ["a", "b"], "stages": [
        {"name": "predict-distill-textcnn@test", "metrics": {}, "confusion": {"test": [[1, 2], [3, 4]]}}]}
    written = plots.write_plots(report, tmp_path)
    assert seen == [(True, "predict-distill-textcnn@test — test")] and written[0].stat().st_size > 0


def test_a_confusion_chart_of_long_chinese_class_names_keeps_its_matrix(tmp_path, monkeypatch):
    """Three classes of 15 Chinese characters: the names took the whole 3-inch figure and tight_layout
    squeezed the matrix to nothing (a sliver under the title). The figure grows by the names' length."""
    from kdstore import plots

    seen = []
    real = plots._save

    def save(fig, path, plt):
        fig.tight_layout()
        box = fig.axes[0].get_position()
        width, height = fig.get_size_inches()
        seen.append((box.width * width, box.height * height))
        return real(fig, path, plt)

    monkeypatch.setattr(plots, "_save", save)
    names = ["非常长的中文类别名称正面评价类", "非常长的中文类别名称负面评价类", "中性"]
    matrix = [[1, 0, 4], [0, 3, 3], [0, 0, 6]]
    written = plots.write_plots({"run": "r", "classes": names, "stages": [{"name": "teach", "metrics": {}, "confusion": {"dev": matrix}}]}, tmp_path)
    assert [p.name for p in written] == ["r-teach-confusion-dev.png"]
    assert min(seen[0]) >= 0.8 * 0.6 * len(names), seen  # the matrix near its 0.6 inch a cell
    assert plots.name_ems("中性ab") == pytest.approx(3.2) and sorted(names, key=plots.name_ems)[0] == "中性"


def test_an_early_exit_chart_takes_every_stored_speed(tmp_path, monkeypatch):
    """A speed stored as ``accuracy@1e-05`` (``--speed 0.00001``) was left off the curve."""
    from kdstore import plots

    seen = []
    real = plots._save

    def save(fig, path, plt):
        seen.extend(tuple(line.get_xdata()) for ax in fig.axes for line in ax.get_lines())
        return real(fig, path, plt)

    monkeypatch.setattr(plots, "_save", save)
    metrics = {"test": {"accuracy@0": 0.9, "speedup@0": 1.0, "accuracy@1e-05": 0.9, "speedup@1e-05": 1.1, "accuracy@0.5": 0.8, "speedup@0.5": 2.0}}
    written = plots.write_plots({"run": "r", "classes": ["a", "b"], "stages": [{"name": "ee", "metrics": metrics}]}, tmp_path)
    assert [p.name for p in written] == ["r-ee-early-exit-test.png"] and seen == [(1.0, 1.1, 2.0)]
    # with the layers run on record, the steadier figure: 12 layers at speed 0 over the mean run at each speed
    seen.clear()
    metrics["test"].update({"layers@0": 12.0, "layers@1e-05": 12.0, "layers@0.5": 4.0})
    plots.write_plots({"run": "r", "classes": ["a", "b"], "stages": [{"name": "ee", "metrics": metrics}]}, tmp_path)
    assert seen == [(1.0, 1.0, 3.0)]
    # with FLOPs on record, FastBERT's figure: the branches' cost counted (speed 1e-05 runs every layer and branch)
    seen.clear()
    metrics["test"].update({"flops@0": 1200.0, "flops@1e-05": 1250.0, "flops@0.5": 500.0})
    labels = []

    def save_label(fig, path, plt):
        labels.extend(ax.get_xlabel() for ax in fig.axes)
        return save(fig, path, plt)

    monkeypatch.setattr(plots, "_save", save_label)
    plots.write_plots({"run": "r", "classes": ["a", "b"], "stages": [{"name": "ee", "metrics": metrics}]}, tmp_path)
    assert seen == [(1.0, 0.96, 2.4)] and labels == ["FLOPs at speed 0 / FLOPs at the speed"]
    del metrics["test"]["flops@0.5"]  # one speed without: every point in layers, as the axis says
    seen.clear(), labels.clear()
    plots.write_plots({"run": "r", "classes": ["a", "b"], "stages": [{"name": "ee", "metrics": metrics}]}, tmp_path)
    assert seen == [(1.0, 1.0, 3.0)] and labels == ["layers at speed 0 / mean layers run"]


def test_early_exit_speeds_on_one_point_share_one_label(tmp_path, monkeypatch):
    """Speeds where no text exits earlier (0 to 0.3 with 12 classes, whose normalized entropy stays
    high) land on one point: each was labelled there apart, the labels printed over one another."""
    from kdstore import plots

    seen = []
    real = plots._save

    def save(fig, path, plt):
        seen.extend(t.get_text() for ax in fig.axes for t in ax.texts)
        return real(fig, path, plt)

    monkeypatch.setattr(plots, "_save", save)
    test = {"layers@0": 12.0, "accuracy@0": 0.9, "speedup@0": 1.0}
    for speed, layers, acc, wall in (("0.1", 12.0, 0.9, 0.97), ("0.3", 12.0, 0.9, 1.04), ("0.5", 4.0, 0.8, 2.9)):
        test.update({f"layers@{speed}": layers, f"accuracy@{speed}": acc, f"speedup@{speed}": wall})
    plots.write_plots({"run": "r", "classes": list("abcdefghijkl"), "stages": [{"name": "ee", "metrics": {"test": test}}]}, tmp_path)
    assert sorted(seen) == ["speed 0, 0.1, 0.3 (1.0× wall)", "speed 0.5 (2.9× wall)"]
    # with FLOPs on record (every stage stores them), the speeds where no text exits cost their branches too:
    # 0.998 of speed 0's, not 1.0, so each got its own label, printed over speed 0's
    seen.clear()
    test.update({"flops@0": 1_000_000.0, "flops@0.1": 1_001_700.0, "flops@0.3": 1_001_700.0, "flops@0.5": 400_000.0})
    plots.write_plots({"run": "r", "classes": list("abcdefghijkl"), "stages": [{"name": "ee", "metrics": {"test": test}}]}, tmp_path)
    assert sorted(seen) == ["speed 0, 0.1, 0.3 (1.0× wall)", "speed 0.5 (2.9× wall)"]


def test_early_exit_labels_of_points_a_little_apart_are_drawn_apart(tmp_path, monkeypatch):
    """Speeds 0.2 and 0.3 (an exit or two between them) land near one another, not on one point: each
    label was printed at its point, over the other's. Each is now moved to the first place clear of the
    labels placed before it."""
    from kdstore import plots

    assert plots.place_labels([(0, 0), (2, 1), (100, 0)], [(40, 10)] * 3) == [(4, 4), (4, -12), (4, 4)]
    assert plots.place_labels([(0, 0)] * 3, [(40, 10)] * 3) == [(4, 4), (4, -12), (4, 16)]
    assert plots.place_labels([], []) == []
    # within the axes: a label at the right edge goes left of its point, one at the top below it
    assert plots.place_labels([(190, 50)], [(40, 10)], bounds=(0, 0, 200, 100)) == [(-44, 4)]
    assert plots.place_labels([(50, 95)], [(40, 10)], bounds=(0, 0, 200, 100)) == [(4, -12)]
    boxes = []
    real = plots._save

    def save(fig, path, plt):
        renderer = fig.canvas.get_renderer()
        boxes.extend(t.get_window_extent(renderer=renderer) for ax in fig.axes for t in ax.texts)
        frame.extend(ax.get_window_extent(renderer=renderer) for ax in fig.axes)
        return real(fig, path, plt)

    frame = []
    monkeypatch.setattr(plots, "_save", save)
    test = {"layers@0": 12.0, "accuracy@0": 0.90, "speedup@0": 1.0}
    for speed, layers, acc in (("0.2", 11.8, 0.899), ("0.3", 11.6, 0.898), ("0.8", 3.0, 0.70)):
        test.update({f"layers@{speed}": layers, f"accuracy@{speed}": acc, f"speedup@{speed}": 12.0 / layers})
    plots.write_plots({"run": "r", "classes": ["a", "b"], "stages": [{"name": "ee", "metrics": {"test": test}}]}, tmp_path)
    assert len(boxes) == 4 and all(b.x1 <= frame[0].x1 and b.y1 <= frame[0].y1 for b in boxes)  # (none off the chart)
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:]), [tuple(b.bounds) for b in boxes]


def test_a_training_stage_has_a_learning_curve_chart(tmp_path, monkeypatch):
    """Per-epoch train loss, dev loss and dev macro-F1 were in the store and in --json's history, but no
    chart showed them (whether a teacher overfit, or stopped early, needed a script)."""
    from kdstore import plots

    history = [{"step": e, "split": "train", "name": "loss", "value": v} for e, v in ((2, 0.5), (1, 0.7), (3, 0.3))]
    history += [{"step": e, "split": "dev", "name": n, "value": v} for e in (1, 2, 3) for n, v in (("loss", 0.6 - 0.1 * e), ("macro_f1", 0.5 + 0.1 * e))]
    history += [{"step": 1, "split": "train", "name": "fold-1/loss", "value": 9.0}, {"step": 1, "split": "dev", "name": "accuracy", "value": 0.6}]
    curves = plots.learning_curves(history)
    assert curves == {"train loss": [(1.0, 0.7), (2.0, 0.5), (3.0, 0.3)], "dev loss": [(1.0, 0.5), (2.0, pytest.approx(0.4)), (3.0, pytest.approx(0.3))],
                      "dev macro-F1": [(1.0, 0.6), (2.0, 0.7), (3.0, pytest.approx(0.8))]}
    seen = []
    real = plots._save

    def save(fig, path, plt):
        seen.append(sorted(line.get_label() for ax in fig.axes for line in ax.get_lines() if not line.get_label().startswith("_")))
        return real(fig, path, plt)

    monkeypatch.setattr(plots, "_save", save)
    stage = {"name": "teach", "metrics": {"all": {"best_epoch": 3}}, "history": history}
    written = plots.write_plots({"run": "r", "classes": ["a", "b"], "stages": [stage]}, tmp_path)
    assert [p.name for p in written] == ["r-teach-learning-curve.png"] and written[0].read_bytes()[:4] == b"\x89PNG"
    assert seen == [["dev loss", "dev macro-F1", "train loss"]]
    one_epoch = {"name": "teach", "metrics": {}, "history": [h for h in history if h["step"] == 1]}  # a point, not a curve: no chart
    assert plots.write_plots({"run": "r", "classes": ["a", "b"], "stages": [one_epoch]}, tmp_path) == []


def test_a_confusion_chart_of_many_classes_leaves_out_the_counts_and_stays_a_readable_size(tmp_path, monkeypatch):
    """100 classes took half a minute to draw 10,000 unreadable counts in a 6,700-pixel figure, 1,000
    classes a 66,000-pixel one: beyond 40 classes the cells' colour (and a colour bar) tells the counts."""
    from kdstore import plots

    seen = []

    def save(fig, path, plt):  # (what would be drawn; drawing it is not what is tested)
        ax = fig.axes[0]
        seen.append((len(ax.texts), len(fig.axes), max(fig.get_size_inches())))
        plt.close(fig)
        return path

    monkeypatch.setattr(plots, "_save", save)
    for k in (2, 45):
        matrix = np.arange(k * k).reshape(k, k).tolist()
        plots.write_plots({"run": "r", "classes": [f"类{i}" for i in range(k)], "stages": [{"name": "teach", "metrics": {}, "confusion": {"test": matrix}}]}, tmp_path)
    assert seen[0][:2] == (4, 1)  # a count in each cell, no colour bar
    assert seen[1][:2] == (0, 2) and seen[1][2] <= 1.2 + 0.6 * plots.COUNTED_CELLS_UP_TO
    cell, font, counts = plots.confusion_layout(1000)
    assert not counts and cell * 1000 <= plots.MAX_SIDE_INCHES and 0 < font < 10


def test_a_students_learning_curve_names_its_train_loss_the_distillation_objective(tmp_path, monkeypatch):
    """A student's train loss is its distillation objective, its dev loss the cross-entropy on labels:
    plotted as "train loss" beside "dev loss", their gap read as overfitting. And epochs are whole."""
    from kdstore import plots

    seen = []

    def save(fig, path, plt):
        ax = fig.axes[0]
        seen.append(([line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")], list(ax.get_xticks())))
        plt.close(fig)
        return path

    monkeypatch.setattr(plots, "_save", save)
    history = [{"step": e, "split": s, "name": "loss", "value": v} for e in (1, 2, 3) for s, v in (("train", 0.3 / e), ("dev", 0.5))]
    for kind in ("teach", "distill"):
        plots.write_plots({"run": "r", "classes": ["a", "b"], "stages": [{"name": kind, "kind": kind, "metrics": {}, "history": history}]}, tmp_path)
    assert [labels for labels, _ in seen] == [["train loss", "dev loss"], ["train loss (distillation)", "dev loss"]]
    assert all(float(t).is_integer() for _, ticks in seen for t in ticks)


def test_a_pretrain_stage_has_a_masked_lm_loss_curve_by_step(tmp_path, monkeypatch):
    """`kd pretrain` records its masked-LM loss every 50 steps, in --json's history, but `kd report --plot`
    drew no chart of it: whether pre-training still improved, and was worth more --minutes, needed a script."""
    from kdstore import plots

    seen = []

    def save(fig, path, plt):
        ax = fig.axes[0]
        seen.append((path.name, [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")], ax.get_xlabel()))
        plt.close(fig)
        return path

    monkeypatch.setattr(plots, "_save", save)
    history = [{"step": s, "split": "train", "name": "mlm_loss", "value": 7.0 - s / 100} for s in (50, 100, 150)]
    stage = {"name": "pretrain", "kind": "pretrain", "metrics": {"train": {"mlm_loss": 5.5, "frequency_loss": 6.2}}, "history": history}
    plots.write_plots({"run": "p", "classes": ["a", "b"], "stages": [stage]}, tmp_path)
    # beside the loss of knowing no context, which kd pretrain warns of a loss no better than
    assert seen == [("p-pretrain-learning-curve.png", ["train masked-LM loss", "no context (character frequencies)"], "training step")]
    # a stage that failed is drawn up to its failure, and its title says it failed
    titles = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, plt: (titles.append(fig.axes[0].get_title()), plt.close(fig), path)[2])
    plots.write_plots({"run": "p", "classes": ["a", "b"], "stages": [{**stage, "status": "failed"}, {**stage, "status": "succeeded"}]}, tmp_path)
    assert titles == ["pretrain: learning curve (failed)", "pretrain: learning curve"]


def test_the_no_chinese_font_note_only_comes_with_a_chart_that_prints_class_names(tmp_path, capsys):
    """Chinese class names and no CJK font: the note is printed for a confusion chart (which draws the
    names), not for a run whose charts are only learning curves (which draw none)."""
    from kdstore import plots

    history = [{"split": "train", "name": "loss", "step": s, "value": 1.0 / s} for s in (1, 2)]
    curve_only = {"run": "r", "classes": ["正面", "负面"], "stages": [{"name": "teach", "metrics": {}, "history": history}]}
    assert [p.name for p in plots.write_plots(curve_only, tmp_path)] == ["r-teach-learning-curve.png"]
    assert "no font" not in capsys.readouterr().err
    if plots._pyplot().rcParams["font.sans-serif"][0] not in plots.CJK_FONTS:  # (this machine has none)
        confusion = {"run": "r", "classes": ["正面", "负面"], "stages": [{"name": "teach", "metrics": {}, "confusion": {"dev": [[1, 0], [0, 1]]}}]}
        plots.write_plots(confusion, tmp_path)
        assert "no font that draws Chinese" in capsys.readouterr().err


def test_a_learning_curve_of_a_stage_still_running_or_whose_process_is_gone_says_so(tmp_path, monkeypatch):
    """A stage killed with `kill -9` (`running (process gone)` in kd report and kd runs) or still running keeps
    the epochs it scored: its chart was titled as a finished stage's, a curve cut short read as a whole training."""
    from kdstore import plots

    titles = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, plt: (titles.append(fig.axes[0].get_title()), plt.close(fig), path)[2])
    history = [{"step": e, "split": "train", "name": "loss", "value": 1.0 / e} for e in (1, 2, 3)]
    stages = [{"name": name, "kind": "distill", "status": status, "process_gone": gone, "metrics": {}, "history": history}
              for name, status, gone in (("a", "running", True), ("b", "running", False), ("c", "failed", False), ("d", "succeeded", False))]
    plots.write_plots({"run": "r", "classes": ["x", "y"], "stages": stages}, tmp_path)
    assert titles == ["a: learning curve (running, process gone)", "b: learning curve (running)",
                      "c: learning curve (failed)", "d: learning curve"]


def test_the_note_of_a_label_teacher_quotes_a_class_name_a_shell_would_split():
    """`kd report --compare` said "learned from the rows --label pos --label 中 评 selects" of a teacher of
    `--label pos --label '中 评'`: typed back as shown, the shell split '中 评' in two ('评' a stray argument)."""
    from kdstore.report import chosen_rows

    assert chosen_rows({"config": {"labels": ["pos", "中 评"]}}) == "learned from the rows --label pos --label '中 评' selects"
    assert chosen_rows({"config": {"labels": ["pos", "neg"], "where": "id % 2 = 0"}}) == \
        "learned from the rows --where 'id % 2 = 0' and --label pos --label neg select"


def test_a_detections_estimate_of_wrong_labels_reads_back_as_a_count():
    """``estimated_issues`` (cleanlab's estimate of how many labels are wrong, a detection's figure) is a count:
    ``kd report --json`` gave 3.0 and the text table "3.0000", where every other count is a whole number."""
    from commands.runs import _fmt
    from kdstore.report import metric_value

    assert type(metric_value("estimated_issues", 3.0)) is int and _fmt(metric_value("estimated_issues", 3.0)) == "3"


def test_pretrain_curve_ends_at_the_last_step_and_names_electras_generator(db, tmp_path, monkeypatch):
    """`kd pretrain --steps 120` records its masked-LM loss at steps 50 and 100, and its final one (the one it
    prints) at step 120: the chart stopped at step 100, and a --minutes run of under 100 steps drew none. And an
    ELECTRA run's masked-LM loss is its generator's (the saved encoder is the discriminator): the legend said
    "train masked-LM loss" as for an MLM encoder."""
    import random

    from synthetic import kd, labeled_rows, write_tsv

    from kdstore import plots

    write_tsv(tmp_path / "train.tsv", labeled_rows(random.Random(0), 60))
    kd("ingest", str(tmp_path / "train.tsv"), "--db", db)
    seen = {}

    def save(fig, path, plt):
        ax = fig.axes[0]
        seen[path.name] = {line.get_label(): list(line.get_xdata()) for line in ax.get_lines() if not line.get_label().startswith("_")}
        plt.close(fig)
        return path

    monkeypatch.setattr(plots, "_save", save)
    for run, objective in (("m", "mlm"), ("e", "electra")):
        kd("pretrain", "--run", run, "--layers", "3", "--hidden", "32", "--steps", "120", "--max-len", "32", "--batch-size", "16",
           "--objective", objective, "--db", db)
        kd("report", "--run", run, "--plot", str(tmp_path / "charts"), "--db", db, "--json")
    assert seen["m-pretrain-learning-curve.png"]["train masked-LM loss"] == [50, 100, 120]
    assert seen["e-pretrain-learning-curve.png"]["train masked-LM loss (ELECTRA's generator)"] == [50, 100, 120]
