"""Accounts. Sign-up is open while `TESSERA_SIGNUP_OPEN` is true (the default, so a fresh platform can get
its first user); an org admin can always create a person directly into their organization by passing
`organization_id` (and `role`) with their own credentials."""

from __future__ import annotations

from fastapi import APIRouter

from services.registry.domain import identity
from services.registry.schemas import UserCreate, UserRead, UserUpdate
from shared.core.auth import Access
from shared.core.deps import OptionalPrincipalDep, PrincipalDep, SessionDep, SettingsDep

router = APIRouter(prefix="/api/v1/users", tags=["users"])


@router.post("", response_model=UserRead, status_code=201, summary="Sign up, or add a new person to an org")
def create_user(
    body: UserCreate, session: SessionDep, principal: OptionalPrincipalDep, settings: SettingsDep
) -> UserRead:
    """Without `organization_id`: open sign-up, allowed while `TESSERA_SIGNUP_OPEN` is true (the default).
    With `organization_id`: an admin of that organization (sending their own credentials) creates the
    account as a member with `role`; only owners can create owners. Emails are unique (409 otherwise)."""
    user = identity.sign_up(
        session,
        Access(session, principal) if principal else None,
        signup_open=settings.signup_open,
        email=body.email,
        password=body.password,
        full_name=body.full_name,
        organization_id=body.organization_id,
        role=body.role,
    )
    return UserRead.model_validate(user)


@router.get("/me", response_model=UserRead, summary="Your account")
def read_me(session: SessionDep, principal: PrincipalDep) -> UserRead:
    return UserRead.model_validate(identity.get_user(session, principal.user_id))


@router.patch("/me", response_model=UserRead, summary="Change your name or password")
def update_me(body: UserUpdate, session: SessionDep, principal: PrincipalDep) -> UserRead:
    user = identity.update_me(
        session, principal, full_name=body.full_name, password=body.password, current_password=body.current_password
    )
    return UserRead.model_validate(user)
