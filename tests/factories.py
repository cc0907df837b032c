"""Builders for test data, so a schema change touches one place."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from shared.core.security import generate_api_key, hash_password, issue_token
from shared.db.models import ApiKey, Organization, OrganizationMembership, Project, ProjectMember, User

DEFAULT_PASSWORD = "correct horse battery staple"
# argon2 is slow by design; tests make hundreds of users, so they share one hash.
_DEFAULT_HASH = hash_password(DEFAULT_PASSWORD)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def make_user(session: Session, *, email: str | None = None, full_name: str = "Test User") -> User:
    user = User(email=email or f"{unique('user')}@example.com", full_name=full_name, password_hash=_DEFAULT_HASH)
    session.add(user)
    session.flush()
    return user


def make_org(session: Session, *, owner: User, slug: str | None = None, with_default_project: bool = True):
    slug = slug or unique("org")
    org = Organization(name=slug.title(), slug=slug, settings={})
    session.add(org)
    session.flush()
    add_org_member(session, org, owner, "owner")
    if with_default_project:
        make_project(session, org, slug="default")
    return org


def add_org_member(session: Session, org: Organization, user: User, role: str) -> OrganizationMembership:
    membership = OrganizationMembership(organization_id=org.id, user_id=user.id, role=role)
    session.add(membership)
    session.flush()
    return membership


def make_project(session: Session, org: Organization, *, slug: str | None = None) -> Project:
    slug = slug or unique("proj")
    project = Project(organization_id=org.id, name=slug.title(), slug=slug)
    session.add(project)
    session.flush()
    return project


def add_project_member(session: Session, project: Project, user: User, role: str) -> ProjectMember:
    member = ProjectMember(project_id=project.id, user_id=user.id, role=role)
    session.add(member)
    session.flush()
    return member


def make_api_key(
    session: Session,
    *,
    user: User,
    org: Organization,
    scopes: list[str] | None = None,
    project: Project | None = None,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    new = generate_api_key()
    row = ApiKey(
        user_id=user.id,
        organization_id=org.id,
        project_id=project.id if project else None,
        name=unique("key"),
        prefix=new.prefix,
        key_hash=new.digest,
        scopes=scopes if scopes is not None else ["admin"],
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    return row, new.key


def bearer(key_or_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key_or_token}"}


def basic(email: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{email}:{secret}".encode()).decode()}


@dataclass
class Tenant:
    """A user who owns an organization with a `default` project, and an all-scopes API key for it."""

    user_id: uuid.UUID
    email: str
    org_id: uuid.UUID
    org_slug: str
    project_id: uuid.UUID
    api_key: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.api_key)


def make_tenant(session: Session, *, jwt_secret: str, scopes: list[str] | None = None) -> Tenant:
    user = make_user(session)
    org = make_org(session, owner=user)
    project = session.query(Project).filter_by(organization_id=org.id, slug="default").one()
    _, key = make_api_key(session, user=user, org=org, scopes=scopes)
    token, _ = issue_token(user.id, user.password_hash, secret=jwt_secret, ttl_s=3600)
    return Tenant(user.id, user.email, org.id, org.slug, project.id, key, token)


@dataclass
class Member:
    """A user added to an existing organization with some role, holding a login token."""

    user_id: uuid.UUID
    email: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


def make_member(session: Session, *, org_id: uuid.UUID, role: str, jwt_secret: str) -> Member:
    user = make_user(session)
    session.add(OrganizationMembership(organization_id=org_id, user_id=user.id, role=role))
    session.flush()
    token, _ = issue_token(user.id, user.password_hash, secret=jwt_secret, ttl_s=3600)
    return Member(user.id, user.email, token)
