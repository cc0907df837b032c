"""served_prediction_batches: the gateway's served predictions, waiting for the deployment's linked monitor.

A deployment's `config.monitor_id` (the earlier link) becomes the monitor's `deployment_id`, the one link.

Revision ID: 015
Revises: 014
"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "015"
down_revision: str | None = "014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "served_prediction_batches",
        sa.Column("deployment_id", sa.Uuid(), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("rows", JSON, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_served_prediction_batches_deployment_id_deployments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_served_prediction_batches")),
    )
    op.create_index(
        op.f("ix_served_prediction_batches_created_at"), "served_prediction_batches", ["created_at"], unique=False
    )
    _move_links_to_monitors()


def _move_links_to_monitors() -> None:
    connection = op.get_bind()
    deployments = sa.table(
        "deployments", sa.column("id", sa.Uuid()), sa.column("project_id", sa.Uuid()), sa.column("config", JSON)
    )
    monitors = sa.table(
        "model_monitoring",
        sa.column("id", sa.Uuid()),
        sa.column("project_id", sa.Uuid()),
        sa.column("deployment_id", sa.Uuid()),
    )
    for deployment_id, project_id, config in connection.execute(
        sa.select(deployments.c.id, deployments.c.project_id, deployments.c.config)
    ).all():
        if not isinstance(config, dict) or "monitor_id" not in config:
            continue
        linked = config.pop("monitor_id")
        try:
            monitor_id = uuid.UUID(str(linked))
        except ValueError:
            monitor_id = None
        if monitor_id is not None:
            connection.execute(
                monitors.update()
                .where(monitors.c.id == monitor_id, monitors.c.project_id == project_id)
                .values(deployment_id=deployment_id)
            )
        connection.execute(deployments.update().where(deployments.c.id == deployment_id).values(config=config))


def downgrade() -> None:
    op.drop_index(op.f("ix_served_prediction_batches_created_at"), table_name="served_prediction_batches")
    op.drop_table("served_prediction_batches")
