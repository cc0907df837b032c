"""Intake, the first stage: what comes in, committed, and turned into alerts.

Alerts come in through the API (`publish_event`: a custom event; `post_alertmanager_alerts`: alerts the
way Prometheus posts them to Alertmanager, `custom.alertmanager` events with Alertmanager's semantics —
identified by labels, resolved once `endsAt` has passed, `resolve_timeout` after the last post without
one), or are any service's own events (a drift check's `drift.detected`, a failed deployment). Either way
each is an outbox event committed before anyone is answered, and its id is handed straight to the
notifier's handler after the commit (the relay and the sweeper cover a hand-off that was lost).

The handler takes its batch with `take_events`: idempotent by event id (a redelivered or re-published
event drops out in one statement). `alert_from_event` makes each event an alert: `alert.firing` /
`alert.resolved` (and any event whose payload says `status: firing|resolved`) are stateful alerts,
identified by the producer's `fingerprint` (else by their labels), that stay in their group until
resolved; every other event is a one-shot alert, notified once, then removed from its group.

Custom event types start with `custom.`: platform event types (model_version.*, deployment.*, alert.*)
reach every subscriber of the platform, and only the platform may claim that they happened.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import orjson
import psycopg
from sqlalchemy import Row, exists, literal, select
from sqlalchemy.orm import Session

from services.notifier.domain import periodic, records
from services.notifier.domain.alerts import Alert
from services.notifier.domain.organizations import resolve_organization
from services.notifier.schemas import PostableAlert
from shared.core import audit, events, quarantine
from shared.core.auth import Access
from shared.core.errors import InvalidParameter, NotFound
from shared.db.base import UTCDateTime
from shared.db.dialect import upsert_insert
from shared.db.models import (
    NotifierProcessedEvent,
    OutboxEvent,
    Project,
)

# The Celery task that feeds `handle_events`, as its quarantine knows it.
EVENTS_CONSUMER = quarantine.Consumer(
    "notifier.handle_events", records.table(OutboxEvent).c.id, records.table(OutboxEvent).c.organization_id
)


def publish_event(
    session: Session,
    access: Access,
    *,
    organization_id: uuid.UUID | None,
    project_id: uuid.UUID | None,
    event_type: str,
    payload: dict[str, Any],
) -> OutboxEvent:
    if not event_type.startswith("custom."):
        raise InvalidParameter("custom event types start with 'custom.'")
    org = resolve_organization(access, organization_id, "notifications:write")
    if project_id is not None and access.require_project(project_id, "notifications:write").organization_id != org.id:
        raise NotFound(f"Project '{project_id}' does not exist")
    row = events.emit(session, event_type, payload, organization_id=org.id, project_id=project_id)
    session.flush()
    audit.describe(
        session,
        action="event.publish",
        object_type="event",
        object_id=row.id,
        organization_id=org.id,
        details={"event_type": event_type},
    )
    return row


ALERTMANAGER_EVENT = "custom.alertmanager"


def post_alertmanager_alerts(
    session: Session, access: Access, alerts: Sequence[PostableAlert], now: datetime, resolve_timeout: timedelta
) -> list[OutboxEvent]:
    """Alerts in Alertmanager's API v2 shape, all in one transaction: an event each, in the organization
    of the caller (its API key's)."""
    org = resolve_organization(access, None, "notifications:write")
    rows = [
        events.emit(
            session, ALERTMANAGER_EVENT, alertmanager_payload(alert, now, resolve_timeout), organization_id=org.id
        )
        for alert in alerts
    ]
    session.flush()
    audit.describe(
        session,
        action="alerts.post",
        object_type="event",
        organization_id=org.id,
        details={"alerts": len(rows)},
    )
    return rows


def alertmanager_payload(alert: PostableAlert, now: datetime, resolve_timeout: timedelta) -> dict[str, Any]:
    """The event payload of an alert posted the Alertmanager way."""
    ends_at = alert.ends_at or now + resolve_timeout
    return {
        "status": "resolved" if ends_at <= now else "firing",
        "labels": alert.labels,
        "annotations": alert.annotations,
        "starts_at": (alert.starts_at or now).isoformat(),
        "ends_at": ends_at.isoformat(),
        "url": alert.generator_url,
    }


# `post_alertmanager_alerts` as one statement on an autocommit connection (the API's hot route): the
# events and the request's audit row (the one the usual endpoint writes) commit together.
_POST_ALERTS = """
WITH posted AS (
    INSERT INTO outbox_events (id, organization_id, event_type, payload, created_at, publish_attempts)
    SELECT id, %(org)s, %(event_type)s, payload::jsonb, %(now)s, 0
    FROM unnest(%(ids)b::uuid[], %(payloads)b::text[]) AS e(id, payload)
)
INSERT INTO audit_logs (id, organization_id, actor_user_id, actor_api_key_id, action, object_type, method, path,
                        ip_address, user_agent, request_id, outcome, status_code, details, created_at)
VALUES (%(audit_id)s, %(org)s, %(audit_user)s, %(audit_key)s, 'alerts.post', 'event', %(audit_method)s,
        %(audit_path)s, %(audit_ip)s, %(audit_agent)s, %(audit_request)s, 'success', 200, %(details)s::jsonb, now())
"""


async def commit_alertmanager_alerts(
    conn: psycopg.AsyncConnection[Any],
    organization_id: uuid.UUID,
    alerts: Sequence[PostableAlert],
    now: datetime,
    resolve_timeout: timedelta,
    audit_row: Mapping[str, Any],
) -> list[uuid.UUID]:
    """The alerts' events and the audit row, committed by one statement (`conn` is autocommit); returns
    the events' ids, for the caller to hand them off (`events.announce_committed`)."""
    ids = [uuid.uuid4() for _ in alerts]
    payloads = [orjson.dumps(alertmanager_payload(alert, now, resolve_timeout)).decode() for alert in alerts]
    await conn.execute(
        _POST_ALERTS,
        {
            **audit_row,
            "org": organization_id,
            "event_type": ALERTMANAGER_EVENT,
            "now": now,
            "ids": ids,
            "payloads": payloads,
            "details": orjson.dumps({"alerts": len(alerts)}).decode(),
        },
    )
    return ids


# Severity of events that do not state one.
DEFAULT_SEVERITY = {
    "deployment.failed": "critical",
    "deployment.rolled_back": "warning",
    "drift.detected": "warning",
}


# Payload fields shown as labels (label name, payload key).
_CONTEXT_LABELS = (
    ("model", "model_name"),
    ("version", "version"),
    ("deployment", "deployment_name"),
    ("stage", "stage"),
)


# notification_group_alerts.fingerprint's length.
MAX_FINGERPRINT = 64


_STATEFUL = {"alert.firing": "firing", "alert.resolved": "resolved"}


@dataclass(frozen=True)
class EventAlert:
    alert: Alert
    # How the alert is found again in its group: the producer's fingerprint, else the labels'.
    key: str
    resolved: bool
    one_shot: bool


def _moment(value: Any, default: datetime) -> datetime:
    if not value:
        return default
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=default.tzinfo)


def alert_from_event(
    event_type: str, payload: Mapping[str, Any], *, created_at: datetime, project_label: str | None
) -> EventAlert:
    labels: dict[str, str] = {
        "alertname": str(payload.get("alertname") or payload.get("kind") or event_type),
        "event_type": event_type,
        "severity": str(payload.get("severity") or DEFAULT_SEVERITY.get(event_type, "info")).lower(),
    }
    if project_label:
        labels["project"] = project_label
    for label, key in _CONTEXT_LABELS:
        if payload.get(key) is not None:
            labels[label] = str(payload[key])
    labels.update({str(name): str(value) for name, value in (payload.get("labels") or {}).items()})
    annotations = {str(name): str(value) for name, value in (payload.get("annotations") or {}).items()}
    for name in ("summary", "description"):
        if payload.get(name):
            annotations[name] = str(payload[name])
    if "summary" not in annotations and payload.get("title"):
        annotations["summary"] = str(payload["title"])

    status = _STATEFUL.get(event_type) or payload.get("status")
    resolved = status == "resolved"
    starts_at = _moment(payload.get("starts_at"), created_at)
    # A firing alert may say when it ends unless sent again (Alertmanager's endsAt): it resolves then.
    ends_at = _moment(payload.get("ends_at"), created_at) if resolved or payload.get("ends_at") else None
    alert = Alert(labels=labels, starts_at=starts_at, ends_at=ends_at, annotations=annotations, url=payload.get("url"))
    key = str(payload.get("fingerprint") or alert.fingerprint)
    return EventAlert(
        alert=alert,
        # A producer's fingerprint is indexed: one longer than the column is kept as its digest.
        key=key if len(key) <= MAX_FINGERPRINT else hashlib.sha256(key.encode()).hexdigest(),
        resolved=resolved,
        one_shot=status not in ("firing", "resolved"),
    )


def _claim_events(session: Session, event_ids: list[uuid.UUID], now: datetime) -> list[uuid.UUID]:
    """Record the events as processed; returns those that were not already (redelivered or
    re-published ones drop out). Only events this transaction can see are claimed: an id whose event is
    not visible (yet) is left to whoever sees it. Sorted, so concurrent handlers take these row locks in
    one order."""
    outbox = records.table(OutboxEvent)
    visible = (
        select(outbox.c.id, literal(now, UTCDateTime())).where(outbox.c.id.in_(set(event_ids))).order_by(outbox.c.id)
    )
    inserted = session.scalars(
        upsert_insert(session, NotifierProcessedEvent)
        .from_select(["event_id", "processed_at"], visible)
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(NotifierProcessedEvent.event_id)
    )
    return sorted(inserted)


class Event(NamedTuple):
    """An outbox event as the handler reads it."""

    id: uuid.UUID
    event_type: str
    payload: dict[str, Any]
    organization_id: uuid.UUID
    project_id: uuid.UUID | None
    created_at: datetime


# On PostgreSQL the batch is claimed, marked published and read by one statement. The claim inserts in id
# order, so concurrent handlers take these row locks in one order; only events this transaction can see
# are claimed.
_TAKE_EVENTS = """
WITH claimed AS (
    INSERT INTO notifier_processed_events (event_id, processed_at)
    SELECT id, %(now)b FROM outbox_events WHERE id = ANY(%(ids)b::uuid[]) ORDER BY id
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
), published AS (
    UPDATE outbox_events AS o SET published_at = %(now)b, publish_attempts = o.publish_attempts + 1
    FROM claimed WHERE o.id = claimed.event_id AND o.published_at IS NULL
)
SELECT o.id, o.event_type, o.payload, o.organization_id, o.project_id, o.created_at
FROM outbox_events AS o JOIN claimed ON o.id = claimed.event_id
WHERE o.organization_id IS NOT NULL
ORDER BY o.created_at, o.id
"""


def take_events(session: Session, event_ids: list[uuid.UUID], now: datetime) -> list[Event]:
    """The batch's events not handled before, claimed, and marked published (handed straight to this
    handler, the relay need not publish them), oldest first; events of no organization drop out."""
    driver = records.postgres(session)
    if driver is not None:
        return [Event(*row) for row in driver.execute(_TAKE_EVENTS, {"now": now, "ids": event_ids})]
    claimed = _claim_events(session, event_ids, now)
    if not claimed:
        return []
    events.mark_published(session, claimed, now)
    outbox = records.table(OutboxEvent)
    return [
        Event(*row)
        for row in session.execute(
            select(
                outbox.c.id,
                outbox.c.event_type,
                outbox.c.payload,
                outbox.c.organization_id,
                outbox.c.project_id,
                outbox.c.created_at,
            )
            .where(outbox.c.id.in_(claimed), outbox.c.organization_id.is_not(None))
            .order_by(outbox.c.created_at, outbox.c.id)
        )
    ]


def event_alerts(
    session: Session, batch: Sequence[Event], organization_ids: Collection[uuid.UUID]
) -> list[tuple[Event, EventAlert]]:
    """The alert of each event of the given organizations (those with rules), its project's slug as a
    label (one query for the batch, none when no event has a project)."""
    wanted = [event for event in batch if event.organization_id in organization_ids]
    project_ids = {event.project_id for event in wanted if event.project_id}
    slugs: dict[uuid.UUID | None, str] = {}
    if project_ids:
        found = session.execute(select(Project.id, Project.slug).where(Project.id.in_(project_ids)))
        slugs = dict(found.tuples().all())
    return [
        (
            event,
            alert_from_event(
                event.event_type, event.payload, created_at=event.created_at, project_label=slugs.get(event.project_id)
            ),
        )
        for event in wanted
    ]


# How far back lost events are looked for at most.
LOST_EVENT_LOOK_BACK = timedelta(days=1)


def unhandled_events(
    session: Session, now: datetime, older_than: timedelta, *, since: datetime | None = None, limit: int = 500
) -> list[Row]:
    """Events the relay published a while ago (before `now - older_than`, after `since`) that the
    notifier never processed: their messages were lost (a Redis restart drops its queues). Rows of id
    and published_at, oldest first; only the last day is looked at."""
    processed = exists().where(NotifierProcessedEvent.event_id == OutboxEvent.id)
    start = now - LOST_EVENT_LOOK_BACK if since is None else max(since, now - LOST_EVENT_LOOK_BACK)
    return list(
        session.execute(
            select(OutboxEvent.id, OutboxEvent.published_at)
            .where(
                # A range on the index's leading column: cheap however long the outbox grows.
                OutboxEvent.published_at >= start,
                OutboxEvent.published_at < now - older_than,
                OutboxEvent.organization_id.is_not(None),
                ~processed,
                ~quarantine.quarantined(EVENTS_CONSUMER.task, EVENTS_CONSUMER.item_id),
            )
            .order_by(OutboxEvent.published_at)
            .limit(limit)
        )
    )


def sweep_unhandled_events(session: Session, task: str, now: datetime, older_than: timedelta) -> list[uuid.UUID]:
    """`unhandled_events` from the sweep's checkpoint on, so that a busy outbox is not scanned for a
    whole day at every sweep; the checkpoint then moves to the oldest event still unhandled, or to
    `2 * older_than` ago when there is none. The extra `older_than` is for a relay that commits late:
    its events carry the publishing time it read before its transaction committed."""
    found = unhandled_events(session, now, older_than, since=periodic.checkpoint(session, task))
    periodic.move_checkpoint(session, task, found[0].published_at if found else now - 2 * older_than)
    return [row.id for row in found]
