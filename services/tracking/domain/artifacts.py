"""The proxied artifact API's view of the store: which tenant an artifact path belongs to.

Clients see `mlflow-artifacts:/<experiment>/<run>/artifacts/...` (and `<experiment>/models/<model>/...`
for logged models). The first segment names the experiment; the caller must be able to use its project,
and the file lives at `<org>/<project>/<experiment>/...` in the store, so one tenant's paths can never
reach another's files, whatever the client sends.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from services.tracking.domain import experiments
from shared.core import audit
from shared.core.artifacts import ArtifactEntry, ArtifactStore, safe_key
from shared.core.auth import Access
from shared.core.errors import NotFound


def storage_key(session: Session, access: Access, path: str, scope: str, action: str | None = None) -> str:
    """The store key for a client path; with `action`, names the write for the audit trail first, so
    even a refused write is recorded under a short action name (paths can be long)."""
    if action:
        audit.describe(session, action=action, object_type="artifact", details={"path": path})
    key = safe_key(path)
    experiment_segment = key.split("/", 1)[0]
    try:
        experiment = experiments.get_experiment(session, access, experiment_segment, scope)
    except NotFound:
        raise NotFound(f"Artifact '{path}' does not exist") from None
    project = access.require_project(experiment.project_id, scope)
    if action:
        audit.describe(
            session,
            action=action,
            object_type="artifact",
            organization_id=project.organization_id,
            details={"path": path},
        )
    return safe_key(project.organization_id.hex, project.id.hex, key)


def list_artifacts(session: Session, access: Access, store: ArtifactStore, path: str | None) -> list[ArtifactEntry]:
    if not path or not path.strip("/"):
        return []
    return store.list(storage_key(session, access, path, experiments.READ))


def delete_artifact(session: Session, access: Access, store: ArtifactStore, path: str) -> None:
    store.delete(storage_key(session, access, path, experiments.WRITE, action="artifact.delete"))
