"""The deployer end to end: models logged and registered with the real mlflow client, deployed through the
API, rolled out by a real Celery worker (outbox -> relay -> deployer.deploy), served through the gateway.

Model servers are the slow part, so the module shares one deployment and the tests run in file order,
each leaving it serving for the next.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import mlflow
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient
from mlflow.models import infer_signature
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sqlalchemy import select

from services.deployer import tasks
from services.deployer.domain import kserve
from services.deployer.domain.process_manager import ModelServerState
from services.deployer.domain.rollouts import process_manager
from shared.core.served_predictions import batch_rows
from shared.db.models import (
    Deployment,
    DeploymentHistory,
    DeploymentServer,
    Model,
    ModelVersion,
    MonitorPredictionBatch,
    OutboxEvent,
    ServedPredictionBatch,
)
from tessera import worker
from tests import factories
from tests.conftest import point_mlflow_at, wait_for

FAST_LOG = {"pip_requirements": ["scikit-learn"], "serialization_format": "cloudpickle"}


@dataclass(frozen=True)
class Registered:
    name: str
    features: pd.DataFrame
    versions: dict[str, uuid.UUID]  # good, twin, raising, empty -> model version id


@pytest.fixture(scope="module")
def tenant(db, settings) -> factories.Tenant:
    with db.session_scope() as session:
        return factories.make_tenant(session, jwt_secret=settings.jwt_secret)


@pytest.fixture(scope="module")
def registered(live_server, tenant, db, tmp_path_factory) -> Iterator[Registered]:
    features, target = load_iris(return_X_y=True, as_frame=True)
    estimator = LogisticRegression(max_iter=500).fit(features, target)
    signature = infer_signature(features, estimator.predict(features))

    class Raising(mlflow.pyfunc.PythonModel):  # defined here so cloudpickle ships it by value
        def predict(self, context, model_input, params=None):
            raise RuntimeError("this model always fails")

    name = factories.unique("iris")
    # Kept for the whole module: the tests load the registered model in-process through the server too.
    env = pytest.MonkeyPatch()
    point_mlflow_at(env, live_server.url, tenant.api_key)
    mlflow.set_experiment(factories.unique("deploy"))
    with mlflow.start_run():
        good = mlflow.sklearn.log_model(estimator, name="good", signature=signature, **FAST_LOG)
        twin = mlflow.sklearn.log_model(estimator, name="twin", signature=signature, **FAST_LOG)
        raising = mlflow.pyfunc.log_model(name="raising", python_model=Raising(), pip_requirements=["scikit-learn"])
    numbers = {
        label: mlflow.register_model(info.model_uri, name).version
        for label, info in (("good", good), ("twin", twin), ("raising", raising))
    }
    empty = tmp_path_factory.mktemp("empty-model")
    with db.session_scope() as session:
        model = session.scalar(select(Model).where(Model.project_id == tenant.project_id, Model.name == name))
        versions = {
            label: session.scalar(
                select(ModelVersion.id).where(ModelVersion.model_id == model.id, ModelVersion.version == int(number))
            )
            for label, number in numbers.items()
        }
        # A registered version whose files hold no MLflow model.
        model.last_version += 1
        broken = ModelVersion(model_id=model.id, version=model.last_version, artifact_uri=str(empty), source=str(empty))
        session.add(broken)
        session.flush()
        versions["empty"] = broken.id
    yield Registered(name, features, versions)
    env.undo()


@pytest.fixture(scope="module")
def api(settings, celery_worker) -> Iterator[TestClient]:
    """The platform app on the committed test database."""
    from tessera.platform import create_app

    with TestClient(
        create_app(settings.model_copy(update={"deployer_log_flush_interval_s": 0.2})), raise_server_exceptions=False
    ) as client:
        yield client


@pytest.fixture(scope="module")
def monitor(api, tenant, registered) -> uuid.UUID:
    """A monitor of the iris features, which the deployment is linked to when it is created."""
    spec = {"name": factories.unique("iris-monitor"), "model_version_id": str(registered.versions["good"])}
    reference = registered.features.to_csv(index=False).encode()
    response = api.post(
        "/api/v1/monitors",
        data={"spec": json.dumps(spec)},
        files={"reference": ("reference.csv", reference)},
        headers=tenant.headers,
    )
    assert response.status_code == 201, response.text
    return uuid.UUID(response.json()["id"])


@pytest.fixture(scope="module")
def deployment(api, tenant, registered, monitor, db) -> Iterator[uuid.UUID]:
    response = api.post(
        "/api/v1/deployments",
        json={
            "name": factories.unique("iris-prod"),
            "model_version_id": str(registered.versions["good"]),
            "monitor_id": str(monitor),
            "canary": {"max_error_rate": 0.2, "min_requests": 20, "window_seconds": 60, "max_requests": 100},
        },
        headers=tenant.headers,
    )
    assert response.status_code == 201, response.text
    assert response.json()["monitor_id"] == str(monitor)
    deployment_id = uuid.UUID(response.json()["id"])
    yield deployment_id
    api.post(f"/api/v1/deployments/{deployment_id}/stop", headers=tenant.headers)
    _stop_leftovers(db, deployment_id)


def _stop_leftovers(db, deployment_id: uuid.UUID) -> None:
    """Whatever the worker had no time to stop (the stop task is asynchronous)."""
    manager = process_manager(tasks.settings())
    with db.session_scope() as session:
        pids = session.execute(
            select(DeploymentHistory.details["pid"].as_integer(), DeploymentHistory.details["port"].as_integer()).where(
                DeploymentHistory.deployment_id == deployment_id, DeploymentHistory.details["pid"].is_not(None)
            )
        ).all()
    for pid, port in pids:
        manager.stop(ModelServerState(pid=pid, port=port, started_at=datetime.now(UTC), log_path=""))


def _wait_for(api, tenant, deployment_id, condition, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = api.get(f"/api/v1/deployments/{deployment_id}", headers=tenant.headers).json()
        if condition(body):
            # The worker changed the rows; the gateway would notice within its routing-table TTL.
            api.app.state.deployer_gateway.invalidate(deployment_id)
            return body
        assert time.monotonic() < deadline, f"timed out; deployment is {body}"
        time.sleep(0.3)


def _history(api, tenant, deployment_id) -> list[dict]:
    return api.get(f"/api/v1/deployments/{deployment_id}/history", headers=tenant.headers).json()["items"]


def _events(db, deployment_id, event_type) -> list[dict]:
    with db.session_scope() as session:
        rows = session.scalars(select(OutboxEvent.payload).where(OutboxEvent.event_type == event_type)).all()
    return [row for row in rows if row["deployment_id"] == str(deployment_id)]


def _invoke(api, tenant, deployment_id, rows: pd.DataFrame):
    return api.post(
        f"/deployments/{deployment_id}/invocations",
        json={"dataframe_split": rows.to_dict(orient="split")},
        headers=tenant.headers,
    )


def _invoke_many(api, tenant, deployment_id, rows: pd.DataFrame, count: int) -> list[httpx.Response]:
    """`count` invocations, 8 at a time, on the app's own event loop (where the gateway's client lives)."""
    body = {"dataframe_split": rows.to_dict(orient="split")}

    async def send_all() -> list[httpx.Response]:
        slots = asyncio.Semaphore(8)
        transport = httpx.ASGITransport(app=api.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:

            async def one() -> httpx.Response:
                async with slots:
                    return await client.post(
                        f"/deployments/{deployment_id}/invocations", json=body, headers=tenant.headers
                    )

            return await asyncio.gather(*(one() for _ in range(count)))

    return api.portal.call(send_all)


def _queued_rows(db, deployment_id: uuid.UUID) -> list[dict]:
    with db.session_scope() as session:
        batches = session.scalars(
            select(ServedPredictionBatch.rows)
            .where(ServedPredictionBatch.deployment_id == deployment_id)
            .order_by(ServedPredictionBatch.created_at)
        ).all()
    # The gateway queues requests as they came; the monitor's ingest pairs their rows with their predictions.
    return batch_rows([item for items in batches for item in items])


def _logged_row_count(db, monitor_id: uuid.UUID) -> int:
    with db.session_scope() as session:
        counts = session.scalars(
            select(MonitorPredictionBatch.row_count).where(MonitorPredictionBatch.monitor_id == monitor_id)
        ).all()
    return sum(counts)


def test_deployed_version_serves_the_same_predictions_as_in_process(api, tenant, registered, deployment, monitor, db):
    body = _wait_for(api, tenant, deployment, lambda d: d["status"] != "pending" and d["status"] != "deploying")
    assert body["status"] == "healthy", body
    assert [server["role"] for server in body["servers"]] == ["stable"]
    rows = registered.features.sample(n=30, random_state=3)
    expected = mlflow.pyfunc.load_model(f"models:/{registered.name}/1").predict(rows).tolist()

    response = _invoke(api, tenant, deployment, rows)

    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": expected}
    assert response.headers["x-tessera-model-version"] == "1"
    v2 = api.post(
        f"/deployments/{deployment}/v2/models/{registered.name}/infer",
        json={
            "inputs": [
                {"name": column, "shape": [len(rows)], "datatype": "FP64", "data": rows[column].tolist()}
                for column in rows.columns
            ]
        },
        headers=tenant.headers,
    )
    assert v2.status_code == 200, v2.text
    assert v2.json()["outputs"][0]["data"] == expected
    assert api.get(f"/deployments/{deployment}/v2/health/ready", headers=tenant.headers).json() == {"ready": True}
    # The request and its predictions are queued for the linked monitor, off the response path, in the
    # monitor's format: one row per input row, its features, its prediction and a request id.
    # Both requests (30 rows each, MLflow and V2).
    wait_for(lambda: len(_queued_rows(db, deployment)) == 60, timeout=10, what="both requests' rows queued")
    queued = _queued_rows(db, deployment)
    logged = queued[:30]
    assert [row["prediction"] for row in logged] == expected
    assert logged[0]["features"] == rows.iloc[0].to_dict()
    request_id = response.headers["x-request-id"]
    assert [row["request_id"] for row in logged] == [f"{request_id}:{index}" for index in range(30)]
    # The worker's ingest logs them to the monitor, and empties the queue.
    worker.celery_app.send_task("monitor.ingest_served_predictions")
    wait_for(lambda: _logged_row_count(db, monitor) == len(queued), timeout=30, what="rows logged to the monitor")
    assert _queued_rows(db, deployment) == []
    latest = _history(api, tenant, deployment)[0]
    assert (latest["action"], latest["outcome"]) == ("deploy", "succeeded")
    metrics = api.get("/metrics").text
    assert (
        f'tessera_deployment_requests_total{{deployment="{deployment}",outcome="ok",role="stable",version="1"}}'
        in metrics
    )


def test_a_canary_at_20_percent_gets_20_percent_of_the_traffic(api, tenant, registered, deployment, db):
    response = api.post(
        f"/api/v1/deployments/{deployment}/canary",
        json={"model_version_id": str(registered.versions["twin"]), "percent": 20},
        headers=tenant.headers,
    )
    assert response.status_code == 200, response.text
    _wait_for(api, tenant, deployment, lambda d: d["canary_version_id"] is not None)
    rows = registered.features.head(1)

    versions = [
        response.headers["x-tessera-model-version"] for response in _invoke_many(api, tenant, deployment, rows, 1000)
    ]

    assert 160 <= versions.count("2") <= 240, versions.count("2")
    assert versions.count("1") + versions.count("2") == 1000

    promoted = api.post(f"/api/v1/deployments/{deployment}/promote", headers=tenant.headers).json()
    assert (promoted["model_version_id"], promoted["canary_version_id"]) == (str(registered.versions["twin"]), None)
    assert _invoke(api, tenant, deployment, rows).headers["x-tessera-model-version"] == "2"
    assert _events(db, deployment, "deployment.promoted")


def test_one_call_rolls_back_to_the_previous_healthy_version(api, tenant, registered, deployment, db):
    response = api.post(
        f"/api/v1/deployments/{deployment}/rollback", json={"reason": "v2 is worse"}, headers=tenant.headers
    )
    assert response.status_code == 200, response.text

    body = _wait_for(api, tenant, deployment, lambda d: d["status"] != "deploying")

    assert (body["status"], body["model_version_id"]) == ("rolled_back", str(registered.versions["good"]))
    assert _invoke(api, tenant, deployment, registered.features.head(2)).headers["x-tessera-model-version"] == "1"
    latest = _history(api, tenant, deployment)[0]
    assert (latest["action"], latest["outcome"], latest["reason"]) == ("rollback", "succeeded", "v2 is worse")
    assert latest["to_version_id"] == str(registered.versions["good"])
    assert _events(db, deployment, "deployment.rolled_back")


def test_a_failing_canary_is_rolled_back_automatically(api, tenant, registered, deployment, db):
    api.post(
        f"/api/v1/deployments/{deployment}/canary",
        json={"model_version_id": str(registered.versions["raising"]), "percent": 50},
        headers=tenant.headers,
    )
    _wait_for(api, tenant, deployment, lambda d: d["canary_version_id"] is not None)
    rows = registered.features.head(1)

    statuses: list[int] = []
    for _ in range(8):  # rounds further apart than the gateway's flush of its counts to the shared judge
        statuses += [response.status_code for response in _invoke_many(api, tenant, deployment, rows, 15)]
        time.sleep(0.5)

    # The canary's 500s stop as soon as its window crosses the threshold (20 requests, 20 % errors).
    assert 500 in statuses and statuses[-40:] == [200] * 40
    body = _wait_for(api, tenant, deployment, lambda d: d["canary_version_id"] is None, timeout=10)
    assert body["status"] == "rolled_back"
    latest = _history(api, tenant, deployment)[0]
    assert (latest["action"], latest["outcome"]) == ("auto_rollback", "succeeded")
    assert latest["from_version_id"] == str(registered.versions["raising"]) and "error rate" in latest["reason"]
    rolled_back = _events(db, deployment, "deployment.rolled_back")
    assert rolled_back[-1]["from_version_id"] == str(registered.versions["raising"])


def test_a_version_without_a_model_fails_with_a_reason_and_the_previous_keeps_serving(
    api, tenant, registered, deployment, db
):
    api.post(
        f"/api/v1/deployments/{deployment}/canary",
        json={"model_version_id": str(registered.versions["empty"]), "percent": 50},
        headers=tenant.headers,
    )
    _wait_for(api, tenant, deployment, lambda d: _history(api, tenant, deployment)[0]["outcome"] != "pending")

    latest = _history(api, tenant, deployment)[0]
    assert (latest["action"], latest["outcome"]) == ("canary", "failed")
    assert "no MLmodel file" in latest["reason"]
    assert _events(db, deployment, "deployment.failed")[-1]["to_version_id"] == str(registered.versions["empty"])
    rows = registered.features.head(5)
    answers = {_invoke(api, tenant, deployment, rows).headers["x-tessera-model-version"] for _ in range(20)}
    assert answers == {"1"}


def test_supervise_restarts_a_killed_model_server(api, tenant, registered, deployment, db):
    with db.session_scope() as session:
        server = session.scalar(
            select(DeploymentServer).where(
                DeploymentServer.deployment_id == deployment, DeploymentServer.role == "stable"
            )
        )
        old_pid, restarts = server.pid, server.restarts
    os.killpg(old_pid, signal.SIGKILL)
    manager = process_manager(tasks.settings())
    deadline = time.monotonic() + 10
    while manager.is_running(
        ModelServerState(pid=old_pid, port=server.port, started_at=datetime.now(UTC), log_path="")
    ):
        assert time.monotonic() < deadline
        time.sleep(0.1)

    tasks.supervise()
    tasks.supervise()  # a second beat finds it running and does nothing

    with db.session_scope() as session:
        server = session.get(DeploymentServer, server.id)
        assert server.pid != old_pid and server.restarts == restarts + 1 and server.state == "running"
        restarts_logged = session.scalars(
            select(DeploymentHistory).where(
                DeploymentHistory.deployment_id == deployment, DeploymentHistory.action == "restart"
            )
        ).all()
    assert [(row.outcome, row.details["pid"]) for row in restarts_logged] == [("succeeded", server.pid)]
    api.app.state.deployer_gateway.invalidate(deployment)
    assert _invoke(api, tenant, deployment, registered.features.head(3)).status_code == 200


def test_kserve_manifest_from_the_api_passes_schema_validation(api, tenant, registered):
    response = api.post(
        "/api/v1/deployments",
        json={
            "name": factories.unique("Iris On K8s"),
            "model_version_id": str(registered.versions["good"]),
            "target": "kserve",
            "kserve": {"namespace": "models", "requests": {"cpu": "500m"}, "min_replicas": 1, "max_replicas": 3},
        },
        headers=tenant.headers,
    )
    assert response.status_code == 201, response.text
    deployment_id = response.json()["id"]

    as_yaml = api.get(f"/api/v1/deployments/{deployment_id}/manifest", headers=tenant.headers)
    as_json = api.get(f"/api/v1/deployments/{deployment_id}/manifest?format=json", headers=tenant.headers)

    assert as_yaml.status_code == 200 and as_yaml.headers["content-type"].startswith("application/yaml")
    manifest = yaml.safe_load(as_yaml.text)
    kserve.validate_inference_service(manifest)
    assert manifest == as_json.json()
    predictor = manifest["spec"]["predictor"]
    assert predictor["model"]["storageUri"].startswith("mlflow-artifacts:/")
    assert (predictor["minReplicas"], manifest["metadata"]["namespace"]) == (1, "models")


def test_a_shadow_sees_every_request_and_its_answers_are_compared(api, tenant, registered, deployment):
    response = api.post(
        f"/api/v1/deployments/{deployment}/shadow",
        json={"model_version_id": str(registered.versions["twin"])},
        headers=tenant.headers,
    )
    assert response.status_code == 200, response.text
    _wait_for(api, tenant, deployment, lambda d: d["shadow_version_id"] is not None)

    answers = {
        _invoke(api, tenant, deployment, registered.features.sample(4)).headers["x-tessera-model-version"]
        for _ in range(20)
    }

    assert answers == {"1"}  # the shadow's answers are never returned
    deadline = time.monotonic() + 5
    while True:
        stats = api.get(f"/deployments/{deployment}/shadow", headers=tenant.headers).json()["items"]
        if (stats and stats[0]["compared_count"] == 20) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert stats[0]["model_version_id"] == str(registered.versions["twin"])
    assert (stats[0]["compared_count"], stats[0]["exact_match_rate"], stats[0]["max_abs_diff"]) == (20, 1.0, 0.0)
    unset = api.post(
        f"/api/v1/deployments/{deployment}/shadow", json={"model_version_id": None}, headers=tenant.headers
    )
    assert unset.json()["shadow_version_id"] is None


def test_stop_stops_every_model_server(api, tenant, deployment, db):
    with db.session_scope() as session:
        servers = [
            ModelServerState(pid=row.pid, port=row.port, started_at=datetime.now(UTC), log_path="")
            for row in session.scalars(select(DeploymentServer).where(DeploymentServer.deployment_id == deployment))
        ]
    assert servers

    body = api.post(f"/api/v1/deployments/{deployment}/stop", headers=tenant.headers).json()

    assert body["status"] == "stopped" and body["servers"] == []
    assert _invoke(api, tenant, deployment, pd.DataFrame({"x": [1.0]})).status_code == 503
    manager = process_manager(tasks.settings())
    deadline = time.monotonic() + 20
    while any(manager.is_running(state) for state in servers):
        assert time.monotonic() < deadline, "the worker did not stop the model servers"
        time.sleep(0.2)
    with db.session_scope() as session:
        assert session.get(Deployment, deployment).status == "stopped"
