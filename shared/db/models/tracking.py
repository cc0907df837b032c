"""Experiment tracking: experiments, runs and metric points (MLflow's data model, tenant-scoped).

Key/value children (tags, params, latest metrics) use composite primary keys `(owner_id, key)`: that is
both the uniqueness rule MLflow enforces and the index every read of a run's data uses.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import (
    Base,
    BigIntPK,
    JSONType,
    SoftDelete,
    Timestamps,
    UTCDateTime,
    UUIDPrimaryKey,
    utcnow,
)

RUN_STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
LOGGED_MODEL_STATUSES = ("LOGGED_MODEL_PENDING", "LOGGED_MODEL_READY", "LOGGED_MODEL_UPLOAD_FAILED")


class Experiment(UUIDPrimaryKey, Timestamps, SoftDelete, Base):
    __tablename__ = "experiments"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    project_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False)
    name: Mapped[str] = mapped_column(String(500), nullable=False)
    artifact_location: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("users.id", ondelete="SET NULL"))


class ExperimentTag(Base):
    __tablename__ = "experiment_tags"

    experiment_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)


class ExperimentRun(UUIDPrimaryKey, Timestamps, SoftDelete, Base):
    """Start and end times are MLflow's epoch milliseconds, kept as integers so they round-trip exactly."""

    __tablename__ = "experiment_runs"
    __table_args__ = (
        Index(None, "experiment_id", "status"),
        Index(None, "experiment_id", "start_time"),
        Index(None, "experiment_id", "name"),
    )

    experiment_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("experiments.id", ondelete="CASCADE"), nullable=False
    )
    name: Mapped[str | None] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="RUNNING")
    start_time: Mapped[int | None] = mapped_column(BigInteger)
    end_time: Mapped[int | None] = mapped_column(BigInteger)
    user_name: Mapped[str | None] = mapped_column(String(256))
    artifact_uri: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("users.id", ondelete="SET NULL"))


class RunMetric(Base):
    """One metric point. Append-only and the highest-volume table, so a bigint key rather than a UUID."""

    __tablename__ = "run_metrics"
    # A point is stored once, as in MLflow's store (whose primary key is these columns); the same index
    # gives history its (step, timestamp) order, so a page of a 100,000-point metric costs the page, not
    # a sort of the whole history.
    __table_args__ = (Index(None, "run_id", "key", "step", "timestamp", "value", "is_nan", unique=True),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    # No foreign key: its per-row check was half the database's cost of a batch (migration 011); writers
    # read the run first, and a trigger on experiment_runs deletes a run's points with it.
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    key: Mapped[str] = mapped_column(String(250), nullable=False)
    # NaN is 0 on SQLite, which cannot store NaN (so NaN points are equal under the unique index);
    # is_nan says so.
    value: Mapped[float | None] = mapped_column(Float)
    is_nan: Mapped[bool] = mapped_column(default=False, nullable=False)
    step: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    timestamp: Mapped[int] = mapped_column(BigInteger, nullable=False)


class RunLatestMetric(Base):
    """The point at the highest step (then latest timestamp) of each run's metric, kept on write.

    Search filters and sorts on `metrics.<key>` read this table: one row per (run, key) instead of
    an aggregate over the whole history. The `(key, value)` index serves range filters and ordering;
    `(experiment_id, key, value)` serves them within an experiment. `experiment_id` is the run's, filled
    by a trigger on insert (migration 022), so writers leave it out.
    """

    __tablename__ = "run_latest_metrics"
    __table_args__ = (Index(None, "key", "value"), Index(None, "experiment_id", "key", "value"))

    run_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("experiment_runs.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    value: Mapped[float | None] = mapped_column(Float)
    is_nan: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    step: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    timestamp: Mapped[int] = mapped_column(BigInteger, nullable=False)
    experiment_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)


class RunParam(Base):
    __tablename__ = "run_params"
    # Search probes "which runs have key K": (key, run_id) answers it without touching the heap.
    __table_args__ = (Index(None, "key", "run_id"),)

    run_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("experiment_runs.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)


class RunTag(Base):
    __tablename__ = "run_tags"
    __table_args__ = (Index(None, "key", "run_id"),)

    run_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("experiment_runs.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)


class Dataset(UUIDPrimaryKey, Base):
    """A dataset as MLflow describes it (name + digest + source), shared by the runs of one experiment."""

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("experiment_id", "name", "digest"),)

    experiment_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("experiments.id", ondelete="CASCADE"), nullable=False
    )
    name: Mapped[str] = mapped_column(String(500), nullable=False)
    digest: Mapped[str] = mapped_column(String(36), nullable=False)
    source_type: Mapped[str] = mapped_column(String(36), nullable=False)
    source: Mapped[str] = mapped_column(Text, nullable=False)
    schema: Mapped[str | None] = mapped_column(Text)
    profile: Mapped[str | None] = mapped_column(Text)


class RunDatasetInput(Base):
    """A dataset used by a run; `tags` are the input tags (e.g. mlflow.data.context=training)."""

    __tablename__ = "run_dataset_inputs"
    __table_args__ = (Index(None, "dataset_id"),)

    run_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("experiment_runs.id", ondelete="CASCADE"), primary_key=True
    )
    dataset_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True)
    tags: Mapped[dict] = mapped_column(JSONType, nullable=False, default=dict)


class LoggedModel(UUIDPrimaryKey, Timestamps, SoftDelete, Base):
    """An MLflow 3 logged model: the artifact bundle `mlflow.<flavor>.log_model` writes."""

    __tablename__ = "logged_models"
    __table_args__ = (Index(None, "experiment_id", "name"), Index(None, "source_run_id"))

    experiment_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("experiments.id", ondelete="CASCADE"), nullable=False
    )
    name: Mapped[str] = mapped_column(String(500), nullable=False)
    artifact_location: Mapped[str] = mapped_column(Text, nullable=False)
    model_type: Mapped[str | None] = mapped_column(String(500))
    source_run_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("experiment_runs.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(32), nullable=False, default="LOGGED_MODEL_PENDING")
    status_message: Mapped[str | None] = mapped_column(Text)


class LoggedModelTag(Base):
    __tablename__ = "logged_model_tags"

    model_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("logged_models.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)


class LoggedModelParam(Base):
    __tablename__ = "logged_model_params"

    model_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("logged_models.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)


class LoggedModelMetric(Base):
    """A metric point logged against a model (`log_metric(..., model_id=...)`), optionally per dataset."""

    __tablename__ = "logged_model_metrics"
    # One row per point, as in MLflow's store (its primary key: model, key, timestamp, step, run).
    __table_args__ = (Index(None, "model_id", "key", "step", "timestamp", "run_id", unique=True),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    model_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("logged_models.id", ondelete="CASCADE"), nullable=False
    )
    run_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("experiment_runs.id", ondelete="SET NULL"))
    key: Mapped[str] = mapped_column(String(250), nullable=False)
    value: Mapped[float | None] = mapped_column(Float)
    is_nan: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    step: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    timestamp: Mapped[int] = mapped_column(BigInteger, nullable=False)
    dataset_name: Mapped[str | None] = mapped_column(String(500))
    dataset_digest: Mapped[str | None] = mapped_column(String(36))


class RunModelLink(Base):
    """A logged model a run consumed (`direction='input'`) or produced (`'output'`, at a step)."""

    __tablename__ = "run_model_links"
    __table_args__ = (Index(None, "model_id"),)

    run_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("experiment_runs.id", ondelete="CASCADE"), primary_key=True
    )
    model_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("logged_models.id", ondelete="CASCADE"), primary_key=True
    )
    direction: Mapped[str] = mapped_column(String(10), primary_key=True)
    step: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
