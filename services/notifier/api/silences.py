"""Silences (matchers, start/end, who and why) and recurring mute windows (IANA time zones)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Response

from services.notifier.api.paging import OrgPage
from services.notifier.domain.config import muting
from services.notifier.domain.muting import to_silence
from services.notifier.schemas import MuteWindowCreate, MuteWindowRead, MuteWindowUpdate, SilenceCreate, SilenceRead
from shared.core.deps import AccessDep, SessionDep
from shared.core.pagination import Page, entity_page
from shared.db.base import utcnow
from shared.db.models import NotificationMuteWindow, NotificationSilence

router = APIRouter(prefix="/api/v1/silences", tags=["silences and mute windows"])


def _read(row: NotificationSilence) -> SilenceRead:
    return SilenceRead(
        id=row.id,
        organization_id=row.organization_id,
        matchers=row.matchers,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        created_by=row.created_by,
        comment=row.comment,
        state=str(to_silence(row).state_at(utcnow())),
        created_at=row.created_at,
    )


@router.post("", response_model=SilenceRead, status_code=201, summary="Silence matching alerts for a while")
def create_silence(body: SilenceCreate, session: SessionDep, access: AccessDep) -> SilenceRead:
    row = muting.create_silence(
        session,
        access,
        organization_id=body.organization_id,
        matchers=body.matchers,
        starts_at=body.starts_at or utcnow(),
        ends_at=body.ends_at,
        comment=body.comment,
    )
    return _read(row)


@router.get("", response_model=Page[SilenceRead], summary="The organization's silences, newest first")
def list_silences(
    session: SessionDep,
    access: AccessDep,
    paging: OrgPage,
) -> dict[str, Any]:
    page = muting.list_silences(session, access, paging)
    return {"items": [_read(row[0]) for row in page.rows], "next_page_token": page.next_page_token}


# Mute windows before /{silence_id}, so "mute-windows" is not taken for an id.
@router.post("/mute-windows", response_model=MuteWindowRead, status_code=201, summary="Create a mute window")
def create_mute_window(body: MuteWindowCreate, session: SessionDep, access: AccessDep) -> NotificationMuteWindow:
    return muting.create_mute_window(
        session, access, organization_id=body.organization_id, name=body.name, time_intervals=body.time_intervals
    )


@router.get("/mute-windows", response_model=Page[MuteWindowRead], summary="Mute windows, oldest first")
def list_mute_windows(
    session: SessionDep,
    access: AccessDep,
    paging: OrgPage,
) -> dict[str, Any]:
    return entity_page(muting.list_mute_windows(session, access, paging))


@router.get("/mute-windows/{window_id}", response_model=MuteWindowRead, summary="One mute window")
def get_mute_window(window_id: uuid.UUID, session: SessionDep, access: AccessDep) -> NotificationMuteWindow:
    return muting.get_mute_window(session, access, window_id)


@router.put("/mute-windows/{window_id}", response_model=MuteWindowRead, summary="Replace a mute window's intervals")
def update_mute_window(
    window_id: uuid.UUID, body: MuteWindowUpdate, session: SessionDep, access: AccessDep
) -> NotificationMuteWindow:
    return muting.update_mute_window(session, access, window_id, body.time_intervals)


@router.delete("/mute-windows/{window_id}", status_code=204, summary="Delete a mute window")
def delete_mute_window(window_id: uuid.UUID, session: SessionDep, access: AccessDep) -> Response:
    muting.delete_mute_window(session, access, window_id)
    return Response(status_code=204)


@router.get("/{silence_id}", response_model=SilenceRead, summary="One silence")
def get_silence(silence_id: uuid.UUID, session: SessionDep, access: AccessDep) -> SilenceRead:
    return _read(muting.get_silence(session, access, silence_id))


@router.delete("/{silence_id}", response_model=SilenceRead, summary="Expire a silence now")
def expire_silence(silence_id: uuid.UUID, session: SessionDep, access: AccessDep) -> SilenceRead:
    return _read(muting.expire_silence(session, access, silence_id, utcnow()))
