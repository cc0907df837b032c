"""Alerts raised by monitor checks: list, inspect, acknowledge, resolve."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Query

from services.monitor.domain import alerts
from services.monitor.schemas import AlertRead, AlertStatus, Severity
from shared.core.deps import AccessDep, MaxResults, PageToken, SessionDep, SettingsDep
from shared.core.pagination import Page, entity_page
from shared.db.base import utcnow
from shared.db.models import Alert

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])


@router.get("", response_model=Page[AlertRead], summary="Alerts, latest first")
def list_alerts(
    session: SessionDep,
    access: AccessDep,
    monitor_id: uuid.UUID | None = Query(None),
    status: AlertStatus | None = Query(None),
    severity: Severity | None = Query(None),
    project_id: uuid.UUID | None = Query(None),
    label: str | None = Query(None, max_length=500, pattern=r"^[^=]+=", description="key=value: a label's value"),
    page_token: PageToken = None,
    max_results: MaxResults = 100,
) -> dict[str, Any]:
    key, _, value = (label or "").partition("=")
    return entity_page(
        alerts.list_alerts(
            session,
            access,
            monitor_id=monitor_id,
            status=status,
            severity=severity,
            project_id=project_id,
            label=(key.strip(), value.strip()) if label else None,
            page_token=page_token,
            max_results=max_results,
        )
    )


@router.get("/{alert_id}", response_model=AlertRead, summary="One alert")
def get_alert(alert_id: uuid.UUID, session: SessionDep, access: AccessDep) -> Alert:
    return alerts.get_alert(session, access, alert_id)


@router.post("/{alert_id}/acknowledge", response_model=AlertRead, summary="Acknowledge (it stays open)")
def acknowledge_alert(alert_id: uuid.UUID, session: SessionDep, access: AccessDep) -> Alert:
    return alerts.acknowledge(session, access, alert_id, utcnow())


@router.post("/{alert_id}/resolve", response_model=AlertRead, summary="Resolve by hand")
def resolve_alert(alert_id: uuid.UUID, session: SessionDep, access: AccessDep, settings: SettingsDep) -> Alert:
    return alerts.resolve(session, access, alert_id, utcnow(), settings.public_url)
