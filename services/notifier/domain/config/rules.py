"""Rules: which events go to which channels, with Alertmanager's grouping options (create, read, update,
delete); `rule_match` applies them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import (
    select,
)
from sqlalchemy.orm import Session

from services.notifier.domain.alerts import SEVERITY_ORDER
from services.notifier.domain.matchers import coerce_matchers
from services.notifier.domain.organizations import PageRequest, page_in_organization, resolve_organization
from shared.core import audit
from shared.core.auth import Access
from shared.core.errors import AlreadyExists, InvalidParameter, NotFound
from shared.core.pagination import RowPage
from shared.db.base import utcnow
from shared.db.models import (
    NotificationChannel,
    NotificationMuteWindow,
    NotificationRule,
)

RULE_FIELDS = (
    "name",
    "description",
    "enabled",
    "project_id",
    "event_types",
    "min_severity",
    "model_id",
    "deployment_id",
    "matchers",
    "channel_ids",
    "group_by",
    "group_wait_s",
    "group_interval_s",
    "repeat_interval_s",
    "send_resolved",
    "mute_window_ids",
)


def _existing_ids(
    session: Session,
    model: type[NotificationChannel | NotificationMuteWindow],
    organization_id: uuid.UUID,
    ids: Iterable[Any],
    what: str,
) -> list[str]:
    wanted = {uuid.UUID(str(value)) for value in ids}
    stmt = select(model.id).where(model.id.in_(wanted), model.organization_id == organization_id)
    if hasattr(model, "deleted_at"):
        stmt = stmt.where(model.deleted_at.is_(None))
    missing = wanted - set(session.scalars(stmt))
    if missing:
        raise InvalidParameter(f"unknown {what}: {sorted(str(value) for value in missing)}")
    return sorted(str(value) for value in wanted)


def _apply(session: Session, access: Access, rule: NotificationRule, fields: Mapping[str, Any]) -> None:
    unknown = set(fields) - set(RULE_FIELDS)
    if unknown:
        raise InvalidParameter(f"unknown rule fields {sorted(unknown)}")
    fields = dict(fields)
    if "matchers" in fields:
        fields["matchers"] = [matcher.to_dict() for matcher in coerce_matchers(fields["matchers"])]
    if fields.get("min_severity") is not None:
        fields["min_severity"] = fields["min_severity"].lower()
        if fields["min_severity"] not in SEVERITY_ORDER:
            raise InvalidParameter(f"min_severity must be one of {list(SEVERITY_ORDER)}")
    if "channel_ids" in fields:
        fields["channel_ids"] = _existing_ids(
            session, NotificationChannel, rule.organization_id, fields["channel_ids"], "channels"
        )
    if "mute_window_ids" in fields:
        fields["mute_window_ids"] = _existing_ids(
            session, NotificationMuteWindow, rule.organization_id, fields["mute_window_ids"], "mute windows"
        )
    if fields.get("project_id") is not None:
        project = access.require_project(fields["project_id"], "notifications:write")
        if project.organization_id != rule.organization_id:
            raise NotFound(f"Project '{fields['project_id']}' does not exist")
    for name in ("model_id", "deployment_id"):
        if fields.get(name) is not None:
            fields[name] = uuid.UUID(str(fields[name]))
    if "name" in fields and fields["name"] != rule.name:
        taken = session.scalar(
            select(NotificationRule.id).where(
                NotificationRule.organization_id == rule.organization_id, NotificationRule.name == fields["name"]
            )
        )
        if taken is not None:
            raise AlreadyExists(f"Rule '{fields['name']}' already exists")
    for name, value in fields.items():
        setattr(rule, name, value)
    if rule.group_interval_s <= 0 or rule.repeat_interval_s <= 0 or rule.group_wait_s < 0:
        raise InvalidParameter("group_wait_s must be >= 0, group_interval_s and repeat_interval_s > 0")


def _describe(session: Session, action: str, rule: NotificationRule) -> None:
    audit.describe(
        session,
        action=action,
        object_type="notification_rule",
        object_id=rule.id,
        organization_id=rule.organization_id,
        details={"name": rule.name},
    )


def create_rule(
    session: Session, access: Access, organization_id: uuid.UUID | None, fields: Mapping[str, Any]
) -> NotificationRule:
    org = resolve_organization(access, organization_id, "notifications:write")
    rule = NotificationRule(
        id=uuid.uuid4(),
        organization_id=org.id,
        name="",
        event_types=[],
        matchers=[],
        channel_ids=[],
        group_by=[],
        mute_window_ids=[],
        group_wait_s=30,
        group_interval_s=300,
        repeat_interval_s=14400,
    )
    _apply(session, access, rule, fields)
    session.add(rule)
    session.flush()
    _describe(session, "notification_rule.create", rule)
    return rule


def get_rule(session: Session, access: Access, rule_id: uuid.UUID, *, write: bool = False) -> NotificationRule:
    rule = session.get(NotificationRule, rule_id)
    if rule is None or rule.deleted_at is not None:
        raise NotFound(f"Rule '{rule_id}' does not exist")
    access.require_org(rule.organization_id, "notifications:write" if write else "notifications:read")
    return rule


def list_rules(session: Session, access: Access, request: PageRequest) -> RowPage:
    return page_in_organization(session, access, request, NotificationRule, NotificationRule.deleted_at.is_(None))


def update_rule(session: Session, access: Access, rule_id: uuid.UUID, fields: Mapping[str, Any]) -> NotificationRule:
    rule = get_rule(session, access, rule_id, write=True)
    _apply(session, access, rule, fields)
    session.flush()
    _describe(session, "notification_rule.update", rule)
    return rule


def delete_rule(session: Session, access: Access, rule_id: uuid.UUID) -> NotificationRule:
    rule = get_rule(session, access, rule_id, write=True)
    rule.deleted_at = utcnow()
    session.flush()
    _describe(session, "notification_rule.delete", rule)
    return rule
