"""From outbox events to alerts in groups.

`alert.firing` / `alert.resolved` (and any event whose payload says `status: firing|resolved`) are
stateful alerts: identified by the producer's `fingerprint` (else by their labels), they stay in
their group until resolved. Every other event is a one-shot alert: notified once, then removed from
its group (see `flushing`). The handler is idempotent by event id — the relay is at-least-once.
"""

from __future__ import annotations

import hashlib
import itertools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, bindparam, case, exists, null, select, tuple_, update
from sqlalchemy.orm import Session

from services.notifier.domain import config_cache, flushing, muting, periodic, rules
from services.notifier.domain.alerts import Alert
from services.notifier.domain.config_cache import Rule
from services.notifier.domain.flushing import Group
from services.notifier.domain.grouping import (
    GroupState,
    group_key,
    group_key_digest,
    group_labels,
    next_flush_at,
)
from services.notifier.domain.mute_windows import is_muted
from services.notifier.domain.silences import is_silenced
from shared.core import events, quarantine
from shared.core.crypto import SecretBox
from shared.db.dialect import upsert_insert
from shared.db.models import (
    NotificationGroup,
    NotificationGroupAlert,
    NotificationRule,
    NotifierProcessedEvent,
    OutboxEvent,
    Project,
)

_GROUPS = NotificationGroup.__table__
# The Celery task that feeds `handle_events`, as its quarantine knows it.
EVENTS_CONSUMER = quarantine.Consumer("notifier.handle_events", OutboxEvent.id, OutboxEvent.organization_id)

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


# An event's alert for one rule it matched, and the key of its group under that rule.
Target = tuple[Rule, str, EventAlert]


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
    re-published ones drop out). Sorted, so concurrent handlers take these row locks in one order."""
    inserted = session.scalars(
        upsert_insert(session, NotifierProcessedEvent)
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(NotifierProcessedEvent.event_id),
        [{"event_id": event_id, "processed_at": now} for event_id in sorted(set(event_ids))],
    )
    return list(inserted)


def _group_row(rule: Rule, key: str, found: EventAlert, now: datetime) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "organization_id": rule.organization_id,
        "rule_id": rule.id,
        "group_key": key,
        "group_key_digest": group_key_digest(key),
        "labels": group_labels(found.alert.labels, rule.group_by),
        "active": True,
        "created_at": now,
        "first_alert_starts_at": found.alert.starts_at,
        "next_flush_at": next_flush_at(GroupState(now, found.alert.starts_at), rule.timing),
        "notification_log": {},
    }


def _upsert_groups(session: Session, targets: list[Target], now: datetime) -> None:
    """Create the firing alerts' groups, or restart those whose alerts had all resolved — as a new
    group with its own group_wait (Alertmanager deletes and recreates it) — row-locking them in the
    given order, so flushes and other events wait."""
    statement = upsert_insert(session, _GROUPS)
    new = statement.excluded

    def kept_unless_restarted(column: str, restarted):
        return case((_GROUPS.c.active, _GROUPS.c[column]), else_=restarted)

    # An executemany without RETURNING: one short statement that the drivers cache and pipeline.
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["rule_id", "group_key_digest"],
            set_={
                "active": True,
                "created_at": kept_unless_restarted("created_at", new.created_at),
                "first_alert_starts_at": kept_unless_restarted("first_alert_starts_at", new.first_alert_starts_at),
                "last_flush_at": kept_unless_restarted("last_flush_at", null()),
                "next_flush_at": kept_unless_restarted("next_flush_at", new.next_flush_at),
            },
        ),
        [_group_row(rule, key, found, now) for rule, key, found in targets],
    )


def _keyed(pairs) -> object:
    """(rule id, group key) pairs as a criterion on the indexed digests."""
    digests = [(rule_id, group_key_digest(key)) for rule_id, key in pairs]
    return tuple_(_GROUPS.c.rule_id, _GROUPS.c.group_key_digest).in_(digests)


def _lock_active_groups(session: Session, pairs: list[tuple[uuid.UUID, str]]) -> None:
    """A resolved alert only finds an active group (row-locked here); it never creates one."""
    session.execute(
        select(_GROUPS.c.id)
        .where(_keyed(pairs), _GROUPS.c.active.is_(True))
        .order_by(_GROUPS.c.rule_id, _GROUPS.c.group_key_digest)
        .with_for_update()
    )


def _lock_groups(session: Session, targets: list[Target], now: datetime) -> dict[tuple[uuid.UUID, str], Group]:
    """The active group of every target, locked. Groups are locked in one global order (rule, key), so
    concurrent handlers cannot deadlock on them; each run of groups with or without a firing alert is
    one statement. Targets with only resolved alerts and no active group have none."""
    deciding: dict[tuple[uuid.UUID, str], Target] = {}
    # Firing sorts before resolved: a group with any firing alert in the batch is created. The order is
    # the locks' order, (rule, digest) as the lookups' index has it.
    ordered = sorted(targets, key=lambda target: (target[0].id, group_key_digest(target[1]), target[2].resolved))
    for target in ordered:
        deciding.setdefault((target[0].id, target[1]), target)
    for firing, run in itertools.groupby(deciding.values(), key=lambda target: not target[2].resolved):
        if firing:
            _upsert_groups(session, list(run), now)
        else:
            _lock_active_groups(session, [(rule.id, key) for rule, key, _ in run])
    groups = flushing.load_groups(
        session,
        flushing.select_groups(_keyed(deciding), _GROUPS.c.active.is_(True)),
    )
    return {(group.rule_id, group.group_key): group for group in groups}


def _alert_row(group: Group, found: EventAlert, now: datetime) -> dict[str, Any]:
    alert = found.alert
    return {
        "id": uuid.uuid4(),
        "group_id": group.id,
        "fingerprint": found.key,
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "starts_at": alert.starts_at,
        "ends_at": alert.ends_at,
        "url": alert.url,
        "one_shot": found.one_shot,
        "updated_at": now,
    }


def _store_alerts(session: Session, stored: list[tuple[Group, EventAlert]], now: datetime) -> None:
    """Firing alerts are upserted, resolved ones get their end time, a statement (or one executemany)
    for each per round. An alert seen twice in a batch (firing, then resolved) starts a new round, so
    the events apply in their order."""
    rounds: list[list[tuple[Group, EventAlert]]] = []
    seen: set[tuple[uuid.UUID, str]] = set()
    for group, found in stored:
        if not rounds or (group.id, found.key) in seen:
            rounds.append([])
            seen = set()
        seen.add((group.id, found.key))
        rounds[-1].append((group, found))
    for current in rounds:
        firing = [_alert_row(group, found, now) for group, found in current if not found.resolved]
        if firing:
            statement = upsert_insert(session, NotificationGroupAlert.__table__)
            # Firing again (or still): fresh labels, annotations and end time, the original start time.
            new = statement.excluded
            session.execute(
                statement.on_conflict_do_update(
                    index_elements=["group_id", "fingerprint"],
                    set_={
                        "labels": new.labels,
                        "annotations": new.annotations,
                        "url": new.url,
                        "ends_at": new.ends_at,
                        "updated_at": now,
                    },
                ),
                firing,
            )
        resolved = [
            {"b_group_id": group.id, "b_fingerprint": found.key, "b_ends_at": found.alert.ends_at}
            for group, found in current
            if found.resolved
        ]
        if resolved:
            table = NotificationGroupAlert.__table__
            session.execute(
                update(table)
                .where(table.c.group_id == bindparam("b_group_id"), table.c.fingerprint == bindparam("b_fingerprint"))
                .values(ends_at=bindparam("b_ends_at"), updated_at=now),
                resolved,
            )


def handle_events(
    session: Session, event_ids: list[uuid.UUID], box: SecretBox, now: datetime, link_base: str
) -> list[uuid.UUID]:
    """Put each event's alert into the group of every rule it matches; groups already due (group_wait
    0, or an old alert) are flushed at once. Events already processed are skipped. Returns the
    deliveries to dispatch after commit.

    A batch costs a fixed number of statements, whatever its size (plus one lookup per group that
    only receives resolved alerts).
    """
    claimed = _claim_events(session, event_ids, now)
    if not claimed:
        return []
    # Events handed straight to this handler: the relay need not publish them.
    events.mark_published(session, claimed, now)
    outbox = OutboxEvent.__table__
    batch = session.execute(
        select(
            outbox.c.id,
            outbox.c.event_type,
            outbox.c.payload,
            outbox.c.organization_id,
            outbox.c.project_id,
            outbox.c.created_at,
        )
        .where(outbox.c.id.in_(claimed), outbox.c.organization_id.is_not(None))
        .order_by(outbox.c.created_at)
    ).all()
    org_configs = config_cache.configs(session, {event.organization_id for event in batch}, box, now)
    project_ids = {event.project_id for event in batch if event.project_id and org_configs[event.organization_id].rules}
    slugs = dict(session.execute(select(Project.id, Project.slug).where(Project.id.in_(project_ids))).all())

    targets: list[Target] = []
    for event in batch:
        found = alert_from_event(
            event.event_type, event.payload, created_at=event.created_at, project_label=slugs.get(event.project_id)
        )
        for rule in org_configs[event.organization_id].rules:
            if rules.rule_matches(rule, event.event_type, event.project_id, event.payload, found.alert):
                targets.append((rule, group_key(f"rule-{rule.id}", found.alert.labels, rule.group_by), found))
    if not targets:
        return []
    groups = _lock_groups(session, targets, now)
    stored = [(groups[(rule.id, key)], found) for rule, key, found in targets if (rule.id, key) in groups]
    _store_alerts(session, stored, now)
    due = [group for group in groups.values() if group.next_flush_at <= now]
    return flushing.flush_groups(session, due, box, now, link_base, org_configs) if due else []


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
                ~quarantine.quarantined(EVENTS_CONSUMER.task, OutboxEvent.id),
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
    live = session.scalars(
        select(NotificationRule)
        .where(
            NotificationRule.organization_id == organization_id,
            NotificationRule.enabled.is_(True),
            NotificationRule.deleted_at.is_(None),
        )
        .order_by(NotificationRule.id)
    )
    matched = [row for row in live if rules.rule_matches(Rule.of(row), event_type, project_id, payload, found.alert)]
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
