"""A check both databases run (each test module brings its client): a metric point sent twice is stored
once, through every write path: COPY-sized batches, small batches, single points, NaN."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient

MLFLOW = "/api/2.0/mlflow"


def check_a_point_sent_twice_is_stored_once(client: TestClient) -> None:
    name = f"points-{uuid.uuid4().hex[:8]}"
    experiment_id = client.post(f"{MLFLOW}/experiments/create", json={"name": name}).json()["experiment_id"]
    run = client.post(f"{MLFLOW}/runs/create", json={"experiment_id": experiment_id}).json()
    run_id = run["run"]["info"]["run_id"]
    # 20 points: over the size that PostgreSQL writes with COPY.
    curve = [{"key": "loss", "value": 1 / (1 + step), "timestamp": 1000 + step, "step": step} for step in range(20)]
    nan = {"key": "loss", "value": "NaN", "timestamp": 5, "step": 99}
    for metrics in (curve, curve, [curve[0], curve[0], nan, nan]):
        response = client.post(f"{MLFLOW}/runs/log-batch", json={"run_id": run_id, "metrics": metrics})
        assert response.status_code == 200, response.text
    for point in (curve[1], nan, {**curve[2], "value": 7.0}):
        response = client.post(f"{MLFLOW}/runs/log-metric", json={"run_id": run_id, **point})
        assert response.status_code == 200, response.text

    history = client.get(f"{MLFLOW}/metrics/get-history", params={"run_id": run_id, "metric_key": "loss"})
    stored = [(point["step"], point["value"]) for point in history.json()["metrics"]]
    # Another value at the same step and time is another point, as in MLflow.
    expected = [(point["step"], point["value"]) for point in curve]
    assert stored == [*expected[:3], (2, 7.0), *expected[3:], (99, "NaN")]
    latest = client.get(f"{MLFLOW}/runs/get", params={"run_id": run_id}).json()["run"]["data"]["metrics"]
    assert latest == [{"key": "loss", "value": "NaN", "timestamp": 5, "step": 99}]
