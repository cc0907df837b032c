"""MLflow's model-registry REST API (`registered-models/*`, `model-versions/*`) under `/api/2.0/mlflow` and
`/ajax-api/2.0/mlflow`, so `mlflow.register_model`, `MlflowClient` and `models:/` URIs work unchanged.

Wire format as MLflow's protos (model_registry.proto) render to JSON: GET requests carry their fields as
query parameters (repeated for lists), others as a JSON body; unknown fields are ignored; versions are
strings, timestamps epoch milliseconds; empty responses are `{}`. Stage names and the project a name
resolves in are explained in services/registry/domain/mlflow_registry.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from services.registry.api import hot_reads
from services.registry.domain import mlflow_registry as mlf
from services.registry.domain import models, versions
from shared.core import artifact_locations
from shared.core.artifacts import get_artifact_store, safe_key
from shared.core.auth import Access
from shared.core.deps import AccessDep, SessionDep, SettingsDep
from shared.core.errors import InvalidParameter, NotFound
from shared.core.hot_routes import HotRoute, hot_pool_lifespan
from shared.core.web import artifact_download
from shared.db.models import Model, ModelVersion

_api = APIRouter()


# --- rendering -------------------------------------------------------------------------------------


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _tags(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": key, "value": value} for key, value in sorted(tags.items())]


def version_json(version: ModelVersion) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": version.model.name,
        "version": str(version.version),
        "creation_timestamp": _ms(version.created_at),
        "last_updated_timestamp": _ms(version.updated_at),
        "current_stage": mlf.TO_MLFLOW_STAGE[version.stage],
        "source": version.source or "",
        "status": version.status,
        "tags": _tags(version.tags),
        "aliases": [alias.alias for alias in version.aliases],
    }
    optional = {
        "user_id": version.created_by.hex if version.created_by else None,
        "description": version.description,
        "run_id": version.run_id.hex if version.run_id else None,
        "run_link": version.run_link,
        "model_id": f"{mlf.LOGGED_MODEL_PREFIX}{version.logged_model_id.hex}" if version.logged_model_id else None,
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    return body


def model_json(model: Model, latest: list[ModelVersion]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": model.name,
        "creation_timestamp": _ms(model.created_at),
        "last_updated_timestamp": _ms(model.updated_at),
        "latest_versions": [version_json(v) for v in latest],
        "tags": _tags(model.tags),
        "aliases": [{"alias": a.alias, "version": str(a.model_version.version)} for a in model.aliases],
    }
    if model.created_by:
        body["user_id"] = model.created_by.hex
    if model.description is not None:
        body["description"] = model.description
    return body


def _models_json(session: Session, found: list[Model]) -> list[dict[str, Any]]:
    latest = versions.latest_versions(session, [m.id for m in found])
    return [model_json(m, latest[m.id]) for m in found]


# --- requests --------------------------------------------------------------------------------------


# What the domain accepts, documented in /openapi.json but checked by the domain (its messages are MLflow's).
ModelName = Annotated[
    str, Field(json_schema_extra={"minLength": 1, "maxLength": 256, "pattern": r"^[^/:\x00]*[^/:\s.\x00][^/:\x00]*$"})
]
VersionNumber = Annotated[str, Field(json_schema_extra={"pattern": r"^[1-9][0-9]{0,17}$"})]
StageName = Annotated[str, Field(json_schema_extra={"enum": ["None", "Staging", "Production", "Archived"]})]
AliasName = Annotated[str, Field(json_schema_extra={"minLength": 1, "maxLength": 255, "pattern": r"^[\w\-]+$"})]
TagKey = Annotated[str, Field(json_schema_extra={"minLength": 1, "maxLength": 250, "pattern": r"\S"})]


class _Body(BaseModel):
    # MLflow clients of other versions send fields we do not know (deployment_job_id, ...): ignore them.
    model_config = ConfigDict(extra="ignore")


class _Tag(_Body):
    key: TagKey
    value: str = ""


class CreateRegisteredModel(_Body):
    name: ModelName
    tags: list[_Tag] = Field(default_factory=list)
    description: str | None = None


class RenameRegisteredModel(_Body):
    name: ModelName
    new_name: ModelName


class UpdateRegisteredModel(_Body):
    name: ModelName
    description: str | None = None


class ByName(_Body):
    name: ModelName


class GetLatestVersions(_Body):
    name: ModelName
    stages: list[str] = Field(default_factory=list)


class SetRegisteredModelTag(_Body):
    name: ModelName
    key: TagKey
    value: str = ""


class DeleteRegisteredModelTag(_Body):
    name: ModelName
    key: TagKey


class SetAlias(_Body):
    name: ModelName
    alias: AliasName
    version: VersionNumber


class DeleteAlias(_Body):
    name: ModelName
    alias: AliasName


class CreateModelVersion(_Body):
    name: ModelName
    source: str
    run_id: str | None = None
    tags: list[_Tag] = Field(default_factory=list)
    run_link: str | None = None
    description: str | None = None
    model_id: str | None = None


class ByVersion(_Body):
    name: ModelName
    version: VersionNumber


class UpdateModelVersion(_Body):
    name: ModelName
    version: VersionNumber
    description: str | None = None


class TransitionStage(_Body):
    name: ModelName
    version: VersionNumber
    stage: StageName
    archive_existing_versions: bool = False


class SetModelVersionTag(_Body):
    name: ModelName
    version: VersionNumber
    key: TagKey
    value: str = ""


class DeleteModelVersionTag(_Body):
    name: ModelName
    version: VersionNumber
    key: TagKey


def _tag_map(tags: list[_Tag]) -> dict[str, str]:
    return {tag.key: tag.value for tag in tags}


Name = Annotated[str, Query()]
Strings = Annotated[list[str], Query()]


class _Search:
    """The query of MLflow's two search routes (registered models, model versions)."""

    def __init__(
        self,
        filter: str | None = None,
        max_results: int | None = None,
        order_by: Strings = [],  # noqa: B006 (FastAPI copies defaults)
        page_token: str | None = None,
    ) -> None:
        self.filter_string, self.max_results, self.order_by, self.page_token = filter, max_results, order_by, page_token


SearchQuery = Annotated[_Search, Depends()]


def _found(key: str, items: list[dict[str, Any]], token: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {key: items}
    if token:
        body["next_page_token"] = token
    return body


# --- registered models -----------------------------------------------------------------------------


@_api.post("/registered-models/create")
def create_registered_model(body: CreateRegisteredModel, session: SessionDep, access: AccessDep) -> dict:
    project = mlf.project(access, models.WRITE)
    model = models.create_model(
        session, access, project.id, name=body.name, description=body.description, tags=_tag_map(body.tags)
    )
    return {"registered_model": model_json(model, [])}


def get_registered_model(name: Name, session: SessionDep, access: AccessDep) -> dict:
    return {"registered_model": _models_json(session, [mlf.get_model(session, access, name)])[0]}


@_api.post("/registered-models/rename")
def rename_registered_model(body: RenameRegisteredModel, session: SessionDep, access: AccessDep) -> dict:
    model = mlf.get_model(session, access, body.name, models.WRITE)
    models.update_model(session, access, model, changes={"name": body.new_name})
    return {"registered_model": _models_json(session, [model])[0]}


@_api.patch("/registered-models/update")
def update_registered_model(body: UpdateRegisteredModel, session: SessionDep, access: AccessDep) -> dict:
    model = mlf.get_model(session, access, body.name, models.WRITE)
    models.update_model(session, access, model, changes={"description": body.description})
    return {"registered_model": _models_json(session, [model])[0]}


@_api.delete("/registered-models/delete")
def delete_registered_model(body: ByName, session: SessionDep, access: AccessDep) -> dict:
    models.delete_model(session, access, mlf.get_model(session, access, body.name, models.WRITE))
    return {}


def search_registered_models(session: SessionDep, access: AccessDep, query: SearchQuery) -> dict:
    found, token = mlf.search_models(session, access, **vars(query))
    return _found("registered_models", _models_json(session, found), token)


def _latest_versions(session: Session, access: Access, name: str, stages: list[str]) -> dict:
    model = mlf.get_model(session, access, name)
    wanted = [mlf.stage_from_mlflow(stage) for stage in stages]
    latest = versions.latest_versions(session, [model.id], wanted)[model.id]
    return {"model_versions": [version_json(v) for v in latest]}


@_api.post("/registered-models/get-latest-versions")
def get_latest_versions(body: GetLatestVersions, session: SessionDep, access: AccessDep) -> dict:
    return _latest_versions(session, access, body.name, body.stages)


@_api.get("/registered-models/get-latest-versions")
def get_latest_versions_by_query(name: Name, session: SessionDep, access: AccessDep, stages: Strings = []) -> dict:  # noqa: B006 (FastAPI copies defaults)
    return _latest_versions(session, access, name, stages)


@_api.post("/registered-models/set-tag")
def set_registered_model_tag(body: SetRegisteredModelTag, session: SessionDep, access: AccessDep) -> dict:
    models.set_tag(session, access, mlf.get_model(session, access, body.name, models.WRITE), body.key, body.value)
    return {}


@_api.delete("/registered-models/delete-tag")
def delete_registered_model_tag(body: DeleteRegisteredModelTag, session: SessionDep, access: AccessDep) -> dict:
    models.delete_tag(session, access, mlf.get_model(session, access, body.name, models.WRITE), body.key)
    return {}


@_api.post("/registered-models/alias")
def set_registered_model_alias(body: SetAlias, session: SessionDep, access: AccessDep) -> dict:
    version = mlf.get_version(session, access, body.name, body.version, models.WRITE)
    versions.set_alias(session, access, version.model, body.alias, version)
    return {}


@_api.delete("/registered-models/alias")
def delete_registered_model_alias(body: DeleteAlias, session: SessionDep, access: AccessDep) -> dict:
    versions.validate_alias(body.alias)
    versions.delete_alias(session, access, mlf.get_model(session, access, body.name, models.WRITE), body.alias)
    return {}


def get_model_version_by_alias(name: Name, alias: Name, session: SessionDep, access: AccessDep) -> dict:
    return {"model_version": version_json(mlf.version_by_alias(session, access, name, alias))}


# --- model versions --------------------------------------------------------------------------------


@_api.post("/model-versions/create")
def create_model_version(
    body: CreateModelVersion, session: SessionDep, access: AccessDep, settings: SettingsDep
) -> dict:
    model = mlf.get_model(session, access, body.name, models.WRITE)
    source = mlf.resolve_source(session, access, model, body.source, body.run_id, body.model_id)
    version = versions.create_version(
        session,
        access,
        model,
        source,
        store=get_artifact_store(settings),
        description=body.description,
        tags=_tag_map(body.tags),
        run_link=body.run_link,
    )
    return {"model_version": version_json(version)}


@_api.get("/model-versions/get")
def get_model_version(name: Name, version: Name, session: SessionDep, access: AccessDep) -> dict:
    return {"model_version": version_json(mlf.get_version(session, access, name, version))}


@_api.patch("/model-versions/update")
def update_model_version(body: UpdateModelVersion, session: SessionDep, access: AccessDep) -> dict:
    version = mlf.get_version(session, access, body.name, body.version, models.WRITE)
    versions.update_version(session, access, version, changes={"description": body.description})
    return {"model_version": version_json(version)}


@_api.delete("/model-versions/delete")
def delete_model_version(body: ByVersion, session: SessionDep, access: AccessDep) -> dict:
    versions.delete_version(session, access, mlf.get_version(session, access, body.name, body.version, models.WRITE))
    return {}


@_api.get("/model-versions/search")
def search_model_versions(session: SessionDep, access: AccessDep, query: SearchQuery) -> dict:
    found, token = mlf.search_versions(session, access, **vars(query))
    return _found("model_versions", [version_json(v) for v in found], token)


@_api.post("/model-versions/transition-stage")
def transition_model_version_stage(body: TransitionStage, session: SessionDep, access: AccessDep) -> dict:
    stage = mlf.stage_from_mlflow(body.stage)
    if body.archive_existing_versions and stage not in versions.ACTIVE_STAGES:
        raise InvalidParameter(
            f"Model version transition cannot archive existing model versions because '{body.stage}' is not an "
            "Active stage. Valid stages are Staging, Production"
        )
    version = mlf.get_version(session, access, body.name, body.version, models.WRITE)
    versions.transition_stage(session, access, version, stage, archive_existing=body.archive_existing_versions)
    return {"model_version": version_json(version)}


@_api.get("/model-versions/get-download-uri")
def get_model_version_download_uri(name: Name, version: Name, session: SessionDep, access: AccessDep) -> dict:
    found = mlf.get_version(session, access, name, version)
    return {"artifact_uri": found.artifact_uri or found.source or ""}


@_api.post("/model-versions/set-tag")
def set_model_version_tag(body: SetModelVersionTag, session: SessionDep, access: AccessDep) -> dict:
    version = mlf.get_version(session, access, body.name, body.version, models.WRITE)
    versions.set_tag(session, access, version, body.key, body.value)
    return {}


@_api.delete("/model-versions/delete-tag")
def delete_model_version_tag(body: DeleteModelVersionTag, session: SessionDep, access: AccessDep) -> dict:
    version = mlf.get_version(session, access, body.name, body.version, models.WRITE)
    versions.delete_tag(session, access, version, body.key)
    return {}


# The reads a serving stack and a UI make most: served first by hot_reads, these endpoints answer what it
# leaves (see shared.core.hot_routes); mounted before every other route.
_hot_api = APIRouter()
for _path, _endpoint, _hot in (
    ("/registered-models/get", get_registered_model, hot_reads.get_registered_model),
    ("/registered-models/search", search_registered_models, hot_reads.search_registered_models),
    ("/registered-models/alias", get_model_version_by_alias, hot_reads.get_model_version_by_alias),
):
    _hot_api.add_api_route(_path, _endpoint, methods=["GET"], route_class_override=HotRoute.serving(_hot))

router = APIRouter(tags=["mlflow model registry"])
router.include_router(_api, prefix="/api/2.0/mlflow")
router.include_router(_api, prefix="/ajax-api/2.0/mlflow")
hot_router = APIRouter(tags=["mlflow model registry"], lifespan=hot_pool_lifespan)
hot_router.include_router(_hot_api, prefix="/api/2.0/mlflow")
hot_router.include_router(_hot_api, prefix="/ajax-api/2.0/mlflow")


@router.get("/model-versions/get-artifact", include_in_schema=False)
def get_model_version_artifact(
    name: Name, version: Name, path: Name, session: SessionDep, access: AccessDep, settings: SettingsDep
) -> Response:
    """A file of a version (MLflow's UI shows its MLmodel), as MLflow's server sends artifacts."""
    found = mlf.get_version(session, access, name, version)
    project = access.require_project(found.model.project_id, models.READ)
    root = artifact_locations.uri_key(project, found.artifact_uri or "")
    store = get_artifact_store(settings)
    key = safe_key(root, path) if root else None
    if key is None or not store.is_file(key):
        raise NotFound(f"Artifact '{path}' of model '{name}' version {version} does not exist")
    return artifact_download(store.read(key), path)
