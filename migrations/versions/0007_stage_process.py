"""stages.process: the process that runs a stage (``PID:START``, its start time as the system
counts it), so that a stage left 'running' by a killed process is told from one still running
(NULL for stages recorded before this revision)

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stages") as batch:
        batch.add_column(sa.Column("process", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stages") as batch:
        batch.drop_column("process")
