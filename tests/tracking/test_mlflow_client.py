"""The unchanged mlflow client against the live server: experiments, runs, params, metrics, tags, batches
at MLflow's limits, metric history and the error codes the client turns into MlflowException."""

from __future__ import annotations

import json
import math
import time
import uuid

import mlflow
import pytest
import requests
from mlflow.entities import Metric, Param, RunStatus, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.protos.service_pb2 import LogBatch
from mlflow.tracking._tracking_service.utils import _get_store
from mlflow.utils.credentials import get_default_host_creds
from mlflow.utils.rest_utils import call_endpoint


def _code(exc: pytest.ExceptionInfo) -> str:
    return exc.value.error_code


def test_experiment_lifecycle(mlflow_client):
    name = f"exp-{uuid.uuid4().hex[:8]}"
    experiment_id = mlflow_client.create_experiment(name, tags={"team": "vision"})
    experiment = mlflow_client.get_experiment(experiment_id)
    assert experiment.name == name
    assert experiment.tags == {"team": "vision"}
    assert experiment.lifecycle_stage == "active"
    assert experiment.artifact_location == f"mlflow-artifacts:/{experiment_id}"
    assert mlflow_client.get_experiment_by_name(name).experiment_id == experiment_id

    mlflow_client.set_experiment_tag(experiment_id, "stage", "dev")
    mlflow_client.delete_experiment_tag(experiment_id, "team")
    assert mlflow_client.get_experiment(experiment_id).tags == {"stage": "dev"}

    mlflow_client.rename_experiment(experiment_id, name + "-renamed")
    assert mlflow_client.get_experiment(experiment_id).name == name + "-renamed"

    run = mlflow_client.create_run(experiment_id)
    mlflow_client.delete_experiment(experiment_id)
    assert mlflow_client.get_experiment(experiment_id).lifecycle_stage == "deleted"
    assert mlflow_client.get_run(run.info.run_id).info.lifecycle_stage == "deleted"
    mlflow_client.restore_experiment(experiment_id)
    assert mlflow_client.get_experiment(experiment_id).lifecycle_stage == "active"
    assert mlflow_client.get_run(run.info.run_id).info.lifecycle_stage == "active"


def test_experiment_errors(mlflow_client, experiment_id):
    name = mlflow_client.get_experiment(experiment_id).name
    with pytest.raises(MlflowException) as exc:
        mlflow_client.create_experiment(name)
    assert _code(exc) == "RESOURCE_ALREADY_EXISTS"
    with pytest.raises(MlflowException) as exc:
        mlflow_client.get_experiment(uuid.uuid4().hex)
    assert _code(exc) == "RESOURCE_DOES_NOT_EXIST"
    assert mlflow_client.get_experiment_by_name("no-such-experiment") is None
    with pytest.raises(MlflowException) as exc:
        mlflow_client.create_experiment("")
    assert _code(exc) == "INVALID_PARAMETER_VALUE"


def test_search_experiments(mlflow_client):
    prefix = f"se-{uuid.uuid4().hex[:6]}"
    ids = [mlflow_client.create_experiment(f"{prefix}-{i}", tags={"i": str(i)}) for i in range(5)]
    mlflow_client.delete_experiment(ids[0])
    found = mlflow_client.search_experiments(filter_string=f"name LIKE '{prefix}-%'", order_by=["name DESC"])
    assert [e.experiment_id for e in found] == ids[:0:-1]
    deleted = mlflow_client.search_experiments(view_type=ViewType.DELETED_ONLY, filter_string=f"name LIKE '{prefix}%'")
    assert [e.experiment_id for e in deleted] == [ids[0]]
    page = mlflow_client.search_experiments(max_results=2, filter_string=f"name LIKE '{prefix}%'", order_by=["name"])
    assert len(page) == 2 and page.token
    rest = mlflow_client.search_experiments(
        max_results=10, filter_string=f"name LIKE '{prefix}%'", order_by=["name"], page_token=page.token
    )
    assert [e.name for e in [*page, *rest]] == [f"{prefix}-{i}" for i in range(1, 5)]
    assert [e.experiment_id for e in mlflow_client.search_experiments(filter_string="tags.i = '3'")] == [ids[3]]


def test_default_experiment_is_created_lazily(mlflow_client):
    with mlflow.start_run() as run:
        mlflow.log_metric("m", 1.0)
    experiment = mlflow_client.get_experiment(run.info.experiment_id)
    assert experiment.name == "Default"
    assert mlflow_client.get_experiment("0").experiment_id == experiment.experiment_id


def test_run_lifecycle_params_metrics_tags(mlflow_client, experiment_id):
    mlflow.set_experiment(experiment_id=experiment_id)
    with mlflow.start_run(run_name="baseline") as active:
        mlflow.log_params({"lr": 0.01, "layers": 3})
        for step in range(5):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.set_tags({"team": "vision", "owner": "ana"})
        mlflow.delete_tag("owner")
        run_id = active.info.run_id
    run = mlflow_client.get_run(run_id)
    assert run.info.run_name == "baseline"
    assert run.info.status == "FINISHED"
    assert run.info.end_time >= run.info.start_time
    assert run.info.artifact_uri == f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts"
    assert run.data.params == {"lr": "0.01", "layers": "3"}
    assert run.data.metrics == {"loss": pytest.approx(0.2)}
    assert run.data.tags["team"] == "vision"
    assert "owner" not in run.data.tags
    assert run.data.tags["mlflow.runName"] == "baseline"

    history = mlflow_client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(s, pytest.approx(1.0 / (s + 1))) for s in range(5)]

    mlflow_client.update_run(run_id, status="KILLED", name="renamed")
    run = mlflow_client.get_run(run_id)
    assert (run.info.status, run.info.run_name, run.data.tags["mlflow.runName"]) == ("KILLED", "renamed", "renamed")

    mlflow_client.delete_run(run_id)
    assert mlflow_client.get_run(run_id).info.lifecycle_stage == "deleted"
    with pytest.raises(MlflowException) as exc:
        mlflow_client.log_metric(run_id, "x", 1.0)
    assert _code(exc) == "INVALID_PARAMETER_VALUE"
    mlflow_client.restore_run(run_id)
    assert mlflow_client.get_run(run_id).info.lifecycle_stage == "active"


def test_latest_metric_is_highest_step_then_latest_timestamp(mlflow_client, experiment_id):
    run_id = mlflow_client.create_run(experiment_id).info.run_id
    now = int(time.time() * 1000)
    mlflow_client.log_metric(run_id, "acc", 0.9, timestamp=now, step=10)
    mlflow_client.log_metric(run_id, "acc", 0.1, timestamp=now + 1000, step=2)  # later, but lower step
    mlflow_client.log_metric(run_id, "acc", 0.5, timestamp=now - 1000, step=10)  # same step, older
    assert mlflow_client.get_run(run_id).data.metrics["acc"] == 0.9
    mlflow_client.log_metric(run_id, "acc", 0.7, timestamp=now + 5, step=10)  # same step, newer
    assert mlflow_client.get_run(run_id).data.metrics["acc"] == 0.7


def test_nan_and_infinity_round_trip(mlflow_client, experiment_id):
    run_id = mlflow_client.create_run(experiment_id).info.run_id
    now = int(time.time() * 1000)
    values = [float("nan"), float("inf"), float("-inf"), 1.5]
    mlflow_client.log_batch(run_id, metrics=[Metric(f"m{i}", v, now, 0) for i, v in enumerate(values)])
    mlflow_client.log_metric(run_id, "single_nan", float("nan"), step=3)
    got = mlflow_client.get_run(run_id).data.metrics
    assert math.isnan(got["m0"]) and got["m1"] == math.inf and got["m2"] == -math.inf and got["m3"] == 1.5
    assert math.isnan(got["single_nan"])
    assert math.isnan(mlflow_client.get_metric_history(run_id, "m0")[0].value)
    assert mlflow_client.get_metric_history(run_id, "m2")[0].value == -math.inf


def test_log_batch_at_limits(mlflow_client, experiment_id):
    run_id = mlflow_client.create_run(experiment_id).info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric("loss", float(i), now, i) for i in range(800)]
    params = [Param(f"p{i}", "v" * 6000 if i == 0 else str(i)) for i in range(100)]
    tags = [RunTag(f"t{i}", "x" * 8000 if i == 0 else str(i)) for i in range(100)]
    mlflow_client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
    run = mlflow_client.get_run(run_id)
    assert len(run.data.params) == 100 and run.data.params["p0"] == "v" * 6000
    assert run.data.tags["t0"] == "x" * 8000
    assert run.data.metrics["loss"] == 799.0
    # The client splits larger batches itself (1000 metrics per request).
    mlflow_client.log_batch(run_id, metrics=[Metric("big", float(i), now, i) for i in range(2500)])
    assert len(mlflow_client.get_metric_history(run_id, "big")) == 2500


def _raw_log_batch(mlflow_client, run_id: str, **body) -> MlflowException:
    """log-batch bodies the client would refuse to build, sent through the client's own transport."""
    creds = get_default_host_creds(mlflow.get_tracking_uri())
    with pytest.raises(MlflowException) as exc:
        call_endpoint(
            creds, "/api/2.0/mlflow/runs/log-batch", "POST", json.dumps({"run_id": run_id, **body}), LogBatch.Response()
        )
    return exc.value


def test_rejected_batches_write_nothing(mlflow_client, experiment_id):
    run_id = mlflow_client.create_run(experiment_id).info.run_id
    now = int(time.time() * 1000)
    good = [{"key": "ok", "value": 1.0, "timestamp": now, "step": 0}]
    too_many = [{"key": "m", "value": 1.0, "timestamp": now, "step": i} for i in range(1001)]
    cases = [
        {"metrics": too_many},
        {"params": [{"key": f"p{i}", "value": "1"} for i in range(101)]},
        {"tags": [{"key": f"t{i}", "value": "1"} for i in range(101)]},
        {"metrics": good, "params": [{"key": "p", "value": "x" * 6001}]},
        {"metrics": good, "tags": [{"key": "t", "value": "x" * 8001}]},
        {"metrics": [*good, {"key": "../escape", "value": 1.0, "timestamp": now}]},
        {"metrics": [*good, {"key": "bad", "value": "not-a-number", "timestamp": now}]},
        {"metrics": good, "params": [{"key": "p", "value": "1"}, {"key": "p", "value": "2"}]},
    ]
    for body in cases:
        assert _raw_log_batch(mlflow_client, run_id, **body).error_code == "INVALID_PARAMETER_VALUE"
    run = mlflow_client.get_run(run_id)
    assert run.data.metrics == {} and run.data.params == {}
    assert mlflow_client.get_metric_history(run_id, "ok") == []


def test_param_overwrite_rules(mlflow_client, experiment_id):
    run_id = mlflow_client.create_run(experiment_id).info.run_id
    mlflow_client.log_param(run_id, "lr", "0.1")
    mlflow_client.log_param(run_id, "lr", "0.1")  # same value: accepted
    with pytest.raises(MlflowException) as exc:
        mlflow_client.log_param(run_id, "lr", "0.2")
    assert _code(exc) == "INVALID_PARAMETER_VALUE"
    now = int(time.time() * 1000)
    with pytest.raises(MlflowException):
        mlflow_client.log_batch(run_id, metrics=[Metric("m", 1.0, now, 0)], params=[Param("lr", "0.3")])
    assert mlflow_client.get_metric_history(run_id, "m") == []  # nothing of the rejected batch was written
    assert mlflow_client.get_run(run_id).data.params == {"lr": "0.1"}


def test_run_errors(mlflow_client, experiment_id):
    with pytest.raises(MlflowException) as exc:
        mlflow_client.get_run(uuid.uuid4().hex)
    assert _code(exc) == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as exc:
        mlflow_client.create_run(uuid.uuid4().hex)
    assert _code(exc) == "RESOURCE_DOES_NOT_EXIST"
    run_id = mlflow_client.create_run(experiment_id).info.run_id
    with pytest.raises(MlflowException) as exc:
        mlflow_client.log_metric(run_id, "bad name!", 1.0)
    assert _code(exc) == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException) as exc:
        mlflow_client.delete_tag(run_id, "missing")
    assert _code(exc) == "RESOURCE_DOES_NOT_EXIST"
    mlflow_client.set_terminated(run_id, status=RunStatus.to_string(RunStatus.FAILED))
    assert mlflow_client.get_run(run_id).info.status == "FAILED"


def test_metric_history_pages(mlflow_client, experiment_id):
    run_id = mlflow_client.create_run(experiment_id).info.run_id
    now = int(time.time() * 1000)
    mlflow_client.log_batch(run_id, metrics=[Metric("loss", float(i), now + i, i) for i in range(1000)])
    # The REST store exposes the paging that MlflowClient.get_metric_history loops over.
    store = _get_store()
    first = store.get_metric_history(run_id, "loss", max_results=300)
    assert [m.step for m in first] == list(range(300)) and first.token
    second = store.get_metric_history(run_id, "loss", max_results=800, page_token=first.token)
    assert [m.step for m in second] == list(range(300, 1000)) and second.token is None


def test_bulk_interval_history(mlflow_client, experiment_id, module_tenant):
    run_ids = [mlflow_client.create_run(experiment_id).info.run_id for _ in range(2)]
    now = int(time.time() * 1000)
    for run_id in run_ids:
        mlflow_client.log_batch(run_id, metrics=[Metric("loss", float(i), now, i) for i in range(100)])
    response = requests.get(
        f"{mlflow.get_tracking_uri()}/api/2.0/mlflow/metrics/get-history-bulk-interval",
        params={"run_ids": run_ids, "metric_key": "loss", "start_step": 10, "end_step": 50, "max_results": 5},
        headers={"Authorization": f"Bearer {module_tenant.api_key}"},
        timeout=10,
    )
    assert response.status_code == 200
    metrics = response.json()["metrics"]
    assert {m["run_id"] for m in metrics} == set(run_ids)
    assert [m["step"] for m in metrics if m["run_id"] == run_ids[0]] == [10, 20, 30, 40, 50]
