"""The store's tables, as SQLAlchemy 2.0 typed ORM models.

The migrations in ``migrations/versions`` create exactly these tables; a test checks that the
migrated schema and these models agree, so the two cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

STAGE_KINDS = ("pretrain", "teach", "distill", "detect", "clean", "predict")
STAGE_STATUSES = ("running", "succeeded", "failed")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def iso_utc(value: dt.datetime | None) -> str | None:
    """A stored time (naive, in UTC on every backend) as ISO 8601 that says so: ``...+00:00``."""
    return None if value is None else value.replace(tzinfo=dt.timezone.utc).isoformat(timespec="seconds")


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class KdClass(Base):
    """A label. ``id`` is the stable class id (0, 1, ...), the one a model's output index uses."""

    __tablename__ = "classes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(200), unique=True)


class Sample(Base):
    __tablename__ = "samples"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    text_hash: Mapped[str] = mapped_column(String(32), unique=True)
    split: Mapped[str] = mapped_column(String(16), index=True)
    label_id: Mapped[Optional[int]] = mapped_column(ForeignKey("classes.id"))
    orig_label_id: Mapped[Optional[int]] = mapped_column(ForeignKey("classes.id"))
    dropped: Mapped[bool] = mapped_column(default=False)
    source: Mapped[str] = mapped_column(String(500), index=True)
    line: Mapped[Optional[int]] = mapped_column(Integer)
    parent_id: Mapped[Optional[int]] = mapped_column(ForeignKey("samples.id"))
    meta: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uniqid: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Stage(Base):
    """One step of a run (teach, distill, ...). ``name`` is unique within the run."""

    __tablename__ = "stages"
    __table_args__ = (UniqueConstraint("run_id", "name", name="uq_stages_run_name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(100))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[Optional[str]] = mapped_column(Text)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    ended_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)
    host: Mapped[Optional[str]] = mapped_column(String(200))
    process: Mapped[Optional[str]] = mapped_column(String(64))  # PID:START of the process running it (see runs.this_process)
    run_by: Mapped[Optional[str]] = mapped_column(String(200))  # who ran it: KD_USER, else the process's login name
    artifact_path: Mapped[Optional[str]] = mapped_column(Text)
    artifact_sha256: Mapped[Optional[str]] = mapped_column(String(64))


class Logit(Base):
    """A model's raw output vector for one sample, float32 little-endian bytes (see vectors.py)."""

    __tablename__ = "logits"
    stage_id: Mapped[int] = mapped_column(
        ForeignKey("stages.id", ondelete="CASCADE"), primary_key=True
    )
    sample_id: Mapped[int] = mapped_column(
        ForeignKey("samples.id", ondelete="CASCADE"), primary_key=True
    )
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class Prediction(Base):
    __tablename__ = "predictions"
    stage_id: Mapped[int] = mapped_column(
        ForeignKey("stages.id", ondelete="CASCADE"), primary_key=True
    )
    sample_id: Mapped[int] = mapped_column(
        ForeignKey("samples.id", ondelete="CASCADE"), primary_key=True
    )
    label_id: Mapped[int] = mapped_column(ForeignKey("classes.id"))
    confidence: Mapped[float] = mapped_column(Float)


class Metric(Base):
    """One figure of a stage. ``step`` is set for per-epoch figures and NULL for the final ones."""

    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_stage_split_name", "stage_id", "split", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stage_id: Mapped[int] = mapped_column(ForeignKey("stages.id", ondelete="CASCADE"))
    split: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(255))
    value: Mapped[float] = mapped_column(Float)
    step: Mapped[Optional[int]] = mapped_column(Integer)


class LabelIssue(Base):
    __tablename__ = "label_issues"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stage_id: Mapped[int] = mapped_column(
        ForeignKey("stages.id", ondelete="CASCADE"), index=True
    )
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"))
    given_label_id: Mapped[Optional[int]] = mapped_column(ForeignKey("classes.id"))
    suggested_label_id: Mapped[Optional[int]] = mapped_column(ForeignKey("classes.id"))
    score: Mapped[float] = mapped_column(Float)
    methods: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="open")
    # the clean stage whose decision set ``status`` (NULL while open): what its undo reopens
    decided_stage_id: Mapped[Optional[int]] = mapped_column(ForeignKey("stages.id", ondelete="SET NULL"))


class LabelEdit(Base):
    """Audit trail of every label change. ``new_label_id`` NULL with action 'drop' excludes a sample.
    ``old_dropped``/``new_dropped``: the sample's ``dropped`` flag before and after the edit (NULL on
    edits made before kd recorded it), so that an undo restores it exactly."""

    __tablename__ = "label_edits"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"), index=True)
    stage_id: Mapped[Optional[int]] = mapped_column(ForeignKey("stages.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(16))
    old_label_id: Mapped[Optional[int]] = mapped_column(ForeignKey("classes.id"))
    new_label_id: Mapped[Optional[int]] = mapped_column(ForeignKey("classes.id"))
    old_dropped: Mapped[Optional[bool]] = mapped_column()
    new_dropped: Mapped[Optional[bool]] = mapped_column()
    reason: Mapped[Optional[str]] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    reverted_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)


class AugmentedText(Base):
    """A sample an augmentation recipe (``source``) made: stored by it, or by an earlier recipe or
    ingest that had the same text first."""

    __tablename__ = "augmented_texts"
    source: Mapped[str] = mapped_column(String(500), primary_key=True)
    sample_id: Mapped[int] = mapped_column(
        ForeignKey("samples.id", ondelete="CASCADE"), primary_key=True
    )


class SampleFold(Base):
    """Which cross-validation fold a train sample was held out in, for a ``teach --folds K`` stage."""

    __tablename__ = "sample_folds"
    stage_id: Mapped[int] = mapped_column(
        ForeignKey("stages.id", ondelete="CASCADE"), primary_key=True
    )
    sample_id: Mapped[int] = mapped_column(
        ForeignKey("samples.id", ondelete="CASCADE"), primary_key=True
    )
    fold: Mapped[int] = mapped_column(Integer)
