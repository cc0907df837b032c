"""The transactional outbox: events are written with the change that caused them, relayed after commit."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base, JSONType, UTCDateTime, UUIDPrimaryKey, utcnow


class OutboxEvent(UUIDPrimaryKey, Base):
    __tablename__ = "outbox_events"
    # The relay's query: unpublished events, oldest first.
    __table_args__ = (Index(None, "published_at", "created_at"),)

    organization_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("organizations.id", ondelete="CASCADE"))
    project_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    event_type: Mapped[str] = mapped_column(String(100), nullable=False)
    payload: Mapped[dict] = mapped_column(JSONType, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    publish_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class DeadLetter(UUIDPrimaryKey, Base):
    """An item (event, delivery, group…) a batch consumer failed on: retried alone until `attempts` reach
    the limit, then quarantined — skipped by its consumer until replayed (see shared/core/quarantine.py)."""

    __tablename__ = "dead_letters"
    __table_args__ = (
        UniqueConstraint("consumer", "item_id"),
        Index(None, "organization_id", "created_at"),
        Index(None, "state"),
    )

    # The Celery task that consumes the item, e.g. "notifier.handle_events".
    consumer: Mapped[str] = mapped_column(String(100), nullable=False)
    item_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    organization_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("organizations.id", ondelete="CASCADE"))
    # retrying | quarantined | replaying | resolved
    state: Mapped[str] = mapped_column(String(20), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    error: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    last_failed_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    replayed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
