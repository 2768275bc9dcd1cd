"""samples, classes, runs and stages

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "classes",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_classes"),
        sa.UniqueConstraint("name", name="uq_classes_name"),
    )
    op.create_table(
        "samples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("text_hash", sa.String(32), nullable=False),
        sa.Column("split", sa.String(16), nullable=False),
        sa.Column("label_id", sa.Integer(), nullable=True),
        sa.Column("orig_label_id", sa.Integer(), nullable=True),
        sa.Column("dropped", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(500), nullable=False),
        sa.Column("line", sa.Integer(), nullable=True),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("meta", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["label_id"], ["classes.id"], name="fk_samples_label_id_classes"),
        sa.ForeignKeyConstraint(
            ["orig_label_id"], ["classes.id"], name="fk_samples_orig_label_id_classes"
        ),
        sa.ForeignKeyConstraint(["parent_id"], ["samples.id"], name="fk_samples_parent_id_samples"),
        sa.PrimaryKeyConstraint("id", name="pk_samples"),
        sa.UniqueConstraint("text_hash", name="uq_samples_text_hash"),
    )
    op.create_index("ix_samples_split", "samples", ["split"])
    op.create_index("ix_samples_source", "samples", ["source"])
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uniqid", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        sa.UniqueConstraint("uniqid", name="uq_runs_uniqid"),
    )
    op.create_table(
        "stages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("host", sa.String(200), nullable=True),
        sa.Column("artifact_path", sa.Text(), nullable=True),
        sa.Column("artifact_sha256", sa.String(64), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_stages_run_id_runs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_stages"),
        sa.UniqueConstraint("run_id", "name", name="uq_stages_run_name"),
    )
    op.create_index("ix_stages_run_id", "stages", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_stages_run_id", table_name="stages")
    op.drop_table("stages")
    op.drop_table("runs")
    op.drop_index("ix_samples_source", table_name="samples")
    op.drop_index("ix_samples_split", table_name="samples")
    op.drop_table("samples")
    op.drop_table("classes")
