"""Celery tasks of the notifier: ids in, a short session each, the domain does the work.

Every task is idempotent, because the broker may deliver twice and the sweeper re-queues what a
lost message or a dead worker left behind: events are claimed by id, deliveries by state and lease,
periodic runs by interval. Tasks are queued only after the transaction that made them due commits.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache

from celery import current_app, shared_task
from sqlalchemy.orm import Session

from services.notifier.domain import attempt_log, dispatch, grouping, intake, periodic, pipeline
from shared.core import quarantine
from shared.core.celery_app import BROKER_ERRORS, Declarations, Periodic, database, run_screened, settings
from shared.core.crypto import SecretBox
from shared.db.base import utcnow
from shared.db.models import Delivery

DECLARATIONS = Declarations(
    # Every event may match some organization's rule; the handler drops the rest cheaply. Events reach it
    # straight from the process that committed them (the relay only publishes what such a hand-off lost).
    direct_subscriptions=[("*", "notifier.handle_events")],
    # Group timers and the retry sweeper.
    periodic=[
        Periodic("notifier-flush", "notifier.flush", lambda s: s.notifier_flush_interval_s),
        Periodic("notifier-sweep", "notifier.sweep", lambda s: s.notifier_sweep_interval_s),
    ],
    # Deliveries have a queue of their own: they never wait behind a backlog of events or checks, and a
    # deployment may give them dedicated workers (`tessera worker --queues notifier.dispatch`).
    routes={"notifier.dispatch": "notifier.dispatch"},
)
EVENTS_CONSUMER = intake.EVENTS_CONSUMER
DISPATCH_CONSUMER = quarantine.Consumer("notifier.dispatch", Delivery.id, Delivery.organization_id)
FLUSH_CONSUMER = grouping.FLUSH_CONSUMER

FLUSH_BATCH = 200
# Events per message when the sweeper re-queues lost ones (the relay sends batches of its own).
EVENT_BATCH = 100
# Deliveries per dispatch message: sent concurrently, recorded in one transaction.
DISPATCH_BATCH = 50
# A group_wait ending within this horizon gets a timer message of its own (a Celery countdown, held by a
# worker until due, idempotent like every flush); a later one is left to the periodic flush.
TIMER_HORIZON_S = 600.0


@lru_cache(maxsize=4)
def _secret_box(keys: tuple[str, ...]) -> SecretBox:
    return SecretBox(keys)


def _box() -> SecretBox:
    return _secret_box(tuple(settings().encryption_keys))


def _queue_dispatch(delivery_ids: Sequence[uuid.UUID]) -> None:
    ids = [str(delivery_id) for delivery_id in delivery_ids]
    for start in range(0, len(ids), DISPATCH_BATCH):
        current_app.send_task("notifier.dispatch", [ids[start : start + DISPATCH_BATCH]])


@shared_task(name="notifier.handle_events", ignore_result=True)
def handle_events(event_ids: list[str]) -> None:
    """A batch of events from the relay (or the sweeper) in one transaction; those already handled
    drop out, so a redelivered message costs one statement. An event that fails the batch is retried
    alone and, failing still, quarantined (`shared.core.quarantine`), which the handler's transaction
    checks first."""
    run_screened(EVENTS_CONSUMER, event_ids, _handle_events)


def _handle_events(event_ids: list[uuid.UUID], screen: quarantine.Screen) -> None:
    """Rules, groups and, for groups due now, the deliveries, created claimed in the same transaction and
    sent by this task right after it commits: no queue between an event and its webhook. A worker that dies
    before recording the outcome leaves them in flight; the sweeper sends them again once the lease
    runs out, with the same notification id."""
    current = settings()
    retry = attempt_log.RetryPolicy.from_settings(current)
    with database().session_scope() as session:
        runnable = screen(session, event_ids)
        if not runnable:
            return
        now = utcnow()
        handled = pipeline.handle_events(session, runnable, _box(), now, current.public_url, now + retry.lease)
    _start_timers(handled.timers, now)
    _send_and_record(handled.claimed, retry)


def _start_timers(timers: dict[uuid.UUID, datetime], now: datetime) -> None:
    """A flush at the end of each new group's group_wait, by timer rather than the next periodic tick;
    groups ending at the same moment share a message. Losing one costs only the timer's precision: the
    periodic flush still finds the group due."""
    by_moment: dict[datetime, list[str]] = defaultdict(list)
    for group_id, due_at in timers.items():
        if (due_at - now).total_seconds() <= TIMER_HORIZON_S:
            by_moment[due_at].append(str(group_id))
    for due_at, group_ids in by_moment.items():
        try:
            current_app.send_task("notifier.flush_groups", [group_ids], eta=due_at)
        except BROKER_ERRORS:
            return


@shared_task(name="notifier.dispatch", ignore_result=True)
def dispatch_deliveries(delivery_ids: list[str]) -> None:
    """Claims the due ones among its deliveries (others are delivered, or in flight elsewhere), sends
    them in parallel and records the outcomes in one transaction; isolated as `handle_events` is."""
    run_screened(DISPATCH_CONSUMER, delivery_ids, _dispatch)


def _dispatch(delivery_ids: list[uuid.UUID], screen: quarantine.Screen) -> None:
    retry = attempt_log.RetryPolicy.from_settings(settings())
    with database().session_scope() as session:
        claimed = _claim(session, screen(session, delivery_ids), retry, utcnow())
    _send_and_record(claimed, retry)


def _claim(
    session: Session, delivery_ids: Sequence[uuid.UUID], retry: attempt_log.RetryPolicy, now: datetime
) -> list[dispatch.ClaimedDelivery]:
    if not delivery_ids:
        return []
    return dispatch.claim(session, delivery_ids, _box(), retry, now)


def _send_and_record(claimed: list[dispatch.ClaimedDelivery], retry: attempt_log.RetryPolicy) -> None:
    if not claimed:
        return
    started_at = utcnow()
    # Concurrently: a batch of DISPATCH_BATCH takes at most 2 send timeouts (20 s by default), well
    # inside the lease (120 s), not the sum of its sends.
    results = dispatch.send_all(claimed, settings(), started_at)
    with database().session_scope() as session:
        attempt_log.record(
            session, list(zip(claimed, results, strict=True)), started_at=started_at, retry=retry, now=utcnow()
        )


def _claim_run(task: str, interval_s: float) -> bool:
    with database().session_scope() as session:
        return periodic.claim_run(session, task, interval_s, utcnow())


@shared_task(name="notifier.flush", ignore_result=True)
def flush_due_groups() -> None:
    current = settings()
    if not _claim_run("notifier.flush", current.notifier_flush_interval_s):
        return
    while True:
        try:
            with database().session_scope() as session:
                delivery_ids, flushed = pipeline.flush_due_groups(
                    session, _box(), utcnow(), current.public_url, FLUSH_BATCH
                )
        except Exception as exc:
            if quarantine.is_transient(exc, BROKER_ERRORS):
                raise
            # One group broke the batch: flush them one by one, the failing ones counted and retried
            # alone; the rest of what is due waits for the next tick.
            with database().session_scope() as session:
                group_ids = grouping.due_group_ids(session, utcnow(), FLUSH_BATCH)
            flush_groups(group_ids)
            return
        _queue_dispatch(delivery_ids)
        if flushed < FLUSH_BATCH:
            return


@shared_task(name="notifier.flush_groups", ignore_result=True)
def flush_groups(group_ids: list[str]) -> None:
    """Flush the given groups if due — at a group_wait's end (`_start_timers`), or one by one when the
    periodic flush's batch failed — and send what is due in the same task. Isolated: a group that cannot
    be flushed is retried alone, then quarantined (the periodic flush then passes it by)."""
    run_screened(FLUSH_CONSUMER, group_ids, _flush_groups)


def _flush_groups(group_ids: list[uuid.UUID], screen: quarantine.Screen) -> None:
    current = settings()
    retry = attempt_log.RetryPolicy.from_settings(current)
    with database().session_scope() as session:
        runnable = screen(session, group_ids)
        if not runnable:
            return
        now = utcnow()
        notified = pipeline.flush_due_groups_by_id(
            session, runnable, _box(), now, current.public_url, now + retry.lease
        )
    _send_and_record(notified.claimed, retry)


@shared_task(name="notifier.sweep", ignore_result=True)
def sweep() -> None:
    """Re-queue due retries, lost dispatch messages, deliveries of dead workers and unhandled events."""
    current = settings()
    if not _claim_run("notifier.sweep", current.notifier_sweep_interval_s):
        return
    retry = attempt_log.RetryPolicy.from_settings(current)
    with database().session_scope() as session:
        delivery_ids = attempt_log.due_for_dispatch(session, retry, utcnow())
    _queue_dispatch(delivery_ids)
    with database().session_scope() as session:
        event_ids = intake.sweep_unhandled_events(session, "notifier.sweep", utcnow(), retry.requeue_after)
        periodic.prune(session, utcnow())
    ids = [str(event_id) for event_id in event_ids]
    for start in range(0, len(ids), EVENT_BATCH):
        current_app.send_task("notifier.handle_events", [ids[start : start + EVENT_BATCH]])
