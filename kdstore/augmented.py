"""Augmented samples in the store: made from the labeled train texts, stored once, reused by later runs.

Each augmented text is an unlabeled sample (soft targets only) whose ``source`` names the recipe
(methods, n, seed, probabilities, and the unknown token when it is not ``[UNK]``) and whose
``parent_id`` is the train sample it came from; the parent's label is kept in its metadata for
inspection. A text is stored once: ``augmented_texts`` lists every sample each recipe made, so a
recipe whose texts another recipe stored first (``--augment-n 2`` after ``--augment-n 1``) still
has all of them. A train sample is augmented once per recipe: a later run augments only the train samples
that have no text of the recipe yet, those ingested since or restored from a drop (each text's random
stream is keyed by its sample id, so a sample is augmented alike whenever it is).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import or_, select

from .augment import METHODS, UNK, augment, build_pos_vocab, is_punct, segmented
from .ingest import IngestOptions, Record, add_records
from .schema import AugmentedText, LabelEdit, Sample
from .store import ID_CHUNK, Store, bulk_insert, chunks
from .textkey import text_hash


@dataclass(frozen=True)
class Recipe:
    methods: tuple[str, ...] = METHODS
    n: int = 4
    seed: int = 42
    p_mask: float = 0.1
    p_pos: float = 0.1
    p_ngram: float = 0.25
    unk: str = UNK  # the teacher tokenizer's unknown token, what "mask" writes

    def __post_init__(self) -> None:
        if "mask" not in self.methods:  # (writes no unknown token: a RoBERTa teacher's <unk> named another recipe; migration 0011)
            object.__setattr__(self, "unk", UNK)

    @property
    def source(self) -> str:
        ordered = "+".join(m for m in METHODS if m in self.methods)
        unk = "" if self.unk == UNK else f":unk={self.unk}"
        # a probability of a method the recipe does not use is "-": it changes no text
        # (p + 0.0: a typed -0.0 is 0.0, one recipe, not another name for the same texts stored twice)
        probs = "/".join(str(p + 0.0) if m in self.methods else "-" for m, p in zip(METHODS, (self.p_mask, self.p_pos, self.p_ngram)))
        return f"augment:{ordered}:n{self.n}:s{self.seed}:p{probs}{unk}"


def ensure_augmented(store: Store, recipe: Recipe) -> tuple[str, int]:
    """Store the recipe's augmented samples of every train sample that has none yet; returns
    ``(source, added)``. Part-way (train samples ingested after the recipe's first run), the
    same-POS vocabulary still comes from every train text."""
    train = store.samples(splits=["train"], labeled=True)
    with store.engine.connect() as conn:
        done = set(conn.execute(
            select(Sample.parent_id).join(AugmentedText, AugmentedText.sample_id == Sample.id)
            .where(AugmentedText.source == recipe.source, Sample.parent_id.is_not(None)).distinct()
        ).scalars())
        # a train sample that was dropped at some time may have been left out of an earlier run
        # and one `kd ingest --take-pool` took from the pool keeps its older id
        restored = set(conn.execute(select(LabelEdit.sample_id).where(
            or_(LabelEdit.new_dropped.is_(True), LabelEdit.action.in_(("drop", "take")))).distinct()).scalars())
    newest = max(done, default=None)
    # the train samples none of the recipe's texts came from and that no earlier run tried: ingested
    # since (ids grow with every ingest), or back from a drop; one below the newest parent that gave
    # no new text was tried already and is not tried again
    # a text of punctuation, symbols or emoji alone ("👍👍", "。。。") never gives a new text, nor a word
    # to the vocabulary: left out, it is not tried again by every run, each segmenting every train text
    worded = [i for i, text in enumerate(train.texts) if not is_punct(text)]
    todo = [i for i in worded
            if int(train.ids[i]) not in done and (newest is None or int(train.ids[i]) > newest or int(train.ids[i]) in restored)]
    if not todo:
        return recipe.source, 0
    names = store.class_names()
    # part-way, a "pos" swap draws from the vocabulary of every train text (segmenting them all: 3.5
    # minutes for 50,000 reviews on 2 shared cores); a recipe without "pos" draws nothing from it
    pos_vocab, tagged = None, None
    if len(todo) < len(worded):
        pos_vocab = {}
        if "pos" in recipe.methods:
            every = list(segmented(train.texts, what="augment: same-POS words"))
            pos_vocab, tagged = build_pos_vocab(every), [every[i] for i in todo]  # (the texts to augment not segmented again)
    made = augment(
        [train.texts[i] for i in todo], n=recipe.n, seed=recipe.seed, methods=recipe.methods,
        p_mask=recipe.p_mask, p_pos=recipe.p_pos, p_ngram=recipe.p_ngram, unk=recipe.unk,
        pos_vocab=pos_vocab, keys=[int(train.ids[i]) for i in todo], tagged=tagged,
    )
    made = [(todo[parent], text, method) for parent, text, method in made]
    records = [
        Record(
            text=text,
            label=None,
            line=None,
            meta={"method": method, "parent_label": names[int(train.labels[parent])]},
            parent_id=int(train.ids[parent]),
        )
        for parent, text, method in made
    ]
    if not records:
        return recipe.source, 0
    report = add_records(store, records, recipe.source, IngestOptions(split="unlabeled", source=recipe.source))
    _record_texts(store, recipe.source, [text_hash(r.text) for r in records])
    return recipe.source, report.added


def _record_texts(store: Store, source: str, hashes: list[str]) -> None:
    """Note every unlabeled sample whose text the recipe made as one of its texts: those it stored,
    and those another recipe (or the pool) stored first, which ingest skipped as duplicates. A text
    that is a labeled sample stays out: it is learned from its label already."""
    with store.write_transaction("augmented_texts") as conn:
        known = set(conn.execute(select(AugmentedText.sample_id).where(AugmentedText.source == source)).scalars())
        found: set[int] = set()
        for chunk in chunks(sorted(set(hashes)), ID_CHUNK):
            found.update(conn.execute(
                select(Sample.id).where(Sample.text_hash.in_(chunk), Sample.label_id.is_(None))
            ).scalars())
        bulk_insert(conn, AugmentedText.__table__, ("source", "sample_id"), [(source, i) for i in sorted(found - known)])
