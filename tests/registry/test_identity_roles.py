"""Roles: viewers read, members work, admins administer; a project role narrows or widens the org role;
owners are protected (only owners make or remove owners, and an organization keeps one)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from shared.db.models import ApiKey, Organization, Project, ProjectMember, User
from tests.factories import add_project_member, make_api_key, make_member, make_project


@pytest.fixture
def people(db_session, tenant, settings):
    def member(role):
        return make_member(db_session, org_id=tenant.org_id, role=role, jwt_secret=settings.jwt_secret)

    return {role: member(role) for role in ("admin", "member", "viewer")}


def test_a_viewer_reads_but_cannot_change(client, tenant, people):
    viewer = people["viewer"].headers
    assert client.get(f"/api/v1/orgs/{tenant.org_id}", headers=viewer).status_code == 200
    assert client.get(f"/api/v1/projects/{tenant.project_id}", headers=viewer).status_code == 200
    assert client.get(f"/api/v1/orgs/{tenant.org_id}/members", headers=viewer).status_code == 200
    for method, path, body in (
        ("PATCH", f"/api/v1/projects/{tenant.project_id}", {"name": "x"}),
        ("POST", f"/api/v1/orgs/{tenant.org_id}/projects", {"name": "x"}),
        ("PATCH", f"/api/v1/orgs/{tenant.org_id}", {"name": "x"}),
    ):
        response = client.request(method, path, json=body, headers=viewer)
        assert response.status_code == 403, (method, path)
        assert response.json()["error_code"] == "PERMISSION_DENIED"


def test_a_member_works_but_cannot_administer(client, db_session, tenant, people):
    member = people["member"]
    created = client.post(f"/api/v1/orgs/{tenant.org_id}/projects", json={"name": "Side Quest"}, headers=member.headers)
    assert created.status_code == 201, created.text
    # The member administers what they created ...
    own = created.json()["id"]
    assert _patch(client, f"/api/v1/projects/{own}", {"description": "mine"}, member.headers) == 200
    # ... and nothing else.
    for method, path, body in (
        ("PATCH", f"/api/v1/orgs/{tenant.org_id}", {"name": "x"}),
        ("POST", f"/api/v1/orgs/{tenant.org_id}/members", {"email": people["viewer"].email, "role": "admin"}),
        ("PATCH", f"/api/v1/orgs/{tenant.org_id}/members/{people['viewer'].user_id}", {"role": "admin"}),
        ("DELETE", f"/api/v1/orgs/{tenant.org_id}/members/{people['viewer'].user_id}", None),
        ("PATCH", f"/api/v1/projects/{tenant.project_id}", {"name": "x"}),
        ("POST", f"/api/v1/projects/{tenant.project_id}/members", {"email": member.email, "role": "admin"}),
        ("GET", f"/api/v1/orgs/{tenant.org_id}/audit-logs", None),
        ("GET", f"/api/v1/orgs/{tenant.org_id}/api-keys", None),
    ):
        response = client.request(method, path, json=body, headers=member.headers)
        assert response.status_code == 403, (method, path, response.text)
    assert db_session.scalar(select(ProjectMember.role).where(ProjectMember.project_id == tenant.project_id)) is None


def test_a_project_role_narrows_the_org_role(client, db_session, tenant, people):
    admin = people["admin"]
    narrowed = make_project(db_session, db_session.get(Organization, tenant.org_id))
    add_project_member(db_session, narrowed, db_session.get(User, admin.user_id), "viewer")
    assert _patch(client, f"/api/v1/projects/{narrowed.id}", {"name": "x"}, admin.headers) == 403
    assert client.get(f"/api/v1/projects/{narrowed.id}", headers=admin.headers).status_code == 200
    assert _patch(client, f"/api/v1/projects/{tenant.project_id}", {"name": "y"}, admin.headers) == 200


def test_a_project_role_widens_the_org_role(client, db_session, tenant, people):
    viewer = people["viewer"]
    widened = make_project(db_session, db_session.get(Organization, tenant.org_id))
    add_project_member(db_session, widened, db_session.get(User, viewer.user_id), "admin")
    assert _patch(client, f"/api/v1/projects/{widened.id}", {"name": "x"}, viewer.headers) == 200
    added = client.post(
        f"/api/v1/projects/{widened.id}/members",
        json={"email": people["member"].email, "role": "viewer"},
        headers=viewer.headers,
    )
    assert added.status_code == 201, added.text
    assert _patch(client, f"/api/v1/projects/{tenant.project_id}", {"name": "x"}, viewer.headers) == 403

    # Dropping the project role brings the org role back.
    removed = client.delete(f"/api/v1/projects/{widened.id}/members/{viewer.user_id}", headers=tenant.headers)
    assert removed.status_code == 204
    assert _patch(client, f"/api/v1/projects/{widened.id}", {"name": "z"}, viewer.headers) == 403


def test_owners_stay_admins_whatever_their_project_role(client, db_session, tenant):
    owner = db_session.get(User, tenant.user_id)
    add_project_member(db_session, db_session.get(Project, tenant.project_id), owner, "viewer")
    assert _patch(client, f"/api/v1/projects/{tenant.project_id}", {"name": "x"}, tenant.headers) == 200


def test_only_owners_make_or_unmake_owners(client, tenant, people):
    admin = people["admin"]
    member_path = f"/api/v1/orgs/{tenant.org_id}/members/{people['member'].user_id}"
    assert client.patch(member_path, json={"role": "owner"}, headers=admin.headers).status_code == 403
    assert client.patch(member_path, json={"role": "admin"}, headers=admin.headers).status_code == 200
    owner_path = f"/api/v1/orgs/{tenant.org_id}/members/{tenant.user_id}"
    assert client.patch(owner_path, json={"role": "member"}, headers=admin.headers).status_code == 403
    assert client.delete(owner_path, headers=admin.headers).status_code == 403
    promoted = client.patch(member_path, json={"role": "owner"}, headers=tenant.headers)
    assert promoted.status_code == 200 and promoted.json()["role"] == "owner"


def test_an_organization_keeps_an_owner(client, tenant, people):
    me = f"/api/v1/orgs/{tenant.org_id}/members/{tenant.user_id}"
    for method, body in (("PATCH", {"role": "admin"}), ("DELETE", None)):
        response = client.request(method, me, json=body, headers=tenant.headers)
        assert response.status_code == 400, response.text
        assert response.json()["error_code"] == "INVALID_STATE"
    other = f"/api/v1/orgs/{tenant.org_id}/members/{people['admin'].user_id}"
    assert client.patch(other, json={"role": "owner"}, headers=tenant.headers).status_code == 200
    assert client.patch(me, json={"role": "admin"}, headers=tenant.headers).status_code == 200


def test_leaving_drops_project_roles_and_revokes_keys(client, db_session, tenant, people):
    member = people["member"]
    user = db_session.get(User, member.user_id)
    org = db_session.get(Organization, tenant.org_id)
    add_project_member(db_session, db_session.get(Project, tenant.project_id), user, "admin")
    key_row, _ = make_api_key(db_session, user=user, org=org, scopes=["registry:read"])

    left = client.delete(f"/api/v1/orgs/{tenant.org_id}/members/{member.user_id}", headers=member.headers)
    assert left.status_code == 204, left.text
    assert client.get(f"/api/v1/orgs/{tenant.org_id}", headers=member.headers).status_code == 404
    db_session.expire_all()
    assert db_session.get(ApiKey, key_row.id).revoked_at is not None
    assert db_session.scalar(select(ProjectMember).where(ProjectMember.user_id == member.user_id)) is None


def _patch(client, path: str, body: dict, headers: dict) -> int:
    return client.patch(path, json=body, headers=headers).status_code
