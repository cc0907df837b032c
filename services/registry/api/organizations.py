"""Organizations (create, list mine, read, update, soft delete, restore) and their members."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Query
from sqlalchemy import Row

from services.registry.domain import organizations
from services.registry.schemas import (
    MembershipCreate,
    MembershipPage,
    MembershipRead,
    MembershipUpdate,
    OrganizationCreate,
    OrganizationPage,
    OrganizationRead,
    OrganizationUpdate,
)
from shared.core.deps import AccessDep, MaxResults, PageToken, SessionDep
from shared.db.models import Organization

router = APIRouter(prefix="/api/v1/orgs", tags=["organizations"])


def _org(org: Organization, role: str) -> OrganizationRead:
    return OrganizationRead(
        id=org.id,
        name=org.name,
        slug=org.slug,
        description=org.description,
        role=role,
        created_at=org.created_at,
        updated_at=org.updated_at,
        deleted_at=org.deleted_at,
    )


def _member(row: Row) -> MembershipRead:
    membership, user = row[0], row[1]
    return MembershipRead(
        user_id=user.id,
        email=user.email,
        full_name=user.full_name,
        role=membership.role,
        created_at=membership.created_at,
    )


@router.post("", response_model=OrganizationRead, status_code=201, summary="Create an organization (you own it)")
def create_organization(body: OrganizationCreate, session: SessionDep, access: AccessDep) -> OrganizationRead:
    view = organizations.create_organization(
        session, access, name=body.name, slug=body.slug, description=body.description
    )
    return _org(view.organization, view.role)


@router.get("", response_model=OrganizationPage, summary="Your organizations")
def list_organizations(
    session: SessionDep,
    access: AccessDep,
    page_token: PageToken = None,
    max_results: MaxResults = 100,
    deleted: bool = Query(False, description="List the deleted organizations you may restore instead"),
) -> OrganizationPage:
    page = organizations.list_organizations(
        session, access, deleted=deleted, page_token=page_token, max_results=max_results
    )
    return OrganizationPage(
        items=[_org(org, role) for org, role, *_ in page.rows], next_page_token=page.next_page_token
    )


@router.get("/{org_id}", response_model=OrganizationRead, summary="An organization")
def get_organization(org_id: uuid.UUID, access: AccessDep) -> OrganizationRead:
    view = organizations.get_organization(access, org_id)
    return _org(view.organization, view.role)


@router.patch("/{org_id}", response_model=OrganizationRead, summary="Rename or describe (admins)")
def update_organization(
    org_id: uuid.UUID, body: OrganizationUpdate, session: SessionDep, access: AccessDep
) -> OrganizationRead:
    view = organizations.update_organization(session, access, org_id, changes=body.changes())
    return _org(view.organization, view.role)


@router.delete("/{org_id}", status_code=204, summary="Soft-delete (owners); restore brings it back")
def delete_organization(org_id: uuid.UUID, session: SessionDep, access: AccessDep) -> None:
    organizations.delete_organization(session, access, org_id)


@router.post("/{org_id}/restore", response_model=OrganizationRead, summary="Restore a deleted one (owners, admins)")
def restore_organization(org_id: uuid.UUID, session: SessionDep, access: AccessDep) -> OrganizationRead:
    view = organizations.restore_organization(session, access, org_id)
    return _org(view.organization, view.role)


@router.get("/{org_id}/members", response_model=MembershipPage, summary="Members and their roles")
def list_members(
    org_id: uuid.UUID,
    session: SessionDep,
    access: AccessDep,
    page_token: PageToken = None,
    max_results: MaxResults = 100,
) -> MembershipPage:
    page = organizations.list_members(session, access, org_id, page_token=page_token, max_results=max_results)
    return MembershipPage(items=[_member(row) for row in page.rows], next_page_token=page.next_page_token)


@router.post("/{org_id}/members", response_model=MembershipRead, status_code=201, summary="Add a user by email")
def add_member(org_id: uuid.UUID, body: MembershipCreate, session: SessionDep, access: AccessDep) -> MembershipRead:
    return _member(organizations.add_member(session, access, org_id, email=body.email, role=body.role))


@router.patch("/{org_id}/members/{user_id}", response_model=MembershipRead, summary="Change a member's role")
def change_member_role(
    org_id: uuid.UUID, user_id: uuid.UUID, body: MembershipUpdate, session: SessionDep, access: AccessDep
) -> MembershipRead:
    return _member(organizations.change_member_role(session, access, org_id, user_id, role=body.role))


@router.delete("/{org_id}/members/{user_id}", status_code=204, summary="Remove a member (or leave)")
def remove_member(org_id: uuid.UUID, user_id: uuid.UUID, session: SessionDep, access: AccessDep) -> None:
    organizations.remove_member(session, access, org_id, user_id)
