"""Chinese word segmentation (jieba) mapped onto token positions, for whole-word masking."""

from __future__ import annotations

import bisect
import functools
import logging
from typing import Sequence

from .errors import KdError


@functools.cache  # once: jieba.setLogLevel clears every logger's cache, a cost per call that grows with the loggers
def jieba_module():
    """jieba, imported and quietened once; a KdError naming the fix when it is not installed."""
    try:
        import jieba
    except ImportError:
        raise KdError("whole-word masking needs jieba: pip install jieba (or pass --no-wwm)") from None
    jieba.setLogLevel(logging.WARNING)
    return jieba


def word_starts(text: str) -> list[int]:
    """Character offsets where jieba's words begin."""
    starts, pos = [], 0
    for word in jieba_module().lcut(text, HMM=True):
        starts.append(pos)
        pos += len(word)
    return starts


def token_groups(offsets: Sequence[tuple[int, int]], starts: Sequence[int]) -> list[int]:
    """A group id per token: tokens inside one word share the id of the word's first token.

    ``offsets`` are the tokenizer's ``(start, end)`` character spans, ``(0, 0)`` for special tokens,
    which get -1. Ids are token positions, so they stay below the sequence length.
    """
    groups: list[int] = []
    first_token_of_word: dict[int, int] = {}
    for pos, (start, end) in enumerate(offsets):
        if start == end:
            groups.append(-1)
            continue
        word = bisect.bisect_right(starts, start) - 1
        groups.append(first_token_of_word.setdefault(word, pos))
    return groups
