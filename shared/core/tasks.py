"""Platform-wide tasks: the outbox relay and its pruning."""

from __future__ import annotations

from datetime import timedelta

from celery import current_app, shared_task

from shared.core import events, quarantine
from shared.core.celery_app import BROKER_ERRORS, Declarations, Periodic, database, settings
from shared.db.base import utcnow

RELAY_BATCH = 500
# Rows per pruning transaction: short transactions, so relays and writers never wait long.
PRUNE_BATCH = 5_000

# The periodic relay is the guarantee behind the after-commit nudge; prune hourly.
DECLARATIONS = Declarations(
    periodic=[
        Periodic("events-relay", "events.relay", lambda _settings: 2.0, expires=False),
        Periodic("events-prune", "events.prune", lambda _settings: 3600.0),
    ]
)


@shared_task(name="events.relay", ignore_result=True)
def relay_events() -> int:
    """Publish pending events, a batch per transaction, until a batch comes back short (the backlog
    is drained; what commits meanwhile brings its own nudge)."""
    current = settings()
    total = 0
    while True:
        with database().session_scope() as session:
            published = events.relay_pending(
                session,
                _publish,
                limit=RELAY_BATCH,
                max_attempts=current.quarantine_max_attempts,
                broker_errors=BROKER_ERRORS,
            )
        total += published
        if published < RELAY_BATCH:
            break
    _requeue_replays()
    return total


def _publish(task: str, item_ids: list[str]) -> None:
    current_app.send_task(task, [item_ids])


def _requeue_replays() -> None:
    """Items replayed through the API go back to their consumers, each alone (the replay's commit
    nudges this relay, and beat runs it every few seconds)."""
    with database().session_scope() as session:
        for consumer, item_id in quarantine.due_replays(session):
            _publish(consumer, [str(item_id)])


@shared_task(name="events.prune", ignore_result=True)
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
