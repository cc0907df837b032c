"""Celery tasks of the notifier: ids in, a short session each, the domain does the work.

Every task is idempotent, because the broker may deliver twice and the sweeper re-queues what a
lost message or a dead worker left behind: events are claimed by id, deliveries by state and lease,
periodic runs by interval. Tasks are queued only after the transaction that made them due commits.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

from services.notifier.domain import dispatch, flushing, ingest, periodic
from shared.core import events
from shared.core.celery_app import celery_app, database, settings
from shared.core.crypto import SecretBox
from shared.db.base import utcnow

# Every event may match some organization's rule; the handler drops the rest cheaply.
events.subscribe("*", "notifier.handle_event")

FLUSH_BATCH = 200
EVENT_BATCH = 50
DISPATCH_BATCH = 20


@lru_cache(maxsize=1)
def _senders() -> ThreadPoolExecutor:
    # Made on first use, inside the worker process (threads do not survive the pool's fork).
    return ThreadPoolExecutor(max_workers=DISPATCH_BATCH, thread_name_prefix="notifier-send")


@lru_cache(maxsize=4)
def _secret_box(keys: tuple[str, ...]) -> SecretBox:
    return SecretBox(keys)


def _queue_dispatch(delivery_ids: Iterable[uuid.UUID]) -> None:
    for delivery_id in delivery_ids:
        celery_app.send_task("notifier.dispatch", [str(delivery_id)])


@celery_app.task(name="notifier.handle_event", ignore_result=True)
def handle_event(event_id: str) -> None:
    """Handles its event and takes other published, unhandled ones along (a burst in batches)."""
    with database().session_scope() as session:
        if ingest.is_processed(session, uuid.UUID(event_id)):
            return
        now = utcnow()
        batch = ingest.take_events(session, uuid.UUID(event_id), now, EVENT_BATCH)
        delivery_ids = ingest.handle_events(session, batch, now, settings().public_url) if batch else []
    _queue_dispatch(delivery_ids)


@celery_app.task(name="notifier.dispatch", ignore_result=True)
def dispatch_delivery(delivery_id: str) -> None:
    """Delivers its delivery and takes other due ones along (a burst in a few transactions)."""
    current = settings()
    retry = dispatch.RetryPolicy.from_settings(current)
    with database().session_scope() as session:
        now = utcnow()
        if dispatch.is_finished_or_taken(session, uuid.UUID(delivery_id), now):
            return
        batch = [uuid.UUID(delivery_id), *dispatch.due_pending(session, now, DISPATCH_BATCH - 1)]
        claimed = dispatch.claim(session, batch, _secret_box(tuple(current.encryption_keys)), retry, now)
    if not claimed:
        return
    started_at = utcnow()
    # In parallel: a batch then takes as long as its slowest send (bounded by the send timeout,
    # well inside the lease), not the sum of them.
    results = list(_senders().map(lambda delivery: dispatch.send(delivery, current, started_at), claimed))
    with database().session_scope() as session:
        for delivery, result in zip(claimed, results, strict=True):
            dispatch.record(session, delivery, result, started_at=started_at, retry=retry, now=utcnow())


def _claim(task: str, interval_s: float) -> bool:
    with database().session_scope() as session:
        return periodic.claim_run(session, task, interval_s, utcnow())


@celery_app.task(name="notifier.flush", ignore_result=True)
def flush_due_groups() -> None:
    current = settings()
    if not _claim("notifier.flush", current.notifier_flush_interval_s):
        return
    while True:
        with database().session_scope() as session:
            delivery_ids, flushed = flushing.flush_due_groups(session, utcnow(), current.public_url, FLUSH_BATCH)
        _queue_dispatch(delivery_ids)
        if flushed < FLUSH_BATCH:
            return


@celery_app.task(name="notifier.sweep", ignore_result=True)
def sweep() -> None:
    """Re-queue due retries, lost dispatch messages, deliveries of dead workers and unhandled events."""
    current = settings()
    if not _claim("notifier.sweep", current.notifier_sweep_interval_s):
        return
    retry = dispatch.RetryPolicy.from_settings(current)
    with database().session_scope() as session:
        delivery_ids = dispatch.due_for_dispatch(session, retry, utcnow())
    _queue_dispatch(delivery_ids)
    with database().session_scope() as session:
        event_ids = ingest.unhandled_events(session, utcnow(), retry.requeue_after)
        periodic.prune(session, utcnow())
    for event_id in event_ids:
        celery_app.send_task("notifier.handle_event", [str(event_id)])
