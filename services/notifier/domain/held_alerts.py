"""The alerts the notifier holds right now, as Alertmanager's `GET /api/v2/alerts` lists them (amtool,
Grafana's Alertmanager data source): every firing alert in an active group of the organization, once
per alert (by label fingerprint), with the rules it is routed by as its receivers and the silences and
inhibiting alerts that hold it back. One of them can also be asked for by its producer's fingerprint (a
monitor alert's), which is how the console says what silenced or inhibited that alert."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from services.notifier.domain import muting, records
from services.notifier.domain.alerts import Alert
from services.notifier.domain.matchers import Matcher, MatcherError, matches_all
from services.notifier.domain.muting import Inhibitor, Silence, silenced_by
from services.notifier.domain.organizations import resolve_organization
from shared.core.auth import Access
from shared.core.errors import NotFound
from shared.db.models import NotificationGroup, NotificationGroupAlert, NotificationRule


@dataclass
class ActiveAlert:
    alert: Alert
    updated_at: datetime
    # The producer's fingerprints of this alert (the labels' own when the producer gave none).
    keys: set[str] = field(default_factory=set)
    receivers: set[str] = field(default_factory=set)
    silences: list[Silence] = field(default_factory=list)
    # Fingerprints of the firing alerts that inhibit this one.
    inhibited_by: list[str] = field(default_factory=list)

    @property
    def silenced_by(self) -> list[str]:
        return sorted(str(silence.id) for silence in self.silences)

    @property
    def suppressed(self) -> bool:
        return bool(self.silences or self.inhibited_by)


@dataclass
class _Held:
    """Everything firing in one organization, with what can hold an alert back."""

    by_fingerprint: dict[str, ActiveAlert]
    silences: list[Silence]
    inhibitor: Inhibitor | None

    def judge(self, held: ActiveAlert, now: datetime) -> None:
        held.silences = sorted(silenced_by(held.alert.labels, self.silences, now), key=lambda s: str(s.id))
        held.inhibited_by = self.inhibitor.inhibited_by(held.alert) if self.inhibitor else []


def active_alerts(
    session: Session,
    access: Access,
    now: datetime,
    *,
    matchers: Sequence[Matcher] = (),
    silenced: bool = True,
    inhibited: bool = True,
    active: bool = True,
    receiver: str | None = None,
) -> list[ActiveAlert]:
    """Alertmanager's filters: label `matchers`, whether silenced, inhibited and neither (`active`)
    alerts are included, and a regex the name of one of the alert's receivers must match (fully)."""
    org = resolve_organization(access, None, "notifications:read")
    try:
        receiver_pattern = re.compile(receiver) if receiver else None
    except re.error as exc:
        raise MatcherError(f"invalid receiver regex: {exc}") from None
    firing = _firing(session, org.id, now)
    listed = []
    for held in firing.by_fingerprint.values():
        if not matches_all(matchers, held.alert.labels):
            continue
        if receiver_pattern and not any(receiver_pattern.fullmatch(name) for name in held.receivers):
            continue
        firing.judge(held, now)
        shown = (not held.silences or silenced) and (not held.inhibited_by or inhibited)
        if shown and (held.suppressed or active):
            listed.append(held)
    return sorted(listed, key=lambda held: (held.alert.starts_at, held.alert.fingerprint))


def held_alert(
    session: Session, access: Access, organization_id: uuid.UUID | None, key: str, now: datetime
) -> tuple[ActiveAlert, list[ActiveAlert]]:
    """The firing alert with the producer's fingerprint `key`, judged, and the alerts inhibiting it."""
    org = resolve_organization(access, organization_id, "notifications:read")
    firing = _firing(session, org.id, now)
    held = next((held for held in firing.by_fingerprint.values() if key in held.keys), None)
    if held is None:
        raise NotFound("The notifier holds no firing alert with this fingerprint")
    firing.judge(held, now)
    return held, [firing.by_fingerprint[f] for f in held.inhibited_by if f in firing.by_fingerprint]


def _firing(session: Session, organization_id: uuid.UUID, now: datetime) -> _Held:
    alerts, groups, rules = (
        records.table(NotificationGroupAlert),
        records.table(NotificationGroup),
        records.table(NotificationRule),
    )
    rows = session.execute(
        select(
            alerts.c.fingerprint,
            alerts.c.labels,
            alerts.c.annotations,
            alerts.c.starts_at,
            alerts.c.ends_at,
            alerts.c.url,
            alerts.c.updated_at,
            rules.c.name.label("rule_name"),
        )
        .join(groups, groups.c.id == alerts.c.group_id)
        .join(rules, rules.c.id == groups.c.rule_id)
        .where(
            groups.c.organization_id == organization_id,
            groups.c.active.is_(True),
            or_(alerts.c.ends_at.is_(None), alerts.c.ends_at > now),
        )
    )
    by_fingerprint: dict[str, ActiveAlert] = {}
    for row in rows:
        alert = records.alert_of(row)
        held = by_fingerprint.setdefault(alert.fingerprint, ActiveAlert(alert, row.updated_at))
        held.keys.add(row.fingerprint)
        held.receivers.add(row.rule_name)
        held.updated_at = max(held.updated_at, row.updated_at)
    silences = muting.silences_in_force(session, [organization_id], now).get(organization_id, [])
    # Every alert firing in the organization is here already: the inhibitor's sources need no query.
    inhibit_rules = muting.inhibit_rules(session, [organization_id]).get(organization_id)
    inhibitor = Inhibitor(inhibit_rules, [held.alert for held in by_fingerprint.values()]) if inhibit_rules else None
    return _Held(by_fingerprint, silences, inhibitor)
