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

import unicodedata
from typing import Sequence

_STANDALONE, _WORD, _SPACE, _REMOVED = 0, 1, 2, 3
_CONTEXT_CASED = {"\u03a3"}  # capital sigma: its lowercase depends on the next character


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

    @classmethod
    def for_backend(cls, backend) -> "CharEncoder | None":
        """An encoder for ``backend`` when it is a BERT WordPiece tokenizer with a character-level
        vocabulary, else ``None``."""
        model, norm, pre = backend.model, backend.normalizer, backend.pre_tokenizer
        if (type(model).__name__, type(norm).__name__, type(pre).__name__) != ("WordPiece", "BertNormalizer", "BertPreTokenizer"):
            return None
        if getattr(model, "continuing_subword_prefix", None) != "##":
            return None
        added = [t.content for t in backend.get_added_tokens_decoder().values()]
        vocab = backend.get_vocab(with_added_tokens=False)
        specials = set(added)
        if any(not (len(t) == 1 or (len(t) == 3 and t.startswith("##")) or t in specials) for t in vocab):
            return None
        unk = vocab.get(model.unk_token)
        if unk is None:
            return None
        # the special tokens the post-processor puts around a text, read off a probe
        probe = next((c for c in "abcdefghijklmnopqrstuvwxyz0123456789" if c in vocab), None)
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
        if c in _CONTEXT_CASED or unicodedata.combining(c):
            return None
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
        ids: list[list[int] | None] = []
        cut: list[bool] = []
        for text in texts:
            body = self._body(text)
            if body is None:
                ids.append(None)
                cut.append(False)
                continue
            cut.append(len(body) > room)
            ids.append(prefix + body[:room] + suffix)
        return ids, cut


def encode_flagged(encoder: CharEncoder | None, texts: Sequence[str], fallback, *, max_len: int,
                   special_tokens: bool = True) -> tuple[list[list[int]], list[bool]]:
    """``(ids, cut)`` per text: ``encoder``'s where it can decide, the rest from one call of
    ``fallback(texts) -> (ids, cut)`` (the tokenizer itself); all from ``fallback`` without an encoder."""
    if encoder is None:
        return fallback(list(texts))
    ids, cut = encoder.encode_flagged(texts, max_len=max_len, special_tokens=special_tokens)
    rest = [i for i, x in enumerate(ids) if x is None]
    if rest:
        more, more_cut = fallback([texts[i] for i in rest])
        for i, x, c in zip(rest, more, more_cut):
            ids[i], cut[i] = x, c
    return ids, cut  # type: ignore[return-value]
