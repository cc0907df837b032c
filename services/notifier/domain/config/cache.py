"""What each organization has configured for the notifier — rules, channels, silences, mute windows,
inhibit rules — held in the process as plain values, parsed once (matchers compiled, channel secrets
decrypted), and revalidated by one small query per batch.

Every batch asks `configs` for the organizations it touches. One statement reads a stamp of each
organization's five tables (row count and the sum of `updated_at`: any insert, update, soft or hard
delete changes it); an organization whose stamp moved is reloaded, the others are served from memory.
So a change made through the API is seen by the next batch that starts after its commit, in every
process, with no message to lose and no time-to-live to wait out.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property, lru_cache
from typing import Any

from sqlalchemy import ColumnElement, CompoundSelect, Select, bindparam, extract, func, literal, select, union_all
from sqlalchemy.orm import Session

from services.notifier.domain.grouping import GroupTiming
from services.notifier.domain.matchers import Matcher, coerce_matchers
from services.notifier.domain.muting import InhibitRule, Silence, TimeInterval, to_silence
from shared.core.crypto import SecretBox
from shared.db.models import (
    NotificationChannel,
    NotificationInhibitRule,
    NotificationMuteWindow,
    NotificationRule,
    NotificationSilence,
)


@dataclass(frozen=True)
class Rule:
    """A live (enabled, not deleted) rule, with its matchers parsed."""

    id: uuid.UUID
    organization_id: uuid.UUID
    name: str
    event_types: tuple[str, ...]
    min_severity: str | None
    project_id: uuid.UUID | None
    model_id: uuid.UUID | None
    deployment_id: uuid.UUID | None
    matchers: tuple[Matcher, ...]
    channel_ids: tuple[str, ...]
    group_by: tuple[str, ...]
    timing: GroupTiming
    repeat_interval_s: int
    send_resolved: bool | None
    mute_window_ids: tuple[str, ...]

    @classmethod
    def of(cls, row: NotificationRule) -> Rule:
        return cls(
            id=row.id,
            organization_id=row.organization_id,
            name=row.name,
            event_types=tuple(row.event_types),
            min_severity=row.min_severity,
            project_id=row.project_id,
            model_id=row.model_id,
            deployment_id=row.deployment_id,
            matchers=tuple(coerce_matchers(row.matchers)),
            channel_ids=tuple(row.channel_ids),
            group_by=tuple(row.group_by),
            timing=GroupTiming.from_seconds(row.group_wait_s, row.group_interval_s, row.repeat_interval_s),
            repeat_interval_s=row.repeat_interval_s,
            send_resolved=row.send_resolved,
            mute_window_ids=tuple(row.mute_window_ids),
        )


@dataclass(frozen=True)
class ChannelTarget:
    """A channel decrypted for sending; lives only in memory."""

    id: uuid.UUID
    name: str
    type: str
    config: Mapping[str, Any]
    secrets: Mapping[str, Any]


@dataclass(frozen=True)
class Channel:
    """A channel that is not deleted; a disabled one is kept, as what it would have been sent is
    recorded as dropped."""

    id: uuid.UUID
    enabled: bool
    disabled_reason: str | None
    target: ChannelTarget


def target_for(row: NotificationChannel, box: SecretBox) -> ChannelTarget:
    secrets = box.decrypt_json(row.secret_encrypted) if row.secret_encrypted else {}
    return ChannelTarget(row.id, row.name, row.type, dict(row.config), secrets)


@dataclass(frozen=True)
class OrgConfig:
    rules: tuple[Rule, ...] = ()
    # By channel id as a string (rules name channels so).
    channels: Mapping[str, Channel] = field(default_factory=dict)
    # Silences not over when loaded (each still checks its own times against `now`).
    silences: tuple[Silence, ...] = ()
    mute_intervals: Mapping[str, list[TimeInterval]] = field(default_factory=dict)
    inhibit_rules: tuple[InhibitRule, ...] = ()

    @cached_property
    def _rules_by_id(self) -> dict[uuid.UUID, Rule]:
        return {rule.id: rule for rule in self.rules}

    def rule(self, rule_id: uuid.UUID) -> Rule | None:
        return self._rules_by_id.get(rule_id)

    def muting_intervals(self, rule: Rule) -> list[TimeInterval]:
        return [interval for wid in rule.mute_window_ids for interval in self.mute_intervals.get(wid, [])]


EMPTY = OrgConfig()
Stamp = frozenset[tuple[Any, ...]]


def _seconds(dialect: str, column: Any) -> ColumnElement[Any]:
    # SQLite's EXTRACT (strftime '%s') keeps whole seconds only; julianday keeps the fraction.
    return func.julianday(column) * 86400 if dialect == "sqlite" else extract("epoch", column)


def _stamp_of(dialect: str, model: Any, *criteria: ColumnElement[bool]) -> Select:
    return (
        select(
            model.organization_id,
            literal(model.__tablename__),
            func.count(),
            func.sum(_seconds(dialect, model.updated_at)),
        )
        .where(model.organization_id.in_(bindparam("organization_ids", expanding=True)), *criteria)
        .group_by(model.organization_id)
    )


@lru_cache(maxsize=4)
def _stamps_statement(dialect: str) -> CompoundSelect:
    """Built once per dialect (the organizations and the time are parameters): building and keying a
    five-part union for every batch cost more than running it."""
    return union_all(
        _stamp_of(dialect, NotificationRule),
        _stamp_of(dialect, NotificationChannel),
        _stamp_of(dialect, NotificationMuteWindow),
        _stamp_of(dialect, NotificationInhibitRule),
        # The history of silences grows; only those not over count (an expired one leaves the stamp).
        _stamp_of(dialect, NotificationSilence, NotificationSilence.ends_at >= bindparam("now")),
    )


def _stamps(session: Session, organization_ids: Collection[uuid.UUID], now: datetime) -> dict[uuid.UUID, Stamp]:
    statement = _stamps_statement(session.get_bind().dialect.name)
    rows = session.execute(statement, {"organization_ids": list(organization_ids), "now": now}).all()
    parts: dict[uuid.UUID, set[tuple[Any, ...]]] = {org_id: set() for org_id in organization_ids}
    for org_id, *rest in rows:
        parts[org_id].add(tuple(rest))
    return {org_id: frozenset(stamp) for org_id, stamp in parts.items()}


def _load(session: Session, organization_id: uuid.UUID, box: SecretBox, now: datetime) -> OrgConfig:
    rules = session.scalars(
        select(NotificationRule)
        .where(
            NotificationRule.organization_id == organization_id,
            NotificationRule.enabled.is_(True),
            NotificationRule.deleted_at.is_(None),
        )
        .order_by(NotificationRule.id)
    )
    channels = session.scalars(
        select(NotificationChannel).where(
            NotificationChannel.organization_id == organization_id, NotificationChannel.deleted_at.is_(None)
        )
    )
    silences = session.scalars(
        select(NotificationSilence).where(
            NotificationSilence.organization_id == organization_id, NotificationSilence.ends_at >= now
        )
    )
    windows = session.scalars(
        select(NotificationMuteWindow).where(NotificationMuteWindow.organization_id == organization_id)
    )
    inhibit_rules = session.scalars(
        select(NotificationInhibitRule).where(NotificationInhibitRule.organization_id == organization_id)
    )
    return OrgConfig(
        rules=tuple(Rule.of(row) for row in rules),
        channels={
            str(row.id): Channel(row.id, row.enabled, row.disabled_reason, target_for(row, box)) for row in channels
        },
        silences=tuple(to_silence(row) for row in silences),
        mute_intervals={str(row.id): [TimeInterval.from_dict(item) for item in row.time_intervals] for row in windows},
        inhibit_rules=tuple(
            InhibitRule(
                source=tuple(coerce_matchers(row.source_matchers)),
                target=tuple(coerce_matchers(row.target_matchers)),
                equal=tuple(row.equal),
            )
            for row in inhibit_rules
        ),
    )


# This process's configurations, by organization, with the stamp they were loaded at.
_CACHE: dict[uuid.UUID, tuple[Stamp, OrgConfig]] = {}


def configs(
    session: Session, organization_ids: Collection[uuid.UUID], box: SecretBox, now: datetime
) -> dict[uuid.UUID, OrgConfig]:
    """The current configuration of each organization: one query when none changed, and the five
    loads of each one that did."""
    if not organization_ids:
        return {}
    found = {}
    for org_id, stamp in _stamps(session, organization_ids, now).items():
        cached = _CACHE.get(org_id)
        if not stamp:
            # Nothing configured: nothing to cache either.
            _CACHE.pop(org_id, None)
            found[org_id] = EMPTY
            continue
        if cached is None or cached[0] != stamp:
            cached = (stamp, _load(session, org_id, box, now))
            _CACHE[org_id] = cached
        found[org_id] = cached[1]
    return found
