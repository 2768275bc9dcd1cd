"""Chinese word segmentation (jieba) mapped onto token positions, for whole-word masking."""

from __future__ import annotations

import bisect
import functools
import logging
import os
from typing import Sequence

from .errors import KdError


@functools.cache  # once: jieba.setLogLevel clears every logger's cache, a cost per call that grows with the loggers
def jieba_module():
    """jieba, imported and quietened once; a KdError naming the fix when it is not installed."""
    try:
        import jieba
    except ImportError:
        raise KdError("whole-word masking needs jieba: pip install jieba (or pass --no-wwm)") from None
    quieten(jieba)
    return jieba


def quieten(jieba) -> None:
    """jieba's progress messages off, and its failure to write the dictionary cache said in one line."""
    jieba.setLogLevel(logging.WARNING)
    logging.getLogger("jieba").addFilter(_cache_not_written)  # (added once: addFilter skips a filter it has)


def _default_cache() -> str:
    """Where jieba keeps the cache of its default dictionary, the one kd segments with."""
    import tempfile

    import jieba

    return os.path.join(jieba.dt.tmp_dir or tempfile.gettempdir(), jieba.dt.cache_file or "jieba.cache")


_SAID: list[str] = []  # the cache warnings logged since cache_warnings() last took them


def cache_warnings() -> list[str]:
    """The cache warnings jieba logged (one line each on standard error) since the last call, for a
    command's ``--json`` warnings; taken, so each is listed once."""
    said = list(_SAID)
    _SAID.clear()
    return said


def _cache_not_written(record: logging.LogRecord) -> bool:
    """jieba logs "Dump cache file failed." at ERROR, with the whole traceback, when it cannot write
    its dictionary cache (another user's ``jieba.cache`` in a shared temporary folder, a read-only
    or full disk): a run that goes on and succeeds looked as if it had crashed. It also left its
    temporary copy of the cache (9 MB) in that folder each time. The record becomes one warning line
    naming the cache and the way out, and the copy is removed."""
    if record.getMessage() != "Dump cache file failed." or not record.exc_info:
        return True
    exc = record.exc_info[1]
    src, dst = (getattr(exc, "filename", None), getattr(exc, "filename2", None)) if isinstance(exc, OSError) else (None, None)
    if isinstance(src, str) and isinstance(dst, str) and os.path.basename(src).startswith("tmp") \
            and os.path.dirname(os.path.abspath(src)) == os.path.dirname(os.path.abspath(dst)) and os.path.isfile(src):
        try:  # the copy jieba wrote and could not move onto the cache (os.rename's source)
            os.remove(src)
        except OSError:
            pass
    cache = dst if isinstance(dst, str) else _default_cache()
    reason = (exc.strerror or str(exc)) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
    said = (f"jieba could not write its dictionary cache {cache} ({reason}): it builds its "
            "dictionary anew in each run (about a second); set TMPDIR to a folder of your own to keep one")
    _SAID.append(said)
    record.msg = f"warning: {said}"
    record.args, record.exc_info, record.exc_text = (), None, None
    record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True


def word_starts(text: str) -> list[int]:
    """Character offsets where jieba's words begin."""
    starts, pos = [], 0
    for word in jieba_module().lcut(text, HMM=True):
        starts.append(pos)
        pos += len(word)
    return starts


def token_groups(offsets: Sequence[tuple[int, int]], starts: Sequence[int], continues: Sequence[bool] = ()) -> list[int]:
    """A group id per token: tokens inside one word share the id of the word's first token.

    ``offsets`` are the tokenizer's ``(start, end)`` character spans, ``(0, 0)`` for special tokens,
    which get -1. Ids are token positions, so they stay below the sequence length. A token that
    ``continues`` the one before it (WordPiece's ``##`` piece) is in that token's group whatever
    jieba says: jieba cuts ｉＰｈｏｎｅ into letters and Pokémon into Pok, é, mon, and each letter
    was masked on its own, to be guessed from the rest of its word.
    """
    groups: list[int] = []
    first_token_of_word: dict[int, int] = {}
    for pos, (start, end) in enumerate(offsets):
        if start == end:
            groups.append(-1)
            continue
        if pos < len(continues) and continues[pos] and groups and groups[-1] >= 0:
            groups.append(groups[-1])
            continue
        word = bisect.bisect_right(starts, start) - 1
        groups.append(first_token_of_word.setdefault(word, pos))
    return groups
