"""Monitor: prediction logs, check slots and runs, ground truth; one open alert per (monitor, kind).

Revision ID: 009
Revises: 008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "009"
down_revision: str | None = "008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)
_OPEN_ALERT = sa.text("status != 'resolved'")


def _monitor_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["monitor_id"],
        ["model_monitoring.id"],
        name=op.f(f"fk_{table}_monitor_id_model_monitoring"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "monitor_check_runs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("monitor_id", sa.Uuid(), nullable=False),
        sa.Column("slot_time", TZ, nullable=False),
        sa.Column("trigger", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=30), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("report_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("queued_at", TZ, nullable=False),
        sa.Column("started_at", TZ, nullable=True),
        sa.Column("finished_at", TZ, nullable=True),
        _monitor_fk("monitor_check_runs"),
        sa.ForeignKeyConstraint(
            ["report_id"],
            ["data_drift_reports.id"],
            name=op.f("fk_monitor_check_runs_report_id_data_drift_reports"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitor_check_runs")),
        sa.UniqueConstraint("monitor_id", "slot_time", name=op.f("uq_monitor_check_runs_monitor_id_slot_time")),
    )
    op.create_index(
        op.f("ix_monitor_check_runs_status_queued_at"), "monitor_check_runs", ["status", "queued_at"], unique=False
    )
    op.create_table(
        "monitor_prediction_batches",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("monitor_id", sa.Uuid(), nullable=False),
        sa.Column("first_at", TZ, nullable=False),
        sa.Column("last_at", TZ, nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("storage_key", sa.Text(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        _monitor_fk("monitor_prediction_batches"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitor_prediction_batches")),
    )
    op.create_index(
        op.f("ix_monitor_prediction_batches_monitor_id_last_at"),
        "monitor_prediction_batches",
        ["monitor_id", "last_at"],
        unique=False,
    )
    op.create_table(
        "monitor_ground_truth",
        sa.Column("monitor_id", sa.Uuid(), nullable=False),
        sa.Column("request_id", sa.String(length=200), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("logged_at", TZ, nullable=False),
        _monitor_fk("monitor_ground_truth"),
        sa.PrimaryKeyConstraint("monitor_id", "request_id", name=op.f("pk_monitor_ground_truth")),
    )
    op.create_index(
        op.f("ix_monitor_ground_truth_monitor_id_logged_at"),
        "monitor_ground_truth",
        ["monitor_id", "logged_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_alerts_monitor_id_kind"),
        "alerts",
        ["monitor_id", "kind"],
        unique=True,
        postgresql_where=_OPEN_ALERT,
        sqlite_where=_OPEN_ALERT,
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_alerts_monitor_id_kind"), table_name="alerts", postgresql_where=_OPEN_ALERT, sqlite_where=_OPEN_ALERT
    )
    op.drop_index(op.f("ix_monitor_ground_truth_monitor_id_logged_at"), table_name="monitor_ground_truth")
    op.drop_table("monitor_ground_truth")
    op.drop_index(op.f("ix_monitor_prediction_batches_monitor_id_last_at"), table_name="monitor_prediction_batches")
    op.drop_table("monitor_prediction_batches")
    op.drop_index(op.f("ix_monitor_check_runs_status_queued_at"), table_name="monitor_check_runs")
    op.drop_table("monitor_check_runs")
