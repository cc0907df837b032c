"""What the `tessera user create` and `tessera api-key create` commands do, for scripts that set a
platform up. Both are safe to re-run: an existing user is accepted when the password matches, an existing
membership is kept."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.registry.domain import api_keys
from services.registry.domain.identity import add_organization_member, create_user, normalize_email
from services.registry.domain.organizations import found_organization
from services.registry.domain.projects import slugify
from shared.core.auth import Access, Principal
from shared.core.errors import Conflict, InvalidParameter, NotFound
from shared.core.security import verify_password
from shared.db.models import ApiKey, Organization, OrganizationMembership, Project, User
from shared.db.models.identity import ORG_ROLES


@dataclass(frozen=True)
class UserOutcome:
    user: User
    organization: Organization | None
    role: str | None
    created_user: bool
    created_organization: bool


def ensure_user(
    session: Session, *, email: str, password: str, full_name: str | None, org_slug: str | None, role: str
) -> UserOutcome:
    """The user (created unless it exists with this password) and, with `org_slug`, their membership:
    a missing organization is created with them as owner, an existing one is joined with `role`."""
    if role not in ORG_ROLES:
        raise InvalidParameter(f"Unknown role '{role}'; one of {', '.join(ORG_ROLES)}")
    user = session.scalar(select(User).where(User.email == normalize_email(email)))
    created_user = user is None
    if user is None:
        user = create_user(session, email=email, password=password, full_name=full_name)
    elif not verify_password(user.password_hash or "", password):
        raise Conflict(f"User '{user.email}' already exists with a different password")
    if org_slug is None:
        return UserOutcome(user, None, None, created_user, False)
    if slugify(org_slug) != org_slug:
        raise InvalidParameter(f"'{org_slug}' is not a slug (a-z, 0-9 and '-'); try '{slugify(org_slug)}'")
    org = session.scalar(select(Organization).where(Organization.slug == org_slug))
    if org is None:
        org = found_organization(session, owner=user, name=org_slug, slug=org_slug)
        return UserOutcome(user, org, "owner", created_user, True)
    if org.deleted_at is not None:
        raise Conflict(f"Organization '{org_slug}' is deleted: restore it first")
    current = session.scalar(
        select(OrganizationMembership.role).where(
            OrganizationMembership.organization_id == org.id, OrganizationMembership.user_id == user.id
        )
    )
    if current is None:
        add_organization_member(session, org.id, user, role)
    return UserOutcome(user, org, current or role, created_user, False)


def create_key_for(
    session: Session,
    *,
    email: str,
    scopes: list[str],
    org_slug: str | None,
    project: str | None,
    expires_in_days: int | None,
    name: str | None,
) -> tuple[ApiKey, str]:
    """A key for the user, made as if they asked for it themselves (same rules as the API)."""
    user = session.scalar(select(User).where(User.email == normalize_email(email), User.deleted_at.is_(None)))
    if user is None:
        raise NotFound(f"No user '{email}': create it with `tessera user create`")
    memberships = (
        select(Organization)
        .join(OrganizationMembership, OrganizationMembership.organization_id == Organization.id)
        .where(OrganizationMembership.user_id == user.id, Organization.deleted_at.is_(None))
    )
    if org_slug:
        memberships = memberships.where(Organization.slug == org_slug)
    orgs = session.scalars(memberships).all()
    if len(orgs) != 1:
        raise InvalidParameter(
            f"'{user.email}' is not a member of '{org_slug}'"
            if org_slug
            else f"'{user.email}' belongs to {len(orgs)} organizations: name one with --org"
        )
    org = orgs[0]
    project_id = _project_id(session, org, project) if project else None
    if expires_in_days is not None and expires_in_days < 1:
        raise InvalidParameter("--expires-in-days must be at least 1")
    access = Access(session, Principal(user_id=user.id, email=user.email))
    return api_keys.create_api_key(
        session,
        access,
        name=name or f"cli-{date.today().isoformat()}",
        organization_id=org.id,
        scopes=scopes,
        project_id=project_id,
        ttl_seconds=expires_in_days * 86400 if expires_in_days else None,
    )


def _project_id(session: Session, org: Organization, project: str) -> uuid.UUID:
    try:
        condition = Project.id == uuid.UUID(project)
    except ValueError:
        condition = Project.slug == project
    project_id = session.scalar(
        select(Project.id).where(condition, Project.organization_id == org.id, Project.deleted_at.is_(None))
    )
    if project_id is None:
        raise NotFound(f"No project '{project}' in organization '{org.slug}'")
    return project_id
