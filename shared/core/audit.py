"""The audit trail: one row per state-changing request, whether it succeeded or failed.

Domain code says *what* happened with `describe()`; the request machinery (`shared.core.deps`) adds
*who, from where and with what outcome* and writes the row — inside the request's transaction on
success, in a transaction of its own on failure (the request's own work was rolled back).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from shared.core.auth import Principal
from shared.core.context import RequestContext, current_request
from shared.db.models import AuditLog, Organization, Project

_AUDIT_KEY = "tessera_audit"
_INSERT = AuditLog.__table__.insert()


@dataclass
class AuditDescription:
    action: str
    object_type: str | None = None
    object_id: str | None = None
    organization_id: uuid.UUID | None = None
    details: dict[str, Any] = field(default_factory=dict)


def describe(
    session: Session,
    *,
    action: str,
    object_type: str | None = None,
    object_id: Any = None,
    organization_id: uuid.UUID | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    session.info[_AUDIT_KEY] = AuditDescription(
        action=action,
        object_type=object_type,
        object_id=str(object_id) if object_id is not None else None,
        organization_id=organization_id,
        details=details or {},
    )


def describe_project_object(
    session: Session,
    project: Project,
    action: str,
    object_type: str,
    object_id: Any,
    details: dict[str, Any] | None = None,
) -> None:
    """`describe` an action on one object of `project`, filed under the project's organization."""
    describe(
        session,
        action=action,
        object_type=object_type,
        object_id=object_id,
        organization_id=project.organization_id,
        details=details,
    )


def described(session: Session) -> AuditDescription | None:
    return session.info.get(_AUDIT_KEY)


def record(
    session: Session,
    *,
    principal: Principal | None,
    outcome: str,
    status_code: int,
    description: AuditDescription | None,
    error_code: str | None = None,
) -> None:
    ctx = current_request()
    desc = description or AuditDescription(action=f"{ctx.method} {ctx.path}" if ctx else "unknown")
    details = dict(desc.details)
    if error_code:
        details["error_code"] = error_code
    organization_id = desc.organization_id
    # Only a refused request can name an organization that does not exist; a successful one touched it.
    if outcome != "success" and organization_id is not None and session.get(Organization, organization_id) is None:
        # A refused request may name an organization that does not exist: keep the id, not the foreign key.
        details["organization_id"] = str(organization_id)
        organization_id = None
    organization_id = organization_id or (principal.organization_id if principal else None)
    # A Core insert of one cached statement: no ORM object or unit-of-work flush on every request.
    session.execute(
        _INSERT,
        {
            "organization_id": organization_id,
            "actor_user_id": principal.user_id if principal else None,
            "actor_api_key_id": principal.api_key_id if principal else None,
            # Client-chosen text (paths, request ids) is clipped to the columns: an audit row never fails a request.
            "action": desc.action[:100],
            "object_type": desc.object_type[:50] if desc.object_type else None,
            "object_id": desc.object_id[:100] if desc.object_id else None,
            "method": ctx.method if ctx else None,
            "path": ctx.path if ctx else None,
            "ip_address": ctx.ip_address if ctx else None,
            "user_agent": ctx.user_agent if ctx else None,
            "request_id": ctx.request_id[:64] if ctx else None,
            "outcome": outcome,
            "status_code": status_code,
            "details": details,
        },
    )


# The success row of a request whose write is one statement (shared.core.hot_routes): a CTE inserting the
# row `record` would, once per row of the CTE named `source` (the written object), with success_row_params.
SUCCESS_ROW_CTE = """
audit AS (
    INSERT INTO audit_logs (id, organization_id, actor_user_id, actor_api_key_id, action, method, path,
                            ip_address, user_agent, request_id, outcome, status_code, details, created_at)
    SELECT %(audit_id)s, %(audit_org)s, %(audit_user)s, %(audit_key)s, %(audit_action)s, %(audit_method)s,
           %(audit_path)s, %(audit_ip)s, %(audit_agent)s, %(audit_request)s, 'success', 200, '{{}}', now()
    FROM {source}
)"""


def success_row_params(principal: Principal, ctx: RequestContext) -> dict[str, Any]:
    return {
        "audit_id": uuid.uuid4(),
        "audit_org": principal.organization_id,
        "audit_user": principal.user_id,
        "audit_key": principal.api_key_id,
        "audit_action": f"{ctx.method} {ctx.path}"[:100],
        "audit_method": ctx.method,
        "audit_path": ctx.path,
        "audit_ip": ctx.ip_address,
        "audit_agent": ctx.user_agent,
        "audit_request": ctx.request_id[:64],
    }
