"""``kd distill``: train a small student from the teacher logits cached in the store plus gold labels.

Labeled train samples learn from ``alpha * soft + (1 - alpha) * hard`` (or ``--hard-weight`` in place of
``1 - alpha``); unlabeled samples (the pool)
learn from the teacher alone. The student reads the teacher's token ids, keeps its best epoch by dev
macro-F1, and its logits and predictions for every sample go back to the store.
"""

from __future__ import annotations

import io
import json
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .advice import reteach_command
from .batching import bucketed_batches, check_grad_accum, count_cut, encode_packed, micro_batches, pad
from .distributed import SINGLE, Dist
from .errors import KdError
from .labels import read_labeled, record_labels_state
from .losses import (
    CLASS_WEIGHTS, MAX_TEMPERATURE_GAMMA, SOFT_LOSSES, TEMPERATURE_SCHEDULES, attention_kl, balanced_class_weights, attention_mse, distillation_loss, fsp, hidden_cosine, hidden_mse,
    neuron_selectivity, patient_kd, probability_shift, query_key_relation_kl, relation_kl, temperature_refusal, temperature_weights,
    temperatures_from_weights,
)
from .matches import HIDDEN_KINDS, Match, check_matches, hidden_index
from .metrics import classification_metrics, mean_log_loss
from .outputs import OutOfFold, average_probs_as_logits, store_split_metrics, unscored, write_sharded_scores
from .predictor import STUDENT_CONFIG, STUDENT_WEIGHTS, student_logits, teachers_elsewhere
from .progress import progress
from .runs import StageHandle, check_unchanged
from .schema import Stage
from .store import SampleSet, Store, check_where, sources_hint
from .augment import METHODS, UNK, posseg
from .augmented import Recipe, ensure_augmented
from .schedules import LR_SCHEDULES, check_epochs, check_lr, lr_factor_step, over_steps
from .speed import measure, speed_texts
from .students import (
    LastLayerVectors,
    StudentConfig,
    build_student,
    init_embeddings,
    init_from_teacher,
    layer_map,
    mean_flops_per_sample,
    readable_positions,
    size_error,
    student_bert_config,
    table_rows,
)
from .folds import stratified_folds
from .teacher import check_learned_every_class, model_dirs, quiet_transformers, score_missing
from .torchutil import BestCheckpoint, StepLosses, adam_options, count_parameters, pick_device, saving_model, set_seed, stop_if_diverged, to_device


MAX_LOSS_WEIGHT = 1e6  # a loss weight past it (a key held down: 1e40 is float32's inf) diverged, said as "lower --lr"


def _too_heavy(option: str, weight: float) -> str:
    return f"{option} must be at most {MAX_LOSS_WEIGHT:g} (a loss weight; 1 to 500 is usual), got {weight:g}"


MAX_AUGMENT_N = 1000  # --augment-n: augmented variants per train text, at most

# the weights of the intermediate losses of a transformer student, as options
INTERMEDIATE_OPTIONS = ("--hidden-mse", "--hidden-cos", "--pkd", "--attention-kl", "--attention-mse", "--fsp", "--nst",
                        "--value-relation", "--qk-relation")
RELATION_OPTIONS = INTERMEDIATE_OPTIONS[-2:]  # MiniLM's: the last layers, not the layer map

# how several teachers' outputs become one target: a mixture of their answers, or TextBrewer's mean of logits
TEACHER_AVERAGES = ("probs", "logits")

# refusals of a typed option for another option's value: that one is named before the first colon, where a
# config file's value is looked for (`kd distill --temperature 4` of a file's soft-loss = "mse" named no file)
MSE_TEMPERATURE = ("--temperature and --temperature-end soften the kl and soft_ce losses, not --soft-loss mse: "
                   "--soft-loss mse reads raw logits")
CWSM_GAMMA = ("--temperature-gamma is flsw's exponent on (1 - cosine), and --temperature-schedule cwsm has none: "
              "leave it out, or use flsw")


@dataclass(frozen=True)
class DistillConfig:
    student: str = "textcnn"
    teacher_runs: tuple[str, ...] = ()  # empty: the distill stage's own run
    teacher_weights: tuple[float, ...] = ()  # one per teacher run; empty: equal weights
    teacher_average: str = "probs"  # several teachers: their probabilities averaged, or "logits" (TextBrewer's multi-teacher)
    alpha: float = 0.5
    alpha_end: float | None = None  # set: alpha moves linearly to this over training
    hard_weight: float | None = None  # set: the hard loss's own weight instead of 1 - alpha (TextBrewer's hard_label_weight)
    hard_weight_end: float | None = None  # set: the hard weight moves linearly to this over training
    temperature: float = 2.0
    temperature_end: float | None = None  # set: temperature moves linearly to this
    temperature_schedule: str = "constant"  # flsw | cwsm: per-sample temperatures around the scheduled one
    temperature_beta: float = 1.0
    temperature_gamma: float = 2.0
    probability_shift: bool = False  # labeled samples: swap the teacher's wrong top logit with the gold one
    class_weight: str = "none"  # or "balanced": each labeled row's hard loss weighted n / (C x n_class)
    soft_loss: str = "kl"
    init_embeddings: str = "random"  # or "teacher": copy the teacher's token embeddings
    unlabeled: bool | None = None  # None: use the pool when the store has one
    where: str | None = None  # SQL condition on the samples: the train and pool rows learned from (None: all)
    augment: tuple[str, ...] = ()  # e.g. ("mask", "pos", "ngram"): augmented train texts, soft targets only
    augment_n: int = 4
    p_mask: float = 0.1
    p_pos: float = 0.1
    p_ngram: float = 0.25
    epochs: int = 10
    lr: float | None = None  # None: 1e-3, or 1e-4 for a transformer student
    lr_schedule: str = "constant"  # or "linear": down to 0 at the last step (after any warmup)
    warmup: float = 0.0  # the fraction of the steps the learning rate rises over, from 0
    batch_size: int = 64
    grad_accum: int = 1  # K >= 2: each batch run as K pieces whose gradients add up (the same steps in less memory)
    max_len: int = 128
    patience: int = 3  # evaluations on dev without a gain before stopping: epochs, or --eval-every's spans
    eval_every: int = 0  # N >= 1: score dev every N training steps (and at the last), not at each epoch's end
    embed_dim: int = 128
    kernel_sizes: tuple[int, ...] = (2, 3, 4)
    num_filters: int = 128
    hidden: int = 128
    dropout: float = 0.3
    layers: int = 4  # transformer student
    folds: int = 0  # K >= 2: K students, each blind to one fold's train labels: out-of-fold votes for `kd labels detect`
    width: int = 0  # transformer student; 0: the teacher's hidden size
    init_from_teacher: bool | None = None  # transformer: copy evenly spaced teacher layers (None: when of the teacher's width)
    student_model: str = ""  # transformer: start from this pre-trained checkpoint (name or folder), its layers and width its own
    hidden_mse: float = 0.0  # weights of intermediate losses (transformer student)
    attention_kl: float = 0.0
    value_relation: float = 0.0
    qk_relation: float = 0.0  # MiniLM attention-distribution (query-key) transfer, last layer
    hidden_cos: float = 0.0  # 1 - cosine of hidden states on mapped layers (TextBrewer's cos)
    pkd: float = 0.0  # Patient KD: normalised [CLS] vectors of mapped layers
    attention_mse: float = 0.0  # squared error of head-averaged attention distributions on mapped layers
    fsp: float = 0.0  # FSP (Yim et al. 2017): the flow across each student layer vs the teacher stretch it stands for
    nst: float = 0.0  # neuron selectivity transfer: token-similarity matrices of mapped layers
    relation_heads: int = 0  # 0: the smaller of the two head counts
    layer_map: tuple[int, ...] = ()  # transformer: the teacher layer (0-based) each student layer copies and matches; (): evenly spaced
    matches: tuple[Match, ...] = ()  # transformer: intermediate losses one by one, their own layers and weights (`--match`)
    seed: int = 42
    device: str = "auto"

    def validate(self) -> None:
        for name, a in (("--alpha", self.alpha), ("--alpha-end", self.alpha_end)):
            if a is not None and self.hard_weight is None and not 0.0 <= a <= 1.0:
                raise KdError(f"{name} must be in [0, 1], got {a}" + (" (past 1 with --hard-weight, the hard loss's own weight, as "
                                                                     "TextBrewer's kd_loss_weight)" if a > 1 else ""))
            if a is not None and self.hard_weight is not None and not 0.0 <= a <= MAX_LOSS_WEIGHT:  # (untied: a loss weight)
                raise KdError(f"{name} must be non-negative, got {a}" if not a >= 0 else _too_heavy(name, a))
        for name, w in (("--hard-weight", self.hard_weight), ("--hard-weight-end", self.hard_weight_end)):
            if w is not None and w < 0:
                raise KdError(f"{name} must be non-negative, got {w}")
            if w is not None and w > MAX_LOSS_WEIGHT:
                raise KdError(_too_heavy(name, w))
        if self.hard_weight_end is not None and self.hard_weight is None:
            raise KdError("--hard-weight-end schedules --hard-weight: give its start with --hard-weight")
        if self.hard_weight is not None and not self.soft_weighed and not self.hard_weighed and not self.intermediate:
            raise KdError("--alpha 0 and --hard-weight 0 weigh every loss 0: the student would learn nothing; give either a "
                          "weight above 0 (or grow one with --alpha-end or --hard-weight-end)")
        if self.augment and self.hard_weight is not None and not self.soft_weighed and not self.intermediate:
            # (refused before the texts are made, stored and scored: the summary said so only once the student had trained)
            raise KdError("--augment with --alpha 0 and --hard-weight: the augmented texts learn from the teacher alone, whose loss "
                          "alpha then weighs 0 for every sample: they would teach nothing; grow alpha with --alpha-end, or leave --augment out")
        for name, t in (("--temperature", self.temperature), ("--temperature-end", self.temperature_end)):
            if refusal := temperature_refusal(name, t):  # (0 too: "must be positive" beside 0.05's "between 0.1 and 100")
                raise KdError(refusal)
        if self.teacher_weights and len(self.teacher_weights) != max(1, len(self.teacher_runs)):
            # (the runs named: a config file's teacher-run, never typed, is then named with the file)
            runs = f" (--teacher-run {', '.join(self.teacher_runs)})" if self.teacher_runs else ""
            raise KdError(f"{len(self.teacher_weights)} --teacher-weight values for {max(1, len(self.teacher_runs))} teacher run(s){runs}")
        if self.teacher_average not in TEACHER_AVERAGES:
            raise KdError(f"--teacher-average must be one of {', '.join(TEACHER_AVERAGES)}, got {self.teacher_average!r}")
        if any(not w > 0 for w in self.teacher_weights):  # (a NaN too)
            raise KdError("--teacher-weight values must be positive: a teacher of weight 0 would still decide which "
                          "samples are used (only those every teacher scored); leave that --teacher-run out instead")
        bad = [m for m in self.augment if m not in METHODS]
        if bad:
            raise KdError(f"--augment: unknown augmentation method(s) {', '.join(bad)}: choose from {', '.join(METHODS)}")
        if self.augment and self.augment_n < 1:
            raise KdError("--augment-n must be at least 1")
        if self.augment and self.augment_n > MAX_AUGMENT_N:  # (a typo of 10**20 ran its passes for ever, never writing a text)
            raise KdError(f"--augment-n must be at most {MAX_AUGMENT_N} (each parent gets up to 20 passes a variant, and "
                          f"every variant is a sample the teacher scores; Tang et al. made 20 per text), got {self.augment_n}")
        if self.augment:  # checked here, before a stage is started, not when the texts are made
            probs = {"mask": self.p_mask, "pos": self.p_pos, "ngram": self.p_ngram}
            for method, p in probs.items():
                if method in self.augment and not 0.0 <= p <= 1.0:  # (one of a method left out is not used: not judged)
                    raise KdError(f"--p-{method} must be a probability between 0 and 1, got {p}")
            if {"mask", "pos"} <= set(self.augment) and self.p_mask + self.p_pos > 1.0:
                raise KdError(f"--p-mask + --p-pos must be at most 1, got {self.p_mask} + {self.p_pos}")
            if all(probs[m] == 0.0 for m in self.augment):
                used = [m for m in METHODS if m in self.augment]
                raise KdError(f"--augment {','.join(used)} would change nothing: "
                              f"{', '.join(f'--p-{m}' for m in used)} {'is' if len(used) == 1 else 'all'} 0")
            posseg()  # every recipe segments with jieba: a missing one is said before a stage is recorded
        if self.init_embeddings not in ("random", "teacher"):
            raise KdError("--init-embeddings must be random or teacher")
        # checked here, before a stage (and a run) is on record, not when the student is built
        if self.layer_map and self.student != "transformer":
            raise KdError(f"--layer-map maps a transformer student's layers onto the teacher's, not --student {self.student}'s: "
                          "add --student transformer, or leave it out")
        if self.layer_map and len(self.layer_map) != self.layers and not self.student_model:  # (its depth: check_student_shape)
            raise KdError(f"--layer-map names {len(self.layer_map)} teacher layers for a student of {self.layers} (--layers): one each")
        if self.init_embeddings == "teacher" and self.student == "transformer":
            raise KdError("--init-embeddings teacher is for textcnn/bigru/bilstm, not --student transformer: a transformer uses --init-from-teacher")
        bad = size_error(self.student, embed_dim=self.embed_dim, hidden=self.hidden, num_filters=self.num_filters,
                         layers=self.layers, kernel_sizes=self.kernel_sizes, dropout=self.dropout)
        if bad:
            raise KdError(bad)
        if self.soft_loss not in SOFT_LOSSES:
            raise KdError(f"--soft-loss must be one of {', '.join(SOFT_LOSSES)}")
        if self.temperature_schedule not in TEMPERATURE_SCHEDULES:
            raise KdError(f"--temperature-schedule must be one of {', '.join(TEMPERATURE_SCHEDULES)}")
        if self.temperature_schedule != "constant" and self.soft_loss == "mse":
            raise KdError(f"--temperature-schedule {self.temperature_schedule} needs a softened loss (--soft-loss kl or soft_ce): mse reads raw logits")
        if self.temperature_beta < 0 or self.temperature_gamma <= 0:
            raise KdError("--temperature-beta must be >= 0 and --temperature-gamma > 0")
        if self.temperature_schedule == "constant" and (self.temperature_beta, self.temperature_gamma) != (1.0, 2.0):
            raise KdError("--temperature-beta and --temperature-gamma shape a per-sample temperature: add --temperature-schedule flsw or cwsm")
        if self.temperature_schedule == "cwsm" and self.temperature_gamma != 2.0:
            raise KdError(CWSM_GAMMA)
        if self.temperature_schedule != "constant" and self.temperature_beta == 0:  # (it trained as a constant one, without a word)
            raise KdError(f"--temperature-beta 0 gives every sample the base --temperature: --temperature-schedule {self.temperature_schedule} "
                          "would change nothing; leave the schedule out for a constant temperature, or give a beta above 0")
        if self.temperature_gamma > MAX_TEMPERATURE_GAMMA:  # (1 - cosine) reaches 2: 2 ** 200 was inf, the temperatures NaN
            raise KdError(f"--temperature-gamma must be at most {MAX_TEMPERATURE_GAMMA:g}, got {self.temperature_gamma:g}: flsw's weights "
                          "(1 - cosine) ** gamma reach 2 ** gamma, which float32 cannot hold past 2 ** 128 (the default is 2)")
        if self.folds == 1 or self.folds < 0:
            raise KdError(f"--folds must be 0 (off) or at least 2, got {self.folds}")
        # one option a message, so that a config file's value is named only when it is the one at fault
        for option, value in (("--epochs", self.epochs), ("--batch-size", self.batch_size), ("--max-len", self.max_len), ("--patience", self.patience)):
            if value < 1:
                raise KdError(f"{option} must be at least 1, got {value}")
        check_epochs(self.epochs)
        check_grad_accum(self.grad_accum, self.batch_size)
        if self.grad_accum > 1 and self.temperature_schedule != "constant":
            raise KdError(f"--grad-accum with --temperature-schedule {self.temperature_schedule}: its temperatures are set against the "
                          "whole batch's mean weight, which a piece of it does not see: leave one of them out")
        if self.eval_every < 0:
            raise KdError(f"--eval-every must be a number of training steps (0: at each epoch's end), got {self.eval_every}")
        if self.lr is not None:
            check_lr(self.lr)
        if self.student_model and self.student != "transformer":
            raise KdError(f"--student-model starts a transformer student from a checkpoint, not --student {self.student}")
        if self.student_model and self.init_from_teacher:
            raise KdError("--student-model and --init-from-teacher each give the student its starting layers: choose one")
        if self.lr_schedule not in LR_SCHEDULES:
            raise KdError(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if not 0.0 <= self.warmup < 1.0:
            raise KdError(f"--warmup must be in [0, 1) (a fraction of the training steps), got {self.warmup:g}")
        if self.class_weight not in CLASS_WEIGHTS:
            raise KdError(f"--class-weight must be one of {', '.join(CLASS_WEIGHTS)}, got {self.class_weight!r}")
        check_where(self.where, every="learn from every train and pool row", rereads="a rerun, or each process under torchrun, reads it again")
        if self.student == "transformer" and self.max_len < 2:  # the tokenizer would not truncate at all
            raise KdError(f"--student transformer needs --max-len of at least 2 (its special tokens), got {self.max_len}")
        if self.soft_loss == "mse" and (self.temperature != 2.0 or self.temperature_end is not None):
            raise KdError(MSE_TEMPERATURE)
        if self.width < 0 or self.relation_heads < 0:
            raise KdError(f"--width and --relation-heads must be positive (0: the default), got {self.width} and {self.relation_heads}")
        if self.intermediate and self.student != "transformer":
            used = [o for o, w in zip(INTERMEDIATE_OPTIONS, self._intermediate_weights) if w] + (["--match"] if self.matches else [])
            raise KdError(f"intermediate losses ({', '.join(used)}) need --student transformer")  # (the ones given: all ten read as a list to choose from)
        for option, weight in zip(INTERMEDIATE_OPTIONS, self._intermediate_weights):  # (a file's value is then named too)
            if weight < 0:
                raise KdError(f"{option} must be non-negative (a loss weight), got {weight:g}")
            if weight > MAX_LOSS_WEIGHT:
                raise KdError(_too_heavy(option, weight))
        for m in self.matches:  # (an intermediate loss's weight too: README's "at most 10^6")
            if m.weight > MAX_LOSS_WEIGHT:
                raise KdError(_too_heavy(f"--match {m.spelled}: the weight", m.weight))

    @property
    def soft_weighed(self) -> bool:
        """Whether the labeled samples' soft loss weighs above 0 at some step (``alpha`` or ``alpha_end``)."""
        return max(self.alpha, self.alpha if self.alpha_end is None else self.alpha_end) > 0

    @property
    def hard_weighed(self) -> bool:
        """Whether the hard (gold label) loss weighs above 0 at some step: ``--hard-weight`` or its end,
        else ``1 - alpha`` or ``1 - alpha_end``."""
        if self.hard_weight is not None:
            return max(self.hard_weight, self.hard_weight if self.hard_weight_end is None else self.hard_weight_end) > 0
        return min(self.alpha, self.alpha if self.alpha_end is None else self.alpha_end) < 1

    @property
    def _intermediate_weights(self) -> tuple[float, ...]:
        return tuple(getattr(self, o[2:].replace("-", "_")) for o in INTERMEDIATE_OPTIONS)

    @property
    def mapped_losses(self) -> bool:
        """Whether an intermediate loss is weighed on the layer map (``--hidden-mse`` and the like; not
        MiniLM's relations, which read the last layers whatever the map)."""
        return max(self._intermediate_weights[:-len(RELATION_OPTIONS)]) > 0

    @property
    def intermediate(self) -> bool:
        """Whether the student is matched to the teacher's internals: on the layer map, by MiniLM's last-layer
        relations or by ``--match``."""
        return max(self._intermediate_weights) > 0 or bool(self.matches)

    @property
    def matches_attentions(self) -> bool:
        return bool(self.attention_kl or self.attention_mse or any(m.kind.startswith("attention") for m in self.matches))

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (1e-4 if self.student == "transformer" else 1e-3)


@dataclass
class TeacherLogits:
    stages: list[Stage]
    runs: list[str]
    scored: list[set[int]]  # per teacher run: the samples it has logits for
    ids: np.ndarray
    logits: np.ndarray
    by_id: dict[int, int] = field(default_factory=dict)

    def rows(self, sample_ids: np.ndarray) -> np.ndarray:
        return self.logits[[self.by_id[int(i)] for i in sample_ids]]


def check_teacher(store: Store, run: str, names: list[str]) -> Stage:
    """The teach stage of ``run`` (``teach_stage``), refused when its classes are not the store's."""
    return _checked(teach_stage(store, run), run, names)


def _checked(stage: Stage, run: str, names: list[str]) -> Stage:
    teacher_classes = stage.config.get("classes")
    if teacher_classes is not None and list(teacher_classes) != list(names):
        raise KdError(
            f"teacher of run {run!r} was trained on classes {teacher_classes}, the store now has "
            f"{names}: retrain it with {reteach_command(run, stage.config)}"
        )
    check_learned_every_class(stage, names, run=run, purpose="distillation")
    return stage


def teach_stage(store: Store, run: str) -> Stage:
    """The teach stage of ``run``; where it has none but its students learned from other runs' teachers
    (``--teacher-run A``), the refusal names those runs, not only `kd teach` in this one."""
    try:
        return store.find_stage(run, "teach")
    except KdError as exc:
        raise teachers_elsewhere(store, run, exc, "`--teacher-run {}`") from None


def check_teachers(store: Store, runs: list[str], names: list[str]) -> list[Stage]:
    """``check_teacher`` of each of ``runs``; several whose classes are not the store's are refused
    together, each with the command that retrains it (one at a time, the second was refused only once
    the first had been retrained: minutes of a teacher each)."""
    stages = {run: teach_stage(store, run) for run in dict.fromkeys(runs)}
    stale = [(run, stage, stage.config["classes"]) for run, stage in stages.items()
             if stage.config.get("classes") is not None and list(stage.config["classes"]) != list(names)]
    if len(stale) > 1:
        trained = "; ".join(f"{run}: {classes}" for run, _, classes in stale)
        raise KdError(f"teachers of runs {', '.join(repr(run) for run, _, _ in stale)} were trained on other classes than the "
                      f"store's {names} ({trained}): retrain them with "
                      + " and ".join(reteach_command(run, stage.config) for run, stage, _ in stale))
    return [_checked(stages[run], run, names) for run in runs]


def load_teachers(store: Store, runs: list[str], names: list[str], weights: tuple[float, ...] = (), *, average: str = "probs") -> TeacherLogits:
    """The logits of the teach stage of ``runs`` (several: their weighted-average probabilities as logits, or with
    ``average="logits"`` their weighted-average logits), checked against the store's classes."""
    stages, found = [], []
    for run in runs:
        stage = check_teacher(store, run, names)
        ids, logits = store.read_logits(stage.id)
        if len(ids) == 0:
            raise KdError(f"teacher of run {run!r} has no logits in the store: re-run `kd teach`")
        if logits.shape[1] != len(names):
            raise KdError(f"teacher of run {run!r} has {logits.shape[1]} outputs, the store has {len(names)} classes")
        stages.append(stage)
        found.append((ids, logits))
    ids, avg = weighted_common_logits(found, weights, average=average)
    return TeacherLogits(stages=stages, runs=list(runs), scored=[set(i.tolist()) for i, _ in found], ids=ids, logits=avg, by_id={int(i): k for k, i in enumerate(ids)})


def weighted_common_logits(found: list[tuple[np.ndarray, np.ndarray]], weights: tuple[float, ...] = (), *,
                           average: str = "probs") -> tuple[np.ndarray, np.ndarray]:
    """``(ids, logits)``: the samples every teacher scored (ids ascending) and, for them, one teacher's
    own logits, or several teachers' probabilities averaged with ``weights`` (normalized; equal when
    empty), as log-probabilities (README: "their probabilities averaged with those weights"; an
    average of logits lets the most confident teacher outvote the others); ``average="logits"``: their
    logits so averaged (TextBrewer's multi-teacher target; a teacher's logits shifted by a constant a
    sample, as a --folds teacher's log-probabilities are, shift the mean alike: its softmax is the same). ``found``: each teacher's
    ``(sample ids, logits)``, one row per sample. Whole arrays at once: one numpy call a sample took
    seconds for a 200k-text pool."""
    common = found[0][0]
    for ids, _ in found[1:]:
        common = np.intersect1d(common, ids)
    common = np.unique(np.asarray(common, dtype=np.int64))
    w = np.asarray(weights or [1.0] * len(found), dtype=np.float64)
    w = w / w.max()  # first: weights whose sum overflows (1e308 twice) normalized to 0/0 (a ZeroDivisionError traceback)
    w = w / w.sum()
    if len(common) == 0:
        return common, np.zeros((0, found[0][1].shape[1]), np.float32)
    rows = []
    for ids, logits in found:
        order = np.argsort(ids, kind="stable")
        rows.append(np.asarray(logits)[order[np.searchsorted(ids, common, sorter=order)]])
    if len(rows) == 1:
        return common, rows[0].astype(np.float32)
    if average == "logits":
        return common, np.average(np.stack(rows).astype(np.float64), axis=0, weights=w).astype(np.float32)
    return common, average_probs_as_logits(rows, weights=w)


def check_train_scored(store: Store, runs: list[str], where: str | None = None) -> None:
    """Refuse, naming the fix, when a teacher has no logits for some labeled train sample (of those
    ``where`` selects)."""
    train = store.samples(splits=["train"], labeled=True, where=where).ids
    if where and not len(train):
        raise none_selected(store, where)
    lacking = {r: len(unscored(store, store.find_stage(r, "teach").id, train)) for r in runs}
    lacking = {r: n for r, n in lacking.items() if n}
    for r, n in lacking.items():
        if n == len(train):  # not one: no teacher of this store's samples to speak of
            raise KdError(f"teacher of run {r!r} has no logits in the store for its train samples: re-run `kd teach`")
    if lacking:
        fix = " and ".join(f"`kd teach --run {r} --logits-only`" for r in lacking)
        n = max(lacking.values())
        raise KdError(f"{n} train sample{' has' if n == 1 else 's have'} no teacher logits (ingested after the teacher ran?): run {fix} first")


def pool_where(where: str | None) -> str:
    """The SQL condition of the unlabeled pool rows a ``--where`` selects (the pool: texts no recipe made)."""
    return "parent_id IS NULL" + (f" AND ({where})" if where else "")


def none_selected(store: Store, where: str, *, pool: bool = False) -> KdError:
    """The error for a ``--where`` that selects no labeled train sample (the sources it could compare with);
    ``pool``: nor any pool text (early exit, which learns from either)."""
    rows = "train or pool samples" if pool else "labeled train samples"
    return KdError(f"no {rows} match --where {where!r}: loosen it{sources_hint(store, where, ['train'])}")


def no_unlabeled_refusal(where: str | None, left_out: int) -> KdError:
    """Early exit's error where no labeled train row is selected and ``--no-unlabeled`` leaves out the ``left_out``
    pool texts it would learn from (not "no pool samples match": some do)."""
    return KdError(f"no labeled train samples{' match --where ' + repr(where) if where else ''}, and --no-unlabeled leaves out "
                   f"the {left_out} pool texts{' it selects' if where else ''}: an early exit learns from either")


def training_set(
    store: Store, teachers: TeacherLogits, *, use_pool: bool | None, augmented: str | None = None, need_logits: bool = True,
    where: str | None = None,
) -> tuple[SampleSet, dict[str, int]]:
    """Labeled train samples, plus the unlabeled pool and augmented samples if asked, with teacher logits.

    Returns the joined set and how many samples each part contributed (and how many pool samples
    were left out for want of teacher logits). ``need_logits=False`` (early exit: its targets come
    from the teacher network, not from the stored logits) takes every sample, scored or not.
    ``where`` (``--where``) selects the train and pool samples; augmented texts go with their parents.
    """
    train = store.samples(splits=["train"], labeled=True, where=where)
    if len(train) == 0 and need_logits:  # (early exit needs no label: the pool alone will do, checked below)
        raise none_selected(store, where) if where else KdError("no labeled train samples in the store")
    missing = [int(i) for i in train.ids if need_logits and int(i) not in teachers.by_id]
    if missing:
        lacking = [r for r, seen in zip(teachers.runs, teachers.scored) if not seen.issuperset(missing)]
        fix = " and ".join(f"`kd teach --run {r} --logits-only`" for r in lacking)
        raise KdError(f"{len(missing)} train sample{' has' if len(missing) == 1 else 's have'} no teacher logits "
                      f"(ingested after the teacher ran?): run {fix} first")
    pool = store.samples(splits=["unlabeled"], where=pool_where(where))
    if use_pool is None:
        use_pool = len(pool) > 0
    aug = store.samples(splits=["unlabeled"], augmented=augmented) if augmented else pool.subset(np.zeros(len(pool), bool))
    if len(aug):  # the texts of a train sample dropped by `kd labels clean` go with it
        parents = store.parents()
        parent = np.array([parents.get(int(i), -1) for i in aug.ids], dtype=np.int64)  # -1: a pool text the recipe made too
        # (-1: a pool text the recipe made too, of no one parent: with --where, kept where it selects it)
        aug = aug.subset(((parent == -1) & (not where or np.isin(aug.ids, pool.ids))) | np.isin(parent, train.ids))
    left_out = 0 if use_pool else len(pool)
    if not use_pool:
        pool = pool.subset(np.zeros(len(pool), bool))
    if len(train) == 0 and len(pool) == 0:  # early exit: FastBERT's self-distillation learns from unlabeled texts alone
        if left_out:
            raise no_unlabeled_refusal(where, left_out)
        raise none_selected(store, where, pool=True) if where else KdError("no train or pool samples in the store")
    aug = aug.subset(~np.isin(aug.ids, pool.ids))  # a recipe's text that is also a pool text is used once
    scored = [np.array([not need_logits or int(i) in teachers.by_id for i in p.ids], dtype=bool) for p in (pool, aug)]
    parts = [train] + [p.subset(keep) for p, keep in zip((pool, aug), scored)]
    joined = SampleSet(
        ids=np.concatenate([p.ids for p in parts]),
        texts=[t for p in parts for t in p.texts],
        labels=np.concatenate([train.labels] + [np.full(len(p), -1, dtype=np.int64) for p in parts[1:]]),
        splits=[s for p in parts for s in p.splits],
    )
    counts = {"labeled": len(parts[0]), "pool": len(parts[1]), "augmented": len(parts[2])}
    counts["pool_without_logits"] = int((~scored[0]).sum())  # skipped: `kd teach --logits-only` scores them
    return joined, counts


def distill(store: Store, stage: StageHandle, cfg: DistillConfig, dist: Dist = SINGLE) -> Path | None:
    """Train the student, keep its best epoch, save it, and store its outputs for every sample.

    Under torchrun every rank reads the teacher logits, trains the student on its share of each
    global batch (DDP) and scores its shard of the samples; rank 0 alone stores augmented texts,
    saves the student and records figures. Returns the student directory (``None`` on other ranks).
    """
    from transformers import AutoTokenizer

    cfg.validate()
    rng = set_seed(cfg.seed)
    device = pick_device(cfg.device)
    add_metrics = dist.on_main(store.add_metrics)

    # 1. the teachers and the student's shape (every fold's too), checked before anything is written
    names = store.class_names()
    teacher_runs = list(cfg.teacher_runs) or [stage.run]
    checked = check_teachers(store, teacher_runs, names)
    first = checked[0]
    tokenizer = AutoTokenizer.from_pretrained(model_dirs(first)[0])
    if "mask" in cfg.augment:
        _check_one_unknown_token(tokenizer, teacher_runs, checked)
    check_student_vocabulary(cfg, tokenizer)
    embeddings = teacher_embeddings(first) if cfg.init_embeddings == "teacher" else None
    scfg = StudentConfig(
        # the teacher's table may have more rows than the tokenizer has tokens (padded vocabularies)
        kind=cfg.student, vocab_size=table_rows(tokenizer) if embeddings is None else max(table_rows(tokenizer), embeddings.shape[0]),
        num_classes=len(names), pad_id=tokenizer.pad_token_id,
        embed_dim=cfg.embed_dim, kernel_sizes=tuple(cfg.kernel_sizes), num_filters=cfg.num_filters,
        hidden=cfg.hidden, dropout=cfg.dropout, layers=cfg.layers,
        bert=_student_bert(first, cfg, len(names)) if cfg.student == "transformer" else None,
    )
    if scfg.bert is not None:  # (a --student-model's own depth)
        scfg = replace(scfg, layers=scfg.bert["num_hidden_layers"])
    start_weights, started = _student_model_weights(cfg, names) if cfg.student_model else (None, {})  # (once: every fold starts from them)
    scfg.validate(max_len=cfg.max_len)
    copy_layers = cfg.student == "transformer" and _copies_layers(cfg, scfg, first)
    teacher_net = _teacher_network(first) if cfg.student == "transformer" and (cfg.intermediate or copy_layers) else None
    if embeddings is not None:  # the table's shape, and a student that has one (a throw-away copy)
        init_embeddings(build_student(scfg), embeddings)
    if teacher_net is not None and cfg.intermediate:
        relation_heads(cfg, (scfg.bert["hidden_size"], scfg.bert["num_attention_heads"]),
                       (teacher_net.config.hidden_size, teacher_net.config.num_attention_heads))

    # 2. teacher logits and data (every train sample scored by every teacher: checked before --augment writes)
    check_train_scored(store, teacher_runs, cfg.where)
    augmented = None
    if cfg.augment:
        recipe = Recipe(methods=cfg.augment, n=cfg.augment_n, seed=cfg.seed, p_mask=cfg.p_mask, p_pos=cfg.p_pos,
                        p_ngram=cfg.p_ngram, unk=tokenizer.unk_token or UNK)
        augmented, added = dist.broadcast_object(ensure_augmented(store, recipe) if dist.is_main else None, patient=True)
        add_metrics(stage.id, "all", {"augmented_added": added})
        made = dist.broadcast_object(store.samples(splits=["unlabeled"], augmented=augmented).ids if dist.is_main else None)
        for run in teacher_runs:  # the teachers score the recipe's texts once; later runs reuse the logits
            score_missing(store, run, device=cfg.device, dist=dist, among=made)
    teachers = load_teachers(store, teacher_runs, names, cfg.teacher_weights, average=cfg.teacher_average)
    # the labels learned from, as they are when read, and the samples it scores, read with them: one ingested
    # while it trains (another process's kd ingest) is not scored, nor counted in the figures of the rows it learned from
    (data, parts, dev, everything), labels = read_labeled(store, lambda: (
        *training_set(store, teachers, use_pool=cfg.unlabeled, augmented=augmented, where=cfg.where), store.samples(splits=["dev"], labeled=True),
        store.samples(include_dropped=True)))
    # the dev rows of a class no labeled train row holds (its samples all dropped or relabeled away) judge no epoch, as
    # a teacher's do not (teacher.training_rows): their loss only grows as the others are learned, and epoch 1 was kept
    dev = dev.subset(np.isin(dev.labels, np.unique(data.labels[data.labels >= 0])))
    dist.agree("training rows", data, dev)
    dist.agree("samples to score", everything)
    dist.on_main(record_labels_state)(store, stage.id, {**labels, **started})
    new = lambda: _new_student(scfg, embeddings, teacher_net if copy_layers else None, cfg.layer_map, start_weights)  # noqa: E731
    fit = lambda built, rows, tag: _fit(add_metrics, stage, cfg, built, tokenizer, names, rows, dev, teachers,  # noqa: E731
                                        teacher_net if cfg.intermediate else None, device, rng, dist, tag=tag)

    # 3. train one student, or one per fold, and score this rank's shard of what each is responsible for
    if not cfg.folds:
        built = new()
        if not cfg.intermediate:
            teacher_net = None  # copied from (--init-from-teacher) and no longer needed: not held while training
        model, fitted = fit(built, data, "")
        models, fold_fits = [model], [fitted]
        del data  # the training texts' token ids went with it; scoring every sample needs the memory
        out_dir = stage.artifact_dir / "student" if dist.is_main else None
        if out_dir is not None:
            save_student(out_dir, model, scfg, tokenizer, max_len=cfg.max_len, class_names=names)
        mine = everything.subset(dist.shard(len(everything)))
        ids, logits = mine.ids, student_logits(model, tokenizer, mine.texts, max_len=cfg.max_len, device=device, label=dist.share_label("logits"))
    else:
        n_labeled = parts["labeled"]
        folds = stratified_folds(data.labels[:n_labeled], cfg.folds, seed=cfg.seed, class_names=names)
        row_fold = _row_folds(store, data, n_labeled, folds)
        out_dir = stage.artifact_dir if dist.is_main else None
        oof = OutOfFold(everything, data.subset(np.arange(len(data)) < n_labeled), folds, dist)
        models, fold_fits = [], []
        for k in range(cfg.folds):
            model, fitted = fit(new(), data.subset(row_fold != k), f"fold{k}/")
            fold_fits.append(fitted)
            if dist.is_main:
                save_student(out_dir / f"fold-{k}", model, scfg, tokenizer, max_len=cfg.max_len, class_names=names)
            oof.add(student_logits(model, tokenizer, oof.texts(k), max_len=cfg.max_len, device=device, label=dist.share_label(f"fold {k} logits")))
            models.append(model.to(torch.device("cpu")))
        ids, logits = oof.result()
        if dist.is_main:
            store.write_folds(stage.id, data.ids[:n_labeled], folds)
        del data
    new = fit = teacher_net = None  # the teacher network, if one was loaded, is not needed to score or measure

    # 4. each rank stores its logits and predictions; rank 0 checks that every sample has them,
    #    records the model and the figures
    logits = write_sharded_scores(store, stage.id, dist, everything, ids, logits, model="student")
    if not dist.is_main:
        return None
    stage.record_artifact(out_dir)
    store_split_metrics(store, stage.id, everything, logits, names)
    cpu = torch.device("cpu")
    for m in models:
        m.to(cpu)
    timed = speed_texts(everything)
    store.add_metrics(stage.id, "all", measure(  # what kd predict serves: the one student, or the folds' ensemble
        lambda texts, bs: _ensemble_logits(models, tokenizer, texts, max_len=cfg.max_len, device=cpu, batch_size=bs),
        timed,
    ))
    # FLOPs over the texts the latency is timed on (test, else dev): over the training rows, pool and
    # augmented texts (shorter: n-gram spans) made the same student cost less with --augment
    timed_lengths = encode_packed(tokenizer, timed, max_len=cfg.max_len, special_tokens=models[0].special_tokens).lengths
    timed_tokens = float(np.mean(timed_lengths)) if len(timed_lengths) else 0.0
    first = fold_fits[0]
    store.add_metrics(
        stage.id,
        "all",
        {
            **({"best_epoch": first["best_epoch"], "train_seconds": first["train_seconds"]} if not cfg.folds else
               {"train_seconds": sum(f["train_seconds"] for f in fold_fits), "folds": cfg.folds,
                # the epoch each fold kept (as `kd teach --folds` records its own): early stopping is per fold
                **{f"fold{k}/best_epoch": f["best_epoch"] for k, f in enumerate(fold_fits)}}),
            # --eval-every: the step kept (its epoch above), and the steps an epoch has (the history's x is a step)
            **{f"{'' if not cfg.folds else f'fold{k}/'}{key}": f[key] for k, f in enumerate(fold_fits)
               for key in ("best_step", "steps_per_epoch") if key in f},  # (each fold's rows its own: its own steps)
            # of what is served, as the size and latency: the one student, or the K folds' ensemble
            "parameters": sum(count_parameters(m) for m in models),
            "flops_per_sample": mean_flops_per_sample(scfg, timed_lengths) * len(models),  # each timed text's, averaged
            "mean_tokens": timed_tokens,
            **{f"teacher_layer[{i}]": j for i, j in enumerate(first.get("teacher_layers", []))},
            **{f"{'' if not cfg.folds else f'fold{k}/'}diverged_epoch": f["diverged_epoch"]
               for k, f in enumerate(fold_fits) if "diverged_epoch" in f},
            "train_samples": parts["labeled"],
            "pool_samples": parts["pool"],
            "augmented_samples": parts["augmented"],
            "pool_without_logits": parts["pool_without_logits"],
            **({"processes": dist.world} if dist.active else {}),
        },
    )
    return out_dir


def _row_folds(store: Store, data: SampleSet, n_labeled: int, folds: np.ndarray) -> np.ndarray:
    """The fold each training row belongs to: a labeled train sample's own, an augmented text's
    parent's (it carries its parent's content), -1 for the unlabeled pool (in every fold's training)."""
    fold_of = {int(i): int(f) for i, f in zip(data.ids[:n_labeled], folds)}
    parents = store.parents()
    out = np.full(len(data), -1, dtype=np.int64)
    out[:n_labeled] = folds
    for r in range(n_labeled, len(data)):
        parent = parents.get(int(data.ids[r]))
        if parent is not None:
            out[r] = fold_of.get(parent, -1)
    return out


def _ensemble_logits(models: list, tokenizer, texts: list[str], *, max_len: int, device, batch_size: int) -> np.ndarray:
    """One student's logits, or the folds' average probability as logits (as ``kd predict`` serves them)."""
    parts = [student_logits(m, tokenizer, texts, max_len=max_len, device=device, batch_size=batch_size, bar=False) for m in models]  # (timing runs: no bar)
    return parts[0] if len(parts) == 1 else average_probs_as_logits(parts)


def _new_student(scfg: StudentConfig, embeddings, copy_from, mapping: tuple[int, ...] = (), weights: dict | None = None) -> tuple[torch.nn.Module, dict]:
    """A fresh student, with the teacher's token embeddings, or the layers of the teacher network
    ``copy_from``, copied in; ``{"teacher_layers": ...}`` says which layers. ``weights``: a
    ``--student-model`` checkpoint's (``_student_model_weights``), loaded whole."""
    model = build_student(scfg)
    if weights is not None:
        model.net.load_state_dict(weights)
    fitted: dict = {}
    if embeddings is not None:
        init_embeddings(model, embeddings)
    if copy_from is not None:
        fitted["teacher_layers"] = init_from_teacher(model, copy_from, mapping)
    return model, fitted


def _student_model_weights(cfg: DistillConfig, names: list[str]) -> tuple[dict, dict]:
    """The state of a ``--student-model`` checkpoint as a classifier of ``names`` (its head new where
    it had none or another), loaded as ``kd teach --model`` loads one, and which checkpoint it was, for
    the stage's config as `kd teach` records its own (``student_model_path``: a folder's absolute path,
    with ``student_model_sha256``; a hub name, with ``student_model_revision``)."""
    from .teacher import load_classifier, started_from

    _, net = load_classifier(cfg.student_model, names)
    source = started_from(_student_model_path(cfg.student_model), net.config)
    return ({k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
            {f"student_{k}": v for k, v in source.items()})


def check_student_shape(cfg: DistillConfig, teacher_config, num_classes: int) -> None:
    """The student's shape checked as the stage checks it, from the teacher's configuration alone
    (``None``: none to read, the stage says why) and ``cfg.max_len`` as it will run: a kernel wider
    than --max-len, a transformer width its heads do not divide, --init-from-teacher with another
    width, --relation-heads that do not divide a width, or --max-len past the teacher's positions is
    refused before a stage is recorded (each failed inside the stage). Of several teachers, a refusal that
    speaks of "the teacher" names the first --teacher-run (``first_teacher_note``)."""
    try:
        _check_student_shape(cfg, teacher_config, num_classes)
    except KdError as e:
        if "teacher" not in str(e) or not first_teacher_note(cfg):
            raise
        raise KdError(f"{e}{first_teacher_note(cfg)}") from None


def first_teacher_note(cfg: DistillConfig) -> str:
    """Of several --teacher-run, the words that say "the teacher" of a refusal is the first one, whose tokenizer,
    token embeddings and layers the student takes (README); "" for one teacher."""
    if len(set(cfg.teacher_runs)) < 2:
        return ""
    return (f" (the teacher of run {cfg.teacher_runs[0]!r}, the first --teacher-run: a student's tokenizer, "
            "embeddings and layers are its alone)")


def _check_student_shape(cfg: DistillConfig, teacher_config, num_classes: int) -> None:
    bert = None
    if cfg.student == "transformer" and teacher_config is not None:
        bert = student_shape(teacher_config, cfg, num_classes)
    student = StudentConfig(
        kind=cfg.student, vocab_size=getattr(teacher_config, "vocab_size", None) or 1, num_classes=num_classes, pad_id=0,
        embed_dim=cfg.embed_dim, kernel_sizes=tuple(cfg.kernel_sizes), num_filters=cfg.num_filters, hidden=cfg.hidden,
        dropout=cfg.dropout, layers=bert["num_hidden_layers"] if bert else cfg.layers, bert=bert,
    )
    student.check_fits_memory()  # before a layer map of --layers entries is made
    if bert is not None:
        width = teacher_config.hidden_size
        if cfg.init_from_teacher and bert["hidden_size"] != width:
            raise KdError(_narrower_message(width, bert["hidden_size"]))
        if cfg.intermediate:
            relation_heads(cfg, (bert["hidden_size"], bert["num_attention_heads"]), (width, teacher_config.num_attention_heads))
        if cfg.student_model and cfg.layer_map and len(cfg.layer_map) != bert["num_hidden_layers"]:
            raise KdError(f"--layer-map names {len(cfg.layer_map)} teacher layers for a student of {bert['num_hidden_layers']} "
                          f"(--student-model {cfg.student_model}'s layers): one each")
        mapped = layer_map(bert["num_hidden_layers"], teacher_config.num_hidden_layers, cfg.layer_map)
        check_matches(cfg.matches, student_layers=bert["num_hidden_layers"], teacher_layers=teacher_config.num_hidden_layers)
        if cfg.fsp and any(b <= a for a, b in zip(mapped, mapped[1:])):
            how = f"--layer-map {','.join(map(str, mapped))}" if cfg.layer_map else \
                f"a {cfg.layers}-layer student of a {teacher_config.num_hidden_layers}-layer teacher maps {','.join(map(str, mapped))}"
            raise KdError(f"--fsp matches each student layer with the teacher layers since the previous one it maps to, "
                          f"so the map must increase: {how} (no deeper student than its teacher)")
    if bert is not None and cfg.student_model and cfg.max_len > readable_positions(bert):  # (not the teacher's: validate's words)
        raise KdError(f"--max-len {cfg.max_len} exceeds --student-model {cfg.student_model}'s {readable_positions(bert)} positions")
    student.validate(max_len=cfg.max_len)


def _narrower_message(width: int, student_width: int) -> str:
    return (f"--init-from-teacher copies teacher layers of width {width}: the student is {student_width} wide "
            "(leave --width out, or pass --no-init-from-teacher)")


def _copies_layers(cfg: DistillConfig, scfg: StudentConfig, teacher: Stage) -> bool:
    """Whether a transformer student starts from teacher layers: ``--init-from-teacher`` as given,
    else when it has the teacher's width (a narrower one has no layers to copy)."""
    from transformers import AutoConfig

    if cfg.student_model:  # (its own layers: validate() refuses --init-from-teacher with it)
        return False
    width = AutoConfig.from_pretrained(model_dirs(teacher)[0]).hidden_size
    same = scfg.bert["hidden_size"] == width
    if cfg.init_from_teacher and not same:
        raise KdError(_narrower_message(width, scfg.bert["hidden_size"]))
    return same if cfg.init_from_teacher is None else cfg.init_from_teacher


def _fit(add_metrics, stage: StageHandle, cfg: DistillConfig, built: tuple[torch.nn.Module, dict], tokenizer, names: list[str],
         data: SampleSet, dev: SampleSet, teachers: TeacherLogits, matched_net, device, rng, dist: Dist, *, tag: str):
    """Train the student ``built`` (``_new_student``) on ``data`` (rows with label -1 learn from the
    teacher alone) on this rank's share of each global batch, matched to ``matched_net``'s internals
    if given, early stopping on dev macro-F1; returns the model at its best epoch and
    ``{"best_epoch", "train_seconds", "teacher_layers"?}`` (the teacher layers copied or matched). Figures are recorded per
    epoch under ``tag`` (``fold0/``...)."""
    model, fitted = built
    model.to(device)
    if matched_net is not None:
        matched_net.to(device)  # the matcher holds it outside its sub-modules: moved here, not by .to()
    matcher = IntermediateMatcher(model, matched_net, cfg).to(device) if matched_net is not None else None
    if matcher is not None and cfg.mapped_losses:  # the layers the intermediate losses match: on record even when none was copied (a narrower student)
        fitted.setdefault("teacher_layers", list(matcher.map))
    # every parameter takes part in each step but a projection that no hidden-state loss reads (a narrower
    # student matched on attentions alone): DDP's search for unused ones, where none can be, cost a walk of
    # the graph a step and printed torch's warning that it found none on every rank
    unused = matcher is not None and any(True for _ in matcher.proj.parameters()) and not (cfg.hidden_mse or cfg.hidden_cos or cfg.pkd or cfg.fsp)
    net = dist.wrap(model) if matcher is None else dist.wrap(matcher, find_unused=unused)
    ids = encode_packed(tokenizer, data.texts, max_len=cfg.max_len, special_tokens=model.special_tokens)
    lengths = ids.lengths
    # texts cut to --max-len (as kd teach counts its own): a student that never reads the end of most of them is warned of
    add_metrics(stage.id, "train", {f"{tag}truncated": count_cut(tokenizer, data.texts, lengths, max_len=cfg.max_len,
                                                                   special_tokens=model.special_tokens), f"{tag}texts": len(data)})
    labels = torch.as_tensor(data.labels)
    class_weights = balanced_class_weights(data.labels, len(names)) if cfg.class_weight == "balanced" else None
    if class_weights is not None:  # (of the labeled rows this student learns from: a fold's own)
        add_metrics(stage.id, "all", {f"{tag}class_weight[{n}]": float(w) for n, w in zip(names, class_weights)})
        class_weights = to_device(class_weights, device)  # once: a pageable copy at each step made the host wait for the GPU
    soft_targets = torch.as_tensor(teachers.rows(data.ids))
    params = list(model.parameters()) + (matcher.projection_parameters() if matcher is not None else [])
    optimizer = torch.optim.Adam(params, lr=cfg.learning_rate, **adam_options(device))
    dev_mine = dev.subset(dist.shard(len(dev)))

    best, last_epoch = BestCheckpoint(cfg.patience), 0
    steps_per_epoch = -(-len(data) // cfg.batch_size)
    total_steps, step = steps_per_epoch * cfg.epochs, 0
    scheduler = None  # (a constant rate without warmup: no scheduler, the steps as they always were)
    if cfg.lr_schedule != "constant" or cfg.warmup > 0:
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor_step(s, total_steps, schedule=cfg.lr_schedule, warmup=cfg.warmup))
    # --eval-every N: the figures of a span of N steps, recorded at its last step (the history's `step` is then a
    # training step, not an epoch), and the best of those spans kept; else each epoch's, as before
    unit = "step" if cfg.eval_every else "epoch"

    def judged(at: int) -> bool:
        """Record the train loss since the last judgement and score dev at ``at`` (an epoch, or a step under
        --eval-every); True when training stops (diverged after a scored point, or patience ran out)."""
        nonlocal losses, last_epoch
        # (a scheduled weight or temperature as its span's last step used it: the schedule seen after the run)
        moved = {name: over_steps(start, end, max(step - 1, 0), total_steps) for name, start, end in (
            ("alpha", cfg.alpha, cfg.alpha_end), ("hard_weight", cfg.hard_weight, cfg.hard_weight_end),
            ("temperature", cfg.temperature, cfg.temperature_end)) if end is not None and start is not None}
        add_metrics(stage.id, "train", {f"{tag}loss": dist.mean_of(losses.floats()), **{f"{tag}{k}": v for k, v in moved.items()}}, step=at)
        losses = StepLosses(dist=dist)
        if stop_if_diverged(model, best, epoch=at, tag=tag, warn=dist.is_main, unit=unit):
            fitted["diverged_epoch"] = epoch
            return True
        last_epoch = epoch
        if len(dev) == 0:
            return False
        mine = student_logits(model, tokenizer, dev_mine.texts, max_len=cfg.max_len, device=device, label=dist.share_label(f"{tag.rstrip('/')} dev".strip()))
        _, dev_logits = dist.gather_rows(dev_mine.ids, mine)  # dev is in id order too
        m = classification_metrics(dev.labels, dev_logits.argmax(1), num_classes=len(names), class_names=names)
        dev_loss = mean_log_loss(dev.labels, dev_logits)  # (breaks a tie of macro-F1)
        add_metrics(stage.id, "dev", {f"{tag}accuracy": m["accuracy"], f"{tag}macro_f1": m["macro_f1"], f"{tag}loss": dev_loss}, step=at)
        warming = step <= cfg.warmup * total_steps  # (its rate not yet at --lr: not counted toward --patience)
        return dist.broadcast_object(best.update(m["macro_f1"], model, at, loss=dev_loss, warming=warming))  # rank 0 decides for all

    start = time.monotonic()
    stop = False
    with progress(extra="loss {task.fields[loss]}") as bar:
        task = bar.add_task(f"distill {cfg.student} {tag.rstrip('/')}".strip(), total=steps_per_epoch * cfg.epochs, loss="-", unit="step")
        for epoch in range(1, cfg.epochs + 1):
            net.train()
            if epoch == 1 or not cfg.eval_every:
                losses = StepLosses(dist=dist)
            for batch in bucketed_batches(lengths, cfg.batch_size, rng):
                idx, weight = dist.split_batch(batch)
                alpha = over_steps(cfg.alpha, cfg.alpha_end, step, total_steps)
                hard_weight = None if cfg.hard_weight is None else over_steps(cfg.hard_weight, cfg.hard_weight_end, step, total_steps)
                temperature = over_steps(cfg.temperature, cfg.temperature_end, step, total_steps)
                pieces = micro_batches(idx, cfg.grad_accum)  # (one, the rows themselves, unless --grad-accum)
                if matcher is not None:  # the intermediate losses' weights: each piece's share of what its loss is a mean over
                    held = normalizer_counts([len(ids[i]) for i in idx] if weight else [])
                    across = dict(zip(NORMALIZERS, dist.share_weights([held[n] for n in NORMALIZERS])))
                loss = None  # this rank's share's mean loss: the pieces' means weighed by their shares
                for k, (piece, share) in enumerate(pieces):
                    input_ids, mask = pad([ids[i] for i in piece], tokenizer.pad_token_id, min_len=model.min_len, multiple=model.pad_multiple)
                    input_ids, mask = to_device(input_ids, device), to_device(mask, device)
                    with dist.accumulating(net, last=k == len(pieces) - 1):
                        if matcher is None:
                            logits, matched = net(input_ids, mask), 0.0
                        else:
                            logits, by_normalizer = net(input_ids, mask)
                            # (scaled so that times the piece's row share and the rank's weight below, each is weighed by its count's share)
                            mine = normalizer_counts([len(ids[i]) for i in piece])
                            matched = sum(by_normalizer[n] * (across[n] * mine[n] / held[n] / (weight * share) if weight * share and held[n] else 0.0)
                                          for n in NORMALIZERS)
                        targets = to_device(soft_targets[piece], device)
                        if cfg.probability_shift:
                            targets = probability_shift(targets, to_device(labels[piece], device))
                        scale, temperatures = None, temperature
                        if cfg.temperature_schedule != "constant":  # per sample, around the whole batch's mean weight (no --grad-accum)
                            w = temperature_weights(logits, targets, kind=cfg.temperature_schedule, gamma=cfg.temperature_gamma)
                            scale = temperature * temperature  # one T² factor for the batch: the scheduled temperature's
                            temperatures = temperatures_from_weights(
                                w, base=temperature, beta=cfg.temperature_beta, mean_weight=dist.batch_mean(w, counted=weight > 0),
                            )
                        part = distillation_loss(
                            logits, targets, to_device(labels[piece], device),
                            alpha=alpha, temperature=temperatures, kind=cfg.soft_loss, scale=scale, hard_weight=hard_weight,
                            class_weights=class_weights,
                        ) + matched
                        (part * weight * share).backward()
                    loss = part if len(pieces) == 1 else part.detach() * share + (0.0 if loss is None else loss)
                step += 1
                torch.nn.utils.clip_grad_norm_(params, 5.0)
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                # each rank's share of the batch's mean (0 for a filler): their mean over ranks and
                # batches is the mean of the batch means, as in one process
                bar.update(task, advance=1, loss=losses.add(loss, weight))
                if cfg.eval_every and (step % cfg.eval_every == 0 or step == total_steps):
                    stop = judged(step)
                    if stop:
                        break
                    net.train()
            if stop or (not cfg.eval_every and judged(epoch)):
                break
    fitted["train_seconds"] = time.monotonic() - start
    best.restore(model)
    kept = best.epoch or (step if cfg.eval_every else last_epoch)  # no dev split: the last
    if cfg.eval_every:
        fitted["best_step"] = kept
        fitted["steps_per_epoch"] = steps_per_epoch
    fitted["best_epoch"] = -(-kept // steps_per_epoch) if cfg.eval_every else kept
    return model, fitted


def _check_one_unknown_token(tokenizer, teacher_runs: list[str], stages: list) -> None:
    """``--augment mask`` writes the first teacher's unknown token into the texts every teacher scores:
    refused where another teacher's tokenizer has another one (``<unk>`` read ``[UNK]`` as five
    characters, a text unlike the one the student learns from), or where a tokenizer has none."""
    from transformers import AutoTokenizer

    unk = tokenizer.unk_token
    for i, (run, stage) in enumerate(zip(teacher_runs, stages)):
        other = unk if i == 0 else AutoTokenizer.from_pretrained(model_dirs(stage)[0]).unk_token
        if other is None:  # (a byte-level BPE, Qwen2's: a written [UNK] was read as plain characters, unsaid)
            raise KdError(f"--augment mask writes the teacher tokenizer's unknown token, and the tokenizer of run {run!r} has no unknown token "
                          "(it would read [UNK] as plain characters): leave mask out of --augment")
        if other != unk:
            raise KdError(f"--augment mask writes {unk!r}, the unknown token of the teacher of run {teacher_runs[0]!r}, where the tokenizer of "
                          f"run {run!r} has {other!r} (it would read {unk!r} as plain characters): give teachers of one tokenizer, "
                          "or leave mask out of --augment")


def relation_heads(cfg: DistillConfig, student: tuple[int, int], teacher: tuple[int, int]) -> int:
    """The relation heads of MiniLM's losses for a student and a teacher of ``(width, attention
    heads)``: ``--relation-heads``, else the smaller head count; refused where one does not divide a width."""
    heads = cfg.relation_heads or min(student[1], teacher[1])
    for side, (width, _) in (("student", student), ("teacher", teacher)):
        if (cfg.value_relation or cfg.qk_relation) and width % heads:
            if cfg.relation_heads:
                raise KdError(f"--relation-heads {heads} does not divide the {side}'s width {width}")
            # the default, never typed: named as such, with head counts both widths take (a 768-wide student of a
            # 1024-wide teacher: 12 and 16 heads, and 12 does not divide 1024)
            common = math.gcd(student[0], teacher[0])
            fits = [d for d in range(1, common + 1) if common % d == 0]
            below = [d for d in fits if d <= heads]
            others = below[-2:-1] + [d for d in fits if d > heads][:1]
            raise KdError(f"the default --relation-heads (the smaller head count, {heads}) does not divide the {side}'s width {width}: "
                          f"give --relation-heads {below[-1]}" + (f" (or {', '.join(map(str, others))})" if others else ""))
    return heads


# what each intermediate loss is a mean over: the batch's real tokens, its pairs of real tokens, or its rows.
# A --grad-accum piece's loss is weighed by its share of that count (its rows' share weighed a piece of
# long texts as one of short ones), and each torchrun process's by its share of the whole batch's
NORMALIZERS = ("tokens", "pairs", "rows")
MATCH_NORMALIZERS = {"hidden_mse": "tokens", "hidden_cos": "tokens", "pkd": "rows", "nst": "pairs", "attention_kl": "tokens",
                     "attention_mse": "pairs"}


def normalizer_counts(lengths: Sequence[int]) -> dict[str, int]:
    """``NORMALIZERS``' counts of rows of ``lengths`` real tokens each."""
    return {"tokens": int(sum(lengths)), "pairs": int(sum(n * n for n in lengths)), "rows": len(lengths)}


class IntermediateMatcher(torch.nn.Module):
    """Student logits plus the weighted intermediate losses against a frozen teacher network:
    hidden-state MSE and cosine, Patient KD on [CLS] and FSP (through a learned projection when widths
    differ), attention KL and MSE and neuron selectivity transfer on mapped layers, and MiniLM's value-relation and query-key (attention distribution) KL on the last layer,
    over ``relation_heads`` relation heads so that head counts and widths may differ."""

    def __init__(self, student, teacher, cfg: DistillConfig):
        super().__init__()
        self.student, self.cfg = student, cfg
        self.teacher = [teacher]  # a list: not a sub-module, so not trained or saved
        teacher.eval().requires_grad_(False)
        s_cfg, t_cfg = student.net.config, teacher.config
        self.map = layer_map(s_cfg.num_hidden_layers, t_cfg.num_hidden_layers, cfg.layer_map)
        self.proj = torch.nn.Linear(s_cfg.hidden_size, t_cfg.hidden_size) if s_cfg.hidden_size != t_cfg.hidden_size else torch.nn.Identity()
        self.heads = relation_heads(cfg, (s_cfg.hidden_size, s_cfg.num_attention_heads), (t_cfg.hidden_size, t_cfg.num_attention_heads))
        self._t_last = LastLayerVectors(teacher.base_model)
        check_matches(cfg.matches, student_layers=s_cfg.num_hidden_layers, teacher_layers=t_cfg.num_hidden_layers)
        # each --match comparing vectors of other widths its own projection, as each of TextBrewer's matches has
        self.match_proj = torch.nn.ModuleList(
            torch.nn.Linear(s_cfg.hidden_size, t_cfg.hidden_size) if m.projected and s_cfg.hidden_size != t_cfg.hidden_size
            else torch.nn.Identity() for m in cfg.matches)

    def projection_parameters(self) -> list[torch.nn.Parameter]:
        """What the optimizer trains besides the student: the projections of the losses on the layer map and of each match."""
        return list(self.proj.parameters()) + list(self.match_proj.parameters())

    def forward(self, input_ids, mask):
        logits, s_hidden, s_att, s_last = self.student.internals(input_ids, mask)
        self._t_last.arm()
        with torch.no_grad():
            t = self.teacher[0](input_ids=input_ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        loss = {kind: logits.new_zeros(()) for kind in NORMALIZERS}  # each loss by what it is a mean over
        pairs = list(enumerate(self.map))
        if self.cfg.hidden_mse:
            terms = [hidden_mse(self.proj(s_hidden[0]), t.hidden_states[0], mask)]
            terms += [hidden_mse(self.proj(s_hidden[i + 1]), t.hidden_states[j + 1], mask) for i, j in pairs]
            loss["tokens"] = loss["tokens"] + self.cfg.hidden_mse * torch.stack(terms).mean()
        if self.cfg.hidden_cos:
            terms = [hidden_cosine(self.proj(s_hidden[i + 1]), t.hidden_states[j + 1], mask) for i, j in pairs]
            loss["tokens"] = loss["tokens"] + self.cfg.hidden_cos * torch.stack(terms).mean()
        if self.cfg.pkd:
            terms = [patient_kd(self.proj(s_hidden[i + 1][:, 0]), t.hidden_states[j + 1][:, 0]) for i, j in pairs]
            loss["rows"] = loss["rows"] + self.cfg.pkd * torch.stack(terms).mean()
        if self.cfg.attention_kl:
            terms = [attention_kl(s_att[i], t.attentions[j], mask) for i, j in pairs]
            loss["tokens"] = loss["tokens"] + self.cfg.attention_kl * torch.stack(terms).mean()
        if self.cfg.attention_mse:
            terms = [attention_mse(s_att[i], t.attentions[j], mask) for i, j in pairs]
            loss["pairs"] = loss["pairs"] + self.cfg.attention_mse * torch.stack(terms).mean()
        if self.cfg.fsp:  # student layer i against the teacher's layers after the previous mapped one up to map[i]
            starts = [0] + [j + 1 for j in self.map[:-1]]
            terms = [fsp(self.proj(s_hidden[i]), self.proj(s_hidden[i + 1]), t.hidden_states[a], t.hidden_states[j + 1], mask)
                     for (i, j), a in zip(pairs, starts)]
            loss["rows"] = loss["rows"] + self.cfg.fsp * torch.stack(terms).mean()
        if self.cfg.nst:
            terms = [neuron_selectivity(s_hidden[i + 1], t.hidden_states[j + 1], mask) for i, j in pairs]
            loss["pairs"] = loss["pairs"] + self.cfg.nst * torch.stack(terms).mean()
        for m, proj in zip(self.cfg.matches, self.match_proj):  # each its own weight, summed (as TextBrewer sums its matches)
            kind = MATCH_NORMALIZERS[m.kind]
            loss[kind] = loss[kind] + m.weight * self._matched(m, proj, s_hidden, s_att, t, mask)
        t_last = self._t_last.take()
        if self.cfg.value_relation:
            loss["tokens"] = loss["tokens"] + self.cfg.value_relation * relation_kl(s_last["value"], t_last["value"], mask, heads=self.heads)
        if self.cfg.qk_relation:
            loss["tokens"] = loss["tokens"] + self.cfg.qk_relation * query_key_relation_kl(
                s_last["query"], s_last["key"], t_last["query"], t_last["key"], mask, heads=self.heads
            )
        return logits, loss


    @staticmethod
    def _matched(m: Match, proj, s_hidden, s_att, t, mask) -> torch.Tensor:
        """One ``--match``'s loss, unweighted."""
        if m.kind in HIDDEN_KINDS:
            s, h = s_hidden[hidden_index(m.student)], t.hidden_states[hidden_index(m.teacher)]
            if m.kind == "hidden_mse":
                return hidden_mse(proj(s), h, mask)
            if m.kind == "hidden_cos":
                return hidden_cosine(proj(s), h, mask)
            if m.kind == "pkd":
                return patient_kd(proj(s[:, 0]), h[:, 0])
            return neuron_selectivity(s, h, mask)
        if m.kind == "attention_kl":
            return attention_kl(s_att[m.student], t.attentions[m.teacher], mask)
        return attention_mse(s_att[m.student], t.attentions[m.teacher], mask)


def _teacher_network(stage: Stage):
    from transformers import AutoModelForSequenceClassification

    quiet_transformers()
    # float32 as trained, whatever the saved weights are (transformers 5 loads them in their own dtype)
    with _loading_teacher(stage):
        return AutoModelForSequenceClassification.from_pretrained(model_dirs(stage)[0], attn_implementation="eager",
                                                                  dtype=torch.float32)


@contextmanager
def _loading_teacher(stage: Stage):
    """A teacher folder transformers cannot read (files gone, damaged weights) as a one-line KdError."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, ValueError, SafetensorError) as exc:
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        raise KdError(f"cannot load the teacher of stage {stage.name!r} in {stage.artifact_path}: {lines[0]}") from None
    # (after the load, whose refusal names what is broken) its logits are of the recorded model: intermediate
    # losses or embeddings of another would not match them
    check_unchanged(stage)


def _student_model_path(name: str) -> str:
    """A ``--student-model`` as transformers takes it: a quoted ``~`` (a config file's) expanded, which
    it would take for a hub name."""
    return str(Path(name).expanduser()) if name.startswith("~") else name


def student_model_config(name: str, class_names: list[str] | None = None):
    """The Hugging Face configuration of a ``--student-model`` (a name or folder), or a one-line KdError;
    with ``class_names``, one fine-tuned for other classes is refused too (as the stage would refuse it)."""
    from transformers import AutoConfig

    from .students import check_bert_layout

    from .teacher import _inner_model, hub_unreachable

    quiet_transformers()
    path = _student_model_path(name)
    # as `kd teach --model` checks a model (load_classifier): transformers said "Repo id must use
    # alphanumeric chars" of a missing folder, "Should have a `model_type` key" of a kd student's
    folder = Path(path)
    if path.startswith(("/", "./", "../")) and not folder.exists():
        raise KdError(f"--student-model {name}: no such directory")
    if folder.is_file():
        raise KdError(f"--student-model {name}: it is a file; give the folder that holds config.json and the weights")
    if (folder / STUDENT_CONFIG).is_file():
        raise KdError(f"--student-model {name}: it is a kd student (kd distill), not a Hugging Face model: give a "
                      "pre-trained checkpoint's folder")
    if folder.is_dir() and not (folder / "config.json").is_file():
        raise KdError(f"--student-model {name}: no config.json in that folder{_inner_model(folder).split(': start from', 1)[0]}")
    hub = {"trust_remote_code": False}
    if not folder.is_dir() and hub_unreachable():  # (the hub client would retry for half a minute: its cache alone)
        hub["local_files_only"] = True
    try:
        config = AutoConfig.from_pretrained(path, **hub)
    except (OSError, ValueError) as exc:
        raise KdError(f"--student-model {name}: cannot load its configuration: {str(exc).strip().splitlines()[0]}") from None
    try:
        check_bert_layout(config)
    except KdError:
        raise KdError(f"--student-model {name}: a transformer student is a BERT-layout encoder (BERT, RoBERTa, XLM-R, ERNIE, "
                      f"ELECTRA); this checkpoint's {getattr(config, 'model_type', '?')!r} is laid out otherwise") from None
    if class_names is not None:
        from .teacher import head_classes

        try:
            head_classes(config, class_names, name)
        except KdError as exc:
            raise KdError(f"--student-model {name}: it was fine-tuned{str(exc).split(' was fine-tuned', 1)[-1]}") from None
    return config


def student_shape(teacher_config, cfg: DistillConfig, num_classes: int) -> dict:
    """A transformer student's configuration: the ``--student-model`` checkpoint's own, else the
    teacher's with ``--layers`` layers (and ``--width``)."""
    if cfg.student_model:
        config = student_model_config(cfg.student_model)
        return student_bert_config(config, layers=config.num_hidden_layers, hidden=None, num_classes=num_classes)
    return student_bert_config(teacher_config, layers=cfg.layers, hidden=cfg.width or None, num_classes=num_classes)


def check_student_vocabulary(cfg: DistillConfig, tokenizer) -> None:
    """A ``--student-model`` reads texts with the teacher's tokenizer (the targets were made from its
    ids, and intermediate losses match token by token): its vocabulary must be the teacher's."""
    if not cfg.student_model:
        return
    from transformers import AutoTokenizer

    try:
        own = AutoTokenizer.from_pretrained(_student_model_path(cfg.student_model))
    except (OSError, ValueError) as exc:
        raise KdError(f"--student-model {cfg.student_model}: cannot load its tokenizer: {str(exc).strip().splitlines()[0]}") from None
    if own.get_vocab() != tokenizer.get_vocab():
        raise KdError(f"--student-model {cfg.student_model}: its vocabulary ({len(own)} tokens) is not the teacher's ({len(tokenizer)}): "
                      "a student reads texts with its teacher's tokenizer; choose a checkpoint of the teacher's vocabulary "
                      f"(hfl's and UER's Chinese models share bert-base-chinese's){first_teacher_note(cfg)}")


def _student_bert(stage: Stage, cfg: DistillConfig, num_classes: int) -> dict:
    from transformers import AutoConfig

    teacher_config = AutoConfig.from_pretrained(model_dirs(stage)[0])
    bert = student_shape(teacher_config, cfg, num_classes)
    if cfg.matches_attentions:
        # the attention a layer returns in training is after its dropout: rows that are no distribution
        # (summing to 0.9-1.1), matched to the teacher's (eval mode) with a floor of noise in the loss
        for key in ("attention_probs_dropout_prob", "attention_dropout"):
            if key in bert:
                bert[key] = 0.0
    return bert


def teacher_embeddings(stage: Stage) -> torch.Tensor:
    """The token-embedding matrix of a teach stage's (first) model."""
    from transformers import AutoModel

    quiet_transformers()
    with _loading_teacher(stage):
        encoder = AutoModel.from_pretrained(model_dirs(stage)[0], dtype=torch.float32)
    return encoder.get_input_embeddings().weight.detach().cpu()


def save_student(out_dir: Path, model, scfg: StudentConfig, tokenizer, *, max_len: int, class_names: list[str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with saving_model(out_dir):
        weights = io.BytesIO()  # written by Python: a full disk is an OSError saying so, not torch's "unexpected pos"
        torch.save(model.state_dict(), weights)
        (out_dir / STUDENT_WEIGHTS).write_bytes(weights.getbuffer())
        meta = {"student": scfg.to_dict(), "max_len": max_len, "classes": class_names}
        (out_dir / STUDENT_CONFIG).write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")
        tokenizer.save_pretrained(out_dir)


def config_dict(cfg: DistillConfig) -> dict:
    d = asdict(cfg)
    d["teacher_runs"] = list(cfg.teacher_runs)
    d["teacher_weights"] = list(cfg.teacher_weights)
    d["kernel_sizes"] = list(cfg.kernel_sizes)
    d["augment"] = list(cfg.augment)
    d["lr"] = cfg.learning_rate
    d["matches"] = [m.spelled for m in cfg.matches]  # as --match and a config file's `match` take them
    return d
