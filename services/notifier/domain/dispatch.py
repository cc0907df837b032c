"""Delivering one notification to one channel, at least once and never again once delivered.

A delivery is claimed in a short transaction (state `in_flight` with a lease), sent outside any
transaction, and its outcome recorded in another: the attempt goes to the log, and the delivery
becomes delivered, failed, dead (attempts exhausted) or pending again with `next_attempt_at` set
from the backoff. Retries are scheduled in the database and picked up by the sweeper, never by long
broker countdowns; a worker that dies mid-send leaves an in-flight delivery whose lease runs out,
and the sweeper queues it again. The receiver may then see the notification twice — always with
the same id (`webhook-id`, Message-ID), by which it deduplicates.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from services.notifier.domain import channels, records
from services.notifier.domain.channels import ChannelTarget
from services.notifier.domain.delivery import DeliveryResult, DeliveryState, Outcome, next_attempt_delay, state_after
from services.notifier.domain.messages import Notification as Message
from shared.core.crypto import SecretBox
from shared.core.settings import Settings
from shared.db.models import Delivery, DeliveryAttempt, Notification, NotificationChannel

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


@dataclass(frozen=True)
class ClaimedDelivery:
    """What one attempt needs, read while claiming, so the send runs outside any transaction."""

    delivery_id: uuid.UUID
    attempt: int
    target: ChannelTarget | None
    message: Message


def claim(
    session: Session, delivery_id: uuid.UUID, box: SecretBox, retry: RetryPolicy, now: datetime
) -> ClaimedDelivery | None:
    """Mark the delivery in flight if it is due; None if it is delivered, finished, not due yet, or
    being sent by another worker right now (locked, or in flight with a live lease)."""
    found = session.execute(
        select(Delivery, Notification, NotificationChannel)
        .join(Notification, Notification.id == Delivery.notification_id)
        .join(NotificationChannel, NotificationChannel.id == Delivery.channel_id)
        .where(Delivery.id == delivery_id)
        .with_for_update(of=Delivery, skip_locked=True)
    ).first()
    if found is None:
        return None
    row, notification, channel = found
    due = row.state == "pending" and (row.next_attempt_at is None or row.next_attempt_at <= now)
    abandoned = row.state == "in_flight" and row.lease_until is not None and row.lease_until <= now
    if not (due or abandoned):
        return None
    row.state = "in_flight"
    row.lease_until = now + retry.lease
    row.attempts += 1
    row.total_attempts += 1
    row.last_attempt_at = now
    session.flush()
    usable = channel.enabled and channel.deleted_at is None
    return ClaimedDelivery(
        delivery_id=row.id,
        attempt=row.total_attempts,
        target=channels.target_for(channel, box) if usable else None,
        message=records.message_of(notification),
    )


def send(claimed: ClaimedDelivery, settings: Settings, now: datetime) -> DeliveryResult:
    if claimed.target is None:
        return DeliveryResult(Outcome.FAILED, 0.0, error="channel is disabled or deleted")
    policy = channels.outbound_policy(tuple(settings.outbound_allowlist))
    return channels.send(claimed.target, claimed.message, policy, now)


def record(
    session: Session,
    claimed: ClaimedDelivery,
    result: DeliveryResult,
    *,
    started_at: datetime,
    retry: RetryPolicy,
    now: datetime,
) -> Delivery:
    """Log the attempt and move the delivery on; a 410 disables the channel."""
    row = session.get(Delivery, claimed.delivery_id, with_for_update=True)
    session.add(
        DeliveryAttempt(
            delivery_id=row.id,
            attempt=claimed.attempt,
            started_at=started_at,
            outcome=str(result.outcome),
            status_code=result.status_code,
            latency_ms=round(result.latency_ms, 3),
            error=result.error,
        )
    )
    state = state_after(result, row.attempts, max_attempts=retry.max_attempts)
    row.state = _STATE_NAMES[state]
    row.lease_until = None
    row.last_status_code = result.status_code
    row.last_error = result.error
    if state is DeliveryState.DELIVERED:
        row.delivered_at = now
    if state is DeliveryState.RETRY_SCHEDULED:
        delay = next_attempt_delay(row.attempts, result.retry_after, base=retry.backoff_base_s, cap=retry.backoff_cap_s)
        row.next_attempt_at = now + timedelta(seconds=delay)
        # Not queued: the sweeper queues it when due.
        row.queued_at = None
    if result.disable_channel:
        channel = session.get(NotificationChannel, row.channel_id)
        channels.disable(channel, result)
    session.flush()
    return row


def due_for_dispatch(session: Session, retry: RetryPolicy, now: datetime, limit: int = 500) -> list[uuid.UUID]:
    """Deliveries to queue again: retries now due, queued ones whose message was lost (not picked up
    within `requeue_after`), and in-flight ones whose worker died (lease over). Marks them queued."""
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
