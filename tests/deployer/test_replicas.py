"""Replicas and request batching end to end: a registered model deployed with two replicas by a real worker,
served through the gateway, one replica killed, scaled up and down, and batching turned on by PATCH.

The tests share one deployment and run in file order, each leaving it serving for the next.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import mlflow
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow.models import infer_signature
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sqlalchemy import select

from services.deployer import tasks
from services.deployer.domain.deployments import REPLICAS_ADDED
from shared.db.models import Model, ModelVersion
from tests import factories
from tests.conftest import point_mlflow_at, wait_for
from tests.deployer.conftest import process_cpu_s
from tests.deployer.test_e2e import _events, _history, _invoke_many, _stop_leftovers, _wait_for


@dataclass(frozen=True)
class Registered:
    name: str
    features: pd.DataFrame
    version_id: uuid.UUID
    estimator: LogisticRegression


@pytest.fixture(scope="module")
def tenant(db, settings) -> factories.Tenant:
    with db.session_scope() as session:
        return factories.make_tenant(session, jwt_secret=settings.jwt_secret)


@pytest.fixture(scope="module")
def registered(live_server, tenant, db) -> Iterator[Registered]:
    features, target = load_iris(return_X_y=True, as_frame=True)
    estimator = LogisticRegression(max_iter=500).fit(features, target)
    name = factories.unique("iris-replicas")
    env = pytest.MonkeyPatch()
    point_mlflow_at(env, live_server.url, tenant.api_key)
    mlflow.set_experiment(factories.unique("replicas"))
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            estimator,
            name="model",
            signature=infer_signature(features, estimator.predict(features)),
            pip_requirements=["scikit-learn"],
            serialization_format="cloudpickle",
        )
    number = int(mlflow.register_model(info.model_uri, name).version)
    with db.session_scope() as session:
        version_id = session.scalar(
            select(ModelVersion.id)
            .join(Model, Model.id == ModelVersion.model_id)
            .where(Model.project_id == tenant.project_id, Model.name == name, ModelVersion.version == number)
        )
    yield Registered(name, features, version_id, estimator)
    env.undo()


@pytest.fixture(scope="module")
def api(settings, celery_worker) -> Iterator[TestClient]:
    from tessera.platform import create_app

    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def deployment(api, tenant, registered, db) -> Iterator[uuid.UUID]:
    response = api.post(
        "/api/v1/deployments",
        json={"name": factories.unique("iris-replicas"), "model_version_id": str(registered.version_id), "replicas": 2},
        headers=tenant.headers,
    )
    assert response.status_code == 201, response.text
    assert response.json()["replicas"] == 2
    deployment_id = uuid.UUID(response.json()["id"])
    yield deployment_id
    api.post(f"/api/v1/deployments/{deployment_id}/stop", headers=tenant.headers)
    _stop_leftovers(db, deployment_id)


def _running(body: dict) -> list[dict]:
    return [server for server in body["servers"] if server["state"] == "running"]


def test_a_deployment_with_two_replicas_balances_requests_across_them(api, tenant, registered, deployment):
    body = _wait_for(api, tenant, deployment, lambda d: d["status"] not in ("pending", "deploying"))
    assert body["status"] == "healthy", body
    servers = _running(body)
    assert sorted(server["replica"] for server in servers) == [0, 1]
    assert len({server["pid"] for server in servers}) == 2
    before = {server["pid"]: process_cpu_s(server["pid"]) for server in servers}

    responses = _invoke_many(api, tenant, deployment, registered.features.head(20), 400)

    assert [response.status_code for response in responses] == [200] * 400
    used = {pid: process_cpu_s(pid) - ticks for pid, ticks in before.items()}
    # Each replica did a fair share of the work (least outstanding, ties in turn: about half each).
    assert min(used.values()) >= 0.25 * sum(used.values()), used


def test_a_replica_that_dies_fails_no_request_and_is_restarted(api, tenant, registered, deployment, db):
    body = api.get(f"/api/v1/deployments/{deployment}", headers=tenant.headers).json()
    victim = next(server for server in body["servers"] if server["replica"] == 1)
    os.kill(victim["pid"], signal.SIGKILL)

    responses = _invoke_many(api, tenant, deployment, registered.features.head(5), 200)

    assert [response.status_code for response in responses] == [200] * 200
    tasks.supervise()
    body = _wait_for(api, tenant, deployment, lambda d: len(_running(d)) == 2)
    restarted = next(server for server in body["servers"] if server["replica"] == 1)
    assert restarted["pid"] != victim["pid"] and restarted["restarts"] == 1
    latest = _history(api, tenant, deployment)[0]
    assert (latest["action"], latest["outcome"], latest["details"]["replica"]) == ("restart", "succeeded", 1)


def test_scaling_up_starts_replicas_and_scaling_down_stops_them(api, tenant, registered, deployment, db):
    url = f"/api/v1/deployments/{deployment}"
    scaled = api.patch(url, json={"replicas": 3}, headers=tenant.headers)
    assert scaled.status_code == 200, scaled.text
    assert scaled.json()["replicas"] == 3
    assert [server["state"] for server in scaled.json()["servers"] if server["replica"] == 2] == ["starting"]
    assert _events(db, deployment, REPLICAS_ADDED)

    body = _wait_for(api, tenant, deployment, lambda d: len(_running(d)) == 3)
    assert _history(api, tenant, deployment)[0]["action"] == "start_replica"
    responses = _invoke_many(api, tenant, deployment, registered.features.head(3), 60)
    assert {response.status_code for response in responses} == {200}

    third = next(server for server in body["servers"] if server["replica"] == 2)
    down = api.patch(url, json={"replicas": 1}, headers=tenant.headers).json()
    assert [server["replica"] for server in down["servers"]] == [0]
    # The worker stops the processes of the replicas dropped (deployer.stop, from the outbox).
    wait_for(lambda: not os.path.exists(f"/proc/{third['pid']}"), timeout=60, what="the third replica stopped")
    scales = [row for row in _history(api, tenant, deployment) if row["action"] == "scale"]
    assert [row["details"]["replicas"] for row in scales[:2]] == [{"from": 3, "to": 1}, {"from": 2, "to": 3}]


def test_batching_gives_each_caller_its_own_rows_and_refuses_a_bad_request_alone(api, tenant, registered, deployment):
    url = f"/api/v1/deployments/{deployment}"
    patched = api.patch(url, json={"batching": {"max_batch_size": 8, "max_latency_ms": 20}}, headers=tenant.headers)
    assert patched.status_code == 200, patched.text
    assert patched.json()["batching"] == {"max_batch_size": 8, "max_latency_ms": 20.0}
    api.app.state.deployer_gateway.invalidate(deployment)
    features = registered.features
    # 48 requests of 1 to 3 rows each, all different, and one with a null feature among them.
    slices = [features.iloc[start : start + 1 + start % 3] for start in range(0, 96, 2)]
    bad = features.head(2).astype(object)
    bad.iloc[1, 0] = None

    responses = _invoke_each(api, tenant, deployment, [*slices[:24], bad, *slices[24:]])

    refused = responses.pop(24)
    assert refused.status_code == 400, refused.text
    for rows, response in zip(slices, responses, strict=True):
        assert response.status_code == 200, response.text
        assert response.json() == {"predictions": registered.estimator.predict(rows).tolist()}

    off = api.patch(url, json={"batching": None}, headers=tenant.headers).json()
    assert off["batching"] is None


def _invoke_each(api, tenant, deployment_id, frames: list[pd.DataFrame]):
    """One request per frame, all at once, on the app's own event loop; answers in the frames' order."""

    async def send_all():
        transport = httpx.ASGITransport(app=api.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return await asyncio.gather(
                *(
                    client.post(
                        f"/deployments/{deployment_id}/invocations",
                        json={"dataframe_split": frame.to_dict(orient="split")},
                        headers=tenant.headers,
                    )
                    for frame in frames
                )
            )

    return api.portal.call(send_all)
