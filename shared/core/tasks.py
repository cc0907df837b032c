"""Platform-wide tasks: the outbox relay."""

from __future__ import annotations

from shared.core import events
from shared.core.celery_app import celery_app, database


@celery_app.task(name="events.relay", ignore_result=True)
def relay_events() -> int:
    total = 0
    while True:
        with database().session_scope() as session:
            published = events.relay_pending(session, lambda task, event_ids: celery_app.send_task(task, [event_ids]))
        total += published
        if published == 0:
            return total
