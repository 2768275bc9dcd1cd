"""Small student models that read the teacher's token ids: TextCNN, BiGRU, BiLSTM and a small transformer.

Every student takes ``(input_ids, attention_mask)`` and returns ``(batch, classes)`` logits, and is
rebuilt from its ``StudentConfig`` alone, which is stored beside its weights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from torch import nn

from .batching import max_token_id
from .errors import KdError
from .jsonl import is_number, is_whole

KINDS = ("textcnn", "bigru", "bilstm", "transformer")


# the sizes each kind of student is shaped by (a transformer keeps its teacher's dropout)
SIZES = {
    "textcnn": ("embed_dim", "kernel_sizes", "num_filters", "dropout"),
    "bigru": ("embed_dim", "hidden", "dropout"),
    "bilstm": ("embed_dim", "hidden", "dropout"),
    "transformer": ("layers",),
}


def size_error(kind: str, **sizes) -> str | None:
    """Why the sizes ``kind`` uses cannot build it (the option and its value), or None: a size below
    1, --dropout outside [0, 1). Sizes the kind does not use are not judged (kd distill warns that
    they are not used)."""
    return next((m for m in (_size_problem(name, sizes[name]) for name in SIZES.get(kind, ())) if m), None)


def _size_problem(name: str, value) -> str | None:
    option = "--" + name.replace("_", "-")
    if name == "dropout":
        return None if 0 <= value < 1 else f"{option} must be in [0, 1), got {value}"
    if name == "kernel_sizes":
        return None if value and min(value) >= 1 else f"{option} must be positive widths, got {','.join(map(str, value))}"
    return None if value >= 1 else f"{option} must be positive (a student size), got {value}"


def machine_memory() -> int | None:
    """This machine's physical memory in bytes, ``None`` where it cannot be told (Windows)."""
    import os

    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
    return memory if memory > 0 else None


@dataclass(frozen=True)
class StudentConfig:
    kind: str
    vocab_size: int
    num_classes: int
    pad_id: int = 0
    embed_dim: int = 128
    kernel_sizes: tuple[int, ...] = (2, 3, 4)
    num_filters: int = 128
    hidden: int = 128
    dropout: float = 0.3
    layers: int = 4  # transformer
    bert: dict | None = None  # transformer: the full BERT configuration, so the student rebuilds alone


    def validate(self, *, max_len: int) -> None:
        if self.kind not in KINDS:
            raise KdError(f"unknown student {self.kind!r}: choose from {', '.join(KINDS)}")
        bad = size_error(self.kind, embed_dim=self.embed_dim, hidden=self.hidden, num_filters=self.num_filters,
                         layers=self.layers, kernel_sizes=self.kernel_sizes, dropout=self.dropout)
        if bad:
            raise KdError(bad)
        if self.kind == "transformer" and self.bert and max_len > readable_positions(self.bert):
            # (a transformer student takes the teacher's configuration, position table included, --no-init-from-teacher too)
            raise KdError(f"--max-len {max_len} exceeds the teacher's {readable_positions(self.bert)} positions, which a transformer "
                          f"student takes with its configuration: use --max-len {readable_positions(self.bert)} or less")
        if self.kind == "textcnn" and max(self.kernel_sizes) > max_len:
            raise KdError(
                f"kernel width {max(self.kernel_sizes)} is wider than --max-len {max_len}"
            )
        self.check_fits_memory()

    def check_fits_memory(self) -> None:
        """Refuse, in one line, sizes whose weights alone would not fit this machine's memory (the
        student is built in it, whatever the device): PyTorch failed with a traceback (or an integer
        overflow), or, for a very deep transformer, built layers for hours before running out."""
        memory = machine_memory()
        if memory is None:  # no way to tell (Windows): left to PyTorch
            return
        params = parameter_count(self)
        if 4 * params > memory:
            sizes = {"textcnn": "--embed-dim, --num-filters", "transformer": "--layers, --width"}.get(self.kind, "--embed-dim, --hidden")
            raise KdError(f"a {self.kind} student of these sizes has {params:,} parameters ({4 * params / 2**30:,.1f} GiB in float32), "
                          f"more than this machine's {memory / 2**30:,.1f} GiB of memory: lower {sizes}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kernel_sizes"] = list(self.kernel_sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "StudentConfig":
        """The configuration ``to_dict`` wrote, checked field by field: a damaged or hand-edited one
        (a field missing, unknown or of another type) is a ``KdError`` naming the field, not a
        ``TypeError`` from the constructor or PyTorch."""
        if not isinstance(d, dict):
            raise KdError(f"the student's configuration is a {type(d).__name__}, not an object")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = [k for k in d if k not in fields]
        if unknown:
            raise KdError(f"unknown field {unknown[0]!r} (another kd version's student?)")
        missing = [n for n, f in fields.items() if f.default is dataclasses.MISSING and n not in d]
        if missing:
            raise KdError(f"field {missing[0]!r} is missing")
        d = {**d, "kernel_sizes": d.get("kernel_sizes", [2, 3, 4])}

        bad = next((n for n in ("vocab_size", "num_classes") if not is_whole(d[n]) or d[n] < 1), None)
        bad = bad or next((n for n in ("embed_dim", "num_filters", "hidden", "layers") if not is_whole(d.get(n, 1))), None)
        if bad is None and not (d.get("pad_id") is None or is_whole(d["pad_id"])):
            bad = "pad_id"
        if bad is None and not (isinstance(d["kernel_sizes"], list) and all(is_whole(k) for k in d["kernel_sizes"])):
            bad = "kernel_sizes"
        if bad is None and not is_number(d.get("dropout", 0.0)):
            bad = "dropout"
        if bad is None and not (d.get("bert") is None or isinstance(d["bert"], dict)):
            bad = "bert"
        if bad is not None:
            raise KdError(f"field {bad!r} is {d.get(bad)!r}")
        if d["kind"] not in KINDS:
            raise KdError(f"field 'kind' is {d['kind']!r}: kd knows {', '.join(KINDS)}")
        config = cls(**{**d, "kernel_sizes": tuple(d["kernel_sizes"])})
        bad = next((n for n in SIZES[config.kind] if _size_problem(n, getattr(config, n))), None)
        if bad is not None:  # (the sizes its kind uses: a textcnn's unused hidden size is not judged)
            raise KdError(f"field {bad!r} is {d.get(bad)!r}")
        if config.kind != "transformer" and config.pad_id is not None and not 0 <= config.pad_id < config.vocab_size:
            # (the padding row of its table: torch's AssertionError traceback; a transformer's is its bert's)
            raise KdError(f"field 'pad_id' is {config.pad_id!r}: not an id of its {config.vocab_size} (vocab_size)")
        if config.kind == "transformer" and config.bert is not None:
            try:  # a field of the stored BERT configuration of another type: transformers' validation traceback
                hf_config(config.bert)
            except KdError:
                raise
            except Exception as exc:
                lines = str(exc).strip().splitlines() or [type(exc).__name__]
                raise KdError(f"field 'bert': {' '.join(x.strip() for x in lines[:2])}") from None
        return config


class TextCNN(nn.Module):
    """Kim (2014): parallel convolutions of several widths, max-over-time pooling, one linear layer.

    Pooling skips windows that end on padding. After a ReLU every value is >= 0, so multiplying
    those windows by 0 before the max gives exactly the max over the real windows, and a multiply is
    much cheaper than filling with -inf (ONNX Runtime's ``Where`` took a fifth of the model's time).

    ``as_matmul`` (set by ``kd export`` for ONNX) computes a convolution of width ``k`` as one matrix
    product: the windows ``(B, L-k+1, k*E)`` times the kernel flattened to ``(k*E, F)``. The windows
    are gathered from the embedding table in one step (token ids of every window, ``(B, L-k+1, k)``,
    looked up at once), not built from shifted slices of the embedded text, which ONNX Runtime
    copies twice (slice, then concat). Bias and ReLU come after the
    max-over-time (``relu(max(h) + b) == max(relu(h + b))``: both are monotone), with windows that
    end on padding pushed far below any real one, so they run on ``(B, F)`` rather than on every
    window. Same numbers to float rounding; ONNX Runtime's GEMM runs this faster than its Conv,
    PyTorch's oneDNN convolution is faster in eager mode.
    """

    special_tokens = False  # inputs without [CLS]/[SEP]
    # batches padded to a multiple of 8 tokens: PyTorch's CPU convolution (oneDNN) caches one
    # primitive per input shape, and a width per length held 2.3 GB scoring 100,000 texts
    pad_multiple = 8

    def __init__(self, cfg: StudentConfig):
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=cfg.pad_id)
        self.convs = nn.ModuleList(nn.Conv1d(cfg.embed_dim, cfg.num_filters, k) for k in cfg.kernel_sizes)
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.num_filters * len(cfg.kernel_sizes), cfg.num_classes)
        self.min_len = max(cfg.kernel_sizes)
        self.num_classes = cfg.num_classes
        self.as_matmul = False

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = None if self.as_matmul else self.embed(input_ids).transpose(1, 2)  # (B, E, L)
        real = attention_mask.sum(1)
        length, dim = input_ids.shape[1], self.embed.embedding_dim
        pooled = []
        for conv in self.convs:
            k = conv.kernel_size[0]
            valid = attention_mask[:, k - 1 :].bool()  # (B, L-k+1): the window ends on a real token
            # a row shorter than k has no such window: it keeps the first one alone (the text, then
            # padding), so that its logits do not depend on how wide its batch was padded
            starts = torch.arange(length - k + 1, device=input_ids.device)  # of the windows
            valid = (valid | ((real < k).view(-1, 1) & (starts == 0))).to(self.embed.weight.dtype)
            if self.as_matmul:
                starts = starts.unsqueeze(1)
                window_ids = input_ids[:, starts + torch.arange(k, device=input_ids.device)]  # (B, L-k+1, k)
                windows = self.embed(window_ids).flatten(2)  # (B, L-k+1, k*E), offset-major
                weight = conv.weight.permute(2, 1, 0).reshape(k * dim, -1)  # (k*E, F), offset-major
                h = windows @ weight + (valid.unsqueeze(2) - 1.0) * 1e30  # padding windows never win the max
                pooled.append(torch.relu(h.max(dim=1).values + conv.bias))
            else:
                h = torch.relu(conv(x))  # (B, F, L-k+1)
                pooled.append((h * valid.unsqueeze(1)).max(dim=2).values)
        return self.out(self.dropout(torch.cat(pooled, dim=1)))


class BiRNN(nn.Module):
    """Tang et al. (2019): one bidirectional GRU/LSTM layer, final states of both directions, MLP."""

    special_tokens = False
    pad_multiple = 1

    def __init__(self, cfg: StudentConfig):
        super().__init__()
        rnn = nn.GRU if cfg.kind == "bigru" else nn.LSTM
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=cfg.pad_id)
        self.rnn = rnn(cfg.embed_dim, cfg.hidden, batch_first=True, bidirectional=True)
        self.mlp = nn.Sequential(
            nn.Dropout(cfg.dropout), nn.Linear(2 * cfg.hidden, cfg.hidden), nn.ReLU(),
            nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, cfg.num_classes),
        )
        self.min_len = 1
        self.num_classes = cfg.num_classes

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # (no packed sequence on the CPU: bench/rnn_steps.py timed a BiGRU training step of 32 rows of 512 tokens at
        # 0.45 s this way, 2.3 s packed; the same states as packing, each direction read where it has read its row's
        # tokens and no padding)
        x = self.embed(input_ids)
        lengths = attention_mask.sum(1).clamp(min=1)
        if bool((lengths == x.shape[1]).all()):  # every row full (texts cut to --max-len): one pass reads them all
            return self._read_final(self.rnn(x)[1])
        if x.is_cuda:  # cuDNN reads packed rows as they are
            return self.packed(x, lengths)
        rows = torch.arange(x.shape[0], device=x.device)
        # each direction once, with its own weights (a bidirectional pass over each form ran both directions twice)
        h_f = self._one_direction(x, "")[rows, lengths - 1]
        h_b = self._one_direction(reversed_within_length(x, (lengths - 1).view(-1, 1)), "_reverse")[rows, lengths - 1]
        return self.mlp(torch.cat([h_f, h_b], dim=1))

    def _one_direction(self, x: torch.Tensor, suffix: str) -> torch.Tensor:
        """The outputs ``(B, L, H)`` of the RNN's forward (``suffix`` "") or backward ("_reverse") weights run
        left to right over ``x``: what ``nn.GRU``/``nn.LSTM`` call, on one direction's parameters."""
        rnn = self.rnn
        weights = [getattr(rnn, f"{name}_l0{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        h0 = x.new_zeros(1, x.shape[0], rnn.hidden_size)
        if isinstance(rnn, nn.LSTM):
            return torch.lstm(x, (h0, h0), weights, True, 1, 0.0, self.training, False, True)[0]
        return torch.gru(x, h0, weights, True, 1, 0.0, self.training, False, True)[0]

    def packed(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The logits of the embedded rows ``x`` read through packed sequences (the CPU's path gives the same)."""
        return self._read_final(self.rnn(nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False))[1])

    def _read_final(self, state) -> torch.Tensor:
        """The logits of the RNN's final states (``h_n``, or an LSTM's ``(h_n, c_n)``: (2, B, H), a direction each)."""
        h = state[0] if isinstance(state, tuple) else state
        return self.mlp(torch.cat([h[0], h[1]], dim=1))


def reversed_within_length(x: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """``x`` (B, L, E) with each row's tokens up to ``last`` (B, 1: the index of its last real token) last to first,
    its padding after them as it was: the backward direction read left to right, never after padding."""
    pos = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
    flipped = torch.where(pos <= last, last - pos, pos)
    return torch.gather(x, 1, flipped.unsqueeze(-1).expand(-1, -1, x.shape[2]))


class TransformerStudent(nn.Module):
    """A shallow BERT classifier (eager attention, so attentions can be matched to the teacher's).

    ``forward`` returns logits; ``internals`` returns logits with hidden states, attentions and the
    last layer's query, key and value vectors, for intermediate-layer distillation.
    """

    special_tokens = True  # the pooled [CLS] needs them
    pad_multiple = 1

    def __init__(self, cfg: StudentConfig):
        super().__init__()
        from transformers import AutoModelForSequenceClassification

        if cfg.bert is None:
            raise KdError("a transformer student needs the teacher's configuration")
        self.net = AutoModelForSequenceClassification.from_config(hf_config(cfg.bert), attn_implementation="eager")
        self.min_len = 1
        self.num_classes = cfg.num_classes
        self.last = LastLayerVectors(self.net.base_model)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.net(input_ids=input_ids, attention_mask=attention_mask).logits

    def internals(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """``(logits, hidden_states, attentions, {"query"|"key"|"value": (B, L, D)})``."""
        self.last.arm()
        out = self.net(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, output_attentions=True)
        return out.logits, out.hidden_states, out.attentions, self.last.take()


class LastLayerVectors:
    """Forward hooks on a BERT encoder's last self-attention: the query, key and value vectors of
    the forward pass after ``arm`` (MiniLM's relation losses read them). ``take`` hands them over and
    disarms, so plain forward passes (serving, training without relation losses) keep nothing."""

    NAMES = ("query", "key", "value")

    def __init__(self, encoder_model):
        attention = _self_attention(encoder_model)
        self._seen: dict[str, torch.Tensor] = {}
        self._armed = False
        for name in self.NAMES:
            getattr(attention, name).register_forward_hook(self._keeper(name))

    def _keeper(self, name: str):
        def keep(_module, _inputs, out):
            if self._armed:
                self._seen[name] = out

        return keep

    def arm(self) -> None:
        self._seen, self._armed = {}, True

    def take(self) -> dict[str, torch.Tensor]:
        seen, self._seen, self._armed = self._seen, {}, False
        return seen


def _self_attention(encoder_model, *, of_teacher: bool = False) -> nn.Module:
    """The last layer's self-attention of a BERT-layout encoder (BERT, RoBERTa, XLM-R, ERNIE, ELECTRA:
    ``encoder.layer[i].attention.self`` with query, key and value projections); ``of_teacher``: the encoder is
    a student built like the teacher (the refusal names a ``--student-model`` as a way on)."""
    try:
        attention = encoder_model.encoder.layer[-1].attention.self
        for name in LastLayerVectors.NAMES:
            getattr(attention, name)
    except (AttributeError, IndexError, TypeError):
        raise _not_bert_layout(getattr(encoder_model.config, "model_type", type(encoder_model).__name__), of_teacher=of_teacher) from None
    return attention


def _not_bert_layout(kind: str, *, of_teacher: bool = True) -> KdError:
    # (a --student-model transformer reads no layer of the teacher: it works beside such a teacher, without intermediate losses)
    other = (", or a pre-trained --student-model NAME_OR_DIR of the teacher's vocabulary (--student transformer, no intermediate losses)"
             if of_teacher else "")
    return KdError(
        f"a transformer student copies a BERT-layout encoder (BERT, RoBERTa, XLM-R, ERNIE, ELECTRA); "
        f"this teacher's {kind!r} is laid out otherwise: choose --student textcnn, bigru or bilstm{other}"
    )


def hf_config(d: dict):
    """The Hugging Face configuration a student's stored ``bert`` dictionary describes (its own
    ``model_type``; BERT for dictionaries stored without one)."""
    from transformers import CONFIG_MAPPING

    kind = d.get("model_type") or "bert"
    if kind not in CONFIG_MAPPING:
        raise KdError(f"this transformers has no model type {kind!r} (the teacher's): upgrade transformers")
    return CONFIG_MAPPING[kind].from_dict(d)


def readable_positions(d: dict) -> int:
    """Tokens a model of configuration ``d`` (a dictionary) can read: RoBERTa-style models number
    positions after the padding id."""
    from .teacher import ABSOLUTE_POSITION_OFFSET

    return d["max_position_embeddings"] - ABSOLUTE_POSITION_OFFSET.get(d.get("model_type", ""), 0)


def student_bert_config(teacher_config, *, layers: int, hidden: int | None, num_classes: int) -> dict:
    """A configuration like the teacher's (same model type) with ``layers`` layers (and optionally
    another width)."""
    if getattr(teacher_config, "is_encoder_decoder", False) or not hasattr(teacher_config, "intermediate_size"):
        raise _not_bert_layout(getattr(teacher_config, "model_type", type(teacher_config).__name__))  # DistilBERT, T5, BART
    cfg = teacher_config.to_dict()
    width = hidden or teacher_config.hidden_size
    heads = teacher_config.num_attention_heads if width == teacher_config.hidden_size else _heads_of(width)
    if width % heads:  # (a width of the student's own: kd distill has no --heads to choose them by)
        below = next(w for w in range(width - 1, 0, -1) if w % _heads_of(w) == 0)
        above = next(w for w in range(width + 1, 64 * (heads + 1) + 1) if w % _heads_of(w) == 0)  # (64 * (heads + 1) is one)
        raise KdError(f"--width {width} is not divisible by its {heads} attention heads (a student narrower or wider than "
                      f"its teacher has --width / 64 of them): give a width they divide, such as {below} or {above}")
    cfg.update(
        num_hidden_layers=layers, hidden_size=width, num_attention_heads=heads,
        intermediate_size=4 * width if width != teacher_config.hidden_size else teacher_config.intermediate_size,
        num_labels=num_classes, architectures=None,
    )
    if width != teacher_config.hidden_size and (getattr(teacher_config, "embedding_size", None) or 0) > width:
        # (ELECTRA: a token table of the teacher's embedding_size, 768 for ELECTRA-base, projected down to a
        # narrower student that copies nothing from it, doubled the student; no wider than its layers)
        cfg["embedding_size"] = width
    for key in ("id2label", "label2id"):
        cfg.pop(key, None)
    cfg["id2label"] = {i: f"LABEL_{i}" for i in range(num_classes)}
    cfg["label2id"] = {f"LABEL_{i}": i for i in range(num_classes)}
    return cfg


def _heads_of(width: int) -> int:
    """The attention heads of a transformer student of a width other than its teacher's: one per 64."""
    return max(1, width // 64)


def check_bert_layout(teacher_config) -> None:
    """Refuse, from its configuration alone, a teacher a transformer student cannot be built like
    (DistilBERT, ALBERT, T5...): the student's network is made on the meta device, no weights."""
    from transformers import AutoModel

    bert = student_bert_config(teacher_config, layers=1, hidden=None, num_classes=2)
    try:
        config = hf_config(bert)
    except KdError:
        raise
    except Exception:  # a configuration with one entry a layer (ModernBERT's, Qwen2's layer_types) cannot be cut shorter
        raise _not_bert_layout(getattr(teacher_config, "model_type", type(teacher_config).__name__)) from None
    with torch.device("meta"):
        _self_attention(AutoModel.from_config(config), of_teacher=True)


def layer_map(student_layers: int, teacher_layers: int, given: Sequence[int] = ()) -> list[int]:
    """Teacher layer (0-based) matched to each student layer: ``given`` (``--layer-map``), checked,
    or evenly spaced, ending at the last (12 → 4: 2, 5, 8, 11); a student deeper than its teacher
    repeats layers (2 → 4: 0, 0, 1, 1)."""
    if student_layers < 1 or teacher_layers < 1:
        raise KdError(f"cannot map {student_layers} student layers onto {teacher_layers} teacher layers")
    if given:
        if len(given) != student_layers:
            raise KdError(f"--layer-map names {len(given)} teacher layers for a student of {student_layers} (--layers): one each")
        outside = [j for j in given if not 0 <= j < teacher_layers]
        if outside:
            raise KdError(f"--layer-map: teacher layer {outside[0]} does not exist: the teacher's layers are 0 to {teacher_layers - 1}")
        return list(given)
    return [-(-(i + 1) * teacher_layers // student_layers) - 1 for i in range(student_layers)]


def init_from_teacher(student: TransformerStudent, teacher, given: Sequence[int] = ()) -> list[int]:
    """Copy the teacher's embeddings, every ``layer_map`` layer (``given``: ``--layer-map``), whatever
    else its encoder holds (pooler, embedding projection) and its head into the student (same model
    type and width only); returns the teacher layers used."""
    s_base, t_base = student.net.base_model, teacher.base_model
    if s_base.config.hidden_size != t_base.config.hidden_size:
        raise KdError("--init-from-teacher needs the student's width to equal the teacher's")
    if type(s_base) is not type(t_base):
        raise KdError(f"--init-from-teacher: the student is a {type(s_base).__name__}, the teacher a {type(t_base).__name__}")
    mapping = layer_map(len(s_base.encoder.layer), len(t_base.encoder.layer), given)
    layers = "encoder.layer."
    t_state = t_base.state_dict()
    with torch.no_grad():
        s_base.load_state_dict({k: t_state[k] for k in s_base.state_dict() if not k.startswith(layers)}, strict=False)
        for i, j in enumerate(mapping):
            s_base.encoder.layer[i].load_state_dict(t_base.encoder.layer[j].state_dict())
        student.net.classifier.load_state_dict(teacher.classifier.state_dict())
    return mapping


def build_student(cfg: StudentConfig) -> nn.Module:
    if cfg.kind == "textcnn":
        return TextCNN(cfg)
    if cfg.kind in ("bigru", "bilstm"):
        return BiRNN(cfg)
    if cfg.kind == "transformer":
        return TransformerStudent(cfg)
    raise KdError(f"unknown student {cfg.kind!r}: choose from {', '.join(KINDS)}")


def table_rows(tokenizer) -> int:
    """Rows a student's embedding table needs for every id ``tokenizer`` gives: ``len(tokenizer)``,
    or more where its ids run past it (a vocab.txt naming a token twice keeps the later line's id:
    39 lines, 38 tokens, ids up to 38; a table of 38 rows failed on id 38 with torch's IndexError)."""
    top = max_token_id(tokenizer)
    return max(len(tokenizer), -1 if top is None else top + 1)


def parameter_count(cfg: StudentConfig) -> int:
    """The parameters ``build_student(cfg)`` holds, from the configuration alone (nothing is built)."""
    v, e, c = cfg.vocab_size, cfg.embed_dim, cfg.num_classes
    if cfg.kind == "textcnn":
        f = cfg.num_filters
        return v * e + sum(f * (e * k + 1) for k in cfg.kernel_sizes) + f * len(cfg.kernel_sizes) * c + c
    if cfg.kind == "transformer":
        b = cfg.bert or {}
        h, inter, layers = b.get("hidden_size", 0), b.get("intermediate_size", 0), b.get("num_hidden_layers", cfg.layers)
        emb = b.get("embedding_size") or h  # ELECTRA: narrower embeddings, projected to the hidden size
        rows = b.get("vocab_size", v) + b.get("max_position_embeddings", 0) + b.get("type_vocab_size", 0)
        embeddings = rows * emb + 2 * emb + (emb * h + h if emb != h else 0)
        per_layer = 4 * (h * h + h) + 2 * h + (h * inter + inter) + (inter * h + h) + 2 * h
        return embeddings + layers * per_layer + (h * h + h) + (h * c + c)  # pooler (or the head's dense layer), output
    gates, hid = (3 if cfg.kind == "bigru" else 4), cfg.hidden
    return v * e + 2 * gates * hid * (e + hid + 2) + (2 * hid * hid + hid) + (hid * c + c)


def flops_per_sample(cfg: StudentConfig, length: int) -> int:
    """Multiply-adds × 2 of one forward pass over ``length`` tokens (embedding lookups are free). A
    TextCNN convolves at least its widest kernel's width of positions (a shorter text is padded to it),
    a BiRNN runs at least one step."""
    if cfg.kind == "textcnn":
        width = max(length, max(cfg.kernel_sizes))
        convs = sum(2 * cfg.embed_dim * cfg.num_filters * k * (width - k + 1) for k in cfg.kernel_sizes)
        return convs + 2 * cfg.num_filters * len(cfg.kernel_sizes) * cfg.num_classes
    if cfg.kind == "transformer":
        return _encoder_flops(cfg.bert, length, cfg.bert["num_hidden_layers"]) + _head_flops(cfg)
    gates = 3 if cfg.kind == "bigru" else 4
    recurrent = 2 * gates * 2 * (cfg.embed_dim * cfg.hidden + cfg.hidden * cfg.hidden) * max(1, length)
    return recurrent + 2 * (2 * cfg.hidden * cfg.hidden + cfg.hidden * cfg.num_classes)


def _encoder_flops(b: dict, length: int, layers: int) -> int:
    """A BERT-layout encoder's first ``layers`` layers over ``length`` tokens (``b``: its configuration)."""
    h, inter = b["hidden_size"], b["intermediate_size"]
    per_layer = 2 * length * (4 * h * h + 2 * h * inter) + 2 * 2 * length * length * h
    emb = b.get("embedding_size") or h  # ELECTRA's embeddings are projected to the hidden size
    projection = 2 * length * emb * h if emb != h else 0
    return projection + layers * per_layer


def _head_flops(cfg: StudentConfig) -> int:
    """A transformer's classification head: pooler (or the head's dense layer) and output layer."""
    h = cfg.bert["hidden_size"]
    return 2 * (h * h + h * cfg.num_classes)


def early_exit_flops(cfg: StudentConfig, length: int, *, exit_layer: int, branch_dim: int, branches: bool = True) -> int:
    """``flops_per_sample`` of an early-exit model (the transformer ``cfg`` with a FastBERT branch after
    every layer but the last) for a text that leaves at ``exit_layer`` (1-based; the last layer: the
    model's own head): the layers run, the branch after each of them that is not the last (its
    projection to ``branch_dim`` and its output layer; pooling, like LayerNorm and softmax, counts
    nothing) and the head only where the text reaches it. ``branches=False``: speed 0, which runs
    no branch."""
    layers = cfg.bert["num_hidden_layers"]
    if not 1 <= exit_layer <= layers:
        raise ValueError(f"exit_layer must be in 1..{layers}, got {exit_layer}")
    h = cfg.bert["hidden_size"]
    ran = min(exit_layer, layers - 1) if branches else 0
    branch = 2 * (h * branch_dim + branch_dim * cfg.num_classes)
    return _encoder_flops(cfg.bert, length, exit_layer) + ran * branch + (_head_flops(cfg) if exit_layer == layers else 0)


def mean_early_exit_flops(cfg: StudentConfig, lengths, exit_layers, *, branch_dim: int, branches: bool = True) -> int:
    """``early_exit_flops`` averaged over texts of ``lengths`` tokens leaving at ``exit_layers`` (0 for none)."""
    pairs = list(zip((int(n) for n in lengths), (int(k) for k in exit_layers), strict=True))
    if not pairs:
        return 0
    counts: dict[tuple[int, int], int] = {}
    for pair in pairs:
        counts[pair] = counts.get(pair, 0) + 1
    total = sum(early_exit_flops(cfg, n, exit_layer=k, branch_dim=branch_dim, branches=branches) * c for (n, k), c in counts.items())
    return round(total / len(pairs))


# encoders whose layers flops_per_sample's transformer formula counts (and what early exit runs layer by layer)
ENCODER_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "ernie", "electra")


def encoder_flops_config(config, num_classes: int) -> StudentConfig | None:
    """A teacher's Hugging Face configuration as the ``StudentConfig`` whose FLOPs it has (a transformer
    of its sizes), or ``None`` for a model of another family (GPT-2, ALBERT's shared layers...)."""
    if getattr(config, "model_type", None) not in ENCODER_TYPES or getattr(config, "is_decoder", False):
        return None
    return StudentConfig(kind="transformer", vocab_size=config.vocab_size, num_classes=num_classes, bert=config.to_dict())


def mean_flops_per_sample(cfg: StudentConfig, lengths) -> int:
    """``flops_per_sample`` averaged over texts of ``lengths`` tokens (0 for none): not the FLOPs of
    a text of the mean length, which understate a transformer's (attention grows with the square of
    the length) and, rounded, any student's."""
    counts: dict[int, int] = {}
    for n in lengths:
        counts[int(n)] = counts.get(int(n), 0) + 1
    total = sum(counts.values())
    return round(sum(flops_per_sample(cfg, n) * k for n, k in counts.items()) / total) if total else 0


def init_embeddings(model: nn.Module, weights: torch.Tensor) -> None:
    """Copy a teacher's token-embedding matrix into a student's embedding table (same shape)."""
    if not hasattr(model, "embed"):
        raise KdError("--init-embeddings teacher is for textcnn/bigru/bilstm; a transformer uses --init-from-teacher")
    table = model.embed.weight
    if tuple(weights.shape) != tuple(table.shape):
        raise KdError(
            f"teacher embeddings are {tuple(weights.shape)}, the student's table {tuple(table.shape)}: "
            f"use --embed-dim {weights.shape[1]} with --init-embeddings teacher"
        )
    with torch.no_grad():
        table.copy_(weights)
