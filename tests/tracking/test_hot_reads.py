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
