"""stages.run_by: who ran a stage (``KD_USER``, else the login name of the process), so that the audit
trail of label edits says who made each, as it says when and why (NULL for stages recorded before
this revision)

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stages") as batch:
        batch.add_column(sa.Column("run_by", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stages") as batch:
        batch.drop_column("run_by")
