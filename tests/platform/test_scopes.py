"""Scopes say no: a key without the scope a list route needs gets a 403 naming that scope (never a 200 with
an empty list), for each native list route and a key of each single scope."""

from __future__ import annotations

import pytest

from shared.core.auth import SCOPE_AREAS
from shared.db.models import Organization, User
from tests.factories import bearer, make_api_key

# Native list routes a key names by its own org or project, with the scope each needs (None: any key may list
# its own keys). Organization and project lists need registry:read; key, audit and dead-letter lists admin.
LIST_ROUTES = {
    "/api/v1/orgs": "registry:read",
    "/api/v1/orgs/{org_id}/members": "registry:read",
    "/api/v1/orgs/{org_id}/projects": "registry:read",
    "/api/v1/projects/{project_id}/members": "registry:read",
    "/api/v1/api-keys": None,
    "/api/v1/orgs/{org_id}/api-keys": "admin",
    "/api/v1/orgs/{org_id}/audit-logs": "admin",
    "/api/v1/orgs/{org_id}/dead-letters": "admin",
    "/api/v1/projects/{project_id}/models": "registry:read",
    "/api/v1/experiments": "tracking:read",
    "/api/v1/deployments": "deployments:read",
    "/api/v1/monitors": "monitoring:read",
    "/api/v1/alerts": "monitoring:read",
    "/api/v1/channels": "notifications:read",
    "/api/v1/rules": "notifications:read",
    "/api/v1/silences": "notifications:read",
    "/api/v1/silences/mute-windows": "notifications:read",
    "/api/v1/inhibit-rules": "notifications:read",
    "/api/v1/notifications": "notifications:read",
    "/api/v1/deliveries": "notifications:read",
}
SINGLE_SCOPES = [f"{area}:{level}" for area in SCOPE_AREAS for level in ("read", "write")]


def _grants(scope: str, needed: str) -> bool:
    return scope == needed or scope == needed.replace(":read", ":write")


@pytest.mark.parametrize("scope", SINGLE_SCOPES)
def test_each_list_route_answers_a_key_of_one_scope_with_its_items_or_a_403_naming_the_missing_scope(
    client, db_session, tenant, scope
):
    key = make_api_key(
        db_session,
        user=db_session.get(User, tenant.user_id),
        org=db_session.get(Organization, tenant.org_id),
        scopes=[scope],
    )[1]
    answers = {}
    for route, needed in LIST_ROUTES.items():
        url = route.format(org_id=tenant.org_id, project_id=tenant.project_id)
        response = client.get(url, headers=bearer(key))
        if needed is None or _grants(scope, needed):
            answers[route] = (response.status_code, "items" in response.json())
            expected = (200, True)
        else:
            answers[route] = (response.status_code, response.json().get("message"))
            expected = (403, f"API key lacks the '{needed}' scope")
        answers[route] = answers[route] == expected or (answers[route], expected)
    bad = {r: v for r, v in answers.items() if v is not True}
    assert not bad
