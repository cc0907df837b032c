"""Which project a signed-in browser works in: the projects it may choose from, and the current one."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.tracking.domain.experiments import READ
from shared.core.auth import Access
from shared.core.errors import InvalidParameter, NotFound
from shared.db.models import Organization, Project


@dataclass(frozen=True)
class ProjectChoice:
    id: uuid.UUID
    organization: str
    name: str

    @property
    def label(self) -> str:
        return f"{self.organization} / {self.name}"


def visible_projects(session: Session, access: Access) -> list[ProjectChoice]:
    rows = session.execute(
        select(Project.id, Organization.name, Project.name)
        .join(Organization, Organization.id == Project.organization_id)
        .where(Project.id.in_(access.readable_project_ids(READ)))
        .order_by(Organization.name, Project.name)
    )
    return [ProjectChoice(*row) for row in rows]


def current_project(session: Session, access: Access) -> ProjectChoice | None:
    """Where MLflow calls without a project go for this caller; None when it cannot be told."""
    try:
        project = access.default_project(READ)
    except (InvalidParameter, NotFound):
        return None
    org_name = session.scalar(select(Organization.name).where(Organization.id == project.organization_id))
    return ProjectChoice(project.id, org_name or "", project.name)
