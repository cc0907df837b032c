"""Rule match, the second stage: which rules each alert hits, and the key of its group under each.

A rule hits an event by event type (glob patterns; none = all), severity at or above its minimum,
project, model and deployment, and label matchers. Rules come from the per-process configuration cache
(`config.cache`), matchers parsed once. `preview` answers the API's "which rules would this event hit?"
with the same matching, and says whether a silence or mute window would hold the alert back right now.
"""

from __future__ import annotations

import fnmatch
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.notifier.domain import intake, muting
from services.notifier.domain.alerts import Alert, severity_rank
from services.notifier.domain.config.cache import OrgConfig, Rule
from services.notifier.domain.grouping import group_key
from services.notifier.domain.intake import Event, EventAlert
from services.notifier.domain.matchers import matches_all
from services.notifier.domain.muting import is_muted, is_silenced
from shared.db.models import (
    NotificationRule,
    Project,
)


def rule_matches(rule: Rule, event_type: str, project_id: uuid.UUID | None, payload: Mapping, alert: Alert) -> bool:
    """Event type (glob patterns; none = all), severity at or above, project/model/deployment, labels."""
    if rule.event_types and not any(fnmatch.fnmatchcase(event_type, pattern) for pattern in rule.event_types):
        return False
    if rule.min_severity and severity_rank(alert.labels.get("severity")) > severity_rank(rule.min_severity):
        return False
    if rule.project_id is not None and rule.project_id != project_id:
        return False
    if rule.model_id is not None and str(rule.model_id) != str(payload.get("model_id")):
        return False
    if rule.deployment_id is not None and str(rule.deployment_id) != str(payload.get("deployment_id")):
        return False
    return matches_all(rule.matchers, alert.labels)


# An event's alert for one rule it matched, and the key of its group under that rule.
Target = tuple[Rule, str, EventAlert]


def match(event_alerts: Iterable[tuple[Event, EventAlert]], configs: Mapping[uuid.UUID, OrgConfig]) -> list[Target]:
    """Every (rule, group key, alert) of the events' alerts, in the events' order."""
    targets: list[Target] = []
    for event, found in event_alerts:
        for rule in configs[event.organization_id].rules:
            if rule_matches(rule, event.event_type, event.project_id, event.payload, found.alert):
                targets.append((rule, group_key(f"rule-{rule.id}", found.alert.labels, rule.group_by), found))
    return targets


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
    found = intake.alert_from_event(
        event_type, payload, created_at=now, project_label=project.slug if project else None
    )
    live = session.scalars(
        select(NotificationRule)
        .where(
            NotificationRule.organization_id == organization_id,
            NotificationRule.enabled.is_(True),
            NotificationRule.deleted_at.is_(None),
        )
        .order_by(NotificationRule.id)
    )
    matched = [row for row in live if rule_matches(Rule.of(row), event_type, project_id, payload, found.alert)]
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
