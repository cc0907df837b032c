"""Dead letters of an organization: what a batch consumer failed on, and replaying it after a fix."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from services.registry.domain import dead_letters
from services.registry.schemas import DeadLetterPage, DeadLetterRead
from shared.core.deps import AccessDep, MaxResults, PageToken, SessionDep

router = APIRouter(prefix="/api/v1", tags=["dead letters"])


@router.get("/orgs/{org_id}/dead-letters", response_model=DeadLetterPage, summary="Quarantined work, newest first")
def list_dead_letters(
    org_id: uuid.UUID,
    session: SessionDep,
    access: AccessDep,
    state: Literal["retrying", "quarantined", "replaying", "resolved"] | None = None,
    consumer: Annotated[str | None, Query(max_length=100, pattern=r"^[a-z_.]+$")] = None,
    page_token: PageToken = None,
    max_results: MaxResults = 100,
) -> DeadLetterPage:
    page = dead_letters.list_dead_letters(
        session, access, org_id, state=state, consumer=consumer, page_token=page_token, max_results=max_results
    )
    return DeadLetterPage(
        items=[DeadLetterRead.model_validate(row.DeadLetter) for row in page.rows],
        next_page_token=page.next_page_token,
    )


@router.post(
    "/orgs/{org_id}/dead-letters/{dead_letter_id}/replay",
    response_model=DeadLetterRead,
    summary="Hand a quarantined item back to its consumer",
)
def replay_dead_letter(
    org_id: uuid.UUID, dead_letter_id: uuid.UUID, session: SessionDep, access: AccessDep
) -> DeadLetterRead:
    """With a fresh set of attempts; it is resolved once it goes through, quarantined again if it keeps
    failing."""
    return DeadLetterRead.model_validate(dead_letters.replay(session, access, org_id, dead_letter_id))
