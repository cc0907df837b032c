"""Demo experiments for `tessera seed`: one per seeded project, a few finished runs with params, metric
curves and tags, so the web UI has something to show. Idempotent: an experiment already there is left as is.
"""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.tracking.domain import experiments, metrics, runs
from shared.core.auth import Access, Principal
from shared.db.models import Experiment, Organization, Project, User

# (project slug, experiment name, [(run name, learning rate, depth)])
EXPERIMENTS = (
    ("fraud-detection", "fraud-gbm-tuning", [("gbm-baseline", 0.1, 4), ("gbm-deeper", 0.05, 6), ("gbm-wide", 0.2, 3)]),
    ("default", "churn-training", [("logreg-l2", 0.01, 1), ("forest-200", 0.1, 8)]),
)
STEPS = 10


def seed_experiments(session: Session, *, org_slug: str, owner_email: str) -> list[str]:
    """The experiments it created, as `project/experiment`."""
    owner = session.scalar(select(User).where(User.email == owner_email))
    org = session.scalar(select(Organization).where(Organization.slug == org_slug))
    if owner is None or org is None:
        return []
    created = []
    now_ms = int(time.time() * 1000)
    for project_slug, name, trials in EXPERIMENTS:
        project = session.scalar(select(Project).where(Project.organization_id == org.id, Project.slug == project_slug))
        if project is None or session.scalar(
            select(Experiment.id).where(Experiment.project_id == project.id, Experiment.name == name)
        ):
            continue
        access = Access(session, Principal(user_id=owner.id, email=owner.email), project_hint=str(project.id))
        experiment = experiments.create_experiment(session, access, name, tags=[("seeded", "true")])
        for index, (run_name, learning_rate, depth) in enumerate(trials):
            run = runs.create_run(
                session, access, experiment_id=experiment.id.hex, run_name=run_name, start_time=now_ms,
                tags=[("model_family", run_name.split("-")[0])],
            ).run
            points = [
                {"key": key, "value": value, "timestamp": now_ms + step * 1000, "step": step}
                for step in range(STEPS)
                for key, value in (
                    ("accuracy", 0.70 + 0.02 * step - 0.01 * index),
                    ("loss", 0.9 - 0.06 * step + 0.03 * index),
                )
            ]
            params = [{"key": "learning_rate", "value": str(learning_rate)}, {"key": "max_depth", "value": str(depth)}]
            metrics.log_batch(session, access, run.id.hex, points, params, [])
            runs.update_run(session, access, run.id.hex, status="FINISHED", end_time=now_ms + STEPS * 1000)
        created.append(f"experiment {project_slug}/{name}")
    return created
