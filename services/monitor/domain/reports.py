"""Stored drift reports: JSON per monitor, and the HTML page each check rendered."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.monitor.domain.checks import html_key
from services.monitor.domain.monitors import monitor_rows
from services.monitor.domain.visibility import READ, require_visible
from shared.core.artifacts import ArtifactStore
from shared.core.auth import Access
from shared.core.errors import NotFound
from shared.core.pagination import RowPage
from shared.db.models import DataDriftReport, ModelMonitoring, Project


def get_report(session: Session, access: Access, report_id: uuid.UUID) -> DataDriftReport:
    found = session.execute(
        select(DataDriftReport, ModelMonitoring.project_id)
        .join(ModelMonitoring, ModelMonitoring.id == DataDriftReport.monitor_id)
        .where(DataDriftReport.id == report_id, ModelMonitoring.deleted_at.is_(None))
    ).first()
    if found is None:
        raise NotFound(f"Drift report '{report_id}' does not exist")
    require_visible(access, found.project_id, READ, f"Drift report '{report_id}'")
    return found.DataDriftReport


def list_reports(
    session: Session, access: Access, monitor_id: uuid.UUID, *, page_token: str | None, max_results: int
) -> RowPage:
    return monitor_rows(session, access, monitor_id, DataDriftReport, page_token=page_token, max_results=max_results)


def report_html(session: Session, access: Access, store: ArtifactStore, report_id: uuid.UUID) -> bytes:
    report = get_report(session, access, report_id)
    monitor = session.get_one(ModelMonitoring, report.monitor_id)
    project = session.get_one(Project, monitor.project_id)
    try:
        return b"".join(store.read(html_key(project, monitor.id, report.id)))
    except NotFound:
        raise NotFound(f"Drift report '{report_id}' has no HTML page (status {report.status})") from None
