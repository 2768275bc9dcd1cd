"""``kd teach``: fine-tune a Hugging Face encoder on the store's labels and cache its logits for every sample.

The training function reads top to bottom in pipeline order: check inputs, load data and model,
train with early stopping on dev macro-F1, save the best model, score every sample, store metrics.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .advice import reteach_command
from .batching import bucketed_batches, check_grad_accum, encode_flagged, encode_packed, iter_padded, lengths_of, max_token_id, micro_batches, pad, sorted_batches, spread_by_length
from .distributed import SINGLE, Dist
from .errors import KdError
from .labels import read_labeled, record_labels_state
from .losses import CLASS_WEIGHTS, balanced_class_weights, weighted_cross_entropy
from .metrics import class_support, classification_metrics, mean_log_loss
from .noise import fold_figures
from .outputs import OutOfFold, average_probs_as_logits, check_teacher_kept, labels_time, store_split_metrics, taken_since, unscored, write_scores, write_sharded_scores
from .predictor import STUDENT_CONFIG
from .pretrain import TRAINED_POSITIONS, trained_positions
from .progress import progress
from .names import resolve_run_id
from .resume import TrainingState, link_or_copy, recorded_again, recording, resume_model, rows_digest, settings_key
from .runs import StageHandle, check_unchanged, sha256_path
from .schedules import check_epochs, check_lr, layer_decay_scales, warmup_linear_decay_step
from .speed import measure, speed_texts
from .folds import fold_count, stratified_folds
from .store import SampleSet, Store, check_where, missing_model, sources_hint
from .students import encoder_flops_config, mean_flops_per_sample
from .torchutil import BestCheckpoint, StepLosses, adam_options, autocast, count_parameters, decay_exempt, ensure_eval, grad_scaler, pick_device, saving_model, scaled_update, set_seed, stop_if_diverged, to_device

MODEL_SUBDIR = "model"
TRAINABLE_SPLITS = ("train", "dev")  # test stays held out: its figures are what a run is judged by
SCORE_CHUNK = 4096  # --logits-only commits every this many samples


@dataclass(frozen=True)
class TeachConfig:
    model: str
    epochs: int = 3
    lr: float = 5e-5
    batch_size: int = 32
    max_len: int = 128
    weight_decay: float = 0.01
    warmup: float = 0.1
    patience: int = 2
    seed: int = 42
    device: str = "auto"
    where: str | None = None
    splits: tuple[str, ...] = ("train",)  # the labeled rows of these splits train the teacher
    labels: tuple[str, ...] = ()  # only rows with these labels train it and judge it on dev (empty: all)
    score_batch_size: int = 256
    folds: int = 0  # K >= 2: out-of-fold logits for the train samples
    layer_decay: float = 1.0  # < 1: layer-wise learning-rate decay (head lr, top layer x d, next x d^2, ...)
    class_weight: str = "none"  # or "balanced": each row's loss weighted n / (C x n_class), for imbalanced classes
    grad_accum: int = 1  # K >= 2: each batch run as K pieces whose gradients add up (the same steps in less memory)

    def scoring_batch(self, world: int = 1) -> int:
        """Rows a scoring batch takes (:func:`scoring_batch`): 8 training batches' worth, or under ``--grad-accum`` (a model
        whose training batch did not fit) 4 pieces' worth, at most ``score_batch_size``: a forward pass keeps no activations
        for a backward one, but 256 rows where 8 fitted in training ran out of memory after the training, at the logits.
        ``world``: torchrun's processes, each of which trained on its share of a batch, so on pieces that much smaller."""
        return scoring_batch(-(-self.batch_size // world), self.grad_accum, self.score_batch_size)

    def validate(self) -> None:
        # one option a message: a message naming several was followed by a config file's value of one
        # that was fine (`--epochs 0` typed: "... (kd.toml: [teach] max-len = 256)")
        for option, value, least in (("--epochs", self.epochs, 1), ("--batch-size", self.batch_size, 1), ("--max-len", self.max_len, 2)):
            if value < least:
                raise KdError(f"{option} must be at least {least}, got {value}")
        check_epochs(self.epochs)
        check_lr(self.lr)
        if self.class_weight not in CLASS_WEIGHTS:
            raise KdError(f"--class-weight must be one of {', '.join(CLASS_WEIGHTS)}, got {self.class_weight!r}")
        if not self.splits:
            raise KdError("--split needs at least one split")
        for split in self.splits:
            if split not in TRAINABLE_SPLITS:
                raise KdError(f"--split {split!r}: choose from {', '.join(TRAINABLE_SPLITS)} (unlabeled samples have no labels to learn)")
        # (kd labels detect and kd report read the teacher's --where again: another draw of rows each time)
        check_where(self.where, every="train on every labeled row", rereads="kd reads a teacher's --where again (kd labels detect, kd report)")
        if self.folds == 1 or self.folds < 0:
            raise KdError(f"--folds must be 0 (off) or at least 2, got {self.folds}")
        if not 0.0 < self.layer_decay <= 1.0:
            raise KdError(f"--layer-decay must be in (0, 1], got {self.layer_decay}")
        if not 0.0 <= self.warmup < 1.0:
            raise KdError(f"--warmup must be in [0, 1), got {self.warmup}")
        if self.patience < 1:
            raise KdError(f"--patience must be at least 1, got {self.patience}")
        check_grad_accum(self.grad_accum, self.batch_size)


def resolve_model(store: Store, name: str) -> str:
    """``pretrain:RUN`` → that run's pre-trained model directory; anything else is a hub name or path."""
    if name.startswith(("pretrain:", "teach:")):  # RUN may be ${time}, as --run
        kind, run = name.split(":", 1)
        if not run.strip():  # (resolve_run_id would take it for the run named default)
            raise KdError(f"--model {name}: name the run after '{kind}:' (e.g. {kind}:r1)")
        try:
            stage = store.find_stage(resolve_run_id(run), kind)
        except KdError as exc:  # (the option named: a config file's model, never typed, is then named with the file)
            raise KdError(f"--model {name}: {exc}") from None
        if kind == "teach" and fold_count(stage.config):
            raise KdError(f"the teacher of run {run!r} is {stage.config['folds']} fold models (--folds): start from "
                          f"one of them, {stage.artifact_path}/fold-0, or from a teacher trained without --folds")
        if not stage.artifact_path or not Path(stage.artifact_path).is_dir():
            raise missing_model(stage)  # ("cannot load model ...: no such directory" said not where to move it)
        check_unchanged(stage)  # (a config.json edited by hand was fine-tuned from without a word)
        return stage.artifact_path
    return name


def started_from(path: str, config) -> dict:
    """Which checkpoint a teacher starts from, for its stage's config: a local folder's absolute path
    and sha256 (``teach:RUN`` may be replaced, a folder edited), a hub name with its revision."""
    folder = Path(path).expanduser()
    if folder.is_dir():
        return {"model_path": str(folder.resolve()), "model_sha256": sha256_path(folder)}
    return {"model_path": path, "model_revision": getattr(config, "_commit_hash", None)}


def quiet_transformers() -> None:
    """No load reports or loading bars from transformers: kd shows its own progress."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:  # the hub client's own retry warnings ("Retrying in 8s") too: kd says in one line what failed
        from huggingface_hub.utils import logging as hub_logging

        hub_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


def load_classifier(path: str, class_names: list[str]):
    """``(tokenizer, model)`` for ``path`` with a head of ``len(class_names)`` outputs, or a KdError."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    quiet_transformers()
    if str(path).startswith("~"):  # a quoted ~ (--model '~/m', a config file's model = "~/m"): transformers took it for a hub name
        path = str(Path(path).expanduser())
    if str(path).startswith(("/", "./", "../", "~")) and not Path(path).expanduser().exists():
        raise KdError(f"cannot load model {path!r}: no such directory")  # not a hub name: no download to try
    if Path(path).expanduser().is_file():  # (not a hub name either: "no such local directory ... hub" misled)
        raise KdError(f"cannot load model {path!r}: it is a file; give the folder that holds config.json and the weights")
    if (Path(path).expanduser() / STUDENT_CONFIG).is_file():
        raise KdError(f"{path!r} is a kd student (kd distill), not a Hugging Face model: start from its teacher (--model teach:RUN)")
    if Path(path).expanduser().is_dir() and not (Path(path).expanduser() / "config.json").is_file():
        # (transformers said "Should have a `model_type` key in its config.json" of a config.json that is not there)
        raise KdError(f"cannot load model {path!r}: no config.json in that folder{_inner_model(Path(path).expanduser())}")
    # kd runs no model's own code (config.json's auto_map): unsaid, transformers asked "[y/N]" on the
    # terminal, waited, and ran the folder's Python file on a "y"
    hub = {"trust_remote_code": False}
    unreachable = None if Path(path).expanduser().is_dir() else hub_unreachable()
    if unreachable:  # the hub client would retry for half a minute a file: its cache alone
        hub["local_files_only"] = True
    try:
        config = AutoConfig.from_pretrained(path, **hub)
        tokenizer = AutoTokenizer.from_pretrained(path, **hub)
    except (OSError, ValueError, KeyError) as exc:
        if unreachable:
            raise KdError(f"cannot load model {path!r}: no such local directory, no downloaded copy, and the Hugging Face hub "
                          f"cannot be reached ({unreachable})") from None
        offline = _offline_variable() if isinstance(exc, OSError) and not Path(path).expanduser().is_dir() else None
        if offline:  # (transformers said "We couldn't connect to 'https://huggingface.co'... Check your internet connection")
            raise KdError(f"cannot load model {path!r}: no such local directory, and no downloaded copy ({offline} is set: "
                          "the Hugging Face hub is not asked)") from None
        why = _unreadable_json(path) or _own_code(path, exc) or _no_sentencepiece(path, exc) or _first_line(exc)
        raise KdError(f"cannot load model {path!r}: {why}") from None
    # (transformers 5 makes an empty one where it finds no files; counted by its distinct tokens: a DeBERTa-v2's, made so
    # beside a BERT vocab.txt, lists [SEP] twice, and its length, 7 over 5 special ids, passed as a vocabulary)
    if len(tokenizer.get_vocab()) <= len(set(tokenizer.all_special_ids)):
        hint = "save the tokenizer it was trained with in its folder (tokenizer.save_pretrained)"
        if (Path(path).expanduser() / "vocab.txt").is_file():  # (a Chinese ALBERT: BERT's vocab.txt, no spiece.model; the hint misled)
            kind = getattr(config, "model_type", "")
            albert = " (a Chinese ALBERT's is a BERT vocabulary)" if kind == "albert" else ""  # (not said of a RoBERTa)
            hint = (f"its vocab.txt is not read for model type {kind!r}{albert}: "
                    'say {"tokenizer_class": "BertTokenizer"} in its tokenizer_config.json')
            folder = Path(path).expanduser()
            if (folder / "tokenizer.json").is_file():  # (transformers 5's BertTokenizerFast(vocab_file=...) saves one so, and
                # a tokenizer_config.json that already names BertTokenizer: the hint above asked for what the folder said)
                try:
                    named = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")).get("tokenizer_class")
                except (OSError, ValueError, AttributeError):
                    named = None
                lines = (folder / "vocab.txt").read_text(encoding="utf-8", errors="replace").splitlines()
                hint = (f"its tokenizer.json holds the special tokens alone, beside a vocab.txt of "
                        f"{len({t.strip() for t in lines if t.strip()})} tokens: remove tokenizer.json, and vocab.txt is read"
                        + ("" if named in ("BertTokenizer", "BertTokenizerFast")
                           else ' (with {"tokenizer_class": "BertTokenizer"} in its tokenizer_config.json)'))
        raise KdError(f"model {path!r} has no tokenizer (its vocabulary is the {len(tokenizer.get_vocab())} special tokens alone): {hint}")
    trained, reorder = head_classes(config, class_names, path)
    own_pad = tokenizer.pad_token_id is not None
    if tokenizer.pad_token_id is None:  # a GPT-style tokenizer: batches could not be padded
        fallback = next((t for t in (tokenizer.eos_token, tokenizer.unk_token) if t is not None), None)
        if fallback is None:
            raise KdError(f"the tokenizer of {path!r} has no pad token (nor an end or unknown token to pad with)")
        tokenizer.pad_token = fallback
    configured = getattr(config, "pad_token_id", None)
    if (isinstance(configured, int) and 0 <= configured < len(tokenizer) and configured != tokenizer.pad_token_id
            and (not own_pad or _reads_last_token(config))):
        # a decoder-only classifier reads the last token that is not its config's pad id: padded with
        # another id, a short text in a batch scored otherwise than alone. An encoder masks its padding
        # (whatever its id): there a tokenizer's own pad token stands, a config's pad id may be a stale
        # default (BertConfig's 0, RobertaConfig's 1 beside a BERT vocabulary) naming a real token, which
        # would become a special token and the students' never-learned padding embedding
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(configured)
    if len(tokenizer) > config.vocab_size:
        raise KdError(
            f"tokenizer of {path!r} has {len(tokenizer)} tokens but the model only {config.vocab_size}: "
            "they do not belong together"
        )
    top = max_token_id(tokenizer)
    if top is not None and top >= config.vocab_size:
        # (fewer tokens than ids: a vocab.txt naming a token twice keeps its last line's id, past the
        # table; torch's "IndexError: index out of range in self" came mid-training)
        raise KdError(
            f"tokenizer of {path!r} gives token ids up to {top} but the model's embedding table has {config.vocab_size} "
            f"rows (ids 0-{config.vocab_size - 1}){_id_gap(tokenizer, top)}: they do not belong together"
        )
    from safetensors import SafetensorError

    # a decoder-only classifier (GPT-2, Llama) reads the last token that is not padding, and with no
    # pad id in its configuration it refuses batches of more than one text: the tokenizer's pad id
    pad_id = {"pad_token_id": tokenizer.pad_token_id} if getattr(config, "pad_token_id", None) is None else {}
    try:
        model, loaded = AutoModelForSequenceClassification.from_pretrained(
            path,
            **pad_id,
            **hub,
            output_loading_info=True,
            num_labels=len(class_names),
            id2label=dict(enumerate(class_names)),
            label2id={n: i for i, n in enumerate(class_names)},
            ignore_mismatched_sizes=True,
            problem_type="single_label_classification",  # one class a text, whatever a base model's config said
            # float32 master weights whatever the checkpoint's dtype (transformers 5 would keep a
            # float16 checkpoint in float16, and AdamW on half weights loses its small updates);
            # on a GPU, bf16/fp16 autocast runs on top
            dtype=torch.float32,
        )
    except Exception as exc:
        # SafetensorError: damaged safetensors (a cut copy); a cut or damaged pytorch_model.bin gave
        # "[Errno 22] Invalid argument", an EOFError or an UnpicklingError that spoke of weights_only,
        # and one of other bytes whatever torch's unpickler met first (IndexError, KeyError, UnicodeDecodeError)
        damaged = _damaged_bin(path, exc)
        if damaged is None and not isinstance(exc, (OSError, ValueError, SafetensorError, EOFError, pickle.UnpicklingError)):
            raise
        raise KdError(f"cannot load {path!r} as a sequence classifier: {damaged or _first_line(exc)}") from None
    # ignore_mismatched_sizes is for the head (another number of classes); a body weight whose shape
    # differs from its config.json (a vocab_size edited by hand) would be silently drawn at random
    body = model.base_model.state_dict()
    body = set(body) | {f"{model.base_model_prefix}.{k}" for k in body}
    for name, saved, wanted in sorted(loaded.get("mismatched_keys") or (), key=str):
        if name in body:
            raise KdError(f"model {path!r}: weight {name} is {tuple(saved)} in the checkpoint but {tuple(wanted)} by its "
                          "config.json: they do not belong together")
    # and one the checkpoint lacks (a config.json naming more layers than were saved, or weights saved
    # under another model's names) would be drawn at random too, silently; a pooler alone is new in a
    # masked-LM checkpoint
    absent = sorted(n for n in loaded.get("missing_keys") or () if n in body and ".pooler." not in f".{n}")
    if absent:
        more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
        raise KdError(f"model {path!r}: weight {absent[0]}{more} is not in the checkpoint, though its config.json has it: "
                      "they do not belong together")
    if reorder:  # the store's classes in another order: the head's rows follow them (its fine-tuning is kept)
        _reorder_head(model, [trained.index(n) for n in class_names], path)
    return tokenizer, model


def head_classes(config, class_names: list[str], path) -> tuple[list[str], bool]:
    """``(the classes config's head was fine-tuned for, whether they are the store's in another order)``;
    refused when a head names other classes than the store's (generic ``LABEL_i`` names say nothing)."""
    # as text: a config.json may name its classes with numbers ({"0": 1, "1": 2}), the store's are strings
    trained = [str(config.id2label[i]) for i in sorted(config.id2label)] if config.id2label else []
    is_generic = all(n.startswith("LABEL_") for n in trained)
    reorder = bool(trained) and not is_generic and trained != list(class_names) and sorted(trained) == sorted(class_names)
    if trained and not is_generic and trained != list(class_names) and not reorder:
        raise KdError(
            f"model {path!r} was fine-tuned for classes {trained}, the store has {list(class_names)}: "
            "start from the base model instead"
        )
    return trained, reorder


def _id_gap(tokenizer, top: int) -> str:
    """Why a tokenizer's ids run past its size (``"; its 38 tokens leave 1 id unused ..."``), or ``""``."""
    missing = top + 1 - len(tokenizer)
    if missing <= 0:
        return ""
    return (f"; its {len(tokenizer)} tokens leave {missing} id{'s' if missing > 1 else ''} unused (a vocab.txt that names "
            f"{'a token' if missing == 1 else 'tokens'} twice?)")


def _reads_last_token(config) -> bool:
    """Whether ``config``'s sequence classifier is decoder-only (GPT-2, Llama, Qwen): it classifies
    the last token that is not ``config.pad_token_id``, so its padding must be that id."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

    kind = getattr(config, "model_type", "")
    return kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def _inner_model(folder: Path) -> str:
    """What to give instead of a folder without config.json: a subfolder holding a model (a kd stage's
    folder, whose model is in model/, fold-K/ or student/), or the folder that holds config.json."""
    inner = sorted(p.parent for p in folder.glob("*/config.json"))
    if inner:
        return f": give the folder that holds config.json and the weights, such as {str(inner[0])!r}"
    student = sorted(p.parent for p in folder.glob(f"*/{STUDENT_CONFIG}"))
    if student:
        return (f": {str(student[0])!r} in it is a kd student (kd distill), not a Hugging Face model: "
                "start from its teacher (--model teach:RUN)")
    return ": give the folder that holds config.json and the weights"


def _damaged_bin(path, exc: BaseException) -> str | None:
    """What to say of a torch checkpoint (``*.bin``) that torch cannot read, or ``None`` for another
    error (or a folder whose weights are safetensors, which transformers reads first)."""
    folder = Path(path).expanduser()
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return None
    if not isinstance(exc, (EOFError, pickle.UnpicklingError)) and not (
        isinstance(exc, OSError) and exc.errno == errno.EINVAL
    ) and (isinstance(exc, OSError) or not _raised_reading_torch_checkpoint(exc)):
        return None
    weights = sorted(folder.glob("*.bin"))
    if not weights:
        return None
    name = weights[0].name
    with weights[0].open("rb") as f:  # (its start alone: a checkpoint may be gigabytes)
        start = f.read(30)
    if start.startswith(b"version https://git-lfs"):
        return f"{name} is a Git LFS pointer, not the file itself (fetch it: git lfs pull)"
    return (f"{name} ({weights[0].stat().st_size:,} bytes) is not a readable torch checkpoint: cut short (a copy or "
            "download that did not finish) or damaged; copy it again")


def _raised_reading_torch_checkpoint(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) came out of torch's checkpoint reader: random
    bytes stop its unpickler wherever they first make no sense (an IndexError "pop from empty list", a
    KeyError, a UnicodeDecodeError), a fault of the file, not of kd or the model's code."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        for frame in traceback.extract_tb(exc.__traceback__):
            if frame.filename.replace("\\", "/").endswith(("torch/serialization.py", "torch/_weights_only_unpickler.py")):
                return True
        exc = exc.__cause__ or exc.__context__
    return False


def _unreadable_json(path) -> str | None:
    """Which JSON file of a local model folder cannot be read (``tokenizer.json: not valid JSON ...``),
    or ``None``: a tokenizer's own error ("Expecting value: line 1 column 1") named no file."""
    import json

    folder = Path(path).expanduser()
    if not folder.is_dir():
        return None
    for file in sorted(folder.glob("*.json")):
        data = file.read_bytes()
        try:
            json.loads(data.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError) as exc:
            if data.startswith(b"version https://git-lfs"):
                return f"{file.name} is a Git LFS pointer, not the file itself (fetch it: git lfs pull)"
            return f"{file.name} is not valid JSON ({_first_line(exc)})"
    return None


def _no_sentencepiece(path, exc: BaseException) -> str | None:
    """Why a folder's SentencePiece tokenizer (spiece.model, sentencepiece.bpe.model) did not load where the
    sentencepiece package is missing: transformers then reads the file as tiktoken's, and asked for tiktoken."""
    import importlib.util

    if "tiktoken" not in str(exc) or importlib.util.find_spec("sentencepiece") is not None:
        return None
    folder = Path(path).expanduser()
    models = sorted(p.name for p in folder.glob("*.model")) if folder.is_dir() else []
    if not models:
        return None
    return f"its tokenizer is the SentencePiece model {models[0]}, which needs the sentencepiece package (pip install sentencepiece)"


def _own_code(path, exc: BaseException) -> str | None:
    """Why a model that needs its own code cannot load (transformers' message asked for a
    ``trust_remote_code=True`` kd has no option for), or ``None`` for another error."""
    import json

    if "trust_remote_code" not in str(exc):
        return None
    try:
        kind = json.loads((Path(path).expanduser() / "config.json").read_text(encoding="utf-8-sig")).get("model_type")
    except (OSError, ValueError, AttributeError):  # (a hub name: no local config.json)
        kind = None
    return (f"it needs its own code (config.json's auto_map{f', model type {kind!r}' if kind else ''}), which kd does not run: "
            "start from a model of a type transformers knows")


def _reorder_head(model, order: list[int], path) -> None:
    """Permute the output rows of a classifier's last layer so that row i is the store's class i
    (``order[i]``: its row in the checkpoint). The last layer is the one linear layer outside the
    encoder with one output a class, the last such when several are (BERT's ``classifier``, RoBERTa's
    ``classifier.out_proj`` after its ``dense`` of the hidden width, GPT-2's ``score``: heads register
    their output layer last)."""
    body = {id(m) for m in model.base_model.modules()}
    heads = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and id(m) not in body and m.out_features == len(order)][-1:]
    if not heads:
        raise KdError(f"model {path!r} was fine-tuned for the store's classes in another order, and its output layer "
                      "cannot be told to reorder it: start from the base model instead")
    index = torch.tensor(order)
    with torch.no_grad():
        heads[0].weight.copy_(heads[0].weight[index])
        if heads[0].bias is not None:
            heads[0].bias.copy_(heads[0].bias[index])


def _offline_variable() -> str | None:
    """The variable that switched the Hugging Face hub off (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE), or ``None``."""
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:
        return None
    return next((v for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if os.environ.get(v)), "HF_HUB_OFFLINE")


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the Hugging Face hub cannot be reached (one quick connection), or ``None`` (reached,
    HF_HUB_OFFLINE set: the hub client then reads its cache alone, or a proxy set: no direct
    connection to try)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return None
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")):
        return None  # reached through a proxy, not directly: left to the hub client
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout).close()
    except OSError as exc:
        return f"{url.hostname}: {exc.strerror or exc}"
    return None


@torch.no_grad()
def score(
    model, tokenizer, texts: list[str], *, max_len: int, batch_size: int, device, label: str = "score", bar: bool = True,
    ids: list[list[int]] | None = None, on_batch=None,
) -> np.ndarray:
    """Logits ``(len(texts), num_labels)`` in the order of ``texts``, computed in length-sorted batches;
    ``ids``: the texts already encoded (``encode(tokenizer, texts, max_len=max_len)``); ``on_batch``: called
    with each batch's number of texts as it is scored."""
    ensure_eval(model)
    if ids is None:
        ids = encode_packed(tokenizer, texts, max_len=max_len)
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    batches = spread_by_length(sorted_batches(lengths_of(ids), batch_size))  # (long texts spread over the bar: its ETA holds)
    with progress(disable=not bar or len(texts) <= batch_size) as bars:  # no bar for a single batch
        task = bars.add_task(label, total=len(texts), unit="samples")
        for idx, input_ids, mask in iter_padded(ids, batches, tokenizer.pad_token_id):
            with autocast(device):
                logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
            out[idx] = logits.float().cpu().numpy()
            bars.update(task, advance=len(idx))
            if on_batch is not None:
                on_batch(len(idx))
    return out


def train_teacher(store: Store, stage: StageHandle, cfg: TeachConfig, dist: Dist = SINGLE, *, resume: bool = False,
                  stage_config: dict | None = None) -> Path | None:
    """Fine-tune (K times with ``folds``), save, and store logits for every sample in the store.

    With ``folds = K`` each train sample's logits come from the teacher that did not train on it
    (out-of-fold, what confident learning needs) and every other sample gets the K teachers' average
    probability; the fold of each train sample is stored.

    Under torchrun every rank trains on its share of each global batch (DDP) and scores its shard of
    the samples; rank 0 alone saves the model and records figures, after checking that every sample
    has its logits. Returns the model directory (``None`` on the other ranks).

    Each epoch's end and each finished fit are saved beside the stage (:mod:`kdstore.resume`, with
    ``stage_config``, the stage's config): ``resume`` continues from that saved state.
    """
    cfg.validate()
    rng = set_seed(cfg.seed)
    device = pick_device(cfg.device)
    add_metrics = dist.on_main(store.add_metrics)

    # 1. data: current labels, dropped samples excluded from training
    names = store.class_names()
    # the labels learned from, as read; and with them the samples it scores, so that one ingested later (while the
    # model loads: an ingest from another process) is neither scored nor counted in the figures of rows it learned from
    (train, dev, everything), labels = read_labeled(store, lambda: scored_with_rows(store, cfg, names))
    dist.on_main(record_labels_state)(store, stage.id, labels)
    if len(set(train.labels.tolist())) < 2:
        # (named with the filters that chose them: "the train samples" of a store with several classes misled)
        chosen = " that --where/--label select" if cfg.where or cfg.labels else ""
        raise KdError(f"the train samples{chosen} have a single class ({names[int(train.labels[0])]!r}): a classifier needs at least two")
    # the classes its rows hold, as they were: its split figures count every labeled row, those its
    # --where left out too (a detection took a class no row taught it for learned, and flagged every such label)
    dist.on_main(record_labels_state)(store, stage.id, {"learned_classes": [names[c] for c in np.unique(train.labels)]})
    add_metrics(stage.id, "all", {"train_samples": len(train), "dev_samples": len(dev)})
    folds = stratified_folds(train.labels, cfg.folds, seed=cfg.seed, class_names=names) if cfg.folds else None
    # (resumed: the folder it started from, whatever the working directory now; cfg.model stays as typed)
    path = resolve_model(store, resume_model(store, stage.run, cfg.model) if resume else cfg.model)
    _, probe = load_classifier(path, names)  # every model problem surfaces before any training starts
    check_max_len(probe.config, cfg.max_len, path)
    origin = started_from(path, probe.config) if dist.is_main else {}  # (the checkpoint's sha256 once, not on every rank)
    if dist.is_main:
        record_labels_state(store, stage.id, origin)
    del probe
    try:
        dist.agree("training rows", train, dev, everything)
    except KdError as exc:  # (not the store changing where --where reads other rows each time: every rerun failed alike)
        if not cfg.where:
            raise
        raise KdError(f"{exc}; or --where {cfg.where!r} selects other rows at each read (random()?), and each process "
                      "reads its own: select a fixed set (such as id % 10 = 0)") from None

    # 2. train one teacher, or one per fold, and score this rank's shard of what each is responsible for
    scoring = 0.0  # seconds spent scoring and writing logits (the stored rate), training excluded
    state = TrainingState(store, stage.run, config=stage_config or config_dict(cfg), resume=resume, writes=dist.is_main,
                          key={"settings": settings_key(config_dict(cfg)), "model": origin.get("model_sha256") or origin.get("model_revision"),
                               "classes": names, "train": rows_digest(train.ids, train.labels), "dev": rows_digest(dev.ids, dev.labels)},
                          model_dir=origin.get("model_path") if origin.get("model_sha256") else None)
    if folds is None:
        model, tokenizer, rows = _fit(add_metrics, stage, cfg, path, names, train, dev, device, rng, dist, tag="", state=state)
        out_dir = _kept(model, tokenizer, stage.artifact_dir / MODEL_SUBDIR, cfg, state, "", rows, rng) if dist.is_main else None
        started = time.monotonic()
        mine = everything.subset(dist.shard(len(everything)))
        ids = mine.ids
        logits = score(model, tokenizer, mine.texts, max_len=cfg.max_len, batch_size=cfg.scoring_batch(dist.world), device=device, label=dist.share_label("logits"))
        scoring += time.monotonic() - started
    else:
        out_dir = stage.artifact_dir if dist.is_main else None
        oof = OutOfFold(everything, train, folds, dist)
        for k in range(cfg.folds):
            model, tokenizer, rows = _fit(add_metrics, stage, cfg, path, names, train.subset(folds != k), dev, device, rng, dist, tag=f"fold{k}/", state=state)
            if dist.is_main:
                _kept(model, tokenizer, out_dir / f"fold-{k}", cfg, state, f"fold{k}/", rows, rng)
            texts = oof.texts(k)
            started = time.monotonic()
            oof.add(score(model, tokenizer, texts, max_len=cfg.max_len, batch_size=cfg.scoring_batch(dist.world), device=device, label=dist.share_label(f"fold {k} logits")))
            scoring += time.monotonic() - started
        ids, logits = oof.result()
        if dist.is_main:
            store.write_folds(stage.id, train.ids, folds)

    # 3. each rank stores its logits and predictions; rank 0 checks that every sample has them,
    #    records the model and the figures
    started = time.monotonic()
    logits = write_sharded_scores(store, stage.id, dist, everything, ids, logits, model="teacher")
    rate = len(everything) / max(scoring + time.monotonic() - started, 1e-9)
    if not dist.is_main:
        return None
    stage.record_artifact(out_dir)
    store_split_metrics(store, stage.id, everything, logits, names)
    if cfg.folds:  # each fold's own out-of-fold agreement (a fold whose model learned nothing: kd teach says so, not only detect)
        row = {int(i): r for r, i in enumerate(everything.ids)}
        agree = logits[[row[int(i)] for i in train.ids]].argmax(axis=1) == train.labels
        store.add_metrics(stage.id, "train", fold_figures(agree, train.labels, folds))
    cpu = torch.device("cpu")
    # what `kd predict` serves: the model, or for --folds the K fold models' average (as size_mb counts them)
    served = [model.to(cpu)] if not cfg.folds else [load_classifier(str(out_dir / f"fold-{k}"), names)[1].to(cpu) for k in range(cfg.folds)]
    timed = speed_texts(everything)
    flops = encoder_flops_config(model.config, len(names))  # (as the students': over the texts timed, each at its length)
    flops = {} if flops is None else {
        "flops_per_sample": mean_flops_per_sample(flops, encode_packed(tokenizer, timed, max_len=cfg.max_len).lengths) * len(served)}
    store.add_metrics(stage.id, "all", {"score_samples_per_s": rate, "parameters": sum(count_parameters(m) for m in served), **flops})
    if dist.active:
        store.add_metrics(stage.id, "all", {"processes": dist.world})
    store.add_metrics(stage.id, "all", measure(
        # bar=False: timing runs are no work to watch (they showed as unexplained "score" bars, one per fold)
        lambda texts, bs: score(model, tokenizer, texts, max_len=cfg.max_len, batch_size=bs, device=cpu, bar=False) if len(served) == 1 else
        average_probs_as_logits([score(m, tokenizer, texts, max_len=cfg.max_len, batch_size=bs, device=cpu, bar=False) for m in served]),
        timed,
    ))
    return out_dir


def scored_with_rows(store: Store, cfg: TeachConfig, names: list[str]) -> tuple[SampleSet, SampleSet, SampleSet]:
    """``(train, dev, everything)``: ``training_rows`` and every sample to score, read first: a row ingested
    between the two reads is left out of both (the train rows are all among the samples scored)."""
    everything = store.samples(include_dropped=True)
    train, dev = training_rows(store, cfg, names)
    known = lambda rows: rows.subset(np.isin(rows.ids, everything.ids))  # noqa: E731
    return known(train), known(dev), everything


def check_labels(labels: tuple[str, ...], names: list[str]) -> None:
    """Refuse a ``--label`` that names no class of the store."""
    unknown = [name for name in labels if name not in names]
    if unknown:
        raise KdError(f"--label {unknown[0]!r} is not a class of the store (classes: {', '.join(names)})")


def training_rows(store: Store, cfg: TeachConfig, names: list[str]) -> tuple[SampleSet, SampleSet]:
    """``(train, dev)``: the labeled rows of ``cfg.splits`` matching ``--where``, and the dev rows
    that judge the epochs (none when dev rows train); both limited to ``cfg.labels`` if given, and dev to the
    classes the train rows hold."""
    check_labels(cfg.labels, names)
    train = store.samples(splits=list(cfg.splits), labeled=True, where=cfg.where)
    keep = [names.index(name) for name in cfg.labels]
    if cfg.labels:
        train = train.subset(np.isin(train.labels, keep))
    # dev judges the epochs unless dev rows train: `--split dev` with a --where that selects none of them
    # kept the last epoch, with no judge, and called the dev figures of rows it never saw "not held out"
    dev = store.samples(splits=["dev"], labeled=True) if "dev" not in train.splits else store.samples(ids=[])
    if cfg.labels:
        dev = dev.subset(np.isin(dev.labels, keep))
    if len(train):  # nor the dev rows of a class no train row holds (its samples all dropped or relabeled away): never
        # learned, their loss only grows as the others are, and the tie-break on dev loss kept the first epoch
        dev = dev.subset(np.isin(dev.labels, np.unique(train.labels)))
    if len(train) == 0:
        query = [f"split {'/'.join(cfg.splits)}"]
        if cfg.where:
            query.append(f"--where {cfg.where!r}")
        if cfg.labels:
            query.append(f"labels {'/'.join(cfg.labels)}")
        into = "" if "train" in cfg.splits else f" --split {cfg.splits[0]}"  # (kd ingest FILE adds train samples)
        hint = "loosen the filters" if cfg.where or cfg.labels else f"ingest some with `kd ingest FILE{into}`"
        hint += sources_hint(store, cfg.where, cfg.splits)
        raise KdError(f"no labeled samples for the teacher ({', '.join(query)}): {hint}")
    return train, dev


def check_learned_every_class(stage, names: list[str], *, run: str, purpose: str) -> None:
    """Refuse a teacher trained on some classes only (``kd teach --label``) for ``purpose``: its
    outputs for the other classes were never taught. Stages from before ``--label`` learned all."""
    learned = list(stage.config.get("labels") or [])
    if learned and set(learned) != set(names):
        missing = [n for n in names if n not in learned]
        raise KdError(
            f"the teacher of run {run!r} learned only classes "
            f"{', '.join(learned)} (kd teach --label), not {', '.join(missing)}: {purpose} needs a teacher of every class"
        )


def learned_classes(store: Store, stage) -> set[str] | None:
    """Names of the classes a teach stage had samples of in the splits it learned from, as its figures
    count them when it ran (``support[CLASS]``); ``None`` for a stage without such figures. A class
    pinned by ``kd ingest --classes`` whose train samples came later is not among them, nor a class
    its ``--where`` or ``--label`` left out (``learned_classes``, recorded as it read its rows; for a
    stage from before that, those its filters select now)."""
    if stage.config.get("learned_classes") is not None:
        return set(stage.config["learned_classes"])
    splits = set(stage.config.get("splits") or ["train"])
    figures: dict[str, dict[str, float]] = {}
    for m in store.metrics(stage.id):
        if m.split in splits:
            figures.setdefault(m.split, {})[m.name] = m.value
    support: dict[str, float] = {}
    for split_figures in figures.values():
        for name, n in class_support(split_figures).items():
            support[name] = support.get(name, 0.0) + n
    if support and (stage.config.get("where") or stage.config.get("labels")):
        names = store.class_names()
        selected = {names[int(c)] for c in store.samples(ids=sorted(trained_on(store, stage)), include_dropped=True).labels if c >= 0}
        support = {name: n if name in selected else 0.0 for name, n in support.items()}
    return {name for name, n in support.items() if n > 0} if support else None


def trained_on(store: Store, stage) -> set[int]:
    """Ids of the samples a teach stage learned from, as its query selects them now: the labeled
    rows of its ``splits`` (train before ``--split`` existed) matching its ``--where`` and ``--label``,
    dropped ones included (they may have been dropped after it ran); samples ingested after it read them
    (``newest_sample_read``) and pool texts `kd ingest --take-pool` took into train since left out (it scored
    them later, or as pool texts)."""
    cfg = stage.config
    rows = store.samples(splits=list(cfg.get("splits") or ["train"]), labeled=True, where=cfg.get("where"), include_dropped=True)
    if cfg.get("labels"):
        names = store.class_names()
        rows = rows.subset(np.isin(rows.labels, [names.index(n) for n in cfg["labels"] if n in names]))
    newest = cfg.get("newest_sample_read")  # (samples ingested after it read its rows, scored by a later --logits-only)
    return {int(i) for i in rows.ids if newest is None or int(i) <= newest} - taken_since(store, labels_time(stage))


def teacher_at(store: Store, path) -> tuple[str, Any, int | None] | None:
    """``(run, stage, fold)``: the succeeded teach stage of the store whose model is the folder ``path``
    (``fold`` k for its ``fold-k`` of a ``--folds`` teacher, else None); ``None`` for another folder."""
    folder = Path(path).expanduser().resolve()
    for run, stages in store.runs():
        for st in stages:
            if st.kind != "teach" or st.status != "succeeded" or "~" in st.name or not st.artifact_path:
                continue
            home = Path(st.artifact_path).expanduser().resolve()
            if not fold_count(st.config) and folder == home:
                return run.uniqid, st, None
            if fold_count(st.config) and folder.parent == home and folder.name.startswith("fold-") and folder.name[5:].isdigit():
                return run.uniqid, st, int(folder.name[5:])
    return None


def learned_at_start(store: Store, stage) -> tuple[set[int], str | None]:
    """``(sample ids, run)``: the rows whose labels the checkpoint a teach stage started from
    had learned (``--model teach:RUN``, a teacher's folder or a fold model's: every fold of a ``--folds``
    teacher starts from it, so those rows are in-sample for all of them), following such starts back;
    the run whose teacher it started from, or ``(set(), None)`` for a checkpoint no teacher of the store made."""
    seen: set[int] = set()
    first, visited, path = None, {stage.id}, (stage.config or {}).get("model_path")
    while path:
        found = teacher_at(store, path)
        if found is None or found[1].id in visited:
            break
        run, source, fold = found
        visited.add(source.id)
        first = first or run
        seen |= learned_by(store, source, fold)
        path = (source.config or {}).get("model_path")
    return seen, first


def learned_by(store: Store, stage, fold: int | None) -> set[int]:
    """The sample ids whose labels a teach stage's model learned: its training rows, or for ``fold`` k
    of a ``--folds`` teacher the rows of the other folds."""
    if fold is None:
        return trained_on(store, stage)
    return {i for i, k in store.read_folds(stage.id).items() if k != fold}


def check_layer_decay(config, layer_decay: float) -> None:
    """Refuse ``--layer-decay`` below 1 for an encoder-decoder model (read from its configuration, so
    that ``kd teach`` refuses it before a stage is recorded)."""
    if layer_decay < 1.0 and getattr(config, "is_encoder_decoder", False):
        # encoder and decoder layers share their numbers, T5 numbers blocks, and the shared embeddings
        # would get the head's rate: no depth order to decay by
        raise KdError(f"--layer-decay: {config.model_type!r} is an encoder-decoder model, whose layers it cannot order; leave --layer-decay out")


def _param_groups(model, cfg: TeachConfig) -> list[dict]:
    """AdamW groups: no weight decay on biases and LayerNorm weights; with ``layer_decay`` < 1 each
    parameter's learning rate is scaled by its depth (:func:`layer_decay_scales`)."""
    named = decay_exempt(model)
    check_layer_decay(model.config, cfg.layer_decay)
    try:
        scales = layer_decay_scales([n for n, _, _ in named], cfg.layer_decay)
    except ValueError as exc:
        raise KdError(f"--layer-decay {cfg.layer_decay}: {exc}") from None
    groups: dict[tuple[float, bool], list] = {}
    for (_, param, exempt), scale in zip(named, scales):
        groups.setdefault((scale, exempt), []).append(param)
    return [
        {"params": params, "lr": cfg.lr * scale, "weight_decay": 0.0 if exempt else cfg.weight_decay}
        for (scale, exempt), params in groups.items()
    ]


def _fit(add_metrics, stage, cfg: TeachConfig, path: str, names, train: SampleSet, dev: SampleSet, device, rng, dist: Dist, *, tag: str,
         state: TrainingState):
    """Fine-tune a fresh copy of the model at ``path`` on ``train``; return the best epoch's model and the
    metric rows it recorded. A fit the saved ``state`` finished is loaded from it, one it saved after an
    epoch goes on from there (``kd teach --resume``); each epoch's end is saved in it.

    Every rank draws the same global batches and trains on its share of each (DDP); dev is scored
    in shards and gathered, so every rank takes the same early-stopping decision.
    """
    saved, saved_rows = state.replay(tag)
    rows = recorded_again(add_metrics, stage.id, saved_rows)  # this fit's metric rows, as the saved state keeps them
    add_metrics = recording(add_metrics, rows)
    done = state.done(tag)
    if done is not None:
        state.restore_random(tag, rng)  # (the next fold draws its batches as it would have)
        tokenizer, model = load_classifier(str(done), names)
        model.kd_saved = done  # (its files, saved already: train_teacher links them, not a second save)
        return model.to(device), tokenizer, rows

    tokenizer, model = load_classifier(path, names)
    model.to(device)
    net = dist.wrap(model)
    train_ids, cut = encode_flagged(tokenizer, train.texts, max_len=cfg.max_len)
    if saved is None:  # (a resumed fit's were among the rows replayed)
        add_metrics(stage.id, "train", {f"{tag}truncated": int(sum(cut))})  # texts cut to --max-len tokens (kd teach warns when many)
    lengths = [len(x) for x in train_ids]
    model.kd_longest_trained = max(lengths, default=0)  # the positions this fine-tuning reaches (_save records them)
    labels = torch.as_tensor(train.labels)
    dev_mine = dev.subset(dist.shard(len(dev)))
    class_weights = balanced_class_weights(train.labels, len(names)) if cfg.class_weight == "balanced" else None
    if class_weights is not None and saved is None:  # (of the rows this model trains on: a fold's own)
        add_metrics(stage.id, "all", {f"{tag}class_weight[{n}]": float(w) for n, w in zip(names, class_weights)})
    if class_weights is not None:
        class_weights = to_device(class_weights, device)  # once: a pageable copy at each step made the host wait for the GPU

    optimizer = torch.optim.AdamW(_param_groups(model, cfg), lr=cfg.lr, **adam_options(device))
    total_steps = -(-len(train) // cfg.batch_size) * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_linear_decay_step(s, total_steps, warmup=cfg.warmup)
    )

    best = BestCheckpoint(cfg.patience)
    scaler = grad_scaler(device)
    start, first = time.monotonic(), 1
    if saved is not None:  # --resume: as it was after its last saved epoch
        state.restore_epoch(saved, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, best=best, rng=rng)
        start, first = start - saved["elapsed"], saved["epoch"] + 1
    steps_per_epoch = -(-len(train) // cfg.batch_size)
    with progress(extra="loss {task.fields[loss]}") as bar:
        task = bar.add_task(f"teach {tag.rstrip('/')}".strip(), total=total_steps, loss="-", unit="step",
                            completed=(first - 1) * steps_per_epoch)
        for epoch in range(first, cfg.epochs + 1):
            net.train()
            losses = StepLosses(dist=dist)
            for batch in bucketed_batches(lengths, cfg.batch_size, rng):
                idx, weight = dist.split_batch(batch)
                pieces = micro_batches(idx, cfg.grad_accum)  # (one, the rows themselves, unless --grad-accum)
                loss = None  # this rank's share's mean loss: the pieces' means weighed by their shares
                for k, (piece, share) in enumerate(pieces):
                    input_ids, mask = pad([train_ids[i] for i in piece], tokenizer.pad_token_id)
                    gold = to_device(labels[piece], device)
                    with dist.accumulating(net, last=k == len(pieces) - 1):
                        with autocast(device):
                            if class_weights is None:
                                part = net(input_ids=to_device(input_ids, device), attention_mask=to_device(mask, device), labels=gold).loss
                            else:
                                logits = net(input_ids=to_device(input_ids, device), attention_mask=to_device(mask, device)).logits
                                part = weighted_cross_entropy(logits, gold, class_weights)
                        scaler.scale(part * weight * share).backward()
                    loss = part if len(pieces) == 1 else part.detach() * share + (0.0 if loss is None else loss)
                if scaled_update(scaler, optimizer, model.parameters(), max_norm=1.0):
                    scheduler.step()  # (not over an fp16 step the scaler skipped)
                optimizer.zero_grad(set_to_none=True)
                # each rank's share of the batch's mean (0 for a filler): their mean over ranks and
                # batches is the mean of the batch means, as in one process
                bar.update(task, advance=1, loss=losses.add(loss, weight))
            add_metrics(stage.id, "train", {f"{tag}loss": dist.mean_of(losses.floats())}, step=epoch)
            try:
                diverged = stop_if_diverged(model, best, epoch=epoch, tag=tag, warn=dist.is_main)
            except KdError:  # (no epoch to fall back on: a --resume, at the same --lr, would only diverge again)
                state.finish()
                raise
            if diverged:
                add_metrics(stage.id, "all", {f"{tag}diverged_epoch": epoch})
                break
            if len(dev):
                mine = score(model, tokenizer, dev_mine.texts, max_len=cfg.max_len, batch_size=cfg.scoring_batch(dist.world), device=device, label=dist.share_label(f"{tag.rstrip('/')} dev".strip()))
                _, dev_logits = dist.gather_rows(dev_mine.ids, mine)  # dev is in id order too
                m = classification_metrics(dev.labels, dev_logits.argmax(1), num_classes=len(names), class_names=names)
                dev_loss = mean_log_loss(dev.labels, dev_logits)  # (breaks a tie of macro-F1)
                add_metrics(stage.id, "dev", {f"{tag}accuracy": m["accuracy"], f"{tag}macro_f1": m["macro_f1"], f"{tag}loss": dev_loss}, step=epoch)
                warming = epoch * steps_per_epoch <= cfg.warmup * total_steps  # (its rate not yet at --lr)
                if dist.broadcast_object(best.update(m["macro_f1"], model, epoch, loss=dev_loss, warming=warming)):  # rank 0 decides for all
                    break
            if epoch < cfg.epochs:  # (what a --resume continues from, should this process be killed)
                state.save_epoch(tag, epoch, rows, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, best=best, rng=rng,
                                 elapsed=time.monotonic() - start)
    best.restore(model)
    best_epoch = best.epoch or cfg.epochs  # no dev split: the last epoch
    add_metrics(stage.id, "all", {f"{tag}best_epoch": best_epoch, f"{tag}train_seconds": time.monotonic() - start})
    return model, tokenizer, rows


def _kept(model, tokenizer, out_dir: Path, cfg: TeachConfig, state: TrainingState, tag: str, rows: list, rng) -> Path:
    """Save a fit's model in ``out_dir`` (rank 0), or link there the files a resumed state holds of it, and
    record it finished in the state."""
    saved = getattr(model, "kd_saved", None)
    if saved is None:
        _save(model, tokenizer, out_dir, cfg.max_len)
        state.save_done(tag, out_dir, rows, rng)
    else:
        if out_dir.exists():
            shutil.rmtree(out_dir)
        shutil.copytree(saved, out_dir, copy_function=link_or_copy)
    return out_dir


def _save(model, tokenizer, out_dir: Path, max_len: int) -> Path:
    trained = trained_positions(model.config)
    if trained is not None:  # (a kd-pretrained model: its positions up to the longest text read are trained now,
        # not those up to --max-len: train texts of 60 tokens at --max-len 512 left 61-512 as they were)
        setattr(model.config, TRAINED_POSITIONS, max(trained, min(max_len, getattr(model, "kd_longest_trained", max_len))))
    with saving_model(out_dir):
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    return out_dir


def model_dirs(stage) -> list[str]:
    """The model directories of a teach stage: one, or one per fold for an out-of-fold teacher;
    refused in one line when one is gone (deleted by hand), before a loader takes the path for a
    hub name."""
    k = fold_count(stage.config)
    if not stage.artifact_path:
        raise KdError(f"stage {stage.name!r} recorded no model")
    dirs = [str(Path(stage.artifact_path) / f"fold-{i}") for i in range(k)] if k else [stage.artifact_path]
    if not Path(stage.artifact_path).is_dir():  # (a store moved without it: where kd looks for it)
        raise missing_model(stage)
    for d in dirs:
        if not Path(d).is_dir():
            raise KdError(f"the model of stage {stage.name!r} is missing from {d}")
    return dirs


def config_dict(cfg: TeachConfig) -> dict:
    return asdict(cfg)


# positions start after the pad id (RoBERTa's numbering; its descendants too: with only RoBERTa's
# names, --max-len 514 of a 514-position MPNet or data2vec-text passed, and a long text was an
# IndexError mid-training)
ABSOLUTE_POSITION_OFFSET = dict.fromkeys((
    "roberta", "xlm-roberta", "camembert", "xlm-roberta-xl", "roberta-prelayernorm", "data2vec-text", "mpnet",
    "longformer", "ibert", "luke", "xmod", "markuplm",
), 2)


def position_limit(config) -> int | None:
    """The most tokens a model of ``config`` reads (its position embeddings), None where it has no such limit."""
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int) or isinstance(positions, bool) or positions <= 0:
        return None  # (none, or XLNet's -1: no limit)
    if getattr(config, "model_type", "") in ("deberta", "deberta-v2") and not getattr(config, "position_biased_input", True):
        return None  # (DeBERTa-v3's layout: relative positions alone, no table that max_position_embeddings sizes)
    return positions - ABSOLUTE_POSITION_OFFSET.get(getattr(config, "model_type", ""), 0)


def folder_position_limit(folder) -> int | None:
    """``position_limit`` of the model saved in ``folder``: its config.json read as transformers reads it (a GPT-2's
    says ``n_positions``, which only its config class maps to ``max_position_embeddings``); None where unreadable."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
        from types import SimpleNamespace

        from transformers import AutoConfig

        config = AutoConfig.for_model(**config) if isinstance(config, dict) and config.get("model_type") else SimpleNamespace(**config)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return position_limit(config)


def check_max_len(config, max_len: int, path: str) -> None:
    """Refuse a ``--max-len`` longer than the model's position embeddings (it would fail mid-training)."""
    limit = position_limit(config)
    if limit is not None and max_len > limit:
        raise KdError(f"--max-len {max_len} is longer than model {path!r} can read ({limit} positions): use --max-len {limit} or less")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def scoring_batch(batch_size: int, grad_accum: int, cap: int = 256) -> int:
    """``TeachConfig.scoring_batch`` of a teacher trained at ``batch_size`` in ``grad_accum`` pieces: 4 pieces'
    rows under --grad-accum, else 8 batches' (256 from the default --batch-size 32 up), at most ``cap``. A
    --batch-size lowered for a long --max-len lowers it too: 256 rows a batch whatever the --batch-size ran
    out of memory at the logits after the training, and the advice "lower --batch-size" changed nothing."""
    if grad_accum <= 1:
        return max(1, min(cap, 8 * batch_size))
    return max(1, min(cap, 4 * -(-batch_size // grad_accum)))


def score_missing(
    store: Store, run: str, *, batch_size: int | None = None, device: str = "auto", dist: Dist = SINGLE, chunk: int = SCORE_CHUNK,
    among: np.ndarray | None = None,
) -> int:
    """``--logits-only``: score, with the run's existing teacher, the samples that have no logits yet.

    Rank 0 lists the missing samples, each rank scores its shard of them and commits every ``chunk``
    samples as it goes: a crashed rank keeps what it finished, and a re-run scores only what is still
    missing. Returns how many samples all ranks scored; raises when some are still missing.
    ``among``: only these samples (``kd distill --augment``'s new texts, not a train sample
    ingested since, which distill refuses until ``--logits-only`` scores it knowingly). ``batch_size``: None,
    the rows the teacher scored at (fewer where it trained with ``--grad-accum``).
    """
    stage = store.find_stage(run, "teach")
    if batch_size is None:
        config = stage.config or {}
        # (a config of no batch size: the default's, 256 rows, not 8 of a batch of 1)
        batch_size = scoring_batch(-(-int(config.get("batch_size") or TeachConfig.batch_size) // dist.world), int(config.get("grad_accum") or 1))
    names = store.class_names()
    if stage.config.get("classes") not in (None, names):
        raise KdError(f"the classes changed since the teacher of run {run!r} ran: re-run {reteach_command(run, stage.config)}")
    dist.set_up()  # (the first collective of `kd teach --logits-only`: a rank that failed before it names its error)
    todo_ids = dist.broadcast_object(unscored(store, stage.id, among) if dist.is_main else None)
    if len(todo_ids) == 0:
        return 0
    # read after rank 0's list: it has every listed sample. Only those: two texts ingested into a 200,000-text
    # store read (and held) every text of it
    todo = store.samples(ids=todo_ids, include_dropped=True)
    mine = todo.subset(dist.shard(len(todo)))
    dev = pick_device(device)
    max_len = stage.config.get("max_len", 128)

    def shard() -> int:  # (the teacher loaded in it: a rank that cannot load it is named by rank 0, not lost with the group)
        models = []
        try:
            for directory in model_dirs(stage):
                tokenizer, model = load_classifier(directory, names)
                models.append(model.to(dev))
            check_unchanged(stage)  # (the stage's logits are of the recorded model: an edited one's would join them; after the load,
            # whose refusal names a broken file)
        except KdError:  # an --overwrite starting moved the folder away: "no such directory", or the new one half written
            check_teacher_kept(next((s.name for s in store.stages_of(run) if s.id == stage.id), None))
            raise
        return _score_in_chunks(store, stage.id, models, tokenizer, mine, max_len=max_len, batch_size=batch_size, device=dev, chunk=chunk,
                                label=dist.share_label("logits"))

    scored = sum(dist.all_gather_object(dist.all_succeed(shard)))
    still = unscored(store, stage.id, todo_ids) if dist.is_main else np.zeros(0)
    if len(still):
        raise KdError(f"{len(still)} of {len(todo_ids)} samples still have no teacher logits: run `kd teach --run {run} --logits-only` again")
    return scored


def unscored_note(store: Store, run: str, name: str = "teach") -> str | None:
    """What a teach stage that just succeeded left unscored: the samples ingested (by another process) after
    it read the samples to score, which it neither learned from nor scored (``scored_with_rows``); ``None``
    when it scored every sample of the store (a student refuses a teacher with train samples unscored)."""
    missing = len(unscored(store, store.find_stage(run, name).id))
    if not missing:
        return None
    them = "them" if missing != 1 else "it"
    return (f"{missing} sample{'s' * (missing != 1)} ingested while stage {name!r} ran "
            f"{'have' if missing != 1 else 'has'} no logits of its teacher: `kd teach --run {run} --logits-only` scores {them}")


def unscored_labeled(store: Store, run: str) -> dict[str, int]:
    """``{split: n}``: the labeled train/dev/test samples the run's teacher has no logits for (its
    stored figures, computed when it ran, leave them out)."""
    stage = store.find_stage(run, "teach")
    # only the samples without logits: reading every labeled text of a large store to count a few held ~100 MB
    late = store.samples(ids=unscored(store, stage.id), splits=["train", "dev", "test"], labeled=True)
    return _per_split(late, ("train", "dev", "test"))


def _per_split(samples: SampleSet, splits: Sequence[str]) -> dict[str, int]:
    """``{split: n}`` of ``samples``, for each of ``splits`` that holds any."""
    held = np.asarray(samples.splits, dtype=object)
    return {split: int((held == split).sum()) for split in splits if (held == split).any()}


def unscored_to_learn(store: Store, run: str) -> dict[str, int]:
    """``{split: n}``: the samples the run's teacher has no logits for that its query (``--split``, ``--where``,
    ``--label``) selects: those a rerun with its options learns from (one its --where leaves out it never would;
    a late dev sample of a teacher of ``--split train --split dev`` too)."""
    stage = store.find_stage(run, "teach")
    cfg = stage.config or {}
    late = store.samples(ids=unscored(store, stage.id), splits=list(cfg.get("splits") or ["train"]), labeled=True, where=cfg.get("where"))
    if cfg.get("labels"):
        names = store.class_names()
        late = late.subset(np.isin(late.labels, [names.index(n) for n in cfg["labels"] if n in names]))
    return _per_split(late, TRAINABLE_SPLITS)


def _score_in_chunks(store: Store, stage_id: int, models: list, tokenizer, samples: SampleSet, *, max_len: int, batch_size: int, device, chunk: int,
                     label: str = "logits") -> int:
    """Score ``samples`` with the models (their probabilities averaged) and store every ``chunk`` of
    them in its own transaction; returns how many were stored."""
    with progress(disable=len(samples) <= batch_size) as bar:
        task = bar.add_task(label, total=len(samples), unit="samples")
        block = np.arange(len(samples)) // chunk
        stored = done = 0
        for b in range(-(-len(samples) // chunk)):
            part = samples.subset(block == b)
            parts = []
            for k, m in enumerate(models):  # the bar moves with each batch (a block of a BERT on a CPU: minutes), each model's share
                seen = [0]

                def step(n: int, k: int = k, seen: list = seen) -> None:
                    seen[0] += n
                    bar.update(task, completed=done + (k * len(part) + seen[0]) // len(models))

                parts.append(score(m, tokenizer, part.texts, max_len=max_len, batch_size=batch_size, device=device, bar=False, on_batch=step))
            # another process may have scored some of them meanwhile (alike: the same teacher): its rows stand
            stored += write_scores(store, stage_id, part.ids, parts[0] if len(parts) == 1 else average_probs_as_logits(parts), missing_only=True)
            done += len(part)
            bar.update(task, completed=done)
    return stored
