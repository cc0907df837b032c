"""The proxied artifact API's view of the store: which tenant an artifact path belongs to.

The layout is the one in shared.core.artifact_locations: the first segment of a client path names the
experiment; the caller must be able to use its project, and the file lives under that project's key
prefix, so one tenant's paths can never reach another's files, whatever the client sends.

Versions uploaded to the registry live at `registry/<model>/<version>/...` and are read here too, which
is how `models:/<name>/<version>` loads them: the second segment names the model, the caller needs
`registry:read` on its project. They are read-only through this API: the registry's upload endpoint
writes them along with the version row, and a file changed or deleted behind the registry's back would
break the version it belongs to.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.tracking.domain import experiments
from shared.core import audit
from shared.core.artifact_locations import REGISTRY_PREFIX, project_key, uri_path
from shared.core.artifacts import ArtifactEntry, ArtifactStore, safe_key
from shared.core.auth import Access
from shared.core.errors import InvalidParameter, NotFound
from shared.db.models import Model, Project

REGISTRY_READ = "registry:read"


def storage_key(session: Session, access: Access, path: str, scope: str, action: str | None = None) -> str:
    """The store key for a client path; with `action`, names the write for the audit trail first, so
    even a refused write is recorded under a short action name (paths can be long)."""
    if action:
        audit.describe(session, action=action, object_type="artifact", details={"path": path})
    key = safe_key(path)
    first_segment = key.split("/", 1)[0]
    if first_segment == REGISTRY_PREFIX:
        if scope != experiments.READ:
            raise InvalidParameter(
                f"Artifact '{path}' belongs to a registered model version and is read-only here; "
                "upload versions with POST /api/v1/models/{model_id}/versions/upload"
            )
        project = _registry_project(session, access, key, path)
    else:
        try:
            experiment = experiments.get_experiment(session, access, first_segment, scope)
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
    return project_key(project, key)


def _registry_project(session: Session, access: Access, key: str, path: str) -> Project:
    """The project of the live model named by `registry/<model>/...`, if the caller may read it."""
    missing = NotFound(f"Artifact '{path}' does not exist")
    segments = key.split("/")
    try:
        model_id = uuid.UUID(hex=segments[1])
    except (IndexError, ValueError):
        raise missing from None
    project_id = session.scalar(select(Model.project_id).where(Model.id == model_id, Model.deleted_at.is_(None)))
    if project_id is None:
        raise missing
    try:
        return access.require_project(project_id, REGISTRY_READ)
    except NotFound:
        raise missing from None


def list_artifacts(session: Session, access: Access, store: ArtifactStore, path: str | None) -> list[ArtifactEntry]:
    if not path or not path.strip("/"):
        return []
    return store.list(storage_key(session, access, path, experiments.READ))


def delete_artifact(session: Session, access: Access, store: ArtifactStore, path: str) -> None:
    store.delete(storage_key(session, access, path, experiments.WRITE, action="artifact.delete"))


# --- artifacts below a run's or a logged model's root (what MLflow's UI browses) -----------------------


def proxied_path(root_uri: str | None, relative: str | None) -> str:
    """The proxied-API path of `relative` below a root URI such as `mlflow-artifacts:/<exp>/<run>/artifacts`.
    A root elsewhere (an artifact location the client chose, e.g. s3://) is not served by Tessera: NotFound."""
    root = uri_path(root_uri or "")
    if not root:
        raise NotFound(f"Artifacts at '{root_uri}' are not served by Tessera")
    return safe_key(root, relative.strip("/")) if relative and relative.strip("/") else safe_key(root)


def list_below(
    session: Session, access: Access, store: ArtifactStore, root_uri: str | None, path: str | None
) -> list[tuple[str, ArtifactEntry]]:
    """Children of `path` below the root, each with its path relative to the root (MLflow's `files`)."""
    try:
        key = storage_key(session, access, proxied_path(root_uri, path), experiments.READ)
    except NotFound:
        return []
    prefix = safe_key(path) + "/" if path and path.strip("/") else ""
    return [(prefix + entry.name, entry) for entry in store.list(key)]


def file_below(session: Session, access: Access, store: ArtifactStore, root_uri: str | None, path: str) -> str:
    """The store key of a file below the root; NotFound for a folder or a missing file."""
    key = storage_key(session, access, proxied_path(root_uri, path), experiments.READ)
    if not store.is_file(key):
        raise NotFound(f"Artifact '{path}' does not exist")
    return key
