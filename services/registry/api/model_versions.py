"""Model versions: register (from a run, a logged model or an upload), read, update, delete, move between
stages, and trace their lineage."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Path, Query, UploadFile

from services.registry.domain import lineage, models, versions
from services.registry.schemas import (
    LineageDataset,
    LineageDeployment,
    LineageDriftReport,
    LineageExperiment,
    LineageLoggedModel,
    LineageMonitor,
    LineageRun,
    ModelVersionCreate,
    ModelVersionLineage,
    ModelVersionPage,
    ModelVersionRead,
    ModelVersionUpdate,
    Stage,
    StageTransitionCreate,
    StageTransitionRead,
    StageTransitionResult,
)
from shared.core.artifacts import get_artifact_store
from shared.core.deps import AccessDep, MaxResults, PageToken, SessionDep, SettingsDep
from shared.core.errors import InvalidParameter
from shared.core.model_refs import VERSION_REF_PATTERN, VersionRef
from shared.core.pagination import Page, sequence_page
from shared.db.models import ModelVersion

# A version in a path: its id, `<model>:<version>` or `<model>@<alias>` (see shared.core.model_refs).
VersionRefPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=600,
        pattern=VERSION_REF_PATTERN,
        description="The version's id, `<model>:<version>` or `<model>@<alias>`",
    ),
]

router = APIRouter(prefix="/api/v1", tags=["model versions"])


def version_read(version: ModelVersion) -> ModelVersionRead:
    return ModelVersionRead(
        id=version.id,
        model_id=version.model_id,
        model_name=version.model.name,
        version=version.version,
        stage=version.stage,
        status=version.status,
        description=version.description,
        source=version.source,
        artifact_uri=version.artifact_uri,
        run_id=version.run_id,
        logged_model_id=version.logged_model_id,
        signature=version.signature,
        metrics=version.metrics,
        tags=version.tags,
        aliases=[alias.alias for alias in version.aliases],
        created_by=version.created_by,
        created_at=version.created_at,
        updated_at=version.updated_at,
    )


@router.post(
    "/models/{model_id}/versions",
    response_model=ModelVersionRead,
    status_code=201,
    summary="Register a version from a run's model artifact or a logged model",
)
def create_version(
    model_id: uuid.UUID, body: ModelVersionCreate, session: SessionDep, access: AccessDep, settings: SettingsDep
) -> ModelVersionRead:
    model = models.get_model(session, access, model_id, models.WRITE)
    if body.logged_model_id is not None and body.run_id is None:
        source = versions.from_logged_model(session, model, uuid.UUID(body.logged_model_id.removeprefix("m-")))
    elif body.run_id is not None and body.logged_model_id is None:
        source = versions.from_run(session, model, body.run_id, body.artifact_path)
    else:
        raise InvalidParameter("Give either run_id (with artifact_path) or logged_model_id")
    version = versions.create_version(
        session,
        access,
        model,
        source,
        store=get_artifact_store(settings),
        description=body.description,
        tags=body.tags,
    )
    return version_read(version)


@router.post(
    "/models/{model_id}/versions/upload",
    response_model=ModelVersionRead,
    status_code=201,
    summary="Register a version from uploaded files (each part's filename is its path in the model directory)",
)
def upload_version(
    model_id: uuid.UUID,
    session: SessionDep,
    access: AccessDep,
    settings: SettingsDep,
    files: Annotated[list[UploadFile], File(description="MLmodel and the files it names")],
    description: Annotated[str | None, Form(max_length=10_000)] = None,
) -> ModelVersionRead:
    model = models.get_model(session, access, model_id, models.WRITE)
    version = versions.create_uploaded_version(
        session,
        access,
        model,
        [(upload.filename or "", upload.file) for upload in files],
        store=get_artifact_store(settings),
        description=description,
    )
    return version_read(version)


@router.get("/models/{model_id}/versions", response_model=ModelVersionPage, summary="A model's versions, newest first")
def list_versions(
    model_id: uuid.UUID,
    session: SessionDep,
    access: AccessDep,
    stage: Annotated[list[Stage], Query(description="Only these stages; repeat for several")] = [],  # noqa: B006 (FastAPI copies defaults)
    page_token: PageToken = None,
    max_results: MaxResults = 100,
) -> ModelVersionPage:
    model = models.get_model(session, access, model_id)
    page = versions.list_versions(session, access, model, stages=stage, page_token=page_token, max_results=max_results)
    return ModelVersionPage(items=[version_read(row[0]) for row in page.rows], next_page_token=page.next_page_token)


@router.get("/model-versions", response_model=ModelVersionPage, summary="The versions registered from a run")
def versions_of_run(
    run_id: uuid.UUID,
    session: SessionDep,
    access: AccessDep,
    page_token: PageToken = None,
    max_results: MaxResults = 100,
) -> dict[str, Any]:
    found = [version_read(v) for v in versions.versions_of_run(session, access, run_id)]
    return sequence_page(found, page_token=page_token, max_results=max_results)


@router.get("/model-versions/{version_ref}", response_model=ModelVersionRead, summary="A model version")
def get_version(version_ref: VersionRefPath, session: SessionDep, access: AccessDep) -> ModelVersionRead:
    return version_read(versions.get_version_by_ref(session, access, VersionRef.parse(version_ref)))


@router.patch("/model-versions/{version_ref}", response_model=ModelVersionRead, summary="Describe or re-tag a version")
def update_version(
    version_ref: VersionRefPath, body: ModelVersionUpdate, session: SessionDep, access: AccessDep
) -> ModelVersionRead:
    version = versions.get_version_by_ref(session, access, VersionRef.parse(version_ref), models.WRITE)
    changes = body.changes()
    return version_read(versions.update_version(session, access, version, changes=changes))


@router.delete(
    "/model-versions/{version_ref}", status_code=204, summary="Soft-delete a version (admins for a production one)"
)
def delete_version(version_ref: VersionRefPath, session: SessionDep, access: AccessDep) -> None:
    version = versions.get_version_by_ref(session, access, VersionRef.parse(version_ref), models.WRITE)
    versions.delete_version(session, access, version)


@router.post(
    "/model-versions/{version_ref}/transitions",
    response_model=StageTransitionResult,
    summary="Move a version to another stage (into or out of production: project admins)",
)
def transition(
    version_ref: VersionRefPath, body: StageTransitionCreate, session: SessionDep, access: AccessDep
) -> StageTransitionResult:
    version = versions.get_version_by_ref(session, access, VersionRef.parse(version_ref), models.WRITE)
    archive = body.archive_existing and body.stage in versions.ACTIVE_STAGES
    made = versions.transition_stage(
        session, access, version, body.stage, comment=body.comment, archive_existing=archive
    )
    return StageTransitionResult(
        model_version=version_read(version), transitions=[StageTransitionRead.model_validate(t) for t in made]
    )


@router.get(
    "/model-versions/{version_ref}/transitions",
    response_model=Page[StageTransitionRead],
    summary="Every stage change of a version, oldest first",
)
def list_transitions(
    version_ref: VersionRefPath,
    session: SessionDep,
    access: AccessDep,
    page_token: PageToken = None,
    max_results: MaxResults = 100,
) -> dict[str, Any]:
    version = versions.get_version_by_ref(session, access, VersionRef.parse(version_ref))
    made = [StageTransitionRead.model_validate(t) for t in versions.transitions(session, access, version)]
    return sequence_page(made, page_token=page_token, max_results=max_results)


@router.get(
    "/model-versions/{version_ref}/lineage",
    response_model=ModelVersionLineage,
    summary="Run, experiment, datasets, logged model, deployments and drift reports of a version",
)
def get_lineage(version_ref: VersionRefPath, session: SessionDep, access: AccessDep) -> ModelVersionLineage:
    version = versions.get_version_by_ref(session, access, VersionRef.parse(version_ref))
    found = lineage.version_lineage(session, access, version)
    return ModelVersionLineage(
        model_version=version_read(version),
        run=LineageRun.model_validate(found.run) if found.run else None,
        experiment=LineageExperiment.model_validate(found.experiment) if found.experiment else None,
        logged_model=LineageLoggedModel.model_validate(found.logged_model) if found.logged_model else None,
        datasets=[
            LineageDataset(
                id=item.dataset.id,
                name=item.dataset.name,
                digest=item.dataset.digest,
                source_type=item.dataset.source_type,
                source=item.dataset.source,
                tags=item.tags,
            )
            for item in found.datasets
        ],
        deployments=[
            LineageDeployment(
                id=d.id,
                name=d.name,
                target=d.target,
                status=d.status,
                role="stable" if d.model_version_id == version.id else "canary",
            )
            for d in found.deployments
        ],
        monitors=[
            LineageMonitor(
                id=m.monitor.id,
                name=m.monitor.name,
                deployment_id=m.monitor.deployment_id,
                enabled=m.monitor.enabled,
                drift_reports=[LineageDriftReport.model_validate(r) for r in m.reports],
            )
            for m in found.monitors
        ],
    )
