"""Augmented samples in the store: made from the labeled train texts, stored once, reused by later runs.

Each augmented text is an unlabeled sample (soft targets only) whose ``source`` names the recipe
(methods, n, seed, probabilities, and the unknown token when it is not ``[UNK]``) and whose
``parent_id`` is the train sample it came from; the parent's label is kept in its metadata for
inspection. A train sample is augmented once per recipe: a later run augments only the train samples
ingested since (each text's random stream is keyed by its sample id).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from .augment import METHODS, UNK, augment, build_pos_vocab, segment_pos
from .ingest import IngestOptions, Record, add_records
from .schema import Sample
from .store import Store


@dataclass(frozen=True)
class Recipe:
    methods: tuple[str, ...] = METHODS
    n: int = 4
    seed: int = 42
    p_mask: float = 0.1
    p_pos: float = 0.1
    p_ngram: float = 0.25
    unk: str = UNK  # the teacher tokenizer's unknown token, what "mask" writes

    @property
    def source(self) -> str:
        ordered = "+".join(m for m in METHODS if m in self.methods)
        unk = "" if self.unk == UNK else f":unk={self.unk}"
        return f"augment:{ordered}:n{self.n}:s{self.seed}:p{self.p_mask}/{self.p_pos}/{self.p_ngram}{unk}"


def ensure_augmented(store: Store, recipe: Recipe) -> tuple[str, int]:
    """Store the recipe's augmented samples of every train sample that has none yet; returns
    ``(source, added)``. Part-way (train samples ingested after the recipe's first run), the
    same-POS vocabulary still comes from every train text."""
    train = store.samples(splits=["train"], labeled=True)
    with store.engine.connect() as conn:
        newest = conn.execute(select(func.max(Sample.parent_id)).where(Sample.source == recipe.source)).scalar_one()
    # sample ids grow with every ingest: the train samples above the newest parent came later (one
    # below it that yielded no new text was tried already and is not tried again)
    todo = [i for i, sample_id in enumerate(train.ids) if newest is None or int(sample_id) > newest]
    if not todo:
        return recipe.source, 0
    names = store.class_names()
    pos_vocab = None if len(todo) == len(train) else build_pos_vocab(segment_pos(t) for t in train.texts)
    made = augment(
        [train.texts[i] for i in todo], n=recipe.n, seed=recipe.seed, methods=recipe.methods,
        p_mask=recipe.p_mask, p_pos=recipe.p_pos, p_ngram=recipe.p_ngram, unk=recipe.unk,
        pos_vocab=pos_vocab, keys=[int(train.ids[i]) for i in todo],
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
    return recipe.source, report.added
