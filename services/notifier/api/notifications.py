"""Notifications: what was sent (or is being sent), by rule or alert."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from services.notifier.api.paging import OrgPage
from services.notifier.domain import attempt_log
from services.notifier.schemas import NotificationPage, NotificationRead
from shared.core.deps import AccessDep, SessionDep
from shared.db.models import Notification

router = APIRouter(prefix="/api/v1/notifications", tags=["notifications"])

Fingerprint = Annotated[str | None, Query(max_length=64, description="Only those carrying this alert")]


@router.get("", response_model=NotificationPage, summary="Notifications, newest first")
def list_notifications(
    session: SessionDep,
    access: AccessDep,
    paging: OrgPage,
    rule_id: uuid.UUID | None = Query(None),
    fingerprint: Fingerprint = None,
) -> NotificationPage:
    page = attempt_log.list_notifications(session, access, paging, rule_id=rule_id, fingerprint=fingerprint)
    return NotificationPage(
        items=[NotificationRead.model_validate(row[0]) for row in page.rows],
        next_page_token=page.next_page_token,
    )


@router.get("/{notification_id}", response_model=NotificationRead, summary="One notification")
def get_notification(notification_id: uuid.UUID, session: SessionDep, access: AccessDep) -> Notification:
    return attempt_log.get_notification(session, access, notification_id)
