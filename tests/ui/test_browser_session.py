"""Browser sign-in: /login, the session cookie accepted like a bearer token, CSRF checks, /logout."""

from __future__ import annotations

import pytest

from tests import factories
from tests.ui.signin import BASE, SAME_ORIGIN, csrf_from_login_page, sign_in


def test_sign_in_sets_an_httponly_lax_cookie_that_authenticates_like_a_token(client, tenant):
    response = sign_in(client, tenant.email.upper(), next_url="/#/experiments")
    assert response.status_code == 303
    assert response.headers["location"] == "/#/experiments"
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("tessera_session="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie

    me = client.get("/api/v1/auth/me")
    assert me.status_code == 200
    assert me.json()["user"]["email"] == tenant.email
    assert {o["id"] for o in me.json()["organizations"]} == {str(tenant.org_id)}


def test_cookie_is_secure_when_served_over_https(app, tenant):
    from fastapi.testclient import TestClient

    with TestClient(app, base_url="https://testserver") as client:
        response = sign_in(client, tenant.email, Origin="https://testserver")
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("tessera_session="))
    assert "Secure" in cookie


def test_wrong_password_says_so_and_signs_nobody_in(client, tenant):
    response = sign_in(client, tenant.email, password="wrong")
    assert response.status_code == 401
    assert "Wrong email or password." in response.text
    assert "tessera_session" not in client.cookies
    assert client.get("/api/v1/auth/me").status_code == 401


def test_failed_attempts_are_rate_limited_even_with_the_right_password(client, tenant, settings):
    for _ in range(settings.login_max_failures):
        assert sign_in(client, tenant.email, password="guess").status_code == 401
    response = sign_in(client, tenant.email)
    assert response.status_code == 429
    assert "Too many failed sign-in attempts" in response.text
    assert 0 < int(response.headers["Retry-After"]) <= settings.login_failure_window_s


def test_the_limit_is_shared_by_every_process_serving_sign_in(app, client, tenant, settings):
    """Another worker or host (here a second app over the same database) sees the same count."""
    from fastapi.testclient import TestClient

    from tessera.platform import create_app

    other_process = create_app(settings)
    other_process.state.db = app.state.db
    with TestClient(other_process) as other_client:
        for attempt in range(settings.login_max_failures):
            guesser = client if attempt % 2 else other_client
            assert sign_in(guesser, tenant.email, password="guess").status_code == 401
        assert sign_in(other_client, tenant.email).status_code == 429
        assert sign_in(client, tenant.email).status_code == 429


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil.example"])
def test_next_never_leaves_the_site(client, tenant, target):
    assert sign_in(client, tenant.email, next_url=target).headers["location"] == "/"


def test_login_form_needs_its_csrf_token(client, tenant):
    csrf_from_login_page(client)
    response = client.post(
        "/login", data={"email": tenant.email, "password": factories.DEFAULT_PASSWORD}, headers=SAME_ORIGIN
    )
    assert response.status_code == 403
    assert "tessera_session" not in client.cookies


def test_cookie_writes_must_come_from_the_same_origin(client, tenant):
    sign_in(client, tenant.email)
    body = {"name": factories.unique("exp")}
    project = {"X-Tessera-Project": str(tenant.project_id)}
    cross = client.post(
        "/api/2.0/mlflow/experiments/create", json=body, headers={"Origin": "https://evil.example", **project}
    )
    assert cross.status_code == 403
    assert cross.json()["message"] == "Cross-origin request blocked"
    # No Origin and no Sec-Fetch-Site: not a browser request made by our pages.
    assert client.post("/api/2.0/mlflow/experiments/create", json=body, headers=project).status_code == 403
    same_site = {"Origin": BASE, "Sec-Fetch-Site": "same-site", **project}
    assert client.post("/api/2.0/mlflow/experiments/create", json=body, headers=same_site).status_code == 403
    plain = client.post(
        "/api/2.0/mlflow/experiments/create",
        content=b'{"name": "x"}',
        headers={**SAME_ORIGIN, **project, "Content-Type": "text/plain"},
    )
    assert plain.status_code == 400
    ok = client.post("/api/2.0/mlflow/experiments/create", json=body, headers={**SAME_ORIGIN, **project})
    assert ok.status_code == 200, ok.text
    # Reads are never blocked: they change nothing.
    assert (
        client.get(
            "/api/2.0/mlflow/experiments/get",
            params={"experiment_id": ok.json()["experiment_id"]},
            headers={"Origin": "https://evil.example"},
        ).status_code
        == 200
    )


def test_cookie_form_posts_need_the_double_submit_token(client, tenant):
    sign_in(client, tenant.email)
    token = client.cookies.get("tessera_csrf")
    assert client.post("/logout", data={}, headers=SAME_ORIGIN).status_code == 403
    assert client.post("/logout", data={"csrf_token": "forged"}, headers=SAME_ORIGIN).status_code == 403
    assert client.get("/api/v1/auth/me").status_code == 200
    response = client.post("/logout", data={"csrf_token": token}, headers=SAME_ORIGIN, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login"


def test_logout_ends_the_session_for_every_copy_of_the_cookie(client, tenant):
    sign_in(client, tenant.email)
    stolen = client.cookies.get("tessera_session")
    token = client.cookies.get("tessera_csrf")
    client.post("/logout", headers={**SAME_ORIGIN, "X-CSRF-Token": token}, data={"csrf_token": token})
    assert client.get("/api/v1/auth/me").status_code == 401
    client.cookies.set("tessera_session", stolen)
    response = client.get("/api/v1/auth/me")
    assert response.status_code == 401
    assert "sign in again" in response.json()["message"]


def test_cookie_has_the_users_roles_and_tenancy(client, db_session, settings, tenant, other_tenant):
    viewer = factories.make_member(db_session, org_id=tenant.org_id, role="viewer", jwt_secret=settings.jwt_secret)
    created = client.post(
        "/api/2.0/mlflow/experiments/create",
        json={"name": factories.unique("exp")},
        headers={**tenant.headers, "X-Tessera-Project": str(tenant.project_id)},
    )
    experiment_id = created.json()["experiment_id"]

    sign_in(client, viewer.email)
    assert client.get("/api/2.0/mlflow/experiments/get", params={"experiment_id": experiment_id}).status_code == 200
    rename = client.post(
        "/api/2.0/mlflow/experiments/update",
        json={"experiment_id": experiment_id, "new_name": "x"},
        headers=SAME_ORIGIN,
    )
    assert rename.status_code == 403

    client.cookies.clear()
    sign_in(client, other_tenant.email)
    missing = client.get("/api/2.0/mlflow/experiments/get", params={"experiment_id": experiment_id})
    assert missing.status_code == 404
