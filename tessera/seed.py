"""`tessera seed`: the demo data of every service, composed in one transaction. Each service seeds its own
part (the registry its people, projects and models; tracking the training runs that logged the models;
the deployer the deployment); this module only hands one part's ids to the next, since services never
import each other.

The result a new user can act on: the model `fraud-classifier` has versions 1 and 2, each a scikit-learn
model logged by a training run; its deployment `fraud-classifier-prod` served version 1 and is deploying
version 2 (the worker starts the model server), so *Roll back* returns it to version 1.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from services.deployer.domain.seed import seed_deployment
from services.registry.domain.seed import DEMO_PASSWORD, ORG_SLUG, SeedReport, seed_models, seed_people
from services.tracking.domain.seed import seed_experiments
from shared.core.artifacts import ArtifactStore

# (project slug, deployment name, model name): the deployment serves the model's latest version and has
# its first version in its history.
DEPLOYMENT = ("fraud-detection", "fraud-classifier-prod", "fraud-classifier")


def seed_demo(session: Session, store: ArtifactStore, *, password: str = DEMO_PASSWORD) -> SeedReport:
    report = seed_people(session, password=password)
    trained = seed_experiments(session, store, org_slug=ORG_SLUG, owner_email=report.owner_email)
    report.created += trained.created
    seed_models(session, store, report, trained.run_ids)
    project_slug, name, model_name = DEPLOYMENT
    project_id = report.projects[project_slug]
    deployment = seed_deployment(
        session,
        report.owner_access(session, project_id),
        project_id=project_id,
        name=name,
        version_ids=report.versions[model_name],
    )
    if deployment is not None:
        latest = len(report.versions[model_name])
        report.created.append(f"deployment {name} (served version 1; version {latest} starts on the worker)")
    return report
