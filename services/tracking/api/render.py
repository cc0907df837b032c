"""Domain objects -> MLflow's protobuf JSON (snake_case fields, int64 as numbers, which the client's
parser accepts, and NaN/Infinity as the strings protobuf JSON uses)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from sqlalchemy import Row

from services.tracking.domain.experiments import ExperimentView
from services.tracking.domain.ids import format_model_id
from services.tracking.domain.logged_models import LoggedModelView
from services.tracking.domain.runs import RunView
from shared.db.models import ExperimentRun


def double(value: float | None) -> float | str | None:
    if value is None or not math.isfinite(value):
        if value is None or math.isnan(value):
            return "NaN"
        return "Infinity" if value > 0 else "-Infinity"
    return value


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def lifecycle(deleted_at: datetime | None) -> str:
    return "active" if deleted_at is None else "deleted"


def experiment(view: ExperimentView) -> dict[str, Any]:
    e = view.experiment
    return {
        "experiment_id": e.id.hex,
        "name": e.name,
        "artifact_location": e.artifact_location,
        "lifecycle_stage": lifecycle(e.deleted_at),
        "last_update_time": epoch_ms(e.updated_at),
        "creation_time": epoch_ms(e.created_at),
        "tags": [{"key": k, "value": v} for k, v in view.tags],
    }


def run_info(run: ExperimentRun | Row) -> dict[str, Any]:
    info = {
        "run_id": run.id.hex,
        "run_uuid": run.id.hex,
        "run_name": run.name or "",
        "experiment_id": run.experiment_id.hex,
        "user_id": run.user_name or "",
        "status": run.status,
        "start_time": run.start_time,
        "artifact_uri": run.artifact_uri,
        "lifecycle_stage": lifecycle(run.deleted_at),
    }
    if run.end_time is not None:
        info["end_time"] = run.end_time
    return info


def run(view: RunView) -> dict[str, Any]:
    return {
        "info": run_info(view.run),
        "data": {
            "metrics": [
                {"key": m.key, "value": double(m.value), "timestamp": m.timestamp, "step": m.step} for m in view.metrics
            ],
            "params": [{"key": k, "value": v} for k, v in view.params],
            "tags": [{"key": k, "value": v} for k, v in view.tags],
        },
        "inputs": {
            "dataset_inputs": [
                {
                    "tags": [{"key": k, "value": v} for k, v in d.tags.items()],
                    "dataset": {
                        "name": d.dataset.name,
                        "digest": d.dataset.digest,
                        "source_type": d.dataset.source_type,
                        "source": d.dataset.source,
                        **({"schema": d.dataset.schema} if d.dataset.schema else {}),
                        **({"profile": d.dataset.profile} if d.dataset.profile else {}),
                    },
                }
                for d in view.dataset_inputs
            ],
            "model_inputs": [{"model_id": m} for m in view.model_inputs],
        },
        "outputs": {"model_outputs": [{"model_id": m, "step": step} for m, step in view.model_outputs]},
    }


def history_point(key: str | None, value: float | None, is_nan: bool, timestamp: int, step: int) -> dict[str, Any]:
    return {"key": key, "value": "NaN" if is_nan else double(value), "timestamp": timestamp, "step": step}


def history_points(key: str | None, rows: list) -> list[dict[str, Any]]:
    """history_point over rows of (value, is_nan, timestamp, step, ...), inlined for the finite values
    (`v - v == 0` is false only for NaN and infinities): a history page has tens of thousands."""
    return [
        {"key": key, "value": row[0], "timestamp": row[2], "step": row[3]}
        if not row[1] and row[0] - row[0] == 0
        else history_point(key, row[0], row[1], row[2], row[3])
        for row in rows
    ]


def logged_model(view: LoggedModelView) -> dict[str, Any]:
    m = view.model
    info: dict[str, Any] = {
        "model_id": format_model_id(m.id),
        "experiment_id": m.experiment_id.hex,
        "name": m.name,
        "creation_timestamp_ms": epoch_ms(m.created_at),
        "last_updated_timestamp_ms": epoch_ms(m.updated_at),
        "artifact_uri": m.artifact_location,
        "status": m.status,
        "tags": [{"key": k, "value": v} for k, v in view.tags],
    }
    if m.model_type:
        info["model_type"] = m.model_type
    if m.source_run_id:
        info["source_run_id"] = m.source_run_id.hex
    if m.status_message:
        info["status_message"] = m.status_message
    metrics = []
    for point in view.metrics:
        metric = history_point(point.key, point.value, point.is_nan, point.timestamp, point.step)
        metric["model_id"] = info["model_id"]
        if point.run_id:
            metric["run_id"] = point.run_id.hex
        if point.dataset_name:
            metric["dataset_name"] = point.dataset_name
        if point.dataset_digest:
            metric["dataset_digest"] = point.dataset_digest
        metrics.append(metric)
    return {
        "info": info,
        "data": {"params": [{"key": k, "value": v} for k, v in view.params], "metrics": metrics},
    }
