"""The link between a deployment and its monitor (set and cleared from either side, shown on both), and the
ingest of the gateway's queued predictions into the linked monitor (the gateway's side is in
tests/deployer/test_gateway.py, the whole path on real processes in tests/deployer/test_e2e.py)."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import delete, func, select

from services.monitor.domain import served
from shared.core import served_predictions
from shared.core.artifacts import get_artifact_store
from shared.db.base import utcnow
from shared.db.models import Deployment, ModelMonitoring, MonitorPredictionBatch, ServedPredictionBatch
from tests import factories
from tests.monitor.test_api import MONITORS, create_monitor, csv_bytes, make_version, reference_frame

DEPLOYMENTS = "/api/v1/deployments"


@pytest.fixture
def deployment(db_session, tenant) -> Deployment:
    # Ingest takes every queued batch: those that other tests' gateways left in the shared database are
    # set aside for this test's transaction, which is rolled back at its end.
    db_session.execute(delete(ServedPredictionBatch))
    version = make_version(db_session, tenant.project_id)
    deployment = Deployment(id=uuid.uuid4(), project_id=tenant.project_id, name="churn", model_version_id=version.id)
    db_session.add(deployment)
    db_session.flush()
    return deployment


def on_deployment(client, tenant, deployment) -> dict:
    body = {"name": factories.unique("mon"), "deployment_id": str(deployment.id), "min_rows": 20}
    files = {"reference": ("reference.csv", csv_bytes(reference_frame()))}
    response = client.post(MONITORS, data={"spec": json.dumps(body)}, files=files, headers=tenant.headers)
    assert response.status_code == 201, response.text
    return response.json()


def linked(client, tenant, deployment) -> str | None:
    return client.get(f"{DEPLOYMENTS}/{deployment.id}", headers=tenant.headers).json()["monitor_id"]


def test_either_side_sets_and_clears_the_one_link_and_both_show_it(client, tenant, deployment):
    first = on_deployment(client, tenant, deployment)
    assert linked(client, tenant, deployment) == first["id"]

    # From the deployment's side: clear, then link another monitor.
    cleared = client.patch(f"{DEPLOYMENTS}/{deployment.id}", json={"monitor_id": None}, headers=tenant.headers)
    assert cleared.status_code == 200 and cleared.json()["monitor_id"] is None
    assert client.get(f"{MONITORS}/{first['id']}", headers=tenant.headers).json()["deployment_id"] is None
    other = create_monitor(client, tenant.headers, deployment.model_version_id).json()
    moved = client.patch(f"{DEPLOYMENTS}/{deployment.id}", json={"monitor_id": other["id"]}, headers=tenant.headers)
    assert moved.json()["monitor_id"] == other["id"]
    assert client.get(f"{MONITORS}/{other['id']}", headers=tenant.headers).json()["deployment_id"] == str(deployment.id)
    # Absent field: unchanged.
    assert (
        client.patch(f"{DEPLOYMENTS}/{deployment.id}", json={}, headers=tenant.headers).json()["monitor_id"]
        == (other["id"])
    )

    # From the monitor's side: the first monitor takes the link back (one monitor per deployment).
    spec = {"spec": json.dumps({"deployment_id": str(deployment.id)})}
    assert client.patch(f"{MONITORS}/{first['id']}", data=spec, headers=tenant.headers).status_code == 200
    assert linked(client, tenant, deployment) == first["id"]
    assert client.get(f"{MONITORS}/{other['id']}", headers=tenant.headers).json()["deployment_id"] is None
    unlink = {"spec": json.dumps({"deployment_id": None})}
    assert (
        client.patch(f"{MONITORS}/{first['id']}", data=unlink, headers=tenant.headers).json()["deployment_id"] is None
    )
    assert linked(client, tenant, deployment) is None


def test_a_link_to_a_monitor_out_of_reach_is_not_found(client, db_session, tenant, other_tenant, deployment):
    foreign = create_monitor(client, other_tenant.headers, make_version(db_session, other_tenant.project_id).id).json()
    for monitor_id in (foreign["id"], str(uuid.uuid4())):
        response = client.patch(
            f"{DEPLOYMENTS}/{deployment.id}", json={"monitor_id": monitor_id}, headers=tenant.headers
        )
        assert response.status_code == 404, response.text


def test_queued_predictions_are_logged_to_the_linked_monitor_once(client, db_session, tenant, deployment, settings):
    monitor = on_deployment(client, tenant, deployment)
    frame = reference_frame(30, seed=4)
    good = [
        # A column the monitor does not watch (`extra`) is left out; the request id is kept for ground truth.
        {"features": {"x": r.x, "y": r.y, "c": r.c, "extra": 1}, "prediction": 1, "request_id": f"r{i}"}
        for i, r in enumerate(frame.itertuples())
    ]
    lacking = [{"features": {"x": 1.0}, "prediction": 0}]
    now = utcnow()
    served_predictions.queue_rows(db_session, deployment.id, good, now)
    served_predictions.queue_rows(db_session, deployment.id, lacking, now)
    store = get_artifact_store(settings)

    outcome = served.IngestOutcome()
    served.ingest(db_session, store, now, outcome)

    assert (outcome.batches, outcome.logged, outcome.refused) == (2, 30, 1)
    logged = db_session.scalars(
        select(MonitorPredictionBatch).where(MonitorPredictionBatch.monitor_id == monitor["id"])
    )
    assert [batch.row_count for batch in logged] == [30]
    assert db_session.scalar(select(func.count()).select_from(ServedPredictionBatch)) == 0
    # Nothing left: a second run logs nothing more.
    again = served.IngestOutcome()
    served.ingest(db_session, store, now, again)
    assert again.batches == 0


def test_predictions_of_a_deployment_without_a_monitor_are_dropped(db_session, deployment, settings):
    served_predictions.queue_rows(db_session, deployment.id, [{"features": {"x": 1}, "prediction": 0}], utcnow())

    outcome = served.IngestOutcome()
    served.ingest(db_session, get_artifact_store(settings), utcnow(), outcome)

    assert (outcome.batches, outcome.unlinked, outcome.logged) == (1, 1, 0)


def test_rows_a_monitor_cannot_take_are_let_go_rather_than_block_the_queue(db_session, tenant, deployment, settings):
    # A monitor row without a reference schema: whatever arrives for it fails the same way at every try.
    db_session.add(ModelMonitoring(project_id=tenant.project_id, name="no-schema", deployment_id=deployment.id))
    served_predictions.queue_rows(db_session, deployment.id, [{"features": {"x": 1}, "prediction": 0}], utcnow())

    outcome = served.IngestOutcome()
    served.ingest(db_session, get_artifact_store(settings), utcnow(), outcome)

    assert (outcome.batches, outcome.refused) == (1, 1)
    assert db_session.scalar(select(func.count()).select_from(ServedPredictionBatch)) == 0
