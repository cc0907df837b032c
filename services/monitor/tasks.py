"""Celery tasks of the monitor: beat's fan-out of due checks, and one check run per task.

Both are idempotent: a slot is claimed once in the database (see `domain.checks`), and a run is
claimed by state, so a redelivered or re-sent message finds nothing left to do.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import timedelta

import structlog

from services.monitor.domain import checks
from shared.core.artifacts import get_artifact_store
from shared.core.celery_app import celery_app, database, settings
from shared.core.errors import TesseraError
from shared.db.base import utcnow

log = structlog.get_logger(__name__)


def queue_checks(run_ids: Iterable[uuid.UUID]) -> None:
    for run_id in run_ids:
        celery_app.send_task("monitor.run_check", [str(run_id)])


@celery_app.task(name="monitor.schedule_due_checks", ignore_result=True)
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


@celery_app.task(name="monitor.run_check", ignore_result=True)
def run_check(run_id: str) -> None:
    current = settings()
    store = get_artifact_store(current)
    db = database()
    with db.session_scope() as session:
        job = checks.start(session, uuid.UUID(run_id), utcnow(), timedelta(seconds=current.monitor_check_lease_s))
    if job is None:
        return
    try:
        # One short session per step: status and progress are visible to the API as they change, and
        # no row stays locked while the window is read and the report computed.
        with db.session_scope() as session:
            window = checks.read_window(session, store, job)
        with db.session_scope() as session:
            checks.set_progress(session, job.run_id, 0.5)
        with db.session_scope() as session:
            result = checks.compute(session, store, job, window)
        with db.session_scope() as session:
            checks.finish(session, job, result, utcnow(), current.public_url)
    except Exception as error:
        # Recorded on the run for the API; a domain refusal is expected input, anything else is a bug.
        if not isinstance(error, TesseraError):
            log.exception("monitor.check_failed", run_id=run_id)
        with db.session_scope() as session:
            checks.fail(session, job.run_id, getattr(error, "message", None) or repr(error), utcnow())
