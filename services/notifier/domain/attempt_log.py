"""The attempt log, the last stage: every attempt recorded, and each delivery moved on.

A delivery is claimed (state `in_flight` with a lease: by `dispatch.claim`, or created so by
`dispatch.notify` for a task that sends at once), sent outside any transaction, and its outcome recorded
here in another: the attempt goes to the log, and the delivery becomes delivered, failed, dead (attempts
exhausted) or pending again with `next_attempt_at` set from the backoff. Retries are scheduled in the
database and picked up by the sweeper, never by long broker countdowns; a worker that dies mid-send leaves
an in-flight delivery whose lease runs out, and the sweeper queues it again. The receiver may then see the
notification twice — always with the same id (`webhook-id`, Message-ID), by which it deduplicates.

After an attempt (the senders classify it): 2xx delivered; 3xx and other 4xx failed for good; 410 failed and
the channel disabled; 429, 408, 5xx and connection trouble retried, not before `Retry-After`. Retries back
off exponentially with full jitter (`next_attempt_delay`); after `max_attempts` the delivery is
dead-lettered (`state_after`). The log is also what people read (notifications, deliveries, attempts) and
act on (redeliver).
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import psycopg
from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from services.notifier.domain import records
from services.notifier.domain.dispatch import ClaimedDelivery
from services.notifier.domain.organizations import PageRequest, page_in_organization
from services.notifier.domain.senders import MAX_RETRY_AFTER_SECONDS, DeliveryResult
from shared.core import audit
from shared.core.auth import Access
from shared.core.errors import InvalidState, NotFound
from shared.core.pagination import RowPage
from shared.core.settings import Settings
from shared.db.models import (
    Delivery,
    DeliveryAttempt,
    Notification,
    NotificationAlert,
    NotificationChannel,
)

MAX_ATTEMPTS = 8


BACKOFF_BASE_SECONDS = 10.0


BACKOFF_CAP_SECONDS = 30 * 60.0


class DeliveryState(StrEnum):
    DELIVERED = "delivered"
    RETRY_SCHEDULED = "retry_scheduled"
    FAILED = "failed"
    DEAD_LETTER = "dead_letter"


def state_after(result: DeliveryResult, attempt: int, *, max_attempts: int = MAX_ATTEMPTS) -> DeliveryState:
    """State after `attempt` attempts (1-based) ended in `result`."""
    if result.ok:
        return DeliveryState.DELIVERED
    if not result.retryable:
        return DeliveryState.FAILED
    return DeliveryState.DEAD_LETTER if attempt >= max_attempts else DeliveryState.RETRY_SCHEDULED


def next_attempt_delay(
    attempt: int,
    retry_after: float | None = None,
    *,
    base: float = BACKOFF_BASE_SECONDS,
    cap: float = BACKOFF_CAP_SECONDS,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based).

    Full jitter (uniform in [0, min(cap, base * 2^(attempt-1))]) spreads retries of many failing
    notifications, so a receiver coming back is not hit by all of them at once; Retry-After is a floor.
    """
    ceiling = min(cap, base * 2 ** max(attempt - 1, 0))
    delay = rng() * ceiling
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_SECONDS))
    return delay


_STATE_NAMES = {
    DeliveryState.DELIVERED: "delivered",
    DeliveryState.FAILED: "failed",
    DeliveryState.DEAD_LETTER: "dead",
    DeliveryState.RETRY_SCHEDULED: "pending",
}


FINAL_STATES = ("delivered", "failed", "dead")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    backoff_base_s: float
    backoff_cap_s: float
    lease: timedelta
    requeue_after: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            max_attempts=settings.notifier_max_attempts,
            backoff_base_s=settings.notifier_backoff_base_s,
            backoff_cap_s=settings.notifier_backoff_cap_s,
            lease=timedelta(seconds=settings.notifier_lease_s),
            requeue_after=timedelta(seconds=settings.notifier_requeue_after_s),
        )


def record(
    session: Session,
    outcomes: Sequence[tuple[ClaimedDelivery, DeliveryResult]],
    *,
    started_at: datetime,
    retry: RetryPolicy,
    now: datetime,
) -> None:
    """Log the attempts and move the deliveries on: on PostgreSQL one statement over arrays for the
    batch, elsewhere one insert and one executemany per kind of change; a 410 disables the channel."""
    if not outcomes:
        return
    driver = records.postgres(session)
    if driver is not None:
        _record_at_once(driver, outcomes, started_at, retry, now)
    else:
        _record_portably(session, outcomes, started_at, retry, now)
    for claimed, result in outcomes:
        if result.disable_channel and claimed.target is not None:
            _disable(session, claimed.target.id, result)
    session.flush()


# The attempts and the deliveries' new states in one statement over arrays. Only the latest claim moves
# a delivery (a send that outlived its lease was claimed again).
_RECORD = """
WITH attempts AS (
    INSERT INTO notification_delivery_attempts
        (delivery_id, attempt, started_at, outcome, status_code, latency_ms, error)
    SELECT delivery_id, attempt, %(started_at)b, outcome, status_code, latency_ms, error
    FROM unnest(%(id)b::uuid[], %(attempt)b::int[], %(outcome)b::text[], %(code)b::int[],
                %(latency)b::float8[], %(error)b::text[])
        AS a(delivery_id, attempt, outcome, status_code, latency_ms, error)
)
UPDATE notification_deliveries AS d
SET state = u.state, lease_until = NULL, last_status_code = u.status_code, last_error = u.error,
    updated_at = %(now)b,
    delivered_at = CASE WHEN u.delivered THEN %(now)b ELSE d.delivered_at END,
    next_attempt_at = CASE WHEN u.retry THEN u.next_attempt_at ELSE d.next_attempt_at END,
    queued_at = CASE WHEN u.retry THEN NULL ELSE d.queued_at END
FROM unnest(%(id)b::uuid[], %(attempt)b::int[], %(state)b::text[], %(code)b::int[], %(error)b::text[],
            %(delivered)b::bool[], %(retry)b::bool[], %(next_attempt_at)b::timestamptz[])
    AS u(id, attempt, state, status_code, error, delivered, retry, next_attempt_at)
WHERE d.id = u.id AND d.total_attempts = u.attempt
"""


def _record_at_once(
    driver: psycopg.Connection[Any],
    outcomes: Sequence[tuple[ClaimedDelivery, DeliveryResult]],
    started_at: datetime,
    retry: RetryPolicy,
    now: datetime,
) -> None:
    moved = [_moved_on(claimed, result, retry, now) for claimed, result in outcomes]
    driver.execute(
        _RECORD,
        {
            "started_at": started_at,
            "now": now,
            "id": [claimed.delivery_id for claimed, _ in outcomes],
            "attempt": [claimed.attempt for claimed, _ in outcomes],
            "outcome": [str(result.outcome) for _, result in outcomes],
            "code": [result.status_code for _, result in outcomes],
            "latency": [round(result.latency_ms, 3) for _, result in outcomes],
            "error": [result.error for _, result in outcomes],
            "state": [values["state"] for values in moved],
            "delivered": ["delivered_at" in values for values in moved],
            "retry": ["next_attempt_at" in values for values in moved],
            "next_attempt_at": [values.get("next_attempt_at") for values in moved],
        },
    )


def _record_portably(
    session: Session,
    outcomes: Sequence[tuple[ClaimedDelivery, DeliveryResult]],
    started_at: datetime,
    retry: RetryPolicy,
    now: datetime,
) -> None:
    session.execute(
        insert(records.table(DeliveryAttempt)),
        [
            {
                "delivery_id": claimed.delivery_id,
                "attempt": claimed.attempt,
                "started_at": started_at,
                "outcome": str(result.outcome),
                "status_code": result.status_code,
                "latency_ms": round(result.latency_ms, 3),
                "error": result.error,
            }
            for claimed, result in outcomes
        ],
    )
    changes: dict[tuple[str, ...], list[dict]] = defaultdict(list)
    for claimed, result in outcomes:
        values = _moved_on(claimed, result, retry, now)
        changes[tuple(sorted(values))].append(
            {
                **{f"b_{name}": value for name, value in values.items()},
                "b_id": claimed.delivery_id,
                "b_attempt": claimed.attempt,
            }
        )
    table = records.table(Delivery)
    for columns, rows in changes.items():
        # Only the latest claim moves the delivery (a send that outlived its lease was claimed again).
        session.execute(
            update(table)
            .where(table.c.id == bindparam("b_id"), table.c.total_attempts == bindparam("b_attempt"))
            .values({name: bindparam(f"b_{name}") for name in columns}),
            rows,
        )


def _disable(session: Session, channel_id: uuid.UUID, result: DeliveryResult) -> None:
    channel = session.get(NotificationChannel, channel_id)
    if channel is not None:
        channel.enabled = False
        channel.disabled_reason = f"disabled after a delivery: {result.error or result.status_code}"


def _moved_on(claimed: ClaimedDelivery, result: DeliveryResult, retry: RetryPolicy, now: datetime) -> dict:
    state = state_after(result, claimed.round_attempt, max_attempts=retry.max_attempts)
    values: dict = {
        "state": _STATE_NAMES[state],
        "lease_until": None,
        "last_status_code": result.status_code,
        "last_error": result.error,
        "updated_at": now,
    }
    if state is DeliveryState.DELIVERED:
        values["delivered_at"] = now
    if state is DeliveryState.RETRY_SCHEDULED:
        delay = next_attempt_delay(
            claimed.round_attempt, result.retry_after, base=retry.backoff_base_s, cap=retry.backoff_cap_s
        )
        # Not queued: the sweeper queues it when due.
        values |= {"next_attempt_at": now + timedelta(seconds=delay), "queued_at": None}
    return values


def revive_dropped(session: Session, now: datetime) -> None:
    """Deliveries dropped for a disabled channel that is enabled again, while they are still deliverable
    (their `next_attempt_at`: the rule's repeat interval after the drop), become pending and due now."""
    enabled = select(NotificationChannel.id).where(
        NotificationChannel.enabled.is_(True), NotificationChannel.deleted_at.is_(None)
    )
    session.execute(
        update(Delivery)
        .where(Delivery.state == "dropped", Delivery.next_attempt_at > now, Delivery.channel_id.in_(enabled))
        .values(state="pending", next_attempt_at=now, queued_at=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )


def due_for_dispatch(session: Session, retry: RetryPolicy, now: datetime, limit: int = 500) -> list[uuid.UUID]:
    """Deliveries to queue again: retries now due, dropped ones whose channel is back (`revive_dropped`),
    queued ones whose message was lost (not picked up within `requeue_after`), and in-flight ones whose
    worker died (lease over). Marks them queued."""
    revive_dropped(session, now)
    rows = session.scalars(
        select(Delivery)
        .where(
            or_(
                and_(
                    Delivery.state == "pending",
                    Delivery.next_attempt_at <= now,
                    or_(Delivery.queued_at.is_(None), Delivery.queued_at <= now - retry.requeue_after),
                ),
                and_(
                    Delivery.state == "in_flight",
                    Delivery.lease_until <= now,
                    # Queued since the lease ran out: give that message time before queueing again.
                    or_(
                        Delivery.queued_at.is_(None),
                        Delivery.queued_at < Delivery.lease_until,
                        Delivery.queued_at <= now - retry.requeue_after,
                    ),
                ),
            )
        )
        .order_by(Delivery.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for row in rows:
        row.queued_at = now
    session.flush()
    return [row.id for row in rows]


# --- reading and acting on the log ---------------------------------------------------------------


def get_notification(session: Session, access: Access, notification_id: uuid.UUID) -> Notification:
    row = session.get(Notification, notification_id)
    if row is None:
        raise NotFound(f"Notification '{notification_id}' does not exist")
    access.require_org(row.organization_id, "notifications:read")
    return row


def _with_alert(notification_id: Any, fingerprint: str) -> ColumnElement[bool]:
    """The notification (by its id column) carried an alert with this fingerprint (either kind)."""
    return notification_id.in_(
        select(NotificationAlert.notification_id).where(NotificationAlert.fingerprint == fingerprint)
    )


def list_notifications(
    session: Session, access: Access, request: PageRequest, *, rule_id: uuid.UUID | None, fingerprint: str | None
) -> RowPage:
    criteria = []
    if rule_id is not None:
        criteria.append(Notification.rule_id == rule_id)
    if fingerprint is not None:
        criteria.append(_with_alert(Notification.id, fingerprint))
    return page_in_organization(session, access, request, Notification, *criteria, newest_first=True)


def list_deliveries(
    session: Session,
    access: Access,
    request: PageRequest,
    *,
    filters: Mapping[str, Any],
    fingerprint: str | None,
) -> RowPage:
    """`filters`: a value (or None, any) for some of channel_id, rule_id, notification_id, state."""
    criteria = [getattr(Delivery, name) == value for name, value in filters.items() if value is not None]
    if fingerprint is not None:
        criteria.append(_with_alert(Delivery.notification_id, fingerprint))
    return page_in_organization(session, access, request, Delivery, *criteria, newest_first=True)


def get_delivery(session: Session, access: Access, delivery_id: uuid.UUID, *, write: bool = False) -> Delivery:
    row = session.get(Delivery, delivery_id)
    if row is None:
        raise NotFound(f"Delivery '{delivery_id}' does not exist")
    access.require_org(row.organization_id, "notifications:write" if write else "notifications:read")
    return row


def attempts_of(session: Session, delivery_id: uuid.UUID) -> list[DeliveryAttempt]:
    return list(
        session.scalars(
            select(DeliveryAttempt).where(DeliveryAttempt.delivery_id == delivery_id).order_by(DeliveryAttempt.attempt)
        )
    )


def redeliver(session: Session, access: Access, delivery_id: uuid.UUID, now: datetime) -> Delivery:
    """Send a finished delivery again (same notification, same webhook-id), with a fresh attempt budget;
    the sweeper queues it."""
    row = get_delivery(session, access, delivery_id, write=True)
    session.refresh(row, with_for_update=True)
    if row.state not in FINAL_STATES:
        raise InvalidState(f"Delivery is still {row.state}; redeliver it once it has finished")
    row.state = "pending"
    row.attempts = 0
    row.next_attempt_at = now
    row.queued_at = None
    row.delivered_at = None
    session.flush()
    audit.describe(
        session,
        action="notification_delivery.redeliver",
        object_type="notification_delivery",
        object_id=row.id,
        organization_id=row.organization_id,
    )
    return row
