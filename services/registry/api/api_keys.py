"""API keys: create (the key is shown once), list, read, revoke; org admins see and revoke all of their org's."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Query

from services.registry.domain import api_keys
from services.registry.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyPage, ApiKeyRead
from shared.core.deps import AccessDep, MaxResults, PageToken, SessionDep
from shared.core.pagination import RowPage

router = APIRouter(prefix="/api/v1", tags=["api keys"])


def _page(page: RowPage) -> ApiKeyPage:
    keys = [ApiKeyRead.model_validate(row[0]) for row in page.rows]
    return ApiKeyPage(items=keys, next_page_token=page.next_page_token)


@router.post("/api-keys", response_model=ApiKeyCreated, status_code=201, summary="Create a key; store it now")
def create_api_key(body: ApiKeyCreate, session: SessionDep, access: AccessDep) -> ApiKeyCreated:
    row, key = api_keys.create_api_key(
        session,
        access,
        name=body.name,
        organization_id=body.organization_id,
        scopes=list(body.scopes),
        project_id=body.project_id,
        expires_at=body.expires_at,
        ttl_seconds=body.ttl_seconds,
    )
    return ApiKeyCreated.model_validate({**ApiKeyRead.model_validate(row).model_dump(), "key": key})


@router.get("/api-keys", response_model=ApiKeyPage, summary="Your keys (never the keys themselves)")
def list_my_api_keys(
    session: SessionDep,
    access: AccessDep,
    organization_id: uuid.UUID | None = Query(None, description="Only keys of this organization"),
    page_token: PageToken = None,
    max_results: MaxResults = 100,
) -> ApiKeyPage:
    page = api_keys.list_my_api_keys(
        session, access, organization_id=organization_id, page_token=page_token, max_results=max_results
    )
    return _page(page)


@router.get("/api-keys/{key_id}", response_model=ApiKeyRead, summary="One key")
def get_api_key(key_id: uuid.UUID, access: AccessDep) -> ApiKeyRead:
    return ApiKeyRead.model_validate(api_keys.get_api_key(access, key_id))


@router.delete("/api-keys/{key_id}", response_model=ApiKeyRead, summary="Revoke a key (yours, or any as org admin)")
def revoke_api_key(key_id: uuid.UUID, session: SessionDep, access: AccessDep) -> ApiKeyRead:
    return ApiKeyRead.model_validate(api_keys.revoke_api_key(session, access, key_id))


@router.get("/orgs/{org_id}/api-keys", response_model=ApiKeyPage, summary="Every key of the organization (admins)")
def list_org_api_keys(
    org_id: uuid.UUID,
    session: SessionDep,
    access: AccessDep,
    page_token: PageToken = None,
    max_results: MaxResults = 100,
) -> ApiKeyPage:
    page = api_keys.list_org_api_keys(session, access, org_id, page_token=page_token, max_results=max_results)
    return _page(page)
