"""How predictions served by the gateway reach the monitor linked to their deployment.

The link is one column, `model_monitoring.deployment_id`: the deployer's and the monitor's APIs both set and
clear it through `link_monitor` here, and both show it. A deployment has at most one linked monitor.

The gateway's flusher queues its served requests in the database as they came (`served_request`: request
and answer bodies, time, request id; `queue_rows`), so that serving pays for no parsing; the monitor's ingest
task takes queued batches (`take_batches`), turns them into the monitor's rows (`batch_rows`: each input row
paired with its prediction), logs those to the linked monitor and deletes the batches in the same
transaction. Neither service calls the other, and a slow or stopped monitor only lets the batches wait.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Exists, exists, select, update
from sqlalchemy.orm import Session

from shared.core.errors import NotFound
from shared.db.models import Deployment, ModelMonitoring, ServedPredictionBatch


def linked_monitor(session: Session, deployment_id: uuid.UUID) -> ModelMonitoring | None:
    return session.scalars(
        select(ModelMonitoring)
        .where(ModelMonitoring.deployment_id == deployment_id, ModelMonitoring.deleted_at.is_(None))
        .order_by(ModelMonitoring.created_at)
        .limit(1)
    ).first()


def linked_monitor_ids(session: Session, deployment_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    """deployment id -> its linked monitor's id, for those of `deployment_ids` that have one (one query)."""
    rows = session.execute(
        select(ModelMonitoring.deployment_id, ModelMonitoring.id)
        .where(ModelMonitoring.deployment_id.in_(deployment_ids), ModelMonitoring.deleted_at.is_(None))
        .order_by(ModelMonitoring.created_at.desc())
    ).all()
    # Oldest last, so it wins, as in `linked_monitor`. (No None key: IN matches no NULL.)
    return {deployment_id: monitor_id for deployment_id, monitor_id in rows if deployment_id is not None}


def has_linked_monitor() -> Exists:
    """A correlated condition on `Deployment`: some live monitor watches it (for the gateway's routing query)."""
    return exists().where(ModelMonitoring.deployment_id == Deployment.id, ModelMonitoring.deleted_at.is_(None))


def link_monitor(session: Session, deployment: Deployment, monitor_id: uuid.UUID | None) -> None:
    """Make `monitor_id` the deployment's one monitor (None: no monitor). The monitor must be a live one of the
    deployment's project; a monitor linked to another deployment moves to this one."""
    others = update(ModelMonitoring).where(ModelMonitoring.deployment_id == deployment.id)
    if monitor_id is not None:
        others = others.where(ModelMonitoring.id != monitor_id)
    session.execute(others.values(deployment_id=None).execution_options(synchronize_session="fetch"))
    if monitor_id is None:
        return
    monitor = session.get(ModelMonitoring, monitor_id)
    if monitor is None or monitor.deleted_at is not None or monitor.project_id != deployment.project_id:
        raise NotFound(f"Monitor '{monitor_id}' does not exist in the deployment's project")
    monitor.deployment_id = deployment.id


# --- the queue between the gateway and the monitor ---------------------------------------------------------


def queue_rows(session: Session, deployment_id: uuid.UUID, rows: list[dict[str, Any]], now: datetime) -> None:
    """Queue served requests (`served_request`) or rows already in the monitor's shape."""
    batch = ServedPredictionBatch(deployment_id=deployment_id, row_count=len(rows), rows=rows, created_at=now)
    session.add(batch)


def take_batches(session: Session, limit: int) -> list[ServedPredictionBatch]:
    """The oldest queued batches, locked (SKIP LOCKED: concurrent ingest tasks split the queue)."""
    return list(
        session.scalars(
            select(ServedPredictionBatch)
            .order_by(ServedPredictionBatch.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )


# --- served requests as the monitor's rows ------------------------------------------------------------------


def served_request(record: dict[str, Any]) -> dict[str, Any] | None:
    """What is queued of one request the gateway served (a record of its prediction log): the bodies as they
    came, the time and the request id; None for a failed request, which has no predictions to log."""
    if record["status_code"] != 200:
        return None
    return {
        "request": record["request"].decode("utf-8", "replace"),
        "response": record["response"].decode("utf-8", "replace"),
        "timestamp": record["timestamp"],
        "request_id": record.get("request_id"),
    }


def batch_rows(queued: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The monitor's rows of a queued batch: its served requests' rows (`served_rows`), and rows queued in the
    monitor's shape as they are."""
    rows: list[dict[str, Any]] = []
    for item in queued:
        if "request" in item:
            rows += served_rows(item)
        else:
            rows.append(item)
    return rows


def served_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The monitor's rows (`features`, `prediction`, `timestamp`, `request_id`) for one served request: its
    input rows paired with their predictions. Failed requests, and payloads whose rows cannot be paired with
    their predictions, give none."""
    if record.get("status_code", 200) != 200:
        return []
    try:
        features = _feature_rows(orjson.loads(record["request"]))
        predictions = _prediction_list(orjson.loads(record["response"]))
    except orjson.JSONDecodeError:
        return []
    if features is None or predictions is None or len(features) != len(predictions):
        return []
    timestamp = datetime.fromtimestamp(record["timestamp"], UTC).isoformat()
    rows = [
        {"features": row, "prediction": prediction, "timestamp": timestamp}
        for row, prediction in zip(features, predictions, strict=True)
    ]
    if request_id := record.get("request_id"):
        # One id per row: the request's own for a single row, `<id>:<row index>` for a batch.
        for index, row in enumerate(rows):
            row["request_id"] = request_id if len(rows) == 1 else f"{request_id}:{index}"
    return rows


def _feature_rows(request: Any) -> list[dict[str, Any]] | None:
    """Input rows as {column: value} from any request shape the model server accepts (MLflow or V2)."""
    if not isinstance(request, dict):
        return None
    if isinstance(split := request.get("dataframe_split"), dict):
        columns = split.get("columns") or [str(index) for index in range(len((split.get("data") or [[]])[0]))]
        return [dict(zip(columns, row, strict=False)) for row in split.get("data") or []]
    inputs = request.get("inputs")
    if isinstance(inputs, dict):
        columns = list(inputs)
        return [dict(zip(columns, values, strict=False)) for values in zip(*inputs.values(), strict=False)]
    if isinstance(inputs, list) and inputs and all(isinstance(item, dict) and "data" in item for item in inputs):
        # Open Inference Protocol: one named tensor per column.
        columns = [item.get("name") for item in inputs]
        tensors = (item["data"] for item in inputs)
        return [dict(zip(columns, values, strict=False)) for values in zip(*tensors, strict=False)]
    records = request.get("dataframe_records", request.get("instances", inputs))
    if isinstance(records, list):
        return [row if isinstance(row, dict) else {"input": row} for row in records]
    return None


def _prediction_list(answer: Any) -> list[Any] | None:
    if isinstance(answer, dict):
        predictions = answer.get("predictions")
        if predictions is None and answer.get("outputs"):
            predictions = answer["outputs"][0].get("data")
        return predictions if isinstance(predictions, list) else None
    return answer if isinstance(answer, list) else None
