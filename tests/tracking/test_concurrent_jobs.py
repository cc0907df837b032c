"""Parallel training jobs (a sweep): real processes released together by a barrier, each with the unchanged
mlflow client, against a live server on PostgreSQL and on the embedded SQLite default. Every race on the
way answers as MLflow's server does, so every job succeeds and all see the same experiment and model."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from mlflow import MlflowClient

from shared.core.settings import Settings
from shared.db.migrate import upgrade
from shared.db.session import Database
from tests import factories
from tests.conftest import ROOT, serving
from tests.tracking import mlflow_jobs


@dataclass
class Target:
    url: str
    api_key: str

    def client(self, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", self.api_key)
        return MlflowClient(self.url, registry_uri=self.url)


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory) -> Iterator[Target]:
    """The platform on its embedded default database (a SQLite file), with one tenant."""
    folder = tmp_path_factory.mktemp("embedded")
    settings = Settings(database_url=f"sqlite:///{folder / 'tessera.db'}", data_dir=folder,
                        artifact_root=str(folder / "artifacts"))  # fmt: skip
    upgrade(settings.database_url)
    db = Database(settings.database_url)
    with db.session_scope() as session:
        tenant = factories.make_tenant(session, jwt_secret=settings.jwt_secret)
    db.dispose()
    with serving(settings) as server:
        yield Target(server.url, tenant.api_key)


@pytest.fixture(params=["postgresql", "sqlite"])
def target(request) -> Target:
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_server")
    server, tenant = request.getfixturevalue("live_server"), request.getfixturevalue("live_tenant")
    return Target(server.url, tenant.api_key)


@pytest.fixture(scope="module")
def processes() -> multiprocessing.context.BaseContext:
    context = multiprocessing.get_context("forkserver")
    # Imported once by the fork server; each job forks from it instead of importing mlflow again.
    context.set_forkserver_preload(["mlflow", "tests.tracking.mlflow_jobs"])
    return context


def test_eight_jobs_set_a_new_experiment_and_log_into_one_run(target, processes, monkeypatch):
    jobs = 8
    client = target.client(monkeypatch)
    shared_run = client.create_run(client.create_experiment(f"shared-{uuid.uuid4().hex[:8]}"))
    name = f"sweep-{uuid.uuid4().hex[:8]}"
    barrier, results = processes.Barrier(jobs), processes.Queue()
    workers = [
        processes.Process(
            target=mlflow_jobs.join_sweep,
            args=(barrier, results, target.url, target.api_key, name, shared_run.info.run_id, index),
        )
        for index in range(jobs)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)

    assert [outcome.get("error") for outcome in outcomes] == [None] * jobs, outcomes
    assert {outcome["experiment_id"] for outcome in outcomes} == {client.get_experiment_by_name(name).experiment_id}
    history = client.get_metric_history(shared_run.info.run_id, "loss")
    assert sorted(point.step for point in history) == list(range(jobs * mlflow_jobs.POINTS_PER_JOB))
    assert client.get_run(shared_run.info.run_id).data.params == {"optimizer": "adam"}


def test_four_jobs_log_models_into_one_new_registered_model(target, monkeypatch):
    """examples/sweep.py, as a user runs it: each trial's `log_model(..., registered_model_name=NEW)`."""
    name = f"sweep-{uuid.uuid4().hex[:8]}"
    # A user's shell: only the two variables the example documents (an inherited MLFLOW_REGISTRY_URI would win).
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    env |= {"MLFLOW_TRACKING_URI": target.url, "MLFLOW_TRACKING_TOKEN": target.api_key}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "sweep.py"), "--processes", "4", "--experiment", name],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr

    client = target.client(monkeypatch)
    versions = client.search_model_versions(f"name = '{name}'")
    assert sorted(int(version.version) for version in versions) == [1, 2, 3, 4]
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(run.info.run_id for run in runs) == sorted(version.run_id for version in versions)
    for run in runs:
        # The curve logged before log_model keeps its points (the client re-sends them with the model id).
        assert [point.step for point in client.get_metric_history(run.info.run_id, "accuracy")] == [0, 1, 2]
