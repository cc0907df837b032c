"""Who is calling (authentication) and what they may touch (authorization), in one place.

Tenancy rule: anything the caller cannot see is reported as missing (404), never as forbidden (403),
so that one organization cannot probe for the existence of another's objects.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Select, and_, select, update
from sqlalchemy.orm import Session

from shared.core.errors import InvalidParameter, NotFound, PermissionDenied, Unauthenticated
from shared.core.security import api_key_matches, decode_token, parse_api_key, verify_password
from shared.db.models import (
    ApiKey,
    Organization,
    OrganizationMembership,
    Project,
    ProjectMember,
    User,
)

SCOPE_AREAS = ("tracking", "registry", "deployments", "monitoring", "notifications")
SCOPES = frozenset({f"{area}:{level}" for area in SCOPE_AREAS for level in ("read", "write")} | {"admin"})

ROLE_RANK = {"viewer": 1, "member": 2, "admin": 3, "owner": 4}
_PROJECT_ROLE_FROM_ORG = {"owner": "admin", "admin": "admin", "member": "member", "viewer": "viewer"}
_ROLE_FOR_LEVEL = {"read": "viewer", "write": "member"}


@dataclass(frozen=True)
class Principal:
    user_id: uuid.UUID
    email: str
    api_key_id: uuid.UUID | None = None
    # None: an interactive login, limited only by roles. A set: an API key's scopes.
    scopes: frozenset[str] | None = None
    organization_id: uuid.UUID | None = None
    project_id: uuid.UUID | None = None

    def has_scope(self, scope: str) -> bool:
        if self.scopes is None or "admin" in self.scopes or scope in self.scopes:
            return True
        area, _, level = scope.partition(":")
        return level == "read" and f"{area}:write" in self.scopes


def validate_scopes(scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - SCOPES)
    if unknown:
        raise InvalidParameter(f"Unknown scopes {unknown}; known: {sorted(SCOPES)}")
    return sorted(set(scopes))


# Basic auth with a real password costs an argon2 verification (~50 ms); scripts that send it on every
# call (the mlflow client does) would pay that each time, so a successful check is remembered briefly.
_PASSWORD_CACHE_TTL_S = 300.0
# Each entry keeps the hash it was verified against, so a changed password invalidates it at once.
_password_cache: dict[str, tuple[uuid.UUID, float, str]] = {}
_password_cache_lock = threading.Lock()


def _password_cache_key(email: str, password: str) -> str:
    return hashlib.sha256(f"{email}\0{password}".encode()).hexdigest()


@dataclass(frozen=True)
class Authenticator:
    jwt_secret: str
    touch_interval_s: int = 60

    def authenticate(self, session: Session, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthenticated("Authentication required: send a bearer token or API key")
        scheme, _, credentials = authorization.partition(" ")
        scheme = scheme.lower()
        credentials = credentials.strip()
        if scheme == "bearer":
            if parse_api_key(credentials):
                return self._from_api_key(session, credentials, email=None)
            user_id = decode_token(credentials, secret=self.jwt_secret)
            if user_id is None:
                raise Unauthenticated("Invalid or expired token")
            user = session.get(User, user_id)
            if user is None or not user.is_active or user.deleted_at is not None:
                raise Unauthenticated("Invalid or expired token")
            return Principal(user_id=user.id, email=user.email)
        if scheme == "basic":
            return self._from_basic(session, credentials)
        raise Unauthenticated("Unsupported authorization scheme")

    def _from_basic(self, session: Session, credentials: str) -> Principal:
        try:
            email, _, secret = base64.b64decode(credentials, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthenticated("Malformed basic credentials") from None
        if parse_api_key(secret):
            return self._from_api_key(session, secret, email=email)
        cache_key = _password_cache_key(email, secret)
        with _password_cache_lock:
            cached = _password_cache.get(cache_key)
        user = session.get(User, cached[0]) if cached and cached[1] > time.monotonic() else None
        if user is None or user.password_hash != cached[2]:
            user = session.scalar(select(User).where(User.email == email.lower()))
            if user is None or not user.password_hash or not verify_password(user.password_hash, secret):
                raise Unauthenticated("Invalid credentials")
            with _password_cache_lock:
                _password_cache[cache_key] = (user.id, time.monotonic() + _PASSWORD_CACHE_TTL_S, user.password_hash)
        if not user.is_active or user.deleted_at is not None:
            raise Unauthenticated("Invalid credentials")
        return Principal(user_id=user.id, email=user.email)

    def _from_api_key(self, session: Session, key: str, *, email: str | None) -> Principal:
        prefix = parse_api_key(key)
        row = session.execute(
            select(ApiKey, User).join(User, User.id == ApiKey.user_id).where(ApiKey.prefix == prefix)
        ).first()
        if row is None or not api_key_matches(key, row.ApiKey.key_hash):
            raise Unauthenticated("Invalid API key")
        api_key, user = row.ApiKey, row.User
        now = datetime.now(UTC)
        if api_key.revoked_at is not None:
            raise Unauthenticated("API key has been revoked")
        if api_key.expires_at is not None and api_key.expires_at <= now:
            raise Unauthenticated("API key has expired")
        if not user.is_active or user.deleted_at is not None:
            raise Unauthenticated("Invalid API key")
        if email is not None and email.lower() != user.email:
            raise Unauthenticated("API key does not belong to that user")
        # Touch last_used_at at most once per interval: a write per call would double hot-path cost.
        if api_key.last_used_at is None or now - api_key.last_used_at > timedelta(seconds=self.touch_interval_s):
            session.execute(update(ApiKey).where(ApiKey.id == api_key.id).values(last_used_at=now))
        return Principal(
            user_id=user.id,
            email=user.email,
            api_key_id=api_key.id,
            scopes=frozenset(api_key.scopes),
            organization_id=api_key.organization_id,
            project_id=api_key.project_id,
        )


class Access:
    """Authorization for one caller within one request (role look-ups are cached for its duration)."""

    def __init__(self, session: Session, principal: Principal, *, project_hint: str | None = None):
        self.session = session
        self.principal = principal
        self.project_hint = project_hint
        self._org_roles: dict[uuid.UUID, str | None] = {}
        self._project_roles: dict[uuid.UUID, tuple[Project | None, str | None]] = {}

    # --- roles -------------------------------------------------------------------------------
    def org_role(self, organization_id: uuid.UUID) -> str | None:
        if organization_id not in self._org_roles:
            role = None
            if self.principal.organization_id in (None, organization_id):
                role = self.session.scalar(
                    select(OrganizationMembership.role)
                    .join(Organization, Organization.id == OrganizationMembership.organization_id)
                    .where(
                        OrganizationMembership.organization_id == organization_id,
                        OrganizationMembership.user_id == self.principal.user_id,
                        Organization.deleted_at.is_(None),
                    )
                )
            self._org_roles[organization_id] = role
        return self._org_roles[organization_id]

    def _project_and_role(self, project_id: uuid.UUID) -> tuple[Project | None, str | None]:
        if project_id not in self._project_roles:
            uid = self.principal.user_id
            # One round trip for the project and both roles: this runs on every tracking call.
            row = self.session.execute(
                select(Project, OrganizationMembership.role, ProjectMember.role)
                .join(Organization, Organization.id == Project.organization_id)
                .join(
                    OrganizationMembership,
                    and_(OrganizationMembership.organization_id == Project.organization_id,
                         OrganizationMembership.user_id == uid),
                )
                .outerjoin(ProjectMember, and_(ProjectMember.project_id == Project.id, ProjectMember.user_id == uid))
                .where(Project.id == project_id, Project.deleted_at.is_(None), Organization.deleted_at.is_(None))
            ).first()
            project, role = None, None
            if row is not None and self.principal.project_id in (None, project_id) and (
                self.principal.organization_id in (None, row[0].organization_id)
            ):
                project, org_role, member_role = row
                self._org_roles[project.organization_id] = org_role
                role = "admin" if org_role == "owner" else member_role or _PROJECT_ROLE_FROM_ORG[org_role]
            self._project_roles[project_id] = (project, role)
        return self._project_roles[project_id]

    def project_role(self, project_id: uuid.UUID) -> str | None:
        return self._project_and_role(project_id)[1]

    # --- checks ------------------------------------------------------------------------------
    def _check(self, role: str | None, scope: str, min_role: str | None, what: str) -> None:
        needed = min_role or _ROLE_FOR_LEVEL.get(scope.partition(":")[2], "admin")
        if not self.principal.has_scope(scope):
            raise PermissionDenied(f"API key lacks the '{scope}' scope")
        if ROLE_RANK[role] < ROLE_RANK[needed]:
            raise PermissionDenied(f"Your role '{role}' in this {what} cannot do this (needs '{needed}')")

    def require_org(self, organization_id: uuid.UUID, scope: str, min_role: str | None = None) -> Organization:
        role = self.org_role(organization_id)
        org = self.session.get(Organization, organization_id) if role else None
        if org is None:
            raise NotFound(f"Organization '{organization_id}' does not exist")
        self._check(role, scope, min_role, "organization")
        return org

    def require_project(self, project_id: uuid.UUID, scope: str, min_role: str | None = None) -> Project:
        project, role = self._project_and_role(project_id)
        if project is None:
            raise NotFound(f"Project '{project_id}' does not exist")
        self._check(role, scope, min_role, "project")
        return project

    def readable_project_ids(self, scope: str) -> Select:
        """Ids of every live project this caller may read in `scope`, as a subquery for IN (...).

        Every org role reads every project of its org (the lowest project role is viewer), so membership
        of the org is the whole test; API keys narrow it to their org and project.
        """
        if not self.principal.has_scope(scope):
            return select(Project.id).where(False)
        return self._member_project_ids()

    def _member_project_ids(self) -> Select:
        p = self.principal
        stmt = (
            select(Project.id)
            .join(OrganizationMembership, OrganizationMembership.organization_id == Project.organization_id)
            .join(Organization, Organization.id == Project.organization_id)
            .where(
                OrganizationMembership.user_id == p.user_id,
                Project.deleted_at.is_(None),
                Organization.deleted_at.is_(None),
            )
        )
        if p.organization_id is not None:
            stmt = stmt.where(Project.organization_id == p.organization_id)
        if p.project_id is not None:
            stmt = stmt.where(Project.id == p.project_id)
        return stmt

    def readable_org_ids(self) -> Select:
        p = self.principal
        stmt = (
            select(OrganizationMembership.organization_id)
            .join(Organization, Organization.id == OrganizationMembership.organization_id)
            .where(OrganizationMembership.user_id == p.user_id, Organization.deleted_at.is_(None))
        )
        if p.organization_id is not None:
            stmt = stmt.where(OrganizationMembership.organization_id == p.organization_id)
        return stmt

    def default_project(self, scope: str = "tracking:write") -> Project:
        """Where objects go when the client cannot say (the mlflow client never names a project):
        the API key's project, else the X-Tessera-Project header (id or slug), else the one project with
        slug `default` among the caller's organizations."""
        if self.principal.project_id is not None:
            return self.require_project(self.principal.project_id, scope)
        if self.project_hint:
            return self.require_project(self._resolve_project_hint(self.project_hint), scope)
        candidates = self.session.scalars(
            select(Project.id).where(Project.slug == "default", Project.id.in_(self._member_project_ids()))
        ).all()
        if len(candidates) != 1:
            raise InvalidParameter(
                "Cannot tell which project to use: use an API key limited to a project, or send the "
                "X-Tessera-Project header (project id or slug)"
            )
        return self.require_project(candidates[0], scope)

    def _resolve_project_hint(self, hint: str) -> uuid.UUID:
        try:
            return uuid.UUID(hint)
        except ValueError:
            pass
        ids = self.session.scalars(
            select(Project.id).where(Project.slug == hint, Project.id.in_(self._member_project_ids()))
        ).all()
        if len(ids) != 1:
            raise NotFound(f"Project '{hint}' does not exist")
        return ids[0]
