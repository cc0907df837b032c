"""Demo experiments for `tessera seed`: one per seeded project, a few finished runs with params, metric
curves and tags, so the web UI has something to show. Every run trains a small scikit-learn model on
synthetic data and logs it in MLflow's model format under its artifacts (`runs:/<run>/model`), so the
registry can register those runs' models as versions a model server really loads.

Idempotent: an experiment already there is left as is (its runs are still reported, for the registry).
"""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.tracking.domain import experiments, metrics, runs
from shared.core.artifact_locations import uri_key
from shared.core.artifacts import ArtifactStore
from shared.core.auth import Access, Principal
from shared.db.models import Experiment, ExperimentRun, Organization, Project, User

# The artifact path each run logs its model under; `runs:/<run>/model` names it.
MODEL_PATH = "model"
# (project slug, experiment name, what the models predict, [(run name, learning rate, depth)]);
# a run name's first part picks the estimator (gbm, logreg, forest).
EXPERIMENTS = (
    (
        "fraud-detection",
        "fraud-gbm-tuning",
        "fraud",
        [("gbm-baseline", 0.1, 4), ("gbm-deeper", 0.05, 6), ("gbm-wide", 0.2, 3)],
    ),
    ("default", "churn-training", "churn", [("logreg-l2", 0.01, 1), ("forest-200", 0.1, 8)]),
)
# The columns each kind of model takes (what a request to its deployment sends).
FEATURES = {
    "fraud": ("amount", "hour", "merchant_risk"),
    "churn": ("tenure_months", "monthly_spend", "support_tickets"),
}
STEPS = 10
ROWS = 400


@dataclass
class SeededExperiments:
    created: list[str] = field(default_factory=list)
    # Run name -> run id, for every seeded run (created now or before): the registry registers their models.
    run_ids: dict[str, uuid.UUID] = field(default_factory=dict)


def seed_experiments(session: Session, store: ArtifactStore, *, org_slug: str, owner_email: str) -> SeededExperiments:
    seeded = SeededExperiments()
    owner = session.scalar(select(User).where(User.email == owner_email))
    org = session.scalar(select(Organization).where(Organization.slug == org_slug))
    if owner is None or org is None:
        return seeded
    now_ms = int(time.time() * 1000)
    for project_slug, name, task, trials in EXPERIMENTS:
        project = session.scalar(select(Project).where(Project.organization_id == org.id, Project.slug == project_slug))
        if project is None:
            continue
        experiment_id = session.scalar(
            select(Experiment.id).where(Experiment.project_id == project.id, Experiment.name == name)
        )
        if experiment_id is None:
            access = Access(session, Principal(user_id=owner.id, email=owner.email), project_hint=str(project.id))
            experiment = experiments.create_experiment(session, access, name, tags=[("seeded", "true")])
            for index, (run_name, learning_rate, depth) in enumerate(trials):
                _train_run(
                    session, access, store, project, experiment, task, index, run_name, learning_rate, depth, now_ms
                )
            experiment_id = experiment.id
            seeded.created.append(f"experiment {project_slug}/{name} ({len(trials)} runs, each with a model)")
        named = session.execute(
            select(ExperimentRun.name, ExperimentRun.id).where(ExperimentRun.experiment_id == experiment_id)
        ).tuples()
        seeded.run_ids.update((run_name, run_id) for run_name, run_id in named if run_name)
    return seeded


def _train_run(
    session: Session,
    access: Access,
    store: ArtifactStore,
    project: Project,
    experiment: Experiment,
    task: str,
    index: int,
    run_name: str,
    learning_rate: float,
    depth: int,
    now_ms: int,
) -> None:
    family = run_name.split("-")[0]
    run = runs.create_run(
        session,
        access,
        experiment_id=experiment.id.hex,
        run_name=run_name,
        start_time=now_ms,
        tags=[("model_family", family)],
    ).run
    model_uri = f"{run.artifact_uri}/{MODEL_PATH}"
    test_accuracy = _log_model(store, project, model_uri, task, family, learning_rate, depth, seed=index)
    points = [
        {"key": key, "value": value, "timestamp": now_ms + step * 1000, "step": step}
        for step in range(STEPS)
        for key, value in (
            ("accuracy", 0.70 + 0.02 * step - 0.01 * index),
            ("loss", 0.9 - 0.06 * step + 0.03 * index),
        )
    ]
    points.append({"key": "test_accuracy", "value": test_accuracy, "timestamp": now_ms + STEPS * 1000, "step": 0})
    params = [{"key": "learning_rate", "value": str(learning_rate)}, {"key": "max_depth", "value": str(depth)}]
    metrics.log_batch(session, access, run.id.hex, points, params, [])
    runs.update_run(session, access, run.id.hex, status="FINISHED", end_time=now_ms + STEPS * 1000)


def _log_model(
    store: ArtifactStore,
    project: Project,
    model_uri: str,
    task: str,
    family: str,
    learning_rate: float,
    depth: int,
    *,
    seed: int,
) -> float:
    """Train a run's model and write it in MLflow's format at `model_uri` (in the run's artifacts); returns
    its accuracy on held-out rows."""
    # Imported here: they take seconds to import, and only seeding trains anything.
    import mlflow.sklearn
    from mlflow.models import infer_signature

    features, target = training_data(task, ROWS, seed=seed)
    train, test = slice(0, ROWS * 3 // 4), slice(ROWS * 3 // 4, ROWS)
    estimator = _estimator(family, learning_rate, depth).fit(features[train], target[train])
    key = uri_key(project, model_uri)
    with tempfile.TemporaryDirectory() as folder:
        saved = Path(folder) / MODEL_PATH
        # mlflow warns about pickled models on every save; this model is the one it has just trained.
        logging.getLogger("mlflow.sklearn").setLevel(logging.ERROR)
        mlflow.sklearn.save_model(
            estimator,
            str(saved),
            signature=infer_signature(features, estimator.predict(features)),
            # Explicit requirements skip MLflow's inference, which loads the model in a subprocess (seconds).
            pip_requirements=["scikit-learn"],
            serialization_format="cloudpickle",
        )
        for path in sorted(saved.rglob("*")):
            if path.is_file():
                store.write(f"{key}/{path.relative_to(saved).as_posix()}", [path.read_bytes()])
    return float(estimator.score(features[test], target[test]))


def training_data(task: str, rows: int, *, seed: int = 0) -> tuple[Any, Any]:
    """Synthetic rows for a seeded model (a pandas frame of FEATURES[task]) and their 0/1 labels."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    if task == "fraud":
        amount, hour, risk = rng.gamma(2.0, 60.0, rows), rng.integers(0, 24, rows).astype(float), rng.random(rows)
        score = amount / 200 + risk + (hour < 6) * 0.5 + rng.normal(0, 0.3, rows)
        columns = (amount, hour, risk)
    else:
        tenure, spend = rng.integers(1, 72, rows).astype(float), rng.normal(50, 15, rows)
        tickets = rng.poisson(1.5, rows)
        score = tickets / 3 - tenure / 36 + (spend < 40) * 0.5 + rng.normal(0, 0.3, rows)
        columns = (tenure, spend, tickets.astype(float))
    frame = pd.DataFrame(dict(zip(FEATURES[task], columns, strict=True)))
    return frame, (score > np.median(score)).astype(int)


def _estimator(family: str, learning_rate: float, depth: int) -> Any:
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    if family == "gbm":
        return GradientBoostingClassifier(learning_rate=learning_rate, max_depth=depth, n_estimators=20, random_state=0)
    if family == "forest":
        return RandomForestClassifier(n_estimators=20, max_depth=depth, random_state=0)
    return LogisticRegression(C=1 / learning_rate, max_iter=500)
