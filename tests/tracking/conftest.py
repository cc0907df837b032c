"""The real mlflow client pointed at the live Tessera server, configured as a data scientist would
(MLFLOW_TRACKING_URI + MLFLOW_TRACKING_TOKEN). One tenant per test module; tests isolate themselves
with their own experiments."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import mlflow
import pytest
from mlflow import MlflowClient

from tests import factories
from tests.conftest import point_mlflow_at


@pytest.fixture(scope="module")
def module_tenant(db, settings) -> factories.Tenant:
    with db.session_scope() as session:
        return factories.make_tenant(session, jwt_secret=settings.jwt_secret)


@pytest.fixture(scope="module")
def module_client(live_server, module_tenant) -> Iterator[MlflowClient]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        point_mlflow_at(monkeypatch, live_server.url, module_tenant.api_key, max_retries=None)
        yield MlflowClient(live_server.url)


@pytest.fixture
def mlflow_client(module_client) -> Iterator[MlflowClient]:
    yield module_client
    while mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture
def experiment_id(mlflow_client) -> str:
    return mlflow_client.create_experiment(f"exp-{uuid.uuid4().hex[:8]}")
