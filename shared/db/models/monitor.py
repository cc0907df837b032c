"""Model monitors, the drift reports they produce, and the alerts those reports raise."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base, JSONType, SoftDelete, Timestamps, UTCDateTime, UUIDPrimaryKey, utcnow

SEVERITIES = ("info", "warning", "high", "critical")
ALERT_STATES = ("firing", "acknowledged", "resolved")
CHECK_STATES = ("queued", "running", "done", "failed", "insufficient_data")
_OPEN_ALERT = text("status != 'resolved'")


class ModelMonitoring(UUIDPrimaryKey, Timestamps, SoftDelete, Base):
    __tablename__ = "model_monitoring"
    __table_args__ = (UniqueConstraint("project_id", "name"), Index(None, "enabled", "next_check_at"))

    project_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    deployment_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("deployments.id", ondelete="SET NULL"), index=True
    )
    model_version_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("model_versions.id", ondelete="SET NULL")
    )
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    # Either an interval in seconds or a cron expression (croniter), evaluated in UTC.
    schedule_interval_s: Mapped[int | None] = mapped_column(Integer)
    schedule_cron: Mapped[str | None] = mapped_column(String(100))
    window_s: Mapped[int] = mapped_column(Integer, nullable=False, default=86400)
    min_rows: Mapped[int] = mapped_column(Integer, nullable=False, default=100)
    column_schema: Mapped[dict] = mapped_column(JSONType, nullable=False, default=dict)
    config: Mapped[dict] = mapped_column(JSONType, nullable=False, default=dict)
    reference_uri: Mapped[str | None] = mapped_column(Text)
    reference_profile_uri: Mapped[str | None] = mapped_column(Text)
    last_check_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_check_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("users.id", ondelete="SET NULL"))


class DataDriftReport(UUIDPrimaryKey, Base):
    __tablename__ = "data_drift_reports"
    __table_args__ = (Index(None, "monitor_id", "created_at"),)

    monitor_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("model_monitoring.id", ondelete="CASCADE"), nullable=False
    )
    status: Mapped[str] = mapped_column(String(30), nullable=False)
    dataset_drift: Mapped[bool | None] = mapped_column(Boolean)
    drift_share: Mapped[float | None] = mapped_column(Float)
    number_of_columns: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    number_of_drifted_columns: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    current_rows: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    window_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    window_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    report: Mapped[dict] = mapped_column(JSONType, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class Alert(UUIDPrimaryKey, Timestamps, Base):
    """One alert per (monitor, kind) while it fires: later checks update it instead of adding rows."""

    __tablename__ = "alerts"
    __table_args__ = (
        Index(None, "monitor_id", "status"),
        Index(None, "fingerprint", "status"),
        # The database itself keeps one open alert per (monitor, kind), even against racing checks.
        Index(None, "monitor_id", "kind", unique=True, postgresql_where=_OPEN_ALERT, sqlite_where=_OPEN_ALERT),
    )

    monitor_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("model_monitoring.id", ondelete="CASCADE"), nullable=False
    )
    project_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False)
    report_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("data_drift_reports.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(50), nullable=False)
    fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    severity: Mapped[str] = mapped_column(String(20), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="firing")
    title: Mapped[str] = mapped_column(String(500), nullable=False)
    details: Mapped[dict] = mapped_column(JSONType, nullable=False, default=dict)
    labels: Mapped[dict] = mapped_column(JSONType, nullable=False, default=dict)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("users.id", ondelete="SET NULL"))


class MonitorCheckRun(UUIDPrimaryKey, Base):
    """One check of a monitor: a scheduled slot (claimed once: unique per monitor and slot) or a manual run."""

    __tablename__ = "monitor_check_runs"
    __table_args__ = (UniqueConstraint("monitor_id", "slot_time"), Index(None, "status", "queued_at"))

    monitor_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("model_monitoring.id", ondelete="CASCADE"), nullable=False
    )
    slot_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    trigger: Mapped[str] = mapped_column(String(20), nullable=False)
    status: Mapped[str] = mapped_column(String(30), nullable=False, default="queued")
    progress: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    error: Mapped[str | None] = mapped_column(Text)
    report_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("data_drift_reports.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    # When the task was last sent to the broker; a run still queued long after is sent again.
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class MonitorCheckShard(Base):
    """A group of a run's columns checked by one task: a check of many columns or a large window is split
    into shards that any worker takes, each writing its columns' results here; the task that finishes the
    last one queues the combining task, which writes the run's one report."""

    __tablename__ = "monitor_check_shards"

    run_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("monitor_check_runs.id", ondelete="CASCADE"), primary_key=True
    )
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    columns: Mapped[list] = mapped_column(JSONType, nullable=False)
    # The columns' results (`ColumnDrift` as in the report) and both sides' row counts; null until done.
    result: Mapped[dict | None] = mapped_column(JSONType)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class MonitorPredictionBatch(UUIDPrimaryKey, Base):
    """Index of logged prediction batches; the rows themselves are one Parquet file per batch in the
    artifact store, so a window is read by listing the batches that overlap it."""

    __tablename__ = "monitor_prediction_batches"
    __table_args__ = (Index(None, "monitor_id", "last_at"),)

    monitor_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("model_monitoring.id", ondelete="CASCADE"), nullable=False
    )
    first_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    last_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    row_count: Mapped[int] = mapped_column(Integer, nullable=False)
    storage_key: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class MonitorGroundTruth(Base):
    """The true outcome of one logged request, arriving later; keyed by the request id (re-sending replaces)."""

    __tablename__ = "monitor_ground_truth"
    __table_args__ = (Index(None, "monitor_id", "logged_at"),)

    monitor_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("model_monitoring.id", ondelete="CASCADE"), primary_key=True
    )
    request_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)
    logged_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class ServedPredictionBatch(UUIDPrimaryKey, Base):
    """Predictions the gateway served, waiting for the monitor linked to their deployment.

    The gateway writes one row per flushed batch (its process never calls the monitor), and the monitor's
    ingest task turns rows into logged predictions and deletes them in one transaction: a slow or stopped
    monitor only lets rows wait here, and none is logged twice. `rows` holds served requests as they came
    (`row_count` counts them) or rows in the monitor's shape; see `shared.core.served_predictions`.
    """

    __tablename__ = "served_prediction_batches"
    __table_args__ = (Index(None, "created_at"),)

    deployment_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("deployments.id", ondelete="CASCADE"), nullable=False
    )
    row_count: Mapped[int] = mapped_column(Integer, nullable=False)
    rows: Mapped[list] = mapped_column(JSONType, nullable=False, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
