"""One alert's way through the notifier, stage by stage, each stage a module of its own:

1. `intake` — the event's batch is taken (claimed once, whoever hands it over) and each event becomes
   an alert;
2. `rule_match` — the rules it hits (from the per-process configuration, `config.cache`), with the
   key of its group under each;
3. `grouping` — into its groups, created or restarted as needed; the groups whose timer is due now
   (`group_wait: 0s`, an old alert, or a timer's end) go on:
4. `muting` — what silences, inhibition and mute windows hold back;
5. `dispatch` — Alertmanager's dedup decides each channel's notification and delivery; after the
   commit the same task claims and sends them;
6. `attempt_log` — every attempt recorded, and the delivery delivered, failed, dead or retried later.

Stages 1-5 run in one transaction (the caller's), stage 5's send and stage 6 after it. A group timer
that ends later enters at stage 3, by the timer task or the periodic flush.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from services.notifier.domain import dispatch, grouping, intake, muting, rule_match
from services.notifier.domain.config import cache
from services.notifier.domain.config.cache import OrgConfig
from services.notifier.domain.dispatch import ClaimedDelivery
from services.notifier.domain.grouping import Group
from shared.core.crypto import SecretBox


@dataclass(frozen=True)
class Handled:
    # Deliveries created for groups due now: pending (to claim), or claimed already (to send) when the
    # caller gave a lease.
    deliveries: list[uuid.UUID]
    claimed: list[ClaimedDelivery]
    # Groups created by this batch whose group_wait ends later: when each is due.
    timers: dict[uuid.UUID, datetime]


NOTHING = Handled([], [], {})


def handle_events(
    session: Session,
    event_ids: list[uuid.UUID],
    box: SecretBox,
    now: datetime,
    link_base: str,
    lease_until: datetime | None = None,
) -> Handled:
    """Stages 1 to 5 for a batch of events, in a fixed number of statements whatever its size. Events
    already handled are skipped. `lease_until`: the caller sends the deliveries right after commit, so
    they are created claimed (see `dispatch.notify`)."""
    batch = intake.take_events(session, event_ids, now)
    if not batch:
        return NOTHING
    configs = cache.configs(session, {event.organization_id for event in batch}, box, now)
    with_rules = {org_id for org_id, config in configs.items() if config.rules}
    targets = rule_match.match(intake.event_alerts(session, batch, with_rules), configs)
    if not targets:
        return NOTHING
    groups = grouping.place(session, targets, now).values()
    due = [group for group in groups if group.next_flush_at is not None and group.next_flush_at <= now]
    timers = {
        group.id: group.next_flush_at
        for group in groups
        if group.last_flush_at is None and group.next_flush_at is not None and group.next_flush_at > now
    }
    notified = flush(session, due, box, now, link_base, configs, lease_until) if due else dispatch.NOTHING
    return Handled(notified.pending, notified.claimed, timers)


def flush(
    session: Session,
    groups: Sequence[Group],
    box: SecretBox,
    now: datetime,
    link_base: str,
    configs: Mapping[uuid.UUID, OrgConfig] | None = None,
    lease_until: datetime | None = None,
) -> dispatch.Notified:
    """Stages 4 and 5 for locked due groups (`configs`: those read in this transaction already, if any);
    returns the deliveries created."""
    if configs is None:
        configs = cache.configs(session, {group.organization_id for group in groups}, box, now)
    alerts = grouping.alerts_of(session, groups)
    held = muting.held_back(session, groups, alerts, configs, now)
    return dispatch.notify(session, groups, alerts, held, configs, now, link_base, lease_until)


def flush_due_groups(
    session: Session, box: SecretBox, now: datetime, link_base: str, limit: int = 200
) -> tuple[list[uuid.UUID], int]:
    """The periodic flush: up to `limit` due groups. Returns (delivery ids, groups flushed)."""
    groups = grouping.due_groups(session, now, limit)
    return (flush(session, groups, box, now, link_base).pending, len(groups)) if groups else ([], 0)


def flush_due_groups_by_id(
    session: Session,
    group_ids: Sequence[uuid.UUID],
    box: SecretBox,
    now: datetime,
    link_base: str,
    lease_until: datetime | None = None,
) -> dispatch.Notified:
    """Those of the groups that are (still) due."""
    groups = grouping.due_groups_by_id(session, group_ids, now)
    return flush(session, groups, box, now, link_base, lease_until=lease_until) if groups else dispatch.NOTHING
