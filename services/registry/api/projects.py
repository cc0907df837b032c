"""Projects of an organization (create, list, read, update, soft delete, restore) and their members."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Query
from sqlalchemy import Row

from services.registry.domain import projects
from services.registry.schemas import (
    ProjectCreate,
    ProjectMemberCreate,
    ProjectMemberPage,
    ProjectMemberRead,
    ProjectMemberUpdate,
    ProjectPage,
    ProjectRead,
    ProjectUpdate,
)
from shared.core.deps import AccessDep, MaxResults, PageToken, SessionDep

router = APIRouter(prefix="/api/v1", tags=["projects"])


def _member(row: Row) -> ProjectMemberRead:
    member, user = row[0], row[1]
    return ProjectMemberRead(
        user_id=user.id, email=user.email, full_name=user.full_name, role=member.role, created_at=member.created_at
    )


@router.post(
    "/orgs/{org_id}/projects",
    response_model=ProjectRead,
    status_code=201,
    summary="Create a project (org members; the creator administers it)",
)
def create_project(org_id: uuid.UUID, body: ProjectCreate, session: SessionDep, access: AccessDep) -> ProjectRead:
    project = projects.create_project(
        session, access, org_id, name=body.name, slug=body.slug, description=body.description
    )
    return ProjectRead.model_validate(project)


@router.get("/orgs/{org_id}/projects", response_model=ProjectPage, summary="Projects of an organization")
def list_projects(
    org_id: uuid.UUID,
    session: SessionDep,
    access: AccessDep,
    page_token: PageToken = None,
    max_results: MaxResults = 100,
    deleted: bool = Query(False, description="List the deleted projects instead (org admins)"),
) -> ProjectPage:
    page = projects.list_projects(
        session, access, org_id, deleted=deleted, page_token=page_token, max_results=max_results
    )
    return ProjectPage(
        items=[ProjectRead.model_validate(row[0]) for row in page.rows], next_page_token=page.next_page_token
    )


@router.get("/projects/{project_id}", response_model=ProjectRead, summary="A project")
def get_project(project_id: uuid.UUID, access: AccessDep) -> ProjectRead:
    return ProjectRead.model_validate(projects.get_project(access, project_id))


@router.patch("/projects/{project_id}", response_model=ProjectRead, summary="Rename or describe (project admins)")
def update_project(project_id: uuid.UUID, body: ProjectUpdate, session: SessionDep, access: AccessDep) -> ProjectRead:
    project = projects.update_project(session, access, project_id, changes=body.changes())
    return ProjectRead.model_validate(project)


@router.delete("/projects/{project_id}", status_code=204, summary="Soft-delete (project admins)")
def delete_project(project_id: uuid.UUID, session: SessionDep, access: AccessDep) -> None:
    projects.delete_project(session, access, project_id)


@router.post("/projects/{project_id}/restore", response_model=ProjectRead, summary="Restore a deleted one (org admins)")
def restore_project(project_id: uuid.UUID, session: SessionDep, access: AccessDep) -> ProjectRead:
    return ProjectRead.model_validate(projects.restore_project(session, access, project_id))


@router.get("/projects/{project_id}/members", response_model=ProjectMemberPage, summary="Explicit project roles")
def list_members(
    project_id: uuid.UUID,
    session: SessionDep,
    access: AccessDep,
    page_token: PageToken = None,
    max_results: MaxResults = 100,
) -> ProjectMemberPage:
    page = projects.list_members(session, access, project_id, page_token=page_token, max_results=max_results)
    return ProjectMemberPage(items=[_member(row) for row in page.rows], next_page_token=page.next_page_token)


@router.post(
    "/projects/{project_id}/members",
    response_model=ProjectMemberRead,
    status_code=201,
    summary="Give an org member a role in this project (narrows or widens their org role)",
)
def add_member(
    project_id: uuid.UUID, body: ProjectMemberCreate, session: SessionDep, access: AccessDep
) -> ProjectMemberRead:
    return _member(projects.add_member(session, access, project_id, email=body.email, role=body.role))


@router.patch("/projects/{project_id}/members/{user_id}", response_model=ProjectMemberRead, summary="Change a role")
def change_member_role(
    project_id: uuid.UUID, user_id: uuid.UUID, body: ProjectMemberUpdate, session: SessionDep, access: AccessDep
) -> ProjectMemberRead:
    return _member(projects.change_member_role(session, access, project_id, user_id, role=body.role))


@router.delete(
    "/projects/{project_id}/members/{user_id}",
    status_code=204,
    summary="Drop a project role (the org role applies again)",
)
def remove_member(project_id: uuid.UUID, user_id: uuid.UUID, session: SessionDep, access: AccessDep) -> None:
    projects.remove_member(session, access, project_id, user_id)
