"""Alerts raised by checks: one open alert per (monitor, kind), updated by later checks, resolved by a
clean one. Every firing, severity change and resolution goes to the notifier through the outbox."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.monitor.domain.visibility import READ, WRITE, require_visible
from shared.core import audit, events
from shared.core.auth import Access
from shared.core.errors import InvalidState, NotFound
from shared.core.pagination import RowPage, paginate
from shared.db.models import Alert, Deployment, Model, ModelMonitoring, ModelVersion, Project

DATA_DRIFT = "data_drift"
QUALITY = "quality"
RESOLVED = "resolved"
STATEFUL_EVENTS = ("alert.firing", "alert.resolved")


@dataclass(frozen=True)
class Finding:
    """What one check says about one alert kind: firing (with severity), clean, or nothing to say."""

    kind: str
    firing: bool
    severity: str
    title: str
    details: dict[str, Any]


def fingerprint(monitor_id: uuid.UUID, kind: str) -> str:
    return hashlib.sha256(f"tessera-monitor:{monitor_id}:{kind}".encode()).hexdigest()


def severity_for(share: float, bands: list[dict[str, Any]]) -> str:
    """The band with the highest `min_share` not above `share` (bands are kept sorted)."""
    severity = bands[0]["severity"]
    for band in bands:
        if share >= band["min_share"]:
            severity = band["severity"]
    return severity


def _target_labels(session: Session, monitor: ModelMonitoring) -> dict[str, str]:
    """Model, version and deployment names, so notifier rules can match them."""
    labels: dict[str, str] = {}
    version_id = monitor.model_version_id
    if monitor.deployment_id is not None:
        deployment = session.get(Deployment, monitor.deployment_id)
        if deployment is not None:
            labels["deployment"] = deployment.name
            version_id = version_id or deployment.model_version_id
    if version_id is not None:
        row = session.execute(
            select(Model.name, ModelVersion.version)
            .join(Model, Model.id == ModelVersion.model_id)
            .where(ModelVersion.id == version_id)
        ).first()
        if row is not None:
            labels["model"], labels["version"] = row[0], str(row[1])
    return labels


def _emit(session: Session, event_type: str, alert: Alert, project: Project, public_url: str) -> None:
    labels = alert.labels
    payload = {
        "alertname": f"monitor_{alert.kind}",
        "kind": alert.kind,
        "alert_id": str(alert.id),
        "monitor_id": str(alert.monitor_id),
        "report_id": str(alert.report_id) if alert.report_id else None,
        "fingerprint": alert.fingerprint,
        "severity": alert.severity,
        "status": "resolved" if alert.status == RESOLVED else "firing",
        "title": alert.title,
        "starts_at": alert.started_at.isoformat(),
        "ends_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
        "url": f"{public_url.rstrip('/')}/api/v1/alerts/{alert.id}",
        "model_name": labels.get("model"),
        "version": labels.get("version"),
        "deployment_name": labels.get("deployment"),
        "labels": labels,
        "details": alert.details,
    }
    if event_type not in STATEFUL_EVENTS:
        # A one-shot notice for the notifier (no state, no fingerprint): it must not merge into the alert.
        for key in ("status", "fingerprint", "ends_at"):
            payload.pop(key)
    events.emit(session, event_type, payload, organization_id=project.organization_id, project_id=project.id)


def apply_findings(
    session: Session,
    monitor: ModelMonitoring,
    report_id: uuid.UUID,
    findings: list[Finding],
    now: datetime,
    public_url: str,
) -> None:
    """Open, update or resolve the monitor's alerts. The caller holds the monitor row lock, so two
    checks of one monitor cannot both open an alert of one kind."""
    if not findings:
        return
    project = session.get_one(Project, monitor.project_id)
    open_alerts = {
        alert.kind: alert
        for alert in session.scalars(select(Alert).where(Alert.monitor_id == monitor.id, Alert.status != RESOLVED))
    }
    target = None
    for finding in findings:
        alert = open_alerts.get(finding.kind)
        if finding.firing:
            target = target if target is not None else _target_labels(session, monitor)
            labels = {"monitor": monitor.name, "kind": finding.kind, "severity": finding.severity, **target}
            if project is not None:
                labels["project"] = project.slug
            if alert is None:
                alert = Alert(
                    id=uuid.uuid4(),
                    monitor_id=monitor.id,
                    project_id=monitor.project_id,
                    kind=finding.kind,
                    fingerprint=fingerprint(monitor.id, finding.kind),
                    status="firing",
                    started_at=now,
                    created_at=now,
                )
                session.add(alert)
                changed = True
            else:
                changed = alert.severity != finding.severity
            alert.report_id, alert.severity, alert.title = report_id, finding.severity, finding.title
            alert.details, alert.labels, alert.updated_at = finding.details, labels, now
            session.flush()
            # A repeat of the same verdict updates the row quietly: the notifier already knows.
            if changed:
                _emit(session, "alert.firing", alert, project, public_url)
                if finding.kind == DATA_DRIFT:
                    _emit(session, "drift.detected", alert, project, public_url)
        elif alert is not None:
            alert.report_id = report_id
            _resolve(session, alert, project, now, public_url)


def resolve_open(session: Session, monitor: ModelMonitoring, now: datetime, public_url: str) -> None:
    project = session.get_one(Project, monitor.project_id)
    for alert in session.scalars(select(Alert).where(Alert.monitor_id == monitor.id, Alert.status != RESOLVED)):
        _resolve(session, alert, project, now, public_url)


def _resolve(session: Session, alert: Alert, project: Project, now: datetime, public_url: str) -> None:
    alert.status, alert.resolved_at, alert.updated_at = RESOLVED, now, now
    session.flush()
    _emit(session, "alert.resolved", alert, project, public_url)


def _get(session: Session, access: Access, alert_id: uuid.UUID, scope: str) -> Alert:
    alert = session.get(Alert, alert_id)
    if alert is None:
        raise NotFound(f"Alert '{alert_id}' does not exist")
    require_visible(access, alert.project_id, scope, f"Alert '{alert_id}'")
    return alert


def get_alert(session: Session, access: Access, alert_id: uuid.UUID) -> Alert:
    return _get(session, access, alert_id, READ)


def list_alerts(
    session: Session,
    access: Access,
    *,
    monitor_id: uuid.UUID | None,
    status: str | None,
    page_token: str | None,
    max_results: int,
    severity: str | None = None,
    project_id: uuid.UUID | None = None,
    label: tuple[str, str] | None = None,
) -> RowPage:
    query = select(Alert).where(Alert.project_id.in_(access.readable_project_ids(READ)))
    if monitor_id is not None:
        query = query.where(Alert.monitor_id == monitor_id)
    if status is not None:
        query = query.where(Alert.status == status)
    if severity is not None:
        query = query.where(Alert.severity == severity)
    if project_id is not None:
        query = query.where(Alert.project_id == project_id)
    if label is not None:
        query = query.where(Alert.labels[label[0]].as_string() == label[1])
    return paginate(
        session,
        query,
        created_col=Alert.started_at,
        id_col=Alert.id,
        page_token=page_token,
        max_results=max_results,
        newest_first=True,
    )


def acknowledge(session: Session, access: Access, alert_id: uuid.UUID, now: datetime) -> Alert:
    """Someone is on it: the alert stays open (later checks still update or resolve it)."""
    alert = _get(session, access, alert_id, WRITE)
    if alert.status == RESOLVED:
        raise InvalidState("A resolved alert cannot be acknowledged")
    alert.status, alert.acknowledged_at, alert.acknowledged_by = "acknowledged", now, access.principal.user_id
    alert.updated_at = now
    session.flush()
    _describe(session, alert, "alert.acknowledge")
    return alert


def resolve(session: Session, access: Access, alert_id: uuid.UUID, now: datetime, public_url: str) -> Alert:
    """Closed by hand; if the next check still sees the problem, a new alert fires."""
    alert = _get(session, access, alert_id, WRITE)
    if alert.status == RESOLVED:
        raise InvalidState("The alert is already resolved")
    project = session.get_one(Project, alert.project_id)
    _resolve(session, alert, project, now, public_url)
    _describe(session, alert, "alert.resolve")
    return alert


def _describe(session: Session, alert: Alert, action: str) -> None:
    audit.describe_project_object(session, session.get_one(Project, alert.project_id), action, "alert", alert.id)
