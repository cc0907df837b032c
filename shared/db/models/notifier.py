"""Where notifications go (channels), which events go where (rules), and the delivery pipeline's state:
alert groups and their timers, notifications, deliveries with their attempt log, silences and mute
windows, and the bookkeeping that makes the workers idempotent (processed events, periodic-run claims).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base, BigIntPK, JSONType, SoftDelete, Timestamps, UTCDateTime, UUIDPrimaryKey, utcnow

CHANNEL_TYPES = ("slack", "email", "webhook")


class NotificationChannel(UUIDPrimaryKey, Timestamps, SoftDelete, Base):
    """`config` holds what may be shown; `secret_encrypted` (Fernet) holds URLs, passwords, signing keys."""

    __tablename__ = "notification_channels"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)

    organization_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False
    )
    project_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("projects.id", ondelete="CASCADE"))
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
    project_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    event_types: Mapped[list] = mapped_column(JSONType, nullable=False, default=list)
    min_severity: Mapped[str | None] = mapped_column(String(20))
    model_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("models.id", ondelete="CASCADE"))
    deployment_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("deployments.id", ondelete="CASCADE"))
    matchers: Mapped[list] = mapped_column(JSONType, nullable=False, default=list)
    channel_ids: Mapped[list] = mapped_column(JSONType, nullable=False, default=list)
    group_by: Mapped[list] = mapped_column(JSONType, nullable=False, default=list)
    group_wait_s: Mapped[int] = mapped_column(Integer, nullable=False, default=30)
    group_interval_s: Mapped[int] = mapped_column(Integer, nullable=False, default=300)
    repeat_interval_s: Mapped[int] = mapped_column(Integer, nullable=False, default=14400)
    # None means the channel type's default (on for Slack/webhook, off for email), as Alertmanager does.
    send_resolved: Mapped[bool | None] = mapped_column(Boolean)
    description: Mapped[str | None] = mapped_column(Text)
    # Mute windows (notification_mute_windows ids) during which this rule sends nothing.
    mute_window_ids: Mapped[list] = mapped_column(JSONType, nullable=False, default=list)


def _org_fk() -> Mapped[uuid.UUID]:
    return mapped_column(Uuid, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False)


class NotificationSilence(UUIDPrimaryKey, Timestamps, Base):
    """Alertmanager's silence; expiring one sets `ends_at` to now (it stays in the history)."""

    __tablename__ = "notification_silences"
    __table_args__ = (Index(None, "organization_id", "ends_at"),)

    organization_id: Mapped[uuid.UUID] = _org_fk()
    matchers: Mapped[list] = mapped_column(JSONType, nullable=False, default=list)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("users.id", ondelete="SET NULL"))
    created_by: Mapped[str] = mapped_column(String(320), nullable=False)
    comment: Mapped[str] = mapped_column(Text, nullable=False)


class NotificationInhibitRule(UUIDPrimaryKey, Timestamps, Base):
    """Alertmanager's inhibit rule: while an alert matching the source matchers fires, alerts matching the
    target matchers with the same values of the `equal` labels are muted."""

    __tablename__ = "notification_inhibit_rules"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)

    organization_id: Mapped[uuid.UUID] = _org_fk()
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    source_matchers: Mapped[list] = mapped_column(JSONType, nullable=False, default=list)
    target_matchers: Mapped[list] = mapped_column(JSONType, nullable=False, default=list)
    equal: Mapped[list] = mapped_column(JSONType, nullable=False, default=list)


class NotificationMuteWindow(UUIDPrimaryKey, Timestamps, Base):
    """Recurring mute times (Alertmanager time intervals, each with its IANA location)."""

    __tablename__ = "notification_mute_windows"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)

    organization_id: Mapped[uuid.UUID] = _org_fk()
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    time_intervals: Mapped[list] = mapped_column(JSONType, nullable=False, default=list)


class NotificationGroup(UUIDPrimaryKey, Base):
    """One aggregation group of a rule: its timer and, per channel, what was last notified.

    A group whose alerts all resolved is deactivated rather than deleted, so an event arriving at the
    same moment never races a delete; the next alert restarts it as a new group.
    """

    __tablename__ = "notification_groups"
    # Unique by the key's digest: the key renders user-supplied labels of any length, too long for an index.
    __table_args__ = (UniqueConstraint("rule_id", "group_key_digest"), Index(None, "active", "next_flush_at"))

    organization_id: Mapped[uuid.UUID] = _org_fk()
    rule_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("notification_rules.id", ondelete="CASCADE"), nullable=False
    )
    group_key: Mapped[str] = mapped_column(Text, nullable=False)
    # sha256 of group_key, hex.
    group_key_digest: Mapped[str] = mapped_column(String(64), nullable=False)
    labels: Mapped[dict] = mapped_column(JSONType, nullable=False, default=dict)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    first_alert_starts_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    last_flush_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_flush_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # {channel id: {"sent_at": iso, "firing": [fingerprints], "resolved": [fingerprints]}}
    notification_log: Mapped[dict] = mapped_column(JSONType, nullable=False, default=dict)


class NotificationGroupAlert(UUIDPrimaryKey, Base):
    __tablename__ = "notification_group_alerts"
    __table_args__ = (UniqueConstraint("group_id", "fingerprint"),)

    group_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("notification_groups.id", ondelete="CASCADE"), nullable=False
    )
    fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    labels: Mapped[dict] = mapped_column(JSONType, nullable=False, default=dict)
    annotations: Mapped[dict] = mapped_column(JSONType, nullable=False, default=dict)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    url: Mapped[str | None] = mapped_column(Text)
    # Events other than alert firing/resolved: notified once, then removed from the group.
    one_shot: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)


class Notification(UUIDPrimaryKey, Base):
    """A rendered-once message: its id is the webhook-id, the email Message-ID and the dedup key."""

    __tablename__ = "notifications"
    __table_args__ = (Index(None, "organization_id", "created_at"), Index(None, "rule_id", "created_at"))

    organization_id: Mapped[uuid.UUID] = _org_fk()
    rule_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("notification_rules.id", ondelete="SET NULL"))
    group_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("notification_groups.id", ondelete="SET NULL"))
    group_key: Mapped[str] = mapped_column(Text, nullable=False)
    # "alert" (from a rule) or "test" (the channel's test button).
    kind: Mapped[str] = mapped_column(String(20), nullable=False, default="alert")
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    reason: Mapped[str | None] = mapped_column(String(40))
    # Everything needed to render it again identically: alerts, group labels, link, receiver.
    payload: Mapped[dict] = mapped_column(JSONType, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class NotificationAlert(Base):
    """Which alerts (fingerprints) a notification carried: the delivery log's per-alert index."""

    __tablename__ = "notification_alerts"

    notification_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("notifications.id", ondelete="CASCADE"), primary_key=True
    )
    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class Delivery(UUIDPrimaryKey, Base):
    """One notification to one channel; the retry schedule lives here, not in the broker."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (
        UniqueConstraint("notification_id", "channel_id"),
        # The sweeper's query: due pending ones and expired in-flight leases.
        Index(None, "state", "next_attempt_at"),
        Index(None, "channel_id", "created_at"),
        Index(None, "organization_id", "created_at"),
    )

    notification_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("notifications.id", ondelete="CASCADE"), nullable=False
    )
    channel_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("notification_channels.id", ondelete="CASCADE"), nullable=False
    )
    organization_id: Mapped[uuid.UUID] = _org_fk()
    rule_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("notification_rules.id", ondelete="SET NULL"), index=True
    )
    state: Mapped[str] = mapped_column(String(20), nullable=False, default="pending")
    # Attempts in the current round (reset by a redelivery) and in total (numbering the log).
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    total_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When a dispatch task was last queued for it; a lost message is queued again after a while.
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)


class DeliveryAttempt(Base):
    __tablename__ = "notification_delivery_attempts"
    __table_args__ = (UniqueConstraint("delivery_id", "attempt"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("notification_deliveries.id", ondelete="CASCADE"), nullable=False
    )
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    outcome: Mapped[str] = mapped_column(String(20), nullable=False)
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float, nullable=False)
    error: Mapped[str | None] = mapped_column(Text)


class NotifierProcessedEvent(Base):
    """Outbox events the notifier has handled: the relay is at-least-once, the handler runs once."""

    __tablename__ = "notifier_processed_events"

    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow, index=True)


class NotifierPeriodicRun(Base):
    """When a periodic task last ran: two beat processes may both fire it, only one run is claimed."""

    __tablename__ = "notifier_periodic_runs"

    task: Mapped[str] = mapped_column(String(100), primary_key=True)
    last_run_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    # Runs claimed, and times asked: more asks than runs shows duplicates that were refused.
    runs: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    requests: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    # Where the task's next scan starts (the sweep: events published before it were all seen handled).
    checkpoint: Mapped[datetime | None] = mapped_column(UTCDateTime)
