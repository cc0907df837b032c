"""Where notifications go (channels) and which events go where (rules)."""

from __future__ import annotations

import uuid

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base, JSONType, SoftDelete, Timestamps, UUIDPrimaryKey

CHANNEL_TYPES = ("slack", "email", "webhook")


class NotificationChannel(UUIDPrimaryKey, Timestamps, SoftDelete, Base):
    """`config` holds what may be shown; `secret_encrypted` (Fernet) holds URLs, passwords, signing keys."""

    __tablename__ = "notification_channels"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)

    organization_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False
    )
    project_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("projects.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    type: Mapped[str] = mapped_column(String(20), nullable=False)
    config: Mapped[dict] = mapped_column(JSONType, nullable=False, default=dict)
    secret_encrypted: Mapped[str | None] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text)


class NotificationRule(UUIDPrimaryKey, Timestamps, SoftDelete, Base):
    __tablename__ = "notification_rules"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)

    organization_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False
    )
    project_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("projects.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    event_types: Mapped[list] = mapped_column(JSONType, nullable=False, default=list)
    min_severity: Mapped[str | None] = mapped_column(String(20))
    model_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("models.id", ondelete="CASCADE"))
    deployment_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("deployments.id", ondelete="CASCADE")
    )
    matchers: Mapped[list] = mapped_column(JSONType, nullable=False, default=list)
    channel_ids: Mapped[list] = mapped_column(JSONType, nullable=False, default=list)
    group_by: Mapped[list] = mapped_column(JSONType, nullable=False, default=list)
    group_wait_s: Mapped[int] = mapped_column(Integer, nullable=False, default=30)
    group_interval_s: Mapped[int] = mapped_column(Integer, nullable=False, default=300)
    repeat_interval_s: Mapped[int] = mapped_column(Integer, nullable=False, default=14400)
    # None means the channel type's default (on for Slack/webhook, off for email), as Alertmanager does.
    send_resolved: Mapped[bool | None] = mapped_column(Boolean)
    description: Mapped[str | None] = mapped_column(Text)
