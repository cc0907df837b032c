"""GET /api/v1/alerts narrowed by severity, project and label, on top of status and monitor."""

from __future__ import annotations

import uuid

from shared.db.models import Alert, ModelMonitoring


def _alerts(db_session, tenant) -> None:
    monitor = ModelMonitoring(project_id=tenant.project_id, name="m", column_schema={}, config={})
    db_session.add(monitor)
    db_session.flush()
    for kind, severity, team in (("data_drift", "critical", "fraud"), ("quality", "warning", "growth")):
        db_session.add(
            Alert(
                monitor_id=monitor.id,
                project_id=tenant.project_id,
                kind=kind,
                fingerprint=uuid.uuid4().hex,
                severity=severity,
                title=f"{kind} alert",
                details={},
                labels={"team": team},
            )
        )
    db_session.flush()


def _titles(client, tenant, **params) -> list[str]:
    response = client.get("/api/v1/alerts", params=params, headers=tenant.headers)
    assert response.status_code == 200, response.text
    return sorted(a["title"] for a in response.json()["items"])


def test_alerts_filter_by_severity_project_and_label(client, db_session, tenant, other_tenant):
    _alerts(db_session, tenant)
    assert _titles(client, tenant, severity="critical") == ["data_drift alert"]
    assert _titles(client, tenant, label="team=growth") == ["quality alert"]
    assert _titles(client, tenant, label="team=nobody") == []
    assert _titles(client, tenant, project_id=str(tenant.project_id)) == ["data_drift alert", "quality alert"]
    assert _titles(client, other_tenant, label="team=growth") == []
    refused = client.get("/api/v1/alerts", params={"label": "no-equals-sign"}, headers=tenant.headers)
    assert refused.status_code == 422 and "label" in refused.json()["message"]
    assert client.get("/api/v1/alerts", params={"severity": "loud"}, headers=tenant.headers).status_code == 422
