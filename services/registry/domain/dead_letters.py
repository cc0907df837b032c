"""An organization's dead letters: the items of its work that a batch consumer failed on (see
shared/core/quarantine.py), for its admins to see and, after a fix, replay."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from shared.core import audit, events, quarantine
from shared.core.auth import Access
from shared.core.pagination import RowPage, paginate
from shared.db.base import utcnow
from shared.db.models import DeadLetter


def list_dead_letters(
    session: Session,
    access: Access,
    organization_id: uuid.UUID,
    *,
    state: str | None,
    consumer: str | None,
    page_token: str | None,
    max_results: int,
) -> RowPage:
    """Rows of (DeadLetter,), newest first."""
    access.require_org(organization_id, "admin")
    return paginate(
        session,
        quarantine.listing(organization_id, state=state, consumer=consumer),
        created_col=DeadLetter.created_at,
        id_col=DeadLetter.id,
        page_token=page_token,
        max_results=max_results,
        newest_first=True,
    )


def replay(session: Session, access: Access, organization_id: uuid.UUID, dead_letter_id: uuid.UUID) -> DeadLetter:
    """Hand the item back to its consumer with a fresh set of attempts, right after this commit."""
    access.require_org(organization_id, "admin")
    letter = quarantine.replay(session, quarantine.get(session, organization_id, dead_letter_id), utcnow())
    events.relay_after_commit(session)
    audit.describe(
        session,
        action="dead_letter.replay",
        object_type="dead_letter",
        object_id=letter.id,
        organization_id=organization_id,
        details={"consumer": letter.consumer, "item_id": str(letter.item_id)},
    )
    return letter
