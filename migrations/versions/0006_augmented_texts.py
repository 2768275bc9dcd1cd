"""augmented_texts: which stored samples each augmentation recipe made, those first stored by another
recipe (or found in the pool) included, so that a second recipe whose texts coincide with the first's
still trains on all of them. Filled from the samples each recipe stored before this revision.

Revision ID: 0006
Revises: 0005
"""
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
    op.execute(
        "INSERT INTO augmented_texts (source, sample_id) "
        "SELECT source, id FROM samples WHERE parent_id IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_table("augmented_texts")
