"""Dispatch, the fifth stage: a due group becomes a notification and its deliveries, which are claimed and
sent.

`notify` runs the timers of due groups (judged by `muting`): Alertmanager's dedup against each channel's
notification log (`grouping.decide_flush`) decides what to send; each notification is stored with
everything needed to render it again, with one delivery per channel, in the caller's transaction.
A task that sends right after its commit has them created claimed (in flight with a lease); otherwise
`claim` marks due deliveries in flight (one conditional UPDATE: two workers given the same delivery
cannot both claim it). `send_all` sends them concurrently, outside any transaction, on
the process's outbound event loop (`senders`). The outcome goes to the attempt log (`attempt_log`).

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

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
from sqlalchemy import (
    Row,
    and_,
    bindparam,
    delete,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from services.notifier.domain import records, senders
from services.notifier.domain.config import cache
from services.notifier.domain.config.cache import Channel, ChannelTarget, OrgConfig, Rule
from services.notifier.domain.grouping import (
    FlushDecision,
    Group,
    GroupAlert,
    GroupState,
    NotificationLogEntry,
    decide_flush,
    default_send_resolved,
)
from services.notifier.domain.messages import Notification as Message
from services.notifier.domain.muting import Held
from services.notifier.domain.senders import DeliveryResult, Outcome

if TYPE_CHECKING:
    from services.notifier.domain.attempt_log import RetryPolicy
from shared.core import outbound
from shared.core.crypto import SecretBox
from shared.core.settings import Settings
from shared.db.models import (
    Delivery,
    Notification,
    NotificationAlert,
    NotificationGroup,
    NotificationGroupAlert,
)

_GROUPS = records.table(NotificationGroup)
_GROUP_ALERTS = records.table(NotificationGroupAlert)


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
    """Rows a batch of flushes creates or removes, written by one statement on PostgreSQL (table by
    table, an executemany each, elsewhere); no ORM objects: nothing reads them back in this transaction."""

    notifications: list[dict] = field(default_factory=list)
    alerts: list[dict] = field(default_factory=list)
    deliveries: list[dict] = field(default_factory=list)
    # Ids of group alerts that leave their group.
    gone_alerts: list[uuid.UUID] = field(default_factory=list)


def _deactivate(group: Group) -> None:
    group.active = False
    group.next_flush_at = None


def _flush(
    group: Group,
    rule: Rule | None,
    config: OrgConfig,
    held_alerts: Sequence[GroupAlert],
    held: Held,
    now: datetime,
    planned: _Planned,
    link_base: str,
) -> None:
    if rule is None or not held_alerts:
        planned.gone_alerts.extend(held_alert.id for held_alert in held_alerts)
        _deactivate(group)
        return
    alerts = [held_alert.alert for held_alert in held_alerts]
    timing = rule.timing
    # Silenced and inhibited alerts are muted alike (Alertmanager's MuteStage).
    silenced, muted = held.silenced, held.muted
    state = GroupState(group.created_at, group.first_alert_starts_at, group.last_flush_at)
    one_shot = frozenset(held_alert.alert.fingerprint for held_alert in held_alerts if held_alert.one_shot)

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
    keys = {held_alert.alert.fingerprint: held_alert.key for held_alert in held_alerts}
    for entries in same_content.values():
        _notify(planned, group, rule, entries, keys, now, link_base)

    group.notification_log = log
    group.last_flush_at = now
    group.next_flush_at = timer.next_flush_at
    leaving = timer.drop_resolved | (frozenset() if muted else one_shot)
    gone = [held_alert.id for held_alert in held_alerts if held_alert.alert.fingerprint in leaving]
    planned.gone_alerts.extend(gone)
    if len(gone) == len(held_alerts):
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


def notify(
    session: Session,
    groups: Sequence[Group],
    alerts: Mapping[uuid.UUID, Sequence[GroupAlert]],
    held: Mapping[uuid.UUID, Held],
    configs: Mapping[uuid.UUID, OrgConfig],
    now: datetime,
    link_base: str,
    lease_until: datetime | None = None,
) -> Notified:
    """Run the timers of locked due groups, with their alerts (`grouping.alerts_of`) and what holds them
    back (`muting.held_back`). The deliveries are created pending, for whoever claims them, or — given
    `lease_until`, by a caller that sends them as soon as this transaction commits — claimed already:
    in flight with that lease, written once (no claim statement, no reading back what was just written)."""
    planned = _Planned()
    for group in groups:
        config = configs[group.organization_id]
        rule = config.rule(group.rule_id)
        _flush(group, rule, config, alerts.get(group.id, ()), held[group.id], now, planned, link_base)
    claimed = _claim_planned(planned, configs, now, lease_until) if lease_until is not None else []
    driver = records.postgres(session)
    if driver is not None:
        _write_planned(driver, planned, groups)
    else:
        _write_planned_portably(session, planned, groups)
    return Notified(
        pending=[delivery["id"] for delivery in planned.deliveries if delivery["state"] == "pending"], claimed=claimed
    )


# The whole flush of a batch in one statement, each table written once over arrays: the notifications,
# their alerts and deliveries (their foreign keys are checked at the statement's end, after all three
# inserts), the alerts leaving their groups and the groups' timers and logs.
_WRITE_PLANNED = """
WITH notifications AS (
    INSERT INTO notifications
        (id, organization_id, rule_id, group_id, group_key, kind, status, reason, payload, created_at)
    SELECT id, organization_id, rule_id, group_id, group_key, kind, status, reason, payload::jsonb, created_at
    FROM unnest(%(n_id)b::uuid[], %(n_org)b::uuid[], %(n_rule)b::uuid[], %(n_group)b::uuid[], %(n_key)b::text[],
                %(n_kind)b::text[], %(n_status)b::text[], %(n_reason)b::text[], %(n_payload)b::text[],
                %(n_created)b::timestamptz[])
        AS n(id, organization_id, rule_id, group_id, group_key, kind, status, reason, payload, created_at)
), alerts AS (
    INSERT INTO notification_alerts (notification_id, fingerprint)
    SELECT * FROM unnest(%(a_notification)b::uuid[], %(a_fingerprint)b::text[])
), deliveries AS (
    INSERT INTO notification_deliveries
        (id, notification_id, channel_id, organization_id, rule_id, state, attempts, total_attempts,
         next_attempt_at, queued_at, lease_until, last_attempt_at, last_error, created_at, updated_at)
    SELECT * FROM unnest(%(d_id)b::uuid[], %(d_notification)b::uuid[], %(d_channel)b::uuid[], %(d_org)b::uuid[],
                         %(d_rule)b::uuid[], %(d_state)b::text[], %(d_attempts)b::int[], %(d_total)b::int[],
                         %(d_next)b::timestamptz[], %(d_queued)b::timestamptz[], %(d_lease)b::timestamptz[],
                         %(d_last)b::timestamptz[], %(d_error)b::text[], %(d_created)b::timestamptz[],
                         %(d_updated)b::timestamptz[])
), gone AS (
    DELETE FROM notification_group_alerts WHERE id = ANY(%(gone)b::uuid[])
)
UPDATE notification_groups AS g
SET active = u.active, last_flush_at = u.last_flush_at, next_flush_at = u.next_flush_at,
    notification_log = u.notification_log::jsonb
FROM unnest(%(g_id)b::uuid[], %(g_active)b::bool[], %(g_last)b::timestamptz[], %(g_next)b::timestamptz[],
            %(g_log)b::text[]) AS u(id, active, last_flush_at, next_flush_at, notification_log)
WHERE g.id = u.id
"""


def _write_planned(driver: psycopg.Connection[Any], planned: _Planned, groups: Sequence[Group]) -> None:
    notifications, deliveries = planned.notifications, planned.deliveries
    driver.execute(
        _WRITE_PLANNED,
        {
            "n_id": [row["id"] for row in notifications],
            "n_org": [row["organization_id"] for row in notifications],
            "n_rule": [row["rule_id"] for row in notifications],
            "n_group": [row["group_id"] for row in notifications],
            "n_key": [row["group_key"] for row in notifications],
            "n_kind": [row["kind"] for row in notifications],
            "n_status": [row["status"] for row in notifications],
            "n_reason": [row["reason"] for row in notifications],
            "n_payload": [records.json_text(row["payload"]) for row in notifications],
            "n_created": [row["created_at"] for row in notifications],
            "a_notification": [row["notification_id"] for row in planned.alerts],
            "a_fingerprint": [row["fingerprint"] for row in planned.alerts],
            "d_id": [row["id"] for row in deliveries],
            "d_notification": [row["notification_id"] for row in deliveries],
            "d_channel": [row["channel_id"] for row in deliveries],
            "d_org": [row["organization_id"] for row in deliveries],
            "d_rule": [row["rule_id"] for row in deliveries],
            "d_state": [row["state"] for row in deliveries],
            "d_attempts": [row["attempts"] for row in deliveries],
            "d_total": [row["total_attempts"] for row in deliveries],
            "d_next": [row["next_attempt_at"] for row in deliveries],
            "d_queued": [row["queued_at"] for row in deliveries],
            "d_lease": [row.get("lease_until") for row in deliveries],
            "d_last": [row.get("last_attempt_at") for row in deliveries],
            "d_error": [row["last_error"] for row in deliveries],
            "d_created": [row["created_at"] for row in deliveries],
            "d_updated": [row["updated_at"] for row in deliveries],
            "gone": planned.gone_alerts,
            "g_id": [group.id for group in groups],
            "g_active": [group.active for group in groups],
            "g_last": [group.last_flush_at for group in groups],
            "g_next": [group.next_flush_at for group in groups],
            "g_log": [records.json_text(group.notification_log) for group in groups],
        },
    )


def _write_planned_portably(session: Session, planned: _Planned, groups: Sequence[Group]) -> None:
    # Notifications first, for the foreign keys. Core inserts of plain rows: an ORM bulk insert would
    # spend more Python per row than the database spends storing it.
    for model, rows in (
        (Notification, planned.notifications),
        (NotificationAlert, planned.alerts),
        (Delivery, planned.deliveries),
    ):
        if rows:
            session.execute(insert(records.table(model)), rows)
    if planned.gone_alerts:
        session.execute(delete(_GROUP_ALERTS).where(_GROUP_ALERTS.c.id.in_(planned.gone_alerts)))
    session.execute(
        update(_GROUPS)
        .where(_GROUPS.c.id == bindparam("b_id"))
        .values({name: bindparam(f"b_{name}") for name in _FLUSHED_COLUMNS}),
        [{"b_id": group.id, **{f"b_{name}": getattr(group, name) for name in _FLUSHED_COLUMNS}} for group in groups],
    )


@dataclass(frozen=True)
class Notified:
    # Deliveries created pending (to claim and send), and those created claimed already.
    pending: list[uuid.UUID]
    claimed: list[ClaimedDelivery]


NOTHING = Notified([], [])


def _claim_planned(
    planned: _Planned, configs: Mapping[uuid.UUID, OrgConfig], now: datetime, lease_until: datetime
) -> list[ClaimedDelivery]:
    """Turn the planned pending deliveries into claimed ones: the first attempt of each, as `claim`
    would record it."""
    messages = {row["id"]: records.message_of_row(row) for row in planned.notifications}
    claimed = []
    for delivery in planned.deliveries:
        if delivery["state"] != "pending":
            continue
        delivery |= {
            "state": "in_flight",
            "lease_until": lease_until,
            "attempts": 1,
            "total_attempts": 1,
            "last_attempt_at": now,
        }
        channel = configs[delivery["organization_id"]].channels[str(delivery["channel_id"])]
        claimed.append(ClaimedDelivery(delivery["id"], 1, 1, channel.target, messages[delivery["notification_id"]]))
    return claimed


@dataclass(frozen=True)
class ClaimedDelivery:
    """What one attempt needs, read while claiming, so the send runs outside any transaction."""

    delivery_id: uuid.UUID
    # Attempt number in the log, and within the current round (which decides the dead letter).
    attempt: int
    round_attempt: int
    target: ChannelTarget | None
    message: Message


def claim(
    session: Session, delivery_ids: Sequence[uuid.UUID], box: SecretBox, retry: RetryPolicy, now: datetime
) -> list[ClaimedDelivery]:
    """Mark the due ones among the deliveries in flight; those delivered, finished, not due yet, or
    being sent by another worker (in flight with a live lease) drop out. One conditional UPDATE
    decides, so two workers given the same delivery cannot both claim it."""
    due = or_(
        and_(Delivery.state == "pending", or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now)),
        and_(Delivery.state == "in_flight", Delivery.lease_until <= now),
    )
    claimed = session.execute(
        update(Delivery)
        .where(Delivery.id.in_(delivery_ids), due)
        .values(
            state="in_flight",
            lease_until=now + retry.lease,
            attempts=Delivery.attempts + 1,
            total_attempts=Delivery.total_attempts + 1,
            last_attempt_at=now,
            updated_at=now,
        )
        .returning(
            Delivery.id,
            Delivery.total_attempts,
            Delivery.attempts,
            Delivery.notification_id,
            Delivery.channel_id,
            Delivery.organization_id,
        )
        .execution_options(synchronize_session=False)
    ).all()
    if not claimed:
        return []
    # Plain rows of the four columns a message needs: no ORM instances on the hot path.
    notifications = {
        row.id: row
        for row in session.execute(
            select(Notification.id, Notification.group_key, Notification.payload, Notification.created_at).where(
                Notification.id.in_({row.notification_id for row in claimed})
            )
        )
    }
    configs = cache.configs(session, {row.organization_id for row in claimed}, box, now)

    def target(row: Row) -> ChannelTarget | None:
        channel = configs[row.organization_id].channels.get(str(row.channel_id))
        return channel.target if channel is not None and channel.enabled else None

    return [
        ClaimedDelivery(
            delivery_id=row.id,
            attempt=row.total_attempts,
            round_attempt=row.attempts,
            target=target(row),
            message=records.message_of(notifications[row.notification_id]),
        )
        for row in claimed
    ]


# Sends of one batch under way at once: a batch of 50 then takes at most two send timeouts.
MAX_CONCURRENT_SENDS = 32


def send(claimed: ClaimedDelivery, settings: Settings, now: datetime) -> DeliveryResult:
    [result] = send_all([claimed], settings, now)
    return result


def send_all(claimed: Sequence[ClaimedDelivery], settings: Settings, now: datetime) -> list[DeliveryResult]:
    """Send concurrently on the process's outbound event loop (webhooks and Slack on aiohttp, email in
    threads); the results come in the order of `claimed`."""
    policy = senders.outbound_policy(tuple(settings.outbound_allowlist))

    async def send_each() -> list[DeliveryResult]:
        under_way = asyncio.Semaphore(MAX_CONCURRENT_SENDS)

        async def send_one(delivery: ClaimedDelivery) -> DeliveryResult:
            if delivery.target is None:
                return DeliveryResult(Outcome.FAILED, 0.0, error="channel is disabled or deleted")
            async with under_way:
                return await senders.send(delivery.target, delivery.message, policy, now)

        return list(await asyncio.gather(*(send_one(delivery) for delivery in claimed)))

    return outbound.run(send_each())
