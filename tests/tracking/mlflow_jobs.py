"""Work the concurrency tests run in separate processes: each process imports this module (not the test
module and its fixtures) and runs the unchanged mlflow client, the way a training job does."""

from __future__ import annotations

import os
import time

POINTS_PER_JOB = 50


def join_sweep(barrier, results, tracking_uri: str, token: str, experiment: str, shared_run_id: str, index: int):
    """Start with the others, `set_experiment` on a name nobody has created, then log into one shared run:
    a param every job logs with the same value, and points at steps of its own."""
    os.environ.update({"MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_TRACKING_TOKEN": token})
    import mlflow
    from mlflow.entities import Metric, Param

    try:
        mlflow.set_tracking_uri(tracking_uri)
        barrier.wait(timeout=60)
        experiment_id = mlflow.set_experiment(experiment).experiment_id
        client = mlflow.MlflowClient(tracking_uri)
        now = int(time.time() * 1000)
        first_step = index * POINTS_PER_JOB
        points = [Metric("loss", 1 / (1 + step), now, first_step + step) for step in range(POINTS_PER_JOB)]
        client.log_batch(shared_run_id, metrics=points, params=[Param("optimizer", "adam")])
        client.log_param(shared_run_id, "optimizer", "adam")
        results.put({"job": index, "experiment_id": experiment_id})
    except BaseException as exc:
        results.put({"job": index, "error": f"{type(exc).__name__}: {exc}"})
