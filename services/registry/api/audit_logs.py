"""The audit trail of an organization, for its owners and admins."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from services.registry.domain import audit_logs
from services.registry.schemas import AuditLogPage, AuditLogRead, Timestamp
from shared.core.deps import AccessDep, MaxResults, PageToken, SessionDep

router = APIRouter(prefix="/api/v1", tags=["audit log"])

Filter = Annotated[str | None, Query(max_length=320, pattern=r"^[^\x00]*$")]


@router.get("/orgs/{org_id}/audit-logs", response_model=AuditLogPage, summary="Who did what, newest first")
def list_audit_logs(
    org_id: uuid.UUID,
    session: SessionDep,
    access: AccessDep,
    actor: Annotated[Filter, Query(description="User id or email")] = None,
    action: Annotated[Filter, Query(description="e.g. project.delete")] = None,
    object_type: Filter = None,
    object_id: Filter = None,
    outcome: Literal["success", "failure"] | None = None,
    since: Annotated[Timestamp | None, Query(description="From this time (inclusive)")] = None,
    until: Annotated[Timestamp | None, Query(description="Before this time")] = None,
    page_token: PageToken = None,
    max_results: MaxResults = 100,
) -> AuditLogPage:
    where = audit_logs.AuditFilter(
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=object_id,
        outcome=outcome,
        since=since,
        until=until,
    )
    page = audit_logs.list_audit_logs(session, access, org_id, where, page_token=page_token, max_results=max_results)
    return AuditLogPage(
        items=[
            AuditLogRead.model_validate(row.AuditLog).model_copy(update={"actor_email": row.actor_email})
            for row in page.rows
        ],
        next_page_token=page.next_page_token,
    )
