"""Celery tasks of the monitor: beat's fan-out of due checks, and one check run per task (a large one
split into column shards, one task each, and a combining task); beat's fan-out of prediction-log upkeep,
and the upkeep of one monitor's files per task.

All are idempotent: a slot is claimed once in the database (see `domain.checks`), a run is claimed by
state, a shard's results are recorded once and the run's report written once, and upkeep locks the index
rows it changes (SKIP LOCKED) and ignores files already gone, so a redelivered or re-sent message finds
nothing left to do. Tasks are acknowledged after they ran, so a lost worker's shard is delivered again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import structlog
from celery import current_app, shared_task

from services.monitor.domain import checks, prediction_log, predictions, served
from shared.core.artifacts import get_artifact_store
from shared.core.celery_app import Declarations, Periodic, database, settings
from shared.core.errors import TesseraError
from shared.db.base import utcnow
from shared.db.models import ModelMonitoring

log = structlog.get_logger(__name__)
INGEST_ROUNDS = 40

DECLARATIONS = Declarations(
    periodic=[
        # Due checks are read from the database at every tick; each slot is claimed once there.
        Periodic("monitor-schedule", "monitor.schedule_due_checks", lambda s: s.monitor_schedule_interval_s),
        Periodic(
            "monitor-ingest-served-predictions",
            "monitor.ingest_served_predictions",
            lambda s: s.monitor_ingest_interval_s,
        ),
        Periodic(
            "monitor-prediction-log-upkeep",
            "monitor.maintain_prediction_logs",
            lambda s: s.monitor_maintenance_interval_s,
        ),
    ]
)


def queue_checks(run_ids: Iterable[uuid.UUID]) -> None:
    for run_id in run_ids:
        current_app.send_task("monitor.run_check", [str(run_id)])


@shared_task(name="monitor.schedule_due_checks", ignore_result=True)
def schedule_due_checks() -> None:
    current = settings()
    with database().session_scope() as session:
        run_ids = checks.claim_due_slots(session, utcnow())
    queue_checks(run_ids)
    with database().session_scope() as session:
        stranded = checks.stranded_runs(
            session,
            utcnow(),
            timedelta(seconds=current.monitor_requeue_after_s),
            timedelta(seconds=current.monitor_check_lease_s),
        )
    queue_checks(stranded)


@shared_task(name="monitor.run_check", ignore_result=True)
def run_check(run_id: str) -> None:
    """Check a run's window in this task, or split it into column shards for any workers to take."""
    current = settings()
    store = get_artifact_store(current)
    db = database()
    with db.session_scope() as session:
        job = checks.start(session, uuid.UUID(run_id), utcnow(), timedelta(seconds=current.monitor_check_lease_s))
    if job is None:
        return
    with _failing_run(job.run_id):
        with db.session_scope() as session:
            shards = checks.split(
                session, store, job, current.monitor_check_shard_columns, current.monitor_drift_memory_mb
            )
        if shards:
            for number in range(shards):
                current_app.send_task("monitor.run_check_shard", [run_id, number, job.window_end.isoformat()])
            return

        # One short session per step: status and progress are visible to the API as they change, and
        # no row stays locked while the window is read and the report computed.
        def progress(share: float) -> None:
            with db.session_scope() as session:
                checks.set_progress(session, job.run_id, 0.1 + 0.8 * share)

        with db.session_scope() as session:
            window = checks.read_window(session, store, job)
            progress(0.0)
            # A group of columns at a time, the progress after each.
            result = checks.compute(
                session, store, job, window, current.monitor_drift_memory_mb, progress, current.monitor_drift_threads
            )
        with db.session_scope() as session:
            checks.finish(session, job, result, utcnow(), current.public_url)


@shared_task(name="monitor.run_check_shard", ignore_result=True)
def run_check_shard(run_id: str, number: int, started_at: str) -> None:
    """One shard of a split run (of the claim made at `started_at`); the task that records the last shard
    queues the combining task. A redelivered shard finds its results recorded and only repeats that step."""
    current, db = settings(), database()
    job = _resumed(run_id, started_at)
    if job is None:
        return
    with _failing_run(job.run_id):

        def progress(amount: float) -> None:
            with db.session_scope() as session:
                checks.add_progress(session, job.run_id, checks.SHARDS_PROGRESS * amount)

        with db.session_scope() as session:
            result = checks.compute_shard(
                session,
                get_artifact_store(current),
                job,
                number,
                current.monitor_drift_memory_mb,
                progress,
                current.monitor_drift_threads,
            )
        with db.session_scope() as session:
            complete = checks.record_shard(session, job.run_id, number, result, utcnow())
        if complete:
            current_app.send_task("monitor.combine_check", [run_id, started_at])


@shared_task(name="monitor.combine_check", ignore_result=True)
def combine_check(run_id: str, started_at: str) -> None:
    """The report of a split run from its shards, written once (a second delivery finds the run done)."""
    current, db = settings(), database()
    job = _resumed(run_id, started_at)
    if job is None:
        return
    with _failing_run(job.run_id):
        with db.session_scope() as session:
            result = checks.combine(session, get_artifact_store(current), job)
        with db.session_scope() as session:
            checks.finish(session, job, result, utcnow(), current.public_url)


def _resumed(run_id: str, started_at: str) -> checks.CheckJob | None:
    with database().session_scope() as session:
        return checks.resume(session, uuid.UUID(run_id), datetime.fromisoformat(started_at))


@contextmanager
def _failing_run(run_id: uuid.UUID) -> Iterator[None]:
    """An error fails the run, recorded on it for the API; a domain refusal is expected input, anything
    else is a bug and logged."""
    try:
        yield
    except Exception as error:
        if not isinstance(error, TesseraError):
            log.exception("monitor.check_failed", run_id=str(run_id))
        with database().session_scope() as session:
            checks.fail(session, run_id, getattr(error, "message", None) or repr(error), utcnow())


@shared_task(name="monitor.ingest_served_predictions", ignore_result=True)
def ingest_served_predictions() -> None:
    """Log the gateway's queued predictions to their deployments' monitors, a few batches per transaction,
    until the queue is empty or after INGEST_ROUNDS transactions (concurrent runs take different batches)."""
    store = get_artifact_store(settings())
    # Bounded, so steady traffic cannot keep one run going forever; beat's next tick takes the rest.
    for _ in range(INGEST_ROUNDS):
        outcome = served.IngestOutcome()
        try:
            with database().session_scope() as session:
                served.ingest(session, store, utcnow(), outcome)
        except Exception:
            # The files were written but their index rows never committed; the batches stay queued.
            predictions.delete_files(store, outcome.written)
            raise
        if outcome.batches == 0:
            return


@shared_task(name="monitor.maintain_prediction_logs", ignore_result=True)
def maintain_prediction_logs() -> None:
    with database().session_scope() as session:
        monitor_ids = prediction_log.monitors_to_maintain(session)
    queue_maintenance(monitor_ids)


def queue_maintenance(monitor_ids: Iterable[uuid.UUID]) -> None:
    for monitor_id in monitor_ids:
        current_app.send_task("monitor.maintain_prediction_log", [str(monitor_id)])


@shared_task(name="monitor.maintain_prediction_log", ignore_result=True)
def maintain_prediction_log(monitor_id: str) -> None:
    """Purge a deleted monitor's files; else drop expired files, compact small ones, sweep orphans and
    replaced reference versions.
    Each step deletes files only after its index change committed, and the files it wrote if it failed."""
    upkeep = settings()
    store = get_artifact_store(upkeep)
    db = database()
    with db.session_scope() as session:
        monitor = session.get(ModelMonitoring, uuid.UUID(monitor_id))
        if monitor is None:
            return
        deleted = monitor.deleted_at is not None
        purged = prediction_log.purge_deleted(session, monitor)
    if purged is not None:
        predictions.delete_files(store, [purged])
    if deleted:
        return
    with db.session_scope() as session:
        monitor = session.get_one(ModelMonitoring, uuid.UUID(monitor_id))
        expired = prediction_log.expire(session, monitor, utcnow(), upkeep.monitor_retention_days)
    predictions.delete_files(store, expired.replaced)
    compacted = prediction_log.FileChanges()
    try:
        with db.session_scope() as session:
            monitor = session.get_one(ModelMonitoring, uuid.UUID(monitor_id))
            compacted = prediction_log.compact(session, store, monitor, utcnow(), upkeep.monitor_compaction_target_rows)
    except Exception:
        # The merged files were written but their index rows never committed.
        predictions.delete_files(store, compacted.written)
        raise
    predictions.delete_files(store, compacted.replaced)
    with db.session_scope() as session:
        monitor = session.get_one(ModelMonitoring, uuid.UUID(monitor_id))
        grace = timedelta(seconds=upkeep.monitor_orphan_grace_s)
        orphans = prediction_log.orphan_keys(session, store, monitor, utcnow(), grace)
        orphans += prediction_log.stale_reference_keys(session, store, monitor, utcnow(), grace)
    predictions.delete_files(store, orphans)
