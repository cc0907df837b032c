"""POST /api/v2/alerts on its hot path (services/notifier/api/alertmanager.py, `hot_post_alerts`), through
the live server: once the caller's role is remembered, the alerts are committed by one statement with the
same events and audit row as the usual endpoint writes, and what the hot path does not serve (bad input,
no caller, a key without the scope) gets the usual answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select

from services.notifier.domain import intake
from shared.db.models import AuditLog, OutboxEvent
from tests import factories


@pytest.fixture
def tenant(db, settings) -> factories.Tenant:
    with db.session_scope() as session:
        return factories.make_tenant(session, jwt_secret=settings.jwt_secret)


def _alerts(now: datetime, tag: str) -> list[dict]:
    return [
        {
            "labels": {"alertname": "HighLatency", "severity": "critical", "tag": tag},
            "annotations": {"summary": "p99 above 1 s"},
            "startsAt": (now - timedelta(minutes=5)).isoformat(),
            "endsAt": (now + timedelta(minutes=4)).isoformat(),
            "generatorURL": "http://prometheus:9090/graph",
        },
        {"labels": {"alertname": "DiskFull", "tag": tag}, "endsAt": (now - timedelta(seconds=30)).isoformat()},
        {"labels": {"alertname": "QueueBacklog", "tag": tag}, "someFieldOfANewerPrometheus": True},
    ]


def _comparable(payload: dict) -> dict:
    # A post's own moment shows in the times it fills in (resolve_timeout from now).
    return {key: value for key, value in payload.items() if key not in ("ends_at", "starts_at")} | {
        "labels": {name: value for name, value in payload["labels"].items() if name != "tag"}
    }


def test_posted_alerts_are_committed_alike_on_the_hot_path(live_server, db, tenant, monkeypatch):
    served_hot = []
    commit = intake.commit_alertmanager_alerts

    async def counted(*args, **kwargs):
        served_hot.append(len(args[2]))
        return await commit(*args, **kwargs)

    monkeypatch.setattr(intake, "commit_alertmanager_alerts", counted)
    now = datetime.now(UTC)
    with httpx.Client(base_url=live_server.url, headers=tenant.headers, timeout=30) as client:
        for tag in ("usual", "hot"):
            answer = client.post("/api/v2/alerts", json=_alerts(now, tag))
            assert answer.status_code == 200 and answer.json() is None, answer.text
        assert served_hot == [3], "the first call remembers the caller's role; the second is served hot"

        # What the hot path leaves: the usual answers.
        assert client.post("/api/v2/alerts", json=[{"labels": {}}]).status_code == 422
        assert client.post("/api/v2/alerts", json=[]).status_code == 200
        assert httpx.post(f"{live_server.url}/api/v2/alerts", json=_alerts(now, "x")).status_code == 401
        assert served_hot == [3]

    with db.session_scope() as session:
        events = session.scalars(
            select(OutboxEvent).where(
                OutboxEvent.organization_id == tenant.org_id, OutboxEvent.event_type == intake.ALERTMANAGER_EVENT
            )
        ).all()
        audits = session.scalars(
            select(AuditLog).where(AuditLog.organization_id == tenant.org_id, AuditLog.action == "alerts.post")
        ).all()
        by_tag: dict[str, list[dict]] = {"usual": [], "hot": []}
        for event in events:
            by_tag[event.payload["labels"]["tag"]].append(event.payload)
        assert len(by_tag["usual"]) == len(by_tag["hot"]) == 3
        key = lambda payload: payload["labels"]["alertname"]  # noqa: E731
        assert [_comparable(p) for p in sorted(by_tag["hot"], key=key)] == [
            _comparable(p) for p in sorted(by_tag["usual"], key=key)
        ]
        statuses = {payload["labels"]["alertname"]: payload["status"] for payload in by_tag["hot"]}
        assert statuses == {"HighLatency": "firing", "DiskFull": "resolved", "QueueBacklog": "firing"}

        hot_audit = [row for row in audits if row.details == {"alerts": 3}]
        assert len(hot_audit) == 2  # the usual and the hot post (the empty one says 0)
        shape = {(row.object_type, row.outcome, row.status_code, row.path, row.actor_user_id) for row in hot_audit}
        assert shape == {("event", "success", 200, "/api/v2/alerts", tenant.user_id)}


def test_a_key_without_the_scope_is_refused_as_usual(live_server, db, settings):
    with db.session_scope() as session:
        tenant = factories.make_tenant(session, jwt_secret=settings.jwt_secret, scopes=["notifications:read"])
    reader = tenant.api_key
    now = datetime.now(UTC)
    headers = {"Authorization": f"Bearer {reader}"}
    for _ in range(2):
        refused = httpx.post(f"{live_server.url}/api/v2/alerts", json=_alerts(now, "r"), headers=headers)
        assert refused.status_code == 403, refused.text
