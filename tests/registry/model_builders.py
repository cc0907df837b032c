"""Builders for the registry's model tests: tracked runs (rows as the tracking service writes them, with an
MLmodel file in the artifact store) and callers with a given role."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import yaml
from sqlalchemy.orm import Session

from shared.core.artifacts import ArtifactStore
from shared.db.models import Experiment, ExperimentRun, Organization, Project, RunLatestMetric
from tests import factories

SIGNATURE = {
    "inputs": '[{"type": "double", "name": "x", "required": true}]',
    "outputs": '[{"type": "double", "required": true}]',
}


@dataclass
class TrackedRun:
    experiment: Experiment
    run: ExperimentRun

    @property
    def run_id(self) -> str:
        return self.run.id.hex


def make_run(
    session: Session,
    project_id: uuid.UUID,
    *,
    store: ArtifactStore | None = None,
    metrics: dict[str, float] | None = None,
    artifact_path: str = "model",
) -> TrackedRun:
    """A finished run laid out as the tracking service does, with an MLmodel file under `artifact_path`
    when a store is given."""
    experiment_id, run_id = uuid.uuid4(), uuid.uuid4()
    experiment = Experiment(
        id=experiment_id,
        project_id=project_id,
        name=factories.unique("exp"),
        artifact_location=f"mlflow-artifacts:/{experiment_id.hex}",
    )
    run = ExperimentRun(
        id=run_id,
        experiment_id=experiment_id,
        name="brave-bear-1",
        status="FINISHED",
        start_time=1_700_000_000_000,
        end_time=1_700_000_060_000,
        artifact_uri=f"mlflow-artifacts:/{experiment_id.hex}/{run_id.hex}/artifacts",
    )
    session.add_all([experiment, run])
    session.flush()
    for key, value in (metrics or {}).items():
        session.add(RunLatestMetric(run_id=run_id, key=key, value=value, step=3, timestamp=1_700_000_050_000))
    session.flush()
    if store is not None:
        project = session.get(Project, project_id)
        mlmodel = {"flavors": {"python_function": {"loader_module": "x"}}, "signature": SIGNATURE}
        key = f"{project.organization_id.hex}/{project_id.hex}/{experiment_id.hex}/{run_id.hex}/artifacts"
        store.write(f"{key}/{artifact_path}/MLmodel", [yaml.safe_dump(mlmodel).encode()])
    return TrackedRun(experiment, run)


def caller(session: Session, org_id: uuid.UUID, role: str, *, project_role: str | None = None) -> dict[str, str]:
    """Headers of a new user holding `role` in the organization (and optionally a project role in its
    default project)."""
    user = factories.make_user(session)
    org = session.get(Organization, org_id)
    factories.add_org_member(session, org, user, role)
    if project_role:
        project = session.query(Project).filter_by(organization_id=org_id, slug="default").one()
        factories.add_project_member(session, project, user, project_role)
    _, key = factories.make_api_key(session, user=user, org=org)
    return factories.bearer(key)
