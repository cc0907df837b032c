"""Deployer fixtures: a real sklearn model saved with the real mlflow client, and one shared model server.

Starting a model server (importing mlflow, loading the model) is the slow part, so the server is shared by
the whole session and every test that needs its own process starts exactly one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow.sklearn
import pandas as pd
import pytest
from mlflow.models import infer_signature
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from services.deployer.domain.process_manager import ModelServerSpec, ModelServerState, ProcessManager


@dataclass(frozen=True)
class SavedModel:
    path: Path
    features: pd.DataFrame


@dataclass(frozen=True)
class RunningServer:
    spec: ModelServerSpec
    state: ModelServerState


@pytest.fixture(scope="session")
def iris_model(tmp_path_factory: pytest.TempPathFactory) -> SavedModel:
    features, target = load_iris(return_X_y=True, as_frame=True)
    estimator = LogisticRegression(max_iter=500).fit(features, target)
    path = tmp_path_factory.mktemp("models") / "iris"
    mlflow.sklearn.save_model(
        estimator,
        str(path),
        signature=infer_signature(features, estimator.predict(features)),
        # Explicit requirements skip MLflow's inference, which loads the model in a subprocess (seconds).
        pip_requirements=["scikit-learn"],
    )
    return SavedModel(path=path, features=features)


@pytest.fixture(scope="session")
def process_manager(tmp_path_factory: pytest.TempPathFactory) -> ProcessManager:
    return ProcessManager(tmp_path_factory.mktemp("model-server-logs"), ready_timeout_s=60.0, stop_grace_s=5.0)


@pytest.fixture(scope="session")
def iris_server(process_manager: ProcessManager, iris_model: SavedModel) -> Iterator[RunningServer]:
    spec = ModelServerSpec(model_uri=str(iris_model.path), name="iris", version="3")
    state = process_manager.start(spec)
    yield RunningServer(spec, state)
    process_manager.stop(state)


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user and system) a process has used: a fairer measure than wall time on a busy machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
