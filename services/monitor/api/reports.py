"""Drift reports as JSON, and as the self-contained HTML page the engine renders."""

from __future__ import annotations

import uuid

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from services.monitor.domain import reports
from services.monitor.schemas import DriftReportRead
from shared.core.artifacts import get_artifact_store
from shared.core.deps import AccessDep, SessionDep, SettingsDep
from shared.db.models import DataDriftReport

router = APIRouter(prefix="/api/v1/drift-reports", tags=["drift reports"])


@router.get("/{report_id}", response_model=DriftReportRead, summary="A drift report (per-column JSON)")
def get_report(report_id: uuid.UUID, session: SessionDep, access: AccessDep) -> DataDriftReport:
    return reports.get_report(session, access, report_id)


@router.get("/{report_id}/html", response_class=HTMLResponse, summary="A drift report as one HTML page")
def get_report_html(
    report_id: uuid.UUID, session: SessionDep, access: AccessDep, settings: SettingsDep
) -> HTMLResponse:
    return HTMLResponse(reports.report_html(session, access, get_artifact_store(settings), report_id))
