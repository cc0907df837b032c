"""Platform-wide tasks: the outbox relay and its pruning."""

from __future__ import annotations

from datetime import timedelta

from shared.core import events
from shared.core.celery_app import celery_app, database, settings
from shared.db.base import utcnow

RELAY_BATCH = 500
# Rows per pruning transaction: short transactions, so relays and writers never wait long.
PRUNE_BATCH = 5_000


@celery_app.task(name="events.relay", ignore_result=True)
def relay_events() -> int:
    """Publish pending events, a batch per transaction, until a batch comes back short (the backlog
    is drained; what commits meanwhile brings its own nudge)."""
    total = 0
    while True:
        with database().session_scope() as session:
            published = events.relay_pending(
                session, lambda task, event_ids: celery_app.send_task(task, [event_ids]), limit=RELAY_BATCH
            )
        total += published
        if published < RELAY_BATCH:
            return total


@celery_app.task(name="events.prune", ignore_result=True)
def prune_events() -> int:
    """Delete events published longer ago than the retention, a batch per transaction; a second beat's
    run only finds less to delete."""
    before = utcnow() - timedelta(days=settings().outbox_retention_days)
    total = 0
    while True:
        with database().session_scope() as session:
            deleted = events.prune_published(session, before, limit=PRUNE_BATCH)
        total += deleted
        if deleted < PRUNE_BATCH:
            return total
