"""Artifacts through the proxied artifact API, and MLflow 3 logged models: log_model then load_model."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import numpy as np
import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression

from shared.core.artifacts import safe_key
from shared.core.errors import InvalidParameter


def test_artifact_round_trip(mlflow_client, experiment_id, tmp_path):
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_text("hello", "notes/readme.txt")
        mlflow.log_dict({"a": 1}, "config.json")
        local = tmp_path / "weights.bin"
        local.write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # several streaming chunks
        mlflow.log_artifact(str(local), artifact_path="model")
    run_id = run.info.run_id

    listing = {f.path: f for f in mlflow_client.list_artifacts(run_id)}
    assert set(listing) == {"notes", "config.json", "model"}
    assert listing["notes"].is_dir and not listing["config.json"].is_dir
    assert [(f.path, f.file_size) for f in mlflow_client.list_artifacts(run_id, "model")] == [
        ("model/weights.bin", local.stat().st_size)
    ]
    assert mlflow.artifacts.load_text(f"runs:/{run_id}/notes/readme.txt") == "hello"
    assert mlflow.artifacts.load_dict(f"runs:/{run_id}/config.json") == {"a": 1}
    out = mlflow_client.download_artifacts(run_id, "model", str(tmp_path / "out"))
    assert (tmp_path / "out" / "model" / "weights.bin").read_bytes() == local.read_bytes()
    assert out.endswith("model")


def test_artifact_delete_and_missing_file(mlflow_client, experiment_id, module_tenant, live_server):
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_text("x", "tmp/x.txt")
    base = f"{live_server.url}/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{run.info.run_id}/artifacts"
    headers = {"Authorization": f"Bearer {module_tenant.api_key}"}
    assert requests.get(f"{base}/tmp", headers=headers, timeout=10).status_code == 404  # a folder is no file
    assert requests.get(f"{base}/nope.txt", headers=headers, timeout=10).status_code == 404
    assert requests.delete(f"{base}/tmp/x.txt", headers=headers, timeout=10).status_code == 200
    assert mlflow_client.list_artifacts(run.info.run_id, "tmp") == []


@pytest.mark.parametrize("path", ["%2e%2e/%2e%2e/escape.txt", "..%2F..%2Fescape.txt", "a%5C..%5C..%5Cescape.txt"])
def test_path_traversal_is_refused(experiment_id, module_tenant, live_server, settings, path):
    # requests would normalise a literal "../" away; percent-encoded forms reach the server as such.
    url = f"{live_server.url}/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{path}"
    headers = {"Authorization": f"Bearer {module_tenant.api_key}"}
    assert requests.put(url, data=b"owned", headers=headers, timeout=10).status_code == 400
    listing = requests.get(
        f"{live_server.url}/api/2.0/mlflow-artifacts/artifacts",
        params={"path": f"{experiment_id}/../.."},
        headers=headers,
        timeout=10,
    )
    assert listing.status_code == 400
    assert not list(Path(settings.artifact_root).rglob("escape.txt"))
    assert not (Path(settings.artifact_root).parent / "escape.txt").exists()


@pytest.mark.parametrize("bad", ["../x", "a/../../x", "/etc/passwd", "a/./b", "a//b", "a\\b", "a\x00b", "", "."])
def test_safe_key_refuses_escapes(bad):
    with pytest.raises(InvalidParameter):
        safe_key("org", "project", bad) if bad.startswith("/") else safe_key(bad)


def test_sklearn_log_model_then_pyfunc_load_model(mlflow_client, experiment_id):
    features = np.array([[0.0, 0.1], [0.2, 0.1], [1.0, 0.9], [0.9, 1.1]])
    labels = np.array([0, 0, 1, 1])
    classifier = LogisticRegression().fit(features, labels)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_param("C", 1.0)
        # Explicit requirements: inferring them spawns a Python process (~10 s of test time).
        info = mlflow.sklearn.log_model(
            classifier,
            name="model",
            signature=infer_signature(features, classifier.predict(features)),
            pip_requirements=["scikit-learn"],
            serialization_format="cloudpickle",  # the default (skops) takes ~8 s just to import
        )
    assert info.model_id.startswith("m-")

    logged = mlflow_client.get_logged_model(info.model_id)
    assert logged.status.to_proto() == 2  # LOGGED_MODEL_READY
    assert logged.source_run_id == run.info.run_id
    assert logged.artifact_location == f"mlflow-artifacts:/{experiment_id}/models/{info.model_id}/artifacts"
    run_outputs = mlflow_client.get_run(run.info.run_id).outputs.model_outputs
    assert [o.model_id for o in run_outputs] == [info.model_id]

    for uri in (info.model_uri, f"runs:/{run.info.run_id}/model"):
        loaded = mlflow.pyfunc.load_model(uri)
        assert list(loaded.predict(features)) == list(classifier.predict(features))

    found = mlflow_client.search_logged_models(experiment_ids=[experiment_id], filter_string="name = 'model'")
    assert [m.model_id for m in found] == [info.model_id]
    mlflow_client.set_logged_model_tags(info.model_id, {"quality": "good"})
    assert mlflow_client.get_logged_model(info.model_id).tags["quality"] == "good"
    mlflow_client.delete_logged_model_tag(info.model_id, "quality")
    assert "quality" not in mlflow_client.get_logged_model(info.model_id).tags


def test_log_model_after_metrics_keeps_the_histories_exact(mlflow_client, experiment_id):
    """mlflow 3's log_model re-sends the run's points at its step, tagged with the new model's id: they are
    linked to the model, and the run's histories keep one point each."""
    classifier = LogisticRegression().fit(np.array([[0.0], [1.0]]), np.array([0, 1]))
    with mlflow.start_run(experiment_id=experiment_id) as run:
        for step, value in enumerate([0.5, 0.7, 0.8]):
            mlflow.log_metric("accuracy", value, step=step)
        mlflow.log_metric("f1", 0.6)
        info = mlflow.sklearn.log_model(
            classifier, name="model", pip_requirements=["scikit-learn"], serialization_format="cloudpickle"
        )
    run_id = run.info.run_id
    accuracy = mlflow_client.get_metric_history(run_id, "accuracy")
    assert [(point.step, point.value) for point in accuracy] == [(0, 0.5), (1, 0.7), (2, 0.8)]
    assert [(point.step, point.value) for point in mlflow_client.get_metric_history(run_id, "f1")] == [(0, 0.6)]
    model_metrics = mlflow_client.get_logged_model(info.model_id).metrics
    assert sorted((m.key, m.step, m.value, m.run_id) for m in model_metrics) == [
        ("accuracy", 0, 0.5, run_id),
        ("f1", 0, 0.6, run_id),
    ]


def test_logged_model_metrics_and_errors(mlflow_client, experiment_id):
    model = mlflow_client.create_logged_model(experiment_id, name="m", params={"depth": "3"})
    with mlflow.start_run(experiment_id=experiment_id):
        mlflow.log_metric("auc", 0.91, model_id=model.model_id)
    got = mlflow_client.get_logged_model(model.model_id)
    assert got.params == {"depth": "3"}
    assert [(m.key, m.value) for m in got.metrics] == [("auc", 0.91)]
    found = mlflow_client.search_logged_models([experiment_id], filter_string="metrics.auc > 0.9")
    assert [m.model_id for m in found] == [model.model_id]
    with pytest.raises(MlflowException) as exc:
        mlflow_client.get_logged_model("m-" + "0" * 32)
    assert exc.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_server_info(live_server):
    info = requests.get(f"{live_server.url}/api/3.0/mlflow/server-info", timeout=10).json()
    assert info["store_type"] == "SqlStore" and info["multipart_uploads_enabled"] is False
