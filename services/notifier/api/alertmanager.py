"""Alertmanager's API v2 for senders: Prometheus, Grafana or anything else that alerts an Alertmanager
can alert Tessera instead (`alerting.alertmanagers` pointed at Tessera, with an API key as the bearer
credentials), and its alerts go through the same rules, grouping, silences and delivery."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter

from services.notifier.domain import publishing
from services.notifier.schemas import PostableAlert
from shared.core.deps import AccessDep, SessionDep, SettingsDep
from shared.db.base import utcnow

router = APIRouter(prefix="/api/v2/alerts", tags=["alertmanager"])


@router.post("", status_code=200, summary="Post alerts (Alertmanager API v2)")
def post_alerts(body: list[PostableAlert], session: SessionDep, access: AccessDep, settings: SettingsDep) -> None:
    """Each alert becomes a `custom.alertmanager` event; an `endsAt` in the past resolves it."""
    publishing.post_alertmanager_alerts(
        session, access, body, utcnow(), timedelta(seconds=settings.notifier_resolve_timeout_s)
    )
