"""Rules: CRUD and the preview ("which rules would this event hit?")."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter

from services.notifier.api.paging import OrgPage
from services.notifier.domain import rule_match
from services.notifier.domain.config import rules
from services.notifier.domain.organizations import resolve_organization
from services.notifier.schemas import RuleCreate, RuleHit, RulePreview, RulePreviewRequest, RuleRead, RuleUpdate
from shared.core.deps import AccessDep, SessionDep
from shared.core.pagination import Page, entity_page
from shared.db.base import utcnow
from shared.db.models import NotificationRule

router = APIRouter(prefix="/api/v1/rules", tags=["notification rules"])


def _stored(fields: dict) -> dict:
    # JSON columns hold ids as strings.
    for name in ("channel_ids", "mute_window_ids"):
        if fields.get(name) is not None:
            fields[name] = [str(value) for value in fields[name]]
    return fields


@router.post("", response_model=RuleRead, status_code=201, summary="Create a rule")
def create_rule(body: RuleCreate, session: SessionDep, access: AccessDep) -> NotificationRule:
    return rules.create_rule(
        session, access, body.organization_id, _stored(body.model_dump(exclude={"organization_id"}))
    )


@router.get("", response_model=Page[RuleRead], summary="The organization's rules, oldest first")
def list_rules(
    session: SessionDep,
    access: AccessDep,
    paging: OrgPage,
) -> dict[str, Any]:
    return entity_page(rules.list_rules(session, access, paging))


@router.post("/preview", response_model=RulePreview, summary="Which rules would this event hit?")
def preview(body: RulePreviewRequest, session: SessionDep, access: AccessDep) -> RulePreview:
    org = resolve_organization(access, body.organization_id, "notifications:read")
    if body.project_id is not None:
        access.require_project(body.project_id, "notifications:read")
    alert, hits = rule_match.preview(session, org.id, body.project_id, body.event_type, body.payload, utcnow())
    return RulePreview(
        labels=dict(alert.labels),
        rules=[
            RuleHit(
                rule=RuleRead.model_validate(hit.rule), group_key=hit.group_key, silenced=hit.silenced, muted=hit.muted
            )
            for hit in hits
        ],
    )


@router.get("/{rule_id}", response_model=RuleRead, summary="One rule")
def get_rule(rule_id: uuid.UUID, session: SessionDep, access: AccessDep) -> NotificationRule:
    return rules.get_rule(session, access, rule_id)


@router.patch("/{rule_id}", response_model=RuleRead, summary="Change a rule")
def update_rule(rule_id: uuid.UUID, body: RuleUpdate, session: SessionDep, access: AccessDep) -> NotificationRule:
    return rules.update_rule(session, access, rule_id, _stored(body.changes()))


@router.delete("/{rule_id}", response_model=RuleRead, summary="Delete a rule")
def delete_rule(rule_id: uuid.UUID, session: SessionDep, access: AccessDep) -> NotificationRule:
    return rules.delete_rule(session, access, rule_id)
