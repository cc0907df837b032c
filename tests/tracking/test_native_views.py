"""The native tenant-aware views (/api/v1/experiments, /api/v1/runs...) and run -> model version lineage,
through the in-process client inside a rolled-back transaction."""

from __future__ import annotations

from shared.db.models import Model, ModelVersion

MLFLOW = "/api/2.0/mlflow"


def _run_with_metrics(client, headers) -> tuple[str, str]:
    experiment_id = client.post(f"{MLFLOW}/experiments/create", json={"name": "native"}, headers=headers).json()[
        "experiment_id"
    ]
    run_id = client.post(f"{MLFLOW}/runs/create", json={"experiment_id": experiment_id}, headers=headers).json()["run"][
        "info"
    ]["run_id"]
    points = [{"key": "loss", "value": v, "timestamp": 1000 + i, "step": i} for i, v in enumerate([0.9, 0.4, 0.6])]
    points.append({"key": "loss", "value": "NaN", "timestamp": 999, "step": 1})
    body = {"run_id": run_id, "metrics": points, "params": [{"key": "lr", "value": "0.1"}]}
    assert client.post(f"{MLFLOW}/runs/log-batch", json=body, headers=headers).status_code == 200
    return experiment_id, run_id


def test_experiments_of_a_project(client, tenant, other_tenant):
    experiment_id, _ = _run_with_metrics(client, tenant.headers)
    page = client.get("/api/v1/experiments", params={"project_id": str(tenant.project_id)}, headers=tenant.headers)
    assert page.status_code == 200
    assert [e["id"] for e in page.json()["items"]] == [experiment_id]
    # Another tenant's project is missing, not forbidden.
    other = client.get(
        "/api/v1/experiments", params={"project_id": str(tenant.project_id)}, headers=other_tenant.headers
    )
    assert other.status_code == 404
    assert client.get("/api/v1/experiments", headers=other_tenant.headers).json()["items"] == []


def test_run_and_metric_summary(client, tenant, other_tenant):
    experiment_id, run_id = _run_with_metrics(client, tenant.headers)
    run = client.get(f"/api/v1/runs/{run_id}", headers=tenant.headers).json()
    assert run["params"] == {"lr": "0.1"} and run["experiment_id"] == experiment_id
    assert run["metrics"] == [{"key": "loss", "value": 0.6, "step": 2, "timestamp": 1002}]

    summary = client.get(f"/api/v1/runs/{run_id}/metrics", headers=tenant.headers).json()["items"]
    assert summary == [
        {
            "key": "loss",
            "latest_value": 0.6,
            "latest_step": 2,
            "latest_timestamp": 1002,
            "min_value": 0.4,
            "max_value": 0.9,
            "count": 4,
        }
    ]
    listed = client.get(
        "/api/v1/runs",
        params={"experiment_id": experiment_id, "filter": "metrics.loss > 0.5 OR params.lr = '9'"},
        headers=tenant.headers,
    )
    assert [r["id"] for r in listed.json()["items"]] == [run_id]
    assert client.get(f"/api/v1/runs/{run_id}", headers=other_tenant.headers).status_code == 404
    assert client.get(f"/api/v1/runs/{run_id}/metrics", headers=other_tenant.headers).status_code == 404


def test_run_to_model_version_lineage(client, tenant, other_tenant, db_session):
    _, run_id = _run_with_metrics(client, tenant.headers)
    model = Model(project_id=tenant.project_id, name="churn", tags={})
    db_session.add(model)
    db_session.flush()
    for version in (1, 2):
        db_session.add(ModelVersion(model_id=model.id, version=version, run_id=run_id, metrics={}, tags={}))
    db_session.flush()
    lineage = client.get(f"/api/v1/runs/{run_id}/model-versions", headers=tenant.headers).json()["items"]
    assert [(v["model_name"], v["version"]) for v in lineage] == [("churn", 1), ("churn", 2)]
    assert client.get(f"/api/v1/runs/{run_id}/model-versions", headers=other_tenant.headers).status_code == 404


def test_mlflow_error_contract(client, tenant):
    missing = client.get(f"{MLFLOW}/runs/get", params={"run_id": "0" * 32}, headers=tenant.headers)
    assert missing.status_code == 404 and missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    malformed = client.post(f"{MLFLOW}/runs/log-batch", content=b"{not json", headers=tenant.headers)
    assert malformed.status_code == 400 and malformed.json()["error_code"] == "MALFORMED_REQUEST"
    unknown = client.post(f"{MLFLOW}/runs/no-such-endpoint", json={}, headers=tenant.headers)
    assert unknown.status_code == 404 and unknown.json()["error_code"] == "ENDPOINT_NOT_FOUND"
    anonymous = client.get(f"{MLFLOW}/experiments/get", params={"experiment_id": "0"})
    assert anonymous.status_code == 401 and anonymous.json()["error_code"] == "UNAUTHENTICATED"
