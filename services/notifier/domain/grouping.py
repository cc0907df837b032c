"""Grouping, the third stage: each alert into its group under every rule it hit, and Alertmanager's
group timers.

How this maps onto Alertmanager (dispatch/dispatch.go, notify/dedup_stage.go, notify/retry_stage.go):

- Aggregation group: alerts of one route (here: a rule and channel) with equal values of the
  `group_by` labels share a group (`getGroupLabels`). `group_by: ["..."]` groups by all labels, i.e.
  one group per alert; an empty `group_by` puts every alert of the route in one group.
- Group timer (`aggrGroup.run`): a new group flushes `group_wait` after it was created, or at once if
  the alert that created it started more than `group_wait` before (an "old enough" alert, e.g. after
  a restart). After each flush the timer is reset to `group_interval` from that flush, whether or not
  anything was sent. Alerts added later never reset the timer; they wait for the next tick.
  `GroupState.created_at`, `.first_alert_starts_at` and `.last_flush_at` carry exactly this.
- Dedup (`DedupStage.needsUpdate`), evaluated on every tick against the notification log entry of
  the last notification (`NotificationLogEntry`: firing and resolved fingerprints, time sent):
  no entry -> notify if anything fires; a firing alert not in the last firing set -> notify; nothing
  fires any more but the last notification had firing alerts -> notify ("all resolved", regardless
  of send_resolved, so the log is cleared); with send_resolved, a resolved alert not in the last
  resolved set -> notify; otherwise notify only if the last notification is older than
  `repeat_interval`. Repeats are therefore only noticed on ticks, so the effective repeat period is
  `repeat_interval` rounded up to a multiple of `group_interval`, as in Alertmanager.
- send_resolved (`RetryStage.exec`): off -> resolved alerts are not delivered, and a notification
  with only resolved alerts is not delivered at all, yet its log entry is still recorded.
- Inhibition, silences and mute windows come before dedup (`MuteStage`, `TimeMuteStage`): inhibited
  and silenced alerts are left out of what is sent and logged (they stay in the group), and inside a
  mute window nothing is
  sent or logged at all, so firing alerts go out on the first tick after the window.
- After a flush, resolved alerts are removed from the group and an empty group is deleted
  (`aggrGroup.flush` -> `DeleteIfNotModified`); in Alertmanager only when the pipeline did not fail.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import uuid
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import psycopg
from sqlalchemy import (
    ColumnElement,
    Select,
    bindparam,
    case,
    null,
    select,
    tuple_,
    update,
)
from sqlalchemy.orm import Session

from services.notifier.domain import records
from services.notifier.domain.alerts import Alert

if TYPE_CHECKING:
    from services.notifier.domain.config.cache import Rule
    from services.notifier.domain.intake import EventAlert
    from services.notifier.domain.rule_match import Target
from shared.core import quarantine
from shared.db.dialect import upsert_insert
from shared.db.models import (
    NotificationGroup,
    NotificationGroupAlert,
)

GROUP_BY_ALL = "..."

DEFAULT_GROUP_WAIT = timedelta(seconds=30)
DEFAULT_GROUP_INTERVAL = timedelta(minutes=5)
DEFAULT_REPEAT_INTERVAL = timedelta(hours=4)


def default_send_resolved(channel_type: str) -> bool:
    """Alertmanager's defaults: resolved notices on for Slack and webhooks, off for email."""
    return channel_type != "email"


@dataclass(frozen=True)
class GroupTiming:
    group_wait: timedelta = DEFAULT_GROUP_WAIT
    group_interval: timedelta = DEFAULT_GROUP_INTERVAL
    repeat_interval: timedelta = DEFAULT_REPEAT_INTERVAL

    @classmethod
    def from_seconds(cls, group_wait_s: int, group_interval_s: int, repeat_interval_s: int) -> GroupTiming:
        return cls(
            group_wait=timedelta(seconds=group_wait_s),
            group_interval=timedelta(seconds=group_interval_s),
            repeat_interval=timedelta(seconds=repeat_interval_s),
        )


def group_labels(labels: Mapping[str, str], group_by: Sequence[str]) -> dict[str, str]:
    if GROUP_BY_ALL in group_by:
        return dict(labels)
    return {name: labels[name] for name in group_by if name in labels}


def group_key(route: str, labels: Mapping[str, str], group_by: Sequence[str]) -> str:
    """Stable key of the group an alert falls into, e.g. `rule-7:{model="churn",severity="high"}`."""
    selected = group_labels(labels, group_by)
    rendered = ",".join(f"{name}={json.dumps(selected[name])}" for name in sorted(selected))
    return f"{route}:{{{rendered}}}"


def group_key_digest(key: str) -> str:
    """The fixed-size form of a group key that the database indexes (a key renders user-supplied labels,
    of any length)."""
    return hashlib.sha256(key.encode()).hexdigest()


class NotifyReason(StrEnum):
    FIRST_NOTIFICATION = "first_notification"
    NEW_ALERTS_IN_GROUP = "new_alerts_in_group"
    ALL_ALERTS_RESOLVED = "all_alerts_resolved"
    NEW_RESOLVED_ALERTS = "new_resolved_alerts"
    REPEAT_INTERVAL_ELAPSED = "repeat_interval_elapsed"
    DO_NOT_NOTIFY = "do_not_notify"

    @property
    def should_notify(self) -> bool:
        return self is not NotifyReason.DO_NOT_NOTIFY


@dataclass(frozen=True)
class NotificationLogEntry:
    """What the last notification of a group to a channel covered (Alertmanager's nflog entry)."""

    sent_at: datetime
    firing: frozenset[str]
    resolved: frozenset[str]


def notify_reason(
    last: NotificationLogEntry | None,
    firing: Collection[str],
    resolved: Collection[str],
    *,
    send_resolved: bool,
    repeat_interval: timedelta,
    now: datetime,
) -> NotifyReason:
    """Whether the group's current alerts (fingerprint sets) warrant a notification; see module doc."""
    if last is None:
        return NotifyReason.FIRST_NOTIFICATION if firing else NotifyReason.DO_NOT_NOTIFY
    if not last.firing.issuperset(firing):
        # After an all-resolved notification the group starts over.
        return NotifyReason.NEW_ALERTS_IN_GROUP if last.firing else NotifyReason.FIRST_NOTIFICATION
    if not firing:
        # If the receiver never heard of these alerts firing, it need not hear that they resolved.
        return NotifyReason.ALL_ALERTS_RESOLVED if last.firing else NotifyReason.DO_NOT_NOTIFY
    if send_resolved and not last.resolved.issuperset(resolved):
        return NotifyReason.NEW_RESOLVED_ALERTS
    if last.sent_at < now - repeat_interval:
        return NotifyReason.REPEAT_INTERVAL_ELAPSED
    return NotifyReason.DO_NOT_NOTIFY


@dataclass(frozen=True)
class GroupState:
    created_at: datetime
    # starts_at of the alert that created the group: an old alert skips group_wait.
    first_alert_starts_at: datetime
    # When the group's timer last fired, whether or not a notification went out.
    last_flush_at: datetime | None = None
    last_notification: NotificationLogEntry | None = None


def next_flush_at(state: GroupState, timing: GroupTiming) -> datetime:
    if state.last_flush_at is not None:
        return state.last_flush_at + timing.group_interval
    if state.first_alert_starts_at + timing.group_wait < state.created_at:
        return state.created_at
    return state.created_at + timing.group_wait


@dataclass(frozen=True)
class FlushDecision:
    flush_now: bool
    # When to evaluate the group again; store it as the group's next tick.
    next_flush_at: datetime
    reason: NotifyReason = NotifyReason.DO_NOT_NOTIFY
    # What to send. Empty while `reason.should_notify` means: send nothing, but record `log_entry`.
    deliver: tuple[Alert, ...] = ()
    # Becomes the group's `last_notification` once the notification is delivered (or needs no delivery).
    log_entry: NotificationLogEntry | None = None
    # Resolved alerts to remove from the group after the flush; `delete_group` if none remain.
    drop_resolved: frozenset[str] = field(default_factory=frozenset)
    delete_group: bool = False

    @property
    def is_repeat(self) -> bool:
        return self.reason is NotifyReason.REPEAT_INTERVAL_ELAPSED


def decide_flush(
    state: GroupState,
    alerts: Sequence[Alert],
    now: datetime,
    *,
    timing: GroupTiming,
    send_resolved: bool,
    silenced: Collection[str] = frozenset(),
    muted: bool = False,
) -> FlushDecision:
    """Run the group's timer at `now`: not due yet, or a flush with what to send and record.

    `alerts` are all alerts in the group, `silenced` the fingerprints of those an active silence
    covers (`silences.is_silenced`), `muted` whether a mute window contains `now`
    (`mute_windows.is_muted`). The caller stores `now` as `last_flush_at` when `flush_now` is true,
    and renders the notification with `created_at=now`, so alert statuses agree with this decision.
    """
    due_at = next_flush_at(state, timing)
    if now < due_at:
        return FlushDecision(flush_now=False, next_flush_at=due_at)

    ordered = sorted(alerts, key=lambda alert: sorted(alert.labels.items()))
    all_resolved = frozenset(alert.fingerprint for alert in ordered if alert.is_resolved_at(now))
    visible = [alert for alert in ordered if alert.fingerprint not in silenced]
    firing = frozenset(alert.fingerprint for alert in visible if not alert.is_resolved_at(now))
    resolved = frozenset(alert.fingerprint for alert in visible if alert.is_resolved_at(now))
    reason = NotifyReason.DO_NOT_NOTIFY
    if visible and not muted:
        reason = notify_reason(
            state.last_notification,
            firing,
            resolved,
            send_resolved=send_resolved,
            repeat_interval=timing.repeat_interval,
            now=now,
        )
    deliver: tuple[Alert, ...] = ()
    log_entry = None
    if reason.should_notify:
        log_entry = NotificationLogEntry(sent_at=now, firing=firing, resolved=resolved)
        if send_resolved:
            deliver = tuple(visible)
        elif firing:
            deliver = tuple(alert for alert in visible if alert.fingerprint in firing)
    return FlushDecision(
        flush_now=True,
        next_flush_at=now + timing.group_interval,
        reason=reason,
        deliver=deliver,
        log_entry=log_entry,
        drop_resolved=all_resolved,
        delete_group=len(all_resolved) == len(ordered),
    )


@dataclass(slots=True)
class Group:
    """A notification group's row as plain data (no ORM instance on the hot path): a flush moves its
    timer and notification log in place, and `dispatch.notify` writes them back with the flush's rows."""

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


_GROUPS = records.table(NotificationGroup)


_GROUP_ALERTS = records.table(NotificationGroupAlert)


# The Celery task that flushes given groups, as its quarantine knows it (the timer's tick hands it the
# groups of a batch that failed).
FLUSH_CONSUMER = quarantine.Consumer("notifier.flush_groups", _GROUPS.c.id, _GROUPS.c.organization_id)


def select_groups(*criteria: ColumnElement[bool]) -> Select:
    return select(*(_GROUPS.c[column.name] for column in fields(Group))).where(*criteria)


def load_groups(session: Session, statement: Select) -> list[Group]:
    return [Group(*row) for row in session.execute(statement)]


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

    def kept_unless_restarted(column: str, restarted: ColumnElement[Any]) -> ColumnElement[Any]:
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


def _keyed(pairs: Iterable[tuple[uuid.UUID, str]]) -> ColumnElement[bool]:
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


def _lock_active_groups_statement(pairs: list[tuple[uuid.UUID, str]]) -> Select:
    """`_lock_active_groups` reading the groups as it locks them."""
    return (
        select_groups(_keyed(pairs), _GROUPS.c.active.is_(True))
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
    driver = records.postgres(session)
    groups: list[Group] = []
    for firing, run in itertools.groupby(deciding.values(), key=lambda target: not target[2].resolved):
        if firing and driver is not None:
            groups.extend(_upsert_groups_returning(driver, list(run), now))
        elif firing:
            _upsert_groups(session, list(run), now)
        elif driver is not None:
            groups.extend(load_groups(session, _lock_active_groups_statement([(rule.id, key) for rule, key, _ in run])))
        else:
            _lock_active_groups(session, [(rule.id, key) for rule, key, _ in run])
    if driver is None:
        groups = load_groups(session, select_groups(_keyed(deciding), _GROUPS.c.active.is_(True)))
    return {(group.rule_id, group.group_key): group for group in groups}


# On PostgreSQL the firing alerts' groups are created or restarted, locked (in the rows' order) and read
# back by one statement over arrays.
_UPSERT_GROUPS = """
INSERT INTO notification_groups AS g
    (id, organization_id, rule_id, group_key, group_key_digest, labels, active, created_at,
     first_alert_starts_at, next_flush_at, notification_log)
SELECT id, organization_id, rule_id, group_key, group_key_digest, labels::jsonb, true, %(now)b,
       first_alert_starts_at, next_flush_at, '{}'::jsonb
FROM unnest(%(id)b::uuid[], %(org)b::uuid[], %(rule)b::uuid[], %(key)b::text[], %(digest)b::text[],
            %(labels)b::text[], %(starts)b::timestamptz[], %(next)b::timestamptz[])
    WITH ORDINALITY AS n(id, organization_id, rule_id, group_key, group_key_digest, labels,
                         first_alert_starts_at, next_flush_at, position)
ORDER BY position
ON CONFLICT (rule_id, group_key_digest) DO UPDATE SET
    active = true,
    created_at = CASE WHEN g.active THEN g.created_at ELSE excluded.created_at END,
    first_alert_starts_at = CASE WHEN g.active THEN g.first_alert_starts_at ELSE excluded.first_alert_starts_at END,
    last_flush_at = CASE WHEN g.active THEN g.last_flush_at END,
    next_flush_at = CASE WHEN g.active THEN g.next_flush_at ELSE excluded.next_flush_at END
RETURNING id, organization_id, rule_id, group_key, labels, active, created_at, first_alert_starts_at,
          last_flush_at, next_flush_at, notification_log
"""


def _upsert_groups_returning(driver: psycopg.Connection[Any], targets: list[Target], now: datetime) -> list[Group]:
    rows = [_group_row(rule, key, found, now) for rule, key, found in targets]
    cursor = driver.execute(
        _UPSERT_GROUPS,
        {
            "now": now,
            "id": [row["id"] for row in rows],
            "org": [row["organization_id"] for row in rows],
            "rule": [row["rule_id"] for row in rows],
            "key": [row["group_key"] for row in rows],
            "digest": [row["group_key_digest"] for row in rows],
            "labels": [records.json_text(row["labels"]) for row in rows],
            "starts": [row["first_alert_starts_at"] for row in rows],
            "next": [row["next_flush_at"] for row in rows],
        },
    )
    return [Group(*row) for row in cursor]


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
    """Firing alerts are upserted, resolved ones get their end time: one statement per round on
    PostgreSQL, a statement (or one executemany) for each elsewhere. An alert seen twice in a batch
    (firing, then resolved) starts a new round, so the events apply in their order."""
    rounds: list[list[tuple[Group, EventAlert]]] = []
    seen: set[tuple[uuid.UUID, str]] = set()
    for group, found in stored:
        if not rounds or (group.id, found.key) in seen:
            rounds.append([])
            seen = set()
        seen.add((group.id, found.key))
        rounds[-1].append((group, found))
    driver = records.postgres(session)
    for current in rounds:
        if driver is not None:
            _store_round(driver, current, now)
            continue
        firing = [_alert_row(group, found, now) for group, found in current if not found.resolved]
        if firing:
            statement = upsert_insert(session, records.table(NotificationGroupAlert))
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
            table = records.table(NotificationGroupAlert)
            session.execute(
                update(table)
                .where(table.c.group_id == bindparam("b_group_id"), table.c.fingerprint == bindparam("b_fingerprint"))
                .values(ends_at=bindparam("b_ends_at"), updated_at=now),
                resolved,
            )


# On PostgreSQL a round is one statement over arrays: firing alerts upserted (fresh labels, annotations
# and end time, the original start time), resolved ones given their end time.
_STORE_ROUND = """
WITH firing AS (
    INSERT INTO notification_group_alerts AS a
        (id, group_id, fingerprint, labels, annotations, starts_at, ends_at, url, one_shot, updated_at)
    SELECT id, group_id, fingerprint, labels::jsonb, annotations::jsonb, starts_at, ends_at, url, one_shot, %(now)b
    FROM unnest(%(id)b::uuid[], %(group)b::uuid[], %(fingerprint)b::text[], %(labels)b::text[],
                %(annotations)b::text[], %(starts)b::timestamptz[], %(ends)b::timestamptz[], %(url)b::text[],
                %(one_shot)b::bool[])
        AS n(id, group_id, fingerprint, labels, annotations, starts_at, ends_at, url, one_shot)
    ON CONFLICT (group_id, fingerprint) DO UPDATE SET
        labels = excluded.labels, annotations = excluded.annotations, url = excluded.url,
        ends_at = excluded.ends_at, updated_at = excluded.updated_at
)
UPDATE notification_group_alerts AS a SET ends_at = r.ends_at, updated_at = %(now)b
FROM unnest(%(r_group)b::uuid[], %(r_fingerprint)b::text[], %(r_ends)b::timestamptz[])
    AS r(group_id, fingerprint, ends_at)
WHERE a.group_id = r.group_id AND a.fingerprint = r.fingerprint
"""


def _store_round(driver: psycopg.Connection[Any], current: list[tuple[Group, EventAlert]], now: datetime) -> None:
    firing = [(group, found.key, found.alert, found.one_shot) for group, found in current if not found.resolved]
    resolved = [(group, found) for group, found in current if found.resolved]
    driver.execute(
        _STORE_ROUND,
        {
            "now": now,
            "id": [uuid.uuid4() for _ in firing],
            "group": [group.id for group, *_ in firing],
            "fingerprint": [key for _, key, _, _ in firing],
            "labels": [records.json_text(alert.labels) for *_, alert, _ in firing],
            "annotations": [records.json_text(alert.annotations) for *_, alert, _ in firing],
            "starts": [alert.starts_at for *_, alert, _ in firing],
            "ends": [alert.ends_at for *_, alert, _ in firing],
            "url": [alert.url for *_, alert, _ in firing],
            "one_shot": [one_shot for *_, one_shot in firing],
            "r_group": [group.id for group, _ in resolved],
            "r_fingerprint": [found.key for _, found in resolved],
            "r_ends": [found.alert.ends_at for _, found in resolved],
        },
    )


@dataclass(frozen=True, slots=True)
class GroupAlert:
    """An alert held in a group: its row's id, the producer's fingerprint (`key`), whether it is one-shot."""

    id: uuid.UUID
    key: str
    one_shot: bool
    alert: Alert


_ALERTS_OF = """
SELECT id, group_id, fingerprint, labels, annotations, starts_at, ends_at, url, one_shot
FROM notification_group_alerts WHERE group_id = ANY(%(groups)b::uuid[])
"""


def alerts_of(session: Session, groups: Sequence[Group]) -> dict[uuid.UUID, list[GroupAlert]]:
    """The alerts of each group, in one query."""
    found: dict[uuid.UUID, list[GroupAlert]] = defaultdict(list)
    driver = records.postgres(session)
    if driver is not None:
        for alert_id, group_id, key, labels, annotations, starts_at, ends_at, url, one_shot in driver.execute(
            _ALERTS_OF, {"groups": [group.id for group in groups]}
        ):
            alert = Alert(labels=labels, starts_at=starts_at, ends_at=ends_at, annotations=annotations, url=url)
            found[group_id].append(GroupAlert(alert_id, key, one_shot, alert))
        return found
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
        found[row.group_id].append(GroupAlert(row.id, row.fingerprint, row.one_shot, records.alert_of(row)))
    return found


def place(session: Session, targets: list[Target], now: datetime) -> dict[tuple[uuid.UUID, str], Group]:
    """Put each target's alert into its group (created, or restarted, for a firing alert); returns the
    groups, locked, by (rule id, group key). A fixed number of statements, whatever the batch's size."""
    groups = _lock_groups(session, targets, now)
    _store_alerts(
        session, [(groups[(rule.id, key)], found) for rule, key, found in targets if (rule.id, key) in groups], now
    )
    return groups


def _due(now: datetime, *criteria: ColumnElement[bool]) -> Select:
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


def due_groups(session: Session, now: datetime, limit: int = 200) -> list[Group]:
    """Up to `limit` due groups, locked."""
    return load_groups(session, _due(now).limit(limit))


def due_groups_by_id(session: Session, group_ids: Sequence[uuid.UUID], now: datetime) -> list[Group]:
    """Those of the groups that are (still) due, locked."""
    return load_groups(session, _due(now, _GROUPS.c.id.in_(group_ids)))


def due_group_ids(session: Session, now: datetime, limit: int = 200) -> list[uuid.UUID]:
    """The groups `flush_due_groups` would take, to flush them one by one when their batch failed."""
    return [group.id for group in load_groups(session, _due(now).limit(limit))]
