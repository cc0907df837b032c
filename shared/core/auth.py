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
from typing import Any, cast

from sqlalchemy import Select, and_, event, select, update
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction, make_transient_to_detached
from sqlalchemy.orm.util import identity_key
from sqlalchemy.sql.dml import UpdateBase

from shared.core.errors import InvalidParameter, NotFound, PermissionDenied, Unauthenticated
from shared.core.security import (
    api_key_matches,
    decode_token,
    digest_session_token,
    parse_api_key,
    password_stamp,
    verify_password,
)
from shared.db.models import (
    ApiKey,
    BrowserSession,
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


def effective_project_role(org_role: str, member_role: str | None) -> str:
    """A member's role in a project: owners administer every project; otherwise an explicit project role,
    else the one their organization role carries."""
    return "admin" if org_role == "owner" else member_role or _PROJECT_ROLE_FROM_ORG[org_role]


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


# A browser session travels in a cookie; deps.py hands it to the authenticator as this pseudo-scheme, so
# it is checked, cached and invalidated exactly like a bearer token.
SESSION_SCHEME = "Session"

# Who a credential is and which roles a user holds, remembered for a few seconds per process: without
# this, every call of a training job paid three queries (key, roles, project) before doing its work.
# Bound: a revoked key, a deactivated user, a changed password, a removed member or a changed role takes
# effect at once in the process that made the change (see _forget_on_identity_change) and within
# IDENTITY_CACHE_TTL_S in every other process (other uvicorn workers, other services). Key and token
# expiry are checked on every hit.
IDENTITY_CACHE_TTL_S = 5.0
# A remembered caller this close to the end of their freshness (or to the next touch of their key) is read
# again in the background by the hot path (Authenticator.refresh, from shared.core.hot_routes), with the
# roles remembered for them, so that a steady caller is not found expired every IDENTITY_CACHE_TTL_S and
# sent down the usual path. Each entry still ends IDENTITY_CACHE_TTL_S after the database last vouched for
# it: the bound above holds.
IDENTITY_REFRESH_AHEAD_S = 1.5
_IDENTITY_CACHE_MAX = 10_000
_IDENTITY_MODELS = (User, ApiKey, BrowserSession, Organization, OrganizationMembership, Project, ProjectMember)
_IDENTITY_TABLES = frozenset(model.__table__.name for model in _IDENTITY_MODELS)
_IDENTITY_CHANGED = "tessera_identity_changed"


@dataclass(frozen=True, slots=True)
class _CachedPrincipal:
    principal: Principal
    fresh_until: float  # monotonic
    valid_until: datetime | None  # the key's or token's own expiry
    touched_at: datetime | None  # the key's last_used_at as last written


class _IdentityCache:
    """Successful authentications (by digest of the Authorization header) and role look-ups. Failures
    are never remembered. A generation counter keeps a look-up that raced an invalidation out."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.generation = 0
        self.principals: dict[str, _CachedPrincipal] = {}
        # (user, project) -> (expiry, detached copy of the live project or None, org role, member role)
        self.project_roles: dict[tuple[uuid.UUID, uuid.UUID], tuple[float, Project | None, str | None, str | None]] = {}
        self.org_roles: dict[tuple[uuid.UUID, uuid.UUID], tuple[float, str | None]] = {}

    def clear(self) -> None:
        with self.lock:
            self.generation += 1
            self.principals.clear()
            self.project_roles.clear()
            self.org_roles.clear()

    def put(self, table: dict, key: object, value: object, generation: int) -> None:
        with self.lock:
            if generation != self.generation:
                return
            if len(table) >= _IDENTITY_CACHE_MAX:
                table.clear()
            table[key] = value

    def forget(self, table: dict, key: object) -> None:
        with self.lock:
            table.pop(key, None)


_identity_cache = _IdentityCache()


@event.listens_for(Session, "after_flush")
def _note_identity_flush(session: Session, _flush: UOWTransaction) -> None:
    if any(isinstance(obj, _IDENTITY_MODELS) for objs in (session.new, session.dirty, session.deleted) for obj in objs):
        session.info[_IDENTITY_CHANGED] = True
        _identity_cache.clear()


@event.listens_for(Session, "do_orm_execute")
def _note_identity_statement(state: ORMExecuteState) -> None:
    if (state.is_update or state.is_delete or state.is_insert) and getattr(
        cast(UpdateBase, state.statement).table, "name", ""
    ) in _IDENTITY_TABLES:
        state.session.info[_IDENTITY_CHANGED] = True
        _identity_cache.clear()


@event.listens_for(Session, "after_commit")
def _forget_on_identity_change(session: Session) -> None:
    # Cleared again after commit: a request may have re-read the old rows between the flush and the commit.
    if session.info.pop(_IDENTITY_CHANGED, False):
        _identity_cache.clear()


@dataclass(frozen=True)
class Authenticator:
    jwt_secret: str
    touch_interval_s: int = 60

    def cached(self, authorization: str | None) -> Principal | None:
        """The caller from memory, without I/O; None when the database must be asked."""
        if not authorization:
            return None
        entry = _identity_cache.principals.get(_credential_digest(authorization))
        if entry is None or entry.fresh_until <= time.monotonic():
            return None
        now = datetime.now(UTC)
        if entry.valid_until is not None and entry.valid_until <= now:
            return None
        if entry.touched_at is not None and now - entry.touched_at > timedelta(seconds=self.touch_interval_s):
            return None
        return entry.principal

    def expiring(self, authorization: str) -> bool:
        """Whether the remembered caller is due for `refresh`: their entry ends, or their key is due to be
        touched, within IDENTITY_REFRESH_AHEAD_S."""
        entry = _identity_cache.principals.get(_credential_digest(authorization))
        if entry is None:
            return False
        if entry.fresh_until - time.monotonic() < IDENTITY_REFRESH_AHEAD_S:
            return True
        touch_due = timedelta(seconds=self.touch_interval_s - IDENTITY_REFRESH_AHEAD_S)
        return entry.touched_at is not None and datetime.now(UTC) - entry.touched_at > touch_due

    def refresh(self, session: Session, authorization: str) -> None:
        """Reads the caller and the roles remembered for them from the database again and remembers them
        afresh (touching the key ahead of time when it is nearly due); a caller no longer valid is
        forgotten at once."""
        digest = _credential_digest(authorization)
        generation = _identity_cache.generation
        try:
            principal, valid_until, touched_at = self._authenticate(
                session, authorization, touch_ahead_s=IDENTITY_REFRESH_AHEAD_S
            )
        except Unauthenticated:
            _identity_cache.forget(_identity_cache.principals, digest)
            return
        entry = _CachedPrincipal(principal, time.monotonic() + IDENTITY_CACHE_TTL_S, valid_until, touched_at)
        _identity_cache.put(_identity_cache.principals, digest, entry, generation)
        access = Access(session, principal)
        for user_id, project_id in list(_identity_cache.project_roles):
            if user_id == principal.user_id:
                access._read_member_project(project_id, generation)
        for user_id, organization_id in list(_identity_cache.org_roles):
            if user_id == principal.user_id:
                access._read_member_org_role(organization_id, generation)

    def authenticate(self, session: Session, authorization: str | None) -> Principal:
        principal = self.cached(authorization)
        if principal is not None:
            return principal
        if not authorization:
            raise Unauthenticated("Authentication required: send a bearer token or API key")
        generation = _identity_cache.generation
        principal, valid_until, touched_at = self._authenticate(session, authorization)
        entry = _CachedPrincipal(principal, time.monotonic() + IDENTITY_CACHE_TTL_S, valid_until, touched_at)
        _identity_cache.put(_identity_cache.principals, _credential_digest(authorization), entry, generation)
        return principal

    def _authenticate(
        self, session: Session, authorization: str, *, touch_ahead_s: float = 0.0
    ) -> tuple[Principal, datetime | None, datetime | None]:
        scheme, _, credentials = authorization.partition(" ")
        scheme = scheme.lower()
        credentials = credentials.strip()
        if scheme == "bearer":
            if parse_api_key(credentials):
                return self._from_api_key(session, credentials, email=None, touch_ahead_s=touch_ahead_s)
            claims = decode_token(credentials, secret=self.jwt_secret)
            if claims is None:
                raise Unauthenticated("Invalid or expired token")
            user = session.get(User, claims.user_id)
            if (
                user is None
                or not user.is_active
                or user.deleted_at is not None
                or claims.password_stamp != password_stamp(user.password_hash)
            ):
                raise Unauthenticated("Invalid or expired token")
            return Principal(user_id=user.id, email=user.email), claims.expires, None
        if scheme == "basic":
            return self._from_basic(session, credentials, touch_ahead_s=touch_ahead_s)
        if scheme == SESSION_SCHEME.lower():
            return self._from_browser_session(session, credentials)
        raise Unauthenticated("Unsupported authorization scheme")

    def _from_basic(
        self, session: Session, credentials: str, *, touch_ahead_s: float = 0.0
    ) -> tuple[Principal, datetime | None, datetime | None]:
        try:
            email, _, secret = base64.b64decode(credentials, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthenticated("Malformed basic credentials") from None
        if parse_api_key(secret):
            return self._from_api_key(session, secret, email=email, touch_ahead_s=touch_ahead_s)
        cache_key = _password_cache_key(email, secret)
        with _password_cache_lock:
            cached = _password_cache.get(cache_key)
        user = session.get(User, cached[0]) if cached and cached[1] > time.monotonic() else None
        if user is None or cached is None or user.password_hash != cached[2]:
            user = session.scalar(select(User).where(User.email == email.lower()))
            if user is None or not user.password_hash or not verify_password(user.password_hash, secret):
                raise Unauthenticated("Invalid credentials")
            with _password_cache_lock:
                _password_cache[cache_key] = (user.id, time.monotonic() + _PASSWORD_CACHE_TTL_S, user.password_hash)
        if not user.is_active or user.deleted_at is not None:
            raise Unauthenticated("Invalid credentials")
        return Principal(user_id=user.id, email=user.email), None, None

    def _from_browser_session(self, session: Session, token: str) -> tuple[Principal, datetime | None, datetime | None]:
        row = session.execute(
            select(BrowserSession.expires_at, User)
            .join(User, User.id == BrowserSession.user_id)
            .where(BrowserSession.token_hash == digest_session_token(token))
        ).first()
        if row is None or row.expires_at <= datetime.now(UTC) or not row.User.is_active or row.User.deleted_at:
            raise Unauthenticated("Your session has ended; sign in again")
        return Principal(user_id=row.User.id, email=row.User.email), row.expires_at, None

    def _from_api_key(
        self, session: Session, key: str, *, email: str | None, touch_ahead_s: float = 0.0
    ) -> tuple[Principal, datetime | None, datetime | None]:
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
        # Touch last_used_at at most once per interval: a write per call would double hot-path cost. On the
        # Core connection, so that this write is not taken for an identity change that empties the cache.
        touched_at = api_key.last_used_at
        if touched_at is None or now - touched_at > timedelta(seconds=self.touch_interval_s - touch_ahead_s):
            touch = update(ApiKey.__table__).where(ApiKey.id == api_key.id).values(last_used_at=now)
            session.connection().execute(touch)
            touched_at = now
        principal = Principal(
            user_id=user.id,
            email=user.email,
            api_key_id=api_key.id,
            scopes=frozenset(api_key.scopes),
            organization_id=api_key.organization_id,
            project_id=api_key.project_id,
        )
        return principal, api_key.expires_at, touched_at


def _credential_digest(authorization: str) -> str:
    return hashlib.sha256(authorization.encode()).hexdigest()


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
                role = self._member_org_role(organization_id)
            self._org_roles[organization_id] = role
        return self._org_roles[organization_id]

    def _member_org_role(self, organization_id: uuid.UUID) -> str | None:
        cached = _identity_cache.org_roles.get((self.principal.user_id, organization_id))
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        return self._read_member_org_role(organization_id, _identity_cache.generation)

    def _read_member_org_role(self, organization_id: uuid.UUID, generation: int) -> str | None:
        """The user's role in the organization from the database, remembered (unless the cache was emptied
        since `generation`)."""
        key = (self.principal.user_id, organization_id)
        role = self.session.scalar(
            select(OrganizationMembership.role)
            .join(Organization, Organization.id == OrganizationMembership.organization_id)
            .where(
                OrganizationMembership.organization_id == organization_id,
                OrganizationMembership.user_id == self.principal.user_id,
                Organization.deleted_at.is_(None),
            )
        )
        _identity_cache.put(_identity_cache.org_roles, key, (time.monotonic() + IDENTITY_CACHE_TTL_S, role), generation)
        return role

    def _member_project(self, project_id: uuid.UUID) -> tuple[Project | None, str | None, str | None]:
        """A detached copy of the live project with the user's org role and project role (None, None, None:
        not a member)."""
        cached = _identity_cache.project_roles.get((self.principal.user_id, project_id))
        if cached is not None and cached[0] > time.monotonic():
            return cached[1:]
        return self._read_member_project(project_id, _identity_cache.generation)

    def _read_member_project(
        self, project_id: uuid.UUID, generation: int
    ) -> tuple[Project | None, str | None, str | None]:
        """_member_project from the database, remembered (unless the cache was emptied since `generation`)."""
        key = (self.principal.user_id, project_id)
        uid = self.principal.user_id
        # One round trip for the project and both roles.
        row = self.session.execute(
            select(Project, OrganizationMembership.role, ProjectMember.role)
            .join(Organization, Organization.id == Project.organization_id)
            .join(
                OrganizationMembership,
                and_(
                    OrganizationMembership.organization_id == Project.organization_id,
                    OrganizationMembership.user_id == uid,
                ),
            )
            .outerjoin(ProjectMember, and_(ProjectMember.project_id == Project.id, ProjectMember.user_id == uid))
            .where(Project.id == project_id, Project.deleted_at.is_(None), Organization.deleted_at.is_(None))
        ).first()
        project, org_role, member_role = row if row is not None else (None, None, None)
        snapshot = _detached_copy(project) if project is not None else None
        entry = (time.monotonic() + IDENTITY_CACHE_TTL_S, snapshot, org_role, member_role)
        _identity_cache.put(_identity_cache.project_roles, key, entry, generation)
        return snapshot, org_role, member_role

    def _in_session(self, snapshot: Project) -> Project:
        """The session's own instance of a remembered project: from its identity map when a query of this
        request already loaded it (tracking loads a run with its project), else merged without a query."""
        present = self.session.identity_map.get(identity_key(Project, snapshot.id))
        return present if present is not None else self.session.merge(snapshot, load=False)

    def _project_and_role(self, project_id: uuid.UUID) -> tuple[Project | None, str | None]:
        """The project (a detached copy) and the caller's role in it; (None, None) when invisible."""
        if project_id not in self._project_roles:
            project, org_role, member_role = self._member_project(project_id)
            role = None
            if (
                project is None
                or org_role is None
                or self.principal.project_id not in (None, project_id)
                or (self.principal.organization_id not in (None, project.organization_id))
            ):
                project = None
            else:
                self._org_roles[project.organization_id] = org_role
                role = effective_project_role(org_role, member_role)
            self._project_roles[project_id] = (project, role)
        return self._project_roles[project_id]

    def project_role(self, project_id: uuid.UUID) -> str | None:
        return self._project_and_role(project_id)[1]

    # --- checks ------------------------------------------------------------------------------
    def _check(self, role: str, scope: str, min_role: str | None, what: str) -> None:
        needed = min_role or _ROLE_FOR_LEVEL.get(scope.partition(":")[2], "admin")
        if not self.principal.has_scope(scope):
            raise PermissionDenied(f"API key lacks the '{scope}' scope")
        if ROLE_RANK[role] < ROLE_RANK[needed]:
            raise PermissionDenied(f"Your role '{role}' in this {what} cannot do this (needs '{needed}')")

    def require_org(self, organization_id: uuid.UUID, scope: str, min_role: str | None = None) -> Organization:
        role = self.org_role(organization_id)
        org = self.session.get(Organization, organization_id) if role else None
        if org is None or role is None:
            raise NotFound(f"Organization '{organization_id}' does not exist")
        self._check(role, scope, min_role, "organization")
        return org

    def require_project(self, project_id: uuid.UUID, scope: str, min_role: str | None = None) -> Project:
        return self._in_session(self._authorized_project(project_id, scope, min_role))

    def authorize_project(self, project_id: uuid.UUID, scope: str, min_role: str | None = None) -> None:
        """require_project for callers that need only the verdict, not the project itself."""
        self._authorized_project(project_id, scope, min_role)

    def _authorized_project(self, project_id: uuid.UUID, scope: str, min_role: str | None) -> Project:
        """The remembered (detached) project, once the caller may act on it."""
        project, role = self._project_and_role(project_id)
        if project is None or role is None:
            raise NotFound(f"Project '{project_id}' does not exist")
        self._check(role, scope, min_role, "project")
        return project

    def readable_project_ids(self, scope: str) -> Select:
        """Ids of every live project this caller may read in `scope`, as a subquery for IN (...);
        PermissionDenied when the caller's API key lacks `scope`.

        Every org role reads every project of its org (the lowest project role is viewer), so membership
        of the org is the whole test; API keys narrow it to their org and project.
        """
        if not self.principal.has_scope(scope):
            # Refused, not filtered to nothing: an empty list would tell the caller there is nothing to see.
            raise PermissionDenied(f"API key lacks the '{scope}' scope")
        return self._member_project_ids()

    def _member_project_ids(self) -> Select:
        p = self.principal
        return member_project_ids(p.user_id, p.organization_id, p.project_id)

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


def member_project_ids(user_id: Any, organization_id: Any = None, project_id: Any = None) -> Select:
    """Ids of the live projects of a user's organizations, narrowed to an API key's organization and project
    when it has them (None: not narrowed). The values may be bind parameters: a hot route's statement is
    compiled once for every caller with the same narrowing (see Access.readable_project_ids)."""
    stmt = (
        select(Project.id)
        .join(OrganizationMembership, OrganizationMembership.organization_id == Project.organization_id)
        .join(Organization, Organization.id == Project.organization_id)
        .where(
            OrganizationMembership.user_id == user_id,
            Project.deleted_at.is_(None),
            Organization.deleted_at.is_(None),
        )
    )
    if organization_id is not None:
        stmt = stmt.where(Project.organization_id == organization_id)
    if project_id is not None:
        stmt = stmt.where(Project.id == project_id)
    return stmt


def remembered_project_permission(
    principal: Principal, project_id: uuid.UUID, scope: str, min_role: str | None = None
) -> bool | None:
    """`Access.authorize_project`'s verdict from memory, without I/O: True when allowed, False when refused,
    None when the caller's roles in the project are not remembered (ask the database)."""
    cached = _identity_cache.project_roles.get((principal.user_id, project_id))
    if cached is None or cached[0] <= time.monotonic():
        return None
    # Every look-up authorize_project makes is now answered from memory: the session is never used.
    access = Access(cast(Session, None), principal)
    try:
        access.authorize_project(project_id, scope, min_role)
    except (NotFound, PermissionDenied):
        return False
    return True


def remembered_org_permission(
    principal: Principal, organization_id: uuid.UUID, scope: str, min_role: str | None = None
) -> bool | None:
    """`Access.require_org`'s verdict from memory, without I/O: True when allowed, False when refused,
    None when the caller's role in the organization is not remembered (ask the database)."""
    if principal.organization_id not in (None, organization_id):
        return False
    cached = _identity_cache.org_roles.get((principal.user_id, organization_id))
    if cached is None or cached[0] <= time.monotonic():
        return None
    role = cached[1]
    if role is None:
        return False
    try:
        Access(cast(Session, None), principal)._check(role, scope, min_role, "organization")
    except PermissionDenied:
        return False
    return True


def _detached_copy(project: Project) -> Project:
    """A detached copy of a loaded project, safe to share between threads: the request that loaded the
    original may still change it."""
    copy = Project(**{column.key: getattr(project, column.key) for column in Project.__mapper__.column_attrs})
    make_transient_to_detached(copy)
    return copy
