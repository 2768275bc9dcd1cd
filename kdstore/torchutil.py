"""Seeding and device choice, shared by every training stage."""

from __future__ import annotations

import contextlib
import os
import random
import re
import stat
import sys
from pathlib import Path

import numpy as np
import torch

from .errors import KdError

DEVICES = ("auto", "cpu", "cuda")


def set_seed(seed: int) -> np.random.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise KdError("--device cuda: no CUDA device is available here (use --device cpu or auto)")
    if name not in DEVICES:
        raise KdError(f"unknown device {name!r}: choose from {', '.join(DEVICES)}")
    return torch.device(name)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device``, for a training step. On a GPU it is copied from pinned memory
    without waiting: a plain ``.to("cuda")`` from pageable memory makes the host wait until every
    kernel queued before it has run, so the next batch's padding and kernel launches never overlapped
    the GPU's work on the step before (a small model's step then costs launch time plus GPU time)."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def adam_options(device: torch.device) -> dict:
    """Keyword options for torch's Adam and AdamW: on a GPU, one fused kernel updates every
    parameter (the default launches several kernels for each group at each step)."""
    return {"fused": True} if device.type == "cuda" else {}


def autocast(device: torch.device):
    """bf16 autocast on a GPU that supports it, fp16 on one that does not, nothing on the CPU (a
    plain ``nullcontext``: even a disabled ``torch.autocast`` costs time on a one-text call)."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for the fp16 autocast of :func:`autocast` (a GPU without bf16), so small
    gradients do not underflow; a pass-through everywhere else (bf16 and fp32 need none)."""
    enabled = device.type == "cuda" and not torch.cuda.is_bf16_supported()
    return torch.amp.GradScaler("cuda", enabled=enabled)


def scaled_step(scaler: torch.amp.GradScaler, loss: torch.Tensor, optimizer, params, *, max_norm: float) -> bool:
    """``backward``, gradient clipping to ``max_norm`` and ``optimizer.step`` through ``scaler``.
    False when the scaler skipped the step (fp16 gradients overflowed: it lowers its scale and
    tries again), so that a learning-rate schedule does not advance over a step never taken."""
    scaler.scale(loss).backward()
    return scaled_update(scaler, optimizer, params, max_norm=max_norm)


def scaled_update(scaler: torch.amp.GradScaler, optimizer, params, *, max_norm: float) -> bool:
    """:func:`scaled_step` after its ``backward`` (or several: ``--grad-accum``'s pieces, each
    ``scaler.scale(loss).backward()``): clipping, the step and the scaler's update."""
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    scaler.step(optimizer)
    if not scaler.is_enabled():
        return True
    before = scaler.get_scale()
    scaler.update()
    return scaler.get_scale() >= before  # (update halves the scale after a skipped step, never otherwise)


class StepLosses:
    """Each training step's loss, kept on its device until read: an ``.item()`` a step made a GPU wait
    for the host every step, so the next batch's padding and kernel launches no longer overlapped the
    step before. ``add`` returns the loss a progress bar shows: the first step's, then the latest every
    ``every`` steps (one transfer each); ``floats`` reads them all at once, at the end of an epoch.
    Under torchrun (``dist``) the loss shown is the whole batch's, every rank's weighted share together
    (a collective at those steps: every rank adds the same steps), not rank 0's share alone.

    They are written into one buffer on the loss's device (grown by doubling), not kept as a tensor
    each: thousands of 4-byte tensors, each allocated among a step's freed temporaries, kept the
    allocator from reusing or returning that memory (a 400k-text pool's epoch of 6,500 steps grew a
    textcnn distill's memory by 1 GB, 0.85 GB to 1.8 GB)."""

    def __init__(self, *, every: int = 50, digits: int = 3, dist=None):
        self.buffer: torch.Tensor | None = None
        self.count = 0
        self.every, self.digits, self.shown, self.dist = every, digits, "-", dist

    def add(self, loss: torch.Tensor, weight: float = 1.0) -> str:
        """Keep ``loss * weight`` (a rank's share of a batch's mean); returns the text to show."""
        value = loss.detach().float() * weight
        if self.buffer is None or self.count == len(self.buffer):
            grown = torch.zeros(max(64, 2 * self.count), dtype=torch.float32, device=value.device)
            if self.buffer is not None:
                grown[: self.count] = self.buffer
            self.buffer = grown
        self.buffer[self.count] = value  # (in place, on the device: no wait for the host)
        self.count += 1
        if self.count == 1 or self.count % self.every == 0:
            if self.dist is not None and self.dist.active:  # the shares' weighted sum over the ranks: the batch's mean
                shown = float(self.dist.sum_across([float(value)])[0]) / self.dist.world
            else:
                shown = float(loss.detach())
            self.shown = f"{shown:.{self.digits}f}"
        return self.shown

    @property
    def values(self) -> torch.Tensor:
        """The losses kept so far (a view of the buffer)."""
        return self.buffer[: self.count] if self.buffer is not None else torch.zeros(0)

    def floats(self) -> list[float]:
        return self.values.double().cpu().tolist()


def host_floats(values: list) -> list[float]:
    """Losses kept on a device (0-d tensors) or floats, as floats: one transfer for them all."""
    if values and isinstance(values[0], torch.Tensor):
        return torch.stack(values).double().cpu().tolist()
    return [float(v) for v in values]


def nonfinite_weight(module: torch.nn.Module) -> str | None:
    """The name of the first weight holding a nan or inf (training has diverged), else None."""
    return next((name for name, p in module.named_parameters() if not bool(torch.isfinite(p).all())), None)


def diverged(name: str, when: str) -> str:
    return f"training diverged {when}: weight {name} is no longer finite (nan or inf); lower --lr"


def check_finite(module: torch.nn.Module, *, when: str) -> None:
    """Fail when training has diverged: a weight that is nan or inf (a too high learning rate, a bad
    batch) would otherwise go on into every logit the stage stores, and argmax of nan is class 0."""
    bad = nonfinite_weight(module)
    if bad is not None:
        raise KdError(diverged(bad, when))


def stop_if_diverged(module: torch.nn.Module, best: "BestCheckpoint", *, epoch: int, tag: str = "", warn: bool = True,
                     unit: str = "epoch") -> bool:
    """After an epoch: True (stop, keep the best epoch) when the weights are no longer finite but an
    earlier epoch was scored on dev; a KdError when there is none to fall back on (no dev split, or
    the first epoch). A teacher that diverges late keeps its best epoch, as early stopping would.
    ``warn=False``: no warning printed (a torchrun rank other than 0: rank 0 says it once). ``unit="step"``:
    ``epoch`` is a training step, scored every N steps (``kd distill --eval-every``)."""
    bad = nonfinite_weight(module)
    if bad is None:
        return False
    when = f"in {unit} {epoch}" + (f" ({tag.rstrip('/')})" if tag else "")
    if best.state is None:
        raise KdError(diverged(bad, when))
    if warn:
        print(f"warning: {diverged(bad, when)}: stopped, keeping {unit} {best.epoch}", file=sys.stderr)
    return True


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class BestCheckpoint:
    """Early stopping: keeps the weights of the best-scoring epoch and says when patience runs out."""

    def __init__(self, patience: int):
        self.patience = patience
        self.score = float("-inf")
        self.loss = float("inf")
        self.epoch = 0
        self.state: dict | None = None
        self._stale = 0

    def update(self, score: float, model: torch.nn.Module, epoch: int, *, loss: float | None = None, warming: bool = False) -> bool:
        """Record an epoch's dev score (and dev loss, which breaks a tie of scores: the lower one is
        better); returns True when training should stop. ``warming``: the score is of a model still in
        its learning-rate warmup, kept if best but not counted toward the patience (``--epochs 25`` warms
        up over 2.5 epochs: ``--patience 2`` stopped a teacher before its rate ever reached ``--lr``)."""
        loss = float("inf") if loss is None else loss
        if score > self.score or (score == self.score and loss < self.loss):
            self.score, self.loss, self.epoch, self._stale = score, loss, epoch, 0
            self.state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            return False
        if warming:
            return False
        self._stale += 1
        return self._stale >= self.patience

    def restore(self, model: torch.nn.Module) -> None:
        if self.state is not None:
            model.load_state_dict(self.state)


def ensure_eval(model: torch.nn.Module) -> torch.nn.Module:
    """``model.eval()`` only when the model is in training mode: ``eval()`` walks every sub-module,
    which costs about half a millisecond on a 6-layer BERT, a large share of a one-text prediction."""
    if model.training:
        model.eval()
    return model


@contextlib.contextmanager
def saving_model(out_dir) -> "contextlib.AbstractContextManager[None]":
    """Saving a model to ``out_dir``: a write that fails (a full disk) is one line naming the folder,
    not torch's or safetensors' traceback (``RuntimeError: ... unexpected pos``, ``SafetensorError``).
    Any other error (a bug, not the disk) goes on as it is, with its traceback."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, RuntimeError, SafetensorError) as exc:
        reason = _write_failure(exc)
        if reason is None:
            raise
        raise KdError(f"{out_dir}: cannot save the model: {reason}") from None
    _readable_as_umask_allows(Path(out_dir))


def _readable_as_umask_allows(folder: Path) -> None:
    """Give the files saved in ``folder`` the permissions the umask gives a new file: safetensors writes
    its weights readable by their owner alone (0600), so a teammate sharing the store and its artifact
    folder read config.json but not the model (`kd predict`: Permission denied)."""
    umask = os.umask(0)
    os.umask(umask)
    wanted = 0o666 & ~umask
    for path in folder.rglob("*") if folder.is_dir() else ():
        if path.is_file() and not path.is_symlink():
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode | wanted != mode:
                path.chmod(mode | wanted)


WRITE_FAILURES = ("No space left on device", "unexpected pos", "PytorchStreamWriter failed", "Disk quota exceeded")


def _write_failure(exc: BaseException) -> str | None:
    """Why a write failed, in a few words (the OS's reason where the error chain carries one), or
    None when nothing in it is a failed write."""
    chain, seen = [], exc
    while seen is not None and len(chain) < 8:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for e in chain:
        if isinstance(e, OSError):
            return e.strerror or (str(e).strip().splitlines() or [type(e).__name__])[0]
    for e in chain:
        text = str(e)
        if "No space left on device" in text:
            return "No space left on device"
        os_error = re.search(r"I/O error: (.+?) \(os error \d+\)", text)  # safetensors' words for any failed write
        if os_error:  # (ulimit -f's "File too large", a quota, a read-only file system)
            return os_error.group(1)
        if any(w in text for w in WRITE_FAILURES):
            return text.strip().splitlines()[0]
    return None


NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight")


def decay_exempt(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter, bool]]:
    """``(name, parameter, exempt)`` for each parameter: AdamW's weight decay leaves out biases and
    normalisation weights, by name and by module (GPT-2's ln_1, Llama's RMSNorm and Megatron-BERT's ln
    are not named LayerNorm). A parameter shared by two modules comes once."""
    norms = {f"{m}.{p}".lstrip(".") for m, module in model.named_modules() if "norm" in type(module).__name__.lower()
             for p, _ in module.named_parameters(recurse=False)}
    return [(name, param, name.endswith(NO_DECAY) or name in norms) for name, param in model.named_parameters()]
