"""Normalizing a text and hashing it, so that exact duplicates are found whatever their width or spacing."""

from __future__ import annotations

import hashlib
import re
import unicodedata

from .errors import KdError

_SPACE = re.compile(r"\s+")
# variation selectors: zero-width marks that pick a glyph (emoji or text style, an ideograph's
# variant), left behind on their own when an emoji is cut out of a text; BERT's normalizer strips them
VARIATION_SELECTORS = re.compile("[\ufe00-\ufe0f\U000e0100-\U000e01ef]")


def normalize(text: str) -> str:
    """NFKC (full-width → half-width), case-folded, runs of white space collapsed, ends stripped, and
    the characters no model reads left out: format characters (a zero-width space or joiner, a soft
    hyphen, a BOM, as text copied from web pages carries them) and control characters (BERT's
    tokenizer drops both), so that ``好\u200b评`` is a duplicate of ``好评`` (a test copy of a train
    text is found); variation selectors too (``❤️`` is ``❤``). (``isprintable`` first: C speed for nearly every text.)"""
    text = VARIATION_SELECTORS.sub("", text)
    if not text.isprintable():
        text = "".join(c for c in text if c.isspace() or unicodedata.category(c) not in ("Cf", "Cc"))
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def text_hash(text: str) -> str:
    """A 32-hex-digit key of the normalized text."""
    return hashlib.blake2b(normalize(text).encode("utf-8"), digest_size=16).hexdigest()


def unseen(text: str) -> bool:
    """Whether a (stripped, non-empty) text is made only of format characters (zero-width space,
    joiner, BOM...), control characters (``\x01``, DEL), private-use characters (an old phone's
    emoji such as U+E415, an icon font's glyphs: BERT's tokenizer drops all three kinds),
    variation selectors (the ``\u200d\ufe0f`` an emoji leaves behind), U+FFFD (what a conversion that
    could not decode a character put in its place: "��" is all that is left of such a text) and white
    space: nothing a model reads. (``isprintable`` first: C speed for nearly all.)"""
    text = VARIATION_SELECTORS.sub("", text).replace("\ufffd", "").strip()  # (U+FFFD too: BERT's normalizer drops it, as a control character)
    return not text or not text.isprintable() and all(c.isspace() or unicodedata.category(c) in ("Cf", "Cc", "Co") for c in text)


def text_list(texts) -> list[str]:
    """``texts`` as a list, checked to hold str only (a numpy array or pandas Series of texts too):
    one str would be taken as its characters, each a text."""
    if isinstance(texts, str):
        raise KdError("texts must be a list of texts, not one str: pass [text]")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise KdError(f"texts[{i}] is {type(text).__name__}, not a str")
    return texts
