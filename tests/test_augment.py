"""Data augmentation (Tang et al. 2019 / ERNIE-Tiny): pure functions on real jieba output, no mocks."""

from __future__ import annotations

import functools
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kdstore.augment import (
    METHODS,
    augment,
    augment_text,
    build_pos_vocab,
    is_punct,
    mask_words,
    ngram_sample,
    segment_pos,
    swap_same_pos,
)
from kdstore.errors import KdError
from kdstore.textkey import normalize

ROOT = Path(__file__).resolve().parents[1]

# review sentences from examples/reviews/train.tsv
TEXTS = [
    "2，房间通风不好，气味有点大",
    "1.外观很沉稳，干练。acer 的本外观不错",
    "房间超大，不是一般的大。哈哈哈哈哈哈哈哈哈哈",
    "没加内存。VISTA慢些",
    "这种酒店千万别去。",
    "酒店很干净，服务不错，所以决定今晚再次来入住。",
    "方便，速度也还可以，一般的办公可以了。",
    "自带的摄像头省了外接的麻烦，机器能够应付一般的应用，磨砂的手感很好，机器很轻，比我之前的Dell D430用起来感觉好很多。",
    "本本比我想象的要好，装的是win7，没有遇到暴风影音黑屏的现象。运行速度很快，散热也不错。",
]


@pytest.fixture(scope="module")
def tagged():
    return [segment_pos(t) for t in TEXTS]


@pytest.fixture(scope="module")
def vocab(tagged):
    return build_pos_vocab(tagged)


def by_parent(out):
    groups: dict[int, list[str]] = {}
    for index, text, _ in out:
        groups.setdefault(index, []).append(text)
    return groups


# segmenting and the POS vocabulary -------------------------------------------------------------


def test_segment_pos_gives_back_the_text(tagged):
    for text, pairs in zip(TEXTS, tagged):
        assert "".join(w for w, _ in pairs) == text
        assert all(isinstance(tag, str) and tag for _, tag in pairs)
    assert ("acer", "eng") in tagged[1]


def test_pos_vocab_excludes_punctuation_and_is_sorted_by_count(tagged, vocab):
    assert "x" not in vocab and "w" not in vocab
    words = [w for ws in vocab.values() for w in ws]
    assert words and not any(is_punct(w) for w in words)
    assert not {"，", "。", " ", "、"} & set(words)
    seen = {(w, t) for pairs in tagged for w, t in pairs}
    for tag, ws in vocab.items():
        assert len(ws) == len(set(ws))
        assert all((w, tag) in seen for w in ws)
    # 的 is by far the most frequent particle: first of its tag
    assert vocab["uj"][0] == "的"
    assert list(vocab) == sorted(vocab)


def test_pos_vocab_min_count_and_handmade_input():
    pairs = [[("好", "a"), ("，", "x"), ("大", "a"), ("好", "a"), ("  ", "a"), ("!!", "a")]]
    assert build_pos_vocab(pairs) == {"a": ["好", "大"]}
    assert build_pos_vocab(pairs, min_count=2) == {"a": ["好"]}
    with pytest.raises(ValueError):
        build_pos_vocab(pairs, min_count=0)


# the three operations --------------------------------------------------------------------------


def test_mask_words_masks_words_but_not_punctuation():
    words = ["房间", "，", "超大", " ", "acer"]
    rng = random.Random(0)
    assert mask_words(words, p=0.0, rng=rng) == words
    assert mask_words(words, p=1.0, rng=rng) == ["[UNK]", "，", "[UNK]", " ", "[UNK]"]
    assert mask_words(words, p=1.0, rng=rng, unk="<unk>")[0] == "<unk>"


def test_swap_same_pos_only_uses_words_of_the_same_tag(tagged, vocab):
    seen = {(w, t) for pairs in (segment_pos(t) for t in TEXTS) for w, t in pairs}  # re-tagged
    rng = random.Random(3)
    swaps = 0
    for pairs in tagged:
        out = swap_same_pos(pairs, p=1.0, rng=rng, pos_vocab=vocab)
        assert len(out) == len(pairs)
        for new, (old, tag) in zip(out, pairs):
            if tag in ("x", "w") or is_punct(old):
                assert new == old
            elif new != old:
                swaps += 1
                assert (new, tag) in seen, (old, tag, new)
            else:  # unchanged only when the tag has no other word
                assert [w for w in vocab.get(tag, []) if w != old] == []
    assert swaps > 20


def test_ngram_sample_is_a_contiguous_span():
    words = list("一二三四五六七八九十")
    rng = random.Random(1)
    lengths = set()
    for _ in range(300):
        span = ngram_sample(words, rng=rng)
        lengths.add(len(span))
        start = words.index(span[0])
        assert words[start : start + len(span)] == span
    assert lengths == {1, 2, 3, 4, 5}
    assert {len(ngram_sample(words, rng=rng, n_min=2, n_max=3)) for _ in range(100)} == {2, 3}
    assert ngram_sample(["好"], rng=rng, n_min=2) == ["好"]
    assert ngram_sample([], rng=rng) == []
    with pytest.raises(ValueError):
        ngram_sample(words, rng=rng, n_min=3, n_max=2)


# augment_text ----------------------------------------------------------------------------------


def test_augment_text_unchanged_keeps_the_source_spacing():
    text = "装的是win7 i5，2.5GHz的Dell D430"
    pairs = segment_pos(text)
    same = augment_text(pairs, rng=random.Random(0), pos_vocab={}, p_mask=0, p_pos=0, p_ngram=0)
    assert same == text


def test_latin_words_stay_separated():
    pairs = [("我", "r"), ("用", "v"), ("Intel", "eng"), ("CPU", "eng"), ("和", "c"), ("SSD", "eng")]
    vocab = {"eng": ["Intel", "AMD"]}
    out = augment_text(pairs, rng=random.Random(0), pos_vocab=vocab, p_mask=0, p_pos=1, p_ngram=0)
    # Intel → AMD; CPU and SSD → Intel or AMD: never fused with a Latin neighbour
    assert re.fullmatch(r"我用AMD (Intel|AMD)和(Intel|AMD)", out), out
    masked = augment_text(pairs, rng=random.Random(0), pos_vocab=vocab, p_mask=1, p_pos=0, p_ngram=0)
    assert masked == "[UNK]" * 6
    # real jieba output: every run of Latin letters/digits in the output is a whole source or vocab word
    text = "比我之前的Dell D430用起来好，2.5GHz的i5 CPU。It's not as interesting as I expected."
    pairs = segment_pos(text)
    vocab = {"eng": ["Intel", "AMD", "GPU"], "m": ["3", "4"]}
    allowed = {run for w, _ in pairs for run in re.findall(r"[A-Za-z0-9]+", w)}
    allowed |= {"Intel", "AMD", "GPU", "3", "4", "UNK"}
    for seed in range(30):
        new = augment_text(pairs, rng=random.Random(seed), pos_vocab=vocab, p_mask=0.3, p_pos=0.5, p_ngram=0.3)
        assert set(re.findall(r"[A-Za-z0-9]+", new)) <= allowed, new


def test_augment_text_validates_options(vocab, tagged):
    rng = random.Random(0)
    with pytest.raises(KdError, match="p_pos must be a probability between 0 and 1"):
        augment_text(tagged[0], rng=rng, pos_vocab=vocab, p_pos=1.5)
    with pytest.raises(KdError, match="'shuffle'.*choose from 'mask', 'pos', 'ngram'"):
        augment_text(tagged[0], rng=rng, pos_vocab=vocab, methods=("mask", "shuffle"))


# augment ---------------------------------------------------------------------------------------


def test_augment_is_deterministic_under_a_seed():
    first = augment(TEXTS, n=4, seed=7)
    assert first == augment(TEXTS, n=4, seed=7)
    assert first != augment(TEXTS, n=4, seed=8)
    # a set of methods in any order, or a prebuilt vocabulary, gives the same result
    vocab = build_pos_vocab(segment_pos(t) for t in TEXTS)
    assert augment(TEXTS, n=4, seed=7, methods={"ngram", "pos", "mask"}, pos_vocab=vocab) == first
    # keyed by stable ids, a text gets the same new texts whichever other texts come with it
    part = augment(TEXTS[3:5], n=4, seed=7, pos_vocab=vocab, keys=[3, 4])
    assert [(i + 3, t, m) for i, t, m in part] == [row for row in first if row[0] in (3, 4)]
    with pytest.raises(KdError, match="one key per text"):
        augment(TEXTS, n=1, seed=7, keys=[1])


def test_augment_does_not_depend_on_the_hash_seed():
    code = (
        "import json, sys; from kdstore.augment import augment; "
        "print(json.dumps(augment(json.loads(sys.argv[1]), n=3, seed=5)))"
    )
    texts = TEXTS[:5]
    expected = [list(row) for row in augment(texts, n=3, seed=5)]
    env = dict(os.environ, PYTHONHASHSEED="12345")
    run = subprocess.run(
        [sys.executable, "-c", code, json.dumps(texts)], cwd=ROOT, env=env,
        capture_output=True, text=True, check=True,
    )
    assert json.loads(run.stdout) == expected


def test_augment_outputs_are_new_non_empty_and_distinct():
    out = augment(TEXTS, n=4, seed=0)
    assert {i for i, _, _ in out} == set(range(len(TEXTS)))
    for index, texts in by_parent(out).items():
        assert len(texts) <= 4
        keys = [normalize(t) for t in texts]
        assert len(set(keys)) == len(keys)
        assert normalize(TEXTS[index]) not in keys
    for index, text, label in out:
        assert text.strip() and text == text.strip()
        assert not is_punct(text.replace("[UNK]", ""))
        assert label and set(label.split("+")) <= set(METHODS)
        assert label.split("+") == [m for m in METHODS if m in label.split("+")]
    assert sum(1 for _, _, label in out if "+" in label) > 0


def test_mask_only_differs_from_the_parent_by_unk_replacements(tagged):
    out = augment(TEXTS, n=4, seed=1, methods=["mask"], p_mask=0.3)
    assert len(out) == 4 * len(TEXTS)
    for index, text, label in out:
        assert label == "mask" and "[UNK]" in text
        assert aligns_with_masks([w for w, _ in tagged[index]], text), (TEXTS[index], text)


def aligns_with_masks(words, text, unk="[UNK]"):
    """True when ``text`` is ``words`` joined, some non-punctuation words replaced by ``unk``."""

    @functools.lru_cache(maxsize=None)
    def walk(i, j):
        if i == len(words):
            return j == len(text)
        if text.startswith(words[i], j) and walk(i + 1, j + len(words[i])):
            return True
        return not is_punct(words[i]) and text.startswith(unk, j) and walk(i + 1, j + len(unk))

    return walk(0, 0)


def test_emoji_sequences_and_combining_marks_are_never_cut_apart():
    """jieba cuts ❤️ into ❤ and U+FE0F, é (e + U+0301) into e and the mark, 👨‍👩‍👧 at its joiners,
    👍🏻 and 🇨🇳 in two: the mask made '❤[UNK]' and '[UNK]\u0301', the n-gram kept a lone U+FE0F,
    a lone accent or '\u200d👧' as new texts."""
    family, thumb, flag = "👨\u200d👩\u200d👧", "👍🏻", "🇨🇳"
    texts = ["质量很好❤\ufe0f", f"家人 {family} 都喜欢", f"点赞{thumb}{thumb}", "cafe\u0301很好喝", f"{flag}{flag}加油"]
    assert [w for w, _ in segment_pos(texts[1])][:3] == ["家人", " ", family]
    assert [w for w, _ in segment_pos(texts[4])][:2] == [flag, flag]
    assert ("cafe\u0301", "eng") in segment_pos(texts[3])
    whole = ("❤\ufe0f", family, thumb, flag, "cafe\u0301")
    out = augment(texts, n=20, seed=1, p_mask=0.5, p_ngram=0.5, methods=("mask", "ngram"))
    assert len(out) > 20
    for _, text, _ in out:
        assert not is_punct(text.replace("[UNK]", ""))  # not a lone mark or joiner
        for bad in ("\ufe0f", "\u0301", "\u200d", "🏻", "\U0001f1f3"):
            # a mark, joiner, skin tone or second half of a flag only inside the sequence it belongs to
            assert text.count(bad) == sum(text.count(w) * w.count(bad) for w in whole), (text, bad)



def test_a_latin_or_full_width_word_jieba_cuts_into_letters_is_masked_and_swapped_whole():
    """jieba keeps [a-zA-Z0-9] runs whole but cut Pokémon into Pok + é + mon, and ｉＰｈｏｎｅ or
    Москва letter by letter: the mask made 'Pok[UNK]mon' and 'ｉ[UNK]ｈｏ[UNK]ｅ', a swap 'Pythoné'.
    Two ASCII pieces stay as jieba cut them."""
    assert [w for w, _ in segment_pos("Pokémon好玩")] == ["Pokémon", "好玩"]
    assert segment_pos("ｉＰｈｏｎｅ很好")[0] == ("ｉＰｈｏｎｅ", "x")
    assert segment_pos("Москва很大")[0][0] == "Москва"
    assert ("naïve", "eng") in segment_pos("naïve的想法") and ("écolier", "eng") in segment_pos("écolier很好")
    assert segment_pos("3.5GHz很快")[:2] == [("3.5", "m"), ("GHz", "eng")]
    assert [w for w, _ in segment_pos("第１名")] == ["第", "１", "名"]  # (no ideograph joins a full-width digit)
    masked = augment(["Pokémon好玩", "ｉＰｈｏｎｅ很好"], n=10, seed=0, methods=("mask",), p_mask=0.5)
    assert {t for i, t, _ in masked if i == 0} == {"[UNK]好玩", "Pokémon[UNK]"}
    for _, text, _ in masked:
        assert "ｉＰｈｏｎｅ" in text or not any(ch in text for ch in "ｉＰｈｏｎｅ"), text
    swapped = augment(["Pokémon好玩", "Python好玩"], n=4, seed=0, methods=("pos",), p_pos=1.0)
    assert {t for i, t, _ in swapped if i == 0} == {"Python好玩"}


def test_a_handmade_vocabulary_naming_the_word_twice_ends_and_numpy_probabilities_are_probabilities():
    """A plain list with the word alone, twice, drew forever for another word; a numpy float32 0.5
    was refused as "must be a probability between 0 and 1"."""
    import threading

    import numpy as np

    got: list = []
    worker = threading.Thread(
        target=lambda: got.append(swap_same_pos([("猫", "n")], p=1.0, rng=random.Random(0), pos_vocab={"n": ["猫", "猫"]})),
        daemon=True,
    )
    worker.start()
    worker.join(10)
    assert got == [["猫"]]
    assert mask_words(["酒店", "干净"], p=np.float32(1.0), rng=random.Random(0)) == ["[UNK]", "[UNK]"]
    assert augment(TEXTS[:2], n=2, seed=0, p_mask=np.float32(0.5)) == augment(TEXTS[:2], n=2, seed=0, p_mask=0.5)
    with pytest.raises(KdError, match="between 0 and 1"):
        mask_words(["酒店"], p=np.float32(1.5), rng=random.Random(0))

def test_ngram_only_gives_substrings_of_the_parent():
    out = augment(TEXTS, n=4, seed=2, methods=("ngram",), p_ngram=1.0)
    assert out
    for index, text, label in out:
        assert label == "ngram"
        assert text in TEXTS[index] and text != TEXTS[index]


def test_an_ngram_counts_words_not_the_spaces_between_latin_words():
    """jieba gives the space between two English words as a piece of its own, and the n-gram counted
    it as a word: an English "5-gram" was 3 words at most, and a 1-gram a lone space half the time.
    A text without spaces is cut as before (the same draws, the same span)."""
    text = "The battery life is great but the screen is really very dim today"
    pairs = segment_pos(text)
    lengths = set()
    for seed in range(300):
        new = augment_text(pairs, rng=random.Random(seed), pos_vocab={}, methods=("ngram",), p_ngram=1.0)
        assert new and new in text and new == new.strip(), new
        lengths.add(len(new.split()))
    assert lengths == {1, 2, 3, 4, 5}
    chinese = segment_pos(TEXTS[5])
    assert not any(w.isspace() for w, _ in chinese)
    for seed in range(50):
        twin = random.Random(seed)
        twin.random()  # (the draw of p_ngram)
        span = "".join(ngram_sample([w for w, _ in chinese], rng=twin))
        assert augment_text(chinese, rng=random.Random(seed), pos_vocab={}, methods=("ngram",), p_ngram=1.0) == span


def test_one_pass_follows_tang_et_al_rates():
    """Tang et al. 2019, 3.3: per word one draw X ~ U[0, 1]: X < p_mask masks, p_mask <= X < p_mask +
    p_pos swaps for a same-tag word (never both); then, with probability p_ng, an n-gram, n uniform in
    1..5. Ten one-character words, swaps from a disjoint set, so each output aligns with its source."""
    from collections import Counter

    source = "甲乙丙丁戊己庚辛壬癸"
    pairs = [(w, "n") for w in source]
    vocab = build_pos_vocab([[(w, "n")] for w in "子丑寅卯"])
    rng = random.Random(0)
    masked = swapped = 0
    passes = 2000
    for _ in range(passes):
        out = augment_text(pairs, rng=rng, pos_vocab=vocab, p_mask=0.1, p_pos=0.2, p_ngram=0.0).replace("[UNK]", "?")
        assert len(out) == len(source)
        for old, new in zip(source, out):
            masked += new == "?"
            swapped += new in "子丑寅卯"
            assert new in (old, "?") or new in "子丑寅卯"
    words = passes * len(source)
    assert abs(masked / words - 0.1) < 0.01 and abs(swapped / words - 0.2) < 0.015
    cut, lengths = 0, Counter()
    for _ in range(passes):
        out = augment_text(pairs, rng=rng, pos_vocab=vocab, methods=("ngram",), p_ngram=0.25)
        assert out in source
        if out != source:
            cut += 1
            lengths[len(out)] += 1
    assert abs(cut / passes - 0.25) < 0.03 and set(lengths) == {1, 2, 3, 4, 5}
    assert min(lengths.values()) > 0.6 * cut / 5


def test_pos_only_labels_and_lengths():
    out = augment(TEXTS, n=2, seed=3, methods=("pos",), p_pos=0.5)
    assert out and {label for _, _, label in out} == {"pos"}
    assert all("[UNK]" not in text for _, text, _ in out)


def test_a_text_that_cannot_change_yields_fewer_variants():
    assert augment(["好"], n=3, seed=0, methods=("mask",), p_mask=1.0) == []  # "[UNK]" alone is no text
    assert augment(["，。"], n=3, seed=0) == []
    assert augment([""], n=3, seed=0) == []
    out = augment(["酒店很干净"], n=50, seed=0, methods=("ngram",), p_ngram=1.0, max_tries=5)
    assert 0 < len(out) < 50


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n": 0}, "at least 1, got 0"),
        ({"p_mask": -0.1}, "p_mask must be a probability between 0 and 1, got -0.1"),
        ({"p_pos": 2}, "p_pos must be a probability between 0 and 1, got 2"),
        ({"p_ngram": 1.01}, "p_ngram must be a probability between 0 and 1"),
        ({"p_mask": 0.6, "p_pos": 0.6}, "p_mask \\+ p_pos must be at most 1"),
        ({"methods": ("mask",), "p_mask": 0}, "nothing would change"),
        ({"methods": ()}, "no augmentation method given"),
        ({"max_tries": 0}, "max_tries must be at least 1"),
    ],
)
def test_augment_validates_options(kwargs, message):
    args = {"n": 2, "seed": 0, **kwargs}
    with pytest.raises(KdError, match=message):
        augment(TEXTS[:1], **args)


def test_augment_takes_a_list_of_str_and_numpy_counts():
    with pytest.raises(KdError, match="not one str"):  # each character was augmented as a text
        augment("酒店很干净，服务也好", n=1, seed=0)
    with pytest.raises(KdError, match=r"texts\[1\] is NoneType, not a str"):  # was jieba's AttributeError
        augment(["酒店很干净", None], n=1, seed=0)
    import numpy as np

    # a count read from an array is a count ("at least 1, got np.int64(2)" before)
    assert augment(TEXTS[:1], n=np.int64(2), seed=0) == augment(TEXTS[:1], n=2, seed=0)


def test_unknown_method_lists_the_allowed_ones():
    with pytest.raises(KdError) as err:
        augment(TEXTS[:1], n=1, seed=0, methods=("mask", "synonym"))
    assert str(err.value) == "unknown augmentation method(s) 'synonym': choose from 'mask', 'pos', 'ngram'"
    with pytest.raises(KdError, match="choose from"):
        augment(TEXTS[:1], n=1, seed=0, methods="masks")


@pytest.mark.parametrize(
    "options, message",
    [
        (["--augment", "mask", "--p-mask", "1.5"], "--p-mask must be a probability between 0 and 1, got 1.5"),
        (["--augment", "mask,pos", "--p-mask", "0.6", "--p-pos", "0.6"], "--p-mask + --p-pos must be at most 1"),
        (["--augment", "mask,ngram", "--p-mask", "0", "--p-ngram", "0"], "--augment mask,ngram would change nothing: --p-mask, --p-ngram all 0"),
        (["--augment", "ngram", "--p-ngram", "0"], "--augment ngram would change nothing: --p-ngram is 0"),  # (not: "--p-ngram all 0")
        (["--augment", " , "], "Invalid value for --augment: ' , ': give methods like mask,pos,ngram"),  # (not: no augmentation)
        (["--augment", ""], "Invalid value for --augment: '': give methods like mask,pos,ngram"),  # (`--augment "$AUG"`, AUG unset)
        # (10**20 ran its max_tries * n passes a parent for ever, at full CPU, storing nothing)
        (["--augment", "mask", "--augment-n", str(10**20)], "--augment-n must be at most 1000"),
        # (the augmented texts learn from the teacher alone, which --alpha 0 with --hard-weight weighs 0: they were made,
        # stored and scored, then taught nothing, said only once the student had trained)
        (["--augment", "ngram", "--alpha", "0", "--hard-weight", "1"], "--augment with --alpha 0 and --hard-weight: the augmented texts"),
    ],
)
def test_distill_refuses_bad_augmentation_probabilities_before_starting_a_stage(tmp_path, options, message):
    """Checked with the other options: no store is opened and no failed stage is left behind (they
    were found only when the texts were made, after the stage had started)."""
    from synthetic import kd

    db = tmp_path / "kd.db"
    out = kd("distill", "--run", "r", *options, "--db", str(db), ok=False)
    assert f"Error: {message}" in out.output and "Traceback" not in out.output
    assert not db.exists()


def test_distill_without_jieba_is_refused_before_a_stage(tmp_path, monkeypatch):
    """Every recipe segments with jieba: without it `kd distill --augment` recorded a stage, warned about
    the teacher, then failed it with "needs jieba"; it is one line before the store is opened."""
    from synthetic import kd

    from kdstore import augment as augment_module

    augment_module.posseg.cache_clear()
    monkeypatch.setitem(sys.modules, "jieba", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "jieba.posseg", None)
    db = tmp_path / "kd.db"
    out = kd("distill", "--run", "r", "--augment", "ngram", "--db", str(db), ok=False)
    augment_module.posseg.cache_clear()
    assert out.output.strip().splitlines()[-1] == "Error: data augmentation needs jieba: pip install jieba", out.output
    assert "Traceback" not in out.output and not db.exists()


def test_a_probability_of_a_method_left_out_is_not_judged(tmp_path):
    """`--augment ngram --p-mask 1.5` warned that --p-mask is not used, as the README says (its value
    not judged), then refused it as no probability: the recipe names it "-" and never draws by it."""
    from synthetic import kd

    db = tmp_path / "kd.db"
    out = kd("distill", "--run", "r", "--augment", "ngram", "--p-mask", "1.5", "--p-pos", "-2", "--db", str(db), ok=False)
    assert "--p-mask, --p-pos: not used by --augment ngram" in out.output
    assert "Error: no kd store at" in out.output and "must be a probability" not in out.output, out.output
    assert augment(TEXTS[:2], n=1, seed=0, methods=("ngram",), p_mask=1.5, p_pos=-2, p_ngram=1.0)


def test_mask_is_refused_for_a_teacher_whose_tokenizer_has_no_unknown_token(tmp_path):
    """A byte-level BPE tokenizer (Qwen2's, say) has no unknown token: `--augment mask` wrote the
    literal `[UNK]`, which teacher and student read as five plain characters, and said nothing. It
    is refused before a stage is recorded, alone or beside a teacher that has one; pos and ngram
    still run."""
    from synthetic import kd, save_tiny_bert
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<|endoftext|>"] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer, backend.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    assert tokenizer.unk_token is None
    GPT2LMHeadModel(GPT2Config(vocab_size=len(vocab), n_embd=16, n_layer=1, n_head=2, n_positions=128,
                               bos_token_id=len(vocab) - 1, eos_token_id=len(vocab) - 1)).save_pretrained(tmp_path / "byte")
    tokenizer.save_pretrained(tmp_path / "byte")
    save_tiny_bert(TEXTS, tmp_path / "bert")
    db = str(tmp_path / "kd.db")
    (tmp_path / "t.tsv").write_text("".join(f"{('pos', 'neg')[i % 2]}\t{t}\n" for i, t in enumerate(TEXTS)), encoding="utf-8")
    kd("ingest", str(tmp_path / "t.tsv"), "--db", db)
    for run, model in (("g", "byte"), ("b", "bert")):
        kd("teach", "--run", run, "--model", str(tmp_path / model), "--epochs", "1", "--max-len", "64", "--db", db)
    small = ["--epochs", "1", "--embed-dim", "8", "--num-filters", "4", "--max-len", "64", "--augment-n", "1", "--db", db]
    for teachers in (["--run", "g"], ["--run", "b", "--teacher-run", "b", "--teacher-run", "g"]):
        out = kd("distill", *teachers, "--augment", "mask,ngram", *small, ok=False)
        assert "has no unknown token" in out.output and "leave mask out of --augment" in out.output, out.output
        assert "Traceback" not in out.output
    assert [s["name"] for r in json.loads(kd("runs", "--db", db, "--json").stdout) for s in r["stages"]] == ["teach", "teach"]
    assert json.loads(kd("distill", "--run", "g", "--augment", "ngram", "--p-ngram", "1", *small, "--json").stdout)["status"] == "succeeded"


def test_a_later_run_without_pos_does_not_segment_every_train_text(tmp_path, monkeypatch):
    """A train sample that gave no augmented text (here: one character) is tried again by each
    run; for a recipe without "pos" that is its own text, not the vocabulary of every train text
    (a minute of segmentation on a large store, every run)."""
    import kdstore.augmented as augmented
    from kdstore.ingest import IngestOptions, ingest
    from kdstore.store import Store

    store = Store.open(str(tmp_path / "kd.db"))
    ingest(store, "pos\t质量很好，物流也快\nneg\t包装破损，很失望\n".encode(), "t.tsv", IngestOptions())
    recipe = augmented.Recipe(methods=("mask", "ngram"), n=2, p_mask=0.5)
    _, first = augmented.ensure_augmented(store, recipe)
    ingest(store, "neg\t差\n".encode(), "late.tsv", IngestOptions())
    monkeypatch.setattr(augmented, "build_pos_vocab", lambda tagged: pytest.fail("built the vocabulary of every train text"))
    assert first > 0 and augmented.ensure_augmented(store, recipe) == (recipe.source, 0)
    store.close()


def test_a_probability_typed_as_minus_zero_names_the_recipe_of_zero():
    """`--p-pos -0.0` named another recipe than `--p-pos 0` ("p0.1/-0.0/0.25"): the same texts stored twice."""
    import kdstore.augmented as augmented

    assert augmented.Recipe(p_pos=-0.0).source == augmented.Recipe(p_pos=0.0).source == "augment:mask+pos+ngram:n4:s42:p0.1/0.0/0.25"


def test_the_unknown_token_names_only_a_recipe_that_masks():
    """A RoBERTa teacher's `<unk>` named a pos+ngram recipe, which writes no unknown token, apart from a BERT
    teacher's: its texts were made and scored again for the same recipe. Only a masking recipe carries it."""
    import kdstore.augmented as augmented

    plain = augmented.Recipe(methods=("pos", "ngram"))
    assert augmented.Recipe(methods=("pos", "ngram"), unk="<unk>") == plain and plain.source == "augment:pos+ngram:n4:s42:p-/0.1/0.25"
    assert augmented.Recipe(methods=("mask",), unk="<unk>").source == "augment:mask:n4:s42:p0.1/-/-:unk=<unk>"


def test_a_train_text_of_emoji_alone_is_not_tried_again_by_every_run(tmp_path, monkeypatch):
    """A train text of emoji or punctuation alone, the newest one, gives no augmented text: each later
    run of a recipe with "pos" took it for one not tried yet and segmented every train text for the
    vocabulary (3.5 minutes for 50,000 reviews), every run, to make nothing."""
    import kdstore.augmented as augmented
    from kdstore.ingest import IngestOptions, ingest
    from kdstore.store import Store

    store = Store.open(str(tmp_path / "kd.db"))
    ingest(store, "pos\t质量很好，物流也快\nneg\t包装破损，很失望\npos\t👍👍！\n".encode(), "t.tsv", IngestOptions())
    recipe = augmented.Recipe(n=2)
    _, first = augmented.ensure_augmented(store, recipe)
    assert first > 0 and {int(p) for p in store.parents().values()} == {1, 2}
    monkeypatch.setattr(augmented, "build_pos_vocab", lambda tagged: pytest.fail("built the vocabulary of every train text"))
    assert augmented.ensure_augmented(store, recipe) == (recipe.source, 0)
    store.close()


def test_a_pool_text_taken_into_train_is_augmented_though_its_id_is_older(tmp_path):
    """`kd ingest --take-pool` moves a pool sample into train keeping its id, older than the parents a recipe
    already gave texts: the recipe took ids below its newest parent for tried already, and never augmented it."""
    import kdstore.augmented as augmented
    from kdstore.ingest import IngestOptions, ingest
    from kdstore.store import Store

    store = Store.open(str(tmp_path / "kd.db"))
    ingest(store, "物流很快，包装也很结实\n".encode(), "pool.txt", IngestOptions(split="unlabeled"))  # sample 1
    ingest(store, "pos\t质量很好，物流也快\nneg\t包装破损，很失望\n".encode(), "t.tsv", IngestOptions())
    recipe = augmented.Recipe(methods=("ngram",), n=2, p_ngram=1.0)
    _, first = augmented.ensure_augmented(store, recipe)
    assert first > 0 and set(store.parents().values()) == {2, 3}
    report = ingest(store, "pos\t物流很快，包装也很结实\n".encode(), "annotated.tsv", IngestOptions(take_pool=True))
    assert report.taken == 1
    _, more = augmented.ensure_augmented(store, recipe)
    assert more > 0 and 1 in set(store.parents().values())
    assert augmented.ensure_augmented(store, recipe) == (recipe.source, 0)
    store.close()


def test_a_pool_text_ingested_after_augmentation_made_it_joins_the_pool(tmp_path):
    """Ingested after `kd distill --augment` stored the same text, a pool text was skipped as a
    duplicate of the augmented one: it stayed out of the pool (distill's, pretrain's, --tsv's) and
    left with its parent when that was dropped. It is the pool's now, as when the pool comes first."""
    import kdstore.augmented as augmented
    from kdstore.ingest import IngestOptions, ingest
    from kdstore.store import Store

    store = Store.open(str(tmp_path / "kd.db"))
    ingest(store, "pos\t质量很好，物流也快\nneg\t包装破损，很失望\n".encode(), "t.tsv", IngestOptions())
    recipe = augmented.Recipe(methods=("ngram",), n=2, p_ngram=1.0)
    _, made = augmented.ensure_augmented(store, recipe)
    texts = store.samples(augmented=recipe.source)
    assert made > 0 and set(store.parents()) == set(texts.ids.tolist())
    child, text = int(texts.ids[0]), texts.texts[0]
    report = ingest(store, f"{text}\n一条新的池文本\n".encode(), "pool.txt", IngestOptions(split="unlabeled"))
    assert (report.added, report.duplicates) == (2, 0)
    pool = store.samples(splits=["unlabeled"], where="parent_id IS NULL")
    assert child in pool.ids.tolist() and child not in store.parents()
    assert child in store.samples(augmented=recipe.source).ids.tolist()  # still one of the recipe's texts
    assert store.counts()["unlabeled"] == {"(none)": 2} and store.counts()["augmented"] == {"(none)": made - 1}
    again = ingest(store, f"{text}\n".encode(), "pool.txt", IngestOptions(split="unlabeled"))
    assert (again.added, again.duplicates, again.duplicates_in) == (0, 1, {"unlabeled": 1})
    labeled = ingest(store, f"pos\t{texts.texts[1]}\n".encode(), "late.tsv", IngestOptions())
    assert labeled.added == 0 and len(labeled.conflicts) == 1  # a labeled row stays a conflict, as documented
    store.close()


def test_a_same_pos_swap_draws_words_by_their_count_in_the_train_texts():
    """Tang et al. draw the new word from "the unigram word distribution re-normalized by the POS
    tag": a word seen 8 times is drawn 8 times as often as one seen once (the draw was uniform over
    the distinct words, so the singletons, most of a tag's words in real reviews, made most swaps)."""
    from collections import Counter

    tagged = [[("好", "a")]] * 8 + [[("大", "a")], [("新", "a")], [("快", "a")]]
    vocab = build_pos_vocab(tagged)
    assert vocab == {"a": ["好", "大", "快", "新"]} and vocab["a"].counts == [8, 1, 1, 1]
    rng = random.Random(0)
    drawn = Counter(swap_same_pos([("大", "a")], p=1.0, rng=rng, pos_vocab=vocab)[0] for _ in range(5000))
    assert set(drawn) == {"好", "快", "新"}  # never the word itself
    assert 0.75 < drawn["好"] / 5000 < 0.85 and 0.07 < drawn["新"] / 5000 < 0.13  # 8/10 and 1/10
    drawn = Counter(swap_same_pos([("好", "a")], p=1.0, rng=rng, pos_vocab=vocab)[0] for _ in range(3000))
    assert set(drawn) == {"大", "快", "新"} and min(drawn.values()) > 800  # the others alike, 1/3 each
    # a hand-made list (no counts) is still drawn from uniformly
    plain = Counter(swap_same_pos([("大", "a")], p=1.0, rng=rng, pos_vocab={"a": ["好", "大", "新"]})[0] for _ in range(2000))
    assert set(plain) == {"好", "新"} and min(plain.values()) > 850


def test_tag_words_refuse_counts_that_do_not_match_their_words():
    """A word past the counts (or with a count of 0) was never drawn, in silence."""
    from kdstore.augment import TagWords, _other_word

    with pytest.raises(ValueError):
        TagWords(["好", "大"], [3])
    with pytest.raises(ValueError):
        TagWords(["好", "大"], [3, 0])
    words = TagWords(["好"], [1])
    assert _other_word("好", words, random.Random(0)) == "好" and _other_word("新", words, random.Random(0)) == "好"
    assert TagWords(["好", "大"]) == ["好", "大"]  # no counts: drawn uniformly


def test_augmenting_many_texts_shows_a_bar(monkeypatch, capsys):
    """`kd distill --augment` segments every train text with jieba's tagger (100-400 texts/s: minutes
    for a large train split) and showed nothing meanwhile; the texts it makes are unchanged."""
    texts = [f"这本书很好{i}" for i in range(1000)]
    quiet = augment(texts, n=1, seed=3)
    monkeypatch.delenv("KD_NO_PROGRESS")
    assert augment(texts, n=1, seed=3) == quiet
    captured = capsys.readouterr()
    assert "augment: segment" in captured.err and "1000/1000" in captured.err and captured.out == ""


def test_a_large_augment_n_shows_a_bar_over_the_texts(monkeypatch, capsys):
    """A few short texts with a large n (each runs up to 20 * n passes once it has no new variant
    left) took minutes after segmenting with nothing on screen; the texts it makes are unchanged."""
    texts = ["很好", "太差了", "一般般吧"]
    quiet = augment(texts, n=2000, seed=3, max_tries=1)
    monkeypatch.delenv("KD_NO_PROGRESS")
    assert augment(texts, n=2000, seed=3, max_tries=1) == quiet
    captured = capsys.readouterr()
    assert "augment: 2000 new texts each" in captured.err and "3/3" in captured.err and captured.out == ""


@pytest.mark.parametrize("entry", ["augment", "word_starts"])
def test_a_jieba_cache_that_cannot_be_written_is_one_warning_line(tmp_path, entry):
    """jieba printed "Dump cache file failed." and a whole traceback on standard error when it could
    not write its dictionary cache (another user's jieba.cache in a shared /tmp), in a run that went
    on and succeeded, and left its 9 MB temporary copy of the cache behind each time; augmentation
    and whole-word masking (kd pretrain) say it in one line now and leave nothing behind."""
    (tmp_path / "jieba.cache").mkdir()  # jieba's rename of its copy onto it fails, as onto another user's file
    (tmp_path / "jieba.cache" / "x").write_text("")
    call = {"augment": "from kdstore.augment import augment; print(augment(['质量很好，物流也快'], n=2, seed=0))",
            "word_starts": "from kdstore.segment import word_starts; print(word_starts('质量很好，物流也快'))"}[entry]
    env = dict(os.environ, TMPDIR=str(tmp_path))
    run = subprocess.run([sys.executable, "-c", call], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    expected = augment(["质量很好，物流也快"], n=2, seed=0) if entry == "augment" else None
    if expected is not None:
        assert run.stdout.strip() == str(expected)  # (the work itself is done as before)
    assert "Traceback" not in run.stderr and run.stderr.count("\n") == 1
    assert run.stderr.startswith(f"warning: jieba could not write its dictionary cache {tmp_path / 'jieba.cache'} (")
    assert "TMPDIR" in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jieba.cache"]  # no tmpXXXXXX copy left


def _digest(rows) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()


def test_augmented_texts_stay_as_they_were_under_the_same_seed():
    """Pinned outputs (jieba 0.42.1): speeding up segmentation and the passes changes no new text. (Digests
    renewed when Wi-Fi, don't and the like became one word: their halves had been masked and swapped.)"""
    out = augment(TEXTS, n=4, seed=7)
    assert [list(row) for row in out if row[0] == 1] == [
        [1, "[UNK]外观很沉稳，[UNK]。[UNK] 的本外观不错", "mask"],
        [1, "1.外观很沉稳，不错。acer 的本外观不错", "pos"],
        [1, "外观很[UNK]，", "mask+ngram"],
        [1, "1.外观很沉稳，干练。acer [UNK]本[UNK]不错", "mask"],
    ]
    assert [row[1] for row in out if row[0] == 7][1] == (
        "自带的暴风省了外接的麻烦，机器能够应付好的决定，磨砂的手感很好，机器很轻，比我之前[UNK]Dell D430用起来感觉好很多。")
    lines = (ROOT / "examples" / "reviews" / "train.tsv").read_text(encoding="utf-8").splitlines()[:300]
    texts = [line.split("\t", 1)[1] for line in lines]
    many = augment(texts, n=4, seed=42, keys=list(range(1000, 1300)))
    assert (len(many), _digest(many)) == (1200, "f23fe6d9f3a2460f10bb25b90b6f925206bf38354c1af379382c5b063f51160e")
    vocab = build_pos_vocab(segment_pos(t) for t in texts)
    part = augment(texts[::7], n=3, seed=3, pos_vocab=vocab, keys=list(range(0, 300, 7)), methods=("mask", "pos"), p_mask=0.2, p_pos=0.3)
    assert (len(part), _digest(part)) == (129, "7ca0070c1eaed877fc4acb2807f5ef9da6b67bbb97f85209a9a55497796f766c")


def test_augmented_samples_of_a_store_stay_as_they_were_part_way_too(tmp_path):
    """Pinned texts a recipe stores, the first time and part-way (train samples ingested later, a
    same-POS vocabulary of every train text)."""
    from sqlalchemy import select

    import kdstore.augmented as augmented
    from kdstore.ingest import IngestOptions, ingest
    from kdstore.schema import Sample
    from kdstore.store import Store

    lines = (ROOT / "examples" / "reviews" / "train.tsv").read_text(encoding="utf-8").splitlines()[:60]
    store = Store.open(str(tmp_path / "kd.db"))
    ingest(store, "".join(f"{line}\n" for line in lines[:40]).encode(), "a.tsv", IngestOptions())
    recipe = augmented.Recipe(n=3, seed=11)
    augmented.ensure_augmented(store, recipe)
    ingest(store, "".join(f"{line}\n" for line in lines[40:]).encode(), "b.tsv", IngestOptions())
    augmented.ensure_augmented(store, recipe)
    with store.engine.connect() as conn:
        rows = [list(r) for r in conn.execute(select(Sample.parent_id, Sample.text).where(Sample.parent_id.is_not(None)).order_by(Sample.id))]
    store.close()
    assert (len(rows), _digest(rows)) == (179, "c57383a536b3bd1fa6aa3d1e0f25a2bdebcc8c69ead8e5403a4778ca2c8df235")


def test_a_hyphenated_or_apostrophe_latin_word_is_masked_and_swapped_whole(tmp_path):
    """jieba cuts Wi-Fi into Wi + - + Fi, T-shirt and don't likewise: a same-POS swap of one half made
    'Wi-example' and 'example't', the mask '[UNK]-Fi'. Such a word is one word, masked or swapped whole."""
    import kdstore.augmented as augmented
    from kdstore.ingest import IngestOptions, ingest
    from kdstore.store import Store

    assert ("Wi-Fi", "eng") in segment_pos("连上Wi-Fi很快") and ("don't", "eng") in segment_pos("don't buy")
    assert [w for w, _ in segment_pos("这款T-shirt很好")][:2] == ["这款", "T-shirt"]
    assert [w for w, _ in segment_pos("3-5天到")][:3] == ["3", "-", "5"]  # (a range of numbers stays cut)
    store = Store.open(str(tmp_path / "kd.db"))
    rows = ["连上Wi-Fi信号很好", "这款T-shirt很好看", "don't buy，质量太差", "iPhone 很好用", "example 页面太慢"]
    ingest(store, "".join(f"{('pos', 'neg')[i % 2]}\t{t}\n" for i, t in enumerate(rows)).encode(), "t.tsv", IngestOptions())
    for recipe in (augmented.Recipe(methods=("pos",), n=8, p_pos=1.0), augmented.Recipe(methods=("mask",), n=8, p_mask=0.5)):
        augmented.ensure_augmented(store, recipe)
    store.close()
    import sqlite3

    made = [t for (t,) in sqlite3.connect(tmp_path / "kd.db").execute("SELECT text FROM samples WHERE parent_id IS NOT NULL")]
    assert made and any("[UNK]" in t for t in made)
    halves = re.compile(r"Wi-(?!Fi)|(?<!Wi)-Fi|T-(?!shirt)|(?<!T)-shirt|don'(?!t)|(?<!don)'t")  # (a half kept, the other masked or swapped)
    assert not [t for t in made if halves.search(t)], made


def test_a_hyphenated_word_of_accented_or_other_letters_is_one_word_too():
    """Wi-Fi was joined, but only of ASCII halves: Pokémon-Go, café-bar or full-width Ｗｉ－Ｆｉ stayed three words,
    and the mask made '[UNK]-Go' of the very kind of word the README says is masked whole."""
    assert ("Pokémon-Go", "eng") in segment_pos("买了Pokémon-Go的卡") and ("café-bar", "eng") in segment_pos("café-bar不错")
    assert segment_pos("Ｗｉ－Ｆｉ很好")[0] == ("Ｗｉ－Ｆｉ", "x")  # (full-width: punctuation to jieba, as ｉＰｈｏｎｅ, never swapped)
    assert segment_pos("Санкт-Петербург很大")[0] == ("Санкт-Петербург", "x")
    assert [w for w, _ in segment_pos("３－５天到")][:3] == ["３", "－", "５"]  # (a range of numbers stays cut)
    masked = augment(["Pokémon-Go好玩"], n=10, seed=0, methods=("mask",), p_mask=0.5)
    assert {t for _, t, _ in masked} == {"[UNK]好玩", "Pokémon-Go[UNK]"}


def test_an_address_or_a_grouped_number_is_one_word():
    """An ad's address or price came out of jieba in pieces (https + : + / + / + www + . + example ...,
    1 + , + 299): a mask made www.[UNK].com, a same-POS swap www.example.iPhone or ¥1,4567, and an n-gram
    kept half of one. Each is one word now, tagged url (swapped only for another address) or num (only for another
    such number: jieba's m holds 元 and 三天, and ¥1,299 became ¥三天)."""
    text = "特价¥1,299，详见https://www.example.com/a?b=1_c 或 www.taobao.com。邮箱 a.b@qq.com，(见jd.com/x)"
    tagged = segment_pos(text)
    assert "".join(w for w, _ in tagged) == text
    assert [p for p in tagged if p[1] in ("url", "num")] == [
        ("1,299", "num"), ("https://www.example.com/a?b=1_c", "url"), ("www.taobao.com", "url"), ("a.b@qq.com", "url"), ("jd.com/x", "url")]
    assert [w for w, _ in segment_pos("版本1,2,3和3.5GHz")][:6] == ["版本", "1", ",", "2", ",", "3"]  # (no thousands groups: as jieba cut it)
    # (an address in capitals; no comma in one, "www.jd.com,it's" took the English after it; letters glued before a
    # number, RMB1,299: joined as a number, a swap dropped the letters, so left as jieba cut it)
    assert [w for w, t in segment_pos("见WWW.JD.COM或HTTPS://A.COM/x 好") if t == "url"] == ["WWW.JD.COM", "HTTPS://A.COM/x"]
    assert [w for w, t in segment_pos("www.jd.com,it's ok") if t == "url"] == ["www.jd.com"]
    assert [w for w, t in segment_pos("RMB1,299元 iPhone15,999") if t == "num"] == []
    addresses = {"https://www.example.com/a?b=1_c", "www.taobao.com", "a.b@qq.com", "jd.com/x"}
    vocab = build_pos_vocab([tagged, segment_pos("去 www.tmall.com 看看 iPhone 12,000 元")])
    assert set(vocab["url"]) == addresses | {"www.tmall.com"} and set(vocab["num"]) == {"1,299", "12,000"}
    made = augment([text], n=20, seed=1, pos_vocab=vocab, methods=("mask", "pos", "ngram"), p_mask=0.3, p_pos=0.5, p_ngram=0.5)
    assert len(made) >= 10
    whole = sorted(addresses | {"www.tmall.com", "1,299", "12,000"}, key=len, reverse=True)
    left = [functools.reduce(lambda t, w: t.replace(w, ""), whole, t) for _, t, _ in made]  # (what is not a whole address or number)
    assert not [t for t in left if re.search(r"www|\.com|\.cn|@|://|\d,\d|,\d{3}", t)], made
    assert any("www.tmall.com" in t for _, t, _ in made)  # (swapped for another address)


def test_an_id_joined_by_an_underscore_is_masked_and_swapped_whole(tmp_path):
    """An ad's WeChat id, wx_abc123 or abc_888, came out of jieba as wx + _ + abc123: a same-POS swap of one half
    made hb-2024_abc123 (an id no ad held), a mask [UNK]_abc123, an n-gram kept wx alone. It is one word, as Wi-Fi is
    (numbers on both sides, 123_456, stay as jieba cut them)."""
    from synthetic import kd

    assert ("wx_abc123", "eng") in segment_pos("加微信 wx_abc123 领取") and ("abc_888", "eng") in segment_pos("加V信 abc_888 送")
    assert ("kd_888-99", "eng") in segment_pos("微信：kd_888-99")
    assert [w for w, _ in segment_pos("编号123_456")][-3:] == ["123", "_", "456"]
    rows = ["限时特价，加微信 wx_abc123 领取优惠券", "第一品牌Nike运动鞋，加V信 abc_888 抢购", "国家级产品，联系 hb-2024 送礼品",
            "Adidas跑步鞋，透气舒适", "办公椅，支持Wi-Fi智能调节"]
    (tmp_path / "t.tsv").write_text("".join(f"{('bad', 'ok')[i % 2]}\t{t}\n" for i, t in enumerate(rows)), encoding="utf-8")
    db = str(tmp_path / "kd.db")
    kd("ingest", str(tmp_path / "t.tsv"), "--db", db)
    from kdstore.store import Store
    import kdstore.augmented as augmented

    store = Store.open(db)
    for recipe in (augmented.Recipe(methods=("pos",), n=8, p_pos=1.0), augmented.Recipe(methods=("mask", "ngram"), n=8, p_mask=0.5, p_ngram=1.0)):
        augmented.ensure_augmented(store, recipe)
    store.close()
    made = [s["text"] for s in json.loads(kd("samples", "--split", "augmented", "--limit", "0", "--json", "--db", db).stdout)]
    assert made and any("[UNK]" in t for t in made)
    halves = re.compile(r"_(?!abc123|888)|(?<!wx)_abc123|(?<!abc)_888|(?<![A-Za-z_])(wx|abc)(?!_)")  # (one half kept, the other changed or cut away)
    assert not [t for t in made if halves.search(t)], made


def test_an_address_in_brackets_leaves_the_closing_bracket_out():
    """An address with brackets of its own (a Wikipedia page, A_(b)) inside a bracketed remark: the remark's closing
    bracket was kept in the address, since the address held an opening one, and a swap or a mask of the address
    took it away, leaving the remark unclosed: ``(见[UNK]``."""
    text = "(见https://en.wikipedia.org/wiki/A_(b))很好"
    tagged = segment_pos(text)
    assert "".join(w for w, _ in tagged) == text
    assert [w for w, t in tagged if t == "url"] == ["https://en.wikipedia.org/wiki/A_(b)"]
    assert [w for w, t in segment_pos("见https://en.wikipedia.org/wiki/A_(b)。") if t == "url"] == ["https://en.wikipedia.org/wiki/A_(b)"]


def test_a_number_glued_to_a_word_joined_before_it_is_no_thousands_number():
    """RMB1,299 is left as jieba cut it (a swap of the number dropped the letters), but a word the underscore or a
    full-width join made first, sku_1 or ＲＭＢ1, was taken into the number: sku_1,299 tagged num, in the vocabulary
    of numbers, and a swap of it for 12,000 dropped sku_."""
    for text in ("型号sku_1,299元", "券码wx_12,000", "ＲＭＢ1,299元"):
        tagged = segment_pos(text)
        assert "".join(w for w, _ in tagged) == text
        assert [w for w, t in tagged if t == "num"] == [], tagged
    assert [w for w, t in segment_pos("价格¥1,299，编号sku_1") if t == "num"] == ["1,299"]
