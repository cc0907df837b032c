"""Platform events through a transactional outbox.

`emit()` writes the event in the caller's transaction, so an event exists if and only if the change
that caused it was committed. A relay publishes unpublished events to the subscribed Celery tasks and
marks them published; it runs right after commit (a nudge) and periodically from beat (the guarantee),
so neither a dead worker nor a restarted Redis loses an event. A subscriber task receives a list of
event ids (a burst costs a few messages, not one per event). Delivery is at-least-once: subscribers
dedupe by event id.

A subscriber may take events directly (`subscribe(..., direct=True)`): an event whose only subscriber
it is goes from the committing process straight to that task, ids in hand, with no relay in between;
the subscriber marks it published when it handles it (`mark_published`). The relay remains the
guarantee: an event still unpublished `HAND_OFF_GRACE` after its commit (the message was lost, the
broker was down) is published as any other.
"""

from __future__ import annotations

import fnmatch
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import delete, event, select, update
from sqlalchemy.orm import Session

from shared.core import quarantine
from shared.db.base import utcnow
from shared.db.models import OutboxEvent
from shared.db.session import affected_rows

log = structlog.get_logger(__name__)

_OUTBOX_DIRTY = "tessera_outbox_dirty"
# (event id, event type) of the events written in the session's transaction.
_EMITTED = "tessera_outbox_emitted"
# How long the relay leaves a directly handed-off event to its subscriber: far longer than handling
# takes, so the relay publishes only what was lost (or is still queued behind a backlog this long).
HAND_OFF_GRACE = timedelta(seconds=10)

# (event type pattern, Celery task name); filled by the services' tasks modules at import.
_subscriptions: list[tuple[str, str]] = []
_direct_tasks: set[str] = set()
# Called after a commit that wrote events, with the (id, type) of each and whether the relay was asked
# for (`relay_after_commit`); the Celery app installs one that hands them off or nudges the relay.
CommitHook = Callable[[list[tuple[uuid.UUID, str]], bool], None]
_after_commit_hooks: list[CommitHook] = []


def subscribe(pattern: str, task_name: str, *, direct: bool = False) -> None:
    if (pattern, task_name) not in _subscriptions:
        _subscriptions.append((pattern, task_name))
    if direct:
        _direct_tasks.add(task_name)


def subscribers(event_type: str) -> list[str]:
    return [task for pattern, task in _subscriptions if fnmatch.fnmatchcase(event_type, pattern)]


def direct_subscriber(event_type: str) -> str | None:
    """The task that takes events of this type straight after commit: only when it is their one
    subscriber (the relay would otherwise have to publish them to the others anyway)."""
    tasks = subscribers(event_type)
    return tasks[0] if len(tasks) == 1 and tasks[0] in _direct_tasks else None


def on_events_committed(hook: CommitHook) -> None:
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
    session.info.setdefault(_EMITTED, []).append((row.id, event_type))
    return row


def relay_after_commit(session: Session) -> None:
    """Nudge the relay once this transaction commits, as an emitted event does (the relay also hands
    replayed dead letters back to their consumers)."""
    session.info[_OUTBOX_DIRTY] = True


@event.listens_for(Session, "after_commit")
def _nudge_relay(session: Session) -> None:
    relay = session.info.pop(_OUTBOX_DIRTY, False)
    emitted = session.info.pop(_EMITTED, [])
    if relay or emitted:
        announce_committed(emitted, relay)


def announce_committed(emitted: list[tuple[uuid.UUID, str]], relay: bool = False) -> None:
    """What a commit does after writing events, for events written without a session (one statement on
    a connection of a hot route): hands them to their direct subscriber, else nudges the relay. Call it
    only once they are committed."""
    for hook in _after_commit_hooks:
        try:
            hook(emitted, relay)
        except Exception as exc:  # the periodic relay will publish it; never fail a committed request
            log.warning("outbox.nudge_failed", error=str(exc))


@event.listens_for(Session, "after_rollback")
def _forget_events(session: Session) -> None:
    session.info.pop(_OUTBOX_DIRTY, None)
    session.info.pop(_EMITTED, None)


def route_committed(emitted: list[tuple[uuid.UUID, str]]) -> tuple[dict[str, list[str]], bool]:
    """Committed events as the ids to hand to each direct subscriber's task, and whether any is left
    for the relay."""
    hand_off: dict[str, list[str]] = defaultdict(list)
    relay = False
    for event_id, event_type in emitted:
        task = direct_subscriber(event_type)
        if task is None:
            relay = True
        else:
            hand_off[task].append(str(event_id))
    return dict(hand_off), relay


def mark_published(session: Session, event_ids: list[uuid.UUID], now: datetime) -> None:
    """A direct subscriber took these events: the relay need not publish them (those it did already
    keep their time)."""
    outbox = OutboxEvent.__table__
    session.execute(
        update(outbox)
        .where(outbox.c.id.in_(event_ids), outbox.c.published_at.is_(None))
        .values(published_at=now, publish_attempts=outbox.c.publish_attempts + 1)
    )


RELAY_CONSUMER = quarantine.Consumer("events.relay", OutboxEvent.id, OutboxEvent.organization_id)


def relay_pending(
    session: Session,
    publish: Callable[[str, list[str]], None],
    *,
    limit: int = 500,
    per_message: int = 100,
    max_attempts: int = 5,
    broker_errors: tuple[type[BaseException], ...] = (),
) -> int:
    """Publish up to `limit` unpublished events, oldest first; returns how many.

    One statement marks them published (rows locked with SKIP LOCKED, so concurrent relays split the
    work instead of double-sending); each subscriber then gets one message per `per_message` events,
    `publish(task_name, event_ids)`, not one per event. `publish` failing to reach the broker aborts the
    batch: the transaction rolls back and the events stay unpublished. Any other failure is an event's
    own: its message's events are published one by one, and those that fail alone stay unpublished
    with a dead letter (quarantined after `max_attempts`, then no longer picked).
    """
    outbox = OutboxEvent.__table__
    oldest = session.execute(
        select(outbox.c.id, outbox.c.event_type, outbox.c.created_at)
        .where(outbox.c.published_at.is_(None), ~quarantine.quarantined(RELAY_CONSUMER.task, outbox.c.id))
        .order_by(outbox.c.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    # Events handed to their subscriber at commit are its own for a while (see HAND_OFF_GRACE).
    handed_off_since = utcnow() - HAND_OFF_GRACE
    due = [
        row.id
        for row in oldest
        if _aware(row.created_at) < handed_off_since or direct_subscriber(row.event_type) is None
    ]
    if not due:
        return 0
    # On the table, not the mapped class: plain rows back, no ORM bookkeeping per event.
    rows = session.execute(
        update(outbox)
        .where(outbox.c.id.in_(due))
        .values(published_at=utcnow(), publish_attempts=outbox.c.publish_attempts + 1)
        .returning(outbox.c.id, outbox.c.event_type, outbox.c.created_at)
    ).all()
    tasks_of = {event_type: subscribers(event_type) for event_type in {row.event_type for row in rows}}
    by_task: dict[str, list[str]] = defaultdict(list)
    for row in sorted(rows, key=lambda row: row.created_at):
        for task_name in tasks_of[row.event_type]:
            by_task[task_name].append(str(row.id))
    failed: dict[str, str] = {}

    def publish_isolated(task_name: str, event_ids: list[str]) -> None:
        try:
            publish(task_name, event_ids)
        except Exception as exc:
            if quarantine.is_transient(exc, broker_errors):
                raise
            if len(event_ids) > 1:
                for event_id in event_ids:
                    publish_isolated(task_name, [event_id])
            else:
                failed[event_ids[0]] = f"{type(exc).__name__}: {exc}"

    for task_name, event_ids in by_task.items():
        for start in range(0, len(event_ids), per_message):
            publish_isolated(task_name, event_ids[start : start + per_message])
    if failed:
        now = utcnow()
        session.execute(
            update(outbox)
            .where(outbox.c.id.in_([uuid.UUID(event_id) for event_id in failed]))
            .values(published_at=None)
        )
        for event_id, error in failed.items():
            quarantine.record_failure(session, RELAY_CONSUMER, uuid.UUID(event_id), error, now, max_attempts)
    return len(rows) - len(failed)


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive UTC times.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def prune_published(session: Session, before: datetime, *, limit: int) -> int:
    """Delete up to `limit` events published before `before`; returns how many. Unpublished events stay,
    however old."""
    outbox = OutboxEvent.__table__
    oldest = select(outbox.c.id).where(outbox.c.published_at < before).limit(limit)
    return affected_rows(session.execute(delete(outbox).where(outbox.c.id.in_(oldest))))
