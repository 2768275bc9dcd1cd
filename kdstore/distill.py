"""``kd distill``: train a small student from the teacher logits cached in the store plus gold labels.

Labeled train samples learn from ``alpha * soft + (1 - alpha) * hard``; unlabeled samples (the pool)
learn from the teacher alone. The student reads the teacher's token ids, keeps its best epoch by dev
macro-F1, and its logits and predictions for every sample go back to the store.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .batching import bucketed_batches, encode, iter_padded
from .errors import KdError
from .losses import SOFT_LOSSES, distillation_loss
from .metrics import classification_metrics
from .outputs import store_outputs
from .predictor import STUDENT_CONFIG, STUDENT_WEIGHTS, student_logits
from .progress import progress
from .runs import StageHandle
from .schema import Stage
from .store import SampleSet, Store
from .augment import METHODS
from .augmented import Recipe, ensure_augmented
from .schedules import linear
from .students import StudentConfig, build_student, flops_per_sample, init_embeddings
from .teacher import score_missing
from .torchutil import count_parameters, pick_device, set_seed


@dataclass(frozen=True)
class DistillConfig:
    student: str = "textcnn"
    teacher_runs: tuple[str, ...] = ()  # empty: the distill stage's own run
    teacher_weights: tuple[float, ...] = ()  # one per teacher run; empty: equal weights
    alpha: float = 0.5
    alpha_end: float | None = None  # set: alpha moves linearly to this over training
    temperature: float = 2.0
    temperature_end: float | None = None  # set: temperature moves linearly to this
    soft_loss: str = "kl"
    init_embeddings: str = "random"  # or "teacher": copy the teacher's token embeddings
    unlabeled: bool | None = None  # None: use the pool when the store has one
    augment: tuple[str, ...] = ()  # e.g. ("mask", "pos", "ngram"): augmented train texts, soft targets only
    augment_n: int = 4
    p_mask: float = 0.1
    p_pos: float = 0.1
    p_ngram: float = 0.25
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 64
    max_len: int = 128
    patience: int = 3
    embed_dim: int = 128
    kernel_sizes: tuple[int, ...] = (2, 3, 4)
    num_filters: int = 128
    hidden: int = 128
    dropout: float = 0.3
    seed: int = 42
    device: str = "auto"

    def validate(self) -> None:
        for name, a in (("--alpha", self.alpha), ("--alpha-end", self.alpha_end)):
            if a is not None and not 0.0 <= a <= 1.0:
                raise KdError(f"{name} must be in [0, 1], got {a}")
        for name, t in (("--temperature", self.temperature), ("--temperature-end", self.temperature_end)):
            if t is not None and t <= 0:
                raise KdError(f"{name} must be positive, got {t}")
        if self.teacher_weights and len(self.teacher_weights) != max(1, len(self.teacher_runs)):
            raise KdError(f"{len(self.teacher_weights)} --teacher-weight values for {max(1, len(self.teacher_runs))} teacher run(s)")
        if any(w < 0 for w in self.teacher_weights) or (self.teacher_weights and sum(self.teacher_weights) <= 0):
            raise KdError("--teacher-weight values must be non-negative and not all zero")
        bad = [m for m in self.augment if m not in METHODS]
        if bad:
            raise KdError(f"unknown augmentation method(s) {', '.join(bad)}: choose from {', '.join(METHODS)}")
        if self.augment and self.augment_n < 1:
            raise KdError("--augment-n must be at least 1")
        if self.init_embeddings not in ("random", "teacher"):
            raise KdError("--init-embeddings must be random or teacher")
        if self.soft_loss not in SOFT_LOSSES:
            raise KdError(f"--soft-loss must be one of {', '.join(SOFT_LOSSES)}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise KdError("--epochs and --batch-size must be >= 1 and --lr > 0")


@dataclass
class TeacherLogits:
    stages: list[Stage]
    ids: np.ndarray
    logits: np.ndarray
    by_id: dict[int, int] = field(default_factory=dict)

    def rows(self, sample_ids: np.ndarray) -> np.ndarray:
        return self.logits[[self.by_id[int(i)] for i in sample_ids]]


def load_teachers(store: Store, runs: list[str], names: list[str], weights: tuple[float, ...] = ()) -> TeacherLogits:
    """The (weighted-average) logits of the teach stages of ``runs``, checked against the store's classes."""
    stages, mats = [], []
    for run in runs:
        stage = store.find_stage(run, "teach")
        teacher_classes = stage.config.get("classes")
        if teacher_classes is not None and list(teacher_classes) != list(names):
            raise KdError(
                f"teacher of run {run!r} was trained on classes {teacher_classes}, the store now has "
                f"{names}: re-run `kd teach`"
            )
        ids, logits = store.read_logits(stage.id)
        if len(ids) == 0:
            raise KdError(f"teacher of run {run!r} has no logits in the store: re-run `kd teach`")
        if logits.shape[1] != len(names):
            raise KdError(f"teacher of run {run!r} has {logits.shape[1]} outputs, the store has {len(names)} classes")
        stages.append(stage)
        mats.append(dict(zip(ids.tolist(), logits)))
    common = sorted(set.intersection(*(set(m) for m in mats)))
    w = np.asarray(weights or [1.0] * len(mats), dtype=np.float64)
    w = w / w.sum()
    avg = (
        np.stack([np.tensordot(w, np.stack([m[i] for m in mats]), axes=1) for i in common])
        if common
        else np.zeros((0, len(names)), np.float32)
    )
    ids = np.array(common, dtype=np.int64)
    return TeacherLogits(stages=stages, ids=ids, logits=avg.astype(np.float32), by_id={int(i): k for k, i in enumerate(ids)})


def training_set(
    store: Store, teachers: TeacherLogits, *, use_pool: bool | None, run: str, augmented: str | None = None
) -> tuple[SampleSet, dict[str, int]]:
    """Labeled train samples, plus the unlabeled pool and augmented samples if asked, with teacher logits.

    Returns the joined set and how many samples each part contributed.
    """
    train = store.samples(splits=["train"], labeled=True)
    if len(train) == 0:
        raise KdError("no labeled train samples in the store")
    missing = [int(i) for i in train.ids if int(i) not in teachers.by_id]
    if missing:
        raise KdError(
            f"{len(missing)} train samples have no teacher logits (ingested after the teacher ran?): "
            f"run `kd teach --run {run} --logits-only` first"
        )
    pool = store.samples(splits=["unlabeled"], where="parent_id IS NULL")
    if use_pool is None:
        use_pool = len(pool) > 0
    aug = store.samples(splits=["unlabeled"], where=f"source = '{augmented}'") if augmented else pool.subset(np.zeros(len(pool), bool))
    if not use_pool:
        pool = pool.subset(np.zeros(len(pool), bool))
    parts = [train] + [p.subset(np.array([int(i) in teachers.by_id for i in p.ids], dtype=bool)) for p in (pool, aug)]
    joined = SampleSet(
        ids=np.concatenate([p.ids for p in parts]),
        texts=[t for p in parts for t in p.texts],
        labels=np.concatenate([train.labels] + [np.full(len(p), -1, dtype=np.int64) for p in parts[1:]]),
        splits=[s for p in parts for s in p.splits],
    )
    return joined, {"labeled": len(parts[0]), "pool": len(parts[1]), "augmented": len(parts[2])}


def distill(store: Store, stage: StageHandle, cfg: DistillConfig) -> Path:
    """Train the student, keep its best epoch, save it, and store its outputs for every sample."""
    from transformers import AutoTokenizer

    cfg.validate()
    rng = set_seed(cfg.seed)
    device = pick_device(cfg.device)

    # 1. teacher logits and data
    names = store.class_names()
    teacher_runs = list(cfg.teacher_runs) or [stage.run]
    augmented = None
    if cfg.augment:
        recipe = Recipe(methods=cfg.augment, n=cfg.augment_n, seed=cfg.seed, p_mask=cfg.p_mask, p_pos=cfg.p_pos, p_ngram=cfg.p_ngram)
        augmented, added = ensure_augmented(store, recipe)
        store.add_metrics(stage.id, "all", {"augmented_added": added})
        for run in teacher_runs:  # the teachers score the new texts once; later runs reuse the logits
            score_missing(store, run, device=cfg.device)
    teachers = load_teachers(store, teacher_runs, names, cfg.teacher_weights)
    data, parts = training_set(store, teachers, use_pool=cfg.unlabeled, run=stage.run, augmented=augmented)
    dev = store.samples(splits=["dev"], labeled=True)
    tokenizer = AutoTokenizer.from_pretrained(teachers.stages[0].artifact_path)

    # 2. student
    scfg = StudentConfig(
        kind=cfg.student, vocab_size=len(tokenizer), num_classes=len(names), pad_id=tokenizer.pad_token_id,
        embed_dim=cfg.embed_dim, kernel_sizes=tuple(cfg.kernel_sizes), num_filters=cfg.num_filters,
        hidden=cfg.hidden, dropout=cfg.dropout,
    )
    scfg.validate(max_len=cfg.max_len)
    model = build_student(scfg)
    if cfg.init_embeddings == "teacher":
        init_embeddings(model, teacher_embeddings(teachers.stages[0]))
    model.to(device)
    ids = encode(tokenizer, data.texts, max_len=cfg.max_len, special_tokens=False)
    lengths = [len(x) for x in ids]
    labels = torch.as_tensor(data.labels)
    soft_targets = torch.as_tensor(teachers.rows(data.ids))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)

    # 3. train, early stopping on dev macro-F1
    best_f1, best_state, best_epoch, stale = -1.0, None, 0, 0
    steps_per_epoch = -(-len(data) // cfg.batch_size)
    total_steps, step = steps_per_epoch * cfg.epochs, 0
    start = time.monotonic()
    with progress(extra="loss {task.fields[loss]}") as bar:
        task = bar.add_task(f"distill {cfg.student}", total=steps_per_epoch * cfg.epochs, loss="-", unit="step")
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            losses = []
            for idx, input_ids, mask in iter_padded(ids, bucketed_batches(lengths, cfg.batch_size, rng), tokenizer.pad_token_id, min_len=model.min_len):
                progress_frac = step / total_steps
                alpha = cfg.alpha if cfg.alpha_end is None else linear(cfg.alpha, cfg.alpha_end, progress_frac)
                temperature = cfg.temperature if cfg.temperature_end is None else linear(cfg.temperature, cfg.temperature_end, progress_frac)
                logits = model(input_ids.to(device), mask.to(device))
                loss = distillation_loss(
                    logits, soft_targets[idx].to(device), labels[idx].to(device),
                    alpha=alpha, temperature=temperature, kind=cfg.soft_loss,
                )
                step += 1
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
                bar.update(task, advance=1, loss=f"{loss.item():.3f}")
            store.add_metrics(stage.id, "train", {"loss": float(np.mean(losses))}, step=epoch)
            if len(dev) == 0:
                best_epoch = epoch
                continue
            dev_pred = student_logits(model, tokenizer, dev.texts, max_len=cfg.max_len, device=device).argmax(1)
            m = classification_metrics(dev.labels, dev_pred, num_classes=len(names), class_names=names)
            store.add_metrics(stage.id, "dev", {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}, step=epoch)
            if m["macro_f1"] > best_f1:
                best_f1, best_epoch, stale = m["macro_f1"], epoch, 0
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
    train_seconds = time.monotonic() - start
    if best_state is not None:
        model.load_state_dict(best_state)

    # 4. save: weights, config, class names and the tokenizer, so the directory serves on its own
    out_dir = stage.artifact_dir / "student"
    save_student(out_dir, model, scfg, tokenizer, max_len=cfg.max_len, class_names=names)
    stage.record_artifact(out_dir)

    # 5. outputs for every sample, figures
    everything = store.samples(include_dropped=True)
    logits = student_logits(model, tokenizer, everything.texts, max_len=cfg.max_len, device=device)
    store_outputs(store, stage.id, everything, logits, names)
    store.add_metrics(
        stage.id,
        "all",
        {
            "best_epoch": best_epoch,
            "train_seconds": train_seconds,
            "parameters": count_parameters(model),
            "flops_per_sample": flops_per_sample(scfg, int(np.mean(lengths))),
            "mean_tokens": float(np.mean(lengths)),
            "train_samples": parts["labeled"],
            "pool_samples": parts["pool"],
            "augmented_samples": parts["augmented"],
        },
    )
    return out_dir


def teacher_embeddings(stage: Stage) -> torch.Tensor:
    """The token-embedding matrix of a teach stage's (first) model."""
    from transformers import AutoModel

    from .teacher import model_dirs

    encoder = AutoModel.from_pretrained(model_dirs(stage)[0])
    return encoder.get_input_embeddings().weight.detach().cpu()


def save_student(out_dir: Path, model, scfg: StudentConfig, tokenizer, *, max_len: int, class_names: list[str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out_dir / STUDENT_WEIGHTS)
    meta = {"student": scfg.to_dict(), "max_len": max_len, "classes": class_names}
    (out_dir / STUDENT_CONFIG).write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")
    tokenizer.save_pretrained(out_dir)


def config_dict(cfg: DistillConfig) -> dict:
    d = asdict(cfg)
    d["teacher_runs"] = list(cfg.teacher_runs)
    d["teacher_weights"] = list(cfg.teacher_weights)
    d["kernel_sizes"] = list(cfg.kernel_sizes)
    d["augment"] = list(cfg.augment)
    return d
