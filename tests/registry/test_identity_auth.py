"""Authentication: password login and JWTs, API keys as bearer and basic auth, sign-up, your own account."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from shared.core.security import issue_token
from shared.db.models import ApiKey, Organization, Project, User
from tests.factories import DEFAULT_PASSWORD, basic, bearer, make_api_key, make_member, make_project


def _login(client, email: str, password: str):
    return client.post("/api/v1/auth/login", json={"email": email, "password": password})


def test_login_issues_a_short_lived_bearer_token(client, tenant, settings):
    response = _login(client, tenant.email.upper(), DEFAULT_PASSWORD)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    expires_at = datetime.fromisoformat(body["expires_at"])
    assert timedelta(0) < expires_at - datetime.now(UTC) <= timedelta(seconds=settings.jwt_ttl_s)

    me = client.get("/api/v1/auth/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200, me.text
    assert me.json()["user"]["email"] == tenant.email
    assert me.json()["user"]["last_login_at"] is not None
    assert me.json()["organizations"] == [
        {"id": str(tenant.org_id), "slug": tenant.org_slug, "name": tenant.org_slug.title(), "role": "owner"}
    ]
    assert me.json()["api_key"] is None


def test_wrong_password_and_unknown_email_fail_alike(client, tenant):
    for email, password in ((tenant.email, "not the password"), ("nobody@example.com", DEFAULT_PASSWORD)):
        response = _login(client, email, password)
        assert response.status_code == 401
        assert response.json() == {"error_code": "UNAUTHENTICATED", "message": "Invalid email or password"}


def test_expired_or_foreign_tokens_are_refused(client, db_session, tenant, settings):
    password_hash = db_session.get(User, tenant.user_id).password_hash
    valid, _ = issue_token(tenant.user_id, password_hash, secret=settings.jwt_secret, ttl_s=600)
    assert client.get("/api/v1/auth/me", headers=bearer(valid)).status_code == 200
    expired, _ = issue_token(tenant.user_id, password_hash, secret=settings.jwt_secret, ttl_s=-5)
    foreign_secret = "another secret of enough length for hs256"
    forged, _ = issue_token(tenant.user_id, password_hash, secret=foreign_secret, ttl_s=600)
    for token in (expired, forged, "not-a-jwt"):
        response = client.get("/api/v1/auth/me", headers=bearer(token))
        assert response.status_code == 401, token
        assert response.json()["error_code"] == "UNAUTHENTICATED"
    assert client.get("/api/v1/auth/me").status_code == 401


def test_changing_the_password_ends_every_session_of_the_old_one(client, tenant):
    old_token = _login(client, tenant.email, DEFAULT_PASSWORD).json()["access_token"]
    changed = client.patch(
        "/api/v1/users/me",
        headers=bearer(old_token),
        json={"current_password": DEFAULT_PASSWORD, "password": "a brand new passphrase"},
    )
    assert changed.status_code == 200, changed.text
    refused = client.get("/api/v1/auth/me", headers=bearer(old_token))
    assert refused.status_code == 401 and refused.json()["error_code"] == "UNAUTHENTICATED"
    new_token = _login(client, tenant.email, "a brand new passphrase").json()["access_token"]
    assert client.get("/api/v1/auth/me", headers=bearer(new_token)).status_code == 200
    # API keys are separate credentials and keep working.
    assert client.get("/api/v1/auth/me", headers=tenant.headers).status_code == 200


def test_basic_auth_takes_email_with_api_key_or_password(client, tenant):
    # How MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD arrive.
    for headers in (basic(tenant.email, tenant.api_key), basic(tenant.email, DEFAULT_PASSWORD)):
        response = client.get("/api/v1/auth/me", headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["user"]["email"] == tenant.email
    assert client.get("/api/v1/auth/me", headers=basic(tenant.email, "wrong password")).status_code == 401
    assert client.get("/api/v1/auth/me", headers=basic("someone@example.com", tenant.api_key)).status_code == 401


def test_revoked_and_expired_keys_are_refused(client, db_session, tenant):
    org = db_session.get(Organization, tenant.org_id)
    user = db_session.get(User, tenant.user_id)
    revoked_row, revoked_key = make_api_key(db_session, user=user, org=org, scopes=["registry:read"])
    _, expired_key = make_api_key(db_session, user=user, org=org, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert client.get("/api/v1/auth/me", headers=bearer(revoked_key)).status_code == 200

    revoke = client.delete(f"/api/v1/api-keys/{revoked_row.id}", headers=tenant.headers)
    assert revoke.status_code == 200, revoke.text
    assert revoke.json()["revoked_at"] is not None

    for key in (revoked_key, expired_key):
        for headers in (bearer(key), basic(tenant.email, key)):
            response = client.get("/api/v1/auth/me", headers=headers)
            assert response.status_code == 401
            assert response.json()["error_code"] == "UNAUTHENTICATED"


def test_a_read_scoped_key_cannot_write(client, db_session, tenant):
    key = _key(client, tenant, scopes=["registry:read"])
    assert client.get(f"/api/v1/orgs/{tenant.org_id}", headers=bearer(key)).status_code == 200
    assert client.get(f"/api/v1/projects/{tenant.project_id}", headers=bearer(key)).status_code == 200
    for method, path, body in (
        ("PATCH", f"/api/v1/orgs/{tenant.org_id}", {"name": "Renamed"}),
        ("POST", f"/api/v1/orgs/{tenant.org_id}/projects", {"name": "New"}),
        ("PATCH", f"/api/v1/projects/{tenant.project_id}", {"description": "changed"}),
        ("POST", "/api/v1/api-keys", {"name": "k", "organization_id": str(tenant.org_id), "scopes": ["admin"]}),
    ):
        response = client.request(method, path, json=body, headers=bearer(key))
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["error_code"] == "PERMISSION_DENIED"
    assert db_session.get(Organization, tenant.org_id).name != "Renamed"


def test_a_project_key_cannot_touch_another_project(client, db_session, tenant):
    org = db_session.get(Organization, tenant.org_id)
    other = make_project(db_session, org)
    key = _key(client, tenant, scopes=["admin"], project_id=tenant.project_id)
    headers = bearer(key)
    assert client.get(f"/api/v1/projects/{tenant.project_id}", headers=headers).status_code == 200
    assert client.get(f"/api/v1/projects/{other.id}", headers=headers).status_code == 404
    assert client.patch(f"/api/v1/projects/{other.id}", json={"name": "x"}, headers=headers).status_code == 404
    assert client.delete(f"/api/v1/projects/{other.id}", headers=headers).status_code == 404
    listed = client.get(f"/api/v1/orgs/{tenant.org_id}/projects", headers=headers).json()["items"]
    assert [p["id"] for p in listed] == [str(tenant.project_id)]
    # Nor can it mint a key that escapes its project.
    escape = {"name": "k", "organization_id": str(tenant.org_id), "scopes": ["admin"], "project_id": str(other.id)}
    assert client.post("/api/v1/api-keys", json=escape, headers=headers).status_code == 404
    unlimited = {"name": "k", "organization_id": str(tenant.org_id), "scopes": ["admin"]}
    assert client.post("/api/v1/api-keys", json=unlimited, headers=headers).status_code == 403
    assert db_session.get(Project, other.id).name != "x"

    me = client.get("/api/v1/auth/me", headers=headers).json()
    assert me["api_key"]["project_id"] == str(tenant.project_id)
    assert me["api_key"]["scopes"] == ["admin"]


def test_an_api_key_is_shown_once_and_listed_without_secret(client, db_session, tenant):
    created = client.post(
        "/api/v1/api-keys",
        json={"name": "ci", "organization_id": str(tenant.org_id), "scopes": ["tracking:write"], "ttl_seconds": 3600},
        headers=bearer(tenant.token),
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    assert key.startswith(f"tsk_{created.json()['prefix']}_")
    row = db_session.scalar(select(ApiKey).where(ApiKey.id == created.json()["id"]))
    assert key not in row.key_hash
    assert row.expires_at is not None

    listed = client.get("/api/v1/api-keys", headers=bearer(tenant.token))
    assert listed.status_code == 200
    assert key not in listed.text and row.key_hash not in listed.text
    entry = next(k for k in listed.json()["items"] if k["id"] == str(row.id))
    assert entry["scopes"] == ["tracking:write"] and "key" not in entry

    used = client.get("/api/v1/auth/me", headers=bearer(key))
    assert used.status_code == 200
    db_session.expire_all()
    assert db_session.get(ApiKey, row.id).last_used_at is not None


def test_a_key_made_by_a_key_inherits_its_limits(client, tenant):
    parent = client.post(
        "/api/v1/api-keys",
        json={
            "name": "p",
            "organization_id": str(tenant.org_id),
            "scopes": ["tracking:write", "registry:read"],
            "ttl_seconds": 600,
        },
        headers=bearer(tenant.token),
    ).json()
    headers = bearer(parent["key"])
    wider = {"name": "c", "organization_id": str(tenant.org_id), "scopes": ["deployments:write"]}
    assert client.post("/api/v1/api-keys", json=wider, headers=headers).status_code == 403
    narrower = {"name": "c", "organization_id": str(tenant.org_id), "scopes": ["tracking:read"], "ttl_seconds": 86400}
    child = client.post("/api/v1/api-keys", json=narrower, headers=headers)
    assert child.status_code == 201, child.text
    assert child.json()["expires_at"] == parent["expires_at"]


def test_viewers_cannot_mint_write_keys_nor_members_admin_keys(client, db_session, tenant, settings):
    viewer = make_member(db_session, org_id=tenant.org_id, role="viewer", jwt_secret=settings.jwt_secret)
    member = make_member(db_session, org_id=tenant.org_id, role="member", jwt_secret=settings.jwt_secret)

    def create(who, scopes):
        body = {"name": "k", "organization_id": str(tenant.org_id), "scopes": scopes}
        return client.post("/api/v1/api-keys", json=body, headers=who.headers).status_code

    assert create(viewer, ["registry:read"]) == 201
    assert create(viewer, ["tracking:write"]) == 403
    assert create(member, ["tracking:write"]) == 201
    assert create(member, ["admin"]) == 403


def test_open_sign_up_then_login(client):
    body = {"email": "New.Person@Example.com", "password": "a long enough password", "full_name": "New Person"}
    created = client.post("/api/v1/users", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["email"] == "new.person@example.com"
    assert "password" not in created.text
    assert _login(client, "new.person@example.com", body["password"]).status_code == 200

    again = client.post("/api/v1/users", json={**body, "email": "new.person@example.com"})
    assert again.status_code == 409
    assert again.json()["error_code"] == "CONFLICT"


def test_closed_sign_up_leaves_org_admins_to_add_people(client, app, db_session, tenant, settings):
    app.state.settings = settings.model_copy(update={"signup_open": False})
    body = {"email": "invitee@example.com", "password": "a long enough password"}
    refused = client.post("/api/v1/users", json=body)
    assert refused.status_code == 403

    member = make_member(db_session, org_id=tenant.org_id, role="member", jwt_secret=settings.jwt_secret)
    into_org = {**body, "organization_id": str(tenant.org_id), "role": "viewer"}
    assert client.post("/api/v1/users", json=into_org).status_code == 401
    assert client.post("/api/v1/users", json=into_org, headers=member.headers).status_code == 403
    assert client.post("/api/v1/users", json=into_org, headers=bearer(tenant.token)).status_code == 201

    members = client.get(f"/api/v1/orgs/{tenant.org_id}/members", headers=tenant.headers).json()["items"]
    assert {"email": "invitee@example.com", "role": "viewer"} in [
        {"email": m["email"], "role": m["role"]} for m in members
    ]


def test_change_your_name_and_password(client, tenant):
    renamed = client.patch("/api/v1/users/me", json={"full_name": "Renamed"}, headers=bearer(tenant.token))
    assert renamed.status_code == 200
    assert client.get("/api/v1/users/me", headers=bearer(tenant.token)).json()["full_name"] == "Renamed"

    new_password = "a brand new password"
    # The old password is remembered by basic auth's cache; a change must invalidate it at once.
    assert client.get("/api/v1/auth/me", headers=basic(tenant.email, DEFAULT_PASSWORD)).status_code == 200
    no_current = client.patch("/api/v1/users/me", json={"password": new_password}, headers=bearer(tenant.token))
    assert no_current.status_code == 403
    with_key = client.patch(
        "/api/v1/users/me",
        json={"password": new_password, "current_password": DEFAULT_PASSWORD},
        headers=tenant.headers,
    )
    assert with_key.status_code == 403
    changed = client.patch(
        "/api/v1/users/me",
        json={"password": new_password, "current_password": DEFAULT_PASSWORD},
        headers=bearer(tenant.token),
    )
    assert changed.status_code == 200, changed.text
    assert client.get("/api/v1/auth/me", headers=basic(tenant.email, DEFAULT_PASSWORD)).status_code == 401
    assert client.get("/api/v1/auth/me", headers=basic(tenant.email, new_password)).status_code == 200
    assert _login(client, tenant.email, new_password).status_code == 200


def _key(client, tenant, *, scopes, project_id=None) -> str:
    body = {"name": "test", "organization_id": str(tenant.org_id), "scopes": scopes}
    if project_id:
        body["project_id"] = str(project_id)
    response = client.post("/api/v1/api-keys", json=body, headers=bearer(tenant.token))
    assert response.status_code == 201, response.text
    return response.json()["key"]
