"""Tenancy, table-driven over every identity route: a user of org A cannot list, read, change or delete
anything of org B. Routes are enumerated from the app, so a new one fails this test until it is in the table.
"""

from __future__ import annotations

import importlib
import uuid
from dataclasses import dataclass

import pytest
from fastapi.routing import APIRoute
from sqlalchemy import select

from shared.db.base import utcnow
from shared.db.models import ApiKey, Organization, OrganizationMembership, Project, ProjectMember, User
from tests.factories import add_project_member, bearer, make_api_key, make_member, make_project

IDENTITY_MODULES = [
    f"services.registry.api.{name}" for name in ("auth", "users", "organizations", "projects", "api_keys", "audit_logs")
]
MISSING = {404}
# Routes that do not name B's objects: they must succeed or fail for A's own reasons, and say nothing of B.
OWN = "own"


@dataclass
class World:
    """Org B's objects, as A would have to name them."""

    org_id: uuid.UUID
    project_id: uuid.UUID
    deleted_project_id: uuid.UUID
    member_id: uuid.UUID
    member_email: str
    owner_email: str
    key_id: uuid.UUID
    a_email: str

    def secrets(self) -> list[str]:
        ids = (self.org_id, self.project_id, self.deleted_project_id, self.member_id, self.key_id)
        return [str(v) for v in ids] + [self.member_email, self.owner_email]


# (method, route template) -> (expected statuses or OWN, request kwargs given B's world)
TABLE = {
    ("POST", "/api/v1/auth/login"): ({401}, lambda b: {"json": {"email": b.owner_email, "password": "guess1234"}}),
    ("GET", "/api/v1/auth/me"): (OWN, lambda b: {}),
    ("POST", "/api/v1/users"): (
        MISSING,
        lambda b: {
            "json": {
                "email": f"{uuid.uuid4().hex[:8]}@example.com",
                "password": "long enough",
                "organization_id": str(b.org_id),
                "role": "owner",
            }
        },
    ),
    ("GET", "/api/v1/users/me"): (OWN, lambda b: {}),
    ("PATCH", "/api/v1/users/me"): (OWN, lambda b: {"json": {"full_name": "A, renamed"}}),
    ("POST", "/api/v1/orgs"): (OWN, lambda b: {"json": {"name": f"A side {uuid.uuid4().hex[:6]}"}}),
    ("GET", "/api/v1/orgs"): (OWN, lambda b: {}),
    ("GET", "/api/v1/orgs/{org_id}"): (MISSING, lambda b: {}),
    ("PATCH", "/api/v1/orgs/{org_id}"): (MISSING, lambda b: {"json": {"name": "pwned"}}),
    ("DELETE", "/api/v1/orgs/{org_id}"): (MISSING, lambda b: {}),
    ("POST", "/api/v1/orgs/{org_id}/restore"): (MISSING, lambda b: {}),
    ("GET", "/api/v1/orgs/{org_id}/members"): (MISSING, lambda b: {}),
    ("POST", "/api/v1/orgs/{org_id}/members"): (MISSING, lambda b: {"json": {"email": b.a_email, "role": "owner"}}),
    ("PATCH", "/api/v1/orgs/{org_id}/members/{user_id}"): (MISSING, lambda b: {"json": {"role": "viewer"}}),
    ("DELETE", "/api/v1/orgs/{org_id}/members/{user_id}"): (MISSING, lambda b: {}),
    ("POST", "/api/v1/orgs/{org_id}/projects"): (MISSING, lambda b: {"json": {"name": "Planted"}}),
    ("GET", "/api/v1/orgs/{org_id}/projects"): (MISSING, lambda b: {}),
    ("GET", "/api/v1/projects/{project_id}"): (MISSING, lambda b: {}),
    ("PATCH", "/api/v1/projects/{project_id}"): (MISSING, lambda b: {"json": {"name": "pwned"}}),
    ("DELETE", "/api/v1/projects/{project_id}"): (MISSING, lambda b: {}),
    ("POST", "/api/v1/projects/{project_id}/restore"): (MISSING, lambda b: {"project_id": b.deleted_project_id}),
    ("GET", "/api/v1/projects/{project_id}/members"): (MISSING, lambda b: {}),
    ("POST", "/api/v1/projects/{project_id}/members"): (
        MISSING,
        lambda b: {"json": {"email": b.a_email, "role": "admin"}},
    ),
    ("PATCH", "/api/v1/projects/{project_id}/members/{user_id}"): (MISSING, lambda b: {"json": {"role": "viewer"}}),
    ("DELETE", "/api/v1/projects/{project_id}/members/{user_id}"): (MISSING, lambda b: {}),
    ("POST", "/api/v1/api-keys"): (
        MISSING,
        lambda b: {"json": {"name": "into B", "organization_id": str(b.org_id), "scopes": ["admin"]}},
    ),
    ("GET", "/api/v1/api-keys"): (OWN, lambda b: {"params": {"organization_id": str(b.org_id)}}),
    ("GET", "/api/v1/api-keys/{key_id}"): (MISSING, lambda b: {}),
    ("DELETE", "/api/v1/api-keys/{key_id}"): (MISSING, lambda b: {}),
    ("GET", "/api/v1/orgs/{org_id}/api-keys"): (MISSING, lambda b: {}),
    ("GET", "/api/v1/orgs/{org_id}/audit-logs"): (MISSING, lambda b: {}),
}


def identity_routes() -> set[tuple[str, str]]:
    return {
        (method, route.path)
        for module in IDENTITY_MODULES
        for route in importlib.import_module(module).router.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    }


def test_the_table_covers_every_identity_route(app):
    served = {(method, path) for path, ops in app.openapi()["paths"].items() for method in map(str.upper, ops)}
    assert identity_routes() <= served
    assert identity_routes() == set(TABLE)


@pytest.fixture
def world_b(db_session, tenant, other_tenant, settings) -> World:
    org = db_session.get(Organization, other_tenant.org_id)
    project = make_project(db_session, org)
    deleted = make_project(db_session, org)
    deleted.deleted_at = utcnow()
    member = make_member(db_session, org_id=org.id, role="member", jwt_secret=settings.jwt_secret)
    add_project_member(db_session, project, db_session.get(User, member.user_id), "admin")
    key, _ = make_api_key(db_session, user=db_session.get(User, member.user_id), org=org, scopes=["registry:read"])
    db_session.flush()
    return World(org.id, project.id, deleted.id, member.user_id, member.email, other_tenant.email, key.id, tenant.email)


def snapshot_b(db_session, b: World) -> dict:
    """Everything of B an identity route could change."""
    db_session.expire_all()

    def rows(stmt, *columns):
        return sorted(tuple(str(getattr(r, c)) for c in columns) for r in db_session.scalars(stmt))

    b_users = select(OrganizationMembership.user_id).where(OrganizationMembership.organization_id == b.org_id)
    b_projects = select(Project.id).where(Project.organization_id == b.org_id)
    return {
        "org": rows(select(Organization).where(Organization.id == b.org_id), "name", "slug", "deleted_at"),
        "projects": rows(select(Project).where(Project.organization_id == b.org_id), "id", "name", "deleted_at"),
        "members": rows(
            select(OrganizationMembership).where(OrganizationMembership.organization_id == b.org_id), "user_id", "role"
        ),
        "project_members": rows(
            select(ProjectMember).where(ProjectMember.project_id.in_(b_projects)), "project_id", "user_id", "role"
        ),
        "users": rows(select(User).where(User.id.in_(b_users)), "email", "full_name", "password_hash"),
        "keys": rows(select(ApiKey).where(ApiKey.organization_id == b.org_id), "id", "scopes", "revoked_at"),
    }


@pytest.mark.parametrize("credential", ["jwt", "api_key"])
def test_org_a_cannot_reach_org_b_through_any_identity_route(client, db_session, tenant, world_b, credential):
    headers = bearer(tenant.token) if credential == "jwt" else tenant.headers
    before = snapshot_b(db_session, world_b)
    path_values = {
        "org_id": world_b.org_id,
        "project_id": world_b.project_id,
        "user_id": world_b.member_id,
        "key_id": world_b.key_id,
    }
    for (method, template), (expected, make_request) in sorted(TABLE.items()):
        request = make_request(world_b)
        path = template.format(**{**path_values, **{k: request.pop(k) for k in list(request) if k in path_values}})
        response = client.request(method, path, headers=headers, **request)
        where = f"{method} {template} as A ({credential}): {response.status_code} {response.text[:200]}"
        if expected == OWN:
            assert response.status_code < 500, where
            assert not [s for s in world_b.secrets() if s in response.text], where
        else:
            assert response.status_code in expected, where
            assert response.json()["error_code"] in ("RESOURCE_DOES_NOT_EXIST", "UNAUTHENTICATED"), where
    assert snapshot_b(db_session, world_b) == before


def test_a_cannot_pull_b_people_or_projects_into_its_own_objects(client, db_session, tenant, world_b):
    """Mixed references: A's organization or project with B's user, project or key."""
    headers = bearer(tenant.token)
    own_org, own_project = tenant.org_id, tenant.project_id
    key_body = {"name": "x", "organization_id": str(own_org), "scopes": ["admin"]}
    cases = [
        ("PATCH", f"/api/v1/orgs/{own_org}/members/{world_b.member_id}", {"role": "viewer"}, 404),
        ("DELETE", f"/api/v1/orgs/{own_org}/members/{world_b.member_id}", None, 404),
        ("POST", f"/api/v1/projects/{own_project}/members", {"email": world_b.member_email, "role": "admin"}, 400),
        ("PATCH", f"/api/v1/projects/{own_project}/members/{world_b.member_id}", {"role": "admin"}, 404),
        ("POST", "/api/v1/api-keys", {**key_body, "project_id": str(world_b.project_id)}, 404),
    ]
    before = snapshot_b(db_session, world_b)
    for method, path, body, status in cases:
        response = client.request(method, path, json=body, headers=headers)
        assert response.status_code == status, (method, path, response.text)
    assert snapshot_b(db_session, world_b) == before
