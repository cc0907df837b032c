"""Pydantic I/O models of the native, tenant-aware tracking views (/api/v1/experiments, /api/v1/runs).

The MLflow-compatible API does not use these: it speaks MLflow's protobuf JSON (see api/render.py).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel

from shared.core.pagination import Page


class ExperimentRead(BaseModel):
    id: str
    project_id: uuid.UUID
    name: str
    artifact_location: str | None
    lifecycle_stage: str
    created_at: datetime
    updated_at: datetime
    tags: dict[str, str]


ExperimentPage = Page[ExperimentRead]


class MetricValue(BaseModel):
    key: str
    # None stands for NaN (JSON has no NaN); ±inf are rendered as strings by pydantic.
    value: float | None
    step: int
    timestamp: int


class RunRead(BaseModel):
    id: str
    experiment_id: str
    name: str | None
    status: str
    lifecycle_stage: str
    start_time: int | None
    end_time: int | None
    user: str | None
    artifact_uri: str | None
    params: dict[str, str]
    tags: dict[str, str]
    metrics: list[MetricValue]


RunPage = Page[RunRead]


class MetricSummaryRead(BaseModel):
    key: str
    latest_value: float | None
    latest_step: int
    latest_timestamp: int
    min_value: float | None
    max_value: float | None
    count: int


class RunModelVersionRead(BaseModel):
    model_id: str
    model_name: str
    version: int
    stage: str
    status: str
