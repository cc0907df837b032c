"""Platform-wide tasks: the outbox relay."""

from __future__ import annotations

from shared.core import events
from shared.core.celery_app import celery_app, database

RELAY_BATCH = 500


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
