"""Loading a trained model (a teacher directory or a student) once and predicting labels for texts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .batching import encode_flagged, encode_packed, iter_padded, lengths_of, sorted_batches, spread_by_length
from .char_encoder import non_text_ids, unknown_only
from .errors import KdError
from .folds import fold_count
from .jsonl import is_whole
from .outputs import average_probs_as_logits
from .probs import answers, softmax
from .progress import progress
from .runs import PARKED, check_unchanged
from .store import Store, missing_model
from .textkey import text_list
from .torchutil import ensure_eval, pick_device

STUDENT_WEIGHTS = "student.pt"
STUDENT_CONFIG = "student.json"


@torch.no_grad()
def student_logits(model, tokenizer, texts: list[str], *, max_len: int, device, batch_size: int = 512,
                   ids: list[list[int]] | None = None, label: str = "score", bar: bool = True) -> np.ndarray:
    """A student's logits for ``texts`` (in order), computed in length-sorted batches; ``ids``: the
    texts already encoded (``encode(..., special_tokens=model.special_tokens)``). A progress bar
    (``label``) unless ``bar`` is false or the texts fit one batch, as ``teacher.score``."""
    ensure_eval(model)
    if ids is None:
        ids = encode_packed(tokenizer, texts, max_len=max_len, special_tokens=model.special_tokens)
    out = None
    with progress(disable=not bar or len(texts) <= batch_size) as bars:  # scoring a large pool is minutes of work to watch
        task = bars.add_task(label, total=len(texts), unit="samples")
        for idx, input_ids, mask in iter_padded(ids, spread_by_length(sorted_batches(lengths_of(ids), batch_size)), tokenizer.pad_token_id,
                                             min_len=model.min_len, multiple=model.pad_multiple):
            logits = model(input_ids.to(device), mask.to(device)).float().cpu().numpy()
            if out is None:
                out = np.zeros((len(texts), logits.shape[1]), dtype=np.float32)
            out[idx] = logits
            bars.update(task, advance=len(idx))
    # no texts (a torchrun process whose share of a small fold is empty): no rows, as many columns as classes,
    # so that the processes' parts join (a (0, 0) part broke the join)
    return out if out is not None else np.zeros((0, model.num_classes), dtype=np.float32)


def load_student(directory: Path, device) -> tuple[Any, Any, dict]:
    """``(model, tokenizer, meta)`` from a directory written by ``distill.save_student``."""
    from transformers import AutoTokenizer

    from .students import build_student

    directory = Path(directory)
    try:
        try:
            meta = json.loads((directory / STUDENT_CONFIG).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:  # cut short or damaged: "line 4 column 1" named no file (kd predict's input's line?)
            raise KdError(f"cannot load the student in {directory}: {STUDENT_CONFIG} is not valid JSON ({exc})") from None
        try:
            model = build_student(_student_config(meta))
        except KdError as exc:  # a damaged or hand-edited student.json: the file and field, not a TypeError
            raise KdError(f"cannot load the student in {directory}: {STUDENT_CONFIG}: {exc}") from None
        try:
            weights = torch.load(directory / STUDENT_WEIGHTS, map_location="cpu", weights_only=True)
        except OSError:
            raise
        except Exception:  # not a torch.save file: a Git LFS pointer, a damaged copy (random bytes stop torch's
            # unpickler wherever they first make no sense: UnpicklingError, EOFError, IndexError, KeyError...)
            raise KdError(f"cannot load the student in {directory}: {STUDENT_WEIGHTS} is not a PyTorch weights file") from None
        unfit = _weights_unfit(model, weights)
        if unfit:  # (torch named every mismatched weight on a line of its own)
            raise KdError(f"cannot load the student in {directory}: {STUDENT_WEIGHTS} does not fit {STUDENT_CONFIG}: {unfit}")
        model.load_state_dict(weights)
        tokenizer = AutoTokenizer.from_pretrained(directory)
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise KdError(f"cannot load the student in {directory}: {exc}") from None
    if len(tokenizer) <= len(set(tokenizer.all_special_ids)):  # (transformers 5 makes an empty one where it finds no files:
        # a folder half removed by `kd runs delete` or an --overwrite while it loaded, a copy without it, read every text as [UNK])
        raise KdError(f"cannot load the student in {directory}: its tokenizer is missing (the vocabulary is the "
                      f"{len(tokenizer)} special tokens alone)")
    return model.to(device).eval(), tokenizer, meta


def _student_config(meta):
    """The ``StudentConfig`` of ``student.json``, its ``max_len`` and ``classes`` checked too (a
    KdError naming the field)."""
    from .students import StudentConfig

    if not isinstance(meta, dict):
        raise KdError(f"a {type(meta).__name__}, not an object")
    for key in ("student", "max_len", "classes"):
        if key not in meta:
            raise KdError(f"field {key!r} is missing")
    max_len, classes, student = meta["max_len"], meta["classes"], meta["student"]
    if not is_whole(max_len) or max_len < 1:
        raise KdError(f"field 'max_len' is {max_len!r}")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes) or len(set(classes)) != len(classes) or not classes:
        raise KdError(f"field 'classes' is {classes!r}")
    config = StudentConfig.from_dict(student)
    if config.num_classes != len(classes):
        raise KdError(f"field 'classes' names {len(classes)} classes for a student of {config.num_classes} (num_classes)")
    if config.kind == "transformer" and config.bert is not None:  # (a longer text failed in its embeddings, a traceback)
        from .students import readable_positions

        positions = readable_positions(config.bert) if is_whole(config.bert.get("max_position_embeddings")) else None
        if positions is not None and max_len > positions:
            raise KdError(f"field 'max_len' is {max_len}: the transformer student reads {positions} positions")
    return config


def _weights_unfit(model, weights) -> str | None:
    """How a loaded ``student.pt`` does not fit the model its configuration builds (the first weight
    missing, extra or of another shape), or None."""
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        return "it holds no weights by name"
    expected = model.state_dict()
    for name, tensor in expected.items():
        if name not in weights:
            return f"weight {name} is missing"
        if tuple(weights[name].shape) != tuple(tensor.shape):
            return f"weight {name} is {tuple(weights[name].shape)} in the file, {tuple(tensor.shape)} by the configuration"
    extra = [name for name in weights if name not in expected]
    return f"weight {extra[0]} is not the configuration's" if extra else None


def _check_unmoved(store: Store, run: str, stage) -> None:
    """Refuse a model whose stage was renamed, moved or deleted while it loaded: an ``--overwrite``
    starting parks the old stage (its folder moved to ``NAME~parked-ID``) and writes the new model
    where the old one was, so the files read may be neither's (the error said "cannot load ... as a
    sequence classifier: Repo id must be in the form ...", or the new model answered unannounced)."""
    now = next((s for s in store.stages_of(run) if s.id == stage.id), None)
    if now is not None and now.name == stage.name and now.artifact_path == stage.artifact_path and Path(stage.artifact_path).exists():
        return
    how = "replaced or deleted" if now is None else f"replaced (an --overwrite started; until it ends, --model {now.name} serves it)" if now.name != stage.name else "moved"
    raise KdError(f"stage {stage.name!r} of run {run!r} was {how} while its model loaded: run this again")


def _early_exit_stage(stage) -> bool:
    """Whether ``stage`` made an early-exit model: its folder says so, or its config (a folder that lost
    early_exit.json is a damaged early-exit model, not a student)."""
    from .early_exit import is_early_exit

    return stage.kind == "distill" and (is_early_exit(stage.artifact_path) or (stage.config or {}).get("student") == "early-exit")


def _speed_refused(store: Store, run: str, stage) -> str:
    """Why ``--speed`` is refused for ``stage``: it is no early-exit model; the run's early-exit
    stages, where it has some, are the ones to name (not "kd distill --student early-exit", which
    told a run that has one to train another)."""
    exits = [s.name for s in store.stages_of(run) if s.status == "succeeded" and _early_exit_stage(s)]
    if exits:
        return (f"--speed needs an early-exit model, and stage {stage.name!r} is not one: run {run!r} has "
                f"{', '.join(exits)} (--model {exits[-1]})")
    return f"--speed needs an early-exit model, and run {run!r} has none (kd distill --student early-exit trains one)"


def _teach_stage(store: Store, run: str):
    """``run``'s teach stage, or while ``kd teach --overwrite`` replaces it (or was killed doing so) the
    parked one it replaces, which serves until then, as a parked student does (README)."""
    try:
        return store.find_stage(run, "teach")
    except KdError:
        parked = [s for s in store.stages_of(run) if s.kind == "teach" and s.status == "succeeded" and PARKED in s.name]
        if parked:
            return parked[-1]
        raise


def _run_teacher(store: Store, run: str):
    """``run``'s teach stage (``_teach_stage``); where it has none but its students learned from other runs'
    teachers (``kd distill --teacher-run A``), the refusal names those runs, not only `kd teach` in this one."""
    try:
        return _teach_stage(store, run)
    except KdError as exc:
        raise teachers_elsewhere(store, run, exc, "`--run {} --model teacher`") from None


def teachers_elsewhere(store: Store, run: str, exc: KdError, advice: str) -> KdError:
    """``exc`` (``run`` has no teacher), naming the other runs whose teachers its students learned from
    (``kd distill --teacher-run A``; not one deleted since) and ``advice`` for the first, where there are such."""
    others = list(dict.fromkeys(r for s in store.stages_of(run) if s.kind == "distill"
                                for r in (s.config or {}).get("teacher_runs") or [] if r != run and store.run_exists(r)))
    if not others:
        return exc
    return KdError(f"{exc}; its students learned from the teacher{'s' * (len(others) > 1)} of "
                   f"run{'s' * (len(others) > 1)} {', '.join(others)} ({advice.format(others[0])})")


def default_student(store: Store, run: str):
    """The stage ``--model student`` names: the latest succeeded distill stage (by kind: one named
    `distill` is not preferred, nor a failed one an obstacle), passing over fold students (``kd distill
    --folds``: votes for ``kd labels detect``) where the run has another student; ``None``: no student."""
    students = [s for s in store.stages_of(run) if s.kind == "distill" and s.status == "succeeded"]
    models = [s for s in students if not fold_count(s.config)]
    return (models or students or [None])[-1]


def model_stage(store: Store, run: str, which: str = "student"):
    """The teach or distill stage ``which`` names (as ``Predictor.from_run`` reads it), found without loading it."""
    if which == "student":
        stage = default_student(store, run) or _teach_stage(store, run)
    elif which in ("teacher", "teach"):  # (the teacher's stage name, as `kd runs` lists it: its refusal names the same runs)
        stage = _run_teacher(store, run)
    else:
        stage = store.find_stage(run, which, kinds=("teach", "distill"))
    if stage.kind not in ("teach", "distill"):
        raise KdError(f"stage {stage.name!r} is a {stage.kind} stage, not a model: use a teach or distill stage")
    return stage


@dataclass
class Predictor:
    """A loaded model with its class names; ``logits(texts)`` works for teachers and students alike."""

    kind: str  # "teacher" or "student"
    stage_name: str
    models: list[Any]  # several for an out-of-fold teacher: their probabilities are averaged
    tokenizer: Any
    class_names: list[str]
    max_len: int
    device: torch.device

    @classmethod
    def from_run(
        cls, store: Store, run: str, which: str = "student", device: str = "auto", *,
        speed: float | None = None, uncertainty: str | None = None, speed_if_early_exit: bool = False,
    ) -> "Predictor":
        """``which``: ``student`` (latest distill stage, else the teacher), ``teacher``, or a stage name.

        An early-exit stage gives an ``EarlyExitPredictor`` (same interface) at ``speed``; another
        model refuses a ``speed`` unless ``speed_if_early_exit`` (a config file's default: it applies
        where it can).
        """
        dev = pick_device(device)
        stage = model_stage(store, run, which)
        if not stage.artifact_path or not Path(stage.artifact_path).exists():
            raise missing_model(stage)
        try:
            predictor = cls._load(store, run, stage, dev, device, speed, uncertainty, speed_if_early_exit)
        except KdError:
            _check_unmoved(store, run, stage)  # (an --overwrite moving the folder away read as a model kd cannot load)
            raise
        _check_unmoved(store, run, stage)
        check_unchanged(stage)  # (after the load, whose refusals name the file and field a hand edit broke)
        return predictor

    @classmethod
    def _load(cls, store: Store, run: str, stage, dev: torch.device, device: str, speed: float | None,
              uncertainty: str | None, speed_if_early_exit: bool) -> "Predictor":
        """The model of ``stage`` (found, its folder there), as ``from_run`` returns it."""
        from .early_exit import EarlyExitPredictor

        if _early_exit_stage(stage):
            return EarlyExitPredictor.from_directory(stage.artifact_path, device=device, speed=speed, uncertainty=uncertainty, stage_name=stage.name)
        if speed is not None and not speed_if_early_exit:
            raise KdError(_speed_refused(store, run, stage))
        if stage.kind == "distill":
            k = fold_count(stage.config)  # --folds K: K students, their probabilities averaged
            loaded = [load_student(Path(stage.artifact_path) / f"fold-{i}" if k else Path(stage.artifact_path), dev) for i in range(max(k, 1))]
            _, tokenizer, meta = loaded[0]
            return cls("student", stage.name, [m for m, _, _ in loaded], tokenizer, meta["classes"], meta["max_len"], dev)
        if stage.kind == "teach":
            from .teacher import load_classifier, model_dirs

            names = stage.config.get("classes") or store.class_names()
            loaded = [load_classifier(d, names) for d in model_dirs(stage)]
            models = [m.to(dev).eval() for _, m in loaded]
            return cls("teacher", stage.name, models, loaded[0][0], names, stage.config.get("max_len", 128), dev)
        raise KdError(f"stage {stage.name!r} is a {stage.kind} stage, not a model: use a teach or distill stage")

    def logits(self, texts: list[str], *, batch_size: int = 256, ids: list[list[int]] | None = None) -> np.ndarray:
        """Logits for ``texts`` (in order); ``ids``: the texts already encoded by ``encode``."""
        texts = text_list(texts)  # (one str was read as its characters, each a text: see textkey)
        if not texts:  # (a student's were of shape (0, 0))
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        if self.kind == "student":
            parts = [student_logits(m, self.tokenizer, texts, max_len=self.max_len, device=self.device, batch_size=batch_size, ids=ids, label="predict") for m in self.models]
        else:
            from .teacher import score

            parts = [score(m, self.tokenizer, texts, max_len=self.max_len, batch_size=batch_size, device=self.device, label="predict", ids=ids) for m in self.models]
        return parts[0] if len(parts) == 1 else average_probs_as_logits(parts)

    def encode(self, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
        """Token ids as the model reads them, and whether each text was cut to ``max_len``."""
        special = getattr(self.models[0], "special_tokens", True)
        return encode_flagged(self.tokenizer, texts, max_len=self.max_len, special_tokens=special)

    def predict(self, texts: list[str], *, batch_size: int = 256) -> list[dict[str, Any]]:
        """One dict per text: label, confidence, per-class probabilities, ``truncated`` (the text
        was longer than ``max_len`` tokens and only its start was read) and ``unknown`` (the vocabulary
        holds none of its tokens: ``char_encoder.unknown_only``). Each text is tokenized once."""
        texts = text_list(texts)  # (one str was answered as its characters, each a text: see textkey)
        if not texts:
            return []
        ids, cut = self.encode(texts)
        found = answers(softmax(self.logits(texts, batch_size=batch_size, ids=ids)), self.class_names)
        unknown = unknown_only(ids, self.tokenizer.unk_token_id, non_text_ids(self.tokenizer), cut)
        return [{**a, "truncated": c, "unknown": u} for a, c, u in zip(found, cut, unknown)]
