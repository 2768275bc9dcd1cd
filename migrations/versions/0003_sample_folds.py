"""sample_folds: the fold each train sample was held out in by an out-of-fold teacher

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sample_folds",
        sa.Column("stage_id", sa.Integer(), nullable=False),
        sa.Column("sample_id", sa.Integer(), nullable=False),
        sa.Column("fold", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["stage_id"], ["stages.id"], name="fk_sample_folds_stage_id_stages", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["sample_id"], ["samples.id"], name="fk_sample_folds_sample_id_samples", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("stage_id", "sample_id", name="pk_sample_folds"),
    )


def downgrade() -> None:
    op.drop_table("sample_folds")
