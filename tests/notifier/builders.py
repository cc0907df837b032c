"""Test data for the notifier domain: one place to change when the alert shape changes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from services.notifier.domain import pipeline, senders
from services.notifier.domain.alerts import Alert
from services.notifier.domain.config import channels, rules
from services.notifier.domain.messages import Notification
from shared.core.auth import Access, Principal
from shared.core.crypto import SecretBox
from shared.core.outbound import OutboundPolicy
from shared.core.settings import get_settings
from shared.db.base import utcnow
from shared.db.models import NotificationChannel, NotificationRule, OutboxEvent

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def make_alert(
    name: str = "DriftDetected",
    *,
    starts_at: datetime = T0,
    ends_at: datetime | None = None,
    summary: str | None = None,
    **labels: str,
) -> Alert:
    labels = {"alertname": name, "severity": "high", "model": "churn", "project": "fraud", **labels}
    annotations = {"summary": summary} if summary else {}
    return Alert(
        labels=labels,
        starts_at=starts_at,
        ends_at=ends_at,
        annotations=annotations,
        url=f"https://tessera.example/alerts/{name}",
    )


def make_notification(
    *alerts: Alert,
    notification_id: str = "0b9c3c1e-1f6e-4d2a-9a51-3f1d2b7c8e90",
    created_at: datetime = T0 + timedelta(minutes=1),
) -> Notification:
    return Notification(
        id=notification_id,
        group_key='rule-1:{model="churn"}',
        alerts=alerts or (make_alert(),),
        created_at=created_at,
        group_labels={"model": "churn"},
        link="https://tessera.example/notifications/groups/1",
        receiver="ml-oncall",
    )


def owner_access(session, tenant) -> Access:
    return Access(session, Principal(user_id=tenant.user_id, email=tenant.email))


def make_channel(
    session, box, tenant, *, type: str = "webhook", policy: OutboundPolicy | None = None, **fields
) -> tuple[NotificationChannel, str | None]:
    """A channel created the way the API creates it (under the settings' outbound policy unless given);
    returns it with its signing secret (webhooks)."""
    return channels.create_channel(
        session,
        owner_access(session, tenant),
        box,
        policy or senders.policy_for(get_settings()),
        organization_id=tenant.org_id,
        project_id=None,
        name=fields.pop("name", f"{type}-{uuid.uuid4().hex[:8]}"),
        channel_type=type,
        fields=fields,
    )


def make_rule(session, tenant, channel_list, **fields) -> NotificationRule:
    """A rule over the given channels; Alertmanager's defaults unless overridden."""
    return rules.create_rule(
        session,
        owner_access(session, tenant),
        tenant.org_id,
        {"name": f"rule-{uuid.uuid4().hex[:8]}", "channel_ids": [str(c.id) for c in channel_list], **fields},
    )


def handle_posted_alerts(session, organization_id: uuid.UUID) -> None:
    """What a worker does with the events of alerts posted to the Alertmanager API, here in the test."""
    event_ids = session.scalars(
        select(OutboxEvent.id).where(
            OutboxEvent.organization_id == organization_id, OutboxEvent.event_type == "custom.alertmanager"
        )
    ).all()
    box = SecretBox(get_settings().encryption_keys)
    pipeline.handle_events(session, list(event_ids), box, utcnow(), "https://tessera.test")
