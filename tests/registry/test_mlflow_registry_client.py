"""The unchanged mlflow client against the live server: register models from runs, versions, stages,
aliases, tags, search, error codes, and loading `models:/name@alias` / `models:/name/Stage` to predict."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from tests import factories
from tests.conftest import point_mlflow_at


@pytest.fixture(scope="module")
def module_tenant(db, settings) -> factories.Tenant:
    with db.session_scope() as session:
        return factories.make_tenant(session, jwt_secret=settings.jwt_secret)


@pytest.fixture(scope="module")
def mlflow_client(live_server, module_tenant) -> Iterator[MlflowClient]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        point_mlflow_at(monkeypatch, live_server.url, module_tenant.api_key)
        yield MlflowClient(live_server.url, registry_uri=live_server.url)
        while mlflow.active_run() is not None:
            mlflow.end_run()


@pytest.fixture
def run_id(mlflow_client) -> str:
    experiment_id = mlflow_client.create_experiment(f"exp-{uuid.uuid4().hex[:8]}")
    run = mlflow_client.create_run(experiment_id)
    mlflow_client.log_metric(run.info.run_id, "auc", 0.9)
    return run.info.run_id


def _name(prefix: str = "model") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _code(exc: pytest.ExceptionInfo) -> str:
    return exc.value.error_code


def test_register_from_run_then_load_by_alias_and_stage(mlflow_client):
    from sklearn.linear_model import LinearRegression

    features = np.array([[1.0], [2.0], [3.0], [4.0]])
    name = _name("regressor")
    mlflow.set_experiment(_name("exp"))
    with mlflow.start_run() as run:
        mlflow.log_metric("rmse", 0.01)
        # Requirements given (inferring them imports the model in a subprocess) and cloudpickle rather
        # than skops (whose import alone takes seconds): what is tested here is the registry, not the flavor.
        fast = {"pip_requirements": ["scikit-learn"], "serialization_format": "cloudpickle"}
        first = mlflow.sklearn.log_model(
            LinearRegression().fit(features, 2 * features[:, 0]),
            name="model",
            signature=infer_signature(features, 2 * features[:, 0]),
            **fast,
        )
        second = mlflow.sklearn.log_model(LinearRegression().fit(features, 3 * features[:, 0]), name="x3", **fast)

    v1 = mlflow.register_model(f"runs:/{run.info.run_id}/model", name)
    assert (v1.name, v1.version, v1.current_stage) == (name, "1", "None")
    assert v1.run_id == run.info.run_id
    v2 = mlflow.register_model(second.model_uri, name)
    assert v2.version == "2" and v2.source == second.model_uri

    mlflow_client.transition_model_version_stage(name, "1", "Production")
    mlflow_client.set_registered_model_alias(name, "champion", "2")
    assert mlflow_client.get_model_version_by_alias(name, "champion").version == "2"
    location = mlflow_client.get_logged_model(first.model_id).artifact_location
    assert mlflow_client.get_model_version_download_uri(name, "1") == location

    by_stage = mlflow.pyfunc.load_model(f"models:/{name}/Production")
    assert by_stage.predict(np.array([[5.0]])) == pytest.approx([10.0])
    by_alias = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    assert by_alias.predict(np.array([[5.0]])) == pytest.approx([15.0])
    assert by_stage.metadata.get_input_schema() is not None


def test_registered_model_calls(mlflow_client):
    name = _name()
    created = mlflow_client.create_registered_model(name, tags={"team": "risk"}, description="first")
    assert (created.name, created.tags, created.description) == (name, {"team": "risk"}, "first")
    with pytest.raises(MlflowException) as exc:
        mlflow_client.create_registered_model(name)
    assert _code(exc) == "RESOURCE_ALREADY_EXISTS"

    mlflow_client.update_registered_model(name, description="second")
    mlflow_client.set_registered_model_tag(name, "tier", "gold")
    mlflow_client.delete_registered_model_tag(name, "team")
    fetched = mlflow_client.get_registered_model(name)
    assert (fetched.description, fetched.tags) == ("second", {"tier": "gold"})

    mlflow_client.rename_registered_model(name, name + "-new")
    assert mlflow_client.get_registered_model(name + "-new").tags == {"tier": "gold"}
    with pytest.raises(MlflowException) as exc:
        mlflow_client.get_registered_model(name)
    assert _code(exc) == "RESOURCE_DOES_NOT_EXIST"

    mlflow_client.delete_registered_model(name + "-new")
    with pytest.raises(MlflowException) as exc:
        mlflow_client.get_registered_model(name + "-new")
    assert _code(exc) == "RESOURCE_DOES_NOT_EXIST"
    # A deleted model's name can be registered again.
    assert mlflow_client.create_registered_model(name + "-new").name == name + "-new"


def test_search_registered_models(mlflow_client):
    prefix = _name("search")
    for i in range(5):
        mlflow_client.create_registered_model(f"{prefix}-{i}", tags={"parity": "even" if i % 2 == 0 else "odd"})
    page = mlflow_client.search_registered_models(
        filter_string=f"name LIKE '{prefix}-%'", max_results=2, order_by=["name DESC"]
    )
    assert [m.name for m in page] == [f"{prefix}-4", f"{prefix}-3"] and page.token
    rest = mlflow_client.search_registered_models(
        filter_string=f"name LIKE '{prefix}-%'", max_results=10, order_by=["name DESC"], page_token=page.token
    )
    assert [m.name for m in rest] == [f"{prefix}-2", f"{prefix}-1", f"{prefix}-0"] and not rest.token
    even = mlflow_client.search_registered_models(filter_string=f"name LIKE '{prefix}%' AND tags.parity = 'even'")
    assert sorted(m.name for m in even) == [f"{prefix}-0", f"{prefix}-2", f"{prefix}-4"]
    listed = mlflow_client.search_registered_models(filter_string=f"name IN ('{prefix}-1', '{prefix}-3')")
    assert [m.name for m in listed] == [f"{prefix}-1", f"{prefix}-3"]
    with pytest.raises(MlflowException) as exc:
        mlflow_client.search_registered_models(filter_string="owner = 'me'")
    assert _code(exc) == "INVALID_PARAMETER_VALUE"


def test_versions_stages_aliases_and_tags(mlflow_client, run_id):
    name = _name()
    mlflow_client.create_registered_model(name)
    source = f"runs:/{run_id}/model"
    made = [
        mlflow_client.create_model_version(name, source, run_id=run_id, tags={"n": str(i)}, description=f"v{i}")
        for i in range(1, 4)
    ]
    assert [v.version for v in made] == ["1", "2", "3"]
    assert made[0].tags == {"n": "1"} and made[0].description == "v1" and made[0].status == "READY"

    mlflow_client.transition_model_version_stage(name, "1", "production")
    mlflow_client.transition_model_version_stage(name, "2", "Staging")
    moved = mlflow_client.transition_model_version_stage(name, "3", "Production", archive_existing_versions=True)
    assert moved.current_stage == "Production"
    assert mlflow_client.get_model_version(name, "1").current_stage == "Archived"
    latest = mlflow_client.get_latest_versions(name, stages=["Production", "Staging"])
    assert sorted((v.current_stage, v.version) for v in latest) == [("Production", "3"), ("Staging", "2")]
    assert {v.current_stage: v.version for v in mlflow_client.get_registered_model(name).latest_versions} == {
        "Archived": "1",
        "Staging": "2",
        "Production": "3",
    }
    with pytest.raises(MlflowException) as exc:
        mlflow_client.transition_model_version_stage(name, "1", "Shipped")
    assert _code(exc) == "INVALID_PARAMETER_VALUE"

    mlflow_client.set_registered_model_alias(name, "champion", "2")
    mlflow_client.set_registered_model_alias(name, "champion", "3")
    mlflow_client.set_registered_model_alias(name, "challenger", "2")
    assert mlflow_client.get_model_version_by_alias(name, "champion").version == "3"
    assert mlflow_client.get_model_version(name, "3").aliases == ["champion"]
    assert mlflow_client.get_registered_model(name).aliases == {"challenger": "2", "champion": "3"}
    mlflow_client.delete_registered_model_alias(name, "challenger")
    with pytest.raises(MlflowException) as exc:
        mlflow_client.get_model_version_by_alias(name, "challenger")
    assert _code(exc) == "INVALID_PARAMETER_VALUE"
    assert mlflow_client.get_model_version_by_alias(name, "latest").version == "3"

    mlflow_client.set_model_version_tag(name, "2", "reviewed", "yes")
    mlflow_client.delete_model_version_tag(name, "2", "n")
    mlflow_client.update_model_version(name, "2", description="reviewed")
    second = mlflow_client.get_model_version(name, "2")
    assert (second.tags, second.description) == ({"reviewed": "yes"}, "reviewed")

    mlflow_client.delete_model_version(name, "1")
    with pytest.raises(MlflowException) as exc:
        mlflow_client.get_model_version(name, "1")
    assert _code(exc) == "RESOURCE_DOES_NOT_EXIST"
    # Numbers are never reused, not even a deleted version's.
    assert mlflow_client.create_model_version(name, source, run_id=run_id).version == "4"


def test_search_model_versions(mlflow_client, run_id):
    names = [_name("mv"), _name("mv")]
    for name in names:
        mlflow_client.create_registered_model(name)
        for i in range(3):
            mlflow_client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id, tags={"i": str(i)})
    found = mlflow_client.search_model_versions(f"name = '{names[0]}'", order_by=["version_number ASC"])
    assert [v.version for v in found] == ["1", "2", "3"]
    by_run = mlflow_client.search_model_versions(f"run_id = '{run_id}'")
    assert sorted((v.name, v.version) for v in by_run) == sorted((n, str(i)) for n in names for i in range(1, 4))
    tagged = mlflow_client.search_model_versions(f"name = '{names[1]}' AND tags.i = '2' AND version_number > 1")
    assert [(v.name, v.version) for v in tagged] == [(names[1], "3")]
    page = mlflow_client.search_model_versions(f"run_id = '{run_id}'", max_results=4)
    assert len(page) == 4 and page.token
    rest = mlflow_client.search_model_versions(f"run_id = '{run_id}'", max_results=4, page_token=page.token)
    assert len(rest) == 2 and not rest.token
    with pytest.raises(MlflowException) as exc:
        mlflow_client.search_model_versions("flavor = 'sklearn'")
    assert _code(exc) == "INVALID_PARAMETER_VALUE"


def test_create_version_errors(mlflow_client, run_id):
    name = _name()
    with pytest.raises(MlflowException) as exc:
        mlflow_client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
    assert _code(exc) == "RESOURCE_DOES_NOT_EXIST"
    mlflow_client.create_registered_model(name)
    for source in ("s3://someone-elses-bucket/model", "/etc/passwd", f"runs:/{uuid.uuid4().hex}/model"):
        with pytest.raises(MlflowException) as exc:
            mlflow_client.create_model_version(name, source)
        assert _code(exc) in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"), source
    with pytest.raises(MlflowException) as exc:
        mlflow_client.get_model_version(name, "not-a-number")
    assert _code(exc) == "INVALID_PARAMETER_VALUE"
