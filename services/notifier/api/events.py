"""Publish a custom event: it goes through the outbox like the platform's own events."""

from __future__ import annotations

from fastapi import APIRouter

from services.notifier.domain import intake
from services.notifier.schemas import EventAccepted, EventCreate
from shared.core.deps import AccessDep, SessionDep

router = APIRouter(prefix="/api/v1/events", tags=["events"])


@router.post("", response_model=EventAccepted, status_code=202, summary="Publish a custom event")
def publish_event(body: EventCreate, session: SessionDep, access: AccessDep) -> EventAccepted:
    row = intake.publish_event(
        session,
        access,
        organization_id=body.organization_id,
        project_id=body.project_id,
        event_type=body.event_type,
        payload=body.payload,
    )
    return EventAccepted(id=row.id, event_type=row.event_type, created_at=row.created_at)
