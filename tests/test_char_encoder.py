"""The character path of ``kdstore.batching.encode`` gives exactly the ids (and cut flags) of the
tokenizer itself: on kd's own tokenizers over text with every kind of character, on the shared
corpus where it exists; other tokenizers are left to themselves."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from kdstore.batching import _tokenizer_flagged, char_encoder, encode, encode_flagged, tokenizer_encode
from kdstore.char_encoder import CharEncoder, unknown_only
from kdstore.vocab import SPECIALS, build_vocab, make_tokenizer

EDGE = [
    "", " ", "\t\n", "Hello World", "héllo ÀÉÎ", "naïve café", "ΣΑΣ σας", "İstanbul", "ﬁne", "a\x00b", "a\u200bb",
    "a\u0301b", "e\u0301", "[MASK] 好", "[UNK]", "a[b]c", "😀好😀", "a😀", "１２３ＡＢＣ", "2k字", "x" * 150, "好" * 300,
    "中文English混合123", "\u3000全角空格", "©®™", "a-b_c.d", "don't", "ñandú", "ÅNGSTRÖM", "好，很好！", "《书》【荐】",
    "tab\there", "line\r\nbreak", "\x7f\x1b", "zzz未见过的字qqq",
]
POOL = "好很差的了书酒店服务一般，。！？、…“”《》【】()[]-_.:;'\"/ \t\n\u3000abcXYZ0123456789éüñÅΣσ😀©\x00\u200b\u0301１２Ａ"


def random_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(POOL) for _ in range(rng.randint(0, 60))) for _ in range(n)]


@pytest.fixture(scope="module")
def tokenizer():
    # the vocabulary leaves some characters out ("未见过", "q", the emoji), as a real one does
    seen = [t for t in EDGE if "未" not in t] + ["好很差的了书酒店服务一般 abc XYZ 0123456789 ñandú"]
    return make_tokenizer(build_vocab(seen))


def test_kd_tokenizers_take_the_character_path(tokenizer):
    assert isinstance(char_encoder(tokenizer), CharEncoder)
    assert char_encoder(tokenizer) is char_encoder(tokenizer)  # made once per tokenizer


def test_a_vocabulary_of_chinese_characters_only_takes_the_character_path():
    """A store of Chinese texts without a Latin letter or digit (no probe among a-z, 0-9) gave a
    tokenizer the character path refused: `kd pretrain` and every teach and predict with its model
    encoded each text through the tokenizer, several times slower."""
    rng = random.Random(3)
    chars = "好很差的了书酒店服务一般质量物流快慢价格便宜贵"
    texts = ["".join(rng.choice(chars) for _ in range(rng.randint(1, 40))) for _ in range(300)]
    tok = make_tokenizer(build_vocab(texts))
    assert not any(c in tok.get_vocab() for c in "abcdefghijklmnopqrstuvwxyz0123456789")
    assert isinstance(char_encoder(tok), CharEncoder)
    probe = texts + EDGE + random_texts(300, seed=4)  # characters out of its vocabulary too
    for special_tokens in (True, False):
        ids, cut = encode_flagged(tok, probe, max_len=16, special_tokens=special_tokens)
        assert (ids, cut) == _tokenizer_flagged(tok, probe, 16, special_tokens)


@pytest.mark.parametrize("special_tokens", [True, False])
@pytest.mark.parametrize("max_len", [3, 16, 128])
def test_same_ids_and_cut_flags_as_the_tokenizer(tokenizer, special_tokens, max_len):
    texts = EDGE + random_texts(1500)
    assert encode(tokenizer, texts, max_len=max_len, special_tokens=special_tokens) == \
        tokenizer_encode(tokenizer, texts, max_len=max_len, special_tokens=special_tokens)
    ids, cut = encode_flagged(tokenizer, texts, max_len=max_len, special_tokens=special_tokens)  # the batch path
    ref_ids, ref_cut = _tokenizer_flagged(tokenizer, texts, max_len, special_tokens)
    assert ids == ref_ids and cut == ref_cut
    # one text at a time: the per-character loop
    one = [encode_flagged(tokenizer, [t], max_len=max_len, special_tokens=special_tokens) for t in texts[:400]]
    assert [x[0][0] for x in one] == ref_ids[:400] and [x[1][0] for x in one] == ref_cut[:400]
    if max_len == 16:
        assert any(cut) and not all(cut)


def test_a_very_long_text_is_tokenized_from_a_prefix_with_the_same_result(tokenizer):
    """A megabyte line the character path cannot take (a combining mark) reaches the tokenizer as
    a prefix: the same ids and cut flag as the whole text, without the tokenizer keeping every
    cut-off piece; a text whose first tokens are not settled by half the prefix goes whole."""
    from kdstore.char_encoder import bounded

    calls = []

    def fallback(texts):
        calls.append(max(map(len, texts)))
        return _tokenizer_flagged(tokenizer, texts, 16, True)

    texts = ["好书 é " * 200_000, "é" + "x" * 5000 + " 好", "短 é", "x" * 9000]
    got = bounded(fallback, texts, max_len=16)
    assert got == _tokenizer_flagged(tokenizer, texts, 16, True)
    assert got[1] == [True, False, False, False]  # the 5,000-letter word is one [UNK]: not cut
    assert max(calls[:2]) == 4096 and len(calls) == 3  # prefixes, then the two whose prefixes did not settle
    assert calls[2] == 9000


def test_texts_it_cannot_decide_alone_go_to_the_tokenizer(tokenizer):
    enc = char_encoder(tokenizer)
    ids, _ = enc.encode_flagged(["[MASK] 好", "e\u0301", "ΣΑΣ", "好书", "abc dqe"], max_len=32)
    assert ids[:3] == [None, None, None]  # a special token's first character, a combining mark, capital sigma
    assert ids[3] is not None and ids[4] is not None
    # the word "abc" is its first letter then ## continuations; an unknown character in a word makes it one [UNK]
    vocab = tokenizer.get_vocab()
    assert "q" not in vocab and ids[4][1:-1] == [vocab["a"], vocab["##b"], vocab["##c"], vocab["[UNK]"]]


def test_other_tokenizers_are_left_to_themselves(tmp_path):
    from transformers import BertTokenizerFast

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "好", "书", "ab", "##c", "a", "##b"]
    wordpiece = BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)}, do_lower_case=True)
    assert char_encoder(wordpiece) is None  # "ab" is a token of two characters: WordPiece has a choice to make
    assert encode(wordpiece, ["abc 好书"], max_len=16) == tokenizer_encode(wordpiece, ["abc 好书"], max_len=16)


def test_a_very_long_text_of_another_tokenizer_reaches_it_as_a_prefix(monkeypatch):
    """``encode`` (teacher scoring, distill, student scoring) of a megabyte line with a tokenizer
    not of the character path (a real WordPiece vocabulary): the tokenizer sees a prefix, same ids
    (it was handed the whole line and kept every cut-off piece: seconds and a gigabyte a line)."""
    from transformers import BertTokenizerFast

    from kdstore import batching

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "好", "书", "很好", "##很好", "##书"]
    wordpiece = BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)}, do_lower_case=True)
    texts = ["很好的书 " * 50_000, "好书"]
    seen = []
    real = batching._call
    monkeypatch.setattr(batching, "_call", lambda tok, t, *a: seen.append(max(map(len, t))) or real(tok, t, *a))
    got = encode(wordpiece, texts, max_len=16)
    assert max(seen) <= 4096
    monkeypatch.setattr(batching, "_call", real)
    assert got == tokenizer_encode(wordpiece, texts, max_len=16) and encode(wordpiece, [], max_len=16) == []


def test_the_shared_corpus_encodes_identically():
    root = Path(os.environ.get("KD_SHARED") or Path(__file__).resolve().parents[2] / "shared") / "data" / "reviews"
    if not (root / "train.tsv").exists():
        pytest.skip(f"no shared benchmark data under {root}")
    texts = []
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        texts += [line.split("\t", 1)[-1] for line in (root / name).read_text(encoding="utf-8").splitlines()]
    corpus = root / "corpus-peoples-daily-1998.txt"
    if corpus.exists():
        texts += corpus.read_text(encoding="utf-8").splitlines()
    tokenizer = make_tokenizer(build_vocab(texts[: len(texts) // 2]))  # the other half has characters it lacks
    assert char_encoder(tokenizer) is not None
    assert encode(tokenizer, texts, max_len=128) == tokenizer_encode(tokenizer, texts, max_len=128)


def test_threads_sharing_a_fresh_encoder_get_the_tokenizers_ids():
    from concurrent.futures import ThreadPoolExecutor

    tokenizer = make_tokenizer(build_vocab(random_texts(300, seed=1)))
    texts = random_texts(3000, seed=2)  # many characters the tables have not seen yet, in every thread
    ref = tokenizer_encode(tokenizer, texts, max_len=64)
    parts = [texts[i::4] for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda part: encode(tokenizer, part, max_len=64), parts))
    for i, part in enumerate(got):
        assert part == ref[i::4]


def test_a_tokenizer_changed_or_set_otherwise_is_left_to_itself():
    tokenizer = make_tokenizer(build_vocab(["hello world abc 好书"]))
    texts = ["HELLO world", "hello world", "a<e>b", "abc defgh 好书"] * 800  # past the batch-path threshold
    assert char_encoder(tokenizer) is not None
    tokenizer.add_tokens(["hello"])  # an added word, matched after lowercasing: no character path any more
    assert char_encoder(tokenizer) is None
    assert encode(tokenizer, texts, max_len=16) == tokenizer_encode(tokenizer, texts, max_len=16)
    special = make_tokenizer(build_vocab(["hello world abc"]))
    encode(special, texts, max_len=16)
    special.add_special_tokens({"additional_special_tokens": ["<e>"]})  # after first use: the cache notices
    assert encode(special, texts, max_len=16) == tokenizer_encode(special, texts, max_len=16)
    left = make_tokenizer(build_vocab(["hello world abc"]))
    left.truncation_side = "left"
    assert char_encoder(left) is None
    assert encode(left, texts, max_len=4) == tokenizer_encode(left, texts, max_len=4)
    plain = make_tokenizer(build_vocab(["hello world abc"]))  # no room for the text, or even the special tokens
    for max_len in (1, 2):
        assert encode_flagged(plain, texts[:4], max_len=max_len) == _tokenizer_flagged(plain, texts[:4], max_len, True)


def test_packed_ids_hold_exactly_the_encoded_rows(tokenizer):
    """``encode_packed`` (chunked, one flat int32 array) gives ``encode``'s ids row for row, and
    batches padded from it equal batches padded from the lists."""
    import numpy as np
    import torch

    from kdstore.batching import PackedIds, encode_packed, lengths_of, pad

    texts = random_texts(50, seed=3) + ["", "好"]
    lists = encode(tokenizer, texts, max_len=16)
    packed = encode_packed(tokenizer, texts, max_len=16, chunk=7)  # chunks of 7: the last one short
    assert len(packed) == len(lists) and packed.flat.dtype == np.int32
    assert [row.tolist() for row in packed] == lists and packed[-1].tolist() == lists[-1]
    assert lengths_of(packed).tolist() == lengths_of(lists).tolist() == [len(r) for r in lists]
    rows = [0, 5, 50, 51, 17]
    for a, b in zip(pad([packed[i] for i in rows], 0, multiple=8), pad([lists[i] for i in rows], 0, multiple=8)):
        assert a.dtype == torch.long and torch.equal(a, b)
    with pytest.raises(ValueError):
        packed.flat[0] = 1  # views of one shared array: read-only
    for outside in (len(lists), -len(lists) - 1):
        with pytest.raises(IndexError):
            packed[outside]
    empty = encode_packed(tokenizer, [], max_len=16)
    assert len(empty) == 0 and PackedIds.concat([]).lengths.tolist() == []


def test_the_vocabulary_spells_symbols_emoji_and_accented_words():
    """Symbols inside a word (℃, ～, ￥, emoji: BERT's pre-tokenizer does not split them off) need a
    ## form, and characters are counted as the normalizer leaves them (é becomes e): otherwise the
    whole word became [UNK]."""
    texts = ["今天30℃", "100￥", "1＋1", "A±B", "好～～", "哈哈😂😂", "Pokémon 很好玩"] * 2
    tokens = build_vocab(texts, min_count=2)
    tok = make_tokenizer(tokens)
    assert all(tok.unk_token not in tok.tokenize(t) for t in texts)
    assert tok.tokenize("今天30℃") == ["今", "天", "3", "##0", "##℃"] and tok.tokenize("哈哈😂😂") == ["哈", "哈", "😂", "##😂"]
    assert "é" not in tokens and "##é" not in tokens and "##e" in tokens
    # at the size cap a character gets both forms or none (a lone "x" would [UNK] every word with x inside)
    capped = build_vocab(["ab ab", "c"], max_size=len(SPECIALS) + 3)
    assert capped[len(SPECIALS):] == ["a", "##a"]  # b and c would need two slots, one is left


def test_the_vocabulary_stands_alone_exactly_the_characters_the_normalizer_pads():
    """CJK extension E (U+2B820-U+2B91F) is no Chinese character to the tokenizer's normalizer: it
    joins words, so it needs its ## form too (the vocabulary's own CJK ranges gave it none, and
    "好𫠠𫠠" became 好 [UNK])."""
    rare = "\U0002b820"
    texts = ["好" + rare + rare, "ab" + rare, "好书"]
    tok = make_tokenizer(build_vocab(texts))
    assert all(tok.unk_token not in tok.tokenize(t) for t in texts)
    assert tok.tokenize(texts[0]) == ["好", rare, "##" + rare]
    assert "##好" not in tok.get_vocab() and "##书" not in tok.get_vocab()  # padded: alone, as before


def test_unknown_only_marks_rows_whose_every_text_token_is_unknown():
    cls, sep, unk, pad = 2, 3, 1, 0
    rows = [[cls, unk, unk, sep], [cls, unk, 7, sep], [cls, sep], [unk], [cls, 7, sep], (cls, unk, pad)]
    # ([cls, sep]: a text the tokenizer dropped whole, combining marks alone, answered for nothing: one too)
    assert unknown_only(rows, unk, [pad, unk, cls, sep]) == [True, False, True, True, False, True]
    assert unknown_only(rows, None, [pad, cls, sep]) == [False] * 6  # (a byte-level BPE has no unknown token)
    assert unknown_only([[unk, cls]], unk) == [False]  # (no special ids given: cls reads as a text token)
    assert unknown_only([], unk, [cls]) == []
    # a row cut to its special tokens alone (a --max-len 2 student) read text the vocabulary holds, cut away: not one
    assert unknown_only([[cls, sep], [cls, sep], [cls, unk]], unk, [pad, unk, cls, sep], cut=[True, False, True]) == [False, True, True]


def test_word_marker_ids_names_sentencepieces_bare_marker_as_no_text():
    """An XLM-R reads "😀" as ``▁ <unk>``: the bare marker holds no text, so the row is all unknown."""
    from kdstore.char_encoder import word_marker_ids

    vocab = {"<unk>": 3, "\u2581": 6, "好": 9}
    lookup = lambda unk: (lambda token: vocab.get(token, unk))  # noqa: E731 (a tokenizer gives its unknown id, or None)
    assert word_marker_ids(lookup(3), 3) == [6]
    assert unknown_only([[0, 6, 3, 2], [0, 6, 9, 2]], 3, [0, 2, *word_marker_ids(lookup(3), 3)]) == [True, False]
    del vocab["\u2581"]
    assert word_marker_ids(lookup(3), 3) == [] and word_marker_ids(lookup(None), 3) == []  # (a BERT vocabulary: none)
