"""Alertmanager's API v2 for alerts: Prometheus, Grafana or anything else that alerts an Alertmanager
can alert Tessera instead (`alerting.alertmanagers` pointed at Tessera, with an API key as the bearer
credentials), and its alerts go through the same rules, grouping, silences and delivery; amtool and
Grafana's Alertmanager data source list what is firing, and add, list and expire silences (the same
silences as `/api/v1/silences`), in the caller's organization."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

import psycopg
from fastapi import APIRouter, Query
from pydantic import TypeAdapter, ValidationError

from services.notifier.domain import held_alerts, intake
from services.notifier.domain.config import muting
from services.notifier.domain.matchers import MatchType, coerce_matchers, matches_all, parse_matcher
from services.notifier.domain.muting import to_silence
from services.notifier.schemas import (
    AlertmanagerMatcher,
    AlertmanagerStatus,
    AlertReceiver,
    GettableAlert,
    GettableAlertStatus,
    GettableSilence,
    PostableAlert,
    PostableSilence,
    SilenceCreated,
    SilenceStatus,
)
from shared.core import audit, events
from shared.core.auth import remembered_org_permission
from shared.core.deps import AccessDep, SessionDep, SettingsDep
from shared.core.hot_routes import HotRequest, HotRoute, hot_pool_lifespan
from shared.db.base import utcnow
from shared.db.models import NotificationSilence

router = APIRouter(prefix="/api/v2", tags=["alertmanager"], lifespan=hot_pool_lifespan)
# Reported as the uptime's start by /status.
STARTED_AT = utcnow()

_POSTABLE_ALERTS = TypeAdapter(list[PostableAlert])


def post_alerts(body: list[PostableAlert], session: SessionDep, access: AccessDep, settings: SettingsDep) -> None:
    """Each alert becomes a `custom.alertmanager` event; an `endsAt` in the past resolves it."""
    intake.post_alertmanager_alerts(
        session, access, body, utcnow(), timedelta(seconds=settings.notifier_resolve_timeout_s)
    )


async def hot_post_alerts(request: HotRequest) -> bytes | None:
    """`post_alerts` as a hot route (`shared.core.hot_routes`), for a caller whose API key names an
    organization in which it may write notifications, as remembered: the alerts are validated by the same
    schema, their events and the request's audit row committed by one statement, then handed to the
    notifier's handler as a commit of the usual endpoint hands them. Anything else (an unknown caller, bad
    input, an empty list, a statement that failed) is left to the usual endpoint."""
    principal = request.principal
    organization_id = principal.organization_id
    if (
        not request.items
        or organization_id is None
        or not remembered_org_permission(principal, organization_id, "notifications:write")
    ):
        return None
    try:
        alerts = _POSTABLE_ALERTS.validate_python(request.items)
    except ValidationError:
        return None
    resolve_timeout = timedelta(seconds=request.state.settings.notifier_resolve_timeout_s)
    audit_row = audit.success_row_params(principal, request.context)
    try:
        async with request.connection() as conn:
            event_ids = await intake.commit_alertmanager_alerts(
                conn, organization_id, alerts, utcnow(), resolve_timeout, audit_row
            )
    except psycopg.Error:
        # The one statement failed, so nothing was written: the usual endpoint answers (its error, if any).
        return None
    events.announce_committed([(event_id, intake.ALERTMANAGER_EVENT) for event_id in event_ids])
    return b"null"


router.add_api_route(
    "/alerts",
    post_alerts,
    methods=["POST"],
    status_code=200,
    summary="Post alerts (Alertmanager API v2)",
    route_class_override=HotRoute.serving(hot_post_alerts, array_body=True),
)


@router.get("/alerts", response_model=list[GettableAlert], summary="List alerts (Alertmanager API v2)")
def list_alerts(
    session: SessionDep,
    access: AccessDep,
    active: bool = True,
    silenced: bool = True,
    inhibited: bool = True,
    unprocessed: bool = True,
    filter: Annotated[list[str], Query(description='label matchers, e.g. severity=~"crit.*"')] = [],  # noqa: B006
    receiver: Annotated[str | None, Query(description="regex a receiver (rule) name must match")] = None,
) -> list[GettableAlert]:
    """The firing alerts held in the caller's organization; `unprocessed` is accepted for amtool and
    Grafana and changes nothing (Tessera lists what it has processed)."""
    held = held_alerts.active_alerts(
        session,
        access,
        utcnow(),
        matchers=[parse_matcher(text) for text in filter],
        silenced=silenced,
        inhibited=inhibited,
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
                state="suppressed" if item.suppressed else "active",
                silenced_by=item.silenced_by,
                inhibited_by=item.inhibited_by,
            ),
        )
        for item in held
    ]


@router.get("/silences", response_model=list[GettableSilence], summary="List silences (Alertmanager API v2)")
def list_silences(
    session: SessionDep,
    access: AccessDep,
    filter: Annotated[list[str], Query(description="label matchers a silence's own matchers must match")] = [],  # noqa: B006
) -> list[GettableSilence]:
    """A silence is listed when the labels its equality matchers name satisfy every filter (Alertmanager's
    own reading of `filter` for silences)."""
    filters = [parse_matcher(text) for text in filter]
    listed = [_silence(row) for row in muting.all_silences(session, access, None)]
    return [
        silence
        for silence in listed
        if matches_all(filters, {m.name: m.value for m in silence.matchers if not m.is_regex and m.is_equal})
    ]


@router.post("/silences", response_model=SilenceCreated, summary="Create or replace a silence (Alertmanager API v2)")
def post_silence(body: PostableSilence, session: SessionDep, access: AccessDep) -> SilenceCreated:
    """With an `id`, the silence it names is expired and this one replaces it (under a new id)."""
    now = utcnow()
    if body.id is not None:
        muting.expire_silence(session, access, body.id, now)
    row = muting.create_silence(
        session,
        access,
        organization_id=None,
        matchers=[matcher.model_dump(by_alias=True) for matcher in body.matchers],
        starts_at=body.starts_at,
        ends_at=body.ends_at,
        comment=body.comment,
    )
    return SilenceCreated(silence_id=row.id)


@router.get("/silence/{silence_id}", response_model=GettableSilence, summary="One silence (Alertmanager API v2)")
def get_silence(silence_id: uuid.UUID, session: SessionDep, access: AccessDep) -> GettableSilence:
    return _silence(muting.get_silence(session, access, silence_id))


@router.delete("/silence/{silence_id}", status_code=200, summary="Expire a silence (Alertmanager API v2)")
def delete_silence(silence_id: uuid.UUID, session: SessionDep, access: AccessDep) -> None:
    muting.expire_silence(session, access, silence_id, utcnow())


@router.get("/status", response_model=AlertmanagerStatus, summary="Status (Alertmanager API v2)")
def status(access: AccessDep) -> AlertmanagerStatus:
    """What Grafana's data source checks; one logical Alertmanager, so no cluster."""
    return AlertmanagerStatus.for_tessera(STARTED_AT)


def _silence(row: NotificationSilence) -> GettableSilence:
    return GettableSilence(
        id=row.id,
        status=SilenceStatus(state=str(to_silence(row).state_at(utcnow()))),
        updated_at=row.updated_at,
        matchers=[
            AlertmanagerMatcher(
                name=matcher.name,
                value=matcher.value,
                is_regex=matcher.type in (MatchType.REGEX, MatchType.NOT_REGEX),
                is_equal=matcher.type in (MatchType.EQUAL, MatchType.REGEX),
            )
            for matcher in coerce_matchers(row.matchers)
        ],
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        created_by=row.created_by,
        comment=row.comment,
    )
