"""Predictions served by the gateway, logged to the monitor linked to their deployment.

The gateway queues them in the database (`shared.core.served_predictions`); this takes the oldest queued
batches, pairs their input rows with their predictions, logs each batch as one file of the linked monitor,
and deletes it, in the caller's transaction: a batch
is logged once, and stays queued until a commit says it was. Rows are matched to the monitor's schema by
name: request columns the monitor does not watch are left out; a batch lacking a watched column is not
logged (it would be refused the same way at every try) and is counted. A failure to write a file (the
artifact store unreachable) fails the whole transaction instead: the batches stay queued for the next run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import structlog
from prometheus_client import Counter
from pydantic import ValidationError
from sqlalchemy.orm import Session

from services.monitor.domain import predictions
from services.monitor.schemas import PredictionRow
from shared.core import served_predictions
from shared.core.artifacts import ArtifactStore
from shared.core.errors import InvalidParameter
from shared.core.metrics import REGISTRY
from shared.db.models import ModelMonitoring, ServedPredictionBatch

log = structlog.get_logger(__name__)

SERVED_ROWS = Counter(
    "tessera_monitor_served_rows_total",
    "Rows served by the gateway and logged to the linked monitor (logged), refused by its schema (refused), "
    "or served while no monitor was linked (unlinked)",
    ["result"],
    registry=REGISTRY,
)


@dataclass
class IngestOutcome:
    batches: int = 0
    logged: int = 0
    refused: int = 0
    unlinked: int = 0
    written: list[str] = field(default_factory=list)


def ingest(session: Session, store: ArtifactStore, now: datetime, outcome: IngestOutcome, limit: int = 50) -> None:
    """Log and delete up to `limit` queued batches, counted in `outcome`, whose `written` names the files
    written (to delete if the transaction fails)."""
    for batch in served_predictions.take_batches(session, limit):
        monitor = served_predictions.linked_monitor(session, batch.deployment_id)
        if monitor is None:
            outcome.unlinked += batch.row_count
        else:
            _log_to(session, store, monitor, batch, now, outcome)
        session.delete(batch)
        outcome.batches += 1
    session.flush()
    for result in ("logged", "refused", "unlinked"):
        SERVED_ROWS.labels(result).inc(getattr(outcome, result))


def _log_to(
    session: Session,
    store: ArtifactStore,
    monitor: ModelMonitoring,
    batch: ServedPredictionBatch,
    now: datetime,
    outcome: IngestOutcome,
) -> None:
    queued = served_predictions.batch_rows(batch.rows)
    if not queued:
        return  # served requests none of whose rows could be paired with predictions: nothing to log
    try:
        watched = set(monitor.column_schema["columns"]) - {predictions.prediction_column(monitor)}
        rows = [
            PredictionRow.model_validate(
                row | {"features": {name: value for name, value in row["features"].items() if name in watched}}
            )
            for row in queued
        ]
        table = predictions.rows_to_table(rows, monitor, now)
    except Exception as error:  # refused rows would be refused at every try: counted and let go, never stuck
        outcome.refused += len(queued)
        log.warning(
            "monitor.served_rows_refused",
            monitor_id=str(monitor.id),
            deployment_id=str(batch.deployment_id),
            rows=len(queued),
            reason=getattr(error, "message", str(error)),
            expected=isinstance(error, InvalidParameter | ValidationError),
        )
        return
    logged = predictions.log_batch(session, store, monitor, table, now)
    outcome.written.append(logged.storage_key)
    outcome.logged += logged.row_count
