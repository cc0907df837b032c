"""Custom events published through the API: into the same outbox as the platform's own events.

Their type must start with `custom.`: platform event types (model_version.*, deployment.*, alert.*)
reach every subscriber of the platform, and only the platform may claim that they happened.
A payload with `status: firing|resolved` (and a `fingerprint`) behaves like an alert.

Alerts posted the way Prometheus posts them to Alertmanager (`POST /api/v2/alerts`) become events of
type `custom.alertmanager`, one per alert, with Alertmanager's semantics: an alert is identified by its
labels, resolves when its `endsAt` has passed, and one posted without `endsAt` resolves
`resolve_timeout` after its last post unless posted again.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from services.notifier.domain.storage import resolve_organization
from services.notifier.schemas import PostableAlert
from shared.core import audit, events
from shared.core.auth import Access
from shared.core.errors import InvalidParameter, NotFound
from shared.db.models import OutboxEvent


def publish_event(
    session: Session,
    access: Access,
    *,
    organization_id: uuid.UUID | None,
    project_id: uuid.UUID | None,
    event_type: str,
    payload: dict[str, Any],
) -> OutboxEvent:
    if not event_type.startswith("custom."):
        raise InvalidParameter("custom event types start with 'custom.'")
    org = resolve_organization(access, organization_id, "notifications:write")
    if project_id is not None and access.require_project(project_id, "notifications:write").organization_id != org.id:
        raise NotFound(f"Project '{project_id}' does not exist")
    row = events.emit(session, event_type, payload, organization_id=org.id, project_id=project_id)
    session.flush()
    audit.describe(
        session,
        action="event.publish",
        object_type="event",
        object_id=row.id,
        organization_id=org.id,
        details={"event_type": event_type},
    )
    return row


ALERTMANAGER_EVENT = "custom.alertmanager"


def post_alertmanager_alerts(
    session: Session, access: Access, alerts: Sequence[PostableAlert], now: datetime, resolve_timeout: timedelta
) -> list[OutboxEvent]:
    """Alerts in Alertmanager's API v2 shape, all in one transaction: an event each, in the organization
    of the caller (its API key's)."""
    org = resolve_organization(access, None, "notifications:write")
    rows = []
    for alert in alerts:
        ends_at = alert.ends_at or now + resolve_timeout
        payload = {
            "status": "resolved" if ends_at <= now else "firing",
            "labels": alert.labels,
            "annotations": alert.annotations,
            "starts_at": (alert.starts_at or now).isoformat(),
            "ends_at": ends_at.isoformat(),
            "url": alert.generator_url,
        }
        rows.append(events.emit(session, ALERTMANAGER_EVENT, payload, organization_id=org.id))
    session.flush()
    audit.describe(
        session,
        action="alerts.post",
        object_type="event",
        organization_id=org.id,
        details={"alerts": len(rows)},
    )
    return rows
