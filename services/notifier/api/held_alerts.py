"""One firing alert as the notifier holds it, found by its producer's fingerprint (a monitor alert's
`fingerprint`), with the silences and inhibiting alerts that keep its notifications back."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Path, Query

from services.notifier.domain import held_alerts
from services.notifier.schemas import HeldAlertRead, HoldingSilence, InhibitingAlert
from shared.core.deps import AccessDep, SessionDep
from shared.db.base import utcnow

router = APIRouter(prefix="/api/v1/held-alerts", tags=["silences and mute windows"])


@router.get("/{fingerprint}", response_model=HeldAlertRead, summary="A firing alert and what silences or inhibits it")
def get_held_alert(
    session: SessionDep,
    access: AccessDep,
    fingerprint: str = Path(max_length=200),
    organization_id: uuid.UUID | None = Query(None),
) -> HeldAlertRead:
    held, inhibitors = held_alerts.held_alert(session, access, organization_id, fingerprint, utcnow())
    return HeldAlertRead(
        fingerprint=held.alert.fingerprint,
        labels=dict(held.alert.labels),
        starts_at=held.alert.starts_at,
        receivers=sorted(held.receivers),
        state="suppressed" if held.suppressed else "active",
        silenced_by=[
            HoldingSilence(
                id=uuid.UUID(str(s.id)),
                matchers=[str(m) for m in s.matchers],
                starts_at=s.starts_at,
                ends_at=s.ends_at,
                created_by=s.created_by,
                comment=s.comment,
            )
            for s in held.silences
        ],
        inhibited_by=[
            InhibitingAlert(fingerprint=i.alert.fingerprint, labels=dict(i.alert.labels), starts_at=i.alert.starts_at)
            for i in inhibitors
        ],
    )
