"""Silences, mute windows and inhibit rules as people store them: create, read, update, expire, delete;
`muting` applies them.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    select,
)
from sqlalchemy.orm import Session

from services.notifier.domain.matchers import coerce_matchers
from services.notifier.domain.muting import InhibitRule, Silence, TimeInterval
from services.notifier.domain.organizations import PageRequest, page_in_organization, resolve_organization
from shared.core import audit
from shared.core.auth import Access
from shared.core.errors import AlreadyExists, InvalidParameter, NotFound
from shared.core.pagination import RowPage
from shared.db.models import (
    NotificationInhibitRule,
    NotificationMuteWindow,
    NotificationSilence,
)

OrgRow = NotificationSilence | NotificationMuteWindow | NotificationInhibitRule
OrgRowT = TypeVar("OrgRowT", NotificationSilence, NotificationMuteWindow, NotificationInhibitRule)
NamedRowT = TypeVar("NamedRowT", NotificationMuteWindow, NotificationInhibitRule)


# --- silences ------------------------------------------------------------------------------------


def create_silence(
    session: Session,
    access: Access,
    *,
    organization_id: uuid.UUID | None,
    matchers: Sequence[str | Mapping[str, Any]],
    starts_at: datetime,
    ends_at: datetime,
    comment: str,
) -> NotificationSilence:
    org = resolve_organization(access, organization_id, "notifications:write")
    # The domain type validates as Alertmanager does (a matcher that is not empty-matching, times).
    silence = Silence(
        matchers=tuple(coerce_matchers(matchers)),
        starts_at=starts_at,
        ends_at=ends_at,
        created_by=access.principal.email,
        comment=comment,
    )
    row = NotificationSilence(
        organization_id=org.id,
        matchers=[matcher.to_dict() for matcher in silence.matchers],
        starts_at=starts_at,
        ends_at=ends_at,
        created_by_id=access.principal.user_id,
        created_by=access.principal.email,
        comment=comment,
    )
    session.add(row)
    session.flush()
    audit.describe(
        session,
        action="notification_silence.create",
        object_type="notification_silence",
        object_id=row.id,
        organization_id=org.id,
        details={"matchers": [str(matcher) for matcher in silence.matchers], "ends_at": ends_at.isoformat()},
    )
    return row


def _get_org_row(
    session: Session, access: Access, model: type[OrgRowT], row_id: uuid.UUID, label: str, write: bool
) -> OrgRowT:
    row = session.get(model, row_id)
    if row is None:
        raise NotFound(f"{label} '{row_id}' does not exist")
    access.require_org(row.organization_id, "notifications:write" if write else "notifications:read")
    return row


# Mute windows and inhibit rules are rows named uniquely within their organization.


def _check_name_free(
    session: Session,
    model: type[NotificationMuteWindow | NotificationInhibitRule],
    organization_id: uuid.UUID,
    name: str,
    label: str,
) -> None:
    taken = session.scalar(select(model.id).where(model.organization_id == organization_id, model.name == name))
    if taken is not None:
        raise AlreadyExists(f"{label} '{name}' already exists")


def _describe(session: Session, row: OrgRow, action: str, details: dict | None = None) -> None:
    # The object type is the action's noun: "notification_mute_window.create".
    audit.describe(
        session,
        action=action,
        object_type=action.rsplit(".", 1)[0],
        object_id=row.id,
        organization_id=row.organization_id,
        details=details,
    )


def _add_named(session: Session, row: NamedRowT, action: str) -> NamedRowT:
    session.add(row)
    session.flush()
    _describe(session, row, action, {"name": row.name})
    return row


def _delete_named(session: Session, row: OrgRow, action: str) -> None:
    session.delete(row)
    session.flush()
    _describe(session, row, action)


def get_silence(session: Session, access: Access, silence_id: uuid.UUID, *, write: bool = False) -> NotificationSilence:
    return _get_org_row(session, access, NotificationSilence, silence_id, "Silence", write)


def all_silences(session: Session, access: Access, organization_id: uuid.UUID | None) -> list[NotificationSilence]:
    """Every silence, latest end first: Alertmanager's API lists them in one answer."""
    org = resolve_organization(access, organization_id, "notifications:read")
    return list(
        session.scalars(
            select(NotificationSilence)
            .where(NotificationSilence.organization_id == org.id)
            .order_by(NotificationSilence.ends_at.desc())
        )
    )


def list_silences(session: Session, access: Access, request: PageRequest) -> RowPage:
    # Not by ends_at: expiring a silence moves it, and a moving key would skip rows between pages.
    return page_in_organization(session, access, request, NotificationSilence, newest_first=True)


def expire_silence(session: Session, access: Access, silence_id: uuid.UUID, now: datetime) -> NotificationSilence:
    """Alertmanager's expire: the silence ends now and stays in the history."""
    row = get_silence(session, access, silence_id, write=True)
    if row.ends_at > now:
        row.ends_at = max(now, row.starts_at)
    session.flush()
    audit.describe(
        session,
        action="notification_silence.expire",
        object_type="notification_silence",
        object_id=row.id,
        organization_id=row.organization_id,
    )
    return row


# --- mute windows --------------------------------------------------------------------------------


def _validated_intervals(time_intervals: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if not time_intervals:
        raise InvalidParameter("a mute window needs at least one time interval")
    for item in time_intervals:
        TimeInterval.from_dict(item)
    return [dict(item) for item in time_intervals]


def create_mute_window(
    session: Session,
    access: Access,
    *,
    organization_id: uuid.UUID | None,
    name: str,
    time_intervals: Sequence[Mapping[str, Any]],
) -> NotificationMuteWindow:
    org = resolve_organization(access, organization_id, "notifications:write")
    _check_name_free(session, NotificationMuteWindow, org.id, name, "Mute window")
    row = NotificationMuteWindow(organization_id=org.id, name=name, time_intervals=_validated_intervals(time_intervals))
    return _add_named(session, row, "notification_mute_window.create")


def get_mute_window(
    session: Session, access: Access, window_id: uuid.UUID, *, write: bool = False
) -> NotificationMuteWindow:
    return _get_org_row(session, access, NotificationMuteWindow, window_id, "Mute window", write)


def list_mute_windows(session: Session, access: Access, request: PageRequest) -> RowPage:
    return page_in_organization(session, access, request, NotificationMuteWindow)


def update_mute_window(
    session: Session, access: Access, window_id: uuid.UUID, time_intervals: Sequence[Mapping[str, Any]]
) -> NotificationMuteWindow:
    row = get_mute_window(session, access, window_id, write=True)
    row.time_intervals = _validated_intervals(time_intervals)
    session.flush()
    _describe(session, row, "notification_mute_window.update")
    return row


def delete_mute_window(session: Session, access: Access, window_id: uuid.UUID) -> None:
    _delete_named(session, get_mute_window(session, access, window_id, write=True), "notification_mute_window.delete")


# --- inhibit rules -------------------------------------------------------------------------------


def create_inhibit_rule(
    session: Session,
    access: Access,
    *,
    organization_id: uuid.UUID | None,
    name: str,
    source_matchers: Sequence[str | Mapping[str, Any]],
    target_matchers: Sequence[str | Mapping[str, Any]],
    equal: Sequence[str],
) -> NotificationInhibitRule:
    org = resolve_organization(access, organization_id, "notifications:write")
    _check_name_free(session, NotificationInhibitRule, org.id, name, "Inhibit rule")
    # The domain type validates (parseable matchers, both sides given).
    rule = InhibitRule(
        source=tuple(coerce_matchers(source_matchers)),
        target=tuple(coerce_matchers(target_matchers)),
        equal=tuple(dict.fromkeys(equal)),
    )
    row = NotificationInhibitRule(
        organization_id=org.id,
        name=name,
        source_matchers=[matcher.to_dict() for matcher in rule.source],
        target_matchers=[matcher.to_dict() for matcher in rule.target],
        equal=list(rule.equal),
    )
    return _add_named(session, row, "notification_inhibit_rule.create")


def get_inhibit_rule(
    session: Session, access: Access, rule_id: uuid.UUID, *, write: bool = False
) -> NotificationInhibitRule:
    return _get_org_row(session, access, NotificationInhibitRule, rule_id, "Inhibit rule", write)


def list_inhibit_rules(session: Session, access: Access, request: PageRequest) -> RowPage:
    return page_in_organization(session, access, request, NotificationInhibitRule)


def delete_inhibit_rule(session: Session, access: Access, rule_id: uuid.UUID) -> None:
    _delete_named(session, get_inhibit_rule(session, access, rule_id, write=True), "notification_inhibit_rule.delete")
