"""Reading the audit trail: org owners and admins, filtered, newest first."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.core.auth import Access
from shared.core.pagination import RowPage, paginate
from shared.db.models import AuditLog, User


@dataclass(frozen=True)
class AuditFilter:
    # A user id or an email.
    actor: str | None = None
    action: str | None = None
    object_type: str | None = None
    object_id: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def list_audit_logs(
    session: Session,
    access: Access,
    organization_id: uuid.UUID,
    where: AuditFilter,
    *,
    page_token: str | None,
    max_results: int,
) -> RowPage:
    """Rows of (AuditLog, actor email), newest first."""
    access.require_org(organization_id, "admin")
    stmt = (
        select(AuditLog, User.email.label("actor_email"))
        .outerjoin(User, User.id == AuditLog.actor_user_id)
        .where(AuditLog.organization_id == organization_id)
    )
    if where.actor:
        try:
            stmt = stmt.where(AuditLog.actor_user_id == uuid.UUID(where.actor))
        except ValueError:
            stmt = stmt.where(User.email == where.actor.strip().lower())
    for column, value in (
        (AuditLog.action, where.action),
        (AuditLog.object_type, where.object_type),
        (AuditLog.object_id, where.object_id),
        (AuditLog.outcome, where.outcome),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if where.since is not None:
        stmt = stmt.where(AuditLog.created_at >= where.since)
    if where.until is not None:
        stmt = stmt.where(AuditLog.created_at < where.until)
    return paginate(
        session,
        stmt,
        created_col=AuditLog.created_at,
        id_col=AuditLog.id,
        page_token=page_token,
        max_results=max_results,
        newest_first=True,
    )
