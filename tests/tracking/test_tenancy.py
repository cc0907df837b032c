"""Tenancy through the real mlflow client: a key of org B cannot read or write org A's experiments,
runs, metrics, logged models or artifacts; everything of A looks missing to B (404, never 403)."""

from __future__ import annotations

import uuid

import mlflow
import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tests import factories
from tests.conftest import point_mlflow_at


@pytest.fixture
def org_a(live_server, monkeypatch, db, settings):
    """Org A's experiment with a run, a metric, an artifact and a logged model, made through the client."""
    with db.session_scope() as session:
        tenant = factories.make_tenant(session, jwt_secret=settings.jwt_secret)
    point_mlflow_at(monkeypatch, live_server.url, tenant.api_key, max_retries=None)
    client = MlflowClient(live_server.url)
    name = f"secret-{uuid.uuid4().hex[:6]}"
    experiment_id = client.create_experiment(name)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_metric("acc", 0.99)
        mlflow.log_text("classified", "notes.txt")
    model = client.create_logged_model(experiment_id, name="m")
    return {
        "tenant": tenant,
        "name": name,
        "experiment_id": experiment_id,
        "run_id": run.info.run_id,
        "model_id": model.model_id,
    }


@pytest.fixture
def as_org_b(live_server, monkeypatch, db, settings, org_a):
    with db.session_scope() as session:
        tenant = factories.make_tenant(session, jwt_secret=settings.jwt_secret)
    point_mlflow_at(monkeypatch, live_server.url, tenant.api_key, max_retries=None)
    return MlflowClient(live_server.url), tenant


def _missing(call) -> None:
    with pytest.raises(MlflowException) as exc:
        call()
    assert exc.value.error_code == "RESOURCE_DOES_NOT_EXIST", exc.value.message


def test_other_org_cannot_read(org_a, as_org_b):
    client, _ = as_org_b
    _missing(lambda: client.get_experiment(org_a["experiment_id"]))
    _missing(lambda: client.get_run(org_a["run_id"]))
    _missing(lambda: client.get_metric_history(org_a["run_id"], "acc"))
    _missing(lambda: client.get_logged_model(org_a["model_id"]))
    assert client.get_experiment_by_name(org_a["name"]) is None
    assert client.search_runs([org_a["experiment_id"]]) == []
    assert org_a["experiment_id"] not in {e.experiment_id for e in client.search_experiments()}
    assert client.search_logged_models([org_a["experiment_id"]]) == []


def test_other_org_cannot_write(org_a, as_org_b):
    client, _ = as_org_b
    _missing(lambda: client.log_metric(org_a["run_id"], "acc", 0.0))
    _missing(lambda: client.log_param(org_a["run_id"], "p", "1"))
    _missing(lambda: client.set_tag(org_a["run_id"], "t", "1"))
    _missing(lambda: client.log_batch(org_a["run_id"], params=[mlflow.entities.Param("p", "1")]))
    _missing(lambda: client.update_run(org_a["run_id"], status="KILLED"))
    _missing(lambda: client.delete_run(org_a["run_id"]))
    _missing(lambda: client.create_run(org_a["experiment_id"]))
    _missing(lambda: client.set_experiment_tag(org_a["experiment_id"], "t", "1"))
    _missing(lambda: client.rename_experiment(org_a["experiment_id"], "mine"))
    _missing(lambda: client.delete_experiment(org_a["experiment_id"]))
    # The client looks the model up first and rewraps our 404 in its own message.
    with pytest.raises(MlflowException, match="may not have access to the logged model"):
        client.set_logged_model_tags(org_a["model_id"], {"t": "1"})
    # The same experiment name is free in B's own project.
    assert client.create_experiment(org_a["name"]) != org_a["experiment_id"]


def test_other_org_cannot_touch_artifacts(org_a, as_org_b, live_server):
    _, tenant_b = as_org_b
    base = f"{live_server.url}/api/2.0/mlflow-artifacts/artifacts"
    path = f"{org_a['experiment_id']}/{org_a['run_id']}/artifacts/notes.txt"
    headers_b = factories.bearer(tenant_b.api_key)
    assert requests.get(f"{base}/{path}", headers=headers_b, timeout=10).status_code == 404
    listing = requests.get(
        base, params={"path": f"{org_a['experiment_id']}/{org_a['run_id']}/artifacts"}, headers=headers_b, timeout=10
    )
    assert listing.status_code == 404
    assert requests.put(f"{base}/{path}", data=b"overwritten", headers=headers_b, timeout=10).status_code == 404
    assert requests.delete(f"{base}/{path}", headers=headers_b, timeout=10).status_code == 404
    headers_a = factories.bearer(org_a["tenant"].api_key)
    assert requests.get(f"{base}/{path}", headers=headers_a, timeout=10).content == b"classified"


def test_read_only_key_and_basic_auth(org_a, live_server, monkeypatch, db):
    from shared.db.models import Organization, User

    with db.session_scope() as session:
        user = session.get(User, org_a["tenant"].user_id)
        org = session.get(Organization, org_a["tenant"].org_id)
        _, read_key = factories.make_api_key(session, user=user, org=org, scopes=["tracking:read"])
    point_mlflow_at(monkeypatch, live_server.url, read_key, max_retries=None)
    client = MlflowClient(live_server.url)
    assert client.get_run(org_a["run_id"]).data.metrics == {"acc": 0.99}
    with pytest.raises(MlflowException) as exc:
        client.log_metric(org_a["run_id"], "acc", 0.1)
    assert exc.value.error_code == "PERMISSION_DENIED"

    # MLFLOW_TRACKING_USERNAME/PASSWORD = email + API key, as the client sends basic auth.
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", org_a["tenant"].email)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", org_a["tenant"].api_key)
    client.log_metric(org_a["run_id"], "loss", 0.5)
    assert client.get_run(org_a["run_id"]).data.metrics["loss"] == 0.5

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    with pytest.raises(MlflowException) as exc:
        client.get_run(org_a["run_id"])
    assert exc.value.error_code == "UNAUTHENTICATED"
