"""Custom events published through the API: into the same outbox as the platform's own events.

Their type must start with `custom.`: platform event types (model_version.*, deployment.*, alert.*)
reach every subscriber of the platform, and only the platform may claim that they happened.
A payload with `status: firing|resolved` (and a `fingerprint`) behaves like an alert.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from services.notifier.domain.storage import resolve_organization
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
