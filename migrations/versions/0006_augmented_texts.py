"""augmented_texts: which stored samples each augmentation recipe made, those first stored by another
recipe (or found in the pool) included, so that a second recipe whose texts coincide with the first's
still trains on all of them. Filled from the samples each recipe stored before this revision, under
the recipe's name as kd now spells it.

Revision ID: 0006
Revises: 0005
"""
import re

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "augmented_texts",
        sa.Column("source", sa.String(length=500), nullable=False),
        sa.Column("sample_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["sample_id"], ["samples.id"], name="fk_augmented_texts_sample_id_samples", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("source", "sample_id", name="pk_augmented_texts"),
    )
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, source FROM samples WHERE parent_id IS NOT NULL ORDER BY id")).all()
    table = sa.table("augmented_texts", sa.column("source", sa.String), sa.column("sample_id", sa.Integer))
    for start in range(0, len(rows), 10_000):
        conn.execute(table.insert(), [{"source": recipe_name(src), "sample_id": i} for i, src in rows[start:start + 10_000]])


# A recipe's name as kd names it from this revision on: the probability of a method the recipe
# does not use is "-" (before, every probability was spelled, so ``ngram`` alone with another
# --p-mask was another recipe with the same texts). A copy of the rule, not an import: a migration
# stays what it was when written.
_NAME = re.compile(r"^augment:([a-z+]+):n(\d+):s(-?\d+):p([^/:]+)/([^/:]+)/([^/:]+)(.*)$")


def recipe_name(source: str) -> str:
    m = _NAME.match(source)
    if not m:
        return source
    used = m.group(1).split("+")
    probs = "/".join(p if method in used else "-" for method, p in zip(("mask", "pos", "ngram"), m.group(4, 5, 6)))
    return f"augment:{m.group(1)}:n{m.group(2)}:s{m.group(3)}:p{probs}{m.group(7)}"


def downgrade() -> None:
    op.drop_table("augmented_texts")
