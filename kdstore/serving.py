"""Serving an exported model directory (``kd export``) with nothing but numpy, a runtime and a tokenizer.

The directory holds the model (``model.onnx`` for ONNX Runtime, or ``model.pt`` for TorchScript), the
tokenizer (``tokenizer.json``, read with the ``tokenizers`` library), ``classes.txt`` and
``manifest.json``, which says how inputs are built (special tokens, ``max_len``, pad id, minimum width,
the multiple widths are rounded up to)
and holds the sha256 of every file. This module never opens a store and never imports kd's training
code, torch (for ONNX) or transformers (unless the manifest asks for its tokenizer).
"""

from __future__ import annotations

import glob
import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .char_encoder import CharEncoder
from .char_encoder import encode_flagged as chars_or_tokenizer
from .char_encoder import non_text_ids, unknown_only, word_marker_ids
from .errors import KdError
from .jsonl import is_whole
from .probs import answers, softmax
from .textkey import text_list

MANIFEST = "manifest.json"
CLASSES = "classes.txt"
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.pt"}
EXPORT_KINDS = (*MODEL_FILES, "onnx-int8")  # the end of a default export folder's name: a format, or onnx-int8 (kd export --int8)
FORMAT_VERSION = 1
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "logits"


def classes_text(names) -> str:
    """``classes.txt`` as ``kd export`` writes it: ``id<TAB>name`` lines."""
    return "".join(f"{i}\t{n}\n" for i, n in enumerate(names))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(directory: Path) -> dict[str, Any]:
    directory = Path(directory)
    if not directory.is_dir():
        raise KdError(f"no exported model at {directory}: the folder does not exist (make one with `kd export`)")
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KdError(f"{directory} is not a kd export: {MANIFEST} is missing (make one with `kd export`)") from None
    except (OSError, ValueError) as exc:
        raise KdError(f"{path}: cannot read: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise KdError(f"{path}: not a kd export manifest of version {FORMAT_VERSION}: re-export with this kd")
    return manifest


def default_export_dir(run_folder: Path, stage_name: str, fmt: str) -> Path:
    """Where ``kd export`` writes a stage's export without ``--out``: beside its model folder."""
    return Path(run_folder) / f"export-{stage_name}-{fmt}"


def export_dirs(run_folder: Path, stage_name: str) -> list[Path]:
    """The default places (``default_export_dir``) of a stage's exports, of each format, and those kd export
    wrote while the stage waited as ``NAME~parked-ID`` (an ``--overwrite`` running, or killed: its name back since)."""
    folder = Path(run_folder)
    return [path for fmt in EXPORT_KINDS for path in (default_export_dir(folder, stage_name, fmt),
                                                        *sorted(folder.glob(f"export-{glob.escape(stage_name)}~parked-*-{fmt}")))]


def exports_of(run_folder: Path, run: str, stage_name: str, artifact_sha256: str | None) -> tuple[list[Path], list[Path]]:
    """The exports of one model stage at their default places (``export_dirs``), a folder whose
    manifest names this run, stage (or the name it had parked) and model (its sha256): ``(only files the export
    wrote, others put there too)``, the second not the stage's to remove (nor another model's export, left out)."""
    found, mixed = [], []
    for folder in export_dirs(run_folder, stage_name):
        if folder.is_symlink() or not folder.is_dir():
            continue
        try:
            manifest = read_manifest(folder)
            stage = manifest.get("stage") or {}
            listed = set(manifest.get("files") or {}) | {MANIFEST}
        except (KdError, AttributeError, TypeError):
            continue
        named = stage.get("name")
        if (manifest.get("run"), stage.get("artifact_sha256")) != (run, artifact_sha256) or not (
                named == stage_name or (isinstance(named, str) and named.startswith(f"{stage_name}~parked-")
                                        and folder.name.startswith(f"export-{named}-"))):
            continue
        own = all(p.relative_to(folder).as_posix() in listed for p in folder.rglob("*") if p.is_file() or p.is_symlink())
        (found if own else mixed).append(folder)
    return found, mixed


def verify_files(directory: Path, manifest: dict[str, Any]) -> None:
    """Every file the manifest lists exists and has its recorded sha256."""
    for name, digest in sorted(manifest.get("files", {}).items()):
        path = Path(directory) / name
        if not path.is_file():
            raise KdError(f"{path} is missing from the export: re-run `kd export`")
        if sha256_file(path) != digest:
            raise KdError(f"{path} does not match its sha256 in {MANIFEST} (corrupted or replaced): re-run `kd export`")


class _Tokenizer:
    """Token ids as ``kdstore.batching.encode`` gives them: truncated to ``max_len``, no padding."""

    def __init__(self, directory: Path, runtime: str, *, max_len: int, special_tokens: bool):
        self.special_tokens = special_tokens
        self.max_len = max_len
        if runtime == "tokenizers":
            try:
                from tokenizers import Tokenizer
            except ImportError:
                raise KdError("serving this export needs the tokenizers library: pip install tokenizers") from None

            path = Path(directory) / "tokenizer.json"
            try:
                self._cut = Tokenizer.from_file(str(path))
            except Exception as exc:  # the Rust library raises its own exception type
                raise KdError(f"cannot load the tokenizer {path}: {_first_line(exc)}") from None
            self._cut.no_padding()
            self._cut.enable_truncation(max_len)
            self._hf = None
            self._chars = CharEncoder.for_backend(self._cut)
            unk = getattr(self._cut.model, "unk_token", None)  # (a byte-level BPE has none)
            self.unk_id = None if unk is None else self._cut.token_to_id(unk)
            if unk is None and type(self._cut.model).__name__ == "Unigram":  # (a SentencePiece one names it by id alone)
                self.unk_id = _unigram_unk_id(path)
            added = getattr(self._cut, "get_added_tokens_decoder", dict)()  # (tokenizers >= 0.15; before it: none known, no text marked)
            self.special_ids = [i for i, t in added.items() if t.special] + word_marker_ids(self._cut.token_to_id, self.unk_id)
        elif runtime == "transformers":
            try:
                from transformers import AutoTokenizer
            except ImportError:  # (the manifest asks for it: tokenizer.json alone would not give kd's ids)
                raise KdError("serving this export needs the transformers library (its tokenizer): pip install transformers") from None

            try:
                self._hf = AutoTokenizer.from_pretrained(directory)
            except (OSError, ValueError) as exc:
                raise KdError(f"cannot load the tokenizer in {directory}: {_first_line(exc)}") from None
            self._chars = CharEncoder.for_tokenizer(self._hf)
            self.unk_id = self._hf.unk_token_id
            self.special_ids = non_text_ids(self._hf)
        else:
            raise KdError(f"unknown tokenizer runtime {runtime!r} in {MANIFEST}")

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return self.encode_flagged(texts)[0]

    def encode_flagged(self, texts: Sequence[str]) -> tuple[list[list[int]], list[bool]]:
        """Token ids, and whether each text was cut to ``max_len``: a lookup per character for a
        character-level BERT tokenizer (``kdstore.char_encoder``), else one tokenizer call."""
        if not texts:
            return [], []
        return chars_or_tokenizer(self._chars, texts, self._tokenizer_flagged, max_len=self.max_len, special_tokens=self.special_tokens)

    def _tokenizer_flagged(self, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
        if self._hf is not None:
            out = self._hf(
                list(texts), add_special_tokens=self.special_tokens, truncation=True, max_length=self.max_len,
                padding=False, return_attention_mask=False, return_token_type_ids=False,
            )
            if out.encodings is not None:  # a fast tokenizer keeps what it cut off
                return out["input_ids"], [bool(e.overflowing) for e in out.encodings]
            full = self._hf(list(texts), add_special_tokens=self.special_tokens)["input_ids"]
            return out["input_ids"], [len(f) > self.max_len for f in full]
        # encode_batch_fast (tokenizers >= 0.20) skips the character offsets: same ids, ~15 % faster;
        # what truncation cut off is kept in ``overflowing``
        encode_batch = getattr(self._cut, "encode_batch_fast", self._cut.encode_batch)
        found = encode_batch(list(texts), add_special_tokens=self.special_tokens)
        return [e.ids for e in found], [bool(e.overflowing) for e in found]


class Artifact:
    """An exported model, loaded once: ``logits``/``predict`` for texts, like ``kdstore.predictor.Predictor``."""

    def __init__(self, directory: Path, manifest: dict[str, Any], *, device: str = "auto"):
        self.directory = Path(directory)
        self.manifest = manifest
        try:
            _check_fields(self.directory / MANIFEST, manifest)  # (first: a null that int() failed on was named by no field)
            inputs = manifest["inputs"]
            self.format = manifest["format"]
            self.class_names: list[str] = list(manifest["classes"])
            self.max_len = int(manifest["max_len"])
            self.special_tokens = bool(inputs["special_tokens"])
            self.pad_id = int(inputs["pad_id"])
            self.min_len = int(inputs.get("min_len", 1))
            self.pad_multiple = max(1, int(inputs.get("pad_multiple", 1)))  # (exports before it: 1)
            self.stage_name = manifest["stage"]["name"]
            self.kind = manifest["model"]["kind"]
            runtime = manifest["tokenizer"]["runtime"]
            model_path = self.directory / manifest["model_file"]
        except (KeyError, TypeError, ValueError) as exc:
            raise KdError(f"{self.directory / MANIFEST} is incomplete ({type(exc).__name__}: {exc}): re-run `kd export`") from None
        self.model_path = model_path
        listed = self.directory / CLASSES  # covered by a sha256 in the manifest; the manifest's own list is not
        if listed.is_file():  # compared as kd export writes it: any character may be in a class name
            if listed.read_bytes().decode("utf-8", "replace") != classes_text(self.class_names):
                raise KdError(f"{self.directory / MANIFEST} names classes {self.class_names}, which {CLASSES} does not: "
                              "one of them was edited; re-run `kd export`")
        self.tokenizer = _Tokenizer(self.directory, runtime, max_len=self.max_len, special_tokens=self.special_tokens)
        if self.format == "onnx":
            self._run = _onnx_runner(model_path, device)
        elif self.format == "torchscript":
            self._run = _torchscript_runner(model_path, device)
        else:
            raise KdError(f"unknown export format {self.format!r} in {MANIFEST}")

    @classmethod
    def load(cls, directory: str | Path, *, device: str = "auto", verify: bool = True) -> "Artifact":
        directory = Path(directory)
        manifest = read_manifest(directory)
        model_file = manifest.get("model_file")
        if not isinstance(model_file, (str, type(None))) or not isinstance(manifest.get("files", {}), dict):
            raise KdError(f"{directory / MANIFEST} is malformed (model_file must be a name, files a mapping): re-run `kd export`")
        if not model_file or not (directory / model_file).is_file():
            raise KdError(f"{directory / (model_file or 'model')} is missing from the export: re-run `kd export`")
        if model_file not in manifest.get("files", {}):
            raise KdError(f"{directory / MANIFEST} lists no sha256 for {model_file}: re-run `kd export`")
        if verify:
            verify_files(directory, manifest)
        return cls(directory, manifest, device=device)

    def logits(self, texts: list[str], *, batch_size: int = 256, ids: list[list[int]] | None = None) -> np.ndarray:
        """Logits for ``texts`` (in order), computed in length-sorted batches; ``ids``: the texts
        already encoded by ``self.tokenizer``."""
        if batch_size < 1:  # (0 served every text a row of zeros: "probabilities" of 1/K without a word)
            raise KdError(f"batch_size must be at least 1, got {batch_size}")
        texts = text_list(texts)  # (one str, a None, a numpy array: see textkey)
        width = len(self.class_names)
        out = np.zeros((len(texts), width), dtype=np.float32)
        if not texts:
            return out
        if ids is None:
            ids = self.tokenizer.encode(texts)
        order = np.argsort(np.asarray([len(x) for x in ids]), kind="stable")
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            input_ids, mask = self._pad([ids[i] for i in idx])
            try:  # (a model that does not fit its manifest: a traceback from deep inside the runtime)
                got = np.asarray(self._run(input_ids, mask))
            except Exception as exc:  # onnxruntime's own (pybind) exception types, torch's RuntimeError
                raise KdError(f"{self.model_path}: the model failed on a batch of {len(idx)} texts ({_first_line(exc)}): "
                              f"the export is damaged or its {MANIFEST} was edited; re-run `kd export`") from None
            if got.shape != (len(idx), width):
                raise KdError(f"{self.model_path} gives scores of shape {list(got.shape)} for {len(idx)} texts, where "
                              f"{MANIFEST} names {width} classes: re-run `kd export`")
            out[idx] = got
        return out

    def predict(self, texts: list[str], *, batch_size: int = 256) -> list[dict[str, Any]]:
        """One dict per text: label, confidence, per-class probabilities, ``truncated`` (longer
        than ``max_len`` tokens: only the start was read) and ``unknown`` (no token the vocabulary
        holds). Each text is tokenized once."""
        texts = text_list(texts)  # (one str, a None, a numpy array: see textkey)
        if not texts:
            return []
        ids, cut = self.tokenizer.encode_flagged(texts)
        found = answers(softmax(self.logits(texts, batch_size=batch_size, ids=ids)), self.class_names)
        unknown = unknown_only(ids, self.tokenizer.unk_id, self.tokenizer.special_ids, cut)
        return [{**a, "truncated": c, "unknown": u} for a, c, u in zip(found, cut, unknown)]

    def _pad(self, rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        width = max(self.min_len, max((len(r) for r in rows), default=0))
        width = -(-width // self.pad_multiple) * self.pad_multiple
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return input_ids, mask


WIDEST = 1 << 16  # the largest inputs.min_len or inputs.pad_multiple served (kd writes at most a kernel width, 8)


def _check_fields(path: Path, manifest: dict[str, Any]) -> None:
    """One line naming the field of a hand-edited or damaged manifest whose value kd never writes
    (``"max_len": -1`` or ``"pad_id": 1e20`` ended in a traceback, ``"max_len": 0`` served every text
    unread, ``"special_tokens": "false"`` was read as true). The manifest itself has no sha256."""
    for name in ("inputs", "stage", "model", "tokenizer"):
        if name in manifest and not isinstance(manifest[name], dict):  # (a missing one: a KeyError, "incomplete" naming it)
            raise KdError(f"{path}: field {name} is {json.dumps(manifest[name], ensure_ascii=False)[:40]}, not an object: re-run `kd export`")
    inputs = manifest["inputs"]
    checks = [
        ("max_len", manifest["max_len"], 1, 2**31 - 1),
        ("inputs.pad_id", inputs["pad_id"], 0, 2**63 - 1),
        ("inputs.min_len", inputs.get("min_len", 1), 0, WIDEST),
        ("inputs.pad_multiple", inputs.get("pad_multiple", 1), 1, WIDEST),
    ]
    for name, value, low, high in checks:
        if not is_whole(value) or not low <= value <= high:
            raise KdError(f"{path}: field {name} is {json.dumps(value)[:40]}, not a whole number from {low} to {high}: re-run `kd export`")
    if not isinstance(inputs["special_tokens"], bool):
        raise KdError(f"{path}: field inputs.special_tokens is {json.dumps(inputs['special_tokens'])[:40]}, not true or false: re-run `kd export`")
    classes = manifest["classes"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise KdError(f"{path}: field classes is {json.dumps(classes, ensure_ascii=False)[:40]}, not a list of class names: re-run `kd export`")


def _onnx_runner(path: Path, device: str):
    try:
        import onnxruntime as ort
    except ImportError:
        raise KdError("serving an ONNX export needs onnxruntime: pip install onnxruntime (or 'kd[serve]')") from None
    available = ort.get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise KdError("--device cuda: this onnxruntime has no CUDA provider (install onnxruntime-gpu, or use --device cpu)")
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device != "cpu" and "CUDAExecutionProvider" in available else ["CPUExecutionProvider"]
    options = ort.SessionOptions()
    options.log_severity_level = 4  # fatal only: an error reaches kd as an exception and is said in kd's one line
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own (pybind) exception types
        raise KdError(f"cannot load {path}: {_first_line(exc)}") from None
    names = [i.name for i in session.get_inputs()]
    if sorted(names) != sorted(INPUT_NAMES):
        raise KdError(f"{path} takes inputs {names}, not {list(INPUT_NAMES)}: not a kd export")

    def run(input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return session.run(None, {"input_ids": input_ids, "attention_mask": mask})[0].astype(np.float32, copy=False)

    return run


def _torchscript_runner(path: Path, device: str):
    try:
        import torch
    except ImportError:
        raise KdError("serving a TorchScript export needs torch") from None
    # torch.jit.trace records the device of every tensor the model makes (torch.arange, masks) as a
    # constant: kd export traces on the CPU, so the traced model runs there and nowhere else
    if device == "cuda":
        raise KdError("--device cuda: a TorchScript export was traced on the CPU and runs only there "
                      "(use --device cpu or auto, or export with --format onnx and serve with onnxruntime-gpu)")
    dev = torch.device("cpu")
    try:
        module = torch.jit.load(str(path), map_location=dev).eval()
    except Exception as exc:  # torch.jit raises RuntimeError and friends
        raise KdError(f"cannot load {path}: {_first_line(exc)}") from None

    @torch.no_grad()
    def run(input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        out = module(torch.from_numpy(input_ids).to(dev), torch.from_numpy(mask).to(dev))
        return out.float().cpu().numpy()

    return run


def _unigram_unk_id(path: Path) -> int | None:
    """The unknown token's id of the Unigram (SentencePiece) model in the tokenizer.json ``path``: the
    tokenizers library's Python object does not give it; ``None`` where the file names none."""
    try:
        unk = json.loads(path.read_text(encoding="utf-8"))["model"].get("unk_id")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return unk if isinstance(unk, int) and not isinstance(unk, bool) else None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
