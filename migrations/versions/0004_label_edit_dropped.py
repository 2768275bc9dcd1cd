"""label_edits.old_dropped / new_dropped: the sample's dropped flag before and after each edit, so
that an undo restores it exactly (NULL on edits made before this revision)

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("label_edits") as batch:
        batch.add_column(sa.Column("old_dropped", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("new_dropped", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("label_edits") as batch:
        batch.drop_column("new_dropped")
        batch.drop_column("old_dropped")
