"""Projects of an organization and their members.

A project member row narrows or widens, for that project, the role the organization gives (see
shared/core/auth.py). Org members may create projects (they become the project's admin); project admins
manage the project and its members; only org admins restore a deleted project.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from services.registry.domain.identity import members_page, members_with_users
from shared.core import audit
from shared.core.auth import ROLE_RANK, Access
from shared.core.errors import Conflict, InvalidParameter, InvalidState, NotFound, PermissionDenied
from shared.core.pagination import RowPage, paginate
from shared.db.base import utcnow
from shared.db.models import OrganizationMembership, Project, ProjectMember, User

READ = "registry:read"
ADMIN = "admin"
DEFAULT_PROJECT_SLUG = "default"


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:100].strip("-")
    if not slug:
        raise InvalidParameter("Cannot derive a slug from that name: give one (a-z, 0-9 and '-')")
    return slug


def create_project_row(
    session: Session,
    organization_id: uuid.UUID,
    *,
    name: str,
    slug: str | None = None,
    description: str | None = None,
) -> Project:
    slug = slug or slugify(name)
    taken = select(Project.id).where(Project.organization_id == organization_id, Project.slug == slug)
    if session.scalar(taken) is not None:
        raise Conflict(f"A project with slug '{slug}' already exists in this organization")
    project = Project(organization_id=organization_id, name=name, slug=slug, description=description)
    session.add(project)
    session.flush()
    return project


def create_project(
    session: Session,
    access: Access,
    organization_id: uuid.UUID,
    *,
    name: str,
    slug: str | None,
    description: str | None,
) -> Project:
    audit.describe(session, action="project.create", object_type="project", organization_id=organization_id)
    access.require_org(organization_id, ADMIN, min_role="member")
    if access.principal.project_id is not None:
        raise PermissionDenied("A key limited to one project cannot create projects")
    project = create_project_row(session, organization_id, name=name, slug=slug, description=description)
    org_role = access.org_role(organization_id)  # set: require_org passed
    if org_role is not None and ROLE_RANK[org_role] < ROLE_RANK["admin"]:
        session.add(ProjectMember(project_id=project.id, user_id=access.principal.user_id, role="admin"))
        session.flush()
    audit.describe(
        session,
        action="project.create",
        object_type="project",
        object_id=project.id,
        organization_id=organization_id,
        details={"slug": project.slug},
    )
    return project


def list_projects(
    session: Session,
    access: Access,
    organization_id: uuid.UUID,
    *,
    deleted: bool,
    page_token: str | None,
    max_results: int,
) -> RowPage:
    """Rows of (Project,): the live projects the caller reads, or (`deleted`, org admins) the deleted ones."""
    if deleted:
        access.require_org(organization_id, ADMIN)
        stmt = select(Project).where(Project.organization_id == organization_id, Project.deleted_at.is_not(None))
        if access.principal.project_id is not None:
            stmt = stmt.where(Project.id == access.principal.project_id)
    else:
        access.require_org(organization_id, READ)
        stmt = select(Project).where(
            Project.organization_id == organization_id, Project.id.in_(access.readable_project_ids(READ))
        )
    return paginate(
        session,
        stmt,
        created_col=Project.created_at,
        id_col=Project.id,
        page_token=page_token,
        max_results=max_results,
    )


def get_project(access: Access, project_id: uuid.UUID) -> Project:
    return access.require_project(project_id, READ)


def _describe(session: Session, action: str, project_id: uuid.UUID, **details: Any) -> None:
    # Described before the permission check, so refused attempts land in the owning organization's trail.
    project = session.get(Project, project_id)
    audit.describe(
        session,
        action=action,
        object_type="project",
        object_id=project_id,
        organization_id=project.organization_id if project else None,
        details=details,
    )


def update_project(session: Session, access: Access, project_id: uuid.UUID, *, changes: dict) -> Project:
    _describe(session, "project.update", project_id, changed=sorted(changes))
    project = access.require_project(project_id, ADMIN)
    for field, value in changes.items():
        setattr(project, field, value)
    session.flush()
    return project


def delete_project(session: Session, access: Access, project_id: uuid.UUID) -> None:
    _describe(session, "project.delete", project_id)
    project = access.require_project(project_id, ADMIN)
    if project.slug == DEFAULT_PROJECT_SLUG:
        raise InvalidState("The default project receives what clients log without naming a project; keep it")
    project.deleted_at = utcnow()
    session.flush()


def restore_project(session: Session, access: Access, project_id: uuid.UUID) -> Project:
    _describe(session, "project.restore", project_id)
    project = session.get(Project, project_id)
    if (
        project is None
        or project.deleted_at is None
        or access.principal.project_id not in (None, project_id)
        or access.org_role(project.organization_id) is None
    ):
        raise NotFound(f"Project '{project_id}' does not exist or is not deleted")
    access.require_org(project.organization_id, ADMIN)
    project.deleted_at = None
    session.flush()
    return project


# --- project members ---------------------------------------------------------------------------------------


def list_members(
    session: Session, access: Access, project_id: uuid.UUID, *, page_token: str | None, max_results: int
) -> RowPage:
    """Rows of (ProjectMember, User)."""
    access.require_project(project_id, READ)
    return members_page(
        session, ProjectMember, ProjectMember.project_id == project_id, page_token=page_token, max_results=max_results
    )


def _member(session: Session, project_id: uuid.UUID, user_id: uuid.UUID) -> Row:
    row = session.execute(
        members_with_users(ProjectMember, ProjectMember.project_id == project_id, ProjectMember.user_id == user_id)
    ).first()
    if row is None:
        raise NotFound(f"User '{user_id}' has no role of their own in project '{project_id}'")
    return row


def add_member(session: Session, access: Access, project_id: uuid.UUID, *, email: str, role: str) -> Row:
    _describe(session, "project.member_add", project_id, email=email, role=role)
    project = access.require_project(project_id, ADMIN)
    user = session.scalar(
        select(User)
        .join(OrganizationMembership, OrganizationMembership.user_id == User.id)
        .where(User.email == email.strip().lower(), OrganizationMembership.organization_id == project.organization_id)
    )
    if user is None:
        raise InvalidParameter(f"'{email}' is not a member of this project's organization: add them there first")
    if session.scalar(
        select(ProjectMember.id).where(ProjectMember.project_id == project_id, ProjectMember.user_id == user.id)
    ):
        raise Conflict(f"'{user.email}' already has a role in this project")
    session.add(ProjectMember(project_id=project_id, user_id=user.id, role=role))
    session.flush()
    return _member(session, project_id, user.id)


def change_member_role(
    session: Session, access: Access, project_id: uuid.UUID, user_id: uuid.UUID, *, role: str
) -> Row:
    _describe(session, "project.member_role_change", project_id, user_id=str(user_id), role=role)
    access.require_project(project_id, ADMIN)
    row = _member(session, project_id, user_id)
    row.ProjectMember.role = role
    session.flush()
    return row


def remove_member(session: Session, access: Access, project_id: uuid.UUID, user_id: uuid.UUID) -> None:
    """The person falls back to the role their organization role gives them in this project."""
    _describe(session, "project.member_remove", project_id, user_id=str(user_id))
    access.require_project(project_id, ADMIN)
    member, _ = _member(session, project_id, user_id)
    session.delete(member)
    session.flush()
