"""A character-level vocabulary for Chinese text, built from the store's own texts.

Characters are counted as the tokenizer will see them (BERT's normalizer: lowercased, accents
stripped, control characters removed). CJK characters and punctuation become single tokens (BERT's
pre-tokenizer splits them off); every other character (letters, digits, symbols such as ℃, ～, ￥
and emoji) is kept both as a word start and as a ``##`` continuation, so WordPiece can spell any word
character by character instead of turning the whole word into ``[UNK]``.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# lowercase: counted after the normalizer; full-width too (ＧＯＯＤ with a rare ｄ was one [UNK], where GOOD's d was kept)
_SPELLING = frozenset("abcdefghijklmnopqrstuvwxyz0123456789ａｂｃｄｅｆｇｈｉｊｋｌｍｎｏｐｑｒｓｔｕｖｗｘｙｚ０１２３４５６７８９")


def _pre_tokenizer():
    """BERT's pre-tokenizer, which splits punctuation off as words of its own. Its Unicode tables, not
    Python's, decide what is punctuation: Python's newer ones call ⹗, ⹃ or ؝ punctuation where the
    tokenizer keeps them inside a word, which then needed the ``##`` form, missing, and became ``[UNK]``."""
    from tokenizers.pre_tokenizers import BertPreTokenizer

    return BertPreTokenizer()


def _normalizer():
    from tokenizers.normalizers import BertNormalizer

    return BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True).normalize_str


def count_chars(texts: Iterable[str]) -> Counter[str]:
    """How often each character occurs, as the tokenizer sees it (after BERT's normalizer, spaces left out).

    The normalizer works character by character (control characters removed, CJK padded, accents
    stripped, lowercased), so each distinct character is normalized once and weighed by its count:
    normalizing every text took a minute and 4 GB for a 20-million-character --corpus line."""
    normalize = _normalizer()
    raw: Counter[str] = Counter()
    for text in texts:
        raw.update(text)
    counts: Counter[str] = Counter()
    for char, n in raw.items():
        for ch in normalize(char):  # "é" counts as the "e" it becomes
            if not ch.isspace():
                counts[ch] += n
    return counts


def build_vocab(texts: Iterable[str], *, min_count: int = 1, max_size: int = 21128) -> list[str]:
    """Tokens in id order: specials, then characters seen ``min_count`` times (an ASCII or full-width letter or
    digit: once) by descending frequency (ties by code point)."""
    return vocab_from_counts(count_chars(texts), min_count=min_count, max_size=max_size)


def vocab_from_counts(counts: Counter[str], *, min_count: int = 1, max_size: int = 21128) -> list[str]:
    """``build_vocab`` over characters already counted (``count_chars``)."""
    if min_count < 1:
        raise ValueError("min_count must be at least 1")
    normalize, pre = _normalizer(), _pre_tokenizer()
    # an ASCII letter or digit seen once is kept whatever min_count: WordPiece spells a Latin word or a
    # number from them, and one missing turns the whole word into [UNK] ("zoom" with a rare z)
    ranked = sorted(
        (c for c, n in counts.items() if n >= min_count or c in _SPELLING), key=lambda c: (-counts[c], c)
    )
    tokens = list(SPECIALS)
    seen = set(tokens)
    for ch in ranked:
        # a character the normalizer pads with spaces (its handle_chinese_chars ranges, whatever they
        # are in this tokenizers version) is a word of its own, like punctuation the pre-tokenizer splits off
        alone = normalize(ch) == f" {ch} " or len(pre.pre_tokenize_str("a" + ch)) == 2
        forms = [f for f in ([ch] if alone else [ch, "##" + ch]) if f not in seen]
        if len(tokens) + len(forms) > max_size:  # both forms or neither: a lone "x" would [UNK] every word with x inside
            continue
        tokens.extend(forms)
        seen.update(forms)
    return tokens


def make_tokenizer(tokens: list[str]):
    """A fast BERT tokenizer over ``tokens``; ``save_pretrained`` makes it loadable by AutoTokenizer."""
    import inspect
    import tempfile
    from pathlib import Path

    from transformers import BertTokenizerFast

    if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters:  # transformers >= 5
        return BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)}, do_lower_case=True)
    with tempfile.TemporaryDirectory() as tmp:  # transformers 4.x reads a vocab file
        path = Path(tmp) / "vocab.txt"
        path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
        return BertTokenizerFast(vocab_file=str(path), do_lower_case=True)
