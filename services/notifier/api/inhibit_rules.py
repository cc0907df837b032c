"""Inhibit rules (Alertmanager's inhibition): while a source alert fires, matching targets are muted."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Response

from services.notifier.api.paging import OrgPage
from services.notifier.domain.config import muting
from services.notifier.schemas import InhibitRuleCreate, InhibitRuleRead
from shared.core.deps import AccessDep, SessionDep
from shared.core.pagination import Page, entity_page
from shared.db.models import NotificationInhibitRule

router = APIRouter(prefix="/api/v1/inhibit-rules", tags=["silences and mute windows"])


@router.post("", response_model=InhibitRuleRead, status_code=201, summary="Create an inhibit rule")
def create_inhibit_rule(body: InhibitRuleCreate, session: SessionDep, access: AccessDep) -> NotificationInhibitRule:
    return muting.create_inhibit_rule(
        session,
        access,
        organization_id=body.organization_id,
        name=body.name,
        source_matchers=body.source_matchers,
        target_matchers=body.target_matchers,
        equal=body.equal,
    )


@router.get("", response_model=Page[InhibitRuleRead], summary="The organization's inhibit rules, oldest first")
def list_inhibit_rules(
    session: SessionDep,
    access: AccessDep,
    paging: OrgPage,
) -> dict[str, Any]:
    return entity_page(muting.list_inhibit_rules(session, access, paging))


@router.get("/{rule_id}", response_model=InhibitRuleRead, summary="One inhibit rule")
def get_inhibit_rule(rule_id: uuid.UUID, session: SessionDep, access: AccessDep) -> NotificationInhibitRule:
    return muting.get_inhibit_rule(session, access, rule_id)


@router.delete("/{rule_id}", status_code=204, summary="Delete an inhibit rule")
def delete_inhibit_rule(rule_id: uuid.UUID, session: SessionDep, access: AccessDep) -> Response:
    muting.delete_inhibit_rule(session, access, rule_id)
    return Response(status_code=204)
