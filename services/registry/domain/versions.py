"""Model versions: registration, stages, aliases, tags.

Rules:
- Numbers are handed out by bumping `models.last_version` with UPDATE ... RETURNING: the row lock makes
  concurrent registrations of one model queue, so two never get the same number.
- Stages go development -> staging -> production, plus archived. Moving a version into or out of
  production takes a project admin; every move is recorded (who, when, from, to, comment) and emits
  `model_version.stage_changed`. With `archive_existing`, the versions already in the target stage are
  archived in the same transaction; stage changes of one model queue on the model's row lock, so two
  concurrent promotions leave exactly one production version.
- Aliases are unique per model (the table's key) and move under the same lock; each move emits
  `model_version.alias_moved`.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import yaml
from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session, selectinload

from services.registry.domain import models as models_domain
from services.registry.domain.models import READ, WRITE
from shared.core import artifact_locations, audit, events
from shared.core.artifacts import CHUNK_SIZE, ArtifactStore, safe_key
from shared.core.auth import Access
from shared.core.errors import InvalidParameter, NotFound
from shared.core.model_refs import VersionRef, resolve_version
from shared.core.pagination import RowPage, paginate
from shared.db.base import utcnow
from shared.db.models import (
    Experiment,
    ExperimentRun,
    LoggedModel,
    Model,
    ModelAlias,
    ModelVersion,
    ModelVersionTransition,
    Project,
    RunLatestMetric,
)
from shared.db.models.registry import STAGES

ACTIVE_STAGES = ("staging", "production")
ADMIN_STAGES = ("production",)
MAX_ALIAS_LENGTH = 255
_ALIAS_RE = re.compile(r"^[\w\-]+$")
# `v3` would shadow version 3 in `models:/name@v3`; `latest` is MLflow's built-in alias.
_RESERVED_ALIAS_RE = re.compile(r"^(latest|[vV]\d+)$", re.IGNORECASE)


def validate_stage(stage: str | None) -> str:
    if stage not in STAGES:
        raise InvalidParameter(f"Invalid stage '{stage}'; one of {', '.join(STAGES)}")
    return stage


def validate_alias(alias: str | None) -> str:
    if not alias:
        raise InvalidParameter("Registered model alias name cannot be empty.")
    if not _ALIAS_RE.match(alias) or len(alias) > MAX_ALIAS_LENGTH:
        raise InvalidParameter(
            f"Invalid alias name: '{alias}'. Names may only contain alphanumerics, underscores (_), and "
            f"dashes (-), up to {MAX_ALIAS_LENGTH} characters."
        )
    if _RESERVED_ALIAS_RE.match(alias):
        raise InvalidParameter(f"Alias name '{alias}' is reserved.")
    return alias


# --- reading ---------------------------------------------------------------------------------------


def version_options() -> list:
    """What every rendering of a version needs, loaded per page rather than per version."""
    return [selectinload(ModelVersion.model), selectinload(ModelVersion.aliases)]


def _not_found(what: Any) -> NotFound:
    return NotFound(f"Model version '{what}' does not exist")


def get_version_by_ref(session: Session, access: Access, ref: VersionRef, scope: str = READ) -> ModelVersion:
    """A version named by id, or by model name and number or alias in the caller's default project."""
    version_id = ref.version_id
    if version_id is None:
        version_id = resolve_version(session, access.default_project(scope).id, ref).id
    return get_version(session, access, version_id, scope)


def get_version(session: Session, access: Access, version_id: uuid.UUID, scope: str = READ) -> ModelVersion:
    version = session.scalar(
        select(ModelVersion)
        .join(Model, Model.id == ModelVersion.model_id)
        .where(ModelVersion.id == version_id, ModelVersion.deleted_at.is_(None), Model.deleted_at.is_(None))
        .options(*version_options())
    )
    if version is None or access.project_role(version.model.project_id) is None:
        raise _not_found(version_id)
    access.require_project(version.model.project_id, scope)
    return version


def find_version(session: Session, model: Model, number: int) -> ModelVersion | None:
    return session.scalar(
        select(ModelVersion)
        .where(ModelVersion.model_id == model.id, ModelVersion.version == number, ModelVersion.deleted_at.is_(None))
        .options(*version_options())
    )


def versions_query(model_id: uuid.UUID, *, stages: Sequence[str] = ()) -> Select:
    query = select(ModelVersion).where(ModelVersion.model_id == model_id, ModelVersion.deleted_at.is_(None))
    if stages:
        query = query.where(ModelVersion.stage.in_(stages))
    return query


def list_versions(
    session: Session,
    access: Access,
    model: Model,
    *,
    stages: Sequence[str] = (),
    page_token: str | None = None,
    max_results: int = 100,
) -> RowPage:
    """Rows of (ModelVersion,): a model's live versions, newest first."""
    access.require_project(model.project_id, READ)
    for stage in stages:
        validate_stage(stage)
    return paginate(
        session,
        versions_query(model.id, stages=stages).options(*version_options()),
        created_col=ModelVersion.created_at,
        id_col=ModelVersion.id,
        page_token=page_token,
        max_results=max_results,
        newest_first=True,
    )


def versions_of_run(session: Session, access: Access, run_id: uuid.UUID) -> list[ModelVersion]:
    """Live versions registered from a run, in every project the caller may read, oldest first."""
    return list(
        session.scalars(
            select(ModelVersion)
            .join(Model, Model.id == ModelVersion.model_id)
            .where(
                ModelVersion.run_id == run_id,
                ModelVersion.deleted_at.is_(None),
                Model.deleted_at.is_(None),
                Model.project_id.in_(access.readable_project_ids(READ)),
            )
            .order_by(ModelVersion.created_at, ModelVersion.version)
            .options(*version_options())
        ).all()
    )


def latest_versions(
    session: Session, model_ids: Sequence[uuid.UUID], stages: Sequence[str] = ()
) -> dict[uuid.UUID, list[ModelVersion]]:
    """The highest live version in each stage of each model, in one query (a window per model/stage)."""
    if not model_ids:
        return {}
    rank = (
        func.row_number()
        .over(partition_by=(ModelVersion.model_id, ModelVersion.stage), order_by=ModelVersion.version.desc())
        .label("rank")
    )
    ranked = select(ModelVersion.id, rank).where(
        ModelVersion.model_id.in_(model_ids), ModelVersion.deleted_at.is_(None)
    )
    if stages:
        ranked = ranked.where(ModelVersion.stage.in_(stages))
    ranked_sq = ranked.subquery()
    rows = session.scalars(
        select(ModelVersion)
        .join(ranked_sq, ranked_sq.c.id == ModelVersion.id)
        .where(ranked_sq.c.rank == 1)
        .order_by(ModelVersion.version)
        .options(*version_options())
    ).all()
    result: dict[uuid.UUID, list[ModelVersion]] = {model_id: [] for model_id in model_ids}
    for row in rows:
        result[row.model_id].append(row)
    return result


def transitions(session: Session, access: Access, version: ModelVersion) -> list[ModelVersionTransition]:
    access.require_project(version.model.project_id, READ)
    return list(
        session.scalars(
            select(ModelVersionTransition)
            .where(ModelVersionTransition.model_version_id == version.id)
            .order_by(ModelVersionTransition.created_at, ModelVersionTransition.id)
        ).all()
    )


def find_alias(session: Session, model: Model, alias: str) -> ModelAlias | None:
    return session.scalar(
        select(ModelAlias)
        .join(ModelVersion, ModelVersion.id == ModelAlias.model_version_id)
        .where(ModelAlias.model_id == model.id, ModelAlias.alias == alias, ModelVersion.deleted_at.is_(None))
        .options(selectinload(ModelAlias.model_version).options(*version_options()))
    )


# --- registering -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where a new version's files are: `uri` as the client named it, `artifact_uri` as resolved."""

    uri: str
    artifact_uri: str
    run: ExperimentRun | None = None
    logged_model: LoggedModel | None = None


def _project_of_experiment(session: Session, experiment_id: uuid.UUID) -> uuid.UUID | None:
    return session.scalar(
        select(Experiment.project_id).where(Experiment.id == experiment_id, Experiment.deleted_at.is_(None))
    )


def _in_model_project(session: Session, model: Model, source: ExperimentRun | LoggedModel | None) -> bool:
    return (
        source is not None
        and source.deleted_at is None
        and _project_of_experiment(session, source.experiment_id) == model.project_id
    )


def source_run(session: Session, model: Model, run_id: uuid.UUID) -> ExperimentRun:
    """A live run of the model's own project (lineage and artifact access stay within one tenant)."""
    run = session.get(ExperimentRun, run_id)
    if run is None or not _in_model_project(session, model, run):
        raise NotFound(f"Run '{run_id.hex}' does not exist in the model's project")
    return run


def source_logged_model(session: Session, model: Model, logged_model_id: uuid.UUID) -> LoggedModel:
    logged = session.get(LoggedModel, logged_model_id)
    if logged is None or not _in_model_project(session, model, logged):
        raise NotFound(f"Logged model 'm-{logged_model_id.hex}' does not exist in the model's project")
    return logged


def from_run(session: Session, model: Model, run_id: uuid.UUID, artifact_path: str) -> Source:
    run = source_run(session, model, run_id)
    if not run.artifact_uri:
        raise InvalidParameter(f"Run '{run_id.hex}' has no artifact location")
    path = safe_key(artifact_path)
    return Source(f"runs:/{run.id.hex}/{path}", f"{run.artifact_uri.rstrip('/')}/{path}", run=run)


def from_logged_model(session: Session, model: Model, logged_model_id: uuid.UUID) -> Source:
    logged = source_logged_model(session, model, logged_model_id)
    run = None
    if logged.source_run_id is not None:
        # A run deleted since it logged the model costs the version its lineage, not its registration.
        with contextlib.suppress(NotFound):
            run = source_run(session, model, logged.source_run_id)
    return Source(f"models:/m-{logged.id.hex}", logged.artifact_location, run=run, logged_model=logged)


def read_signature(store: ArtifactStore, project: Project, artifact_uri: str) -> dict | None:
    """The `signature` block of the version's MLmodel file, if there is one (inputs/outputs as JSON text)."""
    key = artifact_locations.uri_key(project, artifact_uri)
    if key is None or not store.is_file(f"{key}/MLmodel"):
        return None
    try:
        mlmodel = yaml.safe_load(b"".join(store.read(f"{key}/MLmodel")))
    except yaml.YAMLError:
        return None
    signature = mlmodel.get("signature") if isinstance(mlmodel, dict) else None
    return signature if isinstance(signature, dict) else None


def _metrics_snapshot(session: Session, run_id: uuid.UUID) -> dict[str, float | None]:
    rows = session.execute(
        select(RunLatestMetric.key, RunLatestMetric.value, RunLatestMetric.is_nan).where(
            RunLatestMetric.run_id == run_id
        )
    )
    # JSON has no NaN: a NaN metric is kept as null.
    return {key: (None if is_nan else value) for key, value, is_nan in rows}


def _next_number(session: Session, model: Model) -> int:
    return session.execute(
        update(Model)
        .where(Model.id == model.id)
        .values(last_version=Model.last_version + 1, updated_at=utcnow())
        .returning(Model.last_version)
    ).scalar_one()


def _event_payload(model: Model, version: ModelVersion) -> dict[str, Any]:
    return {
        "model_id": str(model.id),
        "model_name": model.name,
        "project_id": str(model.project_id),
        "model_version_id": str(version.id),
        "version": version.version,
        "stage": version.stage,
    }


def _describe(session: Session, action: str, version: ModelVersion, project: Project, /, **details: Any) -> None:
    audit.describe_project_object(session, project, action, "model_version", version.id, details)


def create_version(
    session: Session,
    access: Access,
    model: Model,
    source: Source,
    *,
    store: ArtifactStore,
    description: str | None = None,
    tags: dict[str, str] | None = None,
    run_link: str | None = None,
) -> ModelVersion:
    project = access.require_project(model.project_id, WRITE)
    tags = models_domain.validate_tags(tags)
    number = _next_number(session, model)
    return _add_version(
        session,
        access,
        project,
        model,
        source,
        number=number,
        store=store,
        description=description,
        tags=tags,
        run_link=run_link,
    )


def create_uploaded_version(
    session: Session,
    access: Access,
    model: Model,
    files: Sequence[tuple[str, Any]],
    *,
    store: ArtifactStore,
    description: str | None = None,
    tags: dict[str, str] | None = None,
) -> ModelVersion:
    """A version from uploaded files (relative path, binary stream), written to the artifact store."""
    project = access.require_project(model.project_id, WRITE)
    if not files:
        raise InvalidParameter("Upload at least one file (the model directory, e.g. MLmodel and its files)")
    tags = models_domain.validate_tags(tags)
    number = _next_number(session, model)
    version_id = uuid.uuid4()
    # Keyed by the version's id, not its number: a rolled-back upload gives its number back but leaves its files.
    path = artifact_locations.version_upload_path(model.id, version_id)
    artifact_uri = artifact_locations.artifacts_uri(path)
    prefix = artifact_locations.project_key(project, path)
    for path, stream in files:
        store.write(f"{prefix}/{safe_key(path)}", iter(partial(stream.read, CHUNK_SIZE), b""))
    return _add_version(
        session,
        access,
        project,
        model,
        Source(uri="upload", artifact_uri=artifact_uri),
        number=number,
        store=store,
        description=description,
        tags=tags,
        version_id=version_id,
        audit_details={"files": len(files)},
    )


def _add_version(
    session: Session,
    access: Access,
    project: Project,
    model: Model,
    source: Source,
    *,
    number: int,
    store: ArtifactStore,
    description: str | None,
    tags: dict[str, str],
    run_link: str | None = None,
    version_id: uuid.UUID | None = None,
    audit_details: dict[str, Any] | None = None,
) -> ModelVersion:
    """Version `number` of `model` from `source` (files already in place), with its event and audit line."""
    version = ModelVersion(
        id=version_id or uuid.uuid4(),
        model_id=model.id,
        version=number,
        stage="development",
        status="READY",
        description=description,
        source=source.uri,
        artifact_uri=source.artifact_uri,
        run_id=source.run.id if source.run else None,
        logged_model_id=source.logged_model.id if source.logged_model else None,
        run_link=run_link,
        signature=read_signature(store, project, source.artifact_uri),
        metrics=_metrics_snapshot(session, source.run.id) if source.run else {},
        tags=tags,
        created_by=access.principal.user_id,
    )
    session.add(version)
    session.flush()
    events.emit(
        session,
        "model_version.created",
        {**_event_payload(model, version), "source": source.uri, "run_id": source.run.id.hex if source.run else None},
        organization_id=project.organization_id,
        project_id=project.id,
    )
    _describe(
        session,
        "model_version.create",
        version,
        project,
        model=model.name,
        version=number,
        source=source.uri,
        **(audit_details or {}),
    )
    return version


# --- changing --------------------------------------------------------------------------------------


def _lock_version(session: Session, version: ModelVersion) -> ModelVersion:
    """The version's row lock. Whoever also needs the model's lock takes that one first (one order, no
    deadlocks); edits of a version alone (description, tags) leave the model row alone."""
    session.execute(
        select(ModelVersion)
        .where(ModelVersion.id == version.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if version.deleted_at is not None:
        raise _not_found(version.id)
    return version


def update_version(session: Session, access: Access, version: ModelVersion, *, changes: dict[str, Any]) -> ModelVersion:
    """Apply description and/or tags (tags replace the whole set)."""
    project = access.require_project(version.model.project_id, WRITE)
    _lock_version(session, version)
    if "description" in changes:
        version.description = changes["description"]
    if "tags" in changes:
        version.tags = models_domain.validate_tags(changes["tags"])
    session.flush()
    _describe(session, "model_version.update", version, project, fields=sorted(changes))
    return version


def set_tag(session: Session, access: Access, version: ModelVersion, key: str, value: str) -> None:
    access.require_project(version.model.project_id, WRITE)
    models_domain.validate_tag(key, value)
    _lock_version(session, version)
    version.tags = {**version.tags, key: value}


def delete_tag(session: Session, access: Access, version: ModelVersion, key: str) -> None:
    access.require_project(version.model.project_id, WRITE)
    _lock_version(session, version)
    if key in version.tags:
        version.tags = {k: v for k, v in version.tags.items() if k != key}


def _move(
    session: Session,
    access: Access,
    project: Project,
    version: ModelVersion,
    to_stage: str,
    comment: str | None,
) -> ModelVersionTransition:
    record = ModelVersionTransition(
        model_version_id=version.id,
        from_stage=version.stage,
        to_stage=to_stage,
        comment=comment,
        actor_id=access.principal.user_id,
        created_at=utcnow(),
    )
    session.add(record)
    events.emit(
        session,
        "model_version.stage_changed",
        {
            **_event_payload(version.model, version),
            "from_stage": version.stage,
            "to_stage": to_stage,
            "comment": comment,
            "actor_id": str(access.principal.user_id),
        },
        organization_id=project.organization_id,
        project_id=project.id,
    )
    version.stage = to_stage
    return record


def transition_stage(
    session: Session,
    access: Access,
    version: ModelVersion,
    to_stage: str,
    *,
    comment: str | None = None,
    archive_existing: bool = False,
) -> list[ModelVersionTransition]:
    """Move a version to `to_stage`; returns the transitions made (the archived versions' first)."""
    validate_stage(to_stage)
    if archive_existing and to_stage not in ACTIVE_STAGES:
        raise InvalidParameter(
            f"Cannot archive existing versions when moving to '{to_stage}': only for {', '.join(ACTIVE_STAGES)}"
        )
    model = version.model
    project = access.require_project(model.project_id, WRITE)
    models_domain.lock(session, model)
    _lock_version(session, version)
    # Checked after the lock: the stage the version is leaving is the one committed last.
    if to_stage in ADMIN_STAGES or version.stage in ADMIN_STAGES:
        access.require_project(model.project_id, WRITE, min_role="admin")
    made: list[ModelVersionTransition] = []
    archived: list[int] = []
    if archive_existing:
        others = session.scalars(
            select(ModelVersion)
            .where(
                ModelVersion.model_id == model.id,
                ModelVersion.stage == to_stage,
                ModelVersion.id != version.id,
                ModelVersion.deleted_at.is_(None),
            )
            .order_by(ModelVersion.version)
            .execution_options(populate_existing=True)
        ).all()
        note = f"Archived as version {version.version} moved to {to_stage}"
        made.extend(_move(session, access, project, other, "archived", note) for other in others)
        archived = [other.version for other in others]
    if version.stage != to_stage:
        made.append(_move(session, access, project, version, to_stage, comment))
    if made:
        models_domain.touch(model)
    session.flush()
    _describe(
        session,
        "model_version.transition",
        version,
        project,
        model=model.name,
        version=version.version,
        to_stage=to_stage,
        archived_versions=archived,
    )
    return made


def delete_version(session: Session, access: Access, version: ModelVersion) -> None:
    """Soft delete; its aliases go (as in MLflow). A production version takes an admin to delete."""
    model = version.model
    project = access.require_project(model.project_id, WRITE)
    models_domain.lock(session, model)
    _lock_version(session, version)
    if version.stage in ADMIN_STAGES:
        access.require_project(model.project_id, WRITE, min_role="admin")
    for alias in session.scalars(select(ModelAlias).where(ModelAlias.model_version_id == version.id)).all():
        session.delete(alias)
    version.deleted_at = utcnow()
    models_domain.touch(model)
    session.flush()
    _describe(session, "model_version.delete", version, project, model=model.name, version=version.version)


def set_alias(session: Session, access: Access, model: Model, alias: str, version: ModelVersion) -> ModelAlias:
    """Point `alias` at `version`, moving it from wherever it pointed (atomically: one row per alias)."""
    project = access.require_project(model.project_id, WRITE)
    validate_alias(alias)
    if version.model_id != model.id:
        raise InvalidParameter("The version does not belong to this model")
    models_domain.lock(session, model)
    _lock_version(session, version)
    row = session.get(ModelAlias, (model.id, alias), populate_existing=True)
    previous = row.model_version.version if row is not None else None
    if row is None:
        row = ModelAlias(model_id=model.id, alias=alias, model_version_id=version.id)
        session.add(row)
    row.model_version_id = version.id
    row.updated_by = access.principal.user_id
    row.updated_at = utcnow()
    models_domain.touch(model)
    session.flush()
    session.expire(row, ["model_version"])
    if previous != version.version:
        events.emit(
            session,
            "model_version.alias_moved",
            {**_event_payload(model, version), "alias": alias, "from_version": previous, "to_version": version.version},
            organization_id=project.organization_id,
            project_id=project.id,
        )
    models_domain.describe(
        session, "model.alias_set", model, project, alias=alias, version=version.version, previous_version=previous
    )
    return row


def delete_alias(session: Session, access: Access, model: Model, alias: str) -> None:
    project = access.require_project(model.project_id, WRITE)
    models_domain.lock(session, model)
    row = session.get(ModelAlias, (model.id, alias), populate_existing=True)
    if row is None:
        return
    previous = row.model_version.version
    session.delete(row)
    models_domain.touch(model)
    session.flush()
    events.emit(
        session,
        "model_version.alias_moved",
        {
            "model_id": str(model.id),
            "model_name": model.name,
            "project_id": str(model.project_id),
            "alias": alias,
            "from_version": previous,
            "to_version": None,
        },
        organization_id=project.organization_id,
        project_id=project.id,
    )
    models_domain.describe(session, "model.alias_delete", model, project, alias=alias, previous_version=previous)
