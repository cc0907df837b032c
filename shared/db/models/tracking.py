"""Experiment tracking: experiments, runs and metric points (MLflow's data model, tenant-scoped)."""

from __future__ import annotations

import uuid

from sqlalchemy import BigInteger, Float, ForeignKey, Index, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base, BigIntPK, SoftDelete, Timestamps, UUIDPrimaryKey

RUN_STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")


class Experiment(UUIDPrimaryKey, Timestamps, SoftDelete, Base):
    __tablename__ = "experiments"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    project_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False
    )
    name: Mapped[str] = mapped_column(String(500), nullable=False)
    artifact_location: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="SET NULL")
    )


class ExperimentRun(UUIDPrimaryKey, Timestamps, SoftDelete, Base):
    """Start and end times are MLflow's epoch milliseconds, kept as integers so they round-trip exactly."""

    __tablename__ = "experiment_runs"
    __table_args__ = (Index(None, "experiment_id", "status"), Index(None, "experiment_id", "start_time"))

    experiment_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("experiments.id", ondelete="CASCADE"), nullable=False
    )
    name: Mapped[str | None] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="RUNNING")
    start_time: Mapped[int | None] = mapped_column(BigInteger)
    end_time: Mapped[int | None] = mapped_column(BigInteger)
    user_name: Mapped[str | None] = mapped_column(String(256))
    artifact_uri: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="SET NULL")
    )


class RunMetric(Base):
    """One metric point. Append-only and the highest-volume table, so a bigint key rather than a UUID."""

    __tablename__ = "run_metrics"
    __table_args__ = (Index(None, "run_id", "key", "step"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("experiment_runs.id", ondelete="CASCADE"), nullable=False
    )
    key: Mapped[str] = mapped_column(String(250), nullable=False)
    # NULL only for NaN on SQLite, which cannot store NaN; is_nan says so.
    value: Mapped[float | None] = mapped_column(Float)
    is_nan: Mapped[bool] = mapped_column(default=False, nullable=False)
    step: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    timestamp: Mapped[int] = mapped_column(BigInteger, nullable=False)
