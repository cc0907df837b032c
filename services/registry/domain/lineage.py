"""Lineage of a model version: where it came from (run, experiment, dataset inputs, logged model) and
where it went (deployments serving it, their monitors' latest drift reports).

Each part is read with one query for the whole version, never one per row; each part is shown only if
the caller's key carries the scope of the service that owns it (tracking, deployments, monitoring).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from shared.core.auth import Access
from shared.db.models import (
    DataDriftReport,
    Dataset,
    Deployment,
    Experiment,
    ExperimentRun,
    LoggedModel,
    ModelMonitoring,
    ModelVersion,
    RunDatasetInput,
)

REPORTS_PER_MONITOR = 5


@dataclass
class DatasetInput:
    dataset: Dataset
    tags: dict


@dataclass
class MonitorLineage:
    monitor: ModelMonitoring
    reports: list[DataDriftReport] = field(default_factory=list)


@dataclass
class Lineage:
    version: ModelVersion
    run: ExperimentRun | None = None
    experiment: Experiment | None = None
    logged_model: LoggedModel | None = None
    datasets: list[DatasetInput] = field(default_factory=list)
    deployments: list[Deployment] = field(default_factory=list)
    monitors: list[MonitorLineage] = field(default_factory=list)


def version_lineage(session: Session, access: Access, version: ModelVersion) -> Lineage:
    lineage = Lineage(version=version)
    project_id = version.model.project_id
    if access.principal.has_scope("tracking:read"):
        _add_sources(session, lineage)
    if access.principal.has_scope("deployments:read"):
        lineage.deployments = list(
            session.scalars(
                select(Deployment)
                .where(
                    Deployment.project_id == project_id,
                    Deployment.deleted_at.is_(None),
                    or_(Deployment.model_version_id == version.id, Deployment.canary_version_id == version.id),
                )
                .order_by(Deployment.created_at)
            ).all()
        )
    if access.principal.has_scope("monitoring:read"):
        lineage.monitors = _monitors(session, lineage)
    return lineage


def _add_sources(session: Session, lineage: Lineage) -> None:
    version = lineage.version
    if version.run_id is not None:
        row = session.execute(
            select(ExperimentRun, Experiment)
            .join(Experiment, Experiment.id == ExperimentRun.experiment_id)
            .where(ExperimentRun.id == version.run_id)
        ).first()
        if row is not None:
            lineage.run, lineage.experiment = row.ExperimentRun, row.Experiment
            lineage.datasets = [
                DatasetInput(dataset, tags or {})
                for dataset, tags in session.execute(
                    select(Dataset, RunDatasetInput.tags)
                    .join(RunDatasetInput, RunDatasetInput.dataset_id == Dataset.id)
                    .where(RunDatasetInput.run_id == version.run_id)
                    .order_by(Dataset.name)
                )
            ]
    if version.logged_model_id is not None:
        lineage.logged_model = session.get(LoggedModel, version.logged_model_id)


def _monitors(session: Session, lineage: Lineage) -> list[MonitorLineage]:
    """Monitors watching the version directly or through one of its deployments, each with its latest
    drift reports (a window over the reports, so one query for all monitors)."""
    watched = ModelMonitoring.model_version_id == lineage.version.id
    if lineage.deployments:
        watched = or_(watched, ModelMonitoring.deployment_id.in_([d.id for d in lineage.deployments]))
    monitors = session.scalars(
        select(ModelMonitoring)
        .where(ModelMonitoring.project_id == lineage.version.model.project_id, ModelMonitoring.deleted_at.is_(None))
        .where(watched)
        .order_by(ModelMonitoring.name)
    ).all()
    if not monitors:
        return []
    rank = (
        func.row_number()
        .over(partition_by=DataDriftReport.monitor_id, order_by=DataDriftReport.created_at.desc())
        .label("rank")
    )
    ranked = select(DataDriftReport.id, rank).where(DataDriftReport.monitor_id.in_([m.id for m in monitors])).subquery()
    reports = session.scalars(
        select(DataDriftReport)
        .join(ranked, ranked.c.id == DataDriftReport.id)
        .where(ranked.c.rank <= REPORTS_PER_MONITOR)
        .order_by(DataDriftReport.created_at.desc())
    ).all()
    by_monitor = {m.id: MonitorLineage(m) for m in monitors}
    for report in reports:
        by_monitor[report.monitor_id].reports.append(report)
    return list(by_monitor.values())
