"""Channels: CRUD (org admins), secret rotation and the test button."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter

from services.notifier.api.paging import OrgPage
from services.notifier.domain import senders
from services.notifier.domain.config import channels
from services.notifier.schemas import (
    ChannelCreate,
    ChannelCreated,
    ChannelRead,
    ChannelUpdate,
    DeliveryRead,
    SecretRotated,
    SecretRotation,
)
from shared.core.crypto import SecretBox
from shared.core.deps import AccessDep, SessionDep, SettingsDep
from shared.core.pagination import Page, entity_page
from shared.db.base import utcnow
from shared.db.models import Delivery, NotificationChannel

router = APIRouter(prefix="/api/v1/channels", tags=["notification channels"])


@router.post("", response_model=ChannelCreated, status_code=201, summary="Create a channel")
def create_channel(
    body: ChannelCreate, session: SessionDep, access: AccessDep, settings: SettingsDep
) -> ChannelCreated:
    fields = body.model_dump(exclude={"name", "type", "organization_id", "project_id"})
    channel, signing_secret = channels.create_channel(
        session,
        access,
        SecretBox(settings.encryption_keys),
        senders.policy_for(settings),
        organization_id=body.organization_id,
        project_id=body.project_id,
        name=body.name,
        channel_type=body.type,
        fields=fields,
    )
    return ChannelCreated.model_validate(
        {**ChannelRead.model_validate(channel).model_dump(), "signing_secret": signing_secret}
    )


@router.get("", response_model=Page[ChannelRead], summary="The organization's channels, oldest first")
def list_channels(
    session: SessionDep,
    access: AccessDep,
    paging: OrgPage,
) -> dict[str, Any]:
    return entity_page(channels.list_channels(session, access, paging))


@router.get("/{channel_id}", response_model=ChannelRead, summary="One channel (never its secrets)")
def get_channel(channel_id: uuid.UUID, session: SessionDep, access: AccessDep) -> NotificationChannel:
    return channels.get_channel(session, access, channel_id)


@router.patch("/{channel_id}", response_model=ChannelRead, summary="Change a channel")
def update_channel(
    channel_id: uuid.UUID, body: ChannelUpdate, session: SessionDep, access: AccessDep, settings: SettingsDep
) -> NotificationChannel:
    box = SecretBox(settings.encryption_keys)
    changes = body.changes()
    return channels.update_channel(session, access, box, senders.policy_for(settings), channel_id, changes)


@router.delete("/{channel_id}", response_model=ChannelRead, summary="Delete a channel")
def delete_channel(channel_id: uuid.UUID, session: SessionDep, access: AccessDep) -> NotificationChannel:
    return channels.delete_channel(session, access, channel_id)


@router.post(
    "/{channel_id}/rotate-secret",
    response_model=SecretRotated,
    summary="New webhook signing secret; the old one keeps signing during the overlap",
)
def rotate_secret(
    channel_id: uuid.UUID, body: SecretRotation, session: SessionDep, access: AccessDep, settings: SettingsDep
) -> SecretRotated:
    channel, secret, previous_expires_at = channels.rotate_signing_secret(
        session,
        access,
        SecretBox(settings.encryption_keys),
        channel_id,
        overlap_seconds=body.overlap_seconds,
        new_secret=body.signing_secret,
        now=utcnow(),
    )
    return SecretRotated(channel_id=channel.id, signing_secret=secret, previous_expires_at=previous_expires_at)


@router.post("/{channel_id}/test", response_model=DeliveryRead, summary="Send a test message now")
def test_channel(channel_id: uuid.UUID, session: SessionDep, access: AccessDep, settings: SettingsDep) -> Delivery:
    box = SecretBox(settings.encryption_keys)
    return channels.send_test(session, access, box, settings, channel_id, utcnow())
