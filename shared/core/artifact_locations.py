"""Where artifacts live: the one spelling of the URIs clients see and of the keys the store keeps.

Clients (the mlflow client, a model version's `artifact_uri`) see `mlflow-artifacts:/<path>`, served by
the tracking service's proxied artifact API. The first segment of `<path>` is an experiment id
(`<experiment>/<run>/artifacts/...`, `<experiment>/models/<model>/...`) or `registry` for files uploaded
with a model version (`registry/<model>/<version>/...`). The store keeps every project's files under
`<org>/<project>/<path>`, so one tenant's paths can never reach another's files.
"""

from __future__ import annotations

import uuid

from shared.core.artifacts import safe_key
from shared.db.models import Project

ARTIFACTS_SCHEME = "mlflow-artifacts:"
# The first path segment of a model version's uploaded files.
REGISTRY_PREFIX = "registry"


def artifacts_uri(path: str) -> str:
    """The client-facing URI of a path in the store."""
    return f"{ARTIFACTS_SCHEME}/{path.lstrip('/')}"


def uri_path(uri: str) -> str | None:
    """The path an `mlflow-artifacts:` URI names; None for any other URI (files outside the store)."""
    if not uri.startswith(ARTIFACTS_SCHEME):
        return None
    return uri.removeprefix(ARTIFACTS_SCHEME).lstrip("/")


def experiment_root_uri(experiment_id: uuid.UUID) -> str:
    """Where an experiment's runs and logged models put their files."""
    return artifacts_uri(experiment_id.hex)


def version_upload_path(model_id: uuid.UUID, version_id: uuid.UUID) -> str:
    """Where a model version's uploaded files go, beside the project's tracking artifacts."""
    return f"{REGISTRY_PREFIX}/{model_id.hex}/{version_id.hex}"


def project_key(project: Project, path: str) -> str:
    """The store key of `path` (a client path, validated by safe_key) in `project`."""
    return safe_key(project.organization_id.hex, project.id.hex, path)


def uri_key(project: Project, uri: str) -> str | None:
    """The store key of an `mlflow-artifacts:` URI of `project`; None for URIs outside the store."""
    path = uri_path(uri)
    return None if path is None else project_key(project, path)
