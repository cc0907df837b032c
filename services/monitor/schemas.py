"""Request and response bodies of the monitor (pydantic; never ORM classes)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.core.model_refs import VersionRefFields
from shared.core.patch import PatchBody
from shared.db.models.monitor import ALERT_STATES, CHECK_STATES

# Every value the API answers, listed in /openapi.json.
AlertStatus = Literal[ALERT_STATES]  # type: ignore[valid-type]
CheckStatus = Literal[CHECK_STATES]  # type: ignore[valid-type]

ColumnKind = Literal["numerical", "categorical"]
Severity = Literal["info", "warning", "high", "critical"]
QualityMetric = Literal["accuracy", "f1", "rmse", "mae"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Read(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class SeverityBand(_Request):
    """From this drift share up (to the next band), a drift alert has this severity."""

    min_share: float = Field(ge=0, le=1)
    severity: Severity


DEFAULT_SEVERITY_BANDS = [
    SeverityBand(min_share=0.0, severity="warning"),
    SeverityBand(min_share=0.75, severity="high"),
    SeverityBand(min_share=1.0, severity="critical"),
]


class MetricBound(_Request):
    """Alert when the metric falls below `min` or rises above `max`."""

    min: float | None = None
    max: float | None = None


class QualityConfig(_Request):
    task: Literal["classification", "regression"]
    thresholds: dict[QualityMetric, MetricBound] = Field(default_factory=dict)
    # Fewer labelled predictions than this in a window: metrics are not computed, no alert changes.
    min_rows: int = Field(10, ge=1)
    severity: Severity = "warning"

    @model_validator(mode="after")
    def _metrics_fit_task(self) -> QualityConfig:
        allowed = {"accuracy", "f1"} if self.task == "classification" else {"rmse", "mae"}
        wrong = sorted(set(self.thresholds) - allowed)
        if wrong:
            raise ValueError(f"metrics {wrong} do not apply to {self.task}; use {sorted(allowed)}")
        return self


class RunArtifact(_Request):
    """A tracked run's artifact (CSV or Parquet) as the reference data."""

    run_id: uuid.UUID
    path: str = Field(min_length=1, max_length=1000)


class _MonitorFields(_Request):
    schedule_interval_s: int | None = Field(None, ge=1)
    schedule_cron: str | None = Field(None, max_length=100)
    window_s: int | None = Field(None, ge=1)
    min_rows: int | None = Field(None, ge=1)
    # Column types that override the inferred ones; `features` limits the monitored columns.
    columns: dict[str, ColumnKind] | None = None
    features: list[str] | None = None
    prediction_column: str | None = Field(None, min_length=1, max_length=200)
    methods: dict[str, str] | None = None
    thresholds: dict[str, float] | None = None
    drift_share: float | None = Field(None, gt=0, le=1)
    severity_bands: list[SeverityBand] | None = Field(None, min_length=1)
    quality: QualityConfig | None = None
    reference_run: RunArtifact | None = None
    # Logged predictions older than this are deleted; the platform's default when not set.
    retention_days: int | None = Field(None, ge=1, le=3650)

    @model_validator(mode="after")
    def _one_schedule(self) -> _MonitorFields:
        if self.schedule_interval_s is not None and self.schedule_cron is not None:
            raise ValueError("give schedule_interval_s or schedule_cron, not both")
        return self


class MonitorCreate(VersionRefFields, _MonitorFields):
    """The `spec` part of the multipart create request (the reference file is the `reference` part).

    The target is a deployment (`deployment_id`) or a model version (`model_version_id`, or `model` with
    `version` or `alias`)."""

    version_ref_required = False
    name: str = Field(min_length=1, max_length=200)
    project_id: uuid.UUID | None = None
    deployment_id: uuid.UUID | None = None
    enabled: bool = True

    @model_validator(mode="after")
    def _one_target(self) -> MonitorCreate:
        if (self.deployment_id is None) == (self.version_ref() is None):
            raise ValueError(
                "give exactly one target: deployment_id, or a model version (model_version_id, or model with "
                "version or alias)"
            )
        return self


class MonitorUpdate(PatchBody, _MonitorFields):
    # Null: no data-quality checks; the platform's retention; no linked deployment.
    clearable = frozenset({"quality", "retention_days", "deployment_id"})

    name: str | None = Field(None, min_length=1, max_length=200)
    # The deployment whose served predictions this monitor receives; null unlinks it.
    deployment_id: uuid.UUID | None = None


class MonitorRead(_Read):
    id: uuid.UUID
    project_id: uuid.UUID
    name: str
    deployment_id: uuid.UUID | None
    model_version_id: uuid.UUID | None
    enabled: bool
    schedule_interval_s: int | None
    schedule_cron: str | None
    window_s: int
    min_rows: int
    column_schema: dict[str, Any]
    config: dict[str, Any]
    reference_uri: str | None
    last_check_at: datetime | None
    next_check_at: datetime | None
    created_at: datetime
    updated_at: datetime


class PredictionRow(_Request):
    features: dict[str, Any]
    prediction: Any = None
    request_id: str | None = Field(None, min_length=1, max_length=200)
    # When the request was served; the time of logging if left out.
    timestamp: datetime | None = None


class PredictionBatch(_Request):
    rows: list[PredictionRow] = Field(min_length=1)


class PredictionsLogged(BaseModel):
    batch_id: uuid.UUID
    rows: int
    first_at: datetime
    last_at: datetime


class GroundTruthRow(_Request):
    request_id: str = Field(min_length=1, max_length=200)
    value: str | int | float | bool


class GroundTruthBatch(_Request):
    rows: list[GroundTruthRow] = Field(min_length=1)


class GroundTruthLogged(BaseModel):
    rows: int


class CheckRunRead(_Read):
    id: uuid.UUID
    monitor_id: uuid.UUID
    slot_time: datetime
    trigger: str
    status: CheckStatus
    progress: float
    error: str | None
    report_id: uuid.UUID | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class DriftReportSummary(_Read):
    id: uuid.UUID
    monitor_id: uuid.UUID
    status: str
    dataset_drift: bool | None
    drift_share: float | None
    number_of_columns: int
    number_of_drifted_columns: int
    current_rows: int
    window_start: datetime | None
    window_end: datetime | None
    created_at: datetime


class DriftReportRead(DriftReportSummary):
    report: dict[str, Any]


class AlertRead(_Read):
    id: uuid.UUID
    monitor_id: uuid.UUID
    project_id: uuid.UUID
    report_id: uuid.UUID | None
    kind: str
    fingerprint: str
    severity: str
    status: AlertStatus
    title: str
    details: dict[str, Any]
    labels: dict[str, Any]
    started_at: datetime
    resolved_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: uuid.UUID | None
    updated_at: datetime
