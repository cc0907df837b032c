"""Log in with a password for a short-lived bearer token; ask who you are."""

from __future__ import annotations

from fastapi import APIRouter

from services.registry.domain import identity
from services.registry.schemas import (
    LoginRequest,
    MeApiKey,
    MeOrganization,
    MeProjectRole,
    MeRead,
    TokenRead,
    UserRead,
)
from shared.core.deps import AccessDep, SessionDep, SettingsDep
from shared.core.docs import error_responses

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


@router.post(
    "/login",
    response_model=TokenRead,
    responses=error_responses(401),
    summary="Exchange email and password for a bearer token",
)
def login(body: LoginRequest, session: SessionDep, settings: SettingsDep) -> TokenRead:
    token, expires_at = identity.login(
        session, email=body.email, password=body.password, jwt_secret=settings.jwt_secret, ttl_s=settings.jwt_ttl_s
    )
    return TokenRead(access_token=token, expires_at=expires_at)


@router.get("/me", response_model=MeRead, summary="The caller: user, organizations and roles, API key limits")
def me(session: SessionDep, access: AccessDep) -> MeRead:
    found = identity.who_am_i(session, access)
    key = found.api_key
    return MeRead(
        user=UserRead.model_validate(found.user),
        organizations=[
            MeOrganization(id=org.id, slug=org.slug, name=org.name, role=role) for org, role in found.organizations
        ],
        project_roles=[
            MeProjectRole(project_id=project.id, organization_id=project.organization_id, role=member.role)
            for member, project in found.project_roles
        ],
        api_key=MeApiKey(id=key.id, scopes=key.scopes, organization_id=key.organization_id, project_id=key.project_id)
        if key
        else None,
    )
