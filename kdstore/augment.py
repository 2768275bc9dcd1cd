"""Data augmentation for distillation: new unlabeled texts made from labeled ones, for the teacher to score.

The recipe of Tang et al. 2019 ("Distilling Task-Specific Knowledge from BERT into Simple Neural
Networks", section 3.3), also used by Baidu's ERNIE-Tiny "data distillation", on jieba words:

* **mask**: a word becomes the unknown token ``[UNK]``;
* **pos**: a word becomes another word seen with the same part-of-speech tag in the store's own texts,
  drawn by how often it was seen ("the unigram word distribution re-normalized by the POS tag");
* **ngram**: the text is cut down to a random span of 1 to 5 consecutive words.

Per word one draw ``x ~ U(0, 1)`` decides: ``x < p_mask`` masks, ``p_mask <= x < p_mask + p_pos`` swaps;
then, with probability ``p_ngram``, n-gram sampling cuts the result. Punctuation and white space are
words for jieba but are never masked or swapped (they may still end up outside an n-gram span); an
n-gram counts punctuation as words, white space not. A word jieba cuts into letters (Pokémon as
Pok + é + mon, full-width ｉＰｈｏｎｅ or Москва letter by letter) is one word again, and so is an
address (URL, domain, e-mail: tagged ``url``) or a number with thousands separators (``1,299``: ``num``).

Everything is a pure function; randomness comes only from an explicit ``random.Random``, and
:func:`augment` seeds one per parent text from ``(seed, index)`` through a string seed, so its output
does not depend on Python's hash seed, on set or dict order, or on the other texts (except through the
shared POS vocabulary).

Speed, measured on the development machine (2 CPU cores, shared with other jobs, so timings varied
by about 1.5x between runs) for the 2,000 review texts of ``examples/reviews/train.tsv`` (74
characters on average), ``n=4`` (8,000 new texts), default probabilities, POS vocabulary built from
the same texts, jieba's dictionary already loaded (loading it once costs about 0.8 s more):

* ``hmm=True`` (the default, jieba's HMM for unknown words, as in :mod:`kdstore.segment`):
  320-510 texts/s (3.9-6.2 s in all), of which segmenting with ``jieba.posseg`` is 3.5-5.7 s;
* ``hmm=False``: 1,500-2,400 texts/s (0.8-1.3 s in all), of which segmenting is 0.4-0.6 s; unknown
  words are then split into single characters, which changes the tagging of 3 texts in 4 a little.

Everything after segmenting takes 0.4-0.7 s for the 8,000 new texts.
"""

from __future__ import annotations

import bisect
import functools
import numbers
import random
import re
import unicodedata
from collections import Counter
from itertools import accumulate
from typing import Iterable, Iterator, Mapping, Sequence

from .errors import KdError
from .textkey import normalize, text_list

METHODS = ("mask", "pos", "ngram")
UNK = "[UNK]"
PUNCT_TAGS = frozenset({"x", "w"})


@functools.cache  # once: jieba.setLogLevel clears every logger's cache, a cost per call that grows with the loggers
def posseg():
    """jieba's part-of-speech segmenter, quietened and remembering its HMM runs; a one-line error without jieba."""
    try:
        import jieba
        import jieba.posseg
    except ImportError:
        raise KdError("data augmentation needs jieba: pip install jieba") from None
    from .segment import quieten

    quieten(jieba)
    _remember_hmm_runs(jieba.posseg)
    return jieba.posseg


def _remember_hmm_runs(posseg) -> None:
    """jieba's HMM tags each run of characters its dictionary has no word for with a Viterbi pass in
    Python, 80% of the time ``segment_pos`` takes; a third of those runs in 3,000 reviews (的, 很好,
    都是, dates ...) had been tagged before. A run's tagging is a pure function of its characters
    and jieba's fixed tables: it is kept (for the most recent 65,536 runs) and not worked out again,
    which gives the same words and tags."""
    viterbi = posseg.viterbi
    if getattr(viterbi, "kd_remembers", False):
        return
    tables = (posseg.char_state_tab_P, posseg.start_P, posseg.trans_P, posseg.emit_P)

    @functools.lru_cache(maxsize=1 << 16)
    def tagged_run(obs: str):
        prob, route = viterbi(obs, *tables)
        return prob, tuple(route)  # (read only by jieba, a tuple so that no caller can change what is kept)

    def remembering(obs, states, start_p, trans_p, emit_p):
        if isinstance(obs, str) and all(a is b for a, b in zip((states, start_p, trans_p, emit_p), tables)):
            return tagged_run(obs)
        return viterbi(obs, states, start_p, trans_p, emit_p)

    remembering.kd_remembers = True
    posseg.viterbi = remembering


def segment_pos(text: str, *, hmm: bool = True) -> list[tuple[str, str]]:
    """``(word, tag)`` pairs from ``jieba.posseg``; the words joined with ``""`` give back ``text``.

    ``hmm=False`` skips jieba's HMM for unknown words: about ten times faster, slightly coarser.
    """
    pairs: list[tuple[str, str]] = []
    for pair in posseg().lcut(text, HMM=hmm):
        word, flag = pair.word, pair.flag
        if pairs and _continues(pairs[-1][0], word):  # one user-perceived character: never masked, swapped or cut apart
            pairs[-1] = (pairs[-1][0] + word, pairs[-1][1])
        elif pairs and _same_word(pairs[-1][0], word):  # one Latin, Cyrillic or full-width word jieba cut into pieces
            before, tag = pairs[-1]
            pairs[-1] = (before + word, flag if tag in PUNCT_TAGS else tag)  # (caf + é: eng, ｉ + Ｐ: x)
        else:
            pairs.append((word, flag))
    return _join_spans(text, _join_inner_marks(pairs))


# an address or a number jieba cuts into pieces (https + : + / + / + www + . + example ..., 1 + , + 299): a mask or
# a swap of one piece made www.[UNK].com or ¥1,example, an n-gram cut one in two. Each is one word: an address is
# tagged "url" (swapped only for another address the store's texts hold), a number "num" (only for another such
# number: jieba's "m" holds 元 and 三天 too, and a price ¥1,299 became ¥三天).
_URL_CHARS = r"[A-Za-z0-9\-._~:/?#\[\]@!$&*+;=%()]"  # (no comma or quote: "www.jd.com,it's" took the English after it)
_TLDS = "com|cn|net|org|edu|gov|io|co|me|cc|tv|top|xyz|info|vip|shop|club|site|online|hk|tw|jp|uk|us"
_SPANS = re.compile(
    r"(?P<url>(?<![A-Za-z0-9.@])(?:(?i:https?|ftp)://|(?i:www)\.)" + _URL_CHARS + r"+"  # an address with its path (WWW. too)
    r"|(?<![A-Za-z0-9.@_%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"  # an e-mail address
    r"|(?<![A-Za-z0-9.@/-])[A-Za-z0-9][A-Za-z0-9-]*(?:\.[A-Za-z0-9-]+)*\.(?:" + _TLDS + r")(?![A-Za-z0-9])"  # a bare domain
    r"(?:/" + _URL_CHARS + r"*)?)"
    r"|(?P<number>(?<![0-9A-Za-z.,])[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?(?![0-9]))"  # 1,299 or 12,500.50 (not RMB1,299: jieba's RMB1)
)
_URL_END = ".,;:!?'()"  # (what ends a sentence after an address is not part of it: "见 www.a.com." or "(www.a.com)")


def _join_spans(text: str, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``pairs`` with the pieces of each address (URL, e-mail, domain) or thousands-grouped number in ``text``
    made one word: tagged ``url`` or ``num``."""
    spans = []
    for match in _SPANS.finditer(text):
        start, end = match.span()
        if match.group("url"):
            # (a ")" stays where it closes a "(" of the address, A_(b), not one before it: "(见 https://…/A_(b))")
            while end > start and text[end - 1] in _URL_END and not (
                    text[end - 1] == ")" and text.count("(", start, end) >= text.count(")", start, end)):
                end -= 1
        spans.append((start, end, "url" if match.group("url") else "num"))
    # (a number that starts inside a word joined before, sku_1,299 or ＲＭＢ1,299: no number, as RMB1,299 is not)
    starts = set(accumulate((len(w) for w, _ in pairs), initial=0)) if spans else set()
    spans = [sp for sp in spans if sp[2] != "num" or sp[0] in starts]
    if not spans:
        return pairs
    out: list[tuple[str, str]] = []
    at, i = 0, 0  # (the offset where the next pair starts, the next span)
    for word, tag in pairs:
        while i < len(spans) and spans[i][1] <= at:
            i += 1
        inside = i < len(spans) and spans[i][0] < at + len(word) and at < spans[i][1]
        if inside and out and out[-1][1] == ("span", i):  # (a piece of the span begun before)
            out[-1] = (out[-1][0] + word, ("span", i))
        elif inside:
            out.append((word, ("span", i)))
        else:
            out.append((word, tag))
        at += len(word)
    return [(word, spans[tag[1]][2] if isinstance(tag, tuple) else tag) for word, tag in out]


# Wi-Fi, T-shirt, don't, don’t, Ｗｉ－Ｆｉ, an ad's WeChat id wx_abc123 (a swap of one half made hb-2024_abc123): jieba cuts them at the mark
_INNER_MARKS = frozenset("-'_\u2019\u2010\u2011\uff0d\uff07\uff3f")


def _join_inner_marks(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``pairs`` with a word of spaced letters (ASCII, accented, full-width, Cyrillic ...), a hyphen or apostrophe
    (or an underscore) and such a word right after it made one word (Wi-Fi, USB-C, don't, Pokémon-Go, wx_abc123), where one side holds a
    letter: a swap or a mask of one half made 'Wi-example' or '[UNK]-Fi'. Numbers on both sides (3-5天, a
    range) stay as jieba cut them. Halves jieba tags punctuation only (full-width, Cyrillic) stay so, as
    ｉＰｈｏｎｅ alone does: no swap touches them."""
    out: list[tuple[str, str]] = []
    # whether out[-1] is a join (so spelled, with a letter) and is ASCII: "a-b-c-…" was checked whole at each mark,
    # 4 s for 5,000 of them
    joined, ascii_before = False, True
    i = 0
    while i < len(pairs):
        word, tag = pairs[i]
        if out and word in _INNER_MARKS and i + 1 < len(pairs) and _spelled(pairs[i + 1][0]) and (
                joined or (_spelled(out[-1][0], marks=True) and any(c.isalpha() for c in out[-1][0] + pairs[i + 1][0]))):
            before, before_tag = out[-1]
            after, after_tag = pairs[i + 1]
            ascii_before = ascii_before if joined else before.isascii()
            joined_tag = next((t for t in (before_tag, after_tag) if t not in PUNCT_TAGS and t != "m"),
                              "eng" if ascii_before and after.isascii() else "x")
            out[-1] = (before + word + after, joined_tag)
            joined, ascii_before = True, ascii_before and word.isascii() and after.isascii()
            i += 2
            continue
        out.append((word, tag))
        joined = False
        i += 1
    return out


def _spelled(word: str, *, marks: bool = False) -> bool:
    """Letters and digits of a script written with spaces between words only, with their combining marks (``marks``:
    and the marks a word joined before, Wi-Fi in Wi-Fi-6); ending in a letter or digit."""
    if not word or not (word[-1].isalnum() or unicodedata.category(word[-1])[0] == "M") or not _spaced_letter(word[0]):
        return False
    return all(_spaced_letter(c) or unicodedata.category(c)[0] == "M" or marks and c in _INNER_MARKS for c in word)


_ZWJ = "\u200d"


def _is_regional(ch: str) -> bool:
    return "\U0001f1e6" <= ch <= "\U0001f1ff"


def _continues(before: str, word: str) -> bool:
    """True when ``word`` starts inside the character ``before`` ends with (jieba cuts them apart):
    a combining mark or variation selector (é as e + U+0301, ❤️ as ❤ + U+FE0F), an emoji joined by
    a zero-width joiner (👨‍👩‍👧), a skin tone (👍🏻), a tag sequence, the second half of a flag (🇨🇳)."""
    first = word[0]
    if unicodedata.category(first)[0] == "M" or first == _ZWJ or before[-1] == _ZWJ:
        return True
    if "\U0001f3fb" <= first <= "\U0001f3ff" or "\U000e0020" <= first <= "\U000e007f":
        return True
    if _is_regional(first) and _is_regional(before[-1]):
        run = 0
        while run < len(before) and _is_regional(before[-1 - run]):
            run += 1
        return run % 2 == 1  # pairs of regional indicators are flags: 🇨🇳🇺🇸 is two
    return False


def _spaced_letter(ch: str) -> bool:
    """A letter or digit of a script written with spaces between words (Latin, full-width Latin,
    Greek, Cyrillic ...), not a CJK ideograph, kana or hangul, which jieba segments."""
    return ch.isalnum() and not unicodedata.name(ch, "").startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "IDEOGRAPHIC"))


def _same_word(before: str, word: str) -> bool:
    """True when ``word`` goes on the word ``before`` ends: jieba keeps ``[a-zA-Z0-9]`` runs whole
    but cuts every other letter off (café as caf + é, Москва and ｉＰｈｏｎｅ letter by letter), and a
    mask or a swap of one piece made caf[UNK] or Pythoné. Two ASCII pieces stay as jieba cut them
    (3.5 + GHz)."""
    last = next((ch for ch in reversed(before) if unicodedata.category(ch)[0] != "M"), "")  # (é as e + U+0301)
    first = word[0]
    return bool(last) and not (before[-1].isascii() and first.isascii()) and _spaced_letter(last) and _spaced_letter(first)


def segmented(texts: Sequence[str], *, hmm: bool = True, what: str = "augment: segment") -> Iterator[list[tuple[str, str]]]:
    """``segment_pos`` of each text, in order, with a progress bar for many texts (jieba's tagging
    takes about 100-400 texts/s: minutes for a large train split, which showed nothing meanwhile)."""
    from .progress import progress

    with progress(disable=len(texts) < 1000) as bar:
        task = bar.add_task(what, total=len(texts), unit="texts")
        for start in range(0, len(texts), 256):
            part = texts[start : start + 256]
            yield from (segment_pos(text, hmm=hmm) for text in part)
            bar.advance(task, len(part))


def is_punct(word: str) -> bool:
    """True for an empty word or one made only of white space, punctuation and symbols (and the
    marks on them: ❤️ is a symbol, a combining mark alone no word)."""
    return all(ch.isspace() or unicodedata.category(ch)[0] in "PSZCM" for ch in word)


def _swappable(word: str, tag: str) -> bool:
    return tag not in PUNCT_TAGS and not is_punct(word)


class TagWords(list):
    """The distinct words of one POS tag (a ``list``), with ``counts``, how often each was seen with
    the tag: a swap draws a word in proportion to its count, as Tang et al. do."""

    def __init__(self, words: Iterable[str] = (), counts: Iterable[int] = ()):
        super().__init__(words)
        self.counts = list(counts)
        if self.counts and (len(self.counts) != len(self) or min(self.counts) < 1):  # (a word without its count was never drawn)
            raise ValueError(f"TagWords: {len(self)} words need as many counts of at least 1, got {self.counts}")
        self._cum = list(accumulate(self.counts))
        self._at = {w: i for i, w in enumerate(self)}


def build_pos_vocab(
    tagged_texts: Iterable[Sequence[tuple[str, str]]], *, min_count: int = 1
) -> dict[str, list[str]]:
    """POS tag → the distinct words seen with it, by descending count, ties by word (a
    :class:`TagWords`, which keeps the counts the same-POS swap draws by).

    Punctuation tags (jieba's ``x`` and ``w``) and words made only of white space or punctuation are
    left out, and so are ``(word, tag)`` pairs seen fewer than ``min_count`` times. Tags come out
    sorted, so the result is the same whatever order of iteration Python uses.
    """
    if min_count < 1:
        raise ValueError("min_count must be at least 1")
    counts: Counter[tuple[str, str]] = Counter()
    for tagged in tagged_texts:
        counts.update((tag, word) for word, tag in tagged if _swappable(word, tag))
    by_tag: dict[str, list[tuple[str, int]]] = {}
    for (tag, word), count in sorted(counts.items(), key=lambda kv: (kv[0][0], -kv[1], kv[0][1])):
        if count >= min_count:
            by_tag.setdefault(tag, []).append((word, count))
    return {tag: TagWords([w for w, _ in pairs], [c for _, c in pairs]) for tag, pairs in by_tag.items()}


def _check_p(name: str, p: float) -> None:
    # any real number (a numpy float32 too: it was refused as "not between 0 and 1", 0.5 included)
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise KdError(f"{name} must be a probability between 0 and 1, got {p!r}")


def mask_words(
    words: Sequence[str], *, p: float, rng: random.Random, unk: str = UNK
) -> list[str]:
    """Each word becomes ``unk`` with probability ``p``; punctuation and white space never do."""
    _check_p("p", p)
    return [unk if not is_punct(w) and rng.random() < p else w for w in words]


def _other_word(word: str, choices: Sequence[str] | None, rng: random.Random) -> str:
    """A word drawn from ``choices`` other than ``word``, or ``word`` if there is none: in proportion
    to its count for a :class:`TagWords` (:func:`build_pos_vocab`'s), else uniformly."""
    if not choices or (len(choices) == 1 and choices[0] == word):
        return word
    if not (isinstance(choices, TagWords) and choices.counts) and all(c == word for c in choices):
        return word  # (a handmade list naming the word twice: the draw below never ended)
    if isinstance(choices, TagWords) and choices.counts:
        # one draw over the total count without the word's own share, stepped over that share
        at = choices._at.get(word)
        own = choices.counts[at] if at is not None else 0
        before = choices._cum[at] - own if at is not None else 0
        r = rng.random() * (choices._cum[-1] - own)
        if at is not None and r >= before:
            r += own
        return choices[min(bisect.bisect_right(choices._cum, r), len(choices) - 1)]
    while True:  # ends: at least one choice differs from word
        pick = choices[rng.randrange(len(choices))]
        if pick != word:
            return pick


def swap_same_pos(
    tagged: Sequence[tuple[str, str]],
    *,
    p: float,
    rng: random.Random,
    pos_vocab: Mapping[str, Sequence[str]],
) -> list[str]:
    """Each word, with probability ``p``, becomes another word of its tag in ``pos_vocab``.

    The new word is drawn from ``pos_vocab[tag]`` without the word itself, in proportion to its count
    when the vocabulary is :func:`build_pos_vocab`'s (uniformly from a plain list); a word whose tag
    has no other word, and punctuation, stay as they are.
    """
    _check_p("p", p)
    return [
        _other_word(word, pos_vocab.get(tag), rng) if _swappable(word, tag) and rng.random() < p else word
        for word, tag in tagged
    ]


def _ngram_span(length: int, rng: random.Random, n_min: int, n_max: int) -> tuple[int, int]:
    if n_min < 1 or n_max < n_min:
        raise ValueError(f"need 1 <= n_min <= n_max, got n_min={n_min}, n_max={n_max}")
    if length == 0:
        return 0, 0
    hi = min(n_max, length)
    n = rng.randint(min(n_min, hi), hi)
    start = rng.randrange(length - n + 1)
    return start, start + n


def ngram_sample(
    words: Sequence[str], *, rng: random.Random, n_min: int = 1, n_max: int = 5
) -> list[str]:
    """A random span of ``n`` consecutive words, ``n`` uniform in ``[n_min, min(n_max, len(words))]``.

    A text shorter than ``n_min`` words comes back whole.
    """
    start, end = _ngram_span(len(words), rng, n_min, n_max)
    return list(words[start:end])


def _is_ascii_alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def _join(pieces: Sequence[tuple[str, int, bool]]) -> str:
    """Join ``(word, source index, changed)`` pieces with ``""``, but a space between two ASCII
    letters or digits that were not already side by side, unchanged, in the source text."""
    out: list[str] = []
    prev_index, prev_changed = -2, True
    for word, index, changed in pieces:
        if not word:
            continue
        glued = index == prev_index + 1 and not changed and not prev_changed
        if out and not glued and _is_ascii_alnum(out[-1][-1]) and _is_ascii_alnum(word[0]):
            out.append(" ")
        out.append(word)
        prev_index, prev_changed = index, changed
    return "".join(out).strip()


def _check_methods(methods: Iterable[str]) -> frozenset[str]:
    if isinstance(methods, str):
        methods = [methods]
    chosen = frozenset(methods)
    unknown = sorted(chosen - set(METHODS))
    if unknown:
        raise KdError(
            f"unknown augmentation method(s) {', '.join(map(repr, unknown))}: "
            f"choose from {', '.join(map(repr, METHODS))}"
        )
    if not chosen:
        raise KdError(f"no augmentation method given: choose from {', '.join(map(repr, METHODS))}")
    return chosen


def _check_options(methods: Iterable[str], p_mask: float, p_pos: float, p_ngram: float) -> frozenset[str]:
    chosen = _check_methods(methods)
    for method, p in zip(METHODS, (p_mask, p_pos, p_ngram)):
        if method in chosen:  # (a method left out counts as probability 0, whatever its value: `--p-mask` without mask)
            _check_p(f"p_{method}", p)
    if {"mask", "pos"} <= chosen and p_mask + p_pos > 1.0:
        raise KdError(f"p_mask + p_pos must be at most 1, got {p_mask} + {p_pos}")
    return chosen


def _augment_once(
    tagged: Sequence[tuple[str, str]],
    rng: random.Random,
    pos_vocab: Mapping[str, Sequence[str]],
    chosen: frozenset[str],
    p_mask: float,
    p_pos: float,
    p_ngram: float,
    unk: str,
    punct: Sequence[bool] | None = None,
) -> tuple[str, list[str]]:
    """One pass of Tang et al.'s recipe: the new text and the methods that changed something.
    ``punct``: ``is_punct`` of each word, worked out once per text rather than in each of its passes."""
    pm = p_mask if "mask" in chosen else 0.0
    pp = p_pos if "pos" in chosen else 0.0
    if punct is None:
        punct = [is_punct(word) for word, _ in tagged]
    pieces: list[tuple[str, int, bool]] = []
    for index, (word, tag) in enumerate(tagged):
        new = word
        if (pm > 0.0 or pp > 0.0) and not punct[index]:
            x = rng.random()
            if x < pm:
                new = unk
            elif x < pm + pp and tag not in PUNCT_TAGS:
                new = _other_word(word, pos_vocab.get(tag), rng)
        pieces.append((new, index, new != word))
    cut = False
    if "ngram" in chosen and p_ngram > 0.0 and rng.random() < p_ngram:
        # n counts words, not the white space jieba gives between Latin words as pieces of its own (an
        # English "5-gram" was 3 words at most, and a 1-gram a lone space half the time); a text
        # without white space is cut as before
        words = [i for i, (word, _, _) in enumerate(pieces) if not word.isspace()]
        start, end = _ngram_span(len(words), rng, 1, 5)
        cut = (start, end) != (0, len(words))
        if words:
            pieces = pieces[words[start] : words[end - 1] + 1]
    # what the kept words show, not what happened to words the n-gram cut away
    masked = any(changed and word == unk for word, _, changed in pieces)
    swapped = any(changed and word != unk for word, _, changed in pieces)
    labels = [m for m, used in (("mask", masked), ("pos", swapped), ("ngram", cut)) if used]
    return _join(pieces), labels


def augment_text(
    tagged: Sequence[tuple[str, str]],
    *,
    rng: random.Random,
    pos_vocab: Mapping[str, Sequence[str]],
    p_mask: float = 0.1,
    p_pos: float = 0.1,
    p_ngram: float = 0.25,
    methods: Iterable[str] = METHODS,
    unk: str = UNK,
) -> str:
    """Tang et al.'s combined pass over one segmented text (see the module docstring).

    Only the methods named in ``methods`` act (the others count as probability 0). Words are joined
    with ``""``, except that a space separates two ASCII letters or digits that were not side by side
    in the source, so Latin words do not fuse; unchanged neighbours keep the source's spacing.
    """
    chosen = _check_options(methods, p_mask, p_pos, p_ngram)
    text, _ = _augment_once(tagged, rng, pos_vocab, chosen, p_mask, p_pos, p_ngram, unk)
    return text


def _has_content(text: str, unk: str) -> bool:
    """True when something besides ``unk``, white space and punctuation is left."""
    return not is_punct(text.replace(unk, ""))


def augment(
    texts: Sequence[str],
    *,
    n: int,
    seed: int,
    methods: Iterable[str] = METHODS,
    p_mask: float = 0.1,
    p_pos: float = 0.1,
    p_ngram: float = 0.25,
    pos_vocab: Mapping[str, Sequence[str]] | None = None,
    max_tries: int = 20,
    hmm: bool = True,
    unk: str = UNK,
    keys: Sequence[int | str] | None = None,
    tagged: Sequence[Sequence[tuple[str, str]]] | None = None,
) -> list[tuple[int, str, str]]:
    """Up to ``n`` new texts per text: ``(index of the parent in texts, new text, method label)``.

    The label names the methods that changed the text, in the order ``mask+pos+ngram``. A new text
    is never empty, never only white space, punctuation and ``unk``, never the parent and never a
    duplicate of another new text of the same parent (compared after
    :func:`kdstore.textkey.normalize`). Each parent gets at most ``max_tries * n`` passes (Tang et
    al. made 20 per text), so a text that can hardly change yields fewer than ``n``. Each text is
    segmented once; when ``pos_vocab`` is None it is built from ``texts``. The same arguments give
    the same result. Each text's random stream is seeded by ``seed`` and its key (``keys``, default
    its index), so with stable keys (sample ids) and the same ``pos_vocab`` a text gets the same new
    texts whichever other texts are augmented with it. Without ``pos_vocab`` the vocabulary, built
    from ``texts``, changes with them, and a "pos" swap draws from it: every later draw of that text's
    stream (masks included) changes too. ``kdstore.augmented`` passes the vocabulary of every train
    text, so the keys hold there. ``tagged``: the texts' :func:`segment_pos`, where the caller has
    segmented them already (for that vocabulary), so that they are not segmented twice.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise KdError(f"the number of new texts per text must be at least 1, got {n!r}")
    if isinstance(max_tries, bool) or not isinstance(max_tries, numbers.Integral) or max_tries < 1:
        raise KdError(f"max_tries must be at least 1, got {max_tries!r}")
    n, max_tries = int(n), int(max_tries)
    texts = text_list(texts)  # (one str's characters would each be augmented as a text)
    if keys is not None and len(keys) != len(texts):
        raise KdError(f"{len(keys)} keys for {len(texts)} texts: give one key per text")
    chosen = _check_options(methods, p_mask, p_pos, p_ngram)
    active = {"mask": p_mask, "pos": p_pos, "ngram": p_ngram}
    if all(active[m] == 0.0 for m in chosen):
        raise KdError(
            f"nothing would change: the probabilities of {', '.join(m for m in METHODS if m in chosen)} are all 0"
        )
    if tagged is not None and len(tagged) != len(texts):
        raise KdError(f"{len(tagged)} segmented texts for {len(texts)} texts: give one per text")
    tagged_texts = list(segmented(texts, hmm=hmm)) if tagged is None else list(tagged)
    if pos_vocab is None:
        pos_vocab = build_pos_vocab(tagged_texts)
    out: list[tuple[int, str, str]] = []
    from .progress import progress

    # (a bar for long work: many texts, or a large n, whose short texts run their max_tries * n passes)
    with progress(disable=len(texts) * n < 5000) as bar:
        task = bar.add_task(f"augment: {n} new texts each", total=len(texts), unit="texts")
        for index, (text, tagged) in enumerate(zip(texts, tagged_texts)):
            rng = random.Random(f"kd-augment:{seed}:{index if keys is None else keys[index]}")
            seen = {normalize(text)}
            punct = [is_punct(word) for word, _ in tagged]
            made = 0
            for _ in range(max_tries * n):
                new, labels = _augment_once(tagged, rng, pos_vocab, chosen, p_mask, p_pos, p_ngram, unk, punct)
                key = normalize(new)
                if not labels or key in seen or not _has_content(new, unk):
                    continue
                seen.add(key)
                out.append((index, new, "+".join(labels)))
                made += 1
                if made == n:
                    break
            bar.advance(task)
    return out
