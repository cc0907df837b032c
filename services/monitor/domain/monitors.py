"""Monitors: what is watched (a deployment or a model version), against which reference, how often."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.monitor.domain import alerts, reference, schedule
from services.monitor.domain.drift import DriftOptions
from services.monitor.domain.visibility import READ, WRITE, require_visible
from services.monitor.schemas import DEFAULT_SEVERITY_BANDS, MonitorCreate, MonitorUpdate, RunArtifact
from shared.core import artifact_locations, audit, served_predictions
from shared.core.artifacts import ArtifactStore
from shared.core.auth import Access
from shared.core.errors import AlreadyExists, InvalidParameter, NotFound
from shared.core.model_refs import VersionRef, resolve_version
from shared.core.pagination import RowPage, paginate
from shared.db.models import (
    DataDriftReport,
    Deployment,
    Experiment,
    ExperimentRun,
    ModelMonitoring,
    MonitorCheckRun,
    Project,
)

DEFAULT_INTERVAL_S = 3600
DEFAULT_WINDOW_S = 86400
DEFAULT_MIN_ROWS = 100
_TRACKING_READ = "tracking:read"


@dataclass(frozen=True)
class ReferenceUpload:
    data: bytes
    filename: str


def get_monitor(session: Session, access: Access, monitor_id: uuid.UUID, scope: str = READ) -> ModelMonitoring:
    monitor = session.get(ModelMonitoring, monitor_id)
    if monitor is None or monitor.deleted_at is not None:
        raise NotFound(f"Monitor '{monitor_id}' does not exist")
    require_visible(access, monitor.project_id, scope, f"Monitor '{monitor_id}'")
    return monitor


def describe(session: Session, monitor: ModelMonitoring, action: str, details: dict[str, Any] | None = None) -> None:
    """Name the request's action on `monitor` for its audit row."""
    project = session.get_one(Project, monitor.project_id)
    audit.describe_project_object(session, project, action, "monitor", monitor.id, details)


def list_monitors(
    session: Session, access: Access, project_id: uuid.UUID | None, *, page_token: str | None, max_results: int
) -> RowPage:
    query = select(ModelMonitoring).where(
        ModelMonitoring.deleted_at.is_(None), ModelMonitoring.project_id.in_(access.readable_project_ids(READ))
    )
    if project_id is not None:
        query = query.where(ModelMonitoring.project_id == project_id)
    return paginate(
        session,
        query,
        created_col=ModelMonitoring.created_at,
        id_col=ModelMonitoring.id,
        page_token=page_token,
        max_results=max_results,
        newest_first=True,
    )


def monitor_rows(
    session: Session,
    access: Access,
    monitor_id: uuid.UUID,
    table: type[MonitorCheckRun | DataDriftReport],
    *,
    page_token: str | None,
    max_results: int,
) -> RowPage:
    """One page, newest first, of a readable monitor's check runs or drift reports."""
    get_monitor(session, access, monitor_id, READ)
    return paginate(
        session,
        select(table).where(table.monitor_id == monitor_id),
        created_col=table.created_at,
        id_col=table.id,
        page_token=page_token,
        max_results=max_results,
        newest_first=True,
    )


def _deployment_in(session: Session, project: Project, deployment_id: uuid.UUID) -> Deployment:
    deployment = session.get(Deployment, deployment_id)
    if deployment is None or deployment.deleted_at is not None or deployment.project_id != project.id:
        raise NotFound(f"Deployment '{deployment_id}' does not exist")
    return deployment


def _check_target(
    session: Session, project: Project, deployment_id: uuid.UUID | None, version: VersionRef | None
) -> uuid.UUID | None:
    """The target exists in the project; the id of the model version it names, if any."""
    if deployment_id is not None:
        _deployment_in(session, project, deployment_id)
    return resolve_version(session, project.id, version).id if version is not None else None


def _run_artifact(session: Session, access: Access, store: ArtifactStore, source: RunArtifact) -> pa.Table:
    """A tracked run's artifact, if the caller may read the run's project in tracking (missing and invisible
    runs look the same, as in tracking's API)."""
    missing = NotFound(f"Run with id={source.run_id.hex} not found")
    run = session.execute(
        select(ExperimentRun.artifact_uri, Experiment.project_id)
        .join(Experiment, Experiment.id == ExperimentRun.experiment_id)
        .where(ExperimentRun.id == source.run_id)
    ).first()
    if run is None:
        raise missing
    try:
        project = access.require_project(run.project_id, _TRACKING_READ)
    except NotFound:
        raise missing from None
    absent = NotFound(f"Run '{source.run_id}' has no artifact '{source.path}'")
    key = artifact_locations.uri_key(project, f"{run.artifact_uri}/{source.path}") if run.artifact_uri else None
    if key is None:
        raise absent
    try:
        data = reference.read_stored(store, key)
    except NotFound:
        raise absent from None
    return reference.read_table_bytes(data, f"Artifact '{source.path}'")


def _config(spec: MonitorCreate | MonitorUpdate, current: dict[str, Any]) -> dict[str, Any]:
    config = {
        "prediction_column": current.get("prediction_column", "prediction"),
        "drift_share": current.get("drift_share", 0.5),
        "methods": current.get("methods", {}),
        "thresholds": current.get("thresholds", {}),
        "severity_bands": current.get("severity_bands", [band.model_dump() for band in DEFAULT_SEVERITY_BANDS]),
        "quality": current.get("quality"),
        "retention_days": current.get("retention_days"),
    }
    keys = {"prediction_column", "drift_share", "methods", "thresholds", "severity_bands", "quality", "retention_days"}
    # Only the fields this request set, but each with its nested defaults filled in.
    given = spec.model_dump(include=keys & spec.model_fields_set, mode="json")
    config.update(given)
    config["severity_bands"] = sorted(config["severity_bands"], key=lambda band: band["min_share"])
    try:
        DriftOptions(drift_share=config["drift_share"], per_column_method=config["methods"])
    except ValueError as error:
        raise InvalidParameter(f"methods: {error}") from None
    return config


def drift_options(monitor: ModelMonitoring) -> DriftOptions:
    config = monitor.config
    return DriftOptions(
        drift_share=config["drift_share"],
        per_column_method=config["methods"],
        per_column_threshold=config["thresholds"],
    )


def _schedule(monitor: ModelMonitoring, spec: MonitorCreate | MonitorUpdate, now: datetime) -> None:
    if spec.schedule_cron is not None:
        monitor.schedule_cron, monitor.schedule_interval_s = schedule.validate_cron(spec.schedule_cron), None
    elif spec.schedule_interval_s is not None:
        monitor.schedule_interval_s, monitor.schedule_cron = spec.schedule_interval_s, None
    elif monitor.schedule_interval_s is None and monitor.schedule_cron is None:
        monitor.schedule_interval_s = DEFAULT_INTERVAL_S
    # Beat reads this column at every tick, so a new schedule needs no beat restart.
    monitor.next_check_at = next_check_after(monitor, now)


def next_check_after(monitor: ModelMonitoring, moment: datetime) -> datetime:
    return schedule.next_slot(
        interval_s=monitor.schedule_interval_s, cron=monitor.schedule_cron, anchor=monitor.created_at, after=moment
    )


def _set_reference(
    session: Session,
    access: Access,
    store: ArtifactStore,
    monitor: ModelMonitoring,
    project: Project,
    spec: MonitorCreate | MonitorUpdate,
    upload: ReferenceUpload | None,
    now: datetime,
) -> None:
    """Read the new reference (an upload, a run's artifact, or the stored one when only the columns
    change), infer the schema and profile it once."""
    if upload is not None and spec.reference_run is not None:
        raise InvalidParameter("Give the reference as an uploaded file or as reference_run, not both")
    if upload is not None:
        table = reference.read_table_bytes(upload.data, f"Reference file '{upload.filename}'")
    elif spec.reference_run is not None:
        table = _run_artifact(session, access, store, spec.reference_run)
    elif monitor.reference_uri:
        table = reference.read_table_bytes(reference.read_stored(store, monitor.reference_uri), "Stored reference")
    else:
        raise InvalidParameter("A monitor needs reference data: upload a `reference` file or give reference_run")
    if table.num_rows == 0:
        raise InvalidParameter("The reference data has no rows")
    overrides: Mapping[str, str]
    overrides, features = spec.columns or {}, spec.features
    if upload is None and spec.reference_run is None and monitor.column_schema:
        # Same data as before: keep the earlier column choices unless this update names new ones.
        overrides = {**reference.named_types(monitor.column_schema), **overrides}
        features = features if features is not None else list(monitor.column_schema["columns"])
    schema = reference.infer_schema(
        table, overrides=overrides, features=features, prediction_column=monitor.config["prediction_column"]
    )
    monitor.column_schema = schema
    monitor.reference_uri, monitor.reference_profile_uri = reference.store_reference(
        store, reference.monitor_prefix(project.organization_id, project.id, monitor.id), table, schema, now
    )


def create_monitor(
    session: Session,
    access: Access,
    store: ArtifactStore,
    spec: MonitorCreate,
    upload: ReferenceUpload | None,
    now: datetime,
) -> ModelMonitoring:
    project = access.require_project(spec.project_id, WRITE) if spec.project_id else access.default_project(WRITE)
    audit.describe(session, action="monitor.create", object_type="monitor", organization_id=project.organization_id)
    version_id = _check_target(session, project, spec.deployment_id, spec.version_ref())
    taken = session.scalar(
        select(ModelMonitoring.id).where(ModelMonitoring.project_id == project.id, ModelMonitoring.name == spec.name)
    )
    if taken is not None:
        raise AlreadyExists(f"Monitor '{spec.name}' already exists in this project")
    monitor = ModelMonitoring(
        id=uuid.uuid4(),
        project_id=project.id,
        name=spec.name,
        deployment_id=spec.deployment_id,
        model_version_id=version_id,
        enabled=spec.enabled,
        window_s=spec.window_s or DEFAULT_WINDOW_S,
        min_rows=spec.min_rows or DEFAULT_MIN_ROWS,
        config=_config(spec, {}),
        created_by=access.principal.user_id,
        created_at=now,
        updated_at=now,
    )
    _set_reference(session, access, store, monitor, project, spec, upload, now)
    _schedule(monitor, spec, now)
    session.add(monitor)
    session.flush()
    if spec.deployment_id is not None:
        # The deployment's one monitor from now on (another one linked before is unlinked).
        served_predictions.link_monitor(session, _deployment_in(session, project, spec.deployment_id), monitor.id)
    describe(session, monitor, "monitor.create", {"name": monitor.name})
    return monitor


def update_monitor(
    session: Session,
    access: Access,
    store: ArtifactStore,
    monitor_id: uuid.UUID,
    spec: MonitorUpdate,
    upload: ReferenceUpload | None,
    now: datetime,
) -> ModelMonitoring:
    monitor = get_monitor(session, access, monitor_id, WRITE)
    project = session.get_one(Project, monitor.project_id)
    if spec.name is not None and spec.name != monitor.name:
        taken = session.scalar(
            select(ModelMonitoring.id).where(
                ModelMonitoring.project_id == monitor.project_id, ModelMonitoring.name == spec.name
            )
        )
        if taken is not None:
            raise AlreadyExists(f"Monitor '{spec.name}' already exists in this project")
        monitor.name = spec.name
    if "deployment_id" in spec.model_fields_set:
        _link(session, project, monitor, spec.deployment_id)
    monitor.config = _config(spec, monitor.config)
    if spec.window_s is not None:
        monitor.window_s = spec.window_s
    if spec.min_rows is not None:
        monitor.min_rows = spec.min_rows
    reprofile = upload is not None or spec.reference_run is not None or "prediction_column" in spec.model_fields_set
    if reprofile or spec.columns is not None or spec.features is not None:
        _set_reference(session, access, store, monitor, project, spec, upload, now)
    if spec.schedule_cron is not None or spec.schedule_interval_s is not None:
        _schedule(monitor, spec, now)
    session.flush()
    describe(
        session,
        monitor,
        "monitor.update",
        {"fields": sorted(spec.model_fields_set) + (["reference"] if upload else [])},
    )
    return monitor


def _link(session: Session, project: Project, monitor: ModelMonitoring, deployment_id: uuid.UUID | None) -> None:
    if deployment_id is None:
        monitor.deployment_id = None
        return
    served_predictions.link_monitor(session, _deployment_in(session, project, deployment_id), monitor.id)


def set_enabled(
    session: Session, access: Access, monitor_id: uuid.UUID, enabled: bool, now: datetime
) -> ModelMonitoring:
    monitor = get_monitor(session, access, monitor_id, WRITE)
    if enabled and not monitor.enabled:
        # Resume from now on: slots missed while paused are not run after the fact.
        monitor.next_check_at = next_check_after(monitor, now)
    monitor.enabled = enabled
    session.flush()
    describe(session, monitor, "monitor.resume" if enabled else "monitor.pause")
    return monitor


def delete_monitor(session: Session, access: Access, monitor_id: uuid.UUID, now: datetime, public_url: str) -> None:
    """Soft delete; its open alerts are resolved, since no later check will ever resolve them."""
    monitor = get_monitor(session, access, monitor_id, WRITE)
    alerts.resolve_open(session, monitor, now, public_url)
    monitor.deleted_at = now
    monitor.enabled = False
    # Frees the name for a new monitor (the unique key ignores soft deletion).
    monitor.name = f"{monitor.name[:160]}~deleted~{monitor.id.hex[:8]}"
    session.flush()
    describe(session, monitor, "monitor.delete")
