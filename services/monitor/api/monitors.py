"""Monitors, their logged predictions and ground truth, check runs and the reports they produced."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, BackgroundTasks, File, Form, Query, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from services.monitor import tasks
from services.monitor.domain import checks, monitors, predictions, reports
from services.monitor.domain.visibility import WRITE
from services.monitor.schemas import (
    CheckRunRead,
    DriftReportSummary,
    GroundTruthBatch,
    GroundTruthLogged,
    MonitorCreate,
    MonitorRead,
    MonitorUpdate,
    PredictionBatch,
    PredictionsLogged,
)
from shared.core.artifacts import get_artifact_store
from shared.core.deps import AccessDep, MaxResults, PageToken, SessionDep, SettingsDep
from shared.core.docs import json_part, schema_ref
from shared.core.errors import TesseraError
from shared.core.pagination import Page, entity_page
from shared.db.base import utcnow
from shared.db.models import ModelMonitoring, MonitorCheckRun

router = APIRouter(prefix="/api/v1/monitors", tags=["monitors"])
ModelT = TypeVar("ModelT", bound=BaseModel)

PARQUET_TYPES = ("application/vnd.apache.parquet", "application/x-parquet", "application/octet-stream")
_SPEC_HELP = "The monitor as JSON (see MonitorCreate / MonitorUpdate)"
_REFERENCE_HELP = "Reference data, CSV or Parquet"


def _parse(schema: type[ModelT], raw: str | bytes, where: str) -> ModelT:
    """A JSON form field or body validated as `schema`; errors look like FastAPI's own (422)."""
    try:
        return schema.model_validate_json(raw)
    except ValidationError as error:
        raise RequestValidationError(
            [{**e, "loc": (where, *e["loc"])} for e in error.errors(include_url=False, include_context=False)]
        ) from None


async def _upload(file: UploadFile | None) -> monitors.ReferenceUpload | None:
    if file is None:
        return None
    return monitors.ReferenceUpload(data=await file.read(), filename=file.filename or "reference")


@router.post("", response_model=MonitorRead, status_code=201, summary="Create a monitor (multipart: spec + reference)")
async def create_monitor(
    session: SessionDep,
    access: AccessDep,
    settings: SettingsDep,
    spec: Annotated[str, Form(description=_SPEC_HELP, json_schema_extra=json_part(MonitorCreate))],
    reference: Annotated[UploadFile | None, File(description=_REFERENCE_HELP)] = None,
) -> ModelMonitoring:
    body = _parse(MonitorCreate, spec, "spec")
    upload = await _upload(reference)
    return monitors.create_monitor(session, access, get_artifact_store(settings), body, upload, utcnow())


@router.get("", response_model=Page[MonitorRead], summary="Monitors the caller can see, newest first")
def list_monitors(
    session: SessionDep,
    access: AccessDep,
    project_id: uuid.UUID | None = Query(None),
    page_token: PageToken = None,
    max_results: MaxResults = 100,
) -> dict[str, Any]:
    return entity_page(
        monitors.list_monitors(session, access, project_id, page_token=page_token, max_results=max_results)
    )


@router.get("/{monitor_id}", response_model=MonitorRead, summary="One monitor")
def get_monitor(monitor_id: uuid.UUID, session: SessionDep, access: AccessDep) -> ModelMonitoring:
    return monitors.get_monitor(session, access, monitor_id)


@router.patch(
    "/{monitor_id}", response_model=MonitorRead, summary="Change a monitor (multipart: spec, optional new reference)"
)
async def update_monitor(
    monitor_id: uuid.UUID,
    session: SessionDep,
    access: AccessDep,
    settings: SettingsDep,
    spec: Annotated[str, Form(description=_SPEC_HELP, json_schema_extra=json_part(MonitorUpdate))] = "{}",
    reference: Annotated[UploadFile | None, File(description=_REFERENCE_HELP)] = None,
) -> ModelMonitoring:
    body = _parse(MonitorUpdate, spec, "spec")
    upload = await _upload(reference)
    return monitors.update_monitor(session, access, get_artifact_store(settings), monitor_id, body, upload, utcnow())


@router.post("/{monitor_id}/pause", response_model=MonitorRead, summary="Stop scheduled checks")
def pause_monitor(monitor_id: uuid.UUID, session: SessionDep, access: AccessDep) -> ModelMonitoring:
    return monitors.set_enabled(session, access, monitor_id, False, utcnow())


@router.post("/{monitor_id}/resume", response_model=MonitorRead, summary="Resume scheduled checks from now on")
def resume_monitor(monitor_id: uuid.UUID, session: SessionDep, access: AccessDep) -> ModelMonitoring:
    return monitors.set_enabled(session, access, monitor_id, True, utcnow())


@router.delete("/{monitor_id}", status_code=204, summary="Delete a monitor")
def delete_monitor(
    monitor_id: uuid.UUID, session: SessionDep, access: AccessDep, settings: SettingsDep, background: BackgroundTasks
) -> Response:
    monitors.delete_monitor(session, access, monitor_id, utcnow(), settings.public_url)
    # After the commit: the upkeep task purges the monitor's files (beat's upkeep does it if this is lost).
    background.add_task(tasks.queue_maintenance, [monitor_id])
    return Response(status_code=204)


@router.post(
    "/{monitor_id}/predictions",
    response_model=PredictionsLogged,
    status_code=201,
    summary="Log a batch of served requests (JSON rows, or a Parquet body)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": schema_ref(PredictionBatch)},
                "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
)
async def log_predictions(
    monitor_id: uuid.UUID, request: Request, session: SessionDep, access: AccessDep, settings: SettingsDep
) -> PredictionsLogged:
    monitor = monitors.get_monitor(session, access, monitor_id, WRITE)
    now = utcnow()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if content_type in PARQUET_TYPES:
        table = predictions.parquet_to_table(body, monitor, now)
    elif content_type == "application/json":
        table = predictions.rows_to_table(_parse(PredictionBatch, body, "body").rows, monitor, now)
    else:
        raise TesseraError(
            "Send application/json rows or an application/vnd.apache.parquet body", code="UNSUPPORTED_MEDIA_TYPE"
        )
    batch = predictions.log_batch(session, get_artifact_store(settings), monitor, table, now)
    return PredictionsLogged(batch_id=batch.id, rows=batch.row_count, first_at=batch.first_at, last_at=batch.last_at)


@router.post("/{monitor_id}/ground-truth", response_model=GroundTruthLogged, summary="Log true outcomes by request id")
def log_ground_truth(
    monitor_id: uuid.UUID, body: GroundTruthBatch, session: SessionDep, access: AccessDep
) -> GroundTruthLogged:
    return GroundTruthLogged(rows=predictions.log_ground_truth(session, access, monitor_id, body.rows, utcnow()))


@router.post("/{monitor_id}/checks", response_model=CheckRunRead, status_code=202, summary="Run a check now")
def run_check_now(
    monitor_id: uuid.UUID, session: SessionDep, access: AccessDep, background: BackgroundTasks
) -> MonitorCheckRun:
    run = checks.request_check(session, access, monitor_id, utcnow())
    # After the response, hence after the commit: the worker must find the run row. Beat's sweep
    # sends it again if this message is lost.
    background.add_task(tasks.queue_checks, [run.id])
    return run


@router.get("/{monitor_id}/checks", response_model=Page[CheckRunRead], summary="Check runs, latest first")
def list_checks(
    monitor_id: uuid.UUID,
    session: SessionDep,
    access: AccessDep,
    page_token: PageToken = None,
    max_results: MaxResults = 100,
) -> dict[str, Any]:
    return entity_page(checks.list_runs(session, access, monitor_id, page_token=page_token, max_results=max_results))


@router.get("/{monitor_id}/checks/{run_id}", response_model=CheckRunRead, summary="One check run: status, progress")
def get_check(monitor_id: uuid.UUID, run_id: uuid.UUID, session: SessionDep, access: AccessDep) -> MonitorCheckRun:
    return checks.get_run(session, access, monitor_id, run_id)


@router.get("/{monitor_id}/reports", response_model=Page[DriftReportSummary], summary="Drift reports, latest first")
def list_reports(
    monitor_id: uuid.UUID,
    session: SessionDep,
    access: AccessDep,
    page_token: PageToken = None,
    max_results: MaxResults = 100,
) -> dict[str, Any]:
    return entity_page(
        reports.list_reports(session, access, monitor_id, page_token=page_token, max_results=max_results)
    )
