"""From outbox events to alerts in groups.

`alert.firing` / `alert.resolved` (and any event whose payload says `status: firing|resolved`) are
stateful alerts: identified by the producer's `fingerprint` (else by their labels), they stay in
their group until resolved. Every other event is a one-shot alert: notified once, then removed from
its group (see `flushing`). The handler is idempotent by event id — the relay is at-least-once.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, select
from sqlalchemy.orm import Session

from services.notifier.domain import flushing, muting, rules
from services.notifier.domain.alerts import Alert
from services.notifier.domain.grouping import GroupState, GroupTiming, group_key, group_labels, next_flush_at
from services.notifier.domain.mute_windows import is_muted
from services.notifier.domain.silences import is_silenced
from services.notifier.domain.storage import upsert_insert
from shared.db.models import (
    NotificationGroup,
    NotificationGroupAlert,
    NotificationRule,
    NotifierProcessedEvent,
    OutboxEvent,
    Project,
)

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
    ends_at = _moment(payload.get("ends_at"), created_at) if resolved else None
    alert = Alert(labels=labels, starts_at=starts_at, ends_at=ends_at, annotations=annotations, url=payload.get("url"))
    return EventAlert(
        alert=alert,
        key=str(payload.get("fingerprint") or alert.fingerprint),
        resolved=resolved,
        one_shot=status not in ("firing", "resolved"),
    )


def event_alert(session: Session, event: OutboxEvent) -> EventAlert:
    project = session.get(Project, event.project_id) if event.project_id else None
    return alert_from_event(
        event.event_type, event.payload, created_at=event.created_at, project_label=project.slug if project else None
    )


def _claim_event(session: Session, event_id: uuid.UUID, now: datetime) -> bool:
    """Record the event as processed; False if it already was (a redelivered or re-published event)."""
    inserted = session.execute(
        upsert_insert(session, NotifierProcessedEvent)
        .values(event_id=event_id, processed_at=now)
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(NotifierProcessedEvent.event_id)
    ).first()
    return inserted is not None


def _locked_group(
    session: Session, rule: NotificationRule, found: EventAlert, now: datetime
) -> NotificationGroup | None:
    """The rule's group for this alert, row-locked so flushes and other events wait; a firing alert
    creates (or restarts) it, a resolved one only updates an existing group."""
    key = group_key(f"rule-{rule.id}", found.alert.labels, rule.group_by)
    timing = GroupTiming.from_seconds(rule.group_wait_s, rule.group_interval_s, rule.repeat_interval_s)
    if not found.resolved:
        first = GroupState(created_at=now, first_alert_starts_at=found.alert.starts_at)
        session.execute(
            upsert_insert(session, NotificationGroup)
            .values(
                id=uuid.uuid4(),
                organization_id=rule.organization_id,
                rule_id=rule.id,
                group_key=key,
                labels=group_labels(found.alert.labels, rule.group_by),
                active=True,
                created_at=now,
                first_alert_starts_at=found.alert.starts_at,
                next_flush_at=next_flush_at(first, timing),
                notification_log={},
            )
            .on_conflict_do_nothing(index_elements=["rule_id", "group_key"])
        )
    group = session.scalar(
        select(NotificationGroup)
        .where(NotificationGroup.rule_id == rule.id, NotificationGroup.group_key == key)
        .with_for_update()
    )
    if group is None or (found.resolved and not group.active):
        return None
    if not group.active:
        # Alertmanager deleted the old group: this is a new one, with its own group_wait.
        group.active = True
        group.created_at = now
        group.first_alert_starts_at = found.alert.starts_at
        group.last_flush_at = None
        group.next_flush_at = next_flush_at(GroupState(now, found.alert.starts_at), timing)
    return group


def _store_alert(session: Session, group: NotificationGroup, found: EventAlert) -> None:
    row = session.scalar(
        select(NotificationGroupAlert).where(
            NotificationGroupAlert.group_id == group.id, NotificationGroupAlert.fingerprint == found.key
        )
    )
    if found.resolved:
        if row is not None:
            row.ends_at = found.alert.ends_at
        return
    alert = found.alert
    if row is None:
        session.add(
            NotificationGroupAlert(
                group_id=group.id,
                fingerprint=found.key,
                labels=dict(alert.labels),
                annotations=dict(alert.annotations),
                starts_at=alert.starts_at,
                url=alert.url,
                one_shot=found.one_shot,
            )
        )
        return
    # Firing again (or still): fresh labels and annotations, the original start time.
    row.labels, row.annotations, row.url, row.ends_at = dict(alert.labels), dict(alert.annotations), alert.url, None


def handle_event(session: Session, event_id: uuid.UUID, now: datetime, link_base: str) -> list[uuid.UUID]:
    """Put the event's alert into the group of every rule it matches; groups already due (group_wait
    0, or an old alert) are flushed at once. Returns the deliveries to dispatch after commit."""
    if not _claim_event(session, event_id, now):
        return []
    event = session.get(OutboxEvent, event_id)
    if event is None or event.organization_id is None:
        return []
    candidates = rules.live_rules(session, event.organization_id)
    if not candidates:
        return []
    found = event_alert(session, event)
    matched = [
        rule
        for rule in candidates
        if rules.rule_matches(rule, event.event_type, event.project_id, event.payload, found.alert)
    ]
    due: list[NotificationGroup] = []
    # Rules come ordered by id, so concurrent handlers lock groups in the same order (no deadlock).
    for rule in matched:
        group = _locked_group(session, rule, found, now)
        if group is None:
            continue
        _store_alert(session, group, found)
        if group.next_flush_at is not None and group.next_flush_at <= now:
            due.append(group)
    session.flush()
    return flushing.flush_groups(session, due, now, link_base) if due else []


def unhandled_events(session: Session, now: datetime, older_than: timedelta, limit: int = 500) -> list[uuid.UUID]:
    """Events the relay published a while ago that the notifier never processed: their messages were
    lost (a Redis restart drops its queues). Only the last day is looked at."""
    processed = exists().where(NotifierProcessedEvent.event_id == OutboxEvent.id)
    return list(
        session.scalars(
            select(OutboxEvent.id)
            .where(
                and_(
                    OutboxEvent.published_at.is_not(None),
                    OutboxEvent.published_at < now - older_than,
                    OutboxEvent.created_at > now - timedelta(days=1),
                    OutboxEvent.organization_id.is_not(None),
                    ~processed,
                )
            )
            .order_by(OutboxEvent.created_at)
            .limit(limit)
        )
    )


@dataclass(frozen=True)
class RuleHit:
    rule: NotificationRule
    group_key: str
    silenced: bool
    muted: bool


def preview(
    session: Session,
    organization_id: uuid.UUID,
    project_id: uuid.UUID | None,
    event_type: str,
    payload: Mapping[str, Any],
    now: datetime,
) -> tuple[Alert, list[RuleHit]]:
    """Which rules an event would hit, with the labels its alert would carry — by the handler's own
    matching — and whether a silence or mute window would hold it back right now."""
    project = session.get(Project, project_id) if project_id else None
    found = alert_from_event(event_type, payload, created_at=now, project_label=project.slug if project else None)
    matched = [
        rule
        for rule in rules.live_rules(session, organization_id)
        if rules.rule_matches(rule, event_type, project_id, payload, found.alert)
    ]
    silences = muting.silences_in_force(session, [organization_id], now).get(organization_id, [])
    silenced = is_silenced(found.alert.labels, silences, now)
    intervals = muting.mute_intervals(session, {wid for rule in matched for wid in rule.mute_window_ids})
    hits = [
        RuleHit(
            rule=rule,
            group_key=group_key(f"rule-{rule.id}", found.alert.labels, rule.group_by),
            silenced=silenced,
            muted=is_muted([i for wid in rule.mute_window_ids for i in intervals.get(wid, [])], now),
        )
        for rule in matched
    ]
    return found.alert, hits
