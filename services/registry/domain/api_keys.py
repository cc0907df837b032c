"""API keys for machines: shown once, stored as a digest, scoped, optionally limited to one project.

A key never has more power than the person who made it: write scopes need a member role where the key
reaches, the `admin` scope an admin role, and a key that mints a key can only pass on what it holds
(its scopes, its project, its expiry).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.core import audit
from shared.core.auth import ROLE_RANK, Access, validate_scopes
from shared.core.errors import InvalidParameter, NotFound, PermissionDenied
from shared.core.pagination import RowPage, paginate
from shared.core.security import generate_api_key
from shared.db.base import utcnow
from shared.db.models import ApiKey, Project

_ORG_TO_PROJECT_ROLE = {"owner": "admin", "admin": "admin", "member": "member", "viewer": "viewer"}


def _reach_role(access: Access, organization_id: uuid.UUID, project_id: uuid.UUID | None) -> str:
    """The creator's role where the key will reach: in its project if limited to one, else in the org."""
    org_role = access.org_role(organization_id)
    if org_role is None:
        raise NotFound(f"Organization '{organization_id}' does not exist")
    if project_id is None:
        return _ORG_TO_PROJECT_ROLE[org_role]
    role = access.project_role(project_id)
    if role is None or access.session.get_one(Project, project_id).organization_id != organization_id:
        raise NotFound(f"Project '{project_id}' does not exist in organization '{organization_id}'")
    return role


def _expiry(expires_at: datetime | None, ttl_seconds: int | None) -> datetime | None:
    if expires_at is not None and ttl_seconds is not None:
        raise InvalidParameter("Give expires_at or ttl_seconds, not both")
    if ttl_seconds is not None:
        return utcnow() + timedelta(seconds=ttl_seconds)
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidParameter("expires_at is in the past")
    return expires_at


def create_api_key(
    session: Session,
    access: Access,
    *,
    name: str,
    organization_id: uuid.UUID,
    scopes: list[str],
    project_id: uuid.UUID | None = None,
    expires_at: datetime | None = None,
    ttl_seconds: int | None = None,
) -> tuple[ApiKey, str]:
    """The new key row and the key itself (the only time it exists in clear)."""
    audit.describe(session, action="api_key.create", object_type="api_key", organization_id=organization_id)
    p = access.principal
    scopes = validate_scopes(scopes)
    if not scopes:
        raise InvalidParameter("Give at least one scope")
    expires_at = _expiry(expires_at, ttl_seconds)
    role = _reach_role(access, organization_id, project_id)
    if "admin" in scopes and role != "admin":
        raise PermissionDenied(f"Your role '{role}' cannot hold the 'admin' scope (needs 'admin')")
    if ROLE_RANK[role] < ROLE_RANK["member"] and any(s.endswith(":write") for s in scopes):
        raise PermissionDenied("A viewer cannot create keys with write scopes")
    if p.api_key_id is not None:
        beyond = [s for s in scopes if not p.has_scope(s)]
        if beyond:
            raise PermissionDenied(f"The calling key does not hold {beyond}")
        if p.project_id is not None and project_id != p.project_id:
            raise PermissionDenied("The calling key is limited to one project: so is any key it creates")
        parent_expiry = session.get_one(ApiKey, p.api_key_id).expires_at
        if parent_expiry is not None and (expires_at is None or expires_at > parent_expiry):
            expires_at = parent_expiry
    new = generate_api_key()
    row = ApiKey(
        user_id=p.user_id,
        organization_id=organization_id,
        project_id=project_id,
        name=name,
        prefix=new.prefix,
        key_hash=new.digest,
        scopes=scopes,
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    audit.describe(
        session,
        action="api_key.create",
        object_type="api_key",
        object_id=row.id,
        organization_id=organization_id,
        details={"name": name, "scopes": scopes, "project_id": str(project_id) if project_id else None},
    )
    return row, new.key


def list_my_api_keys(
    session: Session,
    access: Access,
    *,
    organization_id: uuid.UUID | None,
    page_token: str | None,
    max_results: int,
) -> RowPage:
    """Rows of (ApiKey,): the caller's own keys, revoked and expired ones included."""
    p = access.principal
    stmt = select(ApiKey).where(ApiKey.user_id == p.user_id)
    if p.organization_id is not None:
        stmt = stmt.where(ApiKey.organization_id == p.organization_id)
    if organization_id is not None:
        stmt = stmt.where(ApiKey.organization_id == organization_id)
    return paginate(
        session,
        stmt,
        created_col=ApiKey.created_at,
        id_col=ApiKey.id,
        page_token=page_token,
        max_results=max_results,
    )


def list_org_api_keys(
    session: Session, access: Access, organization_id: uuid.UUID, *, page_token: str | None, max_results: int
) -> RowPage:
    """Every key of the organization, for its admins."""
    access.require_org(organization_id, "admin")
    stmt = select(ApiKey).where(ApiKey.organization_id == organization_id)
    return paginate(
        session,
        stmt,
        created_col=ApiKey.created_at,
        id_col=ApiKey.id,
        page_token=page_token,
        max_results=max_results,
    )


def _visible_key(access: Access, key_id: uuid.UUID) -> ApiKey:
    """Your own keys, and as an org admin every key of the organization; anything else is missing."""
    key = access.session.get(ApiKey, key_id)
    if key is not None:
        role = access.org_role(key.organization_id)
        mine = key.user_id == access.principal.user_id and access.principal.organization_id in (
            None,
            key.organization_id,
        )
        if mine or role in ("owner", "admin"):
            return key
    raise NotFound(f"API key '{key_id}' does not exist")


def get_api_key(access: Access, key_id: uuid.UUID) -> ApiKey:
    key = _visible_key(access, key_id)
    if key.user_id != access.principal.user_id:
        access.require_org(key.organization_id, "admin")
    return key


def revoke_api_key(session: Session, access: Access, key_id: uuid.UUID) -> ApiKey:
    """Revoking your own key needs no scope (it only removes power); someone else's needs org admin."""
    key = session.get(ApiKey, key_id)
    audit.describe(
        session,
        action="api_key.revoke",
        object_type="api_key",
        object_id=key_id,
        organization_id=key.organization_id if key else None,
    )
    key = get_api_key(access, key_id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
    return key
