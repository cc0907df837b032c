"""Group timers: turn due groups into notifications and deliveries, in the caller's transaction.

Open questions of the grouping module, decided here:

- When to record `log_entry` and apply `drop_resolved`: at the flush, in the same transaction that
  creates the notification and its deliveries. Alertmanager records its notification log only after
  a successful send, because its retries live in memory and a failed flush is simply re-run on the
  next tick. Here a notification, once created, is durable: its deliveries retry from the database
  until delivered or dead-lettered (and can be redelivered by hand). Recording at send time would
  make the next tick notify again while the first one is still retrying — a duplicate message with a
  new id. So the log says "handed to delivery", and resolved alerts leave the group with the flush
  (the notification carries them).
- The group timer is per rule; the notification log is per channel (Alertmanager keeps one per
  receiver integration), so `send_resolved` and dedup are decided for each channel. Channels that
  would receive the same alerts share one notification (one id, one rendering).
- One-shot alerts (events that are not alert firing/resolved) leave the group after the first tick
  that is not muted, and are left out of the stored log, so their leaving never reads as "resolved".
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta

from sqlalchemy import Row, Select, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from services.notifier.domain import config_cache, muting, records
from services.notifier.domain.config_cache import Channel, OrgConfig, Rule
from services.notifier.domain.grouping import (
    FlushDecision,
    GroupState,
    NotificationLogEntry,
    decide_flush,
    default_send_resolved,
)
from services.notifier.domain.inhibition import Inhibitor
from services.notifier.domain.mute_windows import is_muted
from services.notifier.domain.silences import is_silenced
from shared.core import quarantine
from shared.core.crypto import SecretBox
from shared.db.models import (
    Delivery,
    Notification,
    NotificationAlert,
    NotificationGroup,
    NotificationGroupAlert,
)


@dataclass(slots=True)
class Group:
    """A notification group's row as plain data (no ORM instance on the hot path): a flush moves its
    timer and notification log in place, and `flush_groups` writes them back in one executemany."""

    id: uuid.UUID
    organization_id: uuid.UUID
    rule_id: uuid.UUID
    group_key: str
    labels: dict
    active: bool
    created_at: datetime
    first_alert_starts_at: datetime
    last_flush_at: datetime | None
    next_flush_at: datetime | None
    notification_log: dict


_GROUPS = NotificationGroup.__table__
_GROUP_ALERTS = NotificationGroupAlert.__table__
# The Celery task that flushes given groups, as its quarantine knows it (the timer's tick hands it the
# groups of a batch that failed).
FLUSH_CONSUMER = quarantine.Consumer("notifier.flush_groups", _GROUPS.c.id, _GROUPS.c.organization_id)


def select_groups(*criteria) -> Select:
    return select(*(_GROUPS.c[column.name] for column in fields(Group))).where(*criteria)


def load_groups(session: Session, statement: Select) -> list[Group]:
    return [Group(*row) for row in session.execute(statement)]


@dataclass(frozen=True)
class FlushContext:
    """Everything a batch of groups needs: the organizations' configurations (cached per process) and
    the groups' alerts and inhibiting alerts, one query each."""

    configs: dict[uuid.UUID, OrgConfig]
    # Plain rows of the groups' alerts.
    alerts: dict[uuid.UUID, list[Row]]
    inhibitors: dict[uuid.UUID, Inhibitor]

    def rule(self, group: Group) -> Rule | None:
        return next((rule for rule in self.configs[group.organization_id].rules if rule.id == group.rule_id), None)


def load_context(
    session: Session,
    groups: Sequence[Group],
    box: SecretBox,
    now: datetime,
    configs: dict[uuid.UUID, OrgConfig] | None = None,
) -> FlushContext:
    """`configs`: those the caller read in this transaction already, if it covers these groups."""
    org_ids = {group.organization_id for group in groups}
    if configs is None:
        configs = config_cache.configs(session, org_ids, box, now)
    alerts: dict[uuid.UUID, list[Row]] = defaultdict(list)
    for row in session.execute(
        select(
            _GROUP_ALERTS.c.id,
            _GROUP_ALERTS.c.group_id,
            _GROUP_ALERTS.c.fingerprint,
            _GROUP_ALERTS.c.labels,
            _GROUP_ALERTS.c.annotations,
            _GROUP_ALERTS.c.starts_at,
            _GROUP_ALERTS.c.ends_at,
            _GROUP_ALERTS.c.url,
            _GROUP_ALERTS.c.one_shot,
        ).where(_GROUP_ALERTS.c.group_id.in_({group.id for group in groups}))
    ):
        alerts[row.group_id].append(row)
    inhibit_rules = {org_id: configs[org_id].inhibit_rules for org_id in org_ids if configs[org_id].inhibit_rules}
    return FlushContext(configs=configs, alerts=alerts, inhibitors=muting.inhibitors(session, inhibit_rules, now))


def _log_entry(raw: dict | None) -> NotificationLogEntry | None:
    if not raw:
        return None
    return NotificationLogEntry(
        sent_at=datetime.fromisoformat(raw["sent_at"]),
        firing=frozenset(raw["firing"]),
        resolved=frozenset(raw["resolved"]),
    )


def _log_json(entry: NotificationLogEntry) -> dict:
    return {"sent_at": entry.sent_at.isoformat(), "firing": sorted(entry.firing), "resolved": sorted(entry.resolved)}


@dataclass
class _Planned:
    """Rows a batch of flushes creates or removes, written table by table (one statement or
    executemany each, no ORM objects: nothing reads them back in this transaction)."""

    notifications: list[dict] = field(default_factory=list)
    alerts: list[dict] = field(default_factory=list)
    deliveries: list[dict] = field(default_factory=list)
    # Ids of group alerts that leave their group.
    gone_alerts: list[uuid.UUID] = field(default_factory=list)


def _deactivate(group: Group) -> None:
    group.active = False
    group.next_flush_at = None


def _flush(group: Group, ctx: FlushContext, now: datetime, planned: _Planned, link_base: str) -> None:
    rule = ctx.rule(group)
    rows = ctx.alerts.get(group.id, [])
    if rule is None or not rows:
        planned.gone_alerts.extend(row.id for row in rows)
        _deactivate(group)
        return
    alerts = [records.alert_of(row) for row in rows]
    timing = rule.timing
    config = ctx.configs[group.organization_id]
    silences = config.silences
    inhibitor = ctx.inhibitors.get(group.organization_id)
    # Silenced and inhibited alerts are muted alike (Alertmanager's MuteStage).
    silenced = frozenset(
        alert.fingerprint
        for alert in alerts
        if is_silenced(alert.labels, silences, now) or (inhibitor is not None and inhibitor.inhibited_by(alert))
    )
    muted = is_muted(config.muting_intervals(rule), now)
    state = GroupState(group.created_at, group.first_alert_starts_at, group.last_flush_at)
    one_shot = frozenset(alert.fingerprint for alert, row in zip(alerts, rows, strict=True) if row.one_shot)

    def decide(channel: Channel | None) -> FlushDecision:
        send_resolved = True
        last = None
        if channel is not None:
            send_resolved = (
                rule.send_resolved if rule.send_resolved is not None else default_send_resolved(channel.target.type)
            )
            last = _log_entry(group.notification_log.get(str(channel.id)))
        return decide_flush(
            replace(state, last_notification=last),
            alerts,
            now,
            timing=timing,
            send_resolved=send_resolved,
            silenced=silenced,
            muted=muted,
        )

    channels = [config.channels[cid] for cid in rule.channel_ids if cid in config.channels]
    decisions = [(channel, decide(channel)) for channel in channels]
    timer = decisions[0][1] if decisions else decide(None)
    if not timer.flush_now:
        group.next_flush_at = timer.next_flush_at
        return

    log = dict(group.notification_log)
    same_content: dict[tuple, list[tuple[Channel, FlushDecision]]] = defaultdict(list)
    for channel, decision in decisions:
        if decision.log_entry is not None:
            log[str(channel.id)] = _log_json(replace(decision.log_entry, firing=decision.log_entry.firing - one_shot))
        if decision.deliver:
            same_content[tuple((alert.fingerprint, alert.status_at(now)) for alert in decision.deliver)].append(
                (channel, decision)
            )
    keys = {alert.fingerprint: row.fingerprint for alert, row in zip(alerts, rows, strict=True)}
    for entries in same_content.values():
        _notify(planned, group, rule, entries, keys, now, link_base)

    group.notification_log = log
    group.last_flush_at = now
    group.next_flush_at = timer.next_flush_at
    leaving = timer.drop_resolved | (frozenset() if muted else one_shot)
    gone = [row.id for alert, row in zip(alerts, rows, strict=True) if alert.fingerprint in leaving]
    planned.gone_alerts.extend(gone)
    if len(gone) == len(rows):
        _deactivate(group)


def _notify(
    planned: _Planned,
    group: Group,
    rule: Rule,
    entries: list[tuple[Channel, FlushDecision]],
    keys: dict[str, str],
    now: datetime,
    link_base: str,
) -> None:
    decision = entries[0][1]
    notification_id = uuid.uuid4()
    firing = any(not alert.is_resolved_at(now) for alert in decision.deliver)
    planned.notifications.append(
        {
            "id": notification_id,
            "organization_id": group.organization_id,
            "rule_id": rule.id,
            "group_id": group.id,
            "group_key": group.group_key,
            "kind": "alert",
            "status": "firing" if firing else "resolved",
            "reason": str(decision.reason),
            "payload": records.payload_json(
                decision.deliver,
                group_labels=group.labels,
                link=f"{link_base}/api/v1/notifications/{notification_id}",
                receiver=rule.name,
            ),
            "created_at": now,
        }
    )
    # Both the label fingerprint and the producer's, so the log can be searched by either.
    fingerprints = {fp for alert in decision.deliver for fp in (alert.fingerprint, keys[alert.fingerprint])}
    planned.alerts.extend({"notification_id": notification_id, "fingerprint": fp} for fp in fingerprints)
    planned.deliveries.extend(
        {
            "id": uuid.uuid4(),
            "notification_id": notification_id,
            "channel_id": channel.id,
            "organization_id": group.organization_id,
            "rule_id": rule.id,
            "attempts": 0,
            "total_attempts": 0,
            "created_at": now,
            "updated_at": now,
            **(_pending(now) if channel.enabled else _dropped(channel, rule, now)),
        }
        for channel, _ in entries
    )


def _pending(now: datetime) -> dict:
    return {"state": "pending", "next_attempt_at": now, "queued_at": now, "last_error": None}


def _dropped(channel: Channel, rule: Rule, now: datetime) -> dict:
    """A notification for a disabled channel is kept as `dropped`, with the reason; the channel's log
    still records it (so the group does not notify again every tick). `next_attempt_at` is how long it
    stays deliverable: re-enabled within the rule's repeat interval, the channel still receives it
    (`dispatch.revive_dropped`); later, the group's next repeat brings its alerts in a new notification."""
    reason = f"channel disabled: {channel.disabled_reason}" if channel.disabled_reason else "channel disabled"
    return {
        "state": "dropped",
        "next_attempt_at": now + timedelta(seconds=rule.repeat_interval_s),
        "queued_at": None,
        "last_error": reason,
    }


# What a flush changes on a group.
_FLUSHED_COLUMNS = ("active", "last_flush_at", "next_flush_at", "notification_log")


def flush_groups(
    session: Session,
    groups: Sequence[Group],
    box: SecretBox,
    now: datetime,
    link_base: str,
    configs: dict[uuid.UUID, OrgConfig] | None = None,
) -> list[uuid.UUID]:
    """Flush locked groups; returns the ids of the deliveries created (to dispatch after commit)."""
    ctx = load_context(session, groups, box, now, configs)
    planned = _Planned()
    for group in groups:
        _flush(group, ctx, now, planned, link_base)
    # Notifications first, for the foreign keys. Core inserts of plain rows: an ORM bulk insert would
    # spend more Python per row than the database spends storing it.
    for model, rows in (
        (Notification, planned.notifications),
        (NotificationAlert, planned.alerts),
        (Delivery, planned.deliveries),
    ):
        if rows:
            session.execute(insert(model.__table__), rows)
    if planned.gone_alerts:
        session.execute(delete(_GROUP_ALERTS).where(_GROUP_ALERTS.c.id.in_(planned.gone_alerts)))
    session.execute(
        update(_GROUPS)
        .where(_GROUPS.c.id == bindparam("b_id"))
        .values({name: bindparam(f"b_{name}") for name in _FLUSHED_COLUMNS}),
        [{"b_id": group.id, **{f"b_{name}": getattr(group, name) for name in _FLUSHED_COLUMNS}} for group in groups],
    )
    return [delivery["id"] for delivery in planned.deliveries if delivery["state"] == "pending"]


def _due(now: datetime, *criteria) -> Select:
    """Due groups, oldest tick first, not quarantined; SKIP LOCKED lets concurrent flushes and event
    handlers share the work without waiting on each other."""
    return (
        select_groups(
            _GROUPS.c.active.is_(True),
            _GROUPS.c.next_flush_at <= now,
            ~quarantine.quarantined(FLUSH_CONSUMER.task, _GROUPS.c.id),
            *criteria,
        )
        .order_by(_GROUPS.c.next_flush_at)
        .with_for_update(skip_locked=True)
    )


def flush_due_groups(
    session: Session, box: SecretBox, now: datetime, link_base: str, limit: int = 200
) -> tuple[list[uuid.UUID], int]:
    """Flush up to `limit` due groups. Returns (delivery ids, groups flushed)."""
    groups = load_groups(session, _due(now).limit(limit))
    if not groups:
        return [], 0
    return flush_groups(session, groups, box, now, link_base), len(groups)


def due_group_ids(session: Session, now: datetime, limit: int = 200) -> list[uuid.UUID]:
    """The groups `flush_due_groups` would take, to flush them one by one when their batch failed."""
    return [group.id for group in load_groups(session, _due(now).limit(limit))]


def flush_due_groups_by_id(
    session: Session, group_ids: Sequence[uuid.UUID], box: SecretBox, now: datetime, link_base: str
) -> list[uuid.UUID]:
    """Flush those of the groups that are (still) due; returns the delivery ids."""
    groups = load_groups(session, _due(now, _GROUPS.c.id.in_(group_ids)))
    return flush_groups(session, groups, box, now, link_base) if groups else []
