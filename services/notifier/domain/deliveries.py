"""The delivery log and what people do with it: read notifications, deliveries and attempts (per
channel, rule, alert or notification), redeliver, and send a channel's test message — through the
very claim/send/record path the dispatch task uses."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.notifier.domain import channels, dispatch, records
from services.notifier.domain.messages import build_test_notification
from services.notifier.domain.storage import resolve_organization
from shared.core import audit
from shared.core.auth import Access
from shared.core.crypto import SecretBox
from shared.core.errors import InvalidState, NotFound
from shared.core.pagination import RowPage, paginate
from shared.core.settings import Settings
from shared.db.models import Delivery, DeliveryAttempt, Notification, NotificationAlert


def send_test(
    session: Session, access: Access, box: SecretBox, settings: Settings, channel_id: uuid.UUID, now: datetime
) -> Delivery:
    channel = channels.get_channel(session, access, channel_id, write=True)
    notification_id = uuid.uuid4()
    message = build_test_notification(str(notification_id), channel.name, now, settings.public_url)
    session.add(
        Notification(
            id=notification_id,
            organization_id=channel.organization_id,
            group_key=message.group_key,
            kind="test",
            status="firing",
            payload=records.payload_json(message.alerts, group_labels={}, link=message.link, receiver=channel.name),
            created_at=now,
        )
    )
    session.flush()
    row = Delivery(
        id=uuid.uuid4(),
        notification_id=notification_id,
        channel_id=channel.id,
        organization_id=channel.organization_id,
        state="pending",
        attempts=0,
        total_attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(row)
    session.flush()
    # One attempt only: a test reports what happens now; it is not retried.
    retry = dispatch.RetryPolicy.from_settings(settings.model_copy(update={"notifier_max_attempts": 1}))
    [claimed] = dispatch.claim(session, [row.id], box, retry, now)
    result = dispatch.send(claimed, settings, now)
    audit.describe(
        session,
        action="notification_channel.test",
        object_type="notification_channel",
        object_id=channel.id,
        organization_id=channel.organization_id,
        details={"outcome": str(result.outcome), "status_code": result.status_code},
    )
    dispatch.record(session, [(claimed, result)], started_at=now, retry=retry, now=now)
    return session.get(Delivery, row.id, populate_existing=True)


def get_notification(session: Session, access: Access, notification_id: uuid.UUID) -> Notification:
    row = session.get(Notification, notification_id)
    if row is None:
        raise NotFound(f"Notification '{notification_id}' does not exist")
    access.require_org(row.organization_id, "notifications:read")
    return row


def list_notifications(
    session: Session,
    access: Access,
    *,
    organization_id: uuid.UUID | None,
    rule_id: uuid.UUID | None,
    fingerprint: str | None,
    page_token: str | None,
    max_results: int,
) -> RowPage:
    org = resolve_organization(access, organization_id, "notifications:read")
    stmt = select(Notification).where(Notification.organization_id == org.id)
    if rule_id is not None:
        stmt = stmt.where(Notification.rule_id == rule_id)
    if fingerprint is not None:
        stmt = stmt.where(
            Notification.id.in_(
                select(NotificationAlert.notification_id).where(NotificationAlert.fingerprint == fingerprint)
            )
        )
    return paginate(
        session,
        stmt,
        created_col=Notification.created_at,
        id_col=Notification.id,
        page_token=page_token,
        max_results=max_results,
        newest_first=True,
    )


def list_deliveries(
    session: Session,
    access: Access,
    *,
    organization_id: uuid.UUID | None,
    channel_id: uuid.UUID | None,
    rule_id: uuid.UUID | None,
    notification_id: uuid.UUID | None,
    fingerprint: str | None,
    state: str | None,
    page_token: str | None,
    max_results: int,
) -> RowPage:
    org = resolve_organization(access, organization_id, "notifications:read")
    stmt = select(Delivery).where(Delivery.organization_id == org.id)
    filters = {"channel_id": channel_id, "rule_id": rule_id, "notification_id": notification_id, "state": state}
    for name, value in filters.items():
        if value is not None:
            stmt = stmt.where(getattr(Delivery, name) == value)
    if fingerprint is not None:
        stmt = stmt.where(
            Delivery.notification_id.in_(
                select(NotificationAlert.notification_id).where(NotificationAlert.fingerprint == fingerprint)
            )
        )
    return paginate(
        session,
        stmt,
        created_col=Delivery.created_at,
        id_col=Delivery.id,
        page_token=page_token,
        max_results=max_results,
        newest_first=True,
    )


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
    if row.state not in dispatch.FINAL_STATES:
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
