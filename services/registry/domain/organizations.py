"""Organizations and their memberships. The creator of an organization is its owner, and every
organization gets a `default` project: where the mlflow client's objects land when it names none.

Identity administration through an API key needs its `admin` scope; reading needs `registry:read`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, and_, delete, select, update
from sqlalchemy.orm import Session

from services.registry.domain.identity import add_organization_member, members_page, members_with_users, normalize_email
from services.registry.domain.projects import create_project_row, slugify
from shared.core import audit
from shared.core.auth import ROLE_RANK, Access
from shared.core.errors import Conflict, InvalidParameter, InvalidState, NotFound, PermissionDenied
from shared.core.pagination import RowPage, paginate
from shared.db.base import utcnow
from shared.db.models import ApiKey, Organization, OrganizationMembership, Project, ProjectMember, User

READ = "registry:read"
ADMIN = "admin"


@dataclass(frozen=True)
class OrganizationView:
    organization: Organization
    role: str


def found_organization(
    session: Session, *, owner: User, name: str, slug: str | None = None, description: str | None = None
) -> Organization:
    """A new organization owned by `owner`, with its `default` project."""
    slug = slug or slugify(name)
    if session.scalar(select(Organization.id).where(Organization.slug == slug)) is not None:
        raise Conflict(f"An organization with slug '{slug}' already exists")
    org = Organization(name=name, slug=slug, description=description, settings={})
    session.add(org)
    session.flush()
    add_organization_member(session, org.id, owner, "owner")
    create_project_row(session, org.id, name="Default", slug="default")
    return org


def create_organization(
    session: Session, access: Access, *, name: str, slug: str | None, description: str | None
) -> OrganizationView:
    audit.describe(session, action="organization.create", object_type="organization")
    if access.principal.api_key_id is not None:
        # A key is bound to one organization, so it could never reach the one it created.
        raise PermissionDenied("Organizations are created with a password or token login, not an API key")
    owner = session.get_one(User, access.principal.user_id)
    org = found_organization(session, owner=owner, name=name, slug=slug, description=description)
    audit.describe(
        session,
        action="organization.create",
        object_type="organization",
        object_id=org.id,
        organization_id=org.id,
        details={"slug": org.slug},
    )
    return OrganizationView(org, "owner")


def list_organizations(
    session: Session, access: Access, *, deleted: bool, page_token: str | None, max_results: int
) -> RowPage:
    """The caller's organizations (rows of Organization, role); `deleted` lists the soft-deleted ones the
    caller may restore instead."""
    p = access.principal
    if not p.has_scope(READ):
        raise PermissionDenied(f"API key lacks the '{READ}' scope")
    stmt = select(Organization, OrganizationMembership.role).join(
        OrganizationMembership,
        and_(OrganizationMembership.organization_id == Organization.id, OrganizationMembership.user_id == p.user_id),
    )
    if p.organization_id is not None:
        stmt = stmt.where(Organization.id == p.organization_id)
    if deleted:
        stmt = stmt.where(Organization.deleted_at.is_not(None), OrganizationMembership.role.in_(("owner", "admin")))
    else:
        stmt = stmt.where(Organization.deleted_at.is_(None))
    return paginate(
        session,
        stmt,
        created_col=Organization.created_at,
        id_col=Organization.id,
        page_token=page_token,
        max_results=max_results,
    )


def _view(access: Access, org: Organization) -> OrganizationView:
    role = access.org_role(org.id)
    assert role is not None  # the caller passed `require_org`
    return OrganizationView(org, role)


def get_organization(access: Access, organization_id: uuid.UUID) -> OrganizationView:
    org = access.require_org(organization_id, READ)
    return _view(access, org)


def _describe(session: Session, action: str, organization_id: uuid.UUID, **details: Any) -> None:
    # Described before the permission check, so refused attempts land in the organization's trail too.
    audit.describe(
        session,
        action=action,
        object_type="organization",
        object_id=organization_id,
        organization_id=organization_id,
        details=details,
    )


def update_organization(
    session: Session, access: Access, organization_id: uuid.UUID, *, changes: dict
) -> OrganizationView:
    _describe(session, "organization.update", organization_id, changed=sorted(changes))
    org = access.require_org(organization_id, ADMIN)
    for field, value in changes.items():
        setattr(org, field, value)
    session.flush()
    return _view(access, org)


def delete_organization(session: Session, access: Access, organization_id: uuid.UUID) -> None:
    _describe(session, "organization.delete", organization_id)
    org = access.require_org(organization_id, ADMIN, min_role="owner")
    org.deleted_at = utcnow()
    session.flush()


def restore_organization(session: Session, access: Access, organization_id: uuid.UUID) -> OrganizationView:
    _describe(session, "organization.restore", organization_id)
    p = access.principal
    # Access only sees live organizations, so the deleted one is looked up through the caller's membership.
    row = session.execute(
        select(Organization, OrganizationMembership.role)
        .join(OrganizationMembership, OrganizationMembership.organization_id == Organization.id)
        .where(
            Organization.id == organization_id,
            Organization.deleted_at.is_not(None),
            OrganizationMembership.user_id == p.user_id,
        )
    ).first()
    if row is None or p.organization_id not in (None, organization_id):
        raise NotFound(f"Organization '{organization_id}' does not exist or is not deleted")
    org, role = row
    if not p.has_scope(ADMIN):
        raise PermissionDenied(f"API key lacks the '{ADMIN}' scope")
    if ROLE_RANK[role] < ROLE_RANK["admin"]:
        raise PermissionDenied("Only owners and admins restore an organization")
    org.deleted_at = None
    session.flush()
    return OrganizationView(org, role)


# --- memberships -------------------------------------------------------------------------------------------


def list_members(
    session: Session, access: Access, organization_id: uuid.UUID, *, page_token: str | None, max_results: int
) -> RowPage:
    """Rows of (OrganizationMembership, User)."""
    access.require_org(organization_id, READ)
    return members_page(
        session,
        OrganizationMembership,
        OrganizationMembership.organization_id == organization_id,
        page_token=page_token,
        max_results=max_results,
    )


def _membership(session: Session, organization_id: uuid.UUID, user_id: uuid.UUID) -> Row:
    row = session.execute(
        members_with_users(
            OrganizationMembership,
            OrganizationMembership.organization_id == organization_id,
            OrganizationMembership.user_id == user_id,
        )
    ).first()
    if row is None:
        raise NotFound(f"User '{user_id}' is not a member of organization '{organization_id}'")
    return row


def _require_owner_for(access: Access, organization_id: uuid.UUID, *roles: str) -> None:
    if "owner" in roles and access.org_role(organization_id) != "owner":
        raise PermissionDenied("Only owners grant, change or remove the owner role")


def _keep_an_owner(session: Session, organization_id: uuid.UUID, leaving_user_id: uuid.UUID) -> None:
    # Row locks (PostgreSQL) so two owners demoting each other at once cannot both succeed.
    owners = session.scalars(
        select(OrganizationMembership.user_id)
        .where(OrganizationMembership.organization_id == organization_id, OrganizationMembership.role == "owner")
        .with_for_update()
    ).all()
    if not set(owners) - {leaving_user_id}:
        raise InvalidState("An organization must keep at least one owner")


def add_member(session: Session, access: Access, organization_id: uuid.UUID, *, email: str, role: str) -> Row:
    _describe(session, "organization.member_add", organization_id, email=email, role=role)
    access.require_org(organization_id, ADMIN)
    _require_owner_for(access, organization_id, role)
    user = session.scalar(select(User).where(User.email == normalize_email(email), User.deleted_at.is_(None)))
    if user is None:
        raise InvalidParameter(f"No user with email '{email}': create it with POST /api/v1/users")
    exists = select(OrganizationMembership.id).where(
        OrganizationMembership.organization_id == organization_id, OrganizationMembership.user_id == user.id
    )
    if session.scalar(exists) is not None:
        raise Conflict(f"'{user.email}' is already a member")
    add_organization_member(session, organization_id, user, role)
    return _membership(session, organization_id, user.id)


def change_member_role(
    session: Session, access: Access, organization_id: uuid.UUID, user_id: uuid.UUID, *, role: str
) -> Row:
    _describe(session, "organization.member_role_change", organization_id, user_id=str(user_id), role=role)
    access.require_org(organization_id, ADMIN)
    membership, _ = row = _membership(session, organization_id, user_id)
    _require_owner_for(access, organization_id, membership.role, role)
    if membership.role == "owner" and role != "owner":
        _keep_an_owner(session, organization_id, user_id)
    membership.role = role
    session.flush()
    return row


def remove_member(session: Session, access: Access, organization_id: uuid.UUID, user_id: uuid.UUID) -> None:
    """Admins remove anyone (owners only by owners); anyone may leave. The person's project roles and API
    keys in the organization go with the membership."""
    _describe(session, "organization.member_remove", organization_id, user_id=str(user_id))
    leaving = user_id == access.principal.user_id
    access.require_org(organization_id, ADMIN, min_role="viewer" if leaving else None)
    membership, _ = _membership(session, organization_id, user_id)
    if membership.role == "owner":
        if not leaving:
            _require_owner_for(access, organization_id, "owner")
        _keep_an_owner(session, organization_id, user_id)
    in_org = select(Project.id).where(Project.organization_id == organization_id)
    session.execute(delete(ProjectMember).where(ProjectMember.user_id == user_id, ProjectMember.project_id.in_(in_org)))
    session.execute(
        update(ApiKey)
        .where(ApiKey.user_id == user_id, ApiKey.organization_id == organization_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    session.delete(membership)
    session.flush()
