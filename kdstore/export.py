"""``kd export``: a trained student or teacher as a self-contained folder that serves without kd's store.

The folder holds the model as a static graph (``model.onnx`` with dynamic batch and sequence axes, or
``model.pt`` TorchScript), the tokenizer, ``classes.txt`` and ``manifest.json`` (what the model is, how
its inputs are built, its dev/test figures, the sha256 of every file). ``kdstore.serving`` loads it.

Before the folder is put in place the exported model is run through ``kdstore.serving`` on texts from
the store and compared with the PyTorch model kd predicts with; an export that disagrees is refused.
The folder is written beside its destination and renamed into place, so a failed export leaves nothing.

* BiGRU/BiLSTM students run their RNN on packed sequences, which static graphs cannot hold; they are
  exported through ``UnpackedBiRNN``: the same weights, two one-direction RNNs over the padded batch
  (the backward one over each row reversed within its length) and the final states gathered at each
  row's last real token. Identical outputs, no packing.
* An out-of-fold teacher (``kd teach --folds K``) is exported whole: the K fold models in one graph,
  their probabilities averaged, exactly what ``kd predict --model teacher`` does.
* An early-exit stage (``kd distill --student early-exit``) is refused, naming the run's models that
  can be exported: its depth changes with each text, which a static graph cannot hold.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import errno
import io
import json
import logging
import os
import re
import shlex
import shutil
import socket
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from .errors import KdError, Terminated
from .folds import fold_count
from .predictor import STUDENT_CONFIG, Predictor
from .runs import SignalGuard, process_alive, this_process
from .schema import iso_utc
from .serving import (
    CLASSES,
    FORMAT_VERSION,
    INPUT_NAMES,
    MANIFEST,
    MODEL_FILES,
    OUTPUT_NAME,
    Artifact,
    classes_text,
    default_export_dir,
    read_manifest,
    sha256_file,
)
from .store import Store
from .students import SIZES, reversed_within_length

FORMATS = tuple(MODEL_FILES)
TOLERANCE = 1e-3  # largest |logit difference| between the export and the PyTorch model that is accepted
INT8_MIN_AGREEMENT = 0.98  # --int8: the share of the checked texts whose class must stay the float model's
VERIFY_TEXTS = 128  # store texts the export is checked on
OWNER = ".kd-export-owner"  # in a folder being written or replaced: the process, so a later export removes it once that is gone
ONNX_SINGLE_FILE_LIMIT = 1_800_000_000  # bytes of weights above which ONNX weights go to model.onnx.data


class HFLogits(nn.Module):
    """Logits of one Hugging Face sequence classifier, or of several as their averaged probabilities
    (``log(mean(softmax))``, as ``kdstore.outputs.average_probs_as_logits``)."""

    def __init__(self, nets: list[nn.Module]):
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        outs = [net(input_ids=input_ids, attention_mask=attention_mask).logits.float() for net in self.nets]
        if len(outs) == 1:
            return outs[0]
        probs = torch.stack([torch.softmax(o, dim=-1) for o in outs]).mean(0)
        return torch.log(probs.clamp_min(1e-12))


class UnpackedBiRNN(nn.Module):
    """A ``students.BiRNN`` without packed sequences: same weights, same outputs, exportable.

    The forward direction runs over the right-padded batch and is read at each row's last real token;
    the backward direction runs over each row reversed within its length and is read there too, so
    neither ever sees a pad token (exactly what packing achieves).
    """

    def __init__(self, birnn: nn.Module):
        super().__init__()
        rnn = birnn.rnn
        if rnn.num_layers != 1 or not rnn.bidirectional or not rnn.batch_first:
            raise KdError("only one-layer, bidirectional, batch-first RNN students can be exported")
        self.embed, self.mlp = birnn.embed, birnn.mlp
        cls = type(rnn)
        self.fwd = cls(rnn.input_size, rnn.hidden_size, batch_first=True, bias=rnn.bias)
        self.bwd = cls(rnn.input_size, rnn.hidden_size, batch_first=True, bias=rnn.bias)
        names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if rnn.bias else ())
        with torch.no_grad():
            for n in names:
                getattr(self.fwd, f"{n}_l0").copy_(getattr(rnn, f"{n}_l0"))
                getattr(self.bwd, f"{n}_l0").copy_(getattr(rnn, f"{n}_l0_reverse"))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids)  # (B, L, E)
        last = (attention_mask.sum(1).clamp(min=1) - 1).view(-1, 1)  # (B, 1) index of the last real token
        out_f, _ = self.fwd(x)
        out_b, _ = self.bwd(reversed_within_length(x, last))
        at = last.unsqueeze(-1).expand(-1, 1, out_f.shape[2])
        h_f = torch.gather(out_f, 1, at).squeeze(1)
        h_b = torch.gather(out_b, 1, at).squeeze(1)
        return self.mlp(torch.cat([h_f, h_b], dim=1))


def default_dir(store: Store, run: str, stage_name: str, fmt: str) -> Path:
    return default_export_dir(store.artifact_root / run, stage_name, fmt)


def export_model(
    store: Store, run: str, *, which: str = "student", fmt: str = "onnx", out: str | Path | None = None, overwrite: bool = False,
    int8: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Export the model ``which`` of ``run`` (as ``kd predict --model`` picks it); returns (folder, manifest).
    ``int8``: an ONNX model's weights quantized to int8 (``_quantize``), checked by how often its class
    stays the float model's, not by its logits."""
    if fmt not in FORMATS:
        raise KdError(f"unknown export format {fmt!r}: choose from {', '.join(FORMATS)}")
    if int8 and fmt != "onnx":
        # (--format named before the colon: a config file's `format` is then named with the file, as its `int8` is)
        raise KdError(f"--int8 quantizes an ONNX export (ONNX Runtime's dynamic quantization), not --format {fmt}: use --format onnx")
    if fmt == "onnx":
        _require_onnx(int8)
    if which == "student":  # the latest student that can be exported: an early-exit model or fold votes cannot
        students = exportable_stages(store, run, kinds=("distill",))
        which = students[-1] if students else which  # (none: the teacher, as kd predict falls back to it)
    if which not in ("student", "teacher", "teach"):  # (teach: found as the teacher, whose refusal names other runs' teachers)
        named = store.find_stage(run, which, kinds=("teach", "distill"))
        if named.kind not in ("teach", "distill"):
            raise KdError(f"stage {named.name!r} is a {named.kind} stage, not a model: export a teach or distill stage")
    predictor = Predictor.from_run(store, run, which, device="cpu")
    stage = store.find_stage(run, predictor.stage_name)
    # read now, with the model: a `kd distill --overwrite` that ends while the export runs deletes the
    # stage it replaced (the manifest had no figures at all) or gives its name to another model
    metrics = _final_metrics(store, stage.id)
    folds = len(predictor.models) if predictor.kind == "student" and len(predictor.models) > 1 else 0
    if predictor.kind == "early-exit" or folds:
        models = exportable_stages(store, run)
        what = (f"holds {folds} fold students (kd distill --folds), made for out-of-fold votes" if folds else
                "is an early-exit model, whose depth changes with each text")
        teacher_run = next(iter((stage.config or {}).get("teacher_runs") or ()), None)
        instead = (f"export another model of run {run!r} with --model: {', '.join(models)}" if models else
                   # (an early-exit model of another run's teacher: "none yet" was all it said)
                   f"run {run!r} has no other model: export its teacher with `kd export --run {shlex.quote(teacher_run)} --model teach`"
                   if teacher_run and teacher_run != run and predictor.kind == "early-exit" else
                   f"export another model of run {run!r} with --model: none yet")
        raise KdError(f"stage {stage.name!r} {what}: it cannot be exported (kd predict --model {stage.name} serves it); {instead}")
    # resolved: "." or "x/.." has no name to put the new folder beside (and a link is replaced where it points)
    out_dir = (Path(out) if out else default_dir(store, run, stage.name, "onnx-int8" if int8 else fmt)).resolve()
    _check_outside_stages(store, out_dir)
    _check_target(out_dir, overwrite, run=run, stage=stage)
    module, model_info = _exportable(predictor, stage, fmt)
    module.eval()
    if int8 and sum(p.numel() * p.element_size() for p in module.parameters()) > ONNX_SINGLE_FILE_LIMIT:
        _quantize_refusal()  # (before the export's minutes, not after them)
    min_len = int(getattr(predictor.models[0], "min_len", 1))
    # TorchScript runs PyTorch's CPU kernels, which keep one oneDNN primitive per input shape: widths
    # rounded as kd predict rounds them (TextCNN: to 8) hold the same memory (a width per length held
    # nearly twice as much); ONNX Runtime has no such cache and reads the exact width faster
    multiple = int(getattr(predictor.models[0], "pad_multiple", 1)) if fmt == "torchscript" else 1
    special = bool(getattr(predictor.models[0], "special_tokens", True))
    pad_id = predictor.tokenizer.pad_token_id
    if pad_id is None:
        raise KdError(f"the tokenizer of stage {stage.name!r} has no pad token: it cannot be exported")

    try:  # the folder is written beside --out, then renamed: a failure here names --out, not the temporary name
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(out_dir)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    except OSError as exc:
        # (mkdir says only "File exists"; a device or a FIFO, /dev/null, blocks it as a file does)
        blocking = next((p for p in out_dir.parents if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise KdError(f"{out_dir}: cannot write the export there: {blocking} is a file, not a folder") from None
        raise KdError(f"{out_dir}: cannot write the export there: {exc.strerror or exc}") from None
    guard = SignalGuard()  # a kill (SIGTERM, SIGHUP) raises like Ctrl-C: the half-written folder is removed
    try:
        _claim(tmp)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the export is an ordinary folder
        example = _example(len(predictor.tokenizer), pad_id, min_len)
        model_file = MODEL_FILES[fmt]
        exporter = _write_onnx(module, example, tmp / model_file) if fmt == "onnx" else _write_torchscript(module, example, tmp / model_file)
        if int8:
            exporter["quantization"] = _quantize(tmp / model_file, external=exporter["external_data"])
        try:  # (a full disk: the tokenizers library raises a bare Exception naming the OS error)
            predictor.tokenizer.save_pretrained(tmp)
            (tmp / CLASSES).write_bytes(classes_text(predictor.class_names).encode("utf-8"))
        except Exception as exc:
            _raise_if_unwritable(exc, tmp / CLASSES)
            raise
        texts = _verify_texts(store, predictor.max_len, predictor.encode)
        manifest = _manifest(
            run=run, stage=stage, fmt=fmt, model_file=model_file, model_info=model_info, predictor=predictor,
            special=special, pad_id=pad_id, min_len=min_len, multiple=multiple, exporter=exporter,
            tokenizer_runtime=_tokenizer_runtime(tmp, predictor.tokenizer, texts, predictor.max_len, special),
            metrics=metrics,
        )
        manifest["verification"] = _verify(tmp, manifest, predictor, texts)
        manifest["files"] = {
            p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file() and p.name != OWNER
        }
        try:
            (tmp / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            _raise_if_unwritable(exc, tmp / MANIFEST)
            raise
        _put_in_place(tmp, out_dir, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        guard.close()
    return out_dir.resolve(), manifest


def exportable_stages(store: Store, run: str, *, kinds: tuple[str, ...] = ("teach", "distill")) -> list[str]:
    """The succeeded model stages of ``run`` that can be exported, oldest first: not early-exit
    models (their depth changes per text) nor fold students (``kd distill --folds``: votes). A stage
    an ``--overwrite`` is replacing (``NAME~parked-ID``) is one: kd predict serves it meanwhile."""
    from .early_exit import is_early_exit
    from .runs import PARKED

    return [s.name for s in store.stages_of(run) if s.kind in kinds and s.status == "succeeded" and ("~" not in s.name or PARKED in s.name)
            and not is_early_exit(s.artifact_path) and not (s.kind == "distill" and fold_count(s.config))]


def student_passed_over(store: Store, run: str) -> str | None:
    """Why ``--model student`` exports another model than the one ``kd predict --run RUN`` serves: its
    ``--model student`` is an early-exit model, or fold students where the run has no other student, which
    cannot be exported (``None`` when the two are the same model, or when no student can be: the export says so, refused)."""
    from .early_exit import is_early_exit
    from .predictor import default_student

    latest = default_student(store, run)
    exportable = exportable_stages(store, run, kinds=("distill",))
    if latest is None or not exportable or exportable[-1] == latest.name:
        return None
    what = "an early-exit model" if is_early_exit(latest.artifact_path) else "fold students (kd distill --folds)"
    return (f"the latest student of run {run!r}, {latest.name}, is {what} and cannot be exported (kd predict --run {run} "
            f"serves it); exporting the latest one that can be: {exportable[-1]}")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _require_onnx(int8: bool = False) -> None:
    missing = []
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        if int8:  # (--format torchscript with --int8 is refused)
            raise KdError(f"--int8 needs {', '.join(missing)}: pip install 'kd[serve]' (or export without --int8, with --format torchscript)")
        raise KdError(f"--format onnx needs {', '.join(missing)}: pip install 'kd[serve]' (or use --format torchscript)")


def _check_target(out_dir: Path, overwrite: bool, *, run: str | None = None, stage=None) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise KdError(f"{out_dir} exists and is not a folder: pass another --out")
    if not any(out_dir.iterdir()):
        return  # (filled in place: the working directory, a mount point)
    if os.path.ismount(out_dir):  # (renaming it failed: "Device or resource busy")
        raise KdError(f"{out_dir} is a mount point that holds files, and kd replaces an export whole (renamed into place): "
                      f"empty it, or pass a folder inside it (--out {out_dir / 'model'})")
    try:
        manifest = read_manifest(out_dir)
    except KdError:  # no manifest.json, or another program's
        raise KdError(f"{out_dir} is not empty and is not a kd export: pass another --out (kd will not replace it)") from None
    if not overwrite:
        held = manifest.get("stage") if isinstance(manifest.get("stage"), dict) else {}
        if stage is not None and (manifest.get("run"), held.get("name")) == (run, stage.name) and held.get("artifact_sha256") != stage.artifact_sha256:
            raise KdError(f"{out_dir} holds the export of the model stage {stage.name!r} of run {run!r} had before it was replaced "
                          f"(kd {stage.kind} --overwrite), not of its model now: pass --overwrite to replace it, or another --out")
        of = f" of stage {held['name']!r} of run {manifest.get('run')!r}" if held.get("name") else ""  # (which: --overwrite replaces it)
        other = "" if not of or stage is None or (manifest.get("run"), held.get("name")) == (run, stage.name) else (
            f", not of stage {stage.name!r}" + (f" of run {run!r}" if manifest.get("run") != run else ""))
        raise KdError(f"{out_dir} already holds an export{of}{other}: pass --overwrite to replace it, or another --out")
    here = Path.cwd().resolve()
    if here == out_dir or out_dir in here.parents:  # a shell there would be left in the deleted folder, seeing nothing
        raise KdError(f"{out_dir} is replaced whole by --overwrite, and the working directory is in it: "
                      "run kd export from outside it")
    listed = set(manifest.get("files") or {}) | {MANIFEST}
    extra = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file() and p.relative_to(out_dir).as_posix() not in listed)
    if extra:  # replacing the export would delete them with it
        raise KdError(f"{out_dir} holds files kd export did not write ({', '.join(extra[:5])}): move them out, or pass another --out")


def _check_outside_stages(store: Store, out_dir: Path) -> None:
    """Refuse an ``--out`` inside a stage's folder (``RUN/STAGE``, or its model): ``--overwrite`` of the
    stage and ``kd runs delete`` remove that folder whole, the export in it with it, without a word."""
    root = store.artifact_root.resolve()
    # (the folders of out_dir's path that exist, by device and inode: on a case-insensitive file system,
    # macOS's or Windows's, --out ARTIFACTS/r1/TEACH/x names the stage folder artifacts/r1/teach too)
    ids = set()
    for p in (out_dir, *out_dir.parents):
        try:
            st_ = p.stat()
        except OSError:
            continue
        ids.add((st_.st_dev, st_.st_ino))

    def inside(folder: Path) -> bool:
        if out_dir == folder or folder in out_dir.parents:
            return True
        try:
            st_ = folder.stat()
        except OSError:  # (no such folder: nothing of it to remove)
            return False
        return (st_.st_dev, st_.st_ino) in ids

    for run_row, stages in store.runs():
        for st in stages:
            base = st.name.split("~", 1)[0]
            folders = {root / run_row.uniqid / st.name, root / run_row.uniqid / base}
            if st.artifact_path:
                folders.add(Path(st.artifact_path).resolve())
            if any(inside(f) for f in folders):
                raise KdError(f"{out_dir} is inside the folder of stage {base!r} of run {run_row.uniqid!r}, which "
                              "kd replaces or removes whole with the stage (--overwrite, kd runs delete): pass an --out "
                              "outside it (without --out: beside it, RUN/export-STAGE-FORMAT)")


def _put_in_place(tmp: Path, out_dir: Path, *, overwrite: bool) -> None:
    if out_dir.is_dir() and not any(out_dir.iterdir()):
        _fill(tmp, out_dir)
        return
    old = None
    if out_dir.exists():
        if not overwrite:  # free when the export began: another export (or a person) filled it since
            raise KdError(f"{out_dir} was filled while this export ran (another kd export of the same --out?): "
                          "nothing replaced; pass --overwrite to replace it, or another --out")
        old = out_dir.with_name(f".{out_dir.name}.old-{dt.datetime.now():%Y%m%d%H%M%S%f}")
        out_dir.rename(old)
        _claim(old)  # (a kill before it is removed: the next export of --out removes it)
    (tmp / OWNER).unlink()
    tmp.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fill(tmp: Path, out_dir: Path) -> None:
    """Move the export's files into the empty folder ``out_dir`` (the working directory with
    ``--out .``, a mount point), the manifest last: renaming the folder over it left a shell there in
    a deleted folder, and a mount point cannot be renamed. A failure takes back what was moved."""
    (tmp / OWNER).unlink()
    entries = sorted(tmp.iterdir(), key=lambda p: p.name == MANIFEST)
    try:
        for entry in entries:
            shutil.move(str(entry), str(out_dir / entry.name))  # (a copy where --out is another file system)
    except BaseException:
        for entry in entries:
            moved = out_dir / entry.name
            if moved.is_dir():
                shutil.rmtree(moved, ignore_errors=True)
            elif moved.exists():
                moved.unlink()
        raise
    tmp.rmdir()


def _claim(folder: Path) -> None:
    (folder / OWNER).write_text(json.dumps({"host": socket.gethostname(), "process": this_process()}) + "\n", encoding="utf-8")


def _remove_abandoned(out_dir: Path) -> None:
    """Remove the hidden folders beside ``out_dir`` that an export of it killed with SIGKILL (or a
    power cut) left: the half-written new one, or the old one it was replacing. Only a folder whose
    owner file names a process of this machine that is certainly gone; anything else stays."""
    prefix = f".{out_dir.name}."
    for folder in out_dir.parent.iterdir():
        if not folder.name.startswith(prefix) or folder.is_symlink() or not folder.is_dir():
            continue
        try:
            owner = json.loads((folder / OWNER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(owner, dict) and process_alive(owner.get("host"), owner.get("process")) is False:
            shutil.rmtree(folder, ignore_errors=True)


STUDENT_KEYS = ("kind", "vocab_size", "num_classes", "pad_id", "bert")  # in a manifest beside the sizes of the student's kind


def _exportable(predictor: Predictor, stage, fmt: str) -> tuple[nn.Module, dict[str, Any]]:
    """The module to trace (``forward(input_ids, attention_mask) -> logits``) and what it is."""
    if predictor.kind == "student":
        if len(predictor.models) > 1:
            raise KdError(f"stage {stage.name!r} holds {len(predictor.models)} fold students (kd distill --folds), made for "
                          "out-of-fold votes: export a student distilled without --folds")
        model = predictor.models[0]
        meta = json.loads((Path(stage.artifact_path) / STUDENT_CONFIG).read_text(encoding="utf-8"))
        kind = meta["student"]["kind"]
        # the sizes its kind is built from (student.json keeps every option's value: a BiGRU's "layers": 4 and kernel widths read as its own)
        info = {"kind": "student", "student": {k: v for k, v in meta["student"].items() if k in STUDENT_KEYS or k in SIZES.get(kind, ())}}
        if kind in ("bigru", "bilstm"):
            return UnpackedBiRNN(model), info
        if kind == "transformer":
            return HFLogits([model.net]), info
        if kind == "textcnn" and fmt == "onnx":
            # convolutions as matrix products: faster in ONNX Runtime (see students.TextCNN); a copy,
            # so the export is still checked against the model kd predicts with
            model = copy.deepcopy(model)
            model.as_matmul = True
        return model, info
    nets = predictor.models
    cfg = nets[0].config
    teacher = {
        "source": stage.config.get("model"),
        "model_type": cfg.model_type,
        "architectures": list(cfg.architectures or []),
        "vocab_size": cfg.vocab_size,
        **{k: getattr(cfg, k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "max_position_embeddings") if hasattr(cfg, k)},
        "parameters": int(sum(p.numel() for p in nets[0].parameters())),
        "folds": len(nets) if len(nets) > 1 else 0,
    }
    if len(nets) > 1:
        teacher["ensemble"] = f"all {len(nets)} fold models in one graph, their probabilities averaged (as kd predict --model teacher)"
    return HFLogits(list(nets)), {"kind": "teacher", "teacher": teacher}


def _example(vocab_size: int, pad_id: int, min_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch to trace with: 3 rows (full, half, one token), width distinct from the batch size."""
    width = min_len + 4
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, max(vocab_size, 1), (3, width), generator=g)
    mask = torch.ones_like(ids)
    for row, n in ((1, max(1, width // 2)), (2, 1)):
        mask[row, n:] = 0
        ids[row, n:] = pad_id
    return ids, mask


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters print progress to stdout and warnings to stderr; kd's stdout is for kd's output."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript", "transformers")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _write_onnx(module: nn.Module, example, path: Path) -> dict[str, Any]:
    import onnx

    big = sum(p.numel() * p.element_size() for p in module.parameters()) > ONNX_SINGLE_FILE_LIMIT
    # named axes first; where the graph still came out with an axis fixed (a BiGRU or BiLSTM student exported a
    # second time in one process: its sequence axis fixed at the example's 5 tokens, and every longer batch
    # refused), torch's AUTO axes, which stayed dynamic there
    for axes in ((torch.export.Dim("batch"), torch.export.Dim("sequence")), (torch.export.Dim.AUTO,) * 2):
        try:
            with _quiet(), torch.no_grad():
                torch.onnx.export(
                    module, example, str(path), input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
                    dynamic_shapes={name: dict(enumerate(axes)) for name in INPUT_NAMES},
                    dynamo=True, external_data=big, verbose=False,
                )
        except Exception as exc:  # TorchExportError and friends
            cause = _interruption(exc)
            if cause is not None:  # Ctrl-C or a kill while torch exported: that, not "could not export"
                raise cause from None
            _raise_if_unwritable(exc, path)
            raise KdError(f"torch.onnx could not export this model ({type(exc).__name__}: {_summary(exc)}): try --format torchscript") from None
        proto = onnx.load(str(path), load_external_data=False)
        fixed = [f"{i.name} axis {n}" for i in proto.graph.input for n, d in enumerate(i.type.tensor_type.shape.dim) if not d.dim_param]
        if not fixed:
            break
    else:
        raise KdError(f"torch.onnx exported this model with a fixed size ({', '.join(fixed)}): it would refuse other batches; "
                      "try --format torchscript")
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return {"tool": "torch.onnx.export (dynamo)", "torch": torch.__version__, "onnx_opset": opset, "external_data": big}


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc`` and the exceptions it wraps (its cause, else its context), each once."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _interruption(exc: BaseException) -> BaseException | None:
    """The Ctrl-C (or kill) an exporter's own exception wraps, if it wraps one."""
    return next((e for e in _chain(exc) if isinstance(e, (KeyboardInterrupt, Terminated))
                 or (isinstance(e, KdError) and str(e).startswith("terminated ("))), None)


def _raise_if_unwritable(exc: BaseException, path: Path) -> None:
    """The file-system error (a full disk, a quota) an exporter's own exception wraps, as one line naming
    the folder: "could not export this model ... try the other format" sent a user after the model."""
    unwritable = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EFBIG)
    for e in _chain(exc):
        # (the tokenizers library's own I/O errors are bare Exceptions: "No space left on device (os error 28)")
        rust = re.search(r"\(os error (\d+)\)$", str(e)) if type(e) is Exception else None
        code = e.errno if isinstance(e, OSError) else int(rust.group(1)) if rust else None
        if code in unwritable:
            # (path is in the temporary folder made beside --out: its parent is where --out goes)
            why = (e.strerror if isinstance(e, OSError) else None) or os.strerror(code)
            raise KdError(f"{path.parent.parent}: cannot write the export there: {why}") from None


def _write_torchscript(module: nn.Module, example, path: Path) -> dict[str, Any]:
    try:
        with _quiet(), torch.no_grad():
            traced = torch.jit.trace(module, example, check_trace=False, strict=False)
            # saved to memory, then written: torch.jit's own writer, failing on a full disk, aborted the process
            buffer = io.BytesIO()
            torch.jit.save(traced, buffer)
        path.write_bytes(buffer.getbuffer())
    except Exception as exc:
        _raise_if_unwritable(exc, path)
        raise KdError(f"torch.jit.trace could not trace this model ({type(exc).__name__}: {_summary(exc)}): try --format onnx") from None
    return {"tool": "torch.jit.trace", "torch": torch.__version__}


LONGEST_VERIFY_TEXT = 1 << 22  # characters: the text longer than max_len is doubled no further


def _verify_texts(store: Store, max_len: int, encode: Callable[[list[str]], tuple[list, list[bool]]] | None = None) -> list[str]:
    """Dev and test texts first, then any, plus one longer than ``max_len`` and a one-character one.

    ``encode``: the model's ``Predictor.encode``, which says whether a text was cut to ``max_len``
    tokens; the long text is doubled until it is (twice ``max_len`` characters made only a few dozen
    tokens of English words, so no text the export was checked on was truncated)."""
    texts = store.samples(splits=["dev", "test"], limit=VERIFY_TEXTS, include_dropped=True).texts
    if len(texts) < VERIFY_TEXTS:  # the other splits' (the dev and test texts again would count twice)
        texts += store.samples(splits=["train", "unlabeled"], limit=VERIFY_TEXTS - len(texts), include_dropped=True).texts
    texts = [t for t in texts if t.strip()]
    if texts:
        long = "".join(texts)
        while len(long) < 2 * max_len + 8 or (encode is not None and len(long) < LONGEST_VERIFY_TEXT and not encode([long])[1][0]):
            long += long
        texts += [long, texts[0][:1]]
    return texts or ["好"]


def _tokenizer_runtime(directory: Path, tokenizer, texts: list[str], max_len: int, special: bool) -> str:
    """``tokenizers`` when the saved ``tokenizer.json`` gives exactly the ids kd trains with, else ``transformers``."""
    from .batching import encode

    if not (directory / "tokenizer.json").is_file():
        return "transformers"
    try:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
        tok.no_padding()
        tok.enable_truncation(max_len)
        ours = [e.ids for e in tok.encode_batch(texts, add_special_tokens=special)]
    except Exception:  # an unreadable or unusual tokenizer.json: let transformers read the folder
        return "transformers"
    return "tokenizers" if ours == encode(tokenizer, texts, max_len=max_len, special_tokens=special) else "transformers"


def _quantize(path: Path, *, external: bool) -> dict[str, Any]:
    """``path`` (an ONNX model) replaced by its int8 version: ONNX Runtime's dynamic quantization,
    weights stored as int8 and activations quantized per batch as it runs (no calibration data). A
    transformer's matrix products gain most; convolutions and recurrent layers mostly shrink."""
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if external:  # (its weights in model.onnx.data: quantize_dynamic would write them whole into one file past protobuf's 2 GB)
        _quantize_refusal()
    quantized = path.with_name(path.stem + ".int8.onnx")
    before = path.stat().st_size
    try:
        with _quiet(), contextlib.redirect_stderr(io.StringIO()):  # ("Please consider to run pre-processing before quantization")
            quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8)
        os.replace(quantized, path)
    except OSError as exc:
        quantized.unlink(missing_ok=True)
        _raise_if_unwritable(exc, path)
        raise
    except Exception as exc:  # noqa: BLE001 (an operator it cannot quantize, in onnxruntime's own words)
        quantized.unlink(missing_ok=True)
        _check_room(path, before)
        raise KdError(f"onnxruntime could not quantize this model ({type(exc).__name__}: {_summary(exc)}): export it without --int8") from None
    return {"tool": "onnxruntime.quantization.quantize_dynamic", "weights": "int8", "onnxruntime": onnxruntime.__version__,
            "bytes_before": before, "bytes_after": path.stat().st_size}


def _quantize_refusal() -> None:
    raise KdError("--int8: this model's weights are over 1.8 GB, stored beside model.onnx (quantize_dynamic would write "
                  "them into one file past ONNX's 2 GB): export it without --int8")


def _check_room(path: Path, size: int) -> None:
    """After quantize_dynamic failed: whether the folder had room for the copy of the model it writes
    first (``model-inferred.onnx``, through onnx's C++ shape inference, which on a full disk or a quota
    cuts the file short without a word, then reads it back as "Wire format was corrupt"). The cut copy
    is removed, ``size`` bytes are written in its place, and a file-system error is raised as one line
    naming the folder, not as onnxruntime's failure."""
    path.with_name(f"{path.stem}-inferred{path.suffix}").unlink(missing_ok=True)
    probe = path.with_name(".kd-room")
    try:
        with open(probe, "wb") as fh:
            block = bytes(1 << 20)
            for start in range(0, size, len(block)):
                fh.write(block[: size - start])
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        _raise_if_unwritable(exc, path)
    finally:
        probe.unlink(missing_ok=True)


def _verify(directory: Path, manifest: dict[str, Any], predictor: Predictor, texts: list[str]) -> dict[str, Any]:
    """Run the export through ``kdstore.serving`` and compare with the PyTorch model on ``texts``: its
    logits within ``TOLERANCE``, or an int8 export's classes the same on ``INT8_MIN_AGREEMENT`` of them."""
    artifact = Artifact(directory, manifest, device="cpu")
    ours = artifact.logits(texts)
    reference = predictor.logits(texts)
    diff = float(np.abs(ours - reference).max()) if len(texts) else 0.0
    agree = float((ours.argmax(1) == reference.argmax(1)).mean()) if len(texts) else 1.0
    if manifest["exporter"].get("quantization"):
        if not np.isfinite(diff) or agree < INT8_MIN_AGREEMENT:
            raise KdError(f"the int8 model gives another class than the float model for {1 - agree:.1%} of {len(texts)} texts "
                          f"(at most {1 - INT8_MIN_AGREEMENT:.0%} is accepted; largest |logit difference| {diff:.3g}): "
                          "not exported; export it without --int8")
        return {"texts": len(texts), "max_abs_logit_diff": diff, "argmax_agreement": agree, "min_agreement": INT8_MIN_AGREEMENT}
    if not np.isfinite(diff) or diff > TOLERANCE:
        raise KdError(
            f"the exported model's logits differ from the PyTorch model's by up to {diff:.3g} on {len(texts)} "
            f"texts (more than {TOLERANCE:g}): not exported"
        )
    return {"texts": len(texts), "max_abs_logit_diff": diff, "argmax_agreement": agree, "tolerance": TOLERANCE}


def _final_metrics(store: Store, stage_id: int) -> dict[str, dict[str, float]]:
    from .report import metric_value  # counts as ints (``"n": 500``), as kd report --json gives them

    out: dict[str, dict[str, float]] = {}
    for m in store.metrics(stage_id, final=True):
        if m.split in ("dev", "test"):
            out.setdefault(m.split, {})[m.name] = metric_value(m.name, m.value)
    return out


def _manifest(*, run, stage, fmt, model_file, model_info, predictor, special, pad_id, min_len, multiple, exporter, tokenizer_runtime, metrics) -> dict[str, Any]:
    from . import __version__

    return {
        "format_version": FORMAT_VERSION,
        "kd_version": __version__,
        "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "run": run,
        "stage": {
            "name": stage.name,
            "kind": stage.kind,
            "artifact_sha256": stage.artifact_sha256,
            "ended_at": iso_utc(stage.ended_at),
        },
        "model": model_info,
        "format": fmt,
        "model_file": model_file,
        "exporter": exporter,
        "classes": list(predictor.class_names),
        "max_len": int(predictor.max_len),
        "inputs": {
            "names": list(INPUT_NAMES),
            "dtype": "int64",
            "shape": ["batch", "sequence"],
            "special_tokens": special,
            "pad_id": int(pad_id),
            "padding": "right",
            "min_len": min_len,
            "pad_multiple": max(1, multiple),
            # (a student without [CLS]/[SEP], special_tokens false, has none to count)
            "truncation": f"to max_len ({int(predictor.max_len)}) tokens" + (", special tokens included" if special else ""),
        },
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(predictor.class_names)], "dtype": "float32"},
        "tokenizer": {"runtime": tokenizer_runtime},
        "metrics": metrics,
    }


def _summary(exc: BaseException) -> str:
    """The informative line of an exporter error (torch.export puts it under 'Exception summary')."""
    lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
    for i, line in enumerate(lines):
        if "Exception summary" in line and i + 1 < len(lines):
            return lines[i + 1][:300]
    return (lines or [type(exc).__name__])[0][:300]
