"""stage outputs: logits, predictions, metrics, label issues and the label-edit audit trail

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _stage_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["stage_id"], ["stages.id"], name=f"fk_{table}_stage_id_stages", ondelete="CASCADE"
    )


def _sample_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["sample_id"], ["samples.id"], name=f"fk_{table}_sample_id_samples", ondelete="CASCADE"
    )


def _class_fk(table: str, column: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], ["classes.id"], name=f"fk_{table}_{column}_classes")


def upgrade() -> None:
    op.create_table(
        "logits",
        sa.Column("stage_id", sa.Integer(), nullable=False),
        sa.Column("sample_id", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        _stage_fk("logits"),
        _sample_fk("logits"),
        sa.PrimaryKeyConstraint("stage_id", "sample_id", name="pk_logits"),
    )
    op.create_table(
        "predictions",
        sa.Column("stage_id", sa.Integer(), nullable=False),
        sa.Column("sample_id", sa.Integer(), nullable=False),
        sa.Column("label_id", sa.Integer(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        _stage_fk("predictions"),
        _sample_fk("predictions"),
        _class_fk("predictions", "label_id"),
        sa.PrimaryKeyConstraint("stage_id", "sample_id", name="pk_predictions"),
    )
    op.create_table(
        "metrics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("stage_id", sa.Integer(), nullable=False),
        sa.Column("split", sa.String(16), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=True),
        _stage_fk("metrics"),
        sa.PrimaryKeyConstraint("id", name="pk_metrics"),
    )
    op.create_index("ix_metrics_stage_split_name", "metrics", ["stage_id", "split", "name"])
    op.create_table(
        "label_issues",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("stage_id", sa.Integer(), nullable=False),
        sa.Column("sample_id", sa.Integer(), nullable=False),
        sa.Column("given_label_id", sa.Integer(), nullable=True),
        sa.Column("suggested_label_id", sa.Integer(), nullable=True),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("methods", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _stage_fk("label_issues"),
        _sample_fk("label_issues"),
        _class_fk("label_issues", "given_label_id"),
        _class_fk("label_issues", "suggested_label_id"),
        sa.PrimaryKeyConstraint("id", name="pk_label_issues"),
    )
    op.create_index("ix_label_issues_stage_id", "label_issues", ["stage_id"])
    op.create_table(
        "label_edits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sample_id", sa.Integer(), nullable=False),
        sa.Column("stage_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("old_label_id", sa.Integer(), nullable=True),
        sa.Column("new_label_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("reverted_at", sa.DateTime(), nullable=True),
        _sample_fk("label_edits"),
        sa.ForeignKeyConstraint(
            ["stage_id"], ["stages.id"], name="fk_label_edits_stage_id_stages", ondelete="SET NULL"
        ),
        _class_fk("label_edits", "old_label_id"),
        _class_fk("label_edits", "new_label_id"),
        sa.PrimaryKeyConstraint("id", name="pk_label_edits"),
    )
    op.create_index("ix_label_edits_sample_id", "label_edits", ["sample_id"])


def downgrade() -> None:
    op.drop_index("ix_label_edits_sample_id", table_name="label_edits")
    op.drop_table("label_edits")
    op.drop_index("ix_label_issues_stage_id", table_name="label_issues")
    op.drop_table("label_issues")
    op.drop_index("ix_metrics_stage_split_name", table_name="metrics")
    op.drop_table("metrics")
    op.drop_table("predictions")
    op.drop_table("logits")
