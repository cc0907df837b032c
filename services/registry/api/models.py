"""Registered models of a project (create, search, read, update, soft delete, restore) and their aliases."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from services.registry.api.model_versions import version_read
from services.registry.domain import models, versions
from services.registry.schemas import (
    AliasRead,
    AliasSet,
    ModelCreate,
    ModelPage,
    ModelRead,
    ModelUpdate,
    ModelVersionRead,
)
from shared.core.deps import AccessDep, MaxResults, PageToken, SessionDep
from shared.core.errors import InvalidParameter, NotFound
from shared.db.models import Model

router = APIRouter(prefix="/api/v1", tags=["models"])


def model_read(model: Model) -> ModelRead:
    return ModelRead(
        id=model.id,
        project_id=model.project_id,
        name=model.name,
        description=model.description,
        tags=model.tags,
        aliases={alias.alias: alias.model_version.version for alias in model.aliases},
        last_version=model.last_version,
        created_by=model.created_by,
        created_at=model.created_at,
        updated_at=model.updated_at,
        deleted_at=model.deleted_at,
    )


def _tag_filters(tags: list[str]) -> dict[str, str]:
    pairs = {}
    for item in tags:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidParameter(f"Invalid tag filter '{item}': expected key=value")
        pairs[key] = value
    return pairs


@router.post("/projects/{project_id}/models", response_model=ModelRead, status_code=201, summary="Register a model")
def create_model(project_id: uuid.UUID, body: ModelCreate, session: SessionDep, access: AccessDep) -> ModelRead:
    model = models.create_model(
        session, access, project_id, name=body.name, description=body.description, tags=body.tags
    )
    return model_read(model)


@router.get("/projects/{project_id}/models", response_model=ModelPage, summary="Search a project's models")
def list_models(
    project_id: uuid.UUID,
    session: SessionDep,
    access: AccessDep,
    q: Annotated[str | None, Query(max_length=256, description="Text in the name or description")] = None,
    tag: Annotated[list[str], Query(description="key=value; repeat for several (all must match)")] = [],  # noqa: B006 (FastAPI copies defaults)
    deleted: Annotated[bool, Query(description="List the deleted models instead")] = False,
    page_token: PageToken = None,
    max_results: MaxResults = 100,
) -> ModelPage:
    page = models.list_models(
        session,
        access,
        project_id,
        text=q,
        tags=_tag_filters(tag),
        deleted=deleted,
        page_token=page_token,
        max_results=max_results,
    )
    return ModelPage(items=[model_read(row[0]) for row in page.rows], next_page_token=page.next_page_token)


@router.get("/models/{model_id}", response_model=ModelRead, summary="A model")
def get_model(model_id: uuid.UUID, session: SessionDep, access: AccessDep) -> ModelRead:
    return model_read(models.get_model(session, access, model_id))


@router.patch("/models/{model_id}", response_model=ModelRead, summary="Rename, describe or re-tag a model")
def update_model(model_id: uuid.UUID, body: ModelUpdate, session: SessionDep, access: AccessDep) -> ModelRead:
    model = models.get_model(session, access, model_id, models.WRITE)
    return model_read(models.update_model(session, access, model, changes=body.changes()))


@router.delete("/models/{model_id}", status_code=204, summary="Soft-delete a model (project admins)")
def delete_model(model_id: uuid.UUID, session: SessionDep, access: AccessDep) -> None:
    models.delete_model(session, access, models.get_model(session, access, model_id, models.WRITE))


@router.post("/models/{model_id}/restore", response_model=ModelRead, summary="Restore a deleted model (project admins)")
def restore_model(model_id: uuid.UUID, session: SessionDep, access: AccessDep) -> ModelRead:
    return model_read(models.restore_model(session, access, model_id))


@router.put("/models/{model_id}/aliases/{alias}", response_model=AliasRead, summary="Point an alias at a version")
def set_alias(model_id: uuid.UUID, alias: str, body: AliasSet, session: SessionDep, access: AccessDep) -> AliasRead:
    model = models.get_model(session, access, model_id, models.WRITE)
    version = versions.find_version(session, model, body.version)
    if version is None:
        raise NotFound(f"Version {body.version} of model '{model.name}' does not exist")
    versions.set_alias(session, access, model, alias, version)
    return AliasRead(model_id=model.id, alias=alias, version=version.version, model_version_id=version.id)


@router.get("/models/{model_id}/aliases/{alias}", response_model=ModelVersionRead, summary="The version an alias names")
def get_alias(model_id: uuid.UUID, alias: str, session: SessionDep, access: AccessDep) -> ModelVersionRead:
    model = models.get_model(session, access, model_id)
    row = versions.find_alias(session, model, alias)
    if row is None:
        raise NotFound(f"Model '{model.name}' has no alias '{alias}'")
    return version_read(row.model_version)


@router.delete("/models/{model_id}/aliases/{alias}", status_code=204, summary="Remove an alias")
def delete_alias(model_id: uuid.UUID, alias: str, session: SessionDep, access: AccessDep) -> None:
    versions.delete_alias(session, access, models.get_model(session, access, model_id, models.WRITE), alias)
