"""search_runs through the mlflow client: every operator, OR and parentheses, ordering, pagination,
view types and datasets."""

from __future__ import annotations

import time

import mlflow
import pandas as pd
import pytest
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException


@pytest.fixture(scope="module")
def experiment_id(module_client) -> str:
    return module_client.create_experiment(f"search-{time.time_ns()}")


@pytest.fixture(scope="module")
def runs(module_client, experiment_id) -> dict[str, str]:
    """Six runs: r0..r5 with acc = i/10, lr = 0.0i, tag group a/b, model tag only on even runs, r5
    FAILED. Shared by the module's read-only tests."""
    mlflow_client = module_client
    ids = {}
    now = int(time.time() * 1000)
    for i in range(6):
        run = mlflow_client.create_run(experiment_id, run_name=f"r{i}", start_time=now + i)
        tags = [RunTag("group", "a" if i < 3 else "b")] + ([RunTag("model", f"Net-{i}")] if i % 2 == 0 else [])
        mlflow_client.log_batch(
            run.info.run_id,
            metrics=[Metric("acc", i / 10, now, 1), Metric("loss", 1 - i / 10, now, 1)],
            params=[Param("lr", f"0.0{i}")],
            tags=tags,
        )
        ids[f"r{i}"] = run.info.run_id
    mlflow_client.set_terminated(ids["r5"], status="FAILED")
    return ids


def _names(mlflow_client, experiment_id, filter_string="", **kwargs) -> list[str]:
    found = mlflow_client.search_runs([experiment_id], filter_string, **kwargs)
    return [r.info.run_name for r in found]


@pytest.mark.parametrize(
    ("filter_string", "expected"),
    [
        ("metrics.acc = 0.2", ["r2"]),
        ("metrics.acc != 0.2", ["r5", "r4", "r3", "r1", "r0"]),
        ("metrics.acc > 0.3", ["r5", "r4"]),
        ("metrics.acc >= 0.3", ["r5", "r4", "r3"]),
        ("metrics.acc < 0.1", ["r0"]),
        ("metrics.acc <= 0.1", ["r1", "r0"]),
        ("params.lr = '0.03'", ["r3"]),
        ("params.lr != '0.03'", ["r5", "r4", "r2", "r1", "r0"]),
        ("params.lr LIKE '0.0%'", ["r5", "r4", "r3", "r2", "r1", "r0"]),
        ("tags.model ILIKE 'net-%'", ["r4", "r2", "r0"]),
        ("tags.model LIKE 'net-%'", []),
        ("tags.group IN ('b')", ["r5", "r4", "r3"]),
        ("tags.group NOT IN ('b')", ["r2", "r1", "r0"]),
        ("tags.model IS NULL", ["r5", "r3", "r1"]),
        ("attributes.run_name = 'r1'", ["r1"]),
        ("run_name LIKE 'r%' AND metrics.acc > 0.35", ["r5", "r4"]),
        ("attributes.status = 'FAILED'", ["r5"]),
        ("status != 'FAILED' AND metrics.acc > 0.25", ["r4", "r3"]),
        ("tags.mlflow.runName = 'r4'", ["r4"]),
        ("metrics.acc > 0.4 OR params.lr = '0.00'", ["r5", "r0"]),
        ("(tags.group = 'a' OR metrics.acc >= 0.4) AND tags.model IS NOT NULL", ["r4", "r2", "r0"]),
        ("metrics.missing > 0", []),
    ],
)
def test_filter_operators(mlflow_client, experiment_id, runs, filter_string, expected):
    assert _names(mlflow_client, experiment_id, filter_string) == expected


def test_attribute_filters_on_ids_and_times(mlflow_client, experiment_id, runs):
    assert _names(mlflow_client, experiment_id, f"attributes.run_id = '{runs['r3']}'") == ["r3"]
    in_list = ", ".join(f"'{runs[n]}'" for n in ("r1", "r4"))
    assert _names(mlflow_client, experiment_id, f"attributes.run_id IN ({in_list})") == ["r4", "r1"]
    start = mlflow_client.get_run(runs["r2"]).info.start_time
    assert _names(mlflow_client, experiment_id, f"attributes.start_time <= {start}") == ["r2", "r1", "r0"]


def test_order_by_several_keys_and_pagination(mlflow_client, experiment_id, runs):
    order = ["tags.group DESC", "metrics.acc ASC"]
    assert _names(mlflow_client, experiment_id, order_by=order) == ["r3", "r4", "r5", "r0", "r1", "r2"]
    assert _names(mlflow_client, experiment_id, order_by=["params.lr DESC"]) == ["r5", "r4", "r3", "r2", "r1", "r0"]
    assert _names(mlflow_client, experiment_id, order_by=["attributes.run_name"])[0] == "r0"

    seen = []
    page_token = None
    while True:
        page = mlflow_client.search_runs([experiment_id], "", max_results=4, order_by=order, page_token=page_token)
        seen += [r.info.run_name for r in page]
        page_token = page.token
        if not page_token:
            break
    assert seen == ["r3", "r4", "r5", "r0", "r1", "r2"]


def test_run_view_type(mlflow_client):
    experiment_id = mlflow_client.create_experiment(f"views-{time.time_ns()}")
    kept, deleted = (mlflow_client.create_run(experiment_id).info.run_id for _ in range(2))
    mlflow_client.delete_run(deleted)
    assert [r.info.run_id for r in mlflow_client.search_runs([experiment_id], "")] == [kept]
    found = mlflow_client.search_runs([experiment_id], "", run_view_type=ViewType.DELETED_ONLY)
    assert [r.info.run_id for r in found] == [deleted]
    assert len(mlflow_client.search_runs([experiment_id], "", run_view_type=ViewType.ALL)) == 2


def test_fluent_search_runs_dataframe(mlflow_client, experiment_id, runs):
    frame = mlflow.search_runs([experiment_id], "metrics.acc > 0.3", order_by=["metrics.acc DESC"])
    assert list(frame["tags.mlflow.runName"]) == ["r5", "r4"]
    assert list(frame["params.lr"]) == ["0.05", "0.04"]


@pytest.mark.parametrize(
    "bad_filter",
    [
        "metrics.acc >",
        "metrics.acc = 'x'",
        "params.lr > '1'",
        "params.lr = 1",
        "foo.bar = 1",
        "attributes.nope = 'x'",
        "(metrics.acc > 1",
        "metrics.acc > 1 AND",
        "tags.x LIKE 'y",
    ],
)
def test_invalid_filters(mlflow_client, experiment_id, bad_filter):
    with pytest.raises(MlflowException) as exc:
        mlflow_client.search_runs([experiment_id], bad_filter)
    assert exc.value.error_code == "INVALID_PARAMETER_VALUE"


def test_invalid_order_by_and_page_token(mlflow_client, experiment_id):
    for kwargs in ({"order_by": ["metrics.acc SIDEWAYS"]}, {"order_by": ["nope.x"]}, {"page_token": "garbage"}):
        with pytest.raises(MlflowException) as exc:
            mlflow_client.search_runs([experiment_id], "", **kwargs)
        assert exc.value.error_code == "INVALID_PARAMETER_VALUE"


def test_datasets_log_input_and_search(mlflow_client):
    experiment_id = mlflow_client.create_experiment(f"datasets-{time.time_ns()}")
    frame = pd.DataFrame({"x": [1, 2, 3], "y": [0, 1, 0]})
    dataset = mlflow.data.from_pandas(frame, name="train-set", targets="y")
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_input(dataset, context="training")
    with mlflow.start_run(experiment_id=experiment_id):
        pass
    got = mlflow_client.get_run(run.info.run_id)
    assert len(got.inputs.dataset_inputs) == 1
    dataset_input = got.inputs.dataset_inputs[0]
    assert dataset_input.dataset.name == "train-set"
    assert dataset_input.dataset.digest == dataset.digest
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "training"
    for filter_string in (
        "datasets.name = 'train-set'",
        "datasets.context = 'training'",
        f"datasets.digest IN ('{dataset.digest}')",
    ):
        found = mlflow_client.search_runs([experiment_id], filter_string)
        assert [r.info.run_id for r in found] == [run.info.run_id]
