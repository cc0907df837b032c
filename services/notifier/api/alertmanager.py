"""Alertmanager's API v2 for alerts: Prometheus, Grafana or anything else that alerts an Alertmanager
can alert Tessera instead (`alerting.alertmanagers` pointed at Tessera, with an API key as the bearer
credentials), and its alerts go through the same rules, grouping, silences and delivery; amtool and
Grafana's Alertmanager data source list what is firing."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from services.notifier.domain import active_alerts, publishing
from services.notifier.domain.matchers import parse_matcher
from services.notifier.schemas import AlertReceiver, GettableAlert, GettableAlertStatus, PostableAlert
from shared.core.deps import AccessDep, SessionDep, SettingsDep
from shared.db.base import utcnow

router = APIRouter(prefix="/api/v2/alerts", tags=["alertmanager"])


@router.post("", status_code=200, summary="Post alerts (Alertmanager API v2)")
def post_alerts(body: list[PostableAlert], session: SessionDep, access: AccessDep, settings: SettingsDep) -> None:
    """Each alert becomes a `custom.alertmanager` event; an `endsAt` in the past resolves it."""
    publishing.post_alertmanager_alerts(
        session, access, body, utcnow(), timedelta(seconds=settings.notifier_resolve_timeout_s)
    )


@router.get("", response_model=list[GettableAlert], summary="List alerts (Alertmanager API v2)")
def list_alerts(
    session: SessionDep,
    access: AccessDep,
    active: bool = True,
    silenced: bool = True,
    inhibited: bool = True,
    unprocessed: bool = True,
    filter: Annotated[list[str], Query(description='label matchers, e.g. severity=~"crit.*"')] = [],  # noqa: B006
    receiver: Annotated[str | None, Query(description="regex a receiver (rule) name must match")] = None,
):
    """The firing alerts held in the caller's organization; `inhibited` and `unprocessed` are accepted
    for amtool and Grafana, and change nothing (Tessera has no inhibition, and lists what it has
    processed)."""
    held = active_alerts.active_alerts(
        session,
        access,
        utcnow(),
        matchers=[parse_matcher(text) for text in filter],
        silenced=silenced,
        active=active,
        receiver=receiver,
    )
    return [
        GettableAlert(
            labels=dict(item.alert.labels),
            annotations=dict(item.alert.annotations),
            starts_at=item.alert.starts_at,
            ends_at=item.alert.ends_at,
            updated_at=item.updated_at,
            generator_url=item.alert.url,
            fingerprint=item.alert.fingerprint,
            receivers=[AlertReceiver(name=name) for name in sorted(item.receivers)],
            status=GettableAlertStatus(
                state="suppressed" if item.suppressed else "active", silenced_by=item.silenced_by
            ),
        )
        for item in held
    ]
