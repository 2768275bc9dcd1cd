"""Turning texts into padded id batches: length-bucketed for training, length-sorted for scoring."""

from __future__ import annotations

import itertools
import math
import weakref
from collections.abc import Sequence
from typing import Iterator

import numpy as np
import torch

from .char_encoder import CharEncoder
from .char_encoder import encode_flagged as chars_or_tokenizer
from .errors import KdError


def unknown_share(tokenizer, texts: Sequence[str], *, max_len: int) -> float | None:
    """The share of the texts' tokens (special tokens aside, each text cut to ``max_len``) that are the
    tokenizer's unknown token; ``None`` for a tokenizer without one (byte-level BPE) or texts of no token."""
    unk = tokenizer.unk_token_id
    if unk is None or not texts:
        return None
    return unknown_fraction(encode(tokenizer, texts, max_len=max_len, special_tokens=False), unk)


def unknown_fraction(ids, unk_id: int, special_ids: Sequence[int] = ()) -> float | None:
    """The share of the text tokens of ``ids`` (every id but ``special_ids``, ``unk_id`` aside) that are
    ``unk_id``; ``None`` where there is no text token."""
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64)
    text = flat[~np.isin(flat, np.asarray([i for i in special_ids if i != unk_id], dtype=np.int64))]
    return float((text == unk_id).mean()) if len(text) else None


def encode(tokenizer, texts: Sequence[str], *, max_len: int, special_tokens: bool = True) -> list[list[int]]:
    """Token ids per text (no padding), truncated to ``max_len``: for a character-level BERT
    tokenizer (kd's own) a lookup per character (``kdstore.char_encoder``, the same ids), else one
    batched tokenizer call (a very long text as a prefix, ``char_encoder.bounded``: a fast tokenizer
    that truncates keeps every cut-off piece)."""
    if not texts:
        return []
    chars = char_encoder(tokenizer)
    if chars is None and getattr(tokenizer, "backend_tokenizer", None) is None:  # slow: no cut-off pieces kept
        return tokenizer_encode(tokenizer, texts, max_len=max_len, special_tokens=special_tokens)
    return chars_or_tokenizer(chars, texts, lambda rest: _tokenizer_flagged(tokenizer, rest, max_len, special_tokens),
                              max_len=max_len, special_tokens=special_tokens)[0]


class PackedIds(Sequence):
    """The token ids of many texts in one flat int32 array with offsets: 4 bytes a token, where a
    Python list of ints costs about 36 (8 for the pointer, 28 for an int above 256). ``ids[i]`` is a
    read-only view of text ``i``'s ids; ``lengths`` are all the lengths at once."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray):
        self.flat, self.offsets = flat, offsets
        self.flat.flags.writeable = False

    @classmethod
    def from_lists(cls, rows: Sequence[Sequence[int]]) -> "PackedIds":
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32, count=int(offsets[-1]))
        return cls(flat, offsets)

    @classmethod
    def concat(cls, parts: Sequence["PackedIds"]) -> "PackedIds":
        if not parts:
            return cls(np.zeros(0, np.int32), np.zeros(1, np.int64))
        starts = np.cumsum([0] + [len(p.flat) for p in parts[:-1]])
        offsets = np.concatenate([parts[0].offsets[:1]] + [p.offsets[1:] + s for p, s in zip(parts, starts)])
        return cls(np.concatenate([p.flat for p in parts]), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i):
        if isinstance(i, slice):
            raise TypeError("PackedIds takes one index at a time")
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"row {i} of {n}")
        i = i + n if i < 0 else i
        return self.flat[self.offsets[i] : self.offsets[i + 1]]

    def __iter__(self):
        for i in range(len(self)):
            yield self.flat[self.offsets[i] : self.offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def encode_packed(tokenizer, texts: Sequence[str], *, max_len: int, special_tokens: bool = True, chunk: int = 1 << 16) -> PackedIds:
    """``encode``, packed (``PackedIds``) ``chunk`` texts at a time, so that no more than one chunk's
    Python lists exist at once: what training and scoring over a large pool hold in memory."""
    return PackedIds.concat([
        PackedIds.from_lists(encode(tokenizer, texts[s : s + chunk], max_len=max_len, special_tokens=special_tokens))
        for s in range(0, len(texts), chunk)
    ])


def max_token_id(tokenizer) -> int | None:
    """The largest id ``tokenizer`` can give (its vocabulary's and added tokens'), or ``None``."""
    try:
        ids = list(tokenizer.get_vocab().values())
    except (AttributeError, NotImplementedError):
        return None
    return max((int(i) for i in ids), default=None)


def lengths_of(ids: Sequence[Sequence[int]]) -> np.ndarray:
    """Every row's length (at once for ``PackedIds``)."""
    return ids.lengths if isinstance(ids, PackedIds) else np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))


def tokenizer_encode(tokenizer, texts: Sequence[str], *, max_len: int, special_tokens: bool = True) -> list[list[int]]:
    """``encode`` through the tokenizer itself, always (the reference the character path is held to)."""
    return _call(tokenizer, texts, max_len, special_tokens)["input_ids"] if texts else []


_CHAR_ENCODERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def char_encoder(tokenizer) -> CharEncoder | None:
    """``CharEncoder.for_tokenizer(tokenizer)``, made once, and again when tokens were added to the
    tokenizer or its truncation side changed since."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    try:
        key = (getattr(tokenizer, "truncation_side", "right"), backend.get_vocab_size(with_added_tokens=True))
        cached = _CHAR_ENCODERS.get(tokenizer)
    except Exception:  # not weak-referenceable, or a backend that cannot say its size: no character path
        return None
    if cached is not None and cached[0] == key:
        return cached[1]
    found = CharEncoder.for_tokenizer(tokenizer)
    _CHAR_ENCODERS[tokenizer] = (key, found)
    return found


def _call(tokenizer, texts: Sequence[str], max_len: int, special_tokens: bool):
    return tokenizer(
        list(texts),
        add_special_tokens=special_tokens,
        truncation=True,
        max_length=max_len,
        padding=False,
        return_attention_mask=False,
        return_token_type_ids=False,
    )


def encode_flagged(tokenizer, texts: Sequence[str], *, max_len: int, special_tokens: bool = True) -> tuple[list[list[int]], list[bool]]:
    """``encode``, plus whether each text was cut to fit ``max_len``.

    A fast (Rust) tokenizer says so from the same call (the tokens it cut off are kept as the
    encoding's ``overflowing`` part); a slow one is asked again without truncation.
    """
    if not texts:
        return [], []
    return chars_or_tokenizer(char_encoder(tokenizer), texts, lambda rest: _tokenizer_flagged(tokenizer, rest, max_len, special_tokens),
                              max_len=max_len, special_tokens=special_tokens)


def count_cut(tokenizer, texts: Sequence[str], lengths, *, max_len: int, special_tokens: bool = True) -> int:
    """How many of ``texts``, encoded to ``lengths`` tokens (``encode``'s), were cut to fit ``max_len``:
    a cut text fills ``max_len`` exactly, so only those that do are encoded again, flagged."""
    full = np.flatnonzero(np.asarray(lengths) >= max_len)
    if not len(full):
        return 0
    return int(sum(encode_flagged(tokenizer, [texts[i] for i in full], max_len=max_len, special_tokens=special_tokens)[1]))


def _tokenizer_flagged(tokenizer, texts: list[str], max_len: int, special_tokens: bool) -> tuple[list[list[int]], list[bool]]:
    out = _call(tokenizer, texts, max_len, special_tokens)
    ids = out["input_ids"]
    encodings = getattr(out, "encodings", None)
    if encodings is not None:
        return ids, [bool(e.overflowing) for e in encodings]
    full = tokenizer(list(texts), add_special_tokens=special_tokens, return_attention_mask=False, return_token_type_ids=False)["input_ids"]
    return ids, [len(f) > max_len for f in full]


def bucketed_batches(
    lengths: Sequence[int], batch_size: int, rng: np.random.Generator, *, bucket_factor: int = 50
) -> list[np.ndarray]:
    """Shuffled batches of indices whose members have similar lengths (less padding, same randomness).

    Indices are shuffled, cut into pools of ``batch_size * bucket_factor``, each pool sorted by
    length and cut into batches; the batches are then shuffled.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    lengths = np.asarray(lengths)
    order = rng.permutation(len(lengths))
    pool = batch_size * bucket_factor
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def check_grad_accum(pieces: int, batch_size: int) -> None:
    """``--grad-accum K``: between 1 (off) and ``--batch-size`` (a piece of one row each)."""
    if not 1 <= pieces <= batch_size:
        raise KdError(f"--grad-accum must be between 1 (off) and --batch-size {batch_size} (the pieces each batch is run in), got {pieces}")


def micro_batches(rows: np.ndarray, pieces: int) -> list[tuple[np.ndarray, float]]:
    """Gradient accumulation (``--grad-accum K``): ``rows`` (a batch, or a torchrun rank's share of one)
    as ``pieces`` consecutive pieces, each with its share of the rows. Each piece's mean loss weighed by
    its share, their gradients add up to that of the mean loss over ``rows``: the same step in less
    memory. Always ``pieces`` of them, so that every rank runs as many passes as the others (DDP
    averages at the last): one left empty (fewer rows than pieces) runs the first row at share 0."""
    if pieces < 1:
        raise ValueError(f"pieces must be at least 1, got {pieces}")
    if pieces == 1:
        return [(rows, 1.0)]
    return [(part, len(part) / len(rows)) if len(part) else (rows[:1], 0.0) for part in np.array_split(rows, pieces)]


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Batches of indices in length order, for inference (results are put back by index)."""
    if batch_size < 1:  # a negative step would give no batches: every row left unscored
        raise ValueError("batch_size must be at least 1")
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def spread_by_length(batches: list[np.ndarray]) -> list[np.ndarray]:
    """``sorted_batches``' batches (the same ones: the same logits) in an order whose every stretch holds
    short and long ones alike, for a progress bar that counts texts: run shortest first, scoring a
    380,000-text pool said 27 s left of the 65 s it took. Strides of about the square root of their
    number, each pass going from short to long."""
    stride = max(1, round(math.sqrt(len(batches))))
    return [batches[i] for start in range(stride) for i in range(start, len(batches), stride)]


def pad(ids: Sequence[Sequence[int]], pad_id: int, *, min_len: int = 1, multiple: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` padded on the right to the longest row (at least ``min_len``),
    rounded up to a multiple of ``multiple``."""
    width = max(min_len, max((len(x) for x in ids), default=0))
    width = -(-width // multiple) * multiple
    out = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for i, row in enumerate(ids):
        out[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return torch.from_numpy(out), torch.from_numpy(mask)


def iter_padded(
    ids: Sequence[Sequence[int]], batches: list[np.ndarray], pad_id: int, *, min_len: int = 1, multiple: int = 1
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    for idx in batches:
        input_ids, mask = pad([ids[i] for i in idx], pad_id, min_len=min_len, multiple=multiple)
        yield idx, input_ids, mask
