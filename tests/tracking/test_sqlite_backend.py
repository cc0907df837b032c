"""The embedded default runs on SQLite: the backend-specific write paths (no COPY, NaN stored as NULL,
ON CONFLICT upserts, id lists) must behave as on PostgreSQL."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from shared.core.settings import Settings
from shared.db.migrate import upgrade
from shared.db.session import Database
from tests import factories
from tests.tracking.metric_points import check_a_point_sent_twice_is_stored_once

MLFLOW = "/api/2.0/mlflow"


@pytest.fixture(scope="module")
def sqlite_client(tmp_path_factory):
    from services.tracking.app import create_app

    folder = tmp_path_factory.mktemp("sqlite-tracking")
    settings = Settings(database_url=f"sqlite:///{folder / 'tessera.db'}", data_dir=folder,
                        artifact_root=str(folder / "artifacts"))  # fmt: skip
    upgrade(settings.database_url)
    db = Database(settings.database_url)
    with db.session_scope() as session:
        tenant = factories.make_tenant(session, jwt_secret=settings.jwt_secret)
    with TestClient(create_app(settings)) as client:
        client.headers.update(tenant.headers)
        yield client
    db.dispose()


def test_log_search_and_history_on_sqlite(sqlite_client):
    client = sqlite_client
    experiment_id = client.post(f"{MLFLOW}/experiments/create", json={"name": "embedded"}).json()["experiment_id"]
    run_ids = []
    for i in range(3):
        run = client.post(f"{MLFLOW}/runs/create", json={"experiment_id": experiment_id, "run_name": f"r{i}"})
        run_ids.append(run.json()["run"]["info"]["run_id"])
        points = [{"key": "acc", "value": i / 10 + s / 100, "timestamp": 1000 + s, "step": s} for s in range(40)]
        body = {"run_id": run_ids[-1], "metrics": points, "params": [{"key": "lr", "value": f"0.{i}"}]}
        assert client.post(f"{MLFLOW}/runs/log-batch", json=body).status_code == 200
    nan = {"run_id": run_ids[0], "key": "loss", "value": "NaN", "timestamp": 5, "step": 0}
    assert client.post(f"{MLFLOW}/runs/log-metric", json=nan).status_code == 200

    data = client.get(f"{MLFLOW}/runs/get", params={"run_id": run_ids[0]}).json()["run"]["data"]
    assert {m["key"]: m["value"] for m in data["metrics"]} == {"acc": 0.39, "loss": "NaN"}

    found = client.post(
        f"{MLFLOW}/runs/search",
        json={"experiment_ids": [experiment_id], "filter": "metrics.acc > 0.45 OR params.lr = '0.0'",
              "order_by": ["metrics.acc DESC"]},
    ).json()["runs"]  # fmt: skip
    assert [r["info"]["run_name"] for r in found] == ["r2", "r1", "r0"]
    # A filter on the metric sorted by reads it within the experiment (run_latest_metrics.experiment_id,
    # filled by a trigger).
    found = client.post(
        f"{MLFLOW}/runs/search",
        json={"experiment_ids": [experiment_id], "filter": "metrics.acc > 0.45", "order_by": ["metrics.acc ASC"]},
    ).json()["runs"]
    assert [r["info"]["run_name"] for r in found] == ["r1", "r2"]

    first = client.get(
        f"{MLFLOW}/metrics/get-history", params={"run_id": run_ids[1], "metric_key": "acc", "max_results": 25}
    ).json()
    rest = client.get(
        f"{MLFLOW}/metrics/get-history",
        params={"run_id": run_ids[1], "metric_key": "acc", "max_results": 25, "page_token": first["next_page_token"]},
    ).json()
    assert [m["step"] for m in first["metrics"] + rest["metrics"]] == list(range(40))
    assert "next_page_token" not in rest

    changed = {"run_id": run_ids[0], "key": "lr", "value": "9"}
    assert client.post(f"{MLFLOW}/runs/log-parameter", json=changed).json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_deleting_a_run_row_deletes_its_points_on_sqlite(sqlite_client):
    client = sqlite_client
    experiment_id = client.post(f"{MLFLOW}/experiments/create", json={"name": "cascade"}).json()["experiment_id"]
    run = client.post(f"{MLFLOW}/runs/create", json={"experiment_id": experiment_id})
    run_id = run.json()["run"]["info"]["run_id"]
    point = {"run_id": run_id, "key": "loss", "value": 1.0, "timestamp": 1, "step": 0}
    assert client.post(f"{MLFLOW}/runs/log-metric", json=point).status_code == 200
    with client.app.state.db.engine.begin() as connection:
        count = text("SELECT count(*) FROM run_metrics WHERE run_id = :id")
        assert connection.execute(count, {"id": run_id}).scalar() == 1
        connection.execute(text("DELETE FROM experiment_runs WHERE id = :id"), {"id": run_id})
        assert connection.execute(count, {"id": run_id}).scalar() == 0


def test_a_point_sent_twice_is_stored_once_on_sqlite(sqlite_client):
    check_a_point_sent_twice_is_stored_once(sqlite_client)
