"""People: sign-up, password login, and the caller's own profile, organizations and roles."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Select, select, true
from sqlalchemy.orm import Session

from shared.core import audit
from shared.core.auth import Access, Principal
from shared.core.errors import Conflict, InvalidParameter, PermissionDenied, Unauthenticated
from shared.core.pagination import RowPage, paginate
from shared.core.security import hash_password, issue_token, verify_password
from shared.db.base import utcnow
from shared.db.models import ApiKey, Organization, OrganizationMembership, Project, ProjectMember, User

MIN_PASSWORD_LENGTH = 8


def normalize_email(email: str) -> str:
    """Emails are stored lower-case: logins and basic auth look them up that way."""
    try:
        return validate_email(email.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise InvalidParameter(f"Invalid email: {exc}") from None


def members_with_users(membership: type[OrganizationMembership | ProjectMember], *where: Any) -> Select:
    """(membership row, User) pairs of an organization's or a project's membership table."""
    return select(membership, User).join(User, User.id == membership.user_id).where(*where)


def members_page(
    session: Session,
    membership: type[OrganizationMembership | ProjectMember],
    *where: Any,
    page_token: str | None,
    max_results: int,
) -> RowPage:
    """One page of (membership row, User), oldest membership first."""
    return paginate(
        session,
        members_with_users(membership, *where),
        created_col=membership.created_at,
        id_col=membership.id,
        page_token=page_token,
        max_results=max_results,
    )


def create_user(session: Session, *, email: str, password: str, full_name: str | None = None) -> User:
    email = normalize_email(email)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidParameter(f"Passwords need at least {MIN_PASSWORD_LENGTH} characters")
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict(f"A user with email '{email}' already exists")
    user = User(email=email, full_name=full_name, password_hash=hash_password(password))
    session.add(user)
    session.flush()
    return user


def add_organization_member(session: Session, organization_id: uuid.UUID, user: User, role: str) -> None:
    session.add(OrganizationMembership(organization_id=organization_id, user_id=user.id, role=role))
    session.flush()


def sign_up(
    session: Session,
    access: Access | None,
    *,
    signup_open: bool,
    email: str,
    password: str,
    full_name: str | None,
    organization_id: uuid.UUID | None,
    role: str,
) -> User:
    """Open sign-up (when enabled) creates a user with no organization; with `organization_id`, an admin
    of that organization creates the user as a member of it."""
    audit.describe(session, action="user.create", object_type="user", organization_id=organization_id)
    if organization_id is None:
        if not signup_open:
            raise PermissionDenied("Sign-up is closed: an organization admin must add you")
        user = create_user(session, email=email, password=password, full_name=full_name)
    else:
        if access is None:
            raise Unauthenticated("Adding a user to an organization needs an admin's credentials")
        access.require_org(organization_id, "admin")
        if role == "owner" and access.org_role(organization_id) != "owner":
            raise PermissionDenied("Only owners can make owners")
        user = create_user(session, email=email, password=password, full_name=full_name)
        add_organization_member(session, organization_id, user, role)
    audit.describe(
        session,
        action="user.create",
        object_type="user",
        object_id=user.id,
        organization_id=organization_id,
        details={"email": user.email, "role": role if organization_id else None},
    )
    return user


@cache
def _decoy_hash() -> str:
    return hash_password("decoy password, never valid")


def login(session: Session, *, email: str, password: str, jwt_secret: str, ttl_s: int) -> tuple[str, datetime]:
    email = email.strip().lower()
    audit.describe(session, action="auth.login", object_type="user", details={"email": email})
    user = session.scalar(select(User).where(User.email == email))
    if user is None or not user.password_hash:
        verify_password(_decoy_hash(), password)  # same cost whether or not the account exists
        raise Unauthenticated("Invalid email or password")
    if not verify_password(user.password_hash, password) or not user.is_active or user.deleted_at is not None:
        raise Unauthenticated("Invalid email or password")
    user.last_login_at = utcnow()
    audit.describe(session, action="auth.login", object_type="user", object_id=user.id, details={"email": email})
    return issue_token(user.id, user.password_hash, secret=jwt_secret, ttl_s=ttl_s)


@dataclass(frozen=True)
class Me:
    user: User
    organizations: list[tuple[Organization, str]]
    project_roles: list[tuple[ProjectMember, Project]]
    api_key: ApiKey | None


def who_am_i(session: Session, access: Access) -> Me:
    p = access.principal
    user = session.get_one(User, p.user_id)
    orgs = session.execute(
        select(Organization, OrganizationMembership.role)
        .join(OrganizationMembership, OrganizationMembership.organization_id == Organization.id)
        .where(OrganizationMembership.user_id == p.user_id, Organization.id.in_(access.readable_org_ids()))
        .order_by(Organization.slug)
    ).all()
    project_roles = session.execute(
        select(ProjectMember, Project)
        .join(Project, Project.id == ProjectMember.project_id)
        .where(
            ProjectMember.user_id == p.user_id,
            Project.organization_id.in_(access.readable_org_ids()),
            Project.deleted_at.is_(None),
            Project.id == p.project_id if p.project_id else true(),
        )
        .order_by(Project.slug)
    ).all()
    api_key = session.get(ApiKey, p.api_key_id) if p.api_key_id else None
    return Me(user, [r._tuple() for r in orgs], [r._tuple() for r in project_roles], api_key)


def update_me(
    session: Session,
    principal: Principal,
    *,
    full_name: str | None,
    password: str | None,
    current_password: str | None,
) -> User:
    audit.describe(session, action="user.update", object_type="user", object_id=principal.user_id)
    if not principal.has_scope("admin"):
        raise PermissionDenied("API key lacks the 'admin' scope")
    user = session.get_one(User, principal.user_id)
    if full_name is not None:
        user.full_name = full_name
    if password is not None:
        # A key or a stolen token alone must not be able to take the account over.
        if principal.api_key_id is not None:
            raise PermissionDenied("Passwords are changed with a password login, not an API key")
        if not current_password or not verify_password(user.password_hash or "", current_password):
            raise PermissionDenied("current_password is wrong")
        if len(password) < MIN_PASSWORD_LENGTH:
            raise InvalidParameter(f"Passwords need at least {MIN_PASSWORD_LENGTH} characters")
        user.password_hash = hash_password(password)
    session.flush()
    audit.describe(
        session,
        action="user.update",
        object_type="user",
        object_id=user.id,
        details={"changed": [k for k, v in {"full_name": full_name, "password": password}.items() if v is not None]},
    )
    return user


def get_user(session: Session, user_id: uuid.UUID) -> User:
    return session.get_one(User, user_id)
