"""Monitor API: monitors with uploaded references, schema inference and overrides, prediction logging
validation, run-now checks, reports (JSON and HTML), alerts, tenancy. Checks run in-process on the
test's transaction (the worker path is covered end to end in test_pipeline_e2e)."""

from __future__ import annotations

import io
import json
import uuid
from datetime import timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from services.monitor.domain import checks
from shared.core.artifacts import get_artifact_store
from shared.db.base import utcnow
from shared.db.models import (
    Alert,
    Deployment,
    Model,
    ModelMonitoring,
    ModelVersion,
    MonitorPredictionBatch,
    OutboxEvent,
)

MONITORS = "/api/v1/monitors"


def reference_frame(rows: int = 400, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "x": rng.normal(0, 1, rows),
            "y": rng.normal(10, 2, rows),
            "c": rng.choice(["a", "b", "c"], rows),
            "request_text": [f"free text {i}" for i in range(rows)],
        }
    )


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def make_version(session, project_id) -> ModelVersion:
    model = Model(id=uuid.uuid4(), project_id=project_id, name=f"m-{uuid.uuid4().hex[:6]}")
    version = ModelVersion(id=uuid.uuid4(), model_id=model.id, version=1)
    session.add_all([model, version])
    session.flush()
    return version


def create_monitor(client, headers, version_id, *, reference: bytes | None = None, **spec):
    body = {"name": f"mon-{uuid.uuid4().hex[:6]}", "model_version_id": str(version_id), "min_rows": 20, **spec}
    files = {"reference": ("reference.csv", reference if reference is not None else csv_bytes(reference_frame()))}
    return client.post(MONITORS, data={"spec": json.dumps(body)}, files=files, headers=headers)


def rows(frame: pd.DataFrame, **extra) -> dict:
    return {
        "rows": [
            {"features": {"x": r.x, "y": r.y, "c": r.c}, "request_id": f"r{i}", **extra}
            for i, r in enumerate(frame.itertuples())
        ]
    }


def run_check(client, session, settings, headers, monitor_id, *, at=None) -> dict:
    """POST run-now, then do what the worker does, in this test's transaction."""
    response = client.post(f"{MONITORS}/{monitor_id}/checks", headers=headers)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    store, now = get_artifact_store(settings), at or utcnow()
    job = checks.start(session, uuid.UUID(response.json()["id"]), now, timedelta(minutes=15))
    result = checks.compute(session, store, job, checks.read_window(session, store, job))
    checks.finish(session, job, result, now, settings.public_url)
    return client.get(f"{MONITORS}/{monitor_id}/checks/{job.run_id}", headers=headers).json()


@pytest.fixture
def version(db_session, tenant):
    return make_version(db_session, tenant.project_id)


@pytest.fixture
def monitor(client, tenant, version):
    response = create_monitor(client, tenant.headers, version.id)
    assert response.status_code == 201, response.text
    return response.json()


def test_create_infers_schema_and_profiles_the_reference_once(client, tenant, monitor, settings):
    assert monitor["column_schema"]["columns"] == {
        "x": {"type": "numerical", "dtype": "float", "named": False},
        "y": {"type": "numerical", "dtype": "float", "named": False},
        "c": {"type": "categorical", "dtype": "string", "named": False},
    }  # free text is left out
    assert monitor["enabled"] and monitor["next_check_at"] is not None
    assert monitor["schedule_interval_s"] == 3600
    assert get_artifact_store(settings).is_file(monitor["reference_uri"])
    listed = client.get(MONITORS, headers=tenant.headers).json()["items"]
    assert [m["id"] for m in listed] == [monitor["id"]]


def test_create_with_overrides_parquet_and_cron(client, tenant, version):
    frame = reference_frame().assign(level=lambda f: (f.x > 0).astype(int) + 1)
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    response = create_monitor(
        client,
        tenant.headers,
        version.id,
        reference=buffer.getvalue(),
        features=["x", "level"],
        columns={"x": "categorical", "level": "numerical"},
        schedule_cron="*/5 * * * *",
        methods={"x": "psi"},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["column_schema"]["columns"] == {
        "x": {"type": "categorical", "dtype": "float", "named": True},
        "level": {"type": "numerical", "dtype": "integer", "named": True},
    }
    assert body["schedule_cron"] == "*/5 * * * *" and body["schedule_interval_s"] is None
    assert body["next_check_at"].endswith(("0:00Z", "5:00Z", "+00:00"))


BAD_CREATES = [
    (b"", {}, 400, "empty"),
    (b"PAR1 not really parquet", {}, 400, "not readable"),
    (None, {"schedule_cron": "every tuesday"}, 400, "cron"),
    (None, {"methods": {"x": "magic"}}, 400, "unknown drift method"),
    (None, {"features": ["nope"]}, 400, "not in the reference"),
    (None, {"columns": {"c": "numerical"}}, 400, "cannot be numerical"),
    (None, {"deployment_id": str(uuid.uuid4())}, 422, "exactly one target"),
    (None, {"drift_share": 2}, 422, "less than or equal"),
]


def test_create_refuses_bad_input(client, tenant, version):
    for reference, spec, status, message in BAD_CREATES:
        response = create_monitor(client, tenant.headers, version.id, reference=reference, **spec)
        assert response.status_code == status, (spec, response.text)
        assert message in response.text, spec
    assert client.get(MONITORS, headers=tenant.headers).json()["items"] == []


def test_create_without_reference_and_name_taken(client, tenant, version, monitor):
    body = {"name": "x", "model_version_id": str(version.id)}
    response = client.post(MONITORS, data={"spec": json.dumps(body)}, headers=tenant.headers)
    assert response.status_code == 400 and "needs reference data" in response.json()["message"]
    again = create_monitor(client, tenant.headers, version.id, name=monitor["name"])
    assert again.status_code == 400 and again.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"


def test_update_pause_resume_delete(client, tenant, monitor):
    url = f"{MONITORS}/{monitor['id']}"
    updated = client.patch(
        url,
        data={"spec": json.dumps({"schedule_interval_s": 60, "columns": {"y": "categorical"}})},
        headers=tenant.headers,
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["column_schema"]["columns"]["y"] == {"type": "categorical", "dtype": "float", "named": True}
    assert updated.json()["column_schema"]["columns"]["x"]["named"] is False
    assert updated.json()["reference_uri"] != monitor["reference_uri"]  # re-profiled from the stored reference
    assert client.post(f"{url}/pause", headers=tenant.headers).json()["enabled"] is False
    assert client.post(f"{url}/resume", headers=tenant.headers).json()["enabled"] is True
    assert client.delete(url, headers=tenant.headers).status_code == 204
    assert client.get(url, headers=tenant.headers).status_code == 404


def test_logging_json_and_parquet(client, db_session, tenant, monitor):
    url = f"{MONITORS}/{monitor['id']}/predictions"
    logged = client.post(url, json=rows(reference_frame(30), prediction=1), headers=tenant.headers)
    assert logged.status_code == 201, logged.text
    assert logged.json()["rows"] == 30
    frame = reference_frame(25)[["x", "y", "c"]].assign(prediction=0.5, request_id=[f"p{i}" for i in range(25)])
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer)
    response = client.post(
        url, content=buffer.getvalue(), headers={**tenant.headers, "content-type": "application/vnd.apache.parquet"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["rows"] == 25


def test_logging_refuses_schema_mismatch_and_writes_nothing(client, db_session, tenant, monitor):
    good = {"features": {"x": 1.0, "y": 2.0, "c": "a"}}
    for features, message in [
        ({"x": 1.0, "y": 2.0}, "do not match"),  # c is missing
        ({"x": 1.0, "y": 2.0, "c": "a", "z": 3}, "do not match"),
        ({"x": "high", "y": 2.0, "c": "a"}, "Column 'x'"),
    ]:
        response = client.post(
            f"{MONITORS}/{monitor['id']}/predictions",
            json={"rows": [good, {"features": features}]},
            headers=tenant.headers,
        )
        assert response.status_code == 400, response.text
        assert message in response.json()["message"]
    logged = select(func.count()).where(MonitorPredictionBatch.monitor_id == uuid.UUID(monitor["id"]))
    assert db_session.scalar(logged) == 0


def test_logging_refuses_other_media_types(client, tenant, monitor):
    response = client.post(
        f"{MONITORS}/{monitor['id']}/predictions",
        content=b"x=1",
        headers={**tenant.headers, "content-type": "text/plain"},
    )
    assert response.status_code == 415


def _events(session, event_type, monitor_id):
    """This monitor's events (end-to-end tests commit events of their own to the same database)."""
    rows = session.scalars(select(OutboxEvent).where(OutboxEvent.event_type == event_type)).all()
    return [row for row in rows if row.payload.get("monitor_id") == str(monitor_id)]


def test_drift_fires_one_alert_updated_then_resolved(client, db_session, tenant, monitor, settings):
    url, headers = f"{MONITORS}/{monitor['id']}", tenant.headers
    drifted = reference_frame(200, seed=7).assign(x=lambda f: f.x + 3, y=lambda f: f.y * 3)
    client.post(f"{url}/predictions", json=rows(drifted), headers=headers)
    first = run_check(client, db_session, settings, headers, monitor["id"])
    assert first["status"] == "done" and first["progress"] == 1.0
    report = client.get(f"/api/v1/drift-reports/{first['report_id']}", headers=headers).json()
    assert report["dataset_drift"] is True and report["report"]["columns"]["x"]["method"] == "ks"
    html = client.get(f"/api/v1/drift-reports/{first['report_id']}/html", headers=headers)
    assert html.status_code == 200 and 'id="verdict"' in html.text

    [alert] = client.get("/api/v1/alerts", params={"monitor_id": monitor["id"]}, headers=headers).json()["items"]
    assert alert["status"] == "firing" and alert["kind"] == "data_drift"
    assert alert["severity"] == "warning"  # 2 of 3 columns: the 0.0-0.75 band
    [fired] = _events(db_session, "alert.firing", monitor["id"])
    assert (
        fired.payload["labels"]["monitor"] == monitor["name"] and fired.payload["fingerprint"] == alert["fingerprint"]
    )
    assert fired.payload["labels"]["project"] == "default" and "model" in fired.payload["labels"]
    assert len(_events(db_session, "drift.detected", monitor["id"])) == 1

    second = run_check(client, db_session, settings, headers, monitor["id"])
    assert second["status"] == "done"
    assert len(client.get("/api/v1/alerts", headers=headers).json()["items"]) == 1  # updated, not duplicated
    assert len(_events(db_session, "alert.firing", monitor["id"])) == 1  # same severity: the notifier is not told again
    acked = client.post(f"/api/v1/alerts/{alert['id']}/acknowledge", headers=headers).json()
    assert acked["status"] == "acknowledged" and acked["acknowledged_by"] == str(tenant.user_id)

    # Later, only clean rows are in the window.
    later = utcnow() + timedelta(days=2)
    client.post(
        f"{url}/predictions", json=rows(reference_frame(200, seed=8), timestamp=later.isoformat()), headers=headers
    )
    clean = run_check(client, db_session, settings, headers, monitor["id"], at=later + timedelta(seconds=1))
    assert clean["status"] == "done"
    resolved = client.get(f"/api/v1/alerts/{alert['id']}", headers=headers).json()
    assert resolved["status"] == "resolved" and resolved["resolved_at"]
    [event] = _events(db_session, "alert.resolved", monitor["id"])
    assert event.payload["status"] == "resolved" and event.payload["fingerprint"] == alert["fingerprint"]
    listed = client.get(f"{url}/reports", headers=headers).json()["items"]
    assert [r["dataset_drift"] for r in listed] == [False, True, True]


def test_too_few_rows_is_insufficient_data_without_alerts(client, db_session, tenant, monitor, settings):
    client.post(f"{MONITORS}/{monitor['id']}/predictions", json=rows(reference_frame(5)), headers=tenant.headers)
    run = run_check(client, db_session, settings, tenant.headers, monitor["id"])
    assert run["status"] == "insufficient_data"
    report = client.get(f"/api/v1/drift-reports/{run['report_id']}", headers=tenant.headers).json()
    assert report["status"] == "insufficient_data" and report["current_rows"] == 5
    assert client.get(f"/api/v1/drift-reports/{run['report_id']}/html", headers=tenant.headers).status_code == 404
    assert db_session.scalar(select(func.count()).where(Alert.monitor_id == uuid.UUID(monitor["id"]))) == 0


def test_quality_alert_from_ground_truth(client, db_session, tenant, version, settings):
    created = create_monitor(
        client,
        tenant.headers,
        version.id,
        quality={"task": "classification", "thresholds": {"accuracy": {"min": 0.9}}, "min_rows": 10},
    ).json()
    frame = reference_frame(40)
    client.post(f"{MONITORS}/{created['id']}/predictions", json=rows(frame, prediction="yes"), headers=tenant.headers)
    truth = {"rows": [{"request_id": f"r{i}", "value": "yes" if i % 2 else "no"} for i in range(40)]}
    logged = client.post(f"{MONITORS}/{created['id']}/ground-truth", json=truth, headers=tenant.headers)
    assert logged.json() == {"rows": 40}
    run = run_check(client, db_session, settings, tenant.headers, created["id"])
    report = client.get(f"/api/v1/drift-reports/{run['report_id']}", headers=tenant.headers).json()["report"]
    assert report["quality"]["metrics"]["accuracy"] == pytest.approx(0.5)
    assert report["quality"]["metrics"]["f1"] == pytest.approx((2 / 3 + 0) / 2)
    [alert] = client.get("/api/v1/alerts", params={"status": "firing"}, headers=tenant.headers).json()["items"]
    assert alert["kind"] == "quality" and alert["details"]["violations"]["accuracy"]["min"] == 0.9
    resolved = client.post(f"/api/v1/alerts/{alert['id']}/resolve", headers=tenant.headers)
    assert resolved.json()["status"] == "resolved"
    assert client.post(f"/api/v1/alerts/{alert['id']}/resolve", headers=tenant.headers).status_code == 400


def test_another_organization_sees_nothing(client, db_session, tenant, other_tenant, monitor, settings):
    client.post(f"{MONITORS}/{monitor['id']}/predictions", json=rows(reference_frame(50)), headers=tenant.headers)
    run = run_check(client, db_session, settings, tenant.headers, monitor["id"])
    url, headers = f"{MONITORS}/{monitor['id']}", other_tenant.headers
    for method, path in [
        ("get", url),
        ("patch", url),
        ("post", f"{url}/checks"),
        ("post", f"{url}/pause"),
        ("get", f"{url}/reports"),
        ("get", f"{url}/checks/{run['id']}"),
        ("get", f"/api/v1/drift-reports/{run['report_id']}"),
        ("get", f"/api/v1/drift-reports/{run['report_id']}/html"),
    ]:
        assert client.request(method, path, headers=headers).status_code == 404, path
    assert client.post(f"{url}/predictions", json=rows(reference_frame(2)), headers=headers).status_code == 404
    assert client.get(MONITORS, headers=headers).json()["items"] == []


def test_reference_from_a_tracked_runs_artifact(client, db_session, tenant, other_tenant, version):
    mlflow = "/api/2.0/mlflow"
    experiment_id = client.post(f"{mlflow}/experiments/create", json={"name": "ref"}, headers=tenant.headers).json()[
        "experiment_id"
    ]
    run = client.post(f"{mlflow}/runs/create", json={"experiment_id": experiment_id}, headers=tenant.headers).json()
    run_id = run["run"]["info"]["run_id"]
    uploaded = client.put(
        f"/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{run_id}/artifacts/data/ref.csv",
        content=csv_bytes(reference_frame()),
        headers=tenant.headers,
    )
    assert uploaded.status_code == 200, uploaded.text
    body = {"name": "from-run", "model_version_id": str(version.id), "reference_run": {"run_id": run_id, "path": ""}}
    for path, status in [("data/ref.csv", 201), ("data/missing.csv", 404)]:
        body["reference_run"]["path"] = path
        body["name"] = f"from-run-{status}"
        response = client.post(MONITORS, data={"spec": json.dumps(body)}, headers=tenant.headers)
        assert response.status_code == status, response.text
    assert "has no artifact 'data/missing.csv'" in response.json()["message"]
    # Another organization's run cannot be read, even with a monitor of its own.
    other_version = make_version(db_session, other_tenant.project_id)
    body |= {"name": "stolen", "model_version_id": str(other_version.id)}
    body["reference_run"]["path"] = "data/ref.csv"
    stolen = client.post(MONITORS, data={"spec": json.dumps(body)}, headers=other_tenant.headers)
    assert stolen.status_code == 404


def test_an_unreadable_reference_profile_fails_the_run_without_alerts(client, db_session, tenant, monitor, settings):
    store = get_artifact_store(settings)
    client.post(f"{MONITORS}/{monitor['id']}/predictions", json=rows(reference_frame(50)), headers=tenant.headers)
    profile_key = db_session.get(ModelMonitoring, uuid.UUID(monitor["id"])).reference_profile_uri
    store.write(profile_key, [b"not a profile"])
    run = client.post(f"{MONITORS}/{monitor['id']}/checks", headers=tenant.headers).json()
    job = checks.start(db_session, uuid.UUID(run["id"]), utcnow(), timedelta(minutes=15))
    with pytest.raises(checks.CheckFailed, match="reference profile cannot be read"):
        checks.compute(db_session, store, job, checks.read_window(db_session, store, job))


def test_a_deployment_monitor_labels_its_alerts_with_deployment_and_model(
    client, db_session, tenant, version, settings
):
    deployment = Deployment(
        id=uuid.uuid4(), project_id=tenant.project_id, name="churn-prod", model_version_id=version.id
    )
    db_session.add(deployment)
    db_session.flush()
    body = {"name": "on-deployment", "deployment_id": str(deployment.id), "min_rows": 20}
    files = {"reference": ("reference.csv", csv_bytes(reference_frame()))}
    created = client.post(MONITORS, data={"spec": json.dumps(body)}, files=files, headers=tenant.headers).json()
    drifted = reference_frame(100, seed=9).assign(x=lambda f: f.x + 5, y=lambda f: f.y + 5, c="c")
    client.post(f"{MONITORS}/{created['id']}/predictions", json=rows(drifted), headers=tenant.headers)
    run_check(client, db_session, settings, tenant.headers, created["id"])
    [event] = _events(db_session, "alert.firing", created["id"])
    model_name = db_session.get(Model, version.model_id).name
    labels = event.payload["labels"]
    assert (labels["deployment"], labels["model"], labels["version"]) == ("churn-prod", model_name, "1")
    assert event.payload["deployment_name"] == "churn-prod" and event.payload["model_name"] == model_name
    assert event.payload["severity"] == "critical"  # every column drifted: the 1.0 band
    # Deleting the monitor resolves its alert: no later check ever would.
    assert client.delete(f"{MONITORS}/{created['id']}", headers=tenant.headers).status_code == 204
    [resolved] = _events(db_session, "alert.resolved", created["id"])
    assert resolved.payload["fingerprint"] == event.payload["fingerprint"]
