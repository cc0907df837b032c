"""Organizations and projects through their lives: creation, soft delete and restore, pagination, and
bad input that must come back as a 4xx with an error code, writing nothing."""

from __future__ import annotations

from sqlalchemy import func, select

from shared.db.models import Organization, OrganizationMembership, Project
from tests.factories import bearer, make_member


def test_creating_an_organization_makes_you_owner_with_a_default_project(client, db_session, tenant):
    created = client.post("/api/v1/orgs", json={"name": "Deep Thought Labs"}, headers=bearer(tenant.token))
    assert created.status_code == 201, created.text
    org = created.json()
    assert (org["slug"], org["role"]) == ("deep-thought-labs", "owner")
    projects = client.get(f"/api/v1/orgs/{org['id']}/projects", headers=bearer(tenant.token)).json()["items"]
    assert [p["slug"] for p in projects] == ["default"]
    mine = client.get("/api/v1/orgs", headers=bearer(tenant.token)).json()["items"]
    assert {o["id"] for o in mine} == {str(tenant.org_id), org["id"]}
    # API keys are bound to one organization, so they do not create others.
    assert client.post("/api/v1/orgs", json={"name": "Via Key"}, headers=tenant.headers).status_code == 403


def test_soft_deleted_projects_vanish_and_come_back(client, db_session, tenant, settings):
    headers = tenant.headers
    project = client.post(f"/api/v1/orgs/{tenant.org_id}/projects", json={"name": "Old Stuff"}, headers=headers).json()
    path = f"/api/v1/projects/{project['id']}"
    assert client.delete(path, headers=headers).status_code == 204
    assert client.get(path, headers=headers).status_code == 404
    assert client.patch(path, json={"name": "x"}, headers=headers).status_code == 404
    listed = client.get(f"/api/v1/orgs/{tenant.org_id}/projects", headers=headers).json()["items"]
    assert project["id"] not in [p["id"] for p in listed]
    deleted = client.get(f"/api/v1/orgs/{tenant.org_id}/projects?deleted=true", headers=headers).json()["items"]
    assert [p["id"] for p in deleted] == [project["id"]]
    assert db_session.get(Project, project["id"]) is not None  # still there, only hidden

    member = make_member(db_session, org_id=tenant.org_id, role="member", jwt_secret=settings.jwt_secret)
    assert client.post(f"{path}/restore", headers=member.headers).status_code == 403
    restored = client.post(f"{path}/restore", headers=headers)
    assert restored.status_code == 200 and restored.json()["deleted_at"] is None
    assert client.get(path, headers=headers).status_code == 200
    assert client.post(f"{path}/restore", headers=headers).status_code == 404  # not deleted any more


def test_the_default_project_cannot_be_deleted(client, tenant):
    response = client.delete(f"/api/v1/projects/{tenant.project_id}", headers=tenant.headers)
    assert response.status_code == 400
    assert response.json()["error_code"] == "INVALID_STATE"


def test_soft_deleted_organizations_vanish_and_owners_or_admins_restore_them(client, db_session, tenant, settings):
    admin = make_member(db_session, org_id=tenant.org_id, role="admin", jwt_secret=settings.jwt_secret)
    path = f"/api/v1/orgs/{tenant.org_id}"
    assert client.delete(path, headers=admin.headers).status_code == 403  # owners only
    assert client.delete(path, headers=bearer(tenant.token)).status_code == 204
    assert client.get(path, headers=bearer(tenant.token)).status_code == 404
    assert client.get(f"/api/v1/projects/{tenant.project_id}", headers=bearer(tenant.token)).status_code == 404
    assert client.get("/api/v1/orgs", headers=bearer(tenant.token)).json()["items"] == []
    deleted = client.get("/api/v1/orgs?deleted=true", headers=admin.headers).json()["items"]
    assert [o["id"] for o in deleted] == [str(tenant.org_id)]

    restored = client.post(f"{path}/restore", headers=admin.headers)
    assert restored.status_code == 200, restored.text
    assert client.get(f"/api/v1/projects/{tenant.project_id}", headers=bearer(tenant.token)).status_code == 200


def test_lists_page_with_opaque_tokens(client, tenant):
    url = f"/api/v1/orgs/{tenant.org_id}/projects"
    for n in range(5):
        assert client.post(url, json={"name": f"P{n}"}, headers=tenant.headers).status_code == 201
    seen, token = [], None
    while True:
        params = {"max_results": 2, **({"page_token": token} if token else {})}
        page = client.get(url, params=params, headers=tenant.headers).json()
        assert len(page["items"]) <= 2
        seen += [p["slug"] for p in page["items"]]
        token = page["next_page_token"]
        if not token:
            break
    assert seen == ["default", "p0", "p1", "p2", "p3", "p4"]

    for bad in ("not-a-token", "eyJhIjogMX0", "WyIyMDI2LTAxLTAxVDAwOjAwOjAwIiwgImFiYyJd"):
        response = client.get(url, params={"page_token": bad}, headers=tenant.headers)
        assert response.status_code == 400, bad
        assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    for size in (0, 501, "many"):
        response = client.get(url, params={"max_results": size}, headers=tenant.headers)
        assert response.status_code == 422
        assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_bad_input_is_a_4xx_with_a_code_and_writes_nothing(client, db_session, tenant):
    headers = {**tenant.headers, "content-type": "application/json"}
    orgs_before = db_session.scalar(select(func.count()).select_from(Organization))
    projects_before = db_session.scalar(select(func.count()).select_from(Project))
    cases = [
        ("POST", "/api/v1/orgs", b'{"name": "broken"', 422, "INVALID_PARAMETER_VALUE"),
        ("POST", "/api/v1/orgs", b'{"name": 42}', 422, "INVALID_PARAMETER_VALUE"),
        ("POST", "/api/v1/orgs", b'{"name": "Acme", "sulg": "typo"}', 422, "INVALID_PARAMETER_VALUE"),
        ("POST", "/api/v1/orgs", b'{"name": "Acme", "slug": "Not A Slug"}', 422, "INVALID_PARAMETER_VALUE"),
        ("POST", "/api/v1/orgs", b'{"name": "nul \\u0000 byte"}', 422, "INVALID_PARAMETER_VALUE"),
        ("POST", "/api/v1/orgs", b'{"name": "' + b"x" * 201 + b'"}', 422, "INVALID_PARAMETER_VALUE"),
        ("POST", f"/api/v1/orgs/{tenant.org_id}/projects", b'{"name": "Default"}', 409, "CONFLICT"),
        ("PATCH", f"/api/v1/orgs/{tenant.org_id}", b'{"name": null}', 422, "INVALID_PARAMETER_VALUE"),
        ("PATCH", f"/api/v1/projects/{tenant.project_id}", b'{"name": null}', 422, "INVALID_PARAMETER_VALUE"),
        (
            "POST",
            f"/api/v1/orgs/{tenant.org_id}/members",
            b'{"email": "ghost@example.com"}',
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "POST",
            "/api/v1/api-keys",
            b'{"name": "k", "organization_id": "%s", "scopes": ["root"]}' % str(tenant.org_id).encode(),
            422,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "POST",
            "/api/v1/api-keys",
            b'{"name": "k", "organization_id": "%s", "scopes": ["admin"], '
            b'"expires_at": "2001-01-01T00:00:00Z"}' % str(tenant.org_id).encode(),
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "POST",
            "/api/v1/api-keys",
            b'{"name": "k", "organization_id": "%s", "scopes": ["admin"], '
            b'"expires_at": "2031-01-01T00:00:00"}' % str(tenant.org_id).encode(),
            422,
            "INVALID_PARAMETER_VALUE",
        ),
        ("GET", f"/api/v1/orgs/{tenant.org_id}/audit-logs?since=yesterday", None, 422, "INVALID_PARAMETER_VALUE"),
        ("GET", "/api/v1/projects/not-a-uuid", None, 422, "INVALID_PARAMETER_VALUE"),
    ]
    for method, path, body, status, code in cases:
        response = client.request(method, path, content=body, headers=headers)
        assert response.status_code == status, (path, body, response.text)
        assert response.json()["error_code"] == code
        assert response.json()["message"]
    # A duplicate organization slug is refused before anything of it is written.
    client.post("/api/v1/orgs", json={"name": "Unique Co"}, headers=bearer(tenant.token))
    duplicate = client.post("/api/v1/orgs", json={"name": "Other", "slug": "unique-co"}, headers=bearer(tenant.token))
    assert duplicate.status_code == 409
    no_slug = client.post("/api/v1/orgs", json={"name": "!!!"}, headers=bearer(tenant.token))
    assert (no_slug.status_code, no_slug.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    assert db_session.scalar(select(func.count()).select_from(Organization)) == orgs_before + 1
    assert db_session.scalar(select(func.count()).select_from(Project)) == projects_before + 1
    assert (
        db_session.scalar(
            select(func.count())
            .select_from(OrganizationMembership)
            .where(OrganizationMembership.user_id == tenant.user_id)
        )
        == 2
    )
