"""Platform events through a transactional outbox.

`emit()` writes the event in the caller's transaction, so an event exists if and only if the change
that caused it was committed. A relay publishes unpublished events to the subscribed Celery tasks and
marks them published; it runs right after commit (a nudge) and periodically from beat (the guarantee),
so neither a dead worker nor a restarted Redis loses an event. A subscriber task receives a list of
event ids (a burst costs a few messages, not one per event). Delivery is at-least-once: subscribers
dedupe by event id.
"""

from __future__ import annotations

import fnmatch
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import delete, event, select, update
from sqlalchemy.orm import Session

from shared.db.base import utcnow
from shared.db.models import OutboxEvent

log = structlog.get_logger(__name__)

_OUTBOX_DIRTY = "tessera_outbox_dirty"

# (event type pattern, Celery task name); filled by the services' tasks modules at import.
_subscriptions: list[tuple[str, str]] = []
# Called after a commit that wrote events; the Celery app installs one that queues the relay task.
_after_commit_hooks: list[Callable[[], None]] = []


def subscribe(pattern: str, task_name: str) -> None:
    if (pattern, task_name) not in _subscriptions:
        _subscriptions.append((pattern, task_name))


def subscribers(event_type: str) -> list[str]:
    return [task for pattern, task in _subscriptions if fnmatch.fnmatchcase(event_type, pattern)]


def on_events_committed(hook: Callable[[], None]) -> None:
    if hook not in _after_commit_hooks:
        _after_commit_hooks.append(hook)


def emit(
    session: Session,
    event_type: str,
    payload: dict[str, Any],
    *,
    organization_id: uuid.UUID | None,
    project_id: uuid.UUID | None = None,
) -> OutboxEvent:
    row = OutboxEvent(
        id=uuid.uuid4(),
        event_type=event_type,
        payload=payload,
        organization_id=organization_id,
        project_id=project_id,
        created_at=utcnow(),
    )
    session.add(row)
    session.info[_OUTBOX_DIRTY] = True
    return row


@event.listens_for(Session, "after_commit")
def _nudge_relay(session: Session) -> None:
    if not session.info.pop(_OUTBOX_DIRTY, False):
        return
    for hook in _after_commit_hooks:
        try:
            hook()
        except Exception as exc:  # the periodic relay will publish it; never fail a committed request
            log.warning("outbox.nudge_failed", error=str(exc))


@event.listens_for(Session, "after_rollback")
def _forget_events(session: Session) -> None:
    session.info.pop(_OUTBOX_DIRTY, None)


def relay_pending(
    session: Session, publish: Callable[[str, list[str]], None], *, limit: int = 500, per_message: int = 100
) -> int:
    """Publish up to `limit` unpublished events, oldest first; returns how many.

    One statement marks them published (rows locked with SKIP LOCKED, so concurrent relays split the
    work instead of double-sending); each subscriber then gets one message per `per_message` events,
    `publish(task_name, event_ids)`, not one per event. `publish` raising (broker down) aborts the
    batch: the transaction rolls back and the events stay unpublished.
    """
    outbox = OutboxEvent.__table__
    oldest = (
        select(outbox.c.id)
        .where(outbox.c.published_at.is_(None))
        .order_by(outbox.c.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    # On the table, not the mapped class: plain rows back, no ORM bookkeeping per event.
    rows = session.execute(
        update(outbox)
        .where(outbox.c.id.in_(oldest))
        .values(published_at=utcnow(), publish_attempts=outbox.c.publish_attempts + 1)
        .returning(outbox.c.id, outbox.c.event_type, outbox.c.created_at)
    ).all()
    tasks_of = {event_type: subscribers(event_type) for event_type in {row.event_type for row in rows}}
    by_task: dict[str, list[str]] = defaultdict(list)
    for row in sorted(rows, key=lambda row: row.created_at):
        for task_name in tasks_of[row.event_type]:
            by_task[task_name].append(str(row.id))
    for task_name, event_ids in by_task.items():
        for start in range(0, len(event_ids), per_message):
            publish(task_name, event_ids[start : start + per_message])
    return len(rows)


def prune_published(session: Session, before: datetime, *, limit: int) -> int:
    """Delete up to `limit` events published before `before`; returns how many. Unpublished events stay,
    however old."""
    outbox = OutboxEvent.__table__
    oldest = select(outbox.c.id).where(outbox.c.published_at < before).limit(limit)
    return session.execute(delete(outbox).where(outbox.c.id.in_(oldest))).rowcount
