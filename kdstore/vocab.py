"""A character-level vocabulary for Chinese text, built from the store's own texts.

CJK characters become single tokens; other letters and digits are kept both as a word start and as a
``##`` continuation, so BERT's WordPiece can spell any Latin word character by character instead of
turning it into ``[UNK]``.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def build_vocab(texts: Iterable[str], *, min_count: int = 1, max_size: int = 21128) -> list[str]:
    """Tokens in id order: specials, then characters by descending frequency (ties by code point)."""
    if min_count < 1:
        raise ValueError("min_count must be at least 1")
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(ch for ch in text.lower() if not ch.isspace())  # "İ".lower() is two characters
    ranked = sorted(
        (c for c, n in counts.items() if n >= min_count), key=lambda c: (-counts[c], c)
    )
    tokens = list(SPECIALS)
    seen = set(tokens)
    for ch in ranked:
        forms = [ch] if _is_cjk(ch) or not ch.isalnum() else [ch, "##" + ch]
        for form in forms:
            if form not in seen and len(tokens) < max_size:
                tokens.append(form)
                seen.add(form)
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
