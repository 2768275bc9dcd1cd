"""augmented_texts.source and samples.source: an augmentation recipe that does not mask is named without
the teacher tokenizer's unknown token (``:unk=<unk>`` of a RoBERTa teacher), which only ``mask`` writes,
as kd names it from this revision on; before, the same pos/ngram recipe run with a BERT teacher and then
a RoBERTa one made and scored its texts twice. A text listed under both names is listed once.

The downgrade leaves the names as they are: which unknown token a recipe was run with is not kept
elsewhere, and kd before this revision makes such a recipe's texts again (into the samples it finds
already stored), which loses nothing.

Revision ID: 0011
Revises: 0010
"""
import re

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

CHUNK = 5_000
# a copy of the rule, not an import: a migration stays what it was when written
_UNK = re.compile(r"^(augment:([a-z+]+):n\d+:s-?\d+:p[^:]*):unk=.*$", re.DOTALL)


def renamed(source: str) -> str:
    """The name kd gives ``source`` from this revision on (itself where it masks or is no recipe's)."""
    m = _UNK.match(source)
    return m.group(1) if m and "mask" not in m.group(2).split("+") else source


def upgrade() -> None:
    conn = op.get_bind()
    texts = sa.table("augmented_texts", sa.column("source", sa.String), sa.column("sample_id", sa.Integer))
    samples = sa.table("samples", sa.column("source", sa.String))
    for table in (texts, samples):
        names = [s for s in conn.execute(sa.select(table.c.source).where(table.c.source.like("augment:%:unk=%")).distinct()).scalars()
                 if renamed(s) != s]
        for old in names:
            new = renamed(old)
            if table is texts:  # (source, sample_id) is the key: a text already listed under the new name stays once
                other = texts.alias("other")
                held = sa.select(other.c.sample_id).where(other.c.source == new)
                conn.execute(texts.delete().where(texts.c.source == old, texts.c.sample_id.in_(held)))
            conn.execute(table.update().where(table.c.source == old).values(source=new))


def downgrade() -> None:
    pass
