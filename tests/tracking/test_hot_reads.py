"""get-run and search on their hot path (services/tracking/api/hot_reads.py), through the live server: the
same answers as the usual endpoints give (the first call of a caller not yet remembered takes the usual
path, the next ones the hot path), and tenancy unchanged."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests import factories

API = "/api/2.0/mlflow"


@pytest.fixture
def tenant(db, settings) -> factories.Tenant:
    with db.session_scope() as session:
        return factories.make_tenant(session, jwt_secret=settings.jwt_secret)


@pytest.fixture
def other_tenant(db, settings) -> factories.Tenant:
    with db.session_scope() as session:
        return factories.make_tenant(session, jwt_secret=settings.jwt_secret)


def _post(http: httpx.Client, path: str, body: dict) -> dict:
    response = http.post(f"{API}/{path}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_hot_get_run_and_search_answer_as_the_usual_endpoints(live_server, tenant, other_tenant):
    http = httpx.Client(base_url=live_server.url, headers=tenant.headers, timeout=30)
    experiment_id = _post(http, "experiments/create", {"name": f"hot-{uuid.uuid4().hex[:8]}"})["experiment_id"]
    run_ids = []
    for i in range(5):
        run_id = _post(http, "runs/create", {"experiment_id": experiment_id, "run_name": f"r{i}"})["run"]["info"]
        run_ids.append(run_id["run_id"])
        _post(
            http,
            "runs/log-batch",
            {
                "run_id": run_ids[-1],
                "metrics": [{"key": "acc", "value": i / 10, "timestamp": 1, "step": 0}],
                "params": [{"key": "lr", "value": "0.01" if i % 2 else "0.1"}],
            },
        )
    search = {
        "experiment_ids": [experiment_id],
        "filter": "metrics.acc > 0.05 AND params.lr = '0.01'",
        "order_by": ["metrics.acc DESC"],
        "max_results": 1,
    }
    calls = [
        lambda: http.get(f"{API}/runs/get", params={"run_id": run_ids[3]}),
        lambda: http.post(f"{API}/runs/search", json=search),
        lambda: http.post(f"{API}/runs/search", json={"experiment_ids": [experiment_id], "page_token": None}),
    ]
    for call in calls:
        answers = [call() for _ in range(3)]
        assert {a.status_code for a in answers} == {200}
        assert answers[1].json() == answers[0].json() == answers[2].json()

    page = http.post(f"{API}/runs/search", json=search).json()
    assert [r["info"]["run_name"] for r in page["runs"]] == ["r3"]
    rest = http.post(f"{API}/runs/search", json={**search, "page_token": page["next_page_token"]}).json()
    assert [r["info"]["run_name"] for r in rest["runs"]] == ["r1"]
    assert "next_page_token" not in rest

    # Another tenant, remembered after its first call: the run is missing, the experiment has no runs.
    other = httpx.Client(base_url=live_server.url, headers=other_tenant.headers, timeout=30)
    for _ in range(3):
        missing = other.get(f"{API}/runs/get", params={"run_id": run_ids[3]})
        assert missing.status_code == 404
        assert missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
        assert other.post(f"{API}/runs/search", json=search).json() == {"runs": []}
    bad = http.post(f"{API}/runs/search", json={**search, "filter": "metrics.acc >"})
    assert bad.status_code == 400
    assert bad.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_hot_experiment_reads_answer_as_the_usual_endpoints(live_server, db, settings, tenant, other_tenant):
    http = httpx.Client(base_url=live_server.url, headers=tenant.headers, timeout=30)
    names = [f"hot-exp-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    ids = [
        _post(http, "experiments/create", {"name": name, "tags": [{"key": "team", "value": f"t{i}"}]})["experiment_id"]
        for i, name in enumerate(names)
    ]
    _post(http, "experiments/delete", {"experiment_id": ids[2]})
    search = {"max_results": 1, "filter": "name LIKE 'hot-exp-%'", "order_by": ["name DESC"], "view_type": "ALL"}
    calls = [
        lambda: http.get(f"{API}/experiments/get", params={"experiment_id": ids[0]}),
        lambda: http.get(f"{API}/experiments/get", params={"experiment_id": ids[2]}),
        lambda: http.get(f"{API}/experiments/get-by-name", params={"experiment_name": names[1]}),
        lambda: http.post(f"{API}/experiments/search", json=search),
        lambda: http.get(f"{API}/experiments/search", params=search),
        lambda: http.post(f"{API}/experiments/search", json={}),
    ]
    for call in calls:
        answers = [call() for _ in range(3)]
        assert {a.status_code for a in answers} == {200}
        assert answers[1].json() == answers[0].json() == answers[2].json()

    deleted = http.get(f"{API}/experiments/get", params={"experiment_id": ids[2]}).json()["experiment"]
    assert deleted["lifecycle_stage"] == "deleted"
    assert deleted["tags"] == [{"key": "team", "value": "t2"}]
    walked, token = [], None
    for _ in range(3):
        page = http.post(f"{API}/experiments/search", json={**search, "page_token": token}).json()
        walked += [e["name"] for e in page["experiments"]]
        token = page.get("next_page_token")
    assert walked == sorted(names, reverse=True)
    assert token is None
    active = http.post(f"{API}/experiments/search", json={**search, "view_type": "ACTIVE_ONLY", "max_results": 5})
    assert [e["name"] for e in active.json()["experiments"]] == sorted(names[:2], reverse=True)

    # Another organization's caller, remembered after its first call: what the usual path answered before.
    other = httpx.Client(base_url=live_server.url, headers=other_tenant.headers, timeout=30)
    for _ in range(3):
        missing = other.get(f"{API}/experiments/get", params={"experiment_id": ids[0]})
        assert missing.status_code == 404
        assert missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
        by_name = other.get(f"{API}/experiments/get-by-name", params={"experiment_name": names[0]})
        assert by_name.status_code == 404
        assert by_name.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
        assert other.post(f"{API}/experiments/search", json=search).json() == {"experiments": []}

    # A key without the tracking scope is refused every time, not served an empty page.
    with db.session_scope() as session:
        from shared.db.models import Organization, User

        user, org = session.get(User, tenant.user_id), session.get(Organization, tenant.org_id)
        _, narrow_key = factories.make_api_key(session, user=user, org=org, scopes=["registry:read"])
    narrow = httpx.Client(base_url=live_server.url, headers=factories.bearer(narrow_key), timeout=30)
    for _ in range(3):
        refused = narrow.post(f"{API}/experiments/search", json=search)
        assert refused.status_code == 403
        assert refused.json()["error_code"] == "PERMISSION_DENIED"
        assert narrow.get(f"{API}/experiments/get-by-name", params={"experiment_name": names[0]}).status_code == 403


def test_a_page_token_that_is_not_a_string_is_a_400_on_either_path(live_server, tenant):
    http = httpx.Client(base_url=live_server.url, headers=tenant.headers, timeout=30)
    experiment_id = _post(http, "experiments/create", {"name": f"token-{uuid.uuid4().hex[:8]}"})["experiment_id"]
    for path, body in (("experiments/search", {}), ("runs/search", {"experiment_ids": [experiment_id]})):
        for _ in range(3):
            answer = http.post(f"{API}/{path}", json={**body, "page_token": 5})
            assert answer.status_code == 400, answer.text
            assert answer.json()["error_code"] == "INVALID_PARAMETER_VALUE"
