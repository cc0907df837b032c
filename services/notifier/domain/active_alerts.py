"""The alerts the notifier holds right now, as Alertmanager's `GET /api/v2/alerts` lists them (amtool,
Grafana's Alertmanager data source): every firing alert in an active group of the organization, once
per alert (by label fingerprint), with the rules it is routed by as its receivers and the silences and
inhibiting alerts that hold it back."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from services.notifier.domain import muting, records
from services.notifier.domain.alerts import Alert
from services.notifier.domain.inhibition import Inhibitor
from services.notifier.domain.matchers import Matcher, MatcherError, matches_all
from services.notifier.domain.silences import silenced_by
from services.notifier.domain.storage import resolve_organization
from shared.core.auth import Access
from shared.db.models import NotificationGroup, NotificationGroupAlert, NotificationRule


@dataclass
class ActiveAlert:
    alert: Alert
    updated_at: datetime
    receivers: set[str] = field(default_factory=set)
    silenced_by: list[str] = field(default_factory=list)
    # Fingerprints of the firing alerts that inhibit this one.
    inhibited_by: list[str] = field(default_factory=list)

    @property
    def suppressed(self) -> bool:
        return bool(self.silenced_by or self.inhibited_by)


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
    alerts, groups, rules = NotificationGroupAlert.__table__, NotificationGroup.__table__, NotificationRule.__table__
    rows = session.execute(
        select(
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
            groups.c.organization_id == org.id,
            groups.c.active.is_(True),
            or_(alerts.c.ends_at.is_(None), alerts.c.ends_at > now),
        )
    )
    by_fingerprint: dict[str, ActiveAlert] = {}
    for row in rows:
        alert = records.alert_of(row)
        held = by_fingerprint.setdefault(alert.fingerprint, ActiveAlert(alert, row.updated_at))
        held.receivers.add(row.rule_name)
        held.updated_at = max(held.updated_at, row.updated_at)
    silences = muting.silences_in_force(session, [org.id], now).get(org.id, [])
    # Every alert firing in the organization is here already: the inhibitor's sources need no query.
    rules = muting.inhibit_rules(session, [org.id]).get(org.id)
    inhibitor = Inhibitor(rules, [held.alert for held in by_fingerprint.values()]) if rules else None
    listed = []
    for held in by_fingerprint.values():
        if not matches_all(matchers, held.alert.labels):
            continue
        if receiver_pattern and not any(receiver_pattern.fullmatch(name) for name in held.receivers):
            continue
        held.silenced_by = sorted(str(silence.id) for silence in silenced_by(held.alert.labels, silences, now))
        held.inhibited_by = inhibitor.inhibited_by(held.alert) if inhibitor else []
        shown = (not held.silenced_by or silenced) and (not held.inhibited_by or inhibited)
        if shown and (held.suppressed or active):
            listed.append(held)
    return sorted(listed, key=lambda held: (held.alert.starts_at, held.alert.fingerprint))
