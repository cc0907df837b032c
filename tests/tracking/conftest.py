"""The real mlflow client pointed at the live Tessera server, one tenant per test."""

from __future__ import annotations

import uuid

import mlflow
import pytest
from mlflow import MlflowClient


@pytest.fixture
def mlflow_client(live_server, live_tenant, monkeypatch) -> MlflowClient:
    """MLFLOW_TRACKING_URI/TOKEN as a data scientist would set them; the fluent API uses them too."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", live_server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", live_tenant.api_key)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    mlflow.set_tracking_uri(live_server.url)
    yield MlflowClient(live_server.url)
    while mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture
def experiment_id(mlflow_client) -> str:
    return mlflow_client.create_experiment(f"exp-{uuid.uuid4().hex[:8]}")
