"""Turning texts into padded id batches: length-bucketed for training, length-sorted for scoring."""

from __future__ import annotations

import weakref
from typing import Iterator, Sequence

import numpy as np
import torch

from .char_encoder import CharEncoder
from .char_encoder import encode_flagged as chars_or_tokenizer


def encode(tokenizer, texts: Sequence[str], *, max_len: int, special_tokens: bool = True) -> list[list[int]]:
    """Token ids per text (no padding), truncated to ``max_len``: for a character-level BERT
    tokenizer (kd's own) a lookup per character (``kdstore.char_encoder``, the same ids), else one
    batched tokenizer call."""
    chars = char_encoder(tokenizer) if texts else None
    if chars is None:
        return tokenizer_encode(tokenizer, texts, max_len=max_len, special_tokens=special_tokens)
    return chars_or_tokenizer(chars, texts, lambda rest: _tokenizer_flagged(tokenizer, rest, max_len, special_tokens),
                              max_len=max_len, special_tokens=special_tokens)[0]


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


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Batches of indices in length order, for inference (results are put back by index)."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def pad(ids: Sequence[Sequence[int]], pad_id: int, *, min_len: int = 1, multiple: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` padded on the right to the longest row (at least ``min_len``),
    rounded up to a multiple of ``multiple``."""
    width = max(min_len, max((len(x) for x in ids), default=0))
    width = -(-width // multiple) * multiple
    out = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return out, mask


def iter_padded(
    ids: Sequence[Sequence[int]], batches: list[np.ndarray], pad_id: int, *, min_len: int = 1, multiple: int = 1
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    for idx in batches:
        input_ids, mask = pad([ids[i] for i in idx], pad_id, min_len=min_len, multiple=multiple)
        yield idx, input_ids, mask
