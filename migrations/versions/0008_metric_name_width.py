"""metrics.name: 255 characters (was 100), so per-class figures (``precision[NAME]``) fit a class
name of the 200 characters ``classes.name`` holds (PostgreSQL enforces the width, SQLite does not)

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("metrics") as batch:
        batch.alter_column("name", existing_type=sa.String(length=100), type_=sa.String(length=255), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("metrics") as batch:
        batch.alter_column("name", existing_type=sa.String(length=255), type_=sa.String(length=100), existing_nullable=False)
