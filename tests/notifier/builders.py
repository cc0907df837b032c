"""Test data for the notifier domain: one place to change when the alert shape changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.notifier.domain.alerts import Alert
from services.notifier.domain.messages import Notification

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
