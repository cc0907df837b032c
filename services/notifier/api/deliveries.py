"""The delivery log: per channel, rule, alert or notification; every attempt; redelivery."""

from __future__ import annotations

import uuid
from typing import Literal

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from services.notifier.api.notifications import Fingerprint
from services.notifier.api.paging import OrgPage
from services.notifier.domain import attempt_log
from services.notifier.schemas import DeliveryAttemptRead, DeliveryDetail, DeliveryPage, DeliveryRead
from shared.core.deps import AccessDep, SessionDep
from shared.db.base import utcnow
from shared.db.models import Delivery

router = APIRouter(prefix="/api/v1/deliveries", tags=["deliveries"])


def _detail(session: Session, row: Delivery) -> DeliveryDetail:
    attempts = [DeliveryAttemptRead.model_validate(a) for a in attempt_log.attempts_of(session, row.id)]
    return DeliveryDetail.model_validate({**DeliveryRead.model_validate(row).model_dump(), "attempt_log": attempts})


@router.get("", response_model=DeliveryPage, summary="Deliveries, newest first")
def list_deliveries(
    session: SessionDep,
    access: AccessDep,
    paging: OrgPage,
    channel_id: uuid.UUID | None = Query(None),
    rule_id: uuid.UUID | None = Query(None),
    notification_id: uuid.UUID | None = Query(None),
    fingerprint: Fingerprint = None,
    state: Literal["pending", "in_flight", "delivered", "failed", "dead"] | None = Query(None),
) -> DeliveryPage:
    filters = {"channel_id": channel_id, "rule_id": rule_id, "notification_id": notification_id, "state": state}
    page = attempt_log.list_deliveries(session, access, paging, filters=filters, fingerprint=fingerprint)
    return DeliveryPage(
        items=[DeliveryRead.model_validate(row[0]) for row in page.rows], next_page_token=page.next_page_token
    )


@router.get("/{delivery_id}", response_model=DeliveryDetail, summary="One delivery with every attempt")
def get_delivery(delivery_id: uuid.UUID, session: SessionDep, access: AccessDep) -> DeliveryDetail:
    return _detail(session, attempt_log.get_delivery(session, access, delivery_id))


@router.post("/{delivery_id}/redeliver", response_model=DeliveryDetail, summary="Send a finished delivery again")
def redeliver(delivery_id: uuid.UUID, session: SessionDep, access: AccessDep) -> DeliveryDetail:
    return _detail(session, attempt_log.redeliver(session, access, delivery_id, utcnow()))
