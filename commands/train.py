"""``kd pretrain``, ``kd teach`` and ``kd distill``: the training stages of a run.

Each also runs under ``torchrun`` (one process per GPU, or per CPU slot with gloo): every rank
trains on its share of each global batch and scores its shard of the samples; rank 0 alone opens
the stage, writes figures and artifacts, and prints the result.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from dataclasses import fields as dataclass_fields, replace
from pathlib import Path

import click
from click.core import ParameterSource

from kdstore import segment
from kdstore.advice import reteach_command
from kdstore.distill import CWSM_GAMMA, INTERMEDIATE_OPTIONS, MSE_TEMPERATURE, TEACHER_AVERAGES, DistillConfig, check_student_shape, check_student_vocabulary, first_teacher_note, student_model_config, student_shape, config_dict as distill_config, distill as run_distill, relation_heads as resolved_relation_heads
from kdstore.schedules import LR_SCHEDULES
from kdstore.matches import parse_matches
from kdstore.context_free import measured_loss
from kdstore.distributed import Dist, process_group, shared_stage
from kdstore.environment import environment
from kdstore.errors import InterruptedAfterRecord, KdError, Terminated
from kdstore.labels import digests, labels_state, redetect_command, stale_teacher_runs
from kdstore.losses import SOFT_LOSSES, TEMPERATURE_SCHEDULES
from kdstore.metrics import below_room, chance_macro_f1, class_support, hardly_beats_majority, missed_classes, versus_majority
from kdstore.noise import LEAST_CLASS_SAMPLES, fold_warnings_of
from kdstore.names import SPLITS, model_source, resolve_run_id
from kdstore.pretrain import LONG_TEXTS, OBJECTIVES, PretrainConfig, check_enough_texts, config_dict as pretrain_config, pretrain as run_pretrain, read_corpus
from kdstore.resume import STATE_RECORD, in_working_directory, resume_folder, saved_meta, saved_point
from kdstore.report import larger_than_teacher, learned_dev, resume_command, run_report, trained_on_dev
from kdstore.runs import SUCCEEDED, SignalGuard, check_stage_free, stage_scope
from kdstore.schema import iso_utc
from kdstore.students import KINDS, check_bert_layout, layer_map as student_layer_map
from kdstore.store import label_id_note
from kdstore.teacher import TRAINABLE_SPLITS, TeachConfig, check_labels, config_dict as teach_config, score_missing, train_teacher, unscored_labeled, unscored_note, unscored_to_learn
from kdstore.wording import first_few
from kdstore.torchutil import DEVICES, pick_device

from .common import FLOAT, KdPath, file_note, json_option, open_store, overwrite_option, print_json, resolve_runs, run_option, store_options


def _device_option(f):
    return click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)(f)


def _lacking_pool_logits(store, runs) -> list[str]:
    """The teacher runs some unlabeled text (not augmented) has no logits from."""
    from kdstore.outputs import unscored

    pool = store.samples(splits=["unlabeled"], where="parent_id IS NULL").ids
    runs = list(dict.fromkeys(runs))  # (--teacher-run A --teacher-run A: one command to run)
    return [r for r in runs if len(unscored(store, store.find_stage(r, "teach").id, pool))] or runs


def _warn_pool_without_logits(store, runs, where: str | None) -> int:
    """Name the pool texts (of those ``where`` selects) some teacher has no logits for, which the student
    leaves out, before it trains (said at its end only, hours of a large pool's training went by first);
    returns how many."""
    import numpy as np

    from kdstore.distill import pool_where
    from kdstore.outputs import unscored

    runs = list(dict.fromkeys(runs))
    try:
        missing = {r: unscored(store, store.find_stage(r, "teach").id) for r in runs}
    except KdError:  # no teacher to speak of: the stage says so
        return 0
    pool = store.samples(ids=np.unique(np.concatenate(list(missing.values()))), splits=["unlabeled"], where=pool_where(where)).ids
    if not len(pool):
        return 0
    _warn(_pool_left_out(len(pool), [r for r in runs if len(np.intersect1d(missing[r], pool))]))
    return len(pool)


def _pool_left_out(n: int, runs: list[str]) -> str:
    """The warning of ``n`` unlabeled texts the student leaves out, for want of logits of the teachers of ``runs``."""
    fix = " and ".join(f"`kd teach --run {r} --logits-only`" for r in runs)
    many = n != 1
    return f"{n} unlabeled text{'s' * many} {'have' if many else 'has'} no teacher logits and {'are' if many else 'is'} left out: run {fix} first"


def _seed_option(f):
    # numpy seeds its generator with 0 .. 2**32 - 1 and raised a ValueError mid-stage for any other
    return click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=42, show_default=True)(f)


GRAD_ACCUM_HELP = ("Run each --batch-size batch as K pieces whose gradients add up before the step (gradient accumulation): "
                   "the same steps in about 1/K of the activation memory, for a model or a --max-len that does not fit.")
# (kd distill's intermediate losses are token means, each piece's weighed by its rows: near the whole batch's, not equal)
DISTILL_GRAD_ACCUM_HELP = GRAD_ACCUM_HELP.replace("the same steps in", "the same steps (nearly, with a transformer student's "
                                                  "intermediate losses: token means, each piece's weighed by its rows) in")


def _warn(message: str) -> None:
    """``warning: MESSAGE`` on standard error, kept for the ``warnings`` of --json (``_finish`` lists it
    with the stage's own): an option a student does not use, a --max-len past pre-trained positions.
    Under torchrun, rank 0 alone says it."""
    if Dist.from_env().is_main:
        click.echo(f"warning: {message}", err=True)
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta.setdefault("kd.warnings", []).append(message)


def _warned() -> list[str]:
    ctx = click.get_current_context(silent=True)
    return list(ctx.meta.get("kd.warnings", [])) if ctx is not None else []


def _cut_shown(cut: float) -> str:
    """A share of texts cut, as a percentage that is 0% or 100% only when it is: "<1%" and ">99%" for
    a few texts of many cut, or most but not all."""
    return "<1%" if 0 < cut < 0.005 else ">99%" if 0.995 <= cut < 1 else f"{cut:.0%}"


def _finish(store, run: str, stage_name: str, as_json: bool) -> None:
    stage = next(s for s in run_report(store, run)["stages"] if s["name"] == stage_name)
    warnings: list[str] = _warned() + segment.cache_warnings()  # those said before and as the stage ran
    for key, epoch in sorted((stage["metrics"].get("all") or {}).items()):  # said as it happened (torchutil.stop_if_diverged)
        if key.endswith("diverged_epoch"):
            fold = f" ({key[:-len('/diverged_epoch')]})" if "/" in key else ""
            kept = "step" if (stage["config"] or {}).get("eval_every") else "epoch"  # (scored every --eval-every steps)
            warnings.append(f"training diverged in epoch {int(epoch)}{fold}: stopped, keeping the best {kept} before it")

    def warn(message: str) -> None:  # on standard error, and in --json's warnings
        click.echo(f"warning: {message}", err=True)
        warnings.append(message)

    every = int((stage["config"] or {}).get("eval_every") or 0)
    per_epoch = [int(v) for k, v in (stage["metrics"].get("all") or {}).items() if k.endswith("steps_per_epoch")]
    total = max(per_epoch, default=0) * int(stage["config"].get("epochs") or 1)  # (a fold's steps its own: the longest one's)
    if every and per_epoch and every >= total and stage["metrics"].get("dev"):
        warn(f"--eval-every {every}: the training took {total} steps, so dev was scored once, at the last: nothing was "
             f"compared and no step was kept over another (a smaller --eval-every, e.g. {max(1, total // 10)}, judges as it trains)")
    unscored = int(stage["metrics"].get("all", {}).get("pool_without_logits") or 0)
    ctx = click.get_current_context(silent=True)
    said = ctx.meta.get("kd.pool_without_logits") if ctx is not None else None
    if unscored and unscored != said:  # (said before the student trained: again only where an ingest meanwhile changed it)
        warn(_pool_left_out(unscored, _lacking_pool_logits(store, stage["config"].get("teacher_runs") or [run])))
    cut = _cut_share(stage)
    splits = (stage["config"] or {}).get("splits") or ["train"]  # (a teacher of --split dev: not "train texts")
    if stage["metrics"].get("all", {}).get("dev_samples"):  # (dev judged: --where/--label selected no dev row to learn)
        splits = [s for s in splits if s != "dev"] or splits
    texts = {"pretrain": "texts", "distill": "texts it learned from"}.get(stage["kind"], f"{'/'.join(splits)} texts it learned from" if splits != ["train"] else "train texts")
    if cut is not None and cut >= CUT_WARN_SHARE:
        warn(f"{_cut_shown(cut)} of the {texts} are longer than --max-len {stage['config'].get('max_len')} tokens "
             f"and were cut to fit (the {CUT_READER.get(stage['kind'], 'teacher')} never saw their ends): "
             + (f"its model reads no more than {limit} tokens (its position table): a model with more positions may help, at a cost in speed"
                if (limit := _position_limit(stage)) is not None and limit <= int(stage["config"].get("max_len") or 0)
                else "a larger --max-len may help, at a cost in speed")
             + (" (or --long-texts split, which reads each long text as pieces)" if stage["kind"] == "pretrain" else ""))
    for message in _unlearned(stage, store):
        warn(message)
    if heavy := _overweighted_note(stage, store):
        warn(heavy)
    if stage["kind"] == "pretrain":
        train = stage["metrics"].get("train") or {}
        if train.get("unk_share", 0.0) >= UNK_WARN_SHARE:  # (a pre-training of before kd counted them has none)
            warn(f"{train['unk_share']:.1%} of the text tokens are [UNK], characters seen fewer than --min-count "
                 f"{stage['config'].get('min_count')} times: the model learns nothing of them (a lower --min-count, or more text)")
        if train.get("mlm_loss", float("nan")) >= train.get("frequency_loss", float("inf")):  # (kdstore.context_free: a long run this poor fails)
            steps = int(train.get("steps") or 0)
            measured = measured_loss(stage["config"].get("objective", "mlm"))
            warn(f"after {steps} step{'s' * (steps != 1)} the {measured} {train['mlm_loss']:.2f} is no better than predicting "
                 f"each character by its frequency ({train['frequency_loss']:.2f}): the model has learned no context yet, "
                 "and a teacher fine-tuned from it may answer one class; give it more --minutes or --steps"
                 # (at --lr 0.5 more steps do not help: the rate is the cause)
                 + (f", or a lower --lr than {lr:g} (the default is {PretrainConfig.lr:g})"
                    if (lr := float(stage["config"].get("lr") or 0)) > PretrainConfig.lr else ""))
    if stage["config"].get("student") == "early-exit" and stage["config"].get("max_loss") is not None:
        from kdstore.exit_speed import coarse_budget

        coarse = coarse_budget(int((stage["metrics"].get("dev") or {}).get("n") or 0), float(stage["config"]["max_loss"]),
                               speed=stage["metrics"].get("all", {}).get("speed"))
        if coarse:
            warn(coarse)
    if stage["kind"] == "distill" and (larger := larger_than_teacher(store, stage)):  # (a TextCNN's 128-wide table over a tiny teacher's vocabulary)
        student = stage["config"].get("student")
        sizes = {"textcnn": ["--embed-dim", "--num-filters"], "transformer": ["--layers", "--width"]}.get(student, ["--embed-dim", "--hidden"])
        if stage["config"].get("init_embeddings") == "teacher":  # (its width is the teacher's table's)
            sizes = [o for o in sizes if o != "--embed-dim"]
        lower = "a smaller --student-model" if stage["config"].get("student_model") else f"lower {', '.join(sizes)}"
        warn(f"the {student} student is {larger} (a student is meant to be smaller and faster: {lower})")
    if stage["kind"] == "distill" and stage["config"].get("augment") and not stage["metrics"].get("all", {}).get("augmented_samples"):
        warn("--augment made no text the student could learn from (each variant was its parent text, "
             "another sample's, or empty: --p-mask 1 on one-word texts, say): try other probabilities or methods")
    if stage["config"].get("unlabeled") is True and not stage["metrics"].get("all", {}).get("pool_samples") and not unscored:
        # (a pool none of whose texts the teacher scored is the warning above's: "no unlabeled pool" would be untrue)
        # (with --augment it learned from the augmented texts too: "alone" would say otherwise)
        learned = "and the augmented texts" if stage["metrics"].get("all", {}).get("augmented_samples") else "alone"
        if stage["config"].get("where"):  # (the store may have a pool: none of it matched)
            warn(f"--unlabeled, but --where {stage['config']['where']!r} selects no unlabeled sample: the student learned "
                 f"from the labeled samples {learned}")
        else:
            warn(f"--unlabeled, but the store has no unlabeled pool: the student learned from the labeled "
                 f"samples {learned} (`kd ingest FILE --split unlabeled` adds one)")
    config, learned = stage["config"], stage["metrics"].get("all", {})
    pool, made = int(learned.get("pool_samples") or 0), int(learned.get("augmented_samples") or 0)
    if stage["kind"] == "distill" and config.get("hard_weight") is not None and pool + made and \
            max(config.get("alpha") or 0.0, config.get("alpha_end") or 0.0) == 0.0 and not config.get("matches") and \
            not any(config.get(o[2:].replace("-", "_")) for o in INTERMEDIATE_OPTIONS):
        # (with --hard-weight, alpha weighs every sample's soft loss: the texts without a gold label had none,
        # nor, where they learned a transformer student's intermediate losses, were they taught nothing)
        unlabeled = " and ".join(t for t in (f"{pool} unlabeled" if pool else "", f"{made} augmented" if made else "") if t)
        warn(f"--alpha 0 with --hard-weight weighs the teacher's loss 0 for every sample: the {unlabeled} texts taught the "
             "student nothing (--alpha-end grows alpha; without --hard-weight they learn from the teacher at full weight)")
    if config.get("labels_digest") not in (None, labels_state(store)["labels_digest"]):
        # a label edit of another process after the stage read its labels: its figures read as those of the labels now
        warn(f"the labels changed while stage {stage_name!r} ran (kd labels clean, set, import or undo meanwhile): it learned "
             "from the labels as it read them, and its figures judge against those; re-run it with --overwrite (and the options "
             f"`kd report --run {run}` lists for it) to learn from the labels as they are now")
    if stage["kind"] == "teach" and stage["status"] == "succeeded" and (late := unscored_note(store, run, stage_name)):
        warn(late)  # (an ingest while it trained: the next `kd distill` was refused with no word from this one)
    if stage["kind"] == "teach" and stage["status"] == "succeeded":
        for w in _weak_fold_notes(run, stage):  # (dev read 100%, the folds' average, while one fold guessed its fifth of train)
            warn(w)
    if as_json:  # (run and warnings as the labels commands carry them)
        weak = _majority_note(run, stage, store)  # a script (bench/ is one) reads warnings, not figures against a share it must count
        if weak or (weak := _missed_note(stage, store)):
            warn(weak)
        print_json({"run": run, "stage": stage["name"], **stage, "warnings": warnings})
        return
    click.echo(f"run {run}: stage {stage_name} {stage['status']} in {stage['duration_s']:.1f} s")
    if stage["artifact_path"]:
        click.echo(f"  model: {stage['artifact_path']}")
    if stage["kind"] == "distill" and learned.get("train_samples") is not None and (pool + made or config.get("where")):
        # what the student learned from, where the pool or --augment added texts or --where chose them (said by --json and kd report alone)
        parts = [f"{int(learned['train_samples']):,} labeled", f"{pool:,} unlabeled" if pool else "", f"{made:,} augmented" if made else ""]
        chosen = " that --where selects" if config.get("where") else ""
        click.echo(f"  learned from {', '.join(p for p in parts if p)} texts{chosen}")
    pretrained = (stage["metrics"].get("train") or {}) if stage["kind"] == "pretrain" else {}
    if pretrained.get("mlm_loss") is not None:  # (said by kd report alone: the summary gave the time and the folder)
        baseline = f" (by each character's frequency: {pretrained['frequency_loss']:.3f})" if pretrained.get("frequency_loss") is not None else ""
        steps = int(pretrained.get("steps") or 0)
        click.echo(f"  {steps:,} step{'s' * (steps != 1)}, {measured_loss(config.get('objective', 'mlm'))} "
                   f"{pretrained['mlm_loss']:.3f}{baseline}")
    # (the train rows folded: not with --split dev alone, whose train rows no fold learned)
    oof = stage["metrics"].get("train") if stage["kind"] == "teach" and int(config.get("folds") or 0) > 1 \
        and "train" in (config.get("splits") or ["train"]) else None
    if oof and oof.get("accuracy") is not None:  # (dev and test are the folds' average; detect reads each fold's own)
        click.echo(f"  train (out of fold, as kd labels detect reads it): accuracy {oof['accuracy']:.4f}, "
                   f"macro-F1 {oof['macro_f1']:.4f} (n={int(oof['n'])})")
    for split in ("dev", "test"):
        m = stage["metrics"].get(split)
        if m:
            seen = " (trained on: not held out)" if split == "dev" and trained_on_dev(stage, store) else ""
            click.echo(f"  {split}: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} (n={int(m['n'])}){seen}")
    served = stage["metrics"].get("all", {})
    if config.get("student") == "early-exit" and served.get("speed") is not None:
        # the figures above are at this speed; with --max-loss it was chosen, and said nowhere but kd report
        from kdstore.early_exit import speed_tag

        how = f" (chosen on dev for --max-loss {config['max_loss']:g})" if config.get("max_loss") is not None else ""
        # on dev, held out, as the accuracies above (over every sample it was the train rows' too, which the branches
        # learned); on test where the store has no labeled dev sample (the summary's only figures are test's then)
        tag = f"layers@{speed_tag(float(served['speed']))}"
        held_out = next(((part, m[tag]) for part in ("dev", "test") if (m := stage["metrics"].get(part) or {}).get(tag) is not None), None)
        layers = f"{held_out[1]:.2f} on {held_out[0]}" if held_out is not None else f"{served.get('layers', 0):.2f}"
        at = stage["metrics"][held_out[0]] if held_out is not None else {}
        full, ran = at.get("flops@0"), at.get(tag.replace("layers@", "flops@"))
        share = f", {ran / full:.0%} of the full model's FLOPs" if full and ran is not None else ""  # FastBERT's cost figure
        click.echo(f"  serving speed {served['speed']:g}{how}: mean exit layer {layers} of "
                   f"{int(served.get('num_layers') or 0)}{share} (kd report --run {run}: every speed's figures)")
        if held_out is not None:
            from kdstore.exit_speed import shares_line, stored_shares

            shares = stored_shares(stage["metrics"][held_out[0]])
            if shares:
                click.echo(f"  exits by layer on {held_out[0]}: {shares_line(shares)}")
    kept = _kept_line(stage)
    if kept:
        click.echo(f"  {kept}")
    if cut:
        # (a few texts of many were "0%", most but not all "100%": a line saying texts were cut, and that none, or all, were)
        shown = _cut_shown(cut)
        if stage["kind"] == "distill":
            click.echo(f"  {texts}: {shown} cut to --max-len {stage['config'].get('max_len')} tokens")
        else:
            click.echo(f"  {texts} cut to --max-len {stage['config'].get('max_len')} tokens: {shown}")
    weak = _majority_note(run, stage, store) or _missed_note(stage, store)  # (after the figures it speaks of)
    if weak:
        click.echo(f"warning: {weak}", err=True)


RARE_SHARE = 0.5  # a class of fewer train samples than half the commonest's: one --class-weight balanced helps
OVERWEIGHT = 10.0  # --class-weight balanced's weight of a class of fewer than LEAST_CLASS_SAMPLES samples worth a warning


def _missed_note(stage: dict, store=None) -> str | None:
    """A class of 3 or more dev samples the model got none of right, that it learned from train samples
    of (one it had none of is ``_unlearned``'s): which, and what to try."""
    cfg = stage.get("config") or {}
    if stage["kind"] not in ("teach", "distill") or cfg.get("student") == "early-exit":
        return None
    _, train = _learned_support(stage, store)  # (not a class --label or --where left out: never learned)
    dev = stage["metrics"].get("dev") or {}
    missed = [(name, n) for name, n in missed_classes(dev) if train.get(name, 1.0)]
    # a class of too few dev samples to judge (2 of 40 ad texts): its train samples, none of which it got right either
    # (out of fold for a --folds teacher; the very samples it learned from otherwise), were said nothing of
    on_train = [(name, n) for name, n in missed_classes(stage["metrics"].get("train") or {})
                if train.get(name, 0.0) and name not in dict(missed)]
    if not missed and not on_train:
        return None
    shown = lambda found: first_few(f"{name!r} (0 of {n})" for name, n in found)  # noqa: E731
    said = [f"on dev the model got no sample of class {shown(missed)} right" if missed else "",
            f"{'nor' if missed else 'the model got no'} train sample of class {shown(on_train)} right"
            f"{' (out of fold)' if int(cfg.get('folds') or 0) > 1 else ''}" if on_train else ""]
    found = missed + on_train
    # (a class as common as the others, 8 even news topics say, is not one class weights would help)
    rare = any(train.get(name, 0.0) < RARE_SHARE * max(train.values(), default=0.0) for name, _ in found)
    fix = ("--class-weight balanced (a rare class then counts as much as a common one), or more --epochs"
           if rare and cfg.get("class_weight") != "balanced" else f"more --epochs, or more train samples of {'it' if len(found) == 1 else 'them'}")
    # (not "does not answer": it may predict it, wrongly)
    return f"{', '.join(p for p in said if p)}: it has not learned {'it' if len(found) == 1 else 'them'}; try {fix}"


def _overweighted_note(stage: dict, store=None) -> str | None:
    """--class-weight balanced over a class of fewer than LEAST_CLASS_SAMPLES samples it learned from: n / (C x n_c)
    weighs each of them tens or thousands of times an average row (2 of 10,000 reviews: 2,500 times), and a
    model learns that handful by heart while the weight swings its steps; which class, its count and weight."""
    cfg = stage.get("config") or {}
    if stage["kind"] not in ("teach", "distill") or cfg.get("class_weight") != "balanced":
        return None
    weights: dict[str, float] = {}
    for key, value in (stage["metrics"].get("all") or {}).items():  # (a --folds model's each fold's: the largest)
        name = key if key.startswith("class_weight[") else key.split("/", 1)[-1]  # (a class's name may hold a '/': 体育/新闻)
        if name.startswith("class_weight[") and name.endswith("]"):
            weights[name[13:-1]] = max(weights.get(name[13:-1], 0.0), float(value))
    _, support = _learned_support(stage, store)
    few = [(name, int(support[name]), w) for name, w in weights.items()
           if 0 < support.get(name, 0.0) < LEAST_CLASS_SAMPLES and w >= OVERWEIGHT]
    if not few:
        return None
    shown = first_few(f"{name!r} ({n} sample{'s' * (n != 1)}, weight {w:,.0f})" for name, n, w in few)
    return (f"--class-weight balanced weighs each sample of class {shown} far above an average one (weight 1): "
            f"so few samples at that weight are learned by heart and swing the training; more samples of "
            f"{'it' if len(few) == 1 else 'them'}, or no --class-weight, may serve better")


def _kept_line(stage: dict) -> str | None:
    """Which epoch (or --eval-every step) of one model was kept, where it is not the last trained, and whether
    --patience stopped the training early: the summary said neither, and a bar left part-filled looked cut off."""
    learned, config = stage["metrics"].get("all") or {}, stage["config"] or {}
    every = int(config.get("eval_every") or 0)
    best = learned.get("best_step" if every else "best_epoch")
    if stage["kind"] not in ("teach", "distill") or not stage["metrics"].get("dev"):
        return None  # (no dev: the last is kept, nothing judged)
    unit = "step" if every else "epoch"
    judge = "dev accuracy" if config.get("student") == "early-exit" else "dev macro-F1"  # (early exit: accuracy at its --speed)
    planned = int(config.get("epochs") or 0) * (int(learned.get("steps_per_epoch") or 0) if every else 1)
    if best is None:  # --folds: each fold's own (the summary said none of them)
        return _folds_kept_line(stage, unit, judge, planned)
    trained = max((h["step"] for h in stage["history"] if h["split"] == "train" and h["name"] == "loss"), default=None)
    if trained is None:
        return None
    if config.get("student") == "early-exit":  # (accuracy tied, at a speed no text exits at: its tie-breakers chose)
        why = _early_exit_judge(stage["history"], int(best)) or f"the best {judge}"
    else:
        why = _tie_judge(stage["history"], int(best), unit) or f"the best {judge}"
    if trained < planned and not any(k.endswith("diverged_epoch") for k in learned):  # (a divergence is warned of above)
        return (f"kept {unit} {int(best)} ({why}): --patience {config.get('patience')} stopped the training "
                f"after {int(trained)} of its {planned} {unit}s")
    if best < trained:
        return f"kept {unit} {int(best)} of {int(trained)} ({why})"
    return None


def _early_exit_judge(history: list[dict], best: int) -> str | None:
    """What chose an early exit's kept epoch where its dev accuracy tied with another epoch's (``train_early_exit``
    keys on accuracy, then agreement with the full model, then the lower branch KL); ``None`` where accuracy did."""
    dev = {}
    for h in history:
        if h["split"] == "dev" and h["name"] in ("accuracy", "agreement", "kl") and h["step"] is not None:
            dev.setdefault(int(h["step"]), {})[h["name"]] = h["value"]
    kept = dev.get(best, {})
    tied = [m for e, m in dev.items() if e != best and m.get("accuracy") == kept.get("accuracy")]
    if "accuracy" not in kept or not tied:
        return None
    if any(m.get("agreement") == kept.get("agreement") for m in tied):
        return "the lowest branch KL on dev: the epochs tied on dev accuracy and agreement with the full model"
    return "the best agreement with the full model: the epochs tied on dev accuracy"


def _dev_tied(history: list[dict], best: int, tag: str = "") -> list[float] | None:
    """The dev losses of the other epochs (or steps) whose dev macro-F1 ties ``best``'s (BestCheckpoint then kept the
    lower dev loss), with ``best``'s first; ``None`` where none ties or the history lacks them."""
    dev: dict[int, dict[str, float]] = {}
    for h in history:
        if h["split"] == "dev" and h["name"] in (f"{tag}macro_f1", f"{tag}loss") and h["step"] is not None:
            dev.setdefault(int(h["step"]), {})[h["name"][len(tag):]] = h["value"]
    kept = dev.get(best, {})
    tied = [m.get("loss") for e, m in dev.items() if e != best and "macro_f1" in kept and m.get("macro_f1") == kept["macro_f1"]]
    return [kept.get("loss"), *tied] if tied else None


def _tie_judge(history: list[dict], best: int, unit: str) -> str | None:
    """What chose the kept epoch where its dev macro-F1 tied another's: the lower dev loss, or on a tie of both the
    earlier; ``None`` where macro-F1 alone did (the summary said "the best dev macro-F1" of three epochs at 0.3103)."""
    losses = _dev_tied(history, best)
    if losses is None:
        return None
    if losses[0] is not None and any(loss == losses[0] for loss in losses[1:]):
        return f"the first of the {unit}s tied on dev macro-F1 and dev loss"
    return f"the lowest dev loss of the {unit}s tied on dev macro-F1"


def _folds_kept_line(stage: dict, unit: str, judge: str, planned: int) -> str | None:
    """``_kept_line`` of a --folds model: the epoch (or step) each fold kept, where one is not the last planned."""
    learned = stage["metrics"].get("all") or {}
    epochs = int((stage["config"] or {}).get("epochs") or 0)
    kept = {}
    for key, best in learned.items():
        m = re.fullmatch(rf"fold(\d+)/best_{unit}", key)
        if m:
            fold = int(m.group(1))
            trained = max((h["step"] for h in stage["history"] if h["split"] == "train" and h["name"] == f"fold{fold}/loss"), default=None)
            # (--eval-every: a fold's steps an epoch are its own, fold{k}/steps_per_epoch: planned 0 said no stop)
            plan = planned or epochs * int(learned.get(f"fold{fold}/steps_per_epoch") or 0)
            kept[fold] = (int(best), int(trained) if trained is not None else None, plan)
    if not kept or all(best == trained and (trained == plan or not plan) for best, trained, plan in kept.values()):
        return None
    folds = ", ".join(f"fold {k} {best} of {trained}" for k, (best, trained, _) in sorted(kept.items()) if trained is not None)
    stopped = [k for k, (_, trained, plan) in sorted(kept.items()) if trained is not None and trained < plan]  # (plan 0: not known)
    plans = list(dict.fromkeys(str(kept[k][2]) for k in stopped))
    said = f"; --patience {stage['config'].get('patience')} stopped {'fold' if len(stopped) == 1 else 'folds'} " \
           f"{', '.join(map(str, stopped))} before {'their ' if len(plans) > 1 else ''}{', '.join(plans)} {unit}s" if stopped else ""
    tie = ", a tie going to the lower dev loss" if judge == "dev macro-F1" and any(
        _dev_tied(stage["history"], best, f"fold{k}/") for k, (best, _, _) in kept.items()) else ""
    return f"each fold kept the {unit} of its best {judge}{tie} ({unit}s trained): {folds}{said}" if folds else None


UNK_WARN_SHARE = 0.02  # [UNK] tokens of a pre-training's texts: a warning, not just a figure
CUT_READER = {"pretrain": "model", "distill": "student"}  # who never read the end of a text cut to --max-len
CUT_WARN_SHARE = 0.5  # a teacher that never sees the end of most train texts: a warning, not just a figure
KD_PRETRAINED_LR = 3e-4  # kd teach's default --lr for a kd-pretrained model (TeachConfig.lr, a BERT's 5e-5, for any other)


def _position_limit(stage: dict) -> int | None:
    """The most tokens the model of a teach stage (or a distill stage's transformer student, which has its
    teacher's position table) reads, None where a longer --max-len would be read (a TextCNN, a pre-training)."""
    from types import SimpleNamespace

    from kdstore.predictor import STUDENT_CONFIG
    from kdstore.teacher import folder_position_limit, model_dirs, position_limit

    if stage["kind"] not in ("teach", "distill") or not stage.get("artifact_path"):
        return None
    try:
        if stage["kind"] == "teach":  # (of --folds K, the first fold's: every fold has the same)
            return folder_position_limit(model_dirs(SimpleNamespace(**stage))[0])
        else:
            config = (json.loads((Path(stage["artifact_path"]) / STUDENT_CONFIG).read_text(encoding="utf-8")).get("student") or {}).get("bert")
    except (KdError, OSError, ValueError):
        return None
    return position_limit(SimpleNamespace(**config)) if isinstance(config, dict) else None


def _cut_share(stage: dict) -> float | None:
    """The share of a teacher's train texts (a pre-training's texts, the texts a student learned from: each
    fold's) cut to its --max-len (None for other stages)."""
    train = stage["metrics"].get("train") or {}
    cut = [v for k, v in train.items() if k == "truncated" or k.endswith("/truncated")]
    if stage["kind"] == "pretrain":
        return cut[0] / train["texts"] if cut and train.get("texts") else None
    if stage["kind"] == "distill":  # (a stage before kd counted them has neither)
        texts = sum(v for k, v in train.items() if k == "texts" or k.endswith("/texts"))
        return sum(cut) / texts if cut and texts else None
    n = (stage["metrics"].get("all") or {}).get("train_samples")
    if stage["kind"] != "teach" or not cut or not n:
        return None
    return sum(cut) / (n * (len(cut) - 1 if len(cut) > 1 else 1))  # with --folds K each text trains K - 1 fold models


def _learned_support(stage: dict, store=None) -> tuple[list[str], dict[str, float]]:
    """``(splits, {class: count})``: the splits a model learned from and its samples there of each class,
    those its --where and --label select where they filter (the split's figures count every labeled row), 0 for one they left out."""
    cfg = stage["config"] or {}
    learned_from = (cfg.get("splits") or ["train"]) if stage["kind"] == "teach" else ["train"]
    support: dict[str, float] = {}
    for split in learned_from:
        for name, n in class_support(stage["metrics"].get(split) or {}).items():
            support[name] = support.get(name, 0.0) + n
    if stage["kind"] in ("teach", "distill") and (cfg.get("where") or cfg.get("labels")):
        # the model learned from the rows its filters select
        held = set(cfg.get("labels") or support)
        if store is not None:
            names = store.class_names()
            rows = store.samples(splits=list(learned_from), labeled=True, where=cfg.get("where"))
            selected = Counter(names[int(c)] for c in rows.labels)  # (the rows it learned from, not the split's)
            held &= set(selected)
            support = {name: float(selected[name]) for name in support}
        support = {name: n if name in held else 0.0 for name, n in support.items()}
    return learned_from, support


def _unlearned(stage: dict, store=None) -> list[str]:
    """A class with no sample in the splits a model learned from (a teacher's --split, dev too say;
    a student's train), or none its --where and --label select: it never learned it. (An early exit learns its
    teacher's answers, of every class the teacher learned, from texts labeled or not.)"""
    cfg = stage["config"] or {}
    if stage["kind"] not in ("teach", "distill") or cfg.get("student") == "early-exit":
        return []
    learned_from, support = _learned_support(stage, store)
    unlearned = [name for name, n in support.items() if not n]
    if unlearned:
        one = len(unlearned) == 1
        filtered = " that --where/--label select" if stage["kind"] == "teach" and (cfg.get("where") or cfg.get("labels")) else \
            " that --where selects" if cfg.get("where") else ""  # (a student's: it has no --label)
        held_out = [split for split in ("dev", "test") if split not in learned_from]  # (a teacher of --split dev: test alone)
        scored = [name for name in unlearned if sum(class_support(stage["metrics"].get(split) or {}).get(name, 0.0)
                                                    for split in held_out)]
        bare = [name for name in unlearned if name not in scored]
        if scored and bare:  # (each named for what it is: 'phone' of no dev or test sample was said to count as errors)
            errors = (f", and the {' and '.join(held_out)} samples of {', '.join(map(repr, scored))} count as errors "
                      f"({', '.join(map(repr, bare))} {'has' if len(bare) == 1 else 'have'} none)")
        else:
            errors = (f", and {'its' if one else 'their'} {' and '.join(held_out)} samples count as errors" if scored else
                      f" ({'it has' if one else 'they have'} no {' or '.join(held_out) or 'other'} samples either)")
        return [f"no {'/'.join(learned_from)} samples{filtered} of class {', '.join(map(repr, unlearned))}: the model never learned "
                f"{'it' if one else 'them'}{errors}"]
    return []


def _learned_dev(stage: dict) -> tuple[dict, dict[str, float], str]:
    """``(figures, support, note)``: a model's dev figures and class counts, of the classes it learned where it
    learned some only (a teacher's --label or --where, a class with no train sample left): its dev figures count the
    others' rows as errors, which it could not answer ('mid', 60% of dev, was "always answering" it); ``note`` says so."""
    m = stage["metrics"].get("dev") or {}
    support = class_support(m)
    cfg = stage.get("config") or {}
    learned = cfg.get("learned_classes")
    if learned is None and stage["kind"] in ("teach", "distill") and cfg.get("student") != "early-exit":  # (a student, or an older teacher)
        learned = [k for k, n in _learned_support({**stage, "config": cfg})[1].items() if n] or None
    # (not where no dev row is of another class: a class of test samples alone left its figure as it was, said to be of some)
    if not learned or not any(v for k, v in support.items() if k not in learned) or not all(f"recall[{k}]" in m for k in learned if k in support):
        return m, support, ""
    support = {k: v for k, v in support.items() if k in learned}
    total = sum(support.values())
    m = {**m, "accuracy": sum(m[f"recall[{k}]"] * v for k, v in support.items()) / total if total else None}
    return m, support, f" on the dev samples of the classes it learned ({', '.join(k for k, v in support.items() if v)})"


def _learned_nothing(m: dict, support: dict) -> tuple[str, float] | None:
    """``(class, share)`` of the most frequent class where dev figures ``m`` hardly beat always answering it
    (``hardly_beats_majority``), unless their macro-F1 is well above chance: --class-weight balanced trades
    accuracy for the rare classes, and a macro-F1, the figure epochs are judged by, well above what answering
    by chance reaches, is a model that learned. kd teach's note and kd distill's of its teacher judge alike."""
    weak = hardly_beats_majority(m.get("accuracy"), support) if support else None
    chance = chance_macro_f1(support) if weak is not None else None
    if chance is not None and m.get("macro_f1") is not None and not below_room(m["macro_f1"], chance):
        return None
    return weak


def _weak_fold_notes(run: str, stage: dict) -> list[str]:
    """A warning for each fold of a ``--folds`` teacher whose own out-of-fold agreement with its train labels
    hardly beats always answering their most frequent class, where another fold learned (``noise.fold_warnings``):
    its logits for a fifth of train are guesses, which kd labels detect judges those labels by."""
    weak = fold_warnings_of(stage["metrics"].get("train") or {},
                            consequence="its out-of-fold logits, by which kd labels detect judges those labels, are guesses")
    again = reteach_command(run, stage.get("config") or {}, next_seed=True) if weak else ""
    return [f"{w}; re-run it with another seed, {again}" for w in weak]


def _teachers_learned(store, runs) -> list[tuple[str, float]] | None:
    """``(run, dev accuracy)`` of each teacher of ``runs`` where every one learned (beat always answering the most
    frequent class on dev, as kd teach judged it); ``None`` where one did not, or cannot be judged (one trained on
    dev too: its dev figures are of rows it learned)."""
    from kdstore.report import learned_dev

    out = []
    for r in dict.fromkeys(runs):
        if not _has_teacher(store, r):
            return None
        teacher = store.find_stage(r, "teach")
        if learned_dev(store, teacher.id, (teacher.config or {}).get("splits") or []):
            return None
        dev, support, _ = _teacher_dev(store, teacher)
        if dev.get("accuracy") is None or not support or _learned_nothing(dev, support) is not None:
            return None
        out.append((r, dev["accuracy"]))
    return out or None


def _majority_note(run: str, stage: dict, store=None) -> str | None:
    """A model no better on dev than always answering its most frequent class: what to say, and what to try
    (``store``: a student's teachers are read, and one that learned is not blamed)."""
    m, support, on = _learned_dev(stage)
    cfg = stage.get("config") or {}
    weak = _learned_nothing(m, support)
    if weak is None:
        return None
    name, share = weak
    full = m.get("accuracy@0")  # an early exit's own full model (the teacher): where it learned, the exits lost it
    if cfg.get("student") == "early-exit" and full is not None and hardly_beats_majority(full, support) is None:
        speed = (stage["metrics"].get("all") or {}).get("speed")
        at = f" at speed {speed:g}" if speed is not None else ""
        return (f"dev accuracy {m['accuracy']:.1%}{at} is {versus_majority(m['accuracy'], share)} always answering {name!r} ({share:.1%}), "
                f"while the full model (speed 0, every layer) scores {full:.1%}: the early exits lose what it knows; "
                "serve at a lower --speed, or let --max-loss choose it")
    lr, model = cfg.get("lr"), str(cfg.get("model") or "")
    # a kd-pretrained model: `pretrain:R`, or its folder or a teacher fine-tuned from one, which took that lr default
    small = model.startswith("pretrain:") or cfg.get("lr_default") == "kd-pretrained model" or cfg.get("kd_pretrained") is True
    if lr is not None and lr >= 3e-4 and small:  # already at (or above) what a small model wants
        # (a hub or directory model at such an --lr is no small one: it may well be too fast, and is told to try another)
        teach_fix = (f"train longer (--epochs: --lr {lr:g} is already as fast as a small model wants)"
                     " or pre-train longer (`kd pretrain --minutes`)")
    elif lr is not None and not small:
        teach_fix = f"train longer (--epochs) or try another --lr (now {lr:g})"
    else:
        teach_fix = "train longer (--epochs) or faster (--lr: a small `kd pretrain` model wants about 3e-4, as in the quick start)"
    train = _learned_support({**stage, "config": cfg})[1]  # (imbalanced classes: the rare-class warning's advice, which this one's stands in for)
    if cfg.get("class_weight") != "balanced" and any(0 < n < RARE_SHARE * max(train.values()) for n in train.values()):
        teach_fix += ", or --class-weight balanced (a rare class then counts as much as a common one)"
    teachers = cfg.get("teacher_runs") or [run]
    learned = _teachers_learned(store, teachers) if store is not None and stage["kind"] == "distill" and not _labels_alone(cfg) else None
    fix = (teach_fix
           if stage["kind"] == "teach" else
           "it learned from the labels alone (no soft loss): train longer (--epochs) or try another --lr"
           + (f" (now {lr:g})" if lr is not None else "")
           if _labels_alone(cfg) else
           # (a teacher that learned, blamed all the same: "check the teacher first" of one at 88% on dev)
           f"its teacher{'s' * (len(learned) > 1)} learned ({', '.join(f'run {r}: dev accuracy {a:.1%}' for r, a in learned)}): "
           "train the student longer (--epochs) or try another --lr" + (f" (now {lr:g})" if lr is not None else "")
           if learned else
           "check the teacher first (" + ", ".join(f"`kd report --run {t}`" for t in dict.fromkeys(teachers)) + "), then --epochs")
    return (f"dev accuracy {m['accuracy']:.1%}{on} is {versus_majority(m['accuracy'], share)} always answering {name!r} ({share:.1%}): "
            f"the model has learned next to nothing; {fix}")


def _labels_alone(config: dict) -> bool:
    """Whether a student of the recorded ``config`` learned nothing of its teacher: alpha 0 throughout, with
    --hard-weight (alpha weighs the pool's soft loss too) or with no pool or augmented text, and no intermediate
    loss (`--alpha 0 --no-unlabeled`, README's baseline without the teacher)."""
    if config.get("alpha") is None or config.get("student") == "early-exit":
        return False
    if max(config["alpha"], config.get("alpha_end") or 0.0) > 0 or config.get("matches") or \
            any(config.get(o[2:].replace("-", "_")) for o in INTERMEDIATE_OPTIONS):
        return False
    return config.get("hard_weight") is not None or (not config.get("unlabeled") and not config.get("augment"))


def _inside_own_teacher(store, run: str, model: str) -> bool:
    """Whether ``model`` is a folder of run ``run``'s own teacher (or one of its folds)."""
    here = Path(model).expanduser()
    if not here.is_dir():
        return False
    try:
        old = store.find_stage(run, "teach")
    except KdError:
        return False
    if not old.artifact_path:
        return False
    here, there = here.resolve(), Path(old.artifact_path).resolve()
    return here == there or there in here.parents


@click.command()
@run_option
@click.option("--layers", type=int, default=6, show_default=True)
@click.option("--hidden", type=int, default=384, show_default=True)
@click.option("--heads", type=int, default=0, help="Attention heads (default hidden/64).")
@click.option("--max-len", type=int, default=128, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--grad-accum", type=int, default=1, show_default=True, help=GRAD_ACCUM_HELP)
@click.option("--lr", type=FLOAT, default=5e-4, show_default=True)
@click.option("--steps", type=int, default=0, help="Training steps (or use --minutes; given both, it stops at whichever ends first).")
@click.option("--minutes", type=FLOAT, default=0.0, help="Wall-clock budget of the training steps in minutes (reading the store, segmenting with jieba and saving come on top). Clock-bound: two runs stop at different steps, so their weights differ; --steps N reruns exactly.")
@click.option("--mask-prob", type=FLOAT, default=0.15, show_default=True)
@click.option("--objective", type=click.Choice(OBJECTIVES), default="mlm", show_default=True,
              help="mlm: masked-LM. electra: replaced-token detection (a small generator fills the masks, the encoder "
                   "learns from every token whether it was replaced).")
@click.option("--generator-layers", type=int, default=0, help="ELECTRA generator layers (default a third of --layers).")
@click.option("--wwm/--no-wwm", default=True, show_default=True, help="Whole-word masking over jieba's word segmentation.")
@click.option("--min-count", type=int, default=2, show_default=True, help="Keep characters seen this often (an ASCII or full-width letter or digit: once, so that Latin words and numbers stay spelled).")
@click.option("--corpus", multiple=True, type=KdPath(dir_okay=False), help="Extra plain-text file(s), one text a line; - reads standard input (`xzcat news.xz | kd pretrain ... --corpus -`).")
@click.option("--long-texts", type=click.Choice(LONG_TEXTS), default="split", show_default=True,
              help="A text longer than --max-len: split into consecutive pieces, each learned whole (at sentence ends where it can), "
                   "or cut to its first --max-len tokens (the rest never learned).")
@click.option("--split", "splits", multiple=True, type=click.Choice(SPLITS),
              help="Split(s) of the store whose texts it reads (repeatable; default: every split, test included: "
                   "its texts, not its labels, are learned, so test figures are transductive; "
                   "--split train --split dev --split unlabeled leaves test out).")
@click.option("--resume", is_flag=True, help="Continue the run's pre-training that failed or was killed from its last saved state, with "
              "the options (and --corpus files) it was started with: a pretrain stage saves its training state every 10 minutes of "
              "training in RUN/pretrain~resume beside its model, and removes it once it succeeds. --device and --grad-accum may differ; "
              "--steps N resumes to the very model of a run never stopped, --minutes M spends the minutes left.")
@_seed_option
@_device_option
@overwrite_option
@store_options
@json_option
def pretrain(run, layers, hidden, heads, max_len, batch_size, grad_accum, lr, steps, minutes, mask_prob, objective, generator_layers, wwm, min_count, corpus, long_texts, splits, resume, seed, device, overwrite, db, as_json):
    """Pre-train a BERT-style encoder by masked-LM (or ELECTRA) on the store's own text.

    For machines without a model hub: the result is a Hugging Face directory that
    `kd teach --model pretrain:RUN` fine-tunes.

    \b
    Example:
      kd pretrain --run r1 --layers 4 --hidden 256 --minutes 10 --corpus news.txt
      kd pretrain --run r2 --objective electra --minutes 10
      kd pretrain --run r3 --minutes 10 --split train --split dev --split unlabeled   # test texts left out
      kd teach --run r1 --model pretrain:r1
      kd pretrain --run r1 --resume            # continue a pre-training killed midway from its last save
      torchrun --nproc-per-node 4 --no-python kd -- pretrain --run r1 --minutes 10   # 4 GPUs (README: Several GPUs or machines)
    """
    if resume:
        _resume_pretrain(open_store(db), run, device, grad_accum, overwrite, as_json)
        return
    source = click.get_current_context().get_parameter_source
    # (a typed 0 is no budget, "use the other one", as the default is: the file's other one stays)
    if steps and source("steps") == ParameterSource.COMMANDLINE and source("minutes") == ParameterSource.DEFAULT_MAP:
        minutes = 0.0  # a typed --steps N is the budget: a config file's minutes made it clock-bound (and stop early)
    elif minutes and source("minutes") == ParameterSource.COMMANDLINE and source("steps") == ParameterSource.DEFAULT_MAP:
        steps = 0  # and a typed --minutes over a file's steps
    if generator_layers and objective != "electra" and source("objective") == ParameterSource.COMMANDLINE \
            and source("generator_layers") == ParameterSource.DEFAULT_MAP:
        generator_layers = 0  # a typed --objective mlm over a file's ELECTRA generator size (refused as if typed)
    files: dict[str, str] = {}  # a file named twice (news.txt, ./news.txt): read once, not weighed double
    for path in corpus:
        files.setdefault("-" if path == "-" else str(Path(path).resolve()), path)
    cfg = PretrainConfig(
        layers=layers, hidden=hidden, heads=heads, max_len=max_len, batch_size=batch_size, grad_accum=grad_accum, lr=lr,
        steps=steps, minutes=minutes, mask_prob=mask_prob, objective=objective, generator_layers=generator_layers, wwm=wwm, min_count=min_count,
        corpus=tuple(files.values()), long_texts=long_texts,
        splits=tuple(splits), seed=seed, device=device,
    )
    cfg.validate()
    pick_device(cfg.device)  # --device cuda where there is none: refused before a stage (and a run) is on record
    store = open_store(db)
    if not overwrite:  # a rerun refused before --corpus is read (a pipe's gigabytes were read, then refused)
        _check_free_keeping_state(store, run, "pretrain")
    # a missing or unreadable file, or one with no text (empty, binary, JSON lines), is refused before a run
    # or a stage is recorded (its texts handed to the stage, not read twice)
    digests: dict[str, str] = {}
    corpus = read_corpus(cfg.corpus, digests)
    first = store.samples(splits=cfg.splits or None, include_dropped=True, where="parent_id IS NULL", limit=2).texts  # (any 2 tell)
    if not corpus and not first:
        # (refused by the stage: a failed stage, and a run, on record for a split with no text)
        of = f" of split {', '.join(cfg.splits)}" if cfg.splits else ""
        raise KdError(f"the store has no texts{of} to pre-train on: ingest some text first" + (" (or leave --split out)" if cfg.splits else ""))
    check_enough_texts(first, corpus, cfg)
    if not first:  # (a split not ingested yet, or named by mistake: the store's own texts, and their characters, never reach the model)
        of = f" of split {', '.join(cfg.splits)}" if cfg.splits else ""
        _warn(f"the store has no texts{of}: the model is pre-trained on --corpus alone, its vocabulary the corpus's characters "
              + ("(leave --split out, or ingest the split first)" if cfg.splits else "(ingest the store's texts first)"))
    with process_group(device) as dist:
        if overwrite:
            _before_replacing(store, run, "pretrain", warn=dist.is_main)
            if dist.is_main:
                _warn_discarding_state(store, run, "pretrain")
        config = {**pretrain_config(cfg, digests), "environment": environment(device)}
        _stage_with_state(store, dist, kind="pretrain", run=run, config=config, overwrite=overwrite, resume=False,
                          train=lambda stage: run_pretrain(store, stage, cfg, dist, corpus=corpus, stage_config=config))
    if dist.is_main:
        _finish(store, run, "pretrain", as_json)


def _logits_only_reason(unused: list[str]) -> str:
    """Why --logits-only takes none of ``unused`` (option names as typed): it trains nothing and scores every
    sample the run's teacher has no logits for, whichever it learned from."""
    reason = "--logits-only scores with the run's teacher as it was trained (at its --max-len)"
    if all(o in ("--where", "--split", "--label") for o in unused):  # (it was told "as it was trained (at its --max-len)": no word on choosing)
        return ("--logits-only scores every sample the run's teacher has no logits for, not a chosen few "
                "(kd distill reads a row of logits for each; scoring teaches the teacher nothing)")
    if unused == ["--overwrite"]:
        return reason + ", adding the logits it lacks and replacing none: leave --logits-only out to train it again"
    return reason


@click.command()
@run_option
@click.option("--model", help="Hugging Face model name or directory; pretrain:RUN for `kd pretrain`'s model, teach:RUN to fine-tune a run's teacher further. Its path and sha256 are recorded (model_path, model_sha256).")
@click.option("--epochs", type=int, default=3, show_default=True)
@click.option("--lr", type=FLOAT, show_default="3e-4 for a kd-pretrained model: pretrain:RUN, its folder or a teacher fine-tuned from one; else 5e-5",
              help="Peak learning rate. The default applied is recorded in the stage's config (lr_default).")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--grad-accum", type=int, default=1, show_default=True, help=GRAD_ACCUM_HELP)
@click.option("--max-len", type=int, default=128, show_default="the --max-len of the run --model pretrain:RUN or teach:RUN names; else 128",
              help="Tokens read of each text (its first ones; [CLS] and [SEP] included).")
@click.option("--warmup", type=FLOAT, default=0.1, show_default=True, help="Warm-up fraction of the steps.")
@click.option("--patience", type=int, default=2, show_default=True, help="Epochs without dev gain before stopping.")
@click.option("--layer-decay", type=FLOAT, default=1.0, show_default=True, help="Layer-wise learning-rate decay: the head trains at --lr, the top layer at lr x d, the one below at lr x d^2, ... (e.g. 0.8; 1 = off).")
@click.option("--class-weight", type=click.Choice(["none", "balanced"]), default="none", show_default=True,
              help="balanced: each row's loss weighted n / (classes x rows of its class), so a rare class (a few violations among many ads) counts as much as a common one; the weights are recorded (class_weight[NAME]).")
@click.option("--where", help="SQL condition on samples selecting the train rows, e.g. \"source = 'a.tsv'\".")
@click.option("--split", "splits", multiple=True, type=click.Choice(TRAINABLE_SPLITS), help="Split(s) whose labeled rows train the teacher (repeatable; default: train). When dev rows train (dev among them, and --where/--label select some), no dev rows judge the epochs: the last one is kept.")
@click.option("--label", "labels", multiple=True, help="Train (and judge epochs on dev) only rows with this label (repeatable; default: all). The stored figures cover every labeled row.")
@click.option("--folds", type=int, default=0, help="Train K teachers on K stratified folds: out-of-fold logits for train samples.")
@click.option("--logits-only/--no-logits-only", is_flag=True, help="Only score samples that have no logits yet, with the run's teacher.")
@click.option("--resume", is_flag=True, help="Continue the run's teacher that failed or was killed from its last finished epoch (or fold), "
              "with the options it was started with: a teach stage saves its training state after each epoch but the last (and each finished fold) in RUN/teach~resume beside "
              "its model, and removes it once it succeeds. --device and --grad-accum may differ (a teacher out of GPU memory "
              "resumes in pieces that fit); with --overwrite it continues a replacement of a teacher that succeeded.")
@_seed_option
@_device_option
@overwrite_option
@store_options
@json_option
def teach(run, model, epochs, lr, batch_size, grad_accum, max_len, warmup, patience, layer_decay, class_weight, where, splits, labels, folds, logits_only, resume, seed, device, overwrite, db, as_json):
    """Fine-tune a transformer teacher and store its logits for every sample.

    \b
    Example:
      kd teach --run r1 --model bert-base-chinese --epochs 3
      kd teach --run r1 --model ./my-ernie --max-len 256
      kd teach --run r1 --model hfl/chinese-roberta-wwm-ext-large --batch-size 32 --grad-accum 4   # in a quarter of the memory
      kd teach --run r1 --logits-only          # score samples ingested later
      kd teach --run r1 --resume               # continue a teacher killed mid-training from its last epoch
      kd teach --run r1 --model pretrain:r1 --folds 5   # out-of-fold, for `kd labels detect`
      kd teach --run r1 --model pretrain:r1 --split train --split dev --where "source = 'shop.tsv'"
      torchrun --nproc-per-node 4 --no-python kd -- teach --run r1 --model bert-base-chinese   # 4 GPUs (README: Several GPUs or machines)
    """
    store = open_store(db, writer=True)
    if resume:
        _resume_teach(store, run, device, grad_accum, overwrite, as_json)
        return
    if not logits_only and not model:
        raise click.UsageError("--model is required (a Hugging Face name or directory, or pretrain:RUN)")
    if logits_only:
        unused = _options_given(("model", "epochs", "lr", "grad_accum", "max_len", "warmup", "patience", "layer_decay", "class_weight", "where", "splits", "labels", "folds", "seed", "overwrite"))
        unused = [{"--splits": "--split", "--labels": "--label"}.get(o, o) for o in unused]  # (the options' names, not their parameters')
        if unused:  # (a config file's logits-only, never typed, is named with the file)
            raise click.UsageError(f"{', '.join(unused)}: {_logits_only_reason(unused)}" + file_note(click.get_current_context(), "--logits-only"))
        if batch_size < 1:  # (a negative one scored nothing and stored zero logits)
            raise click.BadParameter("must be at least 1", param_hint="--batch-size")
    else:
        _check_where_runs(store, where)
    with process_group(device) as dist:
        if logits_only:
            scoring = {"batch_size": batch_size} if _options_given(("batch_size",)) else {}
            late = unscored_labeled(store, run)
            to_learn = unscored_to_learn(store, run) if late else {}  # (not a late row its --where leaves out)
            guard = SignalGuard()  # a kill raises as Ctrl-C does: no stage to mark failed (its blocks commit as they go), but one line
            try:
                n = score_missing(store, run, device=device, dist=dist, **scoring)
            except Terminated as exc:  # (it ended with status 143 and not a word)
                raise Terminated(f"{exc}: the samples scored before it are kept; `kd teach --run {run} --logits-only` scores the rest") from None
            except KeyboardInterrupt:  # (a Ctrl-C said only click's "Aborted!")
                raise InterruptedAfterRecord("interrupted (KeyboardInterrupt): the samples scored before it are kept; "
                                             f"`kd teach --run {run} --logits-only` scores the rest") from None
            finally:
                guard.close()
            if not dist.is_main:
                return
            if not n:  # (another `--logits-only` at once scored them: "it scored them now" was said by each)
                late, to_learn = {}, {}
            if set(late) - {"train"}:  # its figures stand as measured when it ran, on the labels of that time
                shown = ", ".join(f"{k} {split}" for split, k in late.items())
                _warn(f"the teacher's stored figures leave out the labeled samples it scored now ({shown}): "
                      f"`kd predict --run {run} --model teacher --store --split {_first_split(set(late) - {'train'})}` measures it on today's samples")
            if to_learn:  # (measured on train, it would be judged on the texts it learned from; beside late dev or test ones too)
                k = sum(to_learn.values())  # (not n: the samples scored, which the output then reports)
                _warn(f"{k} {'/'.join(to_learn)} sample{'s' * (k != 1)} came after the teacher was trained: it scored {'them' if k != 1 else 'it'} now but "
                      f"never learned from {'them' if k != 1 else 'it'}; {_reteach_command(store, run)} retrains it on {'them' if k != 1 else 'that one'}")
            if as_json:  # (run, stage and warnings as every teach --json carries them)
                print_json({"run": run, "stage": store.find_stage(run, "teach").name, "scored": n, "warnings": _warned()})
            else:
                click.echo(f"run {run}: scored {n} sample{'s' * (n != 1)} that had no teacher logits")
            return
        source, _, source_run = model.partition(":")
        if source in ("teach", "pretrain") and source_run.strip():
            # recorded as the run it names today: `pretrain:${time}` read tomorrow was another run (or none), and
            # kd report / kd runs delete could not say that a teacher's checkpoint was replaced or deleted
            model = f"{source}:{resolve_run_id(source_run)}"
            if click.get_current_context().get_parameter_source("max_len") in (ParameterSource.DEFAULT, None):
                # (a model pre-trained on 256 tokens was fine-tuned on the first 128 of each text, one on 64 past its trained positions)
                max_len = _teacher_max_len(store, source_run, max_len, kind=source)
        cfg = TeachConfig(
            model=model, epochs=epochs, lr=TeachConfig.lr if lr is None else lr, batch_size=batch_size, grad_accum=grad_accum, max_len=max_len, warmup=warmup,
            patience=patience, layer_decay=layer_decay, class_weight=class_weight, where=where, splits=tuple(dict.fromkeys(splits)) or ("train",), labels=tuple(dict.fromkeys(labels)),  # (one typed twice: once)
            folds=folds, seed=seed, device=device,
        )
        cfg.validate()
        pick_device(cfg.device)  # --device cuda where there is none: refused before a stage (and a run) is on record
        check_labels(cfg.labels, store.class_names())  # (so is a --label of no class: as a --where that cannot run)
        if not overwrite:  # a rerun refused before the warnings about the store, as if it had begun
            _check_free_keeping_state(store, run, "teach")
        source, _, source_run = model.partition(":")
        if source == "teach" and overwrite and source_run.strip() and resolve_run_id(source_run) == run:
            raise KdError(f"--model teach:{source_run} is the teacher this --overwrite replaces (and deletes once the new one "
                          f"succeeds): fine-tune it further in another run (--run {run}-2 --model teach:{source_run})")
        if overwrite and source not in ("teach", "pretrain") and _inside_own_teacher(store, run, model):
            # (its folder is moved aside before the model loads: "no such directory")
            raise KdError(f"--model {model} is the teacher this --overwrite replaces (and deletes once the new one "
                          f"succeeds): fine-tune it further in another run (--run {run}-2 --model teach:{run})")
        checkpoint = _check_positions(store, cfg)  # (before the warning below: a --max-len refused is not one to warn about)
        from kdstore.pretrain import trained_positions

        kd_pretrained = (source == "pretrain" or (checkpoint is not None and trained_positions(checkpoint) is not None)
                         or (source == "teach" and _teacher_kd_pretrained(store, source_run)))
        lr_default = None  # --lr typed, or a config file's
        if lr is None:  # a small kd-pretrained model learns little at a BERT's 5e-5 (the quick start's teacher: see README)
            lr_default = "kd-pretrained model" if kd_pretrained else "other model"
            cfg = replace(cfg, lr=KD_PRETRAINED_LR if kd_pretrained else TeachConfig.lr)
        problem = getattr(checkpoint, "problem_type", None)
        if problem not in (None, "single_label_classification") and dist.is_main:
            # (transformers would have trained it with that loss, BCE for multi_label_classification)
            _warn(f"--model {model}: its config.json says problem_type {problem!r}; kd trains it as single-label "
                  "classification (one class a text, cross-entropy), and saves it so")
        if dist.is_main:
            _warn_past_trained_positions(store, model, checkpoint, max_len)
            _warn_unknown_characters(store, cfg, checkpoint)
        if _options_given(("patience",)) and dist.is_main and _dev_trains(store, cfg):
            _warn("--patience: not used when dev is trained on (no dev rows are left to judge the epochs: "
                  "the last epoch is kept)")
        elif _options_given(("patience",)) and dist.is_main and not _dev_judges(store, cfg):
            of = f" of {'/'.join(cfg.labels)}" if cfg.labels else ""
            _warn(f"--patience: not used, the store has no labeled dev samples{of} to judge the epochs: the last epoch "
                  "is kept (`kd ingest FILE --split dev` adds some)")
        if dist.is_main and not _dev_trains(store, cfg):
            _warn_one_class_dev(store, cfg.labels, cfg.where)
        if overwrite:
            _before_replacing(store, run, "teach", warn=dist.is_main)
            if dist.is_main:
                _warn_discarding_state(store, run, "teach")
        if cfg.folds:  # a class with fewer train samples than folds: refused here, not by a failed stage
            from kdstore.folds import stratified_folds
            from kdstore.teacher import training_rows

            names = store.class_names()
            chosen = training_rows(store, cfg, names)[0].labels
            if len(set(chosen.tolist())) > 1:  # (one class: the stage says that, not "too few for --folds")
                stratified_folds(chosen, cfg.folds, seed=cfg.seed, class_names=names)
            if dist.is_main:
                _warn_folds_from_a_teacher(store, cfg, model)
        config = {**teach_config(cfg), "lr_default": lr_default, "kd_pretrained": kd_pretrained, "classes": store.class_names(), **labels_state(store), "environment": environment(device)}
        _stage_with_state(store, dist, kind="teach", run=run, config=config, overwrite=overwrite, resume=False,
                          train=lambda stage: train_teacher(store, stage, cfg, dist, stage_config=config))
    if dist.is_main:
        _finish(store, run, "teach", as_json)


WHAT = {"teach": "teacher", "pretrain": "pre-trained model"}  # what a stage of the kind trains, in messages


def _stage_with_state(store, dist, *, kind: str, run: str, config: dict, overwrite: bool, resume: bool, train) -> None:
    """``train(stage)`` in a stage of ``kind`` (teach, pretrain) whose training state is saved as it goes; a
    failure after a save says how to continue from it (``kd KIND --resume``); the state goes once the stage's
    success is on record (a success not recorded, the store lost as it was written, resumes from it), and
    with a failure that saved nothing to resume from."""
    began = False  # (a refusal to begin, of a stage running elsewhere, says nothing of its state, nor touches it)
    if in_working_directory(store):  # (found from a job in another working directory: resume_folder)
        config = {**config, STATE_RECORD: str(resume_folder(store, run, kind).resolve())}
    succeeded_before = len(SUCCEEDED)

    def discard() -> None:
        if saved_meta(store, run, kind) is not None:
            shutil.rmtree(resume_folder(store, run, kind), ignore_errors=True)

    try:
        with shared_stage(dist, store, run=run, kind=kind, config=config, overwrite=overwrite) as stage:
            began = True
            train(stage)
    except BaseException as exc:
        if not began or not dist.is_main or (resume and str(exc).startswith("--resume:")):  # (a refused resume keeps it)
            raise
        point = saved_point(store, run, kind)
        if (run, kind) in SUCCEEDED[succeeded_before:] or point is None:  # (a signal held while the success was recorded:
            discard()  # the stage stands; or nothing was saved to go on from)
            raise
        if not isinstance(exc, (KdError, KeyboardInterrupt, Terminated)):  # (out of memory on the GPU: its own one-line
            _warn(f"the {WHAT[kind]}'s training state is saved ({point}): `kd {kind} --run {run} --resume"  # error follows)
                  f"{' --overwrite' * overwrite}` continues it with the options it was started with")
            raise
        said = str(exc).replace("; run the command again to start it over", "")
        raise type(exc)(f"{said}; `kd {kind} --run {run} --resume{' --overwrite' * overwrite}` continues it from its saved "
                        f"state ({point})") from None
    if dist.is_main:
        discard()


def _check_free_keeping_state(store, run: str, kind: str) -> None:
    """``check_stage_free`` for a new stage of ``kind`` without --overwrite, and ``_refuse_discarding_state``: a
    stage of the kind that succeeded is refused as ever, but where a replacement of it failed with its state
    saved, the refusal says how to continue that (its "pass --overwrite" would discard it)."""
    try:
        check_stage_free(store, run=run, kind=kind, name=kind)
    except KdError:  # (not a stage running: its own process saves that state)
        if saved_point(store, run, kind) is None or store.find_stage(run, kind, succeeded=False).status != "succeeded":
            raise
        _refuse_discarding_state(store, run, kind)
        raise
    _refuse_discarding_state(store, run, kind)


def _refuse_discarding_state(store, run: str, kind: str) -> None:
    """A new stage of ``kind`` in ``run`` would discard the saved state of one that failed (hours of training
    on a GPU): refused, saying how to continue it, unless --overwrite says to start over."""
    point = saved_point(store, run, kind)
    if point is not None:
        command = resume_command(run, kind, [(st.kind, st.status) for st in store.stages_of(run)])
        raise KdError(f"the {WHAT[kind]} of run {run!r} failed or was killed with its training state saved ({point}): "
                      f"`{command}` continues it; pass --overwrite to start over")


def _warn_discarding_state(store, run: str, kind: str) -> None:
    """--overwrite starts over: said where that discards a saved state."""
    point = saved_point(store, run, kind)
    if point is not None:
        _warn(f"--overwrite starts the {WHAT[kind]} over, discarding the saved training state of the one that failed ({point}; "
              f"`kd {kind} --run {run} --resume --overwrite` would have continued it)")


def _resumed_config(store, run: str, kind: str, config_class, options: tuple[str, ...], overwrite: bool, **free):
    """``kd KIND --resume``: ``(cfg, saved stage config)``, the options the failed stage was started with (the
    ``options`` typed refused) but the ``free`` ones given (``device``, ``grad_accum``: the same training on
    another device, or in pieces that fit its memory), after checking its name is free to start again."""
    typed = [{"--splits": "--split", "--labels": "--label"}.get(o, o) for o in _options_given(options)]
    if typed:
        raise click.UsageError(f"{', '.join(typed)}: --resume trains with the options the {WHAT[kind]} was started with "
                               "(only --device and --grad-accum may differ): leave them out, or start over with --overwrite and them")
    meta = saved_meta(store, run, kind)
    if meta is None or saved_point(store, run, kind) is None:
        saves = "after each epoch but the last" if kind == "teach" else "every 10 minutes of training"
        raise KdError(f"--resume: run {run!r} has no saved training state of a {WHAT[kind]} (a {kind} stage saves it {saves}, "
                      f"and removes it once it succeeds): run `kd {kind}` without --resume")
    saved = meta["config"]
    cfg = config_class(**{f.name: tuple(saved[f.name]) if isinstance(saved[f.name], list) else saved[f.name]
                          for f in dataclass_fields(config_class) if f.name in saved})
    source = click.get_current_context().get_parameter_source
    cfg = replace(cfg, **{name: value for name, value in free.items() if source(name) != ParameterSource.DEFAULT})  # (typed, or a file's)
    cfg.validate()
    pick_device(cfg.device)
    if not overwrite:
        try:
            check_stage_free(store, run=run, kind=kind, name=kind)
        except KdError:
            if store.find_stage(run, kind, succeeded=False).status != "succeeded":
                raise
            raise KdError(f"--resume: the {WHAT[kind]} of run {run!r} succeeded; the saved state is of its replacement (--overwrite) "
                          f"that failed: `kd {kind} --run {run} --resume --overwrite` continues that one in its place") from None
    return cfg, {**saved, **{name: getattr(cfg, name) for name in free}}


def _resume_teach(store, run: str, device: str, grad_accum: int, overwrite: bool, as_json: bool) -> None:
    """``kd teach --resume``: the failed teacher's stage again, with the options it was started with, from
    its saved training state."""
    cfg, saved = _resumed_config(store, run, "teach", TeachConfig, (
        "model", "epochs", "lr", "batch_size", "max_len", "warmup", "patience", "layer_decay", "class_weight", "where",
        "splits", "labels", "folds", "logits_only", "seed"), overwrite, device=device, grad_accum=grad_accum)
    with process_group(cfg.device) as dist:
        if overwrite:
            _before_replacing(store, run, "teach", warn=dist.is_main)
        config = {**saved, "classes": store.class_names(), **labels_state(store), "environment": environment(cfg.device),
                  "resumed_from": saved_point(store, run)}
        _stage_with_state(store, dist, kind="teach", run=run, config=config, overwrite=overwrite, resume=True,
                          train=lambda stage: train_teacher(store, stage, cfg, dist, resume=True, stage_config=config))
    if dist.is_main:
        _finish(store, run, "teach", as_json)


def _resume_pretrain(store, run: str, device: str, grad_accum: int, overwrite: bool, as_json: bool) -> None:
    """``kd pretrain --resume``: the failed pre-training again, with the options (and --corpus files, by their
    absolute paths) it was started with, from its saved training state."""
    cfg, saved = _resumed_config(store, run, "pretrain", PretrainConfig, (
        "layers", "hidden", "heads", "max_len", "batch_size", "lr", "steps", "minutes", "mask_prob", "objective",
        "generator_layers", "wwm", "min_count", "corpus", "long_texts", "splits", "seed"), overwrite, device=device, grad_accum=grad_accum)
    gone = next((f for f in cfg.corpus if f == "-" or not Path(f).is_file()), None)  # (a pipe, read once, or a file gone)
    if gone is not None:
        raise KdError(f"--resume: the pre-training read --corpus {gone}, which cannot be read again"
                      + (" (standard input)" if gone == "-" else " (no such file now)") + f": start over with `kd pretrain --run {run} --overwrite ...`")
    digests: dict[str, str] = {}
    corpus = read_corpus(cfg.corpus, digests)
    with process_group(cfg.device) as dist:
        if overwrite:
            _before_replacing(store, run, "pretrain", warn=dist.is_main)
        config = {**saved, "environment": environment(cfg.device), "resumed_from": saved_point(store, run, "pretrain")}
        _stage_with_state(store, dist, kind="pretrain", run=run, config=config, overwrite=overwrite, resume=True,
                          train=lambda stage: run_pretrain(store, stage, cfg, dist, corpus=corpus, resume=True, stage_config=config))
    if dist.is_main:
        _finish(store, run, "pretrain", as_json)


def _warn_folds_from_a_teacher(store, cfg: TeachConfig, model: str) -> None:
    """``--folds K`` from a teacher of the store (``teach:RUN``, its folder or a fold model's) that learned
    training rows of this one: every fold starts from their labels, so its logits are not out-of-fold."""
    from kdstore.teacher import learned_by, resolve_model, teacher_at, training_rows

    try:
        found = teacher_at(store, resolve_model(store, cfg.model))
    except KdError:  # (a model that cannot be found is the stage's one-line error)
        return
    if found is None:
        return
    run, source, fold = found
    rows = {int(i) for i in training_rows(store, cfg, store.class_names())[0].ids} & learned_by(store, source, fold)
    if rows:
        _warn(f"--folds {cfg.folds} from --model {model}: the teacher of run {run!r} learned the labels of {len(rows)} of the rows "
              "these folds are to be blind to, so their logits are not out-of-fold (`kd labels detect` refuses them as "
              "in-sample); start from a model that did not learn them (the base model, or pretrain:RUN)")


def _dev_trains(store, cfg: TeachConfig) -> bool:
    """Whether dev rows are among the training rows (``--split dev``, and a --where that selects some
    of them): then no dev row is left to judge the epochs (``teacher.training_rows``)."""
    if "dev" not in cfg.splits:
        return False
    if not cfg.where and not cfg.labels:
        return True
    try:
        rows = store.samples(splits=["dev"], labeled=True, where=cfg.where)
    except KdError:  # a --where the store refuses: the stage's one-line error, not a warning first
        return False
    names = store.class_names()  # (the dev rows --where selects of other classes than --label's do not train: dev judges)
    return bool(set(cfg.labels or names) & {names[int(c)] for c in rows.labels})


def _dev_judges(store, cfg: TeachConfig) -> bool:
    """Whether labeled dev samples (of the --label classes, if given) are there to judge the epochs."""
    if not set(cfg.labels) <= set(store.class_names()):
        return True  # (an unknown --label is the stage's one-line error, not a warning first)
    dev = store.counts().get("dev", {})
    return any(n for name, n in dev.items() if name != "(none)" and (not cfg.labels or name in cfg.labels))


def _before_replacing(store, run: str, kind: str, name: str | None = None, *, warn: bool = True) -> None:
    """An --overwrite's checks before it trains: a replacement the stage's start would refuse (a stage
    running on the old logits or model) is refused here, before the warning (``warn``: this process
    says it, rank 0 under torchrun) of the stages that used what it replaces."""
    check_stage_free(store, run=run, kind=kind, name=name or kind, overwrite=True)
    if warn:
        _warn_learners_of_replaced(store, run, kind, name)


def _warn_learners_of_replaced(store, run: str, kind: str = "teach", name: str | None = None) -> None:
    """`kd teach --overwrite` (`kd pretrain --overwrite`, `kd distill --overwrite` of stage ``name``): the
    stages that learned from the model it replaces, named before it trains (`kd runs delete` names them;
    an overwrite left them to kd report's "replaced since"): students and detections of the teacher's
    logits, `kd predict --store` figures of it, teachers that started from it (``--model teach:RUN`` /
    ``pretrain:RUN``), and detections that took a student's votes (``--student-votes``)."""
    try:
        old = store.find_stage(run, name or kind)
    except KdError:
        return
    if old.kind != kind or old.name != (name or kind):  # (find_stage falls back on the latest stage of the kind)
        return
    def started_from(config) -> bool:
        return model_source(config) == (kind, run) and config.get("model_sha256") == old.artifact_sha256

    def used(r, st) -> bool:  # not a failed one (no figures)
        config = st.config or {}
        return st.status != "failed" and st.id != old.id and (
            any(t.get("stage_id") == old.id for t in [*(config.get("teacher_stages") or []), *(config.get("student_vote_stages") or [])])
            or (st.kind == "predict" and r.uniqid == run and (config.get("model_stage"), config.get("model_sha256")) == (old.name, old.artifact_sha256))
            or (st.kind == "teach" and bool(old.artifact_sha256) and started_from(config)))

    found = [(r, st) for r, stages in store.runs() for st in stages if used(r, st)]
    users = [f"{r.uniqid}/{st.name}" for r, st in found]
    # a detection whose issues a clean decided with edits that stand refuses --overwrite: the one in a new run instead
    redetect = {f"{r.uniqid}/{st.name}": cmd for r, st in found if st.kind == "detect"
                and not (cmd := redetect_command(r.uniqid, st, store)).endswith(" --overwrite")}
    if users:
        shown = ", ".join(users[:5]) + (f" and {len(users) - 5} more" if len(users) > 5 else "")
        what = {"teach": "teacher", "pretrain": "pre-trained model"}.get(kind, "student")
        rest = [u for u in users if u not in redetect]
        rerun = ("; rerun " + ("them" if len(rest) > 1 else "it") if len(rest) == len(users)
                 else "; rerun " + ", ".join(rest[:5]) + (f" and {len(rest) - 5} more" if len(rest) > 5 else "")) if rest else ""
        _warn(f"--overwrite replaces the {what} that {shown} used: {'their' if len(users) > 1 else 'its'} figures stay "
              f"those of the old one (kd report will say \"replaced since\"){rerun}"
              + (f" with --overwrite once the new {what} is done" if rest else "")
              + "".join(f"; {u}'s issues were decided by a clean whose edits stand: `{cmd}` detects again once the new {what} is done"
                        for u, cmd in redetect.items()))


def _warn_one_class_dev(store, labels: tuple[str, ...] = (), where: str | None = None) -> None:
    """Dev macro-F1 picks the epoch kept (teacher and student): with labeled dev samples of one class
    (of the ``--label`` classes, if given), an epoch answering that class to every text scores 1.0 and
    one that slips once about 0.5; said, as it trains on regardless."""
    if labels and (len(set(labels)) < 2 or not set(labels) <= set(store.class_names())):
        return  # (one --label, or an unknown one: the stage refuses it, a warning first would only bury that)
    counts = store.counts()
    dev = [c for c, n in counts.get("dev", {}).items() if c != "(none)" and n and (not labels or c in labels)]
    if len(dev) == 1:
        _warn(f"the labeled dev samples are all of class {dev[0]!r}: the epoch kept is the one whose dev macro-F1 "
              f"is highest, which an epoch answering {dev[0]!r} to every text reaches; ingest a dev set of every class")
    trained = counts.get("train", {})
    if where:  # (kd teach --where: the train rows it selects; a class it leaves out is never learned, nor to be judged)
        names = store.class_names()
        trained = {names[int(c)]: 1 for c in set(store.samples(splits=["train"], labeled=True, where=where).labels.tolist())}
    unjudged = [c for c, n in trained.items() if c != "(none)" and n and c not in dev and (not labels or c in labels)]
    if len(dev) > 1 and unjudged:  # (a rare class whose few samples all went to train)
        shown = first_few(map(repr, unjudged))
        # (not left out: an epoch that answers such a class on dev counts it at an F1 of 0, as kd report does)
        it = "it" if len(unjudged) == 1 else "them"
        _warn(f"no labeled dev sample of class {shown}: dev macro-F1, which picks the epoch kept, cannot judge {it} "
              f"(an epoch that answers {it} to a dev text counts {it} at an F1 of 0); ingest some with `kd ingest FILE --split dev`")


def _first_split(splits) -> str:
    """Of the labeled splits named, the one that judges a model first: dev, then test, then train."""
    return next((s for s in ("dev", "test", "train") if s in splits), "dev")


def _check_positions(store, cfg: TeachConfig):
    """A --max-len longer than a local model folder's positions, a --layer-decay of an encoder-decoder, or a
    head it names other classes for, refused before a stage is recorded (the stage's own check, after loading the model, left a failed
    stage). Anything else about the model (a hub name, an unreadable folder) is the stage's to say.
    Returns the folder's configuration (``None`` for a hub name or an unreadable folder)."""
    from kdstore.teacher import check_layer_decay, check_max_len, head_classes, resolve_model

    path = resolve_model(store, cfg.model)
    if not (Path(path).expanduser() / "config.json").is_file():
        return None
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(Path(path).expanduser()), trust_remote_code=False)  # (no [y/N] question)
    except Exception:  # noqa: BLE001 (named by the stage, as it loads the model)
        return None
    check_max_len(config, cfg.max_len, path)
    check_layer_decay(config, cfg.layer_decay)  # (an encoder-decoder's: refused once the stage loaded the model, a failed stage)
    head_classes(config, store.class_names(), path)
    return config


UNK_TEACH_SHARE = 0.05  # a teacher's [UNK] tokens over the train texts: bert-base-chinese reads reviews at well under 1%


def _warn_unknown_characters(store, cfg: TeachConfig, checkpoint) -> None:
    """A teacher whose vocabulary lacks the store's characters (an English model on Chinese text) reads them as
    [UNK], and learns from next to nothing: said before it trains, from its tokenizer alone. Only of a local
    folder whose configuration transformers read (``checkpoint``); a model the stage cannot load, or a
    tokenizer of special tokens alone, is the stage's to refuse."""
    from kdstore.batching import unknown_share
    from kdstore.teacher import quiet_transformers, resolve_model

    if checkpoint is None:
        return
    quiet_transformers()  # (a tokenizer's load warnings, five lines of a SentencePiece file, came before the stage's one-line error)
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(Path(resolve_model(store, cfg.model)).expanduser()),
                                                  trust_remote_code=False, local_files_only=True)  # (kd runs no model's own code)
    except Exception:  # noqa: BLE001 (an unreadable folder: the stage says it)
        return
    if len(tokenizer.get_vocab()) <= len(set(tokenizer.all_special_ids)):
        return
    texts = store.samples(splits=["train"], labeled=True, where=cfg.where, limit=1000).texts
    share = unknown_share(tokenizer, texts, max_len=cfg.max_len)
    if share is not None and share >= UNK_TEACH_SHARE:
        from kdstore.pretrain import trained_positions

        said = f"--model {cfg.model}: its tokenizer reads {share:.0%} of the train texts' tokens as its unknown token {tokenizer.unk_token}"
        if trained_positions(checkpoint) is not None:  # kd pretrain's vocabulary: the store's characters, a rare one left out
            source, _, source_run = cfg.model.partition(":")
            try:
                pretrained = store.find_stage(resolve_run_id(source_run), 'pretrain').config if source == "pretrain" else {}
                min_count = f" {int(pretrained['min_count'])}" if source == "pretrain" else ""
            except (KdError, KeyError, TypeError, ValueError):
                pretrained, min_count = {}, ""
            splits = pretrained.get("splits") or ["train"]  # (an older stage: every split)
            if "train" not in splits:  # its --split left the train texts out: a lower --min-count or more --corpus adds none of their characters
                read = f"split {', '.join(splits)}" + (" and --corpus" if pretrained.get("corpus") else "")
                _warn(f"{said} (run {source_run!r} pre-trained on {read}, not on the train texts), and the teacher learns "
                      "nothing of them: pre-train with --split train too (or leave --split out)")
                return
            _warn(f"{said} (characters `kd pretrain` saw fewer than --min-count{min_count} times, or not at all), and the "
                  "teacher learns nothing of them: pre-train with a lower --min-count, or on more text (--corpus)")
            return
        _warn(f"{said} (its vocabulary lacks their characters: a model of another language?), and the "
              "teacher learns nothing of them: choose a model for the store's language, or `kd pretrain` one on the store's text")


def _warn_past_trained_positions(store, model: str, checkpoint, max_len: int) -> None:
    """`kd pretrain` learns the positions up to its --max-len; a teacher reading further starts the
    rest from random vectors (the model has 512 of them): say so, it trains on regardless. The folder's
    config.json says how far it was trained (a kd teacher fine-tuned from it too); a folder pre-trained
    before kd wrote that, by its run's recorded --max-len."""
    from kdstore.pretrain import trained_positions

    source, _, source_run = model.partition(":")
    trained = trained_positions(checkpoint) if checkpoint is not None else None
    if trained is None and source == "pretrain":
        try:
            trained = int(store.find_stage(resolve_run_id(source_run), "pretrain").config.get("max_len") or 0)
        except (KdError, TypeError, ValueError):
            return  # (the stage's own check names a missing run)
    if trained and max_len > trained:
        what = f"run {source_run!r} was pre-trained on" if source == "pretrain" else f"model {model!r} was trained on"
        _warn(f"--max-len {max_len} is longer than the {trained} tokens {what}: positions {trained + 1}-{max_len} start "
              f"untrained (pre-train with --max-len {max_len}, or teach with --max-len {trained})")


def _warn_student_past_trained_positions(teacher_config, cfg) -> None:
    """A transformer student copied from a kd-pretrained teacher takes its position vectors: those past the
    tokens the teacher was trained on are random ones (as kd teach warns of its own --max-len)."""
    from kdstore.pretrain import trained_positions

    trained = trained_positions(teacher_config)
    if cfg.init_from_teacher and trained and cfg.max_len > trained:
        _warn(f"--max-len {cfg.max_len} is longer than the {trained} tokens the teacher was trained on: the student copies its "
              f"position vectors, and positions {trained + 1}-{cfg.max_len} start untrained (distill with --max-len {trained}, "
              "or --no-init-from-teacher)")


@click.command()
@run_option
@click.option("--student", type=click.Choice(KINDS + ("early-exit",)), default="textcnn", show_default=True, help="early-exit: FastBERT branches on the teacher's own layers.")
@click.option("--teacher-run", "teacher_runs", multiple=True, callback=resolve_runs, help="Run(s) whose teacher logits to use (averaged); default: --run.")
@click.option("--teacher-weight", "teacher_weights", multiple=True, type=FLOAT, help="Weight of each --teacher-run (default: equal).")
@click.option("--teacher-average", type=click.Choice(TEACHER_AVERAGES), default="probs", show_default=True, help="Several --teacher-run: average their probabilities (a mixture of their answers), or their logits, as TextBrewer's multi-teacher distillation does (a confident teacher weighs more).")
@click.option("--alpha", type=FLOAT, default=0.5, show_default=True, help="Weight of the soft loss on labeled samples, in [0, 1] (with --hard-weight: on every sample, the pool's too, and it may pass 1, as TextBrewer's kd_loss_weight).")
@click.option("--alpha-end", type=FLOAT, help="Move alpha linearly to this value over training.")
@click.option("--hard-weight", type=FLOAT, help="Weight of the hard (gold label) loss on labeled samples, on its own (default: 1 - alpha); alpha then weighs every sample's soft loss, the pool's too.")
@click.option("--hard-weight-end", type=FLOAT, help="Move --hard-weight linearly to this value over training (e.g. 1 -> 0 while --alpha-end grows: TextBrewer's linear decay and growth).")
@click.option("--temperature", type=FLOAT, default=2.0, show_default="2.0; 1.0 for early exit",
              help="Softens the teacher's and the student's distributions in the soft loss (0.1 to 100; not with --soft-loss mse).")
@click.option("--temperature-end", type=FLOAT, help="Move the temperature linearly to this value over training.")
@click.option("--temperature-schedule", type=click.Choice(TEMPERATURE_SCHEDULES), default="constant", show_default=True, help="flsw | cwsm: a temperature per sample around the scheduled one (Wen et al. 2019, as TextBrewer): lower where the student disagrees with the teacher (flsw) or is unsure (cwsm).")
@click.option("--temperature-beta", type=FLOAT, default=1.0, show_default=True, help="flsw/cwsm: how far a sample's temperature moves from the scheduled one.")
@click.option("--temperature-gamma", type=FLOAT, default=2.0, show_default=True, help="flsw: exponent on (1 - cosine(student, teacher)), at most 100.")
@click.option("--probability-shift/--no-probability-shift", is_flag=True, help="Where the teacher is wrong on a labeled sample, swap its top logit with the gold class's (Wen et al. 2019, as TextBrewer). Clean labels first: it trusts them.")
@click.option("--class-weight", type=click.Choice(["none", "balanced"]), default="none", show_default=True, help="balanced: each labeled row's hard loss weighted n / (classes x rows of its class), for imbalanced classes (the teacher's soft loss is left as it is); the weights are recorded (class_weight[NAME]).")
@click.option("--init-embeddings", type=click.Choice(["random", "teacher"]), default="random", show_default=True, help="teacher: start from the teacher's token embeddings (--embed-dim is then the width of its table: the hidden size for BERT, less for ALBERT/ELECTRA; another width is refused).")
@click.option("--soft-loss", type=click.Choice(SOFT_LOSSES), default="kl", show_default=True,
              help="KL divergence or soft cross entropy on the softened distributions (× T²), or MSE on the logits (Tang et al.).")
@click.option("--unlabeled/--no-unlabeled", default=None, help="Learn from the unlabeled pool too (default: when there is one).")
@click.option("--where", help="SQL condition on the samples selecting the train and pool rows learned from, e.g. \"source = 'a.tsv'\" (all of dev still judges, every sample is still scored; --augment texts go with their train rows).")
@click.option("--augment", default="", help="Augment the train texts: any of mask,pos,ngram (stored, scored by the teacher, soft targets only). A recipe's texts are made of every train text once, whatever --where selects, and reused by later runs.")
@click.option("--augment-n", type=int, default=4, show_default=True, help="Augmented variants made per train text, at most (1 to 1000; a variant equal to its text or to another is not kept). Each --seed makes its own set, stored and scored once.")
@click.option("--p-mask", type=FLOAT, default=0.1, show_default=True, help="Augmentation: chance a word becomes the teacher tokenizer's unknown token ([UNK], <unk>, ...).")
@click.option("--p-pos", type=FLOAT, default=0.1, show_default=True, help="Augmentation: chance a word is swapped for one of the same part of speech.")
@click.option("--p-ngram", type=FLOAT, default=0.25, show_default=True, help="Augmentation: chance a text is cut to a random n-gram.")
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--lr", type=FLOAT, help="Learning rate (default 1e-3; 1e-4 for a transformer student; 1e-3 for early exit).")
@click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES), default="constant", show_default=True, help="linear: the learning rate falls to 0 at the last step (after --warmup), as kd teach trains; a transformer student wants it.")
@click.option("--warmup", type=FLOAT, default=0.0, show_default=True, help="Fraction of the training steps over which the learning rate rises from 0 (e.g. 0.1 with --lr-schedule linear).")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--grad-accum", type=int, default=1, show_default=True, help=DISTILL_GRAD_ACCUM_HELP)
@click.option("--max-len", type=int, default=128, show_default="the (first) teacher's; 128 if it has none")
@click.option("--patience", type=int, default=3, show_default=True, help="Dev scores without a gain before stopping (one an epoch, or one each --eval-every steps).")
@click.option("--eval-every", type=int, default=0, help="Score dev every N training steps (and at the last), keeping the best of those, instead of at each epoch's end: for a pool much larger than the labels, whose epoch is long.")
@click.option("--embed-dim", type=int, default=128, show_default=True, help="Token embedding width (with --init-embeddings teacher: the width of the teacher's table; another width is refused).")
@click.option("--kernel-sizes", default="2,3,4", show_default=True, help="TextCNN kernel widths.")
@click.option("--num-filters", type=int, default=128, show_default=True)
@click.option("--hidden", type=int, default=128, show_default=True, help="BiGRU/BiLSTM hidden size.")
@click.option("--dropout", type=FLOAT, default=0.3, show_default="0.3; 0.1 for early exit")
@click.option("--layers", type=int, default=4, show_default=True, help="Transformer student: layers.")
@click.option("--width", type=int, default=0, help="Transformer student: hidden size (default: the teacher's).")
@click.option("--folds", type=int, default=0, help="Train K students, each blind to one fold's train labels: out-of-fold votes for `kd labels detect --student-votes` (kd predict averages the K).")
@click.option("--student-model", default="", help="Transformer student: start from this pre-trained checkpoint (a Hugging Face name or folder, e.g. a 3- or 4-layer Chinese BERT/RoBERTa of the teacher's vocabulary), its layers and width its own, instead of teacher layers or random ones.")
@click.option("--init-from-teacher/--no-init-from-teacher", default=None, help="Transformer student: start from evenly spaced teacher layers (default: when it has the teacher's width).")
@click.option("--layer-map", default="", help="Transformer student: the teacher layer (0-based) each student layer copies and its intermediate losses match, e.g. 3,7,11 for 3 layers (default: evenly spaced, ending at the last).")
@click.option("--hidden-mse", type=FLOAT, default=0.0, help="Transformer student: weight of hidden-state MSE to mapped teacher layers (and embedding output to embedding output, as TinyBERT).")
@click.option("--hidden-cos", type=FLOAT, default=0.0, help="Transformer student: weight of hidden-state cosine distance (1 - cos) to mapped teacher layers.")
@click.option("--pkd", type=FLOAT, default=0.0, help="Transformer student: weight of Patient KD (normalised [CLS] vectors of mapped layers; the last one included, as in TextBrewer, where BERT-PKD leaves it to the logit loss).")
@click.option("--attention-kl", type=FLOAT, default=0.0, help="Transformer student: weight of attention-distribution KL.")
@click.option("--attention-mse", type=FLOAT, default=0.0, help="Transformer student: weight of the squared error of head-averaged attention distributions on mapped layers.")
@click.option("--fsp", type=FLOAT, default=0.0, help="Transformer student: weight of FSP (Yim et al. 2017): each student layer's input-output flow matrix against that of the teacher layers it stands for.")
@click.option("--nst", type=FLOAT, default=0.0, help="Transformer student: weight of neuron selectivity transfer (TextBrewer's nst/mmd): token-similarity matrices of mapped layers (widths may differ).")
@click.option("--value-relation", type=FLOAT, default=0.0, help="Transformer student: weight of MiniLM value-relation KL (last layer).")
@click.option("--qk-relation", type=FLOAT, default=0.0, help="Transformer student: weight of MiniLM query-key (attention distribution) KL (last layer).")
@click.option("--match", "matches", multiple=True, help="Transformer student: one intermediate loss on its own layers and weight, KIND:S:T[:WEIGHT] (TextBrewer's intermediate_matches), repeatable: KIND one of hidden_mse, hidden_cos, pkd, attention_kl, attention_mse, nst; S and T a student and a teacher layer counted from 0 (emb: the embedding output, hidden-state losses only; TextBrewer's hidden layer N (0: the embeddings) is N-1 here, its attention layers count alike); WEIGHT 1 if left out. Each is summed at its weight, a projection of its own where widths differ.")
@click.option("--relation-heads", type=int, default=0, help="Relation heads for --value-relation/--qk-relation (default: the smaller head count).")
@click.option("--speed", type=FLOAT, default=0.3, show_default=True, help="Early exit: default uncertainty threshold for serving, or --max-loss, not both (the speed each epoch is judged at on dev: with --max-loss, 0.3 or a config file's speed; the speed served is then the one chosen, the stage's `speed` figure).")
@click.option("--max-loss", type=FLOAT, help="Early exit: serve at the speed chosen on dev instead: speeds are raised while the dev accuracy loss, plus one standard error, stays at most this many points (e.g. 0.5).")
@click.option("--uncertainty", type=click.Choice(["entropy", "max_prob"]), default="entropy", show_default=True, help="Early exit: normalized entropy (FastBERT) or 1 - max probability (steady with many classes).")
@click.option("--branch-dim", type=int, default=128, show_default=True, help="Early exit: width of each layer's classifier.")
@click.option("--pooling", type=click.Choice(["mean", "cls"]), default="mean", show_default=True, help="Early exit: how each branch pools a layer.")
@click.option("--name", "stage_name", help="Stage name (default: distill-STUDENT).")
@_seed_option
@_device_option
@overwrite_option
@store_options
@json_option
def distill(run, student, teacher_runs, teacher_weights, teacher_average, alpha, alpha_end, hard_weight, hard_weight_end, temperature, temperature_end,
            temperature_schedule, temperature_beta, temperature_gamma, probability_shift, class_weight, init_embeddings, soft_loss, unlabeled, where, augment, augment_n, p_mask, p_pos, p_ngram, epochs, lr, lr_schedule, warmup, batch_size, grad_accum, max_len, patience, eval_every, embed_dim, kernel_sizes, num_filters, hidden, dropout, layers, folds, width, student_model, init_from_teacher, layer_map, hidden_mse, hidden_cos, pkd, attention_kl, attention_mse, fsp, nst, value_relation, qk_relation, matches, relation_heads, speed, max_loss, uncertainty, branch_dim, pooling, stage_name, seed, device, overwrite, db, as_json):
    """Train a small student from the teacher logits in the store.

    \b
    Example:
      kd distill --run r1 --student textcnn
      kd distill --run r1 --student bilstm --soft-loss mse --alpha 1
      kd distill --run r2 --teacher-run r1 --teacher-run r1b   # two teachers, averaged
      kd distill --run r2 --teacher-run r1 --teacher-run r1b --teacher-average logits   # as TextBrewer averages
      kd distill --run r1 --alpha 0.9 --alpha-end 0.1 --temperature 4 --temperature-end 1
      kd distill --run r1 --alpha 1 --hard-weight 1 --hard-weight-end 0   # soft weight kept, hard weight decays
      kd distill --run r1 --temperature 4 --temperature-schedule flsw --temperature-beta 1
      kd distill --run r1 --augment mask,pos,ngram --augment-n 4   # Tang et al. / ERNIE-Tiny
      kd distill --run r1 --student transformer --layers 3 --hidden-mse 1 --attention-kl 1 --value-relation 1 --qk-relation 1
      kd distill --run r1 --student transformer --lr-schedule linear --warmup 0.1   # as kd teach trains
      kd distill --run r1 --student transformer --layers 3 --match hidden_mse:emb:emb --match hidden_mse:2:11 --match attention_kl:2:11:0.5
      kd distill --run r1 --eval-every 500 --patience 5   # a big pool: dev scored every 500 steps
      kd distill --run r1 --folds 5 --name votes   # out-of-fold students for kd labels detect --student-votes votes
      kd distill --run r1 --where "source = 'shop.tsv'" --name shop   # a student of one source's rows
      kd distill --run r1 --student early-exit --speed 0.3   # FastBERT self-distillation
      kd distill --run r1 --student early-exit --max-loss 0.5   # the fastest speed within 0.5 pt on dev
      torchrun --nproc-per-node 4 --no-python kd -- distill --run r1 --student bigru   # 4 GPUs (not early-exit)
    """
    if student == "early-exit":
        if Dist.from_env().active:
            raise click.UsageError("--student early-exit trains in one process: run it without torchrun")
        ignored = _options_given(STUDENT_ONLY)
        if ignored:
            raise click.UsageError(f"{', '.join(ignored)}: for students, not --student early-exit (it trains exit branches on the teacher's own layers, each learning the final layer's answers at one --temperature: no student's model, loss or schedule)"
                                   + file_note(click.get_current_context(), "--student"))  # (a file's student, never typed, is named with the file)
        _distill_early_exit(run, teacher_runs, teacher_weights, augment, epochs, lr, batch_size, max_len, speed, max_loss, uncertainty,
                            temperature, unlabeled, where, branch_dim, pooling, dropout, patience, seed, device, stage_name, overwrite, db, as_json)
        return
    ignored = _options_given(EARLY_EXIT_ONLY)
    if ignored:
        raise click.UsageError(f"{', '.join(ignored)}: for --student early-exit, not {student}" + file_note(click.get_current_context(), "--student"))
    _warn_unused(student, augment, relation=value_relation > 0 or qk_relation > 0)
    teacher_weights = _file_teacher_weights_fit(teacher_runs, teacher_weights)
    if (len(set(teacher_runs or (run,))) == 1 and _options_given(("teacher_weights",))
            and len(teacher_weights) == max(1, len(teacher_runs))):  # (a count that does not fit is refused: not "not used" too)
        # (a weight of one teacher, or of one run named twice, weighs it against nothing: taken in silence)
        _warn("--teacher-weight: not used: it weighs several --teacher-run against each other, and this student has one teacher")
    twice = [t for t in dict.fromkeys(teacher_runs or ()) if teacher_runs.count(t) > 1]
    if twice and len(set(teacher_runs)) > 1 and not _options_given(("teacher_weights",)):  # (weighed by position: one's own choice)
        _warn(f"--teacher-run {', '.join(twice)} named more than once: counted as often in the average of the teachers "
              "(--teacher-weight weighs them)")
    elif twice and len(set(teacher_runs)) == 1:  # (`--teacher-run A --teacher-run A`: a typo for B, recorded as two teachers)
        _warn(f"--teacher-run {twice[0]} named {len(teacher_runs)} times: this student has one teacher, that of run {twice[0]!r} "
              "(another run meant?)")
    if len(set(teacher_runs or (run,))) == 1 and _options_given(("teacher_average",)):
        _warn("--teacher-average: not used: it averages several --teacher-run, and this student has one teacher")
    temperature, temperature_end, temperature_schedule, temperature_beta, temperature_gamma = _file_temperatures_fit(
        soft_loss, temperature, temperature_end, temperature_schedule, temperature_beta, temperature_gamma)
    _refuse_unfit_temperatures(soft_loss, temperature_schedule)
    try:
        kernels = tuple(int(k) for k in kernel_sizes.split(","))
    except ValueError:
        raise click.BadParameter(f"{kernel_sizes!r}: give widths like 2,3,4", param_hint="--kernel-sizes") from None
    if student == "textcnn" and len(set(kernels)) != len(kernels):  # (a typo for 2,3,4: two banks of one width, Kim's widths differ;
        # another student's are warned as not used, their value not judged)
        raise click.BadParameter(f"{kernel_sizes!r}: a width given twice: give distinct widths like 2,3,4", param_hint="--kernel-sizes")
    try:
        if not layer_map.strip() and _options_given(("layer_map",)):  # (typed empty: `--layer-map "$MAP"`, MAP unset)
            raise ValueError(layer_map)
        mapping = tuple(int(j) for j in layer_map.split(",")) if layer_map.strip() else ()
    except ValueError:
        raise click.BadParameter(f"{layer_map!r}: give teacher layers like 3,7,11 (0-based, one per student layer)", param_hint="--layer-map") from None
    if not augment.replace(",", "").strip() and (augment.strip() or _options_given(("augment",))):  # (typed empty: `--augment "$AUG"`, AUG unset)
        raise click.BadParameter(f"{augment!r}: give methods like mask,pos,ngram (or leave it out)", param_hint="--augment")
    cfg = DistillConfig(
        student=student, teacher_runs=tuple(teacher_runs), teacher_weights=tuple(teacher_weights), teacher_average=teacher_average,
        alpha=alpha, alpha_end=alpha_end, hard_weight=hard_weight, hard_weight_end=hard_weight_end,
        temperature=temperature, temperature_end=temperature_end,
        temperature_schedule=temperature_schedule, temperature_beta=temperature_beta, temperature_gamma=temperature_gamma,
        probability_shift=probability_shift, class_weight=class_weight,
        init_embeddings=init_embeddings, soft_loss=soft_loss, unlabeled=unlabeled, where=where,
        augment=tuple(dict.fromkeys(m.strip() for m in augment.split(",") if m.strip())), augment_n=augment_n,  # (one typed twice: once)
        p_mask=p_mask, p_pos=p_pos, p_ngram=p_ngram, epochs=epochs, lr=lr, lr_schedule=lr_schedule, warmup=warmup, batch_size=batch_size, grad_accum=grad_accum,
        max_len=max_len, patience=patience, eval_every=eval_every, embed_dim=embed_dim, kernel_sizes=kernels,
        num_filters=num_filters, hidden=hidden, dropout=dropout, layers=layers, folds=folds, width=width,
        student_model=student_model.strip(), init_from_teacher=init_from_teacher, hidden_mse=hidden_mse, hidden_cos=hidden_cos, pkd=pkd, attention_kl=attention_kl,
        attention_mse=attention_mse, fsp=fsp, nst=nst,
        value_relation=value_relation, qk_relation=qk_relation, relation_heads=relation_heads, layer_map=mapping,
        matches=parse_matches(matches), seed=seed, device=device,
    )
    cfg = _file_student_options_fit(cfg)
    cfg.validate()
    if len(set(cfg.teacher_runs or (run,))) == 1:  # recorded as used: one teacher is weighed and averaged against none (warned above)
        cfg = replace(cfg, teacher_weights=(), teacher_average=DistillConfig.teacher_average)
    if cfg.class_weight != "none" and not cfg.hard_weighed:
        _warn(f"--class-weight {cfg.class_weight}: not used: the hard (gold label) loss weighs 0 throughout "
              "(--alpha 1, or --hard-weight 0)")
    pick_device(cfg.device)  # (as teach's)
    store = open_store(db, writer=True)
    if not overwrite:  # a rerun refused before the warnings about the store, as if it had begun
        check_stage_free(store, run=run, kind="distill", name=f"distill-{student}" if stage_name is None else stage_name,
                         teachers=list(teacher_runs))
    _check_where_runs(store, cfg.where, by_name=False)  # (before the pool is read by it; distill has no --label)
    cfg = _resolve_unlabeled(store, cfg)
    if cfg.probability_shift and not cfg.soft_weighed and (cfg.hard_weight is not None or cfg.temperature_schedule == "constant"
                                                          or (not cfg.unlabeled and not cfg.augment)):
        # (tied, under flsw/cwsm, the shifted targets still move the batch's mean weight, so the pool's temperatures:
        # where there is a pool or augmented text to move; unlabeled is resolved above, the pool's presence with it)
        _warn("--probability-shift: not used: the labeled samples' soft loss weighs 0 throughout (--alpha 0): "
              "it shifts only their targets")
    soft_unused = _options_given(("temperature", "temperature_end", "temperature_schedule", "soft_loss"))
    # (with --hard-weight, alpha weighs every sample's soft loss, the pool's and --augment's too)
    if soft_unused and not cfg.soft_weighed and (cfg.hard_weight is not None or (not cfg.unlabeled and not cfg.augment)):
        why = ("--alpha 0 with --hard-weight: alpha weighs every sample's soft loss, the pool's too" if cfg.hard_weight is not None
               else "--alpha 0 with --no-unlabeled and no --augment: the labels alone")
        _warn(f"{', '.join(soft_unused)}: not used: no soft loss is learned ({why})")
    _teacher_runs_exist(store, teacher_runs or (run,))
    no_dev = not any(n for c, n in store.counts().get("dev", {}).items() if c != "(none)")
    if _options_given(("patience",)) and no_dev:
        _warn_patience_without_dev()
    if _options_given(("eval_every",)) and no_dev:
        _warn("--eval-every: the store has no labeled dev samples to score: only the train loss is recorded every "
              f"{cfg.eval_every} steps, and the last step is kept (`kd ingest FILE --split dev` adds some)")
    _warn_one_class_dev(store)
    _teachers_usable(store, teacher_runs or (run,), where=cfg.where)
    if not _labels_alone(distill_config(cfg)):  # (the baseline without the teacher learns none of its soft targets)
        _warn_weak_teachers(store, teacher_runs or (run,))
    if cfg.unlabeled:
        click.get_current_context().meta["kd.pool_without_logits"] = _warn_pool_without_logits(store, teacher_runs or (run,), cfg.where)
    if "mask" in cfg.augment:
        _one_unknown_token(store, teacher_runs or (run,))
    if click.get_current_context().get_parameter_source("max_len") in (ParameterSource.DEFAULT, None):
        # the first teacher's: the student reads what its targets were made from (and a transformer
        # student, started from the teacher, no position the teacher never learned)
        cfg = replace(cfg, max_len=_teacher_max_len(store, (teacher_runs or (run,))[0], cfg.max_len))
    teacher_config = _teacher_config(store, (teacher_runs or (run,))[0])  # (its vocabulary sizes every student's table)
    if cfg.student_model and student == "transformer":  # its own depth and width, recorded as such; checked before a stage is recorded
        given = _options_given(("layers", "width"))
        if given:
            raise click.UsageError(f"{', '.join(given)}: --student-model {cfg.student_model} has its own layers and width")
        own = student_model_config(cfg.student_model, store.class_names())
        cfg = replace(cfg, layers=own.num_hidden_layers, width=own.hidden_size, init_from_teacher=False)
        if teacher_config is not None:
            check_student_vocabulary(cfg, _teacher_tokenizer(store, (teacher_runs or (run,))[0]))
    if teacher_config is not None and student == "transformer":  # an ALBERT or DistilBERT teacher: refused before a stage is recorded
        if not cfg.student_model:
            check_bert_layout(teacher_config)
        elif cfg.intermediate:  # (a --student-model without them reads no layer of the teacher: its logits alone)
            try:
                check_bert_layout(teacher_config)
            except KdError:
                losses = [o for o in INTERMEDIATE_OPTIONS if getattr(cfg, o[2:].replace("-", "_"))] + (["--match"] if cfg.matches else [])
                raise KdError(f"{', '.join(losses)} {'reads' if len(losses) == 1 else 'read'} the teacher's layers, which a transformer "
                              "student matches in a BERT-layout encoder (BERT, RoBERTa, XLM-R, ERNIE, ELECTRA); this teacher's "
                              f"{getattr(teacher_config, 'model_type', '?')!r} is laid out otherwise: leave the intermediate losses out "
                              f"(--student-model {cfg.student_model} learns from its logits alone)") from None
        if cfg.init_from_teacher is None:  # recorded as it runs (the stage decides so: _copies_layers), not as null, which
            # said nothing of it: teacher_layer[i] is on record whether the layers were copied or only matched
            cfg = replace(cfg, init_from_teacher=(cfg.width or teacher_config.hidden_size) == teacher_config.hidden_size)
        _warn_student_past_trained_positions(teacher_config, cfg)
        if cfg.folds and cfg.init_from_teacher:  # the votes --folds is for would not be blind to the labels they judge
            _warn(f"--folds {cfg.folds} with a student copied from the teacher: each fold starts from teacher layers and head "
                  "that learned the train labels it is to be blind to, so its votes are not out-of-fold; "
                  "--no-init-from-teacher trains blind ones")
    if teacher_config is not None and cfg.init_embeddings == "teacher":
        cfg = replace(cfg, embed_dim=_embedding_width(teacher_config, cfg.embed_dim, note=first_teacher_note(cfg)))
    if cfg.folds and cfg.init_embeddings == "teacher":  # a table fine-tuned on the labels the votes are to be blind to
        _warn(f"--folds {cfg.folds} with --init-embeddings teacher: each fold starts from the teacher's token embeddings, "
              "fine-tuned on train labels it is to be blind to, so its votes are not strictly out-of-fold; "
              "--init-embeddings random trains blind ones")
    check_student_shape(cfg, teacher_config, len(store.class_names()))  # as the stage checks it, before it is recorded
    if teacher_config is not None and student == "transformer":  # recorded as it runs, not as 0 ("the default")
        cfg = replace(cfg, width=cfg.width or teacher_config.hidden_size)
        depth = teacher_config.num_hidden_layers
        if not cfg.student_model and cfg.layers > depth:  # (--layers' default, 4, of a small teacher: in silence)
            layers = list(cfg.layer_map or student_layer_map(cfg.layers, depth))
            # (the first 12: --layers 100000 printed a line of 100,000 layer indices)
            mapped = ",".join(map(str, layers[:12])) + (f",... ({len(layers)} in all)" if len(layers) > 12 else "")
            repeats = f": teacher layers {mapped} repeat in it" if cfg.init_from_teacher or cfg.mapped_losses else ""
            _warn(f"--student transformer of {cfg.layers} layers (--layers) is deeper than its teacher of {depth}{repeats} "
                  f"(a student is meant to be smaller: give --layers {depth} or fewer)")
        if cfg.value_relation or cfg.qk_relation:
            bert = student_shape(teacher_config, cfg, len(store.class_names()))
            cfg = replace(cfg, relation_heads=resolved_relation_heads(cfg, (bert["hidden_size"], bert["num_attention_heads"]),
                                                             (teacher_config.hidden_size, teacher_config.num_attention_heads)))
    if cfg.layer_map and teacher_config is not None and not cfg.mapped_losses and not cfg.init_from_teacher:
        # (init_from_teacher resolved above, as _copies_layers decides): a student that copies no teacher layer and matches none
        why = "it starts from --student-model" if cfg.student_model else "--width or --no-init-from-teacher"
        _warn(f"--layer-map: not used: the student copies no teacher layer ({why}) and matches none "
              f"on it (no {', '.join(INTERMEDIATE_OPTIONS[:-3])} or {INTERMEDIATE_OPTIONS[-3]})"
              + ("; --match names its own layers" if cfg.matches else "")
              + ("; --value-relation and --qk-relation read the last layer of each" if cfg.value_relation or cfg.qk_relation else ""))
    if cfg.folds:  # a class with fewer train samples than folds: refused here, not by a failed stage
        from kdstore.folds import stratified_folds

        stratified_folds(store.samples(splits=["train"], labeled=True, where=cfg.where).labels, cfg.folds, seed=cfg.seed,
                         class_names=store.class_names())  # (of the rows --where selects: the folds split those)
    name = f"distill-{student}" if stage_name is None else stage_name
    config = {**distill_config(cfg), "classes": store.class_names(),  # (the teacher's, checked: its record may go, --overwrite)
              **labels_state(store), "teacher_stages": _teacher_stages(store, teacher_runs or (run,)), "environment": environment(device)}
    _warn_teachers_of_other_labels(store, config)
    with process_group(device) as dist:
        if overwrite:
            _before_replacing(store, run, "distill", name, warn=dist.is_main)
        with shared_stage(dist, store, run=run, kind="distill", name=name, config=config, overwrite=overwrite) as stage:
            run_distill(store, stage, cfg, dist)
    if dist.is_main:
        _finish(store, run, name, as_json)


# options a student uses and the early-exit branches do not (they self-distil at one --temperature)
STUDENT_ONLY = (
    "alpha", "alpha_end", "hard_weight", "hard_weight_end", "temperature_end", "temperature_schedule", "temperature_beta", "temperature_gamma", "probability_shift",
    "class_weight", "init_embeddings", "soft_loss", "augment_n", "p_mask", "p_pos", "p_ngram", "embed_dim", "kernel_sizes", "num_filters",
    "hidden", "layers", "folds", "width", "init_from_teacher", "hidden_mse", "hidden_cos", "pkd", "attention_kl", "attention_mse", "fsp", "nst", "value_relation",
    "qk_relation", "relation_heads", "layer_map", "lr_schedule", "warmup", "student_model", "eval_every", "matches", "teacher_average", "grad_accum",
)

# and the reverse: options only the early-exit branches use
EARLY_EXIT_ONLY = ("speed", "max_loss", "uncertainty", "branch_dim", "pooling")


# options that shape some kinds of student only
FOR_KINDS = {
    "textcnn": ("kernel_sizes", "num_filters"),
    "bigru": ("hidden",), "bilstm": ("hidden",),
    "transformer": ("layers", "width", "init_from_teacher", "relation_heads"),  # (--layer-map elsewhere: refused)
}
for _kind in ("textcnn", "bigru", "bilstm"):
    # the transformer keeps its teacher's dropout; --init-embeddings teacher on it is an error, not a warning
    FOR_KINDS[_kind] += ("embed_dim", "dropout")
# augmentation options and the method each needs
FOR_METHODS = {"augment_n": "", "p_mask": "mask", "p_pos": "pos", "p_ngram": "ngram"}


def _warn_unused(student: str, augment: str, *, relation: bool) -> None:
    """Name, on standard error, each option given on the command line that the chosen student or
    recipe ignores (a script may pass one set of sizes to every student; a person should know).
    Under torchrun, rank 0 alone says it."""
    if not Dist.from_env().is_main:
        return
    shaped = {name for names in FOR_KINDS.values() for name in names}
    params = click.get_current_context().params  # (an on/off flag turned off is named as typed: --no-init-from-teacher)
    unused = [f"--no-{o[2:]}" if params.get(o[2:].replace("-", "_")) is False else o
              for o in _options_given(tuple(sorted(shaped))) if o[2:].replace("-", "_") not in FOR_KINDS[student]]
    if unused:
        _warn(f"{', '.join(unused)}: not used by --student {student}")
    methods = {m.strip() for m in augment.split(",") if m.strip()}
    unused = [o for o in _options_given(tuple(FOR_METHODS)) if not methods or FOR_METHODS[o[2:].replace("-", "_")] not in methods | {""}]
    if unused:
        _warn(f"{', '.join(unused)}: not used by --augment {augment or '(none)'}")
    if student == "transformer" and _options_given(("init_embeddings",)) and params.get("init_embeddings") != "teacher":
        # (teacher is refused for it); a transformer's table is copied with its layers, or not: this option changed nothing
        _warn("--init-embeddings: not used by --student transformer (its token embeddings come with its layers: "
              "the teacher's, random with --no-init-from-teacher, or --student-model's)")
    if student == "transformer" and not relation and _options_given(("relation_heads",)):
        _warn("--relation-heads: not used without --value-relation or --qk-relation")


def _file_temperatures_fit(soft_loss: str, temperature: float, temperature_end: float | None, schedule: str,
                           beta: float, gamma: float) -> tuple[float, float | None, str, float, float]:
    """The temperature options, with those a config file gave back at their defaults where a typed
    --soft-loss mse or --temperature-schedule leaves them no use. A file's `temperature = 4` refused
    every `kd distill --soft-loss mse`, and its `temperature-beta` every `--temperature-schedule constant`,
    with no way out on the command line (typed, those options are refused even at their defaults)."""
    ctx = click.get_current_context()
    typed = lambda name: ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE  # noqa: E731
    from_file = lambda name: ctx.get_parameter_source(name) == ParameterSource.DEFAULT_MAP  # noqa: E731
    default = {p.name: p.default for p in ctx.command.params}
    if soft_loss == "mse" and typed("soft_loss"):  # raw logits: no temperature, nor a schedule of one
        if from_file("temperature"):
            temperature = default["temperature"]
        if from_file("temperature_end"):
            temperature_end = None
        if from_file("temperature_schedule"):
            schedule = default["temperature_schedule"]
    if schedule == "constant" and (typed("soft_loss") or typed("temperature_schedule")):
        beta = default["temperature_beta"] if from_file("temperature_beta") else beta
        gamma = default["temperature_gamma"] if from_file("temperature_gamma") else gamma
    elif schedule == "cwsm" and typed("temperature_schedule") and from_file("temperature_gamma"):
        gamma = default["temperature_gamma"]
    return temperature, temperature_end, schedule, beta, gamma


def _warn_patience_without_dev() -> None:
    _warn("--patience: not used, the store has no labeled dev samples to judge the epochs: the last epoch "
          "is kept (`kd ingest FILE --split dev` adds some)")


def _file_teacher_weights_fit(teacher_runs: tuple[str, ...], teacher_weights: tuple[float, ...]) -> tuple[float, ...]:
    """The --teacher-weight values, less a config file's that weigh the file's own teacher runs where
    other --teacher-run are typed: the file's `teacher-run = ["a", "b"]` with `teacher-weight = [3, 1]`
    gave a typed `--teacher-run b --teacher-run a` b's weight 3, in silence (a file's weights without
    runs of its own are for the typed ones, in their order, and stay)."""
    ctx = click.get_current_context()
    if (ctx.get_parameter_source("teacher_weights") != ParameterSource.DEFAULT_MAP
            or ctx.get_parameter_source("teacher_runs") != ParameterSource.COMMANDLINE):
        return teacher_weights
    file_runs = (ctx.default_map or {}).get("teacher_runs")
    if file_runs is None:
        return teacher_weights
    file_runs = resolve_runs(ctx, None, [file_runs] if isinstance(file_runs, str) else file_runs)
    if tuple(file_runs) == tuple(teacher_runs):
        return teacher_weights
    _warn(f"--teacher-weight: the config file's {', '.join(f'{w:g}' for w in teacher_weights)} "
          f"weigh{'s' if len(teacher_weights) == 1 else ''} its teacher run{'' if len(file_runs) == 1 else 's'} "
          f"{', '.join(file_runs)}, not the typed {', '.join(teacher_runs)}: not used (equal weights; type --teacher-weight "
          "for these)")
    return ()


def _file_student_options_fit(cfg: DistillConfig) -> DistillConfig:
    """``cfg`` with the options a config file gave back at their defaults where a typed --student
    leaves them no use: a file's transformer student (its --layer-map and intermediate losses) refused
    every typed `kd distill --student textcnn`, and its `init-embeddings = "teacher"` every typed
    `--student transformer`, each as if typed ("leave it out"), with no way out on the command line."""
    ctx = click.get_current_context()
    if ctx.get_parameter_source("student") != ParameterSource.COMMANDLINE:
        return cfg  # (a file's own student with such options is the file's mistake: refused)
    unfit = ("init_embeddings",) if cfg.student == "transformer" else \
        ("layer_map", "student_model", "matches", *(o[2:].replace("-", "_") for o in INTERMEDIATE_OPTIONS))
    default = DistillConfig()
    return replace(cfg, **{name: getattr(default, name) for name in unfit
                           if ctx.get_parameter_source(name) == ParameterSource.DEFAULT_MAP})


def _refuse_unfit_temperatures(soft_loss: str, schedule: str) -> None:
    """The temperature options a loss or schedule does not read, refused when typed on the command line
    even at their default values (``DistillConfig.validate`` can only tell a value other than the default)."""
    given = set(_options_given(("temperature", "temperature_beta", "temperature_gamma")))
    if soft_loss == "mse" and "--temperature" in given:
        raise KdError(MSE_TEMPERATURE)
    if schedule == "constant" and given & {"--temperature-beta", "--temperature-gamma"}:
        raise KdError("--temperature-beta and --temperature-gamma shape a per-sample temperature: add --temperature-schedule flsw or cwsm")
    if schedule == "cwsm" and "--temperature-gamma" in given:
        raise KdError(CWSM_GAMMA)


def _warn_teachers_of_other_labels(store, config: dict) -> None:
    """A warning where a teacher learned from labels the store has changed since (a clean, set, import
    or undo after its kd teach): the student learns its soft targets, which still follow the old labels,
    without a word (the stage's config told only by two digests side by side)."""
    stale = stale_teacher_runs(config)
    if len(stale) == 1:
        _warn(f"the teacher of run {stale[0]} learned from labels changed since "
              f"(kd labels clean, set, import or undo): its soft targets follow the old ones; "
              f"{_reteach_command(store, stale[0])} retrains it on the current labels")
    elif stale:  # (each its own command: the first one's alone, "retrains it", left the others stale)
        _warn(f"the teachers of runs {', '.join(stale)} learned from labels changed since "
              f"(kd labels clean, set, import or undo): their soft targets follow the old ones; "
              f"{' and '.join(_reteach_command(store, r) for r in stale)} retrain them on the current labels")


def _reteach_command(store, run: str) -> str:
    """The command that retrains a run's teacher as it was trained (``advice.reteach_command``)."""
    return reteach_command(run, store.find_stage(run, "teach").config)


def _teacher_stages(store, runs) -> list[dict]:
    """Which teach stage of each run the student learns from (its id, start, the labels it trained
    on), recorded with the stage: a teacher replaced later (--overwrite) is told from this one. A run
    without one is left to the stage, which fails with the reason."""
    out = []
    for r in runs:
        try:
            st = store.find_stage(r, "teach")
        except KdError:
            continue
        out.append({"run": r, "stage_id": st.id, "started_at": iso_utc(st.started_at), **digests(st.config or {})})
    return out


def _teacher_max_len(store, run: str, default: int, *, kind: str = "teach") -> int:
    """A teacher run's --max-len (``default`` when the run has no teacher yet: its stage says so); ``kind``
    pretrain: the pre-training's (kd teach --model pretrain:RUN reads as far as it did)."""
    try:
        return int(store.find_stage(resolve_run_id(run), kind).config.get("max_len") or default)
    except KdError:
        return default


def _teacher_kd_pretrained(store, run: str) -> bool:
    """Whether run ``run``'s teacher was fine-tuned from a kd-pretrained model, as its stage recorded it: a
    teacher an older kd fine-tuned from ``pretrain:RUN`` has no kd_trained_positions in its config.json."""
    try:
        cfg = store.find_stage(resolve_run_id(run), "teach").config or {}
    except KdError:
        return False
    return (str(cfg.get("model") or "").startswith("pretrain:") or cfg.get("kd_pretrained") is True
            or cfg.get("lr_default") == "kd-pretrained model")


def _teacher_runs_exist(store, runs) -> None:
    """A teacher run that is not in the store (a typo), or that has no succeeded teacher (none yet, one still
    running, one that failed), is refused before anything is written: no run holding one failed stage that
    says so (``find_stage``'s refusal, which names the run's stages and what makes a teacher)."""
    from kdstore.predictor import teachers_elsewhere

    for r in runs:
        if not store.run_exists(r):
            raise store.no_run(r, " to take a teacher from")
        try:
            store.find_stage(r, "teach")
        except KdError as exc:  # (as the stage refused it: naming the runs whose teachers its students learned from)
            raise teachers_elsewhere(store, r, exc, "`--teacher-run {}`") from None


def _warn_speed_chosen_on_learned_dev(store, teacher_run: str) -> None:
    """--max-loss of an early exit on a teacher that trained on dev (``kd report``'s ``trained_on_dev``
    condition): the speed is chosen on rows its layers and head learned, where exiting early loses less."""
    teacher = store.find_stage(teacher_run, "teach")
    if learned_dev(store, teacher.id, (teacher.config or {}).get("splits") or []):
        _warn(f"--max-loss chooses the serving speed on dev, which the teacher of run {teacher_run!r} trained on (--split dev): "
              "its layers and head learned those rows, where exiting early loses less than on new text, so the speed "
              "chosen may lose more than --max-loss on it; a teacher of --split train leaves dev to judge")


def _teacher_dev(store, teacher) -> tuple[dict, dict[str, float], str]:
    """``_learned_dev`` of a teacher stage, its figures read from the store."""
    figures: dict[str, dict] = {}
    for m in store.metrics(teacher.id):
        figures.setdefault(m.split, {})[m.name] = m.value
    return _learned_dev({"kind": "teach", "metrics": figures, "config": teacher.config or {}})


def _warn_weak_teachers(store, runs) -> None:
    """A teacher no better on dev than always answering its most frequent class (``kd teach`` warned of it
    once, when it ran): the soft targets it gives a student, the pool's only teacher, are near-uniform guesses."""
    for r in dict.fromkeys(resolve_run_id(r) for r in runs):
        if not _has_teacher(store, r):
            continue
        dev, support, on = _teacher_dev(store, store.find_stage(r, "teach"))
        weak = _learned_nothing(dev, support)  # (as kd teach judged it: a balanced teacher's macro-F1 above chance learned)
        if weak:
            name, share = weak
            _warn(f"the teacher of run {r!r} has learned next to nothing (dev accuracy {dev['accuracy']:.1%}{on}, "
                  f"{versus_majority(dev['accuracy'], share)} always answering {name!r}, {share:.1%}): the soft targets it "
                  f"gives the student are near-uniform guesses; train it better first (`kd report --run {r}` shows it)")


def _check_where_runs(store, where: str | None, *, by_name: bool = True) -> None:
    """A --where SQL that cannot run, refused before a stage (and a run) is on record; one comparing
    label_id with a class's name, warned (``label_id_note``). An empty one is the config's to refuse.
    ``by_name``: whether the command has --label NAME to advise (kd distill has none)."""
    if where and where.strip():
        store.samples(where=where, limit=0, by_name=by_name)
        note = label_id_note(where, store.class_names(), by_name=by_name)
        if note:
            _warn(note)


def _teachers_usable(store, runs, *, scored: bool = True, where: str | None = None, pool: bool = True) -> None:
    """The teachers' classes and their logits of the train samples, checked as the stage checks them
    but before it is recorded: a teacher of another class set, or one that has not scored train
    samples ingested after it ran (the fix: `kd teach --run A --logits-only`), leaves no failed stage
    (nor a new run holding one). A run without a teacher is left to the stage, which fails with the reason.
    ``pool``: whether an early exit may learn from the pool (not --no-unlabeled)."""
    from kdstore.distill import check_train_scored, check_teachers, no_unlabeled_refusal, none_selected, pool_where

    taught = [r for r in (resolve_run_id(r) for r in runs) if _has_teacher(store, r)]
    check_teachers(store, taught, store.class_names())
    if scored:  # (early exit learns from the teacher network itself: its stored logits are not needed)
        check_train_scored(store, list(dict.fromkeys(taught)), where)
    elif where and not len(store.samples(splits=["train"], labeled=True, where=where, limit=1)):
        selected = pool_where(where)  # (early exit learns from the pool alone too)
        if not len(store.samples(splits=["unlabeled"], where=selected, limit=1)):
            raise none_selected(store, where, pool=True)
        if not pool:  # (the pool's rows read whole only for this refusal's count; the stage reads them itself)
            raise no_unlabeled_refusal(where, len(store.samples(splits=["unlabeled"], where=selected)))


def _one_unknown_token(store, runs) -> None:
    """``--augment mask`` with teachers whose tokenizers' unknown tokens differ (or a tokenizer without one), refused as the stage
    refuses it but before it is recorded (it was a failed stage, of a new run when --run named one).
    A run without a teacher, or a tokenizer that cannot be read, is left to the stage, which says why."""
    from transformers import AutoTokenizer

    from kdstore.distill import _check_one_unknown_token
    from kdstore.teacher import model_dirs

    runs = [resolve_run_id(r) for r in runs]
    if not all(_has_teacher(store, r) for r in runs):  # (one teacher too: its tokenizer may have no unknown token)
        return
    stages = [store.find_stage(r, "teach") for r in runs]
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dirs(stages[0])[0])
        for stage in stages[1:]:
            model_dirs(stage)
    except (KdError, OSError, ValueError):  # (a model gone: the stage names it)
        return
    try:
        _check_one_unknown_token(tokenizer, runs, stages)
    except (OSError, ValueError):
        return


def _has_teacher(store, run: str) -> bool:
    try:
        store.find_stage(run, "teach")
    except KdError:
        return False
    return True


def _teacher_config(store, run: str):
    """The Hugging Face configuration of a teacher run's model, to refuse a student its model type
    cannot have before a stage is recorded; ``None`` when there is none to read (the stage says why)."""
    from transformers import AutoConfig

    from kdstore.teacher import model_dirs, quiet_transformers

    try:
        directory = model_dirs(store.find_stage(resolve_run_id(run), "teach"))[0]
        quiet_transformers()
        return AutoConfig.from_pretrained(directory)
    except (KdError, OSError, ValueError, KeyError):
        return None


def _teacher_tokenizer(store, run: str):
    """The tokenizer of a teacher run's (first) model, whose config ``_teacher_config`` read."""
    from transformers import AutoTokenizer

    from kdstore.teacher import model_dirs

    return AutoTokenizer.from_pretrained(model_dirs(store.find_stage(resolve_run_id(run), "teach"))[0])


def _embedding_width(teacher_config, embed_dim: int, *, note: str = "") -> int:
    """The student's --embed-dim with --init-embeddings teacher: the width of the teacher's table
    (its hidden size for BERT, less for ALBERT/ELECTRA) when none was given; one given that differs
    is refused before a stage is recorded (it failed inside the stage)."""
    width = getattr(teacher_config, "embedding_size", None) or getattr(teacher_config, "hidden_size", None)
    if not isinstance(width, int) or width < 1:
        return embed_dim  # not a width to go by: the stage compares the tables themselves
    source = click.get_current_context().get_parameter_source
    if source("embed_dim") in (ParameterSource.DEFAULT, None) or (
            source("embed_dim") == ParameterSource.DEFAULT_MAP and source("init_embeddings") == ParameterSource.COMMANDLINE):
        return width  # (a file's embed-dim, for students of their own table, is no use to a typed --init-embeddings teacher)
    if embed_dim != width:
        raise click.BadParameter(f"{embed_dim}: the teacher's token embeddings are {width} wide; leave --embed-dim out "
                                 f"with --init-embeddings teacher (it takes their width) or give {width}{note}", param_hint="--embed-dim")
    return embed_dim


def _options_given(names: tuple[str, ...]) -> list[str]:
    """Those of ``names`` given on the command line (a config file's defaults do not count)."""
    ctx = click.get_current_context()
    flags = {p.name: next((o for o in getattr(p, "opts", ()) if o.startswith("--")), None) for p in ctx.command.params}
    # (named as typed: the parameter `matches` is the option --match)
    return [flags.get(name) or f"--{name.replace('_', '-')}" for name in names if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE]


def _resolve_unlabeled(store, cfg):
    """``cfg`` with --unlabeled as it is used: without --unlabeled/--no-unlabeled, whether the store
    has an unlabeled pool now (the stage config recorded null, and `kd report` showed unlabeled=None)."""
    if cfg.unlabeled is not None:
        return cfg
    from kdstore.distill import pool_where

    # (of the pool rows its --where selects: one that selects none used none, recorded true and warned of as if typed)
    return replace(cfg, unlabeled=bool(len(store.samples(splits=["unlabeled"], where=pool_where(cfg.where), limit=1))))


def _distill_early_exit(run, teacher_runs, teacher_weights, augment, epochs, lr, batch_size, max_len, speed, max_loss, uncertainty,
                        temperature, unlabeled, where, branch_dim, pooling, dropout, patience, seed, device, stage_name, overwrite, db, as_json):
    """FastBERT: classifiers after every teacher layer, trained by self-distillation (backbone frozen)."""
    from kdstore.early_exit import EarlyExitConfig, check_layerwise, config_dict as early_exit_config, first_layer_speed_note, train_early_exit

    source = click.get_current_context().get_parameter_source

    def given(name: str) -> bool:
        return source(name) not in (ParameterSource.DEFAULT, None)

    # a config file's [distill] augment or teacher-weight is for the students, as its alpha or kernel-sizes
    # are (left alone here): only typed ones are a mistake
    if augment and source("augment") != ParameterSource.COMMANDLINE:
        augment = ""
    if teacher_weights and source("teacher_weights") != ParameterSource.COMMANDLINE:
        teacher_weights = ()
    teacher_runs = tuple(dict.fromkeys(teacher_runs))  # (one run named twice is one teacher)
    if len(teacher_runs) > 1 or augment or teacher_weights:
        # the option at fault first: a config file's teacher-run (several, for the students) is then named with the file
        head = "--teacher-run" if len(teacher_runs) > 1 else "--augment" if augment else "--teacher-weight"
        raise click.UsageError(f"{head}: --student early-exit extends one teacher: at most one --teacher-run, no --augment/--teacher-weight")
    if max_loss is not None and given("speed"):
        typed = {name for name in ("speed", "max_loss") if source(name) == ParameterSource.COMMANDLINE}
        if typed == {"speed"}:  # the command line wins over a config file's --max-loss
            max_loss = None
        elif typed != {"max_loss"}:  # and over its --speed: a default speed is not a second choice
            raise click.UsageError("--speed or --max-loss, not both: --max-loss chooses the serving speed on dev")
    cfg = EarlyExitConfig(
        epochs=epochs, lr=1e-3 if lr is None else lr, batch_size=batch_size,
        max_len=max_len if given("max_len") else None,  # None: the teacher's, so speed 0 is the teacher
        speed=speed, max_loss=max_loss, uncertainty=uncertainty, temperature=temperature if given("temperature") else 1.0,
        unlabeled=unlabeled, where=where, branch_dim=branch_dim, pooling=pooling, dropout=dropout if given("dropout") else 0.1,
        patience=patience, seed=seed, device=device,
    )
    cfg.validate()
    pick_device(cfg.device)  # --device cuda where there is none: refused before a stage is on record
    store = open_store(db, writer=True)
    if not overwrite:  # a rerun refused before the warnings about the store, as if it had begun
        check_stage_free(store, run=run, kind="distill", name="distill-early-exit" if stage_name is None else stage_name,
                         teachers=list(teacher_runs))
    _check_where_runs(store, cfg.where, by_name=False)  # (before the pool is read by it; distill has no --label)
    cfg = _resolve_unlabeled(store, cfg)
    _teacher_runs_exist(store, teacher_runs or (run,))
    if max_loss is not None and not len(store.samples(splits=["dev"], labeled=True, limit=1)):  # before a stage is recorded
        raise KdError("--max-loss chooses the serving speed on the dev split, and the store has no labeled dev samples")
    if _options_given(("patience",)) and not len(store.samples(splits=["dev"], labeled=True, limit=1)):
        _warn_patience_without_dev()
    _teachers_usable(store, teacher_runs or (run,), scored=False, where=cfg.where, pool=cfg.unlabeled is not False)
    _warn_weak_teachers(store, teacher_runs or (run,))
    if max_loss is not None:
        _warn_speed_chosen_on_learned_dev(store, (teacher_runs or (run,))[0])
    teacher_config = _teacher_config(store, (teacher_runs or (run,))[0])
    if teacher_config is not None:  # an ALBERT or DistilBERT teacher: refused before a stage is recorded
        check_layerwise(teacher_config.model_type)
        if getattr(teacher_config, "num_hidden_layers", 2) < 2:  # (as the stage says it, but before it is recorded)
            raise KdError("the teacher has a single layer: there is nothing to exit early from")
    if teacher_config is not None and cfg.max_len is not None:  # (a --max-len past its positions failed inside the stage)
        from kdstore.teacher import check_max_len, model_dirs

        check_max_len(teacher_config, cfg.max_len, model_dirs(store.find_stage(resolve_run_id((teacher_runs or (run,))[0]), "teach"))[0])
    if cfg.max_len is None:  # recorded as read: the teacher's --max-len (the stage reads the same one)
        cfg = replace(cfg, max_len=_teacher_max_len(store, (teacher_runs or (run,))[0], 128))
    elif cfg.max_len != (own := _teacher_max_len(store, (teacher_runs or (run,))[0], cfg.max_len)):
        # (typed, or a config file's [distill] max-len meant for the students): the full model it reads is no longer the teacher
        message = (f"--max-len {cfg.max_len} is not the teacher's {own}: the branches and the full model read {cfg.max_len} tokens, "
                   f"so speed 0 is not the teacher as kd teach measured it (its accuracy@0 and flops@0 are at {cfg.max_len} tokens); "
                   "leave --max-len out to extend the teacher as it is")
        _warn(message + file_note(click.get_current_context(), message))
    # (1 - max p is at most 1 - 1/C: on a binary task --speed 0.5 exited every text at the first layer, unsaid)
    note = first_layer_speed_note(cfg.speed, cfg.uncertainty, len(store.class_names())) if max_loss is None else None
    if note:
        _warn(note)
    name = "distill-early-exit" if stage_name is None else stage_name
    config = {**early_exit_config(cfg), "student": "early-exit", "teacher_runs": list(teacher_runs), "classes": store.class_names(), **labels_state(store),
              "teacher_stages": _teacher_stages(store, teacher_runs or (run,)), "environment": environment(device)}
    _warn_teachers_of_other_labels(store, config)
    if overwrite:
        _before_replacing(store, run, "distill", name)
    with stage_scope(store, run=run, kind="distill", name=name, config=config, overwrite=overwrite) as stage:
        train_early_exit(store, stage, cfg, teacher_run=teacher_runs[0] if teacher_runs else None)
    _finish(store, run, name, as_json)
