"""The audit trail: every state-changing request leaves one row saying who, what, from where and how it
ended, success or failure; org owners and admins can query it, members cannot."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from shared.db.models import AuditLog
from tests.factories import bearer, make_member


def _rows(db_session, request_id: str) -> list[AuditLog]:
    db_session.expire_all()
    return list(db_session.scalars(select(AuditLog).where(AuditLog.request_id == request_id)))


def _headers(base: dict, request_id: str) -> dict:
    return {**base, "user-agent": "audit-test/1.0", "x-request-id": request_id}


def test_a_success_row_says_who_what_where(client, db_session, tenant):
    request_id = uuid.uuid4().hex
    response = client.post(
        f"/api/v1/orgs/{tenant.org_id}/projects", json={"name": "Audited"}, headers=_headers(tenant.headers, request_id)
    )
    assert response.status_code == 201
    [row] = _rows(db_session, request_id)
    assert (row.action, row.object_type, row.object_id) == ("project.create", "project", response.json()["id"])
    assert (row.outcome, row.status_code, row.organization_id) == ("success", 201, tenant.org_id)
    assert (row.actor_user_id, row.actor_api_key_id is not None) == (tenant.user_id, True)
    assert (row.method, row.path) == ("POST", f"/api/v1/orgs/{tenant.org_id}/projects")
    assert (row.ip_address, row.user_agent) == ("testclient", "audit-test/1.0")
    assert row.details == {"slug": "audited"}


def test_a_refused_request_leaves_a_failure_row_in_the_org_trail(client, db_session, tenant, settings):
    viewer = make_member(db_session, org_id=tenant.org_id, role="viewer", jwt_secret=settings.jwt_secret)
    request_id = uuid.uuid4().hex
    response = client.patch(
        f"/api/v1/projects/{tenant.project_id}", json={"name": "x"}, headers=_headers(viewer.headers, request_id)
    )
    assert response.status_code == 403
    [row] = _rows(db_session, request_id)
    assert (row.action, row.object_id, row.organization_id) == ("project.update", str(tenant.project_id), tenant.org_id)
    assert (row.outcome, row.status_code, row.details["error_code"]) == ("failure", 403, "PERMISSION_DENIED")
    assert (row.actor_user_id, row.user_agent, row.ip_address) == (viewer.user_id, "audit-test/1.0", "testclient")


def test_anonymous_and_invalid_requests_are_recorded_too(client, db_session, tenant):
    anonymous, invalid, login = uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex
    assert client.post("/api/v1/orgs", json={"name": "x"}, headers=_headers({}, anonymous)).status_code == 401
    assert client.post("/api/v1/orgs", json={"nme": "x"}, headers=_headers(tenant.headers, invalid)).status_code == 422
    bad_login = {"email": tenant.email, "password": "wrong password"}
    assert client.post("/api/v1/auth/login", json=bad_login, headers=_headers({}, login)).status_code == 401

    [row] = _rows(db_session, anonymous)
    assert (row.outcome, row.status_code, row.actor_user_id, row.action) == ("failure", 401, None, "POST /api/v1/orgs")
    [row] = _rows(db_session, invalid)
    assert (row.outcome, row.status_code, row.details["error_code"]) == ("failure", 422, "INVALID_PARAMETER_VALUE")
    [row] = _rows(db_session, login)
    assert (row.action, row.outcome, row.details["email"]) == ("auth.login", "failure", tenant.email)


def test_a_request_naming_a_missing_organization_is_still_recorded(client, db_session, tenant):
    request_id, missing = uuid.uuid4().hex, uuid.uuid4()
    response = client.patch(f"/api/v1/orgs/{missing}", json={"name": "x"}, headers=_headers(tenant.headers, request_id))
    assert response.status_code == 404
    [row] = _rows(db_session, request_id)
    # In the calling key's organization trail, naming what was asked for.
    assert (row.outcome, row.organization_id) == ("failure", tenant.org_id)
    assert row.details["organization_id"] == str(missing)


def test_reads_leave_no_rows(client, db_session, tenant):
    request_id = uuid.uuid4().hex
    assert client.get(f"/api/v1/orgs/{tenant.org_id}", headers=_headers(tenant.headers, request_id)).status_code == 200
    assert _rows(db_session, request_id) == []


def test_admins_query_the_trail_with_filters_and_pages(client, db_session, tenant, other_tenant, settings):
    admin = make_member(db_session, org_id=tenant.org_id, role="admin", jwt_secret=settings.jwt_secret)
    member = make_member(db_session, org_id=tenant.org_id, role="member", jwt_secret=settings.jwt_secret)
    started = datetime.now(UTC) - timedelta(seconds=1)
    for n in range(3):
        client.post(f"/api/v1/orgs/{tenant.org_id}/projects", json={"name": f"Audit {n}"}, headers=tenant.headers)
    client.patch(f"/api/v1/orgs/{tenant.org_id}", json={"name": "nope"}, headers=member.headers)  # refused

    url = f"/api/v1/orgs/{tenant.org_id}/audit-logs"
    created = client.get(url, params={"action": "project.create", "since": started.isoformat()}, headers=admin.headers)
    assert created.status_code == 200, created.text
    logs = created.json()["items"]
    assert [log["details"]["slug"] for log in logs] == ["audit-2", "audit-1", "audit-0"]  # newest first
    assert {log["actor_email"] for log in logs} == {tenant.email}

    failures = client.get(url, params={"outcome": "failure", "actor": member.email}, headers=admin.headers).json()
    assert [(log["action"], log["status_code"]) for log in failures["items"]] == [("organization.update", 403)]
    by_id = client.get(url, params={"actor": str(member.user_id)}, headers=admin.headers).json()
    assert by_id["items"] == failures["items"]

    first = client.get(url, params={"max_results": 2}, headers=admin.headers).json()
    second = client.get(url, params={"max_results": 2, "page_token": first["next_page_token"]}, headers=admin.headers)
    assert len(first["items"]) == 2 and second.status_code == 200
    assert not {log["id"] for log in first["items"]} & {log["id"] for log in second.json()["items"]}
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert client.get(url, params={"since": future}, headers=admin.headers).json()["items"] == []

    assert client.get(url, headers=member.headers).status_code == 403
    assert client.get(url, headers=bearer(other_tenant.token)).status_code == 404
