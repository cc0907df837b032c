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

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Row, and_, bindparam, insert, or_, select, update
from sqlalchemy.orm import Session

from services.notifier.domain import channels, config_cache, records
from services.notifier.domain.config_cache import ChannelTarget
from services.notifier.domain.delivery import DeliveryResult, DeliveryState, Outcome, next_attempt_delay, state_after
from services.notifier.domain.messages import Notification as Message
from shared.core import outbound
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
    # Attempt number in the log, and within the current round (which decides the dead letter).
    attempt: int
    round_attempt: int
    target: ChannelTarget | None
    message: Message


def claim(
    session: Session, delivery_ids: Sequence[uuid.UUID], box: SecretBox, retry: RetryPolicy, now: datetime
) -> list[ClaimedDelivery]:
    """Mark the due ones among the deliveries in flight; those delivered, finished, not due yet, or
    being sent by another worker (in flight with a live lease) drop out. One conditional UPDATE
    decides, so two workers given the same delivery cannot both claim it."""
    due = or_(
        and_(Delivery.state == "pending", or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now)),
        and_(Delivery.state == "in_flight", Delivery.lease_until <= now),
    )
    claimed = session.execute(
        update(Delivery)
        .where(Delivery.id.in_(delivery_ids), due)
        .values(
            state="in_flight",
            lease_until=now + retry.lease,
            attempts=Delivery.attempts + 1,
            total_attempts=Delivery.total_attempts + 1,
            last_attempt_at=now,
            updated_at=now,
        )
        .returning(
            Delivery.id,
            Delivery.total_attempts,
            Delivery.attempts,
            Delivery.notification_id,
            Delivery.channel_id,
            Delivery.organization_id,
        )
        .execution_options(synchronize_session=False)
    ).all()
    if not claimed:
        return []
    # Plain rows of the four columns a message needs: no ORM instances on the hot path.
    notifications = {
        row.id: row
        for row in session.execute(
            select(Notification.id, Notification.group_key, Notification.payload, Notification.created_at).where(
                Notification.id.in_({row.notification_id for row in claimed})
            )
        )
    }
    configs = config_cache.configs(session, {row.organization_id for row in claimed}, box, now)

    def target(row: Row) -> ChannelTarget | None:
        channel = configs[row.organization_id].channels.get(str(row.channel_id))
        return channel.target if channel is not None and channel.enabled else None

    return [
        ClaimedDelivery(
            delivery_id=row.id,
            attempt=row.total_attempts,
            round_attempt=row.attempts,
            target=target(row),
            message=records.message_of(notifications[row.notification_id]),
        )
        for row in claimed
    ]


# Sends of one batch under way at once: a batch of 50 then takes at most two send timeouts.
MAX_CONCURRENT_SENDS = 32


def send(claimed: ClaimedDelivery, settings: Settings, now: datetime) -> DeliveryResult:
    [result] = send_all([claimed], settings, now)
    return result


def send_all(claimed: Sequence[ClaimedDelivery], settings: Settings, now: datetime) -> list[DeliveryResult]:
    """Send concurrently on the process's outbound event loop (webhooks and Slack on aiohttp, email in
    threads); the results come in the order of `claimed`."""
    policy = channels.outbound_policy(tuple(settings.outbound_allowlist))

    async def send_each() -> list[DeliveryResult]:
        under_way = asyncio.Semaphore(MAX_CONCURRENT_SENDS)

        async def send_one(delivery: ClaimedDelivery) -> DeliveryResult:
            if delivery.target is None:
                return DeliveryResult(Outcome.FAILED, 0.0, error="channel is disabled or deleted")
            async with under_way:
                return await channels.send(delivery.target, delivery.message, policy, now)

        return list(await asyncio.gather(*(send_one(delivery) for delivery in claimed)))

    return outbound.run(send_each())


def record(
    session: Session,
    outcomes: Sequence[tuple[ClaimedDelivery, DeliveryResult]],
    *,
    started_at: datetime,
    retry: RetryPolicy,
    now: datetime,
) -> None:
    """Log the attempts and move the deliveries on, set by set (one insert, one executemany per kind
    of change); a 410 disables the channel."""
    if not outcomes:
        return
    session.execute(
        insert(DeliveryAttempt.__table__),
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
    table = Delivery.__table__
    for columns, rows in changes.items():
        # Only the latest claim moves the delivery (a send that outlived its lease was claimed again).
        session.execute(
            update(table)
            .where(table.c.id == bindparam("b_id"), table.c.total_attempts == bindparam("b_attempt"))
            .values({name: bindparam(f"b_{name}") for name in columns}),
            rows,
        )
    for claimed, result in outcomes:
        if result.disable_channel and claimed.target is not None:
            channels.disable(session.get(NotificationChannel, claimed.target.id), result)
    session.flush()


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


def revive_dropped(session: Session, now: datetime) -> int:
    """Deliveries dropped for a disabled channel that is enabled again, while they are still deliverable
    (their `next_attempt_at`: the rule's repeat interval after the drop), become pending and due now."""
    enabled = select(NotificationChannel.id).where(
        NotificationChannel.enabled.is_(True), NotificationChannel.deleted_at.is_(None)
    )
    return session.execute(
        update(Delivery)
        .where(Delivery.state == "dropped", Delivery.next_attempt_at > now, Delivery.channel_id.in_(enabled))
        .values(state="pending", next_attempt_at=now, queued_at=None, updated_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount


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
