"""Token ids of a character-level BERT tokenizer in plain Python: the ids its fast tokenizer gives, faster.

kd's own tokenizers (``kd pretrain``, ``vocab.make_tokenizer``) are BERT WordPiece tokenizers whose
vocabulary holds single characters and their ``##`` continuations only. For such a vocabulary
WordPiece has nothing to search: a CJK character or a punctuation mark is a token of its own, a run
of other characters (a Latin word, a number) is its first character then ``##`` continuations, or one
``[UNK]`` when any of them is missing. What remains is a lookup per character, and the Rust pipeline
(normalizer, pre-tokenizer with offsets, model, post-processor, then conversion to Python lists)
costs several times more than that lookup on a few cores.

Nothing here re-implements BERT's rules. Each distinct character is classified once by the
tokenizer's own normalizer and pre-tokenizer (what it becomes, whether it stands alone or joins a
word, whether it is removed or separates words), and the special tokens around a text come from the
tokenizer's own post-processor. A text that holds a character this cannot decide alone (one that
normalizes to several characters, a combining mark, a context-dependent lowercase, or the first
character of a special token such as ``[MASK]``) is left to the tokenizer, as is every text of a
tokenizer that is not of this kind (``CharEncoder.for_backend`` returns ``None``). Torch-free, so
exported artifacts use it too.
"""

from __future__ import annotations

import gc
import threading
import unicodedata
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np

_STANDALONE, _WORD, _SPACE, _REMOVED = 0, 1, 2, 3
_CONTEXT_CASED = {"\u03a3"}  # capital sigma: its lowercase depends on the next character
# a character's code in the lookup table of the batch path: a token id (>= 0), or one of these, or
# _WORD0 - k for the k-th word character (its first and continuation ids in the word tables)
_UNSEEN, _FALLBACK, _SPACE_CODE, _REMOVED_CODE, _WORD0 = np.iinfo(np.int32).min, -1, -2, -3, -4
_SMALL = 4096  # characters: fewer go through the per-character loop (less fixed cost than the batch path)
_CHUNK = 4096  # texts per batch-path step: small enough for the CPU caches (about 1.4x faster than 65,536)


@contextmanager
def _gc_paused() -> Iterator[None]:
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class CharEncoder:
    """Ids for texts, as ``backend.encode_batch`` gives them (``backend``: a ``tokenizers.Tokenizer``)."""

    def __init__(self, backend, vocab: dict[str, int], unk_id: int, prefix: list[int], suffix: list[int],
                 max_word: int, special_starts: set[str]):
        self._normalizer = backend.normalizer
        self._pre = backend.pre_tokenizer
        self._vocab = vocab
        self._unk = unk_id
        self._prefix, self._suffix = prefix, suffix
        self._max_word = max_word
        self._kinds: dict[str, tuple | None] = {c: None for c in special_starts}  # texts with these go to the tokenizer
        self._table: np.ndarray | None = None  # code point -> code, for the batch path (made on first use)
        self._word_first: list[int] = []  # per word character: its id as a word's first character (-1: none)
        self._word_cont: list[int] = []  # and as a ## continuation
        self._lock = threading.Lock()  # the batch path's tables grow under it (a server may encode from threads)

    @classmethod
    def for_tokenizer(cls, tokenizer) -> "CharEncoder | None":
        """``for_backend`` of a Hugging Face tokenizer's backend; ``None`` for a slow tokenizer or one
        that truncates on the left."""
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None or getattr(tokenizer, "truncation_side", "right") != "right":
            return None
        return cls.for_backend(backend)

    @classmethod
    def for_backend(cls, backend) -> "CharEncoder | None":
        """An encoder for ``backend`` when it is a BERT WordPiece tokenizer with a character-level
        vocabulary, else ``None`` (also when ``backend`` cannot be inspected: the tokenizer then
        encodes everything itself)."""
        try:
            return cls._inspect(backend)
        except Exception:  # another tokenizers version, another kind of backend: not for this path
            return None

    @classmethod
    def _inspect(cls, backend) -> "CharEncoder | None":
        model, norm, pre = backend.model, backend.normalizer, backend.pre_tokenizer
        if (type(model).__name__, type(norm).__name__, type(pre).__name__) != ("WordPiece", "BertNormalizer", "BertPreTokenizer"):
            return None
        if getattr(model, "continuing_subword_prefix", None) != "##":
            return None
        tokens = list(backend.get_added_tokens_decoder().values())
        if any(t.normalized or not t.special for t in tokens):  # matched after normalization, or a word of its own
            return None
        added = [t.content for t in tokens]
        vocab = backend.get_vocab(with_added_tokens=False)
        specials = set(added)
        if any(not (len(t) == 1 or (len(t) == 3 and t.startswith("##")) or t in specials) for t in vocab):
            return None
        unk = vocab.get(model.unk_token)
        if unk is None:
            return None
        # the special tokens the post-processor puts around a text, read off a probe
        # (a vocabulary of Chinese texts only has no Latin letter or digit: any single character does then)
        probe = next((c for c in "abcdefghijklmnopqrstuvwxyz0123456789" if c in vocab), None) or next(
            (t for t in sorted(vocab, key=vocab.get) if len(t) == 1 and t not in specials), None)
        if probe is None:
            return None
        body = backend.encode(probe, add_special_tokens=False).ids
        whole = backend.encode(probe, add_special_tokens=True).ids
        at = next((i for i in range(len(whole) - len(body) + 1) if whole[i:i + len(body)] == body), None)
        if len(body) != 1 or at is None:
            return None
        return cls(backend, vocab, unk, whole[:at], whole[at + len(body):], int(model.max_input_chars_per_word),
                   {t[0] for t in added if t})

    # one character, classified by the tokenizer's own normalizer and pre-tokenizer -----------------
    def _classify(self, c: str) -> tuple | None:
        if c in _CONTEXT_CASED or unicodedata.combining(c) or unicodedata.category(c) == "Cs":
            return None  # lone surrogates too: the tokenizer cannot take them either
        n = self._normalizer.normalize_str(c)
        if n == "":
            return (_REMOVED,)
        w = n.strip()
        if w == "":
            return (_SPACE,)
        if len(w) != 1:
            return None
        if n != w or len(self._pre.pre_tokenize_str("a" + w)) == 2:  # padded (CJK) or split off (punctuation)
            return (_STANDALONE, self._vocab.get(w, self._unk))
        return (_WORD, self._vocab.get(w), self._vocab.get("##" + w))

    def _body(self, text: str) -> list[int] | None:
        """The ids between the special tokens, or ``None`` when the tokenizer must decide."""
        kinds, classify = self._kinds, self._classify
        out: list[int] = []
        word: list[tuple] = []
        for c in text:
            k = kinds.get(c, False)
            if k is False:
                k = kinds[c] = classify(c)
            if k is None:
                return None
            kind = k[0]
            if kind == _WORD:
                word.append(k)
            elif kind != _REMOVED:  # a space or a standalone character ends the word before it
                if word:
                    self._flush(word, out)
                    word = []
                if kind == _STANDALONE:
                    out.append(k[1])
        if word:
            self._flush(word, out)
        return out

    def _flush(self, word: list[tuple], out: list[int]) -> None:
        ids = [word[0][1]] + [k[2] for k in word[1:]]
        out.extend([self._unk] if len(word) > self._max_word or None in ids else ids)

    def encode_flagged(self, texts: Sequence[str], *, max_len: int, special_tokens: bool = True) -> tuple[list[list[int] | None], list[bool]]:
        """Per text: ids truncated to ``max_len`` (special tokens included) and whether it was cut;
        ``None`` (and ``False``) for a text the tokenizer must encode itself."""
        prefix, suffix = (self._prefix, self._suffix) if special_tokens else ([], [])
        room = max(max_len - len(prefix) - len(suffix), 0)
        if max_len < len(prefix) + len(suffix):  # no room even for the special tokens: the tokenizer's call
            return [None] * len(texts), [False] * len(texts)
        if sum(map(len, texts)) >= _SMALL:
            ids: list[list[int] | None] = []
            cut: list[bool] = []
            for at in range(0, len(texts), _CHUNK):
                more, more_cut = self._batch(texts[at:at + _CHUNK], prefix, suffix, room)
                ids += more
                cut += more_cut
            return ids, cut
        return self._loop(texts, prefix, suffix, room)

    def _loop(self, texts: Sequence[str], prefix: list[int], suffix: list[int], room: int) -> tuple[list[list[int] | None], list[bool]]:
        """``encode_flagged`` text by text, through ``_body``."""
        bodies = [self._body(t) for t in texts]
        return ([None if b is None else prefix + b[:room] + suffix for b in bodies],
                [b is not None and len(b) > room for b in bodies])

    # the batch path: every character of every text at once, in numpy --------------------------------
    def _code(self, c: str) -> int:
        k = self._kinds.get(c, False)
        if k is False:
            k = self._kinds[c] = self._classify(c)
        if k is None:
            return _FALLBACK
        if k[0] == _STANDALONE:
            return k[1]
        if k[0] == _SPACE:
            return _SPACE_CODE
        if k[0] == _REMOVED:
            return _REMOVED_CODE
        self._word_first.append(-1 if k[1] is None else k[1])
        self._word_cont.append(-1 if k[2] is None else k[2])
        return _WORD0 - (len(self._word_first) - 1)

    def _codes(self, text: str) -> np.ndarray | None:
        """The code of every character of ``text`` (``None``: it cannot be read as code points)."""
        try:
            points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        except UnicodeEncodeError:  # a lone surrogate
            return None
        if self._table is None:
            with self._lock:
                if self._table is None:
                    self._table = np.full(0x110000, _UNSEEN, dtype=np.int32)
        codes = self._table[points]
        unseen = codes == _UNSEEN
        if unseen.any():
            with self._lock:
                for cp in np.unique(points[unseen]).tolist():
                    if self._table[cp] == _UNSEEN:
                        self._table[cp] = self._code(chr(cp))
            codes = self._table[points]
        return codes

    def _batch(self, texts: Sequence[str], prefix: list[int], suffix: list[int], room: int) -> tuple[list[list[int] | None], list[bool]]:
        """``encode_flagged`` over all the characters of ``texts`` at once. Most characters stand alone
        (CJK, punctuation), so only a few passes touch every character; words, spaces and the rest are
        handled on their positions alone, and the special tokens are put in before the one conversion
        to Python ints, so that each text's list is a single slice."""
        n = len(texts)
        codes = self._codes("".join(texts))
        if codes is None:
            return self._loop(texts, prefix, suffix, room)
        ends = np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=n))
        fallback = np.zeros(n, dtype=bool)
        fallback[np.searchsorted(ends, np.flatnonzero(codes == _FALLBACK), side="right")] = True
        removed = codes == _REMOVED_CODE  # a removed character does not split a word: take it out first
        if removed.any():
            ends = ends - np.concatenate(([0], np.cumsum(removed)))[ends]
            codes = codes[~removed]
        where = np.flatnonzero(codes <= _WORD0)
        if len(where):
            owner = np.searchsorted(ends, where, side="right")
            # a word starts at a word character whose predecessor is not one, or is another text's
            joined = np.zeros(len(where), dtype=bool)
            joined[1:] = (where[1:] == where[:-1] + 1) & (owner[1:] == owner[:-1])
            start = ~joined
            k = _WORD0 - codes[where]
            first, cont = np.asarray(self._word_first, dtype=np.int32), np.asarray(self._word_cont, dtype=np.int32)
            tok = np.where(start, first[k], cont[k])
            run = np.cumsum(start) - 1
            runs = int(run[-1]) + 1
            bad = (np.bincount(run, weights=(tok < 0), minlength=runs) > 0) | (np.bincount(run, minlength=runs) > self._max_word)
            codes = codes.copy()
            codes[where] = np.where(bad[run], np.where(start, self._unk, -1), tok)  # a bad word is one [UNK]
        dropped = np.flatnonzero(codes < 0)  # spaces, the rest of bad words, characters left to the tokenizer
        if len(dropped):
            counts = np.diff(ends, prepend=0) - np.bincount(np.searchsorted(ends, dropped, side="right"), minlength=n)[:n]
            codes = np.delete(codes, dropped)
        else:
            counts = np.diff(ends, prepend=0)
        # the output, flat: per text its prefix, its first `room` tokens, its suffix
        kept = np.minimum(counts, room)
        width = kept + len(prefix) + len(suffix)
        out_start = np.cumsum(width) - width
        tok_start = np.cumsum(counts) - counts
        owner = np.repeat(np.arange(n), counts)
        rank = np.arange(len(codes)) - tok_start[owner]
        keep = rank < room
        flat = np.empty(int(width.sum()), dtype=np.int64)
        flat[out_start[owner[keep]] + len(prefix) + rank[keep]] = codes[keep]
        for j, t in enumerate(prefix):
            flat[out_start + j] = t
        for j, t in enumerate(suffix):
            flat[out_start + len(prefix) + kept + j] = t
        with _gc_paused():  # a collection per few hundred new lists would cost more than the lists
            values = flat.tolist()
            ids = [None if f else values[b:b + w] for b, w, f in zip(out_start.tolist(), width.tolist(), fallback.tolist())]
        cut = ((counts > room) & ~fallback).tolist()
        return ids, cut

def encode_flagged(encoder: CharEncoder | None, texts: Sequence[str], fallback, *, max_len: int,
                   special_tokens: bool = True) -> tuple[list[list[int]], list[bool]]:
    """``(ids, cut)`` per text: ``encoder``'s where it can decide, the rest from one call of
    ``fallback(texts) -> (ids, cut)`` (the tokenizer itself); all from ``fallback`` without an encoder."""
    if encoder is None:
        return bounded(fallback, list(texts), max_len=max_len)
    ids, cut = encoder.encode_flagged(texts, max_len=max_len, special_tokens=special_tokens)
    rest = [i for i, x in enumerate(ids) if x is None]
    if rest:
        more, more_cut = bounded(fallback, [texts[i] for i in rest], max_len=max_len)
        for i, x, c in zip(rest, more, more_cut):
            ids[i], cut[i] = x, c
    return ids, cut  # type: ignore[return-value]


def bounded(fallback, texts: list[str], *, max_len: int) -> tuple[list[list[int]], list[bool]]:
    """``fallback(texts)`` with each very long text given as its first ``limit`` characters.

    A fast tokenizer that truncates keeps every cut-off piece (``overflowing``): a megabyte line
    would cost gigabytes to learn that it was cut. Only the first ``max_len`` tokens count, and a
    tokenizer splits text into words it tokenizes one by one, so a long enough prefix gives them
    exactly. "Long enough" is checked, not assumed: half the prefix must give the same cut tokens
    (else the text is tokenized whole, as before).
    """
    limit = max(4096, 32 * max_len)
    long = [i for i, t in enumerate(texts) if len(t) > limit]
    if not long:
        return fallback(texts)
    ids, cut = fallback([t[:limit] for t in texts])
    half, half_cut = fallback([texts[i][: limit // 2] for i in long])
    redo = [i for i, h, hc in zip(long, half, half_cut) if not (cut[i] and hc and list(h) == list(ids[i]))]
    if redo:
        whole, whole_cut = fallback([texts[i] for i in redo])
        for i, x, c in zip(redo, whole, whole_cut):
            ids[i], cut[i] = x, c
    return ids, cut


def word_marker_ids(token_to_id, unk_id: int | None) -> list[int]:
    """The id of SentencePiece's word-start marker ``▁`` as a token of its own (an XLM-R's reads "😀" as
    ``▁ <unk>``): no text of its own, so no token of the text for ``unknown_only``; none where the
    vocabulary lacks it (``token_to_id``: a tokenizer's, giving ``None`` or ``unk_id`` for a token it lacks)."""
    i = token_to_id("\u2581")
    return [] if i is None or i == unk_id else [int(i)]


def non_text_ids(tokenizer) -> list[int]:
    """The ids of a Hugging Face ``tokenizer`` that hold no text of their own, for ``unknown_only``: its special
    tokens and SentencePiece's bare word marker (``word_marker_ids``)."""
    return [*tokenizer.all_special_ids, *word_marker_ids(tokenizer.convert_tokens_to_ids, tokenizer.unk_token_id)]


def unknown_only(ids, unk_id: int | None, special_ids: Sequence[int] = (), cut: Sequence[bool] | None = None) -> list[bool]:
    """Per row of ``ids``: whether each of its text tokens (every id but ``special_ids``, ``unk_id`` aside)
    is ``unk_id``, a text of which the vocabulary holds nothing (an emoji-only review for a
    Chinese BERT's): its answer is the model's for ``[UNK]``, not for its text. A row of no text token
    at all (a line of combining marks or zero-width spaces, which a BERT tokenizer drops) is one too: its
    answer is the model's for nothing. ``cut``: whether each row was cut to the model's length; a cut row of no
    text token is none (a --max-len 2 model reads [CLS] [SEP] of any text: its text was there, cut away). All
    false where ``unk_id`` is ``None`` (a byte-level tokenizer has no unknown token)."""
    if unk_id is None:
        return [False] * len(ids)
    special = set(special_ids) - {unk_id}
    cut = [False] * len(ids) if cut is None else cut
    # (`all` stops at the first text token; `unk_id in row` only where no text token was left at all)
    return [all(i == unk_id or i in special for i in row) and (not c or unk_id in row) for row, c in zip(ids, cut)]
