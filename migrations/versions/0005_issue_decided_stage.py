"""label_issues.decided_stage_id: the clean stage whose decision set the issue's status, so that an
undo reopens exactly the issues that stage decided (NULL while open, and on decisions made before
this revision)

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("label_issues") as batch:
        batch.add_column(sa.Column("decided_stage_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_label_issues_decided_stage_id_stages", "stages", ["decided_stage_id"], ["id"], ondelete="SET NULL"
        )


def downgrade() -> None:
    with op.batch_alter_table("label_issues") as batch:
        batch.drop_constraint("fk_label_issues_decided_stage_id_stages", type_="foreignkey")
        batch.drop_column("decided_stage_id")
