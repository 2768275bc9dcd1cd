"""Augmented samples in the store: made from the labeled train texts, stored once, reused by later runs.

Each augmented text is an unlabeled sample (soft targets only) whose ``source`` names the recipe
(methods, n, seed, probabilities) and whose ``parent_id`` is the train sample it came from; the
parent's label is kept in its metadata for inspection. The same recipe is never generated twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from .augment import METHODS, augment
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

    @property
    def source(self) -> str:
        ordered = "+".join(m for m in METHODS if m in self.methods)
        return f"augment:{ordered}:n{self.n}:s{self.seed}:p{self.p_mask}/{self.p_pos}/{self.p_ngram}"


def ensure_augmented(store: Store, recipe: Recipe) -> tuple[str, int]:
    """Store the recipe's augmented samples unless already there; returns ``(source, added)``."""
    with store.engine.connect() as conn:
        have = conn.execute(select(func.count()).select_from(Sample).where(Sample.source == recipe.source)).scalar_one()
    if have:
        return recipe.source, 0
    train = store.samples(splits=["train"], labeled=True)
    names = store.class_names()
    made = augment(
        train.texts, n=recipe.n, seed=recipe.seed, methods=recipe.methods,
        p_mask=recipe.p_mask, p_pos=recipe.p_pos, p_ngram=recipe.p_ngram,
    )
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
