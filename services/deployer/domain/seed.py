"""The demo deployment `tessera seed` makes: a local deployment whose history says an older version served
first and a newer one replaced it, so a new user has a live deployment with a version to roll back to.

Only the newer version is actually started: it is requested like any rollout (a pending history entry and
a `deployment.rollout_requested` event), so the worker starts its model server and the deployment turns
healthy; the older version's entry is the seeded past. A rollback then starts the older version's server.
Idempotent: a deployment of that name already there is left as it is.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.deployer.domain.deployments import WRITE, record, request_rollout
from shared.core.auth import Access
from shared.core.model_refs import VersionRef, resolve_version
from shared.db.base import utcnow
from shared.db.models import Deployment

# How long ago the seeded history says the first version went live.
SEEDED_PAST = timedelta(days=1)


def seed_deployment(
    session: Session, access: Access, *, project_id: uuid.UUID, name: str, version_ids: Sequence[uuid.UUID]
) -> Deployment | None:
    """Version_ids[0] served first (a succeeded `deploy` in the history), version_ids[-1] is being deployed
    now; None when the deployment already exists."""
    project = access.require_project(project_id, WRITE)
    if session.scalar(select(Deployment.id).where(Deployment.project_id == project.id, Deployment.name == name)):
        return None
    first = resolve_version(session, project.id, VersionRef(version_id=version_ids[0]))
    latest = resolve_version(session, project.id, VersionRef(version_id=version_ids[-1]))
    then = utcnow() - SEEDED_PAST
    deployment = Deployment(
        id=uuid.uuid4(),
        project_id=project.id,
        name=name,
        target="local",
        status="healthy",
        model_version_id=first.id,
        canary_percent=0,
        shadow_percent=0,
        config={"canary": {}},
        created_by=access.principal.user_id,
        created_at=then,
    )
    session.add(deployment)
    session.flush()
    entry = record(
        session,
        deployment,
        "deploy",
        "succeeded",
        to_version_id=first.id,
        reason="seeded history: the version served before the current one",
        details={"role": "stable", "percent": 100, "seeded": True},
        actor_id=access.principal.user_id,
    )
    entry.created_at = then
    request_rollout(session, project, deployment, latest, role="stable", action="deploy", access=access)
    session.flush()
    return deployment
