"""FastBERT-style early exit (Liu et al. 2020, "FastBERT: a Self-distilling BERT with Adaptive Inference Time").

The fine-tuned teacher (a Hugging Face sequence classifier of BERT's layout: BERT, RoBERTa, XLM-R,
ERNIE, ELECTRA) gets a small classifier, a *branch*, after every transformer layer but the last; the
last layer keeps the teacher's own head. Training is self-distillation: the backbone and the teacher head are frozen, and each
branch learns ``KL(teacher final distribution || branch distribution)`` (× T², temperature ``T``) on
the labeled train samples and, optionally, the unlabeled pool; no gold label is used.

At inference the layers run one by one. After layer ``i`` the branch's distribution is scored by an
uncertainty in ``[0, 1]``; samples whose uncertainty is ``<= speed`` exit with that branch's logits and
leave the batch, so the remaining layers run on the remaining rows only (and on fewer padding columns
when the longest rows have left). ``speed = 0`` computes no branch at all: every sample runs the whole
teacher and gets exactly its logits.

Uncertainties (pure functions of ``(n, classes)`` probabilities, below):

- ``entropy``: FastBERT's normalized entropy ``-sum p log p / log C``. Its value for the same top-class
  probability depends on the number of classes and on how the rest of the mass is spread: with
  ``p_max = 0.9`` it is 0.47 for 2 classes, 0.07 for 100 classes with the rest on one class, 0.17 for
  100 classes with the rest spread flat. With many classes a thin, flat tail of tiny probabilities
  dominates the sum, so one threshold means different things on different tasks and for samples of
  the same task.
- ``max_prob``: ``1 - max p`` (as in Schwartz et al. 2020, "The Right Tool for the Job"). It reads the
  same for 2 or 2,000 classes and ignores how the tail is spread: ``speed = 0.1`` means "exit once
  the branch gives its top class at least 90 %". Its range is ``[0, 1 - 1/C]``: for a binary task
  any ``speed >= 0.5`` exits every sample at the first layer. Chosen over a top-k entropy because it
  needs no ``k`` and is what a user can state as a requirement.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .batching import bucketed_batches, count_cut, encode, encode_flagged, encode_packed, iter_padded, lengths_of, pad, sorted_batches, spread_by_length
from .char_encoder import non_text_ids, unknown_only
from .errors import KdError
from .exit_speed import exit_shares, share_metrics
from .jsonl import is_number, is_whole
from .labels import read_labeled, record_labels_state
from .losses import kl_soft, temperature_refusal
from .metrics import classification_metrics
from .outputs import as_judged, store_outputs
from .probs import answers, softmax
from .progress import progress
from .runs import StageHandle, check_unchanged
from .speed import measure, speed_rows
from .store import Store, check_where
from .students import ENCODER_TYPES, encoder_flops_config, mean_early_exit_flops
from .schedules import check_epochs, check_lr
from .textkey import text_list
from .torchutil import StepLosses, adam_options, autocast, check_finite, count_parameters, ensure_eval, grad_scaler, pick_device, saving_model, scaled_step, set_seed, to_device

SUBDIR = "early-exit"
BRANCHES_FILE = "branches.pt"
CONFIG_FILE = "early_exit.json"
SPEEDS = (0.0, 0.1, 0.3, 0.5, 0.8)
POOLINGS = ("mean", "cls")


# uncertainty: pure functions ------------------------------------------------------------------
def normalized_entropy(probs: torch.Tensor) -> torch.Tensor:
    """FastBERT's uncertainty: ``-sum_i p_i log p_i / log C`` per row of ``(n, C)`` probabilities, in [0, 1].

    ``0 log 0`` counts as 0; with a single class the uncertainty is 0.
    """
    probs = probs.float()
    c = probs.shape[-1]
    if c < 2:
        return probs.new_zeros(probs.shape[:-1])
    plogp = torch.where(probs > 0, probs * torch.log(probs.clamp(min=1e-30)), torch.zeros_like(probs))
    return (-plogp.sum(dim=-1) / math.log(c)).clamp(0.0, 1.0)


def max_prob_uncertainty(probs: torch.Tensor) -> torch.Tensor:
    """``1 - max_i p_i`` per row, in ``[0, 1 - 1/C]``: independent of the class count and of the tail."""
    return (1.0 - probs.float().max(dim=-1).values).clamp(min=0.0)


UNCERTAINTIES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "entropy": normalized_entropy,
    "max_prob": max_prob_uncertainty,
}


def entropy_of_logits(logits: torch.Tensor) -> torch.Tensor:
    """``normalized_entropy(softmax(logits))`` in fewer operations (the serving loop runs it after
    every layer): ``-sum p log p / log C`` with ``log p`` from ``log_softmax``."""
    c = logits.shape[-1]
    if c < 2:
        return logits.new_zeros(logits.shape[:-1], dtype=torch.float32)
    logp = torch.log_softmax(logits.float(), dim=-1)
    return (logp.exp() * logp).sum(dim=-1).mul_(-1.0 / math.log(c)).clamp_(0.0, 1.0)


def max_prob_of_logits(logits: torch.Tensor) -> torch.Tensor:
    """``max_prob_uncertainty(softmax(logits))``: ``1 - exp(max log p)``."""
    return (1.0 - torch.log_softmax(logits.float(), dim=-1).max(dim=-1).values.exp()).clamp_(min=0.0)


LOGIT_UNCERTAINTIES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "entropy": entropy_of_logits,
    "max_prob": max_prob_of_logits,
}


def entropy_of_row(logits: list[float]) -> float:
    """``entropy_of_logits`` for one row given as Python floats: with a single text in the batch, the
    serving loop decides in plain Python instead of paying for six tensor operations per layer."""
    c = len(logits)
    if c < 2:
        return 0.0
    top = max(logits)
    log_z = math.log(sum(math.exp(x - top) for x in logits))
    h = -sum(math.exp(x - top - log_z) * (x - top - log_z) for x in logits) / math.log(c)
    return min(max(h, 0.0), 1.0)


def max_prob_of_row(logits: list[float]) -> float:
    """``max_prob_of_logits`` for one row given as Python floats."""
    top = max(logits)
    return max(1.0 - 1.0 / sum(math.exp(x - top) for x in logits), 0.0)


ROW_UNCERTAINTIES: dict[str, Callable[[list[float]], float]] = {
    "entropy": entropy_of_row,
    "max_prob": max_prob_of_row,
}


def first_layer_speed_note(speed: float, uncertainty: str, classes: int) -> str | None:
    """Where ``speed`` exits every text at the first layer because ``uncertainty`` never exceeds it:
    1 - the top probability (``max_prob``) is at most 1 - 1/C (0.5 on a binary task), the normalized
    entropy at most 1. ``None`` otherwise."""
    if uncertainty == "entropy" and classes >= 2 and speed >= 1.0:
        return (f"--speed {speed:g} with --uncertainty entropy: the normalized entropy is at most 1, so every text exits "
                "at the first layer; a speed below 1 lets some go on")
    if uncertainty != "max_prob" or classes < 2 or speed < 1 - 1 / classes:
        return None
    top = 1 - 1 / classes
    return (f"--speed {speed:g} with --uncertainty max_prob on {classes} classes: 1 - the top probability is at most "
            f"{top:.3g}, so every text exits at the first layer; a speed below {top:.3g} lets some go on")


def _uncertainty_fn(uncertainty: str | Callable) -> Callable[[torch.Tensor], torch.Tensor]:
    """The uncertainty as a function of a branch's *logits*: a name's logit form, or a function of
    probabilities (``UNCERTAINTIES``' signature) applied after a softmax."""
    if callable(uncertainty):
        return lambda logits: uncertainty(torch.softmax(logits.float(), dim=-1))
    try:
        return LOGIT_UNCERTAINTIES[uncertainty]
    except KeyError:
        raise KdError(f"unknown uncertainty {uncertainty!r}: choose from {', '.join(UNCERTAINTIES)}") from None


# configuration --------------------------------------------------------------------------------
@dataclass(frozen=True)
class EarlyExitConfig:
    epochs: int = 5
    lr: float = 1e-3  # branches only; the backbone is frozen
    batch_size: int = 32
    max_len: int | None = None  # None: the teacher's --max-len (speed 0 then reproduces its logits)
    speed: float = 0.3  # default exit threshold: model selection, stored outputs, serving
    max_loss: float | None = None  # points: serve at the speed chosen on dev for this budget instead
    uncertainty: str = "entropy"  # or "max_prob"
    temperature: float = 1.0
    unlabeled: bool | None = None  # None: use the unlabeled pool when the store has one
    where: str | None = None  # SQL condition on the samples: the train and pool rows learned from (None: all)
    branch_dim: int = 128
    pooling: str = "mean"  # "mean" over real tokens, or "cls"
    dropout: float = 0.1
    patience: int = 2
    eval_batch_size: int = 64  # scoring, and the batch size of the speed-up measurements
    timing_repeats: int = 5  # speed-ups: the median of this many side-by-side passes (the protocol's timings)
    seed: int = 42
    device: str = "auto"

    def validate(self) -> None:
        for option, value in (("--epochs", self.epochs), ("--batch-size", self.batch_size), ("the scoring batch size", self.eval_batch_size)):
            if value < 1:  # (one option a message: a config file's value is named only when it is at fault)
                raise KdError(f"{option} must be at least 1, got {value}")
        check_epochs(self.epochs)
        check_lr(self.lr)
        if self.max_len is not None and self.max_len < 2:
            raise KdError("--max-len must be at least 2")
        if not 0.0 <= self.speed <= 1.0:
            raise KdError(f"--speed must be in [0, 1], got {self.speed}")
        check_where(self.where, every="learn from every train and pool row", rereads="a rerun reads it again")
        if self.uncertainty not in UNCERTAINTIES:
            raise KdError(f"--uncertainty must be one of {', '.join(UNCERTAINTIES)}")
        if refusal := temperature_refusal("--temperature", self.temperature):
            raise KdError(refusal)
        if self.pooling not in POOLINGS:
            raise KdError(f"--pooling must be one of {', '.join(POOLINGS)}")
        if self.branch_dim < 1:  # (the option at fault, with its value: a config file's is then named too)
            raise KdError(f"--branch-dim must be positive, got {self.branch_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise KdError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.max_loss is not None and not 0.0 <= self.max_loss <= 100.0:
            raise KdError(f"--max-loss is in accuracy points, in [0, 100]; got {self.max_loss}")
        if self.patience < 1:
            raise KdError(f"--patience must be at least 1, got {self.patience}")
        if self.timing_repeats < 1:
            raise KdError(f"the timing repeats must be at least 1, got {self.timing_repeats}")


def config_dict(cfg: EarlyExitConfig) -> dict:
    return asdict(cfg)


# the model --------------------------------------------------------------------------------------
class Branch(nn.Module):
    """FastBERT's student classifier, kept small and without self-attention: pool the layer's hidden
    states (mean over real tokens, or [CLS]), project to ``dim`` with tanh, then a linear layer."""

    def __init__(self, hidden: int, dim: int, num_classes: int, *, pooling: str = "mean", dropout: float = 0.1):
        super().__init__()
        self.pooling = pooling
        self.proj = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(dim, num_classes)

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """[CLS], or the mean over real tokens (``mask=None``: nothing is padded, a plain mean)."""
        if self.pooling == "cls":
            return hidden[:, 0]
        if mask is None:
            return hidden.mean(dim=1)
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(torch.tanh(self.proj(self.pool(hidden, mask)))))

    def infer(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``forward`` in eval mode, for the serving loop: no module calls, no dropout
        (``mask=None``: nothing is padded, as for one text)."""
        x = torch.tanh(torch.nn.functional.linear(self.pool(hidden, mask), self.proj.weight, self.proj.bias))
        return torch.nn.functional.linear(x, self.out.weight, self.out.bias)


# model types whose layer-by-layer run (embeddings, encoder layers, head) is checked to equal their own
# forward (tests/test_early_exit.py); others, e.g. pre-LayerNorm XLM-R-XL or DeBERTa, are refused
LAYERWISE_TYPES = ENCODER_TYPES  # the BERT-layout encoders


def check_layerwise(kind: str) -> None:
    """Refuse a teacher of model type ``kind`` that early exit cannot run layer by layer."""
    if kind not in LAYERWISE_TYPES:  # run layer by layer, a model of another family may differ from its own forward
        raise KdError(
            f"early exit needs a BERT-layout sequence classifier ({', '.join(LAYERWISE_TYPES)}); this one is {kind!r}: "
            "choose --student textcnn, bigru or bilstm, or teach a teacher of one of those types"
        )


class EarlyExitModel(nn.Module):
    """A BERT-layout sequence classifier (``teacher``: BERT, RoBERTa, XLM-R, ERNIE, ELECTRA) with a
    branch after each of its first L-1 layers.

    Layer numbers are 1-based: a sample that exits after layer ``k`` used ``k`` layers; layer ``L``
    is the teacher's own head. The teacher always stays in eval mode and is never trained.
    """

    def __init__(self, teacher, *, branch_dim: int = 128, pooling: str = "mean", dropout: float = 0.1):
        super().__init__()
        check_layerwise(getattr(teacher.config, "model_type", type(teacher).__name__))
        self.teacher = teacher
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        cfg = teacher.config
        self.branch_dim, self.pooling, self.branch_dropout = branch_dim, pooling, dropout
        self.branches = nn.ModuleList(
            Branch(cfg.hidden_size, branch_dim, cfg.num_labels, pooling=pooling, dropout=dropout)
            for _ in range(cfg.num_hidden_layers - 1)
        )

    # pieces ---------------------------------------------------------------------------------
    @property
    def config(self):
        return self.teacher.config

    @property
    def num_layers(self) -> int:
        return len(self.teacher.base_model.encoder.layer)

    @property
    def num_classes(self) -> int:
        return self.teacher.config.num_labels

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # frozen: no dropout in the backbone, the targets stay the teacher's
        return self

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The encoder's input: embeddings (RoBERTa-style models number positions from the ids), then
        ELECTRA's projection to the hidden size where there is one."""
        base = self.teacher.base_model
        hidden = base.embeddings(input_ids=input_ids)
        project = getattr(base, "embeddings_project", None)
        return hidden if project is None else project(hidden)

    def attention_mask(self, mask: torch.Tensor, hidden: torch.Tensor):
        """The 4-D mask the encoder layers expect, built exactly as ``BertModel.forward`` builds it
        (for the configured attention implementation; ``None`` when nothing is padded)."""
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(config=self.teacher.base_model.config, inputs_embeds=hidden, attention_mask=mask)

    def layer(self, i: int, hidden: torch.Tensor, mask4d) -> torch.Tensor:
        """Encoder layer ``i`` (0-based); ``BertLayer.forward(hidden_states, attention_mask)`` returns a tensor."""
        return self.teacher.base_model.encoder.layer[i](hidden, mask4d)

    def teacher_head(self, hidden: torch.Tensor) -> torch.Tensor:
        """The teacher's own head on the last layer's states: BERT's and ERNIE's pooler, dropout (off in
        eval) and classifier; RoBERTa's, XLM-R's and ELECTRA's classification head reads the first
        token's states itself."""
        t = self.teacher
        pooler = getattr(t.base_model, "pooler", None)
        if pooler is not None and hasattr(t, "dropout"):
            return t.classifier(t.dropout(pooler(hidden)))
        return t.classifier(hidden)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Training view: ``(branch logits of layers 1..L-1, teacher logits)`` for the whole batch.

        The backbone runs without gradients; only the branches build a graph.
        """
        with torch.no_grad():
            hidden = self.embed(input_ids)
            mask4d = self.attention_mask(attention_mask, hidden)
            states = []
            for i in range(self.num_layers):
                hidden = self.layer(i, hidden, mask4d)
                states.append(hidden)
            teacher_logits = self.teacher_head(hidden)
        branch_logits = [b(h, attention_mask) for b, h in zip(self.branches, states)]
        return branch_logits, teacher_logits

    # save / load ------------------------------------------------------------------------------
    def save(self, directory: Path, *, tokenizer=None, **meta: Any) -> Path:
        """Backbone (``save_pretrained``), branches (``torch.save``) and a JSON config in ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.teacher.save_pretrained(directory)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)
        torch.save({k: v.detach().cpu() for k, v in self.branches.state_dict().items()}, directory / BRANCHES_FILE)
        info = {
            "branch_dim": self.branch_dim,
            "pooling": self.pooling,
            "dropout": self.branch_dropout,
            "num_layers": self.num_layers,
            "classes": [self.config.id2label[i] for i in range(self.num_classes)],
            **meta,
        }
        (directory / CONFIG_FILE).write_text(json.dumps(info, ensure_ascii=False, indent=2), encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: Path) -> "EarlyExitModel":
        """The model saved by ``save`` (on the CPU, in eval mode); its JSON config is ``model.meta``."""
        return load_early_exit(directory)[0]


def is_early_exit(directory: str | Path | None) -> bool:
    """Whether ``directory`` holds a model written by ``EarlyExitModel.save``."""
    return directory is not None and (Path(directory) / CONFIG_FILE).is_file()


def load_early_exit(directory: str | Path, device: str | torch.device = "cpu") -> tuple[EarlyExitModel, Any, dict]:
    """``(model, tokenizer, meta)`` from a directory written by ``EarlyExitModel.save``."""
    from transformers import AutoTokenizer

    from .teacher import load_classifier

    directory = Path(directory)
    try:
        try:
            meta = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:  # cut short or damaged: "line 3 column 14" named no file (kd predict's input's line?)
            raise KdError(f"cannot load the early-exit model in {directory}: {CONFIG_FILE} is not valid JSON ({exc})") from None
        _check_meta(directory / CONFIG_FILE, meta)
        _check_meta_fits(directory, meta)
        _, teacher = load_classifier(str(directory), meta["classes"])
        model = EarlyExitModel(teacher, branch_dim=meta["branch_dim"], pooling=meta["pooling"], dropout=meta.get("dropout", 0.1))
        try:
            branches = torch.load(directory / BRANCHES_FILE, map_location="cpu", weights_only=True)
        except OSError:
            raise
        except Exception:  # not a torch.save file: a Git LFS pointer, a damaged copy (random bytes stop torch's
            # unpickler wherever they first make no sense: UnpicklingError, EOFError, IndexError, KeyError...)
            raise KdError(f"cannot load the early-exit model in {directory}: {BRANCHES_FILE} is not a PyTorch weights file") from None
        width = getattr(branches.get("0.proj.weight") if isinstance(branches, dict) else None, "shape", (meta["branch_dim"],))[0]
        if width != meta["branch_dim"]:  # (torch's size-mismatch error: a dozen lines, the field unnamed)
            raise _bad_field(directory / CONFIG_FILE, "branch_dim", meta["branch_dim"], f"{width}, the width of the branches in {BRANCHES_FILE}")
        model.branches.load_state_dict(branches)
        tokenizer = AutoTokenizer.from_pretrained(directory)
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise KdError(f"cannot load the early-exit model in {directory}: {exc}") from None
    model.meta = meta
    return model.to(device).eval(), tokenizer, meta


def _bad_field(path: Path, field: str, value: Any, want: str) -> KdError:
    return KdError(f"{path}: field {field} is {json.dumps(value, ensure_ascii=False)[:40]}, not {want}: "
                   "re-train it (kd distill --student early-exit --overwrite)")


def _check_meta(path: Path, meta: Any) -> None:
    """One line naming the field of a damaged or hand-edited ``early_exit.json`` that kd never writes
    (``"speed": "fast"`` ended in a ValueError traceback, ``"speed": 2`` in an error about --speed
    that nobody typed)."""
    def bad(field: str, value: Any, want: str) -> KdError:
        return _bad_field(path, field, value, want)

    if not isinstance(meta, dict):
        raise bad("(the whole file)", meta, "a JSON object")
    classes = meta.get("classes")
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise bad("classes", classes, "a list of class names")
    if not is_whole(meta.get("branch_dim")) or meta["branch_dim"] < 1:
        raise bad("branch_dim", meta.get("branch_dim"), "a whole number of at least 1")
    if meta.get("pooling") not in POOLINGS:
        raise bad("pooling", meta.get("pooling"), f"one of {', '.join(POOLINGS)}")
    if "dropout" in meta and not (is_number(meta["dropout"]) and 0.0 <= meta["dropout"] < 1.0):
        raise bad("dropout", meta["dropout"], "a number in [0, 1)")
    if "max_len" in meta and not (is_whole(meta["max_len"]) and meta["max_len"] >= 1):
        raise bad("max_len", meta["max_len"], "a whole number of at least 1")
    if "speed" in meta and not (is_number(meta["speed"]) and 0.0 <= meta["speed"] <= 1.0):
        raise bad("speed", meta["speed"], "a number in [0, 1]")
    if "uncertainty" in meta and meta["uncertainty"] not in UNCERTAINTIES:
        raise bad("uncertainty", meta["uncertainty"], f"one of {', '.join(UNCERTAINTIES)}")


def _check_meta_fits(directory: Path, meta: dict) -> None:
    """The fields of ``early_exit.json`` that must agree with the saved backbone's ``config.json``:
    ``classes`` in its order (reordered names turned the teacher's head round but not the branches:
    a text that exited early got the other class) and a ``max_len`` within its positions (a longer
    one read a long text into a traceback)."""
    from transformers import AutoConfig

    from .teacher import ABSOLUTE_POSITION_OFFSET

    config = AutoConfig.from_pretrained(directory)
    trained = [str(config.id2label[i]) for i in sorted(config.id2label)] if config.id2label else []
    if trained and trained != meta["classes"]:
        raise _bad_field(directory / CONFIG_FILE, "classes", meta["classes"], f"the model's classes {json.dumps(trained, ensure_ascii=False)}, in that order")
    positions = getattr(config, "max_position_embeddings", None)
    if "max_len" in meta and isinstance(positions, int) and positions > 0:
        limit = positions - ABSOLUTE_POSITION_OFFSET.get(getattr(config, "model_type", ""), 0)
        if meta["max_len"] > limit:
            raise _bad_field(directory / CONFIG_FILE, "max_len", meta["max_len"], f"at most {limit} (the model's positions)")


# inference ----------------------------------------------------------------------------------------
@torch.no_grad()
def predict_logits(
    model: EarlyExitModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    speed: float,
    uncertainty: str | Callable[[torch.Tensor], torch.Tensor] = "entropy",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits (B, C) float32, exit_layer (B,) long, 1-based)`` with adaptive depth.

    After each layer but the last, the branch's uncertainty is computed for the rows still in the
    batch; rows with ``uncertainty <= speed`` take that branch's logits and are removed, and the next
    layers run on the rest only (trailing padding columns that no remaining row uses are cut too).
    ``speed <= 0`` computes no branch: the result is exactly the teacher's logits, every row at layer L.
    """
    score = _uncertainty_fn(uncertainty)
    score_row = ROW_UNCERTAINTIES.get(uncertainty) if isinstance(uncertainty, str) else None
    n_layers = model.num_layers
    batch = input_ids.shape[0]
    device = input_ids.device
    logits_out = torch.zeros((batch, model.num_classes), dtype=torch.float32, device=device)
    exit_layer = torch.full((batch,), n_layers, dtype=torch.long, device=device)
    if batch == 0:
        return logits_out, exit_layer
    rows = torch.arange(batch, device=device)
    mask = attention_mask
    hidden = model.embed(input_ids)
    mask4d = _layer_mask(model, mask, hidden)
    for i in range(n_layers):
        hidden = model.layer(i, hidden, mask4d)
        if i == n_layers - 1:
            logits_out[rows] = model.teacher_head(hidden).float()
            break
        if speed <= 0:
            continue
        branch = model.branches[i]
        if score_row is not None and len(rows) == 1 and isinstance(branch, Branch):
            # one text left (always so when serving one at a time): decide on Python floats
            logits = branch.infer(hidden, None if mask4d is None else mask)
            if score_row(logits[0].tolist()) <= speed:
                logits_out[rows] = logits.float()
                exit_layer[rows] = i + 1
                break
            continue
        logits = branch.infer(hidden, None if mask4d is None else mask) if isinstance(branch, Branch) else branch(hidden, mask)
        done = score(logits) <= speed
        if not bool(done.any()):
            continue
        logits_out[rows[done]] = logits[done].float()  # (under a GPU's autocast a branch answers in bf16/fp16)
        exit_layer[rows[done]] = i + 1
        keep = ~done
        if not bool(keep.any()):
            break
        rows, hidden, mask = rows[keep], hidden[keep], mask[keep]
        used = torch.nonzero(mask.any(dim=0)).flatten()
        width = int(used.max()) + 1 if len(used) else 1
        if width < mask.shape[1]:
            hidden, mask = hidden[:, :width], mask[:, :width]
        mask4d = _layer_mask(model, mask, hidden)
    return logits_out, exit_layer


def _layer_mask(model: EarlyExitModel, mask: torch.Tensor, hidden: torch.Tensor):
    """The layers' attention mask, or ``None`` when no position is padded (a single text, or a
    batch of equal lengths): attending to everything is what an all-ones mask means anyway, and
    building the 4-D mask is a measurable share of a one-text call."""
    return None if bool(mask.all()) else model.attention_mask(mask, hidden)


def early_exit_logits(
    model: EarlyExitModel,
    tokenizer,
    texts: list[str],
    *,
    max_len: int,
    speed: float,
    uncertainty: str = "entropy",
    batch_size: int = 64,
    device=None,
    ids: list[list[int]] | None = None,
    label: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(logits (n, C), exit layers (n,))`` for ``texts`` in order, in length-sorted batches;
    ``ids``: the texts already encoded; ``label``: a progress bar of that name (none for timing runs)."""
    ensure_eval(model)
    device = device or next(model.parameters()).device
    if ids is None:
        ids = encode_packed(tokenizer, texts, max_len=max_len)
    out = np.zeros((len(texts), model.num_classes), dtype=np.float32)
    layers = np.zeros(len(texts), dtype=np.int64)
    with progress(disable=label is None or len(texts) <= batch_size) as bars:  # every sample of a large store: minutes
        task = bars.add_task(label or "score", total=len(texts), unit="samples")
        for idx, input_ids, mask in iter_padded(ids, spread_by_length(sorted_batches(lengths_of(ids), batch_size)), tokenizer.pad_token_id):
            with autocast(device):
                logits, used = predict_logits(model, input_ids.to(device), mask.to(device), speed=speed, uncertainty=uncertainty)
            out[idx] = logits.float().cpu().numpy()
            layers[idx] = used.cpu().numpy()
            bars.update(task, advance=len(idx))
    return out, layers


@torch.no_grad()
def branch_kl(model: EarlyExitModel, tokenizer, texts: list[str], *, max_len: int, temperature: float = 1.0,
              batch_size: int = 64, device=None) -> float:
    """Mean over samples and branches of ``KL(teacher || branch)`` × T²: the training loss, on ``texts``."""
    ensure_eval(model)
    device = device or next(model.parameters()).device
    ids = encode(tokenizer, texts, max_len=max_len)
    total = 0.0
    for idx, input_ids, mask in iter_padded(ids, sorted_batches([len(x) for x in ids], batch_size), tokenizer.pad_token_id):
        with autocast(device):
            branch_logits, teacher_logits = model(input_ids.to(device), mask.to(device))
        per = torch.stack([kl_soft(b.float(), teacher_logits.float(), temperature=temperature) for b in branch_logits])
        total += float(per.mean(dim=0).sum())
    return total / max(len(texts), 1)


@torch.no_grad()
def all_exit_logits(model: EarlyExitModel, tokenizer, texts: list[str], *, max_len: int, batch_size: int = 64,
                    device=None) -> tuple[np.ndarray, np.ndarray]:
    """``(branch logits (n, L-1, C), full-model logits (n, C))`` for ``texts``: every exit in one pass,
    in float32 (no autocast: a speed chosen from these logits is served on the CPU in float32)."""
    ensure_eval(model)
    device = device or next(model.parameters()).device
    ids = encode(tokenizer, texts, max_len=max_len)
    branches = np.zeros((len(texts), model.num_layers - 1, model.num_classes), dtype=np.float32)
    final = np.zeros((len(texts), model.num_classes), dtype=np.float32)
    for idx, input_ids, mask in iter_padded(ids, sorted_batches([len(x) for x in ids], batch_size), tokenizer.pad_token_id):
        branch_logits, teacher_logits = model(input_ids.to(device), mask.to(device))
        branches[idx] = torch.stack(branch_logits, dim=1).float().cpu().numpy()
        final[idx] = teacher_logits.float().cpu().numpy()
    return branches, final


def calibrate_speed(model: EarlyExitModel, tokenizer, texts: list[str], labels: np.ndarray, *, max_len: int,
                    max_loss: float, uncertainty: str = "entropy", z: float = 1.0, batch_size: int = 64,
                    device=None) -> dict[str, float]:
    """The speed ``exit_speed.pick_speed`` chooses on ``texts`` (held out, labeled) for ``max_loss``
    points: speeds are raised while the accuracy loss plus ``z`` standard errors stays within it."""
    from .exit_speed import pick_speed

    if not len(texts):
        raise KdError("choosing a speed needs labeled held-out texts, and none were given")
    branches, final = all_exit_logits(model, tokenizer, texts, max_len=max_len, batch_size=batch_size, device=device)
    u = _uncertainty_fn(uncertainty)(torch.from_numpy(branches.reshape(-1, branches.shape[-1]))).numpy().reshape(branches.shape[:2])
    return pick_speed(u, branches.argmax(-1), final.argmax(-1), np.asarray(labels), max_loss=max_loss, z=z)


def measure_speeds(
    model: EarlyExitModel,
    tokenizer,
    texts: list[str],
    *,
    speeds: tuple[float, ...] = SPEEDS,
    max_len: int,
    uncertainty: str = "entropy",
    batch_size: int = 64,
    repeats: int = 5,
    device=None,
) -> dict[float, dict[str, Any]]:
    """For each speed: logits, exit layers and wall-clock seconds over ``texts``, measured side by side.

    The same padded batches are run at every speed, speeds interleaved batch by batch so that all
    of them see the same machine state; each speed's time is the median of ``repeats`` passes (after
    one warm-up batch), and ``spread`` their min and max. ``seconds`` includes tokenized-batch transfer but not tokenization.
    """
    ensure_eval(model)
    device = device or next(model.parameters()).device
    ids = encode(tokenizer, texts, max_len=max_len)
    batches = [(idx, *pad([ids[i] for i in idx], tokenizer.pad_token_id)) for idx in sorted_batches([len(x) for x in ids], batch_size)]
    out = {s: {"logits": np.zeros((len(texts), model.num_classes), np.float32), "layers": np.zeros(len(texts), np.int64), "seconds": math.inf} for s in speeds}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run(input_ids, mask, speed):
        with autocast(device):
            return predict_logits(model, input_ids.to(device), mask.to(device), speed=speed, uncertainty=uncertainty)

    if batches:
        for s in speeds:  # warm-up
            run(batches[0][1], batches[0][2], s)
    passes: dict[float, list[float]] = {s: [] for s in speeds}
    for r in range(repeats):
        total = dict.fromkeys(speeds, 0.0)
        for idx, input_ids, mask in batches:
            for s in speeds:
                sync()
                start = time.perf_counter()
                logits, used = run(input_ids, mask, s)
                sync()
                total[s] += time.perf_counter() - start
                if r == 0:
                    out[s]["logits"][idx] = logits.float().cpu().numpy()
                    out[s]["layers"][idx] = used.cpu().numpy()
        for s in speeds:
            passes[s].append(total[s])
    for s in speeds:
        if passes[s]:
            out[s]["seconds"] = float(np.median(passes[s]))
            out[s]["spread"] = (min(passes[s]), max(passes[s]))
    return out


def speed_tag(speed: float) -> str:
    """How a speed names its figures (``accuracy@0.3``): ``--speed 0.1000001`` is not the grid's 0.1."""
    return f"{speed:g}" if float(f"{speed:g}") == speed else repr(float(speed))


def speed_metrics(measured: dict[float, dict[str, Any]], labels: np.ndarray, names: list[str]) -> dict[str, float]:
    """``accuracy@S``, ``macro_f1@S``, ``agreement@S`` (with speed 0), ``layers@S``, ``speedup@S`` per speed.

    ``speedup@S`` is wall-clock time at speed 0 over time at speed S (needs speed 0 among the speeds);
    ``layer_speedup@S`` the layers run at speed 0 over the mean run at S (what the wall clock
    approaches on an idle machine, without its noise; 1 where no text left early).
    Where no text left early at S, the pass at S ran every layer on the same batches, and the
    branches besides: it cannot be faster, and a measured speedup above 1 (a busy machine slowed
    the speed-0 pass) is recorded as 1; a slowdown is kept only where the passes tell it apart
    (``spread``: every pass at S slower than every pass at speed 0), else it is the machine's noise
    (two timings of the same work) and recorded as 1 too.
    """
    base = measured.get(0.0)
    out: dict[str, float] = {}
    for s, m in measured.items():
        pred = m["logits"].argmax(1)
        tag = speed_tag(s)
        if len(labels):
            cm = classification_metrics(labels, pred, num_classes=len(names), class_names=names)
            out[f"accuracy@{tag}"], out[f"macro_f1@{tag}"] = cm["accuracy"], cm["macro_f1"]
        out[f"layers@{tag}"] = float(m["layers"].mean()) if len(pred) else 0.0
        if base is not None:
            out[f"agreement@{tag}"] = float((pred == base["logits"].argmax(1)).mean()) if len(pred) else 0.0
            up = base["seconds"] / max(m["seconds"], 1e-12)
            if len(pred) and (m["layers"] >= base["layers"]).all():  # nothing exited: no speedup to claim
                up = min(up, 1.0)
                if up < 1.0 and not _slower_every_pass(m.get("spread"), base.get("spread")):
                    up = 1.0  # the same work timed twice: a slowdown the passes do not tell apart is noise
            out[f"speedup@{tag}"] = up
            full, ran = float(base["layers"].mean()) if len(pred) else 0.0, out[f"layers@{tag}"]
            out[f"layer_speedup@{tag}"] = full / ran if full and ran else 1.0
    return out


def _slower_every_pass(spread: tuple[float, float] | None, base: tuple[float, float] | None) -> bool:
    """Whether the passes at a speed, ``spread`` ``(min, max)`` seconds, were each slower than every
    pass at speed 0 (``base``); ``True`` where either spread is not recorded (a single figure each)."""
    if spread is None or base is None:
        return True
    return spread[0] > base[1]


# training -------------------------------------------------------------------------------------------
def train_early_exit(store: Store, stage: StageHandle, cfg: EarlyExitConfig, teacher_run: str | None = None) -> Path:
    """Self-distil the branches of the teacher of ``teacher_run`` (default: the stage's run), keep
    the best epoch, save the model, store outputs at the serving speed (``cfg.speed``, or the one
    chosen on dev for ``cfg.max_loss`` points) and per-speed figures on dev/test.

    The targets come from the teacher network itself, not from the stored logits; for an
    out-of-fold teacher (``kd teach --folds K``) the backbone is its first fold's model.
    """
    from .distill import load_teachers, training_set
    from .teacher import check_max_len, load_classifier, model_dirs

    cfg.validate()
    rng = set_seed(cfg.seed)
    device = pick_device(cfg.device)

    # 1. the teacher (classes checked against the store) and the data: train + pool, no labels needed
    names = store.class_names()
    run = teacher_run or stage.run
    teachers = load_teachers(store, [run], names)
    teacher_stage = teachers.stages[0]
    max_len = cfg.max_len or int(teacher_stage.config.get("max_len") or 128)
    (data, parts, dev, everything), labels = read_labeled(store, lambda: (  # the labels learned from, as they are when read,
        *training_set(store, teachers, use_pool=cfg.unlabeled, need_logits=False, where=cfg.where), store.samples(splits=["dev"], labeled=True),
        store.samples(include_dropped=True)))  # and the samples it scores (one ingested while it trains is not)
    record_labels_state(store, stage.id, labels)
    if cfg.max_loss is not None and not len(dev):
        raise KdError("--max-loss chooses the serving speed on the dev split, and the store has no labeled dev samples")
    tokenizer, teacher = load_classifier(model_dirs(teacher_stage)[0], names)
    check_unchanged(teacher_stage)  # (the model whose logits and figures the run recorded; after the load, which names a broken file)
    check_max_len(teacher.config, max_len, model_dirs(teacher_stage)[0])
    model = EarlyExitModel(teacher, branch_dim=cfg.branch_dim, pooling=cfg.pooling, dropout=cfg.dropout).to(device)
    if model.num_layers < 2:
        raise KdError("the teacher has a single layer: there is nothing to exit early from")
    ids = encode_packed(tokenizer, data.texts, max_len=max_len)
    lengths = ids.lengths
    # texts cut to --max-len (as the other students count them): kd distill warns when most are
    store.add_metrics(stage.id, "train", {"truncated": count_cut(tokenizer, data.texts, lengths, max_len=max_len), "texts": len(data)})
    params = list(model.branches.parameters())
    optimizer = torch.optim.Adam(params, lr=cfg.lr, **adam_options(device))
    dev_teacher = None
    if len(dev):
        dev_teacher = early_exit_logits(model, tokenizer, dev.texts, max_len=max_len, speed=0.0, batch_size=cfg.eval_batch_size, device=device)[0].argmax(1)

    # 2. train the branches; keep the epoch with the best dev accuracy at cfg.speed (ties: higher
    #    agreement with the teacher, then the lower branch KL on dev: the faithful branches serve
    #    every speed, while the layers used at this one speed would pick a less trained epoch
    #    for a few more early exits)
    best_key, best_state, best_epoch, stale = None, None, 0, 0
    scaler = grad_scaler(device)
    steps_per_epoch = -(-len(data) // cfg.batch_size)
    start = time.monotonic()
    with progress(extra="loss {task.fields[loss]}") as bar:
        task = bar.add_task("early-exit branches", total=steps_per_epoch * cfg.epochs, loss="-", unit="step")
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            losses = StepLosses(digits=4)
            for _idx, input_ids, mask in iter_padded(ids, bucketed_batches(lengths, cfg.batch_size, rng), tokenizer.pad_token_id):
                with autocast(device):
                    branch_logits, teacher_logits = model(to_device(input_ids, device), to_device(mask, device))
                target = teacher_logits.float()
                loss = torch.stack([kl_soft(b.float(), target, temperature=cfg.temperature).mean() for b in branch_logits]).mean()
                scaled_step(scaler, loss, optimizer, params, max_norm=5.0)  # (fp16 on a GPU without bf16: scaled, or small gradients vanish)
                optimizer.zero_grad(set_to_none=True)
                bar.update(task, advance=1, loss=losses.add(loss))
            store.add_metrics(stage.id, "train", {"loss": float(np.mean(losses.floats()))}, step=epoch)
            check_finite(model.branches, when=f"in epoch {epoch}")
            if not len(dev):
                best_epoch = epoch
                continue
            logits, used = early_exit_logits(model, tokenizer, dev.texts, max_len=max_len, speed=cfg.speed, uncertainty=cfg.uncertainty, batch_size=cfg.eval_batch_size, device=device)
            pred = logits.argmax(1)
            m = classification_metrics(dev.labels, pred, num_classes=len(names), class_names=names)
            agreement, layers = float((pred == dev_teacher).mean()), float(used.mean())
            kl = branch_kl(model, tokenizer, dev.texts, max_len=max_len, temperature=cfg.temperature, batch_size=cfg.eval_batch_size, device=device)
            store.add_metrics(stage.id, "dev", {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "agreement": agreement, "layers": layers, "kl": kl}, step=epoch)
            key = (m["accuracy"], agreement, -kl)
            if best_key is None or key > best_key:
                best_key, best_epoch, stale = key, epoch, 0
                best_state = {k: v.detach().cpu().clone() for k, v in model.branches.state_dict().items()}
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
    train_seconds = time.monotonic() - start
    if best_state is not None:
        model.branches.load_state_dict(best_state)
    ensure_eval(model)

    # 3. the serving speed: --speed, or the one chosen on dev for --max-loss points
    speed = cfg.speed
    if cfg.max_loss is not None:
        chosen = calibrate_speed(model, tokenizer, dev.texts, dev.labels, max_len=max_len, max_loss=cfg.max_loss,
                                 uncertainty=cfg.uncertainty, batch_size=cfg.eval_batch_size, device=device)
        speed = chosen["speed"]
        store.add_metrics(stage.id, "dev", {f"chosen_{k}": v for k, v in chosen.items()})

    # 4. save: backbone, branches, tokenizer and the serving defaults, so the directory serves alone
    out_dir = stage.artifact_dir / SUBDIR
    with saving_model(out_dir):
        model.save(out_dir, tokenizer=tokenizer, max_len=max_len, speed=speed, uncertainty=cfg.uncertainty,
                   teacher_run=run, teacher_dir=model_dirs(teacher_stage)[0])
    stage.record_artifact(out_dir)

    # 5. outputs for every sample at the serving speed; per-speed figures on dev and test
    logits, used = early_exit_logits(model, tokenizer, everything.texts, max_len=max_len, speed=speed, uncertainty=cfg.uncertainty, batch_size=cfg.eval_batch_size, device=device, label="logits")
    store_outputs(store, stage.id, everything, logits, names)
    speeds = tuple(sorted(set(SPEEDS) | {float(speed)}))
    judged = as_judged(store, stage.id, everything)  # the labels the stage read, as its other figures
    flops_cfg = encoder_flops_config(model.config, len(names))  # (every layer-wise type is a BERT-layout encoder)

    def mean_flops(lengths, layers: np.ndarray, at: float) -> int:
        return mean_early_exit_flops(flops_cfg, lengths, layers, branch_dim=cfg.branch_dim, branches=at > 0)

    for split in ("dev", "test"):
        part = judged.of_split(split)
        if len(part):
            measured = measure_speeds(model, tokenizer, part.texts, speeds=speeds, max_len=max_len, uncertainty=cfg.uncertainty, batch_size=cfg.eval_batch_size, repeats=cfg.timing_repeats, device=device)
            shares = exit_shares(measured[float(speed)]["layers"], model.num_layers)  # at the serving speed
            # FastBERT's cost figure: FLOPs per text at each speed (its layers, the branches it passed, the head if reached)
            lengths = encode_packed(tokenizer, part.texts, max_len=max_len).lengths if flops_cfg is not None else None  # (once a split)
            flops = {} if flops_cfg is None else {f"flops@{speed_tag(s)}": mean_flops(lengths, m["layers"], s) for s, m in measured.items()}
            store.add_metrics(stage.id, split, {**speed_metrics(measured, part.labels, names),
                                                **share_metrics(shares), **flops})
    # CPU latency and throughput as every model stage has them, at the serving speed (the speed its
    # accuracy above is at, so `kd report --compare` sets like against like; 0 would be full depth)
    cpu = torch.device("cpu")
    model.to(cpu)
    timed = speed_rows(everything)  # FLOPs over the texts timed, as every model stage's, at the serving speed
    timed_texts = [everything.texts[i] for i in timed]
    if flops_cfg is not None:
        store.add_metrics(stage.id, "all", {"flops_per_sample": mean_flops(encode_packed(tokenizer, timed_texts, max_len=max_len).lengths,
                                                                           used[timed], speed)})
    store.add_metrics(stage.id, "all", measure(
        lambda texts, bs: early_exit_logits(model, tokenizer, texts, max_len=max_len, speed=speed, uncertainty=cfg.uncertainty,
                                            batch_size=bs, device=cpu)[0],
        timed_texts,
    ))
    store.add_metrics(
        stage.id,
        "all",
        {
            "best_epoch": best_epoch,
            "speed": speed,
            "train_seconds": train_seconds,
            "parameters": count_parameters(model),
            "branch_parameters": sum(p.numel() for p in params),
            "num_layers": model.num_layers,
            "layers": float(used.mean()) if len(used) else 0.0,
            "max_len": max_len,
            "train_samples": parts["labeled"],
            "pool_samples": parts["pool"],
            "pool_without_logits": parts["pool_without_logits"],  # left out (kd distill warns, naming the fix)
        },
    )
    return out_dir


# serving --------------------------------------------------------------------------------------------
class EarlyExitPredictor:
    """A loaded early-exit model with the interface of ``predictor.Predictor`` (``logits``, ``predict``,
    ``encode``, ``class_names``, ``max_len``), plus a ``speed`` and the exit layer of each answer.

    ``predict`` dicts carry ``layer`` (1-based exit layer) and ``layers`` (the model's depth).
    """

    kind = "early-exit"

    def __init__(self, model: EarlyExitModel, tokenizer, meta: dict, *, stage_name: str = SUBDIR,
                 speed: float | None = None, uncertainty: str | None = None, device: torch.device | None = None):
        self.model, self.tokenizer, self.meta, self.stage_name = model, tokenizer, meta, stage_name
        self.models = [model]
        self.class_names: list[str] = list(meta["classes"])
        self.max_len: int = int(meta.get("max_len", 128))
        self.speed = float(meta.get("speed", 0.0) if speed is None else speed)
        self.uncertainty = uncertainty or meta.get("uncertainty", "entropy")
        self.device = device or next(model.parameters()).device
        _uncertainty_fn(self.uncertainty)
        if not 0.0 <= self.speed <= 1.0:
            raise KdError(f"--speed must be in [0, 1], got {self.speed}")
        self.last_layers = np.zeros(0, dtype=np.int64)

    @classmethod
    def from_directory(cls, directory: str | Path, *, device: str = "auto", speed: float | None = None,
                       uncertainty: str | None = None, stage_name: str = SUBDIR) -> "EarlyExitPredictor":
        dev = pick_device(device)
        model, tokenizer, meta = load_early_exit(directory, dev)
        return cls(model, tokenizer, meta, stage_name=stage_name, speed=speed, uncertainty=uncertainty, device=dev)

    def logits_and_layers(self, texts: list[str], *, batch_size: int = 256, ids: list[list[int]] | None = None) -> tuple[np.ndarray, np.ndarray]:
        texts = text_list(texts)  # (one str was read as its characters, each a text: see textkey)
        return early_exit_logits(self.model, self.tokenizer, texts, max_len=self.max_len, speed=self.speed,
                                 uncertainty=self.uncertainty, batch_size=batch_size, device=self.device, ids=ids, label="predict")

    def logits(self, texts: list[str], *, batch_size: int = 256, ids: list[list[int]] | None = None) -> np.ndarray:
        logits, self.last_layers = self.logits_and_layers(texts, batch_size=batch_size, ids=ids)
        return logits

    def encode(self, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
        """Token ids as the model reads them, and whether each text was cut to ``max_len``."""
        return encode_flagged(self.tokenizer, texts, max_len=self.max_len)

    def predict(self, texts: list[str], *, batch_size: int = 256) -> list[dict[str, Any]]:
        """As ``Predictor.predict``, plus the exit ``layer`` of each answer and the model's ``layers``."""
        texts = text_list(texts)  # (one str was answered as its characters, each a text: see textkey)
        if not texts:
            return []
        ids, cut = self.encode(texts)
        logits, self.last_layers = self.logits_and_layers(texts, batch_size=batch_size, ids=ids)
        found = answers(softmax(logits), self.class_names)
        unknown = unknown_only(ids, self.tokenizer.unk_token_id, non_text_ids(self.tokenizer), cut)
        return [{**a, "truncated": c, "unknown": u, "layer": int(k), "layers": self.model.num_layers}
                for a, c, u, k in zip(found, cut, unknown, self.last_layers)]
