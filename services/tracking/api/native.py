"""Native, tenant-aware tracking views for the platform UI and the other services."""

from __future__ import annotations

import math
import uuid
from typing import Any

from fastapi import APIRouter, Query

from services.tracking.domain import experiments, lineage, metrics, runs, search
from services.tracking.domain.experiments import ExperimentView
from services.tracking.domain.runs import RunView
from services.tracking.schemas import (
    ExperimentPage,
    ExperimentRead,
    MetricSummaryRead,
    MetricValue,
    RunModelVersionRead,
    RunPage,
    RunRead,
)
from shared.core.deps import AccessDep, MaxResults, PageToken, SessionDep
from shared.core.pagination import Page, sequence_page

router = APIRouter(prefix="/api/v1", tags=["tracking"])


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def _experiment(view: ExperimentView) -> ExperimentRead:
    e = view.experiment
    return ExperimentRead(
        id=e.id.hex,
        project_id=e.project_id,
        name=e.name,
        artifact_location=e.artifact_location,
        lifecycle_stage="active" if e.deleted_at is None else "deleted",
        created_at=e.created_at,
        updated_at=e.updated_at,
        tags=dict(view.tags),
    )


def _run(view: RunView) -> RunRead:
    r = view.run
    return RunRead(
        id=r.id.hex,
        experiment_id=r.experiment_id.hex,
        name=r.name,
        status=r.status,
        lifecycle_stage="active" if r.deleted_at is None else "deleted",
        start_time=r.start_time,
        end_time=r.end_time,
        user=r.user_name,
        artifact_uri=r.artifact_uri,
        params=dict(view.params),
        tags=dict(view.tags),
        metrics=[
            MetricValue(key=m.key, value=_finite(m.value), step=m.step, timestamp=m.timestamp) for m in view.metrics
        ],
    )


@router.get(
    "/experiments", response_model=ExperimentPage, summary="Experiments of a project (or of every readable one)"
)
def list_experiments(
    session: SessionDep,
    access: AccessDep,
    project_id: uuid.UUID | None = None,
    filter: str | None = None,
    max_results: int = Query(100, ge=1, le=1000),
    page_token: str | None = None,
) -> ExperimentPage:
    if project_id is not None:
        access.require_project(project_id, experiments.READ)
    found, next_token = experiments.search_experiments(
        session, access, filter_string=filter, max_results=max_results, page_token=page_token, project_id=project_id
    )
    return ExperimentPage(items=[_experiment(v) for v in found], next_page_token=next_token)


@router.get("/runs", response_model=RunPage, summary="Runs of experiments, with MLflow's filter grammar (plus OR)")
def list_runs(
    session: SessionDep,
    access: AccessDep,
    experiment_id: list[str] = Query(...),
    filter: str | None = None,
    order_by: list[str] | None = Query(None),
    max_results: int = Query(100, ge=1, le=1000),
    page_token: str | None = None,
) -> RunPage:
    found, next_token = search.search_runs(
        session,
        access,
        experiment_ids=experiment_id,
        filter_string=filter,
        order_by=order_by,
        max_results=max_results,
        page_token=page_token,
    )
    return RunPage(items=[_run(v) for v in found], next_page_token=next_token)


@router.get("/runs/{run_id}", response_model=RunRead)
def get_run(run_id: str, session: SessionDep, access: AccessDep) -> RunRead:
    return _run(runs.get_run(session, access, run_id))


@router.get("/runs/{run_id}/metrics", response_model=Page[MetricSummaryRead], summary="Per-metric summary of a run")
def run_metrics(
    run_id: str, session: SessionDep, access: AccessDep, page_token: PageToken = None, max_results: MaxResults = 100
) -> dict[str, Any]:
    summaries = [
        MetricSummaryRead(
            key=s.key,
            latest_value=_finite(s.latest_value),
            latest_step=s.latest_step,
            latest_timestamp=s.latest_timestamp,
            min_value=s.min_value,
            max_value=s.max_value,
            count=s.count,
        )
        for s in metrics.metric_summaries(session, access, run_id)
    ]
    return sequence_page(summaries, page_token=page_token, max_results=max_results)


@router.get("/runs/{run_id}/model-versions", response_model=Page[RunModelVersionRead], summary="Lineage")
def run_model_versions(
    run_id: str, session: SessionDep, access: AccessDep, page_token: PageToken = None, max_results: MaxResults = 100
) -> dict[str, Any]:
    found = [RunModelVersionRead(**vars(v)) for v in lineage.model_versions_of_run(session, access, run_id)]
    return sequence_page(found, page_token=page_token, max_results=max_results)
