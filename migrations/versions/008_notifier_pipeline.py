"""Notifier: alert groups, notifications, deliveries and their attempt log, silences, mute windows,
processed-event and periodic-run bookkeeping; rules gain mute windows.

Revision ID: 008
Revises: 007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "008"
down_revision: str | None = "007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DELIVERY_INDEXES = (
    ["channel_id", "created_at"],
    ["organization_id", "created_at"],
    ["rule_id"],
    ["state", "next_attempt_at"],
)
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
TZ = sa.DateTime(timezone=True)


def _org_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["organization_id"],
        ["organizations.id"],
        name=op.f(f"fk_{table}_organization_id_organizations"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "notifier_periodic_runs",
        sa.Column("task", sa.String(length=100), nullable=False),
        sa.Column("last_run_at", TZ, nullable=False),
        sa.Column("runs", sa.BigInteger(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("task", name=op.f("pk_notifier_periodic_runs")),
    )
    op.create_table(
        "notifier_processed_events",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("processed_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_notifier_processed_events")),
    )
    op.create_index(
        op.f("ix_notifier_processed_events_processed_at"), "notifier_processed_events", ["processed_at"], unique=False
    )
    op.create_table(
        "notification_mute_windows",
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("time_intervals", JSON, nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        _org_fk("notification_mute_windows"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_mute_windows")),
        sa.UniqueConstraint("organization_id", "name", name=op.f("uq_notification_mute_windows_organization_id_name")),
    )
    op.create_table(
        "notification_silences",
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("matchers", JSON, nullable=False),
        sa.Column("starts_at", TZ, nullable=False),
        sa.Column("ends_at", TZ, nullable=False),
        sa.Column("created_by_id", sa.Uuid(), nullable=True),
        sa.Column("created_by", sa.String(length=320), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["users.id"],
            name=op.f("fk_notification_silences_created_by_id_users"),
            ondelete="SET NULL",
        ),
        _org_fk("notification_silences"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_silences")),
    )
    op.create_index(
        op.f("ix_notification_silences_organization_id_ends_at"),
        "notification_silences",
        ["organization_id", "ends_at"],
        unique=False,
    )
    op.create_table(
        "notification_groups",
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("rule_id", sa.Uuid(), nullable=False),
        sa.Column("group_key", sa.Text(), nullable=False),
        sa.Column("labels", JSON, nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("first_alert_starts_at", TZ, nullable=False),
        sa.Column("last_flush_at", TZ, nullable=True),
        sa.Column("next_flush_at", TZ, nullable=True),
        sa.Column("notification_log", JSON, nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        _org_fk("notification_groups"),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["notification_rules.id"],
            name=op.f("fk_notification_groups_rule_id_notification_rules"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_groups")),
        sa.UniqueConstraint("rule_id", "group_key", name=op.f("uq_notification_groups_rule_id_group_key")),
    )
    op.create_index(
        op.f("ix_notification_groups_active_next_flush_at"),
        "notification_groups",
        ["active", "next_flush_at"],
        unique=False,
    )
    op.create_table(
        "notification_group_alerts",
        sa.Column("group_id", sa.Uuid(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("labels", JSON, nullable=False),
        sa.Column("annotations", JSON, nullable=False),
        sa.Column("starts_at", TZ, nullable=False),
        sa.Column("ends_at", TZ, nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("one_shot", sa.Boolean(), nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["notification_groups.id"],
            name=op.f("fk_notification_group_alerts_group_id_notification_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_group_alerts")),
        sa.UniqueConstraint("group_id", "fingerprint", name=op.f("uq_notification_group_alerts_group_id_fingerprint")),
    )
    op.create_table(
        "notifications",
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("rule_id", sa.Uuid(), nullable=True),
        sa.Column("group_id", sa.Uuid(), nullable=True),
        sa.Column("group_key", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=True),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["notification_groups.id"],
            name=op.f("fk_notifications_group_id_notification_groups"),
            ondelete="SET NULL",
        ),
        _org_fk("notifications"),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["notification_rules.id"],
            name=op.f("fk_notifications_rule_id_notification_rules"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    op.create_index(
        op.f("ix_notifications_organization_id_created_at"),
        "notifications",
        ["organization_id", "created_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_notifications_rule_id_created_at"), "notifications", ["rule_id", "created_at"], unique=False
    )
    op.create_table(
        "notification_alerts",
        sa.Column("notification_id", sa.Uuid(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notifications.id"],
            name=op.f("fk_notification_alerts_notification_id_notifications"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("notification_id", "fingerprint", name=op.f("pk_notification_alerts")),
    )
    op.create_index(op.f("ix_notification_alerts_fingerprint"), "notification_alerts", ["fingerprint"], unique=False)
    op.create_table(
        "notification_deliveries",
        sa.Column("notification_id", sa.Uuid(), nullable=False),
        sa.Column("channel_id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("rule_id", sa.Uuid(), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("total_attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TZ, nullable=True),
        sa.Column("queued_at", TZ, nullable=True),
        sa.Column("lease_until", TZ, nullable=True),
        sa.Column("last_attempt_at", TZ, nullable=True),
        sa.Column("delivered_at", TZ, nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["notification_channels.id"],
            name=op.f("fk_notification_deliveries_channel_id_notification_channels"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notifications.id"],
            name=op.f("fk_notification_deliveries_notification_id_notifications"),
            ondelete="CASCADE",
        ),
        _org_fk("notification_deliveries"),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["notification_rules.id"],
            name=op.f("fk_notification_deliveries_rule_id_notification_rules"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_deliveries")),
        sa.UniqueConstraint(
            "notification_id", "channel_id", name=op.f("uq_notification_deliveries_notification_id_channel_id")
        ),
    )
    for columns in _DELIVERY_INDEXES:
        op.create_index(
            op.f(f"ix_notification_deliveries_{'_'.join(columns)}"), "notification_deliveries", columns, unique=False
        )
    op.create_table(
        "notification_delivery_attempts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.Uuid(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["notification_deliveries.id"],
            name=op.f("fk_notification_delivery_attempts_delivery_id_notification_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_delivery_attempts")),
        sa.UniqueConstraint(
            "delivery_id", "attempt", name=op.f("uq_notification_delivery_attempts_delivery_id_attempt")
        ),
    )
    with op.batch_alter_table("notification_rules") as batch:
        # Existing rules get an empty list; the model supplies it from then on.
        batch.add_column(sa.Column("mute_window_ids", JSON, nullable=False, server_default=sa.text("'[]'")))


def downgrade() -> None:
    with op.batch_alter_table("notification_rules") as batch:
        batch.drop_column("mute_window_ids")
    op.drop_table("notification_delivery_attempts")
    for columns in _DELIVERY_INDEXES:
        op.drop_index(op.f(f"ix_notification_deliveries_{'_'.join(columns)}"), table_name="notification_deliveries")
    op.drop_table("notification_deliveries")
    op.drop_index(op.f("ix_notification_alerts_fingerprint"), table_name="notification_alerts")
    op.drop_table("notification_alerts")
    op.drop_index(op.f("ix_notifications_rule_id_created_at"), table_name="notifications")
    op.drop_index(op.f("ix_notifications_organization_id_created_at"), table_name="notifications")
    op.drop_table("notifications")
    op.drop_table("notification_group_alerts")
    op.drop_index(op.f("ix_notification_groups_active_next_flush_at"), table_name="notification_groups")
    op.drop_table("notification_groups")
    op.drop_index(op.f("ix_notification_silences_organization_id_ends_at"), table_name="notification_silences")
    op.drop_table("notification_silences")
    op.drop_table("notification_mute_windows")
    op.drop_index(op.f("ix_notifier_processed_events_processed_at"), table_name="notifier_processed_events")
    op.drop_table("notifier_processed_events")
    op.drop_table("notifier_periodic_runs")
